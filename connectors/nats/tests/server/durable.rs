//! The durable consumer outlives the source: a restart resumes where the
//! server says the previous run stopped.

use std::collections::BTreeSet;
use std::time::Duration;

use switchyard_sdk::Outcome;

use crate::support::{Nats, body, nothing_within, source, source_config, start, unique};

#[tokio::test]
async fn a_restart_resumes_from_the_durable_consumer() {
    let nats = Nats::connect().await;
    let stream = nats.stream("durable").await;
    let consumer = unique("c");
    let config = source_config(&nats.url, &stream, &consumer);
    for i in 0..5 {
        nats.publish(&stream.subject("x"), format!("before-{i}")).await;
    }
    let mut running = start(source(&config));
    for i in 0..5 {
        let record = running.next(Duration::from_secs(10)).await;
        assert_eq!(body(&record), format!("before-{i}"));
        record.ack.complete(Outcome::Delivered);
    }
    running.stop().await.expect("clean shutdown");

    // Published while no source runs.
    for i in 0..5 {
        nats.publish(&stream.subject("x"), format!("while-stopped-{i}")).await;
    }
    let info = nats.consumer_info(&stream.name, &consumer).await;
    assert_eq!((info.num_pending, info.num_ack_pending), (5, 0), "the consumer kept its place: {info:?}");

    let mut running = start(source(&config));
    let mut got = BTreeSet::new();
    for _ in 0..5 {
        let record = running.next(Duration::from_secs(10)).await;
        assert_eq!(record.data["deliveryCount"], 1, "nothing is delivered twice");
        got.insert(body(&record));
        record.ack.complete(Outcome::Delivered);
    }
    let expected: BTreeSet<String> = (0..5).map(|i| format!("while-stopped-{i}")).collect();
    assert_eq!(got, expected);
    nothing_within(&mut running, Duration::from_secs(2)).await;
    let info = nats.consumer_info(&stream.name, &consumer).await;
    assert_eq!((info.num_pending, info.num_ack_pending, info.num_redelivered), (0, 0, 0), "{info:?}");
    assert_eq!(info.ack_floor.stream_sequence, 10);
    running.stop().await.expect("clean shutdown");
}
