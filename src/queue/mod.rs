//! Asynchronous invocation: events are accepted into the durable [`Store`],
//! then a dispatcher per function invokes them with at most `concurrency` in
//! flight, retries with backoff, and routes the outcome to `on_success` /
//! `on_failure` (the embedded dead-letter store by default).
//!
//! Invariant: an event leaves `async_events` only in the same transaction that
//! records where it went (deleted after success or after its destination
//! confirmed; moved to `dead_letters`; replaced by the event it forwards to).

pub mod record;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use switchyard_http::HttpDestination;
use switchyard_sdk::Destination as _;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{BackoffConfig, DestinationConfig};
use crate::function::{Function, Invocation, InvokeError, Wait};
use record::Condition;
pub use store::{DeadLetter, NewEvent, Phase, QueuedEvent, Selection, Store, StoreError, now_ms};

/// Why an event was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("the async queue holds {0} events, its configured maximum (state.max_queued_events)")]
    Full(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One accept in [`AsyncQueue::accepting`], until dropped.
struct Accepting<'a>(&'a AtomicI64);

impl Drop for Accepting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where a function's success or failure records go.
enum Target {
    Http(HttpDestination),
    Function(String),
    DeadLetters,
}

impl Target {
    fn kind(&self) -> &'static str {
        match self {
            Target::Http(_) => "http",
            Target::Function(_) => "function",
            Target::DeadLetters => "dlq",
        }
    }
}

struct Routes {
    on_success: Option<Target>,
    on_failure: Target,
}

pub struct AsyncQueue {
    store: Store,
    max_queued: usize,
    /// Events in the queue, all functions; refreshed from the store by
    /// [`AsyncQueue::refresh_metrics`] so replays from the CLI are counted.
    depth: AtomicI64,
    /// Accepts that reserved their place in `depth` and are still writing,
    /// so a refresh from the store does not wipe their reservations.
    accepting: AtomicI64,
    wakeups: HashMap<String, Arc<Notify>>,
}

