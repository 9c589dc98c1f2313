//! Webhook and async-accept benchmarks, each a ratio against a baseline
//! measured in the same run on the same machine (docs/benchmarks.md).
//!
//! `cargo bench --bench webhook_sync` (optionally `-- --seconds 5 --events 20000`)
//!
//! 1. Sync webhook round trip through Switchyard to a trivial HTTP function
//!    vs a direct call to the same function: added p50/p99 latency at one
//!    connection, and the requests/s ratio at 32 connections.
//! 2. Async webhook accept (durable 202) vs a bare axum handler that reads
//!    the body and answers 202, same client and connections. The accepting
//!    mapping's function holds its one invocation, so delivery does not compete
//!    with the accepts being measured. Beside them, the durable floor
//!    (benches/support/floor.rs): a handler that only group-commits the body
//!    to a file before its 202, which shows what durability alone costs on
//!    the machine, and so how much of the gap to the bare handler is
//!    Switchyard's own.
//! 3. End-to-end async delivery rate to the trivial function: a fixed number
//!    of events posted, timed from the first post to the last delivery.
//!
//! Switchyard's peak RSS (VmHWM) is reported after the run.
//!
//! `-- --accept-only [--rounds 3] [--connections 32,64,128,256]` runs only the
//! second measurement at each connection count, alternating the bare handler,
//! the durable floor and the durable accept, and prints each round's ratios
//! and the medians,
//! with Switchyard's CPU per accepted event split by thread (the runtime's
//! workers, the accept log's, the state store's), how long per second its
//! threads waited, runnable, for a core (from `schedstat`: long waits mean
//! the run is bound by CPU), and the accept log's syncs (from its histograms:
//! how many per second, how long each, how many events each carried).
//! `--bare-process` compares with the bare handler in a process of its own,
//! and shows its CPU per 202.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

const BODY: &str = r#"{"order":42,"items":[{"sku":"A-1","qty":2}],"note":"benchmark payload of a typical webhook"}"#;

struct Stats {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Stats {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&self, p: f64) -> f64 {
        let mut l = self.latencies_us.clone();
        l.sort_unstable();
        if l.is_empty() {
            return f64::NAN;
        }
        let i = ((l.len() as f64 - 1.0) * p).round() as usize;
        l[i] as f64 / 1000.0
    }
}

async fn load(client: &HttpClient, url: &str, connections: usize, duration: Duration, expect: u16) -> Stats {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let errors = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let client = client.clone();
        let url: hyper::Uri = url.parse().unwrap();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let request = hyper::Request::post(url.clone())
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                    .unwrap();
                let t = Instant::now();
                match client.request(request).await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let _ = response.into_body().collect().await;
                        if status == expect {
                            latencies.push(t.elapsed().as_micros() as u64);
                        } else {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies_us = Vec::new();
    for t in tasks {
        latencies_us.extend(t.await.unwrap());
    }
    Stats {
        requests: latencies_us.len(),
        errors: errors.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        latencies_us,
    }
}

/// Posts `total` events over `connections`; returns how many got a 202.
async fn post_count(client: &HttpClient, url: &str, connections: usize, total: usize) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let url: hyper::Uri = url.parse().unwrap();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (client, url, next, accepted) = (client.clone(), url.clone(), next.clone(), accepted.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let request =
                        hyper::Request::post(url.clone()).body(Full::new(Bytes::from_static(BODY.as_bytes()))).unwrap();
                    if let Ok(r) = client.request(request).await
                        && r.status() == 202
                    {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        let _ = r.into_body().collect().await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    accepted.load(Ordering::Relaxed)
}

/// The trivial function: answers `{}`; counts what it received.
async fn start_function(received: Arc<AtomicUsize>) -> SocketAddr {
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let received = received.clone();
        async move {
            let _ = body;
            received.fetch_add(1, Ordering::Relaxed);
            "{}"
        }
    });
    serve(app).await
}

/// A function that holds its one invocation for a long time: the async
/// accept run measures the durable 202, not delivery competing with it.
async fn start_parked_function() -> SocketAddr {
    let app = axum::Router::new().fallback(|body: Bytes| async move {
        let _ = body;
        tokio::time::sleep(Duration::from_secs(600)).await;
        "{}"
    });
    serve(app).await
}

