//! One source run the way the engine runs it, for a connector's own tests:
//! a bounded channel, a state, a shutdown token, and helpers that fail
//! loudly with the source's state when something does not come.

use std::sync::Arc;
use std::time::Duration;

use switchyard_sdk::{ConnectorError, Record, Source, SourceContext, SourceState};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::CHANNEL_CAPACITY;

pub struct Running {
    pub rx: mpsc::Receiver<Record>,
    pub state: watch::Receiver<SourceState>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), ConnectorError>>,
}

/// Starts `source` under the mapping name `mapping` (its metrics label).
pub fn start(mapping: &str, source: Box<dyn Source>) -> Running {
    let (out, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (state, state_rx) = watch::channel(SourceState::Starting);
    let shutdown = CancellationToken::new();
    let cx = SourceContext { mapping: Arc::from(mapping), out, shutdown: shutdown.clone(), state };
    let task = tokio::spawn(source.run(cx));
    Running { rx, state: state_rx, shutdown, task }
}

impl Running {
    /// The next record, or a panic naming the source's state. A deferred
    /// record comes materialized, as filters and failure records see it.
    pub async fn next(&mut self, within: Duration) -> Record {
        match tokio::time::timeout(within, self.rx.recv()).await {
            Ok(Some(mut record)) => {
                record.materialize();
                record
            }
            Ok(None) => panic!("the source stopped sending records"),
            Err(_) => panic!("no record within {within:?} (state {:?})", *self.state.borrow()),
        }
    }

    /// Waits until the state matches; returns it.
    pub async fn wait_for(&mut self, within: Duration, what: &str, f: impl Fn(&SourceState) -> bool) -> SourceState {
        let waited = tokio::time::timeout(within, self.state.wait_for(|state| f(state)))
            .await
            .map(|waited| waited.map(|state| state.clone()));
        match waited {
            Ok(Ok(state)) => state,
            Ok(Err(_)) => panic!("the source ended while waiting for {what} (last state {:?})", *self.state.borrow()),
            Err(_) => panic!("no {what} within {within:?}: state {:?}", *self.state.borrow()),
        }
    }

    /// Cancels and waits for `run` to return.
    pub async fn stop(self) -> Result<(), ConnectorError> {
        self.shutdown.cancel();
        drop(self.rx);
        match tokio::time::timeout(Duration::from_secs(20), self.task).await {
            Ok(joined) => joined.expect("run() panicked"),
            Err(_) => panic!("run() did not return within 20 s of shutdown"),
        }
    }
}
