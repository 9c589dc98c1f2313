//! Kafka mappings end to end: the real binary consuming a real broker.
//!
//! Single-member tests run on tansu (started by scripts/test, KAFKA_BROKERS).
//! Tests with several group members and SIGKILL restarts run on librdkafka's
//! mock cluster hosted by this test process on loopback ports, because
//! tansu's group coordinator does not survive those (docs/testing.md).

#![cfg(feature = "kafka")]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{FunctionServer, Received, Switchyard, eventually};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

fn tansu() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().expect("admin client");
    let results = tokio::time::timeout(
        Duration::from_secs(20),
        admin.create_topics(&[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], &AdminOptions::new()),
    )
    .await
    .unwrap_or_else(|_| panic!("Kafka at {brokers} did not answer; run scripts/test, which starts tansu"))
    .unwrap_or_else(|e| panic!("cannot create topic {topic} at {brokers}: {e}; run scripts/test, which starts tansu"));
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
    }
}

fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new().set("bootstrap.servers", brokers).set("message.timeout.ms", "20000").create().expect("producer")
}

/// Produces `(key, value)` pairs in order, each with a header `source: test`.
async fn produce(producer: &FutureProducer, topic: &str, records: &[(String, String)]) {
    for (key, value) in records {
        let headers = OwnedHeaders::new().insert(Header { key: "source", value: Some("test") });
        producer
            .send(FutureRecord::to(topic).key(key).payload(value).headers(headers), Duration::from_secs(20))
            .await
            .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
    }
}

/// The first message of `topic`, as JSON (a fresh group reads from the start).
async fn first_json_message(brokers: &str, topic: &str) -> Value {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .unwrap_or_else(|_| panic!("no message on {topic} within 30 s"))
        .unwrap();
    serde_json::from_slice(message.payload().unwrap()).unwrap()
}

fn kafka_mapping(brokers: &str, topic: &str, group: &str, extra: &str) -> String {
    format!(
        "  - name: orders\n    source:\n      kafka:\n        brokers: \"{brokers}\"\n        topics: [{topic}]\n        group_id: {group}\n        starting_position: earliest\n        properties: {{ session.timeout.ms: \"6000\", heartbeat.interval.ms: \"500\" }}\n    function: f\n{extra}"
    )
}

/// `(partition, offset, value)` of every record of one invocation.
fn records(r: &Received) -> Vec<(i64, i64, String)> {
    let mut out = Vec::new();
    for list in r.body["records"].as_object().expect("records by topic-partition").values() {
        for rec in list.as_array().unwrap() {
            let value = String::from_utf8(BASE64.decode(rec["value"].as_str().unwrap()).unwrap()).unwrap();
            out.push((rec["partition"].as_i64().unwrap(), rec["offset"].as_i64().unwrap(), value));
        }
    }
    out
}

