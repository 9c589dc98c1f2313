//! One lane: take a batch, invoke, and settle every record, retrying as
//! Lambda does for streams and queues.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use switchyard_sdk::{Deferred, Envelope, Outcome, Record};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::Settings;
use super::batch::Pending;
use super::failure::{Failure, FailureRoute};
use crate::function::{Function, Invocation, InvokeError, Wait};
use crate::queue::backoff;
use crate::shape::{Item, Shaped};

/// What a deferred record's event JSON adds to its payload, about (an MQTT
/// record's metadata is 150 to 200 bytes, a NATS record's 200 to 250).
const DEFERRED_OVERHEAD: usize = 256;

pub struct Lane {
    settings: Settings,
    function: Arc<Function>,
    envelope: Arc<dyn Envelope>,
    on_failure: FailureRoute,
    shutdown: CancellationToken,
    metrics: LaneMetrics,
}

struct LaneMetrics {
    batch_size: metrics::Histogram,
    delivered: metrics::Counter,
    failed: metrics::Counter,
}

/// Why the records of a batch are being retried.
enum Failed {
    /// The function failed or its answer was unusable: bisect may help.
    Whole(InvokeError),
    /// The function named the records that failed (their ids).
    Partial(InvokeError, HashSet<String>),
}

impl Lane {
    pub fn new(
        settings: Settings,
        function: Arc<Function>,
        envelope: Arc<dyn Envelope>,
        on_failure: FailureRoute,
        shutdown: CancellationToken,
    ) -> Self {
        let m = settings.mapping.to_string();
        let metrics = LaneMetrics {
            batch_size: metrics::histogram!("switchyard_batch_records", "mapping" => m.clone()),
            delivered: metrics::counter!("switchyard_records_total", "mapping" => m.clone(), "outcome" => "delivered"),
            failed: metrics::counter!("switchyard_records_total", "mapping" => m, "outcome" => "on_failure"),
        };
        Self { settings, function, envelope, on_failure, shutdown, metrics }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn function(&self) -> &Function {
        &self.function
    }

    pub fn envelope(&self) -> &dyn Envelope {
        self.envelope.as_ref()
    }

    /// Takes batches from `pending` until it closes or shutdown.
    pub async fn run(self: Arc<Self>, pending: Arc<Mutex<Pending>>) {
        loop {
            let batch = {
                let mut p = pending.lock().await;
                if self.shutdown.is_cancelled() {
                    // Records not yet invoked go back to the broker.
                    p.discard();
                    return;
                }
                tokio::select! {
                    b = p.next(&self.settings.batch) => b,
                    _ = self.shutdown.cancelled() => {
                        p.discard();
                        return;
                    }
                }
            };
            match batch {
                Some(records) => self.process(records).await,
                None => return,
            }
        }
    }

    /// Settles every record of `records`: delivered, written to `on_failure`,
    /// or (on shutdown) dropped for redelivery.
    async fn process(&self, records: Vec<Record>) {
        let retry = &self.settings.retry;
        // Sub-batches still to do, in order, with the function errors they had.
        let mut todo: VecDeque<(Vec<Record>, u32)> = VecDeque::from([(records, 0)]);
        while let Some((mut batch, mut attempts)) = todo.pop_front() {
            let mut throttles = 0u32;
            loop {
                batch = self.expire(batch).await;
                if batch.is_empty() {
                    break;
                }
                self.metrics.batch_size.record(batch.len() as f64);
                // A passthrough shaper writes Lambda's event straight from the
                // records (`Envelope::write_event`), or from what the source
                // kept of them (`Envelope::write_deferred`).
                let event = match self.deferred_event(&mut batch) {
                    Some(event) => Ok(event),
                    None => {
                        let items: Vec<Item> =
                            batch.iter().map(|r| Item { id: &r.id, time: r.created_at, data: &r.data }).collect();
                        self.settings.shaper.event(self.envelope.as_ref(), &items)
                    }
                };
                let event = match event {
                    Ok(event) => event,
                    Err(error) => {
                        self.fail(batch, Failure::TransformFailed(error)).await;
                        break;
                    }
                };
                let invocation = Invocation {
                    request_id: uuid::Uuid::new_v4().to_string(),
                    payload: event.payload,
                    attempt: attempts + 1,
                    headers: event.headers,
                    client_context: None,
                };
                let failed = match self.function.invoke(&self.settings.mapping, &invocation, Wait::Bounded).await {
                    Ok(answer) => match self.failed_items(&answer, &batch) {
                        Ok(failed) if failed.is_empty() => {
                            self.settle(batch);
                            break;
                        }
                        Ok(failed) => {
                            let (done, rest) = self.split_partial(batch, &failed);
                            self.settle(done);
                            batch = rest;
                            Failed::Partial(partial_error(failed.len()), failed)
                        }
                        Err(problem) => Failed::Whole(bad_answer(problem)),
                    },
                    Err(error @ (InvokeError::Throttled { .. } | InvokeError::Unreachable(_))) => {
                        // The function did not run: no attempt is consumed.
                        throttles += 1;
                        let mut delay = backoff(&retry.backoff, throttles);
                        if let InvokeError::Throttled { retry_after: Some(after) } = &error {
                            delay = delay.max(*after);
                        }
                        if self.sleep(delay).await {
                            return;
                        }
                        continue;
                    }
                    Err(error) => Failed::Whole(error),
                };
                if let Failed::Whole(_) = &failed
                    && retry.bisect_on_error
                    && batch.len() > 1
                {
                    // Each half is tried on its own; splitting does not use
                    // up retries, so a poison record ends alone and only it
                    // spends them.
                    let back = batch.split_off(batch.len() / 2);
                    todo.push_front((back, attempts));
                    todo.push_front((batch, attempts));
                    break;
                }
                attempts += 1;
                let exhausted = retry.max_attempts >= 0 && i64::from(attempts) > retry.max_attempts;
                let error = match failed {
                    Failed::Whole(e) => e,
                    Failed::Partial(e, named) if exhausted => {
                        // The last invocation succeeded for the records it did
                        // not name: only the named ones go to on_failure.
                        let (failed, succeeded): (Vec<Record>, Vec<Record>) =
                            batch.into_iter().partition(|r| named.contains(&r.id));
                        self.settle(succeeded);
                        batch = failed;
                        e
                    }
                    Failed::Partial(e, _) => e,
                };
                if exhausted {
                    self.fail(batch, Failure::RetriesExhausted { error, attempts }).await;
                    break;
                }
                tracing::warn!(
                    mapping = %self.settings.mapping,
                    records = batch.len(),
                    attempts,
                    %error,
                    "batch failed; will retry"
                );
                if self.sleep(backoff(&retry.backoff, attempts)).await {
                    return;
                }
            }
        }
    }

    /// The event of a passthrough lane whose records are all deferred,
    /// written by the envelope from what the source kept; `None` otherwise,
    /// with every record materialized for the shaper.
    fn deferred_event(&self, batch: &mut [Record]) -> Option<Shaped> {
        if self.settings.shaper.is_passthrough() && batch.iter().all(|r| r.deferred.is_some()) {
            let deferred: Vec<&dyn Deferred> = batch.iter().filter_map(|r| r.deferred.as_deref()).collect();
            // Room for the payloads (in base64 at most) and their metadata
            // up front: growing the event by doubling copies it over and over.
            let mut out = Vec::with_capacity(batch.iter().map(|r| r.size.div_ceil(3) * 4 + DEFERRED_OVERHEAD).sum());
            if self.envelope.write_deferred(&deferred, &mut out) {
                return Some(Shaped { payload: out.into(), headers: Vec::new() });
            }
        }
        batch.iter_mut().for_each(|r| {
            r.materialize();
        });
        None
    }

    /// Sends records older than `max_record_age` to `on_failure`; returns the rest.
    async fn expire(&self, batch: Vec<Record>) -> Vec<Record> {
        let Some(max_age) = self.settings.retry.max_record_age else {
            return batch;
        };
        let now = SystemTime::now();
        let (old, fresh): (Vec<Record>, Vec<Record>) =
            batch.into_iter().partition(|r| now.duration_since(r.created_at).is_ok_and(|age| age > max_age));
        if !old.is_empty() {
            self.fail(old, Failure::RecordAgeExceeded).await;
        }
        fresh
    }

    /// The record ids a partial batch response names, or why the answer
    /// makes the whole batch count as failed (Lambda's rules).
    fn failed_items(&self, answer: &[u8], batch: &[Record]) -> Result<HashSet<String>, String> {
        if !self.settings.report_batch_item_failures {
            return Ok(HashSet::new());
        }
        let value: Value = match serde_json::from_slice(answer) {
            Ok(v) => v,
            // Not JSON, or empty: no failures reported.
            Err(_) => return Ok(HashSet::new()),
        };
        let list = match value.get("batchItemFailures") {
            None | Some(Value::Null) => return Ok(HashSet::new()),
            Some(Value::Array(list)) => list,
            Some(other) => return Err(format!("batchItemFailures: expected a list, got {other}")),
        };
        let known: HashSet<&str> = batch.iter().map(|r| r.id.as_str()).collect();
        let mut failed = HashSet::new();
        for item in list {
            let id = item
                .get("itemIdentifier")
                .and_then(|i| self.envelope.item_id(i))
                .ok_or_else(|| format!("batchItemFailures: invalid itemIdentifier in {item}"))?;
            if !known.contains(id.as_str()) {
                return Err(format!("batchItemFailures: itemIdentifier {id:?} is not in the batch"));
            }
            failed.insert(id);
        }
        Ok(failed)
    }

    /// After a partial failure: what is done and what is retried. An ordered
    /// batch is retried from its first failed record on (the checkpoint cannot
    /// pass it); an unordered one retries only the failed records.
    fn split_partial(&self, batch: Vec<Record>, failed: &HashSet<String>) -> (Vec<Record>, Vec<Record>) {
        if batch.first().is_some_and(|r| r.scope.is_some()) {
            let mut batch = batch;
            let first = batch.iter().position(|r| failed.contains(&r.id)).unwrap_or(batch.len());
            let rest = batch.split_off(first);
            (batch, rest)
        } else {
            batch.into_iter().partition(|r| !failed.contains(&r.id))
        }
    }

    fn settle(&self, records: Vec<Record>) {
        self.metrics.delivered.increment(records.len() as u64);
        for r in records {
            r.ack.complete(Outcome::Delivered);
        }
    }

    /// Writes the failure record, retrying until it is written or shutdown;
    /// only then are the records acknowledged. A record for several records
    /// that cannot be written is split in two, each tried on its own (first
    /// half first): a destination that refuses it for its size (SQS takes
    /// 256 KB, Kinesis 1 MB, a Kafka broker its `message.max.bytes`) would
    /// refuse it for good, and hold the lane behind it; one record per
    /// failed record is the smallest that loses nothing.
    pub async fn fail(&self, records: Vec<Record>, failure: Failure) {
        if self.on_failure.rejects() {
            // The broker dead-letters them (or drops them, as it is configured).
            tracing::warn!(mapping = %self.settings.mapping, records = records.len(), condition = failure.condition(),
                "records failed for good; rejecting them to the broker's dead-lettering");
            self.metrics.failed.increment(records.len() as u64);
            for r in records {
                r.ack.complete(Outcome::Reject(failure.condition().to_string()));
            }
            return;
        }
        let mut parts = VecDeque::from([records]);
        let mut tries = 0u32;
        while let Some(part) = parts.pop_front() {
            match self
                .on_failure
                .write(&self.function, &self.settings.mapping, self.envelope.as_ref(), &part, &failure)
                .await
            {
                Ok(()) => {
                    tries = 0;
                    self.metrics.failed.increment(part.len() as u64);
                    for r in part {
                        r.ack.complete(Outcome::Delivered);
                    }
                }
                Err(error) if part.len() > 1 => {
                    tracing::warn!(mapping = %self.settings.mapping, %error, records = part.len(),
                        "cannot write to on_failure; trying again with a failure record per half");
                    let mut first = part;
                    let second = first.split_off(first.len() / 2);
                    parts.push_front(second);
                    parts.push_front(first);
                }
                Err(error) => {
                    tries += 1;
                    let delay = backoff(&self.settings.retry.backoff, tries);
                    tracing::error!(mapping = %self.settings.mapping, %error, retry_in = ?delay,
                        "cannot write to on_failure; records stay unacknowledged");
                    parts.push_front(part);
                    if self.sleep(delay).await {
                        return;
                    }
                }
            }
        }
    }

    /// Sleeps; true when shutdown came first (the caller drops its records,
    /// which the broker then redelivers).
    async fn sleep(&self, duration: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(duration) => false,
            _ = self.shutdown.cancelled() => true,
        }
    }
}

fn partial_error(n: usize) -> InvokeError {
    InvokeError::Function {
        error_type: "BatchItemFailures".into(),
        message: format!("the function reported {n} failed record(s)"),
        payload: None,
    }
}

fn bad_answer(problem: String) -> InvokeError {
    InvokeError::Function { error_type: "InvalidBatchItemFailures".into(), message: problem, payload: None }
}
