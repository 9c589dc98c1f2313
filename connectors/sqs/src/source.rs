//! The queue source: pollers long-poll the queue and hand each message out as
//! a record; one settler task deletes, releases and extends what they handed
//! out, from the outcomes of the records' `Ack`s.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName,
    QueueAttributeName,
};
use switchyard_sdk::{
    Ack, Backoff, ConnectorError, Envelope, Outcome, Record, Source, SourceContext, SourceState, set_state,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use crate::client;
use crate::config::{QueueUrl, SourceSettings, SqsSourceConfig};
use crate::envelope::{SqsEnvelope, created_at, message_data, system_attribute};
use crate::error::describe;

/// SQS hands out at most ten messages per receive and takes at most ten
/// entries per batch call.
const MAX_BATCH: usize = 10;
/// How long outcomes are collected before their deletes go out, unless ten
/// are waiting already: a batch's acks usually arrive together.
const LINGER: Duration = Duration::from_millis(20);
/// The most settle calls running at once; more outcomes wait for one to end.
const MAX_FLUSHES: usize = 8;
/// Tries of a delete or visibility change whose entries failed for a reason
/// on SQS's side (or whose call failed).
const SETTLE_ATTEMPTS: u32 = 4;
/// How long any call but the long poll may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How much longer than its wait time a receive may take.
const RECEIVE_SLACK: Duration = Duration::from_secs(15);
/// After shutdown, how long a receive already sent may still bring messages
/// back (they are released at once); a receive dropped while SQS hands it
/// messages leaves them hidden until their visibility timeout.
const RECEIVE_GRACE: Duration = Duration::from_secs(2);
/// The visibility timeout when neither the config nor the queue has one
/// above zero (SQS's default).
const DEFAULT_VISIBILITY_SECS: i32 = 30;
/// How often the queue's redrive policy is read again, so a `Reject` follows
/// a policy added or removed while the source runs.
const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// SQS's longest visibility timeout.
const MAX_VISIBILITY_SECS: u64 = 12 * 60 * 60;

/// An SQS queue source. Build it with [`SqsSource::new`]; it connects when it
/// runs, and retries with backoff for as long as it runs.
pub struct SqsSource {
    settings: SourceSettings,
    max_in_flight: usize,
    drain_timeout: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    retry_delay: Duration,
    serialized_receives: Option<bool>,
}

impl SqsSource {
    /// Checks the configuration; does not connect.
    pub fn new(config: &SqsSourceConfig) -> Result<Self, ConnectorError> {
        let settings = config.validate()?;
        let pollers = usize::from(settings.max_concurrency);
        Ok(Self {
            // Two full receives per poller: one being processed, one waiting
            // in the engine's channel.
            max_in_flight: pollers * MAX_BATCH * 2,
            settings,
            drain_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            retry_delay: Duration::from_secs(1),
            serialized_receives: None,
        })
    }

    /// The most messages handed out and not settled yet (default
    /// `max_concurrency * 20`; at least 10). Set it above the mapping's
    /// batch size so a full batch can form.
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.clamp(MAX_BATCH, Semaphore::MAX_PERMITS);
        self
    }

    /// How long shutdown waits for the acks of records handed out (10 s).
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// The wait after a failed request: `initial`, doubling up to `max`
    /// (1 s and 30 s).
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max.max(initial);
        self
    }

    /// How long a message whose record is retried stays hidden after its
    /// first receive (1 s); it doubles with every receive, up to the
    /// visibility timeout.
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// One ReceiveMessage in flight at a time instead of one per poller.
    /// SQS locks a FIFO queue's message group while any of its messages is
    /// in flight, so concurrent receives keep groups in order; emulators may
    /// not (moto does not), and concurrent receives then hand a group out of
    /// order. Default: serialized for a FIFO queue on a server that is not
    /// AWS's, concurrent otherwise.
    pub fn with_serialized_receives(mut self, serialized: bool) -> Self {
        self.serialized_receives = Some(serialized);
        self
    }

    pub fn queue_url(&self) -> &str {
        &self.settings.queue.url
    }

    /// A FIFO queue: records carry their message group as `scope`.
    pub fn is_fifo(&self) -> bool {
        self.settings.queue.fifo
    }
}

