//! One shard's reader: reads the shard in order with GetRecords, hands each
//! record out, and saves the checkpoint as the records' acks let it advance.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use switchyard_sdk::{Ack, Backoff, OffsetTracker, Outcome, Record, SourceState, set_state};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{CheckpointStore, SHARD_END};
use crate::config::MIN_POLL_INTERVAL;
use crate::envelope::{StreamInfo, created_at, record_data};
use crate::error::{describe, is_expired_iterator, is_throttled};

/// Kinesis hands out at most 10,000 records a GetRecords call.
const MAX_GET_RECORDS: usize = 10_000;
/// How long one request may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The wait before a failed checkpoint save is tried again.
const SAVE_RETRY: Duration = Duration::from_secs(1);

/// How the source's tasks behave; the defaults are [`KinesisSource`]'s.
///
/// [`KinesisSource`]: crate::KinesisSource
#[derive(Debug, Clone)]
pub(crate) struct Tuning {
    pub(crate) poll_interval: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) drain_timeout: Duration,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) checkpoint_interval: Duration,
}

/// The metric handles of one running source; every label comes from a closed
/// set but the mapping name.
pub(crate) struct Metrics {
    mapping: String,
    connected: metrics::Gauge,
}

impl Metrics {
    pub(crate) fn new(mapping: &str) -> Self {
        Self {
            mapping: mapping.to_string(),
            connected: metrics::gauge!("switchyard_source_connected", "mapping" => mapping.to_string()),
        }
    }

    /// `operation`: describe_stream_summary, list_shards, get_shard_iterator,
    /// get_records; `outcome`: ok, throttled or error.
    pub(crate) fn request(&self, operation: &'static str, outcome: &'static str) {
        metrics::counter!("switchyard_kinesis_requests_total", "mapping" => self.mapping.clone(), "operation" => operation, "outcome" => outcome)
            .increment(1);
    }

    fn records(&self, n: usize) {
        metrics::counter!("switchyard_kinesis_records_total", "mapping" => self.mapping.clone()).increment(n as u64);
    }
}

/// What one running source shares between its tasks.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) stream: StreamInfo,
    pub(crate) store: Arc<dyn CheckpointStore>,
    pub(crate) mapping: Arc<str>,
    pub(crate) state: watch::Sender<SourceState>,
    pub(crate) out: mpsc::Sender<Record>,
    /// Cancelled on shutdown, or when the engine stopped taking records.
    pub(crate) stop: CancellationToken,
    pub(crate) tuning: Tuning,
    pub(crate) metrics: Metrics,
}

impl Shared {
    pub(crate) fn running(&self) {
        self.metrics.connected.set(1.0);
        if set_state(&self.state, SourceState::Running) {
            tracing::info!(mapping = %self.mapping, stream = %self.stream.name, "Kinesis source reading");
        }
    }

    /// Several readers usually fail together: the first to report a new
    /// reason logs it as an error, the others quietly.
    pub(crate) fn disconnected(&self, reason: String, retry_in: Duration) {
        self.metrics.connected.set(0.0);
        if set_state(&self.state, SourceState::Disconnected(reason.clone())) {
            tracing::error!(mapping = %self.mapping, stream = %self.stream.name, %reason, ?retry_in, "Kinesis source disconnected; retrying");
        } else {
            tracing::debug!(mapping = %self.mapping, %reason, ?retry_in, "Kinesis request failed; retrying");
        }
    }

    /// The checkpoint key of a shard: checkpoints of another stream that
    /// happens to have a shard of the same id never apply.
    pub(crate) fn key(&self, shard_id: &str) -> String {
        format!("{}/{shard_id}", self.stream.name)
    }
}

/// Where a shard iterator starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Position {
    TrimHorizon,
    Latest,
    AtTimestamp(DateTime<Utc>),
    /// At this record: a rewind reads the retried record again.
    At(String),
    /// After this record: a checkpoint, or the last record read.
    After(String),
}

/// Why a reader returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// The shard is closed, was read to its end, every record finished and
    /// [`SHARD_END`] saved: its children may start.
    Finished,
    /// Shutdown, or the engine stopped taking records.
    Stopped,
}

