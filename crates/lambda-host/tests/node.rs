//! The Node.js runtime interface client (aws-lambda-ric, from npm) against
//! the host, with examples/functions/node-hello.

mod common;

use common::*;
use serde_json::json;
use switchyard_lambda_host::LambdaSpec;

/// aws-lambda-ric installed in the example (`npm ci` there) and node on PATH.
fn node_ric() -> Option<std::path::PathBuf> {
    let dir = example("node-hello");
    let installed = dir.join("node_modules/aws-lambda-ric/dist/rapid-client.node").is_file();
    let node = std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    require(
        (installed && node).then_some(dir),
        "node with aws-lambda-ric in examples/functions/node-hello",
        "apt-get install cmake autoconf automake libtool g++ make && npm ci --prefix examples/functions/node-hello",
    )
}

#[tokio::test]
async fn aws_lambda_ric_serves_invocations() {
    let Some(dir) = node_ric() else { return };
    let mut spec =
        LambdaSpec::new("node-hello", vec!["node".into(), "node_modules/aws-lambda-ric/bin/index.mjs".into()]);
    spec.handler = Some("index.handler".into());
    spec.dir = dir;
    spec.timeout = std::time::Duration::from_secs(10);
    let host = host(spec);

    let first = invoke(&host, json!({"name": "Node"})).await;
    assert_eq!(first.function_error, None, "{}\n{}", String::from_utf8_lossy(&first.payload), first.log_tail);
    let body = json(&first);
    assert_eq!(body["message"], "Hello, Node!");
    assert_eq!(body["functionName"], "node-hello");
    assert_eq!(body["memoryLimitInMB"], "128");
    assert!(first.init_duration.is_some());
    assert!(first.log_tail.contains("node-hello: init"), "{}", first.log_tail);
    assert!(first.log_tail.contains("node-hello: greeting Node"), "{}", first.log_tail);
    assert_platform_lines(&first, body["requestId"].as_str());

    let failed = invoke(&host, json!({"fail": true})).await;
    assert_eq!(failed.function_error.as_deref(), Some("Unhandled"));
    assert_eq!(failed.error_type.as_deref(), Some("TypeError"));
    assert_eq!(json(&failed)["errorMessage"], "asked to fail");

    let warm = invoke(&host, json!({"name": "again"})).await;
    assert_eq!(json(&warm)["pid"], body["pid"], "warm reuse after a handler error");
    assert_eq!(warm.init_duration, None);
    host.shutdown().await;
}
