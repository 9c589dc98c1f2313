//! EventBridge event patterns for Switchyard: validated, compiled, and matched against JSON events with
//! Amazon EventBridge's semantics (the language Lambda's event source mappings use for `FilterCriteria`).
//!
//! ```
//! use serde_json::json;
//! use switchyard_pattern::{Pattern, PatternSet};
//!
//! let pattern = Pattern::parse(r#"{"source": ["aws.ec2"], "detail": {"state": [{"anything-but": "pending"}]}}"#)?;
//! assert!(pattern.matches(&json!({"source": "aws.ec2", "detail": {"state": "running"}})));
//! assert!(!pattern.matches(&json!({"source": "aws.ec2", "detail": {"state": "pending"}})));
//!
//! // Lambda's `filters: [{pattern}, ...]`: an event passes when any pattern matches.
//! let set = PatternSet::new(&[json!({"source": ["a"]}), json!({"source": ["b"]})])?;
//! assert!(set.matches(&json!({"source": "b"})));
//! # Ok::<(), switchyard_pattern::PatternError>(())
//! ```
//!
//! # The language
//!
//! A pattern is a JSON object shaped like the events it matches. Each key names an event field; its value
//! is either a nested object (the pattern continues inside the field) or a non-empty array of matchers (a
//! *leaf*). All fields of an object must match (AND); a leaf matches when any of its matchers matches any
//! of the event's values at that path (OR).
//!
//! | matcher | matches |
//! |---|---|
//! | `"text"` | that exact string (`""` is the empty string) |
//! | `300` | a number equal to it: `300`, `300.0` and `3e2` are the same number |
//! | `true`, `false` | that boolean |
//! | `null` | JSON `null` — not a missing field |
//! | `{"prefix": "ab"}`, `{"suffix": ".png"}` | strings starting / ending so |
//! | `{"prefix": {"equals-ignore-case": "ab"}}` (same for `suffix`) | ... regardless of case |
//! | `{"equals-ignore-case": "Ab"}` | a string equal regardless of case |
//! | `{"wildcard": "dir/*.png"}` | a string where each `*` stands for any run of characters; `\*` is a literal star, `\\` a backslash |
//! | `{"numeric": [">", 0, "<=", 5]}` | a number in range; operators `=`, `<`, `<=`, `>`, `>=`; a range is a lower then an upper bound |
//! | `{"cidr": "10.0.0.0/24"}` | a string holding an IPv4 or IPv6 address inside the block |
//! | `{"exists": true}` / `{"exists": false}` | the path holds at least one leaf value / holds none |
//! | `{"anything-but": ...}` | any leaf value except what the operand matches (see below) |
//!
//! `anything-but` takes a string, a number, a list of only strings or only numbers, or one of
//! `{"prefix": "s"}`, `{"suffix": "s"}` (non-empty), `{"equals-ignore-case": "s" or ["s", ...]}`,
//! `{"wildcard": "w" or ["w", ...]}`.
//!
//! `"$or": [{...}, {...}]`, at any object level, holds when any of its (at least two) alternatives holds;
//! each alternative is a pattern object evaluated at the same level, and may nest further `$or`s. `$or` is
//! always the operator: a field literally named `$or` cannot be matched.
//!
//! # Semantics in detail
//!
//! * **Types never cross.** String matchers (`prefix`, `suffix`, `equals-ignore-case`, `wildcard`, `cidr`,
//!   exact strings) match only strings; `numeric` and exact numbers only numbers: `"300"` does not match
//!   `300` nor the reverse.
//! * **Event arrays.** A field holding an array matches a leaf when any element does (the intersection of
//!   the event's values and the pattern's is non-empty); nested arrays are flattened. A nested pattern
//!   object over an array of objects must be satisfied by **one** element: `{"a": {"x": [1], "y": [2]}}`
//!   does not match `{"a": [{"x": 1}, {"y": 2}]}`. `$or` alternatives are evaluated inside that element.
//! * **Leaves are scalars.** Only strings, numbers, booleans and null are values. A field holding an object
//!   (or an empty array, or only objects) has no value at that path: no value matcher matches it,
//!   `exists: true` does not, and `exists: false` does — EventBridge's documented behaviour.
//! * **Missing fields** match nothing but `exists: false`; in particular `anything-but` never matches a
//!   missing field.
//! * **`anything-but`** excludes only values of its operand's type: `{"anything-but": "x"}` matches the
//!   number `5`, `true` and `null`; `{"anything-but": 5}` matches the string `"5"`; prefix, suffix,
//!   ignore-case and wildcard operands exclude only strings. On an array field it matches when any element
//!   is not excluded (the docs are silent; this is what Event Ruler, the open-source engine behind
//!   EventBridge, does, since each array element is a separate value).
//! * **Numbers** compare the way EventBridge stores them: within ±5e9 and to six decimal places
//!   (`numeric` never matches a value outside ±5e9, and values differing only past the sixth decimal are
//!   equal). Exact numbers outside that range, such as 12-digit account ids, still match equal numbers;
//!   there we compare numeric value where EventBridge compares the literal text, so `1e10` equals
//!   `10000000000` here. Operands of `numeric` and numeric `anything-but` must lie within ±5e9, and a range's
//!   lower bound must be below its upper bound (EventBridge rejects both).
//! * **Case folding** (`equals-ignore-case` and the ignore-case prefix/suffix) compares character by
//!   character, a character standing for the lowercase of its uppercase when both mappings are single
//!   characters (Java's `String.equalsIgnoreCase` rule, close to Event Ruler's per-character case
//!   variants and within a hair of Unicode simple case folding): `ÉTÉ` equals `été`, `ſ` equals `s`; `ß` equals only itself.
//! * **CIDR** needs an explicit prefix length; host bits of the base are ignored; the event string must be an
//!   address in Rust's standard notation (no leading zeros in IPv4 octets). Exact strings compare as text:
//!   Event Ruler also treats an exact string that looks like an IP address as that address in any
//!   notation; we do not — use `{"cidr": "a.b.c.d/32"}` for that.
//! * **Validation** follows EventBridge: the pattern and every nested object or `$or` alternative must be a
//!   non-empty object (EventBridge rejects `{}`, and so do we); a field's value must be an object or a
//!   non-empty array; operator objects have exactly one key; `**` in a wildcard and escapes other than `\*`
//!   and `\\` are errors; `$or` must be an array of at least two objects, and operator names (`prefix`,
//!   `numeric`, ...) cannot be field names inside a `$or` alternative.
//!
//! Where the docs are silent we chose, and say so here:
//!
//! * `exists: false` inside an array of objects holds for an element that lacks the field (element by
//!   element, like every other condition); Event Ruler gives an answer there that depends on the order of
//!   the pattern's keys.
//! * A field repeated through `$or` (`{"a": ["x"], "$or": [{"a": ["y"]}, ...]}`) must satisfy both leaves;
//!   Event Ruler silently keeps only the inner one.
//! * Field names are matched as whole keys: `{"a": {"b": ...}}` does not match an event key `"a.b"` (the
//!   engine conflates them and documents that as subject to change).
//! * An event that is not an object: an array is matched element by element, like a nested array of
//!   objects; a scalar has every field missing (only `exists: false` patterns match it).
//! * An empty [`PatternSet`] matches no event. Lambda applies no filtering when a mapping has no filters;
//!   callers should skip the set in that case.
//!
//! # Errors
//!
//! [`PatternError::path`] names the bad spot: field names joined by `.`, array positions as `[i]`, then the
//! operator, e.g. `detail.state[0].anything-but.prefix` or `$or[1].count[0].numeric[2]`; `$` is the pattern
//! as a whole (not an object, empty, or not JSON). [`PatternSet::new`] prefixes the failing pattern's index:
//! `[2].detail.state[0]`, or `[2]` alone for a whole-pattern error.
//!
//! # Compiling a set
//!
//! [`Pattern::matches`] is a direct walk of the pattern tree over the event: the reference semantics, and
//! cheap for one small pattern. [`PatternSet`] compiles all its patterns into one automaton, in the manner of
//! EventBridge's own engine:
//!
//! 1. Every pattern is multiplied out into branches, one per combination of `$or` alternatives; a branch is
//!    a conjunction of leaf conditions, each a field path with its matcher list.
//! 2. Conditions get one global order: exact-value conditions before other matchers before `anything-but`
//!    and `exists`, and within that, paths used by more branches first. Each branch becomes a sequence of
//!    conditions in that order, and the sequences are merged into a trie of states, so branches that start
//!    with the same conditions share states. A thousand patterns on one `source` value share one state.
//! 3. A state tests event paths. Exact strings, numbers, booleans and null map through hash tables to the
//!    next states; prefixes and suffixes are probed in hash tables at the few lengths that occur; other
//!    matchers sit in a list tried value by value.
//!
//! Matching follows only the transitions the event satisfies, resolving an event path once, and only when a
//! reached state asks for it; it stops at the first state where a branch ends. Its cost is the number of
//! satisfied condition prefixes (plus one probe per distinct path tested from a reached state), not the
//! number of patterns; patterns on disjoint fields each add a probe at the start state.
//!
//! Conditions are evaluated on all the values at their path, which is exact as long as no array of objects
//! sits above the path in the event. Below such an array the path is *unavailable*: the automaton stops
//! there and hands the patterns passing through that test to the tree walk, which applies the
//! element-by-element rule. The automaton's own matches are always right (a branch on available paths
//! means the same both ways), and every pattern it cannot decide is walked, so the set agrees exactly with
//! ORing its patterns — a property the crate's tests check on generated patterns and events and the fuzz
//! targets check on arbitrary ones. Patterns whose `$or`s multiply out to more than 64 branches are walked
//! on every event instead of being compiled.

