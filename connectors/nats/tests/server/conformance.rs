//! The conformance kit against a fresh stream, unordered and ordered.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use switchyard_sdk::{Record, Source};
use switchyard_testkit::{Conformance, Fixture};

use crate::support::{Nats, TestStream, body, source, source_config, unique};

/// Subjects the ordered run spreads its payloads over.
const SUBJECTS: usize = 4;

struct StreamFixture {
    nats: Nats,
    stream: TestStream,
    consumer: String,
    ordered: bool,
}

#[async_trait]
impl Fixture for StreamFixture {
    async fn source(&self) -> Box<dyn Source> {
        // Same durable consumer every time: a restart resumes from what the
        // server remembers (acked, nak'd, still pending).
        let mut config = source_config(&self.nats.url, &self.stream, &self.consumer);
        config.ordered = self.ordered;
        // Anything the server delivered into a subscription that was going
        // away comes back after the ack wait: keep it short.
        config.ack_wait = Duration::from_secs(5);
        Box::new(source(&config))
    }

    async fn produce(&self, payloads: &[String]) {
        // Each publish waits for its PubAck: the stream keeps this order.
        for (i, payload) in payloads.iter().enumerate() {
            let subject = self.stream.subject(&format!("s{}", i % SUBJECTS));
            self.nats.publish(&subject, payload.clone()).await;
        }
    }

    fn payload(&self, record: &Record) -> String {
        body(record)
    }

    fn ordered(&self) -> bool {
        self.ordered
    }
}

async fn run(ordered: bool) {
    let nats = Nats::connect().await;
    let stream = nats.stream("conformance").await;
    let fixture = StreamFixture { nats, stream, consumer: unique("c"), ordered };
    let started = Instant::now();
    let report = Conformance::default().run(&fixture).await.unwrap_or_else(|v| panic!("{v}"));
    eprintln!("conformance (ordered: {ordered}): {report:?} in {:?}", started.elapsed());
    assert_eq!(report.delivered, report.produced);
    assert_eq!(report.restarts, Conformance::default().restarts);
    assert!(report.redeliveries > 0, "retried records came back from the server: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_source_conforms() {
    run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_source_conforms_ordered_by_subject() {
    run(true).await;
}
