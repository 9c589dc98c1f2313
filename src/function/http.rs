use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use super::{Invocation, InvokeError, TIMEOUT_ERROR};
use crate::config::HttpFunctionConfig;
use switchyard_lambda_host::{MAX_RESPONSE_BYTES, error_type as lambda_error};

/// A function that is an HTTP endpoint: the event is POSTed as JSON; 2xx is
/// success and the body is the result.
pub struct HttpFunction {
    transport: Transport,
    url: reqwest::Url,
    timeout: Duration,
    headers: HeaderMap,
}

/// How requests reach the function.
enum Transport {
    /// `http://`: through hyper directly, with the URI parsed once and a
    /// connection pool of the function's own. reqwest re-parses the URL,
    /// copies the header map and arms a timer of its own on every request,
    /// which showed as a fifth of Switchyard's CPU under broker load.
    Plain { client: Box<Client<HttpConnector, Full<Bytes>>>, uri: http::Uri },
    /// `https://`: reqwest, for its TLS.
    Tls(reqwest::Client),
}

/// How long an idle pooled connection to a function is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

impl HttpFunction {
    pub fn new(name: &str, config: &HttpFunctionConfig, client: reqwest::Client) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(&config.url)?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert("x-switchyard-function", HeaderValue::from_str(name)?);
        for (k, v) in &config.headers {
            headers.insert(HeaderName::from_bytes(k.as_bytes())?, HeaderValue::from_str(v)?);
        }
        let transport = if url.scheme() == "http" {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            let client = Client::builder(TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE)
                .pool_timer(TokioTimer::new())
                .build(connector);
            Transport::Plain { client: Box::new(client), uri: url.as_str().parse()? }
        } else {
            Transport::Tls(client)
        };
        Ok(Self { transport, url, timeout: config.timeout, headers })
    }

    pub fn socket_addr(&self) -> Option<std::net::SocketAddr> {
        self.url.socket_addrs(|| None).ok()?.into_iter().next()
    }

    pub async fn invoke(&self, invocation: &Invocation) -> Result<Bytes, InvokeError> {
        let (status, retry_after, body) = match &self.transport {
            Transport::Plain { client, uri } => {
                let exchange = self.exchange(client, uri, invocation);
                match tokio::time::timeout(self.timeout, exchange).await {
                    Ok(answer) => answer?,
                    Err(_) => return Err(self.timed_out()),
                }
            }
            Transport::Tls(client) => self.exchange_tls(client, invocation).await?,
        };
        if status.is_success() {
            return Ok(body);
        }
        if status.as_u16() == 429 {
            return Err(InvokeError::Throttled { retry_after });
        }
        Err(function_error(status, body))
    }

    async fn exchange(
        &self,
        client: &Client<HttpConnector, Full<Bytes>>,
        uri: &http::Uri,
        invocation: &Invocation,
    ) -> Result<(http::StatusCode, Option<Duration>, Bytes), InvokeError> {
        let mut request = http::Request::post(uri.clone())
            .body(Full::new(invocation.payload.clone()))
            .map_err(|e| InvokeError::Unreachable(error_chain(&e)))?;
        let headers = request.headers_mut();
        headers.clone_from(&self.headers);
        let request_id = HeaderValue::from_str(&invocation.request_id)
            .map_err(|e| InvokeError::Unreachable(format!("request id {:?}: {e}", invocation.request_id)))?;
        headers.insert("x-switchyard-request-id", request_id);
        headers.insert("x-switchyard-attempt", HeaderValue::from(invocation.attempt));
        for (name, value) in &invocation.headers {
            headers.append(name, value.clone());
        }
        let response = client.request(request).await.map_err(|e| InvokeError::Unreachable(error_chain(&e)))?;
        let (parts, body) = response.into_parts();
        let body = match Limited::new(body, MAX_RESPONSE_BYTES).collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => return Err(too_large()),
            Err(e) => return Err(InvokeError::Unreachable(error_chain(&*e))),
        };
        Ok((parts.status, retry_after(&parts.headers), body))
    }

    async fn exchange_tls(
        &self,
        client: &reqwest::Client,
        invocation: &Invocation,
    ) -> Result<(http::StatusCode, Option<Duration>, Bytes), InvokeError> {
        let request = client
            .post(self.url.clone())
            .timeout(self.timeout)
            .headers(self.headers.clone())
            .header("x-switchyard-request-id", &invocation.request_id)
            .header("x-switchyard-attempt", invocation.attempt);
        let request = invocation.headers.iter().fold(request, |r, (name, value)| r.header(name, value));
        let request = request.body(invocation.payload.clone());
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Err(self.timed_out()),
            Err(e) => return Err(InvokeError::Unreachable(error_chain(&e))),
        };
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() > MAX_RESPONSE_BYTES => return Err(too_large()),
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => return Ok((status, retry_after, Bytes::from(body))),
                Err(e) if e.is_timeout() => return Err(self.timed_out()),
                Err(e) => return Err(InvokeError::Unreachable(error_chain(&e))),
            }
        }
    }

    fn timed_out(&self) -> InvokeError {
        InvokeError::Function {
            error_type: TIMEOUT_ERROR.to_string(),
            message: format!("Task timed out after {:.2} seconds", self.timeout.as_secs_f64()),
            payload: None,
        }
    }
}

/// A response body beyond Lambda's limit for a synchronous response: a
/// function error, as Lambda reports it, and memory bounded by the limit
/// rather than by what the function sends.
fn too_large() -> InvokeError {
    InvokeError::Function {
        error_type: lambda_error::RESPONSE_TOO_LARGE.to_string(),
        message: format!("Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."),
        payload: None,
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by functions).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// A non-2xx answer. A body that is already Lambda's `{errorMessage,
/// errorType}` is kept as the function's own error.
fn function_error(status: http::StatusCode, body: Bytes) -> InvokeError {
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

/// The HTTP clients' top-level messages hide the cause ("error sending
/// request", "client error (Connect)"); the chain says what happened
/// (connection refused, reset).
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
