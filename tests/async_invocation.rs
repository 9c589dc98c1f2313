//! The durable async queue, end to end: retries and their headers, Lambda's
//! destination records, the dead-letter store and its CLI, event age,
//! Retry-After, the queue bound, payload limits, function destinations, the
//! queue's metrics, and that no accepted event is lost to SIGKILL or SIGTERM,
//! nor queued twice from the accept log.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{FunctionServer, Received, Reply, Switchyard, client, config, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

const HOOK: &str = "/hooks/async";
const ERROR_BODY: &str = r#"{"errorType":"Boom","errorMessage":"not yet"}"#;
const BACKOFF: &str = "      backoff: { initial: 100ms, max: 400ms }\n";

/// The mappings section: one async webhook on [`HOOK`] for function `f`.
fn async_hook() -> String {
    format!("  - name: hook\n    source:\n      webhook:\n        path: {HOOK}\n        mode: async\n    function: f\n")
}

/// `f`'s extra config: an `async:` block with the given lines (6 spaces in).
fn async_block(lines: &str) -> String {
    format!("    async:\n{lines}")
}

fn reply(status: u16, body: &str) -> Reply {
    (status, vec![("content-type", "application/json".to_string())], body.to_string())
}

fn fail() -> Reply {
    reply(500, ERROR_BODY)
}

fn ok() -> Reply {
    reply(200, r#"{"ok":true}"#)
}

/// A function URL nobody listens on: its events stay queued.
fn closed_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}/", listener.local_addr().unwrap())
}

/// Adds `state.max_queued_events` to a [`config`] text.
fn with_max_queued(text: &str, n: usize) -> String {
    let state = "state:\n  dir: STATE_DIR\n";
    assert!(text.contains(state), "{text}");
    text.replace(state, &format!("{state}  max_queued_events: {n}\n"))
}

/// A server that accepts destination records.
async fn destination() -> FunctionServer {
    FunctionServer::start(|_, _| reply(200, "{}")).await
}

/// POSTs `body` to the async webhook.
async fn post_event(sy: &Switchyard, body: &str) -> reqwest::Response {
    client()
        .post(sy.url(HOOK))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST to the async webhook")
}

