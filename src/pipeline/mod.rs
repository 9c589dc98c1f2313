//! Polled sources: records → lanes → batches → synchronous invocation →
//! acknowledgement, with Lambda's retry, bisect, partial batch response and
//! record age rules, and `on_failure` once they are spent.
//!
//! Ordering: a source that gives records a scope (a Kafka partition) gets one
//! lane per scope (per scope and key hash with `parallelization` > 1), and a
//! lane has one batch in flight, so records of a scope (of a key) reach the
//! function in order. Records without a scope share lanes that run up to the
//! function's concurrency batches at once. A source whose records never carry
//! a scope ([`Source::scoped`]), in a mapping without filters or record
//! transforms, has nothing to route: its shared lanes batch straight from its
//! channel.
//!
//! Every record's `Ack` is completed `Delivered` only once the function
//! succeeded for it or its failure record was written to `on_failure`; a
//! record dropped on shutdown reports `Retry` and the broker redelivers it.

mod batch;
mod deliver;
mod failure;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use switchyard_sdk::{Outcome, Record, Source, SourceContext, SourceState};
use tokio::sync::{Mutex, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{BatchConfig, RetryConfig};
use crate::destination::Target;
use crate::function::Function;
use crate::queue::AsyncQueue;
use crate::shape::{Admit, Shaper};
use deliver::Lane;
use failure::Failure;
pub use failure::FailureRoute;

/// Records between the source and the router; a full channel holds the
/// source back.
const SOURCE_CHANNEL: usize = 64;

/// A polled mapping's delivery settings, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mapping: Arc<str>,
    pub batch: BatchConfig,
    pub parallelization: usize,
    pub retry: RetryConfig,
    pub report_batch_item_failures: bool,
    /// Filters, transforms and the event's format.
    pub shaper: Arc<Shaper>,
}

/// Starts `source` and its pipeline on `tracker`; both stop when `shutdown`
/// is cancelled, after in-flight invocations finish.
pub fn spawn(
    settings: Settings,
    source: Box<dyn Source>,
    function: Arc<Function>,
    on_failure: FailureRoute,
    state: watch::Sender<SourceState>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) {
    let (tx, rx) = mpsc::channel(SOURCE_CHANNEL);
    let envelope = source.envelope();
    let direct = !source.scoped() && settings.shaper.admits_all();
    let cx =
        SourceContext { mapping: settings.mapping.clone(), out: tx, shutdown: shutdown.clone(), state: state.clone() };
    let mapping = settings.mapping.clone();
    tracker.spawn(async move {
        if let Err(error) = source.run(cx).await {
            tracing::error!(mapping = %mapping, %error, "source stopped with an error");
            state.send_replace(SourceState::Disconnected(error.to_string()));
        }
    });
    let lane = Arc::new(Lane::new(settings, function, envelope, on_failure, shutdown));
    if direct {
        // Nothing to route: the lanes batch straight from the source.
        shared_lanes(&lane, rx, tracker);
    } else {
        tracker.spawn(route(rx, lane, tracker.clone()));
    }
}

/// As many lanes as the function takes invocations, pulling batches of
/// unordered records from one channel.
fn shared_lanes(lane: &Arc<Lane>, rx: mpsc::Receiver<Record>, tracker: &TaskTracker) {
    let rx = Arc::new(Mutex::new(batch::Pending::new(rx)));
    for _ in 0..lane.function().concurrency {
        tracker.spawn(lane.clone().run(rx.clone()));
    }
}

/// Sends each record to its lane, starting lanes as scopes appear.
async fn route(mut records: mpsc::Receiver<Record>, lane: Arc<Lane>, tracker: TaskTracker) {
    let settings = lane.settings();
    let lane_capacity = settings.batch.size.get();
    let mut ordered: HashMap<String, mpsc::Sender<Record>> = HashMap::new();
    let mut shared: Option<mpsc::Sender<Record>> = None;
    let shaper = settings.shaper.clone();
    let shaping = !shaper.admits_all();
    while let Some(mut record) = records.recv().await {
        if shaping {
            match shaper.admit(lane.envelope(), record.materialize()) {
                Admit::Keep => {}
                Admit::Skip => {
                    record.ack.complete(Outcome::Delivered);
                    continue;
                }
                Admit::Fail(error) => {
                    // Held here until written: the source waits, nothing is lost.
                    lane.fail(vec![record], Failure::TransformFailed(error)).await;
                    continue;
                }
            }
        }
        let sender = match &record.scope {
            Some(scope) => {
                let key = lane_key(scope, record.key.as_deref(), settings.parallelization);
                ordered.entry(key).or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(lane_capacity);
                    let rx = Arc::new(Mutex::new(batch::Pending::new(rx)));
                    tracker.spawn(lane.clone().run(rx));
                    tx
                })
            }
            None => shared.get_or_insert_with(|| {
                let (tx, rx) = mpsc::channel(lane_capacity);
                shared_lanes(&lane, rx, &tracker);
                tx
            }),
        };
        if let Err(mpsc::error::SendError(record)) = sender.send(record).await {
            // The lane stopped (shutdown): the record's ack reports Retry.
            drop(record);
        }
    }
}

/// The lane of a record: its scope, and with `parallelization` > 1 a share of
/// the scope picked by the record's key, so one key stays in one lane.
fn lane_key(scope: &str, key: Option<&[u8]>, parallelization: usize) -> String {
    if parallelization <= 1 {
        return scope.to_string();
    }
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    format!("{scope}#{}", hasher.finish() % parallelization as u64)
}

/// The route to `on_failure` for a mapping. Without one, records go to the
/// broker's own dead-lettering when `broker_dead_letters` (RabbitMQ's
/// dead-letter exchange, through a reject), else to the embedded store.
pub fn failure_route(target: Option<Target>, queue: Arc<AsyncQueue>, broker_dead_letters: bool) -> FailureRoute {
    let fallback = if broker_dead_letters { Target::Reject } else { Target::DeadLetters };
    FailureRoute::new(target.unwrap_or(fallback), queue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_stays_in_one_lane() {
        assert_eq!(lane_key("t-0", Some(b"k"), 1), "t-0");
        let a = lane_key("t-0", Some(b"order-1"), 4);
        for _ in 0..10 {
            assert_eq!(lane_key("t-0", Some(b"order-1"), 4), a);
        }
        let lanes: std::collections::HashSet<String> =
            (0..100).map(|i| lane_key("t-0", Some(format!("k{i}").as_bytes()), 4)).collect();
        assert_eq!(lanes.len(), 4, "keys spread over the 4 lanes of the scope");
    }
}
