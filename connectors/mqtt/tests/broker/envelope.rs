//! Record JSON and event shapes for JSON and binary payloads, single and
//! batch, MQTT 3.1.1 and 5.

use std::time::{Duration, SystemTime};

use rumqttc::v5::mqttbytes::v5 as v5p;
use serde_json::{Value, json};
use switchyard_mqtt::{MqttEnvelope, Protocol};
use switchyard_sdk::{Envelope, Outcome, PayloadField, Source};

use crate::support::{forget_session, host_port, mqtt_url, prime, publish, source, start, unique};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn records_and_events_have_the_documented_shape() {
    let url = mqtt_url();
    let (topic, client_id) = (unique("envelope"), unique("envelope"));
    let filter = format!("{topic}/+/telemetry");
    let device_topic = format!("{topic}/d1/telemetry");
    prime(&url, &client_id, &[&filter], Protocol::V311).await;
    let json_payload = br#"{"t":21.5,"unit":"C"}"#.to_vec();
    publish(&url, &device_topic, &[json_payload.clone(), vec![0xff, 0x00, 0x01]]).await;

    let source = source(&url, &[&filter], &client_id, Protocol::V311);
    let envelope = source.envelope();
    let mut running = start(source);
    let first = running.next(WAIT).await;
    let second = running.next(WAIT).await;

    assert!(first.id.starts_with(&format!("{device_topic}:")), "{}", first.id);
    assert_ne!(first.id, second.id);
    assert!(first.scope.is_none() && first.key.is_none(), "no ordering promise");
    assert_eq!((first.size, second.size), (json_payload.len(), 3));
    let age = SystemTime::now().duration_since(first.created_at).expect("received in the past");
    assert!(age < WAIT, "created_at is the receive time: {age:?}");

    let message_id = first.data["messageId"].as_u64().expect("a QoS 1 message has a packet id");
    assert!(message_id > 0);
    let received_at = first.data["receivedAt"].as_str().expect("receivedAt").to_string();
    assert!(received_at.ends_with('Z') && received_at.len() == "2025-01-01T12:00:00.123Z".len(), "{received_at}");
    assert_eq!(
        first.data,
        json!({
            "topic": device_topic, "qos": 1, "retain": false, "dup": false, "messageId": message_id,
            "receivedAt": received_at, "data": "eyJ0IjoyMS41LCJ1bml0IjoiQyJ9",
        })
    );
    assert_eq!(second.data["data"], "/wAB");

    // Filters and transforms find the payload under `data`.
    assert_eq!(envelope.payload_fields(&first.data), [PayloadField::base64("data")]);

    // Batch size 1: the payload itself, as an AWS IoT rule delivers it.
    let single = MqttEnvelope::for_batch_size(1);
    assert_eq!(single.event(&[&first.data]), json!({"t": 21.5, "unit": "C"}));
    assert_eq!(single.event(&[&second.data]), json!({"data": "/wAB"}));

    // Any other batch size: the batch shape, even for one record.
    let mut first_in_batch = first.data.clone();
    if let Some(object) = first_in_batch.as_object_mut() {
        object.remove("data");
        object.insert("payload".into(), json!({"t": 21.5, "unit": "C"}));
    }
    assert_eq!(
        envelope.event(&[&first.data, &second.data]),
        json!({"eventSource": "switchyard:mqtt", "records": [first_in_batch, second.data]})
    );
    assert_eq!(envelope.event(&[&first.data])["records"].as_array().map(Vec::len), Some(1));
    assert_eq!(envelope.item_id(&json!(first.id)).as_deref(), Some(first.id.as_str()));

    first.ack.complete(Outcome::Delivered);
    second.ack.complete(Outcome::Delivered);
    running.stop().await.expect("clean shutdown");
    forget_session(&url, &client_id).await;
}

/// Publishes one MQTT 5 message with properties.
async fn publish_v5(url: &str, topic: &str, payload: &'static [u8], properties: v5p::PublishProperties) {
    let (host, port) = host_port(url);
    let options = rumqttc::v5::MqttOptions::new(unique("pub5"), host, port);
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 10);
    client
        .publish_with_properties(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, payload, properties)
        .await
        .expect("queue a publish");
    loop {
        match tokio::time::timeout(WAIT, eventloop.poll()).await.expect("no PUBACK in time").expect("MQTT 5 publisher")
        {
            rumqttc::v5::Event::Incoming(v5p::Packet::PubAck(_)) => break,
            _ => continue,
        }
    }
    client.disconnect().await.expect("queue a DISCONNECT");
    while let Ok(Ok(event)) = tokio::time::timeout(WAIT, eventloop.poll()).await {
        if event == rumqttc::v5::Event::Outgoing(rumqttc::Outgoing::Disconnect) {
            break;
        }
    }
}

#[tokio::test]
async fn mqtt_5_records_carry_the_publish_properties() {
    let url = mqtt_url();
    let (topic, client_id) = (unique("properties"), unique("properties"));
    prime(&url, &client_id, &[&topic], Protocol::V5).await;
    let properties = v5p::PublishProperties {
        content_type: Some("application/json".into()),
        response_topic: Some("replies/1".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"c-1")),
        user_properties: vec![("site".into(), "north".into()), ("site".into(), "south".into())],
        ..Default::default()
    };
    publish_v5(&url, &topic, br#"{"on":true}"#, properties).await;

    let mut running = start(source(&url, &[&topic], &client_id, Protocol::V5));
    let record = running.next(WAIT).await;
    assert_eq!(record.data["topic"], Value::String(topic.clone()));
    assert_eq!(
        record.data["properties"],
        json!({
            "contentType": "application/json",
            "responseTopic": "replies/1",
            "correlationData": "Yy0x",
            "userProperties": [["site", "north"], ["site", "south"]],
        })
    );
    assert_eq!(MqttEnvelope::single().event(&[&record.data]), json!({"on": true}));
    record.ack.complete(Outcome::Delivered);
    running.stop().await.expect("clean shutdown");
    forget_session(&url, &client_id).await;
}
