//! What each outcome does to the message: deleted, back after a delay,
//! dead-lettered; and a message whose record is in flight stays hidden.

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::json;
use switchyard_sdk::Outcome;

use crate::support::{Sqs, body, source, source_config, start};

#[tokio::test]
async fn delivered_records_are_deleted() {
    let sqs = Sqs::connect();
    let queue_url = sqs.queue("delete", &[]).await;
    let bodies: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
    sqs.send_all(&queue_url, &bodies, |_| None).await;

    let mut running = start(source(&source_config(&sqs, &queue_url)));
    let mut seen = Vec::new();
    for _ in 0..bodies.len() {
        let record = running.next(Duration::from_secs(10)).await;
        seen.push(body(&record));
        record.ack.complete(Outcome::Delivered);
    }
    seen.sort_by_key(|b| b[1..].parse::<u32>().unwrap_or(u32::MAX));
    assert_eq!(seen, bodies, "each message once");
    sqs.wait_empty(&queue_url, Duration::from_secs(10)).await;
    running.stop().await.expect("clean shutdown");
    sqs.delete(&queue_url).await;
}

#[tokio::test]
async fn retried_records_come_back_soon() {
    let sqs = Sqs::connect();
    // A long visibility timeout: the retry must not wait for it.
    let queue_url = sqs.queue("retry", &[(QueueAttributeName::VisibilityTimeout, "60")]).await;
    sqs.send(&queue_url, "again").await;
    let mut running = start(source(&source_config(&sqs, &queue_url)));
    let first = running.next(Duration::from_secs(10)).await;
    assert_eq!(first.data["attributes"]["ApproximateReceiveCount"], "1");
    let id = first.id.clone();
    let retried = Instant::now();
    first.ack.complete(Outcome::Retry("try later".into()));

    let again = running.next(Duration::from_secs(10)).await;
    let after = retried.elapsed();
    assert_eq!((again.id.as_str(), body(&again).as_str()), (id.as_str(), "again"));
    assert_eq!(again.data["attributes"]["ApproximateReceiveCount"], "2");
    assert!(after >= Duration::from_millis(900), "hidden for the retry delay (1 s) first: {after:?}");
    assert!(after < Duration::from_secs(5), "not for the 60 s visibility timeout: {after:?}");
    again.ack.complete(Outcome::Delivered);
    sqs.wait_empty(&queue_url, Duration::from_secs(10)).await;
    running.stop().await.expect("clean shutdown");
    sqs.delete(&queue_url).await;
}

#[tokio::test]
async fn dropped_acks_are_retries() {
    let sqs = Sqs::connect();
    let queue_url = sqs.queue("dropped", &[]).await;
    sqs.send(&queue_url, "dropped").await;
    let mut running = start(source(&source_config(&sqs, &queue_url)));
    drop(running.next(Duration::from_secs(10)).await);
    let again = running.next(Duration::from_secs(10)).await;
    assert_eq!(again.data["attributes"]["ApproximateReceiveCount"], "2");
    again.ack.complete(Outcome::Delivered);
    sqs.wait_empty(&queue_url, Duration::from_secs(10)).await;
    running.stop().await.expect("clean shutdown");
    sqs.delete(&queue_url).await;
}

