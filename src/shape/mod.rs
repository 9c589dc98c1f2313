//! Per-mapping filtering and shaping, applied the same way to every source:
//! event patterns decide which records reach the function, a record transform
//! (jq or EventBridge's input transformer) rewrites each record's payload,
//! the format picks the event's shape, and a batch transform (jq) rewrites
//! the whole event.
//!
//! Patterns and record transforms see a record as Lambda's event filtering
//! does: the record's metadata with its payload decoded and, when it is JSON,
//! parsed (`value`/`key` for Kafka, `data` for RabbitMQ, `body` for webhooks).
//! A record transform's output becomes the record's payload, encoded as the
//! source encodes it, so an unmodified Lambda handler still finds it where it
//! looks (base64 in a Kafka `value`, text in a webhook `body`).
//!
//! The view they see holds only what they read ([`Reads`]): the paths the
//! patterns test, the paths a projection picks, an input template's input
//! paths. A 1 KB payload of which a filter tests two fields is scanned, not
//! built as a tree. A transform that needs the whole record (a program for
//! jaq's interpreter, a template holding `<aws.events.event>`) gets all of it.

mod format;
mod jq;
mod projection;
mod template;

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::Value;
use switchyard_pattern::{Pattern, PatternSet};
use switchyard_sdk::{Envelope, PayloadField, Reads, payload_value};

use crate::config::{CloudEventsMode, FormatConfig, MappingConfig};
pub use format::{Format, Item, Shaped};
pub use jq::Jq;
use template::InputTransformer;

/// What happens to one record before batching.
#[derive(Debug, PartialEq)]
pub enum Admit {
    /// On to the function.
    Keep,
    /// Matched no filter (or a transform produced nothing): acknowledged
    /// without invoking.
    Skip,
    /// The record transform failed: the record goes to the failure path.
    Fail(String),
}

enum RecordTransform {
    Jq(Jq),
    Input(InputTransformer),
}

pub struct Shaper {
    filter: Option<PatternSet>,
    record: Option<RecordTransform>,
    batch: Option<Jq>,
    format: Format,
    /// What the filter and the record transform read of a record.
    reads: Reads,
    filtered: metrics::Counter,
    transform_errors: metrics::Counter,
}

impl std::fmt::Debug for Shaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shaper")
            .field("filters", &self.filter.as_ref().map_or(0, PatternSet::len))
            .field("record_transform", &self.record.is_some())
            .field("batch_transform", &self.batch.is_some())
            .field("format", &self.format)
            .finish()
    }
}

/// A config error: the key path under the mapping, and what was expected.
pub type Invalid = (String, String);

impl Shaper {
    pub fn new(mapping: &MappingConfig) -> Result<Self, Invalid> {
        let mut patterns = Vec::with_capacity(mapping.filters.len());
        for (i, filter) in mapping.filters.iter().enumerate() {
            let at = format!("filters[{i}].pattern");
            let pattern = match &filter.pattern {
                Value::String(text) => serde_json::from_str(text)
                    .map_err(|e| (at.clone(), format!("expected an event pattern as JSON text: {e}")))?,
                other => other.clone(),
            };
            Pattern::new(&pattern).map_err(|e| (join(&at, &e.path), e.message))?;
            patterns.push(pattern);
        }
        let filter = if patterns.is_empty() {
            None
        } else {
            Some(PatternSet::new(&patterns).map_err(|e| ("filters".to_string(), e.to_string()))?)
        };
        let (record, batch) = match &mapping.transform {
            None => (None, None),
            Some(t) => {
                let record = match (&t.record, &t.input_paths, &t.input_template) {
                    (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                        return Err((
                            "transform".into(),
                            "expected either record (jq) or input_paths/input_template, not both".into(),
                        ));
                    }
                    (Some(code), None, None) => {
                        Some(RecordTransform::Jq(Jq::compile(code).map_err(|e| ("transform.record".to_string(), e))?))
                    }
                    (None, paths, Some(template)) => Some(RecordTransform::Input(
                        InputTransformer::new(&paths.clone().unwrap_or_default(), template, &mapping.name)
                            .map_err(|(key, e)| (format!("transform.{key}"), e))?,
                    )),
                    (None, Some(_), None) => {
                        return Err(("transform.input_template".into(), "expected a template for input_paths".into()));
                    }
                    (None, None, None) => None,
                };
                let batch =
                    t.batch.as_deref().map(Jq::compile).transpose().map_err(|e| ("transform.batch".to_string(), e))?;
                (record, batch)
            }
        };
        let format = match &mapping.format {
            FormatConfig::Lambda => Format::Lambda,
            FormatConfig::Raw => Format::Raw,
            FormatConfig::CloudEvents(ce) => Format::CloudEvents {
                binary: ce.mode == CloudEventsMode::Binary,
                type_: ce.type_.clone().unwrap_or_else(|| format!("switchyard.{}", mapping.source.kind())),
                source: ce.source.clone().unwrap_or_else(|| format!("/switchyard/mappings/{}", mapping.name)),
            },
        };
        let name = mapping.name.clone();
        let reads = reads(filter.as_ref(), record.as_ref());
        Ok(Self {
            filter,
            record,
            batch,
            format,
            reads,
            filtered: metrics::counter!("switchyard_records_filtered_total", "mapping" => name.clone()),
            transform_errors: metrics::counter!("switchyard_transform_errors_total", "mapping" => name),
        })
    }