mod ast;
mod set;
mod value;

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// Why a pattern was rejected: where (see the [crate docs](crate#errors) for the path syntax) and what was
/// expected there.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PatternError {
    /// Where the problem is, like `detail.state[0].anything-but.prefix`; `$` is the whole pattern.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl PatternError {
    /// The error as reported by a set: the path prefixed with the pattern's index.
    fn in_set(self, index: usize) -> PatternError {
        let path = if self.path == ast::ROOT { format!("[{index}]") } else { format!("[{index}].{}", self.path) };
        PatternError { path, message: self.message }
    }
}

/// One compiled event pattern.
#[derive(Clone, Debug, PartialEq)]
pub struct Pattern {
    root: ast::Node,
}

impl Pattern {
    /// Compiles a pattern given as a JSON value (which must be an object).
    pub fn new(pattern: &Value) -> Result<Pattern, PatternError> {
        Ok(Pattern { root: ast::compile(pattern)? })
    }

    /// Compiles a pattern given as JSON text; text that is not JSON is an error at path `$`.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| PatternError { path: ast::ROOT.to_owned(), message: format!("not valid JSON: {e}") })?;
        Pattern::new(&value)
    }

    /// Whether the event matches this pattern.
    pub fn matches(&self, event: &Value) -> bool {
        self.root.matches_value(Some(event))
    }

    /// The paths of the event fields the pattern tests, each from the event's root to a leaf matcher:
    /// matching sees nothing else, so an event holding only these paths (objects on the way keeping only
    /// the keys named, lists keeping every element) matches exactly when the whole event does.
    pub fn paths(&self) -> Vec<Vec<&str>> {
        let mut out = Vec::new();
        self.root.paths(&mut Vec::new(), &mut out);
        out
    }
}

