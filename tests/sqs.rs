//! SQS mappings end to end: the real binary polling moto's SQS API
//! (started by scripts/test on 127.0.0.1:4566), into an HTTP function and
//! into an unmodified Python handler using Powertools' BatchProcessor.

#![cfg(feature = "sqs")]

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::{FunctionServer, Switchyard, eventually};
use serde_json::{Value, json};

fn endpoint() -> String {
    std::env::var("SWITCHYARD_TEST_SQS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4566".to_string())
}

fn python() -> String {
    std::env::var("SWITCHYARD_TEST_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-venv/bin/python").to_string())
}

/// tests/python/sqs.py with boto3; its JSON answer.
fn sqs(args: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/sqs.py");
    let out = Command::new(python())
        .arg(script)
        .arg(endpoint())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; run scripts/test, which installs boto3", python()));
    assert!(
        out.status.success(),
        "sqs.py {args:?} failed (is moto running on {}? scripts/test starts it): {}",
        endpoint(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn config(function: &str, mapping: &str) -> String {
    format!(
        "server: {{ listen: 127.0.0.1:0 }}\nstate: {{ dir: STATE_DIR }}\nfunctions:\n{function}mappings:\n{mapping}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_the_function_in_lambdas_shape_and_are_deleted() {
    let queue = sqs(&["create", &unique("jobs")]);
    let url = queue["url"].as_str().unwrap().to_string();
    let bodies: Vec<String> = (0..15).map(|i| json!({"job": i}).to_string()).collect();
    sqs(&["send", &url, &serde_json::to_string(&bodies).unwrap()]);

    let function = FunctionServer::echo().await;
    let mapping = format!(
        "  - name: jobs\n    function: f\n    source: {{ sqs: {{ queue_url: \"{url}\", endpoint_url: \"{}\", region: us-east-1, wait_time: 1s }} }}\n    batch: {{ size: 5 }}\n    filters: [ {{ pattern: {{ body: {{ job: [{{ numeric: [\"<\", 12] }}] }} }} }} ]\n",
        endpoint()
    );
    let dir = tempfile::tempdir().unwrap();
    let _sy = Switchyard::start_in(
        dir.path(),
        &config(&format!("  f:\n    http: {{ url: {} }}\n", function.url()), &mapping),
        &[("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")],
    );
    let jobs = eventually(Duration::from_secs(60), "jobs 0..12 at the function", async || {
        let mut jobs: Vec<i64> = function
            .received()
            .iter()
            .flat_map(|r| r.body["Records"].as_array().cloned().unwrap_or_default())
            .map(|m| serde_json::from_str::<Value>(m["body"].as_str().unwrap()).unwrap()["job"].as_i64().unwrap())
            .collect();
        // A standard queue delivers at least once: a message may come twice
        // (moto's concurrent receives can hand one out to two pollers under
        // load), so what is checked is which jobs came.
        jobs.sort();
        jobs.dedup();
        (jobs.len() >= 12).then_some(jobs)
    })
    .await;
    assert_eq!(jobs, (0..12).collect::<Vec<_>>(), "the filter kept jobs 0..12");
    let record = &function.received()[0].body["Records"][0];
    assert_eq!(record["eventSource"], "aws:sqs");
    assert!(record["eventSourceARN"].as_str().unwrap().starts_with("arn:aws:sqs:us-east-1:"), "{record}");
    assert!(record["receiptHandle"].is_string() && record["md5OfBody"].is_string(), "{record}");
    assert_eq!(record["attributes"]["ApproximateReceiveCount"], "1");
    for r in function.received() {
        assert!(r.body["Records"].as_array().unwrap().len() <= 5);
    }
    // Delivered and filtered messages alike are deleted.
    eventually(Duration::from_secs(30), "the queue to be empty", async || {
        (sqs(&["count", &url]) == json!(0)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn powertools_partial_failures_retry_only_the_failed_message_then_redrive_it() {
    let dlq = sqs(&["create", &unique("jobs-dlq")]);
    let queue = sqs(&["create", &unique("jobs"), dlq["arn"].as_str().unwrap(), "2"]);
    let url = queue["url"].as_str().unwrap().to_string();
    let bodies: Vec<String> =
        (0..6).map(|i| if i == 3 { json!({"n": i, "fail": true}) } else { json!({"n": i}) }.to_string()).collect();
    let ids: Vec<String> =
        serde_json::from_value(sqs(&["send", &url, &serde_json::to_string(&bodies).unwrap()])).unwrap();

    let function = format!(
        "  batch:\n    lambda: {{ command: [\"{}\", -m, awslambdaric], handler: app.handler, dir: {}, timeout: 20s }}\n    concurrency: 1\n",
        python(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/functions/python-batch"),
    );
    let mapping = format!(
        "  - name: jobs\n    function: batch\n    source: {{ sqs: {{ queue_url: \"{url}\", endpoint_url: \"{}\", wait_time: 1s, visibility_timeout: 5s }} }}\n    batch: {{ size: 10, window: 2s }}\n    report_batch_item_failures: true\n    retry: {{ max_attempts: 0 }}\n",
        endpoint()
    );
    let dir = tempfile::tempdir().unwrap();
    let sy = Switchyard::start_in(
        dir.path(),
        &config(&function, &mapping),
        &[("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")],
    );
    // The queue's redrive policy moves the failing message after two receives.
    let dead = eventually(Duration::from_secs(90), "the failing message in the DLQ", async || {
        let got = sqs(&["drain", dlq["url"].as_str().unwrap()]);
        got.as_array().filter(|l| !l.is_empty()).cloned()
    })
    .await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(serde_json::from_str::<Value>(dead[0]["body"].as_str().unwrap()).unwrap()["n"], 3);
    eventually(Duration::from_secs(30), "the queue to be empty", async || {
        (sqs(&["count", &url]) == json!(0)).then_some(())
    })
    .await;

    // The handler's own log lines (captured by Switchyard): each good message
    // processed, the failing one on each of its two receives. A good message
    // may be processed twice when a receive outlives the visibility timeout on
    // a slow server: that is at-least-once, and the DLQ above holding only the
    // failing message shows that no good one was handed back as failed.
    let mut processed: HashMap<String, usize> = HashMap::new();
    for line in sy.logs() {
        if let Some(id) = line["message"].as_str().and_then(|m| m.strip_prefix("processing ")) {
            *processed.entry(id.to_string()).or_default() += 1;
        }
    }
    for (i, id) in ids.iter().enumerate() {
        let times = processed.get(id).copied().unwrap_or(0);
        if i == 3 {
            assert_eq!(times, 2, "the failing message {id}, once per receive: {processed:?}");
        } else {
            assert!(times >= 1, "good message {i} ({id}) was never processed: {processed:?}");
        }
    }
}
