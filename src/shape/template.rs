//! EventBridge's input transformer: `input_paths` name JSONPath values of the
//! record, and `input_template` is text with `<name>` placeholders.
//!
//! As in EventBridge, a placeholder inside a JSON string literal of the
//! template is replaced by the value's text (a string without its quotes,
//! escaped for the string it sits in); outside one it is replaced by the
//! value's JSON. A path that finds nothing gives `null` (an empty string
//! inside quotes). `<aws.events.event>` / `<aws.events.event.json>` are the
//! whole record and `<aws.events.rule-name>` the mapping's name; a `<...>`
//! that names nothing is left as written.

use std::collections::BTreeMap;

use serde_json::Value;

/// One step of a JSONPath: `.name`, `['name']` or `[3]`.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// A parsed JSONPath of the simple form EventBridge's input paths use.
#[derive(Debug, Clone, PartialEq)]
pub struct Path(Vec<Step>);

impl Path {
    pub fn parse(text: &str) -> Result<Self, String> {
        let expected = || format!("{text:?}: expected a JSONPath like $.detail.items[0].id or $['key']");
        let rest = text.strip_prefix('$').ok_or_else(expected)?;
        let mut steps = Vec::new();
        let mut chars = rest.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '.' => {
                    let start = at + 1;
                    let mut end = start;
                    while let Some(&(i, c)) = chars.peek() {
                        if c == '.' || c == '[' {
                            break;
                        }
                        end = i + c.len_utf8();
                        chars.next();
                    }
                    if end == start {
                        return Err(expected());
                    }
                    steps.push(Step::Key(rest[start..end].to_string()));
                }
                '[' => {
                    let close = rest[at..].find(']').map(|i| at + i).ok_or_else(expected)?;
                    let inner = rest[at + 1..close].trim();
                    let step = if let Some(quoted) = inner
                        .strip_prefix('\'')
                        .and_then(|s| s.strip_suffix('\''))
                        .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                    {
                        Step::Key(quoted.to_string())
                    } else {
                        Step::Index(inner.parse().map_err(|_| expected())?)
                    };
                    steps.push(step);
                    while chars.peek().is_some_and(|&(i, _)| i <= close) {
                        chars.next();
                    }
                }
                _ => return Err(expected()),
            }
        }
        Ok(Self(steps))
    }

    pub fn get<'a>(&self, mut value: &'a Value) -> Option<&'a Value> {
        for step in &self.0 {
            value = match step {
                Step::Key(k) => value.get(k)?,
                Step::Index(i) => value.get(i)?,
            };
        }
        Some(value)
    }
}

#[derive(Debug)]
pub struct InputTransformer {
    paths: BTreeMap<String, Path>,
    template: String,
    mapping: String,
}

impl InputTransformer {
    /// Errors are `(key, message)`, the key relative to `transform`.
    pub fn new(paths: &BTreeMap<String, String>, template: &str, mapping: &str) -> Result<Self, (String, String)> {
        let mut parsed = BTreeMap::new();
        for (name, path) in paths {
            if name.starts_with("aws.") {
                return Err((format!("input_paths.{name}"), "names starting with aws. are reserved".into()));
            }
            parsed.insert(name.clone(), Path::parse(path).map_err(|e| (format!("input_paths.{name}"), e))?);
        }
        Ok(Self { paths: parsed, template: template.to_string(), mapping: mapping.to_string() })
    }

    /// What filling the template reads of a record: the values its paths
    /// name, or everything when it holds the whole record.
    pub fn reads(&self) -> switchyard_sdk::Reads {
        if self.template.contains("<aws.events.event") {
            return switchyard_sdk::Reads::All;
        }
        let mut reads = switchyard_sdk::Reads::nothing();
        for Path(steps) in self.paths.values() {
            // A list keeps every element and passes the keys named under it
            // to each, so an index needs no key of its own.
            let keys: Vec<&str> = steps
                .iter()
                .filter_map(|step| match step {
                    Step::Key(key) => Some(key.as_str()),
                    Step::Index(_) => None,
                })
                .collect();
            reads.add_path(&keys);
        }
        reads
    }

