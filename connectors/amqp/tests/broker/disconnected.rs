//! A missing queue or refused credentials show as Disconnected with a reason
//! naming them; the source keeps retrying and recovers once fixed.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::FieldTable;
use switchyard_amqp::RabbitMqSource;
use switchyard_sdk::{Outcome, SourceState};

use crate::support::{Broker, body, source_config, start, unique};

fn disconnected(state: &SourceState) -> bool {
    matches!(state, SourceState::Disconnected(_))
}

#[tokio::test]
async fn missing_queue_shows_as_disconnected_until_it_is_declared() {
    let broker = Broker::connect().await;
    let queue = unique("late");
    // Default backoff (1 s, doubling): the queue is declared right after the
    // first failure, so the second attempt, a second later, succeeds.
    let mut running = start(RabbitMqSource::new(&source_config(&broker.url, &queue)).expect("valid config"));
    let state = running.wait_for(Duration::from_secs(10), "Disconnected", disconnected).await;
    let SourceState::Disconnected(reason) = state else { unreachable!() };
    eprintln!("reason: {reason}");
    assert!(reason.contains(&format!("queue {queue:?} not found")), "{reason}");
    assert!(!running.task.is_finished(), "the source keeps retrying");

    broker.declare(&queue, &mut FieldTable::default()).await;
    broker.publish(&queue, b"finally", BasicProperties::default()).await;
    running.wait_for(Duration::from_secs(10), "Running", |s| *s == SourceState::Running).await;
    let record = running.next(Duration::from_secs(10)).await;
    assert_eq!(body(&record), "finally");
    record.ack.complete(Outcome::Delivered);
    let state = running.state.clone();
    running.stop().await.expect("clean shutdown");
    assert_eq!(*state.borrow(), SourceState::Stopped);
    broker.delete(&queue).await;
}

#[tokio::test]
async fn refused_credentials_name_the_user() {
    let broker = Broker::connect().await;
    let url = broker.url.replacen("guest:guest@", "switchyard-nobody:wrong@", 1);
    assert_ne!(url, broker.url, "AMQP_URL must carry user:password@ for this test");
    let mut running = start(RabbitMqSource::new(&source_config(&url, "any")).expect("valid config"));
    let state = running.wait_for(Duration::from_secs(10), "Disconnected", disconnected).await;
    let SourceState::Disconnected(reason) = state else { unreachable!() };
    eprintln!("reason: {reason}");
    assert!(reason.contains("\"switchyard-nobody\""), "{reason}");
    assert!(!reason.contains("wrong"), "no password in the reason: {reason}");
    let state = running.state.clone();
    running.stop().await.expect("clean shutdown while disconnected");
    assert_eq!(*state.borrow(), SourceState::Stopped);
}

#[tokio::test]
async fn unreachable_broker_shows_as_disconnected_and_shuts_down_cleanly() {
    let mut running =
        start(RabbitMqSource::new(&source_config("amqp://guest:guest@127.0.0.1:1/%2f", "any")).expect("valid config"));
    let state = running.wait_for(Duration::from_secs(10), "Disconnected", disconnected).await;
    let SourceState::Disconnected(reason) = state else { unreachable!() };
    eprintln!("reason: {reason}");
    assert!(reason.contains("cannot reach RabbitMQ at amqp://guest@127.0.0.1:1/%2f"), "{reason}");
    running.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn deleted_queue_shows_as_disconnected() {
    let broker = Broker::connect().await;
    let queue = broker.queue("deleted", FieldTable::default()).await;
    let source = RabbitMqSource::new(&source_config(&broker.url, &queue))
        .expect("valid config")
        .with_backoff(Duration::from_millis(200), Duration::from_secs(1));
    let mut running = start(source);
    running.wait_for(Duration::from_secs(10), "Running", |s| *s == SourceState::Running).await;
    broker.delete(&queue).await;
    let state = running.wait_for(Duration::from_secs(10), "Disconnected", disconnected).await;
    let SourceState::Disconnected(reason) = state else { unreachable!() };
    eprintln!("reason: {reason}");
    assert!(reason.contains(&format!("{queue:?}")), "{reason}");
    // Later attempts find no queue, and say so.
    let state = running
        .wait_for(
            Duration::from_secs(10),
            "Disconnected: not found",
            |s| matches!(s, SourceState::Disconnected(reason) if reason.contains("not found")),
        )
        .await;
    eprintln!("then: {state:?}");
    running.stop().await.expect("clean shutdown");
}
