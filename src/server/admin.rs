//! Health, readiness, metrics and the `/v1` admin API.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{AppState, json};
use crate::queue::{DeadLetter, Selection, now_ms, record};

pub async fn healthz() -> Response {
    json(StatusCode::OK, json!({ "status": "ok" }))
}

pub async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    if app.draining() {
        json(StatusCode::SERVICE_UNAVAILABLE, json!({ "status": "shutting down" }))
    } else if app.ready.load(Ordering::Acquire) {
        json(StatusCode::OK, json!({ "status": "ready" }))
    } else {
        json(StatusCode::SERVICE_UNAVAILABLE, json!({ "status": "starting" }))
    }
}

pub async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let mut response = app.metrics.render().into_response();
    response.headers_mut().insert("content-type", HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

pub async fn mappings(State(app): State<Arc<AppState>>) -> Response {
    let list: Vec<Value> = app
        .mappings
        .iter()
        .map(|m| {
            let state = m.state.borrow().clone();
            let mut v = json!({
                "name": m.name,
                "source": m.source,
                "function": m.function,
                "state": state.label(),
                "config": m.detail,
            });
            if let switchyard_sdk::SourceState::Disconnected(reason) = state {
                v["error"] = Value::String(reason);
            }
            v
        })
        .collect();
    json(StatusCode::OK, json!({ "mappings": list }))
}

/// The JSON form of a dead letter, shared by the API and `switchyard dlq --json`.
pub fn dead_letter_json(d: &DeadLetter) -> Value {
    let time = |ms: Option<i64>| ms.map(record::rfc3339_ms);
    json!({
        "id": d.id,
        "requestId": d.request_id,
        "function": d.function,
        "source": d.source,
        "condition": d.condition,
        "errorType": d.error_type,
        "errorMessage": d.error_message,
        "attempts": d.attempts,
        "enqueuedAt": record::rfc3339_ms(d.enqueued_at),
        "firstAttemptAt": time(d.first_attempt_at),
        "lastAttemptAt": time(d.last_attempt_at),
        "failedAt": record::rfc3339_ms(d.failed_at),
        "payload": record::payload_value(&d.payload),
    })
}

fn store_error(error: impl std::fmt::Display) -> Response {
    json(StatusCode::INTERNAL_SERVER_ERROR, json!({ "message": error.to_string() }))
}

/// `GET /v1/dlq[?function=F][&limit=N][&after=ID]`: a page of dead letters,
/// oldest first; `next` is the `after` of the next page while there may be
/// one.
pub async fn dlq_list(State(app): State<Arc<AppState>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let number =
        |key: &str, default: i64, range: std::ops::RangeInclusive<i64>| match q.get(key) {
            None => Ok(default),
            Some(text) => text.parse().ok().filter(|n| range.contains(n)).ok_or_else(|| {
                format!("{key}: expected a number from {} to {}, got {text:?}", range.start(), range.end())
            }),
        };
    let (limit, after) = match (number("limit", 100, 1..=10_000), number("after", 0, 0..=i64::MAX)) {
        (Ok(limit), Ok(after)) => (limit as usize, after),
        (Err(message), _) | (_, Err(message)) => return json(StatusCode::BAD_REQUEST, json!({ "message": message })),
    };
    match app.queue.store().dlq_list(q.get("function").cloned(), after, limit).await {
        Ok(list) => {
            let next = list.last().filter(|_| list.len() == limit).map(|d| d.id);
            json(
                StatusCode::OK,
                json!({ "deadLetters": list.iter().map(dead_letter_json).collect::<Vec<_>>(), "next": next }),
            )
        }
        Err(e) => store_error(e),
    }
}

pub async fn dlq_show(State(app): State<Arc<AppState>>, Path(id): Path<i64>) -> Response {
    match app.queue.store().dlq_get(id).await {
        Ok(Some(d)) => {
            let mut v = dead_letter_json(&d);
            v["record"] = d.record.as_deref().map(record::payload_value).unwrap_or(Value::Null);
            json(StatusCode::OK, v)
        }
        Ok(None) => not_found(id),
        Err(e) => store_error(e),
    }
}

fn not_found(id: i64) -> Response {
    json(StatusCode::NOT_FOUND, json!({ "message": format!("no dead letter with id {id}") }))
}

pub async fn dlq_replay(State(app): State<Arc<AppState>>, Path(id): Path<i64>) -> Response {
    let functions = app.functions.keys().cloned().collect();
    match app.queue.store().dlq_replay(Selection::Ids(vec![id]), functions, now_ms()).await {
        Ok(replayed) => match replayed.unknown.first() {
            Some((_, function)) => json(
                StatusCode::CONFLICT,
                json!({ "message": format!(
                    "dead letter {id} was not replayed: its function `{function}` is not in the config; it stays in the dead-letter store"
                ) }),
            ),
            None if replayed.ids.is_empty() => not_found(id),
            None => {
                app.queue.wake_all();
                json(StatusCode::OK, json!({ "replayed": replayed.ids }))
            }
        },
        Err(e) => store_error(e),
    }
}

pub async fn dlq_replay_all(State(app): State<Arc<AppState>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let selection = Selection::All { function: q.get("function").cloned() };
    let functions = app.functions.keys().cloned().collect();
    match app.queue.store().dlq_replay(selection, functions, now_ms()).await {
        Ok(replayed) => {
            app.queue.wake_all();
            let unknown: Vec<Value> =
                replayed.unknown.iter().map(|(id, function)| json!({ "id": id, "function": function })).collect();
            json(StatusCode::OK, json!({ "replayed": replayed.ids, "not_in_config": unknown }))
        }
        Err(e) => store_error(e),
    }
}

pub async fn dlq_purge(State(app): State<Arc<AppState>>, Path(id): Path<i64>) -> Response {
    match app.queue.store().dlq_purge(Selection::Ids(vec![id])).await {
        Ok(ids) if ids.is_empty() => not_found(id),
        Ok(ids) => json(StatusCode::OK, json!({ "purged": ids })),
        Err(e) => store_error(e),
    }
}
