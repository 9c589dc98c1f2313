//! Sources with the bugs the kit exists to catch. Each is the reference source
//! of `switchyard_testkit::memory` with one mistake.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use switchyard_sdk::{
    Ack, ConnectorError, Envelope, OffsetTracker, Outcome, Record, RecordsEnvelope, Source, SourceContext,
};
use switchyard_testkit::Fixture;
use switchyard_testkit::memory::{MemoryLog, MemoryQueue};
use tokio::sync::mpsc;

const PREFETCH: usize = 32;
const DRAIN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
pub enum QueueBug {
    /// Deletes each message as it hands it out: a retried record is gone.
    AckOnReceipt,
    /// On shutdown, deletes whatever it has not heard back about instead of
    /// letting the broker requeue it.
    AckAllOnShutdown,
}

pub struct BrokenQueue {
    pub queue: MemoryQueue,
    pub bug: QueueBug,
}

impl BrokenQueue {
    pub fn new(bug: QueueBug) -> Self {
        Self { queue: MemoryQueue::new(), bug }
    }
}

#[async_trait]
impl Fixture for BrokenQueue {
    async fn source(&self) -> Box<dyn Source> {
        Box::new(BrokenQueueSource { queue: self.queue.clone(), bug: self.bug })
    }

    async fn produce(&self, payloads: &[String]) {
        for payload in payloads {
            self.queue.send(payload.clone());
        }
    }

    fn payload(&self, record: &Record) -> String {
        switchyard_testkit::memory::body(record)
    }
}

struct BrokenQueueSource {
    queue: MemoryQueue,
    bug: QueueBug,
}

