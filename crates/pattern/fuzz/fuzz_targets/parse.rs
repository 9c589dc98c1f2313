//! Arbitrary bytes as pattern text: compiling must never panic, and whatever compiles must match a few
//! fixed events, alone and as a set, without panicking or disagreeing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use switchyard_pattern::{Pattern, PatternSet};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(pattern) = Pattern::parse(text) else { return };
    let set = PatternSet::from_patterns(vec![pattern.clone()]);
    let events = [
        json!({}),
        json!({"source": "aws.ec2", "detail": {"state": "running", "n": 5, "ip": "10.0.0.1"}}),
        json!({"a": [{"b": 1}, {"b": "x", "c": null}], "d": [true, 2.5, ""]}),
    ];
    for event in &events {
        assert_eq!(set.matches(event), pattern.matches(event), "pattern {text} on event {event}");
    }
});
