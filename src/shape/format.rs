//! The shapes of the event a function receives: Lambda's event for the
//! source, the payloads alone, or CloudEvents (structured JSON, or binary
//! mode over HTTP per the CloudEvents HTTP binding 1.0).

use std::borrow::Cow;
use std::time::SystemTime;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value, json};
use switchyard_sdk::Envelope;

/// One record as the shaper sees it.
pub struct Item<'a> {
    /// The record's id: the CloudEvents `id`.
    pub id: &'a str,
    pub time: SystemTime,
    /// The record's JSON, in the shape Lambda delivers it.
    pub data: &'a Value,
}

#[derive(Debug, Clone)]
pub enum Format {
    Lambda,
    Raw,
    CloudEvents { binary: bool, type_: String, source: String },
}

/// An invocation's payload and the headers an HTTP function gets with it.
#[derive(Debug, Default)]
pub struct Shaped {
    pub payload: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Format {
    /// The event as a JSON value: what a batch transform sees.
    pub fn value(&self, envelope: &dyn Envelope, items: &[Item]) -> Value {
        match self {
            Format::Lambda => {
                let data: Vec<&Value> = items.iter().map(|i| i.data).collect();
                envelope.event(&data)
            }
            Format::Raw => match items {
                [one] => payload_of(envelope, one.data).into_owned(),
                many => Value::Array(many.iter().map(|i| payload_of(envelope, i.data).into_owned()).collect()),
            },
            Format::CloudEvents { type_, source, .. } => match items {
                [one] => cloud_event(envelope, one, type_, source),
                many => Value::Array(many.iter().map(|i| cloud_event(envelope, i, type_, source)).collect()),
            },
        }
    }

    /// The invocation's payload and headers.
    pub fn shape(&self, envelope: &dyn Envelope, items: &[Item]) -> Shaped {
        match (self, items) {
            // A single raw payload goes as it came, byte for byte.
            (Format::Raw, [one]) => Shaped { payload: raw_bytes(envelope, one.data), headers: Vec::new() },
            (Format::CloudEvents { binary: true, type_, source }, [one]) => binary(envelope, one, type_, source),
            (Format::CloudEvents { type_, source, .. }, items) => {
                let content_type = if items.len() == 1 {
                    "application/cloudevents+json"
                } else {
                    "application/cloudevents-batch+json"
                };
                Shaped {
                    payload: structured(envelope, items, type_, source),
                    headers: vec![(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
                }
            }
            (Format::Lambda, items) => Shaped { payload: lambda_event(envelope, items), headers: Vec::new() },
            _ => Shaped { payload: Bytes::from(self.value(envelope, items).to_string()), headers: Vec::new() },
        }
    }
}

/// Lambda's event for the source, written straight from the records.
fn lambda_event(envelope: &dyn Envelope, items: &[Item]) -> Bytes {
    let data: Vec<&Value> = items.iter().map(|i| i.data).collect();
    // A guess that spares most regrowth; records are rarely smaller.
    let mut out = Vec::with_capacity(256 * data.len());
    envelope.write_event(&data, &mut out);
    Bytes::from(out)
}

/// The record's main payload as patterns see it; the record itself when the
/// source has no payload field (schedules).
fn payload_of<'a>(envelope: &dyn Envelope, data: &'a Value) -> Cow<'a, Value> {
    match envelope.payload_fields(data).first() {
        Some(field) => Cow::Owned(field.value(data).unwrap_or(Value::Null)),
        None => Cow::Borrowed(data),
    }
}

fn raw_bytes(envelope: &dyn Envelope, data: &Value) -> Bytes {
    match envelope.payload_fields(data).first() {
        Some(field) => field.bytes(data).map(|b| Bytes::from(b.into_owned())).unwrap_or_default(),
        None => Bytes::from(data.to_string()),
    }
}

/// The payload's content type and its value in a structured event.
enum Data {
    Json(Value),
    Text(String),
    Binary(Vec<u8>),
}

fn data(envelope: &dyn Envelope, value: &Value) -> Data {
    let Some(field) = envelope.payload_fields(value).first() else {
        return Data::Json(value.clone());
    };
    let Some(bytes) = field.bytes(value) else {
        return Data::Json(Value::Null);
    };
    if let Ok(json) = serde_json::from_slice(&bytes) {
        return Data::Json(json);
    }
    match String::from_utf8(bytes.into_owned()) {
        Ok(text) => Data::Text(text),
        Err(e) => Data::Binary(e.into_bytes()),
    }
}

fn time(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn cloud_event(envelope: &dyn Envelope, item: &Item, type_: &str, source: &str) -> Value {
    let mut event = Map::new();
    event.insert("specversion".into(), json!("1.0"));
    event.insert("id".into(), json!(item.id));
    event.insert("source".into(), json!(source));
    event.insert("type".into(), json!(type_));
    event.insert("time".into(), json!(time(item.time)));
    let (content_type, key, value) = match data(envelope, item.data) {
        Data::Json(v) => ("application/json", "data", v),
        Data::Text(t) => ("text/plain; charset=utf-8", "data", Value::String(t)),
        Data::Binary(b) => {
            use base64::Engine;
            ("application/octet-stream", "data_base64", json!(base64::engine::general_purpose::STANDARD.encode(b)))
        }
    };
    event.insert("datacontenttype".into(), json!(content_type));
    event.insert(key.into(), value);
    Value::Object(event)
}

/// Structured CloudEvents written straight out: a JSON payload is checked
/// and copied into `data` as it is, never parsed into a tree and printed
/// again. The same events [`Format::value`] builds.
fn structured(envelope: &dyn Envelope, items: &[Item], type_: &str, source: &str) -> Bytes {
    let mut out = Vec::with_capacity(items.len() * 1024);
    match items {
        [one] => write_cloud_event(&mut out, envelope, one, type_, source),
        many => {
            out.push(b'[');
            for (i, item) in many.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_cloud_event(&mut out, envelope, item, type_, source);
            }
            out.push(b']');
        }
    }
    Bytes::from(out)
}

fn write_cloud_event(out: &mut Vec<u8>, envelope: &dyn Envelope, item: &Item, type_: &str, source: &str) {
    let string = |out: &mut Vec<u8>, text: &str| serde_json::to_writer(&mut *out, text).expect("writing to a Vec");
    out.extend_from_slice(br#"{"specversion":"1.0","id":"#);
    string(out, item.id);
    out.extend_from_slice(br#","source":"#);
    string(out, source);
    out.extend_from_slice(br#","type":"#);
    string(out, type_);
    out.extend_from_slice(br#","time":"#);
    string(out, &time(item.time));
    let field = envelope.payload_fields(item.data).first().copied();
    let bytes = field.map(|f| f.bytes(item.data));
    match bytes {
        // The record is its own payload (schedules).
        None => {
            out.extend_from_slice(br#","datacontenttype":"application/json","data":"#);
            serde_json::to_writer(&mut *out, item.data).expect("writing to a Vec");
        }
        Some(None) => out.extend_from_slice(br#","datacontenttype":"application/json","data":null"#),
        Some(Some(bytes)) if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok() => {
            out.extend_from_slice(br#","datacontenttype":"application/json","data":"#);
            out.extend_from_slice(bytes.trim_ascii());
        }
        Some(Some(bytes)) => match std::str::from_utf8(&bytes) {
            Ok(text) => {
                out.extend_from_slice(br#","datacontenttype":"text/plain; charset=utf-8","data":"#);
                string(out, text);
            }
            Err(_) => {
                use base64::Engine;
                out.extend_from_slice(br#","datacontenttype":"application/octet-stream","data_base64":""#);
                out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(&bytes).as_bytes());
                out.push(b'"');
            }
        },
    }
    out.push(b'}');
}

fn binary(envelope: &dyn Envelope, item: &Item, type_: &str, source: &str) -> Shaped {
    let (content_type, payload) = match data(envelope, item.data) {
        Data::Json(v) if envelope.payload_fields(item.data).is_empty() => ("application/json", v.to_string().into()),
        Data::Json(_) => ("application/json", raw_bytes(envelope, item.data)),
        Data::Text(t) => ("text/plain; charset=utf-8", Bytes::from(t)),
        Data::Binary(b) => ("application/octet-stream", Bytes::from(b)),
    };
    let headers = [
        ("ce-specversion", "1.0".to_string()),
        ("ce-id", item.id.to_string()),
        ("ce-source", source.to_string()),
        ("ce-type", type_.to_string()),
        ("ce-time", time(item.time)),
        ("content-type", content_type.to_string()),
    ]
    .into_iter()
    .map(|(name, value)| (HeaderName::from_static(name), header_value(&value)))
    .collect();
    Shaped { payload, headers }
}

/// The HTTP binding percent-encodes what a header cannot carry as is.
fn header_value(text: &str) -> HeaderValue {
    let mut encoded = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' && b != b'"' {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&encoded).unwrap_or(HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use switchyard_sdk::{PayloadField, SingleEnvelope};

    use super::*;

    struct Base64Value;
    impl Envelope for Base64Value {
        fn write_event(&self, records: &[&Value], out: &mut Vec<u8>) {
            switchyard_sdk::write_json(out, &json!({ "records": records }));
        }
        fn payload_fields(&self, _record: &Value) -> &'static [PayloadField] {
            const F: &[PayloadField] = &[PayloadField::base64("value")];
            F
        }
    }

    fn ce() -> Format {
        Format::CloudEvents { binary: false, type_: "t".into(), source: "/s".into() }
    }

    #[test]
    fn raw_sends_payloads_alone() {
        let (a, b) = (json!({"value": "eyJhIjoxfQ=="}), json!({"value": "aGk="}));
        let at = SystemTime::UNIX_EPOCH;
        let items = [Item { id: "1", time: at, data: &a }, Item { id: "2", time: at, data: &b }];
        assert_eq!(Format::Raw.shape(&Base64Value, &items[..1]).payload, Bytes::from_static(br#"{"a":1}"#));
        assert_eq!(Format::Raw.value(&Base64Value, &items), json!([{"a": 1}, "hi"]));
        assert_eq!(Format::Lambda.value(&Base64Value, &items)["records"][1], b);
    }

    #[test]
    fn cloudevents_structured_and_binary() {
        let (a, b) = (json!({"value": "eyJhIjoxfQ=="}), json!({"value": "/wA="}));
        let at = SystemTime::UNIX_EPOCH;
        let items = [Item { id: "t-0-1", time: at, data: &a }, Item { id: "t-0-2", time: at, data: &b }];
        let one = ce().shape(&Base64Value, &items[..1]);
        let event: Value = serde_json::from_slice(&one.payload).unwrap();
        assert_eq!(
            event,
            json!({"specversion": "1.0", "id": "t-0-1", "source": "/s", "type": "t", "time": "1970-01-01T00:00:00.000Z",
                   "datacontenttype": "application/json", "data": {"a": 1}})
        );
        assert_eq!(one.headers[0].1, "application/cloudevents+json");
        let batch = ce().value(&Base64Value, &items);
        assert_eq!(batch[1]["data_base64"], "/wA=");
        assert_eq!(batch[1]["datacontenttype"], "application/octet-stream");

        // What is sent is what a batch transform sees.
        for n in [1, 2] {
            let sent: Value = serde_json::from_slice(&ce().shape(&Base64Value, &items[..n]).payload).unwrap();
            let seen = ce().value(&Base64Value, &items[..n]);
            assert_eq!(sent, seen);
        }
        let text = json!({"value": "aGk="});
        let sent = ce().shape(&Base64Value, &[Item { id: "t", time: at, data: &text }]);
        let sent: Value = serde_json::from_slice(&sent.payload).unwrap();
        assert_eq!(
            (sent["data"].as_str(), sent["datacontenttype"].as_str()),
            (Some("hi"), Some("text/plain; charset=utf-8"))
        );

        let binary = Format::CloudEvents { binary: true, type_: "t".into(), source: "/s".into() };
        let shaped = binary.shape(&Base64Value, &items[..1]);
        assert_eq!(shaped.payload, Bytes::from_static(br#"{"a":1}"#));
        let header =
            |n: &str| shaped.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.to_str().unwrap().to_string());
        assert_eq!(header("ce-id").as_deref(), Some("t-0-1"));
        assert_eq!(header("ce-specversion").as_deref(), Some("1.0"));
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
    }

    #[test]
    fn records_without_payload_fields_are_their_own_payload() {
        let tick = json!({"detail-type": "Scheduled Event"});
        let items = [Item { id: "x", time: SystemTime::UNIX_EPOCH, data: &tick }];
        assert_eq!(Format::Raw.value(&SingleEnvelope, &items), tick);
        assert_eq!(ce().value(&SingleEnvelope, &items)["data"], tick);
        assert_eq!(header_value("a\"b%c\u{e9}"), "a%22b%25c%C3%A9");
    }
}
