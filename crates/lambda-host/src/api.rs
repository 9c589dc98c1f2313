//! The Lambda Runtime API (`/2018-06-01`) that one instance talks to.
//!
//! Every instance gets its own server on its own loopback port, so whatever
//! arrives on that port comes from that instance: a response can only ever
//! complete the invocation that instance was given, and a request id that is
//! not its current one is refused (400 `InvalidRequestID`), as Lambda does.
//! Status codes and bodies follow Lambda's: 202 `{"status":"OK"}` for
//! accepted posts, 413 `RequestEntityTooLarge` for responses over 6 MB, 403
//! `InvalidStateTransition` for an init error after init.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::routing::{get, post};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use crate::output::Output;
use crate::report::{self, MAX_RESPONSE_BYTES};

const REQUEST_ID: HeaderName = HeaderName::from_static("lambda-runtime-aws-request-id");
const DEADLINE_MS: HeaderName = HeaderName::from_static("lambda-runtime-deadline-ms");
const FUNCTION_ARN: HeaderName = HeaderName::from_static("lambda-runtime-invoked-function-arn");
const TRACE_ID: HeaderName = HeaderName::from_static("lambda-runtime-trace-id");
const CLIENT_CONTEXT: HeaderName = HeaderName::from_static("lambda-runtime-client-context");
const ERROR_TYPE: HeaderName = HeaderName::from_static("lambda-runtime-function-error-type");

/// An oversized response is still read (and dropped) up to here so the
/// runtime finishes sending and can read our 413; a runtime that sends more
/// gets its connection closed instead.
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;
/// Room for what a runtime posts while nobody reads it yet: at most a
/// delivery and a result per invocation, plus init errors.
const EVENT_CAPACITY: usize = 16;

/// An invocation waiting for the runtime's `next`, with its headers already
/// checked.
#[derive(Clone)]
pub(crate) struct Pending {
    pub request_id: Arc<str>,
    pub request_id_header: HeaderValue,
    pub payload: Bytes,
    pub trace_id: Option<HeaderValue>,
    pub client_context: Option<HeaderValue>,
}

/// What the runtime did, for the invocation waiting on the instance.
#[derive(Debug)]
pub(crate) enum Event {
    /// The runtime took the invocation. `ready_at` is its first `next`: the
    /// end of init.
    Delivered {
        request_id: Arc<str>,
        at: Instant,
        ready_at: Instant,
    },
    Response {
        request_id: Arc<str>,
        payload: Bytes,
    },
    Error {
        request_id: Arc<str>,
        error_type: Option<String>,
        payload: Bytes,
    },
    TooLarge {
        request_id: Arc<str>,
        size: u64,
    },
    InitError {
        error_type: Option<String>,
        payload: Bytes,
    },
}

pub(crate) struct Api {
    function: Arc<str>,
    output: Arc<Output>,
    arn: HeaderValue,
    timeout: std::time::Duration,
    next_tx: mpsc::Sender<Pending>,
    next_rx: tokio::sync::Mutex<mpsc::Receiver<Pending>>,
    events: mpsc::Sender<Event>,
    state: Mutex<ApiState>,
}

#[derive(Default)]
struct ApiState {
    /// The invocation the runtime holds, until it posts its result.
    current: Option<Arc<str>>,
    ready_at: Option<Instant>,
}

impl Api {
    pub(crate) fn new(
        function: Arc<str>,
        output: Arc<Output>,
        arn: HeaderValue,
        timeout: std::time::Duration,
    ) -> (Arc<Api>, mpsc::Receiver<Event>) {
        // One invocation at a time per instance: the pool never hands a busy
        // instance another.
        let (next_tx, next_rx) = mpsc::channel(1);
        let (events, events_rx) = mpsc::channel(EVENT_CAPACITY);
        let api = Api {
            function,
            output,
            arn,
            timeout,
            next_tx,
            next_rx: tokio::sync::Mutex::new(next_rx),
            events,
            state: Mutex::new(ApiState::default()),
        };
        (Arc::new(api), events_rx)
    }

    /// Hands an invocation to the runtime's (current or next) `next` call.
    pub(crate) fn dispatch(&self, pending: Pending) -> bool {
        self.next_tx.try_send(pending).is_ok()
    }

    /// When the runtime first asked for an invocation.
    pub(crate) fn ready_at(&self) -> Option<Instant> {
        self.lock().ready_at
    }

    fn lock(&self) -> MutexGuard<'_, ApiState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_current(&self, request_id: &str) -> bool {
        self.lock().current.as_deref() == Some(request_id)
    }

    /// Ends the runtime's hold on `request_id`; false when it did not hold it
    /// (a second post for the same invocation).
    fn take_current(&self, request_id: &str) -> Option<Arc<str>> {
        let mut state = self.lock();
        if state.current.as_deref() == Some(request_id) { state.current.take() } else { None }
    }

    fn send(&self, event: Event) {
        if let Err(error) = self.events.try_send(event) {
            // Only a runtime posting over and over fills this; what it
            // posted beyond the first few cannot change the outcome.
            tracing::debug!(%error, "runtime API event dropped");
        }
    }
}

pub(crate) fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{request_id}/response", post(response))
        .route("/2018-06-01/runtime/invocation/{request_id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .fallback(not_found)
        .with_state(api)
}

type Reply = axum::response::Response;

