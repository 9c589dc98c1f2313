//! FIFO queues: records of a message group arrive in order, scoped by the
//! group, with several pollers; a retried record holds its group back.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use switchyard_sdk::Outcome;

use crate::support::{Sqs, body, source, source_config, start};

const GROUPS: usize = 3;
const PER_GROUP: usize = 12;

fn fifo() -> [(QueueAttributeName, &'static str); 2] {
    [(QueueAttributeName::FifoQueue, "true"), (QueueAttributeName::ContentBasedDeduplication, "true")]
}

#[tokio::test]
async fn groups_arrive_in_order_with_their_group_as_scope() {
    let sqs = Sqs::connect();
    let queue_url = sqs.queue("fifo-order", &fifo()).await;
    // Interleaved: g0-0, g1-0, g2-0, g0-1, ...
    let bodies: Vec<String> = (0..GROUPS * PER_GROUP).map(|i| format!("g{}-{}", i % GROUPS, i / GROUPS)).collect();
    sqs.send_all(&queue_url, &bodies, |i| Some(format!("g{}", i % GROUPS))).await;

    let mut config = source_config(&sqs, &queue_url);
    config.max_concurrency = 3;
    // Three pollers; their receives take turns, as on any server that is
    // not AWS (moto does not lock message groups across concurrent receives).
    let mut running = start(source(&config));
    let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for _ in 0..bodies.len() {
        let record = running.next(Duration::from_secs(10)).await;
        let text = body(&record);
        let group = text.split('-').next().expect("a group prefix").to_string();
        assert_eq!(record.scope.as_deref(), Some(group.as_str()), "scope of {text}");
        by_group.entry(group).or_default().push(text);
        record.ack.complete(Outcome::Delivered);
    }
    for (group, received) in &by_group {
        let expected: Vec<String> = (0..PER_GROUP).map(|n| format!("{group}-{n}")).collect();
        assert_eq!(received, &expected, "group {group} in order");
    }
    assert_eq!(by_group.len(), GROUPS);
    sqs.wait_empty(&queue_url, Duration::from_secs(10)).await;
    running.stop().await.expect("clean shutdown");
    sqs.delete(&queue_url).await;
}

#[tokio::test]
async fn a_retried_record_comes_back_before_the_rest_of_its_group() {
    let sqs = Sqs::connect();
    let queue_url = sqs.queue("fifo-retry", &fifo()).await;
    let bodies: Vec<String> = (0..4).map(|n| format!("a-{n}")).collect();
    sqs.send_all(&queue_url, &bodies, |_| Some("a".to_string())).await;

    let mut running = start(source(&source_config(&sqs, &queue_url)));
    // As the engine does for an ordered scope: the first fails, so every
    // later record of the group is retried with it.
    let first = running.next(Duration::from_secs(10)).await;
    assert_eq!(body(&first), "a-0");
    first.ack.complete(Outcome::Retry("failed".into()));
    for n in 1..4 {
        let later = running.next(Duration::from_secs(10)).await;
        assert_eq!(body(&later), format!("a-{n}"));
        later.ack.complete(Outcome::Retry("an earlier record of the group failed".into()));
    }
    for n in 0..4 {
        let again = running.next(Duration::from_secs(15)).await;
        assert_eq!(body(&again), format!("a-{n}"), "the group starts over from its first message");
        assert_eq!(again.data["attributes"]["ApproximateReceiveCount"], "2");
        again.ack.complete(Outcome::Delivered);
    }
    sqs.wait_empty(&queue_url, Duration::from_secs(10)).await;
    running.stop().await.expect("clean shutdown");
    sqs.delete(&queue_url).await;
}
