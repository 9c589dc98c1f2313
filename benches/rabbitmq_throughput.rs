//! RabbitMQ mapping throughput: messages/s from a pre-filled queue through
//! Switchyard to a trivial HTTP function, against a bare lapin consumer with
//! the same prefetch and multiple-acks, in the same run (docs/benchmarks.md).
//!
//! Needs RabbitMQ at AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f).
//! `cargo bench --bench rabbitmq_throughput` (optionally `-- --messages 20000`)

mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

const PREFETCH: u16 = 100;

fn short(s: &str) -> ShortString {
    ShortString::try_new(s).expect("short string")
}

async fn channel(url: &str) -> (Connection, Channel) {
    let connection = Connection::connect(url, ConnectionProperties::default()).await.expect("RabbitMQ reachable");
    let channel = connection.create_channel().await.expect("channel");
    (connection, channel)
}

async fn prefill(url: &str, queue: &str, messages: usize) {
    let (_c, ch) = channel(url).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    ch.queue_declare(short(queue), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await
        .expect("declare");
    let body = vec![b'x'; 200];
    let mut confirms = Vec::with_capacity(1000);
    for _ in 0..messages {
        let confirm = ch
            .basic_publish(short(""), short(queue), BasicPublishOptions::default(), &body, BasicProperties::default())
            .await
            .expect("publish");
        confirms.push(confirm);
        if confirms.len() == 1000 {
            for c in confirms.drain(..) {
                c.await.expect("confirm");
            }
        }
    }
    for c in confirms {
        c.await.expect("confirm");
    }
}

/// Reads `messages` with the same prefetch, acking every 50 with `multiple`.
async fn bare_consumer(url: &str, queue: &str, messages: usize) -> Duration {
    let (_c, ch) = channel(url).await;
    ch.basic_qos(PREFETCH, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = ch
        .basic_consume(short(queue), short("bare"), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let started = Instant::now();
    let mut n = 0;
    while n < messages {
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("messages keep coming")
            .expect("stream open")
            .expect("delivery");
        n += 1;
        if n % 50 == 0 || n == messages {
            delivery.acker.ack(BasicAckOptions { multiple: true }).await.expect("ack");
        }
    }
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let messages = support::arg("--messages", 20_000);
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let bare_queue = format!("bench-bare-{}", uuid::Uuid::new_v4().simple());
    let sy_queue = format!("bench-sy-{}", uuid::Uuid::new_v4().simple());
    prefill(&url, &bare_queue, messages).await;
    prefill(&url, &sy_queue, messages).await;

    let bare = bare_consumer(&url, &bare_queue, messages).await;

    let count = Arc::new(AtomicUsize::new(0));
    let function = support::counting_function("rmqMessagesByQueue", count.clone()).await;
    let config = format!(
        "server:\n  listen: 127.0.0.1:0\nstate:\n  dir: STATE_DIR\nfunctions:\n  f:\n    http: {{ url: http://{function}/ }}\nmappings:\n  - name: bench\n    source:\n      rabbitmq:\n        url: \"{url}\"\n        queue: {sy_queue}\n        prefetch: {PREFETCH}\n    batch: {{ size: 100, window: 100ms }}\n    function: f\n"
    );
    let run = support::run_until(&config, &count, messages).await;
    let (_c, ch) = channel(&url).await;
    for q in [&bare_queue, &sy_queue] {
        let _ = ch.queue_delete(short(q), QueueDeleteOptions::default()).await;
    }
    support::Report {
        title: format!("RabbitMQ throughput ({messages} messages of 200 B, prefetch {PREFETCH}, batch 100)"),
        unit: "messages",
        total: messages,
        bare_label: "bare lapin consumer (multiple-ack every 50)",
        bare,
        switchyard_label: "Switchyard → HTTP function (includes start-up)",
        run,
        goal: 0.7,
    }
    .print();
}
