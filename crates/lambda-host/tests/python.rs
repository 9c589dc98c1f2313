//! The Python runtime interface client (awslambdaric, from PyPI) against the
//! host: every path an invocation can take, with a real runtime.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use switchyard_lambda_host::{HostError, LambdaHost, LambdaSpec, Request, error_type};

fn hello(python: &std::path::Path) -> LambdaSpec {
    python_spec(python, "hello", "python-hello", "app.handler")
}

#[tokio::test]
async fn cold_start_then_warm_reuse() {
    let Some(python) = python() else { return };
    let host = host(hello(&python));

    let first = invoke(&host, json!({"action": "echo", "n": 1})).await;
    assert_eq!(first.function_error, None, "{}", String::from_utf8_lossy(&first.payload));
    let body = json(&first);
    assert_eq!(body["event"]["n"], 1);
    assert!(first.init_duration.is_some(), "a cold start reports its init");
    assert!(
        first.log_tail.contains("python-hello: init"),
        "init output is in the cold start's tail: {:?}",
        first.log_tail
    );
    assert!(body["log_stream"].as_str().is_some_and(|s| s.ends_with(&format!("[$LATEST]{}", first.instance_id))));
    assert_eq!(body["function_arn"], "arn:aws:lambda:us-east-1:000000000000:function:hello");
    assert_platform_lines(&first, body["request_id"].as_str());

    let second = invoke(&host, json!({"action": "echo", "n": 2})).await;
    let body2 = json(&second);
    assert_eq!(body2["event"]["n"], 2);
    assert_eq!(body2["pid"], body["pid"], "the warm instance serves again");
    assert_eq!(second.instance_id, first.instance_id);
    assert_eq!(second.init_duration, None, "no init on a warm start");
    assert!(!second.log_tail.contains("python-hello: init"));
    assert_platform_lines(&second, body2["request_id"].as_str());
    assert_eq!(host.stats().started, 1);
    assert!(first.max_memory_used_mb.is_some_and(|mb| mb > 0), "{:?}", first.max_memory_used_mb);
    host.shutdown().await;
}

#[tokio::test]
async fn stdout_lines_land_in_the_log_tail_between_start_and_end() {
    let Some(python) = python() else { return };
    let host = host(hello(&python));
    let response = invoke(&host, json!({"action": "print", "lines": ["alpha", "beta ünïcode"]})).await;
    let tail = &response.log_tail;
    let start = tail.find("START RequestId").expect("START");
    let alpha = tail.find("alpha\n").expect("alpha captured");
    let beta = tail.find("beta ünïcode\n").expect("beta captured");
    let end = tail.find("END RequestId").expect("END");
    assert!(start < alpha && alpha < beta && beta < end, "{tail:?}");

    // The tail keeps the last 4 KB only, ending with the REPORT line.
    let many: Vec<String> = (0..400).map(|i| format!("line {i:04} {}", "-".repeat(20))).collect();
    let response = invoke(&host, json!({"action": "print", "lines": many})).await;
    assert!(response.log_tail.len() <= 4096, "{}", response.log_tail.len());
    assert!(response.log_tail.contains("line 0399"));
    assert!(!response.log_tail.contains("line 0000"));
    assert!(response.log_tail.trim_end().rsplit('\n').next().is_some_and(|l| l.starts_with("REPORT RequestId: ")));
    host.shutdown().await;
}

