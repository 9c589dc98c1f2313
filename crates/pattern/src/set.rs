//! The compiled form of a pattern set: one index over every field path any pattern names.
//!
//! Each pattern is expanded into branches (its `$or` groups multiplied out), each branch being a
//! conjunction of leaf conditions. The conditions hang off a trie of field paths; at each leaf path,
//! exact strings, numbers, booleans and null go into hash maps from value to the conditions they satisfy,
//! and every other matcher into a short list tested value by value. Matching walks the event along the
//! trie only, marks each condition satisfied at most once, counts satisfied conditions per branch, and
//! stops at the first branch whose count is complete.
//!
//! Counting treats each path on its own, which is only sound while no array of objects sits between the
//! event root and a condition: such arrays must be matched element by element. When the walk meets one
//! where the trie continues deeper, the patterns with conditions below that point are handed to the
//! reference tree walk instead. Patterns whose `$or`s multiply out to too many branches are always walked.

use std::cell::RefCell;

use serde_json::Value;

use crate::Pattern;
use crate::ast::{FieldKind, Leaf, Node};
use crate::value::{FastMap, Matcher, NumKey, any_scalar, num_key};

/// Beyond this many branches a pattern costs more to index than to walk.
const MAX_BRANCHES: usize = 64;

const NO_PARENT: u32 = u32::MAX;

#[derive(Clone, Debug)]
pub(crate) struct Index {
    trie: Vec<TrieNode>,
    /// For each condition, the branches it belongs to.
    condition_branches: Vec<Vec<u32>>,
    /// For each branch, how many conditions must be satisfied.
    branch_need: Vec<u32>,
    /// Patterns matched by the tree walk on every event.
    always_walked: Vec<u32>,
}

#[derive(Clone, Debug)]
struct TrieNode {
    parent: u32,
    children: Vec<(Box<str>, u32)>,
    leaf: Option<Box<LeafIndex>>,
    /// Indexed patterns with a condition strictly below this node, ascending: the ones to walk when the
    /// event holds an array of objects here.
    below: Vec<u32>,
    /// Some condition at or below this node holds when the event lacks the field (`exists: false`), so the
    /// walk must enter it even then.
    visit_when_absent: bool,
}

#[derive(Clone, Debug, Default)]
struct LeafIndex {
    strings: FastMap<Box<str>, Vec<u32>>,
    numbers: FastMap<NumKey, Vec<u32>>,
    trues: Vec<u32>,
    falses: Vec<u32>,
    nulls: Vec<u32>,
    exists_true: Vec<u32>,
    exists_false: Vec<u32>,
    /// Matchers with no exact key, tested against each value.
    others: Vec<(u32, Matcher)>,
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

impl Index {
    pub(crate) fn build(patterns: &[Pattern]) -> Index {
        let mut index = Index {
            trie: vec![TrieNode {
                parent: NO_PARENT,
                children: Vec::new(),
                leaf: None,
                below: Vec::new(),
                visit_when_absent: false,
            }],
            condition_branches: Vec::new(),
            branch_need: Vec::new(),
            always_walked: Vec::new(),
        };
        for (i, pattern) in patterns.iter().enumerate() {
            let Ok(id) = u32::try_from(i) else { break };
            if branch_count(&pattern.root) > MAX_BRANCHES {
                index.always_walked.push(id);
                continue;
            }
            for conditions in index.expand(&pattern.root, 0, id) {
                let branch = index.branch_need.len() as u32;
                index.branch_need.push(conditions.len() as u32);
                for c in conditions {
                    push_unique(&mut index.condition_branches[c as usize], branch);
                }
            }
        }
        index
    }

    /// The branches of `node`, placed at trie node `at`, as lists of condition ids.
    fn expand(&mut self, node: &Node, at: u32, pattern: u32) -> Vec<Vec<u32>> {
        let mut branches = vec![Vec::new()];
        for field in &node.fields {
            let child = self.child(at, &field.key);
            match &field.kind {
                FieldKind::Leaf(leaf) => {
                    let condition = self.add_condition(child, leaf, pattern);
                    for branch in &mut branches {
                        branch.push(condition);
                    }
                }
                FieldKind::Nested(sub) => {
                    let inner = self.expand(sub, child, pattern);
                    branches = product(&branches, &inner);
                }
            }
        }
        for group in &node.ors {
            let mut alternatives = Vec::new();
            for alt in group {
                alternatives.extend(self.expand(alt, at, pattern));
            }
            branches = product(&branches, &alternatives);
        }
        branches
    }

