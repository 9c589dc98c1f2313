//! Helpers for tests against real Kinesis API servers: moto
//! (`SWITCHYARD_TEST_KINESIS_ENDPOINT`, default 127.0.0.1:4566) and, for
//! resharding, kinesalite (`SWITCHYARD_TEST_KINESALITE_ENDPOINT`, default
//! 127.0.0.1:4567). A server that cannot be reached fails the test, saying
//! how to start it; it is never skipped (scripts/test starts both).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::Credentials;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType, StreamStatus};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use switchyard_kinesis::{CheckpointStore, KinesisSource, KinesisSourceConfig, StartingPosition};
use switchyard_sdk::Record;

pub use switchyard_testkit::running::Running;

pub const REGION: &str = "us-east-1";

/// Credentials for the source's AWS chain, set once before any test runs
/// its source: the test servers take any.
fn environment() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (name, value) in [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            // Nothing in these tests may ask an EC2 metadata address.
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ] {
            if std::env::var_os(name).is_none() {
                // SAFETY: every test calls `server()` before anything else,
                // and waits here until this is done, so nothing reads the
                // environment through libc meanwhile.
                unsafe { std::env::set_var(name, value) };
            }
        }
    });
}

/// A missing server or tool fails the test, saying how to provide it
/// (scripts/test installs and starts them all); it is never skipped.
pub fn require<T>(found: Option<T>, what: &str, how: &str) -> Option<T> {
    if found.is_none() {
        panic!("{what}: {how} (scripts/test does this)");
    }
    found
}

fn reachable(endpoint: &str, variable: &str) -> bool {
    let url = url::Url::parse(endpoint).unwrap_or_else(|e| panic!("{variable} {endpoint:?}: {e}"));
    let host = url.host_str().unwrap_or("127.0.0.1").to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    (host.as_str(), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok())
}

fn server(variable: &str, default: &str, what: &str, how: &str) -> Option<Kinesis> {
    environment();
    let endpoint = std::env::var(variable).ok().filter(|e| !e.is_empty()).unwrap_or_else(|| default.to_string());
    let endpoint = endpoint.trim_end_matches('/').to_string();
    let found = reachable(&endpoint, variable).then_some(());
    require(found, &format!("no {what} at {endpoint} ({variable})"), how)?;
    Some(Kinesis::new(endpoint))
}

/// moto; the test fails when it is not running.
pub fn moto() -> Option<Kinesis> {
    server(
        "SWITCHYARD_TEST_KINESIS_ENDPOINT",
        "http://127.0.0.1:4566",
        "Kinesis API server (moto)",
        "`pip install 'moto[server]>=5,<6'` then `moto_server -H 127.0.0.1 -p 4566`",
    )
}

/// kinesalite; the test fails when it is not running.
pub fn kinesalite() -> Option<Kinesis> {
    server(
        "SWITCHYARD_TEST_KINESALITE_ENDPOINT",
        "http://127.0.0.1:4567",
        "kinesalite",
        "`npm ci` in connectors/kinesis/tests/kinesalite, then `node_modules/.bin/kinesalite --port 4567`",
    )
}

/// A name no other test or earlier run uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("sy-{prefix}-{}-{}-{:x}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), nanos % (1 << 32))
}

/// The test's own client, for creating streams, writing and reading back.
pub struct Kinesis {
    pub endpoint: String,
    pub client: Client,
}

