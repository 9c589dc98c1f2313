//! The polled-source pipeline (batching, ordering, retries, bisect, partial
//! batch responses, on_failure) driven by the conformance kit's reference
//! sources, against a real HTTP function on loopback.

mod common;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use common::{FunctionServer, Received, eventually};
use serde_json::{Value, json};
use switchyard::config::{BackoffConfig, BatchConfig, DestinationConfig, FunctionConfig, RetryConfig};
use switchyard::destination::{Target, target};
use switchyard::function::Function;
use switchyard::pipeline::{self, Settings};
use switchyard::queue::{AsyncQueue, Store};
use switchyard::shape::Shaper;
use switchyard_sdk::{Source, SourceState};
use switchyard_testkit::memory::{MemoryLog, MemoryLogSource, MemoryQueue, MemoryQueueSource};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

struct Running {
    stop: CancellationToken,
    tracker: TaskTracker,
    queue: Arc<AsyncQueue>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn stop(self) -> Arc<AsyncQueue> {
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(Duration::from_secs(15), self.tracker.wait()).await.expect("pipeline stops");
        self.queue
    }
}

fn settings(size: usize, retry: RetryConfig, report: bool) -> Settings {
    Settings {
        mapping: Arc::from("m"),
        batch: BatchConfig {
            size: NonZeroUsize::new(size).unwrap(),
            window: Duration::from_millis(30),
            max_bytes: 6 << 20,
        },
        parallelization: 1,
        retry,
        report_batch_item_failures: report,
        shaper: Arc::new(Shaper::passthrough()),
    }
}

fn retry(max_attempts: i64, bisect: bool) -> RetryConfig {
    RetryConfig {
        max_attempts,
        max_record_age: None,
        bisect_on_error: bisect,
        backoff: BackoffConfig { initial: Duration::from_millis(10), max: Duration::from_millis(40) },
    }
}

async fn start(source: Box<dyn Source>, function: &FunctionServer, settings: Settings) -> Running {
    start_with(source, function, settings, None, false).await
}

async fn start_with(
    source: Box<dyn Source>,
    function: &FunctionServer,
    settings: Settings,
    on_failure: Option<Target>,
    broker_dead_letters: bool,
) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let config: FunctionConfig =
        serde_json::from_value(json!({"http": {"url": function.url()}, "concurrency": 4})).unwrap();
    let f = Arc::new(Function::new("f", &config, reqwest::Client::new()).unwrap());
    let store = Store::open(dir.path()).unwrap();
    let queue = Arc::new(AsyncQueue::new(store, dir.path(), 1000, std::slice::from_ref(&f)).await.unwrap());
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (state, _) = tokio::sync::watch::channel(SourceState::Starting);
    pipeline::spawn(
        settings,
        source,
        f,
        pipeline::failure_route(on_failure, queue.clone(), broker_dead_letters),
        state,
        stop.clone(),
        &tracker,
    );
    Running { stop, tracker, queue, _dir: dir }
}

/// The `value`s of the records in one invocation.
fn values(r: &Received) -> Vec<String> {
    r.body["Records"].as_array().unwrap().iter().map(|x| x["value"].as_str().unwrap().to_string()).collect()
}

