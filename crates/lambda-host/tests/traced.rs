//! Tracing of an instance's lines, in a test binary of its own: tracing
//! caches whether a callsite is enabled across threads, so other tests of the
//! same process hitting the same callsites with no subscriber (a parallel
//! test's threads) could leave this test's subscriber unasked.

mod common;

use common::*;
use serde_json::json;
use switchyard_lambda_host::LambdaSpec;

fn curl() -> Option<()> {
    let found = std::process::Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success());
    require(found.then_some(()), "curl", "apt-get install curl")
}

/// START, END, REPORT and the function's lines also go to tracing, with the
/// function and request id as fields.
#[test]
fn platform_and_function_lines_are_traced() {
    let Some(()) = curl() else { return };
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    // A current-thread runtime: every task, the Runtime API server's too,
    // runs on this thread, under this subscriber.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let response = tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let mut spec = LambdaSpec::new("traced", vec!["./bootstrap".into()]);
            spec.dir = example("shell-bootstrap");
            let host = host(spec);
            let response = invoke(&host, json!({"n": 1})).await;
            host.shutdown().await;
            response
        })
    });
    let logs = String::from_utf8_lossy(&captured.0.lock().expect("logs")).to_string();
    let id = json(&response)["echo"]
        .is_object()
        .then_some(())
        .and_then(|_| response.log_tail.lines().find_map(|l| l.strip_prefix("END RequestId: ")).map(str::to_string));
    let id = id.expect("request id in the tail");
    for line in [format!("START RequestId: {id} Version: $LATEST"), format!("END RequestId: {id}")] {
        let traced = logs.lines().find(|l| l.contains(&line)).unwrap_or_else(|| panic!("{line:?} not traced:\n{logs}"));
        assert!(traced.contains(" INFO ") && traced.contains("function=traced"), "{traced}");
        assert!(traced.contains(&format!("request_id={id}")), "{traced}");
    }
    assert!(logs.lines().any(|l| l.contains("REPORT RequestId: ") && l.contains("function=traced")), "{logs}");
    let got = logs.lines().find(|l| l.contains("shell-bootstrap: got ")).expect("function output traced");
    assert!(got.contains(&format!("request_id={id}")), "function lines carry the request id: {got}");
}