#[tokio::test]
async fn rejected_records_go_to_the_dead_letter_queue() {
    let sqs = Sqs::connect();
    let dlq_url = sqs.queue("dlq", &[]).await;
    let dlq_arn = sqs.attribute(&dlq_url, QueueAttributeName::QueueArn).await;
    let policy = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "1"}).to_string();
    let queue_url = sqs.queue("redrive", &[(QueueAttributeName::RedrivePolicy, policy.as_str())]).await;
    let id = sqs.send(&queue_url, "poison").await;

    let mut running = start(source(&source_config(&sqs, &queue_url)));
    let record = running.next(Duration::from_secs(10)).await;
    assert_eq!(record.id, id);
    record.ack.complete(Outcome::Reject("function gave up".into()));

    // The source's next receive finds the receive count at maxReceiveCount:
    // SQS moves the message instead of handing it out.
    let deadline = Instant::now() + Duration::from_secs(15);
    let dead = loop {
        let got = sqs.receive(&dlq_url, 1, 1, None).await;
        if let Some(message) = got.into_iter().next() {
            break message;
        }
        assert!(Instant::now() < deadline, "the rejected message did not reach the dead-letter queue");
    };
    assert_eq!((dead.message_id(), dead.body()), (Some(id.as_str()), Some("poison")));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), running.rx.recv()).await.is_err(),
        "the rejected message is not handed out again"
    );
    running.stop().await.expect("clean shutdown");
    sqs.wait_empty(&queue_url, Duration::from_secs(5)).await;
    sqs.delete(&queue_url).await;
    sqs.delete(&dlq_url).await;
}

#[tokio::test]
async fn rejected_records_without_a_redrive_policy_are_deleted() {
    let sqs = Sqs::connect();
    let queue_url = sqs.queue("no-redrive", &[]).await;
    sqs.send(&queue_url, "unwanted").await;
    let mut running = start(source(&source_config(&sqs, &queue_url)));
    let record = running.next(Duration::from_secs(10)).await;
    record.ack.complete(Outcome::Reject("no dead-letter queue to hand it to".into()));
    sqs.wait_empty(&queue_url, Duration::from_secs(10)).await;
    running.stop().await.expect("clean shutdown");
    sqs.delete(&queue_url).await;
}

#[tokio::test]
async fn in_flight_messages_stay_hidden_past_their_visibility_timeout() {
    let sqs = Sqs::connect();
    let queue_url = sqs.queue("heartbeat", &[]).await;
    sqs.send(&queue_url, "slow").await;
    let mut config = source_config(&sqs, &queue_url);
    config.visibility_timeout = Some(Duration::from_secs(2));
    let mut running = start(source(&config));
    let record = running.next(Duration::from_secs(10)).await;

    // Another consumer polls for 5 s, well past the 2 s visibility timeout.
    let held = Instant::now();
    while held.elapsed() < Duration::from_secs(5) {
        let stolen = sqs.receive(&queue_url, 10, 1, Some(30)).await;
        assert!(stolen.is_empty(), "another consumer got the message after {:?}: {stolen:?}", held.elapsed());
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(100), running.rx.recv()).await.is_err(),
        "nor did the source hand it out twice"
    );
    assert_eq!(sqs.depth(&queue_url).await, (0, 1), "in flight all along");
    record.ack.complete(Outcome::Delivered);
    sqs.wait_empty(&queue_url, Duration::from_secs(10)).await;
    running.stop().await.expect("clean shutdown");
    sqs.delete(&queue_url).await;
}

#[tokio::test]
async fn shutdown_settles_acks_that_arrive_while_stopping() {
    let sqs = Sqs::connect();
    let queue_url = sqs.queue("drain", &[(QueueAttributeName::VisibilityTimeout, "60")]).await;
    sqs.send_all(&queue_url, &["done".to_string(), "unfinished".to_string()], |_| None).await;
    let mut running = start(source(&source_config(&sqs, &queue_url)));
    let (a, b) = (running.next(Duration::from_secs(10)).await, running.next(Duration::from_secs(10)).await);
    let (done, unfinished) = if body(&a) == "done" { (a, b) } else { (b, a) };
    running.shutdown.cancel();
    // The engine finishes one record after the shutdown began and drops the
    // other: the first is deleted, the second released at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!running.task.is_finished(), "the source waits for the outcomes of what it handed out");
    done.ack.complete(Outcome::Delivered);
    drop(unfinished);
    running.stop().await.expect("clean shutdown");
    let left = sqs.receive(&queue_url, 10, 1, None).await;
    let bodies: Vec<&str> = left.iter().filter_map(|m| m.body()).collect();
    assert_eq!(bodies, ["unfinished"], "visible again at once, not after 60 s");
    sqs.delete(&queue_url).await;
}
