//! Lambda functions (`lambda:` kind) through every invocation path: the Invoke
//! API (RequestResponse with a log tail, and Event), sync and async webhooks,
//! schedules and a polled mapping, with the real awslambdaric runtime from
//! PyPI (installed by scripts/test into the venv SWITCHYARD_TEST_PYTHON names).

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{FunctionServer, Switchyard, client, eventually};
use serde_json::{Value, json};

/// The venv python with awslambdaric; without it the test fails, naming the fix.
fn python() -> String {
    let python = std::env::var("SWITCHYARD_TEST_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-venv/bin/python").to_string());
    let ok = std::process::Command::new(&python)
        .args(["-c", "import awslambdaric"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "{python} cannot import awslambdaric: run scripts/test, which installs it");
    python
}

/// A config with the python-hello example as Lambda function `hello`.
fn config(timeout: &str, function_extra: &str, mappings: &str) -> String {
    format!(
        r#"server: {{ listen: 127.0.0.1:0, shutdown_grace: 10s }}
state: {{ dir: STATE_DIR }}
functions:
  hello:
    lambda:
      command: ["{python}", -m, awslambdaric]
      handler: app.handler
      dir: {dir}
      memory: 256MB
      timeout: {timeout}
      env: {{ LOG_LEVEL: debug }}
    concurrency: 2
{function_extra}mappings:
{mappings}"#,
        python = python(),
        dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/functions/python-hello"),
    )
}

