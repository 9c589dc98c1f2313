//! The Runtime API's contract, probed by a stdlib-only Python runtime
//! (tests/fixtures/protocol_runtime.py): headers of `next`, status codes and
//! error bodies of the posts, as Lambda answers them.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::json;
use switchyard_lambda_host::LambdaSpec;

fn python3() -> Option<String> {
    let found = std::process::Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success());
    require(found.then(|| "python3".to_string()), "python3", "apt-get install python3")
}

#[tokio::test]
async fn the_runtime_api_answers_as_lambdas_does() {
    let Some(python) = python3() else { return };
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut spec = LambdaSpec::new("probe", vec![python, "protocol_runtime.py".into()]);
    spec.dir = fixture;
    spec.timeout = Duration::from_secs(5);
    let host = host(spec);

    let mut request = request(json!({"hello": "world"}));
    request.trace_id = Some("Root=1-abc;Sampled=0".into());
    request.client_context = Some(r#"{"custom":{"a":"b"}}"#.into());
    let id = request.request_id.clone();
    let before_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
    let response = host.invoke(request).await.expect("invoke");
    assert_eq!(response.function_error, None, "{}", String::from_utf8_lossy(&response.payload));
    let seen = json(&response);

    assert_eq!(seen["next_status"], 200);
    assert_eq!(seen["event"], json!({"hello": "world"}));
    let headers = &seen["headers"];
    assert_eq!(headers["lambda-runtime-aws-request-id"], id.as_str());
    assert_eq!(headers["lambda-runtime-invoked-function-arn"], "arn:aws:lambda:us-east-1:000000000000:function:probe");
    assert_eq!(headers["lambda-runtime-trace-id"], "Root=1-abc;Sampled=0");
    assert_eq!(headers["lambda-runtime-client-context"], r#"{"custom":{"a":"b"}}"#);
    assert_eq!(headers["content-type"], "application/json");
    let deadline: u128 =
        headers["lambda-runtime-deadline-ms"].as_str().and_then(|d| d.parse().ok()).expect("deadline ms");
    assert!(
        deadline >= before_ms + 4_000 && deadline <= before_ms + 6_000,
        "now + 5 s timeout: {deadline} vs {before_ms}"
    );

    assert_eq!(seen["wrong_id"], json!([400, {"errorMessage": "Invalid request ID", "errorType": "InvalidRequestID"}]));
    assert_eq!(seen["late_init_error"][0], 403);
    assert_eq!(seen["late_init_error"][1]["errorType"], "InvalidStateTransition");
    assert_eq!(seen["unknown_path"], 404);

    // The runtime reports its posts of the first invocation with the second.
    let second = invoke(&host, json!({})).await;
    let previous = &json(&second)["previous"];
    assert_eq!(previous["post"], json!([202, {"status": "OK"}]));
    assert_eq!(previous["second_post"][0], 400, "an invocation is answered once: {previous}");
    assert_eq!(previous["second_post"][1]["errorType"], "InvalidRequestID");
    assert!(json(&second)["headers"].get("lambda-runtime-trace-id").is_none(), "no trace header without a trace id");
    assert_eq!(second.instance_id, response.instance_id);
    host.shutdown().await;
}
