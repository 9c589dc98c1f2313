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

/// How a payload field is written in the record's JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// A base64 string (Kafka, RabbitMQ, Kinesis).
    Base64,
    /// A text string (SQS, webhooks without a binary body).
    Text,
}

/// One payload field at the top level of a record's JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadField {
    pub key: &'static str,
    pub encoding: Encoding,
}

impl PayloadField {
    pub const fn base64(key: &'static str) -> Self {
        Self { key, encoding: Encoding::Base64 }
    }

    pub const fn text(key: &'static str) -> Self {
        Self { key, encoding: Encoding::Text }
    }

    /// The field's bytes in `record`; `None` when absent, null or not
    /// decodable.
    pub fn bytes<'a>(&self, record: &'a Value) -> Option<Cow<'a, [u8]>> {
        let text = record.get(self.key)?.as_str()?;
        match self.encoding {
            Encoding::Text => Some(Cow::Borrowed(text.as_bytes())),
            Encoding::Base64 => STANDARD.decode(text).ok().map(Cow::Owned),
        }
    }

    /// Writes `bytes` into `record` as this field is encoded.
    pub fn set(&self, record: &mut Value, bytes: &[u8]) {
        let Some(object) = record.as_object_mut() else { return };
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
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        return value;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::String(text.to_string()),
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
    }

    #[test]
    fn set_writes_the_fields_encoding() {
        let mut record = json!({"value": "x"});
        PayloadField::base64("value").set(&mut record, b"hi");
        assert_eq!(record["value"], "aGk=");
        PayloadField::text("body").set(&mut record, b"hi");
        assert_eq!(record["body"], "hi");
    }
}