/// The metric handles of one running source; every label comes from a closed
/// set but the mapping name.
struct Metrics {
    mapping: String,
    connected: metrics::Gauge,
    in_flight: metrics::Gauge,
}

impl Metrics {
    fn new(mapping: &str) -> Self {
        Self {
            mapping: mapping.to_string(),
            connected: metrics::gauge!("switchyard_source_connected", "mapping" => mapping.to_string()),
            in_flight: metrics::gauge!("switchyard_sqs_in_flight", "mapping" => mapping.to_string()),
        }
    }

    /// `operation`: get_queue_attributes, receive_message, delete_message_batch,
    /// change_message_visibility_batch; `outcome`: ok or error.
    fn request(&self, operation: &'static str, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        metrics::counter!("switchyard_sqs_requests_total", "mapping" => self.mapping.clone(), "operation" => operation, "outcome" => outcome)
            .increment(1);
    }

    /// `action`: received, deleted, retried, rejected, extended, settle_failed.
    fn messages(&self, action: &'static str, n: usize) {
        metrics::counter!("switchyard_sqs_messages_total", "mapping" => self.mapping.clone(), "action" => action)
            .increment(n as u64);
    }
}

/// What one running source shares between its tasks.
struct Shared {
    client: Client,
    queue: QueueUrl,
    arn: String,
    region: String,
    mapping: Arc<str>,
    state: watch::Sender<SourceState>,
    wait_seconds: i32,
    visibility_seconds: i32,
    metrics: Metrics,
    /// Taken around every receive when receives are serialized.
    receive_turn: Option<tokio::sync::Mutex<()>>,
}

impl Shared {
    fn visibility(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.visibility_seconds).unwrap_or(1))
    }

    fn running(&self) {
        self.metrics.connected.set(1.0);
        if set_state(&self.state, SourceState::Running) {
            tracing::info!(mapping = %self.mapping, queue = %self.queue.url, "SQS source receiving");
        }
    }

    /// Several pollers usually fail together: the first to report a new
    /// reason logs it as an error, the others quietly.
    fn disconnected(&self, reason: String, retry_in: Duration) {
        self.metrics.connected.set(0.0);
        if set_state(&self.state, SourceState::Disconnected(reason.clone())) {
            tracing::error!(mapping = %self.mapping, queue = %self.queue.url, %reason, ?retry_in, "SQS source disconnected; retrying");
        } else {
            tracing::debug!(mapping = %self.mapping, %reason, ?retry_in, "SQS request failed; retrying");
        }
    }
}

/// What the source learns about the queue before it receives.
#[derive(Debug, Clone, Copy)]
struct QueueFacts {
    visibility_seconds: i32,
    redrive: bool,
}

async fn queue_facts(client: &Client, queue: &QueueUrl) -> Result<QueueFacts, String> {
    let request = client
        .get_queue_attributes()
        .queue_url(&queue.url)
        .attribute_names(QueueAttributeName::VisibilityTimeout)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send();
    let output = match timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(describe(&e, "GetQueueAttributes", queue)),
        Err(_) => return Err(format!("SQS did not answer GetQueueAttributes on queue {} in time", queue.url)),
    };
    let attribute = |name: QueueAttributeName| output.attributes().and_then(|all| all.get(&name)).cloned();
    let visibility_seconds = attribute(QueueAttributeName::VisibilityTimeout)
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|&v| v > 0)
        .unwrap_or(DEFAULT_VISIBILITY_SECS);
    let redrive = attribute(QueueAttributeName::RedrivePolicy).is_some_and(|p| !p.trim().is_empty());
    Ok(QueueFacts { visibility_seconds, redrive })
}

/// What the settler hears from the pollers and the records' acks. One
/// channel carries both, so a message is always registered before the
/// outcome of its record arrives.
enum Event {
    Received(u64, InFlight),
    Outcome(u64, Outcome),
    /// The pollers stopped: settle what is still out, then return.
    Drain,
}

