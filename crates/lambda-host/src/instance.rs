//! One execution environment: a runtime process, its Runtime API server, its
//! output and its memory limit. An instance serves one invocation at a time
//! and is thrown away, never repaired, after a timeout, a crash or an init
//! failure, as a Lambda sandbox is.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::api::{self, Api, Event, Pending};
use crate::memory::{self, Cgroup, Limit};
use crate::output::Output;
use crate::report::{self, error_type};
use crate::{LambdaSpec, Response};

/// How long a runtime may take to start before its first invocation fails,
/// unless the function's timeout is longer: Lambda's init phase limit.
pub const INIT_LIMIT: Duration = Duration::from_secs(10);
/// How long a killed instance gets to be gone before we stop waiting.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// How a runtime process ended.
pub(crate) struct Exit {
    status: Option<ExitStatus>,
    oom_killed: bool,
    peak_bytes: Option<u64>,
}

pub(crate) struct Instance {
    pub(crate) id: Arc<str>,
    pub(crate) pid: u32,
    function: Arc<str>,
    spawned_at: Instant,
    api: Arc<Api>,
    /// Held by the one invocation using the instance.
    events: tokio::sync::Mutex<mpsc::Receiver<Event>>,
    output: Arc<Output>,
    exit: watch::Receiver<Option<Arc<Exit>>>,
    /// Cancelled once the process is gone and its cgroup and temp dir removed.
    cleaned: CancellationToken,
    cgroup: Option<Arc<Cgroup>>,
    /// Set when the host stops the instance, so its invocation reports a
    /// shutdown rather than a crash.
    stopping: AtomicBool,
    _server: AbortOnDropHandle<()>,
}

/// What one invocation on an instance came to.
pub(crate) enum Attempt {
    Done {
        response: Response,
        reusable: bool,
    },
    /// A warm instance was gone before it took the invocation: nothing of
    /// the function ran, so another instance may take it.
    Lost,
    /// The host stopped the instance (shutdown) during the invocation.
    Stopped,
}

enum Outcome {
    Success(Bytes),
    HandlerError { error_type: Option<String>, payload: Bytes },
    TooLarge(u64),
    InitError { error_type: Option<String>, payload: Bytes },
    Timeout(Duration),
    Exit,
}

impl Instance {
    /// Starts a runtime process with its own Runtime API.
    pub(crate) async fn start(spec: &LambdaSpec, function: &Arc<str>, arn: &HeaderValue) -> io::Result<Arc<Instance>> {
        let id: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        let dir = std::fs::canonicalize(&spec.dir)
            .map_err(|e| io::Error::new(e.kind(), format!("function dir {}: {e}", spec.dir.display())))?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (read_end, write_end) = pipe()?;
        let output = Output::new(read_end, function.clone(), id.clone())?;
        let (api, events) = Api::new(function.clone(), output.clone(), arn.clone(), spec.timeout);
        let server = AbortOnDropHandle::new(tokio::spawn(serve(listener, api.clone())));
        let tmp = TempDir::create(&id)?;
        let mut limit = Limit::prepare(&id, spec.memory_mb);

        let spawned_at = Instant::now();
        let child = {
            // The command holds copies of the pipe's write end: the spawner
            // drops it right after the spawn, so the pipe ends (EOF) when the
            // instance's own processes are gone.
            let mut command = command(spec, &dir, &id, addr, tmp.path(), write_end)?;
            let join_limit = limit.pre_exec();
            // SAFETY: pid 1 of a parent that died is detected by getppid;
            // prctl, getppid and the limit's calls are async-signal-safe.
            let parent = unsafe { libc::getpid() };
            unsafe {
                command.pre_exec(move || {
                    // Instances die with Switchyard, even on `kill -9`.
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // The parent may have died before prctl took effect.
                    if libc::getppid() != parent {
                        return Err(io::Error::other("parent exited"));
                    }
                    join_limit()
                });
            }
            spawn_on_lasting_thread(command).await?
        };
        limit.spawned();
        let pid = child.id().ok_or_else(|| io::Error::other("runtime exited at start"))?;
        tokio::spawn(output.clone().relay());
        let cgroup = match limit {
            Limit::Cgroup(cgroup) => Some(Arc::new(cgroup)),
            Limit::Rlimit(_) | Limit::None => None,
        };
        let (exit_tx, exit) = watch::channel(None);
        let cleaned = CancellationToken::new();
        tokio::spawn(watch_exit(child, pid, cgroup.clone(), tmp, exit_tx, cleaned.clone()));
        tracing::info!(
            function = %function,
            instance = %id,
            pid,
            runtime_api = %addr,
            memory = memory::enforcement().name(),
            "lambda instance started"
        );
        Ok(Arc::new(Instance {
            id,
            pid,
            function: function.clone(),
            spawned_at,
            api,
            events: tokio::sync::Mutex::new(events),
            output,
            exit,
            cleaned,
            cgroup,
            stopping: AtomicBool::new(false),
            _server: server,
        }))
    }

