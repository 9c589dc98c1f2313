//! Helpers for tests against the test broker (Mosquitto on 127.0.0.1:1883;
//! `MQTT_URL` overrides it). A test that cannot reach it fails; it never
//! skips.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rumqttc::v5::mqttbytes::v5 as v5p;
use rumqttc::{Event, Outgoing, Packet, QoS};
use switchyard_mqtt::{MqttSource, MqttSourceConfig, Protocol};
use switchyard_sdk::Record;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use switchyard_testkit::running::Running;

pub const DEFAULT_URL: &str = "mqtt://127.0.0.1:1883";
/// How long a helper waits for the broker before failing the test.
const BROKER_WAIT: Duration = Duration::from_secs(10);

/// `MQTT_URL`, or the local broker; panics when nothing listens there.
pub fn mqtt_url() -> String {
    let url = std::env::var("MQTT_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_URL.to_string());
    let (host, port) = host_port(&url);
    let reachable = (host.trim_start_matches('[').trim_end_matches(']'), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
    assert!(
        reachable,
        "no MQTT broker at {host}:{port} (MQTT_URL): start Mosquitto 2.x there, e.g. `mosquitto -d -c /etc/mosquitto/mosquitto.conf` with a listener on 127.0.0.1:1883 and allow_anonymous true"
    );
    url
}

/// `host` and `port` of an `mqtt://[user:pass@]host[:port]` URL.
pub fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    if let Some(bracketed) = host_port.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').unwrap_or((bracketed, ""));
        return (format!("[{host}]"), after.strip_prefix(':').and_then(|p| p.parse().ok()).unwrap_or(1883));
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.parse().unwrap_or(1883)),
        None => (host_port.to_string(), 1883),
    }
}

/// The same URL pointing at `127.0.0.1:port` (a proxy), credentials kept.
pub fn via_port(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("mqtt", url));
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let userinfo = authority.rsplit_once('@').map(|(user, _)| format!("{user}@")).unwrap_or_default();
    format!("{scheme}://{userinfo}127.0.0.1:{port}")
}

/// A name no other test or earlier run uses; also valid as a topic level.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("sy-{prefix}-{}-{nanos:x}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

pub fn source_config(url: &str, topics: &[&str], client_id: &str, protocol: Protocol) -> MqttSourceConfig {
    let mut value = serde_json::json!({
        "url": url,
        "topics": topics,
        "client_id": client_id,
        "protocol": match protocol { Protocol::V311 => "v311", Protocol::V5 => "v5" },
    });
    if protocol == Protocol::V5 {
        // Test sessions should not outlive the test run by much.
        value["session_expiry"] = serde_json::json!("10m");
    }
    serde_json::from_value(value).expect("a valid source config")
}

/// A source on `topics` with short waits, as tests want them.
pub fn source(url: &str, topics: &[&str], client_id: &str, protocol: Protocol) -> MqttSource {
    MqttSource::new(&source_config(url, topics, client_id, protocol))
        .expect("valid source config")
        .with_backoff(Duration::from_millis(100), Duration::from_secs(1))
        .with_retry_delay(Duration::from_millis(20), Duration::from_millis(200))
}

pub fn start(source: MqttSource) -> Running {
    start_as("test", source)
}

/// Starts a source under this mapping name (its metrics label), as the engine does.
pub fn start_as(mapping: &str, source: MqttSource) -> Running {
    switchyard_testkit::running::start(mapping, Box::new(source))
}

/// The bytes of a record's base64 `data`.
pub fn payload_bytes(record: &Record) -> Vec<u8> {
    let value = record.value();
    let encoded = value.get("data").and_then(|v| v.as_str()).expect("a record has data");
    STANDARD.decode(encoded).expect("data is base64")
}

/// The text of a record's payload.
pub fn payload(record: &Record) -> String {
    String::from_utf8(payload_bytes(record)).expect("the payload is UTF-8")
}

/// Fails the test unless no record arrives within `within`.
pub async fn assert_quiet(running: &mut Running, within: Duration) {
    if let Ok(Some(record)) = tokio::time::timeout(within, running.rx.recv()).await {
        panic!("expected no record, got {} ({})", record.id, record.value());
    }
}

/// A plain MQTT 3.1.1 test client on its own connection; its event loop runs
/// on a task that forwards what the helpers wait for.
struct Plain {
    client: rumqttc::AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, String>>,
    task: JoinHandle<()>,
}

impl Plain {
    fn connect(url: &str, client_id: &str, clean: bool) -> Self {
        let (host, port) = host_port(url);
        let mut options = rumqttc::MqttOptions::new(client_id, host, port);
        options.set_clean_session(clean).set_max_packet_size(1 << 20, 1 << 20).set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 1000);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let polled = eventloop.poll().await.map_err(|e| e.to_string());
                let last = polled.is_err();
                if tx.send(polled).is_err() || last {
                    return;
                }
            }
        });
        Self { client, events, task }
    }

    /// Waits for the first event `f` accepts; panics on a connection error.
    async fn wait_for(&mut self, what: &str, mut f: impl FnMut(&Event) -> bool) {
        let deadline = tokio::time::Instant::now() + BROKER_WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Ok(event))) if f(&event) => return,
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => panic!("test client: {e} while waiting for {what}"),
                Ok(None) => panic!("test client ended while waiting for {what}"),
                Err(_) => panic!("test client: no {what} within {BROKER_WAIT:?}"),
            }
        }
    }

    async fn disconnect(mut self) {
        self.client.disconnect().await.expect("queue a DISCONNECT");
        self.wait_for("the DISCONNECT", |e| matches!(e, Event::Outgoing(Outgoing::Disconnect))).await;
        self.task.abort();
    }
}

