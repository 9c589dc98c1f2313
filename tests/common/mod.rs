//! Test support: the real `switchyard` binary started as a user would, and
//! small function servers on `127.0.0.1:0`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// One request a function server received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Value,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a function server answers: status, headers, body.
pub type Reply = (u16, Vec<(&'static str, String)>, String);
type Behaviour = dyn Fn(&Received, usize) -> Reply + Send + Sync;

struct FnState {
    received: Mutex<Vec<Received>>,
    behaviour: Box<Behaviour>,
    delay: Duration,
    in_flight: Mutex<(usize, usize)>,
}

/// A function: an HTTP server that records what it got and answers as told.
/// The behaviour gets the request and how many requests came before it.
pub struct FunctionServer {
    pub addr: SocketAddr,
    state: Arc<FnState>,
}

impl FunctionServer {
    pub async fn start(behaviour: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_with_delay(Duration::ZERO, behaviour).await
    }

    pub async fn echo() -> Self {
        Self::start(|r, _| (200, vec![], r.body.to_string())).await
    }

    pub async fn start_with_delay(
        delay: Duration,
        behaviour: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let state = Arc::new(FnState {
            received: Mutex::new(Vec::new()),
            behaviour: Box::new(behaviour),
            delay,
            in_flight: Mutex::new((0, 0)),
        });
        let app = axum::Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// The most requests that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.in_flight.lock().unwrap().1
    }

    /// Waits until a request is being served.
    pub async fn wait_for_in_flight(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.state.in_flight.lock().unwrap().0 == 0 {
            assert!(Instant::now() < deadline, "no request reached the function");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "function at {} got {} requests, expected {n} within {limit:?}",
                self.addr,
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn handle(State(state): State<Arc<FnState>>, headers: HeaderMap, body: Bytes) -> Response {
    {
        let mut f = state.in_flight.lock().unwrap();
        f.0 += 1;
        f.1 = f.1.max(f.0);
    }
    let received = Received {
        headers,
        body: serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into())),
        at: Instant::now(),
    };
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    let (status, headers, body) = {
        let mut list = state.received.lock().unwrap();
        let reply = (state.behaviour)(&received, list.len());
        list.push(received);
        reply
    };
    state.in_flight.lock().unwrap().0 -= 1;
    let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
    for (k, v) in headers {
        response.headers_mut().insert(k, v.parse().unwrap());
    }
    response
}

/// The switchyard binary running a config.
pub struct Switchyard {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    logs: Arc<Mutex<Vec<Value>>>,
    _temp: Option<tempfile::TempDir>,
}

impl Switchyard {
    /// Writes `config` (with `STATE_DIR` replaced by a fresh temp dir) and
    /// runs it; returns once it is ready.
    pub fn start(config: &str) -> Self {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let mut s = Self::start_in(&dir, config, &[]);
        s._temp = Some(temp);
        s
    }

    /// Runs `config` with state in `dir` (kept across restarts).
    pub fn start_in(dir: &Path, config: &str, env: &[(&str, &str)]) -> Self {
        let config_path = dir.join("switchyard.yaml");
        let text = config.replace("STATE_DIR", &dir.join("state").display().to_string());
        std::fs::write(&config_path, text).unwrap();
        Self::spawn(dir, &config_path, env)
    }

    pub fn spawn(dir: &Path, config_path: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .args(["--log-format", "json", "run", "--config"])
            .arg(config_path)
            .envs(env.iter().copied())
            .env("SWITCHYARD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start switchyard");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line).unwrap_or(Value::String(line.clone()));
                if std::env::var_os("SWITCHYARD_TEST_LOGS").is_some() {
                    eprintln!("{line}");
                }
                let _ = tx.send(value.clone());
                sink.lock().unwrap().push(value);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut addr = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    panic!("switchyard did not become ready: {:#?}", logs.lock().unwrap());
                }
            };
            if line["message"] == "listening" {
                addr = line["addr"].as_str().map(|a| a.parse().unwrap());
            }
            if line["message"] == "switchyard is ready" {
                break;
            }
        }
        Self {
            child,
            addr: addr.expect("no listening line"),
            dir: dir.to_path_buf(),
            config_path: config_path.to_path_buf(),
            logs,
            _temp: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The Prometheus text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        client().get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    pub fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    /// SIGTERM, and wait (at most 20 s) for a clean exit: what is in flight
    /// is finished and acknowledged first.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let status = tokio::task::block_in_place(|| self.wait_exit(Duration::from_secs(20)));
        assert!(status.success(), "SIGTERM exit: {status}");
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "switchyard did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a CLI subcommand against this instance's config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        cli(args, &self.config_path)
    }
}

impl Drop for Switchyard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `switchyard ARGS --config CONFIG`.
pub fn cli(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(BIN).args(args).arg("--config").arg(config).output().expect("cannot run switchyard")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// Polls `f` until it returns Some, at most `limit`.
pub async fn eventually<T>(limit: Duration, what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A minimal config with one http function `f` at `url` and extra YAML.
pub fn config(url: &str, function_extra: &str, mappings: &str) -> String {
    format!(
        "server:\n  listen: 127.0.0.1:0\n  shutdown_grace: 10s\nstate:\n  dir: STATE_DIR\nfunctions:\n  f:\n    http:\n      url: {url}\n      timeout: 5s\n{function_extra}mappings:\n{mappings}"
    )
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A broker of the test's own (a second Mosquitto or NATS server on a free
/// port), so a test can stop and restart it without disturbing the shared one.
pub struct BrokerProcess {
    child: Option<Child>,
    program: String,
    args: Vec<String>,
    pub port: u16,
}

impl BrokerProcess {
    /// Starts `program args...` and waits until it accepts connections on `port`.
    pub fn start(program: &str, args: &[String], port: u16) -> Self {
        let mut broker = Self { child: None, program: program.to_string(), args: args.to_vec(), port };
        broker.restart();
        broker
    }

    /// Starts it again with the same arguments (and so the same storage).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is still running", self.program);
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e}); scripts/test installs it", self.program));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "{} did not listen on port {}", self.program, self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it with `signal` and waits until it is gone.
    pub fn stop(&mut self, signal: libc::c_int) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, signal) };
            let _ = child.wait();
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.stop(libc::SIGKILL);
    }
}