/// One delivery of one record: its index in the shard's read order and the
/// epoch it was handed out in. A rewind starts a new epoch, so the late ack of
/// a delivery from before it is recognised and ignored.
type Tag = (i64, u64);

pub(crate) struct ShardReader {
    shared: Arc<Shared>,
    shard_id: Arc<str>,
    key: String,
    /// Over local indexes: sequence numbers are too long for an `i64`.
    tracker: OffsetTracker,
    /// Index -> sequence number, for every record read and not yet below the
    /// checkpoint.
    sequences: BTreeMap<i64, String>,
    /// Index -> epoch of the records handed out and not settled.
    in_flight: BTreeMap<i64, u64>,
    /// Records read and not handed out yet.
    queued: VecDeque<(i64, aws_sdk_kinesis::types::Record)>,
    next_index: i64,
    epoch: u64,
    /// Where the next iterator starts when there is none (or it expired).
    position: Position,
    iterator: Option<String>,
    /// GetRecords returned no next iterator: the shard is closed and read.
    ended: bool,
    /// A checkpoint not saved yet, and when to save it.
    unsaved: Option<String>,
    next_save: Instant,
    last_save: Option<Instant>,
    next_poll: Instant,
    last_call: Option<Instant>,
    backoff: Backoff,
    ack_tx: mpsc::UnboundedSender<(Tag, Outcome)>,
    ack_rx: mpsc::UnboundedReceiver<(Tag, Outcome)>,
}

impl ShardReader {
    pub(crate) fn new(shared: Arc<Shared>, shard_id: &str, position: Position) -> Self {
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let backoff = Backoff::new(shared.tuning.backoff_initial, shared.tuning.backoff_max);
        Self {
            key: shared.key(shard_id),
            shared,
            shard_id: Arc::from(shard_id),
            tracker: OffsetTracker::new(),
            sequences: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            queued: VecDeque::new(),
            next_index: 0,
            epoch: 0,
            position,
            iterator: None,
            ended: false,
            unsaved: None,
            next_save: Instant::now(),
            last_save: None,
            next_poll: Instant::now(),
            last_call: None,
            backoff,
            ack_tx,
            ack_rx,
        }
    }

