//! One MQTT connection, whichever protocol version: rumqttc's client and event
//! loop for 3.1.1 or 5 behind one small interface.
//!
//! The event loop is polled on a task of its own, without pause, and never
//! inside a `select!`: rumqttc does not document `EventLoop::poll` as cancel
//! safe, and a poll dropped half way could lose a PUBACK it had taken from
//! the request channel. The task forwards the few events the connector acts
//! on through a bounded channel; a consumer that stops reading stops the
//! polling, which is the source's backpressure. It ends at the first error:
//! the connector builds a new connection after its own backoff rather than
//! let rumqttc reconnect with the old connection's state.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5 as v5p;
use rumqttc::{Outgoing, TlsConfiguration, Transport};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{Endpoint, Protocol};

/// One message as the broker delivered it.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
    pub(crate) qos: u8,
    pub(crate) retain: bool,
    pub(crate) dup: bool,
    /// The packet identifier; 0 for QoS 0, which has none.
    pub(crate) pkid: u16,
    /// MQTT 5 publish properties as JSON, when the message had any.
    pub(crate) properties: Option<Value>,
}

/// What the event loop reports that the connector acts on.
#[derive(Debug)]
pub(crate) enum Polled {
    ConnAck {
        session_present: bool,
    },
    Publish(Message),
    /// One entry per filter of the SUBSCRIBE: the granted QoS or why not.
    SubAck {
        granted: Vec<Result<u8, String>>,
    },
    /// The broker's answer to a publish of ours; `refused` says why it did
    /// not take it (MQTT 5 reason codes; 3.1.1 always takes it).
    PubAck {
        pkid: u16,
        refused: Option<Refusal>,
    },
    /// A publish of ours was written with this packet identifier.
    PublishSent {
        pkid: u16,
    },
    /// A PUBACK of ours was written: the request channel has room again.
    AckSent,
    DisconnectSent,
}

/// A publish the broker did not take.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub(crate) reason: String,
    /// Only a change of configuration or permissions helps.
    pub(crate) permanent: bool,
}

/// Why the connection ended.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) text: String,
    /// The broker refused (credentials, client id, protocol): retrying the
    /// same thing does not help until someone changes something.
    pub(crate) refused: bool,
}

/// Whether the broker keeps the session across connections.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Session {
    /// clean_session = 1 (3.1.1), clean_start = 1 and no expiry (5).
    Clean,
    /// clean_session = 0 (3.1.1); clean_start = 0 and this expiry in
    /// seconds (5).
    Persistent { expiry: u32 },
}

/// Everything needed to open a connection.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) endpoint: Endpoint,
    pub(crate) protocol: Protocol,
    pub(crate) client_id: String,
    pub(crate) keep_alive: Duration,
    pub(crate) session: Session,
    /// MQTT 5's Receive Maximum: unacknowledged QoS 1 messages the broker
    /// may send at once.
    pub(crate) receive_maximum: Option<u16>,
    pub(crate) max_packet_size: u32,
    /// PUBACKs only when the connector says so.
    pub(crate) manual_acks: bool,
    /// Our own unacknowledged publishes at most.
    pub(crate) outgoing_inflight: u16,
    /// Capacity of rumqttc's request channel.
    pub(crate) requests: usize,
    /// Capacity of the channel of forwarded events.
    pub(crate) events: usize,
}

/// The largest packet the connector sends: MQTT's own limit. A broker with a
/// lower one says so in its MQTT 5 CONNACK (rumqttc then refuses to send
/// more) or closes a 3.1.1 connection.
const MAX_OUTGOING: usize = 268_435_455;

/// The client half: requests to the event loop. Every request is tried
/// without waiting, because the task that makes them is the one reading the
/// events; `false` means the request channel is full (or the loop ended) and
/// the request must be made again later.
#[derive(Clone)]
pub(crate) enum Client {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

impl Client {
    /// PUBACK (QoS 1) or PUBREC (QoS 2) for the message with this packet
    /// identifier; nothing for QoS 0.
    pub(crate) fn ack(&self, pkid: u16, qos: u8) -> bool {
        match self {
            Client::V311(client) => {
                let mut publish = rumqttc::Publish::new("", v311_qos(qos), Vec::new());
                publish.pkid = pkid;
                client.try_ack(&publish).is_ok()
            }
            Client::V5(client) => {
                let mut publish = v5p::Publish::new("", v5_qos(qos), Bytes::new(), None);
                publish.pkid = pkid;
                client.try_ack(&publish).is_ok()
            }
        }
    }

