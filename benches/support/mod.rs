//! Shared by the benchmarks.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

mod count;
pub mod floor;

/// A process's peak resident memory (VmHWM) in MB.
pub fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU time (user and system) a process has used so far.
pub fn process_cpu(pid: u32) -> Duration {
    stat_cpu(std::path::Path::new(&format!("/proc/{pid}/stat")))
}

/// User and system CPU time from a `/proc` `stat` file (a process's or a
/// thread's).
fn stat_cpu(path: &std::path::Path) -> Duration {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    // SAFETY: sysconf only reads a constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

/// CPU time (user and system) each thread name of process `pid` has used so
/// far, threads of the same name summed (a runtime's workers share one).
pub fn thread_cpu(pid: u32) -> Vec<(String, Duration)> {
    let mut threads: Vec<(String, Duration)> = Vec::new();
    for task in tasks(pid) {
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default().trim().to_string();
        let cpu = stat_cpu(&task.join("stat"));
        match threads.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += cpu,
            None => threads.push((name, cpu)),
        }
    }
    threads
}

/// How long the threads of process `pid` have waited, runnable, for a core
/// so far (the second field of each thread's `schedstat`): a run whose
/// threads wait long while they are runnable is bound by CPU.
pub fn runqueue_wait(pid: u32) -> Duration {
    let nanos: u64 = tasks(pid)
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.join("schedstat")).ok()?;
            stat.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum();
    Duration::from_nanos(nanos)
}

/// The `/proc` directories of process `pid`'s threads (none if it is gone).
fn tasks(pid: u32) -> impl Iterator<Item = std::path::PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten().map(|task| task.path())
}

/// Runs `work` and returns its result with the CPU time this process spent
/// meanwhile (all threads): the bare client's CPU cost, measured while
/// nothing else in the bench process runs.
pub async fn with_cpu<T>(work: impl std::future::Future<Output = T>) -> (T, Duration) {
    let before = process_cpu(std::process::id());
    let out = work.await;
    (out, process_cpu(std::process::id()).saturating_sub(before))
}

/// A trivial function that counts the records of each event it gets: the
/// list under `field` (`records` for NATS and MQTT), or the lists inside the
/// object under it (`records` for Kafka, `rmqMessagesByQueue` for RabbitMQ).
/// It reads each event as JSON without building a tree of it (`count`).
pub async fn counting_function(field: &'static str, count: Arc<AtomicUsize>) -> SocketAddr {
    count::check();
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let count = count.clone();
        async move {
            count.fetch_add(count::records(&body, field), Ordering::Relaxed);
            "{}"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// What a Switchyard run through a counting function measured.
pub struct Run {
    /// From process start to the last record.
    pub elapsed: Duration,
    pub delivered: usize,
    /// From process start to the first records at the function: start-up,
    /// connecting and the first batch.
    pub startup: Duration,
    /// Records counted by the end of `startup`.
    pub first: usize,
    pub peak_rss_mb: f64,
    /// Switchyard's CPU time over the whole run, start-up included.
    pub cpu: Duration,
}

impl Run {
    /// Records per second once running: from the first records at the
    /// function to the last, as a bare client's clock starts once it is
    /// connected.
    pub fn steady_rate(&self) -> f64 {
        let span = self.elapsed.saturating_sub(self.startup).as_secs_f64();
        if span <= 0.0 {
            return f64::NAN;
        }
        self.delivered.saturating_sub(self.first) as f64 / span
    }
}

/// Starts the release binary on `config` (STATE_DIR replaced by a temp dir),
/// waits until `count` reaches `expected` (10 minutes at most), stops it.
pub async fn run_until(config: &str, count: &AtomicUsize, expected: usize) -> Run {
    let state = tempfile::tempdir().unwrap();
    let path = state.path().join("bench.yaml");
    std::fs::write(&path, config.replace("STATE_DIR", &state.path().display().to_string())).unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "--config"])
        .arg(&path)
        .env("SWITCHYARD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("switchyard");
    let mut first = None;
    while count.load(Ordering::Relaxed) < expected && started.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let n = count.load(Ordering::Relaxed);
        if first.is_none() && n > 0 {
            first = Some((started.elapsed(), n));
        }
    }
    let (startup, first) = first.unwrap_or((started.elapsed(), 0));
    let run = Run {
        elapsed: started.elapsed(),
        delivered: count.load(Ordering::Relaxed),
        startup,
        first,
        peak_rss_mb: peak_rss_mb(child.id()),
        cpu: process_cpu(child.id()),
    };
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = child.wait();
    run
}

