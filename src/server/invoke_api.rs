//! Lambda's Invoke API: `POST /2015-03-31/functions/{name}/invocations`, so
//! the AWS SDKs and CLI work with `--endpoint-url`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde_json::json;

use super::{ASYNC_PAYLOAD_LIMIT, AppState, SYNC_PAYLOAD_LIMIT, json_text, read_body};
use crate::function::{Invocation, InvokeError, Wait, function_arn};
use crate::queue::AcceptError;

/// AWS's JSON error: the type in `x-amzn-ErrorType`, the text in `message`.
fn aws_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    let mut response = json_text(status, json!({ "Type": "User", "message": message }).to_string());
    if let Ok(v) = HeaderValue::from_str(error_type) {
        response.headers_mut().insert("x-amzn-errortype", v);
    }
    response
}

/// `hello`, `function:hello`, `arn:aws:lambda:...:function:hello[:QUALIFIER]`:
/// the name, and the qualifier the name carries.
fn function_name(path_name: &str) -> (&str, Option<&str>) {
    let named = path_name.split_once("function:").map_or(path_name, |(_, rest)| rest);
    match named.split_once(':') {
        Some((name, qualifier)) => (name, Some(qualifier)),
        None => (named, None),
    }
}

pub async fn invoke(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (name, named_qualifier) = function_name(&name);
    let (name, named_qualifier) = (name.to_string(), named_qualifier.map(str::to_string));
    let Some(function) = app.functions.get(&name).cloned() else {
        return aws_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("Function not found: {}", function_arn(&name)),
        );
    };
    // A version or alias, in the name or as `Qualifier`: only $LATEST exists.
    if let Some(q) = named_qualifier.as_ref().or(query.get("Qualifier")).filter(|q| *q != "$LATEST") {
        return aws_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("Function not found: {}:{q} (only $LATEST exists)", function_arn(&name)),
        );
    }
    if app.draining() {
        return aws_error(StatusCode::SERVICE_UNAVAILABLE, "ServiceException", "Switchyard is shutting down");
    }
    let invocation_type =
        headers.get("x-amz-invocation-type").and_then(|v| v.to_str().ok()).unwrap_or("RequestResponse").to_string();
    let limit = match invocation_type.as_str() {
        "RequestResponse" | "DryRun" => SYNC_PAYLOAD_LIMIT,
        "Event" => ASYNC_PAYLOAD_LIMIT,
        other => {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                &format!("X-Amz-Invocation-Type {other:?}: expected one of RequestResponse, Event, DryRun"),
            );
        }
    };
    let _in_flight = app.enter();
    let payload = match read_body(&app, body, limit, || {
        aws_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            &format!("Request must be smaller than {limit} bytes for the {invocation_type} invocation type"),
        )
    })
    .await
    {
        Ok(p) if p.iter().all(u8::is_ascii_whitespace) => Bytes::from_static(b"{}"),
        Ok(p) => p,
        Err(response) => return response,
    };
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload) {
        return aws_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            &format!("Could not parse request body into json: {e}"),
        );
    }
    match invocation_type.as_str() {
        "DryRun" => StatusCode::NO_CONTENT.into_response(),
        "Event" => {
            let request_id = uuid::Uuid::new_v4().to_string();
            match app.queue.accept(request_id.clone(), &name, "invoke-api", payload).await {
                Ok(()) => with_request_id(StatusCode::ACCEPTED.into_response(), &request_id),
                Err(AcceptError::Full(_)) => aws_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequestsException",
                    "Rate Exceeded: the async queue is full",
                ),
                Err(error) => {
                    tracing::error!(function = %name, %error, "cannot queue async invocation");
                    aws_error(StatusCode::INTERNAL_SERVER_ERROR, "ServiceException", "the event was not queued")
                }
            }
        }
        _ => {
            let request_id = uuid::Uuid::new_v4().to_string();
            let client_context = match client_context(&headers) {
                Ok(c) => c,
                Err(message) => {
                    return aws_error(StatusCode::BAD_REQUEST, "InvalidRequestContentException", &message);
                }
            };
            let invocation = Invocation { client_context, ..Invocation::new(request_id.clone(), payload) };
            let (result, log_tail) = function.invoke_logged("invoke-api", &invocation, Wait::Bounded).await;
            let mut response = match result {
                Ok(result) => result_response(result, None),
                Err(InvokeError::Throttled { .. }) => {
                    return aws_error(StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException", "Rate Exceeded.");
                }
                Err(error) => result_response(error.error_payload(), Some("Unhandled")),
            };
            let wants_tail = headers.get("x-amz-log-type").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"Tail"));
            if wants_tail && let Some(tail) = log_tail {
                // The last 4 KB of the invocation's log, base64, as Lambda sends it.
                let tail = tail.as_bytes();
                let tail = &tail[tail.len().saturating_sub(4096)..];
                if let Ok(v) = HeaderValue::from_str(&BASE64.encode(tail)) {
                    response.headers_mut().insert("x-amz-log-result", v);
                }
            }
            with_request_id(response, &request_id)
        }
    }
}

/// `X-Amz-Client-Context`: base64 of a JSON object, handed to the function
/// decoded.
fn client_context(headers: &HeaderMap) -> Result<Option<String>, String> {
    let Some(value) = headers.get("x-amz-client-context") else { return Ok(None) };
    let object = BASE64
        .decode(value.as_bytes())
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter(serde_json::Value::is_object)
        .ok_or("X-Amz-Client-Context: expected base64 of a JSON object")?;
    // Compact: it travels on as a header value (the runtime's
    // Lambda-Runtime-Client-Context), where a pretty-printed object's line
    // breaks cannot go.
    Ok(Some(object.to_string()))
}

fn result_response(body: Bytes, function_error: Option<&'static str>) -> Response {
    let mut response = json_text(StatusCode::OK, body);
    let headers = response.headers_mut();
    headers.insert("x-amz-executed-version", HeaderValue::from_static("$LATEST"));
    if let Some(e) = function_error {
        headers.insert("x-amz-function-error", HeaderValue::from_static(e));
    }
    response
}

fn with_request_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-amzn-requestid", v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::function_name;

    #[test]
    fn accepts_names_and_arns() {
        assert_eq!(function_name("hello"), ("hello", None));
        assert_eq!(function_name("function:hello"), ("hello", None));
        assert_eq!(function_name("hello:prod"), ("hello", Some("prod")));
        assert_eq!(function_name("arn:aws:lambda:us-east-1:000000000000:function:hello"), ("hello", None));
        let arn = "arn:aws:lambda:us-east-1:000000000000:function:hello:$LATEST";
        assert_eq!(function_name(arn), ("hello", Some("$LATEST")));
        assert_eq!(function_name("000000000000:function:hello:7"), ("hello", Some("7")));
    }
}