    /// One SUBSCRIBE for all filters. MQTT 5 asks for retained messages only
    /// when the subscription is new, so a resubscription does not replay them.
    pub(crate) fn subscribe(&self, filters: &[String], qos: u8) -> bool {
        match self {
            Client::V311(client) => client
                .try_subscribe_many(filters.iter().map(|f| rumqttc::SubscribeFilter::new(f.clone(), v311_qos(qos))))
                .is_ok(),
            Client::V5(client) => client
                .try_subscribe_many(filters.iter().map(|f| {
                    let mut filter = v5p::Filter::new(f.clone(), v5_qos(qos));
                    filter.retain_forward_rule = v5p::RetainForwardRule::OnNewSubscribe;
                    filter
                }))
                .is_ok(),
        }
    }

    pub(crate) fn publish(&self, topic: &str, qos: u8, retain: bool, payload: &Bytes) -> bool {
        match self {
            Client::V311(client) => client.try_publish(topic, v311_qos(qos), retain, payload.to_vec()).is_ok(),
            Client::V5(client) => client.try_publish(topic, v5_qos(qos), retain, payload.clone()).is_ok(),
        }
    }

    /// A normal DISCONNECT: the session stays on the broker (a persistent
    /// one until it expires).
    pub(crate) fn disconnect(&self) -> bool {
        match self {
            Client::V311(client) => client.try_disconnect().is_ok(),
            Client::V5(client) => client.try_disconnect().is_ok(),
        }
    }
}

/// The event half: what the polling task forwards. Dropping it stops the
/// task and closes the socket.
pub(crate) struct Events {
    rx: mpsc::Receiver<Result<Polled, Failure>>,
    task: JoinHandle<()>,
}

impl Events {
    /// The next event; a failure or `None` means the connection is over.
    pub(crate) async fn recv(&mut self) -> Result<Polled, Failure> {
        match self.rx.recv().await {
            Some(event) => event,
            None => Err(Failure { text: "the MQTT event loop ended".into(), refused: false }),
        }
    }

