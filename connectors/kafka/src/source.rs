//! The consumer-group source: reads the subscribed topics, hands each message
//! out as a [`Record`] and stores a partition's offset only once every record
//! before it was acknowledged (the [`OffsetTracker`]'s checkpoint).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message, Timestamp};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use switchyard_sdk::{
    Ack, ConnectorError, Envelope, OffsetTracker, Outcome, Record, Source, SourceContext, SourceState,
};
use tokio::sync::mpsc;

use crate::config::{KafkaSourceConfig, StartingPosition};
use crate::context::{Control, KafkaContext};
use crate::envelope::{KafkaEnvelope, record_data, record_id, scope};
use switchyard_sdk::set_state;

type KafkaConsumer = StreamConsumer<KafkaContext>;

/// How long a seek may take before it is retried later.
const SEEK_TIMEOUT: Duration = Duration::from_secs(1);
/// How often rewinds that librdkafka refused are tried again.
const SEEK_RETRY: Duration = Duration::from_secs(1);
/// How long the final commit and leaving the group may take at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);

/// Identifies one delivery of one offset: `(topic, partition, offset, epoch)`.
/// The epoch changes when the partition is rewound or reassigned, so the late
/// ack of a delivery made before that is recognised and ignored.
#[derive(Debug, Clone)]
struct Tag {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    epoch: u64,
}

/// The source's view of one assigned partition.
struct Partition {
    scope: Arc<str>,
    tracker: OffsetTracker,
    /// offset -> epoch of its delivery, for the records handed out and not settled.
    in_flight: BTreeMap<i64, u64>,
    /// The epoch of the next delivery.
    epoch: u64,
    /// A rewind librdkafka did not accept yet: until it does, this
    /// partition's messages come from the old position and are not handed out.
    pending_seek: Option<i64>,
}

/// A Kafka consumer-group source. Build it with [`KafkaSource::new`]; the
/// consumer is created and subscribed when it runs.
pub struct KafkaSource {
    client_config: ClientConfig,
    topics: Vec<String>,
    brokers: String,
    starting_position: StartingPosition,
    drain_timeout: Duration,
}

impl KafkaSource {
    /// Checks the configuration (librdkafka validates the properties); does
    /// not connect.
    pub fn new(config: &KafkaSourceConfig) -> Result<Self, ConnectorError> {
        Ok(Self {
            client_config: config.client_config()?,
            topics: config.topics.clone(),
            brokers: config.brokers.clone(),
            starting_position: config.starting_position,
            drain_timeout: Duration::from_secs(10),
        })
    }

    /// How long shutdown waits for the acks of records handed out (10 s).
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }
}

/// Everything the running source task owns besides the consumer.
struct Task {
    mapping: Arc<str>,
    partitions: HashMap<Arc<str>, HashMap<i32, Partition>>,
    next_epoch: u64,
    ack_tx: mpsc::UnboundedSender<(Tag, Outcome)>,
    /// Offsets were stored since the last synchronous commit.
    stored: bool,
    /// When the last asynchronous commit was asked for.
    last_commit: std::time::Instant,
}

/// How often stored offsets are committed right away: often enough that a
/// crash repeats little more than the batches in flight, rarely enough not to
/// load the broker with a commit per batch.
const COMMIT_EVERY: Duration = Duration::from_millis(100);

