//! Webhook mappings: a request on a configured path becomes an API Gateway
//! HTTP API (v2) event; `sync` answers with the function's result, `async`
//! answers 202 once the event is durably queued.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use switchyard_http::apigw;

use super::{ASYNC_PAYLOAD_LIMIT, AppState, SYNC_PAYLOAD_LIMIT, json, read_body};
use crate::config::WebhookMode;
use crate::function::{Invocation, InvokeError, TIMEOUT_ERROR, Wait};
use crate::queue::AcceptError;

pub async fn handle(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let path = request.uri().path().to_string();
    let Some(route) = app.webhooks.get(&path) else {
        return json(StatusCode::NOT_FOUND, json!({ "message": "Not Found" }));
    };
    let response = serve(&app, route, peer, request).await;
    metrics::counter!(
        "switchyard_webhook_requests_total",
        "mapping" => route.mapping.to_string(),
        "status" => response.status().as_str().to_string()
    )
    .increment(1);
    response
}

async fn serve(app: &Arc<AppState>, route: &super::WebhookRoute, peer: SocketAddr, request: Request) -> Response {
    if app.draining() {
        return json(StatusCode::SERVICE_UNAVAILABLE, json!({ "message": "Service Unavailable: shutting down" }));
    }
    let method = request.method().as_str().to_string();
    if let Some(methods) = &route.methods
        && !methods.contains(&method)
    {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({ "message": format!("method {method} not allowed; expected one of {}", methods.join(", ")) }),
        );
    }
    let _in_flight = app.enter();
    let received_at = chrono::Utc::now();
    let (parts, body) = request.into_parts();
    let limit = match route.mode {
        WebhookMode::Sync => SYNC_PAYLOAD_LIMIT,
        WebhookMode::Async => ASYNC_PAYLOAD_LIMIT,
    };
    let body = match read_body(body, limit, || {
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
    let protocol = format!("{:?}", parts.version);
    let event = apigw::event(&apigw::Request {
        method: &method,
        path: parts.uri.path(),
        query: parts.uri.query(),
        protocol: &protocol,
        headers: &parts.headers,
        body: &body,
        source_ip: Some(peer.ip()),
        request_id: &request_id,
        received_at,
    });
    let payload = event.to_json();
    match route.mode {
        WebhookMode::Async => match app.queue.accept(&route.function.name, &route.mapping, payload).await {
            Ok(request_id) => {
                let mut response = json(StatusCode::ACCEPTED, json!({ "requestId": request_id }));
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
        },
        WebhookMode::Sync => {
            let invocation = Invocation { request_id, payload, attempt: 1 };
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

fn mode_name(mode: WebhookMode) -> &'static str {
    match mode {
        WebhookMode::Sync => "sync",
        WebhookMode::Async => "async",
    }
}
