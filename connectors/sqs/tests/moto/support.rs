//! Helpers for tests against the test SQS server (moto on 127.0.0.1:4566;
//! `SWITCHYARD_TEST_SQS_ENDPOINT` overrides it). A test that cannot reach it
//! fails; it never skips.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::Credentials;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use switchyard_sdk::Record;
use switchyard_sqs::{SqsSource, SqsSourceConfig};

pub use switchyard_testkit::running::Running;

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4566";
pub const REGION: &str = "us-east-1";

/// Credentials for the source's AWS chain, set once before any test runs
/// its source: moto takes any.
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
                // SAFETY: every test calls `endpoint()` before anything else,
                // and waits here until this is done, so nothing reads the
                // environment through libc meanwhile (std's own reads take
                // the same lock as `set_var`).
                unsafe { std::env::set_var(name, value) };
            }
        }
    });
}

/// `SWITCHYARD_TEST_SQS_ENDPOINT`, or moto's usual address; panics when
/// nothing listens there.
pub fn endpoint() -> String {
    environment();
    let endpoint = std::env::var("SWITCHYARD_TEST_SQS_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    let url = url::Url::parse(&endpoint).unwrap_or_else(|e| panic!("SWITCHYARD_TEST_SQS_ENDPOINT {endpoint:?}: {e}"));
    let host = url.host_str().unwrap_or("127.0.0.1").to_string();
    let port = url.port_or_known_default().unwrap_or(4566);
    let reachable = (host.as_str(), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
    assert!(
        reachable,
        "no SQS server at {endpoint} (SWITCHYARD_TEST_SQS_ENDPOINT): start moto there with \
         `pip install 'moto[server]>=5,<6'` then `moto_server -H 127.0.0.1 -p 4566`"
    );
    endpoint.trim_end_matches('/').to_string()
}

/// A name no other test or earlier run uses (SQS allows 80 characters).
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("sy-{prefix}-{}-{}-{:x}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), nanos % (1 << 40))
}

/// The test's own client, for creating queues, sending and reading back.
pub struct Sqs {
    pub endpoint: String,
    pub client: Client,
}

impl Sqs {
    pub fn connect() -> Self {
        let endpoint = endpoint();
        let http =
            aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&endpoint)
            .credentials_provider(Credentials::new("test", "test", None, None, "switchyard-tests"))
            .http_client(http)
            .build();
        Self { endpoint, client: Client::from_conf(config) }
    }

    /// Creates a fresh queue; `.fifo` is appended for FIFO queues.
    pub async fn queue(&self, prefix: &str, attributes: &[(QueueAttributeName, &str)]) -> String {
        let fifo = attributes.iter().any(|(name, value)| *name == QueueAttributeName::FifoQueue && *value == "true");
        let mut name = unique(prefix);
        if fifo {
            name.push_str(".fifo");
        }
        self.create(&name, attributes).await
    }

    pub async fn create(&self, name: &str, attributes: &[(QueueAttributeName, &str)]) -> String {
        let mut request = self.client.create_queue().queue_name(name);
        for (key, value) in attributes {
            request = request.attributes(key.clone(), *value);
        }
        let output = request.send().await.unwrap_or_else(|e| panic!("create queue {name}: {e:?}"));
        output.queue_url().unwrap_or_else(|| panic!("no URL for the new queue {name}")).to_string()
    }

    pub async fn delete(&self, queue_url: &str) {
        if let Err(e) = self.client.delete_queue().queue_url(queue_url).send().await {
            eprintln!("could not delete queue {queue_url}: {e:?}");
        }
    }

    pub async fn attribute(&self, queue_url: &str, name: QueueAttributeName) -> String {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(name.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("get attributes of {queue_url}: {e:?}"));
        output.attributes().and_then(|all| all.get(&name)).cloned().unwrap_or_default()
    }

    /// Messages waiting plus messages in flight, as SQS counts them.
    pub async fn depth(&self, queue_url: &str) -> (u64, u64) {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap_or_else(|e| panic!("get attributes of {queue_url}: {e:?}"));
        let count = |name: QueueAttributeName| {
            output.attributes().and_then(|all| all.get(&name)).and_then(|n| n.parse().ok()).unwrap_or(u64::MAX)
        };
        (
            count(QueueAttributeName::ApproximateNumberOfMessages),
            count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }

    /// Waits until the queue holds nothing, visible or not.
    pub async fn wait_empty(&self, queue_url: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let depth = self.depth(queue_url).await;
            if depth == (0, 0) {
                return;
            }
            assert!(Instant::now() < deadline, "queue {queue_url} still holds (waiting, in flight) = {depth:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn send(&self, queue_url: &str, body: &str) -> String {
        let output = self
            .client
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("send to {queue_url}: {e:?}"));
        output.message_id().unwrap_or_default().to_string()
    }

    /// Sends `bodies` in order, ten a call; `group` gives a FIFO message's
    /// group (deduplication is by content on the test's FIFO queues).
    pub async fn send_all(&self, queue_url: &str, bodies: &[String], group: impl Fn(usize) -> Option<String>) {
        let indexed: Vec<(usize, &String)> = bodies.iter().enumerate().collect();
        for chunk in indexed.chunks(10) {
            let entries = chunk
                .iter()
                .map(|(i, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body.as_str())
                        .set_message_group_id(group(*i))
                        .build()
                        .expect("id and body are set")
                })
                .collect();
            let output = self
                .client
                .send_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .unwrap_or_else(|e| panic!("send a batch to {queue_url}: {e:?}"));
            assert!(output.failed().is_empty(), "moto failed entries: {:?}", output.failed());
        }
    }

    /// One receive of up to `max` messages, waiting up to `wait` seconds;
    /// the messages are not deleted.
    pub async fn receive(&self, queue_url: &str, max: i32, wait: i32, visibility: Option<i32>) -> Vec<Message> {
        self.client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(max)
            .wait_time_seconds(wait)
            .set_visibility_timeout(visibility)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap_or_else(|e| panic!("receive from {queue_url}: {e:?}"))
            .messages
            .unwrap_or_default()
    }
}

pub fn source_config(sqs: &Sqs, queue_url: &str) -> SqsSourceConfig {
    SqsSourceConfig {
        queue_url: queue_url.to_string(),
        endpoint_url: Some(sqs.endpoint.clone()),
        region: Some(REGION.to_string()),
        max_concurrency: 2,
        // Short polls: a test's source stops within a second.
        wait_time: Duration::from_secs(1),
        visibility_timeout: None,
    }
}

/// A source with a short backoff, so tests that break things recover fast.
pub fn source(config: &SqsSourceConfig) -> SqsSource {
    SqsSource::new(config)
        .expect("valid source config")
        .with_backoff(Duration::from_millis(200), Duration::from_secs(1))
}

/// The text of a record's `body`.
pub fn body(record: &Record) -> String {
    record.data["body"].as_str().map_or_else(|| record.data.to_string(), str::to_string)
}

pub fn start(source: SqsSource) -> Running {
    start_as("test", source)
}

/// Starts a source under this mapping name (its metrics label), as the engine does.
pub fn start_as(mapping: &str, source: SqsSource) -> Running {
    switchyard_testkit::running::start(mapping, Box::new(source))
}

/// The Python with aws-lambda-powertools and pydantic:
/// `SWITCHYARD_TEST_PYTHON`, else the workspace's `target/test-venv`.
pub fn python() -> PathBuf {
    let python = std::env::var_os("SWITCHYARD_TEST_PYTHON").filter(|p| !p.is_empty()).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-venv/bin/python"),
        PathBuf::from,
    );
    assert!(
        python.exists(),
        "no Python at {} (SWITCHYARD_TEST_PYTHON): create the venv with `python3 -m venv target/test-venv` and \
         `target/test-venv/bin/pip install 'aws-lambda-powertools>=3,<4' 'pydantic>=2,<3'`",
        python.display()
    );
    python
}
