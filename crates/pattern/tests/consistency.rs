//! The compiled set must agree with ORing its patterns' reference tree walks, on generated patterns and
//! events drawn from one small vocabulary (so that they actually meet: shared keys, colliding values,
//! arrays of objects, nested arrays, missing fields, `$or` at every level, every operator).

use serde_json::{Map, Value, json};
use switchyard_pattern::{Pattern, PatternSet};

use switchyard_sdk::Reads;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}

const KEYS: &[&str] = &["a", "b", "c", "d"];

fn string_value(rng: &mut Rng) -> Value {
    json!(rng.pick(&["x", "y", "Xy", "xy", "", "ab-c", "a*c", "10.0.0.5", "::1", "ÉTÉ", "été"]))
}

fn scalar(rng: &mut Rng) -> Value {
    match rng.below(4) {
        0 | 1 => string_value(rng),
        2 => rng.pick(&[json!(0), json!(1), json!(1.5), json!(-2), json!(300.0), json!(3e2), json!(1e10), json!(-0.0)]),
        _ => rng.pick(&[json!(true), json!(false), Value::Null]),
    }
}

fn matcher(rng: &mut Rng) -> Value {
    match rng.below(16) {
        0..=3 => scalar(rng),
        4 => json!({"prefix": rng.pick(&["x", "X", "", "ab"])}),
        5 => json!({"prefix": {"equals-ignore-case": rng.pick(&["x", "X", "é"])}}),
        6 => json!({"suffix": rng.pick(&["y", "c", ""])}),
        7 => json!({"suffix": {"equals-ignore-case": rng.pick(&["Y", "TÉ"])}}),
        8 => json!({"equals-ignore-case": rng.pick(&["xy", "ÉTÉ", "X"])}),
        9 => json!({"wildcard": rng.pick(&["x*", "*y", "*", "a*c", "a\\*c"])}),
        10 => json!({"numeric": rng.pick(&[
            json!([">", 0]),
            json!(["<=", 1.5]),
            json!([">", -3, "<", 2]),
            json!(["=", 300]),
            json!([">=", 1, "<=", 1.5]),
        ])}),
        11 => json!({"exists": rng.chance(50)}),
        12 => json!({"cidr": rng.pick(&["10.0.0.0/8", "::/0"])}),
        13 => json!({"anything-but": rng.pick(&[
            json!("x"),
            json!(1),
            json!(["x", "y"]),
            json!([0, 300]),
        ])}),
        14 => json!({"anything-but": rng.pick(&[
            json!({"prefix": "x"}),
            json!({"suffix": "y"}),
            json!({"equals-ignore-case": ["X", "été"]}),
            json!({"wildcard": ["a*", "*y"]}),
        ])}),
        _ => scalar(rng),
    }
}

fn pattern_object(rng: &mut Rng, depth: usize) -> Value {
    let mut map = Map::new();
    for _ in 0..1 + rng.below(3) {
        let key = rng.pick(KEYS).to_owned();
        let value = if depth < 3 && rng.chance(30) {
            pattern_object(rng, depth + 1)
        } else {
            Value::Array((0..1 + rng.below(3)).map(|_| matcher(rng)).collect())
        };
        map.insert(key, value);
    }
    if depth < 3 && rng.chance(15) {
        let alternatives = (0..2 + rng.below(2)).map(|_| pattern_object(rng, depth + 1)).collect();
        map.insert("$or".into(), Value::Array(alternatives));
    }
    Value::Object(map)
}

fn event_value(rng: &mut Rng, depth: usize) -> Value {
    let nested = depth < 4;
    match rng.below(10) {
        0..=3 => scalar(rng),
        4 | 5 if nested => event_object(rng, depth + 1),
        6 if nested => Value::Array((0..rng.below(4)).map(|_| scalar(rng)).collect()),
        7 if nested => Value::Array((0..rng.below(3)).map(|_| event_object(rng, depth + 1)).collect()),
        8 if nested => Value::Array((0..rng.below(3)).map(|_| event_value(rng, depth + 1)).collect()),
        _ => scalar(rng),
    }
}

