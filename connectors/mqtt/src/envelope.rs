//! One message's JSON, and the event around a batch.
//!
//! A record keeps the payload in base64 under `data`, like the RabbitMQ
//! record, so filters and transforms find it where they find every other
//! broker's payload. The event is built from that at invocation time, after
//! any transform: a mapping with batch size 1 gets the payload itself, as an
//! AWS IoT rule delivers it; a larger batch size gets the documented batch
//! shape, every time, even when a window closes on a single message.
//!
//! The source hands its records out deferred ([`MessageRecord`]): a
//! passthrough mapping's event is written straight from the messages, and a
//! record's JSON object is built only when a filter, a transform or a
//! failure destination reads it. Both ways write the same bytes (tested).

use std::any::Any;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::IgnoredAny;
use serde_json::Value;
use switchyard_sdk::{
    Deferred, Envelope, PayloadField, deferred_as, object, write_base64, write_json, write_list, write_str,
};

use crate::conn::Message;

/// The `eventSource` of a batch event.
pub const EVENT_SOURCE: &str = "switchyard:mqtt";

/// The record of one message:
///
/// ```json
/// {"topic": "devices/d1/telemetry", "qos": 1, "retain": false, "dup": false,
///  "messageId": 7, "receivedAt": "2025-01-01T12:00:00.123Z", "data": "<base64 payload>"}
/// ```
///
/// `messageId` is the MQTT packet identifier (`null` at QoS 0, which has
/// none); packet identifiers are reused once acknowledged, so it only names
/// the message among those in flight. `dup` is the broker's DUP flag, and
/// also true when the source hands a message out again after a `Retry`.
/// `receivedAt` is when this connection received it (MQTT carries no
/// publish time). MQTT 5 messages with properties add `"properties"`:
/// `contentType`, `payloadFormatIndicator`, `messageExpiryInterval`,
/// `responseTopic`, `correlationData` (base64), `userProperties` (`[[name,
/// value], ...]`, as names may repeat) and `subscriptionIdentifiers`, each
/// only when present.
pub(crate) fn message_data(message: &Message, received_at: SystemTime) -> Value {
    let mut data = object([
        ("topic", Value::from(message.topic.as_str())),
        ("qos", Value::from(message.qos)),
        ("retain", Value::from(message.retain)),
        ("dup", Value::from(message.dup)),
        ("messageId", if message.qos == 0 { Value::Null } else { Value::from(message.pkid) }),
        ("receivedAt", Value::from(rfc3339_ms(received_at))),
        ("data", Value::from(STANDARD.encode(&message.payload))),
    ]);
    if let (Some(properties), Some(object)) = (&message.properties, data.as_object_mut()) {
        object.insert("properties".into(), properties.clone());
    }
    data
}

/// An MQTT record as the source keeps it: the message, and when this
/// connection received it.
#[derive(Debug)]
pub(crate) struct MessageRecord {
    pub(crate) message: Message,
    pub(crate) received_at: SystemTime,
}

