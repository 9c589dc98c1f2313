//! Resharding against kinesalite: children start only after every record of
//! their parents was read and acknowledged, through a split and a merge.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use switchyard_kinesis::{MemoryCheckpoints, SHARD_END};
use switchyard_sdk::{Outcome, Record};

use crate::support::{Kinesis, Running, data, kinesalite, sequence, sequence_order, source, source_config, start};

/// The middle of the hash key range (2^127): a split there halves a shard.
const MIDDLE: &str = "170141183460469231731687303715884105728";

fn records(prefix: &str, n: usize) -> Vec<(String, String)> {
    (0..n).map(|i| (format!("{prefix}-key-{i}"), format!("{prefix}-{i}"))).collect()
}

async fn receive(running: &mut Running, n: usize) -> Vec<Record> {
    let mut received = Vec::new();
    for _ in 0..n {
        received.push(running.next(Duration::from_secs(30)).await);
    }
    received
}

/// Records by shard, each shard's sequence numbers increasing.
fn by_shard(records: &[Record]) -> BTreeMap<String, Vec<String>> {
    let mut shards: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for record in records {
        shards.entry(record.scope.as_deref().expect("a shard scope").to_string()).or_default().push(sequence(record));
    }
    for (shard, sequences) in &shards {
        assert!(sequences.windows(2).all(|w| sequence_order(&w[0], &w[1]).is_lt()), "{shard} out of order");
    }
    shards
}

async fn wait_open_shards(kinesis: &Kinesis, stream: &str, open: usize) {
    kinesis.wait_active(stream).await;
    let listing = kinesis.client.list_shards().stream_name(stream).send().await.expect("list shards");
    let count = listing
        .shards()
        .iter()
        .filter(|s| s.sequence_number_range().and_then(|r| r.ending_sequence_number()).is_none())
        .count();
    assert_eq!(count, open, "open shards after resharding: {listing:?}");
}

#[tokio::test]
async fn children_start_after_their_parents_were_acknowledged() {
    let Some(kinesis) = kinesalite() else { return };
    let stream = kinesis.stream("reshard", 1).await;
    let parent_records = records("parent", 20);
    kinesis.put(&stream, &parent_records).await;
    let store = Arc::new(MemoryCheckpoints::new());
    let mut running = start(source(&source_config(&kinesis, &stream), store.clone()));
    let parents = receive(&mut running, parent_records.len()).await;
    assert_eq!(
        parents.iter().map(data).collect::<Vec<_>>(),
        parent_records.iter().map(|r| r.1.clone()).collect::<Vec<_>>()
    );

    kinesis
        .client
        .split_shard()
        .stream_name(&stream)
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key(MIDDLE)
        .send()
        .await
        .expect("split the shard");
    wait_open_shards(&kinesis, &stream, 2).await;
    let child_records = records("child", 30);
    let written = kinesis.put(&stream, &child_records).await;
    let child_shards: std::collections::BTreeSet<&str> = written.iter().map(|(shard, _)| shard.as_str()).collect();
    assert!(child_shards.len() == 2 && !child_shards.contains("shardId-000000000000"), "{child_shards:?}");

    // The parent's records are in flight: no child may start yet, though the
    // source lists the children every second.
    let early = tokio::time::timeout(Duration::from_secs(3), running.rx.recv()).await;
    assert!(
        early.is_err(),
        "a record arrived while the parent's were unacknowledged: {:?}",
        early.ok().flatten().map(|r| r.data)
    );
    for record in parents {
        record.ack.complete(Outcome::Delivered);
    }
    let children = receive(&mut running, child_records.len()).await;
    let shards = by_shard(&children);
    assert_eq!(shards.keys().map(String::as_str).collect::<std::collections::BTreeSet<_>>(), child_shards);
    let mut payloads: Vec<String> = children.iter().map(data).collect();
    payloads.sort();
    let mut expected: Vec<String> = child_records.iter().map(|r| r.1.clone()).collect();
    expected.sort();
    assert_eq!(payloads, expected, "every child record once");
    let saved = store.snapshot("test");
    assert_eq!(saved.get(&format!("{stream}/shardId-000000000000")).map(String::as_str), Some(SHARD_END));

    // Merge the two children back into one: its records wait for both.
    for record in children {
        record.ack.complete(Outcome::Delivered);
    }
    kinesis
        .client
        .merge_shards()
        .stream_name(&stream)
        .shard_to_merge("shardId-000000000001")
        .adjacent_shard_to_merge("shardId-000000000002")
        .send()
        .await
        .expect("merge the children");
    wait_open_shards(&kinesis, &stream, 1).await;
    let merged_records = records("merged", 10);
    let written = kinesis.put(&stream, &merged_records).await;
    let merged = receive(&mut running, merged_records.len()).await;
    let shards = by_shard(&merged);
    assert_eq!(shards.keys().collect::<Vec<_>>(), [&written[0].0], "all in the merged shard");
    assert_eq!(
        merged.iter().map(data).collect::<Vec<_>>(),
        merged_records.iter().map(|r| r.1.clone()).collect::<Vec<_>>()
    );
    for record in merged {
        record.ack.complete(Outcome::Delivered);
    }
    assert!(tokio::time::timeout(Duration::from_millis(600), running.rx.recv()).await.is_err(), "nothing more");
    running.stop().await.expect("stops cleanly");
    let saved = store.snapshot("test");
    for child in ["shardId-000000000001", "shardId-000000000002"] {
        assert_eq!(saved.get(&format!("{stream}/{child}")).map(String::as_str), Some(SHARD_END), "{child}: {saved:?}");
    }
    kinesis.delete(&stream).await;
}

#[tokio::test]
async fn a_latest_start_skips_closed_shards_and_history() {
    let Some(kinesis) = kinesalite() else { return };
    let stream = kinesis.stream("latest", 1).await;
    kinesis.put(&stream, &records("old-parent", 5)).await;
    kinesis
        .client
        .split_shard()
        .stream_name(&stream)
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key(MIDDLE)
        .send()
        .await
        .expect("split the shard");
    wait_open_shards(&kinesis, &stream, 2).await;
    kinesis.put(&stream, &records("old-child", 10)).await;

    let mut config = source_config(&kinesis, &stream);
    config.starting_position = switchyard_kinesis::StartingPosition::Latest;
    let store = Arc::new(MemoryCheckpoints::new());
    let mut running = start(source(&config, store.clone()));
    running.wait_for(Duration::from_secs(20), "running", |s| *s == switchyard_sdk::SourceState::Running).await;
    // Both children hold their LATEST iterators once each was polled.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let new_records = records("new", 10);
    kinesis.put(&stream, &new_records).await;
    let received = receive(&mut running, new_records.len()).await;
    let mut payloads: Vec<String> = received.iter().map(data).collect();
    payloads.sort();
    let mut expected: Vec<String> = new_records.iter().map(|r| r.1.clone()).collect();
    expected.sort();
    assert_eq!(payloads, expected, "only records written after the start");
    by_shard(&received);
    for record in received {
        record.ack.complete(Outcome::Delivered);
    }
    assert!(tokio::time::timeout(Duration::from_millis(600), running.rx.recv()).await.is_err(), "nothing more");
    running.stop().await.expect("stops cleanly");
    let saved = store.snapshot("test");
    assert!(!saved.contains_key(&format!("{stream}/shardId-000000000000")), "the closed parent was skipped: {saved:?}");
    kinesis.delete(&stream).await;
}
