//! Helpers for tests against the Kafka-compatible test broker (tansu, started
//! by `scripts/test`). A test that cannot reach it fails; it never skips.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use switchyard_kafka::{KafkaSource, KafkaSourceConfig, StartingPosition};
use switchyard_sdk::Record;

/// `KAFKA_BROKERS`, or tansu's address as `scripts/test` starts it; panics
/// when nothing listens there.
pub fn brokers() -> String {
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_string());
    let reachable = brokers.split(',').any(|broker| {
        broker
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok())
    });
    assert!(
        reachable,
        "no Kafka broker at {brokers} (KAFKA_BROKERS): run scripts/test, which installs and starts tansu on 127.0.0.1:9092"
    );
    brokers
}

/// A name no other test or earlier run uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("{prefix}-{}-{nanos:x}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Creates a fresh topic and returns its name.
pub async fn create_topic(brokers: &str, prefix: &str, partitions: i32) -> String {
    let topic = unique(prefix);
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&[NewTopic::new(&topic, partitions, TopicReplication::Fixed(1))], &options)
        .await
        .expect("CreateTopics request");
    for result in results {
        if let Err((name, code)) = result {
            panic!("could not create topic {name}: {code}");
        }
    }
    topic
}

pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "10000")
        .create()
        .expect("producer")
}

/// Produces `payloads` to `partition` in order and waits for every delivery.
pub async fn produce(producer: &FutureProducer, topic: &str, partition: i32, payloads: &[String]) {
    let mut deliveries = Vec::new();
    for payload in payloads {
        let record = FutureRecord::<(), str>::to(topic).partition(partition).payload(payload.as_str());
        match producer.send_result(record) {
            Ok(delivery) => deliveries.push(delivery),
            Err((e, _)) => panic!("enqueue to {topic}: {e}"),
        }
    }
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => panic!("produce to {topic}: {e}"),
            Err(_) => panic!("produce to {topic}: delivery report dropped"),
        }
    }
}

pub fn source_config(brokers: &str, topic: &str, group: &str, start: StartingPosition) -> KafkaSourceConfig {
    KafkaSourceConfig {
        brokers: brokers.to_string(),
        topics: vec![topic.to_string()],
        group_id: group.to_string(),
        starting_position: start,
        // Quick rewinds when a retried record sits at the end of the log: a
        // seek waits for the fetch in flight, which waits this long for data.
        properties: [("fetch.wait.max.ms".to_string(), "100".to_string())].into(),
    }
}

/// The text of a record's base64 `value`.
pub fn value(record: &Record) -> String {
    let Some(encoded) = record.data.get("value").and_then(|v| v.as_str()) else {
        return record.data.to_string();
    };
    let bytes = STANDARD.decode(encoded).expect("value is base64");
    String::from_utf8(bytes).expect("value is UTF-8")
}

pub use switchyard_testkit::running::Running;

pub fn start(source: KafkaSource) -> Running {
    start_as("test", source)
}

/// Starts a source under this mapping name (its metrics label), as the engine does.
pub fn start_as(mapping: &str, source: KafkaSource) -> Running {
    switchyard_testkit::running::start(mapping, Box::new(source))
}
