//! Many messages through the source with immediate acks: each is handed out
//! once and deleted. Prints the rate, a rough figure for receive + delete
//! against this server.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use switchyard_sdk::Outcome;

use crate::support::{Sqs, body, source, source_config, start};

const MESSAGES: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_messages_are_received_and_deleted() {
    let sqs = Sqs::connect();
    let queue_url = sqs.queue("throughput", &[]).await;
    let bodies: Vec<String> = (0..MESSAGES).map(|i| format!("t{i}")).collect();
    let sending = Instant::now();
    sqs.send_all(&queue_url, &bodies, |_| None).await;
    let sent_in = sending.elapsed();

    let mut config = source_config(&sqs, &queue_url);
    config.max_concurrency = 5;
    let started = Instant::now();
    let mut running = start(source(&config));
    let mut seen = HashSet::new();
    while seen.len() < MESSAGES {
        let record = running.next(Duration::from_secs(20)).await;
        seen.insert(body(&record));
        record.ack.complete(Outcome::Delivered);
    }
    let received_in = started.elapsed();
    sqs.wait_empty(&queue_url, Duration::from_secs(30)).await;
    let deleted_in = started.elapsed();
    running.stop().await.expect("clean shutdown");
    eprintln!(
        "{MESSAGES} messages: sent in {sent_in:?} ({:.0}/s); received in {received_in:?}, all deleted after \
         {deleted_in:?} ({:.0} received and deleted per second)",
        MESSAGES as f64 / sent_in.as_secs_f64(),
        MESSAGES as f64 / deleted_in.as_secs_f64()
    );
    sqs.delete(&queue_url).await;
}
