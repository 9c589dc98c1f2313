//! Filtering and mapping cost per 1 KB event, against parsing alone
//! (serde_json) on the same payloads, in the same run.
//!
//! Each event is a record as a source hands it over (a webhook's, with the
//! 1 KB JSON payload as its `body` text): shaping it means parsing that
//! payload, matching the patterns, transforming, and writing the payload the
//! function receives. The baseline parses the same payload and nothing else.
//!
//! Criterion reports each variant; the summary at the end gives the ratios
//! the docs quote (median ratio of alternating timed passes), the cost of matching as
//! a mapping's pattern count grows, and the process's peak RSS.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Bencher, Criterion, Throughput};
use serde_json::{Value, json};
use switchyard::config::Config;
use switchyard::shape::{Admit, Item, Shaper, WebhookEnvelope};

// The binary's allocator, so the costs are the ones the binary pays.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Distinct ~1 KB order events, so the run is not one payload in cache.
fn events() -> Vec<Bytes> {
    (0..256)
        .map(|i| {
            let items: Vec<Value> = (0..8)
                .map(|j| json!({"sku": format!("SKU-{i:04}-{j}"), "qty": j + 1, "price": 9.99 + j as f64, "tags": ["a", "b"]}))
                .collect();
            let event = json!({
                "version": "0", "id": format!("6a7e8feb-b491-4cf7-a9f1-bf3703467{i:03}"),
                "detail-type": if i % 4 == 0 { "OrderRefunded" } else { "OrderPlaced" },
                "source": "com.example.shop", "account": "123456789012", "time": "2026-11-26T10:00:00Z",
                "region": "eu-west-1", "resources": [],
                "detail": {"orderId": format!("o-{i}"), "total": (i % 50) as f64 * 10.5, "currency": "EUR",
                           "customer": {"id": format!("c-{}", i % 17), "tier": if i % 3 == 0 { "gold" } else { "basic" }, "email": format!("user{i}@example.com")},
                           "items": items, "shipping": {"country": "DE", "express": i % 5 == 0}}
            });
            Bytes::from(event.to_string())
        })
        .collect()
}

/// The webhook record around a payload.
fn record(payload: &Bytes) -> Value {
    json!({
        "version": "2.0", "rawPath": "/orders",
        "headers": {"content-type": "application/json", "x-kind": "order"},
        "body": std::str::from_utf8(payload).expect("utf-8"), "isBase64Encoded": false,
    })
}

fn shaper(mapping: &str) -> Shaper {
    let text = format!(
        "functions:\n  f:\n    http: {{ url: http://127.0.0.1:7000/ }}\nmappings:\n  - name: m\n    function: f\n    source: {{ webhook: {{ path: /h }} }}\n{mapping}"
    );
    let config = Config::parse("bench.yaml", &text, |_| None).expect("bench config");
    Shaper::new(&config.mappings[0]).expect("bench shaper")
}

const FILTERS: &str = r#"    filters:
      - pattern: { body: { source: [com.example.shop], detail-type: [OrderPlaced], detail: { total: [{ numeric: [">=", 100] }] } } }
      - pattern: { body: { detail: { customer: { tier: [gold] }, shipping: { country: [{ prefix: D }] } } } }
      - pattern: { headers: { x-kind: [refund] }, body: { detail: { shipping: { express: [true] } } } }
"#;

/// `n` patterns, each on its own order id, plus the three above.
fn many_filters(n: usize) -> String {
    let mut text = FILTERS.to_string();
    for i in 0..n {
        text.push_str(&format!(
            "      - pattern: {{ body: {{ detail: {{ orderId: [o-x{i}] }}, source: [com.example.shop] }} }}\n"
        ));
    }
    text
}

/// Admit (parse the payload, filter, record transform) and shape the
/// invocation. The record is the source's: shaping owns it from here, as the
/// pipeline does.
fn run(shaper: &Shaper, record: &mut Value) -> usize {
    match shaper.admit(&WebhookEnvelope, record) {
        Admit::Keep => {
            let item = Item { id: "1", time: std::time::UNIX_EPOCH, data: record };
            shaper.event(&WebhookEnvelope, &[item]).map(|s| s.payload.len()).unwrap_or(0)
        }
        _ => 0,
    }
}

/// The baseline: the payload parsed, nothing else.
fn parse(record: &mut Value) -> usize {
    let body = record["body"].as_str().expect("body");
    let value: Value = serde_json::from_str(body).expect("json");
    value.as_object().map_or(0, |o| o.len())
}

/// ns per event of one pass over the events. The records are copied before
/// the clock starts and dropped after it stops: making and freeing a record
/// is the source's work, in the baseline's passes as in the others.
fn pass(events: &[Value], f: &dyn Fn(&mut Value) -> usize) -> f64 {
    let mut elapsed = Duration::ZERO;
    let mut n = 0;
    for _ in 0..8 {
        let mut batch = events.to_vec();
        let start = Instant::now();
        for e in &mut batch {
            n += f(black_box(e));
        }
        elapsed += start.elapsed();
    }
    black_box(n);
    elapsed.as_nanos() as f64 / (8 * events.len()) as f64
}

