//! Runs unmodified AWS Lambda functions as local processes.
//!
//! A [`LambdaHost`] owns one function's pool of instances. An instance is a
//! runtime process (awslambdaric, aws-lambda-ric, a `lambda_runtime` binary,
//! a shell `bootstrap`...) talking to its own Lambda Runtime API server on a
//! loopback port, started on demand (a cold start), reused while warm,
//! stopped after `idle_timeout` unused, and replaced after a timeout, a crash
//! or an init failure. At most `concurrency` instances exist at once; extra
//! callers wait for one to be free.
//!
//! Errors are split the way the engine needs them: [`HostError`] when no
//! instance could serve the request at all (it could not be started, the
//! host is shut down), and a [`Response`] with `function_error` set for
//! everything the function itself did: its handler failed, it timed out,
//! crashed, failed to init, ran out of memory or answered too much. Those
//! carry Lambda's error body and error type.

mod api;
mod instance;
mod memory;
mod output;
mod report;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use instance::{Attempt, Instance};

pub use instance::{EXECUTION_ENV, INIT_LIMIT};
pub use output::LOG_TAIL_BYTES;
pub use report::{MAX_RESPONSE_BYTES, error_type};

/// How long a stopping instance gets after SIGTERM before SIGKILL, as for
/// Switchyard's other supervised processes.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// One Lambda function: its runtime command and Lambda configuration.
#[derive(Debug, Clone)]
pub struct LambdaSpec {
    /// The function's name (`AWS_LAMBDA_FUNCTION_NAME`, log group name).
    pub function: String,
    /// The runtime's bootstrap: program and arguments. A relative program
    /// path with a slash ("./bootstrap") is resolved in `dir`; a bare name
    /// is looked up in PATH.
    pub command: Vec<String>,
    /// `_HANDLER`; when set it is also appended to the command's arguments,
    /// where awslambdaric and aws-lambda-ric expect it.
    pub handler: Option<String>,
    /// The function's code (`LAMBDA_TASK_ROOT`) and the runtime's working
    /// directory. Relative to Switchyard's working directory.
    pub dir: PathBuf,
    /// The function's environment variables. Instances get a clean
    /// environment: these, Lambda's variables, PATH and LANG.
    pub env: BTreeMap<String, String>,
    /// The memory size (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`), enforced per
    /// instance (see the crate's memory notes); 0 enforces nothing.
    pub memory_mb: u64,
    /// How long one invocation may run before its instance is killed. A cold
    /// start's init gets the longer of this and [`INIT_LIMIT`].
    pub timeout: Duration,
    /// At most this many instances, so this many invocations at once.
    pub concurrency: usize,
    /// A warm instance unused this long is stopped.
    pub idle_timeout: Duration,
    /// `AWS_REGION` and `AWS_DEFAULT_REGION`.
    pub region: String,
    /// `Lambda-Runtime-Invoked-Function-Arn`.
    pub arn: String,
}

impl LambdaSpec {
    /// A spec with Lambda's defaults: 128 MB, a 3 s timeout, one instance,
    /// five idle minutes, us-east-1, the code in the working directory.
    pub fn new(function: impl Into<String>, command: Vec<String>) -> Self {
        let function = function.into();
        let region = "us-east-1".to_string();
        Self {
            arn: format!("arn:aws:lambda:{region}:000000000000:function:{function}"),
            function,
            command,
            handler: None,
            dir: PathBuf::from("."),
            env: BTreeMap::new(),
            memory_mb: 128,
            timeout: Duration::from_secs(3),
            concurrency: 1,
            idle_timeout: Duration::from_secs(300),
            region,
        }
    }
}

/// One invocation.
#[derive(Debug, Clone)]
pub struct Request {
    /// Lambda-Runtime-Aws-Request-Id: letters, digits and `-_.:` only, as it
    /// travels in the Runtime API's URL paths.
    pub request_id: String,
    pub payload: Bytes,
    /// Lambda-Runtime-Client-Context: the client context as JSON text.
    /// Runtimes parse it as JSON, so the Invoke API's base64
    /// `X-Amz-Client-Context` is decoded before it goes here, as Lambda does.
    pub client_context: Option<String>,
    /// Lambda-Runtime-Trace-Id.
    pub trace_id: Option<String>,
}