impl AsyncQueue {
    pub async fn new(store: Store, max_queued: usize, functions: &[Arc<Function>]) -> Result<Self, StoreError> {
        let depth: u64 = store.depths().await?.iter().map(|(_, n, _)| n).sum();
        Ok(Self {
            store,
            max_queued,
            depth: AtomicI64::new(depth as i64),
            accepting: AtomicI64::new(0),
            wakeups: functions.iter().map(|f| (f.name.to_string(), Arc::new(Notify::new()))).collect(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Durably queues an event; returns its request id once it is on disk.
    pub async fn accept(&self, function: &str, source: &str, payload: Bytes) -> Result<String, AcceptError> {
        // Reserve the place before the (slow, group-committed) write, so
        // concurrent accepts cannot all pass the check and overshoot the bound.
        // `accepting` covers the reservation until the write returned (or the
        // request was dropped), so a refresh from the store keeps it.
        self.accepting.fetch_add(1, Ordering::AcqRel);
        let accepting = Accepting(&self.accepting);
        let depth = self.depth.fetch_add(1, Ordering::AcqRel).max(0) as usize;
        if depth >= self.max_queued {
            self.depth.fetch_sub(1, Ordering::AcqRel);
            return Err(AcceptError::Full(depth));
        }
        let request_id = uuid::Uuid::new_v4().to_string();
        let queued = self
            .store
            .enqueue(NewEvent {
                request_id: request_id.clone(),
                function: function.to_string(),
                source: source.to_string(),
                payload,
                enqueued_at: now_ms(),
            })
            .await;
        drop(accepting);
        if let Err(error) = queued {
            self.depth.fetch_sub(1, Ordering::AcqRel);
            return Err(error.into());
        }
        self.wake(function);
        Ok(request_id)
    }

    fn wake(&self, function: &str) {
        if let Some(n) = self.wakeups.get(function) {
            n.notify_one();
        }
    }

    /// Wakes every dispatcher (after a replay queued events behind their back).
    pub fn wake_all(&self) {
        self.wakeups.values().for_each(|n| n.notify_one());
    }

    /// Updates the queue gauges from the store.
    pub async fn refresh_metrics(&self, functions: &[Arc<Function>]) {
        let now = now_ms();
        if let Ok(depths) = self.store.depths().await {
            let total: u64 = depths.iter().map(|(_, n, _)| n).sum();
            let accepting = self.accepting.load(Ordering::Acquire).max(0);
            self.depth.store(total as i64 + accepting, Ordering::Release);
            for f in functions {
                let (n, oldest) = depths
                    .iter()
                    .find(|(name, _, _)| **name == *f.name)
                    .map(|(_, n, oldest)| (*n, (now - oldest).max(0)))
                    .unwrap_or((0, 0));
                metrics::gauge!("switchyard_async_queue_depth", "function" => f.name.to_string()).set(n as f64);
                metrics::gauge!("switchyard_async_oldest_event_age_seconds", "function" => f.name.to_string())
                    .set(oldest as f64 / 1000.0);
            }
        }
        if let Ok(counts) = self.store.dead_letter_counts().await {
            for f in functions {
                let n = counts.iter().find(|(name, _)| **name == *f.name).map_or(0, |(_, n)| *n);
                metrics::gauge!("switchyard_dead_letters", "function" => f.name.to_string()).set(n as f64);
            }
        }
    }

    /// Starts one dispatcher per function on `tracker`; they stop taking new
    /// events when `shutdown` is cancelled and the tracker's tasks end once
    /// their in-flight invocations finish.
    pub fn start(
        self: &Arc<Self>,
        functions: &HashMap<String, Arc<Function>>,
        client: &reqwest::Client,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> anyhow::Result<()> {
        for function in functions.values() {
            let routes = Arc::new(Routes {
                on_success: function.async_config.on_success.as_ref().map(|d| target(d, client)).transpose()?,
                on_failure: function
                    .async_config
                    .on_failure
                    .as_ref()
                    .map(|d| target(d, client))
                    .transpose()?
                    .unwrap_or(Target::DeadLetters),
            });
            let dispatcher = Dispatcher {
                queue: self.clone(),
                function: function.clone(),
                routes,
                slots: Arc::new(Semaphore::new(function.concurrency)),
                tracker: tracker.clone(),
            };
            tracker.spawn(dispatcher.run(shutdown.clone()));
        }
        Ok(())
    }
}

fn target(config: &DestinationConfig, client: &reqwest::Client) -> anyhow::Result<Target> {
    Ok(match config {
        DestinationConfig::Http(http) => Target::Http(HttpDestination::new(client.clone(), http)?),
        DestinationConfig::Function(f) => Target::Function(f.name.clone()),
        DestinationConfig::Dlq(_) => Target::DeadLetters,
    })
}

/// How long an idle dispatcher sleeps before it looks at the store again,
/// in case events were queued by another process (a `dlq replay` from the CLI).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// After a store error, wait before trying again rather than spin.
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(1);

struct Dispatcher {
    queue: Arc<AsyncQueue>,
    function: Arc<Function>,
    routes: Arc<Routes>,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
}

impl Dispatcher {
    async fn run(self, shutdown: CancellationToken) {
        let name = self.function.name.to_string();
        let wakeup = self.queue.wakeups.get(&name).cloned().unwrap_or_default();
        loop {
            // Wait for a free slot before looking for work: at most
            // `concurrency` events of this function are in memory at once.
            let permit = tokio::select! {
                p = self.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = shutdown.cancelled() => return,
            };
            let free = self.slots.available_permits() + 1;
            let now = now_ms();
            let due = match self.queue.store.claim(&name, now, free).await {
                Ok(due) => due,
                Err(error) => {
                    tracing::error!(function = %name, %error, "cannot read the async queue");
                    drop(permit);
                    if sleep_or_cancel(STORE_ERROR_PAUSE, &shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            let mut claimed = due.into_iter();
            let Some(first) = claimed.next() else {
                drop(permit);
                let wait = match self.queue.store.next_due(&name).await {
                    Ok(Some(at)) => Duration::from_millis((at - now).clamp(1, IDLE_POLL.as_millis() as i64) as u64),
                    _ => IDLE_POLL,
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = wakeup.notified() => {}
                    _ = shutdown.cancelled() => return,
                }
                continue;
            };
            self.launch(first, permit);
            for event in claimed {
                // Claimed with a free slot counted for it; a permit is there
                // unless a concurrent release raced, in which case wait.
                let permit = match self.slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                };
                self.launch(event, permit);
            }
        }
    }

    fn launch(&self, event: QueuedEvent, permit: tokio::sync::OwnedSemaphorePermit) {
        let worker = Worker { queue: self.queue.clone(), function: self.function.clone(), routes: self.routes.clone() };
        self.tracker.spawn(async move {
            let id = event.id;
            worker.handle(event).await;
            if let Err(error) = worker.queue.store.release(id).await {
                tracing::error!(function = %worker.function.name, %error, "cannot release an async event");
            }
            drop(permit);
            // The dispatcher's wait left this event out (it was claimed);
            // wake it so a retry runs when due, not at the idle poll.
            worker.queue.wake(&worker.function.name);
        });
    }
}

struct Worker {
    queue: Arc<AsyncQueue>,
    function: Arc<Function>,
    routes: Arc<Routes>,
}

impl Worker {
    async fn handle(&self, event: QueuedEvent) {
        let result = match event.phase {
            Phase::Invoke => self.invoke(event).await,
            Phase::OnSuccess | Phase::OnFailure => self.redeliver(event).await,
        };
        if let Err(error) = result {
            // The event stays as the store last had it and is tried again.
            tracing::error!(function = %self.function.name, %error, "async queue update failed");
            tokio::time::sleep(STORE_ERROR_PAUSE).await;
        }
    }

    async fn invoke(&self, mut event: QueuedEvent) -> Result<(), StoreError> {
        let config = &self.function.async_config;
        let now = now_ms();
        if now - event.enqueued_at > config.max_event_age.as_millis() as i64 {
            return self.fail(event, Condition::EventAgeExceeded, None).await;
        }
        let invocation = Invocation {
            request_id: event.request_id.clone(),
            payload: event.payload.clone(),
            attempt: event.invokes + 1,
        };
        let result = self.function.invoke(&event.source, &invocation, Wait::No).await;
        let now = now_ms();
        match result {
            Ok(response) => {
                event.invokes += 1;
                self.succeed(event, response).await
            }
            Err(error @ InvokeError::Function { .. }) => {
                event.invokes += 1;
                event.attempts += 1;
                event.first_attempt_at.get_or_insert(now);
                event.last_attempt_at = Some(now);
                note_error(&mut event, &error);
                if event.attempts > config.max_retry_attempts {
                    return self.fail(event, Condition::RetriesExhausted, Some(error)).await;
                }
                let delay = backoff(&config.backoff, event.attempts);
                self.retry(event, delay, "function_error").await
            }
            Err(error) => {
                // Throttled or unreachable: the function did not run, so no
                // attempt is consumed; only the event age bounds these.
                event.throttles += 1;
                note_error(&mut event, &error);
                let mut delay = backoff(&config.backoff, event.throttles);
                if let InvokeError::Throttled { retry_after: Some(after) } = error {
                    delay = delay.max(after);
                }
                self.retry(event, delay, error.error_type()).await
            }
        }
    }

    async fn retry(&self, mut event: QueuedEvent, delay: Duration, reason: &'static str) -> Result<(), StoreError> {
        metrics::counter!("switchyard_async_retries_total", "function" => self.function.name.to_string(), "reason" => reason)
            .increment(1);
        tracing::info!(
            function = %self.function.name,
            request_id = %event.request_id,
            attempts = event.attempts,
            reason,
            retry_in = ?delay,
            "async event will be retried"
        );
        event.due_at = now_ms() + delay.as_millis() as i64;
        self.queue.store.update(event).await
    }

    async fn succeed(&self, mut event: QueuedEvent, response: Bytes) -> Result<(), StoreError> {
        let Some(target) = &self.routes.on_success else {
            self.queue.store.delete(event.id).await?;
            self.queue.depth.fetch_sub(1, Ordering::AcqRel);
            return Ok(());
        };
        let record = record::build(&self.function.arn, &event, Condition::Success, Some(Ok(&response)), now_ms());
        event.phase = Phase::OnSuccess;
        event.destination_record = Some(record.clone());
        self.deliver(event, target, Condition::Success, record).await
    }

    async fn fail(
        &self,
        mut event: QueuedEvent,
        condition: Condition,
        error: Option<InvokeError>,
    ) -> Result<(), StoreError> {
        tracing::warn!(
            function = %self.function.name,
            request_id = %event.request_id,
            condition = condition.as_str(),
            attempts = event.invokes,
            destination = self.routes.on_failure.kind(),
            "async event failed for good"
        );
        let record = record::build(&self.function.arn, &event, condition, error.as_ref().map(Err), now_ms());
        event.phase = Phase::OnFailure;
        event.destination_record = Some(record.clone());
        self.deliver(event, &self.routes.on_failure, condition, record).await
    }

    /// Delivers a record stored by an earlier try whose destination failed.
    async fn redeliver(&self, event: QueuedEvent) -> Result<(), StoreError> {
        let Some(record) = event.destination_record.clone() else {
            // A phase without a record cannot happen; invoke again rather than drop.
            let mut event = event;
            event.phase = Phase::Invoke;
            return self.queue.store.update(event).await;
        };
        let (target, condition) = match event.phase {
            Phase::OnSuccess => match &self.routes.on_success {
                Some(t) => (t, Condition::Success),
                // on_success was removed from the config since: done.
                None => {
                    self.queue.store.delete(event.id).await?;
                    self.queue.depth.fetch_sub(1, Ordering::AcqRel);
                    return Ok(());
                }
            },
            _ => (&self.routes.on_failure, condition_of(&record)),
        };
        self.deliver(event, target, condition, record).await
    }

    async fn deliver(
        &self,
        mut event: QueuedEvent,
        target: &Target,
        condition: Condition,
        record: Bytes,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let result = match target {
            Target::DeadLetters => self.dead_letter(&event, condition.as_str(), record, now).await.map(|_| ()),
            Target::Function(name) => {
                let next = NewEvent {
                    request_id: uuid::Uuid::new_v4().to_string(),
                    function: name.clone(),
                    source: format!("{}:{}", self.function.name, condition.as_str()),
                    payload: record,
                    enqueued_at: now,
                };
                let r = self.queue.store.forward(event.id, next).await;
                if r.is_ok() {
                    self.queue.wake(name);
                }
                r.map(|_| ())
            }
            Target::Http(http) => match http.send(std::slice::from_ref(&record)).await {
                Ok(()) => {
                    self.queue.store.delete(event.id).await?;
                    self.queue.depth.fetch_sub(1, Ordering::AcqRel);
                    self.count_delivery(target, condition, "delivered");
                    return Ok(());
                }
                Err(error) => {
                    self.count_delivery(target, condition, "failed");
                    return self.destination_failed(event, condition, error.to_string()).await;
                }
            },
        };
        match &result {
            Ok(()) => {
                if !matches!(target, Target::Function(_)) {
                    self.queue.depth.fetch_sub(1, Ordering::AcqRel);
                }
                self.count_delivery(target, condition, "delivered");
            }
            Err(_) => {
                event.destination_record = None;
                self.count_delivery(target, condition, "failed");
            }
        }
        result
    }

    /// A destination refused or could not be reached: keep the record and try
    /// again later; once the event is past its age, park it in the dead-letter
    /// store so it is never dropped silently.
    async fn destination_failed(
        &self,
        mut event: QueuedEvent,
        condition: Condition,
        error: String,
    ) -> Result<(), StoreError> {
        let config = &self.function.async_config;
        let now = now_ms();
        event.throttles += 1;
        event.error_type = Some("DestinationFailed".into());
        event.error_message = Some(error.clone());
        if now - event.enqueued_at > config.max_event_age.as_millis() as i64 {
            let record = event.destination_record.clone().unwrap_or_default();
            tracing::error!(function = %self.function.name, request_id = %event.request_id, %error,
                "destination kept failing past the event age; moving the record to the dead-letter store");
            self.dead_letter(&event, condition.as_str(), record, now).await?;
            self.queue.depth.fetch_sub(1, Ordering::AcqRel);
            return Ok(());
        }
        let delay = backoff(&config.backoff, event.throttles);
        tracing::warn!(function = %self.function.name, request_id = %event.request_id, %error, retry_in = ?delay,
            "destination failed; will retry");
        event.due_at = now + delay.as_millis() as i64;
        self.queue.store.update(event).await
    }

    async fn dead_letter(
        &self,
        event: &QueuedEvent,
        condition: &str,
        record: Bytes,
        now: i64,
    ) -> Result<i64, StoreError> {
        let id = self
            .queue
            .store
            .dead_letter(
                event.id,
                DeadLetter {
                    id: 0,
                    request_id: event.request_id.clone(),
                    function: event.function.clone(),
                    source: event.source.clone(),
                    payload: event.payload.clone(),
                    condition: condition.to_string(),
                    error_type: event.error_type.clone(),
                    error_message: event.error_message.clone(),
                    attempts: event.invokes,
                    enqueued_at: event.enqueued_at,
                    first_attempt_at: event.first_attempt_at,
                    last_attempt_at: event.last_attempt_at,
                    failed_at: now,
                    record: Some(record),
                },
            )
            .await?;
        metrics::counter!("switchyard_dead_letters_total", "function" => self.function.name.to_string()).increment(1);
        Ok(id)
    }

    fn count_delivery(&self, target: &Target, condition: Condition, outcome: &'static str) {
        metrics::counter!(
            "switchyard_destination_deliveries_total",
            "function" => self.function.name.to_string(),
            "destination" => target.kind(),
            "condition" => condition.as_str(),
            "outcome" => outcome
        )
        .increment(1);
    }
}

fn condition_of(record: &[u8]) -> Condition {
    let value: serde_json::Value = serde_json::from_slice(record).unwrap_or_default();
    match value["requestContext"]["condition"].as_str() {
        Some("EventAgeExceeded") => Condition::EventAgeExceeded,
        Some("Success") => Condition::Success,
        _ => Condition::RetriesExhausted,
    }
}

fn note_error(event: &mut QueuedEvent, error: &InvokeError) {
    let (error_type, message) = match error {
        InvokeError::Function { error_type, message, .. } => (error_type.clone(), message.clone()),
        other => (other.error_type().to_string(), other.to_string()),
    };
    event.error_type = Some(error_type);
    event.error_message = Some(message);
}

/// Exponential backoff with jitter: the n-th retry waits between half and all
/// of `initial * 2^(n-1)`, capped at `max`.
pub fn backoff(config: &BackoffConfig, n: u32) -> Duration {
    let exp = config.initial.saturating_mul(2u32.saturating_pow(n.saturating_sub(1).min(30)));
    let full = exp.min(config.max);
    let half = full / 2;
    half + full.saturating_sub(half).mul_f64(rand::rng().random::<f64>())
}

async fn sleep_or_cancel(d: Duration, token: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = token.cancelled() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let config = BackoffConfig { initial: Duration::from_secs(1), max: Duration::from_secs(10) };
        for _ in 0..50 {
            let first = backoff(&config, 1);
            assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1), "{first:?}");
            let third = backoff(&config, 3);
            assert!(third >= Duration::from_secs(2) && third <= Duration::from_secs(4), "{third:?}");
            let late = backoff(&config, 40);
            assert!(late >= Duration::from_secs(5) && late <= Duration::from_secs(10), "{late:?}");
        }
    }
}
