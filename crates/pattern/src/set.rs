//! The compiled form of a pattern set: one automaton over the conditions of every pattern.
//!
//! Each pattern is multiplied out into branches (one per combination of `$or` alternatives), each branch a
//! conjunction of leaf conditions (a field path and its matcher list). Conditions are put in one global
//! order, exact-value ones on the most used paths first, and every branch becomes a sequence in that
//! order. Sequences are merged into a trie of states: branches sharing a prefix of identical conditions
//! share the states along it. A state tests event paths; a test maps exact values (hash maps), prefixes and
//! suffixes (hash maps probed at the few lengths present) and other matchers (a list) to next states.
//!
//! Matching starts at the root and follows only the transitions the event satisfies, resolving each event
//! path once and only when a reached state asks for it; reaching a state where a branch ends is a match.
//! The work is the number of satisfied condition prefixes, not the number of patterns: a thousand
//! patterns on one `source` value lead to one shared state, whose next test is one more hash probe.
//!
//! Conditions are evaluated on all the values at their path, which is exact as long as no array of objects
//! lies between the event root and the path: such arrays must be matched element by element. A path below
//! one is "unavailable"; a test on it stops there and hands the patterns passing through it to the
//! reference tree walk. A branch whose conditions all lie on available paths gets the same answer both ways,
//! so the automaton's matches are always right, and every pattern it cannot decide is walked. Patterns whose
//! `$or`s multiply out to too many branches are always walked.

use std::cell::RefCell;
use std::cmp::Reverse;

use serde_json::Value;

use crate::Pattern;
use crate::ast::{FieldKind, Leaf, Node};
use crate::value::{FastMap, Matcher, NumKey, any_scalar, num_key};

/// Beyond this many branches a pattern costs more to index than to walk.
const MAX_BRANCHES: usize = 64;

const ROOT: u32 = 0;

#[derive(Clone, Debug)]
pub(crate) struct Index {
    /// Field paths; node 0 is the event itself.
    paths: Vec<PathNode>,
    /// State 0 is the start.
    states: Vec<State>,
    /// Indexed branches, for `Debug`.
    branches: usize,
    /// Patterns matched by the tree walk on every event.
    always_walked: Vec<u32>,
}

#[derive(Clone, Debug)]
struct PathNode {
    parent: u32,
    key: Box<str>,
}

#[derive(Clone, Debug, Default)]
struct State {
    tests: Vec<Test>,
    /// Some branch ends here.
    accepting: bool,
}

/// The transitions out of one state on one event path.
#[derive(Clone, Debug)]
struct Test {
    path: u32,
    strings: FastMap<Box<str>, Vec<u32>>,
    numbers: FastMap<NumKey, Vec<u32>>,
    trues: Vec<u32>,
    falses: Vec<u32>,
    nulls: Vec<u32>,
    prefixes: Affixes,
    suffixes: Affixes,
    /// Matchers with no key to look up, tried value by value.
    others: Vec<(Matcher, u32)>,
    exists_true: Vec<u32>,
    exists_false: Vec<u32>,
    /// Patterns with a branch through this test: the ones to walk when the path is unavailable.
    patterns: Vec<u32>,
}

/// Prefixes (or suffixes) by text, probed at each length some operand has.
#[derive(Clone, Debug, Default)]
struct Affixes {
    by_text: FastMap<Box<str>, Vec<u32>>,
    /// Distinct byte lengths, ascending.
    lengths: Vec<usize>,
}

impl Affixes {
    fn add(&mut self, text: &str, next: u32) {
        push_unique(self.by_text.entry(text.into()).or_default(), next);
        if let Err(at) = self.lengths.binary_search(&text.len()) {
            self.lengths.insert(at, text.len());
        }
    }
}

impl Test {
    fn new(path: u32) -> Test {
        Test {
            path,
            strings: FastMap::default(),
            numbers: FastMap::default(),
            trues: Vec::new(),
            falses: Vec::new(),
            nulls: Vec::new(),
            prefixes: Affixes::default(),
            suffixes: Affixes::default(),
            others: Vec::new(),
            exists_true: Vec::new(),
            exists_false: Vec::new(),
            patterns: Vec::new(),
        }
    }

