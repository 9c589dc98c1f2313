//! Lambda's Amazon MQ for RabbitMQ event: one message's JSON and the event
//! around a batch.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::DateTime;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde_json::{Number, Value, json};
use switchyard_sdk::{Envelope, PayloadField, object, write_json, write_str};

/// The account and region of every ARN Switchyard makes up.
const ARN_PREFIX: &str = "arn:aws:mq:us-east-1:000000000000:broker:switchyard";

/// The message as Lambda delivers it in `rmqMessagesByQueue`:
/// `{"basicProperties": {...}, "redelivered": bool, "data": "<base64 body>"}`.
///
/// Every property is present, `null` when the message has none; `bodySize`
/// is the body's length. Header values follow Lambda's example: text as
/// `{"bytes": [...]}`, numbers and booleans as they are, tables as objects,
/// arrays as arrays, timestamps like `timestamp`.
pub fn message_data(properties: &BasicProperties, redelivered: bool, body: &[u8]) -> Value {
    let properties = object([
        ("contentType", text(properties.content_type())),
        ("contentEncoding", text(properties.content_encoding())),
        ("headers", properties.headers().as_ref().map_or(Value::Null, table)),
        ("deliveryMode", properties.delivery_mode().map_or(Value::Null, Value::from)),
        ("priority", properties.priority().map_or(Value::Null, Value::from)),
        ("correlationId", text(properties.correlation_id())),
        ("replyTo", text(properties.reply_to())),
        ("expiration", text(properties.expiration())),
        ("messageId", text(properties.message_id())),
        ("timestamp", properties.timestamp().map_or(Value::Null, timestamp)),
        ("type", text(properties.kind())),
        ("userId", text(properties.user_id())),
        ("appId", text(properties.app_id())),
        ("clusterId", text(properties.cluster_id())),
        ("bodySize", Value::from(body.len())),
    ]);
    object([
        ("basicProperties", properties),
        ("redelivered", Value::from(redelivered)),
        ("data", Value::from(STANDARD.encode(body))),
    ])
}

/// When the publisher says it sent the message (the `timestamp` property,
/// whole seconds), else now.
pub fn created_at(properties: &BasicProperties) -> SystemTime {
    properties.timestamp().map_or_else(SystemTime::now, |seconds| UNIX_EPOCH + Duration::from_secs(seconds))
}

fn text(value: &Option<ShortString>) -> Value {
    value.as_ref().map_or(Value::Null, |s| Value::String(s.as_str().to_string()))
}

/// Lambda's poller prints AMQP timestamps (seconds) as a Java date in UTC:
/// `"Jan 1, 1970, 12:33:41 AM"`.
fn timestamp(seconds: u64) -> Value {
    match i64::try_from(seconds).ok().and_then(|s| DateTime::from_timestamp(s, 0)) {
        Some(at) => Value::String(at.format("%b %-d, %Y, %-I:%M:%S %p").to_string()),
        None => Value::Null,
    }
}

fn table(fields: &FieldTable) -> Value {
    Value::Object(fields.inner().iter().map(|(name, value)| (name.as_str().to_string(), header(value))).collect())
}

fn bytes(raw: &[u8]) -> Value {
    json!({ "bytes": raw })
}

fn header(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Float(n) => float(f64::from(*n)),
        AMQPValue::Double(n) => float(*n),
        AMQPValue::DecimalValue(d) => float(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => bytes(s.as_str().as_bytes()),
        AMQPValue::LongString(s) => bytes(s.as_bytes()),
        AMQPValue::FieldArray(items) => Value::Array(items.as_slice().iter().map(header).collect()),
        AMQPValue::Timestamp(seconds) => timestamp(*seconds),
        AMQPValue::FieldTable(fields) => table(fields),
        // A byte array is bytes without the wrapper object (Java's byte[]).
        AMQPValue::ByteArray(raw) => Value::from(raw.as_slice()),
        AMQPValue::Void => Value::Null,
    }
}

/// NaN and infinities have no JSON form.
fn float(n: f64) -> Value {
    Number::from_f64(n).map_or(Value::Null, Value::Number)
}

/// The made-up ARN of the broker at `host`:
/// `arn:aws:mq:us-east-1:000000000000:broker:switchyard:<host>`.
pub fn broker_arn(host: &str) -> String {
    format!("{ARN_PREFIX}:{host}")
}

/// `{"eventSource":"aws:rmq","eventSourceArn":...,"rmqMessagesByQueue":{"<queue>::<vhost>":[...]}}`.
#[derive(Debug, Clone)]
pub struct RabbitMqEnvelope {
    pub queue: String,
    pub vhost: String,
    pub source_arn: String,
}

impl RabbitMqEnvelope {
    pub fn new(queue: impl Into<String>, vhost: impl Into<String>, source_arn: impl Into<String>) -> Self {
        Self { queue: queue.into(), vhost: vhost.into(), source_arn: source_arn.into() }
    }
}