/// A criterion routine over fresh copies of the records.
fn each<'a>(events: &'a [Value], f: &'a dyn Fn(&mut Value) -> usize) -> impl FnMut(&mut Bencher) + 'a {
    move |b| {
        b.iter_batched_ref(|| events.to_vec(), |batch| batch.iter_mut().map(f).sum::<usize>(), BatchSize::LargeInput)
    }
}

/// Median ns per event of `f`, and its median ratio to `base`. Passes of the
/// two alternate, and each ratio compares neighbouring passes, so a slow
/// spell of a shared machine (CPU steal, a neighbour's build) weighs on both
/// sides of a ratio instead of on one.
fn compare(events: &[Value], base: &dyn Fn(&mut Value) -> usize, f: &dyn Fn(&mut Value) -> usize) -> (f64, f64) {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (times, ratios): (Vec<f64>, Vec<f64>) = (0..21)
        .map(|_| {
            let b = pass(events, base);
            let t = pass(events, f);
            (t, t / b)
        })
        .unzip();
    (median(times), median(ratios))
}

fn main() {
    let payloads = events();
    let bytes = payloads.iter().map(Bytes::len).sum::<usize>() / payloads.len();
    let events: Vec<Value> = payloads.iter().map(record).collect();
    let filter_only = shaper(&format!("{FILTERS}    format: raw\n"));
    let jq = shaper(&format!(
        "{FILTERS}    format: raw\n    transform: {{ record: '{{id: .body.detail.orderId, total: .body.detail.total, items: (.body.detail.items | length), gold: (.body.detail.customer.tier == \"gold\")}}' }}\n"
    ));
    // Collecting over a list is still a projection.
    let jq_collect = shaper(&format!(
        "{FILTERS}    format: raw\n    transform: {{ record: '{{id: .body.detail.orderId, skus: [.body.detail.items[].sku]}}' }}\n"
    ));
    // A builtin such as `ascii_downcase` takes the program outside the
    // projections: this one runs on jaq's interpreter.
    let jq_interpreted = shaper(&format!(
        "{FILTERS}    format: raw\n    transform: {{ record: '{{id: .body.detail.orderId, skus: [.body.detail.items[].sku | ascii_downcase]}}' }}\n"
    ));
    let template = shaper(&format!(
        "{FILTERS}    format: raw\n    transform:\n      input_paths: {{ id: $.body.detail.orderId, total: $.body.detail.total, tier: $.body.detail.customer.tier }}\n      input_template: '{{\"id\": <id>, \"total\": <total>, \"tier\": \"<tier>\"}}'\n"
    ));
    let cloudevents = shaper(&format!("{FILTERS}    format: cloudevents\n"));
    let many: Vec<(usize, Shaper)> =
        [0, 10, 100, 1000].iter().map(|&n| (n + 3, shaper(&format!("{}    format: raw\n", many_filters(n))))).collect();

    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    let mut group = c.benchmark_group("shaping");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("parse", each(&events, &parse));
    group.bench_function("parse+filter", each(&events, &|e| run(&filter_only, e)));
    group.bench_function("parse+filter+jq", each(&events, &|e| run(&jq, e)));
    group.bench_function("parse+filter+jq-collect", each(&events, &|e| run(&jq_collect, e)));
    group.bench_function("parse+filter+jq-interpreted", each(&events, &|e| run(&jq_interpreted, e)));
    group.bench_function("parse+filter+template", each(&events, &|e| run(&template, e)));
    group.bench_function("parse+filter+cloudevents", each(&events, &|e| run(&cloudevents, e)));
    for (n, s) in &many {
        group.bench_function(format!("parse+filter/{n}-patterns"), each(&events, &|e| run(s, e)));
    }
    group.finish();
    c.final_summary();

    let (base, _) = compare(&events, &parse, &parse);
    println!("\nshaping summary: {} events of {bytes} bytes on average", events.len());
    println!("  {:<34} {:>9} {:>7}", "variant", "ns/event", "ratio");
    println!("  {:<34} {:>9.0} {:>7.2}", "parse alone (serde_json)", base, 1.0);
    for (name, s) in [
        ("parse + filter (3 patterns) + raw", &filter_only),
        ("parse + filter + jq record map", &jq),
        ("parse + filter + jq collecting", &jq_collect),
        ("parse + filter + jq, interpreted", &jq_interpreted),
        ("parse + filter + input template", &template),
        ("parse + filter + cloudevents", &cloudevents),
    ] {
        let (t, ratio) = compare(&events, &parse, &|e| run(s, e));
        println!("  {name:<34} {t:>9.0} {ratio:>7.2}");
    }
    for (n, s) in &many {
        let (t, ratio) = compare(&events, &parse, &|e| run(s, e));
        println!("  {:<34} {t:>9.0} {ratio:>7.2}", format!("parse + filter, {n} patterns"));
    }
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0);
    println!("  peak RSS: {rss:.1} MB");
}
