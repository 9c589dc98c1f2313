//! A partitioned log with a committed offset per partition, like Kafka or
//! Kinesis.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde_json::json;
use switchyard_sdk::{
    Ack, ConnectorError, Envelope, OffsetTracker, Outcome, Record, RecordsEnvelope, Source, SourceContext, SourceState,
};
use tokio::sync::{Notify, futures::Notified, mpsc};

use crate::Fixture;

/// A shared in-memory log for one topic and one consumer group. Clones share
/// the same partitions and committed offsets.
#[derive(Clone)]
pub struct MemoryLog {
    shared: Arc<Shared>,
}

struct Shared {
    topic: Arc<str>,
    state: Mutex<State>,
    appended: Notify,
}

struct State {
    /// partition -> entries; an entry's offset is its index.
    partitions: Vec<Vec<(String, SystemTime)>>,
    /// The group's committed offset per partition: the next one to read.
    committed: Vec<i64>,
    next_partition: usize,
}

/// One entry read from a [`MemoryLog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub partition: usize,
    pub offset: i64,
    pub payload: String,
    pub appended_at: SystemTime,
}

impl MemoryLog {
    /// A log with `partitions` partitions (at least 1).
    pub fn new(topic: &str, partitions: usize) -> Self {
        let partitions = partitions.max(1);
        Self {
            shared: Arc::new(Shared {
                topic: Arc::from(topic),
                state: Mutex::new(State {
                    partitions: vec![Vec::new(); partitions],
                    committed: vec![0; partitions],
                    next_partition: 0,
                }),
                appended: Notify::new(),
            }),
        }
    }

    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    pub fn partitions(&self) -> usize {
        self.lock().partitions.len()
    }

    /// Appends to the partitions in turn; returns where the payload went.
    pub fn append(&self, payload: impl Into<String>) -> (usize, i64) {
        let mut state = self.lock();
        let partition = state.next_partition;
        state.next_partition = (partition + 1) % state.partitions.len();
        let offset = push(&mut state, partition, payload.into());
        drop(state);
        self.shared.appended.notify_waiters();
        (partition, offset)
    }

    /// Appends to one partition; `None` when it does not exist.
    pub fn append_to(&self, partition: usize, payload: impl Into<String>) -> Option<i64> {
        let mut state = self.lock();
        if partition >= state.partitions.len() {
            return None;
        }
        let offset = push(&mut state, partition, payload.into());
        drop(state);
        self.shared.appended.notify_waiters();
        Some(offset)
    }

    /// Up to `max` entries of `partition` from `offset` on.
    pub fn read(&self, partition: usize, offset: i64, max: usize) -> Vec<LogEntry> {
        let state = self.lock();
        let Some(entries) = state.partitions.get(partition) else {
            return Vec::new();
        };
        let start = usize::try_from(offset).unwrap_or(0);
        entries
            .iter()
            .enumerate()
            .skip(start)
            .take(max)
            .map(|(i, (payload, appended_at))| LogEntry {
                partition,
                offset: i as i64,
                payload: payload.clone(),
                appended_at: *appended_at,
            })
            .collect()
    }

    /// The offset the next append to `partition` gets.
    pub fn end_offset(&self, partition: usize) -> i64 {
        self.lock().partitions.get(partition).map_or(0, |entries| entries.len() as i64)
    }

    /// The group's committed offset of `partition`: where a new consumer starts.
    pub fn committed(&self, partition: usize) -> i64 {
        self.lock().committed.get(partition).copied().unwrap_or(0)
    }

    /// Sets the committed offset of `partition`, as a consumer's commit does:
    /// it may move backwards.
    pub fn commit(&self, partition: usize, offset: i64) {
        if let Some(committed) = self.lock().committed.get_mut(partition) {
            *committed = offset;
        }
    }