/// Publishes each payload with QoS 1 on a connection of its own and waits
/// for every PUBACK.
pub async fn publish(url: &str, topic: &str, payloads: &[Vec<u8>]) {
    let mut plain = Plain::connect(url, &unique("pub"), true);
    let client = plain.client.clone();
    let (topic, batch) = (topic.to_string(), payloads.to_vec());
    let publishing = tokio::spawn(async move {
        for payload in batch {
            client.publish(topic.as_str(), QoS::AtLeastOnce, false, payload).await.expect("queue a publish");
        }
    });
    let mut acked = 0;
    plain
        .wait_for("the PUBACKs", |e| {
            acked += usize::from(matches!(e, Event::Incoming(Packet::PubAck(_))));
            acked == payloads.len()
        })
        .await;
    publishing.await.expect("the publishing task");
    plain.disconnect().await;
}

pub async fn publish_text(url: &str, topic: &str, payloads: &[String]) {
    let bytes: Vec<Vec<u8>> = payloads.iter().map(|p| p.as_bytes().to_vec()).collect();
    publish(url, topic, &bytes).await;
}

/// Creates the persistent session `client_id` with its subscriptions, so
/// messages published before the source first connects wait for it.
pub async fn prime(url: &str, client_id: &str, filters: &[&str], protocol: Protocol) {
    match protocol {
        Protocol::V311 => {
            let mut plain = Plain::connect(url, client_id, false);
            let filters = filters.iter().map(|f| rumqttc::SubscribeFilter::new(f.to_string(), QoS::AtLeastOnce));
            plain.client.subscribe_many(filters).await.expect("queue a SUBSCRIBE");
            plain.wait_for("the SUBACK", |e| matches!(e, Event::Incoming(Packet::SubAck(_)))).await;
            plain.disconnect().await;
        }
        Protocol::V5 => {
            let (host, port) = host_port(url);
            let mut options = rumqttc::v5::MqttOptions::new(client_id, host, port);
            options.set_clean_start(false).set_session_expiry_interval(Some(600));
            let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 10);
            let filters =
                filters.iter().map(|f| v5p::Filter::new(f.to_string(), rumqttc::v5::mqttbytes::QoS::AtLeastOnce));
            client.subscribe_many(filters).await.expect("queue a SUBSCRIBE");
            let mut subscribed = false;
            loop {
                let event = tokio::time::timeout(BROKER_WAIT, eventloop.poll())
                    .await
                    .expect("the MQTT 5 test client timed out")
                    .expect("the MQTT 5 test client failed");
                match event {
                    rumqttc::v5::Event::Incoming(v5p::Packet::SubAck(_)) => {
                        subscribed = true;
                        client.disconnect().await.expect("queue a DISCONNECT");
                    }
                    rumqttc::v5::Event::Outgoing(Outgoing::Disconnect) if subscribed => break,
                    _ => {}
                }
            }
        }
    }
}

/// Removes the session `client_id` (and its queued messages) from the
/// broker: a clean-session connection discards it.
pub async fn forget_session(url: &str, client_id: &str) {
    let mut plain = Plain::connect(url, client_id, true);
    plain.wait_for("the CONNACK", |e| matches!(e, Event::Incoming(Packet::ConnAck(_)))).await;
    plain.disconnect().await;
}

/// A test subscriber that collects what arrives on its filter.
pub struct Subscriber {
    messages: mpsc::UnboundedReceiver<rumqttc::Publish>,
    task: JoinHandle<()>,
    _client: rumqttc::AsyncClient,
}

impl Subscriber {
    pub async fn start(url: &str, filter: &str) -> Self {
        let mut plain = Plain::connect(url, &unique("sub"), true);
        plain.client.subscribe(filter, QoS::AtLeastOnce).await.expect("queue a SUBSCRIBE");
        plain.wait_for("the SUBACK", |e| matches!(e, Event::Incoming(Packet::SubAck(_)))).await;
        let (tx, messages) = mpsc::unbounded_channel();
        let Plain { client, mut events, task: polling } = plain;
        let task = tokio::spawn(async move {
            while let Some(Ok(event)) = events.recv().await {
                if let Event::Incoming(Packet::Publish(publish)) = event
                    && tx.send(publish).is_err()
                {
                    break;
                }
            }
            polling.abort();
        });
        Self { messages, task, _client: client }
    }

    pub async fn next(&mut self, within: Duration) -> rumqttc::Publish {
        match tokio::time::timeout(within, self.messages.recv()).await {
            Ok(Some(publish)) => publish,
            Ok(None) => panic!("the test subscriber's connection ended"),
            Err(_) => panic!("no message for the test subscriber within {within:?}"),
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}
