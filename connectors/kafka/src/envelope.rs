//! Lambda's self-managed Kafka event: one record's JSON, the event around a
//! batch, and how a function's partial-batch answers name records.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rdkafka::Message;
use rdkafka::message::{Headers, Timestamp};
use serde_json::{Map, Value, json};
use switchyard_sdk::{Envelope, PayloadField, object, write_json, write_str};

/// The record as Lambda delivers it in a self-managed Kafka event:
/// `{"topic","partition","offset","timestamp","timestampType","key","value","headers"}`.
///
/// `key` is left out when the message has none, `value` is `null` for a
/// tombstone; both are base64. Header values are arrays of byte values, as
/// Lambda sends them (`[{"name": [104, 105]}]`); a header without a value is an
/// empty array.
pub fn record_data<M: Message>(message: &M) -> Value {
    let (timestamp, timestamp_type) = match message.timestamp() {
        Timestamp::CreateTime(ms) => (ms, "CREATE_TIME"),
        Timestamp::LogAppendTime(ms) => (ms, "LOG_APPEND_TIME"),
        Timestamp::NotAvailable => (-1, "NO_TIMESTAMP_TYPE"),
    };
    let headers: Vec<Value> = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| {
                    let bytes: Vec<Value> = header.value.unwrap_or_default().iter().map(|b| Value::from(*b)).collect();
                    let mut one = Map::new();
                    one.insert(header.key.to_string(), Value::Array(bytes));
                    Value::Object(one)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut data = object([
        ("topic", Value::from(message.topic())),
        ("partition", Value::from(message.partition())),
        ("offset", Value::from(message.offset())),
        ("timestamp", Value::from(timestamp)),
        ("timestampType", Value::from(timestamp_type)),
        ("value", message.payload().map_or(Value::Null, |value| Value::from(STANDARD.encode(value)))),
        ("headers", Value::Array(headers)),
    ]);
    if let (Some(key), Some(object)) = (message.key(), data.as_object_mut()) {
        object.insert("key".into(), Value::String(STANDARD.encode(key)));
    }
    data
}

/// The ordering scope of a partition and the prefix of its record ids.
pub fn scope(topic: &str, partition: i32) -> String {
    format!("{topic}-{partition}")
}

/// The record id of one message: `"<topic>-<partition>-<offset>"`.
pub fn record_id(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}-{partition}-{offset}")
}

/// `{"eventSource":"SelfManagedKafka","bootstrapServers":...,"records":{"<topic>-<partition>":[...]}}`.
#[derive(Debug, Clone)]
pub struct KafkaEnvelope {
    pub bootstrap_servers: String,
}

impl KafkaEnvelope {
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self { bootstrap_servers: bootstrap_servers.into() }
    }
}

/// `(topic, partition)` of a record built by [`record_data`].
fn topic_partition(record: &Value) -> Option<(&str, i64)> {
    Some((record.get("topic")?.as_str()?, record.get("partition")?.as_i64()?))
}

fn group_key(record: &Value) -> String {
    match topic_partition(record) {
        Some((topic, partition)) => format!("{topic}-{partition}"),
        // Not one of this connector's records; still delivered, under a key
        // that says so rather than dropped.
        None => "unknown".to_string(),
    }
}

impl Envelope for KafkaEnvelope {
    fn write_event(&self, records: &[&Value], out: &mut Vec<u8>) {
        // Records keep their order inside each topic-partition.
        let mut groups: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
        for record in records {
            groups.entry(group_key(record)).or_default().push(record);
        }
        out.extend_from_slice(br#"{"eventSource":"SelfManagedKafka","bootstrapServers":"#);
        write_str(out, &self.bootstrap_servers);
        out.extend_from_slice(br#","records":"#);
        write_json(out, &groups);
        out.push(b'}');
    }

    fn payload_fields(&self, _record: &Value) -> &'static [PayloadField] {
        const FIELDS: &[PayloadField] = &[PayloadField::base64("value"), PayloadField::base64("key")];
        FIELDS
    }

    /// Accepts both forms functions use: `{"topic-partition": "t-0", "offset": 15}`
    /// (offset as a number or a string) and `"t-0-15"`.
    fn item_id(&self, identifier: &Value) -> Option<String> {
        match identifier {
            Value::String(text) => {
                let (topic_partition, offset) = text.rsplit_once('-')?;
                let (topic, partition) = split_topic_partition(topic_partition)?;
                Some(record_id(topic, partition, parse_number(offset)?))
            }
            Value::Object(fields) => {
                if fields.len() != 2 {
                    return None;
                }
                let (topic, partition) = split_topic_partition(fields.get("topic-partition")?.as_str()?)?;
                let offset = match fields.get("offset")? {
                    Value::Number(n) => n.as_i64().filter(|o| *o >= 0)?,
                    Value::String(s) => parse_number(s)?,
                    _ => return None,
                };
                Some(record_id(topic, partition, offset))
            }
            _ => None,
        }
    }

    /// Lambda's `KafkaBatchInfo`, describing the records of the batch's first
    /// topic-partition (`batchSize` counts those).
    fn batch_info(&self, records: &[&Value]) -> Option<(&'static str, Value)> {
        let (topic, partition) = records.first().and_then(|first| topic_partition(first))?;
        let same: Vec<&Value> =
            records.iter().copied().filter(|record| topic_partition(record) == Some((topic, partition))).collect();
        let (first, last) = (same.first()?, same.last()?);
        Some((
            "KafkaBatchInfo",
            json!({
                "batchSize": same.len(),
                "topic": topic,
                "partition": partition,
                "firstOffset": first.get("offset"),
                "lastOffset": last.get("offset"),
                "firstTimestamp": first.get("timestamp"),
                "lastTimestamp": last.get("timestamp"),
            }),
        ))
    }
}

/// `"orders-eu-3"` → `("orders-eu", 3)`: topic names may contain dashes, the
/// partition is what follows the last one.
fn split_topic_partition(text: &str) -> Option<(&str, i32)> {
    let (topic, partition) = text.rsplit_once('-')?;
    if topic.is_empty() {
        return None;
    }
    Some((topic, i32::try_from(parse_number(partition)?).ok()?))
}

/// Digits only: no sign, no spaces, no empty text.
fn parse_number(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};

