//! SQS mapping throughput: messages/s from a pre-filled queue through
//! Switchyard to a trivial HTTP function, against a bare aws-sdk-sqs loop
//! (ReceiveMessage of ten, then DeleteMessageBatch) at the same concurrency,
//! on the same server in the same run (docs/benchmarks.md).
//!
//! Needs an SQS API at SWITCHYARD_TEST_SQS_ENDPOINT (default
//! http://127.0.0.1:4566, the moto server scripts/test starts).
//! `cargo bench --bench sqs_throughput` (optionally `-- --messages 2000`)

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

/// Lambda's default for `max_concurrency`, and Switchyard's.
const CONCURRENCY: usize = 5;

async fn client(endpoint: &str) -> Client {
    let http = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "bench"))
        .load()
        .await;
    Client::new(&shared)
}

async fn prefill(sqs: &Client, name: &str, messages: usize) -> String {
    let url = sqs.create_queue().queue_name(name).send().await.expect("create queue").queue_url.expect("url");
    let body = format!("{{\"reading\":{}}}", "7".repeat(180));
    let batches: Vec<usize> = (0..messages).step_by(10).collect();
    // A few senders at once: the server, not the loop, sets the pace.
    for chunk in batches.chunks(CONCURRENCY) {
        let sends = chunk.iter().map(|&start| {
            let entries = (start..(start + 10).min(messages))
                .map(|i| SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(&body).build().unwrap())
                .collect::<Vec<_>>();
            sqs.send_message_batch().queue_url(&url).set_entries(Some(entries)).send()
        });
        for sent in futures::future::join_all(sends).await {
            assert!(sent.expect("send batch").failed.is_empty(), "every message sent");
        }
    }
    url
}

/// `CONCURRENCY` loops of receive(10) and delete-batch until `messages` came.
async fn bare_loop(sqs: &Client, url: &str, messages: usize) -> Duration {
    let received = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let loops = (0..CONCURRENCY).map(|_| {
        let (sqs, url, received) = (sqs.clone(), url.to_string(), received.clone());
        tokio::spawn(async move {
            while received.load(Ordering::Relaxed) < messages {
                let got = sqs
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .expect("receive");
                let got = got.messages.unwrap_or_default();
                if got.is_empty() {
                    continue;
                }
                let entries = got
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                            .build()
                            .unwrap()
                    })
                    .collect::<Vec<_>>();
                sqs.delete_message_batch().queue_url(&url).set_entries(Some(entries)).send().await.expect("delete");
                received.fetch_add(got.len(), Ordering::Relaxed);
            }
        })
    });
    for handle in loops.collect::<Vec<_>>() {
        handle.await.unwrap();
    }
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let messages = support::arg("--messages", 2_000);
    let endpoint =
        std::env::var("SWITCHYARD_TEST_SQS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4566".to_string());
    let sqs = client(&endpoint).await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let bare_url = prefill(&sqs, &format!("bench-bare-{id}"), messages).await;
    let sy_url = prefill(&sqs, &format!("bench-sy-{id}"), messages).await;

    let bare = bare_loop(&sqs, &bare_url, messages).await;

    let count = Arc::new(AtomicUsize::new(0));
    let function = support::counting_function("Records", count.clone()).await;
    let config = format!(
        "server:\n  listen: 127.0.0.1:0\nstate:\n  dir: STATE_DIR\nfunctions:\n  f:\n    http: {{ url: http://{function}/ }}\nmappings:\n  - name: bench\n    source:\n      sqs: {{ queue_url: \"{sy_url}\", endpoint_url: \"{endpoint}\", region: us-east-1, max_concurrency: {CONCURRENCY}, wait_time: 1s }}\n    batch: {{ size: 10 }}\n    function: f\n"
    );
    // SAFETY: set before Switchyard starts; nothing else reads the environment concurrently.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    }
    let run = support::run_until(&config, &count, messages).await;
    for url in [&bare_url, &sy_url] {
        let _ = sqs.delete_queue().queue_url(url).send().await;
    }
    support::Report {
        title: format!("SQS throughput ({messages} messages of 200 B, {CONCURRENCY} pollers, batch 10)"),
        unit: "messages",
        total: messages,
        bare_label: "bare aws-sdk-sqs loops (receive 10, delete batch)",
        bare,
        bare_cpu: None,
        switchyard_label: "Switchyard → HTTP function (from the first records at the function)",
        run,
        goal: 0.8,
    }
    .print();
}
