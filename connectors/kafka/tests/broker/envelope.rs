//! Record JSON and event shape for messages from an independent producer
//! (confluent-kafka in Python), and the timestamp starting position.

use std::time::{Duration, UNIX_EPOCH};

use chrono::{TimeZone, Utc};
use rdkafka::producer::FutureRecord;
use serde_json::json;
use switchyard_kafka::{KafkaSource, StartingPosition};
use switchyard_sdk::Outcome;

use crate::support::{brokers, create_topic, producer, source_config, start, unique, value};

/// Produces with confluent-kafka: a keyed record with headers and an explicit
/// timestamp to partition 1, an unkeyed one without headers to partition 0.
const PRODUCE: &str = r#"
import sys
from confluent_kafka import Producer
brokers, topic = sys.argv[1], sys.argv[2]
p = Producer({"bootstrap.servers": brokers})
p.produce(topic, key=b"k\x00\xff", value=b"hello kafka", partition=1, timestamp=1700000000123,
          headers=[("trace", b"\x01\x02\xff"), ("kind", b"order")])
p.produce(topic, value=b"no key", partition=0)
sys.exit(1 if p.flush(10) else 0)
"#;

#[tokio::test]
async fn records_and_event_have_lambdas_self_managed_kafka_shape() {
    let brokers = brokers();
    let topic = create_topic(&brokers, "envelope", 2).await;
    let python = std::env::var("SWITCHYARD_TEST_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| {
        panic!(
            "SWITCHYARD_TEST_PYTHON is not set: run scripts/test, which installs confluent-kafka into target/test-venv"
        )
    });
    let produced = tokio::process::Command::new(&python)
        .args(["-c", PRODUCE, &brokers, &topic])
        .status()
        .await
        .unwrap_or_else(|e| panic!("run {python}: {e}: run scripts/test, which makes target/test-venv"));
    assert!(produced.success(), "the confluent-kafka producer failed ({produced}): run scripts/test to install it");

    let config = source_config(&brokers, &topic, &unique("envelope"), StartingPosition::Earliest);
    let source = KafkaSource::new(&config).expect("valid config");
    let envelope = switchyard_sdk::Source::envelope(&source);
    let mut running = start(source);
    let mut records = vec![running.next(Duration::from_secs(20)).await, running.next(Duration::from_secs(20)).await];
    records.sort_by_key(|record| record.data["partition"].as_i64());
    let (unkeyed, keyed) = (&records[0], &records[1]);

    assert_eq!(
        keyed.data,
        json!({
            "topic": topic, "partition": 1, "offset": 0,
            "timestamp": 1_700_000_000_123_i64, "timestampType": "CREATE_TIME",
            "key": "awD/", "value": "aGVsbG8ga2Fma2E=",
            "headers": [{"trace": [1, 2, 255]}, {"kind": [111, 114, 100, 101, 114]}],
        })
    );
    assert_eq!(keyed.id, format!("{topic}-1-0"));
    assert_eq!(keyed.scope.as_deref(), Some(format!("{topic}-1").as_str()));
    assert_eq!(keyed.key.as_deref(), Some(&b"k\x00\xff"[..]));
    assert_eq!(keyed.size, 11 + 3, "value and key bytes");
    assert_eq!(keyed.created_at, UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));

    assert!(unkeyed.data.get("key").is_none(), "no key field without a key: {}", unkeyed.data);
    assert_eq!(value(unkeyed), "no key");
    assert_eq!(unkeyed.data["headers"], json!([]));
    assert_eq!(unkeyed.data["timestampType"], "CREATE_TIME");
    assert!(unkeyed.key.is_none());

    let event = envelope.event(&[&keyed.data, &unkeyed.data]);
    assert_eq!(event["eventSource"], "SelfManagedKafka");
    assert_eq!(event["bootstrapServers"], brokers);
    assert_eq!(event["records"][format!("{topic}-1")], json!([keyed.data]));
    assert_eq!(event["records"][format!("{topic}-0")], json!([unkeyed.data]));
    assert_eq!(event["records"].as_object().map(|groups| groups.len()), Some(2));
    assert_eq!(
        envelope.item_id(&json!({"topic-partition": format!("{topic}-1"), "offset": 0})).as_deref(),
        Some(keyed.id.as_str())
    );

    for record in records {
        record.ack.complete(Outcome::Delivered);
    }
    running.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn timestamp_start_skips_older_records() {
    let brokers = brokers();
    let topic = create_topic(&brokers, "timestamp", 1).await;
    let producer = producer(&brokers);
    for (i, at) in [1_000_i64, 2_000, 3_000, 4_000].into_iter().enumerate() {
        let payload = format!("m{i}");
        let record = FutureRecord::<(), str>::to(&topic).partition(0).timestamp(at).payload(&payload);
        if let Err((e, _)) = producer.send(record, Duration::from_secs(10)).await {
            panic!("produce: {e}");
        }
    }
    let start_at = Utc.timestamp_millis_opt(2_500).single().expect("a valid time");
    let config = source_config(&brokers, &topic, &unique("timestamp"), StartingPosition::Timestamp(start_at));
    let mut running = start(KafkaSource::new(&config).expect("valid config"));
    let first = running.next(Duration::from_secs(20)).await;
    assert_eq!(value(&first), "m2", "the first record at or after the timestamp");
    first.ack.complete(Outcome::Delivered);
    running.stop().await.expect("clean shutdown");
}
