//! Counting an event's records without building it as a tree.
//!
//! The benchmarks' function shares the machine's cores with Switchyard and the
//! broker, so what it spends is taken from what is measured. It still reads
//! every byte of the event as JSON (a malformed event counts nothing); it only
//! skips allocating a `serde_json::Value` per record.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The records of `event`: the length of the list under `field`, or the sum
/// of the lists' lengths in the object under it; an object without `field`
/// is one record (an MQTT batch of one is the payload itself).
pub fn records(event: &[u8], field: &'static str) -> usize {
    let mut de = serde_json::Deserializer::from_slice(event);
    // A malformed event counts nothing.
    de.deserialize_any(Event { field }).and_then(|n| de.end().map(|()| n)).unwrap_or(0)
}

struct Event {
    field: &'static str,
}

/// Scalars count no records.
macro_rules! scalars_count_nothing {
    () => {
        fn visit_str<E>(self, _: &str) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_bool<E>(self, _: bool) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_i64<E>(self, _: i64) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_u64<E>(self, _: u64) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_f64<E>(self, _: f64) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_unit<E>(self) -> Result<usize, E> {
            Ok(0)
        }
    };
}

impl<'de> Visitor<'de> for Event {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == self.field {
                found = Some(map.next_value_seed(Len { lists_inside: true })?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found.unwrap_or(1))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(0)
    }

    scalars_count_nothing!();
}

/// A list counts its elements; with `lists_inside`, an object counts the
/// elements of the lists among its values.
#[derive(Clone, Copy)]
struct Len {
    lists_inside: bool,
}

impl<'de> DeserializeSeed<'de> for Len {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Len {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while map.next_key::<IgnoredAny>()?.is_some() {
            if self.lists_inside {
                n += map.next_value_seed(Len { lists_inside: false })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(n)
    }

    scalars_count_nothing!();
}

/// The same count from a parsed tree, the way the function counted before.
pub fn records_from_tree(event: &[u8], field: &str) -> usize {
    let event: serde_json::Value = serde_json::from_slice(event).unwrap_or_default();
    match &event[field] {
        serde_json::Value::Array(list) => list.len(),
        serde_json::Value::Object(m) => m.values().map(|l| l.as_array().map_or(0, Vec::len)).sum(),
        _ => usize::from(event.is_object()),
    }
}

/// Panics unless both counts agree on events of every benchmark's shape.
pub fn check() {
    let events: [(&str, &[u8]); 7] = [
        ("records", br#"{"eventSource":"x","records":[{"a":1},{"b":[1,2]},"s",3]}"#),
        ("records", br#"{"eventSource":"aws:kafka","records":{"t-0":[{"v":1},{"v":2}],"t-1":[{}],"n":5}}"#),
        ("rmqMessagesByQueue", br#"{"rmqMessagesByQueue":{"q::/":[{"data":"eA=="},{"data":"eQ=="}]}}"#),
        ("Records", br#"{"Records":[]}"#),
        ("records", br#"{"temperature":21.5,"device":"d1"}"#),
        ("records", br#"[1,2,3]"#),
        ("records", br#"{"records":[1,2"#),
    ];
    for (field, event) in events {
        assert_eq!(
            records(event, field),
            records_from_tree(event, field),
            "record counts differ for {}",
            String::from_utf8_lossy(event)
        );
    }
}
