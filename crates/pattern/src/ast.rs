//! A pattern's compiled tree, its validation, and the reference tree-walk matcher.

use serde_json::{Map, Number, Value};

use crate::PatternError;
use crate::value::{Cidr, Excluded, Matcher, NUMERIC_LIMIT, Range, Wildcard, any_scalar, fold, num_key, scaled};

/// The path of the pattern as a whole in error messages.
pub(crate) const ROOT: &str = "$";

const OR: &str = "$or";

/// Keys EventBridge refuses as field names inside `$or` alternatives: a matcher written straight into an
/// alternative (`"$or": [{"prefix": "a"}, ...]`) is a mistake, and this is how it gets caught.
const RESERVED_IN_OR: &[&str] = &[
    "exactly",
    "equals-ignore-case",
    "prefix",
    "suffix",
    "anything-but",
    "exists",
    "wildcard",
    "numeric",
    "cidr",
    "=",
    "<",
    "<=",
    ">",
    ">=",
    "regex",
    "not-wildcard",
    "not-equals-ignore-case",
    "date-after",
    "date-on-or-after",
    "date-before",
    "date-on-or-before",
    "in-date-range",
    "ip-address-in-range",
    "ip-address-not-in-range",
];

const OPERATORS: &str = "prefix, suffix, equals-ignore-case, wildcard, anything-but, numeric, exists, cidr";

/// A pattern object: every field and every `$or` group must hold.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    pub(crate) fields: Vec<Field>,
    /// Each group holds its alternatives; one of them must hold.
    pub(crate) ors: Vec<Vec<Node>>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Field {
    pub(crate) key: Box<str>,
    pub(crate) kind: FieldKind,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum FieldKind {
    Leaf(Leaf),
    Nested(Node),
}

/// A leaf's matcher list: it holds when any matcher matches any value at the path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Leaf {
    pub(crate) matchers: Vec<Matcher>,
    /// `{"exists": true}` is in the list: holds when the path has at least one leaf value.
    pub(crate) exists_true: bool,
    /// `{"exists": false}` is in the list: holds when the path has no leaf value.
    pub(crate) exists_false: bool,
}

impl Leaf {
    pub(crate) fn matches(&self, v: Option<&Value>) -> bool {
        let mut seen = false;
        let hit = v.is_some_and(|v| {
            any_scalar(v, &mut |x| {
                seen = true;
                self.matchers.iter().any(|m| m.matches(x))
            })
        });
        hit || if seen { self.exists_true } else { self.exists_false }
    }
}

impl Node {
    /// Appends the paths of the fields this node tests, each from the event's root to a leaf (or to a
    /// nested object that tests nothing inside it, read whole).
    pub(crate) fn paths<'a>(&'a self, prefix: &mut Vec<&'a str>, out: &mut Vec<Vec<&'a str>>) {
        for field in &self.fields {
            prefix.push(&field.key);
            match &field.kind {
                FieldKind::Nested(node) if !node.fields.is_empty() || !node.ors.is_empty() => node.paths(prefix, out),
                _ => out.push(prefix.clone()),
            }
            prefix.pop();
        }
        for alternative in self.ors.iter().flatten() {
            alternative.paths(prefix, out);
        }
    }

    /// Matches this pattern object against the value found at its position. Objects are entered, arrays
    /// are matched element by element (one element must satisfy the whole object, so conditions are never
    /// satisfied by a mix of elements), and anything else is a place where every field is missing.
    pub(crate) fn matches_value(&self, v: Option<&Value>) -> bool {
        match v {
            Some(Value::Object(map)) => self.matches_object(Some(map)),
            Some(Value::Array(items)) if !items.is_empty() => items.iter().any(|item| self.matches_value(Some(item))),
            _ => self.matches_object(None),
        }
    }

    fn matches_object(&self, map: Option<&Map<String, Value>>) -> bool {
        self.fields.iter().all(|field| {
            let child = map.and_then(|m| m.get(&*field.key));
            match &field.kind {
                FieldKind::Leaf(leaf) => leaf.matches(child),
                FieldKind::Nested(node) => node.matches_value(child),
            }
        }) && self.ors.iter().all(|alternatives| alternatives.iter().any(|alt| alt.matches_object(map)))
    }
}

fn err(path: &str, message: impl Into<String>) -> PatternError {
    PatternError { path: path.to_owned(), message: message.into() }
}

fn key_path(parent: &str, key: &str) -> String {
    if parent == ROOT { key.to_owned() } else { format!("{parent}.{key}") }
}

