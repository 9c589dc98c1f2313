//! Filters, transforms and event formats end to end: the real binary, real
//! webhooks, a real RabbitMQ queue, and the `pattern test` command.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{BIN, FunctionServer, Switchyard, client, eventually};
use serde_json::{Value, json};

fn webhook(path: &str, mode: &str, extra: &str) -> String {
    format!("  - name: hook\n    function: f\n    source: {{ webhook: {{ path: {path}, mode: {mode} }} }}\n{extra}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_webhook_filters_transforms_and_sends_binary_cloudevents() {
    let function =
        FunctionServer::start(|_, _| (200, vec![], json!({"statusCode": 200, "body": "done"}).to_string())).await;
    let extra = r#"    filters:
      - pattern: { body: { state: [paid], total: [{ numeric: [">", 0] }] } }
      - pattern: { headers: { x-priority: [{ prefix: urgent }] } }
    transform: { record: '{order: .body.id, total: .body.total, priority: (.headers["x-priority"] // "normal")}' }
    format: { cloudevents: { mode: binary, type: com.example.order.paid, source: /shop } }
"#;
    let sy = Switchyard::start(&common::config(&function.url(), "", &webhook("/orders", "sync", extra)));
    let http = client();
    let post = |body: Value, priority: Option<&str>| {
        let mut request = http.post(sy.url("/orders")).json(&body);
        if let Some(p) = priority {
            request = request.header("x-priority", p);
        }
        request.send()
    };

    let paid = post(json!({"id": "o-1", "state": "paid", "total": 12.5}), None).await.unwrap();
    assert_eq!(paid.status(), 200);
    assert_eq!(paid.text().await.unwrap(), "done");
    let skipped = post(json!({"id": "o-2", "state": "new", "total": 3}), None).await.unwrap();
    assert_eq!(skipped.status(), 204, "no pattern matches: acknowledged without invoking");
    assert_eq!(skipped.headers()["x-switchyard-filtered"], "true");
    let urgent = post(json!({"id": "o-3", "state": "new"}), Some("urgent-1")).await.unwrap();
    assert_eq!(urgent.status(), 200, "the second pattern matches on a header");

    let got = function.received();
    assert_eq!(got.len(), 2, "only matching requests reach the function");
    assert_eq!(got[0].body, json!({"order": "o-1", "total": 12.5, "priority": "normal"}));
    assert_eq!(got[1].body, json!({"order": "o-3", "total": null, "priority": "urgent-1"}));
    let r = &got[0];
    assert_eq!(r.header("ce-specversion"), Some("1.0"));
    assert_eq!(r.header("ce-type"), Some("com.example.order.paid"));
    assert_eq!(r.header("ce-source"), Some("/shop"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("ce-id").is_some_and(|id| !id.is_empty()) && r.header("ce-time").is_some());
    assert_ne!(got[0].header("ce-id"), got[1].header("ce-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_transform_answers_422_sync_and_dead_letters_async() {
    let function = FunctionServer::echo().await;
    let transform = "    transform: { record: '.body.name | ascii_downcase' }\n    format: raw\n";
    let mappings = format!("{}{}", webhook("/sync", "sync", transform), webhook("/async", "async", transform))
        .replacen("name: hook", "name: hook-sync", 1)
        .replacen("name: hook\n", "name: hook-async\n", 1);
    let sy = Switchyard::start(&common::config(&function.url(), "", &mappings));
    let http = client();

    let bad = http.post(sy.url("/sync")).json(&json!({"name": 42})).send().await.unwrap();
    assert_eq!(bad.status(), 422);
    let message = bad.json::<Value>().await.unwrap()["message"].as_str().unwrap().to_string();
    assert!(message.contains("transform failed: jq error"), "{message}");

    let good = http.post(sy.url("/async")).json(&json!({"name": "ADA"})).send().await.unwrap();
    assert_eq!(good.status(), 202);
    let bad = http.post(sy.url("/async")).json(&json!({"name": ["x"]})).send().await.unwrap();
    assert_eq!(bad.status(), 202, "the event is kept, in the dead-letter store");
    let bad: Value = bad.json().await.unwrap();
    assert_eq!(bad["deadLettered"], true);

    // format: raw with a string output: the function gets the text itself.
    let got = function.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].body, json!("ada"));
    let list = sy.cli(&["dlq", "list", "--json"]);
    let entries: Value = serde_json::from_slice(&list.stdout).unwrap();
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["condition"], "TransformFailed");
    assert_eq!(entries[0]["requestId"], bad["requestId"], "the entry keeps the id its 202 gave");
    assert_eq!(entries[0]["payload"]["requestContext"]["requestId"], bad["requestId"], "and so does its event");
    assert_eq!(entries[0]["errorType"], "TransformError");
    assert!(entries[0]["errorMessage"].as_str().unwrap().contains("jq error"), "{}", entries[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_transformer_and_batch_transform() {
    let function = FunctionServer::echo().await;
    let extra = r#"    transform:
      input_paths: { id: $.body.id, who: $.body.user.name }
      input_template: '{"text": "<who> placed <id>", "id": <id>, "route": "<aws.events.rule-name>"}'
      batch: '{wrapped: ., raw: (.body | fromjson)}'
"#;
    let sy = Switchyard::start(&common::config(&function.url(), "", &webhook("/in", "sync", extra)));
    let answer = client().post(sy.url("/in")).json(&json!({"id": 9, "user": {"name": "Grace"}})).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let got = function.received();
    assert_eq!(got[0].body["raw"], json!({"text": "Grace placed 9", "id": 9, "route": "hook"}));
    assert_eq!(got[0].body["wrapped"]["rawPath"], "/in", "the batch transform sees Lambda's event");
}

#[test]
fn pattern_test_answers_with_its_exit_code() {
    let run = |pattern: &str, event: &str| {
        let out = Command::new(BIN).args(["pattern", "test", "--pattern", pattern, "--event", event]).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let pattern = r#"{"source": ["shop"], "detail": {"total": [{"numeric": [">=", 100]}]}}"#;
    assert_eq!(run(pattern, r#"{"source": "shop", "detail": {"total": 120}}"#).0, Some(0));
    assert_eq!(run(pattern, r#"{"source": "shop", "detail": {"total": 120}}"#).1, "true");
    let no = run(pattern, r#"{"source": "shop", "detail": {"total": 99.5}}"#);
    assert_eq!((no.0, no.1.as_str()), (Some(1), "false"));
    let bad = run(r#"{"detail": {"total": [{"numeric": ["≥", 1]}]}}"#, "{}");
    assert_eq!(bad.0, Some(2));
    assert!(bad.2.contains("invalid pattern: detail.total[0].numeric"), "{}", bad.2);
    let bad_event = run(pattern, "{not json");
    assert_eq!(bad_event.0, Some(2));
    assert!(bad_event.2.contains("invalid event"), "{}", bad_event.2);
    // Files work too, as @FILE.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.json");
    std::fs::write(&file, pattern).unwrap();
    let at = format!("@{}", file.display());
    assert_eq!(run(&at, r#"{"source": "shop", "detail": {"total": 100}}"#).0, Some(0));
}

/// Polls `f` until it answers; used by the RabbitMQ case below.
async fn within<T>(what: &str, f: impl AsyncFnMut() -> Option<T>) -> T {
    eventually(Duration::from_secs(30), what, f).await
}

#[cfg(feature = "rabbitmq")]
mod rabbitmq {
    use base64::Engine as _;
    use lapin::options::{
        BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::{FieldTable, ShortString};
    use lapin::{BasicProperties, Connection, ConnectionProperties};

    use super::*;

    fn short(s: &str) -> ShortString {
        ShortString::try_new(s).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn polled_records_are_filtered_per_record_transformed_and_all_acknowledged() {
        let url = std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string());
        let connection = Connection::connect(&url, ConnectionProperties::default()).await.unwrap_or_else(|e| {
            panic!("RabbitMQ at {url} is not reachable ({e}); it runs on every machine of this project")
        });
        let ch = connection.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let queue = format!("readings-{}", uuid::Uuid::new_v4().simple());
        ch.queue_declare(
            short(&queue),
            QueueDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
        // 20 readings: even ones are hot; reading 7 carries a unit the transform cannot handle.
        for i in 0..20 {
            let body = if i == 7 {
                json!({"sensor": i, "celsius": "broken", "hot": false}).to_string()
            } else {
                json!({"sensor": i, "celsius": 20 + i, "hot": i % 2 == 0}).to_string()
            };
            ch.basic_publish(
                short(""),
                short(&queue),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
        // Also a message that is not JSON: no pattern on `data` can match it.
        ch.basic_publish(
            short(""),
            short(&queue),
            BasicPublishOptions::default(),
            b"plain",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();

        let function = FunctionServer::echo().await;
        let mapping = format!(
            r#"  - name: readings
    function: f
    source: {{ rabbitmq: {{ url: "{url}", queue: {queue} }} }}
    batch: {{ size: 5, window: 200ms }}
    filters:
      - pattern: {{ data: {{ hot: [true] }} }}
      - pattern: {{ data: {{ sensor: [7] }} }}
    transform: {{ record: '{{sensor: .data.sensor, fahrenheit: (.data.celsius * 9 / 5 + 32)}}' }}
    format: raw
    on_failure: {{ dlq: {{}} }}
"#
        );
        let mut sy = Switchyard::start(&common::config(&function.url(), "", &mapping));
        let expected: Vec<i64> = (0..20).filter(|i| i % 2 == 0).collect();
        let seen = within("the 10 hot readings", async || {
            let mut seen: Vec<i64> = function
                .received()
                .iter()
                .flat_map(|r| r.body.as_array().cloned().unwrap_or_else(|| vec![r.body.clone()]))
                .map(|v| v["sensor"].as_i64().unwrap())
                .collect();
            seen.sort();
            (seen.len() >= expected.len()).then_some(seen)
        })
        .await;
        assert_eq!(seen, expected, "only the hot readings, each once");
        let first = function.received()[0].body.clone();
        let one = first.as_array().map(|a| a[0].clone()).unwrap_or(first);
        assert_eq!(one["fahrenheit"], json!((20.0 + one["sensor"].as_f64().unwrap()) * 9.0 / 5.0 + 32.0));

        // Reading 7 failed its transform: in the dead-letter store with the jq error.
        let entry = within("the dead letter of reading 7", async || {
            let out = sy.cli(&["dlq", "list", "--json"]);
            let list: Value = serde_json::from_slice(&out.stdout).ok()?;
            list.as_array()?.first().cloned()
        })
        .await;
        assert_eq!(entry["condition"], "TransformFailed");
        let record = entry["payload"]["rmqMessagesByQueue"].as_object().unwrap().values().next().unwrap()[0].clone();
        let data = base64::engine::general_purpose::STANDARD.decode(record["data"].as_str().unwrap()).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&data).unwrap()["sensor"], 7, "the original record is kept");

        // Everything was acknowledged, filtered records included (a graceful
        // stop, as in tests/rabbitmq.rs).
        sy.stop();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let left = ch.basic_get(short(&queue), BasicGetOptions::default()).await.unwrap();
        assert!(left.is_none(), "no message left unacknowledged");
        let _ = ch.queue_delete(short(&queue), QueueDeleteOptions::default()).await;
    }
}
