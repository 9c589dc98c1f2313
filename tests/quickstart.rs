//! The README's first command: config/quickstart.yaml runs as written, starts
//! the example function itself, and answers the README's curl lines.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Switchyard, client, eventually};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_serves_the_readme_examples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let state = dir.path().join("state").display().to_string();
    let sy = Switchyard::spawn(
        root,
        &root.join("config/quickstart.yaml"),
        &[("SWITCHYARD_LISTEN", "127.0.0.1:0"), ("SWITCHYARD_STATE_DIR", &state), ("HELLO_PORT", &port)],
    );
    let http = client();

    let response = http.post(sy.url("/hooks/hello")).body(r#"{"name":"ada"}"#).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["received"], json!({"name": "ada"}));
    assert_eq!(body["path"], "/hooks/hello");

    let response = http.post(sy.url("/hooks/orders")).body(r#"{"order":1}"#).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let request_id = response.json::<Value>().await.unwrap()["requestId"].as_str().unwrap().to_string();

    let response = http.post(sy.url("/hooks/orders")).body(r#"{"order":2,"fail":true}"#).send().await.unwrap();
    assert_eq!(response.status(), 202);

    // The failing order ends in the dead-letter store after its retries.
    let entry = eventually(Duration::from_secs(30), "the failing order in the DLQ", async || {
        let list: Value = http.get(sy.url("/v1/dlq")).send().await.ok()?.json().await.ok()?;
        list["deadLetters"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(entry["errorType"], "HelloError");
    assert_eq!(entry["attempts"], 3);

    // The good order and a schedule tick were invoked successfully; the log
    // shows each invocation with mapping, function, duration and outcome.
    let logs = eventually(Duration::from_secs(15), "a tick invocation", async || {
        let logs = sy.logs();
        logs.iter().any(|l| l["message"] == "invoked" && l["mapping"] == "tick").then_some(logs)
    })
    .await;
    assert!(logs.iter().any(|l| l["message"] == "invoked"
        && l["request_id"] == request_id.as_str()
        && l["outcome"] == "success"
        && l["function"] == "hello"
        && l["duration_ms"].is_string()));
}
