//! Lambda's destination record: what `on_success` / `on_failure` receive.

use bytes::Bytes;
use chrono::{SecondsFormat, TimeZone, Utc};
use serde_json::{Value, json};

use super::store::QueuedEvent;
use crate::function::InvokeError;

/// Why a record is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Success,
    RetriesExhausted,
    EventAgeExceeded,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Success => "Success",
            Condition::RetriesExhausted => "RetriesExhausted",
            Condition::EventAgeExceeded => "EventAgeExceeded",
        }
    }
}

/// JSON when it is JSON, else the text: how payloads appear in a record.
pub fn payload_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

pub fn rfc3339_ms(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default().to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn build(
    function_arn: &str,
    event: &QueuedEvent,
    condition: Condition,
    outcome: Option<Result<&Bytes, &InvokeError>>,
    now: i64,
) -> Bytes {
    let mut record = json!({
        "version": "1.0",
        "timestamp": rfc3339_ms(now),
        "requestContext": {
            "requestId": event.request_id,
            "functionArn": format!("{function_arn}:$LATEST"),
            "condition": condition.as_str(),
            "approximateInvokeCount": event.invokes,
        },
        "requestPayload": payload_value(&event.payload),
    });
    let obj = record.as_object_mut().expect("built as an object");
    match outcome {
        Some(Ok(body)) => {
            obj.insert("responseContext".into(), json!({"statusCode": 200, "executedVersion": "$LATEST"}));
            obj.insert("responsePayload".into(), payload_value(body));
        }
        Some(Err(error)) => {
            obj.insert(
                "responseContext".into(),
                json!({"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}),
            );
            obj.insert("responsePayload".into(), payload_value(&error.error_payload()));
        }
        None => {}
    }
    Bytes::from(record.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::store::Phase;

    #[test]
    fn failure_record_has_lambdas_fields() {
        let event = QueuedEvent {
            id: 1,
            request_id: "req-1".into(),
            function: "hello".into(),
            source: "orders".into(),
            payload: Bytes::from_static(br#"{"n":1}"#),
            enqueued_at: 0,
            due_at: 0,
            attempts: 3,
            invokes: 3,
            throttles: 0,
            phase: Phase::Invoke,
            destination_record: None,
            error_type: None,
            error_message: None,
            first_attempt_at: None,
            last_attempt_at: None,
        };
        let error = InvokeError::Function { error_type: "HttpError".into(), message: "boom".into(), payload: None };
        let record: Value = serde_json::from_slice(&build(
            "arn:aws:lambda:us-east-1:000000000000:function:hello",
            &event,
            Condition::RetriesExhausted,
            Some(Err(&error)),
            1_573_755_365_568,
        ))
        .unwrap();
        assert_eq!(record["version"], "1.0");
        assert_eq!(record["timestamp"], "2019-11-14T18:16:05.568Z");
        assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
        assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
        assert_eq!(
            record["requestContext"]["functionArn"],
            "arn:aws:lambda:us-east-1:000000000000:function:hello:$LATEST"
        );
        assert_eq!(record["requestPayload"], json!({"n": 1}));
        assert_eq!(record["responseContext"]["functionError"], "Unhandled");
        assert_eq!(record["responsePayload"]["errorType"], "HttpError");
        assert_eq!(record["responsePayload"]["errorMessage"], "boom");
    }
}
