//! The data-driven table in `cases.json`: patterns with events they must and must not match, and invalid
//! patterns with the error path they must report. Every case is checked four ways (the pattern alone, a
//! one-pattern set, a set among unrelated patterns, and the pattern on the event cut down to the paths it
//! tests), and every failure is reported by name.

use serde_json::{Map, Value, json};
use switchyard_pattern::{Pattern, PatternError, PatternSet};

use switchyard_sdk::Reads;

fn table() -> Value {
    serde_json::from_str(include_str!("cases.json")).expect("cases.json is valid JSON")
}

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or_else(|| panic!("case {v} lacks \"{key}\""))
}

/// Events written as `"@name"` refer to the table's shared `events`.
fn resolve(event: &Value, shared: &Map<String, Value>) -> Value {
    match event.as_str().and_then(|s| s.strip_prefix('@')) {
        Some(name) => shared.get(name).cloned().unwrap_or_else(|| panic!("no shared event \"{name}\"")),
        None => event.clone(),
    }
}

/// Patterns on fields the table never uses, so that they can only add noise to a set.
fn decoys() -> Vec<Value> {
    vec![
        json!({"zz-source": ["decoy"]}),
        json!({"zz-detail": {"zz-state": [{"prefix": "decoy"}]}}),
        json!({"zz-n": [{"numeric": [">", 1e9]}], "zz-m": [1, 2, 3]}),
        json!({"$or": [{"zz-a": ["x"]}, {"zz-b": {"zz-c": [{"exists": true}]}}]}),
    ]
}

