//! The HTTP server: webhooks, the Lambda Invoke API, health, metrics and the
//! admin API, all on `server.listen`.

mod admin;
pub use admin::dead_letter_json;
mod invoke_api;
mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use crate::config::WebhookMode;
use crate::function::Function;
use crate::queue::AsyncQueue;
use switchyard_sdk::SourceState;

/// Lambda's limit for a synchronous request or response payload.
pub const SYNC_PAYLOAD_LIMIT: usize = 6 * 1024 * 1024;
/// Switchyard's limit for an asynchronous payload (Lambda's is 256 KB).
pub const ASYNC_PAYLOAD_LIMIT: usize = 1024 * 1024;

pub struct WebhookRoute {
    pub mapping: Arc<str>,
    pub function: Arc<Function>,
    pub mode: WebhookMode,
    /// Upper-case method names; `None` accepts any.
    pub methods: Option<Vec<String>>,
    pub shaper: Arc<crate::shape::Shaper>,
    usual: UsualAnswer,
}

/// The status most of a mapping's requests end with (202 async, 200 sync)
/// and its `switchyard_webhook_requests_total`, registered once: the macro
/// builds and looks up the labels on every call.
struct UsualAnswer {
    status: StatusCode,
    requests: metrics::Counter,
}

impl WebhookRoute {
    pub fn new(
        mapping: &str,
        function: Arc<Function>,
        mode: WebhookMode,
        methods: Option<Vec<String>>,
        shaper: Arc<crate::shape::Shaper>,
    ) -> Self {
        let status = match mode {
            WebhookMode::Async => StatusCode::ACCEPTED,
            WebhookMode::Sync => StatusCode::OK,
        };
        let usual = UsualAnswer { status, requests: webhook::requests_counter(mapping, status) };
        WebhookRoute { mapping: Arc::from(mapping), function, mode, methods, shaper, usual }
    }

    /// Counts a request of this mapping answered with `status`.
    pub fn count_answer(&self, status: StatusCode) {
        if status == self.usual.status {
            self.usual.requests.increment(1);
        } else {
            webhook::requests_counter(&self.mapping, status).increment(1);
        }
    }
}

/// What `/v1/mappings` shows of one mapping.
pub struct MappingInfo {
    pub name: String,
    pub source: &'static str,
    pub function: String,
    pub detail: serde_json::Value,
    pub state: watch::Receiver<SourceState>,
}

pub struct AppState {
    pub functions: HashMap<String, Arc<Function>>,
    pub webhooks: HashMap<String, WebhookRoute>,
    pub queue: Arc<AsyncQueue>,
    pub mappings: Vec<MappingInfo>,
    pub metrics: PrometheusHandle,
    pub ready: AtomicBool,
    pub draining: AtomicBool,
    /// `server.read_timeout`, for request bodies.
    pub read_timeout: Duration,
    in_flight: AtomicUsize,
}

impl AppState {
    pub fn new(
        functions: HashMap<String, Arc<Function>>,
        webhooks: HashMap<String, WebhookRoute>,
        queue: Arc<AsyncQueue>,
        mappings: Vec<MappingInfo>,
        metrics: PrometheusHandle,
        read_timeout: Duration,
    ) -> Self {
        Self {
            functions,
            webhooks,
            queue,
            mappings,
            metrics,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            read_timeout,
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Requests being served that carry events (webhooks, invocations).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// Counts a request carrying an event until it is answered, so shutdown can
/// wait for it.
struct InFlight(Arc<AppState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/metrics", get(admin::metrics))
        .route("/v1/mappings", get(admin::mappings))
        .route("/v1/dlq", get(admin::dlq_list))
        .route("/v1/dlq/replay", post(admin::dlq_replay_all))
        .route("/v1/dlq/{id}", get(admin::dlq_show).delete(admin::dlq_purge))
        .route("/v1/dlq/{id}/replay", post(admin::dlq_replay))
        .route("/2015-03-31/functions/{name}/invocations", post(invoke_api::invoke))
        .fallback(webhook::handle)
        .with_state(state)
}

/// A JSON response with a status.
fn json(status: StatusCode, value: serde_json::Value) -> Response {
    json_text(status, value.to_string())
}

/// A response with a status and a body that is JSON already.
fn json_text(status: StatusCode, body: impl IntoResponse) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Reads a body up to `limit` bytes within `server.read_timeout` (so a
/// client that sends it a byte at a time cannot hold a connection, or a
/// shutdown, for good); `Err` is the response to send.
async fn read_body(
    app: &AppState,
    body: Body,
    limit: usize,
    too_large: impl FnOnce() -> Response,
) -> Result<bytes::Bytes, Response> {
    let Ok(read) = tokio::time::timeout(app.read_timeout, axum::body::to_bytes(body, limit)).await else {
        return Err(json(
            StatusCode::REQUEST_TIMEOUT,
            serde_json::json!({
                "message": format!("Request Timeout: the body did not arrive within {:?} (server.read_timeout)", app.read_timeout)
            }),
        ));
    };
    match read {
        Ok(bytes) => Ok(bytes),
        Err(error) => {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
            let mut length_limit = false;
            while let Some(e) = cause {
                length_limit |= e.is::<http_body_util::LengthLimitError>();
                cause = e.source();
            }
            if length_limit {
                Err(too_large())
            } else {
                Err(json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({ "message": format!("cannot read the request body: {error}") }),
                ))
            }
        }
    }
}
