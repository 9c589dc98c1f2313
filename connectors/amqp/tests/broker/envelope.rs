//! Record JSON and event shape for a message published with properties.

use std::time::{Duration, UNIX_EPOCH};

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::json;
use switchyard_amqp::{RabbitMqSource, broker_arn};
use switchyard_sdk::{Outcome, Source};

use crate::support::{Broker, host_port, source_config, start};

#[tokio::test]
async fn records_and_event_have_lambdas_rabbitmq_shape() {
    let broker = Broker::connect().await;
    // Priorities only count on a queue that declares a maximum.
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(10));
    let queue = broker.queue("envelope", arguments).await;

    let mut headers = FieldTable::default();
    headers.insert("trace".into(), AMQPValue::LongString(LongString::from("abc")));
    headers.insert("attempt".into(), AMQPValue::LongInt(3));
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_headers(headers)
        .with_message_id("order-1".into())
        .with_correlation_id("corr-9".into())
        .with_timestamp(1_700_000_000)
        .with_priority(5);
    let body = br#"{"order":1}"#;
    broker.publish(&queue, body, properties).await;
    broker.publish(&queue, b"plain", BasicProperties::default()).await;

    let source = RabbitMqSource::new(&source_config(&broker.url, &queue)).expect("valid config");
    let envelope = source.envelope();
    let mut running = start(source);
    let first = running.next(Duration::from_secs(10)).await;
    let second = running.next(Duration::from_secs(10)).await;

    assert_eq!(first.id, "order-1", "the message id names the record");
    assert_eq!(first.size, body.len());
    assert!(first.scope.is_none() && first.key.is_none());
    assert_eq!(first.created_at, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    assert_eq!(
        first.data,
        json!({
            "basicProperties": {
                "contentType": "application/json",
                "contentEncoding": null,
                "headers": {"attempt": 3, "trace": {"bytes": [97, 98, 99]}},
                "deliveryMode": null,
                "priority": 5,
                "correlationId": "corr-9",
                "replyTo": null,
                "expiration": null,
                "messageId": "order-1",
                "timestamp": "Nov 14, 2023, 10:13:20 PM",
                "type": null,
                "userId": null,
                "appId": null,
                "clusterId": null,
                "bodySize": 11
            },
            "redelivered": false,
            "data": "eyJvcmRlciI6MX0="
        })
    );

    // Without a message id, the record is named by its delivery tag.
    assert!(second.id.parse::<u64>().is_ok(), "delivery tag as id: {}", second.id);
    assert_eq!(second.data["basicProperties"]["headers"], json!(null));
    assert_eq!(second.data["basicProperties"]["bodySize"], 5);

    let event = envelope.event(&[&first.data, &second.data]);
    let (host, _) = host_port(&broker.url);
    assert_eq!(
        event,
        json!({
            "eventSource": "aws:rmq",
            "eventSourceArn": broker_arn(&host),
            "rmqMessagesByQueue": { format!("{queue}::/"): [first.data, second.data] },
        })
    );
    assert_eq!(envelope.item_id(&json!("order-1")).as_deref(), Some("order-1"));

    first.ack.complete(Outcome::Delivered);
    second.ack.complete(Outcome::Delivered);
    running.stop().await.expect("clean shutdown");
    assert!(broker.get(&queue, Duration::ZERO).await.is_none(), "both messages were acked");
    broker.delete(&queue).await;
}

#[tokio::test]
async fn retry_requeues_and_the_message_comes_back_redelivered() {
    let broker = Broker::connect().await;
    let queue = broker.queue("requeue", FieldTable::default()).await;
    broker.publish(&queue, b"again", BasicProperties::default()).await;
    let mut running = start(RabbitMqSource::new(&source_config(&broker.url, &queue)).expect("valid config"));
    let first = running.next(Duration::from_secs(10)).await;
    assert_eq!(first.data["redelivered"], false);
    first.ack.complete(Outcome::Retry("try later".into()));
    let again = running.next(Duration::from_secs(10)).await;
    assert_eq!((again.data["redelivered"].clone(), again.data["data"].clone()), (json!(true), json!("YWdhaW4=")));
    again.ack.complete(Outcome::Delivered);
    running.stop().await.expect("clean shutdown");
    assert!(broker.get(&queue, Duration::ZERO).await.is_none(), "acked after the retry");
    broker.delete(&queue).await;
}

#[tokio::test]
async fn quorum_queues_count_deliveries_in_a_header() {
    let broker = Broker::connect().await;
    let queue = crate::support::unique("quorum");
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
    // Quorum queues are always durable.
    let durable = lapin::options::QueueDeclareOptions { durable: true, ..Default::default() };
    broker.channel.queue_declare(queue.as_str().into(), durable, arguments).await.expect("declare a quorum queue");
    broker.publish(&queue, b"counted", BasicProperties::default()).await;

    let mut running = start(RabbitMqSource::new(&source_config(&broker.url, &queue)).expect("valid config"));
    let first = running.next(Duration::from_secs(10)).await;
    first.ack.complete(Outcome::Retry("again".into()));
    let again = running.next(Duration::from_secs(10)).await;
    let result = again.data["basicProperties"]["headers"]["x-delivery-count"].clone();
    again.ack.complete(Outcome::Delivered);
    running.stop().await.expect("clean shutdown");
    broker.delete(&queue).await;
    assert_eq!(result, json!(1), "headers: {}", again.data["basicProperties"]["headers"]);
}