    /// An event already waiting, if any.
    pub(crate) fn try_recv(&mut self) -> Option<Result<Polled, Failure>> {
        match self.rx.try_recv() {
            Ok(event) => Some(event),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => {
                Some(Err(Failure { text: "the MQTT event loop ended".into(), refused: false }))
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What an error message names.
#[derive(Debug, Clone)]
struct Context {
    endpoint: Endpoint,
    client_id: String,
    protocol: Protocol,
    max_packet_size: u32,
}

impl Context {
    fn user(&self) -> &str {
        self.endpoint.username.as_deref().unwrap_or("")
    }
}

/// Starts connecting: the first event is the CONNACK, or a failure.
pub(crate) fn open(options: &Options) -> Result<(Client, Events), Failure> {
    let endpoint = &options.endpoint;
    let transport = if endpoint.tls {
        Some(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls_config()
                .map_err(|text| Failure { text: format!("TLS setup for {endpoint}: {text}"), refused: true })?,
        )))
    } else {
        None
    };
    let context = Context {
        endpoint: endpoint.clone(),
        client_id: options.client_id.clone(),
        protocol: options.protocol,
        max_packet_size: options.max_packet_size,
    };
    let (tx, rx) = mpsc::channel(options.events.max(1));
    let (client, task) = match options.protocol {
        Protocol::V311 => {
            let mut mqtt = rumqttc::MqttOptions::new(&options.client_id, &endpoint.host, endpoint.port);
            mqtt.set_keep_alive(options.keep_alive)
                .set_clean_session(matches!(options.session, Session::Clean))
                .set_manual_acks(options.manual_acks)
                .set_inflight(options.outgoing_inflight.max(1))
                .set_max_packet_size(options.max_packet_size as usize, MAX_OUTGOING)
                .set_request_channel_capacity(options.requests);
            if let (Some(user), password) = (&endpoint.username, &endpoint.password) {
                mqtt.set_credentials(user, password.as_deref().unwrap_or(""));
            }
            if let Some(transport) = transport {
                mqtt.set_transport(transport);
            }
            let (client, eventloop) = rumqttc::AsyncClient::new(mqtt, options.requests);
            (Client::V311(client), tokio::spawn(drive_v311(eventloop, tx, context)))
        }
        Protocol::V5 => {
            let mut mqtt = rumqttc::v5::MqttOptions::new(&options.client_id, &endpoint.host, endpoint.port);
            mqtt.set_keep_alive(options.keep_alive)
                .set_manual_acks(options.manual_acks)
                .set_outgoing_inflight_upper_limit(options.outgoing_inflight.max(1))
                .set_max_packet_size(Some(options.max_packet_size))
                .set_request_channel_capacity(options.requests);
            match options.session {
                Session::Clean => mqtt.set_clean_start(true).set_session_expiry_interval(None),
                Session::Persistent { expiry } => mqtt.set_clean_start(false).set_session_expiry_interval(Some(expiry)),
            };
            if let Some(maximum) = options.receive_maximum {
                mqtt.set_receive_maximum(Some(maximum.max(1)));
            }
            if let (Some(user), password) = (&endpoint.username, &endpoint.password) {
                mqtt.set_credentials(user, password.as_deref().unwrap_or(""));
            }
            if let Some(transport) = transport {
                mqtt.set_transport(transport);
            }
            let (client, eventloop) = rumqttc::v5::AsyncClient::new(mqtt, options.requests);
            (Client::V5(client), tokio::spawn(drive_v5(eventloop, tx, context)))
        }
    };
    Ok((client, Events { rx, task }))
}

/// rustls with ring (the workspace's provider) and the Mozilla roots.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn v311_qos(qos: u8) -> rumqttc::QoS {
    match qos {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn v5_qos(qos: u8) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS;
    match qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Polls until the first error or until nobody listens.
async fn drive_v311(mut eventloop: rumqttc::EventLoop, tx: mpsc::Sender<Result<Polled, Failure>>, context: Context) {
    let mut connected = false;
    loop {
        let (item, last) = match eventloop.poll().await {
            Ok(event) => match from_v311(event) {
                Some(polled) => {
                    connected |= matches!(polled, Polled::ConnAck { .. });
                    (Ok(polled), false)
                }
                None => continue,
            },
            Err(error) => (Err(describe_v311(&error, &context, connected)), true),
        };
        if tx.send(item).await.is_err() || last {
            return;
        }
    }
}

async fn drive_v5(mut eventloop: rumqttc::v5::EventLoop, tx: mpsc::Sender<Result<Polled, Failure>>, context: Context) {
    let mut connected = false;
    loop {
        let (item, last) = match eventloop.poll().await {
            Ok(event) => match from_v5(event) {
                Some(polled) => {
                    connected |= matches!(polled, Polled::ConnAck { .. });
                    (Ok(polled), false)
                }
                None => continue,
            },
            Err(error) => (Err(describe_v5(&error, &context, connected)), true),
        };
        if tx.send(item).await.is_err() || last {
            return;
        }
    }
}

fn outgoing(event: Outgoing) -> Option<Polled> {
    match event {
        Outgoing::Publish(pkid) => Some(Polled::PublishSent { pkid }),
        Outgoing::PubAck(_) | Outgoing::PubRec(_) => Some(Polled::AckSent),
        Outgoing::Disconnect => Some(Polled::DisconnectSent),
        _ => None,
    }
}

fn from_v311(event: rumqttc::Event) -> Option<Polled> {
    use rumqttc::{Event, Packet, SubscribeReasonCode};
    match event {
        Event::Incoming(Packet::ConnAck(connack)) => Some(Polled::ConnAck { session_present: connack.session_present }),
        Event::Incoming(Packet::Publish(publish)) => Some(Polled::Publish(Message {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos as u8,
            retain: publish.retain,
            dup: publish.dup,
            pkid: publish.pkid,
            properties: None,
        })),
        Event::Incoming(Packet::SubAck(suback)) => Some(Polled::SubAck {
            granted: suback
                .return_codes
                .iter()
                .map(|code| match code {
                    SubscribeReasonCode::Success(qos) => Ok(*qos as u8),
                    SubscribeReasonCode::Failure => Err("refused (SUBACK 0x80)".to_string()),
                })
                .collect(),
        }),
        Event::Incoming(Packet::PubAck(puback)) => Some(Polled::PubAck { pkid: puback.pkid, refused: None }),
        Event::Outgoing(event) => outgoing(event),
        Event::Incoming(_) => None,
    }
}

fn from_v5(event: rumqttc::v5::Event) -> Option<Polled> {
    use rumqttc::v5::Event;
    use v5p::{Packet, PubAckReason, SubscribeReasonCode};
    match event {
        Event::Incoming(Packet::ConnAck(connack)) => Some(Polled::ConnAck { session_present: connack.session_present }),
        Event::Incoming(Packet::Publish(publish)) => Some(Polled::Publish(Message {
            // MQTT requires UTF-8 topics; a broker that breaks that still
            // gets its message through, with replacement characters.
            topic: String::from_utf8_lossy(&publish.topic).into_owned(),
            properties: publish.properties.as_ref().and_then(properties_json),
            payload: publish.payload,
            qos: publish.qos as u8,
            retain: publish.retain,
            dup: publish.dup,
            pkid: publish.pkid,
        })),
        Event::Incoming(Packet::SubAck(suback)) => Some(Polled::SubAck {
            granted: suback
                .return_codes
                .iter()
                .map(|code| match code {
                    SubscribeReasonCode::Success(qos) => Ok(*qos as u8),
                    refused => Err(format!("refused ({refused:?})")),
                })
                .collect(),
        }),
        Event::Incoming(Packet::PubAck(puback)) => {
            let refused = match puback.reason {
                // No subscriber matched: the broker took the message, which
                // is all QoS 1 promises.
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
                reason @ (PubAckReason::NotAuthorized
                | PubAckReason::TopicNameInvalid
                | PubAckReason::PayloadFormatInvalid) => {
                    Some(Refusal { reason: format!("{reason:?}"), permanent: true })
                }
                reason => Some(Refusal { reason: format!("{reason:?}"), permanent: false }),
            };
            Some(Polled::PubAck { pkid: puback.pkid, refused })
        }
        Event::Outgoing(event) => outgoing(event),
        Event::Incoming(_) => None,
    }
}

/// MQTT 5 publish properties as the record shows them; `None` when there are
/// none worth showing (topic aliases are the transport's business).
fn properties_json(properties: &v5p::PublishProperties) -> Option<Value> {
    let mut out = Map::new();
    if let Some(content_type) = &properties.content_type {
        out.insert("contentType".into(), json!(content_type));
    }
    if let Some(indicator) = properties.payload_format_indicator {
        out.insert("payloadFormatIndicator".into(), json!(indicator));
    }
    if let Some(expiry) = properties.message_expiry_interval {
        out.insert("messageExpiryInterval".into(), json!(expiry));
    }
    if let Some(topic) = &properties.response_topic {
        out.insert("responseTopic".into(), json!(topic));
    }
    if let Some(data) = &properties.correlation_data {
        out.insert("correlationData".into(), json!(STANDARD.encode(data)));
    }
    if !properties.user_properties.is_empty() {
        // Pairs, not an object: MQTT allows the same name more than once.
        let pairs: Vec<Value> = properties.user_properties.iter().map(|(k, v)| json!([k, v])).collect();
        out.insert("userProperties".into(), Value::Array(pairs));
    }
    if !properties.subscription_identifiers.is_empty() {
        out.insert("subscriptionIdentifiers".into(), json!(properties.subscription_identifiers));
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

fn too_large(size: usize, context: &Context) -> Failure {
    let hint = match context.protocol {
        Protocol::V311 => {
            "; MQTT 3.1.1 cannot tell the broker, which sends it again after every reconnect: raise max_packet_size or remove the message"
        }
        Protocol::V5 => "",
    };
    Failure {
        text: format!(
            "a packet of {size} bytes from {} is larger than max_packet_size ({} bytes){hint}",
            context.endpoint, context.max_packet_size
        ),
        refused: false,
    }
}

fn describe_v311(error: &rumqttc::ConnectionError, context: &Context, connected: bool) -> Failure {
    use rumqttc::{ConnectReturnCode, ConnectionError, StateError};
    let endpoint = &context.endpoint;
    let refused = |text: String| Failure { text, refused: true };
    let failed = |text: String| Failure { text, refused: false };
    match error {
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::BadUserNamePassword => refused(format!(
                "the MQTT broker at {endpoint} refused the login of user {:?} (bad user name or password)",
                context.user()
            )),
            ConnectReturnCode::NotAuthorized => refused(format!(
                "the MQTT broker at {endpoint} did not authorize client {:?} of user {:?}",
                context.client_id,
                context.user()
            )),
            ConnectReturnCode::BadClientId => {
                refused(format!("the MQTT broker at {endpoint} refused client id {:?}", context.client_id))
            }
            ConnectReturnCode::RefusedProtocolVersion => {
                refused(format!("the MQTT broker at {endpoint} does not speak MQTT 3.1.1"))
            }
            other => failed(format!("the MQTT broker at {endpoint} refused the connection ({other:?})")),
        },
        ConnectionError::Io(e) if !connected => failed(format!("cannot reach the MQTT broker at {endpoint}: {e}")),
        ConnectionError::NetworkTimeout => failed(format!("no answer from the MQTT broker at {endpoint}")),
        ConnectionError::Tls(e) => failed(format!("TLS with {endpoint}: {e}")),
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size),
        )) => too_large(*size, context),
        ConnectionError::MqttState(StateError::ConnectionAborted) => failed(format!(
            "the MQTT broker at {endpoint} closed the connection (did another client connect with client id {:?}?)",
            context.client_id
        )),
        ConnectionError::MqttState(StateError::AwaitPingResp) => {
            failed(format!("the MQTT broker at {endpoint} did not answer a ping within keep_alive"))
        }
        other if connected => failed(format!("lost the connection to the MQTT broker at {endpoint}: {other}")),
        other => failed(format!("connecting to the MQTT broker at {endpoint}: {other}")),
    }
}

fn describe_v5(error: &rumqttc::v5::ConnectionError, context: &Context, connected: bool) -> Failure {
    use rumqttc::v5::mqttbytes::Error as Mqtt;
    use rumqttc::v5::{ConnectionError, StateError};
    use v5p::{ConnectReturnCode, DisconnectReasonCode};
    let endpoint = &context.endpoint;
    let refused = |text: String| Failure { text, refused: true };
    let failed = |text: String| Failure { text, refused: false };
    let connect_refused = |code: &ConnectReturnCode| match code {
        ConnectReturnCode::BadUserNamePassword => refused(format!(
            "the MQTT broker at {endpoint} refused the login of user {:?} (bad user name or password)",
            context.user()
        )),
        ConnectReturnCode::NotAuthorized | ConnectReturnCode::Banned => refused(format!(
            "the MQTT broker at {endpoint} did not authorize client {:?} of user {:?} ({code:?})",
            context.client_id,
            context.user()
        )),
        ConnectReturnCode::ClientIdentifierNotValid | ConnectReturnCode::BadClientId => {
            refused(format!("the MQTT broker at {endpoint} refused client id {:?}", context.client_id))
        }
        ConnectReturnCode::UnsupportedProtocolVersion | ConnectReturnCode::RefusedProtocolVersion => {
            refused(format!("the MQTT broker at {endpoint} does not speak MQTT 5; use protocol: v311"))
        }
        other => failed(format!("the MQTT broker at {endpoint} refused the connection ({other:?})")),
    };
    match error {
        ConnectionError::ConnectionRefused(code) => connect_refused(code),
        ConnectionError::MqttState(StateError::ConnFail { reason }) => connect_refused(reason),
        ConnectionError::Io(e) if !connected => failed(format!("cannot reach the MQTT broker at {endpoint}: {e}")),
        ConnectionError::Timeout(_) => failed(format!("no answer from the MQTT broker at {endpoint}")),
        ConnectionError::Tls(e) => failed(format!("TLS with {endpoint}: {e}")),
        ConnectionError::MqttState(StateError::IncomingPacketTooLarge { pkt_size, .. }) => {
            too_large(*pkt_size, context)
        }
        ConnectionError::MqttState(StateError::Deserialization(Mqtt::PayloadSizeLimitExceeded {
            pkt_size, ..
        })) => too_large(*pkt_size, context),
        ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, reason_string }) => {
            let why = reason_string.as_deref().map(|s| format!(": {s}")).unwrap_or_default();
            match reason_code {
                DisconnectReasonCode::SessionTakenOver => failed(format!(
                    "another client connected to {endpoint} with client id {:?} and took the session over{why}",
                    context.client_id
                )),
                code => failed(format!("the MQTT broker at {endpoint} disconnected ({code:?}{why})")),
            }
        }
        // Brokers need not send a DISCONNECT first (Mosquitto 2.0 does not,
        // even on a session takeover).
        ConnectionError::MqttState(StateError::ConnectionAborted) => failed(format!(
            "the MQTT broker at {endpoint} closed the connection (did another client connect with client id {:?}?)",
            context.client_id
        )),
        ConnectionError::MqttState(StateError::AwaitPingResp) => {
            failed(format!("the MQTT broker at {endpoint} did not answer a ping within keep_alive"))
        }
        other if connected => failed(format!("lost the connection to the MQTT broker at {endpoint}: {other}")),
        other => failed(format!("connecting to the MQTT broker at {endpoint}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_properties_become_json() {
        let properties = v5p::PublishProperties {
            content_type: Some("application/json".into()),
            correlation_data: Some(Bytes::from_static(b"\x01\x02")),
            user_properties: vec![("k".into(), "a".into()), ("k".into(), "b".into())],
            topic_alias: Some(3),
            ..Default::default()
        };
        assert_eq!(
            properties_json(&properties),
            Some(
                json!({"contentType": "application/json", "correlationData": "AQI=", "userProperties": [["k", "a"], ["k", "b"]]})
            )
        );
        let alias_only = v5p::PublishProperties { topic_alias: Some(1), ..Default::default() };
        assert_eq!(properties_json(&alias_only), None);
    }

    #[test]
    fn the_tls_config_builds_with_ring() {
        assert!(tls_config().is_ok());
    }
}
