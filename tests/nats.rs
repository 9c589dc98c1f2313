//! NATS JetStream mappings end to end: the real binary with a durable pull
//! consumer on the real NATS server (127.0.0.1:4222, JetStream on, running on
//! every machine of this project).

#![cfg(feature = "nats")]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{FunctionServer, Switchyard, eventually};
use serde_json::{Value, json};

fn url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string())
}

fn seen(function: &FunctionServer) -> BTreeSet<i64> {
    use base64::Engine as _;
    function
        .received()
        .iter()
        .flat_map(|r| r.body["records"].as_array().cloned().unwrap_or_default())
        .filter_map(|rec| {
            let data = base64::engine::general_purpose::STANDARD.decode(rec["data"].as_str()?).ok()?;
            serde_json::from_slice::<Value>(&data).ok()?["n"].as_i64()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_consumer_delivers_everything_across_a_kill_9_and_poison_goes_to_a_nats_subject() {
    let client = async_nats::connect(url())
        .await
        .unwrap_or_else(|e| panic!("NATS at {} is not reachable ({e}); scripts/test starts it", url()));
    let js = async_nats::jetstream::new(client);
    let id = uuid::Uuid::new_v4().simple().to_string();
    let stream = format!("ORDERS_{id}");
    let subject = format!("orders-{id}");
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{subject}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    let publish = async |range: std::ops::Range<i64>| {
        for n in range {
            let body = if n == 7 { json!({"n": n, "poison": true}) } else { json!({"n": n}) };
            js.publish(format!("{subject}.new"), body.to_string().into()).await.unwrap().await.unwrap();
        }
    };
    publish(0..30).await;

    // The function fails every batch holding the poison order.
    let function = FunctionServer::start(|r, _| {
        let poisoned = r.body["records"].as_array().into_iter().flatten().any(|rec| {
            use base64::Engine as _;
            let data = base64::engine::general_purpose::STANDARD
                .decode(rec["data"].as_str().unwrap_or(""))
                .unwrap_or_default();
            serde_json::from_slice::<Value>(&data).is_ok_and(|v| v["poison"] == true)
        });
        if poisoned { (500, vec![], "{}".into()) } else { (200, vec![], "{}".into()) }
    })
    .await;
    let mapping = format!(
        "  - name: orders\n    function: f\n    source: {{ nats: {{ url: \"{url}\", stream: {stream}, consumer: sy-{id}, subjects: [\"{subject}.>\"], ack_wait: 5s }} }}\n    batch: {{ size: 10, window: 200ms }}\n    retry: {{ max_attempts: 1, bisect_on_error: true, backoff: {{ initial: 50ms, max: 100ms }} }}\n    on_failure: {{ nats: {{ url: \"{url}\", subject: {subject}.dead }} }}\n",
        url = url()
    );
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&function.url(), "", &mapping);
    let mut sy = Switchyard::start_in(dir.path(), &config, &[]);
    eventually(Duration::from_secs(30), "the first 29 orders", async || (seen(&function).len() >= 29).then_some(()))
        .await;
    sy.kill9();
    publish(30..50).await;
    let _sy = Switchyard::start_in(dir.path(), &config, &[]);
    eventually(Duration::from_secs(30), "all 50 orders", async || (seen(&function).len() >= 50).then_some(())).await;
    assert_eq!(seen(&function), (0..50).collect::<BTreeSet<_>>());

    // The poison order alone reached the dead subject, in the on-failure record.
    let dead_stream = js.get_stream(&stream).await.unwrap();
    let dead = eventually(
        Duration::from_secs(60),
        "the failure record on the dead subject (after the killed consumer's ack wait)",
        async || dead_stream.get_last_raw_message_by_subject(&format!("{subject}.dead")).await.ok(),
    )
    .await;
    let record: Value = serde_json::from_slice(&dead.payload).unwrap();
    assert_eq!(record["requestContext"]["condition"], "RetryAttemptsExhausted");
    let failed = record["requestPayload"]["records"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "bisect isolated the poison order: {record}");
    js.delete_stream(&stream).await.unwrap();
}
