//! Switchyard's example HTTP function.
//!
//! Switchyard POSTs each event as JSON; this function answers with a small
//! JSON result. It understands the two events of the quickstart:
//! - a webhook event (API Gateway HTTP API v2): it answers an HTTP response
//!   (`statusCode`, `headers`, `body`) that Switchyard passes to the caller;
//! - a scheduled event (EventBridge): it answers a summary.
//!
//! A webhook body with `"fail": true` makes it fail (HTTP 500 with Lambda's
//! `{errorType, errorMessage}`), to show retries and the dead-letter store.
//!
//! Usage: hello-function [LISTEN_ADDR]   (default 127.0.0.1:7000)

use std::sync::Arc;
use std::thread;

use serde_json::{Value, json};
use tiny_http::{Header, Response, Server};

const WORKERS: usize = 8;

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7000".to_string());
    let server = match Server::http(&addr) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("hello-function: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("hello-function listening on http://{addr}/");
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let server = server.clone();
            thread::spawn(move || {
                while let Ok(mut request) = server.recv() {
                    let mut body = String::new();
                    let (status, answer) = match request.as_reader().read_to_string(&mut body) {
                        Ok(_) => handle(&body),
                        Err(e) => (400, json!({"errorType": "BadRequest", "errorMessage": e.to_string()})),
                    };
                    let header = Header::from_bytes("content-type", "application/json").expect("static header");
                    let response =
                        Response::from_string(answer.to_string()).with_status_code(status).with_header(header);
                    let _ = request.respond(response);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}

fn handle(body: &str) -> (u16, Value) {
    let event: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => {
            return (400, json!({"errorType": "InvalidJson", "errorMessage": e.to_string()}));
        }
    };
    if event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event") {
        let time = event["time"].as_str().unwrap_or("?");
        println!("tick at {time}");
        return (200, json!({"message": "tick received", "time": time}));
    }
    if event.get("rawPath").is_some() {
        let payload: Value = event["body"].as_str().and_then(|b| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
        if payload.get("fail") == Some(&Value::Bool(true)) {
            println!("failing on purpose for {}", event["rawPath"]);
            return (500, json!({"errorType": "HelloError", "errorMessage": "asked to fail"}));
        }
        let path = event["rawPath"].as_str().unwrap_or("/");
        let method = event["requestContext"]["http"]["method"].as_str().unwrap_or("?");
        println!("{method} {path} {payload}");
        let answer =
            json!({"message": format!("hello from Switchyard's example function"), "path": path, "received": payload});
        return (
            200,
            json!({"statusCode": 200, "headers": {"content-type": "application/json"}, "body": answer.to_string()}),
        );
    }
    println!("event {event}");
    (200, json!({"message": "hello", "received": event}))
}