    /// A shaper that lets every record through and gives Lambda's event.
    pub fn passthrough() -> Self {
        Self {
            filter: None,
            record: None,
            batch: None,
            format: Format::Lambda,
            reads: Reads::All,
            filtered: metrics::Counter::noop(),
            transform_errors: metrics::Counter::noop(),
        }
    }

    /// True when records pass as they are and the event is Lambda's: the
    /// engine then skips the shaper altogether.
    pub fn is_passthrough(&self) -> bool {
        self.admits_all() && self.batch.is_none() && matches!(self.format, Format::Lambda)
    }

    /// True when [`Shaper::admit`] keeps every record as it is (no filter,
    /// no record transform); the event may still be shaped.
    pub fn admits_all(&self) -> bool {
        self.filter.is_none() && self.record.is_none()
    }

    /// Filters `data` and applies the record transform to it in place.
    pub fn admit(&self, envelope: &dyn Envelope, data: &mut Value) -> Admit {
        if self.admits_all() {
            return Admit::Keep;
        }
        let view = view(envelope, data, &self.reads);
        if let Some(filter) = &self.filter
            && !filter.matches(&view)
        {
            self.filtered.increment(1);
            return Admit::Skip;
        }
        let output = match &self.record {
            None => return Admit::Keep,
            Some(RecordTransform::Jq(jq)) => match self.run_jq(jq, envelope, data, &view) {
                Ok(mut out) if out.len() == 1 => out.pop().map(Payload::Value),
                Ok(out) if out.is_empty() => None,
                Ok(_) => Some(Payload::Error(
                    "the record transform produced more than one value; expected one (collect them with [...])".into(),
                )),
                Err(e) => Some(Payload::Error(e)),
            },
            Some(RecordTransform::Input(t)) => Some(Payload::Text(t.apply(&view))),
        };
        match output {
            None => {
                self.filtered.increment(1);
                Admit::Skip
            }
            Some(Payload::Error(e)) => {
                self.transform_errors.increment(1);
                Admit::Fail(e)
            }
            Some(payload) => {
                set_payload(envelope, data, payload);
                Admit::Keep
            }
        }
    }

    /// Runs a record transform on `view`; a program its projection does not
    /// decide runs on jaq with the whole record (jaq's error messages quote
    /// values).
    fn run_jq(&self, jq: &Jq, envelope: &dyn Envelope, data: &Value, view: &Value) -> Result<Vec<Value>, String> {
        match jq.project(view) {
            Some(out) => Ok(vec![out]),
            None if self.reads.is_all() => jq.run(view),
            None => jq.run(&self::view(envelope, data, &Reads::All)),
        }
    }

