//! One async event's way through: invoke, retry or fail, and delivery of its
//! destination record.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;

use super::record::{self, Condition};
use super::store::{DeadLetter, NewEvent, Phase, QueuedEvent, StoreError, now_ms};
use super::{AsyncQueue, STORE_ERROR_PAUSE};
use crate::config::BackoffConfig;
use crate::destination::Target;
use crate::function::{Function, Invocation, InvokeError, Wait};

pub(super) struct Routes {
    pub(super) on_success: Option<Target>,
    pub(super) on_failure: Target,
}

pub(super) struct Worker {
    pub(super) queue: Arc<AsyncQueue>,
    pub(super) function: Arc<Function>,
    pub(super) routes: Arc<Routes>,
}

impl Worker {
    pub(super) async fn handle(&self, event: QueuedEvent) {
        let result = match event.phase {
            Phase::Invoke => self.invoke(event).await,
            Phase::OnSuccess | Phase::OnFailure => self.redeliver(event).await,
        };
        if let Err(error) = result {
            // The event stays as the store last had it and is tried again.
            tracing::error!(function = %self.function.name, %error, "async queue update failed");
            tokio::time::sleep(STORE_ERROR_PAUSE).await;
        }
    }

    async fn invoke(&self, mut event: QueuedEvent) -> Result<(), StoreError> {
        let config = &self.function.async_config;
        let now = now_ms();
        if now - event.enqueued_at > config.max_event_age.as_millis() as i64 {
            return self.fail(event, Condition::EventAgeExceeded, None).await;
        }
        let invocation = Invocation {
            request_id: event.request_id.clone(),
            payload: event.payload.clone(),
            attempt: event.invokes + 1,
            headers: Vec::new(),
            client_context: None,
        };
        let result = self.function.invoke(&event.source, &invocation, Wait::No).await;
        let now = now_ms();
        match result {
            Ok(response) => {
                event.invokes += 1;
                self.succeed(event, response).await
            }
            Err(error @ InvokeError::Function { .. }) => {
                event.invokes += 1;
                event.attempts += 1;
                event.first_attempt_at.get_or_insert(now);
                event.last_attempt_at = Some(now);
                note_error(&mut event, &error);
                if event.attempts > config.max_retry_attempts {
                    return self.fail(event, Condition::RetriesExhausted, Some(error)).await;
                }
                let delay = backoff(&config.backoff, event.attempts);
                self.retry(event, delay, "function_error").await
            }
            Err(error) => {
                // Throttled or unreachable: the function did not run, so no
                // attempt is consumed; only the event age bounds these.
                event.throttles += 1;
                note_error(&mut event, &error);
                let mut delay = backoff(&config.backoff, event.throttles);
                if let InvokeError::Throttled { retry_after: Some(after) } = error {
                    delay = delay.max(after);
                }
                self.retry(event, delay, error.error_type()).await
            }
        }
    }

    async fn retry(&self, mut event: QueuedEvent, delay: Duration, reason: &'static str) -> Result<(), StoreError> {
        metrics::counter!("switchyard_async_retries_total", "function" => self.function.name.to_string(), "reason" => reason)
            .increment(1);
        tracing::info!(
            function = %self.function.name,
            request_id = %event.request_id,
            attempts = event.attempts,
            reason,
            retry_in = ?delay,
            "async event will be retried"
        );
        event.due_at = now_ms() + delay.as_millis() as i64;
        self.queue.store.update(event).await
    }

    async fn succeed(&self, mut event: QueuedEvent, response: Bytes) -> Result<(), StoreError> {
        let Some(target) = &self.routes.on_success else {
            self.queue.store.delete(event.id).await?;
            self.queue.left();
            return Ok(());
        };
        let record = record::build(&self.function.arn, &event, Condition::Success, Some(Ok(&response)), now_ms());
        event.phase = Phase::OnSuccess;
        event.destination_record = Some(record.clone());
        self.deliver(event, target, Condition::Success, record).await
    }

    async fn fail(
        &self,
        mut event: QueuedEvent,
        condition: Condition,
        error: Option<InvokeError>,
    ) -> Result<(), StoreError> {
        tracing::warn!(
            function = %self.function.name,
            request_id = %event.request_id,
            condition = condition.as_str(),
            attempts = event.invokes,
            destination = self.routes.on_failure.kind(),
            "async event failed for good"
        );
        let record = record::build(&self.function.arn, &event, condition, error.as_ref().map(Err), now_ms());
        event.phase = Phase::OnFailure;
        event.destination_record = Some(record.clone());
        self.deliver(event, &self.routes.on_failure, condition, record).await
    }

    /// Delivers a record stored by an earlier try whose destination failed.
    async fn redeliver(&self, event: QueuedEvent) -> Result<(), StoreError> {
        let Some(record) = event.destination_record.clone() else {
            // A phase without a record cannot happen; invoke again rather than drop.
            let mut event = event;
            event.phase = Phase::Invoke;
            return self.queue.store.update(event).await;
        };
        let (target, condition) = match event.phase {
            Phase::OnSuccess => match &self.routes.on_success {
                Some(t) => (t, Condition::Success),
                // on_success was removed from the config since: done.
                None => {
                    self.queue.store.delete(event.id).await?;
                    self.queue.left();
                    return Ok(());
                }
            },
            _ => (&self.routes.on_failure, condition_of(&record)),
        };
        self.deliver(event, target, condition, record).await
    }

