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

/// A source with two base64 payloads at the top level, as Kafka's `value`
/// and `key`.
struct TwoPayloads;

impl Envelope for TwoPayloads {
    fn write_event(&self, records: &[&Value], out: &mut Vec<u8>) {
        SingleEnvelope.write_event(records, out);
    }

    fn payload_fields(&self, _: &Value) -> &'static [PayloadField] {
        const FIELDS: &[PayloadField] = &[PayloadField::base64("value"), PayloadField::base64("key")];
        FIELDS
    }
}

/// A source whose payload sits inside a top-level object, as Kinesis's
/// `kinesis.data`.
struct NestedPayload;

impl Envelope for NestedPayload {
    fn write_event(&self, records: &[&Value], out: &mut Vec<u8>) {
        SingleEnvelope.write_event(records, out);
    }

    fn payload_fields(&self, _: &Value) -> &'static [PayloadField] {
        const FIELDS: &[PayloadField] = &[PayloadField::base64("data").inside("kinesis")];
        FIELDS
    }
}

#[test]
fn reading_only_what_is_read_admits_and_shapes_the_same() {
    use base64::Engine;
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let payloads = [
        r#"{"state": "paid", "total": 250, "items": [{"sku": "a", "n": 1}, {"sku": "b"}], "meta": {"x": [1, {"y": 2}]}}"#,
        r#"{"state": "new", "total": 5, "items": {"one": {"sku": "c"}}, "meta": null}"#,
        r#"{"items": [], "total": "250", "state": ["paid", "new"]}"#,
        r#"[{"state": "paid"}, 3]"#,
        "not json at all",
        r#"{"total": 1e400}"#,
    ];
    let configs = [
        "filters:\n  - pattern: { body: { state: [paid] } }\n  - pattern: { value: { total: [{ numeric: ['>', 100] }] } }",
        "filters:\n  - pattern: { data: { items: { sku: [{ prefix: a }] } } }\n  - pattern: { key: [{ exists: false }] }",
        "filters:\n  - pattern: { headers: { x-kind: [order] } }\ntransform: { record: '{s: .body.state, n: (.body.items | length), m: (.data.meta // .value.meta)}' }",
        "transform: { record: '{first: .body.items[0].sku, k: .key, p: .kinesis.partitionKey, all: (.data | length)}' }",
        "transform: { record: '[.value.items[].sku]' }",
        "transform:\n  input_paths: { s: $.body.state, sku: '$.data.items[1].sku', t: $.value.total }\n  input_template: '{\"s\": <s>, \"sku\": \"<sku>\", \"t\": <t>}'",
    ];
    let envelopes: [(&dyn Envelope, &str); 3] =
        [(&WebhookEnvelope, "webhook"), (&TwoPayloads, "kafka"), (&NestedPayload, "kinesis")];
    let mut kept = 0;
    for config in configs {
        let reading = shaper(config);
        let mut whole = shaper(config);
        whole.reads = Reads::All;
        for payload in payloads {
            for (envelope, kind) in envelopes {
                let record = match kind {
                    "webhook" => webhook(payload),
                    "kafka" => json!({"topic": "t", "value": b64(payload), "key": b64(r#"{"id": 1}"#)}),
                    _ => json!({"eventSource": "aws:kinesis", "kinesis": {"partitionKey": "p", "data": b64(payload)}}),
                };
                let (mut a, mut b) = (record.clone(), record.clone());
                let (admitted, expected) = (reading.admit(envelope, &mut a), whole.admit(envelope, &mut b));
                assert_eq!(admitted, expected, "{config}\non {kind} record {record}");
                assert_eq!(a, b, "{config}\non {kind} record {record}");
                kept += usize::from(admitted == Admit::Keep);
            }
        }
    }
    assert!(kept > 20, "only {kept} records kept: the cases must exercise transforms");
}