    fn add(&mut self, leaf: &Leaf, next: u32) {
        for matcher in &leaf.matchers {
            match matcher {
                Matcher::String(s) => push_unique(self.strings.entry(s.clone()).or_default(), next),
                Matcher::Number(k) => push_unique(self.numbers.entry(*k).or_default(), next),
                Matcher::Bool(true) => push_unique(&mut self.trues, next),
                Matcher::Bool(false) => push_unique(&mut self.falses, next),
                Matcher::Null => push_unique(&mut self.nulls, next),
                Matcher::Prefix(p) => self.prefixes.add(p, next),
                Matcher::Suffix(s) => self.suffixes.add(s, next),
                other => self.others.push((other.clone(), next)),
            }
        }
        if leaf.exists_true {
            push_unique(&mut self.exists_true, next);
        }
        if leaf.exists_false {
            push_unique(&mut self.exists_false, next);
        }
    }
}

fn push_unique(list: &mut Vec<u32>, id: u32) {
    if list.last() != Some(&id) {
        list.push(id);
    }
}

/// How many branches a pattern object multiplies out to, saturating.
fn branch_count(node: &Node) -> usize {
    let mut n: usize = 1;
    for field in &node.fields {
        if let FieldKind::Nested(sub) = &field.kind {
            n = n.saturating_mul(branch_count(sub));
        }
    }
    for group in &node.ors {
        n = n.saturating_mul(group.iter().map(branch_count).fold(0, usize::saturating_add));
    }
    n
}

fn product(left: &[Vec<u32>], right: &[Vec<u32>]) -> Vec<Vec<u32>> {
    left.iter().flat_map(|l| right.iter().map(move |r| l.iter().chain(r).copied().collect())).collect()
}

/// How early a condition goes in a branch: the likelier it is to fail, the sooner it prunes.
fn selectivity_class(leaf: &Leaf) -> u8 {
    if leaf.exists_false {
        3
    } else if leaf.exists_true || leaf.matchers.iter().any(|m| matches!(m, Matcher::AnythingBut(_))) {
        2
    } else if leaf
        .matchers
        .iter()
        .all(|m| matches!(m, Matcher::String(_) | Matcher::Number(_) | Matcher::Bool(_) | Matcher::Null))
    {
        0
    } else {
        1
    }
}

struct Builder {
    paths: Vec<PathNode>,
    path_ids: FastMap<(u32, Box<str>), u32>,
    conditions: Vec<(u32, Leaf)>,
    condition_ids: FastMap<(u32, Leaf), u32>,
    /// Branches per path, to put shared paths first.
    path_uses: Vec<u32>,
    branches: Vec<(u32, Vec<u32>)>,
    always_walked: Vec<u32>,
}

impl Builder {
    fn path(&mut self, parent: u32, key: &str) -> u32 {
        if let Some(id) = self.path_ids.get(&(parent, Box::from(key))) {
            return *id;
        }
        let id = self.paths.len() as u32;
        self.paths.push(PathNode { parent, key: key.into() });
        self.path_uses.push(0);
        self.path_ids.insert((parent, key.into()), id);
        id
    }

    fn condition(&mut self, path: u32, leaf: &Leaf) -> u32 {
        let key = (path, leaf.clone());
        if let Some(id) = self.condition_ids.get(&key) {
            return *id;
        }
        let id = self.conditions.len() as u32;
        self.conditions.push(key.clone());
        self.condition_ids.insert(key, id);
        id
    }

    /// The branches of `node`, placed at path `at`, as lists of condition ids.
    fn expand(&mut self, node: &Node, at: u32) -> Vec<Vec<u32>> {
        let mut branches = vec![Vec::new()];
        for field in &node.fields {
            let path = self.path(at, &field.key);
            match &field.kind {
                FieldKind::Leaf(leaf) => {
                    let condition = self.condition(path, leaf);
                    for branch in &mut branches {
                        branch.push(condition);
                    }
                }
                FieldKind::Nested(sub) => {
                    let inner = self.expand(sub, path);
                    branches = product(&branches, &inner);
                }
            }
        }
        for group in &node.ors {
            let mut alternatives = Vec::new();
            for alt in group {
                alternatives.extend(self.expand(alt, at));
            }
            branches = product(&branches, &alternatives);
        }
        branches
    }
}