async fn next(State(api): State<Arc<Api>>) -> Reply {
    let ready_at = *api.lock().ready_at.get_or_insert_with(Instant::now);
    // Long poll without a timeout, as Lambda's: a runtime waits here for as
    // long as its instance stays warm. Receiving is cancel-safe, so a
    // runtime that hangs up loses nothing.
    let pending = api.next_rx.lock().await.recv().await;
    let Some(pending) = pending else {
        return json(StatusCode::INTERNAL_SERVER_ERROR, report::error_body("InternalServerError", "Instance stopping"));
    };
    let at = Instant::now();
    let deadline = SystemTime::now() + api.timeout;
    let deadline_ms = deadline.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
    api.lock().current = Some(pending.request_id.clone());
    // START goes in here, before the runtime has the payload: whatever the
    // runtime wrote so far (init) comes before it, whatever the handler
    // writes comes after.
    let start = report::start_line(&pending.request_id);
    tracing::info!(function = %api.function, request_id = %pending.request_id, "{start}");
    api.output.platform_line(&start);
    api.send(Event::Delivered { request_id: pending.request_id.clone(), at, ready_at });

    let mut reply = Reply::new(Body::from(pending.payload));
    let headers = reply.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(REQUEST_ID, pending.request_id_header);
    headers.insert(DEADLINE_MS, HeaderValue::from(deadline_ms as u64));
    if !api.arn.is_empty() {
        headers.insert(FUNCTION_ARN, api.arn.clone());
    }
    if let Some(trace_id) = pending.trace_id {
        headers.insert(TRACE_ID, trace_id);
    }
    if let Some(client_context) = pending.client_context {
        headers.insert(CLIENT_CONTEXT, client_context);
    }
    reply
}

async fn response(
    State(api): State<Arc<Api>>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    if !api.is_current(&request_id) {
        return invalid_request_id();
    }
    match read_body(&headers, body).await {
        Ok(Read::Complete(payload)) => match api.take_current(&request_id) {
            Some(request_id) => {
                api.send(Event::Response { request_id, payload });
                accepted()
            }
            None => invalid_request_id(),
        },
        Ok(Read::TooLarge(size)) => too_large(&api, &request_id, size),
        Err(error) => body_failed(error),
    }
}

async fn error(State(api): State<Arc<Api>>, Path(request_id): Path<String>, headers: HeaderMap, body: Body) -> Reply {
    if !api.is_current(&request_id) {
        return invalid_request_id();
    }
    let error_type = error_type(&headers);
    match read_body(&headers, body).await {
        Ok(Read::Complete(payload)) => match api.take_current(&request_id) {
            Some(request_id) => {
                api.send(Event::Error { request_id, error_type, payload });
                accepted()
            }
            None => invalid_request_id(),
        },
        Ok(Read::TooLarge(size)) => too_large(&api, &request_id, size),
        Err(error) => body_failed(error),
    }
}

async fn init_error(State(api): State<Arc<Api>>, headers: HeaderMap, body: Body) -> Reply {
    if api.ready_at().is_some() {
        return json(
            StatusCode::FORBIDDEN,
            report::error_body("InvalidStateTransition", "Init error posted after the runtime asked for an invocation"),
        );
    }
    let error_type = error_type(&headers);
    match read_body(&headers, body).await {
        Ok(Read::Complete(payload)) => {
            api.send(Event::InitError { error_type, payload });
            accepted()
        }
        Ok(Read::TooLarge(_)) => payload_too_large(),
        Err(error) => body_failed(error),
    }
}

async fn not_found() -> Reply {
    json(StatusCode::NOT_FOUND, report::error_body("UnknownResource", "No such Runtime API resource"))
}

fn error_type(headers: &HeaderMap) -> Option<String> {
    headers.get(ERROR_TYPE).and_then(|v| v.to_str().ok()).filter(|s| !s.is_empty()).map(str::to_string)
}

enum Read {
    Complete(Bytes),
    TooLarge(u64),
}

/// Reads a posted body, keeping at most [`MAX_RESPONSE_BYTES`].
async fn read_body(headers: &HeaderMap, mut body: Body) -> Result<Read, axum::Error> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(size) = declared.filter(|&size| size > DRAIN_LIMIT) {
        return Ok(Read::TooLarge(size));
    }
    let capacity = declared.map_or(0, |size| size.min(MAX_RESPONSE_BYTES as u64) as usize);
    let mut buf = BytesMut::with_capacity(capacity);
    let mut size: u64 = 0;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        size += data.len() as u64;
        if size <= MAX_RESPONSE_BYTES as u64 {
            buf.extend_from_slice(&data);
        } else if size > DRAIN_LIMIT {
            break;
        }
    }
    if size > MAX_RESPONSE_BYTES as u64 {
        return Ok(Read::TooLarge(declared.unwrap_or(size).max(size)));
    }
    Ok(Read::Complete(buf.freeze()))
}

/// A response over the limit fails the invocation, as in Lambda; the runtime
/// is told with a 413 and may go on to its next invocation.
fn too_large(api: &Api, request_id: &str, size: u64) -> Reply {
    if let Some(request_id) = api.take_current(request_id) {
        api.send(Event::TooLarge { request_id, size });
    }
    payload_too_large()
}

fn payload_too_large() -> Reply {
    let message = format!("Exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).");
    json(StatusCode::PAYLOAD_TOO_LARGE, report::error_body("RequestEntityTooLarge", &message))
}

fn invalid_request_id() -> Reply {
    json(StatusCode::BAD_REQUEST, report::error_body("InvalidRequestID", "Invalid request ID"))
}

/// The runtime hung up mid-body; the invocation stays its to answer (or to
/// time out).
fn body_failed(error: axum::Error) -> Reply {
    json(StatusCode::BAD_REQUEST, report::error_body("InvalidRequestBody", &format!("Cannot read the body: {error}")))
}

fn accepted() -> Reply {
    json(StatusCode::ACCEPTED, Bytes::from_static(br#"{"status":"OK"}"#))
}

fn json(status: StatusCode, body: Bytes) -> Reply {
    let mut reply = Reply::new(Body::from(body));
    *reply.status_mut() = status;
    reply.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reply
}
