use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use super::{Invocation, InvokeError, TIMEOUT_ERROR};
use crate::config::HttpFunctionConfig;

/// A function that is an HTTP endpoint: the event is POSTed as JSON; 2xx is
/// success and the body is the result.
pub struct HttpFunction {
    client: reqwest::Client,
    url: reqwest::Url,
    timeout: Duration,
    headers: HeaderMap,
}

impl HttpFunction {
    pub fn new(name: &str, config: &HttpFunctionConfig, client: reqwest::Client) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(&config.url)?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert("x-switchyard-function", HeaderValue::from_str(name)?);
        for (k, v) in &config.headers {
            headers.insert(HeaderName::from_bytes(k.as_bytes())?, HeaderValue::from_str(v)?);
        }
        Ok(Self { client, url, timeout: config.timeout, headers })
    }

    pub fn socket_addr(&self) -> Option<std::net::SocketAddr> {
        self.url.socket_addrs(|| None).ok()?.into_iter().next()
    }

    pub async fn invoke(&self, invocation: &Invocation) -> Result<Bytes, InvokeError> {
        let request = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .headers(self.headers.clone())
            .header("x-switchyard-request-id", &invocation.request_id)
            .header("x-switchyard-attempt", invocation.attempt);
        let request = invocation.headers.iter().fold(request, |r, (name, value)| r.header(name, value));
        let request = request.body(invocation.payload.clone());
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Err(self.timed_out()),
            Err(e) => return Err(InvokeError::Unreachable(error_chain(&e))),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) if e.is_timeout() => return Err(self.timed_out()),
            Err(e) => return Err(InvokeError::Unreachable(error_chain(&e))),
        };
        if status.is_success() {
            return Ok(body);
        }
        if status.as_u16() == 429 {
            return Err(InvokeError::Throttled { retry_after });
        }
        Err(function_error(status, body))
    }

    fn timed_out(&self) -> InvokeError {
        InvokeError::Function {
            error_type: TIMEOUT_ERROR.to_string(),
            message: format!("Task timed out after {:.2} seconds", self.timeout.as_secs_f64()),
            payload: None,
        }
    }
}

/// A non-2xx answer. A body that is already Lambda's `{errorMessage,
/// errorType}` is kept as the function's own error.
fn function_error(status: reqwest::StatusCode, body: Bytes) -> InvokeError {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let field = |k: &str| parsed.as_ref().and_then(|v| v.get(k)).and_then(|v| v.as_str()).map(str::to_string);
    match (field("errorType"), field("errorMessage")) {
        (Some(error_type), Some(message)) => InvokeError::Function { error_type, message, payload: Some(body) },
        _ => {
            let excerpt = String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned();
            InvokeError::Function {
                error_type: "HttpError".to_string(),
                message: format!("function answered {status}: {excerpt}"),
                payload: None,
            }
        }
    }
}

/// reqwest's top-level message hides the cause ("error sending request");
/// the chain says what happened (connection refused, reset).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
