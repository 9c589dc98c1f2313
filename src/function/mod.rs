//! Functions: what a mapping or an Invoke API call invokes.
//!
//! A [`Function`] pairs an invoker (today: an HTTP endpoint) with the limiter
//! that bounds its in-flight invocations. Failures are classified here, apart
//! from any retry policy: the async queue and the sources decide what to do
//! with a class, the invoker only says which class it was.

mod http;
mod lambda;
pub mod process;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{AsyncConfig, FunctionConfig};
pub use http::HttpFunction;
pub use lambda::LambdaFunction;

/// One call of a function.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Stable across retries of the same event, so functions can be idempotent.
    pub request_id: String,
    pub payload: Bytes,
    /// 1 for the first try.
    pub attempt: u32,
    /// Headers an HTTP function gets with the payload (CloudEvents binary
    /// mode); other kinds ignore them.
    pub headers: Vec<(::http::HeaderName, ::http::HeaderValue)>,
    /// The caller's client context, as JSON text (the Invoke API's
    /// `X-Amz-Client-Context`, decoded); Lambda functions get it.
    pub client_context: Option<String>,
}

impl Invocation {
    /// A first try of `payload` under `request_id`.
    pub fn new(request_id: String, payload: Bytes) -> Self {
        Self { request_id, payload, attempt: 1, headers: Vec::new(), client_context: None }
    }
}

/// Why an invocation did not succeed, in the classes retry policies care about.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeError {
    /// The function ran and failed: an error status, a timeout. Consumes a
    /// retry attempt.
    #[error("{error_type}: {message}")]
    Function {
        error_type: String,
        message: String,
        /// The function's own error body, when it gave one.
        payload: Option<Bytes>,
    },
    /// No free slot, or the function answered 429. Retried without consuming
    /// an attempt.
    #[error("throttled")]
    Throttled { retry_after: Option<Duration> },
    /// The function could not be reached. Retried without consuming an attempt.
    #[error("function unreachable: {0}")]
    Unreachable(String),
}

impl InvokeError {
    /// A fixed label for metrics and logs.
    pub fn error_type(&self) -> &'static str {
        match self {
            InvokeError::Function { error_type, .. } if error_type == TIMEOUT_ERROR => "timeout",
            InvokeError::Function { .. } => "function_error",
            InvokeError::Throttled { .. } => "throttled",
            InvokeError::Unreachable(_) => "unreachable",
        }
    }

    /// Lambda's `{errorMessage, errorType}` body for this error.
    pub fn error_payload(&self) -> Bytes {
        match self {
            InvokeError::Function { payload: Some(p), .. } => p.clone(),
            InvokeError::Function { error_type, message, .. } => lambda_error(error_type, message),
            InvokeError::Throttled { .. } => lambda_error("TooManyRequestsException", "Rate Exceeded."),
            InvokeError::Unreachable(m) => lambda_error("FunctionUnreachable", m),
        }
    }
}

/// The error type Lambda reports for a function that ran past its timeout.
pub const TIMEOUT_ERROR: &str = "Sandbox.Timedout";

pub fn lambda_error(error_type: &str, message: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "errorMessage": message, "errorType": error_type }).to_string())
}

enum Kind {
    Http(Box<HttpFunction>),
    Lambda(LambdaFunction),
}

/// A configured function, shared by every mapping and API that invokes it.
pub struct Function {
    pub name: Arc<str>,
    pub arn: String,
    pub async_config: AsyncConfig,
    pub concurrency: usize,
    kind: Kind,
    limiter: Limiter,
    metrics: FunctionMetrics,
}

/// Metric handles registered once, not looked up per invocation.
struct FunctionMetrics {
    outcomes: [(&'static str, metrics::Counter); 5],
    duration: metrics::Histogram,
    in_flight: metrics::Gauge,
}

impl FunctionMetrics {
    fn new(function: &str) -> Self {
        let f = function.to_string();
        let outcome = |o: &'static str| {
            (o, metrics::counter!("switchyard_invocations_total", "function" => f.clone(), "outcome" => o))
        };
        Self {
            outcomes: [
                outcome("success"),
                outcome("function_error"),
                outcome("timeout"),
                outcome("throttled"),
                outcome("unreachable"),
            ],
            duration: metrics::histogram!("switchyard_invoke_duration_seconds", "function" => f.clone()),
            in_flight: metrics::gauge!("switchyard_function_in_flight", "function" => f),
        }
    }

    fn count(&self, outcome: &str) {
        if let Some((_, counter)) = self.outcomes.iter().find(|(o, _)| *o == outcome) {
            counter.increment(1);
        }
    }
}

/// Whether a caller waits for a free slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Synchronous callers wait (bounded in number and time).
    Bounded,
    /// The async queue does not wait: a full function is a throttle, and the
    /// event is retried later.
    No,
}

impl Function {
    pub fn new(name: &str, config: &FunctionConfig, client: reqwest::Client) -> anyhow::Result<Self> {
        let arn = function_arn(name);
        let kind = match (&config.http, &config.lambda) {
            (Some(http), _) => Kind::Http(Box::new(HttpFunction::new(name, http, client)?)),
            (None, Some(lambda)) => Kind::Lambda(LambdaFunction::new(name, &arn, lambda, config.concurrency.get())),
            (None, None) => anyhow::bail!("functions.{name}: expected a function kind: http or lambda"),
        };
        Ok(Self {
            name: Arc::from(name),
            arn,
            async_config: config.async_.clone(),
            concurrency: config.concurrency.get(),
            kind,
            metrics: FunctionMetrics::new(name),
            limiter: Limiter {
                slots: Arc::new(Semaphore::new(config.concurrency.get())),
                waiting: AtomicUsize::new(0),
                max_waiting: config.max_waiting,
                max_wait: config.max_wait,
            },
        })
    }