    /// Resolves once something is appended after this call. Enable it
    /// (`Notified::enable`) before reading to miss no wake-up.
    pub fn appended(&self) -> Notified<'_> {
        self.shared.appended.notified()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change is made under one lock acquisition, so the state is
        // consistent even if a holder panicked.
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn push(state: &mut State, partition: usize, payload: String) -> i64 {
    let entries = &mut state.partitions[partition];
    entries.push((payload, SystemTime::now()));
    entries.len() as i64 - 1
}

/// Identifies one delivery of one offset, so the late ack of a delivery made
/// before a rewind is recognised and ignored.
#[derive(Debug, Clone, Copy)]
struct Tag {
    partition: usize,
    offset: i64,
    delivery: u64,
}

/// A consumer's view of one partition.
struct Partition {
    scope: Arc<str>,
    /// The next offset to read.
    position: i64,
    tracker: OffsetTracker,
    /// offset -> delivery, for the records handed out and not settled.
    in_flight: BTreeMap<i64, u64>,
}

impl Partition {
    fn settle(&mut self, log: &MemoryLog, tag: Tag, outcome: Outcome) {
        if self.in_flight.get(&tag.offset) != Some(&tag.delivery) {
            // Handed out before a rewind that covered it: it is read again,
            // and only the outcome of the new delivery counts.
            return;
        }
        self.in_flight.remove(&tag.offset);
        match outcome {
            Outcome::Retry(_) => {
                // Read it again, and everything after it: later records of the
                // partition must not overtake it.
                self.tracker.rewind(tag.offset);
                self.in_flight.retain(|&offset, _| offset < tag.offset);
                self.position = self.position.min(tag.offset);
            }
            // No dead-lettering in a log: a reject is done with, like a delivery.
            Outcome::Delivered | Outcome::Reject(_) => {
                if let Some(checkpoint) = self.tracker.complete(tag.offset) {
                    log.commit(tag.partition, checkpoint);
                }
            }
        }
    }
}

/// A reference ordered source on a [`MemoryLog`].
///
/// Each partition is a scope (`"<topic>-<partition>"`). It reads from the
/// committed offset, registers every record in an [`OffsetTracker`] and
/// commits only the tracker's checkpoint, so the commit never passes a record
/// still in flight. A `Retry` rewinds the partition to that record and forgets
/// the later ones in flight. On shutdown it waits (up to `drain_timeout`) for
/// the outcomes of what it handed out.
pub struct MemoryLogSource {
    log: MemoryLog,
    max_in_flight: usize,
    drain_timeout: Duration,
}

impl MemoryLogSource {
    pub fn new(log: MemoryLog) -> Self {
        Self { log, max_in_flight: 16, drain_timeout: Duration::from_secs(5) }
    }

    /// The most records per partition it hands out before hearing back (at
    /// least 1).
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    /// The next record to hand out, taking the partitions in turn.
    fn next_record(
        &self,
        partitions: &mut [Partition],
        cursor: &mut usize,
        next_delivery: &mut u64,
        ack_tx: &mpsc::UnboundedSender<(Tag, Outcome)>,
    ) -> Option<Record> {
        let count = partitions.len();
        for turn in 0..count {
            let index = (*cursor + turn) % count;
            let partition = &mut partitions[index];
            if partition.in_flight.len() >= self.max_in_flight {
                continue;
            }
            let Some(entry) = self.log.read(index, partition.position, 1).pop() else {
                continue;
            };
            *cursor = index + 1;
            partition.position = entry.offset + 1;
            partition.tracker.register(entry.offset);
            let tag = Tag { partition: index, offset: entry.offset, delivery: *next_delivery };
            *next_delivery += 1;
            partition.in_flight.insert(entry.offset, tag.delivery);
            return Some(record(self.log.topic(), &partition.scope, entry, Ack::channel(tag, ack_tx.clone())));
        }
        None
    }
}

/// A log entry as a function receives it (a Kafka-like record).
fn record(topic: &str, scope: &Arc<str>, entry: LogEntry, ack: Ack) -> Record {
    Record {
        id: format!("{scope}@{}", entry.offset),
        scope: Some(scope.clone()),
        key: None,
        size: entry.payload.len(),
        data: json!({
            "topic": topic,
            "partition": entry.partition,
            "offset": entry.offset,
            "value": entry.payload,
        }),
        created_at: entry.appended_at,
        deferred: None,
        ack,
    }
}

#[async_trait]
impl Source for MemoryLogSource {
    fn envelope(&self) -> Arc<dyn Envelope> {
        Arc::new(RecordsEnvelope)
    }

    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), ConnectorError> {
        let topic = self.log.topic().to_string();
        let mut partitions: Vec<Partition> = (0..self.log.partitions())
            .map(|index| Partition {
                scope: Arc::from(format!("{topic}-{index}")),
                position: self.log.committed(index),
                tracker: OffsetTracker::new(),
                in_flight: BTreeMap::new(),
            })
            .collect();
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<(Tag, Outcome)>();
        let (mut cursor, mut next_delivery) = (0usize, 0u64);
        cx.state.send_replace(SourceState::Running);

        loop {
            // Outcomes first: a retry moves the read position back.
            while let Ok((tag, outcome)) = ack_rx.try_recv() {
                partitions[tag.partition].settle(&self.log, tag, outcome);
            }
            let appended = self.log.appended();
            tokio::pin!(appended);
            appended.as_mut().enable();

            if let Some(record) = self.next_record(&mut partitions, &mut cursor, &mut next_delivery, &ack_tx) {
                // A record not sent is dropped and its ack reports Retry,
                // which the drain below settles like any other.
                tokio::select! {
                    biased;
                    _ = cx.shutdown.cancelled() => break,
                    sent = cx.out.send(record) => if sent.is_err() { break },
                }
                continue;
            }
            tokio::select! {
                biased;
                _ = cx.shutdown.cancelled() => break,
                Some((tag, outcome)) = ack_rx.recv() => partitions[tag.partition].settle(&self.log, tag, outcome),
                _ = appended => {}
            }
        }

        // Let the outcomes of in-flight records arrive so the last checkpoint
        // is committed; anything unsettled after that is read again from the
        // committed offset by the next consumer.
        let drain = tokio::time::sleep(self.drain_timeout);
        tokio::pin!(drain);
        while partitions.iter().any(|partition| !partition.in_flight.is_empty()) {
            tokio::select! {
                biased;
                Some((tag, outcome)) = ack_rx.recv() => partitions[tag.partition].settle(&self.log, tag, outcome),
                _ = &mut drain => break,
            }
        }
        cx.state.send_replace(SourceState::Stopped);
        Ok(())
    }
}

