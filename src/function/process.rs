//! Supervises the process behind an HTTP function (`http.command`): starts
//! it, relays its output to the log, restarts it with backoff when it exits,
//! and stops it on shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

pub struct ProcessSpec {
    pub function: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub dir: Option<PathBuf>,
}

const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A process that ran this long counts as healthy: the next crash restarts fast.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs until `shutdown` is cancelled, then stops the process (SIGTERM, then
/// SIGKILL after a grace period) and returns.
pub async fn supervise(spec: ProcessSpec, shutdown: CancellationToken) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let started = Instant::now();
        let mut child = match spawn(&spec) {
            Ok(child) => child,
            Err(error) => {
                tracing::error!(function = %spec.function, command = ?spec.command, %error, "cannot start function process");
                if sleep_or_shutdown(backoff, &shutdown).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        tracing::info!(function = %spec.function, pid = child.id(), command = ?spec.command, "function process started");
        tokio::select! {
            status = child.wait() => {
                if started.elapsed() > HEALTHY_AFTER {
                    backoff = MIN_BACKOFF;
                }
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                tracing::warn!(function = %spec.function, %status, restart_in = ?backoff, "function process exited");
                if sleep_or_shutdown(backoff, &shutdown).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            _ = shutdown.cancelled() => {
                stop(&spec.function, &mut child).await;
                return;
            }
        }
    }
}

fn spawn(spec: &ProcessSpec) -> std::io::Result<Child> {
    let (program, args) = spec.command.split_first().ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(&spec.env)
        .env("SWITCHYARD_FUNCTION", &spec.function)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group: a Ctrl-C in the terminal reaches Switchyard
        // only, which then stops the function after in-flight work is done.
        .process_group(0);
    if let Some(dir) = &spec.dir {
        command.current_dir(dir);
    }
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the
    // child when Switchyard dies, so a `kill -9` leaves no orphan holding the
    // function's port.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(relay(spec.function.clone(), "stdout", out));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(relay(spec.function.clone(), "stderr", err));
    }
    Ok(child)
}

/// Lines longer than this are logged in pieces of this size: memory stays
/// bounded when a process writes without newlines (a progress bar).
const MAX_LINE_BYTES: usize = 256 * 1024;

/// Logs what the process writes, line by line, until the pipe closes. Bytes
/// that are not UTF-8 are logged replaced, never an end to the relay: a
/// relay that stopped would close the pipe, and the process's next write
/// would fail (or kill it, with SIGPIPE).
async fn relay(function: String, stream: &'static str, pipe: impl AsyncRead + Unpin) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        let buffered = match reader.fill_buf().await {
            Ok(b) if !b.is_empty() => b,
            _ => break,
        };
        let end = buffered.iter().position(|b| *b == b'\n').map(|i| i + 1);
        let take = end.unwrap_or(buffered.len()).min(MAX_LINE_BYTES - line.len());
        line.extend_from_slice(&buffered[..take]);
        reader.consume(take);
        if line.ends_with(b"\n") || line.len() == MAX_LINE_BYTES {
            log_line(&function, stream, &line);
            line.clear();
        }
    }
    if !line.is_empty() {
        log_line(&function, stream, &line);
    }
}

fn log_line(function: &str, stream: &'static str, line: &[u8]) {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = String::from_utf8_lossy(line);
    tracing::info!(target: "switchyard::function_output", function = %function, stream, "{line}");
}

/// Stops the process and everything it started: the signals go to its
/// process group (it leads one of its own), so a wrapper (`sh -c`, `npm
/// start`) does not leave the server it started holding the port.
async fn stop(function: &str, child: &mut Child) {
    let group = child.id().map(|pid| -(pid as libc::pid_t));
    if let Some(group) = group {
        // SAFETY: signalling the process group our own child leads.
        unsafe {
            libc::kill(group, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
        tracing::warn!(function, "function process ignored SIGTERM; killing it");
        let _ = child.kill().await;
    }
    if let Some(group) = group {
        // Whatever of the group outlived its leader.
        // SAFETY: as above; the group may be gone already (ESRCH).
        unsafe {
            libc::kill(group, libc::SIGKILL);
        }
    }
    tracing::info!(function, "function process stopped");
}

/// Sleeps; true when shutdown came first.
async fn sleep_or_shutdown(duration: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => false,
        _ = shutdown.cancelled() => true,
    }
}

/// Waits until `addr` accepts TCP connections, or `limit` passes.
pub async fn wait_listening(addr: SocketAddr, limit: Duration, shutdown: &CancellationToken) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        if sleep_or_shutdown(Duration::from_millis(100), shutdown).await {
            return false;
        }
    }
    false
}