    async fn deliver(
        &self,
        event: QueuedEvent,
        target: &Target,
        condition: Condition,
        record: Bytes,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let result = match target {
            // An async event has no broker to hand back to: the store keeps it.
            Target::DeadLetters | Target::Reject => {
                self.dead_letter(&event, condition.as_str(), record, now).await.map(|_| ())
            }
            Target::Function(name) => {
                let next = NewEvent {
                    request_id: uuid::Uuid::new_v4().to_string(),
                    function: name.clone(),
                    source: format!("{}:{}", self.function.name, condition.as_str()),
                    payload: record,
                    enqueued_at: now,
                };
                let r = self.queue.store.forward(event.id, next).await;
                if r.is_ok() {
                    self.queue.wake(name);
                }
                r.map(|_| ())
            }
            Target::Send(destination) => match destination.send(std::slice::from_ref(&record)).await {
                Ok(()) => {
                    self.queue.store.delete(event.id).await?;
                    self.queue.left();
                    self.count_delivery(target, condition, "delivered");
                    return Ok(());
                }
                Err(error) => {
                    self.count_delivery(target, condition, "failed");
                    return self.destination_failed(event, condition, error.to_string()).await;
                }
            },
        };
        match &result {
            Ok(()) => {
                if !matches!(target, Target::Function(_)) {
                    self.queue.left();
                }
                self.count_delivery(target, condition, "delivered");
            }
            // The event stays in the store as it was and is tried again.
            Err(_) => self.count_delivery(target, condition, "failed"),
        }
        result
    }

    /// A destination refused or could not be reached: keep the record and try
    /// again later; once the event is past its age, park it in the dead-letter
    /// store so it is never dropped silently.
    async fn destination_failed(
        &self,
        mut event: QueuedEvent,
        condition: Condition,
        error: String,
    ) -> Result<(), StoreError> {
        let config = &self.function.async_config;
        let now = now_ms();
        event.throttles += 1;
        event.error_type = Some("DestinationFailed".into());
        event.error_message = Some(error.clone());
        if now - event.enqueued_at > config.max_event_age.as_millis() as i64 {
            let record = event.destination_record.clone().unwrap_or_default();
            tracing::error!(function = %self.function.name, request_id = %event.request_id, %error,
                "destination kept failing past the event age; moving the record to the dead-letter store");
            self.dead_letter(&event, condition.as_str(), record, now).await?;
            self.queue.left();
            return Ok(());
        }
        let delay = backoff(&config.backoff, event.throttles);
        tracing::warn!(function = %self.function.name, request_id = %event.request_id, %error, retry_in = ?delay,
            "destination failed; will retry");
        event.due_at = now + delay.as_millis() as i64;
        self.queue.store.update(event).await
    }

    async fn dead_letter(
        &self,
        event: &QueuedEvent,
        condition: &str,
        record: Bytes,
        now: i64,
    ) -> Result<i64, StoreError> {
        let id = self
            .queue
            .store
            .dead_letter(
                Some(event.id),
                DeadLetter {
                    id: 0,
                    request_id: event.request_id.clone(),
                    function: event.function.clone(),
                    source: event.source.clone(),
                    payload: event.payload.clone(),
                    condition: condition.to_string(),
                    error_type: event.error_type.clone(),
                    error_message: event.error_message.clone(),
                    attempts: event.invokes,
                    enqueued_at: event.enqueued_at,
                    first_attempt_at: event.first_attempt_at,
                    last_attempt_at: event.last_attempt_at,
                    failed_at: now,
                    record: Some(record),
                },
            )
            .await?;
        metrics::counter!("switchyard_dead_letters_total", "function" => self.function.name.to_string()).increment(1);
        Ok(id)
    }

    fn count_delivery(&self, target: &Target, condition: Condition, outcome: &'static str) {
        metrics::counter!(
            "switchyard_destination_deliveries_total",
            "function" => self.function.name.to_string(),
            "destination" => target.kind(),
            "condition" => condition.as_str(),
            "outcome" => outcome
        )
        .increment(1);
    }
}

fn condition_of(record: &[u8]) -> Condition {
    let value: serde_json::Value = serde_json::from_slice(record).unwrap_or_default();
    match value["requestContext"]["condition"].as_str() {
        Some("EventAgeExceeded") => Condition::EventAgeExceeded,
        Some("Success") => Condition::Success,
        _ => Condition::RetriesExhausted,
    }
}

fn note_error(event: &mut QueuedEvent, error: &InvokeError) {
    let (error_type, message) = match error {
        InvokeError::Function { error_type, message, .. } => (error_type.clone(), message.clone()),
        other => (other.error_type().to_string(), other.to_string()),
    };
    event.error_type = Some(error_type);
    event.error_message = Some(message);
}

/// Exponential backoff with jitter: the n-th retry waits between half and all
/// of `initial * 2^(n-1)`, capped at `max`.
pub fn backoff(config: &BackoffConfig, n: u32) -> Duration {
    let exp = config.initial.saturating_mul(2u32.saturating_pow(n.saturating_sub(1).min(30)));
    let full = exp.min(config.max);
    let half = full / 2;
    half + full.saturating_sub(half).mul_f64(rand::rng().random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let config = BackoffConfig { initial: Duration::from_secs(1), max: Duration::from_secs(10) };
        for _ in 0..50 {
            let first = backoff(&config, 1);
            assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1), "{first:?}");
            let third = backoff(&config, 3);
            assert!(third >= Duration::from_secs(2) && third <= Duration::from_secs(4), "{third:?}");
            let late = backoff(&config, 40);
            assert!(late >= Duration::from_secs(5) && late <= Duration::from_secs(10), "{late:?}");
        }
    }
}