/// Runs the conformance kit against a [`MemoryLogSource`].
#[derive(Clone)]
pub struct MemoryLogFixture {
    log: MemoryLog,
}

impl MemoryLogFixture {
    /// A fresh log named `topic` with `partitions` partitions.
    pub fn new(partitions: usize) -> Self {
        Self { log: MemoryLog::new("topic", partitions) }
    }

    pub fn log(&self) -> &MemoryLog {
        &self.log
    }
}

impl Default for MemoryLogFixture {
    fn default() -> Self {
        Self::new(4)
    }
}

#[async_trait]
impl Fixture for MemoryLogFixture {
    async fn source(&self) -> Box<dyn Source> {
        Box::new(MemoryLogSource::new(self.log.clone()))
    }

    async fn produce(&self, payloads: &[String]) {
        for payload in payloads {
            self.log.append(payload.clone());
        }
    }

    fn payload(&self, record: &Record) -> String {
        value(record)
    }

    fn ordered(&self) -> bool {
        true
    }
}

/// The value of a record made by a [`MemoryLogSource`] (or anything else with
/// a Kafka-like text `value` field); the whole data as text otherwise.
pub fn value(record: &Record) -> String {
    match record.data.get("value").and_then(|value| value.as_str()) {
        Some(value) => value.to_string(),
        None => record.data.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    struct Harness {
        log: MemoryLog,
        rx: mpsc::Receiver<Record>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<Result<(), ConnectorError>>,
    }

    fn start(log: &MemoryLog) -> Harness {
        let (out, rx) = mpsc::channel(8);
        let (state, _) = tokio::sync::watch::channel(SourceState::Starting);
        let shutdown = CancellationToken::new();
        let cx = SourceContext { mapping: Arc::from("test"), out, shutdown: shutdown.clone(), state };
        let task = tokio::spawn(Box::new(MemoryLogSource::new(log.clone())).run(cx));
        Harness { log: log.clone(), rx, shutdown, task }
    }

    impl Harness {
        async fn next(&mut self) -> Record {
            self.rx.recv().await.expect("the source sends a record")
        }

        /// Lets the source handle what it was sent.
        async fn settle(&self) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn offset(record: &Record) -> i64 {
        record.data["offset"].as_i64().expect("an offset")
    }

    #[tokio::test(start_paused = true)]
    async fn commits_only_contiguous_offsets_and_ignores_acks_from_before_a_rewind() {
        let log = MemoryLog::new("t", 1);
        for i in 0..5 {
            log.append(format!("m{i}"));
        }
        let mut h = start(&log);
        let (r0, r1, r2) = (h.next().await, h.next().await, h.next().await);
        assert_eq!((offset(&r0), offset(&r1), offset(&r2)), (0, 1, 2));
        assert_eq!(r0.scope.as_deref(), Some("t-0"));

        r2.ack.complete(Outcome::Delivered);
        h.settle().await;
        assert_eq!(h.log.committed(0), 0, "offsets 0 and 1 are still in flight");

        r1.ack.complete(Outcome::Retry("again".into()));
        r0.ack.complete(Outcome::Delivered);
        h.settle().await;
        assert_eq!(h.log.committed(0), 1, "the retried offset holds the commit back");

        // The source rewound to 1: whatever it had read past it comes again.
        let mut again = h.next().await;
        while offset(&again) != 1 {
            again = h.next().await;
        }
        again.ack.complete(Outcome::Delivered);
        h.settle().await;
        assert!(h.log.committed(0) >= 2);

        h.shutdown.cancel();
        drop(h.rx);
        h.task.await.expect("no panic").expect("clean shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_consumer_starts_at_the_committed_offset() {
        let log = MemoryLog::new("t", 2);
        for i in 0..4 {
            log.append(format!("m{i}"));
        }
        log.commit(0, 1);
        let mut h = start(&log);
        let mut firsts = vec![h.next().await, h.next().await];
        firsts.sort_by_key(|r| r.scope.clone());
        assert_eq!((offset(&firsts[0]), offset(&firsts[1])), (1, 0));
        h.shutdown.cancel();
        drop(firsts);
        drop(h.rx);
        h.task.await.expect("no panic").expect("clean shutdown");
    }
}