impl Index {
    pub(crate) fn build(patterns: &[Pattern]) -> Index {
        let mut b = Builder {
            paths: vec![PathNode { parent: ROOT, key: "".into() }],
            path_ids: FastMap::default(),
            conditions: Vec::new(),
            condition_ids: FastMap::default(),
            path_uses: vec![0],
            branches: Vec::new(),
            always_walked: Vec::new(),
        };
        for (i, pattern) in patterns.iter().enumerate() {
            let Ok(id) = u32::try_from(i) else { break };
            if branch_count(&pattern.root) > MAX_BRANCHES {
                b.always_walked.push(id);
                continue;
            }
            for branch in b.expand(&pattern.root, ROOT) {
                b.branches.push((id, branch));
            }
        }
        for (_, branch) in &b.branches {
            for &c in branch {
                b.path_uses[b.conditions[c as usize].0 as usize] += 1;
            }
        }

        // One global order, so that branches with common conditions share their prefixes.
        let rank: Vec<(u8, Reverse<u32>, u32, u32)> = b
            .conditions
            .iter()
            .enumerate()
            .map(|(id, (path, leaf))| (selectivity_class(leaf), Reverse(b.path_uses[*path as usize]), *path, id as u32))
            .collect();

        let branch_total = b.branches.len();
        let mut states = vec![State::default()];
        let mut transitions: FastMap<(u32, u32), u32> = FastMap::default();
        let mut tests: FastMap<(u32, u32), usize> = FastMap::default();
        for (pattern, mut branch) in std::mem::take(&mut b.branches) {
            branch.sort_unstable_by_key(|&c| rank[c as usize]);
            branch.dedup();
            let mut state = 0u32;
            for c in branch {
                let (path, leaf) = &b.conditions[c as usize];
                let test = *tests.entry((state, *path)).or_insert_with(|| {
                    states[state as usize].tests.push(Test::new(*path));
                    states[state as usize].tests.len() - 1
                });
                let next = match transitions.get(&(state, c)) {
                    Some(next) => *next,
                    None => {
                        let next = states.len() as u32;
                        states.push(State::default());
                        transitions.insert((state, c), next);
                        states[state as usize].tests[test].add(leaf, next);
                        next
                    }
                };
                push_unique(&mut states[state as usize].tests[test].patterns, pattern);
                state = next;
            }
            states[state as usize].accepting = true;
        }
        Index { paths: b.paths, states, branches: branch_total, always_walked: b.always_walked }
    }

    /// The number of automaton states (for `Debug`).
    pub(crate) fn state_total(&self) -> usize {
        self.states.len()
    }

    /// The number of indexed branches (for `Debug`).
    pub(crate) fn branch_total(&self) -> usize {
        self.branches
    }

    pub(crate) fn walked_total(&self) -> usize {
        self.always_walked.len()
    }

    pub(crate) fn matches(&self, patterns: &[Pattern], event: &Value) -> bool {
        SCRATCH
            .try_with(|cell| match cell.try_borrow_mut() {
                Ok(mut scratch) => self.run(patterns, event, &mut scratch),
                Err(_) => self.run(patterns, event, &mut Scratch::default()),
            })
            .unwrap_or_else(|_| self.run(patterns, event, &mut Scratch::default()))
    }

    fn run(&self, patterns: &[Pattern], event: &Value, scratch: &mut Scratch) -> bool {
        scratch.begin(self.states.len(), self.paths.len(), patterns.len());
        let mut run = Run { index: self, event, scratch, slots: SlotCache::default() };
        if run.search() {
            return true;
        }
        let walk = |&p: &u32| patterns.get(p as usize).is_some_and(|pattern| pattern.matches(event));
        run.scratch.fallback.iter().any(walk) || self.always_walked.iter().any(walk)
    }
}

/// What an event holds at a path.
#[derive(Clone, Copy)]
enum Slot<'a> {
    Absent,
    /// Below an array of objects: only the element-by-element walk can tell.
    Unavailable,
    Value(&'a Value),
}

/// Resolved paths of the current event; most events need few, so they start inline.
struct SlotCache<'a> {
    inline: [Slot<'a>; 16],
    len: usize,
    spill: Vec<Slot<'a>>,
}

impl Default for SlotCache<'_> {
    fn default() -> Self {
        SlotCache { inline: [Slot::Absent; 16], len: 0, spill: Vec::new() }
    }
}

impl<'a> SlotCache<'a> {
    fn push(&mut self, slot: Slot<'a>) -> u32 {
        let at = self.len;
        match self.inline.get_mut(at) {
            Some(place) => *place = slot,
            None => self.spill.push(slot),
        }
        self.len += 1;
        at as u32
    }

