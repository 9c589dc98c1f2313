//! Helpers for tests against the test server (nats-server with JetStream on
//! 127.0.0.1:4222; `NATS_URL` overrides it). A test that cannot reach it
//! fails; it never skips.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer, stream};
use async_nats::{Client, HeaderMap};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use switchyard_nats::{NatsSource, NatsSourceConfig};
use switchyard_sdk::Record;

pub use switchyard_testkit::running::Running;

pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

const HOW_TO_START: &str = "start it with: start-stop-daemon --start --oknodo --background \
    --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log";

/// `NATS_URL`, or the local server; panics when nothing listens there.
pub fn nats_url() -> String {
    let url = std::env::var("NATS_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_URL.to_string());
    let (host, port) = host_port(&url);
    let reachable = (host.as_str(), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
    assert!(reachable, "no NATS server at {host}:{port} (NATS_URL); it needs JetStream (-js). {HOW_TO_START}");
    url
}

/// `host` and `port` of a `nats://[user:pass@]host:port` URL (the first of a list).
pub fn host_port(url: &str) -> (String, u16) {
    let first = url.split(',').next().unwrap_or(url).trim();
    let rest = first.split_once("://").map_or(first, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let port = |text: &str| text.parse().unwrap_or(4222);
    if let Some(bracketed) = host_port.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').unwrap_or((bracketed, ""));
        return (host.to_string(), after.strip_prefix(':').map_or(4222, port));
    }
    match host_port.rsplit_once(':') {
        Some((host, text)) => (host.to_string(), port(text)),
        None => (host_port.to_string(), 4222),
    }
}

/// A name no other test or earlier run uses, valid as a stream, consumer
/// and subject token (no dots).
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("sytest_{prefix}_{}_{nanos:x}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The test's own connection, for streams, publishing and reading back.
pub struct Nats {
    pub url: String,
    pub client: Client,
    pub js: jetstream::Context,
}

impl Nats {
    pub async fn connect() -> Self {
        Self::connect_to(&nats_url()).await
    }

    pub async fn connect_to(url: &str) -> Self {
        let client = async_nats::connect(url).await.unwrap_or_else(|e| panic!("connect to NATS at {url}: {e}"));
        let js = jetstream::new(client.clone());
        Self { url: url.to_string(), client, js }
    }

    /// A fresh stream capturing `<name>.>`; deleted when the guard drops,
    /// even when the test fails.
    pub async fn stream(&self, prefix: &str) -> TestStream {
        let name = unique(prefix);
        self.js
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{name}.>")],
                ..stream::Config::default()
            })
            .await
            .unwrap_or_else(|e| panic!("create stream {name}: {e}"));
        TestStream { name, url: self.url.clone() }
    }

    /// Publishes and waits for the stream's acknowledgement; returns the
    /// stream sequence.
    pub async fn publish(&self, subject: &str, payload: impl Into<Bytes>) -> u64 {
        self.publish_with_headers(subject, HeaderMap::new(), payload).await
    }

    pub async fn publish_with_headers(&self, subject: &str, headers: HeaderMap, payload: impl Into<Bytes>) -> u64 {
        let ack = self
            .js
            .publish_with_headers(subject.to_string(), headers, payload.into())
            .await
            .unwrap_or_else(|e| panic!("publish to {subject}: {e}"));
        ack.await.unwrap_or_else(|e| panic!("no PubAck for {subject}: {e}")).sequence
    }

    pub async fn consumer_info(&self, stream: &str, consumer: &str) -> consumer::Info {
        let stream = self.js.get_stream(stream).await.unwrap_or_else(|e| panic!("stream {stream}: {e}"));
        stream.consumer_info(consumer).await.unwrap_or_else(|e| panic!("consumer {consumer}: {e}"))
    }
}

/// A stream made for one test.
pub struct TestStream {
    pub name: String,
    url: String,
}

impl TestStream {
    /// Takes charge of a stream named `name` that the test has the source
    /// create (or creates later itself): deleted on drop like the others.
    pub fn adopt(nats: &Nats, name: &str) -> Self {
        Self { name: name.to_string(), url: nats.url.clone() }
    }

    /// A subject the stream captures.
    pub fn subject(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.name)
    }

    /// Every subject of the stream.
    pub fn all(&self) -> String {
        format!("{}.>", self.name)
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        // Drop cannot await, and may run inside the test's runtime: a thread
        // of its own with a small runtime deletes the stream.
        let (name, url) = (self.name.clone(), self.url.clone());
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let client = async_nats::connect(url.as_str()).await.ok()?;
                jetstream::new(client).delete_stream(&name).await.ok()
            })
        })
        .join();
        if !matches!(deleted, Ok(Some(_))) {
            eprintln!("could not delete test stream {}", self.name);
        }
    }
}

pub fn source_config(url: &str, stream: &TestStream, consumer: &str) -> NatsSourceConfig {
    NatsSourceConfig {
        url: url.to_string(),
        stream: stream.name.clone(),
        consumer: consumer.to_string(),
        subjects: vec![stream.all()],
        create_stream: false,
        ordered: false,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 1000,
    }
}

/// A source that sets up again quickly in tests.
pub fn source(config: &NatsSourceConfig) -> NatsSource {
    NatsSource::new(config)
        .expect("valid source config")
        .with_backoff(Duration::from_millis(100), Duration::from_secs(1))
}

/// The text of a record's base64 `data`.
pub fn body(record: &Record) -> String {
    // Unordered records arrive deferred: read them as a filter would.
    let value = record.value();
    let Some(encoded) = value.get("data").and_then(|v| v.as_str()) else {
        return value.to_string();
    };
    let bytes = STANDARD.decode(encoded).expect("data is base64");
    String::from_utf8(bytes).expect("data is UTF-8")
}

pub fn start(source: NatsSource) -> Running {
    start_as("test", source)
}

/// Starts a source under this mapping name (its metrics label), as the engine does.
pub fn start_as(mapping: &str, source: NatsSource) -> Running {
    switchyard_testkit::running::start(mapping, Box::new(source))
}

/// Asserts that nothing arrives within `within`.
pub async fn nothing_within(running: &mut Running, within: Duration) {
    if let Ok(Some(record)) = tokio::time::timeout(within, running.rx.recv()).await {
        panic!("expected nothing, got {} ({})", record.id, record.value());
    }
}