    fn envelope() -> KafkaEnvelope {
        KafkaEnvelope::new("b1:9092,b2:9092")
    }

    fn message(topic: &str, partition: i32, offset: i64, key: Option<&[u8]>) -> OwnedMessage {
        let headers = OwnedHeaders::new()
            .insert(Header { key: "trace", value: Some("hi") })
            .insert(Header { key: "empty", value: None::<&[u8]> });
        OwnedMessage::new(
            Some(b"value".to_vec()),
            key.map(<[u8]>::to_vec),
            topic.to_string(),
            Timestamp::CreateTime(1_700_000_000_123),
            partition,
            offset,
            Some(headers),
        )
    }

    #[test]
    fn record_has_lambdas_fields() {
        let data = record_data(&message("orders", 1, 42, Some(b"k1")));
        assert_eq!(
            data,
            json!({
                "topic": "orders", "partition": 1, "offset": 42,
                "timestamp": 1_700_000_000_123_i64, "timestampType": "CREATE_TIME",
                "key": "azE=", "value": "dmFsdWU=",
                "headers": [{"trace": [104, 105]}, {"empty": []}],
            })
        );
        let unkeyed = record_data(&message("orders", 1, 43, None));
        assert!(unkeyed.get("key").is_none(), "no key field for a message without a key");
    }

    #[test]
    fn event_groups_by_topic_partition_in_order() {
        let (a0, b0, a1) = (
            record_data(&message("a", 0, 5, None)),
            record_data(&message("b", 0, 1, None)),
            record_data(&message("a", 0, 6, None)),
        );
        let event = envelope().event(&[&a0, &b0, &a1]);
        assert_eq!(event["eventSource"], "SelfManagedKafka");
        assert_eq!(event["bootstrapServers"], "b1:9092,b2:9092");
        assert_eq!(event["records"]["a-0"], json!([a0, a1]));
        assert_eq!(event["records"]["b-0"], json!([b0]));
    }

    #[test]
    fn item_ids_in_both_forms() {
        let e = envelope();
        assert_eq!(e.item_id(&json!({"topic-partition": "t-0", "offset": 15})).as_deref(), Some("t-0-15"));
        assert_eq!(
            e.item_id(&json!({"topic-partition": "my-topic-3", "offset": "15"})).as_deref(),
            Some("my-topic-3-15")
        );
        assert_eq!(e.item_id(&json!("t-0-15")).as_deref(), Some("t-0-15"));
        assert_eq!(e.item_id(&json!("my-topic-12-7")).as_deref(), Some("my-topic-12-7"));
        for bad in [
            json!(null),
            json!(""),
            json!("t-0"),
            json!("-0-1"),
            json!("t-x-1"),
            json!("t-0-"),
            json!("t-0--1"),
            json!(15),
            json!({}),
            json!({"topic-partition": "t-0"}),
            json!({"topic": "t-0", "offset": 1}),
            json!({"topic-partition": "t-0", "offset": -1}),
            json!({"topic-partition": "t-0", "offset": 1.5}),
            json!({"topic-partition": "t-0", "offset": "x"}),
            json!({"topic-partition": "t", "offset": 1}),
            json!({"topic-partition": "t-0", "offset": 1, "extra": true}),
        ] {
            assert_eq!(e.item_id(&bad), None, "{bad}");
        }
    }

    #[test]
    fn batch_info_describes_the_first_topic_partition() {
        let (a5, b1, a6) = (
            record_data(&message("a", 0, 5, None)),
            record_data(&message("b", 2, 1, None)),
            record_data(&message("a", 0, 6, None)),
        );
        let (key, info) = envelope().batch_info(&[&a5, &b1, &a6]).expect("batch info");
        assert_eq!(key, "KafkaBatchInfo");
        assert_eq!(
            info,
            json!({
                "batchSize": 2, "topic": "a", "partition": 0, "firstOffset": 5, "lastOffset": 6,
                "firstTimestamp": 1_700_000_000_123_i64, "lastTimestamp": 1_700_000_000_123_i64,
            })
        );
        assert!(envelope().batch_info(&[]).is_none());
    }
}
