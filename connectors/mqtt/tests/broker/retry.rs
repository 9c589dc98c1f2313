//! `Retry`: the PUBACK is withheld and the message handed out again, from
//! memory while connected, from the session after a restart.

use std::time::Duration;

use serde_json::json;
use switchyard_mqtt::Protocol;
use switchyard_sdk::{Outcome, SourceState};

use crate::support::{assert_quiet, forget_session, mqtt_url, payload, publish_text, source, start, unique};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_retried_message_comes_back_until_delivered() {
    let url = mqtt_url();
    let (topic, client_id) = (unique("retry"), unique("retry"));
    let mut running = start(source(&url, &[&topic], &client_id, Protocol::V311));
    running.wait_for(WAIT, "Running", |s| *s == SourceState::Running).await;
    publish_text(&url, &topic, &["again".to_string()]).await;

    let first = running.next(WAIT).await;
    assert_eq!(first.data["dup"], json!(false));
    let id = first.id.clone();
    first.ack.complete(Outcome::Retry("function failed".into()));
    let second = running.next(WAIT).await;
    assert_eq!(
        (payload(&second).as_str(), second.id.as_str()),
        ("again", id.as_str()),
        "the same message, the same id"
    );
    assert_eq!(second.data["dup"], json!(true), "handed out before");
    // A dropped ack is a retry too.
    drop(second);
    let third = running.next(WAIT).await;
    assert_eq!(payload(&third), "again");
    third.ack.complete(Outcome::Delivered);
    assert_quiet(&mut running, Duration::from_millis(500)).await;
    running.stop().await.expect("clean shutdown");

    // Delivered in the end: the PUBACK went out, and the session has nothing.
    let mut running = start(source(&url, &[&topic], &client_id, Protocol::V311));
    running.wait_for(WAIT, "Running", |s| *s == SourceState::Running).await;
    assert_quiet(&mut running, Duration::from_secs(1)).await;
    running.stop().await.expect("clean shutdown");
    forget_session(&url, &client_id).await;
}

#[tokio::test]
async fn a_message_waiting_for_its_retry_at_shutdown_stays_in_the_session() {
    let url = mqtt_url();
    let (topic, client_id) = (unique("retry-stop"), unique("retry-stop"));
    let slow = || {
        source(&url, &[&topic], &client_id, Protocol::V5)
            .with_retry_delay(Duration::from_secs(60), Duration::from_secs(60))
    };
    let mut running = start(slow());
    running.wait_for(WAIT, "Running", |s| *s == SourceState::Running).await;
    publish_text(&url, &topic, &["kept".to_string()]).await;
    let record = running.next(WAIT).await;
    record.ack.complete(Outcome::Retry("later".into()));
    // Stopped long before the retry is due.
    running.stop().await.expect("clean shutdown");

    let mut running = start(slow());
    let again = running.next(WAIT).await;
    assert_eq!((payload(&again), again.data["dup"].clone()), ("kept".to_string(), json!(true)));
    again.ack.complete(Outcome::Delivered);
    running.stop().await.expect("clean shutdown");
    forget_session(&url, &client_id).await;
}

#[tokio::test]
async fn qos_0_messages_are_retried_from_memory() {
    let url = mqtt_url();
    let (topic, client_id) = (unique("qos0"), unique("qos0"));
    let mut config = crate::support::source_config(&url, &[&topic], &client_id, Protocol::V311);
    config.qos = 0;
    let source = switchyard_mqtt::MqttSource::new(&config)
        .expect("valid config")
        .with_retry_delay(Duration::from_millis(20), Duration::from_millis(200));
    let mut running = start(source);
    running.wait_for(WAIT, "Running", |s| *s == SourceState::Running).await;
    // Published with QoS 1, delivered with the subscription's QoS 0.
    publish_text(&url, &topic, &["lossy".to_string()]).await;
    let first = running.next(WAIT).await;
    assert_eq!((first.data["qos"].clone(), first.data["messageId"].clone()), (json!(0), json!(null)));
    first.ack.complete(Outcome::Retry("once more".into()));
    let again = running.next(WAIT).await;
    assert_eq!((payload(&again), again.data["dup"].clone()), ("lossy".to_string(), json!(true)));
    again.ack.complete(Outcome::Delivered);
    running.stop().await.expect("clean shutdown");
    forget_session(&url, &client_id).await;
}
