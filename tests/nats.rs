//! NATS JetStream mappings end to end: the real binary with a durable pull
//! consumer on the real NATS server (127.0.0.1:4222, JetStream on, running on
//! every machine of this project, or a second server of the test's own when
//! the test restarts its broker).

#![cfg(feature = "nats")]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{BrokerProcess, FunctionServer, Switchyard, eventually};
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

async fn connect(url: &str) -> async_nats::jetstream::Context {
    let client = async_nats::connect(url)
        .await
        .unwrap_or_else(|e| panic!("NATS at {url} is not reachable ({e}); scripts/test starts it"));
    async_nats::jetstream::new(client)
}

/// Creates a stream of the test's own over `<subject>.>`.
async fn create_stream(js: &async_nats::jetstream::Context, stream: &str, subject: &str) {
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.to_string(),
        subjects: vec![format!("{subject}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
}

async fn publish_orders(js: &async_nats::jetstream::Context, subject: &str, range: std::ops::Range<i64>) {
    let mut acks = Vec::new();
    for n in range {
        acks.push(js.publish(format!("{subject}.new"), json!({"n": n}).to_string().into()).await.unwrap());
    }
    for ack in acks {
        ack.await.unwrap();
    }
}

async fn mapping_state(sy: &Switchyard) -> Option<Value> {
    let v: Value = common::client().get(sy.url("/v1/mappings")).send().await.ok()?.json().await.ok()?;
    Some(v["mappings"][0].clone())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_nothing() {
    // A NATS server of the test's own, with its JetStream store in a temp dir.
    let store = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let args = ["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd", &store.path().display().to_string()]
        .map(String::from);
    let mut broker = BrokerProcess::start("nats-server", &args, port);
    let url = format!("nats://127.0.0.1:{port}");
    let js = connect(&url).await;
    create_stream(&js, "ORDERS", "orders").await;
    publish_orders(&js, "orders", 0..300).await;

    let function = FunctionServer::start_with_delay(Duration::from_millis(30), |_, _| (200, vec![], "{}".into())).await;
    let mapping = format!(
        "  - name: orders\n    function: f\n    source: {{ nats: {{ url: \"{url}\", stream: ORDERS, consumer: sy-orders, ack_wait: 5s }} }}\n    batch: {{ size: 10, window: 50ms }}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let sy = Switchyard::start_in(dir.path(), &common::config(&function.url(), "", &mapping), &[]);
    eventually(Duration::from_secs(30), "some orders", async || (seen(&function).len() >= 50).then_some(())).await;

    // Killed mid-stream: acks in flight are lost with it, and JetStream
    // redelivers what it did not hear about.
    broker.stop(libc::SIGKILL);
    let state = eventually(Duration::from_secs(30), "the mapping to show it is disconnected", async || {
        mapping_state(&sy).await.filter(|m| m["state"] == "disconnected")
    })
    .await;
    assert!(state["error"].as_str().is_some_and(|e| !e.is_empty()), "{state}");
    broker.restart();
    let js = connect(&url).await;
    publish_orders(&js, "orders", 300..400).await;
    eventually(Duration::from_secs(90), "all 400 orders", async || (seen(&function).len() == 400).then_some(())).await;
    assert_eq!(mapping_state(&sy).await.unwrap()["state"], "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_durable_consumer_and_a_killed_one_loses_nothing() {
    let js = connect(&url()).await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (stream, subject) = (format!("SHARED_{id}"), format!("shared-{id}"));
    create_stream(&js, &stream, &subject).await;
    // One function per replica, to see who got what.
    let fa = FunctionServer::start_with_delay(Duration::from_millis(20), |_, _| (200, vec![], "{}".into())).await;
    let fb = FunctionServer::start_with_delay(Duration::from_millis(20), |_, _| (200, vec![], "{}".into())).await;
    // A small MaxAckPending, shared by the consumer's readers, so the first
    // replica cannot take the whole stream before the second asks.
    let config = |function: &FunctionServer| {
        let mapping = format!(
            "  - name: orders\n    function: f\n    source: {{ nats: {{ url: \"{url}\", stream: {stream}, consumer: sy-{id}, ack_wait: 3s, max_ack_pending: 20 }} }}\n    batch: {{ size: 10, window: 50ms }}\n",
            url = url()
        );
        common::config(&function.url(), "", &mapping)
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Switchyard::start_in(dir_a.path(), &config(&fa), &[]);
    let mut b = Switchyard::start_in(dir_b.path(), &config(&fb), &[]);
    let union = || seen(&fa).union(&seen(&fb)).copied().collect::<BTreeSet<_>>();
    publish_orders(&js, &subject, 0..400).await;
    eventually(Duration::from_secs(30), "some orders at each replica", async || {
        (!seen(&fa).is_empty() && !seen(&fb).is_empty()).then_some(())
    })
    .await;

    // One replica killed for good: what it held unacknowledged goes to the
    // other once the ack wait passed.
    b.kill9();
    publish_orders(&js, &subject, 400..500).await;
    eventually(Duration::from_secs(60), "all 500 orders", async || (union().len() == 500).then_some(())).await;
    assert_eq!(union(), (0..500).collect::<BTreeSet<_>>());
    drop(a);
    js.delete_stream(&stream).await.unwrap();
}
