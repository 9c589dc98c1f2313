use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::{ConnectorError, Envelope, Record};

/// What a source reports about itself, shown in `/v1/mappings` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceState {
    Starting,
    Running,
    /// Lost its broker; reconnecting. The text says why.
    Disconnected(String),
    Stopped,
}

impl SourceState {
    pub fn label(&self) -> &'static str {
        match self {
            SourceState::Starting => "starting",
            SourceState::Running => "running",
            SourceState::Disconnected(_) => "disconnected",
            SourceState::Stopped => "stopped",
        }
    }
}

/// Publishes `next` unless it is already the state, so watchers only wake
/// on a change; returns whether it changed.
pub fn set_state(state: &watch::Sender<SourceState>, next: SourceState) -> bool {
    state.send_if_modified(|current| {
        if *current == next {
            return false;
        }
        *current = next;
        true
    })
}

/// Everything a running source is handed.
pub struct SourceContext {
    /// The mapping's name, for logs and metrics.
    pub mapping: Arc<str>,
    /// Bounded: a full channel is backpressure, the source waits before it
    /// reads more from its broker.
    pub out: mpsc::Sender<Record>,
    /// Cancelled on shutdown: stop reading, let in-flight acks arrive, return.
    pub shutdown: CancellationToken,
    pub state: watch::Sender<SourceState>,
}

/// A source of records: a broker poller, a schedule.
#[async_trait]
pub trait Source: Send {
    /// How a batch of this source's records becomes one event.
    fn envelope(&self) -> Arc<dyn Envelope>;

    /// Whether records may carry a [`Record::scope`] (an ordering promise).
    /// A source that never sets one says so, and a mapping without filters
    /// or record transforms then batches its records straight from the
    /// source's channel, one task hand-off fewer per record.
    fn scoped(&self) -> bool {
        true
    }

    /// Runs until `cx.shutdown` is cancelled or a fatal error. Returns after
    /// the acknowledgements of records it handed out were dealt with, or the
    /// broker will redeliver them.
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), ConnectorError>;
}

/// Somewhere results and failures can be sent.
#[async_trait]
pub trait Destination: Send + Sync {
    /// A fixed label for logs and metrics ("http", "kafka", ...).
    fn kind(&self) -> &'static str;

    /// Sends every record or fails; succeeds only once the peer confirmed.
    async fn send(&self, records: &[Bytes]) -> Result<(), ConnectorError>;
}
