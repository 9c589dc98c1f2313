use std::time::SystemTime;

use serde_json::json;
use switchyard_sdk::SingleEnvelope;

use super::*;
use crate::config::Config;

/// A webhook mapping with `extra` YAML under it, parsed like a real config.
fn mapping(extra: &str) -> Result<MappingConfig, String> {
    let text = format!(
        "functions:\n  f:\n    http: {{ url: http://127.0.0.1:7000/ }}\nmappings:\n  - name: m\n    function: f\n    source: {{ webhook: {{ path: /h }} }}\n{}",
        extra.lines().map(|l| format!("    {l}\n")).collect::<String>()
    );
    Config::parse("test.yaml", &text, |_| None).map(|c| c.mappings[0].clone()).map_err(|e| e.to_string())
}

fn shaper(extra: &str) -> Shaper {
    Shaper::new(&mapping(extra).unwrap()).unwrap()
}

fn webhook(body: &str) -> Value {
    json!({"rawPath": "/h", "body": body, "isBase64Encoded": false, "headers": {"x-kind": "order"}})
}

#[test]
fn filters_see_the_parsed_body_and_metadata() {
    let s = shaper(
        "filters:\n  - pattern: { body: { state: [paid] }, headers: { x-kind: [order] } }\n  - pattern: '{\"body\": {\"total\": [{\"numeric\": [\">\", 100]}]}}'",
    );
    assert_eq!(s.admit(&WebhookEnvelope, &mut webhook(r#"{"state":"paid"}"#)), Admit::Keep);
    assert_eq!(s.admit(&WebhookEnvelope, &mut webhook(r#"{"state":"new","total":250}"#)), Admit::Keep);
    assert_eq!(s.admit(&WebhookEnvelope, &mut webhook(r#"{"state":"new","total":5}"#)), Admit::Skip);
    assert_eq!(s.admit(&WebhookEnvelope, &mut webhook("not json")), Admit::Skip);
}

#[test]
fn record_transform_rewrites_the_payload_where_the_source_keeps_it() {
    let s = shaper("transform: { record: '{id: .body.id, kind: .headers[\"x-kind\"]}' }");
    let mut record = webhook(r#"{"id": 7, "noise": true}"#);
    assert_eq!(s.admit(&WebhookEnvelope, &mut record), Admit::Keep);
    assert_eq!(record["body"], r#"{"id":7,"kind":"order"}"#);
    assert_eq!(record["rawPath"], "/h", "metadata is kept");

    // A transform that yields nothing drops the record; one that fails names the jq error.
    let s = shaper("transform: { record: 'select(.body.keep)' }");
    assert_eq!(s.admit(&WebhookEnvelope, &mut webhook(r#"{"keep": false}"#)), Admit::Skip);
    let s = shaper("transform: { record: '.body.n | ascii_downcase' }");
    match s.admit(&WebhookEnvelope, &mut webhook(r#"{"n": 1}"#)) {
        Admit::Fail(e) => assert!(e.starts_with("jq error"), "{e}"),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn input_transformer_fills_the_template() {
    let s = shaper(
        "transform:\n  input_paths: { id: $.body.id, kind: '$.headers[''x-kind'']' }\n  input_template: '{\"order\": <id>, \"text\": \"<kind> <id>\"}'",
    );
    let mut record = webhook(r#"{"id": 7}"#);
    assert_eq!(s.admit(&WebhookEnvelope, &mut record), Admit::Keep);
    let body: Value = serde_json::from_str(record["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, json!({"order": 7, "text": "order 7"}));
}

#[test]
fn formats_and_batch_transform() {
    let at = SystemTime::UNIX_EPOCH;
    let (a, b) = (json!({"n": 1}), json!({"n": 2}));
    let items = [Item { id: "1", time: at, data: &a }, Item { id: "2", time: at, data: &b }];
    let s = shaper("format: raw\ntransform: { batch: 'map(.n) | add' }");
    assert_eq!(s.event(&SingleEnvelope, &items).unwrap().payload, Bytes::from_static(b"3"));
    let s = shaper("format: cloudevents");
    let event: Value = serde_json::from_slice(&s.event(&SingleEnvelope, &items[..1]).unwrap().payload).unwrap();
    assert_eq!(event["type"], "switchyard.webhook");
    assert_eq!(event["source"], "/switchyard/mappings/m");
    assert_eq!(event["data"], a);
    let s = shaper("format: { cloudevents: { type: com.example.order, source: /orders } }");
    let event: Value = serde_json::from_slice(&s.event(&SingleEnvelope, &items[..1]).unwrap().payload).unwrap();
    assert_eq!((event["type"].as_str(), event["source"].as_str()), (Some("com.example.order"), Some("/orders")));
    let s = shaper("transform: { batch: '.n | ascii_downcase' }");
    assert!(s.event(&SingleEnvelope, &items[..1]).unwrap_err().starts_with("batch transform: jq error"));
    assert!(shaper("").is_passthrough());
    assert!(!shaper("format: raw").is_passthrough());
}

#[test]
fn config_errors_name_the_key() {
    // Config loading checks the shaper: errors come with the mapping's key path.
    let error = |extra: &str| mapping(extra).expect_err("expected a config error");
    let cases = [
        (
            "filters: [ { pattern: { body: { state: [ { prefx: a } ] } } } ]",
            "mappings[0].filters[0].pattern.body.state[0].prefx: unknown operator",
        ),
        (
            "filters: [ { pattern: 'not json' } ]",
            "mappings[0].filters[0].pattern: expected an event pattern as JSON text",
        ),
        ("transform: { record: '{a: ' }", "mappings[0].transform.record: cannot parse jq program"),
        ("transform: { batch: 'nosuch(1)' }", "mappings[0].transform.batch: cannot compile jq program"),
        ("transform: { record: '.', input_template: 'x' }", "mappings[0].transform: expected either record"),
        ("transform: { input_paths: { a: $.x } }", "mappings[0].transform.input_template: expected a template"),
        (
            "transform: { input_paths: { a: x }, input_template: '<a>' }",
            "mappings[0].transform.input_paths.a: \"x\": expected a JSONPath",
        ),
        ("format: protobuf", "mappings[0].format: unknown format \"protobuf\""),
        ("format: { cloudevents: { mode: fast } }", "mappings[0].format: unknown variant `fast`"),
    ];
    for (extra, expected) in cases {
        let e = error(extra);
        assert!(e.contains(expected), "{extra}\n  got: {e}\n  expected: {expected}");
    }
    // Binary mode is fine on a sync webhook, not on an async one.
    let with_mode = |mode: &str| {
        Config::parse("t.yaml", &format!(
            "functions:\n  f:\n    http: {{ url: http://127.0.0.1:7000/ }}\nmappings:\n  - name: m\n    function: f\n    source: {{ webhook: {{ path: /h, mode: {mode} }} }}\n    format: {{ cloudevents: {{ mode: binary }} }}\n"
        ), |_| None).map_err(|e| e.to_string())
    };
    assert!(with_mode("sync").is_ok());
    assert!(
        with_mode("async")
            .unwrap_err()
            .contains("mappings[0].format.cloudevents.mode: binary mode needs a synchronous path")
    );
}