    fn child(&mut self, at: u32, key: &str) -> u32 {
        if let Some((_, id)) = self.trie[at as usize].children.iter().find(|(k, _)| &**k == key) {
            return *id;
        }
        let id = self.trie.len() as u32;
        self.trie.push(TrieNode {
            parent: at,
            children: Vec::new(),
            leaf: None,
            below: Vec::new(),
            visit_when_absent: false,
        });
        self.trie[at as usize].children.push((key.into(), id));
        id
    }

    fn add_condition(&mut self, at: u32, leaf: &Leaf, pattern: u32) -> u32 {
        let c = self.condition_branches.len() as u32;
        self.condition_branches.push(Vec::new());
        let index = self.trie[at as usize].leaf.get_or_insert_with(Default::default);
        for matcher in &leaf.matchers {
            match matcher {
                Matcher::String(s) => push_unique(index.strings.entry(s.clone()).or_default(), c),
                Matcher::Number(k) => push_unique(index.numbers.entry(*k).or_default(), c),
                Matcher::Bool(true) => push_unique(&mut index.trues, c),
                Matcher::Bool(false) => push_unique(&mut index.falses, c),
                Matcher::Null => push_unique(&mut index.nulls, c),
                other => index.others.push((c, other.clone())),
            }
        }
        if leaf.exists_true {
            index.exists_true.push(c);
        }
        if leaf.exists_false {
            index.exists_false.push(c);
            let mut node = at;
            while node != NO_PARENT {
                self.trie[node as usize].visit_when_absent = true;
                node = self.trie[node as usize].parent;
            }
        }
        let mut node = self.trie[at as usize].parent;
        while node != NO_PARENT {
            push_unique(&mut self.trie[node as usize].below, pattern);
            node = self.trie[node as usize].parent;
        }
        c
    }

    pub(crate) fn branch_total(&self) -> usize {
        self.branch_need.len()
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
        scratch.begin(self.condition_branches.len(), self.branch_need.len(), patterns.len());
        if self.visit(0, Some(event), scratch) {
            return true;
        }
        let walk = |&p: &u32| patterns.get(p as usize).is_some_and(|pattern| pattern.matches(event));
        scratch.fallback.iter().any(walk) || self.always_walked.iter().any(walk)
    }

    fn visit(&self, at: u32, value: Option<&Value>, scratch: &mut Scratch) -> bool {
        let node = &self.trie[at as usize];
        if let Some(leaf) = &node.leaf {
            if self.eval_leaf(leaf, value, scratch) {
                return true;
            }
        }
        if node.children.is_empty() {
            return false;
        }
        match value {
            Some(Value::Object(map)) => {
                for (key, child) in &node.children {
                    if self.visit(*child, map.get(&**key), scratch) {
                        return true;
                    }
                }
            }
            Some(Value::Array(items)) if items.iter().any(|item| item.is_object() || item.is_array()) => {
                for &p in &node.below {
                    scratch.fall_back(p);
                }
            }
            // Missing, a scalar, or an array of scalars: every field below is missing.
            _ => {
                for (_, child) in &node.children {
                    if self.trie[*child as usize].visit_when_absent && self.visit(*child, None, scratch) {
                        return true;
                    }
                }
            }
        }
        false
    }

    fn eval_leaf(&self, leaf: &LeafIndex, value: Option<&Value>, scratch: &mut Scratch) -> bool {
        let mut seen = false;
        if let Some(v) = value {
            let hit = any_scalar(v, &mut |x| {
                seen = true;
                self.eval_scalar(leaf, x, scratch)
            });
            if hit {
                return true;
            }
        }
        let conditions = if seen { &leaf.exists_true } else { &leaf.exists_false };
        conditions.iter().any(|&c| self.satisfy(c, scratch))
    }