async fn all_committed(log: &MemoryLog) {
    eventually(Duration::from_secs(20), "every offset committed", async || {
        (0..log.partitions()).all(|p| log.committed(p) == log.end_offset(p)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_source_delivers_everything_in_order_per_partition() {
    let log = MemoryLog::new("t", 3);
    let mut produced = vec![Vec::new(); 3];
    for i in 0..300 {
        let (p, _) = log.append(format!("v{i:03}"));
        produced[p].push(format!("v{i:03}"));
    }
    // Every fifth invocation fails as a whole.
    let function =
        FunctionServer::start(|_, n| if n % 5 == 4 { (500, vec![], "{}".into()) } else { (200, vec![], "{}".into()) })
            .await;
    let running =
        start(Box::new(MemoryLogSource::new(log.clone())), &function, settings(10, retry(-1, false), false)).await;
    all_committed(&log).await;
    running.stop().await;

    let received = function.received();
    assert!(received.iter().enumerate().any(|(n, _)| n % 5 == 4), "some batches failed and were retried");
    let mut first_success: Vec<Vec<String>> = vec![Vec::new(); 3];
    for (n, r) in received.iter().enumerate() {
        let batch = &r.body["Records"].as_array().unwrap();
        let partitions: std::collections::HashSet<u64> =
            batch.iter().map(|x| x["partition"].as_u64().unwrap()).collect();
        assert_eq!(partitions.len(), 1, "a batch holds one partition's records");
        assert!(batch.len() <= 10);
        if n % 5 != 4 {
            let p = batch[0]["partition"].as_u64().unwrap() as usize;
            for v in values(r) {
                if !first_success[p].contains(&v) {
                    first_success[p].push(v);
                }
            }
        }
    }
    assert_eq!(first_success, produced, "every record delivered, in order within its partition");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_batch_response_retries_from_the_first_failed_record() {
    let log = MemoryLog::new("t", 1);
    for i in 0..10 {
        log.append(format!("v{i}"));
    }
    let function = FunctionServer::start(|_, n| {
        let answer = if n == 0 {
            json!({"batchItemFailures": [{"itemIdentifier": "t-0@4"}, {"itemIdentifier": "t-0@7"}]})
        } else {
            json!({})
        };
        (200, vec![], answer.to_string())
    })
    .await;
    let running =
        start(Box::new(MemoryLogSource::new(log.clone())), &function, settings(10, retry(3, false), true)).await;
    all_committed(&log).await;
    running.stop().await;
    let received = function.received();
    assert_eq!(values(&received[0]), (0..10).map(|i| format!("v{i}")).collect::<Vec<_>>());
    assert_eq!(
        values(&received[1]),
        (4..10).map(|i| format!("v{i}")).collect::<Vec<_>>(),
        "an ordered batch is retried from its lowest failed record on"
    );
    assert_eq!(received.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bisect_isolates_a_poison_record_which_lands_in_the_dead_letter_store() {
    let log = MemoryLog::new("t", 1);
    for i in 0..8 {
        log.append(if i == 5 { "poison".to_string() } else { format!("v{i}") });
    }
    let function = FunctionServer::start(|r, _| {
        if values(r).iter().any(|v| v == "poison") {
            (500, vec![], json!({"errorType": "Poisoned", "errorMessage": "cannot digest"}).to_string())
        } else {
            (200, vec![], "{}".into())
        }
    })
    .await;
    let running =
        start(Box::new(MemoryLogSource::new(log.clone())), &function, settings(8, retry(1, true), false)).await;
    all_committed(&log).await;
    let queue = running.stop().await;

    let received = function.received();
    let mut delivered: Vec<String> =
        received.iter().filter(|r| !values(r).contains(&"poison".into())).flat_map(values).collect();
    delivered.sort();
    assert_eq!(delivered, vec!["v0", "v1", "v2", "v3", "v4", "v6", "v7"], "every other record was delivered once");
    let alone = received.iter().filter(|r| values(r) == vec!["poison".to_string()]).count();
    assert_eq!(alone, 2, "the poison record alone: one try and one retry (max_attempts 1)");

    let dead = queue.store().dlq_list(None, 0, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    let event: Value = serde_json::from_slice(&dead[0].payload).unwrap();
    assert_eq!(event["Records"].as_array().unwrap().len(), 1);
    assert_eq!(event["Records"][0]["value"], "poison");
    assert_eq!(dead[0].condition, "RetryAttemptsExhausted");
    assert_eq!(dead[0].error_type.as_deref(), Some("Poisoned"));
    let record: Value = serde_json::from_slice(dead[0].record.as_ref().unwrap()).unwrap();
    assert_eq!(record["requestPayload"]["Records"][0]["value"], "poison");
    assert_eq!(record["responsePayload"]["errorMessage"], "cannot digest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unordered_source_retries_only_the_failed_records() {
    let queue = MemoryQueue::new();
    for i in 0..10 {
        queue.send(format!("m{i}"));
    }
    let failed_once = std::sync::atomic::AtomicBool::new(false);
    let function = FunctionServer::start(move |r, _| {
        let records = r.body["Records"].as_array().unwrap();
        let failed: Vec<Value> = records
            .iter()
            .filter(|x| x["body"] == "m3" && !failed_once.swap(true, std::sync::atomic::Ordering::SeqCst))
            .map(|x| json!({"itemIdentifier": x["messageId"]}))
            .collect();
        (200, vec![], json!({"batchItemFailures": failed}).to_string())
    })
    .await;
    let running =
        start(Box::new(MemoryQueueSource::new(queue.clone())), &function, settings(10, retry(3, false), true)).await;
    eventually(Duration::from_secs(20), "the queue to drain", async || queue.is_empty().then_some(())).await;
    running.stop().await;
    let bodies: Vec<String> = function
        .received()
        .iter()
        .flat_map(|r| {
            r.body["Records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["body"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(bodies.iter().filter(|b| *b == "m3").count(), 2, "m3 failed once and was retried: {bodies:?}");
    assert_eq!(bodies.len(), 11, "the others were not retried: {bodies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_past_their_age_go_to_on_failure_without_invoking() {
    let log = MemoryLog::new("t", 1);
    log.append("old");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let function = FunctionServer::echo().await;
    let mut retry = retry(3, false);
    retry.max_record_age = Some(Duration::from_millis(100));
    let running = start(Box::new(MemoryLogSource::new(log.clone())), &function, settings(10, retry, false)).await;
    all_committed(&log).await;
    let queue = running.stop().await;
    assert!(function.received().is_empty(), "an expired record is not invoked");
    let dead = queue.store().dlq_list(None, 0, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].condition, "RecordAgeExceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_retry_leaves_records_for_redelivery() {
    let log = MemoryLog::new("t", 1);
    for i in 0..5 {
        log.append(format!("v{i}"));
    }
    let function = FunctionServer::start(|_, _| (500, vec![], "{}".into())).await;
    let running =
        start(Box::new(MemoryLogSource::new(log.clone())), &function, settings(5, retry(-1, false), false)).await;
    function.wait_for(2, Duration::from_secs(10)).await;
    running.stop().await;
    assert_eq!(log.committed(0), 0, "nothing that failed was committed");
}

/// An unscoped source without filters is batched straight from its channel:
/// on shutdown what was taken and not delivered goes back to the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_of_an_unrouted_mapping_returns_its_records_to_the_queue() {
    let queue = MemoryQueue::new();
    for i in 0..5 {
        queue.send(format!("m{i}"));
    }
    let function = FunctionServer::start(|_, _| (500, vec![], "{}".into())).await;
    let running =
        start(Box::new(MemoryQueueSource::new(queue.clone())), &function, settings(5, retry(-1, false), false)).await;
    function.wait_for(2, Duration::from_secs(10)).await;
    running.stop().await;
    assert_eq!(queue.in_flight(), 0, "nothing is left taken");
    assert_eq!(queue.len(), 5, "every message is back in the queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_on_failure_a_broker_with_dead_lettering_gets_the_records_rejected() {
    let queue = MemoryQueue::new();
    for i in 0..3 {
        queue.send(format!("m{i}"));
    }
    let function = FunctionServer::start(|r, _| {
        if r.body["Records"].as_array().unwrap().iter().any(|x| x["body"] == "m1") {
            (500, vec![], "{}".into())
        } else {
            (200, vec![], "{}".into())
        }
    })
    .await;
    let running = start_with(
        Box::new(MemoryQueueSource::new(queue.clone())),
        &function,
        settings(1, retry(1, false), false),
        None,
        true,
    )
    .await;
    eventually(Duration::from_secs(20), "the queue to drain", async || queue.is_empty().then_some(())).await;
    let store = running.stop().await;
    assert_eq!(queue.dead_letters(), vec!["m1".to_string()], "the failed message was rejected to the broker");
    assert!(store.store().dlq_list(None, 0, 10).await.unwrap().is_empty(), "nothing in the embedded store");
}

/// A failure record the destination refuses (here: an HTTP destination that
/// takes at most two records in one, as SQS or Kinesis refuse one over their
/// size limit) is split until each part is taken, instead of being retried
/// whole for good with the partition stuck behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_record_the_destination_refuses_is_split_until_taken() {
    let log = MemoryLog::new("t", 1);
    for i in 0..8 {
        log.append(format!("v{i}"));
    }
    let function = FunctionServer::start(|_, _| (500, vec![], json!({"errorType": "Boom"}).to_string())).await;
    let destination = FunctionServer::start(|r, _| {
        let records = r.body["requestPayload"]["Records"].as_array().map_or(0, Vec::len);
        if records > 2 { (413, vec![], "too large".into()) } else { (200, vec![], "{}".into()) }
    })
    .await;
    let config: DestinationConfig = serde_json::from_value(json!({"http": {"url": destination.url()}})).unwrap();
    let on_failure = target(&config, &reqwest::Client::new()).unwrap();
    let running = start_with(
        Box::new(MemoryLogSource::new(log.clone())),
        &function,
        settings(8, retry(0, false), false),
        Some(on_failure),
        false,
    )
    .await;
    all_committed(&log).await;
    running.stop().await;

    let taken: Vec<Vec<String>> = destination
        .received()
        .iter()
        .filter(|r| r.body["requestPayload"]["Records"].as_array().is_some_and(|l| l.len() <= 2))
        .map(|r| {
            r.body["requestPayload"]["Records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["value"].as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    let written: Vec<String> = taken.iter().flatten().cloned().collect();
    assert_eq!(written, (0..8).map(|i| format!("v{i}")).collect::<Vec<_>>(), "each record once, in order: {taken:?}");
    assert_eq!(destination.received().len(), 1 + 2 + 4, "8 refused, two 4s refused, four 2s taken");
}
