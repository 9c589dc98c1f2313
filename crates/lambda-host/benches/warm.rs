//! What the Runtime API costs: warm invocations of the Rust `rust-hello`
//! function through the host, against the same greeting served by a bare
//! axum server in this process; cold starts (process start to the runtime's
//! first `next`) of the Rust and Python examples; the bench's peak RSS.
//!
//! `cargo bench -p switchyard-lambda-host --bench warm` (builds rust-hello in
//! release first; the Python part needs target/test-venv, see the tests).
//! WARM_INVOCATIONS sets the timed loop's length (default 5000).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::post;
use serde_json::{Value, json};
use switchyard_lambda_host::{LambdaHost, LambdaSpec, Request};
use tokio_util::sync::CancellationToken;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let n: usize = std::env::var("WARM_INVOCATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(5000);
    let binary = common::rust_hello();
    println!("memory enforcement: {}", switchyard_lambda_host::memory_enforcement());

    // --- warm invocations through the Runtime API ---
    let mut spec = LambdaSpec::new("rust-hello", vec![binary.display().to_string()]);
    spec.dir = common::example("rust-hello");
    let host = LambdaHost::new(spec.clone(), CancellationToken::new());
    let lambda = measure(n, |i| {
        let host = host.clone();
        async move {
            let request = Request {
                request_id: format!("bench-{i}"),
                payload: json!({"name": "bench"}).to_string().into(),
                client_context: None,
                trace_id: None,
            };
            let response = host.invoke(request).await.expect("invoke");
            assert!(response.function_error.is_none(), "{:?}", response.payload);
        }
    })
    .await;
    host.shutdown().await;

    // --- the same greeting over plain HTTP, server in this process ---
    let app = axum::Router::new().route("/", post(|Json(event): Json<Value>| async move { Json(greet(&event)) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/");
    let bare = measure(n, |_| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let response = client.post(&url).json(&json!({"name": "bench"})).send().await.expect("post");
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["message"], "Hello, bench!");
        }
    })
    .await;
    server.abort();

    println!("warm, sequential, {n} invocations each:");
    println!(
        "  runtime API (rust-hello): {:>8.0} invocations/s, mean {:>7.1} µs",
        lambda.per_second(),
        lambda.mean_us()
    );
    println!("  bare HTTP (axum+reqwest): {:>8.0} requests/s,    mean {:>7.1} µs", bare.per_second(), bare.mean_us());
    println!("  ratio runtime API / bare HTTP throughput: {:.2}", lambda.per_second() / bare.per_second());

    // --- cold starts ---
    cold_starts("rust-hello (lambda_runtime)", spec.clone(), json!({"name": "cold"})).await;
    if let Some(python) = common::python() {
        let spec = common::python_spec(&python, "hello", "python-hello", "app.handler");
        cold_starts("python-hello (awslambdaric)", spec, json!({"action": "echo"})).await;
    }

    println!("bench process peak RSS (VmHWM): {} MiB", peak_rss_kib() / 1024);
}

/// The greeting rust-hello's handler computes.
fn greet(event: &Value) -> Value {
    let name = event.get("name").and_then(Value::as_str).unwrap_or("world");
    json!({ "message": format!("Hello, {name}!") })
}

struct Timing {
    count: usize,
    total: Duration,
}

impl Timing {
    fn per_second(&self) -> f64 {
        self.count as f64 / self.total.as_secs_f64()
    }
    fn mean_us(&self) -> f64 {
        self.total.as_secs_f64() * 1e6 / self.count as f64
    }
}

/// A short warm-up, then `n` calls one after another.
async fn measure<F, Fut>(n: usize, call: F) -> Timing
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for i in 0..200 {
        call(usize::MAX - i).await;
    }
    let started = Instant::now();
    for i in 0..n {
        call(i).await;
    }
    Timing { count: n, total: started.elapsed() }
}

async fn cold_starts(name: &str, spec: LambdaSpec, payload: Value) {
    const ROUNDS: usize = 5;
    let mut inits = Vec::new();
    let mut firsts = Vec::new();
    for i in 0..ROUNDS {
        let host = LambdaHost::new(spec.clone(), CancellationToken::new());
        let started = Instant::now();
        let request = Request {
            request_id: format!("cold-{i}"),
            payload: payload.to_string().into(),
            client_context: None,
            trace_id: None,
        };
        let response = host.invoke(request).await.expect("invoke");
        firsts.push(started.elapsed());
        assert!(response.function_error.is_none(), "{}", String::from_utf8_lossy(&response.payload));
        inits.push(response.init_duration.expect("cold start"));
        host.shutdown().await;
    }
    inits.sort();
    firsts.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "cold start {name}: init (start → first next) median {:.1} ms, min {:.1} ms; first invoke median {:.1} ms ({ROUNDS} rounds)",
        ms(inits[ROUNDS / 2]),
        ms(inits[0]),
        ms(firsts[ROUNDS / 2]),
    );
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmHWM:")).map(|v| v.trim().trim_end_matches("kB").trim().to_string())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