async fn invoke(sy: &Switchyard, event: Value, tail: bool) -> reqwest::Response {
    let mut request = client().post(sy.url("/2015-03-31/functions/hello/invocations")).json(&event);
    if tail {
        request = request.header("x-amz-log-type", "Tail");
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invoke_api_runs_a_python_handler_with_lambdas_answers() {
    let sy = Switchyard::start(&config("2s", "", "  []\n"));

    let ok = invoke(&sy, json!({"action": "echo", "n": 1}), true).await;
    assert_eq!(ok.status(), 200);
    assert!(ok.headers().get("x-amz-function-error").is_none());
    let tail = BASE64.decode(ok.headers()["x-amz-log-result"].as_bytes()).unwrap();
    let tail = String::from_utf8(tail).unwrap();
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["event"], json!({"action": "echo", "n": 1}));
    assert!(body["function_arn"].as_str().unwrap().ends_with(":function:hello"), "{body}");
    let request_id = body["request_id"].as_str().unwrap();
    assert!(tail.contains(&format!("START RequestId: {request_id}")), "{tail}");
    assert!(tail.contains(&format!("REPORT RequestId: {request_id}")) && tail.contains("Init Duration"), "{tail}");

    // Warm: the same instance, no init.
    let again: Value = invoke(&sy, json!({"action": "echo"}), false).await.json().await.unwrap();
    assert_eq!(again["pid"], body["pid"], "a warm instance is reused");

    let failed = invoke(&sy, json!({"action": "raise", "message": "no stock"}), false).await;
    assert_eq!(failed.status(), 200, "a function error is a 200 with X-Amz-Function-Error");
    assert_eq!(failed.headers()["x-amz-function-error"], "Unhandled");
    let error: Value = failed.json().await.unwrap();
    assert_eq!((error["errorType"].as_str(), error["errorMessage"].as_str()), (Some("ValueError"), Some("no stock")));
    assert!(error["stackTrace"].is_array(), "the runtime's own error body: {error}");

    let slow = invoke(&sy, json!({"action": "sleep", "seconds": 5}), false).await;
    assert_eq!(slow.headers()["x-amz-function-error"], "Unhandled");
    let error: Value = slow.json().await.unwrap();
    assert_eq!(error["errorType"], "Sandbox.Timedout");
    assert!(error["errorMessage"].as_str().unwrap().contains("Task timed out after 2.00 seconds"), "{error}");

    // Client context reaches the handler, decoded.
    let context = BASE64.encode(r#"{"custom": {"tenant": "acme"}}"#);
    let answer: Value = client()
        .post(sy.url("/2015-03-31/functions/hello/invocations"))
        .header("x-amz-client-context", context)
        .json(&json!({"action": "context"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["client_custom"], json!({"tenant": "acme"}), "{answer}");
    // Pretty-printed: its line breaks cannot travel in the runtime's header
    // as they came; the handler gets the same object.
    let pretty = BASE64.encode("{\n  \"custom\": {\n    \"tenant\": \"globex\"\n  }\n}");
    let answer = client()
        .post(sy.url("/2015-03-31/functions/hello/invocations"))
        .header("x-amz-client-context", pretty)
        .json(&json!({"action": "context"}))
        .send()
        .await
        .unwrap();
    assert!(answer.headers().get("x-amz-function-error").is_none(), "{:?}", answer.headers());
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["client_custom"], json!({"tenant": "globex"}), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_schedules_and_async_invokes_reach_a_lambda_function() {
    let destination = FunctionServer::echo().await;
    let on_success = format!("    async: {{ on_success: {{ http: {{ url: {} }} }} }}\n", destination.url());
    let mappings = "  - name: hook\n    function: hello\n    source: { webhook: { path: /hook } }\n  - name: queued\n    function: hello\n    source: { webhook: { path: /queued, mode: async } }\n    format: raw\n  - name: tick\n    function: hello\n    source: { schedule: { expression: rate(1 second), input: { action: upper, text: tick } } }\n";
    let sy = Switchyard::start(&config("5s", &on_success, mappings));

    // Sync webhook: the handler's dict becomes a 200 JSON answer (API Gateway's rule).
    let answer = client().post(sy.url("/hook?x=1")).body("hello").send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["event"]["rawPath"], "/hook");
    assert_eq!(body["event"]["body"], "hello");

    // Async webhook and the schedule: their results reach on_success.
    let accepted =
        client().post(sy.url("/queued")).json(&json!({"action": "upper", "text": "queued"})).send().await.unwrap();
    assert_eq!(accepted.status(), 202);
    let texts = eventually(Duration::from_secs(30), "results of the async webhook and the schedule", async || {
        let texts: Vec<String> = destination
            .received()
            .iter()
            .filter_map(|r| r.body["responsePayload"]["text"].as_str().map(str::to_string))
            .collect();
        (texts.contains(&"QUEUED".to_string()) && texts.contains(&"TICK".to_string())).then_some(texts)
    })
    .await;
    assert!(texts.len() >= 2);
    let record = destination.received()[0].body.clone();
    assert_eq!(record["requestContext"]["condition"], "Success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_stop_with_switchyard() {
    let mut sy = Switchyard::start(&config("2s", "", "  []\n"));
    let body: Value = invoke(&sy, json!({"action": "echo"}), false).await.json().await.unwrap();
    let pid = body["pid"].as_i64().unwrap() as libc::pid_t;
    // SAFETY: signal 0 only checks that the process exists.
    assert_eq!(unsafe { libc::kill(pid, 0) }, 0, "the instance runs");
    sy.stop();
    eventually(Duration::from_secs(10), "the instance to be gone", async || {
        // SAFETY: as above.
        (unsafe { libc::kill(pid, 0) } != 0).then_some(())
    })
    .await;
}

#[cfg(feature = "rabbitmq")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polled_mapping_batches_into_a_lambda_handler_that_reports_partial_failures() {
    use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
    use lapin::types::{FieldTable, ShortString};
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    let short = |s: &str| ShortString::try_new(s).unwrap();

    // A plain Lambda handler for Amazon MQ events, written to a temp dir.
    let code = tempfile::tempdir().unwrap();
    std::fs::write(
        code.path().join("batch.py"),
        r#"import base64

def handler(event, context):
    failures = []
    for messages in event["rmqMessagesByQueue"].values():
        for m in messages:
            if base64.b64decode(m["data"]) == b"poison":
                failures.append({"itemIdentifier": m["basicProperties"]["messageId"]})
    return {"batchItemFailures": failures}
"#,
    )
    .unwrap();

    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string());
    let connection = Connection::connect(&url, ConnectionProperties::default()).await.unwrap_or_else(|e| {
        panic!("RabbitMQ at {url} is not reachable ({e}); it runs on every machine of this project")
    });
    let ch = connection.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let queue = format!("lambda-batch-{}", uuid::Uuid::new_v4().simple());
    ch.queue_declare(short(&queue), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    for i in 0..12 {
        let body = if i == 5 { "poison".to_string() } else { format!("m{i}") };
        let properties = BasicProperties::default().with_message_id(short(&format!("id-{i}")));
        ch.basic_publish(short(""), short(&queue), BasicPublishOptions::default(), body.as_bytes(), properties)
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let text = format!(
        r#"server: {{ listen: 127.0.0.1:0 }}
state: {{ dir: STATE_DIR }}
functions:
  batch:
    lambda: {{ command: ["{python}", -m, awslambdaric], handler: batch.handler, dir: {dir}, timeout: 10s }}
    concurrency: 1
mappings:
  - name: work
    function: batch
    source: {{ rabbitmq: {{ url: "{url}", queue: {queue} }} }}
    batch: {{ size: 12, window: 500ms }}
    report_batch_item_failures: true
    retry: {{ max_attempts: 1, backoff: {{ initial: 50ms, max: 100ms }} }}
    on_failure: {{ dlq: {{}} }}
"#,
        python = python(),
        dir = code.path().display(),
    );
    let mut sy = Switchyard::start(&text);
    let entry = eventually(Duration::from_secs(60), "the poison message in the dead-letter store", async || {
        let out = sy.cli(&["dlq", "list", "--json"]);
        let list: Value = serde_json::from_slice(&out.stdout).ok()?;
        list.as_array()?.first().cloned()
    })
    .await;
    assert_eq!(entry["condition"], "RetryAttemptsExhausted");
    let failed: Vec<Value> = entry["payload"]["rmqMessagesByQueue"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|l| l.as_array().unwrap().clone())
        .collect();
    assert_eq!(failed.len(), 1, "only the record the handler named failed: {entry}");
    assert_eq!(failed[0]["basicProperties"]["messageId"], "id-5");
    // The other eleven were acknowledged after their batch succeeded (a
    // graceful stop: a SIGKILL between a batch's end and its ack would
    // rightly leave it to be delivered again).
    sy.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(ch.basic_get(short(&queue), BasicGetOptions::default()).await.unwrap().is_none(), "nothing left unacked");
    let _ = ch.queue_delete(short(&queue), Default::default()).await;
}

/// A caller that hangs up does not free the function's slot while its
/// invocation still runs (the host runs it to its end, as Lambda does): the
/// next caller waits for the slot within `max_wait` and is throttled after
/// it, instead of waiting behind the host for as long as the invocation
/// takes; the slot is free again once the invocation ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_hangs_up_keeps_the_slot_until_its_invocation_ends() {
    let text = config("10s", "", "  []\n").replace("    concurrency: 2\n", "    concurrency: 1\n    max_wait: 200ms\n");
    let sy = Switchyard::start(&text);
    let url = sy.url("/2015-03-31/functions/hello/invocations");
    let hung = client()
        .post(&url)
        .timeout(Duration::from_millis(500))
        .json(&json!({"action": "sleep", "seconds": 3}))
        .send()
        .await;
    assert!(hung.is_err_and(|e| e.is_timeout()), "the first caller hangs up before its answer");

    let next = invoke(&sy, json!({"action": "upper", "text": "x"}), false).await;
    assert_eq!(next.status(), 429, "the slot is still taken: throttled after max_wait");
    assert!(sy.metrics().await.contains(r#"switchyard_function_in_flight{function="hello"} 1"#));

    let answer = eventually(Duration::from_secs(15), "the slot to be free again", async || {
        let r = invoke(&sy, json!({"action": "upper", "text": "x"}), false).await;
        if r.status() == 200 { r.json::<Value>().await.ok() } else { None }
    })
    .await;
    assert!(answer.to_string().contains('X'), "{answer}");
    let metrics = sy.metrics().await;
    assert!(metrics.contains(r#"switchyard_function_in_flight{function="hello"} 0"#), "{metrics}");
}