/// The baseline for async accept: read the body, answer 202.
async fn start_bare_accept() -> SocketAddr {
    let app = axum::Router::new().fallback(|body: Bytes| async move {
        let _ = body;
        axum::http::StatusCode::ACCEPTED
    });
    serve(app).await
}

/// The same bare handler in a process of its own (this benchmark binary run
/// with `--bare-server PORT`), so that, like Switchyard, it does not share the
/// load generator's process.
fn spawn_bare_process() -> (Child, SocketAddr) {
    spawn_server_process("--bare-server")
}

/// The durable floor (benches/support/floor.rs) in a process of its own
/// (`--floor-server PORT`).
fn spawn_floor_process() -> (Child, SocketAddr) {
    spawn_server_process("--floor-server")
}

fn spawn_server_process(flag: &str) -> (Child, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([flag, &port.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start this benchmark with {flag}: {e}"));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..400 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return (child, addr);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the server process started with {flag} did not listen");
}

async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn start_switchyard(function: SocketAddr, parked: SocketAddr, port: u16, state: &std::path::Path) -> Child {
    let config = format!(
        "server:\n  listen: 127.0.0.1:{port}\nstate:\n  dir: {}\n  max_queued_events: 2000000\nfunctions:\n  f:\n    http: {{ url: http://{function}/ }}\n    concurrency: 64\n    max_waiting: 1000\n  parked:\n    http: {{ url: http://{parked}/, timeout: 900s }}\n    concurrency: 1\nmappings:\n  - {{ name: sync, source: {{ webhook: {{ path: /sync, mode: sync }} }}, function: f }}\n  - {{ name: async, source: {{ webhook: {{ path: /async, mode: async }} }}, function: f }}\n  - {{ name: accept, source: {{ webhook: {{ path: /accept, mode: async }} }}, function: parked }}\n",
        state.display()
    );
    let path = state.join("bench.yaml");
    std::fs::create_dir_all(state).unwrap();
    std::fs::write(&path, config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "--config"])
        .arg(&path)
        .env("SWITCHYARD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start switchyard")
}

