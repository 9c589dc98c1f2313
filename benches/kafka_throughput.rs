//! Kafka mapping throughput: records/s from a pre-filled topic through
//! Switchyard to a trivial HTTP function (batch 100), against a bare rdkafka
//! consumer reading the same topic in the same run (docs/benchmarks.md).
//!
//! Needs a Kafka-compatible broker at KAFKA_BROKERS (scripts/test starts tansu).
//! `cargo bench --bench kafka_throughput` (optionally `-- --records 50000`)

mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

const PARTITIONS: i32 = 4;

async fn prefill(brokers: &str, topic: &str, records: usize) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().expect("admin");
    admin
        .create_topics(&[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .expect("create topic");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    let value = "x".repeat(200);
    let mut pending = Vec::with_capacity(1000);
    for i in 0..records {
        let key = format!("k{i}");
        pending.push(producer.send_result(FutureRecord::to(topic).key(&key).payload(&value)).expect("enqueue"));
        if pending.len() == 1000 {
            for p in pending.drain(..) {
                p.await.expect("delivery").expect("produced");
            }
        }
    }
    for p in pending {
        p.await.expect("delivery").expect("produced");
    }
}

async fn bare_consumer(brokers: &str, topic: &str, records: usize) -> Duration {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bare-{}", uuid::Uuid::new_v4().simple()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    // The clock starts at the first record, after the group join.
    let mut started = None;
    let mut n = 0;
    while n < records {
        tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("records keep coming")
            .expect("recv");
        started.get_or_insert_with(Instant::now);
        n += 1;
    }
    started.map_or(Duration::ZERO, |s| s.elapsed())
}

#[tokio::main]
async fn main() {
    let records = support::arg("--records", 50_000);
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let topic = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let prefill_started = Instant::now();
    prefill(&brokers, &topic, records).await;
    eprintln!("prefilled {records} records in {:.1}s", prefill_started.elapsed().as_secs_f64());

    let bare = bare_consumer(&brokers, &topic, records).await;

    let count = Arc::new(AtomicUsize::new(0));
    let function = support::counting_function("records", count.clone()).await;
    let config = format!(
        "server:\n  listen: 127.0.0.1:0\nstate:\n  dir: STATE_DIR\nfunctions:\n  f:\n    http: {{ url: http://{function}/ }}\nmappings:\n  - name: bench\n    source:\n      kafka:\n        brokers: \"{brokers}\"\n        topics: [{topic}]\n        group_id: bench-{}\n        starting_position: earliest\n    batch: {{ size: 100, window: 100ms }}\n    function: f\n",
        uuid::Uuid::new_v4().simple()
    );
    let run = support::run_until(&config, &count, records).await;
    support::Report {
        title: format!("Kafka throughput ({records} records of 200 B, {PARTITIONS} partitions, batch 100)"),
        unit: "records",
        total: records,
        bare_label: "bare rdkafka consumer",
        bare,
        bare_cpu: None,
        switchyard_label: "Switchyard → HTTP function (from the first records at the function)",
        run,
        goal: 0.5,
    }
    .print();
}