/// A message handed out and not settled yet.
struct InFlight {
    receipt: String,
    receive_count: u32,
    /// When SQS makes it visible again unless extended.
    visible_until: Instant,
    /// False once SQS refused an extension (the 12-hour limit, an expired
    /// receipt handle): asking again would fail again.
    extend: bool,
}

/// What to do with one settled message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Settle {
    Delete,
    /// Change its visibility timeout to this many seconds.
    Visible(i32),
}

#[derive(Debug, Clone)]
struct Pending {
    receipt: String,
    settle: Settle,
}

/// How long a retried message stays hidden: `base` after its first receive,
/// doubling with each receive, never longer than the visibility timeout.
fn retry_delay_secs(base: Duration, receive_count: u32, visibility_seconds: i32) -> i32 {
    let doubled = base.saturating_mul(1 << receive_count.saturating_sub(1).min(20));
    // Rounded up: a delay of 1.5 s must not become 1 s.
    let seconds = doubled.as_secs() + u64::from(doubled.subsec_nanos() > 0);
    let capped = seconds.min(u64::try_from(visibility_seconds).unwrap_or(0)).min(MAX_VISIBILITY_SECS);
    i32::try_from(capped).unwrap_or(0)
}

/// One entry SQS did not accept in a batch call.
pub(crate) type Failed = switchyard_aws::FailedEntry;

fn failed_entries(entries: &[aws_sdk_sqs::types::BatchResultErrorEntry]) -> Vec<Failed> {
    entries
        .iter()
        .map(|e| Failed {
            // Ids are the indexes this crate sent; another id matches nothing.
            index: e.id().parse().unwrap_or(usize::MAX),
            sender_fault: e.sender_fault(),
            code: e.code().to_string(),
            message: e.message().unwrap_or_default().to_string(),
        })
        .collect()
}

/// Deletes, or changes the visibility of, up to ten messages in one call.
async fn settle_batch(shared: &Shared, settle: Settle, receipts: &[&str]) -> Result<Vec<Failed>, String> {
    let queue = &shared.queue;
    match settle {
        Settle::Delete => {
            let mut entries = Vec::with_capacity(receipts.len());
            for (index, receipt) in receipts.iter().enumerate() {
                let entry = DeleteMessageBatchRequestEntry::builder().id(index.to_string()).receipt_handle(*receipt);
                entries.push(entry.build().map_err(|e| format!("building a delete entry: {e}"))?);
            }
            let request = shared.client.delete_message_batch().queue_url(&queue.url).set_entries(Some(entries)).send();
            let result = timeout(REQUEST_TIMEOUT, request).await;
            shared.metrics.request("delete_message_batch", matches!(result, Ok(Ok(_))));
            match result {
                Ok(Ok(output)) => Ok(failed_entries(output.failed())),
                Ok(Err(e)) => Err(describe(&e, "DeleteMessageBatch", queue)),
                Err(_) => Err(format!("SQS did not answer DeleteMessageBatch on queue {} in time", queue.url)),
            }
        }
        Settle::Visible(seconds) => {
            let mut entries = Vec::with_capacity(receipts.len());
            for (index, receipt) in receipts.iter().enumerate() {
                let entry = ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(*receipt)
                    .visibility_timeout(seconds);
                entries.push(entry.build().map_err(|e| format!("building a visibility entry: {e}"))?);
            }
            let request =
                shared.client.change_message_visibility_batch().queue_url(&queue.url).set_entries(Some(entries)).send();
            let result = timeout(REQUEST_TIMEOUT, request).await;
            shared.metrics.request("change_message_visibility_batch", matches!(result, Ok(Ok(_))));
            match result {
                Ok(Ok(output)) => Ok(failed_entries(output.failed())),
                Ok(Err(e)) => Err(describe(&e, "ChangeMessageVisibilityBatch", queue)),
                Err(_) => {
                    Err(format!("SQS did not answer ChangeMessageVisibilityBatch on queue {} in time", queue.url))
                }
            }
        }
    }
}

