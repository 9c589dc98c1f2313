//! Lambda's SQS event: one message's JSON and the event around a batch.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use switchyard_sdk::{Envelope, PayloadField};

/// The message as Lambda delivers it in `Records`:
/// `messageId, receiptHandle, body, attributes, messageAttributes, md5OfBody,
/// [md5OfMessageAttributes,] eventSource, eventSourceARN, awsRegion`.
///
/// `attributes` holds every system attribute SQS returned (all are asked
/// for), as strings, as Lambda passes them. `md5OfMessageAttributes` is only
/// there when the message has attributes.
pub fn message_data(message: &Message, source_arn: &str, region: &str) -> Value {
    let attributes: BTreeMap<&str, &str> = message
        .attributes()
        .map(|all| all.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect())
        .unwrap_or_default();
    let message_attributes: Map<String, Value> = message
        .message_attributes()
        .map(|all| {
            // Sorted, so the same message always gives the same JSON.
            let sorted: BTreeMap<&String, &MessageAttributeValue> = all.iter().collect();
            sorted.into_iter().map(|(name, value)| (name.clone(), message_attribute(value))).collect()
        })
        .unwrap_or_default();
    let mut data = json!({
        "messageId": message.message_id().unwrap_or_default(),
        "receiptHandle": message.receipt_handle().unwrap_or_default(),
        "body": message.body().unwrap_or_default(),
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": message.md5_of_body().unwrap_or_default(),
    });
    if let (Some(object), Some(md5)) = (data.as_object_mut(), message.md5_of_message_attributes()) {
        object.insert("md5OfMessageAttributes".into(), Value::String(md5.to_string()));
    }
    if let Some(object) = data.as_object_mut() {
        object.insert("eventSource".into(), Value::String("aws:sqs".into()));
        object.insert("eventSourceARN".into(), Value::String(source_arn.to_string()));
        object.insert("awsRegion".into(), Value::String(region.to_string()));
    }
    data
}

/// `{stringValue?, binaryValue?, stringListValues, binaryListValues, dataType}`,
/// binary values in base64, as in Lambda's example event.
fn message_attribute(value: &MessageAttributeValue) -> Value {
    let mut attribute = Map::new();
    if let Some(text) = value.string_value() {
        attribute.insert("stringValue".into(), Value::String(text.to_string()));
    }
    if let Some(blob) = value.binary_value() {
        attribute.insert("binaryValue".into(), Value::String(STANDARD.encode(blob.as_ref())));
    }
    attribute.insert("stringListValues".into(), json!(value.string_list_values()));
    let binaries: Vec<String> = value.binary_list_values().iter().map(|b| STANDARD.encode(b.as_ref())).collect();
    attribute.insert("binaryListValues".into(), json!(binaries));
    attribute.insert("dataType".into(), Value::String(value.data_type().to_string()));
    Value::Object(attribute)
}

/// A system attribute of the message, if SQS returned it.
pub(crate) fn system_attribute(message: &Message, name: MessageSystemAttributeName) -> Option<&str> {
    message.attributes().and_then(|all| all.get(&name)).map(String::as_str)
}

/// When SQS accepted the message (`SentTimestamp`, milliseconds), else now.
pub fn created_at(message: &Message) -> SystemTime {
    system_attribute(message, MessageSystemAttributeName::SentTimestamp)
        .and_then(|ms| ms.parse::<u64>().ok())
        .map_or_else(SystemTime::now, |ms| UNIX_EPOCH + Duration::from_millis(ms))
}

/// `{"Records": [...]}`, as Lambda delivers SQS events; the payload is the
/// `body` text.
#[derive(Debug, Clone, Copy, Default)]
pub struct SqsEnvelope;

impl Envelope for SqsEnvelope {
    fn write_event(&self, records: &[&Value], out: &mut Vec<u8>) {
        switchyard_sdk::write_records(out, records);
    }

    fn payload_fields(&self, _record: &Value) -> &'static [PayloadField] {
        const FIELDS: &[PayloadField] = &[PayloadField::text("body")];
        FIELDS
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::primitives::Blob;

    use super::*;

    /// The first record of Lambda's documented example event, rebuilt.
    fn documented() -> Message {
        let attribute = MessageAttributeValue::builder()
            .data_type("String")
            .string_value("myValue")
            .build()
            .expect("data type is set");
        Message::builder()
            .message_id("059f36b4-87a3-44ab-83d2-661975830a7d")
            .receipt_handle("AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...")
            .body("Test message.")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "1")
            .attributes(MessageSystemAttributeName::SentTimestamp, "1545082649183")
            .attributes(MessageSystemAttributeName::SenderId, "AIDAEXAMPLE")
            .attributes(MessageSystemAttributeName::ApproximateFirstReceiveTimestamp, "1545082649185")
            .message_attributes("myAttribute", attribute)
            .md5_of_body("e4e68fb7bd0e697a0ae8f1bb342846b3")
            .build()
    }

    #[test]
    fn record_matches_lambdas_documented_example() {
        let message = documented();
        assert_eq!(
            message_data(&message, "arn:aws:sqs:us-east-2:123456789012:my-queue", "us-east-2"),
            json!({
                "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
                "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
                "body": "Test message.",
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1545082649183",
                    "SenderId": "AIDAEXAMPLE",
                    "ApproximateFirstReceiveTimestamp": "1545082649185"
                },
                "messageAttributes": {
                    "myAttribute": {
                        "stringValue": "myValue",
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": "String"
                    }
                },
                "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:my-queue",
                "awsRegion": "us-east-2"
            })
        );
        assert_eq!(created_at(&message), UNIX_EPOCH + Duration::from_millis(1_545_082_649_183));
    }

    #[test]
    fn binary_attributes_are_base64() {
        let attribute = MessageAttributeValue::builder()
            .data_type("Binary.png")
            .binary_value(Blob::new(vec![0u8, 255]))
            .build()
            .expect("data type is set");
        let message =
            Message::builder().body("x").message_attributes("raw", attribute).md5_of_message_attributes("abc").build();
        let data = message_data(&message, "arn", "r");
        assert_eq!(
            data["messageAttributes"]["raw"],
            json!({"binaryValue": "AP8=", "stringListValues": [], "binaryListValues": [], "dataType": "Binary.png"})
        );
        assert_eq!(data["md5OfMessageAttributes"], "abc");
        assert_eq!(data["attributes"], json!({}));
    }

    #[test]
    fn event_wraps_records_and_names_the_body() {
        let (a, b) = (json!({"body": "a"}), json!({"body": "b"}));
        assert_eq!(SqsEnvelope.event(&[&a, &b]), json!({"Records": [a, b]}));
        assert_eq!(SqsEnvelope.payload_fields(&a), &[PayloadField::text("body")]);
        assert_eq!(SqsEnvelope.item_id(&json!("id-1")).as_deref(), Some("id-1"));
    }
}
