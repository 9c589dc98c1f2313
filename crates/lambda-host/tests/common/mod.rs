//! Helpers shared by the real-client tests: where the clients are, and
//! what to do when one is missing (fail under CI, skip with a note locally).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use switchyard_lambda_host::{LambdaHost, LambdaSpec, Request, Response};
use tokio_util::sync::CancellationToken;

pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

pub fn example(name: &str) -> PathBuf {
    workspace_root().join("examples/functions").join(name)
}

/// A missing client fails the test under CI and skips it elsewhere, saying
/// how to install it.
pub fn require<T>(found: Option<T>, what: &str, install: &str) -> Option<T> {
    if found.is_some() {
        return found;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} not found (CI=true, so this fails instead of skipping); install it with: {install}");
    }
    eprintln!("SKIPPED: {what} not found; install it with: {install}");
    None
}

/// The venv python with awslambdaric and Powertools: $SWITCHYARD_TEST_PYTHON,
/// else target/test-venv/bin/python in the workspace.
pub fn python() -> Option<PathBuf> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let python = std::env::var_os("SWITCHYARD_TEST_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target/test-venv/bin/python"));
        let usable = Command::new(&python)
            .args(["-c", "import awslambdaric, aws_lambda_powertools"])
            .output()
            .is_ok_and(|out| out.status.success());
        usable.then_some(python)
    });
    require(
        found.clone(),
        "python with awslambdaric and aws-lambda-powertools",
        "python3 -m venv target/test-venv && target/test-venv/bin/pip install awslambdaric aws-lambda-powertools",
    )
}

pub fn python_spec(python: &Path, function: &str, example_dir: &str, handler: &str) -> LambdaSpec {
    let mut spec = LambdaSpec::new(function, vec![python.display().to_string(), "-m".into(), "awslambdaric".into()]);
    spec.handler = Some(handler.to_string());
    spec.dir = example(example_dir);
    spec.timeout = Duration::from_secs(10);
    spec
}

pub fn host(spec: LambdaSpec) -> LambdaHost {
    LambdaHost::new(spec, CancellationToken::new())
}

pub fn request(payload: serde_json::Value) -> Request {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Request {
        request_id: format!(
            "{:08x}-test-{n:04}-{}",
            std::process::id(),
            std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_micros() % 1_000_000)
        ),
        payload: Bytes::from(payload.to_string()),
        client_context: None,
        trace_id: None,
    }
}

pub async fn invoke(host: &LambdaHost, payload: serde_json::Value) -> Response {
    match host.invoke(request(payload)).await {
        Ok(response) => response,
        Err(error) => panic!("invoke failed: {error}"),
    }
}

pub fn json(response: &Response) -> serde_json::Value {
    match serde_json::from_slice(&response.payload) {
        Ok(value) => value,
        Err(error) => panic!("payload is not JSON ({error}): {}", String::from_utf8_lossy(&response.payload)),
    }
}

pub fn process_alive(pid: u64) -> bool {
    // A zombie still answers kill(pid, 0); /proc tells the state.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

/// Waits up to `limit` for `check` to hold.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// Asserts the log tail has START, END and REPORT for `request_id`, in order.
pub fn assert_platform_lines(response: &Response, request_id_hint: Option<&str>) {
    let tail = &response.log_tail;
    let start = tail.find("START RequestId: ").unwrap_or_else(|| panic!("no START in {tail:?}"));
    let end = tail.find("END RequestId: ").unwrap_or_else(|| panic!("no END in {tail:?}"));
    let report = tail.find("REPORT RequestId: ").unwrap_or_else(|| panic!("no REPORT in {tail:?}"));
    assert!(start < end && end < report, "START, END, REPORT out of order: {tail:?}");
    if let Some(id) = request_id_hint {
        assert!(tail.contains(&format!("START RequestId: {id} Version: $LATEST")), "{tail:?}");
        assert!(tail.contains(&format!("END RequestId: {id}")), "{tail:?}");
    }
    let report_line = tail[report..].lines().next().unwrap_or_default();
    assert!(report_line.contains("\tDuration: ") && report_line.contains(" ms\tBilled Duration: "), "{report_line:?}");
    assert!(report_line.contains("\tMemory Size: "), "{report_line:?}");
    assert_eq!(report_line.contains("Init Duration: "), response.init_duration.is_some(), "{report_line:?}");
}

/// Builds examples/functions/rust-hello with the profile this test (or
/// bench) binary was built with, into the same target dir, and returns its
/// path. Cargo's build lock is free while tests run, so this is an
/// incremental no-op after the first time.
pub fn rust_hello() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test binary path");
            // <target>/<profile>/deps/<test binary>
            let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
            let target = profile_dir.parent().expect("target dir");
            let profile = profile_dir.file_name().and_then(|p| p.to_str()).unwrap_or("debug");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let mut build = Command::new(&cargo);
            build.args(["build", "--quiet", "-p", "rust-hello", "--bin", "rust-hello"]);
            // The dev profile builds into "debug"; others into their name.
            if profile != "debug" {
                build.args(["--profile", profile]);
            }
            let status = build
                .env("CARGO_TARGET_DIR", target)
                .current_dir(workspace_root())
                .status()
                .unwrap_or_else(|e| panic!("cannot run {cargo} to build rust-hello: {e}"));
            assert!(status.success(), "`cargo build -p rust-hello` failed");
            let binary = profile_dir.join("rust-hello");
            assert!(binary.is_file(), "rust-hello not at {}", binary.display());
            binary
        })
        .clone()
}
