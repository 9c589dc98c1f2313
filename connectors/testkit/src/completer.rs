//! Completes acks the way the engine does: sometimes at once on the receiving
//! task, usually later on another task, and for ordered scopes strictly in the
//! order the records were decided.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use switchyard_sdk::{Ack, Outcome};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinError, JoinSet};

/// The reason the kit gives when it asks for a retry.
pub(crate) const RETRY_REASON: &str = "conformance: retry requested";

/// What becomes of one ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Deliver,
    Retry,
    /// Dropped without an outcome: the SDK reports `Retry` for it.
    Drop,
}

impl Action {
    pub(crate) fn apply(self, ack: Ack) {
        match self {
            Action::Deliver => ack.complete(Outcome::Delivered),
            Action::Retry => ack.complete(Outcome::Retry(RETRY_REASON.to_string())),
            Action::Drop => drop(ack),
        }
    }
}

/// Where and when an ack is completed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum When {
    /// On the receiving task, before the next record is read.
    Now,
    /// On a task of its own after `Duration`: completions overtake each other.
    Spawned(Duration),
    /// Behind every earlier job of the same scope, after `Duration`.
    InScope(Duration),
}

struct Job {
    ack: Ack,
    action: Action,
    delay: Duration,
}

impl Job {
    async fn run(self) {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        } else {
            // Still let the receiver run first: the completion comes from
            // another task, later.
            tokio::task::yield_now().await;
        }
        self.action.apply(self.ack);
    }
}

/// What a scope worker is asked to do.
enum Work {
    Job(Job),
    /// Reply once every job queued before this one has run.
    Flush(oneshot::Sender<()>),
}

/// The completion tasks of one source run.
#[derive(Default)]
pub(crate) struct Completer {
    /// One-off completions.
    tasks: JoinSet<()>,
    /// One sequential worker per ordered scope.
    scopes: BTreeMap<Arc<str>, mpsc::UnboundedSender<Work>>,
    workers: JoinSet<()>,
}

impl Completer {
    pub(crate) fn complete(&mut self, scope: Option<&Arc<str>>, ack: Ack, action: Action, when: When) {
        match when {
            When::Now => action.apply(ack),
            When::Spawned(delay) => {
                self.tasks.spawn(Job { ack, action, delay }.run());
            }
            When::InScope(delay) => {
                let scope = scope.cloned().unwrap_or_else(|| Arc::from(""));
                let job = Job { ack, action, delay };
                let worker = self.scopes.entry(scope).or_insert_with(|| {
                    let (tx, mut rx) = mpsc::unbounded_channel::<Work>();
                    self.workers.spawn(async move {
                        while let Some(work) = rx.recv().await {
                            match work {
                                Work::Job(job) => job.run().await,
                                Work::Flush(done) => {
                                    let _ = done.send(());
                                }
                            }
                        }
                    });
                    tx
                });
                if let Err(mpsc::error::SendError(Work::Job(job))) = worker.send(Work::Job(job)) {
                    // Only if the worker panicked; `reap` reports that. The
                    // ack still gets its outcome.
                    job.action.apply(job.ack);
                }
            }
        }
    }

    /// Collects finished tasks; an error means an ack callback panicked.
    pub(crate) fn reap(&mut self) -> Result<(), JoinError> {
        while let Some(result) = self.tasks.try_join_next().or_else(|| self.workers.try_join_next()) {
            result?;
        }
        Ok(())
    }

    /// Waits until every ack handed over so far has its outcome, keeping the
    /// scope workers for what comes next.
    pub(crate) async fn flush(&mut self) -> Result<(), JoinError> {
        let mut replies = Vec::new();
        for worker in self.scopes.values() {
            let (done, reply) = oneshot::channel();
            if worker.send(Work::Flush(done)).is_ok() {
                replies.push(reply);
            }
        }
        // A worker that panicked drops its reply; `reap` reports the panic.
        for reply in replies {
            let _ = reply.await;
        }
        while let Some(result) = self.tasks.join_next().await {
            result?;
        }
        Ok(())
    }

    /// Waits until every ack handed to this completer has its outcome.
    pub(crate) async fn finish(&mut self) -> Result<(), JoinError> {
        // Closing the queues lets each scope worker end after its last job.
        self.scopes.clear();
        self.flush().await?;
        while let Some(result) = self.workers.join_next().await {
            result?;
        }
        Ok(())
    }
}
