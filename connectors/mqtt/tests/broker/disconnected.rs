//! Failures show as Disconnected with a reason that names the broker or the
//! client id; the source keeps retrying and shuts down cleanly meanwhile.

use std::time::Duration;

use switchyard_mqtt::Protocol;
use switchyard_sdk::SourceState;

use crate::support::{forget_session, mqtt_url, source, start, unique};

const WAIT: Duration = Duration::from_secs(10);

fn disconnected(state: &SourceState) -> bool {
    matches!(state, SourceState::Disconnected(_))
}

#[tokio::test]
async fn an_unreachable_broker_shows_as_disconnected_and_shuts_down_cleanly() {
    let mut running = start(source("mqtt://someone:secret@127.0.0.1:1", &["t"], &unique("nobody"), Protocol::V311));
    let state = running.wait_for(WAIT, "Disconnected", disconnected).await;
    let SourceState::Disconnected(reason) = state else { unreachable!() };
    eprintln!("reason: {reason}");
    assert!(reason.starts_with("cannot reach the MQTT broker at mqtt://someone@127.0.0.1:1"), "{reason}");
    assert!(!reason.contains("secret"), "no password in the reason: {reason}");
    assert!(!running.task.is_finished(), "the source keeps retrying");
    let state = running.state.clone();
    running.stop().await.expect("clean shutdown while disconnected");
    assert_eq!(*state.borrow(), SourceState::Stopped);
}

/// Two sources with one client id take the session from each other; the
/// reason says so. MQTT 5 lets a broker name it (DISCONNECT "session taken
/// over"), but Mosquitto 2.0 closes the socket without one, as for MQTT 3.1.1.
async fn a_second_client_with_the_same_id(protocol: Protocol) {
    let url = mqtt_url();
    let (topic, client_id) = (unique("taken"), unique("taken"));
    let mut first = start(source(&url, &[&topic], &client_id, protocol));
    first.wait_for(WAIT, "Running", |s| *s == SourceState::Running).await;
    let second = start(source(&url, &[&topic], &client_id, protocol));
    let state = first.wait_for(WAIT, "Disconnected", disconnected).await;
    let SourceState::Disconnected(reason) = state else { unreachable!() };
    eprintln!("reason: {reason}");
    let named = reason.contains("took the session over") || reason.contains("did another client connect");
    assert!(named && reason.contains(&format!("{client_id:?}")), "{reason}");
    second.stop().await.expect("clean shutdown");
    first.stop().await.expect("clean shutdown");
    forget_session(&url, &client_id).await;
}

#[tokio::test]
async fn mqtt_5_a_taken_over_session_is_named() {
    a_second_client_with_the_same_id(Protocol::V5).await;
}

#[tokio::test]
async fn mqtt_311_a_taken_over_session_is_named() {
    a_second_client_with_the_same_id(Protocol::V311).await;
}
