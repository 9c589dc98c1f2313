//! The per-function dispatcher: claims due events, at most `concurrency` at
//! once, and hands each to a worker.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::store::{QueuedEvent, now_ms};
use super::worker::{Routes, Worker};
use super::{AsyncQueue, STORE_ERROR_PAUSE};
use crate::function::Function;

/// How long an idle dispatcher sleeps before it looks at the store again,
/// in case events were queued by another process (a `dlq replay` from the CLI).
const IDLE_POLL: Duration = Duration::from_secs(1);

pub(super) struct Dispatcher {
    pub(super) queue: Arc<AsyncQueue>,
    pub(super) function: Arc<Function>,
    pub(super) routes: Arc<Routes>,
    pub(super) slots: Arc<Semaphore>,
    pub(super) tracker: TaskTracker,
}

impl Dispatcher {
    pub(super) async fn run(self, shutdown: CancellationToken) {
        let name = self.function.name.to_string();
        let wakeup = self.queue.wakeups.get(&name).cloned().unwrap_or_default();
        loop {
            // Wait for a free slot before looking for work: at most
            // `concurrency` events of this function are in memory at once.
            let permit = tokio::select! {
                p = self.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = shutdown.cancelled() => return,
            };
            let free = self.slots.available_permits() + 1;
            let now = now_ms();
            let due = match self.queue.store.claim(&name, now, free).await {
                Ok(due) => due,
                Err(error) => {
                    tracing::error!(function = %name, %error, "cannot read the async queue");
                    drop(permit);
                    if sleep_or_cancel(STORE_ERROR_PAUSE, &shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            let mut claimed = due.into_iter();
            let Some(first) = claimed.next() else {
                drop(permit);
                let wait = match self.queue.store.next_due(&name).await {
                    Ok(Some(at)) => Duration::from_millis((at - now).clamp(1, IDLE_POLL.as_millis() as i64) as u64),
                    _ => IDLE_POLL,
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = wakeup.notified() => {}
                    _ = shutdown.cancelled() => return,
                }
                continue;
            };
            self.launch(first, permit);
            for event in claimed {
                // Claimed with a free slot counted for it; a permit is there
                // unless a concurrent release raced, in which case wait.
                let permit = match self.slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                };
                self.launch(event, permit);
            }
        }
    }

    fn launch(&self, event: QueuedEvent, permit: OwnedSemaphorePermit) {
        let worker = Worker { queue: self.queue.clone(), function: self.function.clone(), routes: self.routes.clone() };
        self.tracker.spawn(async move {
            let _claim = Claim {
                queue: worker.queue.clone(),
                function: worker.function.name.to_string(),
                id: event.id,
                permit: Some(permit),
            };
            worker.handle(event).await;
        });
    }
}

/// An event's claim and its slot, given back when its handling ends, however
/// it ends (a panic in a function's or a destination's code included): a
/// claim left behind would keep the event from being delivered until the
/// next start.
struct Claim {
    queue: Arc<AsyncQueue>,
    function: String,
    id: i64,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Released before the slot is given back, so the claim that the
        // slot lets the dispatcher make can take this event again (a retry
        // that is due).
        self.queue.store.release(self.id);
        drop(self.permit.take());
        // The dispatcher's wait left this event out (it was claimed); wake
        // it so a retry runs when due, not at the idle poll.
        self.queue.wake(&self.function);
    }
}

async fn sleep_or_cancel(d: Duration, token: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = token.cancelled() => true,
    }
}
