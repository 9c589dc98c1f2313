//! NATS JetStream mapping throughput: messages/s from a pre-filled stream
//! through Switchyard to a trivial HTTP function, against a bare async-nats
//! durable pull consumer acking every message, on the same server and data in
//! the same run (docs/benchmarks.md).
//!
//! Needs NATS with JetStream at NATS_URL (default nats://127.0.0.1:4222).
//! `cargo bench --bench nats_throughput` (optionally `-- --messages 20000
//! --rounds 5`; with rounds, the pairs of runs repeat on fresh streams and the
//! median ratio closes the report)

mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;

async fn prefill(js: &jetstream::Context, subject: &str, messages: usize) {
    let body = format!("{{\"reading\":{}}}", "7".repeat(180));
    let mut acks = Vec::with_capacity(1000);
    for _ in 0..messages {
        acks.push(js.publish(subject.to_string(), body.clone().into()).await.expect("publish"));
        if acks.len() == 1000 {
            for ack in acks.drain(..) {
                ack.await.expect("stored");
            }
        }
    }
    for ack in acks {
        ack.await.expect("stored");
    }
}

/// A durable pull consumer reading the whole stream, acking each message.
async fn bare_consumer(js: &jetstream::Context, stream_name: &str, messages: usize) -> Duration {
    let stream = js.get_stream(stream_name).await.expect("stream");
    let consumer = stream
        .create_consumer(pull::Config { durable_name: Some("bare".into()), ..Default::default() })
        .await
        .expect("consumer");
    let mut started = None;
    let mut stream = consumer.messages().await.expect("pull");
    let mut n = 0;
    while n < messages {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("messages keep coming")
            .expect("stream open")
            .expect("message");
        started.get_or_insert_with(Instant::now);
        message.ack().await.expect("ack");
        n += 1;
    }
    started.map_or(Duration::ZERO, |s| s.elapsed())
}

#[tokio::main]
async fn main() {
    let messages = support::arg("--messages", 20_000);
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let client = async_nats::connect(&url).await.expect("NATS reachable");
    let js = jetstream::new(client);
    support::rounds(|| round(&js, &url, messages)).await;
}

/// One pair of runs on a fresh stream: the bare consumer, then Switchyard.
async fn round(js: &jetstream::Context, url: &str, messages: usize) -> support::Report<'static> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (stream_name, subject) = (format!("BENCH_{id}"), format!("bench-{id}"));
    js.create_stream(stream::Config {
        name: stream_name.clone(),
        subjects: vec![format!("{subject}.>")],
        ..Default::default()
    })
    .await
    .expect("create stream");
    prefill(js, &format!("{subject}.reading"), messages).await;

    let (bare, bare_cpu) = support::with_cpu(bare_consumer(js, &stream_name, messages)).await;

    let count = Arc::new(AtomicUsize::new(0));
    let function = support::counting_function("records", count.clone()).await;
    let config = format!(
        "server:\n  listen: 127.0.0.1:0\nstate:\n  dir: STATE_DIR\nfunctions:\n  f:\n    http: {{ url: http://{function}/ }}\nmappings:\n  - name: bench\n    source:\n      nats: {{ url: \"{url}\", stream: {stream_name}, consumer: switchyard }}\n    batch: {{ size: 100, window: 100ms }}\n    function: f\n"
    );
    let run = support::run_until(&config, &count, messages).await;
    let _ = js.delete_stream(&stream_name).await;

    support::Report {
        title: format!("NATS JetStream throughput ({messages} messages of 200 B, batch 100)"),
        unit: "messages",
        total: messages,
        bare_label: "bare async-nats pull consumer (ack each)",
        bare,
        bare_cpu: Some(bare_cpu),
        switchyard_label: "Switchyard → HTTP function (from the first records at the function)",
        run,
        goal: 0.7,
    }
}