impl Task {
    fn epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }

    fn partition(&mut self, topic: &str, partition: i32) -> Option<&mut Partition> {
        self.partitions.get_mut(topic)?.get_mut(&partition)
    }

    fn in_flight(&self) -> usize {
        self.partitions.values().flat_map(HashMap::values).map(|p| p.in_flight.len()).sum()
    }

    fn control(&mut self, control: Control) {
        match control {
            Control::Revoked(revoked) => {
                for (topic, partition) in revoked {
                    if let Some(partitions) = self.partitions.get_mut(topic.as_str())
                        && let Some(state) = partitions.remove(&partition)
                        && !state.in_flight.is_empty()
                    {
                        tracing::debug!(
                            mapping = %self.mapping, partition = %state.scope, in_flight = state.in_flight.len(),
                            "partition revoked with records in flight; their acks will be ignored"
                        );
                    }
                }
            }
        }
    }

    /// Turns a message into a record, registering it with its partition's
    /// tracker; `None` when it must not be handed out (stale after a rewind).
    fn record(&mut self, consumer: &KafkaConsumer, message: &BorrowedMessage<'_>) -> Option<Record> {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        let topic_arc = match self.partitions.get_key_value(topic) {
            Some((known, _)) => known.clone(),
            None => {
                let known: Arc<str> = Arc::from(topic);
                self.partitions.insert(known.clone(), HashMap::new());
                known
            }
        };
        // A partition seen for the first time, or again after a revoke, gets
        // a fresh epoch: acks from an earlier assignment never match it.
        let fresh = self.partition(topic, partition).is_none().then(|| self.epoch());
        let state = self.partitions.get_mut(topic)?.entry(partition).or_insert_with(|| Partition {
            scope: Arc::from(scope(topic, partition)),
            tracker: OffsetTracker::new(),
            in_flight: BTreeMap::new(),
            epoch: fresh.unwrap_or_default(),
            pending_seek: None,
        });
        if let Some(target) = state.pending_seek {
            // Still reading from before the rewind: try again, drop this one.
            if seek(consumer, &self.mapping, topic, partition, target) {
                state.pending_seek = None;
            }
            return None;
        }
        state.tracker.register(offset);
        state.in_flight.insert(offset, state.epoch);
        let tag = Tag { topic: topic_arc, partition, offset, epoch: state.epoch };
        let key = message.key().map(Bytes::copy_from_slice);
        let size = message.payload_len() + key.as_ref().map_or(0, Bytes::len);
        Some(Record {
            id: record_id(topic, partition, offset),
            scope: Some(state.scope.clone()),
            key,
            data: record_data(message),
            size,
            created_at: created_at(message.timestamp()),
            deferred: None,
            ack: Ack::channel(tag, self.ack_tx.clone()),
        })
    }

    /// Applies one outcome. `rewind` is false while draining at shutdown: the
    /// next owner reads from the committed offset anyway.
    fn settle(&mut self, consumer: &KafkaConsumer, tag: Tag, outcome: Outcome, rewind: bool) {
        let new_epoch = if matches!(outcome, Outcome::Retry(_)) { self.epoch() } else { 0 };
        let mapping = self.mapping.clone();
        let Some(state) = self.partition(&tag.topic, tag.partition) else {
            // Revoked since: the new owner reads it again.
            return;
        };
        if state.in_flight.get(&tag.offset) != Some(&tag.epoch) {
            // Handed out before a rewind that covered it: it is read again,
            // and only the outcome of the new delivery counts.
            return;
        }
        state.in_flight.remove(&tag.offset);
        match outcome {
            Outcome::Retry(reason) => {
                // Read it again, and everything after it: later records of the
                // partition must not overtake it.
                state.tracker.rewind(tag.offset);
                state.in_flight.retain(|&offset, _| offset < tag.offset);
                state.epoch = new_epoch;
                tracing::debug!(mapping = %mapping, partition = %state.scope, offset = tag.offset, %reason, "rewinding");
                if rewind {
                    let target = state.pending_seek.map_or(tag.offset, |pending| pending.min(tag.offset));
                    let sought = seek(consumer, &mapping, &tag.topic, tag.partition, target);
                    state.pending_seek = (!sought).then_some(target);
                }
            }
            // Kafka has no dead-lettering of its own: a reject is done with.
            Outcome::Delivered | Outcome::Reject(_) => {
                if let Some(checkpoint) = state.tracker.complete(tag.offset) {
                    self.store(consumer, &tag.topic, tag.partition, checkpoint);
                }
            }
        }
    }

    /// Stores the next offset to read, and commits what is stored
    /// asynchronously at most every [`COMMIT_EVERY`], so a crash repeats little
    /// more than the batches in flight; librdkafka's automatic commit every
    /// second covers the rest.
    fn store(&mut self, consumer: &KafkaConsumer, topic: &str, partition: i32, checkpoint: i64) {
        let mut tpl = TopicPartitionList::new();
        let mut result = tpl
            .add_partition_offset(topic, partition, Offset::Offset(checkpoint))
            .and_then(|()| consumer.store_offsets(&tpl));
        if result.is_ok() && self.last_commit.elapsed() >= COMMIT_EVERY {
            self.last_commit = std::time::Instant::now();
            result = consumer.commit_consumer_state(CommitMode::Async);
        }
        match result {
            Ok(()) => self.stored = true,
            // Most likely revoked an instant ago; the next owner re-reads.
            Err(e) => {
                tracing::debug!(mapping = %self.mapping, topic, partition, checkpoint, error = %e, "could not store an offset")
            }
        }
    }

    /// Retries the rewinds librdkafka refused.
    fn retry_seeks(&mut self, consumer: &KafkaConsumer) {
        for (topic, partitions) in &mut self.partitions {
            for (partition, state) in partitions.iter_mut() {
                if let Some(target) = state.pending_seek
                    && seek(consumer, &self.mapping, topic, *partition, target)
                {
                    state.pending_seek = None;
                }
            }
        }
    }

    fn pending_seeks(&self) -> bool {
        self.partitions.values().flat_map(HashMap::values).any(|p| p.pending_seek.is_some())
    }
}