    /// The template with its placeholders filled from `record`.
    pub fn apply(&self, record: &Value) -> String {
        let mut out = String::with_capacity(self.template.len() + 64);
        let mut in_string = false;
        let mut escaped = false;
        let mut rest = self.template.as_str();
        while let Some(c) = rest.chars().next() {
            if c == '<'
                && let Some(close) = rest.find('>')
                && let Some(value) = self.lookup(&rest[1..close], record)
            {
                insert(&mut out, value.as_ref(), in_string);
                rest = &rest[close + 1..];
                continue;
            }
            if c == '"' && !escaped {
                in_string = !in_string;
            }
            escaped = in_string && c == '\\' && !escaped;
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    }

    fn lookup<'a>(&'a self, name: &str, record: &'a Value) -> Option<std::borrow::Cow<'a, Value>> {
        use std::borrow::Cow;
        match name {
            "aws.events.event" | "aws.events.event.json" => Some(Cow::Borrowed(record)),
            "aws.events.rule-name" => Some(Cow::Owned(Value::String(self.mapping.clone()))),
            _ => {
                let path = self.paths.get(name)?;
                Some(path.get(record).map(Cow::Borrowed).unwrap_or(Cow::Owned(Value::Null)))
            }
        }
    }
}

fn insert(out: &mut String, value: &Value, in_string: bool) {
    if !in_string {
        out.push_str(&value.to_string());
        return;
    }
    let text = match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    // Escaped as JSON string content: the quoted form without its quotes.
    let quoted = Value::String(text).to_string();
    out.push_str(&quoted[1..quoted.len() - 1]);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn transformer(paths: &[(&str, &str)], template: &str) -> InputTransformer {
        let paths = paths.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        InputTransformer::new(&paths, template, "orders").unwrap()
    }

    #[test]
    fn paths_parse_and_find() {
        let v = json!({"detail": {"items": [{"id": 7}], "a b": true}});
        assert_eq!(Path::parse("$.detail.items[0].id").unwrap().get(&v), Some(&json!(7)));
        assert_eq!(Path::parse("$['detail']['a b']").unwrap().get(&v), Some(&json!(true)));
        assert_eq!(Path::parse("$").unwrap().get(&v), Some(&v));
        assert_eq!(Path::parse("$.detail.missing").unwrap().get(&v), None);
        for bad in ["detail", "$..x", "$.a[", "$.a[x]", "$."] {
            assert!(Path::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_templates_quote_outside_strings_only() {
        let t = transformer(
            &[("id", "$.body.id"), ("state", "$.body.state"), ("tags", "$.body.tags"), ("none", "$.body.none")],
            r#"{"id": <id>, "msg": "order <id> is <state>", "state": <state>, "tags": <tags>, "none": <none>, "empty": "<none>", "rule": "<aws.events.rule-name>"}"#,
        );
        let out = t.apply(&json!({"body": {"id": 42, "state": "say \"hi\"", "tags": ["a"]}}));
        let parsed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            parsed,
            json!({"id": 42, "msg": "order 42 is say \"hi\"", "state": "say \"hi\"", "tags": ["a"], "none": null, "empty": "", "rule": "orders"})
        );
    }

    #[test]
    fn text_templates_and_unknown_placeholders() {
        let t = transformer(&[("who", "$.who")], "<who> logged in <b>now</b>");
        assert_eq!(t.apply(&json!({"who": "ana"})), "\"ana\" logged in <b>now</b>");
        let t = transformer(&[], r#"{"event": <aws.events.event>}"#);
        assert_eq!(t.apply(&json!({"a": 1})), r#"{"event": {"a":1}}"#);
    }

    #[test]
    fn filling_reads_only_the_paths() {
        let t = transformer(
            &[("id", "$.body.items[1].id"), ("who", "$['body'].who"), ("all", "$.body.list[0]")],
            r#"{"id": <id>, "who": "<who>", "all": <all>}"#,
        );
        let record = json!({"body": {"items": [{"id": 1, "x": 2}, {"id": 3, "y": [4]}], "who": {"n": "ana"},
                                     "list": [[1, 2], 3], "other": {"big": [1, 2, 3]}}, "meta": 1});
        let cut = t.reads().prune(&record);
        assert_eq!(cut, json!({"body": {"items": [{"id": 1}, {"id": 3}], "who": {"n": "ana"}, "list": [[1, 2], 3]}}));
        assert_eq!(t.apply(&cut), t.apply(&record));
        assert!(transformer(&[], "<aws.events.event>").reads().is_all());
    }

    #[test]
    fn reserved_and_bad_paths_are_named() {
        let paths = [("aws.x".to_string(), "$.a".to_string())].into_iter().collect();
        assert_eq!(InputTransformer::new(&paths, "", "m").unwrap_err().0, "input_paths.aws.x");
        let paths = [("x".to_string(), "a.b".to_string())].into_iter().collect();
        assert_eq!(InputTransformer::new(&paths, "", "m").unwrap_err().0, "input_paths.x");
    }
}