    pub(crate) fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Runs one invocation. `cold` when the instance was started for it.
    pub(crate) async fn invoke(&self, spec: &LambdaSpec, pending: Pending, cold: bool) -> Attempt {
        let request_id = pending.request_id.clone();
        let mut events = self.events.lock().await;
        // Each earlier invocation ended on its own result event, or with the
        // instance killed; nothing of it can be waiting. Make sure anyway.
        while events.try_recv().is_ok() {}
        self.output.begin(request_id.clone(), cold);
        let dispatched_at = Instant::now();
        if !self.api.dispatch(pending) {
            self.output.finish();
            return Attempt::Lost;
        }
        let mut exit = self.exit.clone();

        // Until the runtime takes it: init on a cold start (bounded like
        // Lambda's init phase), an instant on a warm one.
        let limit = if cold { spec.timeout.max(INIT_LIMIT) } else { spec.timeout };
        let until = tokio::time::Instant::from_std(dispatched_at + limit);
        let (delivered_at, ready_at) = loop {
            tokio::select! {
                biased;
                event = events.recv() => match event {
                    Some(Event::Delivered { request_id: id, at, ready_at }) if id == request_id => break (at, ready_at),
                    Some(Event::InitError { error_type, payload }) => {
                        let outcome = Outcome::InitError { error_type, payload };
                        return self.finish(spec, &request_id, outcome, dispatched_at, None, false).await;
                    }
                    Some(_) => continue,
                    None => return self.finish(spec, &request_id, Outcome::Exit, dispatched_at, None, false).await,
                },
                _ = exited(&mut exit) => {
                    if self.stopping.load(Ordering::Acquire) {
                        self.output.finish();
                        return Attempt::Stopped;
                    }
                    if !cold {
                        self.output.finish();
                        return Attempt::Lost;
                    }
                    return self.finish(spec, &request_id, Outcome::Exit, dispatched_at, None, false).await;
                }
                _ = tokio::time::sleep_until(until) => {
                    let outcome = Outcome::Timeout(limit);
                    return self.finish(spec, &request_id, outcome, dispatched_at, None, false).await;
                }
            }
        };

        let init_duration = cold.then(|| ready_at.saturating_duration_since(self.spawned_at));
        let deadline = tokio::time::Instant::from_std(delivered_at + spec.timeout);
        let outcome = tokio::select! {
            biased;
            outcome = result(&mut events, &request_id) => outcome,
            _ = exited(&mut exit) => {
                if self.stopping.load(Ordering::Acquire) {
                    self.output.finish();
                    return Attempt::Stopped;
                }
                Outcome::Exit
            }
            _ = tokio::time::sleep_until(deadline) => Outcome::Timeout(spec.timeout),
        };
        self.finish(spec, &request_id, outcome, delivered_at, init_duration, true).await
    }