async fn wait_ready(client: &HttpClient, port: u16) {
    let url: hyper::Uri = format!("http://127.0.0.1:{port}/readyz").parse().unwrap();
    for _ in 0..600 {
        if let Ok(r) = client.get(url.clone()).await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("switchyard did not become ready");
}

/// `--accept-only`: for each connection count, alternates the bare handler,
/// the durable floor and the durable accept for `rounds` rounds and prints
/// each round's ratios and the medians. Each round's ratio pairs runs a few seconds apart, so it
/// holds up when the machine's speed drifts. Switchyard's pid goes to stderr
/// so a profiler can attach.
async fn accept_rounds(
    client: &HttpClient,
    baseline: &Baseline<'_>,
    floor: &Baseline<'_>,
    switchyard: &Accept<'_>,
    counts: &[usize],
    duration: Duration,
    rounds: usize,
) {
    let mut summary = Vec::new();
    let mut floor_summary = Vec::new();
    let mut peak_rss = 0.0f64;
    println!(
        "| connections | round | bare 202/s | floor 202/s (floor/bare) | durable 202/s | ratio | of the floor | p99 ms | Switchyard's CPU per 202 (by thread, µs) | its threads' wait for a core | the log's syncs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &connections in counts {
        // A fresh Switchyard and state per count: the accepted events stay
        // queued, and a queue grown by earlier counts would slow the later.
        let state = tempfile::tempdir().unwrap();
        let mut child = start_switchyard(switchyard.function, switchyard.parked, switchyard.port, state.path());
        wait_ready(client, switchyard.port).await;
        let pid = child.id();
        eprintln!("switchyard pid {pid}");
        let accept = switchyard.url;
        load(client, accept, connections, Duration::from_millis(500), 202).await;
        let (mut bares, mut durables, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let (mut floors, mut floor_ratios) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            let bare_before = baseline.pid.map(|pid| (pid, support::process_cpu(pid)));
            let bare = load(client, baseline.url, connections, duration, 202).await;
            let bare_cpu = bare_before.map_or(String::new(), |(pid, before)| {
                let spent = support::process_cpu(pid).saturating_sub(before);
                format!(" ({:.1} µs)", spent.as_secs_f64() * 1e6 / bare.requests.max(1) as f64)
            });
            let floor_before = floor.pid.map(|pid| (pid, support::process_cpu(pid)));
            let floored = load(client, floor.url, connections, duration, 202).await;
            let floor_cpu = floor_before.map_or(String::new(), |(pid, before)| {
                let spent = support::process_cpu(pid).saturating_sub(before);
                format!(", {:.1} µs", spent.as_secs_f64() * 1e6 / floored.requests.max(1) as f64)
            });
            eprintln!("accept run {round} starts");
            let cpu = support::process_cpu(pid);
            let threads = support::thread_cpu(pid);
            let waited = support::runqueue_wait(pid);
            let log = log_syncs(client, switchyard.port).await;
            let accepted = load(client, accept, connections, duration, 202).await;
            let cpu = support::process_cpu(pid).saturating_sub(cpu);
            let waited =
                support::runqueue_wait(pid).saturating_sub(waited).as_secs_f64() * 1e3 / accepted.elapsed.as_secs_f64();
            let log = log_syncs(client, switchyard.port).await.since(&log, accepted.elapsed);
            let per_event = |d: Duration| d.as_secs_f64() * 1e6 / accepted.requests.max(1) as f64;
            let split: Vec<String> = support::thread_cpu(pid)
                .into_iter()
                .filter_map(|(name, now)| {
                    let before = threads.iter().find(|(n, _)| *n == name).map_or(Duration::ZERO, |(_, d)| *d);
                    let spent = per_event(now.saturating_sub(before));
                    (spent >= 0.1).then(|| format!("{} {spent:.1}", thread_label(&name)))
                })
                .collect();
            let ratio = accepted.rps() / bare.rps();
            let floor_ratio = floored.rps() / bare.rps();
            floors.push(floored.rps());
            floor_ratios.push(floor_ratio);
            bares.push(bare.rps());
            durables.push(accepted.rps());
            ratios.push(ratio);
            println!(
                "| {connections} | {round} | {:.0}{bare_cpu} | {:.0} ({floor_ratio:.2}{floor_cpu}) | {:.0} | {ratio:.2} | {:.2} | {:.2} | {:.1} µs ({}) | {waited:.0} ms/s | {log} |",
                bare.rps(),
                floored.rps(),
                accepted.rps(),
                accepted.rps() / floored.rps(),
                accepted.percentile(0.99),
                per_event(cpu),
                split.join(", ")
            );
        }
        let (bare, durable, ratio) = (median(&mut bares), median(&mut durables), median(&mut ratios));
        let (floored, floor_ratio) = (median(&mut floors), median(&mut floor_ratios));
        println!(
            "| {connections} | median | {bare:.0} | {floored:.0} ({floor_ratio:.2}) | {durable:.0} | {ratio:.2} | {:.2} | | | | |",
            durable / floored
        );
        summary.push(format!("{ratio:.2} at {connections}"));
        floor_summary.push(format!("{floor_ratio:.2} at {connections}"));
        peak_rss = peak_rss.max(support::peak_rss_mb(pid));
        let _ = child.kill();
        let _ = child.wait();
    }
    println!(
        "\n- async accept ratio, median of {rounds} rounds per connection count: {} (goal: at least 0.5)",
        summary.join(", ")
    );
    println!(
        "- the durable floor (a handler that only group-commits the body to a file), median ratio to the bare handler: {}",
        floor_summary.join(", ")
    );
    println!("- Switchyard peak RSS: {peak_rss:.1} MB");
}

/// The accept log's histograms, as Switchyard's `/metrics` shows them: how
/// many syncs, their seconds in all, and the events they carried.
#[derive(Default)]
struct LogSyncs {
    syncs: f64,
    seconds: f64,
    events: f64,
}

impl LogSyncs {
    /// Syncs per second over `elapsed` since `before`, each one's mean time
    /// and events.
    fn since(&self, before: &LogSyncs, elapsed: Duration) -> String {
        let syncs = self.syncs - before.syncs;
        if syncs <= 0.0 {
            return "none".into();
        }
        format!(
            "{:.0}/s, {:.0} µs and {:.1} events each",
            syncs / elapsed.as_secs_f64(),
            (self.seconds - before.seconds) / syncs * 1e6,
            (self.events - before.events) / syncs
        )
    }
}

async fn log_syncs(client: &HttpClient, port: u16) -> LogSyncs {
    let url: hyper::Uri = format!("http://127.0.0.1:{port}/metrics").parse().unwrap();
    let Ok(response) = client.get(url).await else { return LogSyncs::default() };
    let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    LogSyncs {
        syncs: value("switchyard_accept_log_sync_seconds_count"),
        seconds: value("switchyard_accept_log_sync_seconds_sum"),
        events: value("switchyard_accept_log_group_events_sum"),
    }
}

/// A short name for one of Switchyard's threads in the CPU split: the
/// runtime's workers, the accept log's thread, the state store's writer.
fn thread_label(name: &str) -> &str {
    match name {
        "tokio-rt-worker" => "runtime",
        "switchyard-log" => "log",
        "switchyard-stor" => "store",
        other => other,
    }
}

/// What the accept runs compare with: the bare handler in the bench's
/// process, or in a process of its own (`--bare-process`), whose CPU per
/// 202 is then shown beside its rate.
struct Baseline<'a> {
    url: &'a str,
    pid: Option<u32>,
}

