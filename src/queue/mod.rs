//! Asynchronous invocation: events are accepted into the durable [`Store`],
//! then a dispatcher per function invokes them with at most `concurrency` in
//! flight, retries with backoff, and routes the outcome to `on_success` /
//! `on_failure` (the embedded dead-letter store by default).
//!
//! Invariant: an event leaves `async_events` only in the same transaction that
//! records where it went (deleted after success or after its destination
//! confirmed; moved to `dead_letters`; replaced by the event it forwards to).

#[cfg(feature = "kinesis")]
pub mod checkpoints;
mod dispatch;
pub mod log;
pub mod record;
pub mod store;
mod worker;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::destination::{Target, target};
use crate::function::Function;
use dispatch::Dispatcher;
use log::{AcceptLog, LogSettings};
pub use store::{DeadLetter, NewEvent, Phase, QueuedEvent, Replayed, Selection, Store, StoreError, now_ms};
use worker::Routes;
pub use worker::backoff;

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

pub struct AsyncQueue {
    store: Store,
    /// Where accepted events are made durable first (see [`log`]).
    log: AcceptLog,
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
    /// A queue on `store`, with its accept log in `dir`; what the log held
    /// from the last run is queued before this returns.
    pub async fn new(
        store: Store,
        dir: &Path,
        max_queued: usize,
        functions: &[Arc<Function>],
    ) -> Result<Self, StoreError> {
        let wakeups: HashMap<String, Arc<Notify>> =
            functions.iter().map(|f| (f.name.to_string(), Arc::new(Notify::new()))).collect();
        store.recount().await?;
        let log = AcceptLog::open(dir, store.clone(), wakeups.clone(), LogSettings::default()).await?;
        // After the log's events from the last run are queued, which may be
        // for a function since removed.
        let names = functions.iter().map(|f| f.name.to_string()).collect();
        for (function, events) in store.dead_letter_unconfigured(names, now_ms()).await? {
            tracing::warn!(
                function,
                events,
                "events queued for a function the config no longer has went to the dead-letter store \
                 (FunctionNotFound); replay them once it is back, or purge them"
            );
        }
        let depth: u64 = store.depths().await?.iter().map(|(_, n, _)| n).sum();
        Ok(Self { store, log, max_queued, depth: AtomicI64::new(depth as i64), accepting: AtomicI64::new(0), wakeups })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Durably queues an event under the request id its caller chose (an
    /// async webhook's event already carries its id); resolves once it is on
    /// disk.
    pub async fn accept(
        &self,
        request_id: String,
        function: &str,
        source: &str,
        payload: Bytes,
    ) -> Result<(), AcceptError> {
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
        let event = NewEvent {
            request_id,
            function: function.to_string(),
            source: source.to_string(),
            payload,
            enqueued_at: now_ms(),
        };
        // The log wakes the function once the event is in the queue.
        let queued = if self.log.fits(&event) {
            self.log.append(event).await
        } else {
            self.store.enqueue(event).await.map(|_| self.wake(function))
        };
        drop(accepting);
        if let Err(error) = queued {
            self.depth.fetch_sub(1, Ordering::AcqRel);
            return Err(error.into());
        }
        Ok(())
    }

    /// Stores an event whose transform failed straight in the dead-letter
    /// store, under `request_id`, with the error, where it can be seen and
    /// replayed.
    pub async fn transform_failed(
        &self,
        request_id: String,
        function: &str,
        source: &str,
        payload: Bytes,
        error: &str,
    ) -> Result<(), StoreError> {
        tracing::warn!(
            mapping = source,
            function,
            request_id,
            error,
            "transform failed; the event goes to the dead-letter store"
        );
        let now = now_ms();
        self.store
            .dead_letter(
                None,
                DeadLetter {
                    id: 0,
                    request_id,
                    function: function.to_string(),
                    source: source.to_string(),
                    payload,
                    condition: "TransformFailed".to_string(),
                    error_type: Some("TransformError".to_string()),
                    error_message: Some(error.to_string()),
                    attempts: 0,
                    enqueued_at: now,
                    first_attempt_at: None,
                    last_attempt_at: None,
                    failed_at: now,
                    record: None,
                },
            )
            .await?;
        Ok(())
    }

    /// An event left the queue for good (done, dead-lettered).
    fn left(&self) {
        self.depth.fetch_sub(1, Ordering::AcqRel);
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
        // Read before the store: an event that moves from the log (or from
        // an accept) into the store meanwhile is then counted twice until
        // the next refresh, never missed, so the bound errs towards a 429.
        let accepting = self.accepting.load(Ordering::Acquire).max(0);
        let unmoved = self.log.unmoved().max(0);
        if let Ok(depths) = self.store.depths().await {
            let total: u64 = depths.iter().map(|(_, n, _)| n).sum();
            self.depth.store(total as i64 + accepting + unmoved, Ordering::Release);
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
        // Not from the store: shown even when the store cannot answer.
        metrics::gauge!("switchyard_accept_log_unmoved_events").set(self.log.unmoved().max(0) as f64);
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

/// After a store error, wait before trying again rather than spin.
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(1);