    /// Turns an outcome into Lambda's response and log lines, and kills the
    /// instance when the outcome leaves it unusable.
    async fn finish(
        &self,
        spec: &LambdaSpec,
        request_id: &str,
        outcome: Outcome,
        started: Instant,
        init_duration: Option<Duration>,
        delivered: bool,
    ) -> Attempt {
        let mut duration = started.elapsed();
        // Before any kill: a killed instance's cgroup is gone with it.
        let mut peak = self.peak_bytes();
        let mut lines = Vec::new();
        let (payload, error_type, reusable) = match outcome {
            Outcome::Success(payload) => (payload, None, true),
            Outcome::HandlerError { error_type, payload } => {
                let (error_type, payload) = runtime_error(error_type, payload);
                (payload, Some(error_type), true)
            }
            Outcome::TooLarge(size) => {
                let message = format!(
                    "Response payload size ({size} bytes) exceeded maximum allowed payload size ({} bytes).",
                    report::MAX_RESPONSE_BYTES
                );
                lines.push(report::platform_message(request_id, &message));
                lines.push(error_type::RESPONSE_TOO_LARGE.to_string());
                (
                    report::error_body(error_type::RESPONSE_TOO_LARGE, &message),
                    Some(error_type::RESPONSE_TOO_LARGE.into()),
                    true,
                )
            }
            Outcome::InitError { error_type, payload } => {
                self.kill().await;
                let (error_type, payload) = runtime_error(error_type, payload);
                (payload, Some(error_type), false)
            }
            Outcome::Timeout(after) => {
                self.kill().await;
                duration = after;
                let error = report::timeout_error(after);
                let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
                lines.push(format!("{now} {request_id} {error}"));
                let body = report::error_body(error_type::TIMEOUT, &report::platform_message(request_id, &error));
                (body, Some(error_type::TIMEOUT.to_string()), false)
            }
            Outcome::Exit => {
                let exit = self.exit.borrow().clone();
                let (status, oom_killed) = match &exit {
                    Some(exit) => {
                        peak = exit.peak_bytes.or(peak);
                        (exit.status, exit.oom_killed)
                    }
                    None => (None, false),
                };
                self.kill().await;
                let error_type = if oom_killed { error_type::OUT_OF_MEMORY } else { error_type::EXIT };
                let message = report::platform_message(request_id, &report::exit_error(status.as_ref()));
                lines.push(message.clone());
                lines.push(error_type.to_string());
                (report::error_body(error_type, &message), Some(error_type.to_string()), false)
            }
        };
        if !delivered {
            lines.insert(0, report::start_line(request_id));
        }
        lines.push(report::end_line(request_id));
        let max_memory_used_mb = peak.map(|bytes| bytes.div_ceil(1024 * 1024));
        let report =
            report::Report { request_id, duration, memory_mb: spec.memory_mb, max_memory_used_mb, init_duration };
        lines.push(report.line());
        for line in &lines {
            if error_type.is_some()
                && !line.starts_with("START")
                && !line.starts_with("END")
                && !line.starts_with("REPORT")
            {
                tracing::warn!(function = %self.function, request_id = %request_id, "{line}");
            } else {
                tracing::info!(function = %self.function, request_id = %request_id, "{line}");
            }
            self.output.platform_line(line);
        }
        let response = Response {
            payload,
            function_error: error_type.as_ref().map(|_| "Unhandled".to_string()),
            error_type,
            log_tail: self.output.finish(),
            init_duration,
            duration,
            max_memory_used_mb,
            instance_id: self.id.to_string(),
        };
        Attempt::Done { response, reusable }
    }

    fn peak_bytes(&self) -> Option<u64> {
        match &self.cgroup {
            Some(cgroup) => cgroup.peak_bytes(),
            None => memory::process_peak_bytes(self.pid),
        }
    }

    /// Kills the instance now (timeouts, crashes, init failures) and waits a
    /// little for it to be gone.
    pub(crate) async fn kill(&self) {
        self.signal(libc::SIGKILL);
        let _ = tokio::time::timeout(KILL_WAIT, self.cleaned.cancelled()).await;
    }

    /// Stops the instance: SIGTERM, then SIGKILL after `grace`.
    pub(crate) async fn stop(&self, grace: Duration) {
        self.stopping.store(true, Ordering::Release);
        self.signal(libc::SIGTERM);
        if tokio::time::timeout(grace, self.cleaned.cancelled()).await.is_err() {
            tracing::warn!(function = %self.function, instance = %self.id, "lambda runtime ignored SIGTERM; killing it");
            self.kill().await;
        }
        tracing::info!(function = %self.function, instance = %self.id, "lambda instance stopped");
    }