    fn eval_scalar(&self, leaf: &LeafIndex, x: &Value, scratch: &mut Scratch) -> bool {
        let exact: &[u32] = match x {
            Value::String(s) => leaf.strings.get(s.as_str()).map_or(&[], Vec::as_slice),
            Value::Number(n) if !leaf.numbers.is_empty() => leaf.numbers.get(&num_key(n)).map_or(&[], Vec::as_slice),
            Value::Bool(true) => &leaf.trues,
            Value::Bool(false) => &leaf.falses,
            Value::Null => &leaf.nulls,
            _ => &[],
        };
        for &c in exact {
            if self.satisfy(c, scratch) {
                return true;
            }
        }
        for (c, matcher) in &leaf.others {
            if !scratch.is_satisfied(*c) && matcher.matches(x) && self.satisfy(*c, scratch) {
                return true;
            }
        }
        false
    }

    /// Marks a condition satisfied; true when that completes a branch.
    fn satisfy(&self, c: u32, scratch: &mut Scratch) -> bool {
        let generation = scratch.generation;
        let stamp = &mut scratch.condition_stamp[c as usize];
        if *stamp == generation {
            return false;
        }
        *stamp = generation;
        for &b in &self.condition_branches[c as usize] {
            let b = b as usize;
            let count = if scratch.branch_stamp[b] == generation { scratch.branch_count[b] + 1 } else { 1 };
            scratch.branch_stamp[b] = generation;
            scratch.branch_count[b] = count;
            if count == self.branch_need[b] {
                return true;
            }
        }
        false
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Per-match state, reused across calls on a thread. Entries are valid only when their stamp equals the
/// current generation, so starting a match costs nothing however large the set.
#[derive(Default)]
struct Scratch {
    generation: u32,
    condition_stamp: Vec<u32>,
    branch_stamp: Vec<u32>,
    branch_count: Vec<u32>,
    pattern_stamp: Vec<u32>,
    fallback: Vec<u32>,
}

impl Scratch {
    fn begin(&mut self, conditions: usize, branches: usize, patterns: usize) {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.condition_stamp.fill(0);
            self.branch_stamp.fill(0);
            self.pattern_stamp.fill(0);
            self.generation = 1;
        }
        if self.condition_stamp.len() < conditions {
            self.condition_stamp.resize(conditions, 0);
        }
        if self.branch_stamp.len() < branches {
            self.branch_stamp.resize(branches, 0);
            self.branch_count.resize(branches, 0);
        }
        if self.pattern_stamp.len() < patterns {
            self.pattern_stamp.resize(patterns, 0);
        }
        self.fallback.clear();
    }

    fn is_satisfied(&self, c: u32) -> bool {
        self.condition_stamp[c as usize] == self.generation
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
    fn flat_and_nested_objects_are_decided_by_the_index() {
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
    fn arrays_of_objects_hand_only_the_patterns_below_to_the_walk() {
        let patterns = [
            json!({"source": ["a"], "detail": {"state": ["x"]}}),
            json!({"source": ["b"]}),
            json!({"items": {"sku": ["s"]}}),
        ];
        let (found, fallback) =
            run(&patterns, &json!({"source": "c", "detail": [{"state": "x"}], "items": [{"sku": "t"}]}));
        assert!(!found);
        assert_eq!(fallback, vec![0, 2]);
        let (found, _) = run(&patterns, &json!({"source": "a", "detail": [{"state": "y"}, {"state": "x"}]}));
        assert!(found);
    }

    #[test]
    fn or_groups_multiply_into_branches() {
        let p =
            Pattern::new(&json!({"a": ["1"], "$or": [{"b": ["2"]}, {"c": ["3"], "$or": [{"d": [4]}, {"e": [5]}]}]}))
                .unwrap();
        assert_eq!(branch_count(&p.root), 3);
        let index = Index::build(std::slice::from_ref(&p));
        assert_eq!(index.branch_total(), 3);
        assert_eq!(index.walked_total(), 0);
    }
}