impl Kinesis {
    fn new(endpoint: String) -> Self {
        let http =
            aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
        let config = aws_sdk_kinesis::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&endpoint)
            .credentials_provider(Credentials::new("test", "test", None, None, "switchyard-tests"))
            .http_client(http)
            .build();
        Self { endpoint, client: Client::from_conf(config) }
    }

    /// Creates a fresh stream of `shards` shards and waits until it is active.
    pub async fn stream(&self, prefix: &str, shards: i32) -> String {
        let name = unique(prefix);
        self.client
            .create_stream()
            .stream_name(&name)
            .shard_count(shards)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create stream {name}: {e:?}"));
        self.wait_active(&name).await;
        name
    }

    pub async fn wait_active(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let summary = self.client.describe_stream_summary().stream_name(name).send().await;
            if let Ok(output) = &summary
                && output.stream_description_summary().is_some_and(|s| *s.stream_status() == StreamStatus::Active)
            {
                return;
            }
            assert!(Instant::now() < deadline, "stream {name} is not active: {summary:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn delete(&self, name: &str) {
        if let Err(e) = self.client.delete_stream().stream_name(name).send().await {
            eprintln!("could not delete stream {name}: {e:?}");
        }
    }

    /// Writes `(partition key, data)` pairs in order, one PutRecords call
    /// per 100; returns each record's `(shard id, sequence number)`.
    pub async fn put(&self, name: &str, records: &[(String, String)]) -> Vec<(String, String)> {
        let mut written = Vec::new();
        for chunk in records.chunks(100) {
            let entries = chunk
                .iter()
                .map(|(key, data)| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(key)
                        .data(Blob::new(data.as_bytes()))
                        .build()
                        .expect("key and data are set")
                })
                .collect();
            let output = self
                .client
                .put_records()
                .stream_name(name)
                .set_records(Some(entries))
                .send()
                .await
                .unwrap_or_else(|e| panic!("put records to {name}: {e:?}"));
            assert_eq!(output.failed_record_count().unwrap_or(0), 0, "failed records: {output:?}");
            for result in output.records() {
                written.push((
                    result.shard_id().unwrap_or_default().to_string(),
                    result.sequence_number().unwrap_or_default().to_string(),
                ));
            }
        }
        written
    }

    /// Every record of every shard, by shard id, as (partition key, data).
    pub async fn read_all(&self, name: &str) -> BTreeMap<String, Vec<(String, Vec<u8>)>> {
        let shards = self.client.list_shards().stream_name(name).send().await.expect("list shards");
        let mut all = BTreeMap::new();
        for shard in shards.shards() {
            let iterator = self
                .client
                .get_shard_iterator()
                .stream_name(name)
                .shard_id(shard.shard_id())
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .expect("get a shard iterator");
            let mut iterator = iterator.shard_iterator().map(str::to_string);
            let mut records = Vec::new();
            while let Some(current) = iterator {
                let output = self.client.get_records().shard_iterator(current).send().await.expect("get records");
                if output.records().is_empty() {
                    break;
                }
                for record in output.records() {
                    records.push((
                        record.partition_key().unwrap_or_default().to_string(),
                        record.data().as_ref().to_vec(),
                    ));
                }
                iterator = output.next_shard_iterator().map(str::to_string);
            }
            all.insert(shard.shard_id().to_string(), records);
        }
        all
    }
}

/// A source config for `stream` on `kinesis`, read from the oldest record,
/// with short intervals.
pub fn source_config(kinesis: &Kinesis, stream: &str) -> KinesisSourceConfig {
    let mut config = KinesisSourceConfig::for_stream(stream);
    config.endpoint_url = Some(kinesis.endpoint.clone());
    config.region = Some(REGION.to_string());
    config.starting_position = StartingPosition::TrimHorizon;
    config.poll_interval = Duration::from_millis(200);
    config.shard_discovery_interval = Duration::from_secs(1);
    config
}

/// A source with a short backoff, so tests that break things recover fast.
pub fn source(config: &KinesisSourceConfig, store: Arc<dyn CheckpointStore>) -> KinesisSource {
    KinesisSource::new(config, store)
        .expect("valid source config")
        .with_backoff(Duration::from_millis(200), Duration::from_secs(1))
        .with_checkpoint_interval(Duration::from_millis(20))
}

pub fn start(source: KinesisSource) -> Running {
    switchyard_testkit::running::start("test", Box::new(source))
}

/// The text of a record's `kinesis.data`.
pub fn data(record: &Record) -> String {
    let encoded = record.data["kinesis"]["data"].as_str().unwrap_or_else(|| panic!("no kinesis.data: {}", record.data));
    let bytes = STANDARD.decode(encoded).unwrap_or_else(|e| panic!("kinesis.data is not base64: {e}"));
    String::from_utf8(bytes).expect("UTF-8 test data")
}

/// The sequence number of a record.
pub fn sequence(record: &Record) -> String {
    record.data["kinesis"]["sequenceNumber"].as_str().expect("a sequence number").to_string()
}

/// Sequence numbers are decimal strings longer than any integer type:
/// compare by length, then digit by digit.
pub fn sequence_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The Python with aws-lambda-powertools and pydantic; the test fails without it.
pub fn python() -> Option<PathBuf> {
    let python = std::env::var_os("SWITCHYARD_TEST_PYTHON").filter(|p| !p.is_empty()).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-venv/bin/python"),
        PathBuf::from,
    );
    let usable = std::process::Command::new(&python)
        .args(["-c", "import aws_lambda_powertools.utilities.parser, pydantic"])
        .output()
        .is_ok_and(|out| out.status.success());
    require(
        usable.then_some(python.clone()),
        &format!("no Python with aws-lambda-powertools and pydantic at {} (SWITCHYARD_TEST_PYTHON)", python.display()),
        "python3 -m venv target/test-venv && target/test-venv/bin/pip install 'aws-lambda-powertools>=3,<4' 'pydantic>=2,<3'",
    )
}
