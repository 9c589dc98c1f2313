//! The Lambda Invoke API, checked with boto3 from PyPI (tests/python/invoke_api.py).
//!
//! The test command (scripts/test) installs boto3 into a virtualenv and points
//! SWITCHYARD_TEST_PYTHON at it. Without boto3 this test fails: it never skips.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{FunctionServer, Switchyard};
use serde_json::json;

fn python() -> String {
    std::env::var("SWITCHYARD_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_invoke_conforms() {
    let echo = FunctionServer::echo().await;
    let broken = FunctionServer::start(|_, _| {
        (500, vec![], json!({"errorType": "Kaput", "errorMessage": "always broken"}).to_string())
    })
    .await;
    let config = format!(
        "server:\n  listen: 127.0.0.1:0\nstate:\n  dir: STATE_DIR\nfunctions:\n  echo:\n    http: {{ url: {} }}\n  broken:\n    http: {{ url: {} }}\n    async: {{ max_retry_attempts: 0 }}\n",
        echo.url(),
        broken.url()
    );
    let sy = Switchyard::start(&config);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/invoke_api.py");
    let endpoint = format!("http://{}", sy.addr);
    let out = tokio::task::spawn_blocking(move || Command::new(python()).arg(script).arg(endpoint).output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; run scripts/test, which installs boto3", python()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "boto3 checks failed (is boto3 installed? scripts/test installs it)\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");

    // The AWS CLI (version 1 from PyPI takes the payload as raw JSON; version 2
    // needs --cli-binary-format raw-in-base64-out for the same).
    let aws = std::path::Path::new(&python()).with_file_name("aws");
    let out_file = sy.dir.join("out.json");
    let endpoint = format!("http://{}", sy.addr);
    let out = Command::new(&aws)
        .args(["lambda", "invoke", "--endpoint-url", &endpoint, "--function-name", "echo"])
        .args(["--payload", r#"{"cli":1}"#])
        .arg(&out_file)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; run scripts/test, which installs awscli", aws.display()));
    assert!(out.status.success(), "aws lambda invoke failed: {}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    assert_eq!(answer, json!({"cli": 1}));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["StatusCode"], 200);

    // The Event invocation reached the function through the async queue.
    let got = echo.wait_for(3, Duration::from_secs(10)).await;
    assert!(got.iter().any(|r| r.body == json!({"async": true})), "{got:?}");
}
