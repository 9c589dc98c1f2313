//! What the SDK's errors mean for a source's state and a destination's
//! retries.

use std::error::Error as StdError;

use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use switchyard_sdk::ConnectorError;

/// The code for a stream (or shard) that does not exist.
const MISSING: &str = "ResourceNotFoundException";
/// Codes that mean "slow down", whatever the HTTP status.
const THROTTLED: [&str; 5] = [
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "ThrottlingException",
    "KMSThrottlingException",
    "RequestThrottled",
];
/// A shard iterator is valid for five minutes after it was handed out.
const EXPIRED_ITERATOR: &str = "ExpiredIteratorException";

pub(crate) fn is_missing<E: ProvideErrorMetadata>(error: &SdkError<E>) -> bool {
    error.code() == Some(MISSING)
}

pub(crate) fn is_throttled<E: ProvideErrorMetadata>(error: &SdkError<E>) -> bool {
    error.code().is_some_and(|code| THROTTLED.contains(&code))
}

pub(crate) fn is_expired_iterator<E: ProvideErrorMetadata>(error: &SdkError<E>) -> bool {
    error.code() == Some(EXPIRED_ITERATOR)
}

/// A sentence for `SourceState::Disconnected`, logs and destination errors:
/// names the stream and what Kinesis said.
pub(crate) fn describe<E>(error: &SdkError<E>, operation: &str, stream: &str) -> String
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    if is_missing(error) {
        let detail = error.message().unwrap_or(MISSING);
        return format!("Kinesis stream {stream} does not exist ({operation}: {detail})");
    }
    match error {
        SdkError::DispatchFailure(_) => {
            format!("cannot reach Kinesis for stream {stream} ({operation}): {}", DisplayErrorContext(error))
        }
        SdkError::TimeoutError(_) => format!("Kinesis did not answer {operation} on stream {stream} in time"),
        SdkError::ServiceError(_) => {
            let code = error.code().unwrap_or("unknown error");
            let status = error.raw_response().map(|r| r.status().as_u16()).unwrap_or_default();
            match error.message() {
                Some(message) => {
                    format!("Kinesis refused {operation} on stream {stream}: {code} (HTTP {status}): {message}")
                }
                None => format!("Kinesis refused {operation} on stream {stream}: {code} (HTTP {status})"),
            }
        }
        // Credentials that cannot be loaded end up here.
        _ => format!("{operation} on stream {stream} failed: {}", DisplayErrorContext(error)),
    }
}

/// Lost connections, timeouts, throttling and Kinesis's own trouble are
/// retriable; what Kinesis refuses (a missing stream, credentials,
/// permissions, a malformed request) is not until someone changes the stream
/// or the config.
pub(crate) fn classify<E: ProvideErrorMetadata>(error: &SdkError<E>, text: String) -> ConnectorError {
    match error {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => ConnectorError::Connection(text),
        SdkError::ResponseError(_) => ConnectorError::Unavailable(text),
        SdkError::ServiceError(_) => {
            let server = error.raw_response().is_some_and(|r| r.status().is_server_error());
            if is_throttled(error) || server {
                ConnectorError::Unavailable(text)
            } else {
                ConnectorError::Refused(text)
            }
        }
        _ => ConnectorError::Refused(text),
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_kinesis::error::ErrorMetadata;
    use aws_sdk_kinesis::operation::get_records::GetRecordsError;
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    use super::*;

    fn service(code: &str, status: u16) -> SdkError<GetRecordsError> {
        let meta = ErrorMetadata::builder().code(code).message("says no").build();
        let status = StatusCode::try_from(status).expect("a valid status");
        SdkError::service_error(GetRecordsError::generic(meta), HttpResponse::new(status, SdkBody::empty()))
    }

    #[test]
    fn missing_streams_are_named_and_refused() {
        let error = service(MISSING, 400);
        assert!(is_missing(&error));
        let text = describe(&error, "ListShards", "orders");
        assert_eq!(text, "Kinesis stream orders does not exist (ListShards: says no)");
        assert!(matches!(classify(&error, text), ConnectorError::Refused(_)));
    }

    #[test]
    fn throttling_and_server_errors_are_retriable() {
        let throttled = service("ProvisionedThroughputExceededException", 400);
        assert!(is_throttled(&throttled));
        assert!(classify(&throttled, String::new()).is_retriable());
        assert!(classify(&service("InternalFailure", 500), String::new()).is_retriable());
        let denied = service("AccessDeniedException", 400);
        let text = describe(&denied, "GetRecords", "orders");
        assert!(text.contains("AccessDeniedException (HTTP 400): says no"), "{text}");
        assert!(!classify(&denied, text).is_retriable());
        assert!(is_expired_iterator(&service(EXPIRED_ITERATOR, 400)));
    }

    #[test]
    fn unreachable_is_a_connection_error() {
        let error: SdkError<GetRecordsError> =
            SdkError::dispatch_failure(aws_sdk_kinesis::error::ConnectorError::io("connection refused".into()));
        let text = describe(&error, "GetRecords", "orders");
        assert!(text.starts_with("cannot reach Kinesis for stream orders (GetRecords)"), "{text}");
        assert!(matches!(classify(&error, text), ConnectorError::Connection(_)));
    }
}
