//! The Kafka destination: records arrive with key and headers; an unreachable
//! cluster is a retriable failure.

use std::time::Duration;

use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use switchyard_kafka::{KafkaDestination, KafkaDestinationConfig};
use switchyard_sdk::Destination;

use crate::support::{brokers, create_topic, unique};

type Read = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Vec<u8>)>);

#[tokio::test]
async fn sends_keep_key_and_headers() {
    let brokers = brokers();
    let topic = create_topic(&brokers, "destination", 1).await;
    let destination = KafkaDestination::new(&KafkaDestinationConfig {
        brokers: brokers.clone(),
        topic: topic.clone(),
        properties: Default::default(),
    })
    .expect("valid destination config");
    assert_eq!(destination.kind(), "kafka");
    destination
        .send_keyed(&[
            (Some(Bytes::from("k1")), Bytes::from("v1"), vec![("trace".into(), b"t1".to_vec())]),
            (None, Bytes::from("v2"), Vec::new()),
            (Some(Bytes::from("k3")), Bytes::from("v3"), vec![("a".into(), Vec::new()), ("b".into(), vec![0, 255])]),
        ])
        .await
        .expect("all three confirmed");
    destination.send(&[Bytes::from("{\"plain\":true}")]).await.expect("a plain send is confirmed");

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", unique("destination-check"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning).expect("partition list");
    consumer.assign(&tpl).expect("assign");
    let mut read: Vec<Read> = Vec::new();
    while read.len() < 4 {
        let message = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of 4 records read back", read.len()))
            .expect("consume");
        let headers = message
            .headers()
            .map(|headers| headers.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect())
            .unwrap_or_default();
        read.push((message.key().map(<[u8]>::to_vec), message.payload().map(<[u8]>::to_vec), headers));
    }
    let expected: Vec<Read> = vec![
        (Some(b"k1".to_vec()), Some(b"v1".to_vec()), vec![("trace".into(), b"t1".to_vec())]),
        (None, Some(b"v2".to_vec()), vec![]),
        (Some(b"k3".to_vec()), Some(b"v3".to_vec()), vec![("a".into(), vec![]), ("b".into(), vec![0, 255])]),
        (None, Some(b"{\"plain\":true}".to_vec()), vec![]),
    ];
    assert_eq!(read, expected);
}

#[tokio::test]
async fn unreachable_cluster_is_a_retriable_failure() {
    let destination = KafkaDestination::new(&KafkaDestinationConfig {
        brokers: "127.0.0.1:1".into(),
        topic: "nowhere".into(),
        properties: [("message.timeout.ms".to_string(), "1000".to_string())].into(),
    })
    .expect("valid destination config");
    let error = destination.send(&[Bytes::from("x")]).await.expect_err("nothing can confirm it");
    assert!(error.is_retriable(), "{error:?}");
}