    /// Signals the runtime's process group, and with SIGKILL everything in
    /// its cgroup, wherever in the process tree it went.
    fn signal(&self, signal: i32) {
        if self.has_exited() {
            // Reaped: the pid may be someone else's by now. The exit watcher
            // has cleared the rest.
            return;
        }
        if let Ok(pgid) = i32::try_from(self.pid) {
            // SAFETY: kill(2) on the process group our child leads.
            unsafe {
                libc::killpg(pgid, signal);
            }
        }
        if signal == libc::SIGKILL {
            if let Some(cgroup) = &self.cgroup {
                cgroup.kill_all();
            }
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // An instance nobody holds any more must not run on unseen.
        self.signal(libc::SIGKILL);
    }
}

/// The runtime's error body, made whole: the error type from the body (what
/// the caller sees; some runtimes send only a generic "unhandled" header)
/// or else the header, and a body where the runtime posted none.
fn runtime_error(header_type: Option<String>, payload: Bytes) -> (String, Bytes) {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&payload).ok();
    let from_body = parsed
        .as_ref()
        .and_then(|v| v.get("errorType"))
        .and_then(|v| v.as_str())
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    let error_type = from_body.or(header_type).unwrap_or_else(|| error_type::UNKNOWN.to_string());
    if payload.is_empty() {
        let body = report::error_body(&error_type, "Unknown application error occurred");
        return (error_type, body);
    }
    (error_type, payload)
}

/// Waits for the invocation's result, skipping anything else.
async fn result(events: &mut mpsc::Receiver<Event>, request_id: &str) -> Outcome {
    loop {
        match events.recv().await {
            Some(Event::Response { request_id: id, payload }) if &*id == request_id => {
                return Outcome::Success(payload);
            }
            Some(Event::Error { request_id: id, error_type, payload }) if &*id == request_id => {
                return Outcome::HandlerError { error_type, payload };
            }
            Some(Event::TooLarge { request_id: id, size }) if &*id == request_id => return Outcome::TooLarge(size),
            Some(_) => continue,
            // The API outlives every invocation; without it nothing can
            // answer, which is a dead runtime to the caller.
            None => return Outcome::Exit,
        }
    }
}

async fn exited(exit: &mut watch::Receiver<Option<Arc<Exit>>>) {
    // An error means the watcher is gone, which only happens once the
    // process is.
    let _ = exit.wait_for(Option::is_some).await;
}

async fn serve(listener: TcpListener, api: Arc<Api>) {
    use axum::serve::ListenerExt;
    // Small request/response exchanges on loopback: do not let Nagle hold
    // back the tail of a reply.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    if let Err(error) = axum::serve(listener, api::router(api)).await {
        tracing::warn!(%error, "lambda runtime API server failed");
    }
}

/// Waits for the runtime to exit, publishes how, and clears up after it.
async fn watch_exit(
    mut child: Child,
    pid: u32,
    cgroup: Option<Arc<Cgroup>>,
    tmp: TempDir,
    exit_tx: watch::Sender<Option<Arc<Exit>>>,
    cleaned: CancellationToken,
) {
    let status = child.wait().await.ok();
    // Helpers the runtime started share its process group; they go with it
    // rather than living on unsupervised. (Between the reap above and this
    // call the group id cannot be reused while any member lives; if none
    // does, the signal finds no one.)
    if let Ok(pgid) = i32::try_from(pid) {
        // SAFETY: kill(2) on the group our child led.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
    }
    let (oom_killed, peak_bytes) = match &cgroup {
        Some(cgroup) => (cgroup.oom_killed(), cgroup.peak_bytes()),
        None => (false, None),
    };
    exit_tx.send_replace(Some(Arc::new(Exit { status, oom_killed, peak_bytes })));
    let cleanup = tokio::task::spawn_blocking(move || {
        if let Some(cgroup) = cgroup {
            if let Err(error) = cgroup.remove() {
                tracing::warn!(%error, "cannot remove a lambda instance's cgroup");
            }
        }
        drop(tmp);
    });
    let _ = cleanup.await;
    cleaned.cancel();
}

type SpawnJob = (Command, tokio::runtime::Handle, tokio::sync::oneshot::Sender<io::Result<Child>>);