#[tokio::test]
async fn the_handler_sees_lambdas_environment() {
    let Some(python) = python() else { return };
    let mut spec = hello(&python);
    spec.env.insert("LOG_LEVEL".into(), "info".into());
    spec.memory_mb = 256;
    spec.region = "eu-west-1".into();
    let host = host(spec.clone());
    let response = invoke(&host, json!({"action": "env"})).await;
    let body = json(&response);
    let env = &body["env"];
    let dir = spec.dir.canonicalize().expect("example dir");
    let api = env["AWS_LAMBDA_RUNTIME_API"].as_str().expect("runtime API set");
    assert!(
        api.starts_with("127.0.0.1:") && api["127.0.0.1:".len()..].parse::<u16>().is_ok(),
        "host:port without scheme: {api}"
    );
    assert_eq!(env["_HANDLER"], "app.handler");
    assert_eq!(env["LAMBDA_TASK_ROOT"], dir.display().to_string());
    assert_eq!(body["cwd"], dir.display().to_string());
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "hello");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], "$LATEST");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
    assert_eq!(env["AWS_LAMBDA_LOG_GROUP_NAME"], "/aws/lambda/hello");
    let stream = env["AWS_LAMBDA_LOG_STREAM_NAME"].as_str().expect("log stream");
    let (date, instance) = stream.split_once("/[$LATEST]").expect("date/[$LATEST]id");
    assert_eq!(date.len(), 10, "{stream}");
    assert_eq!(date, chrono_free_date(), "{stream}");
    assert_eq!(instance, response.instance_id);
    assert_eq!(env["AWS_REGION"], "eu-west-1");
    assert_eq!(env["AWS_DEFAULT_REGION"], "eu-west-1");
    assert_eq!(env["AWS_EXECUTION_ENV"], switchyard_lambda_host::EXECUTION_ENV);
    assert_eq!(env["AWS_LAMBDA_INITIALIZATION_TYPE"], "on-demand");
    assert_eq!(env["TZ"], "UTC");
    assert_eq!(env["LOG_LEVEL"], "info");
    assert_eq!(env["PATH"].as_str(), std::env::var("PATH").ok().as_deref());
    assert!(env["LAMBDA_RUNTIME_DIR"].as_str().is_some_and(|d| !d.is_empty()));
    assert_eq!(env["HOME"], serde_json::Value::Null, "Switchyard's own environment stays out");
    assert_eq!(body["argv"].as_array().and_then(|a| a.last()).and_then(|v| v.as_str()), Some("app.handler"));
    let tmp = env["TMPDIR"].as_str().expect("TMPDIR").to_string();
    assert_eq!(body["tmp_writable"], true);
    assert!(std::path::Path::new(&tmp).is_dir());
    host.shutdown().await;
    assert!(!std::path::Path::new(&tmp).exists(), "the instance's TMPDIR goes with it");
}

