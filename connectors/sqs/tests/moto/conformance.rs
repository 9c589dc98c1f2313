//! The conformance kit against a fresh standard queue and a fresh FIFO queue.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_sqs::types::QueueAttributeName;
use switchyard_sdk::{Record, Source};
use switchyard_testkit::{Conformance, Fixture};

use crate::support::{Sqs, body, source, source_config};

/// Message groups of the FIFO run.
const GROUPS: usize = 4;

struct QueueFixture {
    sqs: Sqs,
    queue_url: String,
    fifo: bool,
}

#[async_trait]
impl Fixture for QueueFixture {
    async fn source(&self) -> Box<dyn Source> {
        // Same queue every time: a restart gets back what the previous
        // source left unsettled.
        let mut config = source_config(&self.sqs, &self.queue_url);
        config.max_concurrency = 3;
        config.visibility_timeout = Some(Duration::from_secs(10));
        if self.fifo {
            // moto wakes a long poll only for new messages, not for ones
            // visible again, and a FIFO run makes many visible again.
            config.wait_time = Duration::ZERO;
        }
        // On a FIFO queue of a server that is not AWS the source receives
        // one call at a time: moto does not lock message groups across
        // concurrent receives.
        Box::new(source(&config))
    }

    async fn produce(&self, payloads: &[String]) {
        let fifo = self.fifo;
        self.sqs.send_all(&self.queue_url, payloads, |i| fifo.then(|| format!("group-{}", i % GROUPS))).await;
    }

    fn payload(&self, record: &Record) -> String {
        body(record)
    }

    fn ordered(&self) -> bool {
        // A FIFO queue keeps each message group in order; a standard queue
        // promises nothing.
        self.fifo
    }
}

async fn conforms(fifo: bool) {
    let sqs = Sqs::connect();
    let attributes: &[(QueueAttributeName, &str)] = if fifo {
        &[(QueueAttributeName::FifoQueue, "true"), (QueueAttributeName::ContentBasedDeduplication, "true")]
    } else {
        &[]
    };
    let queue_url = sqs.queue("conformance", attributes).await;
    let fixture = QueueFixture { sqs, queue_url, fifo };
    let started = Instant::now();
    // moto answers tens of requests a second, fewer with other tests
    // running: more time than the kit's default minute.
    let conformance = Conformance { timeout: Duration::from_secs(120), ..Conformance::default() };
    let result = conformance.run(&fixture).await;
    let report = result.unwrap_or_else(|v| panic!("{v}"));
    eprintln!("conformance (fifo: {fifo}): {report:?} in {:?}", started.elapsed());
    assert_eq!(report.delivered, report.produced);
    assert_eq!(report.restarts, conformance.restarts);
    assert!(report.redeliveries > 0, "retried records came back from SQS: {report:?}");
    fixture.sqs.wait_empty(&fixture.queue_url, Duration::from_secs(10)).await;
    fixture.sqs.delete(&fixture.queue_url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_queue_source_conforms() {
    conforms(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_queue_source_conforms_and_keeps_groups_in_order() {
    conforms(true).await;
}
