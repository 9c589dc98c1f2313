//! The librdkafka callbacks of the source's consumer: rebalances, statistics,
//! errors and logs. They run on whichever thread polls the consumer (the
//! source task, or the blocking close at shutdown), so they only do quick
//! work, plus the synchronous commit on revoke that Kafka's protocol asks for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use switchyard_sdk::{SourceState, set_state};
use tokio::sync::{mpsc, watch};

use crate::config::StartingPosition;
use crate::envelope::scope;

/// How long a rebalance may spend looking up where a timestamp starts.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the callbacks tell the source task.
#[derive(Debug)]
pub(crate) enum Control {
    /// These partitions were taken away: drop their trackers, so late acks of
    /// their records are ignored (the next owner reads them again from the
    /// committed offset).
    Revoked(Vec<(String, i32)>),
}

pub(crate) struct KafkaContext {
    mapping: String,
    starting_position: StartingPosition,
    state: Arc<watch::Sender<SourceState>>,
    control: mpsc::UnboundedSender<Control>,
}

impl KafkaContext {
    pub(crate) fn new(
        mapping: &str,
        starting_position: StartingPosition,
        state: Arc<watch::Sender<SourceState>>,
        control: mpsc::UnboundedSender<Control>,
    ) -> Self {
        Self { mapping: mapping.to_string(), starting_position, state, control }
    }

    pub(crate) fn set_state(&self, state: SourceState) {
        set_state(&self.state, state);
    }

    /// Commits the stored offsets and waits for the answer, with metrics.
    pub(crate) fn commit_sync<C: Consumer<KafkaContext>>(&self, consumer: &C, why: &str) {
        let started = Instant::now();
        let result = consumer.commit_consumer_state(CommitMode::Sync);
        let outcome = match &result {
            Ok(()) => "ok",
            // Nothing stored since the last commit: no request was made.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => return,
            Err(_) => "error",
        };
        metrics::histogram!("switchyard_kafka_commit_duration_seconds", "mapping" => self.mapping.clone())
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("switchyard_kafka_commits_total", "mapping" => self.mapping.clone(), "outcome" => outcome)
            .increment(1);
        match result {
            Ok(()) => tracing::debug!(mapping = %self.mapping, why, "offsets committed"),
            Err(e) => tracing::warn!(mapping = %self.mapping, why, error = %e, "offset commit failed"),
        }
    }

    /// Moves partitions without a committed offset to the first record at or
    /// after `at`. A failed lookup leaves them to `auto.offset.reset`
    /// (earliest): duplicates rather than skipped records.
    fn seek_to_timestamp(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList, at: DateTime<Utc>) {
        let committed = match consumer.committed_offsets(tpl.clone(), LOOKUP_TIMEOUT) {
            Ok(committed) => committed,
            Err(e) => {
                tracing::warn!(mapping = %self.mapping, error = %e, "could not read committed offsets; starting from the earliest record");
                return;
            }
        };
        let mut lookup = TopicPartitionList::new();
        for element in committed.elements() {
            if element.offset() == Offset::Invalid
                && let Err(e) = lookup.add_partition_offset(
                    element.topic(),
                    element.partition(),
                    Offset::Offset(at.timestamp_millis()),
                )
            {
                tracing::warn!(mapping = %self.mapping, error = %e, "could not look up a starting timestamp");
            }
        }
        if lookup.count() == 0 {
            return;
        }
        let found = match consumer.offsets_for_times(lookup, LOOKUP_TIMEOUT) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(mapping = %self.mapping, error = %e, %at, "could not look up offsets for the starting timestamp; starting from the earliest record");
                return;
            }
        };
        for element in found.elements() {
            // `End` when no record is that recent yet: start at the end.
            let offset = element.offset();
            if matches!(offset, Offset::Offset(_) | Offset::End)
                && let Err(e) = tpl.set_partition_offset(element.topic(), element.partition(), offset)
            {
                tracing::warn!(mapping = %self.mapping, error = %e, "could not set a starting offset");
            }
        }
        tracing::info!(mapping = %self.mapping, %at, "starting position looked up by timestamp");
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

