//! The engine end to end: the real binary, real HTTP functions on loopback.

mod common;

use std::time::{Duration, Instant};

use common::{FunctionServer, Switchyard, client, config};
use serde_json::{Value, json};

fn webhook(name: &str, path: &str, mode: &str) -> String {
    format!(
        "  - name: {name}\n    source:\n      webhook:\n        path: {path}\n        mode: {mode}\n    function: f\n"
    )
}

#[test]
fn validate_names_file_key_path_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        config("http://127.0.0.1:1/", "", &webhook("a", "/a", "sync")) + &webhook("b", "/b", "later"),
    )
    .unwrap();
    let out = common::cli(&["validate"], &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bad.yaml"), "{stderr}");
    assert!(stderr.contains("mappings[1].source.webhook.mode"), "{stderr}");
    assert!(stderr.contains("sync") && stderr.contains("async"), "{stderr}");

    std::fs::write(&path, config("http://127.0.0.1:1/", "", &webhook("a", "/a", "sync"))).unwrap();
    let out = common::cli(&["validate"], &path);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let quickstart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/quickstart.yaml");
    assert!(common::cli(&["validate"], &quickstart).status.success());

    let version = std::process::Command::new(common::BIN).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn run_with_a_bad_config_fails_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, "functions:\n  f:\n    http:\n      url: http://127.0.0.1:1/\n    colour: blue\n").unwrap();
    let out = std::process::Command::new(common::BIN).args(["run", "--config"]).arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("functions.f") && stderr.contains("colour"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_webhook_passes_an_http_api_v2_event_and_maps_the_result() {
    let function = FunctionServer::start(|r, _| {
        let body: Value = serde_json::from_str(r.body["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
        if body["plain"] == true {
            return (200, vec![], json!({"plain": "json"}).to_string());
        }
        let proxy = json!({
            "statusCode": 201,
            "headers": {"x-order": "accepted", "content-type": "application/json"},
            "cookies": ["session=1"],
            "body": json!({"got": body}).to_string(),
        });
        (200, vec![], proxy.to_string())
    })
    .await;
    let sy = Switchyard::start(&config(&function.url(), "", &webhook("orders", "/hooks/orders", "sync")));
    let http = client();
    let response = http
        .post(sy.url("/hooks/orders?src=test&src=again"))
        .header("content-type", "application/json")
        .header("x-custom", "1")
        .header("cookie", "a=1; b=2")
        .body(r#"{"id":7}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-order"], "accepted");
    assert_eq!(response.headers()["set-cookie"], "session=1");
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"got": {"id": 7}}));

    let event = &function.received()[0].body;
    assert_eq!(event["version"], "2.0");
    assert_eq!(event["routeKey"], "POST /hooks/orders");
    assert_eq!(event["rawPath"], "/hooks/orders");
    assert_eq!(event["rawQueryString"], "src=test&src=again");
    assert_eq!(event["queryStringParameters"]["src"], "test,again");
    assert_eq!(event["headers"]["x-custom"], "1");
    assert_eq!(event["cookies"], json!(["a=1", "b=2"]));
    assert_eq!(event["requestContext"]["http"]["method"], "POST");
    assert_eq!(event["requestContext"]["http"]["path"], "/hooks/orders");
    assert_eq!(event["requestContext"]["http"]["protocol"], "HTTP/1.1");
    assert_eq!(event["requestContext"]["http"]["sourceIp"], "127.0.0.1");
    assert!(event["requestContext"]["timeEpoch"].as_i64().unwrap() > 1_700_000_000_000);
    assert!(event["requestContext"]["requestId"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(event["body"], r#"{"id":7}"#);
    assert_eq!(event["isBase64Encoded"], false);

    // Any other JSON result is a 200 with that JSON.
    let response = http.post(sy.url("/hooks/orders")).body(r#"{"plain":true}"#).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"plain": "json"}));

    // A non-UTF-8 body reaches the function base64-encoded.
    http.post(sy.url("/hooks/orders")).body(vec![0xffu8, 0xfe]).send().await.unwrap();
    let event = &function.received()[2].body;
    assert_eq!(event["isBase64Encoded"], true);
    assert_eq!(event["body"], "//4=");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_failures_are_mapped_to_clear_statuses() {
    let failing = FunctionServer::start(|_, _| (500, vec![], "boom".into())).await;
    let slow = FunctionServer::start_with_delay(Duration::from_secs(3), |_, _| (200, vec![], "{}".into())).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let text = format!(
        "server:\n  listen: 127.0.0.1:0\nstate:\n  dir: STATE_DIR\nfunctions:\n  failing:\n    http: {{ url: {} }}\n  slow:\n    http: {{ url: {}, timeout: 500ms }}\n  gone:\n    http: {{ url: http://{closed}/ }}\nmappings:\n  - {{ name: failing, source: {{ webhook: {{ path: /failing }} }}, function: failing }}\n  - {{ name: slow, source: {{ webhook: {{ path: /slow }} }}, function: slow }}\n  - {{ name: gone, source: {{ webhook: {{ path: /gone }} }}, function: gone }}\n  - {{ name: posts, source: {{ webhook: {{ path: /posts, methods: [post] }} }}, function: failing }}\n",
        failing.url(),
        slow.url()
    );
    let sy = Switchyard::start(&text);
    let http = client();
    let status = |path: &'static str| {
        let http = http.clone();
        let url = sy.url(path);
        async move { http.post(url).body("{}").send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/failing").await, 500);
    assert_eq!(status("/slow").await, 504);
    assert_eq!(status("/gone").await, 502);
    assert_eq!(status("/nowhere").await, 404);
    let wrong_method = http.get(sy.url("/posts")).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(wrong_method.headers()["allow"], "POST", "a 405 names the methods taken");

    let too_big = vec![b'x'; 6 * 1024 * 1024 + 1];
    let response = http.post(sy.url("/failing")).body(too_big).send().await.unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(failing.received().len(), 1, "an oversized request never reaches the function");

    let metrics = sy.metrics().await;
    assert!(metrics.contains(r#"switchyard_invocations_total{function="slow",outcome="timeout"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"switchyard_webhook_requests_total{mapping="failing",status="413"} 1"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_bounds_in_flight_invocations_and_throttles_the_excess() {
    let function =
        FunctionServer::start_with_delay(Duration::from_millis(600), |_, _| (200, vec![], "{}".into())).await;
    let extra = "    concurrency: 2\n    max_waiting: 2\n    max_wait: 5s\n";
    let sy = Switchyard::start(&config(&function.url(), extra, &webhook("w", "/w", "sync")));
    let http = client();
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let request = http.post(sy.url("/w")).body("{}").send();
            tokio::spawn(async move { request.await.unwrap().status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(r.await.unwrap());
    }
    statuses.sort();
    assert_eq!(function.max_in_flight(), 2, "concurrency 2 was exceeded");
    assert_eq!(statuses, vec![200, 200, 200, 200, 429, 429], "2 run, 2 wait, 2 are throttled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_invokes_with_eventbridge_scheduled_events() {
    let function = FunctionServer::echo().await;
    let mapping = "  - name: tick\n    source:\n      schedule:\n        expression: rate(1 second)\n    function: f\n";
    let sy = Switchyard::start(&config(&function.url(), "", mapping));
    let got = function.wait_for(2, Duration::from_secs(10)).await;
    let event = &got[0].body;
    assert_eq!(event["detail-type"], "Scheduled Event");
    assert_eq!(event["source"], "aws.events");
    assert_eq!(event["version"], "0");
    assert_eq!(event["detail"], json!({}));
    assert!(event["resources"][0].as_str().unwrap().ends_with("rule/tick"));
    let t0 = chrono::DateTime::parse_from_rfc3339(event["time"].as_str().unwrap()).unwrap();
    let t1 = chrono::DateTime::parse_from_rfc3339(got[1].body["time"].as_str().unwrap()).unwrap();
    assert_eq!((t1 - t0).num_seconds(), 1);
    let mappings: Value = client().get(sy.url("/v1/mappings")).send().await.unwrap().json().await.unwrap();
    assert_eq!(mappings["mappings"][0]["name"], "tick");
    assert_eq!(mappings["mappings"][0]["source"], "schedule");
    assert_eq!(mappings["mappings"][0]["state"], "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let function = FunctionServer::echo().await;
    let sy = Switchyard::start(&config(&function.url(), "", &webhook("w", "/w", "sync")));
    let http = client();
    assert_eq!(http.get(sy.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(http.get(sy.url("/readyz")).send().await.unwrap().status(), 200);
    http.post(sy.url("/w")).body("{}").send().await.unwrap();
    let response = http.get(sy.url("/metrics")).send().await.unwrap();
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let metrics = response.text().await.unwrap();
    for needle in [
        r#"switchyard_invocations_total{function="f",outcome="success"} 1"#,
        r#"switchyard_invoke_duration_seconds_bucket{function="f",le="#,
        r#"switchyard_webhook_requests_total{mapping="w",status="200"} 1"#,
        r#"switchyard_function_in_flight{function="f"} 0"#,
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_work_and_refuses_new_work() {
    let function =
        FunctionServer::start_with_delay(Duration::from_millis(1500), |_, _| (200, vec![], r#"{"done":true}"#.into()))
            .await;
    let mut sy = Switchyard::start(&config(&function.url(), "", &webhook("w", "/w", "sync")));
    let http = client();
    let in_flight = tokio::spawn(http.post(sy.url("/w")).body("{}").send());
    function.wait_for_in_flight().await;
    let signalled = Instant::now();
    sy.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // New work during the drain is refused (503), or the listener is already closed.
    if let Ok(r) = http.post(sy.url("/w")).body("{}").send().await {
        assert_eq!(r.status(), 503);
    }
    let readyz = http.get(sy.url("/readyz")).send().await;
    if let Ok(r) = readyz {
        assert_eq!(r.status(), 503);
    }
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200, "the in-flight request completes");
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"done": true}));
    let status = sy.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(10));
    assert_eq!(function.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_invoke_prints_results_and_fails_on_function_errors() {
    let function = FunctionServer::start(|r, _| {
        if r.body["fail"] == true {
            (500, vec![], json!({"errorType": "Nope", "errorMessage": "asked to fail"}).to_string())
        } else {
            (200, vec![], json!({"echo": r.body}).to_string())
        }
    })
    .await;
    let sy = Switchyard::start(&config(&function.url(), "", ""));
    let url = format!("http://{}", sy.addr);
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || std::process::Command::new(common::BIN).args(args).output().unwrap())
    };
    let out =
        run(vec!["invoke".into(), "f".into(), "--payload".into(), r#"{"a":1}"#.into(), "--url".into(), url.clone()])
            .await
            .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, json!({"echo": {"a": 1}}));

    let out = run(vec![
        "invoke".into(),
        "f".into(),
        "--payload".into(),
        r#"{"fail":true}"#.into(),
        "--url".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("asked to fail"));

    let out = run(vec!["invoke".into(), "ghost".into(), "--url".into(), url.clone()]).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ResourceNotFoundException"));

    // Not Switchyard at --url: its error, with no error type, fails the command too.
    let elsewhere = FunctionServer::start(|_, _| (502, vec![], "bad gateway".into())).await;
    let out = run(vec!["invoke".into(), "f".into(), "--url".into(), elsewhere.url()]).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("502"), "{}", String::from_utf8_lossy(&out.stderr));

    let out = run(vec![
        "invoke".into(),
        "f".into(),
        "--async".into(),
        "--payload".into(),
        r#"{"b":2}"#.into(),
        "--url".into(),
        url,
    ])
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("queued"));
    let got = function.wait_for(3, Duration::from_secs(10)).await;
    assert!(got.iter().any(|r| r.body == json!({"b": 2})));
}

/// A function process on the port its first argument names. `once`: it
/// serves one request and exits, to be restarted. `noisy`: it writes bytes
/// that are not UTF-8 to its stdout on every request, and serves until it is
/// stopped.
const PYTHON_FUNCTION: &str = r#"
import http.server, sys
port, mode = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get('content-length', 0)))
        if mode == 'noisy':
            sys.stdout.buffer.write(b'caf\xe9 \xff latin-1 bytes\n')
            sys.stdout.buffer.flush()
        body = b'{"served":true}'
        self.send_response(200)
        self.send_header('content-length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(('127.0.0.1', port), H)
if mode == 'once':
    print('serving once', flush=True)
    server.handle_request()
    sys.exit(3)
server.serve_forever()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervised_function_process_is_restarted_after_it_exits() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("function.py"), PYTHON_FUNCTION).unwrap();
    let python = std::env::var("SWITCHYARD_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let text = format!(
        "server:\n  listen: 127.0.0.1:0\nstate:\n  dir: STATE_DIR\nfunctions:\n  once:\n    http:\n      url: http://127.0.0.1:{port}/\n      command: [{python}, function.py, \"{port}\", once]\n      dir: {}\nmappings:\n  - {{ name: w, source: {{ webhook: {{ path: /w }} }}, function: once }}\n",
        dir.path().display()
    );
    let sy = Switchyard::start(&text);
    let http = client();
    for round in 0..3 {
        let body: Value = common::eventually(Duration::from_secs(15), "the function to answer", async || {
            let r = http.post(sy.url("/w")).body("{}").send().await.ok()?;
            if r.status() == 200 { r.json().await.ok() } else { None }
        })
        .await;
        assert_eq!(body, json!({"served": true}), "round {round}");
    }
    let logs = sy.logs();
    let exits = logs.iter().filter(|l| l["message"] == "function process exited").count();
    assert!(exits >= 2, "the process served once per start and was restarted: {exits} exits");
    assert!(
        logs.iter().any(|l| l["message"] == "serving once" && l["function"] == "once"),
        "the process's output is relayed to the log"
    );
}

/// The output relay outlives bytes that are not UTF-8 (were it to stop, the
/// process's next write would fail on the closed pipe), and stopping
/// Switchyard stops what a wrapper command started, not only the wrapper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_process_output_that_is_not_utf8_and_a_wrapper_command() {
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("function.py"), PYTHON_FUNCTION).unwrap();
    let python = std::env::var("SWITCHYARD_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    // `sh -c` without exec: the server is the wrapper's child.
    let text = format!(
        "server:\n  listen: 127.0.0.1:0\nstate:\n  dir: STATE_DIR\nfunctions:\n  noisy:\n    http:\n      url: http://127.0.0.1:{port}/\n      command: [sh, -c, \"{python} function.py {port} noisy; echo wrapper done\"]\n      dir: {}\nmappings:\n  - {{ name: w, source: {{ webhook: {{ path: /w }} }}, function: noisy }}\n",
        dir.path().display()
    );
    let mut sy = Switchyard::start(&text);
    let http = client();
    for round in 0..3 {
        let r = http.post(sy.url("/w")).body("{}").send().await.unwrap();
        assert_eq!(r.status(), 200, "round {round}");
        assert_eq!(r.json::<Value>().await.unwrap(), json!({"served": true}));
    }
    common::eventually(Duration::from_secs(5), "the output relayed, each line once", async || {
        let logs = sy.logs();
        let n =
            logs.iter().filter(|l| l["message"] == "caf\u{fffd} \u{fffd} latin-1 bytes" && l["function"] == "noisy");
        (n.count() == 3).then_some(())
    })
    .await;

    sy.stop();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "the server the wrapper started is stopped with it"
    );
}

/// An HTTP function's answer beyond Lambda's 6 MB response limit is a
/// function error, as Lambda reports it, not a body held in memory whatever
/// its size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_function_response_over_6_mb_is_a_function_error() {
    let huge = format!("\"{}\"", "x".repeat(7 * 1024 * 1024));
    let f =
        FunctionServer::start(move |_, _| (200, vec![("content-type", "application/json".into())], huge.clone())).await;
    let sy = Switchyard::start(&config(&f.url(), "", &webhook("hook", "/hook", "sync")));
    let invoked = client().post(sy.url("/2015-03-31/functions/f/invocations")).body("{}").send().await.unwrap();
    assert_eq!(invoked.status(), 200);
    assert_eq!(invoked.headers()["x-amz-function-error"], "Unhandled");
    let error: Value = invoked.json().await.unwrap();
    assert_eq!(error["errorType"], "Function.ResponseSizeTooLarge", "{error}");
    assert_eq!(
        error["errorMessage"], "Response payload size exceeded maximum allowed payload size (6291556 bytes).",
        "{error}"
    );
    let hooked = client().post(sy.url("/hook")).body("{}").send().await.unwrap();
    assert_eq!(hooked.status(), 500, "a function error, as for any other");
}

/// A sync webhook `/hook` on `f`, with one more `server:` setting.
fn hook_with_server_setting(f: &FunctionServer, setting: &str) -> String {
    config(&f.url(), "", &webhook("hook", "/hook", "sync"))
        .replace("  shutdown_grace: 10s\n", &format!("  shutdown_grace: 10s\n  {setting}\n"))
}

/// A client that sends its request's head, or its body, slower than
/// `server.read_timeout` is cut off (its connection closed, or its request
/// answered 408) instead of holding its connection for good; others are
/// served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_after_the_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = FunctionServer::echo().await;
    let sy = Switchyard::start(&hook_with_server_setting(&f, "read_timeout: 1s"));

    let mut head = tokio::net::TcpStream::connect(sy.addr).await.unwrap();
    head.write_all(b"POST /hook HTTP/1.1\r\nhost: switchyard\r\n").await.unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), head.read_to_end(&mut answer)).await;
    assert!(closed.is_ok(), "a head that never ends: the connection is closed");

    let mut body = tokio::net::TcpStream::connect(sy.addr).await.unwrap();
    body.write_all(b"POST /hook HTTP/1.1\r\nhost: switchyard\r\ncontent-length: 10\r\n\r\n{}").await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), body.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "a body that never ends: {answer}");

    let r = client().post(sy.url("/hook")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 200, "others are served");
}

/// With `server.drain_delay`, SIGTERM fails `/readyz` at once while requests
/// are still served until the delay has passed; then Switchyard stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_delay_keeps_serving_while_not_ready() {
    let f = FunctionServer::echo().await;
    let mut sy = Switchyard::start(&hook_with_server_setting(&f, "drain_delay: 2s"));
    let http = client();
    sy.signal(libc::SIGTERM);
    common::eventually(Duration::from_secs(5), "/readyz to fail", async || {
        let r = http.get(sy.url("/readyz")).send().await.ok()?;
        (r.status() == 503).then_some(())
    })
    .await;
    let served = http.post(sy.url("/hook")).body("{}").send().await.unwrap();
    assert_eq!(served.status(), 200, "still served during the drain delay");
    let status = sy.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
}