/// What an invocation came to, as Lambda's Invoke API reports it.
#[derive(Debug, Clone)]
pub struct Response {
    /// The function's response, or Lambda's error JSON when it failed.
    pub payload: Bytes,
    /// `Some("Unhandled")` when the function failed in any way: the runtime
    /// posted an error, init failed, it timed out, crashed, ran out of
    /// memory or posted a response over 6 MB (`X-Amz-Function-Error`).
    pub function_error: Option<String>,
    /// The failure's error type: the runtime's own (`Runtime.ImportModuleError`,
    /// the exception's class) or the host's (see [`error_type`]).
    pub error_type: Option<String>,
    /// The last 4 KB of this invocation's log, START to REPORT (plus what
    /// init wrote on a cold start), as raw text; the Invoke API base64s it.
    pub log_tail: String,
    /// Set on a cold start: process start to the runtime's first `next`.
    pub init_duration: Option<Duration>,
    /// From the runtime taking the invocation to its result.
    pub duration: Duration,
    /// The instance's peak memory so far, where it can be measured.
    pub max_memory_used_mb: Option<u64>,
    /// The instance that served it (the end of its log stream name).
    pub instance_id: String,
}

impl Response {
    /// The `errorMessage` of a failure's body.
    pub fn error_message(&self) -> Option<String> {
        self.function_error.as_ref()?;
        let body: serde_json::Value = serde_json::from_slice(&self.payload).ok()?;
        body.get("errorMessage")?.as_str().map(str::to_string)
    }
}

/// No instance could serve the request. Whatever the function itself did is
/// a [`Response`] instead.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The runtime could not be started: a missing program or dir, no port,
    /// no pipe. The engine reports the function unreachable.
    #[error("cannot start a lambda instance of {function}: {source}")]
    Start {
        function: String,
        #[source]
        source: std::io::Error,
    },
    /// The host is shut down, or stopped the instance mid-invocation.
    #[error("the lambda host of {0} is shut down")]
    ShutDown(String),
    /// The request cannot be handed to a runtime (see [`Request`]).
    #[error("invalid lambda request: {0}")]
    InvalidRequest(String),
}

impl HostError {
    /// A fixed label for metrics and logs.
    pub fn error_type(&self) -> &'static str {
        match self {
            HostError::Start { .. } => "start_failed",
            HostError::ShutDown(_) => "shut_down",
            HostError::InvalidRequest(_) => "invalid_request",
        }
    }
}

/// How memory sizes are enforced in this process: "cgroup v2", "cgroup v1"
/// or "rlimit" (see the memory notes in the crate's README).
pub fn memory_enforcement() -> &'static str {
    memory::enforcement().name()
}

/// Counts of a host's instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Instances alive now, busy or idle.
    pub instances: usize,
    /// Of those, the warm ones waiting for an invocation.
    pub idle: usize,
    /// Instances started since the host was made (cold starts).
    pub started: u64,
}

/// One function's instance pool. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct LambdaHost {
    inner: Arc<Inner>,
}

struct Inner {
    spec: LambdaSpec,
    function: Arc<str>,
    arn: HeaderValue,
    slots: Arc<Semaphore>,
    pool: Mutex<Pool>,
    /// Cancelled by [`LambdaHost::shutdown`] or the token given to `new`.
    closing: CancellationToken,
}

#[derive(Default)]
struct Pool {
    live: HashMap<Arc<str>, Arc<Instance>>,
    /// Warm instances, most recently used last: taken from the end, so the
    /// ones at the front go unused and time out.
    idle: Vec<(Arc<Instance>, Instant)>,
    started: u64,
    reaper: bool,
}