fn index_path(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn compile(pattern: &Value) -> Result<Node, PatternError> {
    match pattern {
        Value::Object(map) => compile_object(map, ROOT, false),
        other => Err(err(ROOT, format!("a pattern must be a JSON object, found {}", kind(other)))),
    }
}

fn compile_object(map: &Map<String, Value>, path: &str, inside_or: bool) -> Result<Node, PatternError> {
    if map.is_empty() {
        return Err(err(path, "empty objects are not allowed in a pattern"));
    }
    let mut node = Node { fields: Vec::new(), ors: Vec::new() };
    for (key, value) in map {
        let here = key_path(path, key);
        if key == OR {
            node.ors.push(compile_or(value, &here)?);
            continue;
        }
        if inside_or && RESERVED_IN_OR.contains(&key.as_str()) {
            return Err(err(
                &here,
                format!(
                    "\"{key}\" is a reserved word and cannot be a field name inside $or (an operator belongs inside a field's matcher list)"
                ),
            ));
        }
        let kind = match value {
            Value::Object(inner) => FieldKind::Nested(compile_object(inner, &here, inside_or)?),
            Value::Array(items) => FieldKind::Leaf(compile_leaf(items, &here)?),
            other => {
                return Err(err(
                    &here,
                    format!("expected an array of matchers or a nested object, found {}", kind(other)),
                ));
            }
        };
        node.fields.push(Field { key: key.as_str().into(), kind });
    }
    Ok(node)
}

fn compile_or(value: &Value, path: &str) -> Result<Vec<Node>, PatternError> {
    let Value::Array(alternatives) = value else {
        return Err(err(path, format!("$or must be an array of at least 2 pattern objects, found {}", kind(value))));
    };
    if alternatives.len() < 2 {
        return Err(err(path, format!("$or needs at least 2 alternatives, found {}", alternatives.len())));
    }
    alternatives
        .iter()
        .enumerate()
        .map(|(i, alt)| {
            let here = index_path(path, i);
            match alt {
                Value::Object(map) => compile_object(map, &here, true),
                other => Err(err(&here, format!("a $or alternative must be a pattern object, found {}", kind(other)))),
            }
        })
        .collect()
}

fn compile_leaf(items: &[Value], path: &str) -> Result<Leaf, PatternError> {
    if items.is_empty() {
        return Err(err(path, "a matcher list must not be empty"));
    }
    let mut leaf = Leaf { matchers: Vec::new(), exists_true: false, exists_false: false };
    for (i, item) in items.iter().enumerate() {
        let here = index_path(path, i);
        let matcher = match item {
            Value::String(s) => Matcher::String(s.as_str().into()),
            Value::Number(n) => Matcher::Number(num_key(n)),
            Value::Bool(b) => Matcher::Bool(*b),
            Value::Null => Matcher::Null,
            Value::Array(_) => {
                return Err(err(
                    &here,
                    "a matcher must be a string, number, boolean, null or operator object; nested arrays are not allowed",
                ));
            }
            Value::Object(op) => match compile_operator(op, &here)? {
                Operator::Matcher(m) => m,
                Operator::Exists(true) => {
                    leaf.exists_true = true;
                    continue;
                }
                Operator::Exists(false) => {
                    leaf.exists_false = true;
                    continue;
                }
            },
        };
        leaf.matchers.push(matcher);
    }
    Ok(leaf)
}

enum Operator {
    Matcher(Matcher),
    Exists(bool),
}

fn single_entry<'a>(map: &'a Map<String, Value>, path: &str, what: &str) -> Result<(&'a str, &'a Value), PatternError> {
    let mut entries = map.iter();
    match (entries.next(), entries.next()) {
        (Some((k, v)), None) => Ok((k.as_str(), v)),
        _ => Err(err(path, format!("{what} must have exactly one key, found {}", map.len()))),
    }
}

fn compile_operator(op: &Map<String, Value>, path: &str) -> Result<Operator, PatternError> {
    let (name, arg) = single_entry(op, path, "an operator object")?;
    let here = key_path(path, name);
    let matcher = match name {
        "prefix" => match string_or_ignore_case(arg, &here, "prefix")? {
            (s, false) => Matcher::Prefix(s.into()),
            (s, true) => Matcher::PrefixIgnoreCase(fold(s)),
        },
        "suffix" => match string_or_ignore_case(arg, &here, "suffix")? {
            (s, false) => Matcher::Suffix(s.into()),
            (s, true) => Matcher::SuffixIgnoreCase(fold(s)),
        },
        "equals-ignore-case" => Matcher::EqualsIgnoreCase(fold(string(arg, &here, "equals-ignore-case")?)),
        "wildcard" => Matcher::Wildcard(Wildcard::parse(string(arg, &here, "wildcard")?).map_err(|m| err(&here, m))?),
        "cidr" => Matcher::Cidr(Cidr::parse(string(arg, &here, "cidr")?).map_err(|m| err(&here, m))?),
        "numeric" => Matcher::Numeric(compile_numeric(arg, &here)?),
        "anything-but" => Matcher::AnythingBut(compile_anything_but(arg, &here)?),
        "exists" => match arg {
            Value::Bool(b) => return Ok(Operator::Exists(*b)),
            other => return Err(err(&here, format!("exists takes true or false, found {}", kind(other)))),
        },
        unknown => return Err(err(&here, format!("unknown operator \"{unknown}\" (expected one of {OPERATORS})"))),
    };
    Ok(Operator::Matcher(matcher))
}

