//! A Lambda function written against the `lambda_runtime` crate, unchanged
//! from what would be deployed to AWS. Switchyard runs the binary as the
//! function's bootstrap.
//!
//! Event `{"name": "x"}` answers `{"message": "Hello, x!", ...}`; the rest
//! of the answer tells tests which instance served it.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

/// The greeting, kept apart from the Lambda plumbing so a benchmark can
/// serve the same logic over plain HTTP.
pub fn greet(event: &Value) -> Value {
    let name = event.get("name").and_then(Value::as_str).unwrap_or("world");
    json!({ "message": format!("Hello, {name}!") })
}

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, context) = event.into_parts();
    if payload.get("fail").and_then(Value::as_bool) == Some(true) {
        return Err("asked to fail".into());
    }
    let mut answer = greet(&payload);
    answer["request_id"] = json!(context.request_id);
    answer["function_arn"] = json!(context.invoked_function_arn);
    answer["pid"] = json!(std::process::id());
    Ok(answer)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