impl LambdaHost {
    /// A host for `spec`; instances start on the first invocation. When
    /// `shutdown` is cancelled the host stops its instances and refuses
    /// further invocations, as [`LambdaHost::shutdown`] does.
    pub fn new(mut spec: LambdaSpec, shutdown: CancellationToken) -> Self {
        spec.concurrency = spec.concurrency.max(1);
        let arn = HeaderValue::from_str(&spec.arn).unwrap_or_else(|_| {
            tracing::warn!(function = %spec.function, arn = %spec.arn, "function ARN is not a valid header value; not sent");
            HeaderValue::from_static("")
        });
        Self {
            inner: Arc::new(Inner {
                function: spec.function.as_str().into(),
                arn,
                slots: Arc::new(Semaphore::new(spec.concurrency)),
                pool: Mutex::new(Pool::default()),
                closing: shutdown.child_token(),
                spec,
            }),
        }
    }

    pub fn spec(&self) -> &LambdaSpec {
        &self.inner.spec
    }

    pub fn stats(&self) -> HostStats {
        let pool = self.inner.lock();
        HostStats { instances: pool.live.len(), idle: pool.idle.len(), started: pool.started }
    }

    /// Invokes the function once. Waits for a free instance when
    /// `concurrency` are busy: callers bound their own waiting. Once an
    /// instance has it, the invocation runs to its end even if the caller
    /// stops waiting, as in Lambda; the instance then returns to the pool in
    /// a known state rather than being abandoned mid-invocation.
    pub async fn invoke(&self, request: Request) -> Result<Response, HostError> {
        let inner = self.inner.clone();
        let pending = pending(&request)?;
        let permit = tokio::select! {
            permit = inner.slots.clone().acquire_owned() => permit.map_err(|_| inner.shut_down())?,
            _ = inner.closing.cancelled() => return Err(inner.shut_down()),
        };
        let task = tokio::spawn(async move {
            let _permit = permit;
            inner.run(pending).await
        });
        match task.await {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // The runtime is shutting down under us.
            Err(_) => Err(self.inner.shut_down()),
        }
    }

