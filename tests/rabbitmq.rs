//! RabbitMQ mappings end to end: the real binary consuming the real broker
//! (127.0.0.1:5672, guest/guest, running on every machine of this project).

#![cfg(feature = "rabbitmq")]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{FunctionServer, Received, Switchyard, eventually};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

fn short(s: &str) -> ShortString {
    ShortString::try_new(s).unwrap()
}

async fn channel() -> (Connection, Channel) {
    let url = amqp_url();
    let connection = Connection::connect(&url, ConnectionProperties::default()).await.unwrap_or_else(|e| {
        panic!("RabbitMQ at {url} is not reachable ({e}); it runs on every machine of this project")
    });
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    (connection, channel)
}

/// A fresh durable queue, with `args` (dead-lettering).
async fn declare(channel: &Channel, name: &str, args: FieldTable) {
    channel
        .queue_declare(short(name), QueueDeclareOptions { durable: true, ..Default::default() }, args)
        .await
        .unwrap_or_else(|e| panic!("declare {name}: {e}"));
}

async fn delete(channel: &Channel, name: &str) {
    let _ = channel.queue_delete(short(name), QueueDeleteOptions::default()).await;
}

/// Publishes each body to `queue` with its body as message id, and waits for
/// the broker's confirms.
async fn publish(channel: &Channel, queue: &str, bodies: &[String]) {
    for body in bodies {
        let properties = BasicProperties::default().with_message_id(short(body)).with_delivery_mode(2);
        channel
            .basic_publish(short(""), short(queue), BasicPublishOptions::default(), body.as_bytes(), properties)
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

/// Takes every message now in `queue`.
async fn drain(channel: &Channel, queue: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(message) = channel.basic_get(short(queue), BasicGetOptions::default()).await.unwrap() {
        message.delivery.acker.ack(BasicAckOptions::default()).await.unwrap();
        out.push(message.delivery.data.clone());
    }
    out
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn mapping(queue: &str, extra: &str) -> String {
    format!(
        "  - name: telemetry\n    source:\n      rabbitmq:\n        url: \"{}\"\n        queue: {queue}\n        prefetch: 50\n    function: f\n{extra}",
        amqp_url()
    )
}

/// The bodies of one invocation, in order.
fn bodies(r: &Received) -> Vec<String> {
    r.body["rmqMessagesByQueue"]
        .as_object()
        .expect("rmqMessagesByQueue")
        .values()
        .flat_map(|l| l.as_array().unwrap().clone())
        .map(|m| String::from_utf8(BASE64.decode(m["data"].as_str().unwrap()).unwrap()).unwrap())
        .collect()
}

fn seen(f: &FunctionServer) -> HashSet<String> {
    f.received().iter().flat_map(bodies).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_the_function_in_lambdas_shape_and_are_acked() {
    let (_conn, ch) = channel().await;
    let queue = unique("telemetry");
    declare(&ch, &queue, FieldTable::default()).await;
    let sent: Vec<String> = (0..30).map(|i| format!("m{i:02}")).collect();
    publish(&ch, &queue, &sent).await;

    let function = FunctionServer::echo().await;
    let mut sy = Switchyard::start(&common::config(
        &function.url(),
        "",
        &mapping(&queue, "    batch: { size: 10, window: 100ms }\n"),
    ));
    eventually(Duration::from_secs(30), "all 30 messages at the function", async || {
        (seen(&function).len() == 30).then_some(())
    })
    .await;

    let event = &function.received()[0].body;
    assert_eq!(event["eventSource"], "aws:rmq");
    assert!(event["eventSourceArn"].as_str().unwrap().starts_with("arn:aws:mq:"));
    let message = &event["rmqMessagesByQueue"][format!("{queue}::/")][0];
    assert_eq!(message["basicProperties"]["deliveryMode"], 2);
    assert!(message["basicProperties"]["messageId"].as_str().unwrap().starts_with('m'));
    assert_eq!(message["redelivered"], false);
    for r in function.received() {
        let b = bodies(&r);
        assert!(b.len() <= 10);
        assert!(b.windows(2).all(|w| w[0] < w[1]), "order within a batch: {b:?}");
    }
    // Every message was acknowledged: the queue is empty once the consumer
    // stops. Stopped gracefully: the function may have answered the last
    // batch a moment before its ack went out, and a SIGKILL in that moment
    // would rightly leave it to be delivered again.
    sy.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(drain(&ch, &queue).await.is_empty(), "nothing left unacknowledged");
    delete(&ch, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_failures_are_retried_then_sent_to_the_on_failure_exchange() {
    let (_conn, ch) = channel().await;
    let queue = unique("pay");
    let dlq = unique("pay-failed");
    declare(&ch, &queue, FieldTable::default()).await;
    declare(&ch, &dlq, FieldTable::default()).await;
    let sent: Vec<String> = (0..10).map(|i| if i == 4 { "poison".to_string() } else { format!("m{i}") }).collect();
    publish(&ch, &queue, &sent).await;

    // The function names the poison message (by message id) as failed, every time.
    let function = FunctionServer::start(|r, _| {
        let failed: Vec<Value> =
            bodies(r).into_iter().filter(|b| b == "poison").map(|b| json!({"itemIdentifier": b})).collect();
        (200, vec![], json!({"batchItemFailures": failed}).to_string())
    })
    .await;
    let extra = format!(
        "    batch: {{ size: 10, window: 200ms }}\n    report_batch_item_failures: true\n    retry: {{ max_attempts: 2, backoff: {{ initial: 50ms, max: 100ms }} }}\n    on_failure: {{ rabbitmq: {{ url: \"{}\", exchange: \"\", routing_key: {dlq} }} }}\n",
        amqp_url()
    );
    let _sy = Switchyard::start(&common::config(&function.url(), "", &mapping(&queue, &extra)));
    let failure = eventually(Duration::from_secs(30), "the failure record", async || {
        let got = drain(&ch, &dlq).await;
        got.first().map(|b| serde_json::from_slice::<Value>(b).unwrap())
    })
    .await;
    assert_eq!(failure["requestContext"]["condition"], "RetryAttemptsExhausted");
    assert_eq!(failure["requestContext"]["approximateInvokeCount"], 3);
    let failed: Vec<Value> = failure["requestPayload"]["rmqMessagesByQueue"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|l| l.as_array().unwrap().clone())
        .collect();
    assert_eq!(failed.len(), 1, "only the poison message failed: {failure}");
    assert_eq!(failed[0]["data"], BASE64.encode("poison"));
    let poison_tries = function.received().iter().filter(|r| bodies(r).contains(&"poison".to_string())).count();
    assert_eq!(poison_tries, 3, "the poison message: one try and two retries");
    let others: Vec<String> = function.received().iter().flat_map(bodies).filter(|b| b != "poison").collect();
    assert_eq!(others.len(), 9, "the other messages were delivered once: {others:?}");
    delete(&ch, &queue).await;
    delete(&ch, &dlq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_on_failure_failed_messages_go_to_the_queues_dead_letter_exchange() {
    let (_conn, ch) = channel().await;
    let queue = unique("orders");
    let dlx = unique("orders-dlx");
    declare(&ch, &dlx, FieldTable::default()).await;
    let mut args = FieldTable::default();
    args.insert(short("x-dead-letter-exchange"), AMQPValue::LongString("".into()));
    args.insert(short("x-dead-letter-routing-key"), AMQPValue::LongString(dlx.as_str().into()));
    declare(&ch, &queue, args).await;
    publish(&ch, &queue, &["good".to_string(), "bad".to_string()]).await;

    let function = FunctionServer::start(|r, _| {
        if bodies(r).contains(&"bad".to_string()) { (500, vec![], "{}".into()) } else { (200, vec![], "{}".into()) }
    })
    .await;
    let extra = "    batch: { size: 1 }\n    retry: { max_attempts: 1, backoff: { initial: 50ms, max: 50ms } }\n";
    let _sy = Switchyard::start(&common::config(&function.url(), "", &mapping(&queue, extra)));
    let dead = eventually(Duration::from_secs(30), "the rejected message in the dead-letter queue", async || {
        let got = drain(&ch, &dlx).await;
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(dead, vec![b"bad".to_vec()]);
    assert!(seen(&function).contains("good"));
    delete(&ch, &queue).await;
    delete(&ch, &dlx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_loses_nothing() {
    let (_conn, ch) = channel().await;
    let queue = unique("crash");
    declare(&ch, &queue, FieldTable::default()).await;
    let sent: Vec<String> = (0..1000).map(|i| format!("m{i:04}")).collect();
    publish(&ch, &queue, &sent).await;
    let function = FunctionServer::start_with_delay(Duration::from_millis(50), |_, _| (200, vec![], "{}".into())).await;
    let config = common::config(&function.url(), "", &mapping(&queue, "    batch: { size: 20, window: 20ms }\n"));
    let dir = tempfile::tempdir().unwrap();
    let mut first = Switchyard::start_in(dir.path(), &config, &[]);
    eventually(Duration::from_secs(30), "some messages delivered", async || {
        (seen(&function).len() >= 300).then_some(())
    })
    .await;
    first.kill9();
    let _second = Switchyard::start_in(dir.path(), &config, &[]);
    eventually(Duration::from_secs(60), "every message delivered after the restart", async || {
        (seen(&function).len() == 1000).then_some(())
    })
    .await;
    let all: Vec<String> = function.received().iter().flat_map(bodies).collect();
    println!("delivered {} messages, {} duplicates", all.len(), all.len() - 1000);
    delete(&ch, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_switchyards_compete_for_one_queue() {
    let (_conn, ch) = channel().await;
    let queue = unique("shared");
    declare(&ch, &queue, FieldTable::default()).await;
    let (a, b) = (
        FunctionServer::start_with_delay(Duration::from_millis(20), |_, _| (200, vec![], "{}".into())).await,
        FunctionServer::start_with_delay(Duration::from_millis(20), |_, _| (200, vec![], "{}".into())).await,
    );
    let m = mapping(&queue, "    batch: { size: 10, window: 20ms }\n");
    let _one = Switchyard::start(&common::config(&a.url(), "", &m));
    let _two = Switchyard::start(&common::config(&b.url(), "", &m));
    let sent: Vec<String> = (0..400).map(|i| format!("m{i:03}")).collect();
    publish(&ch, &queue, &sent).await;
    eventually(Duration::from_secs(60), "all 400 delivered by the pair", async || {
        let mut all = seen(&a);
        all.extend(seen(&b));
        (all.len() == 400).then_some(())
    })
    .await;
    assert!(!a.received().is_empty() && !b.received().is_empty(), "both consumers took messages");
    delete(&ch, &queue).await;
}