/// Today's date in UTC as the log stream shows it, from the system clock.
fn chrono_free_date() -> String {
    let out = std::process::Command::new("date").args(["-u", "+%Y/%m/%d"]).output().expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn trace_id_client_context_and_deadline_reach_the_handler() {
    let Some(python) = python() else { return };
    let host = host(hello(&python));
    let mut request = request(json!({"action": "context"}));
    request.trace_id = Some("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1".into());
    request.client_context = Some(r#"{"custom":{"tenant":"t1"},"client":{},"env":{}}"#.into());
    let response = host.invoke(request).await.expect("invoke");
    let body = json(&response);
    assert_eq!(body["trace_id"], "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1");
    assert_eq!(body["client_custom"]["tenant"], "t1");
    let remaining = body["remaining_ms"].as_i64().expect("remaining");
    assert!(remaining > 8_000 && remaining <= 10_000, "deadline = timeout from delivery: {remaining}");
    assert_eq!(body["memory_limit_in_mb"], "128");
    host.shutdown().await;
}

#[tokio::test]
async fn a_handler_error_is_unhandled_with_the_runtimes_body_and_keeps_the_instance() {
    let Some(python) = python() else { return };
    let host = host(hello(&python));
    let failed = invoke(&host, json!({"action": "raise", "message": "boom"})).await;
    assert_eq!(failed.function_error.as_deref(), Some("Unhandled"));
    assert_eq!(failed.error_type.as_deref(), Some("ValueError"));
    let body = json(&failed);
    assert_eq!(body["errorMessage"], "boom");
    assert_eq!(body["errorType"], "ValueError");
    assert!(body["stackTrace"].as_array().is_some_and(|t| !t.is_empty()), "{body}");
    assert_eq!(failed.error_message().as_deref(), Some("boom"));
    assert_platform_lines(&failed, None);

    let next = invoke(&host, json!({"action": "echo"})).await;
    assert_eq!(next.function_error, None);
    assert_eq!(next.instance_id, failed.instance_id, "a handler error leaves the instance warm");
    host.shutdown().await;
}

#[tokio::test]
async fn a_timeout_kills_the_instance_and_the_next_invoke_cold_starts() {
    let Some(python) = python() else { return };
    let mut spec = hello(&python);
    spec.timeout = Duration::from_secs(1);
    let host = host(spec);
    let warm = invoke(&host, json!({"action": "sleep", "seconds": 0})).await;
    let pid = json(&warm)["pid"].as_u64().expect("pid");

    let request = request(json!({"action": "sleep", "seconds": 30}));
    let id = request.request_id.clone();
    let started = Instant::now();
    let timed_out = host.invoke(request).await.expect("invoke");
    assert!(started.elapsed() < Duration::from_secs(5), "answered at the timeout: {:?}", started.elapsed());
    assert_eq!(timed_out.function_error.as_deref(), Some("Unhandled"));
    assert_eq!(timed_out.error_type.as_deref(), Some(error_type::TIMEOUT));
    let body = json(&timed_out);
    assert_eq!(body["errorType"], "Sandbox.Timedout");
    assert_eq!(body["errorMessage"], format!("RequestId: {id} Error: Task timed out after 1.00 seconds"));
    assert_eq!(timed_out.duration, Duration::from_secs(1));
    assert!(timed_out.log_tail.contains(&format!("{id} Task timed out after 1.00 seconds")), "{}", timed_out.log_tail);
    assert_platform_lines(&timed_out, Some(&id));
    assert!(eventually(Duration::from_secs(3), || !process_alive(pid)).await, "the timed-out runtime was killed");

    let after = invoke(&host, json!({"action": "echo"})).await;
    assert_eq!(after.function_error, None);
    assert!(after.init_duration.is_some(), "the next invoke is a cold start");
    assert_ne!(after.instance_id, warm.instance_id);
    host.shutdown().await;
}

#[tokio::test]
async fn a_crash_mid_invocation_is_a_runtime_exit_error() {
    let Some(python) = python() else { return };
    let host = host(hello(&python));
    let request = request(json!({"action": "exit", "code": 3}));
    let id = request.request_id.clone();
    let crashed = host.invoke(request).await.expect("invoke");
    assert_eq!(crashed.function_error.as_deref(), Some("Unhandled"));
    assert_eq!(crashed.error_type.as_deref(), Some(error_type::EXIT));
    let body = json(&crashed);
    assert_eq!(body["errorType"], "Runtime.ExitError");
    assert_eq!(body["errorMessage"], format!("RequestId: {id} Error: Runtime exited with error: exit status 3"));
    assert!(crashed.log_tail.contains("Runtime.ExitError"), "{}", crashed.log_tail);
    assert_platform_lines(&crashed, Some(&id));
    assert_eq!(host.stats().instances, 0, "a crashed instance is not kept");

    let after = invoke(&host, json!({"action": "echo"})).await;
    assert_eq!(after.function_error, None);
    assert!(after.init_duration.is_some());
    host.shutdown().await;
}

#[tokio::test]
async fn init_errors_are_reported_as_lambda_reports_them() {
    let Some(python) = python() else { return };
    // The runtime posts /runtime/init/error: the handler's module is missing.
    let host = host(python_spec(&python, "broken", "python-hello", "no_such_module.handler"));
    let failed = invoke(&host, json!({})).await;
    assert_eq!(failed.function_error.as_deref(), Some("Unhandled"));
    assert_eq!(failed.error_type.as_deref(), Some("Runtime.ImportModuleError"));
    let body = json(&failed);
    assert_eq!(body["errorType"], "Runtime.ImportModuleError");
    assert!(body["errorMessage"].as_str().is_some_and(|m| m.contains("no_such_module")), "{body}");
    assert_platform_lines(&failed, None);
    assert_eq!(host.stats().instances, 0);
    host.shutdown().await;

    // The runtime exits before ever asking for an invocation.
    let mut spec =
        LambdaSpec::new("exits", vec![python.display().to_string(), "-c".into(), "import sys; sys.exit(2)".into()]);
    spec.dir = example("python-hello");
    let host = common::host(spec);
    let request = request(json!({}));
    let id = request.request_id.clone();
    let failed = host.invoke(request).await.expect("invoke");
    assert_eq!(failed.error_type.as_deref(), Some(error_type::EXIT));
    assert_eq!(
        json(&failed)["errorMessage"],
        format!("RequestId: {id} Error: Runtime exited with error: exit status 2")
    );
    // And one that exits cleanly, which Lambda words differently.
    let mut spec = host.spec().clone();
    spec.command = vec![python.display().to_string(), "-c".into(), "pass".into()];
    let host = common::host(spec);
    let failed = invoke(&host, json!({})).await;
    assert_eq!(failed.error_type.as_deref(), Some(error_type::EXIT));
    assert!(failed.error_message().is_some_and(|m| m.ends_with("Error: Runtime exited without providing a reason")));
}

#[tokio::test]
async fn a_response_over_6_mb_fails_the_invocation() {
    let Some(python) = python() else { return };
    let host = host(hello(&python));
    let failed = invoke(&host, json!({"action": "big", "bytes": 7 * 1024 * 1024})).await;
    assert_eq!(failed.function_error.as_deref(), Some("Unhandled"));
    assert_eq!(failed.error_type.as_deref(), Some(error_type::RESPONSE_TOO_LARGE));
    let message = failed.error_message().expect("message");
    assert!(message.contains("exceeded maximum allowed payload size (6291556 bytes)"), "{message}");
    assert!(message.contains(&format!("({} bytes)", 7 * 1024 * 1024 + 2)), "the JSON string's size: {message}");

    // Just under the limit still goes through.
    let fits = invoke(&host, json!({"action": "big", "bytes": 6 * 1024 * 1024})).await;
    assert_eq!(fits.function_error, None);
    assert_eq!(fits.payload.len(), 6 * 1024 * 1024 + 2);
    host.shutdown().await;
}

#[tokio::test]
async fn concurrent_invokes_use_at_most_concurrency_instances() {
    let Some(python) = python() else { return };
    let mut spec = hello(&python);
    spec.concurrency = 2;
    let host = host(spec);
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let host = host.clone();
        calls.spawn(async move { invoke(&host, json!({"action": "sleep", "seconds": 0.5})).await });
    }
    let mut pids = std::collections::BTreeSet::new();
    let mut peak = 0;
    while let Some(done) = calls.join_next().await {
        let response = done.expect("task");
        assert_eq!(response.function_error, None);
        pids.insert(json(&response)["pid"].as_u64().expect("pid"));
        peak = peak.max(host.stats().instances);
    }
    assert_eq!(pids.len(), 2, "two instances served six invocations: {pids:?}");
    assert!(peak <= 2);
    assert_eq!(host.stats().started, 2);
    assert!(started.elapsed() >= Duration::from_millis(1500), "three rounds of two: {:?}", started.elapsed());
    host.shutdown().await;
}

#[tokio::test]
async fn an_idle_instance_is_stopped_after_idle_timeout() {
    let Some(python) = python() else { return };
    let mut spec = hello(&python);
    spec.idle_timeout = Duration::from_secs(1);
    let host = host(spec);
    let first = invoke(&host, json!({"action": "echo"})).await;
    let pid = json(&first)["pid"].as_u64().expect("pid");
    assert_eq!(host.stats().idle, 1);
    assert!(eventually(Duration::from_secs(5), || host.stats().instances == 0).await, "{:?}", host.stats());
    assert!(eventually(Duration::from_secs(5), || !process_alive(pid)).await, "the idle runtime was stopped");
    let again = invoke(&host, json!({"action": "echo"})).await;
    assert!(again.init_duration.is_some(), "a cold start after the idle stop");
    host.shutdown().await;
}

#[tokio::test]
async fn running_out_of_memory_is_reported_as_lambda_does() {
    let Some(python) = python() else { return };
    let mut spec = hello(&python);
    spec.memory_mb = 128;
    let host = host(spec);
    let request = request(json!({"action": "alloc", "mb": 400}));
    let id = request.request_id.clone();
    let response = host.invoke(request).await.expect("invoke");
    assert_eq!(response.function_error.as_deref(), Some("Unhandled"));
    let enforcement = switchyard_lambda_host::memory_enforcement();
    eprintln!("memory enforced by {enforcement}");
    if enforcement.starts_with("cgroup") {
        assert_eq!(response.error_type.as_deref(), Some(error_type::OUT_OF_MEMORY), "{}", response.log_tail);
        assert_eq!(
            response.error_message().as_deref(),
            Some(format!("RequestId: {id} Error: Runtime exited with error: signal: killed").as_str())
        );
        assert!(
            response.max_memory_used_mb.is_some_and(|mb| (120..=128).contains(&mb)),
            "{:?}",
            response.max_memory_used_mb
        );
        assert!(response.log_tail.contains("Max Memory Used: 12"), "{}", response.log_tail);
    } else {
        // Under RLIMIT_DATA the allocation fails inside Python instead.
        assert_eq!(response.error_type.as_deref(), Some("MemoryError"), "{enforcement}: {}", response.log_tail);
    }
    // A fresh instance serves the next one.
    let next = invoke(&host, json!({"action": "alloc", "mb": 10})).await;
    assert_eq!(next.function_error, None, "{}", String::from_utf8_lossy(&next.payload));
    host.shutdown().await;
}

#[tokio::test]
async fn powertools_batch_processor_reports_only_the_failed_record() {
    let Some(python) = python() else { return };
    let host = host(python_spec(&python, "batch", "python-batch", "app.handler"));
    let record = |id: &str, body: &str| {
        json!({
            "messageId": id,
            "receiptHandle": format!("handle-{id}"),
            "body": body,
            "attributes": {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": "1545082649183",
                "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                "ApproximateFirstReceiveTimestamp": "1545082649185"
            },
            "messageAttributes": {},
            "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:queue",
            "awsRegion": "us-east-1"
        })
    };
    let event = json!({"Records": [
        record("m-1", r#"{"n": 1}"#),
        record("m-2", r#"{"fail": true}"#),
        record("m-3", r#"{"n": 3}"#),
    ]});
    let response = invoke(&host, event).await;
    assert_eq!(response.function_error, None, "{}", String::from_utf8_lossy(&response.payload));
    assert_eq!(json(&response), json!({"batchItemFailures": [{"itemIdentifier": "m-2"}]}));
    host.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_instances_and_refuses_invocations() {
    let Some(python) = python() else { return };
    let host = host(hello(&python));
    let pid = json(&invoke(&host, json!({"action": "echo"})).await)["pid"].as_u64().expect("pid");
    let busy = {
        let host = host.clone();
        tokio::spawn(async move { host.invoke(request(json!({"action": "sleep", "seconds": 30}))).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    host.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(4), "python stops on SIGTERM: {:?}", started.elapsed());
    assert!(!process_alive(pid));
    assert!(matches!(busy.await.expect("task"), Err(HostError::ShutDown(_))));
    let refused = host.invoke(request(json!({}))).await;
    assert!(matches!(&refused, Err(e) if e.error_type() == "shut_down"), "{refused:?}");
}

#[tokio::test]
async fn the_shutdown_token_stops_instances_too() {
    let Some(python) = python() else { return };
    let token = tokio_util::sync::CancellationToken::new();
    let host = LambdaHost::new(hello(&python), token.clone());
    let pid = json(&invoke(&host, json!({"action": "echo"})).await)["pid"].as_u64().expect("pid");
    token.cancel();
    assert!(eventually(Duration::from_secs(6), || !process_alive(pid)).await);
    assert!(eventually(Duration::from_secs(1), || host.stats().instances == 0).await);
}

#[tokio::test]
async fn requests_and_commands_the_host_cannot_serve_are_host_errors() {
    let Some(python) = python() else { return };
    let host = host(hello(&python));
    let mut bad = request(json!({}));
    bad.request_id = "../../etc".into();
    assert!(matches!(host.invoke(bad).await, Err(HostError::InvalidRequest(_))));
    let mut bad = request(json!({}));
    bad.trace_id = Some("line\nbreak".into());
    assert!(matches!(host.invoke(bad).await, Err(HostError::InvalidRequest(_))));

    let missing = common::host(LambdaSpec::new("missing", vec!["/nonexistent/runtime".into()]));
    let error = missing.invoke(request(json!({}))).await.expect_err("cannot spawn");
    assert_eq!(error.error_type(), "start_failed", "{error}");
    let mut spec = hello(&python);
    spec.dir = "/nonexistent/dir".into();
    let error = common::host(spec).invoke(request(json!({}))).await.expect_err("no dir");
    assert_eq!(error.error_type(), "start_failed", "{error}");
    let empty = common::host(LambdaSpec::new("empty", vec![]));
    assert!(matches!(empty.invoke(request(json!({}))).await, Err(HostError::Start { .. })));
    let _: Request = request(json!({}));
    host.shutdown().await;
}

#[tokio::test]
async fn a_caller_that_stops_waiting_leaves_the_instance_in_the_pool() {
    let Some(python) = python() else { return };
    let host = host(hello(&python));
    let first = invoke(&host, json!({"action": "echo"})).await;
    let abandoned = tokio::time::timeout(
        Duration::from_millis(200),
        host.invoke(request(json!({"action": "sleep", "seconds": 0.6}))),
    );
    assert!(abandoned.await.is_err(), "the caller gave up first");
    // The abandoned invocation holds the one slot until it is done, then the
    // same warm instance serves the next caller.
    let next = invoke(&host, json!({"action": "echo"})).await;
    assert_eq!(next.function_error, None);
    assert_eq!(next.instance_id, first.instance_id);
    assert_eq!(next.init_duration, None);
    assert_eq!(host.stats(), switchyard_lambda_host::HostStats { instances: 1, idle: 1, started: 1 });
    host.shutdown().await;
}