#[test]
fn match_table() {
    let table = table();
    let shared = field(&table, "events").as_object().expect("events is an object");
    let cases = field(&table, "cases").as_array().expect("cases is an array");
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in cases {
        let name = field(case, "name").as_str().expect("name is a string");
        let pattern_json = field(case, "pattern");
        let pattern = match Pattern::new(pattern_json) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{name}: pattern rejected: {e}"));
                continue;
            }
        };
        let alone = PatternSet::new(std::slice::from_ref(pattern_json)).expect("compiles as a set");
        let mut crowd = decoys();
        crowd.insert(2, pattern_json.clone());
        let crowded = PatternSet::new(&crowd).expect("compiles among decoys");
        let cut = Reads::paths(pattern.paths());
        for (key, expected) in [("match", true), ("no_match", false)] {
            for (i, event) in field(case, key).as_array().expect("events are an array").iter().enumerate() {
                let event = resolve(event, shared);
                checked += 1;
                let got = [
                    ("Pattern", pattern.matches(&event)),
                    ("PatternSet of one", alone.matches(&event)),
                    ("PatternSet among decoys", crowded.matches(&event)),
                    ("PatternSet of one, on the event cut to its paths", alone.matches(&cut.prune(&event))),
                ];
                for (how, result) in got {
                    if result != expected {
                        failures.push(format!(
                            "{name} / {key}[{i}]: {how} gave {result}, expected {expected}; event {event}"
                        ));
                    }
                }
            }
        }
    }
    assert!(checked >= 170, "only {checked} cases");
    assert!(failures.is_empty(), "{} failing case(s):\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn invalid_table() {
    let table = table();
    let mut failures = Vec::new();
    for case in field(&table, "invalid").as_array().expect("invalid is an array") {
        let name = field(case, "name").as_str().expect("name is a string");
        let path = field(case, "path").as_str().expect("path is a string");
        let message = field(case, "message").as_str().expect("message is a string");
        match Pattern::new(field(case, "pattern")) {
            Ok(_) => failures.push(format!("{name}: accepted, expected an error at {path}")),
            Err(e) => {
                if e.path != path {
                    failures.push(format!("{name}: error at \"{}\", expected \"{path}\" ({e})", e.path));
                }
                if !e.message.contains(message) {
                    failures.push(format!("{name}: message \"{}\" lacks \"{message}\"", e.message));
                }
                if e.to_string() != format!("{}: {}", e.path, e.message) {
                    failures.push(format!("{name}: displayed as \"{e}\""));
                }
            }
        }
        // The same pattern at index 1 of a set reports the index in front of the path.
        let set = PatternSet::new(&[json!({"ok": ["x"]}), field(case, "pattern").clone()]);
        let expected = if path == "$" { "[1]".to_owned() } else { format!("[1].{path}") };
        match set {
            Ok(_) => failures.push(format!("{name}: accepted in a set")),
            Err(e) if e.path != expected => {
                failures.push(format!("{name}: set error at \"{}\", expected \"{expected}\"", e.path))
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{} failing case(s):\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn parse_reports_bad_json_at_the_root() {
    let e = Pattern::parse(r#"{"source": ["a"]"#).expect_err("truncated JSON");
    assert_eq!(e.path, "$");
    assert!(e.message.contains("not valid JSON"), "{e}");
    let e = Pattern::parse("").expect_err("empty text");
    assert_eq!(e.path, "$");
}

#[test]
fn parse_agrees_with_new() {
    let text = r#"{"detail": {"state": [{"anything-but": ["a", "b"]}], "n": [{"numeric": [">", 1]}]}}"#;
    let parsed = Pattern::parse(text).expect("valid");
    let built = Pattern::new(&serde_json::from_str(text).expect("json")).expect("valid");
    assert_eq!(parsed, built);
    let from_str: Pattern = text.parse().expect("valid");
    assert_eq!(from_str, built);
}

#[test]
fn set_errors_name_the_pattern_index() {
    let e = PatternSet::new(&[json!({"a": ["x"]}), json!({"b": ["y"]}), json!({"c": [{"prefix": 1}]})])
        .expect_err("third pattern is bad");
    assert_eq!(
        e,
        PatternError {
            path: "[2].c[0].prefix".into(),
            message: "prefix takes a string or {\"equals-ignore-case\": string}, found a number".into()
        }
    );
    let e = PatternSet::new(&[json!({"a": ["x"]}), json!({})]).expect_err("empty pattern");
    assert_eq!(e.path, "[1]");
}

#[test]
fn empty_set_matches_nothing() {
    let set = PatternSet::new(&[]).expect("empty set");
    assert!(set.is_empty());
    assert_eq!(set.len(), 0);
    assert!(!set.matches(&json!({})));
    assert!(!set.matches(&json!({"a": 1})));
}

#[test]
fn set_is_send_sync_clone_debug() {
    fn check<T: Send + Sync + Clone + std::fmt::Debug>() {}
    check::<PatternSet>();
    check::<Pattern>();
    check::<PatternError>();
    let set = PatternSet::new(&[json!({"a": ["x"]}), json!({"b": [1]})]).expect("valid");
    assert_eq!(set.len(), 2);
    assert!(!set.is_empty());
    assert!(format!("{set:?}").contains("patterns: 2"));
    let copy = set.clone();
    assert!(copy.matches(&json!({"b": 1.0})));
}

#[test]
fn sets_can_be_used_from_several_threads() {
    let set = std::sync::Arc::new(
        PatternSet::new(&(0..50).map(|i| json!({"source": [format!("s{i}")]})).collect::<Vec<_>>()).expect("valid"),
    );
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let set = set.clone();
            std::thread::spawn(move || {
                (0..200).all(|i| {
                    set.matches(&json!({"source": format!("s{}", (i + t) % 50)}))
                        && !set.matches(&json!({"source": "none"}))
                })
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().expect("thread"));
    }
}

#[test]
fn many_or_branches_fall_back_to_the_walk() {
    // 2^8 branches: beyond the index's limit, still matched correctly.
    let mut pattern = Map::new();
    for level in 0..8 {
        let mut group = Map::new();
        group.insert("$or".into(), json!([{format!("a{level}"): [1]}, {format!("b{level}"): [2]}]));
        pattern.insert(format!("l{level}"), Value::Object(group));
    }
    let pattern = Value::Object(pattern);
    let set = PatternSet::new(std::slice::from_ref(&pattern)).expect("valid");
    let single = Pattern::new(&pattern).expect("valid");
    let mut event = Map::new();
    for level in 0..8 {
        let key = if level % 2 == 0 { format!("a{level}") } else { format!("b{level}") };
        let value = if level % 2 == 0 { 1 } else { 2 };
        event.insert(format!("l{level}"), json!({ key: value }));
    }
    let event = Value::Object(event);
    assert!(single.matches(&event));
    assert!(set.matches(&event));
    let mut broken = event.clone();
    broken["l3"] = json!({"b3": 3});
    assert!(!single.matches(&broken));
    assert!(!set.matches(&broken));
}