impl Envelope for RabbitMqEnvelope {
    // A mapping reads one queue, so every record of a batch goes under one key.
    fn write_event(&self, records: &[&Value], out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"eventSource":"aws:rmq","eventSourceArn":"#);
        write_str(out, &self.source_arn);
        out.extend_from_slice(br#","rmqMessagesByQueue":{"#);
        write_str(out, &format!("{}::{}", self.queue, self.vhost));
        out.push(b':');
        write_json(out, records);
        out.extend_from_slice(b"}}");
    }

    fn payload_fields(&self, _record: &Value) -> &'static [PayloadField] {
        const FIELDS: &[PayloadField] = &[PayloadField::base64("data")];
        FIELDS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{ByteArray, DecimalValue, FieldArray, LongString};

    /// The message of Lambda's documented example event, rebuilt.
    fn documented() -> (BasicProperties, Vec<u8>) {
        let mut headers = FieldTable::default();
        headers.insert("header1".into(), AMQPValue::LongString(LongString::from("value1")));
        headers.insert("header2".into(), AMQPValue::LongString(LongString::from("value2")));
        headers.insert("numberInHeader".into(), AMQPValue::LongInt(10));
        let properties = BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_headers(headers)
            .with_delivery_mode(1)
            .with_priority(34)
            .with_expiration("60000".into())
            .with_timestamp(2021)
            .with_user_id("AIDACKCEVSQ6C2EXAMPLE".into());
        (properties, br#"{"timeout":0,"data":"CZrmf0Gw8Ov4bqLQxD4E"}"#.to_vec())
    }

    #[test]
    fn message_matches_lambdas_documented_example() {
        let (properties, body) = documented();
        assert_eq!(
            message_data(&properties, false, &body),
            json!({
                "basicProperties": {
                    "contentType": "text/plain",
                    "contentEncoding": null,
                    "headers": {
                        "header1": {"bytes": [118, 97, 108, 117, 101, 49]},
                        "header2": {"bytes": [118, 97, 108, 117, 101, 50]},
                        "numberInHeader": 10
                    },
                    "deliveryMode": 1,
                    "priority": 34,
                    "correlationId": null,
                    "replyTo": null,
                    "expiration": "60000",
                    "messageId": null,
                    "timestamp": "Jan 1, 1970, 12:33:41 AM",
                    "type": null,
                    "userId": "AIDACKCEVSQ6C2EXAMPLE",
                    "appId": null,
                    "clusterId": null,
                    "bodySize": 43
                },
                "redelivered": false,
                "data": "eyJ0aW1lb3V0IjowLCJkYXRhIjoiQ1pybWYwR3c4T3Y0YnFMUXhENEUifQ=="
            })
        );
    }

    #[test]
    fn every_header_type_has_a_json_form() {
        let mut inner = FieldTable::default();
        inner.insert("n".into(), AMQPValue::ShortShortUInt(7));
        let mut headers = FieldTable::default();
        headers.insert("bool".into(), AMQPValue::Boolean(true));
        headers.insert("i64".into(), AMQPValue::LongLongInt(-5));
        headers.insert("f64".into(), AMQPValue::Double(1.5));
        headers.insert("nan".into(), AMQPValue::Double(f64::NAN));
        headers.insert("decimal".into(), AMQPValue::DecimalValue(DecimalValue { scale: 2, value: 12345 }));
        headers.insert("short".into(), AMQPValue::ShortString("hi".into()));
        headers.insert("raw".into(), AMQPValue::ByteArray(ByteArray::from(vec![0u8, 255])));
        headers.insert(
            "list".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString("a".into()), AMQPValue::LongInt(1)])),
        );
        headers.insert("table".into(), AMQPValue::FieldTable(inner));
        headers.insert("at".into(), AMQPValue::Timestamp(1_700_000_000));
        headers.insert("void".into(), AMQPValue::Void);
        let data = message_data(&BasicProperties::default().with_headers(headers), true, b"");
        assert_eq!(
            data["basicProperties"]["headers"],
            json!({
                "bool": true, "i64": -5, "f64": 1.5, "nan": null, "decimal": 123.45,
                "short": {"bytes": [104, 105]}, "raw": [0, 255],
                "list": [{"bytes": [97]}, 1], "table": {"n": 7},
                "at": "Nov 14, 2023, 10:13:20 PM", "void": null
            })
        );
        assert_eq!(data["redelivered"], true);
        assert_eq!(data["basicProperties"]["bodySize"], 0);
    }

    #[test]
    fn absent_properties_are_null() {
        let data = message_data(&BasicProperties::default(), false, b"x");
        let properties = data["basicProperties"].as_object().unwrap();
        assert_eq!(properties.len(), 15);
        assert!(properties.iter().all(|(key, value)| key == "bodySize" || value.is_null()), "{data}");
        assert_eq!(data["data"], "eA==");
    }

    #[test]
    fn event_groups_under_queue_and_vhost() {
        let envelope = RabbitMqEnvelope::new("orders", "/", broker_arn("mq.local"));
        let (a, b) = (json!({"data": "YQ=="}), json!({"data": "Yg=="}));
        assert_eq!(
            envelope.event(&[&a, &b]),
            json!({
                "eventSource": "aws:rmq",
                "eventSourceArn": "arn:aws:mq:us-east-1:000000000000:broker:switchyard:mq.local",
                "rmqMessagesByQueue": {"orders::/": [a, b]},
            })
        );
    }
}
