//! Every record of a multi-shard stream arrives, each shard in order; a
//! retried record comes back first, followed by the rest of its shard.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use switchyard_kinesis::MemoryCheckpoints;
use switchyard_sdk::{Outcome, SourceState};

use crate::support::{data, moto, sequence, sequence_order, source, source_config, start};

#[tokio::test]
async fn every_shard_is_read_in_order() {
    let Some(kinesis) = moto() else { return };
    let stream = kinesis.stream("order", 3).await;
    let records: Vec<(String, String)> = (0..150).map(|i| (format!("key-{i}"), format!("record-{i}"))).collect();
    let written = kinesis.put(&stream, &records).await;
    let shards_written: HashSet<&str> = written.iter().map(|(shard, _)| shard.as_str()).collect();
    assert!(shards_written.len() >= 2, "the keys spread over several shards: {shards_written:?}");

    let mut running = start(source(&source_config(&kinesis, &stream), Arc::new(MemoryCheckpoints::new())));
    let mut by_shard: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for _ in 0..records.len() {
        let record = running.next(Duration::from_secs(20)).await;
        let shard = record.scope.as_deref().expect("a shard scope").to_string();
        assert_eq!(record.id, sequence(&record), "the record id is its sequence number");
        let key = record.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned());
        let payload = data(&record);
        let index: usize = payload.trim_start_matches("record-").parse().expect("a test payload");
        assert_eq!(key.as_deref(), Some(records[index].0.as_str()), "the key is the partition key");
        assert_eq!(shard, written[index].0, "the scope is the shard the record was written to");
        assert!(seen.insert(payload.clone()), "{payload} arrived twice");
        by_shard.entry(shard).or_default().push(sequence(&record));
        record.ack.complete(Outcome::Delivered);
    }
    for (shard, sequences) in &by_shard {
        assert!(
            sequences.windows(2).all(|w| sequence_order(&w[0], &w[1]).is_lt()),
            "shard {shard} out of order: {sequences:?}"
        );
    }
    assert_eq!(by_shard.len(), shards_written.len());
    assert_eq!(*running.state.borrow(), SourceState::Running);
    assert!(tokio::time::timeout(Duration::from_millis(600), running.rx.recv()).await.is_err(), "nothing more");
    running.stop().await.expect("stops cleanly");
    kinesis.delete(&stream).await;
}

#[tokio::test]
async fn a_retry_rewinds_to_the_failed_record() {
    let Some(kinesis) = moto() else { return };
    let stream = kinesis.stream("retry", 1).await;
    let records: Vec<(String, String)> = (0..10).map(|i| (format!("key-{i}"), format!("record-{i}"))).collect();
    kinesis.put(&stream, &records).await;
    let store = Arc::new(MemoryCheckpoints::new());
    let mut running = start(source(&source_config(&kinesis, &stream), store.clone()));
    let mut first = Vec::new();
    for _ in 0..10 {
        first.push(running.next(Duration::from_secs(20)).await);
    }
    let payloads: Vec<String> = first.iter().map(data).collect();
    assert_eq!(payloads, records.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>());
    let last_sequence = first.last().map(|r| r.id.clone()).expect("ten records");
    let mut first = first.into_iter();
    for record in first.by_ref().take(4) {
        record.ack.complete(Outcome::Delivered);
    }
    let failed = first.next().expect("record 4");
    assert_eq!(data(&failed), "record-4");
    failed.ack.complete(Outcome::Retry("the function failed".into()));
    // Later records of the shard are retried along with it; their late acks
    // belong to a delivery the rewind replaced.
    for record in first {
        record.ack.complete(Outcome::Delivered);
    }
    let mut again = Vec::new();
    for _ in 4..10 {
        let record = running.next(Duration::from_secs(20)).await;
        again.push(data(&record));
        record.ack.complete(Outcome::Delivered);
    }
    assert_eq!(again, (4..10).map(|i| format!("record-{i}")).collect::<Vec<_>>(), "from the failed record, in order");
    assert!(tokio::time::timeout(Duration::from_millis(600), running.rx.recv()).await.is_err(), "nothing more");
    running.stop().await.expect("stops cleanly");
    let saved = store.snapshot("test");
    let last = saved.get(&format!("{stream}/shardId-000000000000")).expect("a checkpoint");
    assert_eq!(last, &last_sequence, "the checkpoint is the last record once all were delivered");
    kinesis.delete(&stream).await;
}

