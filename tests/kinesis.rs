//! Kinesis mappings end to end: the real binary reading moto's Kinesis API
//! (started by scripts/test on 127.0.0.1:4566), checkpoints in the embedded
//! state, failures to a Kinesis stream.

#![cfg(feature = "kinesis")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::{FunctionServer, Switchyard, eventually};
use serde_json::{Value, json};

fn endpoint() -> String {
    std::env::var("SWITCHYARD_TEST_KINESIS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4566".to_string())
}

fn python() -> String {
    std::env::var("SWITCHYARD_TEST_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-venv/bin/python").to_string())
}

/// tests/python/kinesis.py with boto3; its JSON answer.
fn kinesis(args: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/kinesis.py");
    let out = Command::new(python())
        .arg(script)
        .arg(endpoint())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; run scripts/test, which installs boto3", python()));
    assert!(
        out.status.success(),
        "kinesis.py {args:?} failed (is moto running on {}? scripts/test starts it): {}",
        endpoint(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Puts readings `range`, spread over eight partition keys.
fn put_readings(stream: &str, range: std::ops::Range<i64>) {
    let records: Vec<(String, String)> =
        range.map(|n| (format!("device-{}", n % 8), json!({"n": n}).to_string())).collect();
    kinesis(&["put", stream, &serde_json::to_string(&records).unwrap()]);
}

const CREDENTIALS: &[(&str, &str)] = &[("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")];

/// Every Kinesis record the function got, in arrival order.
fn records(function: &FunctionServer) -> Vec<Value> {
    function.received().iter().flat_map(|r| r.body["Records"].as_array().cloned().unwrap_or_default()).collect()
}

fn reading(record: &Value) -> Option<i64> {
    let data = base64::engine::general_purpose::STANDARD.decode(record["kinesis"]["data"].as_str()?).ok()?;
    serde_json::from_slice::<Value>(&data).ok()?["n"].as_i64()
}

/// Sequence numbers are decimal strings of up to 56 digits.
fn sequence_key(record: &Value) -> (usize, String) {
    let s = record["kinesis"]["sequenceNumber"].as_str().unwrap().to_string();
    (s.len(), s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shard_in_order_filtered_on_data_and_checkpoints_survive_a_kill_9() {
    let stream = format!("clicks-{}", uuid::Uuid::new_v4().simple());
    kinesis(&["create", &stream, "2"]);
    put_readings(&stream, 0..40);
    kinesis(&["put", &stream, r#"[["device-0", "not json: filtered out"]]"#]);

    let function = FunctionServer::echo().await;
    let mapping = format!(
        "  - name: clicks\n    function: f\n    source: {{ kinesis: {{ stream: {stream}, endpoint_url: \"{}\", region: us-east-1, starting_position: trim_horizon, poll_interval: 200ms }} }}\n    batch: {{ size: 10, window: 100ms }}\n    filters: [ {{ pattern: {{ data: {{ n: [{{ numeric: [\">=\", 0] }}] }} }} }} ]\n",
        endpoint()
    );
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&function.url(), "", &mapping);
    let mut sy = Switchyard::start_in(dir.path(), &config, CREDENTIALS);
    let seen = |function: &FunctionServer| records(function).iter().filter_map(reading).collect::<BTreeSet<_>>();
    eventually(Duration::from_secs(60), "readings 0..40", async || (seen(&function).len() == 40).then_some(())).await;

    // Lambda's record, and each shard's records in sequence order.
    let all = records(&function);
    assert_eq!(all.len(), 40, "the text record was filtered out, none repeated");
    let first = &all[0];
    assert_eq!(
        (first["eventSource"].as_str(), first["eventName"].as_str()),
        (Some("aws:kinesis"), Some("aws:kinesis:record"))
    );
    assert!(first["eventSourceARN"].as_str().unwrap().ends_with(&format!(":stream/{stream}")), "{first}");
    assert!(first["kinesis"]["partitionKey"].as_str().unwrap().starts_with("device-"), "{first}");
    let mut by_shard: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
    for record in &all {
        let shard = record["eventID"].as_str().unwrap().split(':').next().unwrap().to_string();
        by_shard.entry(shard).or_default().push(sequence_key(record));
    }
    assert_eq!(by_shard.len(), 2, "both shards were read");
    for (shard, sequences) in &by_shard {
        assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{shard} out of order: {sequences:?}");
    }

    // Checkpoints are written within 100 ms of a record finishing: after a
    // SIGKILL, reading resumes after them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    sy.kill9();
    put_readings(&stream, 40..60);
    let sy = Switchyard::start_in(dir.path(), &config, CREDENTIALS);
    eventually(Duration::from_secs(60), "readings 40..60 after the restart", async || {
        (seen(&function).len() == 60).then_some(())
    })
    .await;
    let again = records(&function).len() - 60;
    assert_eq!(again, 0, "records finished before the kill were read again: the checkpoint was not kept");
    let v: Value = common::client().get(sy.url("/v1/mappings")).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["mappings"][0]["config"]["stream"], json!(stream));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_reaches_a_kinesis_stream_on_failure() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (stream, dead) = (format!("orders-{id}"), format!("orders-dead-{id}"));
    kinesis(&["create", &stream, "1"]);
    kinesis(&["create", &dead, "1"]);
    put_readings(&stream, 0..10);
    kinesis(&["put", &stream, r#"[["device-1", "{\"n\": 99, \"poison\": true}"]]"#]);
    put_readings(&stream, 10..20);

    let function = FunctionServer::start(|r, _| {
        let poisoned = r.body["Records"].as_array().into_iter().flatten().any(|rec| reading(rec) == Some(99));
        if poisoned { (500, vec![], "{}".into()) } else { (200, vec![], "{}".into()) }
    })
    .await;
    let mapping = format!(
        "  - name: orders\n    function: f\n    source: {{ kinesis: {{ stream: {stream}, endpoint_url: \"{e}\", region: us-east-1, starting_position: trim_horizon, poll_interval: 200ms }} }}\n    batch: {{ size: 5, window: 100ms }}\n    retry: {{ max_attempts: 1, bisect_on_error: true, backoff: {{ initial: 50ms, max: 100ms }} }}\n    on_failure: {{ kinesis: {{ stream: {dead}, endpoint_url: \"{e}\", region: us-east-1 }} }}\n",
        e = endpoint()
    );
    let dir = tempfile::tempdir().unwrap();
    let _sy = Switchyard::start_in(dir.path(), &common::config(&function.url(), "", &mapping), CREDENTIALS);
    let delivered = || {
        let ok: Vec<Value> = function
            .received()
            .iter()
            .filter(|r| !r.body["Records"].as_array().into_iter().flatten().any(|rec| reading(rec) == Some(99)))
            .flat_map(|r| r.body["Records"].as_array().cloned().unwrap_or_default())
            .collect();
        ok.iter().filter_map(reading).collect::<BTreeSet<_>>()
    };
    eventually(Duration::from_secs(60), "the 20 good readings", async || (delivered().len() == 20).then_some(())).await;
    let failure = eventually(Duration::from_secs(30), "the failure record on the dead stream", async || {
        let got: Vec<String> = serde_json::from_value(kinesis(&["read", &dead])).ok()?;
        got.first().and_then(|text| serde_json::from_str::<Value>(text).ok())
    })
    .await;
    assert_eq!(failure["requestContext"]["condition"], "RetryAttemptsExhausted", "{failure}");
    let info = &failure["KinesisBatchInfo"];
    assert_eq!(info["batchSize"], 1, "bisect isolated the poison record: {failure}");
    assert!(info["shardId"].as_str().is_some_and(|s| s.starts_with("shardId-")), "{failure}");
}
