//! Webhook mappings: a request on a configured path becomes an API Gateway
//! HTTP API (v2) event; `sync` answers with the function's result, `async`
//! answers 202 once the event is durably queued.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;
use switchyard_http::apigw;

use super::{ASYNC_PAYLOAD_LIMIT, AppState, SYNC_PAYLOAD_LIMIT, json, json_text, read_body};
use crate::config::WebhookMode;
use crate::function::{Invocation, InvokeError, TIMEOUT_ERROR, Wait};
use crate::queue::AcceptError;
use crate::shape::{Admit, Item, WebhookEnvelope};

pub async fn handle(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let Some(route) = app.webhooks.get(request.uri().path()) else {
        return json(StatusCode::NOT_FOUND, json!({ "message": "Not Found" }));
    };
    let response = serve(&app, route, peer, request).await;
    route.count_answer(response.status());
    response
}

pub(super) fn requests_counter(mapping: &str, status: StatusCode) -> metrics::Counter {
    metrics::counter!(
        "switchyard_webhook_requests_total",
        "mapping" => mapping.to_string(),
        "status" => status.as_str().to_string()
    )
}

async fn serve(app: &Arc<AppState>, route: &super::WebhookRoute, peer: SocketAddr, request: Request) -> Response {
    if app.draining() {
        return json(StatusCode::SERVICE_UNAVAILABLE, json!({ "message": "Service Unavailable: shutting down" }));
    }
    let method = request.method().clone();
    if let Some(methods) = &route.methods
        && !methods.iter().any(|m| m == method.as_str())
    {
        let mut response = json(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({ "message": format!("method {method} not allowed; expected one of {}", methods.join(", ")) }),
        );
        // RFC 9110: a 405 names the methods the resource takes.
        if let Ok(allow) = HeaderValue::from_str(&methods.join(", ")) {
            response.headers_mut().insert(axum::http::header::ALLOW, allow);
        }
        return response;
    }
    let _in_flight = app.enter();
    let received_at = chrono::Utc::now();
    let (parts, body) = request.into_parts();
    let limit = match route.mode {
        WebhookMode::Sync => SYNC_PAYLOAD_LIMIT,
        WebhookMode::Async => ASYNC_PAYLOAD_LIMIT,
    };
    let body = match read_body(app, body, limit, || {
        json(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({ "message": format!("Request Entity Too Large: the limit for a {} webhook is {limit} bytes", mode_name(route.mode)) }),
        )
    })
    .await
    {
        Ok(body) => body,
        Err(response) => return response,
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    let protocol = protocol(parts.version);
    let event = apigw::event(&apigw::Request {
        method: method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        protocol,
        headers: &parts.headers,
        body: &body,
        source_ip: Some(peer.ip()),
        request_id: &request_id,
        received_at,
    });
    let (payload, headers) = if route.shaper.is_passthrough() {
        (event.to_json(), Vec::new())
    } else {
        let mut data = serde_json::to_value(&event).unwrap_or_default();
        let item = |data| Item { id: &request_id, time: received_at.into(), data };
        let shaped = match route.shaper.admit(&WebhookEnvelope, &mut data) {
            Admit::Keep => route.shaper.event(&WebhookEnvelope, &[item(&data)]),
            Admit::Skip => return filtered(route.mode),
            Admit::Fail(error) => Err(error),
        };
        match shaped {
            Ok(shaped) => (shaped.payload, shaped.headers),
            Err(error) => return transform_failed(app, route, &request_id, event.to_json(), error).await,
        }
    };
    match route.mode {
        // The event is queued under the id its requestContext carries, so
        // the 202, the event and every invocation of it share one id.
        WebhookMode::Async => {
            match app.queue.accept(request_id.clone(), &route.function.name, &route.mapping, payload).await {
                Ok(()) => {
                    // A request id is a UUID: nothing in it to escape.
                    let body = [r#"{"requestId":""#, &request_id, r#""}"#].concat();
                    let mut response = json_text(StatusCode::ACCEPTED, body);
                    if let Ok(v) = HeaderValue::from_str(&request_id) {
                        response.headers_mut().insert("x-switchyard-request-id", v);
                    }
                    response
                }
                Err(AcceptError::Full(_)) => {
                    let mut r = json(
                        StatusCode::TOO_MANY_REQUESTS,
                        json!({ "message": "Too Many Requests: the async queue is full" }),
                    );
                    r.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
                    r
                }
                Err(error) => {
                    tracing::error!(mapping = %route.mapping, %error, "cannot queue webhook event");
                    json(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        json!({ "message": "Internal Server Error: the event was not queued" }),
                    )
                }
            }
        }
        WebhookMode::Sync => {
            let invocation = Invocation { headers, ..Invocation::new(request_id, payload) };
            match route.function.invoke(&route.mapping, &invocation, Wait::Bounded).await {
                Ok(result) => match apigw::response(&result) {
                    Ok(r) => {
                        let mut response = (r.status, r.body).into_response();
                        *response.headers_mut() = r.headers;
                        response
                    }
                    Err(problem) => {
                        tracing::warn!(mapping = %route.mapping, %problem, "function result is not a valid HTTP response");
                        json(
                            StatusCode::BAD_GATEWAY,
                            json!({ "message": format!("Bad Gateway: function result {problem}") }),
                        )
                    }
                },
                Err(InvokeError::Throttled { .. }) => {
                    json(StatusCode::TOO_MANY_REQUESTS, json!({ "message": "Too Many Requests" }))
                }
                Err(InvokeError::Function { error_type, .. }) if error_type == TIMEOUT_ERROR => {
                    json(StatusCode::GATEWAY_TIMEOUT, json!({ "message": "Gateway Timeout" }))
                }
                Err(InvokeError::Function { .. }) => {
                    json(StatusCode::INTERNAL_SERVER_ERROR, json!({ "message": "Internal Server Error" }))
                }
                Err(InvokeError::Unreachable(_)) => json(StatusCode::BAD_GATEWAY, json!({ "message": "Bad Gateway" })),
            }
        }
    }
}

/// A request no filter matched: acknowledged, the function not invoked.
fn filtered(mode: WebhookMode) -> Response {
    let mut response = match mode {
        WebhookMode::Sync => StatusCode::NO_CONTENT.into_response(),
        WebhookMode::Async => json(StatusCode::ACCEPTED, json!({ "filtered": true })),
    };
    response.headers_mut().insert("x-switchyard-filtered", HeaderValue::from_static("true"));
    response
}

/// A sync caller learns why its request could not be transformed; an async
/// one's event is kept in the dead-letter store with the error.
async fn transform_failed(
    app: &AppState,
    route: &super::WebhookRoute,
    request_id: &str,
    event: Bytes,
    error: String,
) -> Response {
    match route.mode {
        WebhookMode::Sync => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "message": format!("Unprocessable Entity: transform failed: {error}") }),
        ),
        WebhookMode::Async => {
            match app
                .queue
                .transform_failed(request_id.to_string(), &route.function.name, &route.mapping, event, &error)
                .await
            {
                Ok(()) => {
                    json(StatusCode::ACCEPTED, json!({ "requestId": request_id, "deadLettered": true, "error": error }))
                }
                Err(e) => {
                    tracing::error!(mapping = %route.mapping, error = %e, "cannot store a webhook event whose transform failed");
                    json(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        json!({ "message": "Internal Server Error: the event was not stored" }),
                    )
                }
            }
        }
    }
}

/// The protocol as API Gateway names it (`HTTP/1.1`). `Version` lists
/// every version `http` knows; hyper serves none beyond them.
fn protocol(version: axum::http::Version) -> &'static str {
    use axum::http::Version;
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn mode_name(mode: WebhookMode) -> &'static str {
    match mode {
        WebhookMode::Sync => "sync",
        WebhookMode::Async => "async",
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Version;

    #[test]
    fn protocol_names_every_version_as_http_writes_it() {
        for version in [Version::HTTP_09, Version::HTTP_10, Version::HTTP_11, Version::HTTP_2, Version::HTTP_3] {
            assert_eq!(super::protocol(version), format!("{version:?}"));
        }
    }
}
