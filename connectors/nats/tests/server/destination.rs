//! The destination publishes through JetStream and reads back from the stream.

use std::time::Duration;

use async_nats::jetstream::consumer;
use bytes::Bytes;
use futures::StreamExt;
use switchyard_nats::{NatsDestination, NatsDestinationConfig};
use switchyard_sdk::{ConnectorError, Destination};

use crate::support::{Nats, unique};

#[tokio::test]
async fn records_are_published_and_acknowledged_by_the_stream() {
    let nats = Nats::connect().await;
    let stream = nats.stream("dest").await;
    let subject = stream.subject("dead");
    let config = NatsDestinationConfig {
        url: nats.url.clone(),
        subject: subject.clone(),
        headers: [("X-Source".to_string(), "switchyard".to_string())].into(),
    };
    let destination = NatsDestination::new(&config).expect("valid config");
    assert_eq!(destination.kind(), "nats");
    let records = [Bytes::from_static(br#"{"n":1}"#), Bytes::from_static(br#"{"n":2}"#)];
    destination.send(&records).await.expect("both published");

    let js_stream = nats.js.get_stream(&stream.name).await.expect("stream");
    let reader: consumer::PullConsumer = js_stream
        .create_consumer(consumer::pull::Config { durable_name: Some(unique("reader")), ..Default::default() })
        .await
        .expect("a reader");
    let mut messages = reader.fetch().max_messages(2).expires(Duration::from_secs(5)).messages().await.expect("fetch");
    let mut read = Vec::new();
    while let Some(message) = messages.next().await {
        let message = message.expect("a message");
        assert_eq!(message.subject.as_str(), subject);
        let headers = message.headers.clone().expect("headers");
        assert_eq!(headers.get("X-Source").map(|v| v.as_str()), Some("switchyard"));
        assert_eq!(headers.get("Content-Type").map(|v| v.as_str()), Some("application/json"));
        read.push(message.payload.clone());
        message.ack().await.expect("ack");
    }
    assert_eq!(read, records);
}

#[tokio::test]
async fn a_subject_no_stream_captures_fails_the_send() {
    let nats = Nats::connect().await;
    let subject = format!("{}.nowhere", unique("nostream"));
    let config = NatsDestinationConfig { url: nats.url.clone(), subject: subject.clone(), headers: Default::default() };
    let destination = NatsDestination::new(&config).expect("valid config");
    let err = destination.send(&[Bytes::from_static(b"{}")]).await.expect_err("no stream");
    assert!(matches!(err, ConnectorError::Refused(_)), "{err:?}");
    assert!(err.to_string().contains(&format!("no JetStream stream captures subject {subject:?}")), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_fails_the_send() {
    let config = NatsDestinationConfig {
        url: "nats://127.0.0.1:1".into(),
        subject: "anything".into(),
        headers: Default::default(),
    };
    let destination = NatsDestination::new(&config).expect("valid config");
    let err = destination.send(&[Bytes::from_static(b"{}")]).await.expect_err("unreachable");
    assert!(err.is_retriable() && err.to_string().contains("127.0.0.1:1"), "{err}");
}
