//! The NATS destination: publishes each record to a subject that a
//! JetStream stream captures, and succeeds once the stream acknowledged
//! every message.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind};
use async_nats::{HeaderMap, HeaderName};
use async_trait::async_trait;
use bytes::Bytes;
use switchyard_sdk::{ConnectorError, Destination};
use tokio::sync::Mutex;

use crate::client;
use crate::config::{NatsDestinationConfig, Servers};

/// How long the first connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a send may wait for all its acknowledgements; the engine retries
/// after.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

pub struct NatsDestination {
    servers: Servers,
    subject: String,
    headers: HeaderMap,
    /// Made on the first send; async-nats keeps it connected from then on.
    context: Mutex<Option<jetstream::Context>>,
}

impl NatsDestination {
    /// Checks the configuration; connects on the first send.
    pub fn new(config: &NatsDestinationConfig) -> Result<Self, ConnectorError> {
        let servers = config.validate()?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name: HeaderName =
                name.parse().map_err(|_| ConnectorError::Config(format!("headers.{name}: not a valid header name")))?;
            headers.insert(name, value.as_str());
        }
        // The engine sends JSON; a configured Content-Type wins.
        if !config.headers.keys().any(|name| name.eq_ignore_ascii_case("content-type")) {
            headers.insert("Content-Type", "application/json");
        }
        Ok(Self { servers, subject: config.subject.clone(), headers, context: Mutex::new(None) })
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    async fn context(&self) -> Result<jetstream::Context, ConnectorError> {
        let mut context = self.context.lock().await;
        if let Some(open) = context.as_ref() {
            return Ok(open.clone());
        }
        let connected =
            tokio::time::timeout(CONNECT_TIMEOUT, client::connect(&self.servers, "switchyard destination", None))
                .await
                .unwrap_or_else(|_| Err(format!("no answer from NATS at {} within {CONNECT_TIMEOUT:?}", self.servers)))
                .map_err(ConnectorError::Connection)?;
        let open = jetstream::new(connected);
        *context = Some(open.clone());
        Ok(open)
    }

    fn publish_error(&self, kind: PublishErrorKind, error: impl std::fmt::Display) -> ConnectorError {
        let subject = &self.subject;
        match kind {
            PublishErrorKind::StreamNotFound => {
                ConnectorError::Refused(format!("no JetStream stream captures subject {subject:?} on {}", self.servers))
            }
            PublishErrorKind::MaxPayloadExceeded => {
                ConnectorError::Refused(format!("a message for subject {subject:?} is too large: {error}"))
            }
            PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
                ConnectorError::Unavailable(format!("publishing to subject {subject:?} on {}: {error}", self.servers))
            }
            _ => ConnectorError::Unavailable(format!("publishing to subject {subject:?} on {}: {error}", self.servers)),
        }
    }

    /// Publishes every record, then waits for every acknowledgement; fails
    /// with the first failure once all are in (a retry sends them all again:
    /// at least once).
    async fn publish(&self, context: &jetstream::Context, records: &[Bytes]) -> Result<(), ConnectorError> {
        let mut acks = Vec::with_capacity(records.len());
        let mut failure = None;
        for record in records {
            match context.publish_with_headers(self.subject.clone(), self.headers.clone(), record.clone()).await {
                Ok(ack) => acks.push(ack),
                Err(e) => {
                    failure = Some(self.publish_error(e.kind(), &e));
                    break;
                }
            }
        }
        for ack in acks {
            if let Err(e) = ack.await {
                failure.get_or_insert(self.publish_error(e.kind(), &e));
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Destination for NatsDestination {
    fn kind(&self) -> &'static str {
        "nats"
    }

    async fn send(&self, records: &[Bytes]) -> Result<(), ConnectorError> {
        let context = self.context().await?;
        match tokio::time::timeout(SEND_TIMEOUT, self.publish(&context, records)).await {
            Ok(result) => result,
            Err(_) => Err(ConnectorError::Unavailable(format!(
                "JetStream did not acknowledge the messages for subject {:?} on {} within {SEND_TIMEOUT:?}",
                self.subject, self.servers
            ))),
        }
    }
}
