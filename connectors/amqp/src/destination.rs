//! The RabbitMQ destination: publishes to an exchange on a channel in confirm
//! mode, and succeeds only once the broker confirmed every message.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, PublisherConfirm};
use switchyard_sdk::{ConnectorError, Destination};
use tokio::sync::Mutex;

use crate::config::{Endpoint, RabbitMqDestinationConfig};
use crate::error::{Step, classify, describe};

/// How long connecting and opening the confirm channel may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a send may wait for all its confirms; the engine retries after.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// AMQP's persistent delivery mode: the broker writes the message to disk
/// (in a durable queue) before it confirms.
const PERSISTENT: u8 = 2;

/// An open connection and its confirm-mode channel.
struct Publisher {
    /// Bumped on every reconnect, so a failed send only discards the
    /// connection it used, not a newer one another send opened meanwhile.
    generation: u64,
    connection: Connection,
    channel: Channel,
}

pub struct RabbitMqDestination {
    endpoint: Endpoint,
    exchange: ShortString,
    routing_key: ShortString,
    publisher: Mutex<Option<Publisher>>,
    generations: std::sync::atomic::AtomicU64,
}

impl RabbitMqDestination {
    /// Checks the configuration; connects on the first send, and again on
    /// the send after a connection loss.
    pub fn new(config: &RabbitMqDestinationConfig) -> Result<Self, ConnectorError> {
        let (endpoint, exchange, routing_key) = config.validate()?;
        Ok(Self {
            endpoint,
            exchange,
            routing_key,
            publisher: Mutex::new(None),
            generations: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn exchange(&self) -> &str {
        self.exchange.as_str()
    }

    pub fn routing_key(&self) -> &str {
        self.routing_key.as_str()
    }

    /// The channel to publish on: the open one, or a new connection's.
    async fn channel(&self) -> Result<(u64, Channel), ConnectorError> {
        let mut publisher = self.publisher.lock().await;
        if let Some(open) = publisher.as_ref()
            && open.connection.status().connected()
            && open.channel.status().connected()
        {
            return Ok((open.generation, open.channel.clone()));
        }
        // A broken one is dropped (closed) here, before connecting again.
        *publisher = None;
        let opened = tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await.unwrap_or_else(|_| {
            Err(ConnectorError::Connection(format!(
                "no answer from RabbitMQ at {} within {CONNECT_TIMEOUT:?}",
                self.endpoint
            )))
        })?;
        let generation = self.generations.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let channel = opened.1.clone();
        *publisher = Some(Publisher { generation, connection: opened.0, channel: opened.1 });
        Ok((generation, channel))
    }

    async fn connect(&self) -> Result<(Connection, Channel), ConnectorError> {
        let endpoint = &self.endpoint;
        let properties = ConnectionProperties::default().with_connection_name("switchyard destination".into());
        let connection = Connection::connect_uri(endpoint.uri.clone(), properties)
            .await
            .map_err(|e| classify(&e, describe(&e, Step::Connect, endpoint)))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| classify(&e, describe(&e, Step::Other("open a channel"), endpoint)))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| classify(&e, describe(&e, Step::Other("confirm.select"), endpoint)))?;
        Ok((connection, channel))
    }

    /// Forgets the connection of `generation` so the next send reconnects.
    async fn forget(&self, generation: u64) {
        let mut publisher = self.publisher.lock().await;
        if publisher.as_ref().is_some_and(|open| open.generation == generation) {
            *publisher = None;
        }
    }

    fn publish_error(&self, error: &lapin::Error) -> ConnectorError {
        classify(error, describe(error, Step::Exchange(self.exchange()), &self.endpoint))
    }

    /// Publishes every record, then waits for every confirm; fails with the
    /// first failure once all confirms are in (a retry then sends them all
    /// again: at-least-once).
    async fn publish(&self, channel: &Channel, records: &[Bytes]) -> Result<(), ConnectorError> {
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        let properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type("application/json".into())
            .with_timestamp(timestamp);
        // Mandatory: a message no queue is bound for comes back instead of
        // being confirmed and silently dropped.
        let options = BasicPublishOptions { mandatory: true, immediate: false };
        let mut confirms: Vec<PublisherConfirm> = Vec::with_capacity(records.len());
        let mut failure = None;
        for record in records {
            match channel
                .basic_publish(self.exchange.clone(), self.routing_key.clone(), options, record, properties.clone())
                .await
            {
                Ok(confirm) => confirms.push(confirm),
                Err(e) => {
                    failure = Some(self.publish_error(&e));
                    break;
                }
            }
        }
        for confirm in confirms {
            let result = match confirm.await {
                Ok(Confirmation::Ack(None)) => continue,
                Ok(Confirmation::Ack(Some(returned))) => ConnectorError::Refused(format!(
                    "exchange {:?} on {} routed the message to no queue with routing key {:?} ({} {})",
                    self.exchange(),
                    self.endpoint,
                    self.routing_key(),
                    returned.reply_code,
                    returned.reply_text
                )),
                Ok(Confirmation::Nack(_)) => ConnectorError::Unavailable(format!(
                    "RabbitMQ at {} could not take a message for exchange {:?} (nack)",
                    self.endpoint,
                    self.exchange()
                )),
                // Only without confirm mode, which this channel always has.
                Ok(Confirmation::NotRequested) => ConnectorError::Unavailable("publish was not confirmed".into()),
                Err(e) => self.publish_error(&e),
            };
            failure.get_or_insert(result);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Destination for RabbitMqDestination {
    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    async fn send(&self, records: &[Bytes]) -> Result<(), ConnectorError> {
        let (generation, channel) = self.channel().await?;
        let result = tokio::time::timeout(CONFIRM_TIMEOUT, self.publish(&channel, records)).await;
        match result {
            Ok(result) => result,
            Err(_) => {
                // A connection that does not confirm in time is suspect.
                self.forget(generation).await;
                Err(ConnectorError::Unavailable(format!(
                    "RabbitMQ at {} did not confirm within {CONFIRM_TIMEOUT:?}",
                    self.endpoint
                )))
            }
        }
    }
}