    fn get(&self, at: u32) -> Slot<'a> {
        let at = at as usize;
        match self.inline.get(at) {
            Some(slot) => *slot,
            None => self.spill.get(at - self.inline.len()).copied().unwrap_or(Slot::Unavailable),
        }
    }
}

struct Run<'i, 'a, 's> {
    index: &'i Index,
    event: &'a Value,
    scratch: &'s mut Scratch,
    slots: SlotCache<'a>,
}

impl<'a> Run<'_, 'a, '_> {
    fn search(&mut self) -> bool {
        if self.push(0) {
            return true;
        }
        while let Some(state) = self.scratch.stack.pop() {
            if self.step(state) {
                return true;
            }
        }
        false
    }

    /// Queues a state unless already reached; true when it completes a branch.
    fn push(&mut self, state: u32) -> bool {
        let stamp = &mut self.scratch.state_stamp[state as usize];
        if *stamp == self.scratch.generation {
            return false;
        }
        *stamp = self.scratch.generation;
        if self.index.states[state as usize].accepting {
            return true;
        }
        self.scratch.stack.push(state);
        false
    }

    fn reached(&self, state: u32) -> bool {
        self.scratch.state_stamp[state as usize] == self.scratch.generation
    }

    fn resolve(&mut self, path: u32) -> Slot<'a> {
        if path == ROOT {
            return Slot::Value(self.event);
        }
        if self.scratch.path_stamp[path as usize] == self.scratch.generation {
            return self.slots.get(self.scratch.path_slot[path as usize]);
        }
        let index = self.index;
        let node = &index.paths[path as usize];
        let slot = match self.resolve(node.parent) {
            Slot::Value(Value::Object(map)) => map.get(&*node.key).map_or(Slot::Absent, Slot::Value),
            Slot::Value(Value::Array(items)) if items.iter().any(|i| i.is_object() || i.is_array()) => {
                Slot::Unavailable
            }
            Slot::Unavailable => Slot::Unavailable,
            // Missing, a scalar, or an array of scalars: nothing below it.
            _ => Slot::Absent,
        };
        self.scratch.path_stamp[path as usize] = self.scratch.generation;
        self.scratch.path_slot[path as usize] = self.slots.push(slot);
        slot
    }

    fn step(&mut self, state: u32) -> bool {
        let index = self.index;
        for test in &index.states[state as usize].tests {
            let found = match self.resolve(test.path) {
                Slot::Unavailable => {
                    for &p in &test.patterns {
                        self.scratch.fall_back(p);
                    }
                    false
                }
                Slot::Absent => test.exists_false.iter().any(|&s| self.push(s)),
                Slot::Value(v) => {
                    let mut seen = false;
                    let hit = any_scalar(v, &mut |x| {
                        seen = true;
                        self.follow(test, x)
                    });
                    hit || if seen { &test.exists_true } else { &test.exists_false }.iter().any(|&s| self.push(s))
                }
            };
            if found {
                return true;
            }
        }
        false
    }

    /// Queues the states a scalar leads to; true when one completes a branch.
    fn follow(&mut self, test: &Test, x: &Value) -> bool {
        let exact: &[u32] = match x {
            Value::String(s) => test.strings.get(s.as_str()).map_or(&[], Vec::as_slice),
            Value::Number(n) if !test.numbers.is_empty() => test.numbers.get(&num_key(n)).map_or(&[], Vec::as_slice),
            Value::Bool(true) => &test.trues,
            Value::Bool(false) => &test.falses,
            Value::Null => &test.nulls,
            _ => &[],
        };
        if exact.iter().any(|&s| self.push(s)) {
            return true;
        }
        if let Value::String(s) = x {
            for &len in &test.prefixes.lengths {
                let Some(head) = s.get(..len) else { continue };
                if let Some(next) = test.prefixes.by_text.get(head) {
                    if next.iter().any(|&n| self.push(n)) {
                        return true;
                    }
                }
            }
            for &len in &test.suffixes.lengths {
                let Some(tail) = s.len().checked_sub(len).and_then(|from| s.get(from..)) else { continue };
                if let Some(next) = test.suffixes.by_text.get(tail) {
                    if next.iter().any(|&n| self.push(n)) {
                        return true;
                    }
                }
            }
        }
        for (matcher, next) in &test.others {
            if !self.reached(*next) && matcher.matches(x) && self.push(*next) {
                return true;
            }
        }
        false
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Per-match state, reused across calls on a thread. Entries count only when their stamp equals the
/// current generation, so starting a match costs nothing however large the set.
#[derive(Default)]
struct Scratch {
    generation: u32,
    state_stamp: Vec<u32>,
    path_stamp: Vec<u32>,
    path_slot: Vec<u32>,
    pattern_stamp: Vec<u32>,
    stack: Vec<u32>,
    fallback: Vec<u32>,
}

impl Scratch {
    fn begin(&mut self, states: usize, paths: usize, patterns: usize) {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.state_stamp.fill(0);
            self.path_stamp.fill(0);
            self.pattern_stamp.fill(0);
            self.generation = 1;
        }
        if self.state_stamp.len() < states {
            self.state_stamp.resize(states, 0);
        }
        if self.path_stamp.len() < paths {
            self.path_stamp.resize(paths, 0);
            self.path_slot.resize(paths, 0);
        }
        if self.pattern_stamp.len() < patterns {
            self.pattern_stamp.resize(patterns, 0);
        }
        self.stack.clear();
        self.fallback.clear();
    }

    fn fall_back(&mut self, pattern: u32) {
        let stamp = &mut self.pattern_stamp[pattern as usize];
        if *stamp != self.generation {
            *stamp = self.generation;
            self.fallback.push(pattern);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(patterns: &[Value], event: &Value) -> (bool, Vec<u32>) {
        let compiled: Vec<Pattern> = patterns.iter().map(|p| Pattern::new(p).unwrap()).collect();
        let index = Index::build(&compiled);
        let mut scratch = Scratch::default();
        let found = index.run(&compiled, event, &mut scratch);
        (found, scratch.fallback.clone())
    }

    #[test]
    fn flat_and_nested_objects_are_decided_by_the_automaton() {
        let patterns = [
            json!({"source": ["a"], "detail": {"state": ["x"]}}),
            json!({"source": ["b"], "detail": {"n": [{"numeric": [">", 1]}]}}),
            json!({"$or": [{"x": [{"exists": false}]}, {"y": ["z"]}]}),
        ];
        let (found, fallback) = run(&patterns, &json!({"source": "b", "detail": {"n": 2}, "x": 1}));
        assert!(found);
        assert!(fallback.is_empty());
        let (found, fallback) = run(&patterns, &json!({"source": "c", "detail": {"state": ["x", "y"]}, "x": 1}));
        assert!(!found);
        assert!(fallback.is_empty(), "arrays of scalars need no fallback");
        let (found, _) = run(&patterns, &json!({"source": "c"}));
        assert!(found, "exists false through $or");
    }

    #[test]
    fn arrays_of_objects_hand_only_surviving_patterns_to_the_walk() {
        let patterns = [
            json!({"source": ["a"], "detail": {"state": ["x"]}}),
            json!({"source": ["b"]}),
            json!({"items": {"sku": ["s"]}}),
        ];
        // Pattern 0 fails on source before its detail path is needed; only pattern 2 must be walked.
        let (found, fallback) =
            run(&patterns, &json!({"source": "c", "detail": [{"state": "x"}], "items": [{"sku": "t"}]}));
        assert!(!found);
        assert_eq!(fallback, vec![2]);
        let (found, _) = run(&patterns, &json!({"source": "a", "detail": [{"state": "y"}, {"state": "x"}]}));
        assert!(found);
    }

    #[test]
    fn shared_prefixes_share_states() {
        let patterns: Vec<Pattern> =
            (0..100).map(|i| Pattern::new(&json!({"source": ["s"], "type": [format!("t{i}")]})).unwrap()).collect();
        let index = Index::build(&patterns);
        // Start, the shared state after `source`, and one state per type.
        assert_eq!(index.state_total(), 102);
        assert_eq!(index.states[0].tests.len(), 1);
    }

    #[test]
    fn or_groups_multiply_into_branches() {
        let p =
            Pattern::new(&json!({"a": ["1"], "$or": [{"b": ["2"]}, {"c": ["3"], "$or": [{"d": [4]}, {"e": [5]}]}]}))
                .unwrap();
        assert_eq!(branch_count(&p.root), 3);
        let index = Index::build(std::slice::from_ref(&p));
        assert_eq!(index.states.iter().filter(|s| s.accepting).count(), 3);
        assert_eq!(index.walked_total(), 0);
    }
}
