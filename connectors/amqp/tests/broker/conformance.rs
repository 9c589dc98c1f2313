//! The conformance kit against a fresh queue.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use lapin::BasicProperties;
use lapin::types::FieldTable;
use switchyard_amqp::RabbitMqSource;
use switchyard_sdk::{Record, Source};
use switchyard_testkit::{Conformance, Fixture};

use crate::support::{Broker, body, source_config};

struct QueueFixture {
    broker: Broker,
    queue: String,
}

#[async_trait]
impl Fixture for QueueFixture {
    async fn source(&self) -> Box<dyn Source> {
        // Same queue every time: a restart gets back what the previous
        // source left unacked. A short backoff only matters if the broker
        // drops a connection mid-run.
        let source = RabbitMqSource::new(&source_config(&self.broker.url, &self.queue))
            .expect("valid source config")
            .with_backoff(Duration::from_millis(100), Duration::from_secs(1));
        Box::new(source)
    }

    async fn produce(&self, payloads: &[String]) {
        for payload in payloads {
            self.broker.publish(&self.queue, payload.as_bytes(), BasicProperties::default()).await;
        }
    }

    fn payload(&self, record: &Record) -> String {
        body(record)
    }

    fn ordered(&self) -> bool {
        // Requeued messages come back later: no order is promised.
        false
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_source_conforms() {
    let broker = Broker::connect().await;
    let queue = broker.queue("conformance", FieldTable::default()).await;
    let fixture = QueueFixture { broker, queue };
    let started = Instant::now();
    let result = Conformance::default().run(&fixture).await;
    fixture.broker.delete(&fixture.queue).await;
    let report = result.unwrap_or_else(|v| panic!("{v}"));
    eprintln!("conformance: {report:?} in {:?}", started.elapsed());
    assert_eq!(report.delivered, report.produced);
    assert_eq!(report.restarts, Conformance::default().restarts);
    assert!(report.redeliveries > 0, "retried records came back from the broker: {report:?}");
}
