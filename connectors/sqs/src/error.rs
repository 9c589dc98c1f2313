//! What the SDK's errors mean for a source's state and a destination's
//! retries.

use std::error::Error as StdError;

use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use switchyard_sdk::ConnectorError;

use crate::config::QueueUrl;

/// The codes SQS answers with for a queue that does not exist: the JSON
/// protocol's, and the query protocol's that servers (and the SDK, from the
/// `x-amzn-query-error` header) still use.
const MISSING_QUEUE: [&str; 2] = ["QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"];

/// Codes that mean "slow down", whatever the HTTP status.
const THROTTLED: [&str; 5] = [
    "ThrottlingException",
    "RequestThrottled",
    "Throttling",
    "KmsThrottled",
    "AWS.SimpleQueueService.RequestThrottled",
];

pub(crate) fn is_missing_queue<E: ProvideErrorMetadata>(error: &SdkError<E>) -> bool {
    error.code().is_some_and(|code| MISSING_QUEUE.contains(&code))
}

/// A sentence for `SourceState::Disconnected`, logs and destination errors:
/// names the queue and what SQS said.
pub(crate) fn describe<E>(error: &SdkError<E>, operation: &str, queue: &QueueUrl) -> String
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    let url = &queue.url;
    if is_missing_queue(error) {
        return format!("queue {url} does not exist ({})", error.code().unwrap_or("QueueDoesNotExist"));
    }
    match error {
        SdkError::DispatchFailure(_) => {
            format!("cannot reach SQS for queue {url} ({operation}): {}", DisplayErrorContext(error))
        }
        SdkError::TimeoutError(_) => format!("SQS did not answer {operation} on queue {url} in time"),
        SdkError::ServiceError(_) => {
            let code = error.code().unwrap_or("unknown error");
            let status = error.raw_response().map(|r| r.status().as_u16()).unwrap_or_default();
            match error.message() {
                Some(message) => format!("SQS refused {operation} on queue {url}: {code} (HTTP {status}): {message}"),
                None => format!("SQS refused {operation} on queue {url}: {code} (HTTP {status})"),
            }
        }
        // Credentials that cannot be loaded end up here.
        _ => format!("{operation} on queue {url} failed: {}", DisplayErrorContext(error)),
    }
}

/// Lost connections, timeouts, throttling and SQS's own trouble are retriable;
/// what SQS refuses (a missing queue, credentials, permissions, a malformed
/// request) is not until someone changes the queue or the config.
pub(crate) fn classify<E: ProvideErrorMetadata>(error: &SdkError<E>, text: String) -> ConnectorError {
    match error {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => ConnectorError::Connection(text),
        SdkError::ResponseError(_) => ConnectorError::Unavailable(text),
        SdkError::ServiceError(_) => {
            let throttled = error.code().is_some_and(|code| THROTTLED.contains(&code));
            let server = error.raw_response().is_some_and(|r| r.status().is_server_error());
            if throttled || server { ConnectorError::Unavailable(text) } else { ConnectorError::Refused(text) }
        }
        _ => ConnectorError::Refused(text),
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::error::ErrorMetadata;
    use aws_sdk_sqs::operation::receive_message::ReceiveMessageError;
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    use super::*;

    fn service(code: &str, status: u16) -> SdkError<ReceiveMessageError> {
        let meta = ErrorMetadata::builder().code(code).message("says no").build();
        let status = StatusCode::try_from(status).expect("a valid status");
        SdkError::service_error(ReceiveMessageError::generic(meta), HttpResponse::new(status, SdkBody::empty()))
    }

    fn queue() -> QueueUrl {
        QueueUrl::parse("queue_url", "http://127.0.0.1:4566/000000000000/jobs").expect("valid")
    }

    #[test]
    fn missing_queues_are_named_and_refused() {
        for code in MISSING_QUEUE {
            let error = service(code, 400);
            assert!(is_missing_queue(&error));
            let text = describe(&error, "ReceiveMessage", &queue());
            assert_eq!(text, format!("queue http://127.0.0.1:4566/000000000000/jobs does not exist ({code})"));
            assert!(matches!(classify(&error, text), ConnectorError::Refused(_)));
        }
    }

    #[test]
    fn throttling_and_server_errors_are_retriable() {
        assert!(classify(&service("ThrottlingException", 400), String::new()).is_retriable());
        assert!(classify(&service("InternalError", 500), String::new()).is_retriable());
        let denied = service("AccessDenied", 403);
        let text = describe(&denied, "ReceiveMessage", &queue());
        assert!(text.contains("AccessDenied (HTTP 403): says no"), "{text}");
        assert!(!classify(&denied, text).is_retriable());
    }

    #[test]
    fn unreachable_is_a_connection_error() {
        let error: SdkError<ReceiveMessageError> =
            SdkError::dispatch_failure(aws_sdk_sqs::error::ConnectorError::io("connection refused".into()));
        let text = describe(&error, "ReceiveMessage", &queue());
        assert!(text.starts_with("cannot reach SQS for queue http://127.0.0.1:4566/000000000000/jobs"), "{text}");
        assert!(matches!(classify(&error, text), ConnectorError::Connection(_)));
    }
}
