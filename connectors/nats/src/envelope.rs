//! One JetStream message's JSON, and the event around a batch of them.
//!
//! The source hands unordered records out deferred ([`MessageRecord`]): a
//! passthrough mapping's event is written straight from the messages, and a
//! record's JSON object (and its base64 payload) is built only when a
//! filter, a transform or a failure destination reads it. Both ways write
//! the same bytes (tested).

use std::any::Any;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::{HeaderMap, Subject};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use switchyard_sdk::{
    Deferred, Envelope, PayloadField, deferred_as, object, write_base64, write_json, write_list, write_str,
};

/// What a JetStream delivery says about the message besides its subject,
/// headers and payload (the `$JS.ACK` reply subject carries it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub stream: String,
    pub consumer: String,
    /// How often the server delivered it, this time included (1 at first).
    pub delivered: u64,
    pub stream_sequence: u64,
    pub consumer_sequence: u64,
    /// When the stream stored it, in nanoseconds since the Unix epoch.
    pub published_nanos: i128,
    /// Messages left for the consumer after this one.
    pub pending: u64,
}

impl Delivery {
    /// Reads the reply subject of a delivery:
    /// `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<nanos>.<pending>`,
    /// or the longer form servers with domains write
    /// (`$JS.ACK.<domain>.<account hash>.<stream>...`, possibly with more tokens).
    /// `None` when it is not one.
    pub fn from_reply(reply: &str) -> Option<Self> {
        let rest = reply.strip_prefix("$JS.ACK.")?;
        let tokens: Vec<&str> = rest.split('.').collect();
        let fields = match tokens.len() {
            7 => &tokens[..],
            n if n >= 9 => &tokens[2..9],
            _ => return None,
        };
        Some(Self {
            stream: fields[0].to_string(),
            consumer: fields[1].to_string(),
            delivered: fields[2].parse().ok()?,
            stream_sequence: fields[3].parse().ok()?,
            consumer_sequence: fields[4].parse().ok()?,
            published_nanos: fields[5].parse().ok()?,
            pending: fields[6].parse().ok()?,
        })
    }

    /// When the stream stored the message; the epoch when the server wrote a
    /// time before it.
    pub fn published(&self) -> SystemTime {
        let nanos = u64::try_from(self.published_nanos).unwrap_or(0);
        UNIX_EPOCH + Duration::from_nanos(nanos)
    }
}

/// The record of one message (see the crate documentation for each key).
pub fn message_data(subject: &str, delivery: &Delivery, headers: Option<&HeaderMap>, payload: &[u8]) -> Value {
    object([
        ("subject", Value::from(subject)),
        ("stream", Value::from(delivery.stream.as_str())),
        ("consumer", Value::from(delivery.consumer.as_str())),
        ("streamSequence", Value::from(delivery.stream_sequence)),
        ("consumerSequence", Value::from(delivery.consumer_sequence)),
        ("deliveryCount", Value::from(delivery.delivered)),
        ("timestamp", Value::from(timestamp(delivery.published()))),
        ("headers", headers.map_or_else(|| Value::Object(Map::new()), header_object)),
        ("data", Value::from(STANDARD.encode(payload))),
    ])
}

/// A record as the source keeps it: the message's parts.
#[derive(Debug)]
pub struct MessageRecord {
    pub subject: Subject,
    pub delivery: Delivery,
    pub headers: Option<HeaderMap>,
    pub payload: Bytes,
}

