//! Setting up: the stream and the consumer, as configured or as found, and
//! what the source says when it cannot.

use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, push};
use async_nats::jetstream::stream;
use switchyard_sdk::{Outcome, SourceState};
use switchyard_testkit::metrics::{recorded, value};

use crate::support::{Nats, TestStream, body, source, source_config, start, start_as, unique};

#[tokio::test]
async fn a_missing_stream_is_reported_until_it_exists() {
    recorded();
    let nats = Nats::connect().await;
    let name = unique("late");
    let _stream = TestStream::adopt(&nats, &name);
    let mapping = unique("m");
    let config = switchyard_nats::NatsSourceConfig {
        url: nats.url.clone(),
        stream: name.clone(),
        consumer: unique("c"),
        subjects: vec![format!("{name}.>")],
        create_stream: false,
        ordered: false,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 10,
    };
    let mut running = start_as(&mapping, source(&config));
    let state =
        running.wait_for(Duration::from_secs(10), "Disconnected", |s| matches!(s, SourceState::Disconnected(_))).await;
    let SourceState::Disconnected(reason) = state else { unreachable!() };
    assert!(reason.contains(&format!("stream {name:?} not found")) && reason.contains("create_stream"), "{reason}");
    let (errors, oks, connected) = (
        format!("switchyard_nats_connections_total{{mapping={mapping},outcome=error}}"),
        format!("switchyard_nats_connections_total{{mapping={mapping},outcome=ok}}"),
        format!("switchyard_source_connected{{mapping={mapping}}}"),
    );
    assert!(value(&errors).is_some_and(|n| n >= 1.0), "{errors}: {:?}", value(&errors));
    assert_eq!(value(&connected), Some(0.0));

    nats.js
        .create_stream(stream::Config { name: name.clone(), subjects: vec![format!("{name}.>")], ..Default::default() })
        .await
        .expect("create the stream");
    running.wait_for(Duration::from_secs(10), "Running", |s| *s == SourceState::Running).await;
    assert_eq!(value(&oks), Some(1.0));
    assert_eq!(value(&connected), Some(1.0));
    nats.publish(&format!("{name}.x"), "late").await;
    let record = running.next(Duration::from_secs(10)).await;
    assert_eq!(body(&record), "late");
    record.ack.complete(Outcome::Delivered);
    running.stop().await.expect("clean shutdown");
    assert_eq!(value(&connected), Some(0.0), "not connected after shutdown");
    let settled = format!("switchyard_nats_settles_total{{kind=ack,mapping={mapping},outcome=sent}}");
    assert_eq!(value(&settled), Some(1.0), "{settled}");
}