    /// Stops every instance (SIGTERM, then SIGKILL after [`STOP_GRACE`]) and
    /// waits until they are gone. Invocations after this, and those still
    /// running on a stopped instance, fail with [`HostError::ShutDown`].
    pub async fn shutdown(&self) {
        self.inner.closing.cancel();
        self.inner.stop_all().await;
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn shut_down(&self) -> HostError {
        HostError::ShutDown(self.spec.function.clone())
    }

    /// One invocation, holding a concurrency slot.
    async fn run(self: &Arc<Self>, pending: api::Pending) -> Result<Response, HostError> {
        if self.closing.is_cancelled() {
            return Err(self.shut_down());
        }
        loop {
            let (instance, cold) = match self.take_idle() {
                Some(instance) => (instance, false),
                None => (self.start().await?, true),
            };
            match instance.invoke(&self.spec, pending.clone(), cold).await {
                Attempt::Done { response, reusable } => {
                    let kept = reusable && !instance.has_exited() && {
                        // Checked under the pool's lock, which shutdown takes
                        // after it cancels `closing` and before it stops every
                        // instance: an instance put back here is either seen
                        // by that stop or not put back at all.
                        let mut pool = self.lock();
                        let open = !self.closing.is_cancelled();
                        if open {
                            pool.idle.push((instance.clone(), Instant::now()));
                        }
                        open
                    };
                    if !kept {
                        self.retire(&instance);
                        instance.kill().await;
                    }
                    return Ok(response);
                }
                // Each lost instance left the idle list, so this ends at the
                // latest with a cold start, which never comes back lost.
                Attempt::Lost => {
                    tracing::info!(function = %self.function, instance = %instance.id, "warm lambda instance had exited; replacing it");
                    self.retire(&instance);
                }
                Attempt::Stopped => return Err(self.shut_down()),
            }
        }
    }

    fn take_idle(&self) -> Option<Arc<Instance>> {
        let mut pool = self.lock();
        while let Some((instance, _)) = pool.idle.pop() {
            if !instance.has_exited() {
                return Some(instance);
            }
            pool.live.remove(&instance.id);
        }
        None
    }

    async fn start(self: &Arc<Self>) -> Result<Arc<Instance>, HostError> {
        let instance = Instance::start(&self.spec, &self.function, &self.arn).await.map_err(|source| {
            tracing::error!(function = %self.function, command = ?self.spec.command, error = %source, "cannot start lambda instance");
            HostError::Start { function: self.spec.function.clone(), source }
        })?;
        let first = {
            let mut pool = self.lock();
            // Checked under the lock shutdown drains the pool with: an
            // instance is either in the pool it stops, or killed here.
            if self.closing.is_cancelled() {
                None
            } else {
                pool.live.insert(instance.id.clone(), instance.clone());
                pool.started += 1;
                Some(!std::mem::replace(&mut pool.reaper, true))
            }
        };
        match first {
            None => {
                instance.kill().await;
                Err(self.shut_down())
            }
            Some(first) => {
                if first {
                    tokio::spawn(reap(Arc::downgrade(self), self.closing.clone(), self.spec.idle_timeout));
                }
                Ok(instance)
            }
        }
    }

    fn retire(&self, instance: &Instance) {
        let mut pool = self.lock();
        pool.live.remove(&instance.id);
        pool.idle.retain(|(i, _)| i.id != instance.id);
    }

    async fn stop_all(&self) {
        let instances: Vec<Arc<Instance>> = {
            let mut pool = self.lock();
            pool.idle.clear();
            pool.live.drain().map(|(_, instance)| instance).collect()
        };
        let mut stopping = tokio::task::JoinSet::new();
        for instance in instances {
            stopping.spawn(async move { instance.stop(STOP_GRACE).await });
        }
        while stopping.join_next().await.is_some() {}
    }
}

/// Stops instances idle past `idle_timeout` (and forgets ones that died
/// while idle); on shutdown, stops them all. Ends with the host.
async fn reap(inner: Weak<Inner>, closing: CancellationToken, idle_timeout: Duration) {
    let tick = (idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = closing.cancelled() => {
                if let Some(inner) = inner.upgrade() {
                    inner.stop_all().await;
                }
                return;
            }
        }
        let Some(strong) = inner.upgrade() else { return };
        let expired: Vec<Arc<Instance>> = {
            let mut pool = strong.lock();
            let (expired, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut pool.idle)
                .into_iter()
                .partition(|(instance, since)| since.elapsed() >= idle_timeout || instance.has_exited());
            pool.idle = keep;
            expired.into_iter().map(|(instance, _)| instance).collect()
        };
        for instance in expired {
            if !instance.has_exited() {
                tracing::info!(function = %strong.function, instance = %instance.id, "stopping idle lambda instance");
            }
            // It stays among the live ones until gone, so a shutdown meanwhile
            // waits for it too.
            let inner = inner.clone();
            tokio::spawn(async move {
                instance.stop(STOP_GRACE).await;
                if let Some(inner) = inner.upgrade() {
                    inner.retire(&instance);
                }
            });
        }
    }
}

/// Checks what goes into Runtime API headers and paths, before any instance
/// is bothered with it.
fn pending(request: &Request) -> Result<api::Pending, HostError> {
    let id = &request.request_id;
    let valid =
        !id.is_empty() && id.len() <= 256 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if !valid {
        return Err(HostError::InvalidRequest(format!("request id {id:?} has characters other than [A-Za-z0-9-_.:]")));
    }
    let header = |name: &str, value: &Option<String>| -> Result<Option<HeaderValue>, HostError> {
        value
            .as_deref()
            .map(|v| {
                HeaderValue::from_str(v)
                    .map_err(|_| HostError::InvalidRequest(format!("{name} is not a valid header value")))
            })
            .transpose()
    };
    Ok(api::Pending {
        request_id: id.as_str().into(),
        request_id_header: HeaderValue::from_str(id).map_err(|_| HostError::InvalidRequest("request id".into()))?,
        payload: request.payload.clone(),
        trace_id: header("trace id", &request.trace_id)?,
        client_context: header("client context", &request.client_context)?,
    })
}
