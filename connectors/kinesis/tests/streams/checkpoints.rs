//! Checkpoints: a source that crashed after some acks is replaced by one that
//! resumes after the saved checkpoints, losing nothing and repeating nothing
//! that was checkpointed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_kinesis::{CheckpointStore, FileCheckpoints, SHARD_END};
use switchyard_sdk::Outcome;

use crate::support::{data, moto, source, source_config, start};

/// Payloads below this index are acknowledged before the crash.
const ACKED: usize = 20;
const TOTAL: usize = 60;

fn index(payload: &str) -> usize {
    payload.trim_start_matches("record-").parse().expect("a test payload")
}

#[tokio::test]
async fn a_new_source_resumes_after_the_checkpoint() {
    let Some(kinesis) = moto() else { return };
    let stream = kinesis.stream("resume", 2).await;
    let records: Vec<(String, String)> = (0..TOTAL).map(|i| (format!("key-{i}"), format!("record-{i}"))).collect();
    let written = kinesis.put(&stream, &records).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("checkpoints.json");
    let config = source_config(&kinesis, &stream);

    let mut running = start(source(&config, Arc::new(FileCheckpoints::new(&path))));
    let mut held = Vec::new();
    // The last acknowledged record of each shard: what its checkpoint must
    // become before the crash.
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for _ in 0..TOTAL {
        let record = running.next(Duration::from_secs(20)).await;
        if index(&data(&record)) < ACKED {
            let shard = record.scope.as_deref().expect("a shard scope").to_string();
            expected.insert(format!("{stream}/{shard}"), record.id.clone());
            record.ack.complete(Outcome::Delivered);
        } else {
            held.push(record);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A fresh store reads the file as it is on disk.
        let disk = FileCheckpoints::new(&path);
        let mut saved = BTreeMap::new();
        for key in expected.keys() {
            let (mapping, shard) = ("test", key.as_str());
            if let Some(sequence) = disk.load(mapping, shard).await.expect("readable checkpoints") {
                saved.insert(key.clone(), sequence);
            }
        }
        if saved == expected {
            break;
        }
        assert!(Instant::now() < deadline, "checkpoints on disk {saved:?}, expected {expected:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A crash: no shutdown, no final save; the held records are lost with it.
    running.task.abort();
    drop(held);
    drop(running.rx);

    let mut resumed = start(source(&config, Arc::new(FileCheckpoints::new(&path))));
    let mut seen = HashSet::new();
    let mut last_per_shard: BTreeMap<String, usize> = BTreeMap::new();
    while seen.len() < TOTAL - ACKED {
        let record = resumed.next(Duration::from_secs(20)).await;
        let i = index(&data(&record));
        assert!(i >= ACKED, "record-{i} was checkpointed and came again");
        let shard = record.scope.as_deref().expect("a shard scope").to_string();
        assert_eq!(shard, written[i].0);
        if let Some(previous) = last_per_shard.insert(shard.clone(), i) {
            assert!(previous < i, "shard {shard}: record-{i} after record-{previous}");
        }
        seen.insert(i);
        record.ack.complete(Outcome::Delivered);
    }
    assert!(tokio::time::timeout(Duration::from_millis(600), resumed.rx.recv()).await.is_err(), "nothing more");
    resumed.stop().await.expect("stops cleanly");
    let disk = FileCheckpoints::new(&path);
    for key in expected.keys() {
        let sequence = disk.load("test", key).await.expect("readable").expect("a checkpoint");
        assert_ne!(sequence, SHARD_END, "open shards are never finished");
    }
    kinesis.delete(&stream).await;
}

#[tokio::test]
async fn shutdown_waits_for_acks_and_saves_the_checkpoint() {
    let Some(kinesis) = moto() else { return };
    let stream = kinesis.stream("drain", 1).await;
    let records: Vec<(String, String)> = (0..10).map(|i| (format!("key-{i}"), format!("record-{i}"))).collect();
    kinesis.put(&stream, &records).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("checkpoints.json");
    let mut running = start(source(&source_config(&kinesis, &stream), Arc::new(FileCheckpoints::new(&path))));
    let mut held = Vec::new();
    for _ in 0..records.len() {
        held.push(running.next(Duration::from_secs(20)).await);
    }
    let last = held.last().map(|r| r.id.clone()).expect("ten records");
    // The outcomes arrive after shutdown began, within the drain timeout.
    let acks = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for record in held {
            record.ack.complete(Outcome::Delivered);
        }
    });
    running.stop().await.expect("stops cleanly");
    acks.await.expect("acks completed");
    let saved = FileCheckpoints::new(&path).load("test", &format!("{stream}/shardId-000000000000")).await;
    assert_eq!(saved.expect("readable"), Some(last), "the final checkpoint covers the acks that came during shutdown");
    kinesis.delete(&stream).await;
}