#[tokio::test]
async fn create_stream_makes_the_stream_with_the_subjects() {
    let nats = Nats::connect().await;
    let name = unique("created");
    let _stream = TestStream::adopt(&nats, &name);
    let config = switchyard_nats::NatsSourceConfig {
        url: nats.url.clone(),
        stream: name.clone(),
        consumer: unique("c"),
        subjects: vec![format!("{name}.orders.>")],
        create_stream: true,
        ordered: false,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 10,
    };
    let mut running = start(source(&config));
    running.wait_for(Duration::from_secs(10), "Running", |s| *s == SourceState::Running).await;
    let mut created = nats.js.get_stream(&name).await.expect("the source created the stream");
    let info = created.info().await.expect("stream info");
    assert_eq!(info.config.subjects, [format!("{name}.orders.>")]);
    nats.publish(&format!("{name}.orders.1"), "first").await;
    let record = running.next(Duration::from_secs(10)).await;
    assert_eq!(body(&record), "first");
    record.ack.complete(Outcome::Delivered);
    running.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn an_existing_consumer_is_brought_to_the_config_and_keeps_the_rest() {
    let nats = Nats::connect().await;
    let stream = nats.stream("update").await;
    let name = unique("c");
    let js_stream = nats.js.get_stream(&stream.name).await.expect("stream");
    js_stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.clone()),
            description: Some("owned by ops".into()),
            max_deliver: 7,
            ack_wait: Duration::from_secs(60),
            max_ack_pending: 5,
            filter_subject: stream.subject("old"),
            ..Default::default()
        })
        .await
        .expect("create the consumer");
    let mut config = source_config(&nats.url, &stream, &name);
    config.ack_wait = Duration::from_secs(7);
    config.max_ack_pending = 50;
    let mut running = start(source(&config));
    running.wait_for(Duration::from_secs(10), "Running", |s| *s == SourceState::Running).await;
    let info = nats.consumer_info(&stream.name, &name).await;
    assert_eq!(info.config.ack_wait, Duration::from_secs(7));
    assert_eq!(info.config.max_ack_pending, 50);
    assert_eq!(info.config.filter_subject, stream.all());
    assert_eq!(info.config.description.as_deref(), Some("owned by ops"), "what the config does not set is kept");
    assert_eq!(info.config.max_deliver, 7);
    running.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_consumer_that_cannot_be_used_is_reported() {
    let nats = Nats::connect().await;
    let stream = nats.stream("unusable").await;
    let js_stream = nats.js.get_stream(&stream.name).await.expect("stream");
    let push_name = unique("push");
    js_stream
        .create_consumer(push::Config {
            durable_name: Some(push_name.clone()),
            deliver_subject: format!("deliver.{push_name}"),
            ..Default::default()
        })
        .await
        .expect("create a push consumer");
    let mut running = start(source(&source_config(&nats.url, &stream, &push_name)));
    let state =
        running.wait_for(Duration::from_secs(10), "Disconnected", |s| matches!(s, SourceState::Disconnected(_))).await;
    assert!(format!("{state:?}").contains("push consumer"), "{state:?}");
    running.stop().await.expect("clean shutdown");

    let ack_all = unique("ackall");
    js_stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(ack_all.clone()),
            ack_policy: AckPolicy::All,
            ..Default::default()
        })
        .await
        .expect("create an ack-all consumer");
    let mut running = start(source(&source_config(&nats.url, &stream, &ack_all)));
    let state =
        running.wait_for(Duration::from_secs(10), "Disconnected", |s| matches!(s, SourceState::Disconnected(_))).await;
    assert!(format!("{state:?}").contains("ack policy"), "{state:?}");
    running.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn several_filter_subjects_need_a_server_that_has_them() {
    let nats = Nats::connect().await;
    let stream = nats.stream("filters").await;
    let mut config = source_config(&nats.url, &stream, &unique("c"));
    config.subjects = vec![stream.subject("a"), stream.subject("b")];
    let version = nats.client.server_info().version;
    let mut running = start(source(&config));
    let old = version.starts_with("2.9.") || version.starts_with("2.8.") || version.starts_with("2.7.");
    if old {
        let state = running
            .wait_for(Duration::from_secs(10), "Disconnected", |s| matches!(s, SourceState::Disconnected(_)))
            .await;
        assert!(format!("{state:?}").contains("2.10 or later"), "{state:?}");
    } else {
        running.wait_for(Duration::from_secs(10), "Running", |s| *s == SourceState::Running).await;
        nats.publish(&stream.subject("c"), "filtered out").await;
        nats.publish(&stream.subject("b"), "kept").await;
        let record = running.next(Duration::from_secs(10)).await;
        assert_eq!(body(&record), "kept");
        record.ack.complete(Outcome::Delivered);
    }
    running.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_consumer_deleted_while_running_is_made_again() {
    let nats = Nats::connect().await;
    let stream = nats.stream("deleted").await;
    let name = unique("c");
    let mut running = start(source(&source_config(&nats.url, &stream, &name)));
    running.wait_for(Duration::from_secs(10), "Running", |s| *s == SourceState::Running).await;
    let js_stream = nats.js.get_stream(&stream.name).await.expect("stream");
    js_stream.delete_consumer(&name).await.expect("delete the consumer");
    let state =
        running.wait_for(Duration::from_secs(20), "Disconnected", |s| matches!(s, SourceState::Disconnected(_))).await;
    assert!(format!("{state:?}").contains("deleted") || format!("{state:?}").contains("answers"), "{state:?}");
    running.wait_for(Duration::from_secs(10), "Running", |s| *s == SourceState::Running).await;
    nats.publish(&stream.subject("x"), "after").await;
    let record = running.next(Duration::from_secs(10)).await;
    assert_eq!(body(&record), "after");
    record.ack.complete(Outcome::Delivered);
    running.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn an_unreachable_server_is_reported() {
    // Nothing listens on port 1 of the loopback address; the password must
    // stay out of the reason.
    let nats = Nats::connect().await;
    let stream = nats.stream("unreachable").await;
    let config = source_config("nats://user:s3cret@127.0.0.1:1", &stream, &unique("c"));
    let mut running = start(source(&config));
    let state =
        running.wait_for(Duration::from_secs(15), "Disconnected", |s| matches!(s, SourceState::Disconnected(_))).await;
    let text = format!("{state:?}");
    assert!(text.contains("127.0.0.1:1") && !text.contains("s3cret"), "{text}");
    running.stop().await.expect("clean shutdown");
}