impl Deferred for MessageRecord {
    fn value(&self) -> Value {
        message_data(&self.subject, &self.delivery, self.headers.as_ref(), &self.payload)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Writes the record as [`message_data`]'s object serializes: its keys in
/// the object's (sorted) order.
fn write_message_record(record: &MessageRecord, out: &mut Vec<u8>) {
    let delivery = &record.delivery;
    out.extend_from_slice(br#"{"consumer":"#);
    write_str(out, &delivery.consumer);
    out.extend_from_slice(br#","consumerSequence":"#);
    write_json(out, &delivery.consumer_sequence);
    out.extend_from_slice(br#","data":"#);
    write_base64(out, &record.payload);
    out.extend_from_slice(br#","deliveryCount":"#);
    write_json(out, &delivery.delivered);
    out.extend_from_slice(br#","headers":"#);
    match &record.headers {
        Some(headers) => write_json(out, &header_object(headers)),
        None => out.extend_from_slice(b"{}"),
    }
    out.extend_from_slice(br#","stream":"#);
    write_str(out, &delivery.stream);
    out.extend_from_slice(br#","streamSequence":"#);
    write_json(out, &delivery.stream_sequence);
    out.extend_from_slice(br#","subject":"#);
    write_str(out, &record.subject);
    out.extend_from_slice(br#","timestamp":"#);
    write_str(out, &timestamp(delivery.published()));
    out.push(b'}');
}

/// RFC 3339 in UTC with milliseconds: `2026-01-02T03:04:05.678Z`.
pub fn timestamp(at: SystemTime) -> String {
    DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `{name: [values...]}`: a NATS header may repeat, so every name maps to
/// the list of its values in the order they were written.
fn header_object(headers: &HeaderMap) -> Value {
    let mut object = Map::new();
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        object.insert(name.to_string(), Value::Array(values.iter().map(|v| Value::from(v.as_str())).collect()));
    }
    Value::Object(object)
}

/// `{"eventSource": "switchyard:nats", "stream": ..., "consumer": ..., "records": [...]}`.
#[derive(Debug, Clone)]
pub struct NatsEnvelope {
    pub stream: String,
    pub consumer: String,
}

impl NatsEnvelope {
    pub fn new(stream: impl Into<String>, consumer: impl Into<String>) -> Self {
        Self { stream: stream.into(), consumer: consumer.into() }
    }
}

impl NatsEnvelope {
    /// `{"eventSource": ..., "stream": ..., "consumer": ..., "records":`
    fn write_head(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"eventSource":"switchyard:nats","stream":"#);
        write_str(out, &self.stream);
        out.extend_from_slice(br#","consumer":"#);
        write_str(out, &self.consumer);
        out.extend_from_slice(br#","records":"#);
    }
}

impl Envelope for NatsEnvelope {
    fn write_event(&self, records: &[&Value], out: &mut Vec<u8>) {
        self.write_head(out);
        write_json(out, records);
        out.push(b'}');
    }

    fn write_deferred(&self, records: &[&dyn Deferred], out: &mut Vec<u8>) -> bool {
        let Some(messages) = deferred_as::<MessageRecord>(records) else {
            return false;
        };
        self.write_head(out);
        write_list(out, &messages, |message, out| write_message_record(message, out));
        out.push(b'}');
        true
    }

    /// `NatsBatchInfo`: the sequence and time range the records span. The
    /// records of an unordered batch need not be in stream order, so the
    /// range is their lowest and highest values.
    fn batch_info(&self, records: &[&Value]) -> Option<(&'static str, Value)> {
        if records.is_empty() {
            return None;
        }
        let sequences: Vec<u64> = records.iter().filter_map(|r| r.get("streamSequence")?.as_u64()).collect();
        // One format throughout, so text order is time order.
        let times: Vec<&str> = records.iter().filter_map(|r| r.get("timestamp")?.as_str()).collect();
        Some((
            "NatsBatchInfo",
            json!({
                "batchSize": records.len(),
                "stream": self.stream,
                "consumer": self.consumer,
                "firstStreamSequence": sequences.iter().min(),
                "lastStreamSequence": sequences.iter().max(),
                "firstTimestamp": times.iter().min(),
                "lastTimestamp": times.iter().max(),
            }),
        ))
    }

    fn payload_fields(&self, _record: &Value) -> &'static [PayloadField] {
        const FIELDS: &[PayloadField] = &[PayloadField::base64("data")];
        FIELDS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NANOS: i128 = 1_790_230_470_084_404_000;

    #[test]
    fn reply_subjects_in_both_forms() {
        let short = Delivery::from_reply(&format!("$JS.ACK.ORDERS.c1.3.100.7.{NANOS}.42")).unwrap();
        assert_eq!(
            short,
            Delivery {
                stream: "ORDERS".into(),
                consumer: "c1".into(),
                delivered: 3,
                stream_sequence: 100,
                consumer_sequence: 7,
                published_nanos: NANOS,
                pending: 42,
            }
        );
        let long = Delivery::from_reply(&format!("$JS.ACK.hub.AbCd.ORDERS.c1.3.100.7.{NANOS}.42.tok")).unwrap();
        assert_eq!(long, short);
        for bad in [
            "_INBOX.x.y",
            "$JS.ACK.ORDERS.c1.3.100.7",
            "$JS.ACK.ORDERS.c1.x.100.7.1.0",
            "$JS.ACK.a.b.ORDERS.c1.3.100.7.1",
        ] {
            assert!(Delivery::from_reply(bad).is_none(), "{bad}");
        }
        assert_eq!(short.published(), UNIX_EPOCH + Duration::from_nanos(NANOS as u64));
        assert_eq!(timestamp(short.published()), "2026-09-24T06:14:30.084Z");
    }

    #[test]
    fn message_shape() {
        let delivery = Delivery::from_reply(&format!("$JS.ACK.ORDERS.c1.2.100.7.{NANOS}.0")).unwrap();
        let mut headers = HeaderMap::new();
        headers.append("Nats-Msg-Id", "m-1");
        headers.append("X-Tag", "a");
        headers.append("X-Tag", "b");
        assert_eq!(
            message_data("orders.created", &delivery, Some(&headers), br#"{"id":1}"#),
            json!({
                "subject": "orders.created",
                "stream": "ORDERS",
                "consumer": "c1",
                "streamSequence": 100,
                "consumerSequence": 7,
                "deliveryCount": 2,
                "timestamp": "2026-09-24T06:14:30.084Z",
                "headers": {"Nats-Msg-Id": ["m-1"], "X-Tag": ["a", "b"]},
                "data": "eyJpZCI6MX0=",
            })
        );
        assert_eq!(message_data("s", &delivery, None, b"")["headers"], json!({}));
    }

    #[test]
    fn deferred_records_write_the_same_event() {
        let mut headers = HeaderMap::new();
        headers.append("Nats-Msg-Id", "m-\"1\"");
        headers.append("X-Tag", "a");
        headers.append("X-Tag", "b");
        let records: Vec<MessageRecord> = [
            (&b"{\"id\":1}"[..], None),
            (&b""[..], Some(headers)),
            (&[0xff, 0x00, 0x01, 0x02][..], Some(HeaderMap::new())),
            (&b"x"[..], None),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (payload, headers))| MessageRecord {
            subject: Subject::from(format!("orders.\"é\".{i}")),
            delivery: Delivery::from_reply(&format!("$JS.ACK.ORDERS.c1.{}.10{i}.7.{NANOS}.0", i + 1)).unwrap(),
            headers,
            payload: Bytes::copy_from_slice(payload),
        })
        .collect();
        let values: Vec<Value> = records.iter().map(Deferred::value).collect();
        let envelope = NatsEnvelope::new("ORDERS", "c\"1");
        for n in 0..=records.len() {
            let deferred: Vec<&dyn Deferred> = records[..n].iter().map(|r| r as &dyn Deferred).collect();
            let value_refs: Vec<&Value> = values[..n].iter().collect();
            let (mut direct, mut written) = (Vec::new(), Vec::new());
            assert!(envelope.write_deferred(&deferred, &mut direct));
            envelope.write_event(&value_refs, &mut written);
            assert_eq!(String::from_utf8_lossy(&direct), String::from_utf8_lossy(&written), "{n} records");
        }
    }

    #[test]
    fn event_and_batch_info() {
        let envelope = NatsEnvelope::new("ORDERS", "c1");
        let a = json!({"streamSequence": 9, "timestamp": "2026-01-01T00:00:01.000Z", "data": "YQ=="});
        let b = json!({"streamSequence": 4, "timestamp": "2026-01-01T00:00:00.500Z", "data": "Yg=="});
        assert_eq!(
            envelope.event(&[&a, &b]),
            json!({"eventSource": "switchyard:nats", "stream": "ORDERS", "consumer": "c1", "records": [a, b]})
        );
        let (key, info) = envelope.batch_info(&[&a, &b]).unwrap();
        assert_eq!(key, "NatsBatchInfo");
        assert_eq!(
            info,
            json!({
                "batchSize": 2, "stream": "ORDERS", "consumer": "c1",
                "firstStreamSequence": 4, "lastStreamSequence": 9,
                "firstTimestamp": "2026-01-01T00:00:00.500Z", "lastTimestamp": "2026-01-01T00:00:01.000Z",
            })
        );
        assert!(envelope.batch_info(&[]).is_none());
        assert_eq!(envelope.item_id(&json!("ORDERS:9")), Some("ORDERS:9".into()));
        assert_eq!(envelope.payload_fields(&a), &[PayloadField::base64("data")]);
    }
}