/// Settles one chunk of the same kind, retrying the entries that failed on
/// SQS's side. An entry SQS refuses (an expired receipt handle) is given up
/// at once: its message is visible again, or will be, and comes back.
async fn settle_chunk(shared: Arc<Shared>, settle: Settle, chunk: Vec<Pending>) {
    let mut remaining: Vec<&str> = chunk.iter().map(|p| p.receipt.as_str()).collect();
    let total = remaining.len();
    let mut last_error = String::new();
    for attempt in 0..SETTLE_ATTEMPTS {
        if attempt > 0 {
            sleep(Duration::from_millis(50) * 2u32.pow(attempt)).await;
        }
        match settle_batch(&shared, settle, &remaining).await {
            Ok(failed) => {
                let mut retry = Vec::new();
                for failure in failed {
                    let Some(&receipt) = remaining.get(failure.index) else { continue };
                    if failure.sender_fault {
                        // Deleting a message whose visibility lapsed fails
                        // like this: it may be processed again.
                        tracing::warn!(
                            mapping = %shared.mapping, queue = %shared.queue.url, code = %failure.code,
                            message = %failure.message, ?settle, "SQS refused to settle a message"
                        );
                        shared.metrics.messages("settle_failed", 1);
                    } else {
                        last_error = format!("{}: {}", failure.code, failure.message);
                        retry.push(receipt);
                    }
                }
                let done = remaining.len() - retry.len();
                record_settled(&shared, settle, done);
                remaining = retry;
                if remaining.is_empty() {
                    return;
                }
            }
            Err(reason) => last_error = reason,
        }
    }
    tracing::warn!(
        mapping = %shared.mapping, queue = %shared.queue.url, failed = remaining.len(), total, ?settle,
        error = %last_error, "gave up settling messages; they return after their visibility timeout"
    );
    shared.metrics.messages("settle_failed", remaining.len());
}

fn record_settled(shared: &Shared, settle: Settle, n: usize) {
    if n == 0 {
        return;
    }
    match settle {
        Settle::Delete => shared.metrics.messages("deleted", n),
        Settle::Visible(_) => {}
    }
}

/// Runs every delete and visibility change of one flush concurrently, ten
/// entries a call.
async fn settle_all(shared: Arc<Shared>, pending: Vec<Pending>) {
    let mut groups: HashMap<Settle, Vec<Pending>> = HashMap::new();
    for entry in pending {
        groups.entry(entry.settle).or_default().push(entry);
    }
    let mut calls = Vec::new();
    for (settle, entries) in groups {
        let mut entries = entries.into_iter().peekable();
        while entries.peek().is_some() {
            let chunk: Vec<Pending> = entries.by_ref().take(MAX_BATCH).collect();
            calls.push(settle_chunk(shared.clone(), settle, chunk));
        }
    }
    futures::future::join_all(calls).await;
}

/// Owns the messages handed out: settles their outcomes in batches and
/// extends their visibility while their records are in flight.
struct Settler {
    shared: Arc<Shared>,
    events: mpsc::UnboundedReceiver<Event>,
    shutdown: CancellationToken,
    in_flight: HashMap<u64, InFlight>,
    pending: Vec<Pending>,
    /// When the pending outcomes go out at the latest.
    linger_until: Option<Instant>,
    flushes: JoinSet<()>,
    redrive: Arc<AtomicBool>,
    retry_delay: Duration,
    drain_timeout: Duration,
    /// Set once the pollers stopped: the time to give up waiting for acks.
    draining: Option<Instant>,
    /// Messages released after shutdown while pollers may still be in their
    /// last receive: held back until the pollers stopped, so no receive that
    /// is about to be dropped can take them.
    deferred: Vec<Pending>,
}

