//! Match cost of a compiled PatternSet against the pattern-by-pattern OR loop, for sets of 1 to 1000
//! patterns over a ~1 KB event. Patterns are mostly exact values on `source`, `detail-type` and a nested
//! field, with some prefix and numeric matchers, as Lambda filter lists tend to be.
//!
//! `cargo bench -p switchyard-pattern --bench matching`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use switchyard_pattern::{Pattern, PatternSet};

const SIZES: &[usize] = &[1, 10, 100, 1000];

/// A realistic event of about 1 KB.
fn event() -> Value {
    let event = json!({
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "Order Placed 17",
        "source": "com.example.billing",
        "account": "111122223333",
        "time": "2024-06-01T12:34:56Z",
        "region": "eu-west-1",
        "resources": ["arn:aws:dynamodb:eu-west-1:111122223333:table/orders"],
        "detail": {
            "order-id": "ord-8c1f2d7e-4a55-4a1e-9e0b-1d4b9b7f2a10",
            "customer": {"id": "cust-4411", "tier": "gold", "country": "IE", "email": "someone@example.com"},
            "state": "state-2",
            "total": 182.45,
            "currency": "EUR",
            "items": [
                {"sku": "SKU-1001", "qty": 2, "price": 19.99},
                {"sku": "SKU-2002", "qty": 1, "price": 142.47}
            ],
            "shipping": {"method": "express", "address": {"city": "Dublin", "postcode": "D02 X285"}},
            "notes": "Leave at the front desk, ring twice. Fragile items inside, handle with care please.",
            "tags": ["priority", "gift", "newsletter"],
            "payment": {"method": "card", "brand": "visa", "last4": "4242", "authorized": true, "attempts": 1},
            "channel": {"name": "web", "user-agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0", "session": "s-77e1"}
        }
    });
    let size = event.to_string().len();
    assert!((900..1300).contains(&size), "event is {size} bytes");
    event
}

/// Pattern `i` of a family: exact matchers on common fields, every 10th a prefix, every 7th a numeric.
/// Pattern 17 matches the event; nothing else does, so both loops have to look at everything.
fn pattern(i: usize) -> Value {
    let mut p = json!({
        "source": [format!("com.example.{}", ["orders", "billing", "shipping", "users"][i % 4])],
        "detail-type": [format!("Order Placed {i}")],
        "detail": {"state": [format!("state-{}", i % 5)]},
    });
    if i % 10 == 0 {
        p["detail"]["customer"] = json!({"tier": [{"prefix": "gol"}]});
    }
    if i % 7 == 0 {
        p["detail"]["total"] = json!([{"numeric": [">", 100, "<=", 500]}]);
    }
    p
}

fn patterns(n: usize) -> Vec<Value> {
    // Keep the one matching pattern (17) in every set with more than one pattern, last, so the OR loop
    // cannot stop early; the set of one holds a non-matching pattern.
    let mut list: Vec<Value> = (0..n).map(|i| pattern(if i == 17 { n + 1000 } else { i })).collect();
    if n > 1 {
        if let Some(last) = list.last_mut() {
            *last = pattern(17);
        }
    }
    list
}

fn bench(c: &mut Criterion) {
    let event = event();
    let mut group = c.benchmark_group("match");
    for &n in SIZES {
        let sources = patterns(n);
        let set = PatternSet::new(&sources).expect("valid patterns");
        let singles: Vec<Pattern> = sources.iter().map(|p| Pattern::new(p).expect("valid")).collect();
        assert_eq!(set.matches(&event), n > 1);
        assert_eq!(singles.iter().any(|p| p.matches(&event)), n > 1);
        group
            .bench_with_input(BenchmarkId::new("pattern_set", n), &n, |b, _| b.iter(|| set.matches(black_box(&event))));
        group.bench_with_input(BenchmarkId::new("or_of_patterns", n), &n, |b, _| {
            b.iter(|| singles.iter().any(|p| p.matches(black_box(&event))))
        });
    }
    group.finish();

    // Miss: no pattern matches, the common case for a filter dropping most traffic.
    let mut miss = event.clone();
    miss["source"] = json!("com.example.unrelated");
    let mut group = c.benchmark_group("miss");
    for &n in SIZES {
        let sources = patterns(n);
        let set = PatternSet::new(&sources).expect("valid patterns");
        let singles: Vec<Pattern> = sources.iter().map(|p| Pattern::new(p).expect("valid")).collect();
        group.bench_with_input(BenchmarkId::new("pattern_set", n), &n, |b, _| b.iter(|| set.matches(black_box(&miss))));
        group.bench_with_input(BenchmarkId::new("or_of_patterns", n), &n, |b, _| {
            b.iter(|| singles.iter().any(|p| p.matches(black_box(&miss))))
        });
    }
    group.finish();

    let single =
        Pattern::new(&json!({"source": ["com.example.billing"], "detail": {"state": ["state-2"]}})).expect("valid");
    c.bench_function("single_small_pattern", |b| b.iter(|| single.matches(black_box(&event))));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
