//! `Reject` hands the message to the queue's dead-letter exchange.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use switchyard_amqp::RabbitMqSource;
use switchyard_sdk::Outcome;

use crate::support::{Broker, source_config, start};

#[tokio::test]
async fn reject_goes_to_the_dead_letter_queue() {
    let broker = Broker::connect().await;
    let dlq = broker.queue("dlq", FieldTable::default()).await;
    let mut arguments = FieldTable::default();
    arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from("")));
    arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(LongString::from(dlq.as_str())));
    let queue = broker.queue("dead-lettering", arguments).await;
    broker.publish(&queue, b"poison", BasicProperties::default().with_message_id("p-1".into())).await;

    let mut running = start(RabbitMqSource::new(&source_config(&broker.url, &queue)).expect("valid config"));
    let record = running.next(Duration::from_secs(10)).await;
    assert_eq!(record.id, "p-1");
    record.ack.complete(Outcome::Reject("function gave up".into()));

    let dead =
        broker.get(&dlq, Duration::from_secs(10)).await.expect("the rejected message reaches the dead-letter queue");
    assert_eq!(dead.delivery.data, b"poison");
    let headers = dead.delivery.properties.headers().clone().unwrap_or_default();
    assert!(headers.contains_key("x-death"), "dead-lettered by the broker: {headers:?}");
    running.stop().await.expect("clean shutdown");
    assert!(broker.get(&queue, Duration::ZERO).await.is_none(), "not requeued");
    broker.delete(&queue).await;
    broker.delete(&dlq).await;
}
