//! A Rust function on the `lambda_runtime` crate (examples/functions/rust-hello),
//! built by the test, run unchanged as the instance's bootstrap.

mod common;

use common::*;
use serde_json::json;
use switchyard_lambda_host::LambdaSpec;

#[tokio::test]
async fn a_lambda_runtime_binary_serves_invocations() {
    let binary = rust_hello();
    let mut spec = LambdaSpec::new("rust-hello", vec![binary.display().to_string()]);
    spec.dir = example("rust-hello");
    let host = host(spec);

    let first = invoke(&host, json!({"name": "Switchyard"})).await;
    assert_eq!(first.function_error, None, "{}", String::from_utf8_lossy(&first.payload));
    let body = json(&first);
    assert_eq!(body["message"], "Hello, Switchyard!");
    assert_eq!(body["function_arn"], "arn:aws:lambda:us-east-1:000000000000:function:rust-hello");
    assert!(first.init_duration.is_some());
    assert_platform_lines(&first, body["request_id"].as_str());

    let second = invoke(&host, json!({"name": "again"})).await;
    assert_eq!(json(&second)["pid"], body["pid"], "warm reuse");
    assert_eq!(second.init_duration, None);

    let failed = invoke(&host, json!({"fail": true})).await;
    assert_eq!(failed.function_error.as_deref(), Some("Unhandled"));
    let error = json(&failed);
    assert_eq!(error["errorMessage"], "asked to fail");
    assert!(error["errorType"].is_string(), "{error}");
    assert_eq!(failed.error_type.as_deref(), error["errorType"].as_str());

    let after = invoke(&host, json!({})).await;
    assert_eq!(json(&after)["message"], "Hello, world!");
    assert_eq!(after.instance_id, first.instance_id);
    host.shutdown().await;
}