fn values_seen(f: &FunctionServer) -> HashSet<String> {
    f.received().iter().flat_map(records).map(|(_, _, v)| v).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_the_function_in_lambdas_shape_and_in_partition_order() {
    let brokers = tansu();
    let topic = unique("orders");
    create_topic(&brokers, &topic, 2).await;
    let sent: Vec<(String, String)> = (0..60).map(|i| (format!("k{}", i % 6), format!("v{i:03}"))).collect();
    produce(&producer(&brokers), &topic, &sent).await;

    let function = FunctionServer::echo().await;
    let mapping = kafka_mapping(&brokers, &topic, &unique("g"), "    batch: { size: 10, window: 100ms }\n");
    let sy = Switchyard::start(&common::config(&function.url(), "", &mapping));
    eventually(Duration::from_secs(60), "all 60 records at the function", async || {
        (values_seen(&function).len() == 60).then_some(())
    })
    .await;

    let received = function.received();
    let event = &received[0].body;
    assert_eq!(event["eventSource"], "SelfManagedKafka");
    assert_eq!(event["bootstrapServers"], brokers);
    let (tp, list) = event["records"].as_object().unwrap().iter().next().unwrap();
    let first = &list[0];
    assert_eq!(tp, &format!("{topic}-{}", first["partition"]));
    assert_eq!(first["topic"], topic.as_str());
    assert_eq!(first["timestampType"], "CREATE_TIME");
    assert!(first["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    let key = String::from_utf8(BASE64.decode(first["key"].as_str().unwrap()).unwrap()).unwrap();
    assert!(key.starts_with('k'));
    assert_eq!(first["headers"], json!([{"source": b"test".to_vec()}]));
    assert!(received.iter().all(|r| records(r).len() <= 10), "batch size 10");

    // Per partition, offsets arrive in order, and a key stays in its partition.
    let mut last: HashMap<i64, i64> = HashMap::new();
    for r in &received {
        for (p, offset, _) in records(r) {
            if let Some(prev) = last.insert(p, offset) {
                assert!(offset > prev, "partition {p}: offset {offset} after {prev}");
            }
        }
    }
    let metrics = sy.metrics().await;
    assert!(metrics.contains("switchyard_batch_records"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_records_go_to_the_on_failure_topic_and_the_partition_moves_on() {
    let brokers = tansu();
    let topic = unique("pay");
    let dlq = unique("pay-dlq");
    create_topic(&brokers, &topic, 1).await;
    create_topic(&brokers, &dlq, 1).await;
    let sent: Vec<(String, String)> =
        (0..20).map(|i| ("k".to_string(), if i == 7 { "poison".to_string() } else { format!("v{i}") })).collect();
    produce(&producer(&brokers), &topic, &sent).await;

    // The function names the poison record as failed, every time.
    let function = FunctionServer::start(|r, _| {
        let failed: Vec<Value> = r.body["records"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|l| l.as_array().unwrap().clone())
            .filter(|rec| rec["value"] == BASE64.encode("poison"))
            .map(|rec| json!({"itemIdentifier": {"topic-partition": format!("{}-{}", rec["topic"].as_str().unwrap(), rec["partition"]), "offset": rec["offset"]}}))
            .collect();
        (200, vec![], json!({"batchItemFailures": failed}).to_string())
    })
    .await;
    let extra = format!(
        "    batch: {{ size: 5, window: 50ms }}\n    report_batch_item_failures: true\n    retry: {{ max_attempts: 2, backoff: {{ initial: 50ms, max: 100ms }} }}\n    on_failure: {{ kafka: {{ brokers: \"{brokers}\", topic: {dlq} }} }}\n"
    );
    let _sy =
        Switchyard::start(&common::config(&function.url(), "", &kafka_mapping(&brokers, &topic, &unique("g"), &extra)));
    eventually(Duration::from_secs(60), "every record but the poison delivered", async || {
        let seen = values_seen(&function);
        ((0..20).filter(|i| *i != 7).all(|i| seen.contains(&format!("v{i}")))).then_some(())
    })
    .await;

    let failure = first_json_message(&brokers, &dlq).await;
    assert_eq!(failure["requestContext"]["condition"], "RetryAttemptsExhausted");
    assert_eq!(failure["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(failure["KafkaBatchInfo"]["topic"], topic.as_str());
    assert_eq!(failure["KafkaBatchInfo"]["firstOffset"], 7);
    let payload_records: Vec<Value> = failure["requestPayload"]["records"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|l| l.as_array().unwrap().clone())
        .collect();
    assert_eq!(payload_records.len(), 1, "only the poison record failed");
    assert_eq!(payload_records[0]["value"], BASE64.encode("poison"));
}

/// Hosts a mock Kafka cluster with one topic; lives as long as the test.
fn mock_cluster(topic: &str, partitions: i32) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(topic, partitions, 1).expect("mock topic");
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_switchyards_in_one_group_share_the_partitions() {
    let topic = "shared";
    let cluster = mock_cluster(topic, 4);
    let brokers = cluster.bootstrap_servers();
    let (a, b) = (FunctionServer::echo().await, FunctionServer::echo().await);
    let mapping = kafka_mapping(&brokers, topic, "scale-out", "    batch: { size: 20, window: 50ms }\n");
    let _one = Switchyard::start(&common::config(&a.url(), "", &mapping));
    let _two = Switchyard::start(&common::config(&b.url(), "", &mapping));
    // Let both join before producing, so the group is balanced.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let sent: Vec<(String, String)> = (0..400).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
    produce(&producer(&brokers), topic, &sent).await;
    eventually(Duration::from_secs(60), "all 400 records delivered by the pair", async || {
        let mut seen = values_seen(&a);
        seen.extend(values_seen(&b));
        (seen.len() == 400).then_some(())
    })
    .await;
    assert!(!a.received().is_empty() && !b.received().is_empty(), "both members got partitions");
    let partitions =
        |f: &FunctionServer| f.received().iter().flat_map(records).map(|(p, _, _)| p).collect::<HashSet<_>>();
    assert!(partitions(&a).is_disjoint(&partitions(&b)), "a partition belongs to one member");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_loses_nothing() {
    let topic = "crash";
    let cluster = mock_cluster(topic, 2);
    let brokers = cluster.bootstrap_servers();
    let sent: Vec<(String, String)> = (0..3000).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
    produce(&producer(&brokers), topic, &sent).await;

    // A slow function (about 500 records/s), so the kill lands mid-stream,
    // after several automatic commits (every second).
    let function =
        FunctionServer::start_with_delay(Duration::from_millis(100), |_, _| (200, vec![], "{}".into())).await;
    let mapping = kafka_mapping(&brokers, topic, "crash-group", "    batch: { size: 50, window: 20ms }\n");
    let config = common::config(&function.url(), "", &mapping);
    let dir = tempfile::tempdir().unwrap();
    let mut first = Switchyard::start_in(dir.path(), &config, &[]);
    eventually(Duration::from_secs(60), "some records delivered", async || {
        (values_seen(&function).len() >= 1500).then_some(())
    })
    .await;
    first.kill9();
    let before_restart = function.received().len();
    let seen_before_kill = values_seen(&function).len();
    let _second = Switchyard::start_in(dir.path(), &config, &[]);
    eventually(Duration::from_secs(90), "every record delivered after the restart", async || {
        (values_seen(&function).len() == 3000).then_some(())
    })
    .await;
    let all: Vec<String> = function.received().iter().flat_map(records).map(|(_, _, v)| v).collect();
    let duplicates = all.len() - 3000;
    println!("delivered {} records, {duplicates} duplicates", all.len());
    assert!(function.received().len() > before_restart, "the restarted process delivered");
    // Offsets are committed every 100 ms: duplicates come only from the
    // batches in flight at the kill and the last 100 ms of work (2 partitions,
    // batch 50, about 1000 records/s).
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for v in &all {
        *counts.entry(v.as_str()).or_default() += 1;
    }
    assert!(counts.values().all(|&n| n <= 2), "no record delivered more than twice");
    assert!(
        duplicates <= 300,
        "{duplicates} duplicates of {seen_before_kill} delivered before the kill: more than the batches in flight"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallelization_keeps_order_per_key_within_a_partition() {
    let brokers = tansu();
    let topic = unique("keyed");
    create_topic(&brokers, &topic, 1).await;
    let sent: Vec<(String, String)> = (0..120).map(|i| (format!("k{}", i % 6), format!("{}:{i:03}", i % 6))).collect();
    produce(&producer(&brokers), &topic, &sent).await;
    // Slow enough that lanes overlap.
    let function = FunctionServer::start_with_delay(Duration::from_millis(30), |_, _| (200, vec![], "{}".into())).await;
    let extra = "    batch: { size: 5, window: 20ms }\n    parallelization: 3\n";
    let _sy =
        Switchyard::start(&common::config(&function.url(), "", &kafka_mapping(&brokers, &topic, &unique("g"), extra)));
    eventually(Duration::from_secs(60), "all 120 records delivered", async || {
        (values_seen(&function).len() == 120).then_some(())
    })
    .await;
    assert!(function.max_in_flight() > 1, "batches of one partition ran in parallel");
    let mut last: HashMap<String, String> = HashMap::new();
    for r in function.received() {
        for (_, _, value) in records(&r) {
            let (key, n) = value.split_once(':').unwrap();
            if let Some(prev) = last.insert(key.to_string(), n.to_string()) {
                assert!(n > prev.as_str(), "key {key}: {n} after {prev}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_invocation_results_reach_a_kafka_destination() {
    let brokers = tansu();
    let topic = unique("results");
    create_topic(&brokers, &topic, 1).await;
    let function = FunctionServer::start(|_, _| (200, vec![], json!({"done": true}).to_string())).await;
    let extra = format!("    async:\n      on_success: {{ kafka: {{ brokers: \"{brokers}\", topic: {topic} }} }}\n");
    let sy = Switchyard::start(&common::config(&function.url(), &extra, ""));
    let response = common::client()
        .post(sy.url("/2015-03-31/functions/f/invocations"))
        .header("x-amz-invocation-type", "Event")
        .body(r#"{"order": 9}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let record = first_json_message(&brokers, &topic).await;
    assert_eq!(record["requestContext"]["condition"], "Success");
    assert_eq!(record["requestPayload"], json!({"order": 9}));
    assert_eq!(record["responsePayload"], json!({"done": true}));
}
