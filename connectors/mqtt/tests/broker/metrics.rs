//! The source's metrics: connection attempts by outcome and the connected
//! gauge.

use std::time::Duration;

use switchyard_mqtt::Protocol;
use switchyard_sdk::SourceState;
use switchyard_testkit::metrics::{recorded, value};

use crate::support::{forget_session, mqtt_url, source, start_as, unique};

#[tokio::test]
async fn connection_attempts_and_the_connected_gauge_are_measured() {
    recorded();
    let url = mqtt_url();
    let (topic, client_id, mapping) = (unique("metrics"), unique("metrics"), unique("metrics"));
    let (errors, oks, connected) = (
        format!("switchyard_mqtt_connections_total{{mapping={mapping},outcome=error}}"),
        format!("switchyard_mqtt_connections_total{{mapping={mapping},outcome=ok}}"),
        format!("switchyard_source_connected{{mapping={mapping}}}"),
    );
    let unreachable = format!("{mapping}-down");
    let mut down = start_as(&unreachable, source("mqtt://127.0.0.1:1", &[&topic], &client_id, Protocol::V311));
    down.wait_for(Duration::from_secs(10), "Disconnected", |s| matches!(s, SourceState::Disconnected(_))).await;
    let down_errors = format!("switchyard_mqtt_connections_total{{mapping={unreachable},outcome=error}}");
    assert!(value(&down_errors).is_some_and(|n| n >= 1.0), "{down_errors}: {:?}", value(&down_errors));
    down.stop().await.expect("clean shutdown");

    let mut running = start_as(&mapping, source(&url, &[&topic], &client_id, Protocol::V311));
    running.wait_for(Duration::from_secs(10), "Running", |s| *s == SourceState::Running).await;
    assert_eq!(value(&oks), Some(1.0));
    assert_eq!(value(&errors), None);
    assert_eq!(value(&connected), Some(1.0));
    running.stop().await.expect("clean shutdown");
    assert_eq!(value(&connected), Some(0.0), "not connected after shutdown");
    forget_session(&url, &client_id).await;
}
