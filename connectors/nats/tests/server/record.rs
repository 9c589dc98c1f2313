//! What a record holds, field by field, and the event around it.

use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use serde_json::json;
use switchyard_sdk::{Outcome, SourceState};

use crate::support::{Nats, body, source, source_config, start, unique};

#[tokio::test]
async fn a_record_carries_the_message_and_its_delivery() {
    let nats = Nats::connect().await;
    let stream = nats.stream("record").await;
    let consumer = unique("c");
    let mut headers = HeaderMap::new();
    headers.append("Nats-Msg-Id", "order-7");
    headers.append("X-Tag", "a");
    headers.append("X-Tag", "b");
    let subject = stream.subject("orders.created");
    let before = SystemTime::now() - Duration::from_secs(1);
    let seq = nats.publish_with_headers(&subject, headers, r#"{"id":7}"#).await;
    nats.publish(&stream.subject("other"), &b"\xff\x00"[..]).await;

    let config = source_config(&nats.url, &stream, &consumer);
    let src = source(&config);
    let envelope = switchyard_sdk::Source::envelope(&src);
    let mut running = start(src);
    let record = running.next(Duration::from_secs(10)).await;
    assert_eq!(*running.state.borrow(), SourceState::Running);

    assert_eq!(record.id, format!("{}:{seq}", stream.name));
    assert!(record.scope.is_none(), "unordered: no scope");
    assert!(record.key.is_none());
    assert_eq!(record.size, 8);
    assert!(record.created_at >= before && record.created_at <= SystemTime::now(), "{:?}", record.created_at);
    let data = &record.data;
    let mut keys: Vec<&str> = data.as_object().expect("an object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "consumer",
            "consumerSequence",
            "data",
            "deliveryCount",
            "headers",
            "stream",
            "streamSequence",
            "subject",
            "timestamp"
        ]
    );
    assert_eq!(data["subject"], subject);
    assert_eq!(data["stream"], stream.name);
    assert_eq!(data["consumer"], consumer);
    assert_eq!(data["streamSequence"], seq);
    assert_eq!(data["consumerSequence"], 1);
    assert_eq!(data["deliveryCount"], 1);
    assert_eq!(data["headers"], json!({"Nats-Msg-Id": ["order-7"], "X-Tag": ["a", "b"]}));
    assert_eq!(data["data"], "eyJpZCI6N30=");
    assert_eq!(body(&record), r#"{"id":7}"#);
    let timestamp = data["timestamp"].as_str().expect("a string");
    assert_eq!(timestamp, switchyard_nats::timestamp(record.created_at));
    assert!(timestamp.len() == 24 && timestamp.ends_with('Z'), "RFC 3339 with milliseconds: {timestamp}");

    let binary = running.next(Duration::from_secs(10)).await;
    assert_eq!(binary.data["data"], "/wA=", "binary payloads are base64 too");
    assert_eq!(binary.data["headers"], json!({}), "no headers is an empty object");

    let event = envelope.event(&[&record.data, &binary.data]);
    assert_eq!(event["eventSource"], "switchyard:nats");
    assert_eq!(event["stream"], stream.name);
    assert_eq!(event["consumer"], consumer);
    assert_eq!(event["records"], json!([record.data, binary.data]));
    assert_eq!(envelope.item_id(&json!(record.id)), Some(record.id.clone()));

    record.ack.complete(Outcome::Delivered);
    binary.ack.complete(Outcome::Delivered);
    running.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn ordered_records_are_scoped_by_subject_in_stream_order() {
    let nats = Nats::connect().await;
    let stream = nats.stream("ordered").await;
    for i in 0..10 {
        let subject = stream.subject(if i % 2 == 0 { "a" } else { "b" });
        nats.publish(&subject, format!("{i}")).await;
    }
    let mut config = source_config(&nats.url, &stream, &unique("c"));
    config.ordered = true;
    let mut running = start(source(&config));
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut held = Vec::new();
    for _ in 0..10 {
        let record = running.next(Duration::from_secs(10)).await;
        let scope = record.scope.as_deref().expect("ordered records have a scope").to_string();
        assert_eq!(scope, record.data["subject"].as_str().expect("subject"));
        seen.push((scope, body(&record)));
        held.push(record);
    }
    for (subject, expected) in [("a", ["0", "2", "4", "6", "8"]), ("b", ["1", "3", "5", "7", "9"])] {
        let got: Vec<&str> =
            seen.iter().filter(|(scope, _)| *scope == stream.subject(subject)).map(|(_, b)| b.as_str()).collect();
        assert_eq!(got, expected, "subject {subject} in stream order");
    }

    // Retries of one subject, completed newest first, still come back in
    // stream order: the source hands them out again oldest first.
    let (mut retried, done): (Vec<_>, Vec<_>) =
        held.into_iter().partition(|r| r.scope.as_deref() == Some(stream.subject("a").as_str()));
    for record in done {
        record.ack.complete(Outcome::Delivered);
    }
    retried.reverse();
    for record in retried {
        record.ack.complete(Outcome::Retry("again".into()));
    }
    let mut again = Vec::new();
    for _ in 0..5 {
        let record = running.next(Duration::from_secs(10)).await;
        assert_eq!(record.data["deliveryCount"], 2);
        again.push(body(&record));
        record.ack.complete(Outcome::Delivered);
    }
    assert_eq!(again, ["0", "2", "4", "6", "8"]);
    running.stop().await.expect("clean shutdown");
}
