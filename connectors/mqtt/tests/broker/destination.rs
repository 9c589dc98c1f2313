//! The MQTT destination: every record published with QoS 1 and acknowledged
//! before a send succeeds; what a subscriber reads back.

use std::time::Duration;

use bytes::Bytes;
use switchyard_mqtt::{MqttDestination, MqttDestinationConfig, Protocol};
use switchyard_sdk::Destination;

use crate::support::{Subscriber, mqtt_url, unique};

const WAIT: Duration = Duration::from_secs(10);

fn destination(url: &str, topic: &str, protocol: Protocol, retain: bool) -> MqttDestination {
    MqttDestination::new(&MqttDestinationConfig {
        url: url.to_string(),
        topic: topic.to_string(),
        qos: 1,
        retain,
        client_id: None,
        protocol,
        keep_alive: Duration::from_secs(30),
    })
    .expect("valid destination config")
}

async fn sends_are_acknowledged_and_read_back(protocol: Protocol) {
    let url = mqtt_url();
    let topic = unique("results");
    let mut subscriber = Subscriber::start(&url, &topic).await;
    let destination = destination(&url, &topic, protocol, false);
    assert_eq!(destination.kind(), "mqtt");
    let records: Vec<Bytes> = (1..=250).map(|i| Bytes::from(format!("{{\"n\":{i}}}"))).collect();
    destination.send(&records).await.expect("every record acknowledged");
    for expected in &records {
        let message = subscriber.next(WAIT).await;
        assert_eq!(message.topic, topic);
        assert_eq!(message.payload, expected);
        assert!(!message.retain);
    }

    // The connection stays open between sends, and an empty send is a no-op.
    destination.send(&[]).await.expect("nothing to send");
    destination.send(&[Bytes::from_static(b"{}")]).await.expect("a second send");
    assert_eq!(subscriber.next(WAIT).await.payload.as_ref(), b"{}");
}

#[tokio::test]
async fn mqtt_311_sends_are_acknowledged_and_read_back() {
    sends_are_acknowledged_and_read_back(Protocol::V311).await;
}

#[tokio::test]
async fn mqtt_5_sends_are_acknowledged_and_read_back() {
    sends_are_acknowledged_and_read_back(Protocol::V5).await;
}

#[tokio::test]
async fn retained_records_reach_later_subscribers() {
    let url = mqtt_url();
    let topic = unique("retained");
    let destination = destination(&url, &topic, Protocol::V311, true);
    destination.send(&[Bytes::from_static(b"last-known")]).await.expect("acknowledged");
    let mut subscriber = Subscriber::start(&url, &topic).await;
    let message = subscriber.next(WAIT).await;
    assert_eq!((message.payload.as_ref(), message.retain), (&b"last-known"[..], true));
    // Clear the retained message: an empty retained publish deletes it.
    destination.send(&[Bytes::new()]).await.expect("acknowledged");
}

#[tokio::test]
async fn an_unreachable_broker_is_a_retriable_failure() {
    let destination = destination("mqtt://127.0.0.1:1", "t", Protocol::V311, false);
    let error = destination.send(&[Bytes::from_static(b"x")]).await.expect_err("nobody acknowledges it");
    assert!(error.is_retriable(), "{error:?}");
    assert!(error.to_string().contains("cannot reach the MQTT broker at mqtt://127.0.0.1:1"), "{error}");
}

#[tokio::test]
async fn a_broker_restart_between_sends_is_survived() {
    // The kept connection is cut by a second client taking the destination's
    // client id, as a broker restart would cut it; the next send reconnects.
    let url = mqtt_url();
    let topic = unique("survive");
    let client_id = unique("dest");
    let config = MqttDestinationConfig {
        url: url.clone(),
        topic: topic.clone(),
        qos: 1,
        retain: false,
        client_id: Some(client_id.clone()),
        protocol: Protocol::V311,
        keep_alive: Duration::from_secs(30),
    };
    let destination = MqttDestination::new(&config).expect("valid config");
    let mut subscriber = Subscriber::start(&url, &topic).await;
    destination.send(&[Bytes::from_static(b"one")]).await.expect("first send");
    crate::support::forget_session(&url, &client_id).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    destination.send(&[Bytes::from_static(b"two")]).await.expect("the send after the cut reconnects");
    assert_eq!(subscriber.next(WAIT).await.payload.as_ref(), b"one");
    assert_eq!(subscriber.next(WAIT).await.payload.as_ref(), b"two");
}