fn string<'a>(arg: &'a Value, path: &str, op: &str) -> Result<&'a str, PatternError> {
    match arg {
        Value::String(s) => Ok(s),
        other => Err(err(path, format!("{op} takes a string, found {}", kind(other)))),
    }
}

/// `"x"` or `{"equals-ignore-case": "x"}`; the flag says which.
fn string_or_ignore_case<'a>(arg: &'a Value, path: &str, op: &str) -> Result<(&'a str, bool), PatternError> {
    match arg {
        Value::String(s) => Ok((s, false)),
        Value::Object(inner) => {
            let (name, value) = single_entry(inner, path, &format!("the object inside {op}"))?;
            let here = key_path(path, name);
            if name != "equals-ignore-case" {
                return Err(err(&here, format!("only equals-ignore-case may be nested inside {op}")));
            }
            Ok((string(value, &here, "equals-ignore-case")?, true))
        }
        other => {
            Err(err(path, format!("{op} takes a string or {{\"equals-ignore-case\": string}}, found {}", kind(other))))
        }
    }
}

/// A number usable by `numeric` and `anything-but`, which EventBridge limits to ±5e9.
fn bounded_number(n: &Number, path: &str) -> Result<f64, PatternError> {
    match n.as_f64() {
        Some(f) if (-NUMERIC_LIMIT..=NUMERIC_LIMIT).contains(&f) => Ok(f),
        _ => Err(err(path, format!("{n} is out of range: numbers here must be between -5e9 and 5e9 inclusive"))),
    }
}

fn compile_numeric(arg: &Value, path: &str) -> Result<Range, PatternError> {
    const SHAPE: &str = "numeric takes [op, number] with op one of =, <, <=, >, >=, or a range [\">\" or \">=\", number, \"<\" or \"<=\", number]";
    let Value::Array(items) = arg else {
        return Err(err(path, format!("{SHAPE}; found {}", kind(arg))));
    };
    if items.len() != 2 && items.len() != 4 {
        return Err(err(path, format!("{SHAPE}; found {} elements", items.len())));
    }
    let operand = |i: usize| -> Result<f64, PatternError> {
        let here = index_path(path, i);
        match items.get(i) {
            Some(Value::Number(n)) => bounded_number(n, &here),
            Some(other) => Err(err(&here, format!("a numeric operand must be a number, found {}", kind(other)))),
            None => Err(err(path, SHAPE)),
        }
    };
    let operator = |i: usize| -> Result<&str, PatternError> {
        let here = index_path(path, i);
        match items.get(i) {
            Some(Value::String(op)) if matches!(op.as_str(), "=" | "<" | "<=" | ">" | ">=") => Ok(op.as_str()),
            Some(Value::String(op)) => {
                Err(err(&here, format!("unknown numeric operator \"{op}\" (expected one of =, <, <=, >, >=)")))
            }
            Some(other) => Err(err(&here, format!("expected a numeric operator string, found {}", kind(other)))),
            None => Err(err(path, SHAPE)),
        }
    };
    let first = operator(0)?;
    let value = operand(1)?;
    // Unbounded sides are EventBridge's own limits, so that its "lower must be below upper" check
    // rejects the same patterns (`["<", -5e9]` can never match and is refused).
    let (mut low, mut low_inclusive, mut high, mut high_inclusive) = (-NUMERIC_LIMIT, true, NUMERIC_LIMIT, true);
    match first {
        "=" => {
            if items.len() == 4 {
                return Err(err(&index_path(path, 2), "\"=\" cannot be combined with another comparison"));
            }
            let k = scaled(value).ok_or_else(|| err(&index_path(path, 1), "number out of range"))?;
            return Ok(Range { low: k, low_inclusive: true, high: k, high_inclusive: true });
        }
        "<" | "<=" => {
            if items.len() == 4 {
                return Err(err(
                    &index_path(path, 2),
                    "a range must be written lower bound first: [\">\" or \">=\", low, \"<\" or \"<=\", high]",
                ));
            }
            high = value;
            high_inclusive = first == "<=";
        }
        _ => {
            low = value;
            low_inclusive = first == ">=";
            if items.len() == 4 {
                let second = operator(2)?;
                if !matches!(second, "<" | "<=") {
                    return Err(err(
                        &index_path(path, 2),
                        format!("the upper bound of a range takes \"<\" or \"<=\", found \"{second}\""),
                    ));
                }
                high = operand(3)?;
                high_inclusive = second == "<=";
            }
        }
    }
    if low >= high {
        return Err(err(path, format!("the lower bound ({low}) must be below the upper bound ({high})")));
    }
    match (scaled(low), scaled(high)) {
        (Some(low), Some(high)) => Ok(Range { low, low_inclusive, high, high_inclusive }),
        _ => Err(err(path, "number out of range")),
    }
}

