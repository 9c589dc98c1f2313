//! Runs a mapping's source and hands its records on.
//!
//! Sources that EventBridge would invoke asynchronously (schedules) put each
//! record into the function's durable async queue; the record's `Ack` is
//! completed only once the event is on disk, so what the source acknowledges
//! is never lost.

use std::sync::Arc;

use bytes::Bytes;
use switchyard_sdk::{Outcome, Record, SingleEnvelope, Source, SourceContext, SourceState};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::function::Function;
use crate::queue::AsyncQueue;
use crate::shape::{Admit, Item, Shaper};

/// Records a source may have handed on before it waits (backpressure).
const CHANNEL_CAPACITY: usize = 64;

/// Where an async mapping's records go: shaped, then into `function`'s queue.
pub struct AsyncTarget {
    pub function: Arc<Function>,
    pub shaper: Arc<Shaper>,
    pub queue: Arc<AsyncQueue>,
}

pub fn spawn_async_mapping(
    mapping: &str,
    source: Box<dyn Source>,
    target: AsyncTarget,
    state: watch::Sender<SourceState>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) {
    let (tx, mut rx) = mpsc::channel(CHANNEL_CAPACITY);
    let name: Arc<str> = Arc::from(mapping);
    let cx = SourceContext { mapping: name.clone(), out: tx, shutdown, state: state.clone() };
    let source_name = name.clone();
    tracker.spawn(async move {
        if let Err(error) = source.run(cx).await {
            tracing::error!(mapping = %source_name, %error, "source stopped with an error");
            state.send_replace(SourceState::Disconnected(error.to_string()));
        }
    });
    let AsyncTarget { function, shaper, queue } = target;
    tracker.spawn(async move {
        // Ends when the source has stopped and dropped its sender.
        while let Some(mut record) = rx.recv().await {
            record.materialize();
            let request_id = uuid::Uuid::new_v4().to_string();
            let payload = if shaper.is_passthrough() {
                Bytes::from(record.data.to_string())
            } else {
                match shape(&shaper, &mut record) {
                    Ok(Some(payload)) => payload,
                    Ok(None) => {
                        record.ack.complete(Outcome::Delivered);
                        continue;
                    }
                    Err(error) => {
                        let payload = Bytes::from(record.data.to_string());
                        let outcome =
                            match queue.transform_failed(request_id, &function.name, &name, payload, &error).await {
                                Ok(()) => Outcome::Delivered,
                                Err(e) => Outcome::Retry(e.to_string()),
                            };
                        record.ack.complete(outcome);
                        continue;
                    }
                }
            };
            match queue.accept(request_id.clone(), &function.name, &name, payload).await {
                Ok(()) => {
                    tracing::debug!(mapping = %name, function = %function.name, %request_id, "event queued");
                    record.ack.complete(Outcome::Delivered);
                }
                Err(error) => {
                    tracing::warn!(mapping = %name, function = %function.name, %error, "cannot queue event");
                    record.ack.complete(Outcome::Retry(error.to_string()));
                }
            }
        }
    });
}

/// The event to queue for `record`: `None` when filtered out, an error when
/// a transform failed.
fn shape(shaper: &Shaper, record: &mut Record) -> Result<Option<Bytes>, String> {
    match shaper.admit(&SingleEnvelope, &mut record.data) {
        Admit::Keep => {}
        Admit::Skip => return Ok(None),
        Admit::Fail(error) => return Err(error),
    }
    let item = Item { id: &record.id, time: record.created_at, data: &record.data };
    shaper.event(&SingleEnvelope, &[item]).map(|shaped| Some(shaped.payload))
}