    /// Reads until the shard is finished or the source stops; returns the
    /// shard's id and why it returned.
    pub(crate) async fn run(mut self) -> (Arc<str>, Exit) {
        tracing::debug!(mapping = %self.shared.mapping, shard = %self.shard_id, position = ?self.position, "reading shard");
        let stop = self.shared.stop.clone();
        let out = self.shared.out.clone();
        // A slot on the engine's channel, reserved before a record is handed
        // out: a full channel is backpressure, and acks keep being handled.
        loop {
            if self.ended && self.queued.is_empty() && self.in_flight.is_empty() {
                if self.finish().await {
                    return (self.shard_id, Exit::Finished);
                }
                break;
            }
            let room = self.in_flight.len() + self.queued.len() < self.shared.tuning.max_in_flight;
            let can_poll = !self.ended && self.queued.is_empty() && room;
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some((tag, outcome)) = self.ack_rx.recv() => self.settle(tag, outcome),
                _ = sleep_until(self.next_save), if self.unsaved.is_some() => { self.save().await; }
                reserved = out.reserve(), if !self.queued.is_empty() => match reserved {
                    Ok(slot) => {
                        if let Some(record) = self.hand_out() {
                            slot.send(record);
                        }
                    }
                    // The engine is gone: same as a shutdown.
                    Err(_) => {
                        stop.cancel();
                        break;
                    }
                },
                _ = sleep_until(self.next_poll), if can_poll => {
                    // A call cut short by shutdown read nothing that counts.
                    tokio::select! {
                        _ = self.poll() => {}
                        _ = stop.cancelled() => {}
                    }
                }
            }
        }
        self.drain().await;
        (self.shard_id, Exit::Stopped)
    }

    /// The next queued record as a [`Record`], registered as in flight.
    fn hand_out(&mut self) -> Option<Record> {
        let (index, record) = self.queued.pop_front()?;
        self.in_flight.insert(index, self.epoch);
        let data = record_data(&record, &self.shard_id, &self.shared.stream);
        Some(Record {
            id: record.sequence_number().to_string(),
            scope: Some(self.shard_id.clone()),
            key: Some(Bytes::copy_from_slice(record.partition_key().unwrap_or_default().as_bytes())),
            size: record.data().as_ref().len(),
            created_at: created_at(&record),
            data,
            deferred: None,
            ack: Ack::channel((index, self.epoch), self.ack_tx.clone()),
        })
    }

    /// Applies one outcome.
    fn settle(&mut self, (index, epoch): Tag, outcome: Outcome) {
        if self.in_flight.get(&index) != Some(&epoch) {
            // Handed out before a rewind that covered it: it is read again,
            // and only the outcome of the new delivery counts.
            return;
        }
        self.in_flight.remove(&index);
        match outcome {
            Outcome::Retry(reason) => self.rewind(index, &reason),
            // Kinesis has no dead-lettering of its own: a reject is done with.
            Outcome::Delivered | Outcome::Reject(_) => {
                if let Some(next) = self.tracker.complete(index) {
                    if let Some(sequence) = self.sequences.get(&(next - 1)).cloned() {
                        self.checkpoint(sequence);
                    }
                    self.sequences = self.sequences.split_off(&next);
                }
            }
        }
    }

    /// Reads the shard again from the record at `index`: later records must
    /// not overtake it, so everything read after it is forgotten too.
    fn rewind(&mut self, index: i64, reason: &str) {
        let Some(sequence) = self.sequences.get(&index).cloned() else { return };
        tracing::debug!(mapping = %self.shared.mapping, shard = %self.shard_id, %sequence, reason, "rewinding");
        self.tracker.rewind(index);
        self.sequences.retain(|&i, _| i < index);
        self.in_flight.retain(|&i, _| i < index);
        self.queued.clear();
        self.next_index = index;
        self.epoch += 1;
        self.position = Position::At(sequence);
        self.iterator = None;
        self.ended = false;
        self.next_poll = self.earliest_call();
    }

    /// Records `sequence` as the checkpoint to save; saves are spaced by the
    /// checkpoint interval, so a burst of acks costs one write.
    fn checkpoint(&mut self, sequence: String) {
        if self.unsaved.is_none() {
            let spaced = self.last_save.map_or_else(Instant::now, |at| at + self.shared.tuning.checkpoint_interval);
            self.next_save = spaced.max(Instant::now());
        }
        self.unsaved = Some(sequence);
    }

    /// Saves the pending checkpoint; false when the store failed (it is
    /// tried again later).
    async fn save(&mut self) -> bool {
        let Some(sequence) = self.unsaved.clone() else { return true };
        match self.shared.store.save(&self.shared.mapping, &self.key, &sequence).await {
            Ok(()) => {
                self.unsaved = None;
                self.last_save = Some(Instant::now());
                true
            }
            Err(e) => {
                tracing::warn!(mapping = %self.shared.mapping, shard = %self.shard_id, error = %e, "could not save a checkpoint; retrying");
                self.next_save = Instant::now() + SAVE_RETRY;
                false
            }
        }
    }

    /// Saves [`SHARD_END`] once the closed shard was read and every record
    /// finished; retries until it is saved or the source stops. True once
    /// saved.
    async fn finish(&mut self) -> bool {
        self.unsaved = Some(SHARD_END.to_string());
        loop {
            if self.save().await {
                tracing::info!(mapping = %self.shared.mapping, shard = %self.shard_id, "shard read to its end");
                return true;
            }
            tokio::select! {
                _ = sleep_until(self.next_save) => {}
                _ = self.shared.stop.cancelled() => return false,
            }
        }
    }

    /// At shutdown: forget what was read and not handed out, wait for the
    /// acks of what was (up to the drain timeout), save the checkpoint.
    async fn drain(&mut self) {
        if let Some(&(first, _)) = self.queued.front() {
            self.tracker.rewind(first);
            self.sequences.retain(|&i, _| i < first);
            self.queued.clear();
            // The read that reached the shard's end also brought these: the
            // shard is not read to its end until they are read again, so no
            // SHARD_END below (which would skip them at the next start).
            self.ended = false;
        }
        let deadline = Instant::now() + self.shared.tuning.drain_timeout;
        while !self.in_flight.is_empty() {
            tokio::select! {
                biased;
                Some((tag, outcome)) = self.ack_rx.recv() => self.settle(tag, outcome),
                _ = sleep_until(deadline) => {
                    tracing::warn!(
                        mapping = %self.shared.mapping, shard = %self.shard_id, in_flight = self.in_flight.len(),
                        "shutdown: gave up waiting for acks; they are read again after a restart"
                    );
                    break;
                }
            }
        }
        // Read to the end and all finished while draining: say so now, the
        // next run need not read the shard again.
        if self.ended && self.queued.is_empty() && self.in_flight.is_empty() {
            self.unsaved = Some(SHARD_END.to_string());
        }
        for _ in 0..3 {
            if self.save().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// No call on the shard sooner than 200 ms after the last one: Kinesis
    /// allows five a second.
    fn earliest_call(&self) -> Instant {
        self.last_call.map_or_else(Instant::now, |at| at + MIN_POLL_INTERVAL).max(Instant::now())
    }

    /// Waits `wait` (at least until the next call is allowed) before the
    /// next poll.
    fn poll_after(&mut self, wait: Duration) {
        self.next_poll = (Instant::now() + wait).max(self.earliest_call());
    }

    /// A failed call: report it (throttling is not a disconnection) and back
    /// off.
    fn failed(&mut self, reason: String, throttled: bool) {
        let wait = self.backoff.next_wait();
        if throttled {
            tracing::debug!(mapping = %self.shared.mapping, shard = %self.shard_id, %reason, ?wait, "throttled");
        } else {
            self.shared.disconnected(reason, wait);
        }
        self.poll_after(wait);
    }

    /// A shard iterator at `position`.
    async fn iterator(&mut self) -> Option<String> {
        let shared = self.shared.clone();
        let mut request =
            shared.client.get_shard_iterator().stream_name(&shared.stream.name).shard_id(self.shard_id.as_ref());
        request = match &self.position {
            Position::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Position::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            Position::AtTimestamp(at) => request
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(aws_sdk_kinesis::primitives::DateTime::from_millis(at.timestamp_millis())),
            Position::At(sequence) => {
                request.shard_iterator_type(ShardIteratorType::AtSequenceNumber).starting_sequence_number(sequence)
            }
            Position::After(sequence) => {
                request.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).starting_sequence_number(sequence)
            }
        };
        self.last_call = Some(Instant::now());
        let operation = "GetShardIterator";
        match timeout(REQUEST_TIMEOUT, request.send()).await {
            Ok(Ok(output)) => {
                shared.metrics.request("get_shard_iterator", "ok");
                let iterator = output.shard_iterator().map(str::to_string);
                if iterator.is_none() {
                    // Only a closed shard read to its end has no iterator.
                    self.ended = true;
                }
                iterator
            }
            Ok(Err(e)) => {
                let throttled = is_throttled(&e);
                shared.metrics.request("get_shard_iterator", if throttled { "throttled" } else { "error" });
                let reason = format!("{} (shard {})", describe(&e, operation, &shared.stream.name), self.shard_id);
                self.failed(reason, throttled);
                None
            }
            Err(_) => {
                shared.metrics.request("get_shard_iterator", "error");
                let reason = format!("Kinesis did not answer {operation} on stream {} in time", shared.stream.name);
                self.failed(reason, false);
                None
            }
        }
    }

    /// One GetRecords call (getting an iterator first when there is none).
    async fn poll(&mut self) {
        let iterator = match self.iterator.take() {
            Some(iterator) => iterator,
            None => match self.iterator().await {
                Some(iterator) => {
                    // GetShardIterator and GetRecords have separate limits.
                    iterator
                }
                None => return,
            },
        };
        let shared = self.shared.clone();
        let room = shared.tuning.max_in_flight.saturating_sub(self.in_flight.len() + self.queued.len());
        let limit = i32::try_from(room.clamp(1, MAX_GET_RECORDS)).unwrap_or(1);
        let request = shared.client.get_records().shard_iterator(iterator.clone()).limit(limit).send();
        self.last_call = Some(Instant::now());
        let output = match timeout(REQUEST_TIMEOUT, request).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                if is_expired_iterator(&e) {
                    // Unused for five minutes (backpressure): start again
                    // where reading stopped.
                    shared.metrics.request("get_records", "error");
                    self.poll_after(Duration::ZERO);
                    return;
                }
                let throttled = is_throttled(&e);
                shared.metrics.request("get_records", if throttled { "throttled" } else { "error" });
                if throttled {
                    // The iterator stays valid.
                    self.iterator = Some(iterator);
                }
                let reason = format!("{} (shard {})", describe(&e, "GetRecords", &shared.stream.name), self.shard_id);
                self.failed(reason, throttled);
                return;
            }
            Err(_) => {
                shared.metrics.request("get_records", "error");
                let reason = format!("Kinesis did not answer GetRecords on stream {} in time", shared.stream.name);
                self.failed(reason, false);
                return;
            }
        };
        shared.metrics.request("get_records", "ok");
        shared.running();
        self.backoff.reset();
        let behind = output.millis_behind_latest().unwrap_or(0) > 0;
        let next = output.next_shard_iterator().map(str::to_string);
        let records = output.records;
        let read = records.len();
        shared.metrics.records(read);
        for record in records {
            let index = self.next_index;
            self.next_index += 1;
            self.tracker.register(index);
            self.sequences.insert(index, record.sequence_number().to_string());
            self.position = Position::After(record.sequence_number().to_string());
            self.queued.push_back((index, record));
        }
        match next {
            Some(next) => self.iterator = Some(next),
            None => self.ended = true,
        }
        // Behind the tip: read on as soon as Kinesis allows; caught up: wait
        // the poll interval.
        let wait = if read > 0 && behind { Duration::ZERO } else { shared.tuning.poll_interval };
        self.poll_after(wait);
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_kinesis::primitives::Blob;

    use super::*;
    use crate::checkpoint::MemoryCheckpoints;

    fn reader(store: Arc<MemoryCheckpoints>) -> (ShardReader, mpsc::Receiver<Record>) {
        let config = aws_sdk_kinesis::Config::builder()
            .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
            .build();
        let (out, rx) = mpsc::channel(100);
        let shared = Shared {
            client: Client::from_conf(config),
            stream: StreamInfo::from_arn("s", "arn:aws:kinesis:us-east-1:1:stream/s", "us-east-1"),
            store,
            mapping: Arc::from("m"),
            state: watch::channel(SourceState::Starting).0,
            out,
            stop: CancellationToken::new(),
            tuning: Tuning {
                poll_interval: Duration::from_secs(1),
                max_in_flight: 100,
                drain_timeout: Duration::from_millis(50),
                backoff_initial: Duration::from_millis(10),
                backoff_max: Duration::from_millis(10),
                checkpoint_interval: Duration::ZERO,
            },
            metrics: Metrics::new("m"),
        };
        (ShardReader::new(Arc::new(shared), "shardId-000000000000", Position::TrimHorizon), rx)
    }

    /// Queues records as a GetRecords answer would; the sequence number of
    /// record `n` is `100 + n`.
    fn read(reader: &mut ShardReader, n: i64) {
        for _ in 0..n {
            let index = reader.next_index;
            let sequence = (100 + index).to_string();
            let record = aws_sdk_kinesis::types::Record::builder()
                .sequence_number(&sequence)
                .partition_key("k")
                .data(Blob::new(format!("record-{index}")))
                .build()
                .expect("all fields set");
            reader.next_index += 1;
            reader.tracker.register(index);
            reader.sequences.insert(index, sequence.clone());
            reader.position = Position::After(sequence);
            reader.queued.push_back((index, record));
        }
    }

    fn hand_out_all(reader: &mut ShardReader) -> Vec<Record> {
        std::iter::from_fn(|| reader.hand_out()).collect()
    }

    /// Feeds the outcomes that arrived on the ack channel to the reader.
    fn settle_arrived(reader: &mut ShardReader) {
        while let Ok((tag, outcome)) = reader.ack_rx.try_recv() {
            reader.settle(tag, outcome);
        }
    }

    #[tokio::test]
    async fn the_checkpoint_follows_contiguous_finished_records() {
        let store = Arc::new(MemoryCheckpoints::new());
        let (mut reader, _rx) = reader(store.clone());
        read(&mut reader, 4);
        let mut records = hand_out_all(&mut reader).into_iter();
        let (r0, r1, r2, r3) = (records.next(), records.next(), records.next(), records.next());
        let (r0, r1, r2, r3) = (r0.expect("0"), r1.expect("1"), r2.expect("2"), r3.expect("3"));
        assert_eq!((r0.id.as_str(), r0.scope.as_deref(), r0.size), ("100", Some("shardId-000000000000"), 8));
        r1.ack.complete(Outcome::Delivered);
        settle_arrived(&mut reader);
        assert_eq!(reader.unsaved, None, "record 0 is still in flight");
        r0.ack.complete(Outcome::Delivered);
        r3.ack.complete(Outcome::Reject("no dead-lettering".into()));
        settle_arrived(&mut reader);
        assert_eq!(reader.unsaved.as_deref(), Some("101"));
        assert!(reader.save().await);
        r2.ack.complete(Outcome::Delivered);
        settle_arrived(&mut reader);
        assert!(reader.save().await);
        assert_eq!(store.snapshot("m").get("s/shardId-000000000000").map(String::as_str), Some("103"));
        assert!(reader.in_flight.is_empty() && reader.sequences.is_empty());
    }

    #[tokio::test]
    async fn a_retry_rewinds_to_the_record_and_ignores_stale_acks() {
        let (mut reader, _rx) = reader(Arc::new(MemoryCheckpoints::new()));
        read(&mut reader, 6);
        let mut records = hand_out_all(&mut reader);
        read(&mut reader, 2);
        assert_eq!(reader.queued.len(), 2);
        let later = records.split_off(3);
        let mut earlier = records.into_iter();
        let r0 = earlier.next().expect("0");
        let r1 = earlier.next().expect("1");
        let r2 = earlier.next().expect("2");
        r2.ack.complete(Outcome::Retry("failed".into()));
        settle_arrived(&mut reader);
        assert_eq!(reader.position, Position::At("102".into()));
        assert_eq!(reader.iterator, None);
        assert!(reader.queued.is_empty(), "what was read after the record is read again");
        assert_eq!(reader.next_index, 2);
        assert_eq!(reader.in_flight.keys().copied().collect::<Vec<_>>(), [0, 1], "earlier records stay in flight");
        // Acks of the replaced deliveries, and a drop, change nothing.
        for record in later {
            record.ack.complete(Outcome::Delivered);
        }
        settle_arrived(&mut reader);
        assert_eq!(reader.tracker.in_flight(), 2);
        r0.ack.complete(Outcome::Delivered);
        drop(r1);
        settle_arrived(&mut reader);
        assert_eq!(reader.position, Position::At("101".into()), "the dropped ack rewinds further back");
        assert_eq!(reader.unsaved.as_deref(), Some("100"));
        read(&mut reader, 1);
        let again = hand_out_all(&mut reader);
        assert_eq!(again[0].id, "101", "the next delivery gets the rewound index");
    }

    #[tokio::test(start_paused = true)]
    async fn drain_forgets_unsent_records_and_saves_what_finished() {
        let store = Arc::new(MemoryCheckpoints::new());
        let (mut reader, _rx) = reader(store.clone());
        read(&mut reader, 2);
        let records = hand_out_all(&mut reader);
        read(&mut reader, 3);
        for record in records {
            record.ack.complete(Outcome::Delivered);
        }
        reader.drain().await;
        assert!(reader.queued.is_empty());
        assert_eq!(reader.tracker.in_flight(), 0, "queued records are not waited for");
        assert_eq!(store.snapshot("m").get("s/shardId-000000000000").map(String::as_str), Some("101"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_closed_shard_saves_shard_end() {
        let store = Arc::new(MemoryCheckpoints::new());
        let (mut reader, _rx) = reader(store.clone());
        read(&mut reader, 1);
        reader.ended = true;
        let record = hand_out_all(&mut reader).pop().expect("one record");
        record.ack.complete(Outcome::Delivered);
        let (shard, exit) = reader.run().await;
        assert_eq!((shard.as_ref(), exit), ("shardId-000000000000", Exit::Finished));
        assert_eq!(store.snapshot("m").get("s/shardId-000000000000").map(String::as_str), Some(SHARD_END));
    }
}