impl Settler {
    async fn run(mut self) {
        let visibility = self.shared.visibility();
        // Extend when half the visibility timeout is left, checking four
        // times as often, so an extension is never late by more than a tick.
        let tick = (visibility / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let mut heartbeat = tokio::time::interval(tick);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refresh = tokio::time::interval_at(Instant::now() + REFRESH_EVERY, REFRESH_EVERY);
        loop {
            if self.draining.is_some() && self.in_flight.is_empty() && self.pending.is_empty() {
                break;
            }
            let linger = self.linger_until;
            let deadline = self.draining;
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(event) => self.handle(event),
                    // Every poller and every record is gone.
                    None => break,
                },
                _ = sleep_until(linger.unwrap_or_else(Instant::now)), if linger.is_some() => self.flush().await,
                _ = heartbeat.tick() => self.extend_due(visibility).await,
                _ = refresh.tick() => self.refresh_redrive(),
                Some(_) = self.flushes.join_next(), if !self.flushes.is_empty() => {}
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    tracing::warn!(
                        mapping = %self.shared.mapping, in_flight = self.in_flight.len(),
                        "shutdown: gave up waiting for acks; those messages return after their visibility timeout"
                    );
                    break;
                }
            }
            if self.pending.len() >= MAX_BATCH {
                self.flush().await;
            }
        }
        self.pending.append(&mut self.deferred);
        self.flush().await;
        let waited = timeout(REQUEST_TIMEOUT, async { while self.flushes.join_next().await.is_some() {} }).await;
        if waited.is_err() {
            tracing::warn!(mapping = %self.shared.mapping, "shutdown: settling took too long; giving up");
            self.flushes.abort_all();
        }
        self.shared.metrics.in_flight.set(0.0);
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Received(token, message) => {
                self.in_flight.insert(token, message);
            }
            Event::Outcome(token, outcome) => {
                let Some(message) = self.in_flight.remove(&token) else { return };
                let settle = self.settle(&outcome, &message);
                let pending = Pending { receipt: message.receipt, settle };
                if settle != Settle::Delete && self.shutdown.is_cancelled() && self.draining.is_none() {
                    self.deferred.push(pending);
                } else {
                    self.pending.push(pending);
                    self.linger_until.get_or_insert_with(|| Instant::now() + LINGER);
                }
            }
            Event::Drain => {
                self.draining = Some(Instant::now() + self.drain_timeout);
                if !self.deferred.is_empty() {
                    self.pending.append(&mut self.deferred);
                    self.linger_until.get_or_insert_with(Instant::now);
                }
            }
        }
        self.shared.metrics.in_flight.set(self.in_flight.len() as f64);
    }

    fn settle(&self, outcome: &Outcome, message: &InFlight) -> Settle {
        let metrics = &self.shared.metrics;
        match outcome {
            Outcome::Delivered => Settle::Delete,
            Outcome::Retry(reason) => {
                metrics.messages("retried", 1);
                // Stopping: the record was not processed, another consumer
                // (or the next run) may take it at once. FIFO: the engine
                // retries the rest of the group with it, and the group starts
                // over from it at once, in order; a delay would hold the group
                // back, and SQS emulators (moto) hand a group out of order
                // when several of its messages become visible by timeout.
                if self.shutdown.is_cancelled() || self.draining.is_some() || self.shared.queue.fifo {
                    return Settle::Visible(0);
                }
                let delay = retry_delay_secs(self.retry_delay, message.receive_count, self.shared.visibility_seconds);
                tracing::debug!(mapping = %self.shared.mapping, %reason, delay, "retrying a message later");
                Settle::Visible(delay)
            }
            Outcome::Reject(reason) => {
                metrics.messages("rejected", 1);
                if self.redrive.load(Ordering::Relaxed) {
                    // Visible at once: the receive that finds its receive
                    // count above maxReceiveCount moves it to the
                    // dead-letter queue.
                    tracing::debug!(mapping = %self.shared.mapping, %reason, "rejected; left to the redrive policy");
                    Settle::Visible(0)
                } else {
                    tracing::warn!(
                        mapping = %self.shared.mapping, queue = %self.shared.queue.url, %reason,
                        "rejected a message of a queue without a redrive policy: deleting it"
                    );
                    Settle::Delete
                }
            }
        }
    }

    /// Sends what is pending in the background; waits first when too many
    /// calls are running already.
    async fn flush(&mut self) {
        self.linger_until = None;
        if self.pending.is_empty() {
            return;
        }
        while self.flushes.len() >= MAX_FLUSHES {
            if self.flushes.join_next().await.is_none() {
                break;
            }
        }
        let pending = std::mem::take(&mut self.pending);
        self.flushes.spawn(settle_all(self.shared.clone(), pending));
    }

    /// Extends every message whose visibility timeout is half gone. Done
    /// here rather than in the background, so no extension can land after
    /// the visibility change of a retry that came later.
    async fn extend_due(&mut self, visibility: Duration) {
        let now = Instant::now();
        let due: Vec<(u64, String)> = self
            .in_flight
            .iter()
            .filter(|(_, m)| m.extend && m.visible_until <= now + visibility / 2)
            .map(|(token, m)| (*token, m.receipt.clone()))
            .collect();
        if due.is_empty() {
            return;
        }
        let shared = &self.shared;
        let chunks: Vec<&[(u64, String)]> = due.chunks(MAX_BATCH).collect();
        let calls = chunks.iter().map(|chunk| {
            let receipts: Vec<&str> = chunk.iter().map(|(_, r)| r.as_str()).collect();
            async move { settle_batch(shared, Settle::Visible(shared.visibility_seconds), &receipts).await }
        });
        let results = futures::future::join_all(calls).await;
        let mut extended = 0;
        for (chunk, result) in chunks.iter().zip(results) {
            match result {
                Ok(failed) => {
                    for (index, (token, _)) in chunk.iter().enumerate() {
                        let Some(message) = self.in_flight.get_mut(token) else { continue };
                        match failed.iter().find(|f| f.index == index) {
                            None => {
                                message.visible_until = now + visibility;
                                extended += 1;
                            }
                            Some(failure) if failure.sender_fault => {
                                tracing::warn!(
                                    mapping = %shared.mapping, code = %failure.code, message = %failure.message,
                                    "SQS refused to extend a message's visibility; it may be delivered again"
                                );
                                message.extend = false;
                            }
                            // Tried again on the next tick.
                            Some(_) => {}
                        }
                    }
                }
                Err(reason) => {
                    tracing::warn!(mapping = %shared.mapping, %reason, "extending visibility failed; trying again")
                }
            }
        }
        shared.metrics.messages("extended", extended);
    }

    fn refresh_redrive(&mut self) {
        let shared = self.shared.clone();
        let redrive = self.redrive.clone();
        self.flushes.spawn(async move {
            let facts = queue_facts(&shared.client, &shared.queue).await;
            shared.metrics.request("get_queue_attributes", facts.is_ok());
            match facts {
                Ok(facts) => redrive.store(facts.redrive, Ordering::Relaxed),
                Err(reason) => tracing::debug!(mapping = %shared.mapping, %reason, "could not read the redrive policy"),
            }
        });
    }
}

