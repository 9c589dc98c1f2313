//! The persistent session: what was published while the source was stopped
//! arrives when it starts again; what was acknowledged does not come back;
//! what was not acknowledged comes back with DUP set, whatever the order of
//! the acknowledgements.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use switchyard_mqtt::Protocol;
use switchyard_sdk::{Outcome, SourceState};

use crate::support::{assert_quiet, forget_session, mqtt_url, payload, publish_text, source, start, unique};

const WAIT: Duration = Duration::from_secs(10);

async fn published_while_stopped_arrive_after_restart(protocol: Protocol) {
    let url = mqtt_url();
    let (topic, client_id) = (unique("offline"), unique("offline"));

    // The first run creates the session and its subscription.
    let mut running = start(source(&url, &[&topic], &client_id, protocol));
    running.wait_for(WAIT, "Running", |s| *s == SourceState::Running).await;
    running.stop().await.expect("clean shutdown");

    let payloads: Vec<String> = (0..50).map(|i| format!("while-away-{i}")).collect();
    publish_text(&url, &topic, &payloads).await;

    let mut running = start(source(&url, &[&topic], &client_id, protocol));
    let mut seen = BTreeSet::new();
    while seen.len() < payloads.len() {
        let record = running.next(WAIT).await;
        assert_eq!(record.data["dup"], json!(false), "first delivery of a queued message");
        seen.insert(payload(&record));
        record.ack.complete(Outcome::Delivered);
    }
    assert_eq!(seen, payloads.iter().cloned().collect::<BTreeSet<_>>(), "nothing lost");
    running.stop().await.expect("clean shutdown");

    // All acknowledged: a third run gets nothing.
    let mut running = start(source(&url, &[&topic], &client_id, protocol));
    running.wait_for(WAIT, "Running", |s| *s == SourceState::Running).await;
    assert_quiet(&mut running, Duration::from_secs(1)).await;
    running.stop().await.expect("clean shutdown");
    forget_session(&url, &client_id).await;
}

#[tokio::test]
async fn mqtt_311_queued_messages_arrive_after_restart() {
    published_while_stopped_arrive_after_restart(Protocol::V311).await;
}

#[tokio::test]
async fn mqtt_5_queued_messages_arrive_after_restart() {
    published_while_stopped_arrive_after_restart(Protocol::V5).await;
}

async fn only_unacknowledged_messages_come_back(protocol: Protocol) {
    let url = mqtt_url();
    let (topic, client_id) = (unique("acks"), unique("acks"));
    let mut running = start(source(&url, &[&topic], &client_id, protocol));
    running.wait_for(WAIT, "Running", |s| *s == SourceState::Running).await;
    publish_text(&url, &topic, &["m1".to_string(), "m2".to_string(), "m3".to_string()]).await;
    let r1 = running.next(WAIT).await;
    let r2 = running.next(WAIT).await;
    let r3 = running.next(WAIT).await;
    assert_eq!([payload(&r1), payload(&r2), payload(&r3)], ["m1", "m2", "m3"]);

    // Out of arrival order, and the middle one never: its PUBACK is withheld.
    r3.ack.complete(Outcome::Delivered);
    r1.ack.complete(Outcome::Reject("given up: written to the failure destination".into()));
    let stopping = tokio::spawn(running.stop());
    // Shutdown waits for r2 until its drain timeout; an ack that never comes
    // is the same as a retry.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(r2);
    stopping.await.expect("stop task").expect("clean shutdown");

    let mut running = start(source(&url, &[&topic], &client_id, protocol));
    let again = running.next(WAIT).await;
    assert_eq!(payload(&again), "m2", "only the unacknowledged message comes back");
    assert_eq!(again.data["dup"], json!(true), "the broker marks it DUP");
    again.ack.complete(Outcome::Delivered);
    assert_quiet(&mut running, Duration::from_secs(1)).await;
    running.stop().await.expect("clean shutdown");

    let mut running = start(source(&url, &[&topic], &client_id, protocol));
    running.wait_for(WAIT, "Running", |s| *s == SourceState::Running).await;
    assert_quiet(&mut running, Duration::from_secs(1)).await;
    running.stop().await.expect("clean shutdown");
    forget_session(&url, &client_id).await;
}

#[tokio::test]
async fn mqtt_311_acks_in_any_order_and_only_unacked_messages_return() {
    only_unacknowledged_messages_come_back(Protocol::V311).await;
}

#[tokio::test]
async fn mqtt_5_acks_in_any_order_and_only_unacked_messages_return() {
    only_unacknowledged_messages_come_back(Protocol::V5).await;
}