#[async_trait]
impl Source for BrokenQueueSource {
    fn envelope(&self) -> Arc<dyn Envelope> {
        Arc::new(RecordsEnvelope)
    }

    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), ConnectorError> {
        let consumer = self.queue.connect();
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<(u64, Outcome)>();
        let mut unsettled = HashSet::new();
        'read: loop {
            while let Ok((tag, outcome)) = ack_rx.try_recv() {
                unsettled.remove(&tag);
                consumer.settle(tag, &outcome);
            }
            let visible = self.queue.visible();
            tokio::pin!(visible);
            visible.as_mut().enable();
            let batch = consumer.receive(PREFETCH.saturating_sub(unsettled.len()));
            if batch.is_empty() {
                tokio::select! {
                    biased;
                    _ = cx.shutdown.cancelled() => break,
                    Some((tag, outcome)) = ack_rx.recv() => {
                        unsettled.remove(&tag);
                        consumer.settle(tag, &outcome);
                    }
                    _ = visible => {}
                }
                continue;
            }
            let mut records = Vec::new();
            for delivery in batch {
                let ack = match self.bug {
                    QueueBug::AckOnReceipt => {
                        consumer.settle(delivery.tag, &Outcome::Delivered);
                        Ack::none()
                    }
                    QueueBug::AckAllOnShutdown => {
                        unsettled.insert(delivery.tag);
                        Ack::channel(delivery.tag, ack_tx.clone())
                    }
                };
                records.push(Record {
                    id: delivery.message_id.to_string(),
                    scope: None,
                    key: None,
                    size: delivery.body.len(),
                    data: json!({ "body": delivery.body }),
                    created_at: delivery.sent_at,
                    deferred: None,
                    ack,
                });
            }
            for record in records {
                tokio::select! {
                    biased;
                    _ = cx.shutdown.cancelled() => break 'read,
                    sent = cx.out.send(record) => if sent.is_err() { break 'read },
                }
            }
        }
        // The bug: "we are stopping anyway, ack everything".
        for tag in unsettled {
            consumer.settle(tag, &Outcome::Delivered);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogBug {
    /// Commits `offset + 1` whenever a record is delivered, even while earlier
    /// records of the partition are in flight or being retried.
    CommitEveryDelivered,
    /// Does not rewind on retry: hands the retried record out again later,
    /// after records that follow it in the partition.
    RedeliverLater,
}

pub struct BrokenLog {
    pub log: MemoryLog,
    pub bug: LogBug,
}

impl BrokenLog {
    pub fn new(bug: LogBug) -> Self {
        Self { log: MemoryLog::new("topic", 4), bug }
    }
}

#[async_trait]
impl Fixture for BrokenLog {
    async fn source(&self) -> Box<dyn Source> {
        Box::new(BrokenLogSource { log: self.log.clone(), bug: self.bug })
    }

    async fn produce(&self, payloads: &[String]) {
        for payload in payloads {
            self.log.append(payload.clone());
        }
    }

    fn payload(&self, record: &Record) -> String {
        switchyard_testkit::memory::value(record)
    }

    fn ordered(&self) -> bool {
        true
    }
}

struct BrokenLogSource {
    log: MemoryLog,
    bug: LogBug,
}

#[derive(Clone, Copy)]
struct Tag {
    partition: usize,
    offset: i64,
    delivery: u64,
}

#[derive(Default)]
struct Partition {
    position: i64,
    tracker: OffsetTracker,
    in_flight: BTreeMap<i64, u64>,
    retry: VecDeque<i64>,
    /// Alternates retried and fresh records.
    retry_turn: bool,
}

impl BrokenLogSource {
    fn settle(&self, partitions: &mut [Partition], tag: Tag, outcome: Outcome) {
        let part = &mut partitions[tag.partition];
        if part.in_flight.get(&tag.offset) != Some(&tag.delivery) {
            return;
        }
        part.in_flight.remove(&tag.offset);
        match (self.bug, outcome) {
            (LogBug::CommitEveryDelivered, Outcome::Retry(_)) => {
                part.in_flight.retain(|&offset, _| offset < tag.offset);
                part.position = part.position.min(tag.offset);
            }
            (LogBug::CommitEveryDelivered, _) => self.log.commit(tag.partition, tag.offset + 1),
            (LogBug::RedeliverLater, Outcome::Retry(_)) => part.retry.push_back(tag.offset),
            (LogBug::RedeliverLater, _) => {
                if let Some(checkpoint) = part.tracker.complete(tag.offset) {
                    self.log.commit(tag.partition, checkpoint);
                }
            }
        }
    }

    fn next_offset(&self, index: usize, part: &mut Partition) -> Option<i64> {
        if part.in_flight.len() >= 16 {
            return None;
        }
        part.retry_turn = !part.retry_turn;
        let fresh = part.position < self.log.end_offset(index);
        if !part.retry.is_empty() && (part.retry_turn || !fresh) {
            return part.retry.pop_front();
        }
        if !fresh {
            return None;
        }
        part.position += 1;
        part.tracker.register(part.position - 1);
        Some(part.position - 1)
    }
}

#[async_trait]
impl Source for BrokenLogSource {
    fn envelope(&self) -> Arc<dyn Envelope> {
        Arc::new(RecordsEnvelope)
    }

    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), ConnectorError> {
        let topic = self.log.topic().to_string();
        let scopes: Vec<Arc<str>> = (0..self.log.partitions()).map(|p| Arc::from(format!("{topic}-{p}"))).collect();
        let mut partitions: Vec<Partition> =
            (0..scopes.len()).map(|p| Partition { position: self.log.committed(p), ..Partition::default() }).collect();
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<(Tag, Outcome)>();
        let (mut cursor, mut delivery) = (0usize, 0u64);
        loop {
            while let Ok((tag, outcome)) = ack_rx.try_recv() {
                self.settle(&mut partitions, tag, outcome);
            }
            let appended = self.log.appended();
            tokio::pin!(appended);
            appended.as_mut().enable();

            let mut next = None;
            for turn in 0..partitions.len() {
                let index = (cursor + turn) % partitions.len();
                if let Some(offset) = self.next_offset(index, &mut partitions[index]) {
                    cursor = index + 1;
                    next = Some((index, offset));
                    break;
                }
            }
            let Some((partition, offset)) = next else {
                tokio::select! {
                    biased;
                    _ = cx.shutdown.cancelled() => break,
                    Some((tag, outcome)) = ack_rx.recv() => self.settle(&mut partitions, tag, outcome),
                    _ = appended => {}
                }
                continue;
            };
            let Some(entry) = self.log.read(partition, offset, 1).pop() else {
                continue;
            };
            delivery += 1;
            partitions[partition].in_flight.insert(offset, delivery);
            let tag = Tag { partition, offset, delivery };
            let record = Record {
                id: format!("{}@{offset}", scopes[partition]),
                scope: Some(scopes[partition].clone()),
                key: None,
                size: entry.payload.len(),
                data: json!({ "partition": partition, "offset": offset, "value": entry.payload }),
                created_at: entry.appended_at,
                deferred: None,
                ack: Ack::channel(tag, ack_tx.clone()),
            };
            tokio::select! {
                biased;
                _ = cx.shutdown.cancelled() => break,
                sent = cx.out.send(record) => if sent.is_err() { break },
            }
        }
        let drain = tokio::time::sleep(DRAIN);
        tokio::pin!(drain);
        while partitions.iter().any(|p| !p.in_flight.is_empty()) {
            tokio::select! {
                biased;
                Some((tag, outcome)) = ack_rx.recv() => self.settle(&mut partitions, tag, outcome),
                _ = &mut drain => break,
            }
        }
        Ok(())
    }
}

/// Ignores its shutdown token.
pub struct Stubborn;

#[async_trait]
impl Source for Stubborn {
    fn envelope(&self) -> Arc<dyn Envelope> {
        Arc::new(RecordsEnvelope)
    }

    async fn run(self: Box<Self>, _cx: SourceContext) -> Result<(), ConnectorError> {
        std::future::pending().await
    }
}

/// Fails as soon as it starts.
pub struct Failing;

#[async_trait]
impl Source for Failing {
    fn envelope(&self) -> Arc<dyn Envelope> {
        Arc::new(RecordsEnvelope)
    }

    async fn run(self: Box<Self>, _cx: SourceContext) -> Result<(), ConnectorError> {
        Err(ConnectorError::Refused("unknown queue".into()))
    }
}

/// A fixture whose broker keeps the payloads on a [`MemoryQueue`] but whose
/// source is one of the above.
pub struct Misbehaving {
    pub queue: MemoryQueue,
    pub source: fn() -> Box<dyn Source>,
}

#[async_trait]
impl Fixture for Misbehaving {
    async fn source(&self) -> Box<dyn Source> {
        (self.source)()
    }

    async fn produce(&self, payloads: &[String]) {
        for payload in payloads {
            self.queue.send(payload.clone());
        }
    }

    fn payload(&self, record: &Record) -> String {
        switchyard_testkit::memory::body(record)
    }
}
