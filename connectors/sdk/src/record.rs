use std::any::Any;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::Value;

use crate::{Ack, PayloadField};

/// One record from a source, in the shape Lambda delivers it for that source.
#[derive(Debug)]
pub struct Record {
    /// The item identifier a function names in a partial batch response
    /// (`batchItemFailures[].itemIdentifier`).
    pub id: String,
    /// The ordering scope (`"orders-0"` for a Kafka partition); `None` when the
    /// source makes no ordering promise.
    pub scope: Option<Arc<str>>,
    /// The ordering key inside the scope, for `parallelization` > 1.
    pub key: Option<Bytes>,
    /// The record as the function sees it (one element of SQS's `Records`, ...).
    /// `Null` while the record is [`Record::deferred`].
    pub data: Value,
    /// The record as the source kept it, when the source writes its JSON
    /// straight into events ([`Envelope::write_deferred`]); built as `data`
    /// only when something reads it ([`Record::materialize`]).
    pub deferred: Option<Box<dyn Deferred>>,
    /// Payload size in bytes, counted against a batch's `max_bytes`.
    pub size: usize,
    /// When the broker or caller first accepted the record (for `max_record_age`).
    pub created_at: SystemTime,
    pub ack: Ack,
}

impl Record {
    /// The record's JSON, built from what the source kept when deferred.
    pub fn value(&self) -> Cow<'_, Value> {
        match &self.deferred {
            Some(deferred) => Cow::Owned(deferred.value()),
            None => Cow::Borrowed(&self.data),
        }
    }

    /// Builds `data` of a deferred record (filters, transforms and failure
    /// records read it); returns it.
    pub fn materialize(&mut self) -> &mut Value {
        if let Some(deferred) = self.deferred.take() {
            self.data = deferred.value();
        }
        &mut self.data
    }
}

/// A record a source keeps as it came (an MQTT message, say) and writes
/// straight into the event: a record's `serde_json` object costs more than
/// the message it describes, and most batches are only written.
pub trait Deferred: Send + Sync + std::fmt::Debug {
    /// The record's JSON, as [`Record::data`] holds it once materialized.
    fn value(&self) -> Value;

    /// For the envelope that knows the concrete type.
    fn as_any(&self) -> &dyn Any;
}

/// The records behind `records` as the source's own type, when every one
/// is a `T` (an envelope's [`Envelope::write_deferred`] starts with this).
pub fn deferred_as<'a, T: 'static>(records: &[&'a dyn Deferred]) -> Option<Vec<&'a T>> {
    records.iter().map(|r| r.as_any().downcast_ref::<T>()).collect()
}

/// The records of one invocation.
#[derive(Debug, Default)]
pub struct Batch {
    pub records: Vec<Record>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.records.iter().map(|r| r.size).sum()
    }
}

/// How a source's records are wrapped into the event a function receives,
/// and how the function's answers about them are read.
pub trait Envelope: Send + Sync {
    /// Writes the event for `records` to `out` as JSON. Records are written
    /// as they are, never copied into an event tree first: this runs for
    /// every batch of every source.
    fn write_event(&self, records: &[&Value], out: &mut Vec<u8>);

    /// Writes the event for deferred records straight from what their source
    /// kept, as `write_event` writes it for their values; `false` when this
    /// envelope cannot (the records are then materialized).
    fn write_deferred(&self, _records: &[&dyn Deferred], _out: &mut Vec<u8>) -> bool {
        false
    }

    /// The event as a JSON value, for batch transforms and failure records.
    fn event(&self, records: &[&Value]) -> Value {
        let mut out = Vec::new();
        self.write_event(records, &mut out);
        serde_json::from_slice(&out).expect("an envelope writes valid JSON")
    }

    /// Maps one `itemIdentifier` of a partial batch response
    /// (`{"batchItemFailures": [{"itemIdentifier": ...}]}`) to the [`Record::id`]
    /// it names; `None` when it is not a valid identifier for this source, which
    /// makes the whole batch count as failed, as Lambda does.
    fn item_id(&self, identifier: &Value) -> Option<String> {
        identifier.as_str().filter(|s| !s.is_empty()).map(str::to_string)
    }

    /// Lambda's `<Source>BatchInfo` of an on-failure record for these records:
    /// the key (`"KafkaBatchInfo"`) and its value. `None` when the source has none.
    fn batch_info(&self, _records: &[&Value]) -> Option<(&'static str, Value)> {
        None
    }

    /// The payload fields of `record`, the main payload first (Kafka: `value`
    /// then `key`). Empty when the record is its own payload (schedules).
    fn payload_fields(&self, _record: &Value) -> &'static [PayloadField] {
        &[]
    }
}

/// A batch of one is the event itself (webhooks, schedules); a larger batch is
/// a JSON array.
pub struct SingleEnvelope;

impl Envelope for SingleEnvelope {
    fn write_event(&self, records: &[&Value], out: &mut Vec<u8>) {
        match records {
            [one] => write_json(out, one),
            many => write_json(out, &many),
        }
    }
}

/// `{"Records": [...]}`, as Lambda delivers SQS, Kinesis and S3 events.
pub struct RecordsEnvelope;

impl Envelope for RecordsEnvelope {
    fn write_event(&self, records: &[&Value], out: &mut Vec<u8>) {
        write_records(out, records);
    }
}

/// Writes `{"Records": [...]}`, the event of SQS, Kinesis and S3.
pub fn write_records(out: &mut Vec<u8>, records: &[&Value]) {
    out.extend_from_slice(b"{\"Records\":");
    write_json(out, &records);
    out.push(b'}');
}

/// Appends `value` as compact JSON.
pub fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing to a Vec cannot fail, and these values have string keys only.
    serde_json::to_writer(out, value).expect("JSON values serialize");
}

/// A JSON object of owned values, for the records sources build per message.
/// `json!` serializes each value it is given, which copies every string and
/// every nested value once more; this moves them in.
pub fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Object(fields.into_iter().map(|(key, value)| (key.to_string(), value)).collect())
}

/// Appends `text` as a JSON string.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    write_json(out, text);
}

/// Appends `bytes` in base64 as a JSON string, encoded in place: base64
/// needs no escaping.
pub fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    let start = out.len();
    out.resize(start + base64::encoded_len(bytes.len(), true).unwrap_or(0), 0);
    let written = STANDARD.encode_slice(bytes, &mut out[start..]).unwrap_or(0);
    out.truncate(start + written);
    out.push(b'"');
}

/// Appends `[item,item,...]`, each item written by `write`.
pub fn write_list<T>(out: &mut Vec<u8>, items: &[T], mut write: impl FnMut(&T, &mut Vec<u8>)) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(item, out);
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_lists_are_written_as_json() {
        for bytes in [&b""[..], b"a", b"ab", b"abc", &[0xff, 0x00, 0xfe, 0x01]] {
            let mut out = b"x".to_vec();
            write_base64(&mut out, bytes);
            let mut expected = b"x".to_vec();
            write_str(&mut expected, &STANDARD.encode(bytes));
            assert_eq!(out, expected, "{bytes:?}");
        }
        let mut out = Vec::new();
        write_list(&mut out, &[1, 2, 3], |n, out| write_json(out, n));
        assert_eq!(out, b"[1,2,3]");
        out.clear();
        write_list::<u8>(&mut out, &[], |n, out| write_json(out, n));
        assert_eq!(out, b"[]");
    }
}
