//! The source's metrics: requests and messages by kind, the connected and
//! in-flight gauges.

use std::time::Duration;

use switchyard_sdk::{Outcome, SourceState};
use switchyard_testkit::metrics::{recorded, value};

use crate::support::{Sqs, source, source_config, start_as, unique};

#[tokio::test]
async fn requests_messages_and_gauges_are_measured() {
    let sqs = Sqs::connect();
    recorded();
    let name = unique("metrics");
    let queue_url = format!("{}/123456789012/{name}", sqs.endpoint);
    let mapping = unique("metrics");
    let mut running = start_as(&mapping, source(&source_config(&sqs, &queue_url)));
    let key = |name: &str| format!("{name}{{mapping={mapping}}}");
    let attributes_failed =
        format!("switchyard_sqs_requests_total{{mapping={mapping},operation=get_queue_attributes,outcome=error}}");
    running.wait_for(Duration::from_secs(10), "Disconnected", |s| matches!(s, SourceState::Disconnected(_))).await;
    assert!(
        value(&attributes_failed).is_some_and(|n| n >= 1.0),
        "{attributes_failed}: {:?}",
        value(&attributes_failed)
    );
    let connected = key("switchyard_source_connected");
    assert_eq!(value(&connected), Some(0.0));

    sqs.create(&name, &[]).await;
    running.wait_for(Duration::from_secs(10), "Running", |s| *s == SourceState::Running).await;
    assert_eq!(value(&connected), Some(1.0));
    sqs.send_all(&queue_url, &["a".to_string(), "b".to_string(), "c".to_string()], |_| None).await;
    let mut records = Vec::new();
    for _ in 0..3 {
        records.push(running.next(Duration::from_secs(10)).await);
    }
    let in_flight = key("switchyard_sqs_in_flight");
    assert_eq!(value(&in_flight), Some(3.0));
    let mut records = records.into_iter();
    records.next().expect("a").ack.complete(Outcome::Delivered);
    records.next().expect("b").ack.complete(Outcome::Delivered);
    records.next().expect("c").ack.complete(Outcome::Retry("later".into()));
    let again = running.next(Duration::from_secs(10)).await;
    again.ack.complete(Outcome::Delivered);
    sqs.wait_empty(&queue_url, Duration::from_secs(10)).await;

    running.stop().await.expect("clean shutdown");
    let messages = |action: &str| value(&format!("switchyard_sqs_messages_total{{action={action},mapping={mapping}}}"));
    assert_eq!(messages("received"), Some(4.0));
    assert_eq!(messages("deleted"), Some(3.0));
    assert_eq!(messages("retried"), Some(1.0));
    let receives = format!("switchyard_sqs_requests_total{{mapping={mapping},operation=receive_message,outcome=ok}}");
    assert!(value(&receives).is_some_and(|n| n >= 2.0), "{receives}: {:?}", value(&receives));
    assert_eq!(value(&connected), Some(0.0), "not connected after shutdown");
    assert_eq!(value(&in_flight), Some(0.0));
    sqs.delete(&queue_url).await;
}