#[tokio::test]
async fn a_missing_stream_is_reported_by_name() {
    let Some(kinesis) = moto() else { return };
    let config = source_config(&kinesis, "sy-no-such-stream");
    let mut running = start(source(&config, Arc::new(MemoryCheckpoints::new())));
    let state = running
        .wait_for(Duration::from_secs(10), "a disconnected state", |s| matches!(s, SourceState::Disconnected(_)))
        .await;
    let SourceState::Disconnected(reason) = state else { unreachable!() };
    assert!(reason.contains("sy-no-such-stream"), "{reason}");
    assert!(reason.contains("does not exist"), "{reason}");
    running.stop().await.expect("stops while disconnected");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_reported() {
    let Some(_kinesis) = moto() else { return };
    let mut config = switchyard_kinesis::KinesisSourceConfig::for_stream("orders");
    // Nothing listens on port 9 of loopback.
    config.endpoint_url = Some("http://127.0.0.1:9".into());
    config.region = Some("us-east-1".into());
    let mut running = start(source(&config, Arc::new(MemoryCheckpoints::new())));
    let state = running
        .wait_for(Duration::from_secs(10), "a disconnected state", |s| matches!(s, SourceState::Disconnected(_)))
        .await;
    let SourceState::Disconnected(reason) = state else { unreachable!() };
    assert!(reason.contains("cannot reach Kinesis for stream orders"), "{reason}");
    running.stop().await.expect("stops while disconnected");
}

#[tokio::test]
async fn at_most_max_in_flight_records_are_out_per_shard() {
    let Some(kinesis) = moto() else { return };
    let stream = kinesis.stream("in-flight", 1).await;
    let records: Vec<(String, String)> = (0..12).map(|i| (format!("key-{i}"), format!("record-{i}"))).collect();
    kinesis.put(&stream, &records).await;
    let source = source(&source_config(&kinesis, &stream), Arc::new(MemoryCheckpoints::new())).with_max_in_flight(5);
    let mut running = start(source);
    let mut received = Vec::new();
    for _ in 0..5 {
        received.push(running.next(Duration::from_secs(20)).await);
    }
    let more = tokio::time::timeout(Duration::from_secs(1), running.rx.recv()).await;
    assert!(more.is_err(), "a sixth record while five are in flight");
    let mut payloads: Vec<String> = received.iter().map(data).collect();
    for record in received.drain(..) {
        record.ack.complete(Outcome::Delivered);
    }
    while payloads.len() < records.len() {
        let record = running.next(Duration::from_secs(20)).await;
        payloads.push(data(&record));
        record.ack.complete(Outcome::Delivered);
    }
    assert_eq!(payloads, records.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>());
    running.stop().await.expect("stops cleanly");
    kinesis.delete(&stream).await;
}

#[tokio::test]
async fn a_timestamp_start_skips_older_records() {
    let Some(kinesis) = moto() else { return };
    let stream = kinesis.stream("timestamp", 1).await;
    kinesis.put(&stream, &[("old".into(), "old-record".into())]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let at = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    kinesis.put(&stream, &[("new".into(), "new-record".into())]).await;
    let mut config = source_config(&kinesis, &stream);
    config.starting_position = switchyard_kinesis::StartingPosition::AtTimestamp(at);
    let mut running = start(source(&config, Arc::new(MemoryCheckpoints::new())));
    let record = running.next(Duration::from_secs(20)).await;
    assert_eq!(data(&record), "new-record");
    record.ack.complete(Outcome::Delivered);
    assert!(tokio::time::timeout(Duration::from_millis(600), running.rx.recv()).await.is_err(), "nothing more");
    running.stop().await.expect("stops cleanly");
    kinesis.delete(&stream).await;
}