/// Spawns from one thread that lives as long as the process. The kernel
/// sends the parent-death signal when the *thread* that forked a child ends,
/// not the process, and Tokio's threads come and go (blocking-pool threads,
/// workers handed off by `block_in_place`, runtimes shut down in tests): a
/// child forked from one of those would be killed with it.
async fn spawn_on_lasting_thread(command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Option<std::sync::mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (jobs, queue) = std::sync::mpsc::channel::<SpawnJob>();
        let thread = std::thread::Builder::new().name("lambda-spawner".into()).spawn(move || {
            for (mut command, runtime, reply) in queue {
                // Tokio's child handling needs its runtime's context.
                let child = {
                    let _context = runtime.enter();
                    command.spawn()
                };
                // Close our copies of the child's stdio before answering.
                drop(command);
                let _ = reply.send(child);
            }
        });
        thread.ok().map(|_| jobs)
    });
    let Some(spawner) = spawner else {
        return Err(io::Error::other("cannot start the spawner thread"));
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    spawner
        .send((command, tokio::runtime::Handle::current(), reply))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    answer.await.map_err(|_| io::Error::other("the spawner thread is gone"))?
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds we then own; O_CLOEXEC keeps them out of
    // other children (the spawn dup2s the write end onto stdout/stderr).
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned by nothing else.
    Ok(unsafe { (std::os::fd::FromRawFd::from_raw_fd(fds[0]), std::os::fd::FromRawFd::from_raw_fd(fds[1])) })
}

/// The runtime's command line and Lambda's environment.
fn command(spec: &LambdaSpec, dir: &Path, id: &str, api: SocketAddr, tmp: &Path, out: OwnedFd) -> io::Result<Command> {
    let (program, args) =
        spec.command.split_first().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let program = resolve_program(program, dir);
    let runtime_dir = runtime_dir(&program, &path).unwrap_or_else(|| dir.to_path_buf());
    let mut command = Command::new(&program);
    command.args(args);
    if let Some(handler) = &spec.handler {
        // awslambdaric and aws-lambda-ric take the handler as an argument.
        command.arg(handler);
    }
    // A clean environment, as in Lambda: Switchyard's own variables
    // (credentials included) stay out of functions; what a function needs
    // goes in its `env`.
    command.env_clear().env("PATH", &path);
    if let Some(lang) = std::env::var_os("LANG") {
        command.env("LANG", lang);
    }
    command.env("TZ", "UTC").env("TMPDIR", tmp);
    // The function's own variables may override the above, not Lambda's
    // reserved ones below.
    command.envs(&spec.env);
    let date = chrono::Utc::now().format("%Y/%m/%d");
    command
        .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
        .env("_HANDLER", spec.handler.as_deref().unwrap_or(""))
        .env("LAMBDA_TASK_ROOT", dir)
        .env("LAMBDA_RUNTIME_DIR", runtime_dir)
        .env("AWS_LAMBDA_FUNCTION_NAME", &spec.function)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", spec.memory_mb.to_string())
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{}", spec.function))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", format!("{date}/[$LATEST]{id}"))
        .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
        .env("AWS_REGION", &spec.region)
        .env("AWS_DEFAULT_REGION", &spec.region)
        .env("AWS_EXECUTION_ENV", EXECUTION_ENV)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(out))
        .kill_on_drop(true)
        // Its own process group: a Ctrl-C in Switchyard's terminal reaches
        // Switchyard only, and the instance can be signalled as a whole.
        .process_group(0);
    Ok(command)
}

/// `AWS_EXECUTION_ENV` for every instance.
pub const EXECUTION_ENV: &str = "AWS_Lambda_switchyard";

/// A relative program path ("./bootstrap", "bin/run") is the function's own,
/// in its dir; a bare name is looked up in PATH.
fn resolve_program(program: &str, dir: &Path) -> PathBuf {
    let path = Path::new(program);
    if program.contains('/') && path.is_relative() { dir.join(path) } else { path.to_path_buf() }
}

/// Where the runtime's bootstrap lives (`LAMBDA_RUNTIME_DIR`).
fn runtime_dir(program: &Path, path: &std::ffi::OsStr) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.parent().map(Path::to_path_buf);
    }
    std::env::split_paths(path).find(|dir| dir.join(program).is_file())
}

/// The instance's own temp dir (`TMPDIR`), removed with the instance.
struct TempDir(PathBuf);

impl TempDir {
    fn create(id: &str) -> io::Result<TempDir> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!("switchyard-lambda-{id}"));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            if error.kind() != io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.0.display(), %error, "cannot remove a lambda instance's temp dir");
            }
        }
    }
}