fn names(partitions: &[(String, i32)]) -> String {
    partitions.iter().map(|(topic, partition)| scope(topic, *partition)).collect::<Vec<_>>().join(",")
}

/// Errors that mean the source cannot reach its cluster at all.
fn disconnects(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::Resolve
            | RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SSL
            | RDKafkaErrorCode::SaslAuthenticationFailed
    )
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", mapping = %self.mapping, facility, "{message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", mapping = %self.mapping, facility, "{message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", mapping = %self.mapping, facility, "{message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", mapping = %self.mapping, facility, "{message}")
            }
        }
    }

    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, stats) in &stats.partitions {
                // -1 is librdkafka's internal "unassigned" partition; a lag of
                // -1 means unknown (not assigned to us, or not fetched yet).
                if *partition < 0 || stats.consumer_lag < 0 {
                    continue;
                }
                metrics::gauge!(
                    "switchyard_source_lag_records",
                    "mapping" => self.mapping.clone(),
                    "partition" => scope(topic, *partition),
                )
                .set(stats.consumer_lag as f64);
            }
        }
        // The way back from Disconnected on a quiet topic: nothing else is
        // reported when brokers come back.
        if statistics.brokers.values().any(|broker| broker.state == "UP") {
            self.set_state(SourceState::Running);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        if code.is_some_and(disconnects) {
            tracing::warn!(mapping = %self.mapping, error = %error, reason, "Kafka unreachable; librdkafka keeps retrying");
            self.set_state(SourceState::Disconnected(format!("{error}: {reason}")));
        } else {
            // A single broker connection closing is routine; librdkafka
            // reconnects and reports AllBrokersDown if none is left.
            tracing::warn!(mapping = %self.mapping, error = %error, reason, "Kafka client error");
        }
    }
}

impl ConsumerContext for KafkaContext {
    // Overridden rather than using pre/post hooks: a timestamp start position
    // has to change the offsets of the assignment before it is applied.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let assigned = partitions(tpl);
                tracing::info!(mapping = %self.mapping, partitions = %names(&assigned), "partitions assigned");
                metrics::counter!("switchyard_kafka_rebalances_total", "mapping" => self.mapping.clone()).increment(1);
                if let StartingPosition::Timestamp(at) = self.starting_position {
                    self.seek_to_timestamp(consumer, tpl, at);
                }
                let result = if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
                if let Err(e) = result {
                    tracing::error!(mapping = %self.mapping, error = %e, "could not apply the assignment");
                }
                self.set_state(SourceState::Running);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked = partitions(tpl);
                tracing::info!(mapping = %self.mapping, partitions = %names(&revoked), "partitions revoked");
                metrics::counter!("switchyard_kafka_rebalances_total", "mapping" => self.mapping.clone()).increment(1);
                // What was acknowledged so far becomes the next owner's start.
                // A lost assignment cannot commit (the group moved on).
                if !consumer.assignment_lost() {
                    self.commit_sync(consumer, "revoke");
                }
                // The source task is gone at the final close: nothing to tell.
                let _ = self.control.send(Control::Revoked(revoked));
                let result: KafkaResult<()> =
                    if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() };
                if let Err(e) = result {
                    tracing::error!(mapping = %self.mapping, error = %e, "could not give up the revoked partitions");
                }
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                tracing::error!(mapping = %self.mapping, error = %code, "rebalance failed; dropping the assignment");
                // librdkafka's advice for a rebalance error: unassign, the
                // group will assign again.
                let revoked = partitions(tpl);
                let _ = self.control.send(Control::Revoked(revoked));
                if let Err(e) = consumer.unassign() {
                    tracing::error!(mapping = %self.mapping, error = %e, "could not unassign after a rebalance error");
                }
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        // Called for the automatic commits (every auto.commit.interval.ms);
        // synchronous commits are counted where they are made.
        let outcome = match &result {
            Ok(()) => "ok",
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => return,
            Err(_) => "error",
        };
        metrics::counter!("switchyard_kafka_commits_total", "mapping" => self.mapping.clone(), "outcome" => outcome)
            .increment(1);
        if let Err(e) = result {
            tracing::warn!(mapping = %self.mapping, error = %e, "automatic offset commit failed");
        }
    }
}
