//! The MQTT destination: publishes each record with QoS 1 and succeeds only
//! once the broker acknowledged every one of them.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use switchyard_sdk::{ConnectorError, Destination};
use tokio::sync::Mutex;

use crate::config::{Endpoint, MqttDestinationConfig, Protocol};
use crate::conn::{self, Client, Events, Failure, Polled, Session};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a send may wait for all its PUBACKs; the engine retries after.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Our unacknowledged publishes at most, as most brokers allow at least this.
const INFLIGHT: u16 = 100;
/// The destination publishes one topic with QoS 1.
const QOS: u8 = 1;

/// An open connection.
struct Connection {
    client: Client,
    events: Events,
}

impl Connection {
    /// False once the polling task reported the end of the connection (a
    /// broker restart, an idle disconnect) since the last send.
    fn usable(&mut self) -> bool {
        loop {
            match self.events.try_recv() {
                None => return true,
                Some(Ok(_)) => continue,
                Some(Err(_)) => return false,
            }
        }
    }
}

pub struct MqttDestination {
    endpoint: Endpoint,
    topic: String,
    retain: bool,
    client_id: String,
    protocol: Protocol,
    keep_alive: Duration,
    connection: Mutex<Option<Connection>>,
}

impl MqttDestination {
    /// Checks the configuration; connects on the first send, and again on
    /// the send after a connection loss.
    pub fn new(config: &MqttDestinationConfig) -> Result<Self, ConnectorError> {
        let endpoint = config.validate()?;
        Ok(Self {
            endpoint,
            topic: config.topic.clone(),
            retain: config.retain,
            client_id: config.client_id.clone().unwrap_or_else(unique_client_id),
            protocol: config.protocol,
            keep_alive: config.keep_alive,
            connection: Mutex::new(None),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    async fn connect(&self) -> Result<Connection, ConnectorError> {
        let options = conn::Options {
            endpoint: self.endpoint.clone(),
            protocol: self.protocol,
            client_id: self.client_id.clone(),
            keep_alive: self.keep_alive,
            // A record not acknowledged is sent again by the engine, on
            // whichever connection: no session state is worth keeping.
            session: Session::Clean,
            receive_maximum: None,
            // Only acknowledgements come in.
            max_packet_size: 64 * 1024,
            manual_acks: false,
            outgoing_inflight: INFLIGHT,
            requests: usize::from(INFLIGHT),
            events: 2 * usize::from(INFLIGHT),
        };
        let (client, mut events) = conn::open(&options).map_err(failed)?;
        loop {
            match events.recv().await.map_err(failed)? {
                Polled::ConnAck { .. } => return Ok(Connection { client, events }),
                _ => continue,
            }
        }
    }

    /// Publishes every record and waits for every PUBACK. Err(Connection)
    /// means the connection is unusable; other errors leave it usable.
    async fn publish(&self, connection: &mut Connection, records: &[Bytes]) -> Result<(), ConnectorError> {
        let mut next = 0;
        let mut written = 0;
        let mut outstanding = HashSet::new();
        let mut refusal = None;
        loop {
            // Requests go in as long as the channel takes them; the events
            // that free it are read below, on this same task.
            while next < records.len() && connection.client.publish(&self.topic, QOS, self.retain, &records[next]) {
                next += 1;
            }
            if written == records.len() && outstanding.is_empty() {
                return match refusal {
                    Some(error) => Err(error),
                    None => Ok(()),
                };
            }
            match connection.events.recv().await {
                Ok(Polled::PublishSent { pkid }) => {
                    written += 1;
                    outstanding.insert(pkid);
                }
                Ok(Polled::PubAck { pkid, refused }) => {
                    if outstanding.remove(&pkid)
                        && let Some(refused) = refused
                    {
                        let text = format!(
                            "the MQTT broker at {} did not take a message for topic {:?} ({})",
                            self.endpoint, self.topic, refused.reason
                        );
                        refusal.get_or_insert(if refused.permanent {
                            ConnectorError::Refused(text)
                        } else {
                            ConnectorError::Unavailable(text)
                        });
                    }
                }
                Ok(_) => {}
                Err(failure) => return Err(ConnectorError::Connection(failure.text)),
            }
        }
    }

    async fn try_send(&self, slot: &mut Option<Connection>, records: &[Bytes]) -> Result<(), ConnectorError> {
        let connection = match slot {
            Some(connection) => connection,
            None => {
                let opened = tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await.unwrap_or_else(|_| {
                    Err(ConnectorError::Connection(format!(
                        "no CONNACK from the MQTT broker at {} within {CONNECT_TIMEOUT:?}",
                        self.endpoint
                    )))
                })?;
                slot.insert(opened)
            }
        };
        match tokio::time::timeout(CONFIRM_TIMEOUT, self.publish(connection, records)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                if matches!(error, ConnectorError::Connection(_)) {
                    *slot = None;
                }
                Err(error)
            }
            Err(_) => {
                // A connection that does not acknowledge in time is suspect.
                *slot = None;
                Err(ConnectorError::Unavailable(format!(
                    "the MQTT broker at {} did not acknowledge within {CONFIRM_TIMEOUT:?}",
                    self.endpoint
                )))
            }
        }
    }
}

fn failed(failure: Failure) -> ConnectorError {
    if failure.refused { ConnectorError::Refused(failure.text) } else { ConnectorError::Connection(failure.text) }
}

/// Unique among the process's destinations, and unlikely to meet another
/// process's: brokers drop the older of two connections with one client id.
fn unique_client_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or_default();
    format!("switchyard-{:x}-{nanos:x}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

#[async_trait]
impl Destination for MqttDestination {
    fn kind(&self) -> &'static str {
        "mqtt"
    }

    /// At least once: a send that fails part way is retried whole by the
    /// engine, so some messages may be published twice.
    async fn send(&self, records: &[Bytes]) -> Result<(), ConnectorError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut slot = self.connection.lock().await;
        // A kept connection can have died while idle without the send
        // noticing before it wrote: then one fresh connection gets a try.
        let kept = slot.as_mut().is_some_and(Connection::usable);
        if !kept {
            *slot = None;
        }
        match self.try_send(&mut slot, records).await {
            Err(ConnectorError::Connection(reason)) if kept => {
                tracing::debug!(topic = %self.topic, %reason, "MQTT destination: the kept connection broke; reconnecting");
                self.try_send(&mut slot, records).await
            }
            result => result,
        }
    }
}