    /// Invokes the function once, recording metrics. `mapping` names the
    /// caller for the log line ("invoke-api" for the Invoke API).
    pub async fn invoke(&self, mapping: &str, invocation: &Invocation, wait: Wait) -> Result<Bytes, InvokeError> {
        self.invoke_logged(mapping, invocation, wait).await.0
    }

    /// [`Function::invoke`], with the invocation's log tail when the function
    /// keeps one (Lambda functions: START to REPORT, the last 4 KB).
    pub async fn invoke_logged(
        &self,
        mapping: &str,
        invocation: &Invocation,
        wait: Wait,
    ) -> (Result<Bytes, InvokeError>, Option<String>) {
        let started = Instant::now();
        let (result, log_tail) = match self.limiter.acquire(wait).await {
            Ok(permit) => {
                let slot = Slot::taken(permit, &self.metrics.in_flight);
                match &self.kind {
                    Kind::Http(f) => (f.invoke(invocation).await, None),
                    // The host runs an invocation to its end even when its
                    // caller stops waiting (a client that hung up), as
                    // Lambda does: the function's slot stays taken until
                    // then, so later callers wait for it here, within
                    // max_wait and max_waiting, not on the host's own slots.
                    Kind::Lambda(f) => {
                        let (f, invocation) = (f.clone(), invocation.clone());
                        match tokio::spawn(async move { (f.invoke(&invocation).await, slot) }).await {
                            Ok((answer, _slot)) => answer,
                            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                            Err(e) => {
                                (Err(InvokeError::Unreachable(format!("the invocation was cancelled: {e}"))), None)
                            }
                        }
                    }
                }
            }
            Err(throttled) => (Err(throttled), None),
        };
        let elapsed = started.elapsed();
        let outcome = match &result {
            Ok(_) => "success",
            Err(e) => e.error_type(),
        };
        self.metrics.count(outcome);
        self.metrics.duration.record(elapsed.as_secs_f64());
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        // One line per invocation, a warning when it failed.
        macro_rules! invoked {
            ($level:ident $(, $error:expr)?) => {
                tracing::$level!(
                    mapping,
                    function = %self.name,
                    request_id = %invocation.request_id,
                    attempt = invocation.attempt,
                    duration_ms = format_args!("{duration_ms:.1}"),
                    outcome,
                    $(error = %$error,)?
                    "invoked"
                )
            };
        }
        match &result {
            Ok(_) => invoked!(info),
            Err(error) => invoked!(warn, error),
        }
        (result, log_tail)
    }

    /// Stops what the function runs itself (Lambda instances).
    pub async fn shutdown(&self) {
        if let Kind::Lambda(f) = &self.kind {
            f.shutdown().await;
        }
    }

    /// The address a supervised process serves, to wait for at start.
    pub fn endpoint(&self) -> Option<std::net::SocketAddr> {
        match &self.kind {
            Kind::Http(f) => f.socket_addr(),
            Kind::Lambda(_) => None,
        }
    }
}

pub fn function_arn(name: &str) -> String {
    format!("arn:aws:lambda:{}:000000000000:function:{name}", region())
}

pub fn region() -> String {
    std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".to_string())
}

/// Bounds in-flight invocations; excess synchronous callers wait, bounded in
/// number and time, so a slow function cannot make memory grow.
struct Limiter {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    max_wait: Duration,
}

/// A taken concurrency slot, counted in `switchyard_function_in_flight`
/// until it is dropped, however the invocation ends.
struct Slot {
    _permit: OwnedSemaphorePermit,
    in_flight: metrics::Gauge,
}

impl Slot {
    fn taken(permit: OwnedSemaphorePermit, in_flight: &metrics::Gauge) -> Self {
        in_flight.increment(1.0);
        Slot { _permit: permit, in_flight: in_flight.clone() }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_flight.decrement(1.0);
    }
}

impl Limiter {
    async fn acquire(&self, wait: Wait) -> Result<OwnedSemaphorePermit, InvokeError> {
        let throttled = InvokeError::Throttled { retry_after: None };
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if wait == Wait::No {
            return Err(throttled);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(throttled);
        }
        let permit = tokio::time::timeout(self.max_wait, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match permit {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(throttled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(slots: usize, max_waiting: usize) -> Limiter {
        Limiter {
            slots: Arc::new(Semaphore::new(slots)),
            waiting: AtomicUsize::new(0),
            max_waiting,
            max_wait: Duration::from_millis(100),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn excess_callers_wait_bounded_then_throttle() {
        let l = Arc::new(limiter(1, 1));
        let held = l.acquire(Wait::Bounded).await.unwrap();
        assert!(matches!(l.acquire(Wait::No).await, Err(InvokeError::Throttled { .. })));
        // One waiter is allowed; it times out after max_wait.
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.acquire(Wait::Bounded).await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert!(
            matches!(l.acquire(Wait::Bounded).await, Err(InvokeError::Throttled { .. })),
            "a second waiter exceeds max_waiting"
        );
        assert!(matches!(waiter.await.unwrap(), Err(InvokeError::Throttled { .. })));
        drop(held);
        assert!(l.acquire(Wait::No).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn waiter_gets_released_slot() {
        let l = Arc::new(limiter(1, 4));
        let held = l.acquire(Wait::Bounded).await.unwrap();
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.acquire(Wait::Bounded).await.map(|_| ()) });
        tokio::task::yield_now().await;
        drop(held);
        assert!(waiter.await.unwrap().is_ok());
    }
}
