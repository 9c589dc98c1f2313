//! The conformance kit against a fresh two-partition topic.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::topic_partition_list::TopicPartitionList;
use switchyard_kafka::{KafkaSource, StartingPosition};
use switchyard_sdk::{Record, Source};
use switchyard_testkit::{Conformance, Fixture};

use crate::support::{brokers, create_topic, produce, producer, source_config, unique, value};

const PARTITIONS: i32 = 2;

struct KafkaFixture {
    brokers: String,
    topic: String,
    group: String,
    producer: FutureProducer,
}

#[async_trait]
impl Fixture for KafkaFixture {
    async fn source(&self) -> Box<dyn Source> {
        // Same topic and group every time: a restart resumes from the
        // group's committed offsets.
        let config = source_config(&self.brokers, &self.topic, &self.group, StartingPosition::Earliest);
        Box::new(KafkaSource::new(&config).expect("valid source config"))
    }

    async fn produce(&self, payloads: &[String]) {
        // Alternate partitions explicitly: librdkafka's sticky partitioner
        // would put a burst of unkeyed records into one partition.
        for partition in 0..PARTITIONS {
            let share: Vec<String> = payloads
                .iter()
                .enumerate()
                .filter(|(i, _)| *i as i32 % PARTITIONS == partition)
                .map(|(_, payload)| payload.clone())
                .collect();
            produce(&self.producer, &self.topic, partition, &share).await;
        }
    }

    fn payload(&self, record: &Record) -> String {
        value(record)
    }

    fn ordered(&self) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_source_conforms() {
    let brokers = brokers();
    let topic = create_topic(&brokers, "conformance", PARTITIONS).await;
    let fixture = KafkaFixture { producer: producer(&brokers), group: unique("conformance"), brokers, topic };
    let started = Instant::now();
    let report = Conformance::default().run(&fixture).await.unwrap_or_else(|v| panic!("{v}"));
    eprintln!("conformance: {report:?} in {:?}", started.elapsed());
    assert_eq!(report.delivered, report.produced);
    assert_eq!(report.restarts, Conformance::default().restarts);

    // Restarts resumed from commits, not from `earliest` again: the group
    // committed progress on every partition.
    let committed = committed(&fixture.brokers, &fixture.group, &fixture.topic).await;
    eprintln!("committed offsets: {committed:?}");
    assert!(committed.iter().all(|offset| *offset > 0), "committed offsets per partition: {committed:?}");
}

async fn committed(brokers: &str, group: &str, topic: &str) -> Vec<i64> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", group).create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        tpl.add_partition(topic, partition);
    }
    let committed = tokio::task::spawn_blocking(move || consumer.committed_offsets(tpl, Duration::from_secs(10)))
        .await
        .expect("no panic")
        .expect("OffsetFetch");
    committed.elements().iter().map(|e| e.offset().to_raw().unwrap_or(-1)).collect()
}