/// POSTs `body` to the async webhook; expects 202 and returns the request id.
async fn accepted(sy: &Switchyard, body: &str) -> String {
    let response = post_event(sy, body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let header = response.headers().get("x-switchyard-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let json: Value = response.json().await.unwrap();
    let id = json["requestId"].as_str().expect("202 body has requestId").to_string();
    assert_eq!(header.as_deref(), Some(id.as_str()));
    id
}

/// An `Event` invocation through the Invoke API.
async fn invoke_event(sy: &Switchyard, function: &str, body: &str) -> reqwest::Response {
    client()
        .post(sy.url(&format!("/2015-03-31/functions/{function}/invocations")))
        .header("x-amz-invocation-type", "Event")
        .body(body.to_string())
        .send()
        .await
        .expect("POST to the Invoke API")
}

/// `GET /v1/dlq`.
async fn dlq(sy: &Switchyard) -> Vec<Value> {
    let response = client().get(sy.url("/v1/dlq")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["deadLetters"].as_array().expect("deadLetters is a list").clone()
}

/// Polls `GET /v1/dlq` until it holds `n` entries.
async fn wait_dlq(sy: &Switchyard, n: usize, limit: Duration) -> Vec<Value> {
    eventually(limit, &format!("{n} dead letter(s)"), async || {
        let list = dlq(sy).await;
        (list.len() == n).then_some(list)
    })
    .await
}

/// The `n` of a webhook event whose body was `{"n": N}`.
fn event_n(r: &Received) -> Option<u64> {
    let body: Value = serde_json::from_str(r.body["body"].as_str()?).ok()?;
    body["n"].as_u64()
}

fn header(r: &Received, name: &str) -> String {
    r.header(name).unwrap_or_else(|| panic!("no {name} header")).to_string()
}

/// `cli` output as text, asserting it succeeded.
fn cli_ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "CLI failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_then_succeeds() {
    let f = FunctionServer::start(|_, i| if i < 2 { fail() } else { ok() }).await;
    let dest = destination().await;
    let extra = async_block(&format!(
        "      max_retry_attempts: 2\n{BACKOFF}      on_success: {{ http: {{ url: {} }} }}\n",
        dest.url()
    ));
    let sy = Switchyard::start(&config(&f.url(), &extra, &async_hook()));

    let body = r#"{"order":1}"#;
    let id = accepted(&sy, body).await;

    let record = dest.wait_for(1, Duration::from_secs(10)).await[0].body.clone();
    // Nothing is invoked after the success record went out.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = f.received();
    assert_eq!(calls.len(), 3, "two failures, then the success");
    for (i, call) in calls.iter().enumerate() {
        assert_eq!(header(call, "x-switchyard-request-id"), id);
        assert_eq!(header(call, "x-switchyard-attempt"), (i + 1).to_string());
        assert_eq!(call.body, calls[0].body, "every retry gets the same event");
    }
    assert_eq!(dest.received().len(), 1, "one success record");

    assert_eq!(record["version"], "1.0");
    assert_eq!(record["requestContext"]["condition"], "Success");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(record["requestContext"]["requestId"], id.as_str());
    assert_eq!(record["requestContext"]["functionArn"], "arn:aws:lambda:us-east-1:000000000000:function:f:$LATEST");
    let event = &record["requestPayload"];
    assert_eq!(event["version"], "2.0");
    assert_eq!(event["requestContext"]["requestId"], id.as_str(), "the event carries the id its 202 gave");
    assert_eq!(event["rawPath"], HOOK);
    assert_eq!(event["body"], body);
    assert_eq!(*event, calls[0].body, "requestPayload is what f received");
    assert_eq!(record["responsePayload"], json!({"ok": true}));
    assert_eq!(record["responseContext"]["statusCode"], 200);
    assert!(record["responseContext"].get("functionError").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_fails_lands_in_dlq_then_replays() {
    let failing = Arc::new(AtomicBool::new(true));
    let flag = failing.clone();
    let f = FunctionServer::start(move |_, _| if flag.load(Ordering::SeqCst) { fail() } else { ok() }).await;
    let extra = async_block(&format!("      max_retry_attempts: 1\n{BACKOFF}"));
    let sy = Switchyard::start(&config(&f.url(), &extra, &async_hook()));

    let body = r#"{"order":7}"#;
    let id = accepted(&sy, body).await;
    let entry = wait_dlq(&sy, 1, Duration::from_secs(10)).await.remove(0);
    assert_eq!(entry["function"], "f");
    assert_eq!(entry["requestId"], id.as_str());
    assert_eq!(entry["condition"], "RetriesExhausted");
    assert_eq!(entry["errorType"], "Boom");
    assert_eq!(entry["errorMessage"], "not yet");
    assert_eq!(entry["attempts"], 2, "the first try and one retry");
    assert!(entry["firstAttemptAt"].is_string(), "{entry}");
    assert!(entry["lastAttemptAt"].is_string(), "{entry}");
    assert_eq!(entry["payload"]["rawPath"], HOOK);
    assert_eq!(entry["payload"]["body"], body);
    assert_eq!(f.received().len(), 2);
    let dl_id = entry["id"].as_i64().expect("numeric id");

    // The CLI reads the same store.
    let list: Value = serde_json::from_str(&cli_ok(&sy.cli(&["dlq", "list", "--json"]))).unwrap();
    let ids: Vec<i64> = list.as_array().unwrap().iter().filter_map(|e| e["id"].as_i64()).collect();
    assert_eq!(ids, vec![dl_id]);
    let shown: Value = serde_json::from_str(&cli_ok(&sy.cli(&["dlq", "show", &dl_id.to_string()]))).unwrap();
    assert_eq!(shown["requestId"], id.as_str());
    assert_eq!(shown["record"]["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(shown["record"]["requestContext"]["approximateInvokeCount"], 2);
    assert_eq!(shown["record"]["responsePayload"]["errorType"], "Boom");

    // Fixed: replay it from the CLI while Switchyard runs.
    failing.store(false, Ordering::SeqCst);
    cli_ok(&sy.cli(&["dlq", "replay", &dl_id.to_string()]));
    let calls = f.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(header(&calls[2], "x-switchyard-request-id"), id);
    assert_eq!(calls[2].body, calls[0].body, "the replay carries the event");
    // It succeeded: it is neither dead-lettered again nor retried.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(dlq(&sy).await.is_empty());
    assert_eq!(f.received().len(), 3);

    let missing = client().post(sy.url("/v1/dlq/999/replay")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_age_expires_without_consuming_attempts() {
    let f = FunctionServer::start(|_, _| reply(429, r#"{"message":"slow down"}"#)).await;
    let dest = destination().await;
    let extra = async_block(&format!(
        "      max_event_age: 2s\n{BACKOFF}      on_failure: {{ http: {{ url: {} }} }}\n",
        dest.url()
    ));
    let sy = Switchyard::start(&config(&f.url(), &extra, &async_hook()));

    let sent = Instant::now();
    let response = invoke_event(&sy, "f", r#"{"x":1}"#).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id =
        response.headers().get("x-amzn-requestid").and_then(|v| v.to_str().ok()).expect("x-amzn-requestid").to_string();

    let got = dest.wait_for(1, Duration::from_secs(10)).await;
    let record = &got[0].body;
    assert_eq!(record["requestContext"]["condition"], "EventAgeExceeded");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 0, "throttles are not invocations");
    assert_eq!(record["requestContext"]["requestId"], id.as_str());
    assert_eq!(record["requestPayload"], json!({"x": 1}));
    let age = got[0].at - sent;
    assert!(age >= Duration::from_millis(1900), "expired after {age:?}");
    let calls = f.received();
    assert!(calls.len() > 1, "throttles are retried: {} call(s)", calls.len());
    assert!(calls.iter().all(|c| header(c, "x-switchyard-attempt") == "1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let f =
        FunctionServer::start(
            |_, i| {
                if i == 0 { (429, vec![("retry-after", "2".to_string())], String::new()) } else { ok() }
            },
        )
        .await;
    let extra = async_block(BACKOFF);
    let sy = Switchyard::start(&config(&f.url(), &extra, &async_hook()));

    let id = accepted(&sy, r#"{"n":1}"#).await;
    let calls = f.wait_for(2, Duration::from_secs(10)).await;
    let gap = calls[1].at - calls[0].at;
    assert!(gap >= Duration::from_millis(1900), "retried after {gap:?}");
    assert_eq!(header(&calls[1], "x-switchyard-request-id"), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_bound_answers_429() {
    let text = config(&closed_url(), &async_block(BACKOFF), &async_hook());
    let sy = Switchyard::start(&with_max_queued(&text, 5));

    let mut statuses = Vec::new();
    for n in 0..10 {
        let response = post_event(&sy, &format!(r#"{{"n":{n}}}"#)).await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(response.headers().contains_key("retry-after"));
        }
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [202, 202, 202, 202, 202, 429, 429, 429, 429, 429]);
    let metrics = sy.metrics().await;
    for status in [202, 429] {
        let line = format!(r#"switchyard_webhook_requests_total{{mapping="hook",status="{status}"}} 5"#);
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }

    let response = invoke_event(&sy, "f", "{}").await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        response.headers().get("x-amzn-errortype").and_then(|v| v.to_str().ok()),
        Some("TooManyRequestsException")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_payload_limit() {
    let f = FunctionServer::start(|_, _| ok()).await;
    let sy = Switchyard::start(&config(&f.url(), &async_block(BACKOFF), &async_hook()));
    const LIMIT: usize = 1024 * 1024;

    let too_big = post_event(&sy, &"x".repeat(LIMIT + 1)).await;
    assert_eq!(too_big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let at_limit = post_event(&sy, &"y".repeat(LIMIT)).await;
    assert_eq!(at_limit.status(), StatusCode::ACCEPTED);
    let small = post_event(&sy, &"z".repeat(1000)).await;
    assert_eq!(small.status(), StatusCode::ACCEPTED);

    let calls = f.wait_for(2, Duration::from_secs(10)).await;
    let mut lengths: Vec<usize> = calls.iter().map(|c| c.body["body"].as_str().map_or(0, str::len)).collect();
    lengths.sort_unstable();
    assert_eq!(lengths, [1000, LIMIT], "only the accepted events are invoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_destination_invokes_another_function() {
    let f = FunctionServer::start(|_, _| fail()).await;
    let sink = FunctionServer::start(|_, _| ok()).await;
    // `f`'s async block, then a second function `sink`.
    let extra = format!(
        "{}  sink:\n    http:\n      url: {}\n      timeout: 5s\n",
        async_block(&format!(
            "      max_retry_attempts: 0\n{BACKOFF}      on_failure: {{ function: {{ name: sink }} }}\n"
        )),
        sink.url()
    );
    let sy = Switchyard::start(&config(&f.url(), &extra, &async_hook()));

    let body = r#"{"order":9}"#;
    let id = accepted(&sy, body).await;
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    let record = &got[0].body;
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["requestContext"]["requestId"], id.as_str());
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 1);
    assert_eq!(record["requestPayload"]["body"], body);
    assert_eq!(record["responsePayload"]["errorType"], "Boom");
    assert_eq!(got[0].header("x-switchyard-function"), Some("sink"));
    assert_ne!(
        got[0].header("x-switchyard-request-id"),
        Some(id.as_str()),
        "the destination invocation is an event of its own"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.received().len(), 1, "max_retry_attempts: 0");
    assert_eq!(sink.received().len(), 1);
    assert!(dlq(&sy).await.is_empty());
}

/// Posts `{"n": N}` for each N of `ns` from `tasks` concurrent clients;
/// returns the ones answered 202. Posts may fail (Switchyard killed).
/// `accepted_count` counts 202s as they come.
async fn post_all(url: String, ns: Vec<u64>, tasks: usize, accepted_count: Arc<AtomicUsize>) -> BTreeSet<u64> {
    let ns = Arc::new(ns);
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(Mutex::new(BTreeSet::new()));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (url, ns, next, accepted, count) =
            (url.clone(), ns.clone(), next.clone(), accepted.clone(), accepted_count.clone());
        handles.push(tokio::spawn(async move {
            let client = client();
            loop {
                let Some(&n) = ns.get(next.fetch_add(1, Ordering::SeqCst)) else {
                    return;
                };
                let sent = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"n":{n}}}"#))
                    .send()
                    .await;
                if sent.is_ok_and(|r| r.status() == StatusCode::ACCEPTED) {
                    accepted.lock().unwrap().insert(n);
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    std::mem::take(&mut *accepted.lock().unwrap())
}

fn seen_ns(f: &FunctionServer) -> HashSet<u64> {
    f.received().iter().filter_map(event_n).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loses_no_accepted_event() {
    const TOTAL: u64 = 2000;
    const KILL_AFTER: usize = 600;
    let f = FunctionServer::start(|_, _| reply(200, "{}")).await;
    let text = config(&f.url(), &format!("    concurrency: 8\n{}", async_block(BACKOFF)), &async_hook());
    let dir = tempfile::tempdir().unwrap();
    let mut sy = Switchyard::start_in(dir.path(), &text, &[]);

    let count = Arc::new(AtomicUsize::new(0));
    let posting = tokio::spawn(post_all(sy.url(HOOK), (0..TOTAL).collect(), 16, count.clone()));
    eventually(Duration::from_secs(30), "600 accepted events", async || {
        (count.load(Ordering::SeqCst) >= KILL_AFTER).then_some(())
    })
    .await;
    tokio::task::block_in_place(|| sy.kill9());
    let seen_before_kill = seen_ns(&f);
    let before = posting.await.unwrap();
    assert!(before.len() < TOTAL as usize, "the kill came while posts were still going");

    let restarted = Instant::now();
    let sy = Switchyard::start_in(dir.path(), &text, &[]);
    let rest: Vec<u64> = (0..TOTAL).filter(|n| !before.contains(n)).collect();
    let after = post_all(sy.url(HOOK), rest.clone(), 16, Arc::new(AtomicUsize::new(0))).await;
    assert_eq!(after.len(), rest.len(), "every post after the restart is accepted");

    let accepted: BTreeSet<u64> = before.union(&after).copied().collect();
    assert_eq!(accepted.len(), TOTAL as usize);
    let seen = eventually(Duration::from_secs(60), "every accepted event invoked", async || {
        let seen = seen_ns(&f);
        accepted.iter().all(|n| seen.contains(n)).then_some(seen)
    })
    .await;
    let missing: Vec<&u64> = before.iter().filter(|n| !seen.contains(n)).collect();
    assert!(missing.is_empty(), "accepted before the kill but lost: {missing:?}");

    let calls = f.received();
    let after_restart = calls.iter().filter(|c| c.at > restarted).count();
    assert!(after_restart > 0, "the function got events after the restart");
    let recovered = before.iter().filter(|n| !seen_before_kill.contains(n)).count();
    println!(
        "kill9: {} accepted before the kill ({} of them invoked only after the restart), {} after; \
         {} invocations, {} duplicates",
        before.len(),
        recovered,
        after.len(),
        calls.len(),
        calls.len() - seen.len()
    );
}

/// Events the accept log holds at a SIGKILL, not yet moved into the SQLite
/// queue, are queued at the next start, and each only once. The function is
/// unreachable, so nothing leaves the queue: afterwards it holds every event
/// that got a 202, no event twice, and beyond those at most the posts in
/// flight at the kill (written, their 202 lost with the process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_queues_each_logged_event_once() {
    const TOTAL: u64 = 3000;
    const TASKS: usize = 16;
    let text = config(&closed_url(), "", &async_hook());
    let dir = tempfile::tempdir().unwrap();
    let mut sy = Switchyard::start_in(dir.path(), &text, &[]);
    let count = Arc::new(AtomicUsize::new(0));
    let posting = tokio::spawn(post_all(sy.url(HOOK), (0..TOTAL).collect(), TASKS, count.clone()));
    eventually(Duration::from_secs(30), "1000 accepted events", async || {
        (count.load(Ordering::SeqCst) >= 1000).then_some(())
    })
    .await;
    tokio::task::block_in_place(|| sy.kill9());
    let accepted = posting.await.unwrap();
    assert!(accepted.len() < TOTAL as usize, "the kill came while posts were still going");

    // The restart queues what the log held before it listens; the second
    // kill leaves the queue as it is for reading.
    let mut sy = Switchyard::start_in(dir.path(), &text, &[]);
    let recovered: u64 = sy
        .logs()
        .iter()
        .filter(|l| l["message"] == "queued the events the accept log held from the last run")
        .filter_map(|l| l["events"].as_u64())
        .sum();
    tokio::task::block_in_place(|| sy.kill9());

    let db = rusqlite::Connection::open(dir.path().join("state").join("switchyard.db")).unwrap();
    let mut stmt = db.prepare("SELECT payload FROM async_events").unwrap();
    let queued: Vec<u64> = stmt
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|payload| {
            let event: Value = serde_json::from_slice(&payload.unwrap()).unwrap();
            let body: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
            body["n"].as_u64().unwrap()
        })
        .collect();
    let distinct: BTreeSet<u64> = queued.iter().copied().collect();
    assert_eq!(distinct.len(), queued.len(), "an event was queued twice");
    let lost: Vec<&u64> = accepted.difference(&distinct).collect();
    assert!(lost.is_empty(), "accepted before the kill but not queued: {lost:?}");
    let extra = distinct.len() - accepted.len();
    assert!(extra <= TASKS, "{extra} events queued that got no 202; at most {TASKS} posts were in flight");
    println!(
        "kill9 with the log: {} accepted, {} of them queued from the log at restart, {} queued without their 202",
        accepted.len(),
        recovered,
        extra
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_keeps_queued_events() {
    // Each event fails its first call and succeeds after.
    let tried = Arc::new(Mutex::new(HashSet::new()));
    let first_seen = tried.clone();
    let f = FunctionServer::start(move |r, _| {
        let n = event_n(r).expect("an event with n");
        if first_seen.lock().unwrap().insert(n) { fail() } else { ok() }
    })
    .await;
    let text = config(&f.url(), &async_block("      backoff: { initial: 3s, max: 3s }\n"), &async_hook());
    let dir = tempfile::tempdir().unwrap();
    let mut sy = Switchyard::start_in(dir.path(), &text, &[]);

    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(accepted(&sy, &format!(r#"{{"n":{n}}}"#)).await);
    }
    let first = f.wait_for(3, Duration::from_secs(10)).await;
    sy.stop();
    assert_eq!(f.received().len(), 3, "no retry ran before the shutdown");
    drop(sy);

    let _sy = Switchyard::start_in(dir.path(), &text, &[]);
    let calls = f.wait_for(6, Duration::from_secs(10)).await;
    let again: BTreeSet<u64> = calls[3..].iter().filter_map(event_n).collect();
    assert_eq!(again, BTreeSet::from([0, 1, 2]), "every event is retried");
    for call in &calls[3..] {
        let n = event_n(call).unwrap() as usize;
        let original = first.iter().find(|c| event_n(c) == Some(n as u64)).unwrap();
        assert_eq!(header(call, "x-switchyard-request-id"), header(original, "x-switchyard-request-id"));
        assert!(ids.contains(&header(call, "x-switchyard-request-id")));
        assert_eq!(header(call, "x-switchyard-attempt"), "2");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.received().len(), 6, "each event succeeded once");
}

/// The bound holds when many accepts are in the same group commit: each
/// reserves its place before the write (checking, then counting after the
/// commit, let 12 of 40 concurrent posts through a bound of 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_bound_holds_under_concurrent_posts() {
    let text = config(&closed_url(), &async_block(BACKOFF), &async_hook());
    let sy = Switchyard::start(&with_max_queued(&text, 5));
    // Let the first periodic recount from the store (at start) pass.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let accepted = post_all(sy.url(HOOK), (0..40).collect(), 16, Arc::new(AtomicUsize::new(0))).await;
    assert_eq!(accepted.len(), 5, "accepted {accepted:?}");
    let late = post_event(&sy, r#"{"n":99}"#).await;
    assert_eq!(late.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// A retry runs when its backoff is over, not at the dispatcher's next idle
/// poll (1 s): with a 200 ms backoff every gap is 100..200 ms plus overhead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_backoff() {
    let f = FunctionServer::start(|_, _| fail()).await;
    let extra = async_block("      max_retry_attempts: 2\n      backoff: { initial: 200ms, max: 200ms }\n");
    let sy = Switchyard::start(&config(&f.url(), &extra, &async_hook()));

    accepted(&sy, r#"{"n":1}"#).await;
    let calls = f.wait_for(3, Duration::from_secs(10)).await;
    for pair in calls.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(90) && gap < Duration::from_millis(800), "retried after {gap:?}");
    }
}

/// The value of the metric line that starts with `series` (name and labels
/// as far as given), if there is one.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(series))?.rsplit_once(' ')?.1.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_queue_and_its_outcomes() {
    // Events for a function nobody answers wait in the queue: the depth
    // and the oldest event's age show them.
    let sy = Switchyard::start(&config(&closed_url(), "", &async_hook()));
    for n in 0..3 {
        accepted(&sy, &format!(r#"{{"n":{n}}}"#)).await;
    }
    // The gauges refresh every 2 seconds: wait for one that sees all three
    // events after they waited a second.
    let text = eventually(Duration::from_secs(10), "a queue depth of 3, the oldest a second old", async || {
        let text = sy.metrics().await;
        let depth = metric(&text, r#"switchyard_async_queue_depth{function="f"}"#);
        let age = metric(&text, r#"switchyard_async_oldest_event_age_seconds{function="f"}"#);
        (depth == Some(3.0) && age.is_some_and(|a| a >= 1.0)).then_some(text)
    })
    .await;
    assert!(
        metric(&text, r#"switchyard_async_retries_total{function="f",reason="#).is_some_and(|n| n >= 3.0),
        "each event's connection failures are retried\n{text}"
    );
    // The accept log's syncs: at least one group, each sync timed.
    assert!(metric(&text, "switchyard_accept_log_sync_seconds_count").is_some_and(|n| n >= 1.0), "{text}");
    assert!(metric(&text, "switchyard_accept_log_group_events_sum").is_some_and(|n| n >= 3.0), "{text}");
    assert!(text.contains("switchyard_accept_log_unmoved_events"), "{text}");
    drop(sy);

    // An event whose retries are spent goes to the dead-letter store: the
    // destination delivery and the dead-letter gauge count it.
    let f = FunctionServer::start(|_, _| fail()).await;
    let extra = async_block(&format!("      max_retry_attempts: 1\n{BACKOFF}"));
    let sy = Switchyard::start(&config(&f.url(), &extra, &async_hook()));
    accepted(&sy, r#"{"order":1}"#).await;
    wait_dlq(&sy, 1, Duration::from_secs(10)).await;
    let text = eventually(Duration::from_secs(10), "one dead letter in the gauge", async || {
        let text = sy.metrics().await;
        (metric(&text, r#"switchyard_dead_letters{function="f"}"#) == Some(1.0)).then_some(text)
    })
    .await;
    assert_eq!(metric(&text, r#"switchyard_dead_letters_total{function="f"}"#), Some(1.0), "{text}");
    assert_eq!(
        metric(
            &text,
            r#"switchyard_destination_deliveries_total{function="f",destination="dlq",condition="RetriesExhausted",outcome="delivered"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(metric(&text, r#"switchyard_async_retries_total{function="f",reason="#), Some(1.0), "one retry: {text}");
    assert_eq!(metric(&text, r#"switchyard_async_queue_depth{function="f"}"#), Some(0.0), "{text}");
}

/// Events queued for a function that the next config no longer has go to the
/// dead-letter store at start (`FunctionNotFound`) instead of waiting for good
/// for a dispatcher that does not exist, holding their place under the bound.
/// A replay leaves them there until the function is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_gone_from_the_config_has_its_events_dead_lettered() {
    // Nobody listens at f's URL: its events stay queued, retried.
    let with_f = config(&closed_url(), "", &async_hook());
    let dir = tempfile::tempdir().unwrap();
    let mut sy = Switchyard::start_in(dir.path(), &with_f, &[]);
    let ids = BTreeSet::from([accepted(&sy, r#"{"n":1}"#).await, accepted(&sy, r#"{"n":2}"#).await]);
    sy.stop();
    drop(sy);

    // The next config names the function g.
    let g = FunctionServer::start(|_, _| ok()).await;
    let with_g = config(&g.url(), "", &async_hook()).replace("  f:\n", "  g:\n").replace("function: f", "function: g");
    let sy = Switchyard::start_in(dir.path(), &with_g, &[]);
    let letters = dlq(&sy).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    for letter in &letters {
        assert_eq!(letter["function"], "f");
        assert_eq!(letter["condition"], "FunctionNotFound");
        assert_eq!(letter["errorType"], "ResourceNotFoundException");
        assert_eq!(letter["errorMessage"], "Function not found: f (not in the config)");
    }
    let dead: BTreeSet<String> = letters.iter().map(|l| l["requestId"].as_str().unwrap().to_string()).collect();
    assert_eq!(dead, ids, "the same events, under their request ids");

    // Paging through the store.
    let page = |query: String| {
        let url = sy.url(&format!("/v1/dlq?{query}"));
        async move { client().get(url).send().await.unwrap() }
    };
    let first: Value = page("limit=1".into()).await.json().await.unwrap();
    assert_eq!(first["deadLetters"][0]["id"], letters[0]["id"]);
    assert_eq!(first["next"], letters[0]["id"], "a full page has a next");
    let after: Value = page(format!("limit=1&after={}", first["next"])).await.json().await.unwrap();
    assert_eq!(after["deadLetters"][0]["id"], letters[1]["id"]);
    let rest: Value = page(format!("after={}", letters[1]["id"])).await.json().await.unwrap();
    assert_eq!((rest["deadLetters"].as_array().map(Vec::len), &rest["next"]), (Some(0), &Value::Null));
    for bad in ["limit=0", "limit=abc", "after=-1"] {
        let r = page(bad.into()).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        let message = r.json::<Value>().await.unwrap()["message"].as_str().unwrap().to_string();
        assert!(message.contains("expected a number"), "{bad}: {message}");
    }
    assert!(
        sy.logs().iter().any(|l| l["message"].as_str().is_some_and(|m| m.contains("no longer has"))
            && l["function"] == "f"
            && l["events"] == 2),
        "a warning names the function and its events"
    );

    // Replays leave them in the store, and say why.
    let first = letters[0]["id"].as_i64().unwrap();
    let one = client().post(sy.url(&format!("/v1/dlq/{first}/replay"))).send().await.unwrap();
    assert_eq!(one.status(), StatusCode::CONFLICT);
    let message = one.json::<Value>().await.unwrap()["message"].as_str().unwrap().to_string();
    assert!(message.contains("`f` is not in the config"), "{message}");
    let all: Value = client().post(sy.url("/v1/dlq/replay")).send().await.unwrap().json().await.unwrap();
    assert_eq!(all["replayed"], json!([]));
    assert_eq!(all["not_in_config"].as_array().map(Vec::len), Some(2), "{all}");
    let out = sy.cli(&["dlq", "replay", "--all"]);
    assert!(!out.status.success(), "the CLI fails when it replays nothing it was asked to");
    assert!(String::from_utf8_lossy(&out.stderr).contains("its function `f` is not in"));
    assert_eq!(dlq(&sy).await.len(), 2);
    drop(sy);

    // With f back (now answering), a replay delivers them.
    let f = FunctionServer::start(|_, _| ok()).await;
    let text = config(&f.url(), "", &async_hook());
    let sy = Switchyard::start_in(dir.path(), &text, &[]);
    cli_ok(&sy.cli(&["dlq", "replay", "--all"]));
    let calls = f.wait_for(2, Duration::from_secs(10)).await;
    let delivered: BTreeSet<String> = calls.iter().map(|c| header(c, "x-switchyard-request-id")).collect();
    assert_eq!(delivered, ids);
    assert!(g.received().is_empty());
}
