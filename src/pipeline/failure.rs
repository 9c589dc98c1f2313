//! The on-failure record of a polled mapping and where it is written.
//!
//! Lambda's record for stream failures carries only metadata; Switchyard's
//! also carries the invocation event (the records themselves, base64 where the
//! source encodes them) as `requestPayload`, so a replay can re-drive them.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use switchyard_sdk::{Envelope, Record};

use crate::destination::Target;
use crate::function::{Function, InvokeError};
use crate::queue::{AsyncQueue, DeadLetter, now_ms, record};

pub enum Failure {
    RetriesExhausted {
        error: InvokeError,
        attempts: u32,
    },
    RecordAgeExceeded,
    /// A record or batch transform failed on these records.
    TransformFailed(String),
}

impl Failure {
    pub fn condition(&self) -> &'static str {
        match self {
            Failure::RetriesExhausted { .. } => "RetryAttemptsExhausted",
            Failure::RecordAgeExceeded => "RecordAgeExceeded",
            Failure::TransformFailed(_) => "TransformFailed",
        }
    }
}

pub struct FailureRoute {
    target: Target,
    queue: Arc<AsyncQueue>,
}

impl FailureRoute {
    pub fn new(target: Target, queue: Arc<AsyncQueue>) -> Self {
        Self { target, queue }
    }

    /// Failed records are handed back to the broker instead of written.
    pub fn rejects(&self) -> bool {
        matches!(self.target, Target::Reject)
    }

    pub async fn write(
        &self,
        function: &Function,
        mapping: &str,
        envelope: &dyn Envelope,
        records: &[Record],
        failure: &Failure,
    ) -> Result<(), String> {
        let values: Vec<_> = records.iter().map(Record::value).collect();
        let data: Vec<&Value> = values.iter().map(|v| &**v).collect();
        let event = envelope.event(&data);
        let request_id = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        let mut failure_record = json!({
            "version": "1.0",
            "timestamp": record::rfc3339_ms(now),
            "requestContext": {
                "requestId": request_id,
                "functionArn": format!("{}:$LATEST", function.arn),
                "condition": failure.condition(),
                "approximateInvokeCount": match failure { Failure::RetriesExhausted { attempts, .. } => *attempts, _ => 0 },
            },
            "mapping": mapping,
            "requestPayload": event,
        });
        let obj = failure_record.as_object_mut().expect("built as an object");
        if let Failure::RetriesExhausted { error, .. } = failure {
            obj.insert(
                "responseContext".into(),
                json!({"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}),
            );
            obj.insert("responsePayload".into(), record::payload_value(&error.error_payload()));
        }
        if let Failure::TransformFailed(message) = failure {
            obj.insert("responsePayload".into(), json!({"errorType": "TransformError", "errorMessage": message}));
        }
        if let Some((key, info)) = envelope.batch_info(&data) {
            obj.insert(key.into(), info);
        }
        let failure_record = Bytes::from(failure_record.to_string());
        let (error_type, error_message) = match failure {
            Failure::RetriesExhausted { error: InvokeError::Function { error_type, message, .. }, .. } => {
                (Some(error_type.clone()), Some(message.clone()))
            }
            Failure::RetriesExhausted { error, .. } => (Some(error.error_type().to_string()), Some(error.to_string())),
            Failure::RecordAgeExceeded => (Some("RecordAgeExceeded".to_string()), None),
            Failure::TransformFailed(e) => (Some("TransformError".to_string()), Some(e.clone())),
        };
        tracing::warn!(
            mapping,
            function = %function.name,
            records = records.len(),
            condition = failure.condition(),
            destination = self.target.kind(),
            "records failed for good; writing them to on_failure"
        );
        match &self.target {
            Target::DeadLetters => self
                .queue
                .store()
                .dead_letter(
                    None,
                    DeadLetter {
                        id: 0,
                        request_id,
                        function: function.name.to_string(),
                        source: mapping.to_string(),
                        // A replay invokes the function with the same event.
                        payload: Bytes::from(event.to_string()),
                        condition: failure.condition().to_string(),
                        error_type,
                        error_message,
                        attempts: match failure {
                            Failure::RetriesExhausted { attempts, .. } => *attempts,
                            _ => 0,
                        },
                        enqueued_at: now,
                        first_attempt_at: None,
                        last_attempt_at: Some(now),
                        failed_at: now,
                        record: Some(failure_record),
                    },
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Target::Function(name) => {
                // The destination's invocation is a new one, with an id of its own.
                let request_id = uuid::Uuid::new_v4().to_string();
                self.queue.accept(request_id, name, mapping, failure_record).await.map_err(|e| e.to_string())
            }
            Target::Send(destination) => {
                destination.send(std::slice::from_ref(&failure_record)).await.map_err(|e| e.to_string())
            }
            Target::Reject => Err("a reject is settled by the lane, not written".to_string()),
        }
    }
}
