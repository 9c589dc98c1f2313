//! Input: pattern JSON, a NUL byte, event JSON. The pattern text may also be a JSON array of patterns.
//! Compiles the patterns one by one and as a set; the set must agree with ORing the patterns' reference
//! tree walks, and nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchyard_pattern::{Pattern, PatternSet};

fuzz_target!(|data: &[u8]| {
    let (pattern_bytes, event_bytes) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b"{}"[..]),
    };
    let Ok(patterns) = serde_json::from_slice::<Value>(pattern_bytes) else { return };
    let Ok(event) = serde_json::from_slice::<Value>(event_bytes) else { return };
    let sources = match patterns {
        Value::Array(list) if list.first().is_some_and(Value::is_object) => list,
        single => vec![single],
    };
    let compiled: Vec<Pattern> = sources.iter().filter_map(|p| Pattern::new(p).ok()).collect();
    // A set compiles exactly when every pattern does.
    match PatternSet::new(&sources) {
        Ok(set) => {
            assert_eq!(compiled.len(), sources.len());
            let expected = compiled.iter().any(|p| p.matches(&event));
            assert_eq!(set.matches(&event), expected, "set disagrees on {event}");
            for p in &compiled {
                let one = PatternSet::from_patterns(vec![p.clone()]);
                assert_eq!(one.matches(&event), p.matches(&event));
            }
        }
        Err(_) => assert!(compiled.len() < sources.len()),
    }
});