/// One long-polling loop.
struct Poller {
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<Event>,
    permits: Arc<Semaphore>,
    out: mpsc::Sender<Record>,
    shutdown: CancellationToken,
    tokens: Arc<AtomicU64>,
    backoff: Backoff,
}

impl Poller {
    async fn run(mut self) {
        let shared = self.shared.clone();
        let out = self.out.clone();
        loop {
            // Room for a full receive first: this bounds what is in flight.
            let permit = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = out.closed() => return,
                permit = self.permits.clone().acquire_many_owned(MAX_BATCH as u32) => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let turn = match &shared.receive_turn {
                Some(lock) => tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    turn = lock.lock() => Some(turn),
                },
                None => None,
            };
            let request = shared
                .client
                .receive_message()
                .queue_url(&shared.queue.url)
                .max_number_of_messages(MAX_BATCH as i32)
                .wait_time_seconds(shared.wait_seconds)
                // Always explicit, so the extensions' timing matches.
                .visibility_timeout(shared.visibility_seconds)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send();
            let wait = Duration::from_secs(u64::try_from(shared.wait_seconds).unwrap_or(0)) + RECEIVE_SLACK;
            let received = timeout(wait, request);
            tokio::pin!(received);
            let (result, stopping) = tokio::select! {
                result = &mut received => (result, false),
                _ = self.shutdown.cancelled() => match timeout(RECEIVE_GRACE, &mut received).await {
                    Ok(result) => (result, true),
                    Err(_) => return,
                },
            };
            drop(turn);
            let failure = match result {
                Ok(Ok(output)) => {
                    shared.metrics.request("receive_message", true);
                    self.backoff.reset();
                    shared.running();
                    if !self.hand_out(output.messages.unwrap_or_default(), permit).await {
                        return;
                    }
                    None
                }
                Ok(Err(e)) => Some(describe(&e, "ReceiveMessage", &shared.queue)),
                Err(_) => Some(format!("SQS did not answer ReceiveMessage on queue {} in time", shared.queue.url)),
            };
            if stopping {
                return;
            }
            if let Some(reason) = failure {
                shared.metrics.request("receive_message", false);
                let retry_in = self.backoff.next_wait();
                shared.disconnected(reason, retry_in);
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    _ = sleep(retry_in) => {}
                }
            }
        }
    }

    /// Hands the messages out in order; false when the engine is gone.
    /// After shutdown, or once the engine is gone, they are handed to
    /// nobody: their dropped acks make them visible again.
    async fn hand_out(&self, messages: Vec<Message>, mut permit: OwnedSemaphorePermit) -> bool {
        let mut engine_gone = false;
        let shared = &self.shared;
        shared.metrics.messages("received", messages.len());
        let visible_until = Instant::now() + shared.visibility();
        for message in messages {
            let Some(receipt) = message.receipt_handle().map(str::to_string) else {
                tracing::warn!(mapping = %shared.mapping, "SQS returned a message without a receipt handle; skipped");
                continue;
            };
            let token = self.tokens.fetch_add(1, Ordering::Relaxed);
            let receive_count = system_attribute(&message, MessageSystemAttributeName::ApproximateReceiveCount)
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            let registered = self
                .events
                .send(Event::Received(token, InFlight { receipt, receive_count, visible_until, extend: true }));
            if registered.is_err() {
                // The settler is gone: nothing could settle these messages.
                return false;
            }
            let record = record(&message, shared, token, permit.split(1), self.events.clone());
            if engine_gone || self.shutdown.is_cancelled() {
                continue;
            }
            tokio::select! {
                sent = self.out.send(record) => engine_gone = sent.is_err(),
                // The record is dropped with the send.
                _ = self.shutdown.cancelled() => {}
            }
        }
        !engine_gone
    }
}

