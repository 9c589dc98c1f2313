//! A rough measurement of the source's rate (receive and ack), run by hand:
//! `cargo test --release -p switchyard-nats --test server throughput -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use switchyard_sdk::Outcome;

use crate::support::{Nats, source, source_config, start, unique};

const MESSAGES: usize = 50_000;
/// Subjects the messages are spread over (the ordered run's scopes).
const SUBJECTS: usize = 8;

async fn measure(ordered: bool) {
    let nats = Nats::connect().await;
    let stream = nats.stream("throughput").await;
    let consumer = unique("c");
    let payload = Bytes::from(vec![b'x'; 256]);
    let mut acks = Vec::with_capacity(1000);
    for i in 0..MESSAGES {
        let subject = stream.subject(&format!("s{}", i % SUBJECTS));
        acks.push(nats.js.publish(subject, payload.clone()).await.expect("publish"));
        if acks.len() == 1000 {
            for ack in acks.drain(..) {
                ack.await.expect("PubAck");
            }
        }
    }
    for ack in acks.drain(..) {
        ack.await.expect("PubAck");
    }

    let mut config = source_config(&nats.url, &stream, &consumer);
    config.ordered = ordered;
    let started = Instant::now();
    let mut running = start(source(&config));
    for _ in 0..MESSAGES {
        running.next(Duration::from_secs(10)).await.ack.complete(Outcome::Delivered);
    }
    let received = started.elapsed();
    loop {
        let info = nats.consumer_info(&stream.name, &consumer).await;
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let settled = started.elapsed();
    eprintln!(
        "ordered: {ordered}: {MESSAGES} messages of 256 bytes on {SUBJECTS} subjects: received in {received:?}, \
         all acks confirmed in {settled:?}: {:.0} msgs/s",
        MESSAGES as f64 / settled.as_secs_f64()
    );
    running.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check; run by hand"]
async fn source_throughput() {
    measure(false).await;
    measure(true).await;
}
