use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use super::{AcceptLog, LogSettings};
use crate::queue::store::{NewEvent, QueuedEvent, Store};

fn event(i: usize) -> NewEvent {
    // Every third payload is binary, and sizes vary so records straddle
    // segment ends at different places.
    let payload = if i % 3 == 0 {
        Bytes::from((0..(i % 50) as u8).map(|b| b.wrapping_mul(37)).collect::<Vec<u8>>())
    } else {
        Bytes::from(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 120)))
    };
    NewEvent {
        request_id: format!("request-{i}"),
        function: "f".into(),
        source: "test".into(),
        payload,
        enqueued_at: i as i64,
    }
}

fn settings(segment_size: u64, move_after: Duration) -> LogSettings {
    LogSettings { segment_size, move_after, move_max: 64 }
}

/// Opens the log as a process starting on `dir` would: a store of its own,
/// and the log's recovery.
async fn open(dir: &Path, settings: LogSettings) -> (Store, AcceptLog) {
    let store = Store::open(dir).unwrap();
    let log = AcceptLog::open(dir, store.clone(), HashMap::new(), settings).await.unwrap();
    (store, log)
}

async fn queued(store: &Store) -> Vec<QueuedEvent> {
    store.claim("f", i64::MAX, 100_000).await.unwrap()
}

async fn count(store: &Store) -> u64 {
    store.depths().await.unwrap().iter().map(|(_, n, _)| n).sum()
}

async fn wait_for_count(store: &Store, n: u64) {
    if !eventually(|| async { count(store).await == n }).await {
        panic!("the store holds {} events, expected {n}", count(store).await);
    }
}

/// Whether `check` holds within 5 seconds, checked every 10 ms.
async fn eventually<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) -> bool {
    for _ in 0..500 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn assert_same(got: &[QueuedEvent], want: &[NewEvent]) {
    assert_eq!(got.len(), want.len(), "number of queued events");
    for (g, w) in got.iter().zip(want) {
        assert_eq!((&g.request_id, &g.function, &g.source), (&w.request_id, &w.function, &w.source));
        assert_eq!(g.payload, w.payload, "payload of {}", w.request_id);
        assert_eq!(g.enqueued_at, w.enqueued_at, "enqueued_at of {}", w.request_id);
    }
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("accept-log")).unwrap().count()
}

#[tokio::test]
async fn acknowledged_events_are_queued_at_the_next_start_when_they_were_not_moved() {
    let dir = tempfile::tempdir().unwrap();
    // Never moved while running: the next start finds every event in the
    // log only (as after a crash), across several segments.
    let hold = settings(2048, Duration::from_secs(3600));
    let (store, log) = open(dir.path(), hold).await;
    let events: Vec<NewEvent> = (0..60).map(event).collect();
    for e in &events {
        log.append(e.clone()).await.unwrap();
    }
    assert_eq!(count(&store).await, 0, "nothing was moved yet");
    assert_eq!(log.unmoved(), 60);
    assert!(segment_files(dir.path()) > 2, "the events span several segments");

    let (store, _log) = open(dir.path(), hold).await;
    assert_same(&queued(&store).await, &events);

    // A third start queues nothing again.
    let (store, _log) = open(dir.path(), hold).await;
    assert_eq!(count(&store).await, 60);
}

#[tokio::test]
async fn moved_events_are_not_queued_again_and_segments_are_reused() {
    let dir = tempfile::tempdir().unwrap();
    let eager = settings(4096, Duration::ZERO);
    let (store, log) = open(dir.path(), eager).await;
    let events: Vec<NewEvent> = (0..400).map(event).collect();
    for e in &events {
        log.append(e.clone()).await.unwrap();
    }
    wait_for_count(&store, 400).await;
    // The log hears of a move just after its commit, which the count may
    // already see.
    eventually(|| async { log.unmoved() == 0 }).await;
    assert_eq!(log.unmoved(), 0);
    // 400 records take about 20 segments of 4 KB; moved ones are reused.
    let files = segment_files(dir.path());
    assert!(files <= 8, "{files} segments: moved segments are not reused");

    let (store, log) = open(dir.path(), eager).await;
    assert_same(&queued(&store).await, &events);
    let more: Vec<NewEvent> = (400..450).map(event).collect();
    for e in &more {
        log.append(e.clone()).await.unwrap();
    }
    wait_for_count(&store, 450).await;
    let (store, _log) = open(dir.path(), eager).await;
    assert_eq!(count(&store).await, 450, "nothing is queued twice");
}

#[tokio::test]
async fn reading_a_segment_stops_at_a_damaged_record() {
    let dir = tempfile::tempdir().unwrap();
    let hold = settings(1 << 20, Duration::from_secs(3600));
    let (_store, log) = open(dir.path(), hold).await;
    let events: Vec<NewEvent> = (1..=10).map(|i| event(i * 3 + 1)).collect();
    for e in &events {
        log.append(e.clone()).await.unwrap();
    }
    // Damage the 8th record's payload, as a torn write would.
    let segment = std::fs::read_dir(dir.path().join("accept-log")).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&segment).unwrap();
    let needle = events[7].payload.clone();
    let at = bytes.windows(needle.len()).position(|w| w == &needle[..]).unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();

    let (store, _log) = open(dir.path(), hold).await;
    assert_same(&queued(&store).await, &events[..7]);
}

#[tokio::test]
async fn an_event_too_large_for_a_segment_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, log) = open(dir.path(), settings(4096, Duration::ZERO)).await;
    let mut big = event(1);
    big.payload = Bytes::from(vec![b'x'; 4096]);
    assert!(!log.fits(&big));
    assert!(log.fits(&event(2)));
}
