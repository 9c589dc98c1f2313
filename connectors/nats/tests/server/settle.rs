//! How each outcome settles its message on the server: acked, nak'd with a
//! delay, term'd, kept alive while in progress, and released at shutdown.

use std::time::{Duration, Instant};

use switchyard_sdk::Outcome;

use crate::support::{Nats, nothing_within, source, source_config, start, unique};

#[tokio::test]
async fn delivered_is_acked_and_never_comes_back() {
    let nats = Nats::connect().await;
    let stream = nats.stream("ack").await;
    let consumer = unique("c");
    nats.publish(&stream.subject("x"), "one").await;
    let mut config = source_config(&nats.url, &stream, &consumer);
    config.ack_wait = Duration::from_secs(2);
    let mut running = start(source(&config));
    let record = running.next(Duration::from_secs(10)).await;
    record.ack.complete(Outcome::Delivered);

    // Past the ack wait: an unacked message would be back by now.
    nothing_within(&mut running, Duration::from_secs(4)).await;
    let info = nats.consumer_info(&stream.name, &consumer).await;
    assert_eq!((info.num_ack_pending, info.num_redelivered, info.num_pending), (0, 0, 0), "{info:?}");
    assert_eq!(info.ack_floor.stream_sequence, 1);
    running.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn retry_naks_with_a_delay_and_the_message_returns() {
    let nats = Nats::connect().await;
    let stream = nats.stream("nak").await;
    let consumer = unique("c");
    nats.publish(&stream.subject("x"), "again").await;
    let mut running = start(source(&source_config(&nats.url, &stream, &consumer)));
    let first = running.next(Duration::from_secs(10)).await;
    assert_eq!(first.data["deliveryCount"], 1);
    let nak_at = Instant::now();
    first.ack.complete(Outcome::Retry("function failed".into()));

    let second = running.next(Duration::from_secs(10)).await;
    let waited = nak_at.elapsed();
    assert_eq!(second.id, first.id, "the same message");
    assert_eq!(second.data["deliveryCount"], 2);
    assert!(waited >= Duration::from_millis(900), "the first nak delays redelivery by 1 s, came after {waited:?}");

    // The second failure waits twice as long.
    let nak_at = Instant::now();
    second.ack.complete(Outcome::Retry("function failed".into()));
    let third = running.next(Duration::from_secs(10)).await;
    let waited = nak_at.elapsed();
    assert_eq!(third.data["deliveryCount"], 3);
    assert!(waited >= Duration::from_millis(1900), "the second nak delays redelivery by 2 s, came after {waited:?}");
    third.ack.complete(Outcome::Delivered);
    running.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_dropped_ack_is_a_retry() {
    let nats = Nats::connect().await;
    let stream = nats.stream("drop").await;
    nats.publish(&stream.subject("x"), "dropped").await;
    let mut running = start(source(&source_config(&nats.url, &stream, &unique("c"))));
    let first = running.next(Duration::from_secs(10)).await;
    drop(first);
    let again = running.next(Duration::from_secs(10)).await;
    assert_eq!(again.data["deliveryCount"], 2);
    again.ack.complete(Outcome::Delivered);
    running.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn reject_terms_the_message() {
    let nats = Nats::connect().await;
    let stream = nats.stream("term").await;
    let consumer = unique("c");
    nats.publish(&stream.subject("x"), "poison").await;
    nats.publish(&stream.subject("x"), "fine").await;
    let mut config = source_config(&nats.url, &stream, &consumer);
    config.ack_wait = Duration::from_secs(2);
    let mut running = start(source(&config));
    let poison = running.next(Duration::from_secs(10)).await;
    let fine = running.next(Duration::from_secs(10)).await;
    poison.ack.complete(Outcome::Reject("retries exhausted".into()));
    fine.ack.complete(Outcome::Delivered);

    nothing_within(&mut running, Duration::from_secs(4)).await;
    let info = nats.consumer_info(&stream.name, &consumer).await;
    assert_eq!((info.num_ack_pending, info.num_redelivered), (0, 0), "{info:?}");
    assert_eq!(info.ack_floor.stream_sequence, 2, "a term'd message counts as done");
    running.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_record_in_progress_outlives_the_ack_wait() {
    let nats = Nats::connect().await;
    let stream = nats.stream("progress").await;
    let consumer = unique("c");
    nats.publish(&stream.subject("x"), "slow").await;
    let mut config = source_config(&nats.url, &stream, &consumer);
    config.ack_wait = Duration::from_secs(2);
    let mut running = start(source(&config));
    let record = running.next(Duration::from_secs(10)).await;

    // Three ack waits with the ack held: in-progress acks keep the server
    // from redelivering.
    nothing_within(&mut running, Duration::from_secs(6)).await;
    let info = nats.consumer_info(&stream.name, &consumer).await;
    assert_eq!((info.num_ack_pending, info.num_redelivered), (1, 0), "{info:?}");
    record.ack.complete(Outcome::Delivered);

    nothing_within(&mut running, Duration::from_secs(3)).await;
    let info = nats.consumer_info(&stream.name, &consumer).await;
    assert_eq!((info.num_ack_pending, info.num_redelivered), (0, 0), "{info:?}");
    running.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn shutdown_releases_what_was_not_acked() {
    let nats = Nats::connect().await;
    let stream = nats.stream("release").await;
    let consumer = unique("c");
    for i in 0..3 {
        nats.publish(&stream.subject("x"), format!("m{i}")).await;
    }
    // The default ack wait of 30 s: anything not released at shutdown would
    // take that long to come back.
    let config = source_config(&nats.url, &stream, &consumer);
    let mut running = start(source(&config).with_drain_timeout(Duration::from_millis(500)));
    let held = running.next(Duration::from_secs(10)).await;
    let stopped = Instant::now();
    running.stop().await.expect("clean shutdown");
    assert!(stopped.elapsed() < Duration::from_secs(5), "shutdown took {:?}", stopped.elapsed());

    let mut running = start(source(&config));
    let mut again = Vec::new();
    for _ in 0..3 {
        let record = running.next(Duration::from_secs(5)).await;
        again.push((record.id.clone(), record.data["deliveryCount"].clone()));
        record.ack.complete(Outcome::Delivered);
    }
    again.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(again[0].0, held.id);
    assert!(again.iter().all(|(_, count)| *count == 2), "all three were delivered once before: {again:?}");
    held.ack.complete(Outcome::Delivered);
    running.stop().await.expect("clean shutdown");
}