impl FromStr for Pattern {
    type Err = PatternError;

    fn from_str(text: &str) -> Result<Pattern, PatternError> {
        Pattern::parse(text)
    }
}

/// A compiled set of event patterns, ORed (Lambda's `filters: [{pattern}, ...]`): an event matches when
/// any pattern matches. Matching cost follows what the event satisfies, not the number of patterns, as long
/// as they are mostly exact-value matchers (see the [crate docs](crate#compiling-a-set)).
#[derive(Clone)]
pub struct PatternSet {
    patterns: Vec<Pattern>,
    index: set::Index,
}

impl PatternSet {
    /// Compiles patterns (each a JSON object). An error names the pattern's index and the path of the bad
    /// operator inside it: `[2].detail.state[0].prefix`.
    pub fn new(patterns: &[Value]) -> Result<PatternSet, PatternError> {
        let compiled = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| Pattern::new(p).map_err(|e| e.in_set(i)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PatternSet::from_patterns(compiled))
    }

    /// Builds a set from patterns compiled one by one.
    pub fn from_patterns(patterns: Vec<Pattern>) -> PatternSet {
        let index = set::Index::build(&patterns);
        PatternSet { patterns, index }
    }

    /// Whether any pattern of the set matches the event; always false for an empty set.
    pub fn matches(&self, event: &Value) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        self.index.matches(&self.patterns, event)
    }

    /// The paths every pattern of the set tests (see [`Pattern::paths`]).
    pub fn paths(&self) -> Vec<Vec<&str>> {
        self.patterns.iter().flat_map(Pattern::paths).collect()
    }

    /// The number of patterns.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// Whether the set has no pattern (and so matches nothing).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns, in the order given.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }
}

impl fmt::Debug for PatternSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PatternSet")
            .field("patterns", &self.patterns.len())
            .field("indexed_branches", &self.index.branch_total())
            .field("states", &self.index.state_total())
            .field("always_walked", &self.index.walked_total())
            .finish()
    }
}