fn event_object(rng: &mut Rng, depth: usize) -> Value {
    let mut map = Map::new();
    for _ in 0..rng.below(5) {
        map.insert(rng.pick(KEYS).to_owned(), event_value(rng, depth));
    }
    Value::Object(map)
}

fn event(rng: &mut Rng) -> Value {
    match rng.below(20) {
        0 => Value::Array((0..rng.below(3)).map(|_| event_object(rng, 1)).collect()),
        1 => scalar(rng),
        _ => event_object(rng, 0),
    }
}

#[test]
fn set_agrees_with_or_of_patterns() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut matched, mut unmatched) = (0, 0);
    for round in 0..300 {
        let sources: Vec<Value> = (0..1 + rng.below(25)).map(|_| pattern_object(&mut rng, 0)).collect();
        let patterns: Vec<Pattern> = sources
            .iter()
            .map(|p| Pattern::new(p).unwrap_or_else(|e| panic!("generated pattern {p} rejected: {e}")))
            .collect();
        let set = PatternSet::new(&sources).expect("the same patterns compile as a set");
        let singles: Vec<PatternSet> =
            sources.iter().map(|p| PatternSet::new(std::slice::from_ref(p)).expect("compiles")).collect();
        let reads = Reads::paths(set.paths());
        for _ in 0..60 {
            let event = event(&mut rng);
            let expected = patterns.iter().any(|p| p.matches(&event));
            assert_eq!(
                set.matches(&event),
                expected,
                "round {round}: set disagrees with the patterns on event {event}\npatterns: {}",
                Value::Array(sources.clone())
            );
            let cut = reads.prune(&event);
            assert_eq!(
                set.matches(&cut),
                expected,
                "round {round}: the set disagrees on the event cut to its paths {cut} (from {event})\npatterns: {}",
                Value::Array(sources.clone())
            );
            for (single, (source, pattern)) in singles.iter().zip(sources.iter().zip(&patterns)) {
                assert_eq!(
                    single.matches(&event),
                    pattern.matches(&event),
                    "round {round}: one-pattern set disagrees with {source} on event {event}"
                );
            }
            if expected { matched += 1 } else { unmatched += 1 }
        }
    }
    // The generator must exercise both outcomes for the comparison to mean anything.
    assert!(matched > 2000 && unmatched > 2000, "matched {matched}, unmatched {unmatched}");
}

#[test]
fn set_agrees_on_flat_exact_patterns() {
    // The indexed common case: many patterns of exact values on shared fields, no arrays of objects.
    let mut rng = Rng(42);
    let sources: Vec<Value> = (0..400)
        .map(|i| {
            let mut p = json!({
                "source": [format!("src{}", rng.below(20))],
                "detail-type": [format!("type{}", rng.below(30))],
            });
            if i % 3 == 0 {
                p["detail"] = json!({"state": [format!("state{}", rng.below(5)), rng.below(3) as u64]});
            }
            if i % 7 == 0 {
                p["detail"] = json!({"count": [{"numeric": [">", rng.below(100) as u64]}]});
            }
            p
        })
        .collect();
    let patterns: Vec<Pattern> = sources.iter().map(|p| Pattern::new(p).expect("valid")).collect();
    let set = PatternSet::new(&sources).expect("valid");
    let mut matched = 0;
    for _ in 0..3000 {
        let event = json!({
            "source": format!("src{}", rng.below(22)),
            "detail-type": format!("type{}", rng.below(32)),
            "detail": {
                "state": if rng.chance(50) { json!(format!("state{}", rng.below(6))) } else { json!(rng.below(4) as u64) },
                "count": rng.below(120) as u64,
            },
        });
        let expected = patterns.iter().any(|p| p.matches(&event));
        assert_eq!(set.matches(&event), expected, "event {event}");
        matched += usize::from(expected);
    }
    assert!(matched > 300 && matched < 2900, "matched {matched}");
}