fn compile_anything_but(arg: &Value, path: &str) -> Result<Excluded, PatternError> {
    const SHAPE: &str = "anything-but takes a string, a number, a list of only strings or only numbers, or an object with prefix, suffix, equals-ignore-case or wildcard";
    match arg {
        Value::String(s) => Ok(Excluded::Strings(vec![s.as_str().into()])),
        Value::Number(n) => Ok(Excluded::Numbers(vec![comparable(n, path)?])),
        Value::Array(items) => {
            let Some(first) = items.first() else {
                return Err(err(path, "an anything-but list must not be empty"));
            };
            if first.is_number() {
                let mut numbers = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let here = index_path(path, i);
                    match item {
                        Value::Number(n) => numbers.push(comparable(n, &here)?),
                        other => return Err(mixed_list(&here, other)),
                    }
                }
                numbers.sort_unstable();
                numbers.dedup();
                Ok(Excluded::Numbers(numbers))
            } else {
                let mut strings = strings(items, path, "anything-but")?;
                strings.sort_unstable();
                strings.dedup();
                Ok(Excluded::Strings(strings.into_iter().map(Box::from).collect()))
            }
        }
        Value::Object(inner) => {
            let (name, value) = single_entry(inner, path, "the object inside anything-but")?;
            let here = key_path(path, name);
            match name {
                "prefix" | "suffix" => {
                    let s = string(value, &here, name)?;
                    if s.is_empty() {
                        return Err(err(&here, format!("an anything-but {name} must not be empty")));
                    }
                    Ok(if name == "prefix" { Excluded::Prefix(s.into()) } else { Excluded::Suffix(s.into()) })
                }
                "equals-ignore-case" => {
                    let list = string_or_list(value, &here, "equals-ignore-case")?;
                    Ok(Excluded::EqualsIgnoreCase(list.into_iter().map(fold).collect()))
                }
                "wildcard" => {
                    let list = string_or_list(value, &here, "wildcard")?;
                    let mut wildcards = Vec::with_capacity(list.len());
                    for (i, w) in list.into_iter().enumerate() {
                        let at = if value.is_array() { index_path(&here, i) } else { here.clone() };
                        wildcards.push(Wildcard::parse(w).map_err(|m| err(&at, m))?);
                    }
                    Ok(Excluded::Wildcards(wildcards))
                }
                other => Err(err(
                    &here,
                    format!(
                        "unsupported operator \"{other}\" inside anything-but (expected prefix, suffix, equals-ignore-case or wildcard)"
                    ),
                )),
            }
        }
        other => Err(err(path, format!("{SHAPE}; found {}", kind(other)))),
    }
}

fn comparable(n: &Number, path: &str) -> Result<i64, PatternError> {
    let f = bounded_number(n, path)?;
    scaled(f).ok_or_else(|| err(path, "number out of range"))
}

fn mixed_list(path: &str, found: &Value) -> PatternError {
    err(path, format!("an anything-but list must hold only strings or only numbers, found {}", kind(found)))
}

fn strings<'a>(items: &'a [Value], path: &str, op: &str) -> Result<Vec<&'a str>, PatternError> {
    if items.is_empty() {
        return Err(err(path, format!("the {op} list must not be empty")));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s.as_str()),
            other if op == "anything-but" => Err(mixed_list(&index_path(path, i), other)),
            other => {
                Err(err(&index_path(path, i), format!("the {op} list must hold only strings, found {}", kind(other))))
            }
        })
        .collect()
}

fn string_or_list<'a>(value: &'a Value, path: &str, op: &str) -> Result<Vec<&'a str>, PatternError> {
    match value {
        Value::String(s) => Ok(vec![s.as_str()]),
        Value::Array(items) => strings(items, path, op),
        other => Err(err(path, format!("{op} takes a string or a list of strings, found {}", kind(other)))),
    }
}
