//! A custom runtime in shell and curl (examples/functions/shell-bootstrap).

mod common;

use common::*;
use serde_json::json;
use switchyard_lambda_host::LambdaSpec;

fn curl() -> Option<()> {
    let found = std::process::Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success());
    require(found.then_some(()), "curl", "apt-get install curl")
}

#[tokio::test]
async fn a_shell_bootstrap_with_curl_serves_invocations() {
    let Some(()) = curl() else { return };
    let mut spec = LambdaSpec::new("shell", vec!["./bootstrap".into()]);
    spec.dir = example("shell-bootstrap");
    spec.handler = Some("function.handler".into());
    let host = host(spec);

    let first = invoke(&host, json!({"n": 1})).await;
    assert_eq!(first.function_error, None, "{}", String::from_utf8_lossy(&first.payload));
    assert_eq!(json(&first), json!({"echo": {"n": 1}, "handler": "function.handler"}));
    assert!(first.init_duration.is_some());
    assert!(first.log_tail.contains("shell-bootstrap: init, handler function.handler"), "{}", first.log_tail);
    assert_platform_lines(&first, None);

    let failed = invoke(&host, json!({"please": "fail"})).await;
    assert_eq!(failed.function_error.as_deref(), Some("Unhandled"));
    assert_eq!(failed.error_type.as_deref(), Some("Shell.Failure"));
    assert_eq!(json(&failed)["errorMessage"], "the event asked to fail");

    let third = invoke(&host, json!({"n": 3})).await;
    assert_eq!(json(&third)["echo"]["n"], 3);
    assert_eq!(third.instance_id, first.instance_id, "one warm instance served all three");
    assert_eq!(third.init_duration, None);
    assert!(third.log_tail.contains("shell-bootstrap: got "), "{}", third.log_tail);
    host.shutdown().await;
}

/// The parent-death signal is tied to the thread that forked: an instance
/// started from a thread that then ends must live on (and stay warm).
#[test]
fn an_instance_outlives_the_thread_that_started_it() {
    let Some(()) = curl() else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let mut spec = LambdaSpec::new("shell", vec!["./bootstrap".into()]);
    spec.dir = example("shell-bootstrap");
    let host = host(spec);
    let (first_host, handle) = (host.clone(), runtime.handle().clone());
    let first = std::thread::spawn(move || handle.block_on(invoke(&first_host, json!({"n": 1}))))
        .join()
        .expect("the starting thread");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let second = runtime.block_on(invoke(&host, json!({"n": 2})));
    assert_eq!(second.function_error, None, "{}", second.log_tail);
    assert_eq!(second.instance_id, first.instance_id, "still the same warm instance");
    assert_eq!(second.init_duration, None);
    runtime.block_on(host.shutdown());
}

/// A runtime that writes to its output without end (here a background
/// `yes`) cannot hold the host: the relay reads in bounded turns, and an
/// invocation's end catches up with a bounded read, so invocations still
/// complete, with the flood in their log tails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_that_never_stops_writing_does_not_hold_invocations() {
    let Some(()) = curl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = dir.path().join("flooding-bootstrap");
    std::fs::write(
        &bootstrap,
        format!(
            "#!/bin/sh\nyes 'a line written without end' &\ncd '{}' && exec ./bootstrap\n",
            example("shell-bootstrap").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&bootstrap, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut spec = LambdaSpec::new("flood", vec![bootstrap.display().to_string()]);
    spec.dir = dir.path().to_path_buf();
    let host = host(spec);
    for n in 0..3 {
        let answer = tokio::time::timeout(std::time::Duration::from_secs(30), invoke(&host, json!({"n": n})))
            .await
            .unwrap_or_else(|_| panic!("invocation {n} did not complete"));
        assert_eq!(json(&answer)["echo"]["n"], n, "{}", answer.log_tail);
        assert!(answer.log_tail.contains("a line written without end"), "{}", answer.log_tail);
    }
    host.shutdown().await;
}