    /// The invocation for a batch of admitted records; an error when the
    /// batch transform failed.
    pub fn event(&self, envelope: &dyn Envelope, items: &[Item]) -> Result<Shaped, String> {
        let Some(jq) = &self.batch else {
            return Ok(self.format.shape(envelope, items));
        };
        match jq.run_one(&self.format.value(envelope, items)) {
            Ok(out) => Ok(Shaped { payload: payload_bytes(&out), headers: Vec::new() }),
            Err(e) => {
                self.transform_errors.increment(1);
                Err(format!("batch transform: {e}"))
            }
        }
    }
}

fn join(at: &str, path: &str) -> String {
    // The pattern crate names the whole pattern `$`.
    if path.is_empty() || path == "$" { at.to_string() } else { format!("{at}.{path}") }
}

enum Payload {
    Value(Value),
    Text(String),
    Error(String),
}

/// A transform's output as payload bytes: a string is its text (as `jq -r`
/// prints it), anything else its JSON.
fn payload_bytes(value: &Value) -> Bytes {
    match value {
        Value::String(s) => Bytes::from(s.clone()),
        other => Bytes::from(other.to_string()),
    }
}

/// What `filter` and `record` read of a record together.
fn reads(filter: Option<&PatternSet>, record: Option<&RecordTransform>) -> Reads {
    let mut reads = Reads::paths(filter.map(PatternSet::paths).unwrap_or_default());
    match record {
        None => {}
        Some(RecordTransform::Jq(jq)) => reads.add(&jq.reads()),
        Some(RecordTransform::Input(template)) => reads.add(&template.reads()),
    }
    reads
}

/// `data` as patterns and transforms see it, holding what `reads` names:
/// payload fields decoded, and parsed when they are JSON, at the top level
/// under their key. Built field by field, so an encoded payload is never
/// copied only to be replaced.
fn view<'a>(envelope: &dyn Envelope, data: &'a Value, reads: &Reads) -> Cow<'a, Value> {
    let fields = envelope.payload_fields(data);
    let (false, Some(object)) = (fields.is_empty(), data.as_object()) else {
        return Cow::Borrowed(data);
    };
    let decoded = |field: &PayloadField, reads: &Reads| field.value_reading(data, reads);
    let mut view = serde_json::Map::new();
    for (key, value) in object {
        let Some(reads) = reads.get(key) else { continue };
        let top_level = fields.iter().find(|field| field.parent.is_none() && field.key == key);
        view.insert(
            key.clone(),
            top_level.and_then(|field| decoded(field, reads)).unwrap_or_else(|| reads.prune(value)),
        );
    }
    for field in fields.iter().filter(|field| field.parent.is_some()) {
        if let Some(value) = reads.get(field.key).and_then(|reads| decoded(field, reads)) {
            view.insert(field.key.to_string(), value);
        }
    }
    Cow::Owned(Value::Object(view))
}

fn set_payload(envelope: &dyn Envelope, data: &mut Value, payload: Payload) {
    let field: Option<PayloadField> = envelope.payload_fields(data).first().copied();
    match (field, payload) {
        (Some(field), Payload::Value(v)) => field.set(data, &payload_bytes(&v)),
        (Some(field), Payload::Text(t)) => field.set(data, t.as_bytes()),
        (None, Payload::Value(v)) => *data = v,
        (None, Payload::Text(t)) => *data = payload_value(t.as_bytes()),
        (_, Payload::Error(_)) => {}
    }
}

/// A webhook's API Gateway event: its payload is `body`, base64 when
/// `isBase64Encoded`.
pub struct WebhookEnvelope;

impl Envelope for WebhookEnvelope {
    fn write_event(&self, records: &[&Value], out: &mut Vec<u8>) {
        switchyard_sdk::SingleEnvelope.write_event(records, out);
    }

    fn payload_fields(&self, record: &Value) -> &'static [PayloadField] {
        const TEXT: &[PayloadField] = &[PayloadField::text("body")];
        const BASE64: &[PayloadField] = &[PayloadField::base64("body")];
        if record.get("isBase64Encoded") == Some(&Value::Bool(true)) { BASE64 } else { TEXT }
    }
}

#[cfg(test)]
mod tests;
