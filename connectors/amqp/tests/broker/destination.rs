//! The RabbitMQ destination: confirmed, persistent JSON messages; refusals
//! and unreachable brokers as errors of the right kind.

use std::time::Duration;

use bytes::Bytes;
use lapin::types::FieldTable;
use switchyard_amqp::{RabbitMqDestination, RabbitMqDestinationConfig};
use switchyard_sdk::{ConnectorError, Destination};

use crate::support::{Broker, unique};

fn destination(url: &str, exchange: &str, routing_key: &str) -> RabbitMqDestination {
    RabbitMqDestination::new(&RabbitMqDestinationConfig {
        url: url.to_string(),
        exchange: exchange.to_string(),
        routing_key: routing_key.to_string(),
    })
    .expect("valid destination config")
}

#[tokio::test]
async fn sends_are_confirmed_persistent_json() {
    let broker = Broker::connect().await;
    let queue = broker.queue("destination", FieldTable::default()).await;
    let destination = destination(&broker.url, "", &queue);
    assert_eq!(destination.kind(), "rabbitmq");
    let records: Vec<Bytes> = (1..=3).map(|i| Bytes::from(format!("{{\"n\":{i}}}"))).collect();
    destination.send(&records).await.expect("all three confirmed");

    for expected in &records {
        let message = broker.get(&queue, Duration::from_secs(5)).await.expect("a sent record is in the queue");
        let properties = &message.delivery.properties;
        assert_eq!(message.delivery.data, expected.as_ref());
        assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
        assert_eq!(properties.content_type().as_ref().map(|t| t.as_str()), Some("application/json"));
    }
    assert!(broker.get(&queue, Duration::ZERO).await.is_none(), "exactly three");

    // The connection stays open between sends.
    destination.send(&[Bytes::from("{}")]).await.expect("a second send is confirmed");
    assert!(broker.get(&queue, Duration::from_secs(5)).await.is_some());
    broker.delete(&queue).await;
}

#[tokio::test]
async fn refusals_are_not_retriable_and_do_not_stick() {
    let broker = Broker::connect().await;
    let queue = broker.queue("refusals", FieldTable::default()).await;

    // No queue is bound for this routing key: the message comes back.
    let unroutable = destination(&broker.url, "", &unique("nowhere"));
    let error = unroutable.send(&[Bytes::from("{}")]).await.expect_err("unroutable");
    assert!(matches!(error, ConnectorError::Refused(_)), "{error:?}");

    // A missing exchange closes the channel; the next send opens another.
    let missing = destination(&broker.url, &unique("no-exchange"), &queue);
    let error = missing.send(&[Bytes::from("{}")]).await.expect_err("no such exchange");
    assert!(matches!(error, ConnectorError::Refused(_)) && error.to_string().contains("not found"), "{error:?}");
    let error = missing.send(&[Bytes::from("{}")]).await.expect_err("still no such exchange");
    assert!(matches!(error, ConnectorError::Refused(_)), "{error:?}");
    broker.delete(&queue).await;
}

#[tokio::test]
async fn unreachable_broker_is_a_retriable_failure() {
    // Nothing listens on port 1.
    let destination = destination("amqp://guest:guest@127.0.0.1:1/%2f", "", "q");
    let error = destination.send(&[Bytes::from("x")]).await.expect_err("nothing can confirm it");
    assert!(error.is_retriable(), "{error:?}");
}
