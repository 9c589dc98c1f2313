//! A missing queue or an unreachable server show as Disconnected with a
//! reason naming them; the source keeps retrying and recovers once fixed.

use std::time::Duration;

use switchyard_sdk::{Outcome, SourceState};

use crate::support::{Sqs, body, source, source_config, start, unique};

fn disconnected(state: &SourceState) -> bool {
    matches!(state, SourceState::Disconnected(_))
}

#[tokio::test]
async fn missing_queue_shows_as_disconnected_until_it_is_created() {
    let sqs = Sqs::connect();
    let name = unique("late");
    // moto's URLs name its default account.
    let queue_url = format!("{}/123456789012/{name}", sqs.endpoint);
    let mut running = start(source(&source_config(&sqs, &queue_url)));
    let state = running.wait_for(Duration::from_secs(10), "Disconnected", disconnected).await;
    let SourceState::Disconnected(reason) = state else { unreachable!() };
    eprintln!("reason: {reason}");
    assert!(reason.contains(&format!("queue {queue_url} does not exist")), "{reason}");
    assert!(!running.task.is_finished(), "the source keeps retrying");

    let created = sqs.create(&name, &[]).await;
    assert_eq!(created, queue_url, "moto hands out the URL the source was given");
    sqs.send(&queue_url, "finally").await;
    running.wait_for(Duration::from_secs(10), "Running", |s| *s == SourceState::Running).await;
    let record = running.next(Duration::from_secs(10)).await;
    assert_eq!(body(&record), "finally");
    record.ack.complete(Outcome::Delivered);
    let state = running.state.clone();
    running.stop().await.expect("clean shutdown");
    assert_eq!(*state.borrow(), SourceState::Stopped);
    sqs.wait_empty(&queue_url, Duration::from_secs(10)).await;
    sqs.delete(&queue_url).await;
}

#[tokio::test]
async fn deleted_queue_shows_as_disconnected() {
    let sqs = Sqs::connect();
    let queue_url = sqs.queue("deleted", &[]).await;
    let mut running = start(source(&source_config(&sqs, &queue_url)));
    running.wait_for(Duration::from_secs(10), "Running", |s| *s == SourceState::Running).await;
    sqs.delete(&queue_url).await;
    let state = running.wait_for(Duration::from_secs(15), "Disconnected", disconnected).await;
    let SourceState::Disconnected(reason) = state else { unreachable!() };
    eprintln!("reason: {reason}");
    assert!(reason.contains(&format!("queue {queue_url} does not exist")), "{reason}");
    running.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn unreachable_server_shows_as_disconnected_and_shuts_down_cleanly() {
    let sqs = Sqs::connect();
    let mut config = source_config(&sqs, "http://127.0.0.1:1/123456789012/nowhere");
    // No endpoint: a queue URL that is not AWS's is its own endpoint.
    config.endpoint_url = None;
    let mut running = start(source(&config));
    let state = running.wait_for(Duration::from_secs(30), "Disconnected", disconnected).await;
    let SourceState::Disconnected(reason) = state else { unreachable!() };
    eprintln!("reason: {reason}");
    assert!(reason.starts_with("cannot reach SQS for queue http://127.0.0.1:1/123456789012/nowhere"), "{reason}");
    let state = running.state.clone();
    running.stop().await.expect("clean shutdown");
    assert_eq!(*state.borrow(), SourceState::Stopped);
}

#[tokio::test]
async fn the_queue_url_is_the_endpoint_of_a_server_that_is_not_aws() {
    let sqs = Sqs::connect();
    let queue_url = sqs.queue("origin", &[]).await;
    sqs.send(&queue_url, "found").await;
    let mut config = source_config(&sqs, &queue_url);
    config.endpoint_url = Some(String::new());
    let mut running = start(source(&config));
    let record = running.next(Duration::from_secs(10)).await;
    assert_eq!(body(&record), "found");
    record.ack.complete(Outcome::Delivered);
    sqs.wait_empty(&queue_url, Duration::from_secs(10)).await;
    running.stop().await.expect("clean shutdown");
    sqs.delete(&queue_url).await;
}