/// The number after `name` on the command line (`-- --messages 20000`).
pub fn arg(name: &str, default: usize) -> usize {
    std::env::args().skip_while(|a| a != name).nth(1).and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// One throughput comparison, as docs/benchmarks.md quotes it.
pub struct Report<'a> {
    pub title: String,
    /// "messages", "records".
    pub unit: &'a str,
    pub total: usize,
    pub bare_label: &'a str,
    pub bare: Duration,
    /// The bare client's CPU time, where the bench measures it.
    pub bare_cpu: Option<Duration>,
    pub switchyard_label: &'a str,
    pub run: Run,
    pub goal: f64,
}

impl Report<'_> {
    fn bare_rate(&self) -> f64 {
        self.total as f64 / self.bare.as_secs_f64()
    }

    /// Switchyard's steady rate over the bare client's.
    pub fn ratio(&self) -> f64 {
        self.run.steady_rate() / self.bare_rate()
    }

    pub fn print(&self) {
        let unit = self.unit;
        let bare_rate = self.bare_rate();
        let overall = self.run.delivered as f64 / self.run.elapsed.as_secs_f64();
        let steady = self.run.steady_rate();
        println!("\n## {}\n", self.title);
        println!("| run | {unit}/s | seconds |");
        println!("|---|---|---|");
        println!("| {} | {bare_rate:.0} | {:.2} |", self.bare_label, self.bare.as_secs_f64());
        println!("| {} | {steady:.0} | {:.2} |", self.switchyard_label, self.run.elapsed.as_secs_f64());
        println!();
        println!("- ratio: {:.2} of the bare client (goal: at least {})", self.ratio(), self.goal);
        println!(
            "- start-up to the first {} {unit} at the function: {:.2} s; with it counted, {overall:.0} {unit}/s (ratio {:.2})",
            self.run.first,
            self.run.startup.as_secs_f64(),
            overall / bare_rate
        );
        println!("- delivered {} of {}", self.run.delivered, self.total);
        let per = |cpu: Duration, n: usize| cpu.as_secs_f64() * 1e6 / n.max(1) as f64;
        let bare_cpu =
            self.bare_cpu.map_or(String::new(), |cpu| format!(", bare client {:.1} µs", per(cpu, self.total)));
        println!(
            "- CPU per {}: Switchyard {:.1} µs (start-up included){bare_cpu}",
            unit.trim_end_matches('s'),
            per(self.run.cpu, self.run.delivered)
        );
        println!("- Switchyard peak RSS: {:.1} MB", self.run.peak_rss_mb);
    }
}

/// Runs `round` as many times as `--rounds` says (once by default), printing
/// each report; with more than one, the ratio of each round and their median
/// close the output: on a shared machine a single pair of sub-second runs
/// decides little, and rounds that alternate the bare client and Switchyard
/// give both the same conditions.
pub async fn rounds<F, Fut>(mut round: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Report<'static>>,
{
    let count = arg("--rounds", 1).max(1);
    let mut ratios = Vec::with_capacity(count);
    let mut goal = 0.0;
    for _ in 0..count {
        let report = round().await;
        report.print();
        ratios.push(report.ratio());
        goal = report.goal;
    }
    if ratios.len() < 2 {
        return;
    }
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 0 { (sorted[mid - 1] + sorted[mid]) / 2.0 } else { sorted[mid] };
    let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "\n- {} rounds: ratios {}; median {median:.2}, range {:.2} to {:.2} (goal: at least {goal})",
        ratios.len(),
        listed.join(", "),
        sorted[0],
        sorted[sorted.len() - 1]
    );
}
