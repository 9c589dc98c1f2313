//! The Kafka destination: an idempotent producer whose `send` succeeds only
//! once every record was written to all in-sync replicas.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use switchyard_sdk::{ConnectorError, Destination};

use crate::config::KafkaDestinationConfig;

/// One record to produce: key, value and headers (`(name, value)`).
pub type KeyedRecord = (Option<Bytes>, Bytes, Vec<(String, Vec<u8>)>);

/// How long to wait before enqueueing again when librdkafka's local queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(10);

pub struct KafkaDestination {
    producer: FutureProducer,
    topic: String,
}

impl KafkaDestination {
    /// Creates the producer; it connects in the background, so an
    /// unreachable cluster shows as failed sends, not here.
    pub fn new(config: &KafkaDestinationConfig) -> Result<Self, ConnectorError> {
        let producer: FutureProducer =
            config.client_config()?.create().map_err(|e| ConnectorError::Config(format!("Kafka producer: {e}")))?;
        Ok(Self { producer, topic: config.topic.clone() })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Produces each record with its key and headers, in order, and waits for
    /// every delivery report. Fails with the first failed delivery's error
    /// once all reports are in: a retry then sends them all again
    /// (at-least-once; the idempotent producer only dedupes its own retries).
    pub async fn send_keyed(&self, items: &[KeyedRecord]) -> Result<(), ConnectorError> {
        let mut deliveries = Vec::with_capacity(items.len());
        let mut failure = None;
        for (key, value, headers) in items {
            let mut owned = OwnedHeaders::new_with_capacity(headers.len());
            for (name, value) in headers {
                owned = owned.insert(Header { key: name, value: Some(value.as_slice()) });
            }
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).payload(value.as_ref()).headers(owned);
            if let Some(key) = key {
                record = record.key(key.as_ref());
            }
            match self.enqueue(record).await {
                Ok(delivery) => deliveries.push(delivery),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        for delivery in deliveries {
            let result = match delivery.await {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _message))) => classify(&self.topic, e),
                Err(_canceled) => ConnectorError::Unavailable(format!(
                    "produce to {}: the producer dropped the delivery report",
                    self.topic
                )),
            };
            failure.get_or_insert(result);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Hands one record to librdkafka, waiting while its local queue is full.
    async fn enqueue<'a>(&self, mut record: FutureRecord<'a, [u8], [u8]>) -> Result<DeliveryFuture, ConnectorError> {
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err((e, _)) => return Err(classify(&self.topic, e)),
            }
        }
    }
}

/// Broker-side and network trouble is retriable; what the cluster refuses
/// (unknown topic, authorization, a record too large) is not.
fn classify(topic: &str, error: KafkaError) -> ConnectorError {
    let text = format!("produce to {topic}: {error}");
    match error.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::Resolve
            | RDKafkaErrorCode::NetworkException
            | RDKafkaErrorCode::BrokerNotAvailable,
        ) => ConnectorError::Connection(text),
        Some(
            RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::QueueFull
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::NotLeaderForPartition
            | RDKafkaErrorCode::NotEnoughReplicas
            | RDKafkaErrorCode::NotEnoughReplicasAfterAppend
            | RDKafkaErrorCode::ReplicaNotAvailable
            | RDKafkaErrorCode::KafkaStorageError
            | RDKafkaErrorCode::ThrottlingQuotaExceeded
            | RDKafkaErrorCode::PurgeQueue
            | RDKafkaErrorCode::PurgeInflight,
        ) => ConnectorError::Unavailable(text),
        _ => ConnectorError::Refused(text),
    }
}

#[async_trait]
impl Destination for KafkaDestination {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    async fn send(&self, records: &[Bytes]) -> Result<(), ConnectorError> {
        let items: Vec<KeyedRecord> = records.iter().map(|value| (None, value.clone(), Vec::new())).collect();
        self.send_keyed(&items).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified() {
        let timed_out = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(classify("t", timed_out).is_retriable());
        let down = KafkaError::MessageProduction(RDKafkaErrorCode::AllBrokersDown);
        assert!(matches!(classify("t", down), ConnectorError::Connection(_)));
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(matches!(classify("t", too_large), ConnectorError::Refused(_)));
    }
}