/// The record of one message; its ack reports to the settler and frees its
/// place in flight.
fn record(
    message: &Message,
    shared: &Shared,
    token: u64,
    permit: Option<OwnedSemaphorePermit>,
    events: mpsc::UnboundedSender<Event>,
) -> Record {
    let scope = if shared.queue.fifo {
        system_attribute(message, MessageSystemAttributeName::MessageGroupId).map(Arc::from)
    } else {
        None
    };
    let id = message.message_id().map_or_else(|| token.to_string(), str::to_string);
    Record {
        id,
        scope,
        key: None,
        data: message_data(message, &shared.arn, &shared.region),
        size: message.body().map_or(0, str::len),
        created_at: created_at(message),
        deferred: None,
        ack: Ack::new(move |outcome| {
            // The source is gone when the settler is: the message returns
            // after its visibility timeout.
            let _ = events.send(Event::Outcome(token, outcome));
            drop(permit);
        }),
    }
}

impl SqsSource {
    /// Reads the queue's attributes until it succeeds; `None` on shutdown.
    async fn prepare(&self, shared: &Shared, shutdown: &CancellationToken) -> Option<QueueFacts> {
        let mut backoff = Backoff::new(self.backoff_initial, self.backoff_max);
        loop {
            let result = tokio::select! {
                _ = shutdown.cancelled() => return None,
                result = queue_facts(&shared.client, &shared.queue) => result,
            };
            shared.metrics.request("get_queue_attributes", result.is_ok());
            match result {
                Ok(facts) => return Some(facts),
                Err(reason) => {
                    let retry_in = backoff.next_wait();
                    shared.disconnected(reason, retry_in);
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = sleep(retry_in) => {}
                    }
                }
            }
        }
    }
}

#[async_trait]
impl Source for SqsSource {
    fn envelope(&self) -> Arc<dyn Envelope> {
        Arc::new(SqsEnvelope)
    }