/// Where the accept runs start Switchyard, and the accepting mapping's URL.
struct Accept<'a> {
    function: SocketAddr,
    parked: SocketAddr,
    port: u16,
    url: &'a str,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn row(name: &str, s: &Stats) -> String {
    format!("| {name} | {:.0} | {:.3} | {:.3} | {} |", s.rps(), s.percentile(0.5), s.percentile(0.99), s.errors)
}

#[tokio::main]
async fn main() {
    if let Some(port) = std::env::args().skip_while(|a| a != "--bare-server").nth(1) {
        let app = axum::Router::new().fallback(|body: Bytes| async move {
            let _ = body;
            axum::http::StatusCode::ACCEPTED
        });
        let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await.unwrap();
        axum::serve(listener, app).await.unwrap();
        return;
    }
    if let Some(port) = std::env::args().skip_while(|a| a != "--floor-server").nth(1) {
        let dir = tempfile::tempdir().unwrap();
        support::floor::serve(port.parse().expect("--floor-server takes a port"), dir.path()).await;
        return;
    }
    let seconds = support::arg("--seconds", 5);
    let duration = Duration::from_secs(seconds as u64);
    let events = support::arg("--events", 20_000);
    let client: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build_http();

    let received = Arc::new(AtomicUsize::new(0));
    let function = start_function(received.clone()).await;
    let bare = start_bare_accept().await;
    let (mut bare_process, bare_process_addr) = spawn_bare_process();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let state = tempfile::tempdir().unwrap();
    let parked = start_parked_function().await;
    let mut switchyard = start_switchyard(function, parked, port, state.path());
    wait_ready(&client, port).await;

    let direct_url = format!("http://{function}/");
    let sync_url = format!("http://127.0.0.1:{port}/sync");
    let async_url = format!("http://127.0.0.1:{port}/async");
    let accept_url = format!("http://127.0.0.1:{port}/accept");
    let bare_url = format!("http://{bare}/");
    let bare_process_url = format!("http://{bare_process_addr}/");

    if std::env::args().any(|a| a == "--accept-only") {
        let rounds = support::arg("--rounds", 3).max(1);
        let counts: Vec<usize> =
            std::env::args().skip_while(|a| a != "--connections").nth(1).map_or(vec![32, 64, 128, 256], |list| {
                list.split(',').map(|n| n.trim().parse().expect("--connections takes counts like 32,128")).collect()
            });
        let _ = switchyard.kill();
        let _ = switchyard.wait();
        let accept = Accept { function, parked, port, url: &accept_url };
        let baseline = if std::env::args().any(|a| a == "--bare-process") {
            Baseline { url: &bare_process_url, pid: Some(bare_process.id()) }
        } else {
            let _ = bare_process.kill();
            Baseline { url: &bare_url, pid: None }
        };
        let (mut floor_process, floor_addr) = spawn_floor_process();
        let floor_url = format!("http://{floor_addr}/");
        let floor = Baseline { url: &floor_url, pid: Some(floor_process.id()) };
        accept_rounds(&client, &baseline, &floor, &accept, &counts, duration, rounds).await;
        let _ = bare_process.kill();
        let _ = floor_process.kill();
        let _ = floor_process.wait();
        return;
    }
    // Warm up connections and caches.
    load(&client, &direct_url, 4, Duration::from_millis(500), 200).await;
    load(&client, &sync_url, 4, Duration::from_millis(500), 200).await;

    let direct_1 = load(&client, &direct_url, 1, duration, 200).await;
    let sync_1 = load(&client, &sync_url, 1, duration, 200).await;
    let direct_32 = load(&client, &direct_url, 32, duration, 200).await;
    let sync_32 = load(&client, &sync_url, 32, duration, 200).await;

    let bare_32 = load(&client, &bare_url, 32, duration, 202).await;
    let bare_process_32 = load(&client, &bare_process_url, 32, duration, 202).await;
    let bare_process_256 = load(&client, &bare_process_url, 256, duration, 202).await;
    let _ = bare_process.kill();
    let _ = bare_process.wait();
    let (mut floor_process, floor_addr) = spawn_floor_process();
    let floor_url = format!("http://{floor_addr}/");
    load(&client, &floor_url, 32, Duration::from_millis(500), 202).await;
    let floor_32 = load(&client, &floor_url, 32, duration, 202).await;
    let floor_256 = load(&client, &floor_url, 256, duration, 202).await;
    let _ = floor_process.kill();
    let _ = floor_process.wait();
    let accept_32 = load(&client, &accept_url, 32, duration, 202).await;
    // On the same Switchyard, whose queue now holds the 32-connection run's
    // events (parked: their function holds its one invocation).
    let accept_256 = load(&client, &accept_url, 256, duration, 202).await;

    // End to end: post a fixed number of events to the fast function's async
    // webhook; the rate counts from the first post to the last delivery.
    let before = received.load(Ordering::Relaxed);
    let e2e_started = Instant::now();
    let posted = post_count(&client, &async_url, 32, events).await;
    while received.load(Ordering::Relaxed) < before + posted && e2e_started.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let e2e = e2e_started.elapsed();
    let delivered = received.load(Ordering::Relaxed) - before;
    let delivery_rate = delivered as f64 / e2e.as_secs_f64();
    let rss = support::peak_rss_mb(switchyard.id());
    unsafe {
        libc::kill(switchyard.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = switchyard.wait();

    println!("\n## Webhook benchmarks ({seconds}s per run, loopback)\n");
    println!("| run | requests/s | p50 ms | p99 ms | errors |");
    println!("|---|---|---|---|---|");
    for (name, s) in [
        ("direct to function, 1 connection", &direct_1),
        ("sync webhook via Switchyard, 1 connection", &sync_1),
        ("direct to function, 32 connections", &direct_32),
        ("sync webhook via Switchyard, 32 connections", &sync_32),
        ("bare axum 202 in the load generator's process, 32 connections", &bare_32),
        ("bare axum 202 in a process of its own, 32 connections", &bare_process_32),
        ("durable floor 202 (group commit to a file, nothing else) in a process of its own, 32 connections", &floor_32),
        ("async webhook durable 202, 32 connections", &accept_32),
        ("bare axum 202 in a process of its own, 256 connections", &bare_process_256),
        ("durable floor 202 in a process of its own, 256 connections", &floor_256),
        ("async webhook durable 202, 256 connections", &accept_256),
    ] {
        println!("{}", row(name, s));
    }
    println!();
    println!(
        "- sync added latency at 1 connection: p50 +{:.3} ms, p99 +{:.3} ms (goal: p99 under +1 ms)",
        sync_1.percentile(0.5) - direct_1.percentile(0.5),
        sync_1.percentile(0.99) - direct_1.percentile(0.99)
    );
    println!("- sync throughput ratio at 32 connections: {:.2} of direct", sync_32.rps() / direct_32.rps());
    for (connections, bare, floor, accept) in
        [(32, &bare_process_32, &floor_32, &accept_32), (256, &bare_process_256, &floor_256, &accept_256)]
    {
        println!(
            "- at {connections} connections, against the bare handler in a process of its own: Switchyard's durable accept {:.2} (goal: at least 0.5), the durable floor {:.2}; Switchyard: {:.2} of the floor; accept p99 {:.2} ms",
            accept.rps() / bare.rps(),
            floor.rps() / bare.rps(),
            accept.rps() / floor.rps(),
            accept.percentile(0.99)
        );
    }
    println!(
        "- async end to end: {delivered} of {posted} accepted events delivered in {:.2}s: {delivery_rate:.0} events/s",
        e2e.as_secs_f64()
    );
    println!("- Switchyard peak RSS: {rss:.1} MB");
}
