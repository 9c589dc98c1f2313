//! Helpers for tests against the test broker (RabbitMQ on 127.0.0.1:5672;
//! `AMQP_URL` overrides it). A test that cannot reach it fails; it never skips.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use switchyard_amqp::{RabbitMqSource, RabbitMqSourceConfig};
use switchyard_sdk::Record;

pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// `AMQP_URL`, or the local broker; panics when nothing listens there.
pub fn amqp_url() -> String {
    let url = std::env::var("AMQP_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_URL.to_string());
    let (host, port) = host_port(&url);
    let reachable = (host.as_str(), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
    assert!(reachable, "no RabbitMQ broker at {host}:{port} (AMQP_URL): start RabbitMQ 3.x there, user guest/guest");
    url
}

/// `host` and `port` of an `amqp://user:pass@host:port/vhost` URL.
pub fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let port = |text: &str| text.parse().unwrap_or(5672);
    if let Some(bracketed) = host_port.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').unwrap_or((bracketed, ""));
        return (host.to_string(), after.strip_prefix(':').map_or(5672, port));
    }
    match host_port.rsplit_once(':') {
        Some((host, text)) => (host.to_string(), port(text)),
        None => (host_port.to_string(), 5672),
    }
}

/// The same URL pointing at `127.0.0.1:port` (a proxy), credentials and vhost kept.
pub fn via_port(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("amqp", url));
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let userinfo = authority.rsplit_once('@').map(|(user, _)| format!("{user}@")).unwrap_or_default();
    format!("{scheme}://{userinfo}127.0.0.1:{port}{path}")
}

/// A name no other test or earlier run uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("switchyard-test-{prefix}-{}-{nanos:x}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The test's own connection to the broker, for declaring, publishing and
/// reading back.
pub struct Broker {
    pub url: String,
    pub channel: Channel,
    _connection: Connection,
}

impl Broker {
    pub async fn connect() -> Self {
        let url = amqp_url();
        let connection = Connection::connect(&url, ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("connect to the test broker at {url}: {e}"));
        let channel = connection.create_channel().await.expect("open a channel");
        channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
        Self { url, channel, _connection: connection }
    }

    /// Declares a fresh queue (not durable, not auto-deleted) and returns its
    /// name. `x-expires` removes it within minutes should the test fail
    /// before deleting it.
    pub async fn queue(&self, prefix: &str, mut arguments: FieldTable) -> String {
        let name = unique(prefix);
        self.declare(&name, &mut arguments).await;
        name
    }

    pub async fn declare(&self, name: &str, arguments: &mut FieldTable) {
        arguments.insert("x-expires".into(), AMQPValue::LongInt(600_000));
        self.channel
            .queue_declare(name.into(), QueueDeclareOptions::default(), arguments.clone())
            .await
            .unwrap_or_else(|e| panic!("declare queue {name}: {e}"));
    }

    pub async fn delete(&self, queue: &str) {
        if let Err(e) = self.channel.queue_delete(queue.into(), QueueDeleteOptions::default()).await {
            eprintln!("could not delete queue {queue}: {e}");
        }
    }

    /// Publishes to `queue` through the default exchange and waits for the
    /// broker's confirm.
    pub async fn publish(&self, queue: &str, body: &[u8], properties: BasicProperties) {
        let confirm = self
            .channel
            .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body, properties)
            .await
            .unwrap_or_else(|e| panic!("publish to {queue}: {e}"));
        let confirmation = confirm.await.unwrap_or_else(|e| panic!("confirm of a publish to {queue}: {e}"));
        assert!(confirmation.is_ack(), "the broker did not confirm a publish to {queue}: {confirmation:?}");
    }

    /// Reads one message from `queue` (auto-acked), waiting up to `within`.
    pub async fn get(&self, queue: &str, within: Duration) -> Option<BasicGetMessage> {
        let deadline = Instant::now() + within;
        loop {
            let got = self
                .channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap_or_else(|e| panic!("basic.get from {queue}: {e}"));
            if got.is_some() || Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn source_config(url: &str, queue: &str) -> RabbitMqSourceConfig {
    RabbitMqSourceConfig { url: url.to_string(), queue: queue.to_string(), prefetch: 100 }
}

/// The text of a record's base64 `data`.
pub fn body(record: &Record) -> String {
    let Some(encoded) = record.data.get("data").and_then(|v| v.as_str()) else {
        return record.data.to_string();
    };
    let bytes = STANDARD.decode(encoded).expect("data is base64");
    String::from_utf8(bytes).expect("data is UTF-8")
}

pub use switchyard_testkit::running::Running;

pub fn start(source: RabbitMqSource) -> Running {
    start_as("test", source)
}

/// Starts a source under this mapping name (its metrics label), as the engine does.
pub fn start_as(mapping: &str, source: RabbitMqSource) -> Running {
    switchyard_testkit::running::start(mapping, Box::new(source))
}