impl Deferred for MessageRecord {
    fn value(&self) -> Value {
        message_data(&self.message, self.received_at)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// One element of the batch's `records`, written from the message as
/// [`write_batch_record`] writes it from [`message_data`]'s object: its keys in
/// the object's (sorted) order, a JSON payload last under `payload`.
fn write_message_record(record: &MessageRecord, out: &mut Vec<u8>) {
    let message = &record.message;
    let json = is_json(&message.payload);
    out.push(b'{');
    if !json {
        out.extend_from_slice(br#""data":"#);
        write_base64(out, &message.payload);
        out.push(b',');
    }
    out.extend_from_slice(br#""dup":"#);
    write_json(out, &message.dup);
    out.extend_from_slice(br#","messageId":"#);
    match message.qos {
        0 => out.extend_from_slice(b"null"),
        _ => write_json(out, &message.pkid),
    }
    if let Some(properties) = &message.properties {
        out.extend_from_slice(br#","properties":"#);
        write_json(out, properties);
    }
    out.extend_from_slice(br#","qos":"#);
    write_json(out, &message.qos);
    out.extend_from_slice(br#","receivedAt":"#);
    write_str(out, &rfc3339_ms(record.received_at));
    out.extend_from_slice(br#","retain":"#);
    write_json(out, &message.retain);
    out.extend_from_slice(br#","topic":"#);
    write_str(out, &message.topic);
    if json {
        out.extend_from_slice(br#","payload":"#);
        out.extend_from_slice(&message.payload);
    }
    out.push(b'}');
}

/// `2025-01-01T12:00:00.123Z`.
pub(crate) fn rfc3339_ms(at: SystemTime) -> String {
    DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The event of a batch of MQTT records.
///
/// - Batch size 1 ([`MqttEnvelope::single`]): the payload itself when it is
///   JSON, as an AWS IoT rule's `SELECT *` delivers it; otherwise
///   `{"data": "<base64>"}`, the shape of the rule idiom `SELECT
///   encode(*, 'base64') AS data`.
/// - Otherwise ([`MqttEnvelope::batch`]): `{"eventSource":
///   "switchyard:mqtt", "records": [...]}` where each record is its message's
///   JSON with the payload as `"payload"` (the JSON value itself, as it came)
///   when it is JSON, else kept as `"data"` (base64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MqttEnvelope {
    single: bool,
}

impl MqttEnvelope {
    /// For a mapping whose batch size is `batch_size`.
    pub fn for_batch_size(batch_size: usize) -> Self {
        Self { single: batch_size == 1 }
    }

    /// Each event is one message's payload.
    pub fn single() -> Self {
        Self { single: true }
    }

    /// Each event is the batch shape, whatever the number of records.
    pub fn batch() -> Self {
        Self { single: false }
    }
}

/// The payload bytes of a record; `None` when a transform removed or broke
/// the field.
fn payload(record: &Value) -> Option<Vec<u8>> {
    PayloadField::base64("data").bytes(record).map(|bytes| bytes.into_owned())
}

fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<IgnoredAny>(bytes).is_ok()
}

/// The message payload as the single-message event: the JSON payload as it
/// came, byte for byte, else `{"data": "<base64>"}`.
fn write_payload_event(record: &Value, out: &mut Vec<u8>) {
    match payload(record) {
        Some(bytes) if is_json(&bytes) => out.extend_from_slice(&bytes),
        Some(_) => {
            out.extend_from_slice(br#"{"data":"#);
            write_json(out, &record["data"]);
            out.push(b'}');
        }
        None => write_json(out, record),
    }
}

/// One element of the batch's `records`: the record with a JSON payload
/// under `payload` as it came, else the record as it is.
fn write_batch_record(record: &Value, out: &mut Vec<u8>) {
    let (Some(object), Some(bytes)) = (record.as_object(), payload(record)) else {
        return write_json(out, record);
    };
    if !is_json(&bytes) {
        return write_json(out, record);
    }
    out.push(b'{');
    for (key, value) in object.iter().filter(|(key, _)| key.as_str() != "data") {
        write_str(out, key);
        out.push(b':');
        write_json(out, value);
        out.push(b',');
    }
    out.extend_from_slice(br#""payload":"#);
    out.extend_from_slice(&bytes);
    out.push(b'}');
}

/// `{"eventSource": "switchyard:mqtt", "records": [...]}`, each record
/// written by `write`.
fn write_batch<T>(records: &[T], out: &mut Vec<u8>, write: impl Fn(&T, &mut Vec<u8>)) {
    out.extend_from_slice(br#"{"eventSource":"#);
    write_str(out, EVENT_SOURCE);
    out.extend_from_slice(br#","records":"#);
    write_list(out, records, write);
    out.push(b'}');
}

impl Envelope for MqttEnvelope {
    fn write_event(&self, records: &[&Value], out: &mut Vec<u8>) {
        if let ([one], true) = (records, self.single) {
            return write_payload_event(one, out);
        }
        write_batch(records, out, |record, out| write_batch_record(record, out));
    }

    fn write_deferred(&self, records: &[&dyn Deferred], out: &mut Vec<u8>) -> bool {
        let Some(messages) = deferred_as::<MessageRecord>(records) else {
            return false;
        };
        if let ([one], true) = (messages.as_slice(), self.single) {
            let payload = &one.message.payload;
            if is_json(payload) {
                out.extend_from_slice(payload);
            } else {
                out.extend_from_slice(br#"{"data":"#);
                write_base64(out, payload);
                out.push(b'}');
            }
            return true;
        }
        write_batch(&messages, out, |record, out| write_message_record(record, out));
        true
    }

    fn payload_fields(&self, _record: &Value) -> &'static [PayloadField] {
        const FIELDS: &[PayloadField] = &[PayloadField::base64("data")];
        FIELDS
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use bytes::Bytes;
    use serde_json::json;

    use super::*;

    fn message(payload: &'static [u8], qos: u8) -> Message {
        Message {
            topic: "devices/d1/telemetry".into(),
            payload: Bytes::from_static(payload),
            qos,
            retain: false,
            dup: false,
            pkid: if qos == 0 { 0 } else { 7 },
            properties: None,
        }
    }

    const AT: Duration = Duration::from_millis(1_700_000_000_123);

    #[test]
    fn record_shape() {
        let data = message_data(&message(br#"{"t":21.5}"#, 1), UNIX_EPOCH + AT);
        assert_eq!(
            data,
            json!({
                "topic": "devices/d1/telemetry", "qos": 1, "retain": false, "dup": false, "messageId": 7,
                "receivedAt": "2023-11-14T22:13:20.123Z", "data": "eyJ0IjoyMS41fQ==",
            })
        );
        let mut with_properties = message(b"x", 0);
        with_properties.properties = Some(json!({"contentType": "text/plain"}));
        let data = message_data(&with_properties, UNIX_EPOCH + AT);
        assert_eq!(data["messageId"], Value::Null, "QoS 0 has no packet identifier");
        assert_eq!(data["properties"], json!({"contentType": "text/plain"}));
    }

    #[test]
    fn single_events_are_the_payload() {
        let envelope = MqttEnvelope::for_batch_size(1);
        let json_record = message_data(&message(br#"{"t":21.5}"#, 1), UNIX_EPOCH + AT);
        assert_eq!(envelope.event(&[&json_record]), json!({"t": 21.5}));
        let binary = message_data(&message(&[0xff, 0x00, 0x01], 1), UNIX_EPOCH + AT);
        assert_eq!(envelope.event(&[&binary]), json!({"data": "/wAB"}));
        let text = message_data(&message(b"on", 1), UNIX_EPOCH + AT);
        assert_eq!(envelope.event(&[&text]), json!({"data": "b24="}), "text that is not JSON stays base64");
        assert_eq!(envelope.event(&[&json_record, &binary])["records"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn batch_events_keep_metadata_and_parse_json() {
        let envelope = MqttEnvelope::for_batch_size(500);
        let json_record = message_data(&message(br#"[1,2]"#, 1), UNIX_EPOCH + AT);
        let binary = message_data(&message(&[0xff], 0), UNIX_EPOCH + AT);
        assert_eq!(
            envelope.event(&[&json_record]),
            json!({"eventSource": "switchyard:mqtt", "records": [{
                "topic": "devices/d1/telemetry", "qos": 1, "retain": false, "dup": false, "messageId": 7,
                "receivedAt": "2023-11-14T22:13:20.123Z", "payload": [1, 2],
            }]}),
            "a batch of one keeps the batch shape"
        );
        let event = envelope.event(&[&json_record, &binary]);
        assert_eq!(event["records"][1], binary, "binary payloads stay base64 under data");
        assert_eq!(event["records"][0]["payload"], json!([1, 2]));
        assert!(event["records"][0].get("data").is_none());
    }

    #[test]
    fn filters_see_the_payload_under_data() {
        let envelope = MqttEnvelope::batch();
        let record = message_data(&message(br#"{"t":1}"#, 1), UNIX_EPOCH + AT);
        let fields = envelope.payload_fields(&record);
        assert_eq!(fields, [PayloadField::base64("data")]);
        assert_eq!(fields[0].bytes(&record).as_deref(), Some(&br#"{"t":1}"#[..]));
    }

    #[test]
    fn deferred_records_write_the_same_event() {
        let mut with_properties = message(br#"{"a":[1,{"b":null}]}"#, 1);
        with_properties.properties = Some(json!({"contentType": "application/json", "userProperties": [["k", "v"]]}));
        with_properties.topic = "devices/\"quoted\"/é".into();
        let mut retained = message(&[0xff, 0x00, 0x01], 0);
        retained.retain = true;
        retained.dup = true;
        let messages = [
            message(br#"{"t":21.5}"#, 1),
            message(b"on", 1),
            message(b" [1, 2] ", 0),
            message(b"", 1),
            with_properties,
            retained,
        ];
        let records: Vec<MessageRecord> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| MessageRecord {
                message: m.clone(),
                received_at: UNIX_EPOCH + AT + Duration::from_millis(i as u64),
            })
            .collect();
        let values: Vec<Value> = records.iter().map(Deferred::value).collect();
        for envelope in [MqttEnvelope::single(), MqttEnvelope::batch()] {
            for n in 0..=records.len() {
                for start in 0..records.len() - n.min(records.len()) + 1 {
                    let deferred: Vec<&dyn Deferred> =
                        records[start..start + n].iter().map(|r| r as &dyn Deferred).collect();
                    let value_refs: Vec<&Value> = values[start..start + n].iter().collect();
                    let (mut direct, mut written) = (Vec::new(), Vec::new());
                    assert!(envelope.write_deferred(&deferred, &mut direct));
                    envelope.write_event(&value_refs, &mut written);
                    assert_eq!(
                        String::from_utf8_lossy(&direct),
                        String::from_utf8_lossy(&written),
                        "{envelope:?}, records {start}..{}",
                        start + n
                    );
                }
            }
        }
    }

    #[test]
    fn records_without_a_payload_pass_through() {
        let broken = json!({"topic": "t", "data": "not base64!"});
        assert_eq!(MqttEnvelope::single().event(&[&broken]), broken);
        assert_eq!(MqttEnvelope::batch().event(&[&broken])["records"][0], broken);
    }
}
