//! Where a record keeps its payload, so the engine can filter on it, transform
//! it and reshape it without knowing the source.
//!
//! A record's JSON is the shape Lambda delivers (`value` in base64 for Kafka,
//! `data` in base64 for RabbitMQ, `body` as text for SQS and webhooks). Filter
//! patterns and transforms see the payload decoded and, when it is JSON,
//! parsed, as Lambda's event filtering does.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use crate::Reads;

/// How a payload field is written in the record's JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// A base64 string (Kafka, RabbitMQ, Kinesis).
    Base64,
    /// A text string (SQS, webhooks without a binary body).
    Text,
}

/// One payload field of a record's JSON: at the top level, or inside one
/// top-level object (Kinesis keeps its payload at `kinesis.data`).
///
/// Patterns and transforms always see the payload at the top level under
/// `key`, as Lambda's filters name it (`{"data": ...}` for Kinesis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadField {
    pub key: &'static str,
    pub encoding: Encoding,
    /// The top-level object holding the field, when it is not the record.
    pub parent: Option<&'static str>,
}

impl PayloadField {
    pub const fn base64(key: &'static str) -> Self {
        Self { key, encoding: Encoding::Base64, parent: None }
    }

    pub const fn text(key: &'static str) -> Self {
        Self { key, encoding: Encoding::Text, parent: None }
    }

    /// The field is `record[parent][key]`.
    pub const fn inside(self, parent: &'static str) -> Self {
        Self { parent: Some(parent), ..self }
    }

    /// The object that holds the field: the record itself, or its parent.
    fn holder<'a>(&self, record: &'a Value) -> Option<&'a Value> {
        match self.parent {
            None => Some(record),
            Some(parent) => record.get(parent),
        }
    }

    /// The field's string as the record holds it (encoded or not).
    fn stored<'a>(&self, record: &'a Value) -> Option<&'a str> {
        self.holder(record)?.get(self.key)?.as_str()
    }

    /// The field's bytes in `record`; `None` when absent, null or not
    /// decodable.
    pub fn bytes<'a>(&self, record: &'a Value) -> Option<Cow<'a, [u8]>> {
        let text = self.stored(record)?;
        match self.encoding {
            Encoding::Text => Some(Cow::Borrowed(text.as_bytes())),
            Encoding::Base64 => STANDARD.decode(text).ok().map(Cow::Owned),
        }
    }

    /// The payload as patterns and transforms see it (see [`payload_value`]).
    pub fn value(&self, record: &Value) -> Option<Value> {
        self.value_reading(record, &Reads::All)
    }

    /// As [`PayloadField::value`], keeping of a JSON payload only what
    /// `reads` names. A text field is parsed as the string it already is,
    /// which spares checking its UTF-8 a second time.
    pub fn value_reading(&self, record: &Value, reads: &Reads) -> Option<Value> {
        match self.encoding {
            Encoding::Text => {
                let text = self.stored(record)?;
                Some(reads.parse(text).unwrap_or_else(|_| Value::String(text.to_string())))
            }
            Encoding::Base64 => self.bytes(record).map(|bytes| payload_value_reading(&bytes, reads)),
        }
    }

    /// Writes `bytes` into `record` as this field is encoded.
    pub fn set(&self, record: &mut Value, bytes: &[u8]) {
        let holder = match self.parent {
            None => Some(record),
            Some(parent) => record.get_mut(parent),
        };
        let Some(object) = holder.and_then(Value::as_object_mut) else { return };
        let value = match self.encoding {
            Encoding::Base64 => STANDARD.encode(bytes),
            Encoding::Text => String::from_utf8_lossy(bytes).into_owned(),
        };
        object.insert(self.key.to_string(), Value::String(value));
    }
}

/// A payload as patterns and transforms see it: parsed when it is JSON, a
/// string when it is other UTF-8 text, base64 when it is binary.
pub fn payload_value(bytes: &[u8]) -> Value {
    payload_value_reading(bytes, &Reads::All)
}

/// As [`payload_value`], keeping of a JSON payload only what `reads` names.
/// JSON is UTF-8, so text that is not UTF-8 is not JSON either.
fn payload_value_reading(bytes: &[u8], reads: &Reads) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => reads.parse(text).unwrap_or_else(|_| Value::String(text.to_string())),
        Err(_) => Value::String(STANDARD.encode(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn payloads_decode_and_parse() {
        assert_eq!(payload_value(br#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(payload_value(b"plain text"), json!("plain text"));
        assert_eq!(payload_value(&[0xff, 0x00]), json!("/wA="));
        let record = json!({"value": "eyJhIjoxfQ==", "body": "hi"});
        assert_eq!(PayloadField::base64("value").bytes(&record).unwrap().as_ref(), br#"{"a":1}"#);
        assert_eq!(PayloadField::text("body").bytes(&record).unwrap().as_ref(), b"hi");
        assert!(PayloadField::base64("key").bytes(&record).is_none());
        assert_eq!(PayloadField::base64("value").value(&record), Some(json!({"a": 1})));
        assert_eq!(PayloadField::text("body").value(&record), Some(json!("hi")));
        assert_eq!(PayloadField::text("body").value(&json!({"body": "[1, 2]"})), Some(json!([1, 2])));
        assert_eq!(PayloadField::text("key").value(&record), None);
    }

    #[test]
    fn set_writes_the_fields_encoding() {
        let mut record = json!({"value": "x"});
        PayloadField::base64("value").set(&mut record, b"hi");
        assert_eq!(record["value"], "aGk=");
        PayloadField::text("body").set(&mut record, b"hi");
        assert_eq!(record["body"], "hi");
    }

    #[test]
    fn nested_fields_read_and_write_inside_their_parent() {
        let data = PayloadField::base64("data").inside("kinesis");
        let mut record = json!({"kinesis": {"data": "eyJhIjoxfQ==", "partitionKey": "p"}});
        assert_eq!(data.bytes(&record).unwrap().as_ref(), br#"{"a":1}"#);
        data.set(&mut record, b"hi");
        assert_eq!(record, json!({"kinesis": {"data": "aGk=", "partitionKey": "p"}}));
        assert!(data.bytes(&json!({"data": "aGk="})).is_none(), "only inside its parent");
    }
}
