//! RabbitMQ mapping throughput: messages/s from a pre-filled queue through
//! Switchyard to a trivial HTTP function, against a bare lapin consumer with
//! the same prefetch and multiple-acks, in the same run (docs/benchmarks.md).
//!
//! Needs RabbitMQ at AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f).
//! `cargo bench --bench rabbitmq_throughput` (optionally `-- --messages 20000
//! --prefetch 100 --batch 100 --rounds 5`; with rounds, the pairs of runs repeat on
//! fresh queues and the median ratio closes the report)

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

/// Reads `messages` with the same prefetch, acking every half prefetch with
/// `multiple`.
async fn bare_consumer(url: &str, queue: &str, messages: usize, prefetch: u16) -> Duration {
    let (_c, ch) = channel(url).await;
    ch.basic_qos(prefetch, BasicQosOptions::default()).await.expect("qos");
    let ack_every = usize::from(prefetch / 2).max(1);
    let mut consumer = ch
        .basic_consume(short(queue), short("bare"), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let mut started = None;
    let mut n = 0;
    while n < messages {
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("messages keep coming")
            .expect("stream open")
            .expect("delivery");
        started.get_or_insert_with(Instant::now);
        n += 1;
        if n % ack_every == 0 || n == messages {
            delivery.acker.ack(BasicAckOptions { multiple: true }).await.expect("ack");
        }
    }
    started.map_or(Duration::ZERO, |s| s.elapsed())
}

#[tokio::main]
async fn main() {
    let messages = support::arg("--messages", 20_000);
    let prefetch = support::arg("--prefetch", 100) as u16;
    let batch = support::arg("--batch", 100);
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    support::rounds(|| round(&url, messages, prefetch, batch)).await;
}

/// One pair of runs on freshly filled queues: the bare consumer, then Switchyard.
async fn round(url: &str, messages: usize, prefetch: u16, batch: usize) -> support::Report<'static> {
    let bare_queue = format!("bench-bare-{}", uuid::Uuid::new_v4().simple());
    let sy_queue = format!("bench-sy-{}", uuid::Uuid::new_v4().simple());
    prefill(url, &bare_queue, messages).await;
    prefill(url, &sy_queue, messages).await;

    let bare = bare_consumer(url, &bare_queue, messages, prefetch).await;

    let count = Arc::new(AtomicUsize::new(0));
    let function = support::counting_function("rmqMessagesByQueue", count.clone()).await;
    let config = format!(
        "server:\n  listen: 127.0.0.1:0\nstate:\n  dir: STATE_DIR\nfunctions:\n  f:\n    http: {{ url: http://{function}/ }}\nmappings:\n  - name: bench\n    source:\n      rabbitmq:\n        url: \"{url}\"\n        queue: {sy_queue}\n        prefetch: {prefetch}\n    batch: {{ size: {batch}, window: 100ms }}\n    function: f\n"
    );
    let run = support::run_until(&config, &count, messages).await;
    let (_c, ch) = channel(url).await;
    for q in [&bare_queue, &sy_queue] {
        let _ = ch.queue_delete(short(q), QueueDeleteOptions::default()).await;
    }
    support::Report {
        title: format!("RabbitMQ throughput ({messages} messages of 200 B, prefetch {prefetch}, batch {batch})"),
        unit: "messages",
        total: messages,
        bare_label: "bare lapin consumer (multiple-ack every half prefetch)",
        bare,
        bare_cpu: None,
        switchyard_label: "Switchyard → HTTP function (from the first records at the function)",
        run,
        goal: 0.7,
    }
}