    /// Never fails on SQS trouble: a missing queue, refused credentials or
    /// an unreachable endpoint show as `Disconnected` and are retried until
    /// shutdown.
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), ConnectorError> {
        let SourceContext { mapping, out, shutdown, state } = cx;
        let metrics = Metrics::new(&mapping);
        let settings = &self.settings;
        let connected = tokio::select! {
            _ = shutdown.cancelled() => None,
            connected = client::connect(&settings.client, &settings.queue) => Some(connected),
        };
        let Some(connected) = connected else {
            set_state(&state, SourceState::Stopped);
            return Ok(());
        };
        let serialized = self.serialized_receives.unwrap_or(settings.queue.fifo && connected.emulated());
        let mut shared = Shared {
            arn: settings.queue.arn(&connected.region),
            client: connected.client,
            region: connected.region,
            queue: settings.queue.clone(),
            mapping: mapping.clone(),
            state,
            wait_seconds: settings.wait_seconds,
            visibility_seconds: settings.visibility_seconds.unwrap_or(DEFAULT_VISIBILITY_SECS),
            metrics,
            receive_turn: serialized.then(|| tokio::sync::Mutex::new(())),
        };
        let Some(facts) = self.prepare(&shared, &shutdown).await else {
            shared.metrics.connected.set(0.0);
            set_state(&shared.state, SourceState::Stopped);
            return Ok(());
        };
        shared.visibility_seconds = settings.visibility_seconds.unwrap_or(facts.visibility_seconds);
        shared.running();
        let shared = Arc::new(shared);

        let (events, events_rx) = mpsc::unbounded_channel();
        let settler = Settler {
            shared: shared.clone(),
            events: events_rx,
            shutdown: shutdown.clone(),
            in_flight: HashMap::new(),
            pending: Vec::new(),
            linger_until: None,
            flushes: JoinSet::new(),
            redrive: Arc::new(AtomicBool::new(facts.redrive)),
            retry_delay: self.retry_delay,
            drain_timeout: self.drain_timeout,
            draining: None,
            deferred: Vec::new(),
        };
        let settler = tokio::spawn(settler.run());

        let permits = Arc::new(Semaphore::new(self.max_in_flight));
        let tokens = Arc::new(AtomicU64::new(0));
        let mut pollers = JoinSet::new();
        for _ in 0..settings.max_concurrency {
            pollers.spawn(
                Poller {
                    shared: shared.clone(),
                    events: events.clone(),
                    permits: permits.clone(),
                    out: out.clone(),
                    shutdown: shutdown.clone(),
                    tokens: tokens.clone(),
                    backoff: Backoff::new(self.backoff_initial, self.backoff_max),
                }
                .run(),
            );
        }
        drop(out);
        while let Some(joined) = pollers.join_next().await {
            if let Err(e) = joined {
                tracing::error!(mapping = %mapping, error = %e, "an SQS poller panicked");
            }
        }
        // Pollers end on shutdown, or when the engine dropped its receiver.
        let _ = events.send(Event::Drain);
        drop(events);
        if let Err(e) = settler.await {
            tracing::error!(mapping = %mapping, error = %e, "the SQS settler panicked");
        }
        shared.metrics.connected.set(0.0);
        set_state(&shared.state, SourceState::Stopped);
        tracing::info!(mapping = %mapping, queue = %shared.queue.url, "SQS source stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_per_receive_up_to_the_visibility_timeout() {
        let second = Duration::from_secs(1);
        let delays: Vec<i32> = (1..=7).map(|count| retry_delay_secs(second, count, 30)).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(retry_delay_secs(Duration::from_millis(1500), 1, 30), 2, "rounded up");
        assert_eq!(retry_delay_secs(Duration::ZERO, 3, 30), 0);
        assert_eq!(retry_delay_secs(second, u32::MAX, 43_200), 43_200, "no overflow");
        assert_eq!(retry_delay_secs(second, 0, 30), 1, "a missing count counts as the first receive");
    }

    #[test]
    fn failed_entries_map_to_their_index() {
        let entry = aws_sdk_sqs::types::BatchResultErrorEntry::builder()
            .id("3")
            .sender_fault(true)
            .code("ReceiptHandleIsInvalid")
            .message("expired")
            .build()
            .expect("all fields set");
        assert_eq!(
            failed_entries(&[entry]),
            [Failed { index: 3, sender_fault: true, code: "ReceiptHandleIsInvalid".into(), message: "expired".into() }]
        );
    }
}