/// Moves the partition's fetch position; librdkafka discards what it had
/// fetched from before. False when it refused (retried later).
fn seek(consumer: &KafkaConsumer, mapping: &str, topic: &str, partition: i32, offset: i64) -> bool {
    match consumer.seek(topic, partition, Offset::Offset(offset), SEEK_TIMEOUT) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(mapping, topic, partition, offset, error = %e, "seek failed; retrying");
            false
        }
    }
}

fn created_at(timestamp: Timestamp) -> SystemTime {
    match timestamp.to_millis().and_then(|ms| u64::try_from(ms).ok()) {
        Some(ms) => UNIX_EPOCH + Duration::from_millis(ms),
        None => SystemTime::now(),
    }
}

#[async_trait]
impl Source for KafkaSource {
    fn envelope(&self) -> Arc<dyn Envelope> {
        Arc::new(KafkaEnvelope::new(self.brokers.clone()))
    }

    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), ConnectorError> {
        let SourceContext { mapping, out, shutdown, state } = cx;
        let state = Arc::new(state);
        let (control_tx, mut control_rx) = mpsc::unbounded_channel();
        let context = KafkaContext::new(&mapping, self.starting_position, state.clone(), control_tx);
        let consumer = KafkaConsumer::from_config_and_context(&self.client_config, context)
            .map_err(|e| ConnectorError::Config(format!("Kafka consumer: {e}")))?;
        let consumer = Arc::new(consumer);
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        if let Err(e) = consumer.subscribe(&topics) {
            return Err(ConnectorError::Config(format!("subscribe to {}: {e}", self.topics.join(","))));
        }
        tracing::info!(mapping = %mapping, topics = %self.topics.join(","), "Kafka source subscribed");

        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<(Tag, Outcome)>();
        let mut task = Task {
            mapping: mapping.clone(),
            partitions: HashMap::new(),
            next_epoch: 0,
            ack_tx,
            stored: false,
            last_commit: std::time::Instant::now(),
        };
        let mut seek_retry = tokio::time::interval(SEEK_RETRY);
        seek_retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A slot on the engine's channel, reserved before reading a message:
        // a full channel is backpressure, nothing is read meanwhile.
        let mut permit = None;
        let mut fatal = None;

        loop {
            let retrying = task.pending_seeks();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                // Revocations first: no ack or message of a revoked partition
                // must be handled as if it were still ours.
                Some(control) = control_rx.recv() => task.control(control),
                Some((tag, outcome)) = ack_rx.recv() => task.settle(&consumer, tag, outcome, true),
                _ = seek_retry.tick(), if retrying => task.retry_seeks(&consumer),
                reserved = out.reserve(), if permit.is_none() => match reserved {
                    Ok(slot) => permit = Some(slot),
                    // The engine is gone: same as a shutdown.
                    Err(_) => break,
                },
                received = consumer.recv(), if permit.is_some() => match received {
                    Ok(message) => {
                        set_state(&state, SourceState::Running);
                        // A stale message (before a rewind) keeps the slot.
                        if let Some(record) = task.record(&consumer, &message)
                            && let Some(slot) = permit.take()
                        {
                            slot.send(record);
                        }
                    }
                    Err(KafkaError::MessageConsumptionFatal(code)) => {
                        fatal = Some(ConnectorError::Refused(format!("Kafka consumer failed: {code}")));
                        break;
                    }
                    // Reported (and the state set) by the context's error
                    // callback; librdkafka retries by itself.
                    Err(e) => tracing::debug!(mapping = %mapping, error = %e, "consumer error"),
                },
            }
        }
        drop(permit);

        // Let the outcomes of in-flight records arrive so the last checkpoint
        // is committed; anything unsettled after that is read again from the
        // committed offset by the next consumer.
        let drain = tokio::time::sleep(self.drain_timeout);
        tokio::pin!(drain);
        while task.in_flight() > 0 {
            tokio::select! {
                biased;
                Some(control) = control_rx.recv() => task.control(control),
                Some((tag, outcome)) = ack_rx.recv() => task.settle(&consumer, tag, outcome, false),
                _ = &mut drain => {
                    tracing::warn!(mapping = %mapping, in_flight = task.in_flight(), "shutdown: gave up waiting for acks; they are read again after a restart");
                    break;
                }
            }
        }

        // Commit and leave the group off the async threads: both block on
        // the broker. Leaving cleanly lets the next member start at once.
        let commit = task.stored;
        let close = tokio::task::spawn_blocking(move || {
            if commit {
                consumer.context().commit_sync(&*consumer, "shutdown");
            }
            drop(consumer);
        });
        match tokio::time::timeout(CLOSE_TIMEOUT, close).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(mapping = %mapping, error = %e, "closing the Kafka consumer panicked"),
            Err(_) => tracing::warn!(mapping = %mapping, "closing the Kafka consumer is taking long; not waiting"),
        }
        set_state(&state, SourceState::Stopped);
        tracing::info!(mapping = %mapping, "Kafka source stopped");
        match fatal {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
