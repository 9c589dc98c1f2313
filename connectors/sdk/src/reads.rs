//! Parsing only what is read.
//!
//! A mapping's filters and record transform usually look at a few fields of a
//! payload. Building the whole payload as a `serde_json` tree costs about four
//! times scanning it (every key and string allocated, every object a map), so
//! a payload is parsed keeping only the paths its readers name; the rest is
//! scanned, checked as JSON and dropped. What is kept is exactly what a full
//! parse gives at those paths: a kept value is parsed whole, and an object on
//! the way keeps its named keys only.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// What the readers of a JSON value look at: all of it, or some keys of it
/// (each with what is read beneath), and possibly which keys an object has
/// (`length` counts them). A list keeps every element, so its length stays,
/// and passes the keys named to each of them, as event patterns and field
/// paths look through lists; which keys an element has is not read. A scalar
/// is always kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reads {
    All,
    Keys {
        named: BTreeMap<String, Reads>,
        /// Every key of an object is kept; those not named hold nothing
        /// read (an object becomes `{}`, a list keeps its elements so).
        every_key: bool,
    },
}

static ALL: Reads = Reads::All;
static NOTHING: Reads = Reads::Keys { named: BTreeMap::new(), every_key: false };

impl Reads {
    /// Nothing is read (yet).
    pub fn nothing() -> Reads {
        NOTHING.clone()
    }

    /// What reads these paths whole (see [`Reads::add_path`]).
    pub fn paths<P: AsRef<[S]>, S: AsRef<str>>(paths: impl IntoIterator<Item = P>) -> Reads {
        let mut reads = Reads::nothing();
        for path in paths {
            reads.add_path(path.as_ref());
        }
        reads
    }

    pub fn is_all(&self) -> bool {
        matches!(self, Reads::All)
    }

    /// Adds a path that is read whole: `["detail", "total"]`; the empty path
    /// reads everything.
    pub fn add_path<S: AsRef<str>>(&mut self, path: &[S]) {
        if let Some(reads) = self.at(path) {
            *reads = Reads::All;
        }
    }

    /// Adds a path whose value is read for its length: the keys of an
    /// object, the elements of a list (not what they hold), a string whole.
    pub fn add_length<S: AsRef<str>>(&mut self, path: &[S]) {
        if let Some(Reads::Keys { every_key, .. }) = self.at(path) {
            *every_key = true;
        }
    }

    /// Adds what `other` reads of the value at `path`.
    pub fn add_at<S: AsRef<str>>(&mut self, path: &[S], other: &Reads) {
        if let Some(reads) = self.at(path) {
            reads.add(other);
        }
    }

    /// The reads at `path`, created as nothing where missing; `None` when
    /// everything there is read already.
    fn at<S: AsRef<str>>(&mut self, path: &[S]) -> Option<&mut Reads> {
        match (self, path) {
            (Reads::All, _) => None,
            (reads, []) => Some(reads),
            (Reads::Keys { named, .. }, [first, rest @ ..]) => {
                named.entry(first.as_ref().to_string()).or_insert_with(Reads::nothing).at(rest)
            }
        }
    }

    /// Adds everything `other` reads.
    pub fn add(&mut self, other: &Reads) {
        match (self, other) {
            (Reads::All, _) => {}
            (reads, Reads::All) => *reads = Reads::All,
            (
                Reads::Keys { named: mine, every_key: all_mine },
                Reads::Keys { named: theirs, every_key: all_theirs },
            ) => {
                *all_mine |= *all_theirs;
                for (key, reads) in theirs {
                    mine.entry(key.clone()).or_insert_with(Reads::nothing).add(reads);
                }
            }
        }
    }

    /// What is read under `key` of an object; `None` when the key is not kept.
    pub fn get(&self, key: &str) -> Option<&Reads> {
        self.under(key, false)
    }

    /// As [`Reads::get`], for an object that is an `element` of a list or not.
    fn under(&self, key: &str, element: bool) -> Option<&Reads> {
        match self {
            Reads::All => Some(&ALL),
            Reads::Keys { named, every_key } => named.get(key).or((*every_key && !element).then_some(&NOTHING)),
        }
    }

    /// `text` parsed as JSON, keeping only what is read; an error exactly
    /// when `serde_json::from_str::<Value>(text)` fails.
    pub fn parse(&self, text: &str) -> Result<Value, serde_json::Error> {
        if self.is_all() {
            return serde_json::from_str(text);
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let value = Pruned { reads: self, element: false }.deserialize(&mut de)?;
        de.end()?;
        Ok(value)
    }

    /// `value` with only what is read, for a value already parsed.
    pub fn prune(&self, value: &Value) -> Value {
        self.prune_in(value, false)
    }

    fn prune_in(&self, value: &Value, element: bool) -> Value {
        match (self, value) {
            (Reads::Keys { .. }, Value::Object(object)) => Value::Object(
                object
                    .iter()
                    .filter_map(|(key, v)| self.under(key, element).map(|reads| (key.clone(), reads.prune(v))))
                    .collect(),
            ),
            (Reads::Keys { .. }, Value::Array(items)) => {
                Value::Array(items.iter().map(|i| self.prune_in(i, true)).collect())
            }
            _ => value.clone(),
        }
    }
}

/// Deserializes a JSON value keeping what its [`Reads`] name; `element`
/// when the value is an element of a list.
#[derive(Clone, Copy)]
struct Pruned<'r> {
    reads: &'r Reads,
    element: bool,
}

impl<'de> DeserializeSeed<'de> for Pruned<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.reads {
            Reads::All => serde::Deserialize::deserialize(d),
            _ => d.deserialize_any(PrunedVisitor(self)),
        }
    }
}

struct PrunedVisitor<'r>(Pruned<'r>);

impl<'de> Visitor<'de> for PrunedVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        let Pruned { reads, element } = self.0;
        while let Some(key) = map.next_key_seed(Key)? {
            match reads.under(&key, element) {
                Some(reads) => {
                    object.insert(key.into_owned(), map.next_value_seed(Pruned { reads, element: false })?);
                }
                None => map.next_value_seed(Skip)?,
            }
        }
        Ok(Value::Object(object))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Pruned { element: true, ..self.0 })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // As serde_json's own `Value` does.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// A value that is not read: checked as a full parse checks it (numbers
/// included: one beyond `f64`'s range fails here as it does there, which
/// serde's `IgnoredAny` would let through), and dropped without allocating.
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Skip)?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// An object key, borrowed from the text when it has no escapes: a key that
/// is not read is never allocated.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn reads(paths: &[&[&str]]) -> Reads {
        Reads::paths(paths)
    }

    #[test]
    fn keeps_the_paths_read_and_nothing_else() {
        let text = r#"{"a": {"b": 1, "c": [1, {"x": 2}], "d\"q": "e"}, "list": [{"k": 1, "j": 2}, 3, [{"k": 4}]],
                       "s": "t", "big": 1e300, "neg": -5, "f": 2.5, "n": null, "esc\u0041": true}"#;
        let r = reads(&[&["a", "b"], &["list", "k"], &["neg"], &["f"], &["n"], &["escA"], &["a", "d\"q"]]);
        assert_eq!(
            r.parse(text).unwrap(),
            json!({"a": {"b": 1, "d\"q": "e"}, "list": [{"k": 1}, 3, [{"k": 4}]], "neg": -5, "f": 2.5, "n": null, "escA": true})
        );
        let full: Value = serde_json::from_str(text).unwrap();
        assert_eq!(r.parse(text).unwrap(), r.prune(&full), "parsing pruned and pruning the parse agree");
        assert_eq!(reads(&[&["a"]]).parse(text).unwrap(), json!({"a": full["a"].clone()}));
        assert_eq!(reads(&[&[]]).parse(text).unwrap(), full);
    }

    #[test]
    fn fails_exactly_when_a_full_parse_fails() {
        let r = reads(&[&["a"]]);
        for text in [
            r#"{"a": 1, "b": [1, 2}"#,
            r#"{"a": 1} x"#,
            r#"{"a": 1, "b": "\q"}"#,
            r#"{"a": 1, "b": tru}"#,
            r#"{"a": 1, "b": 01}"#,
            r#"{"a": 1,}"#,
            r#"{"a": 1, "b": 1e400}"#,
            r#"{"a": 1, "b": [-1e999]}"#,
            "",
            r#"{"a": 1, "b": "ok"}"#,
            "[1, 2]",
            "\"text\"",
            "17",
        ] {
            assert_eq!(r.parse(text).is_ok(), serde_json::from_str::<Value>(text).is_ok(), "{text}");
        }
        let deep = format!("{{\"b\": {}1{}}}", "[".repeat(200), "]".repeat(200));
        assert!(r.parse(&deep).is_err(), "the recursion limit holds for skipped values too");
    }

    #[test]
    fn reads_combine() {
        let mut r = reads(&[&["a", "b"]]);
        r.add(&reads(&[&["a", "c"], &["d"]]));
        assert_eq!(r, reads(&[&["a", "b"], &["a", "c"], &["d"]]));
        r.add_path(&["a"]);
        assert_eq!(r.get("a"), Some(&Reads::All));
        assert!(r.get("z").is_none());
        let mut counted = reads(&[&["x", "y"]]);
        counted.add_length(&["x"]);
        assert_eq!(counted.get("x").unwrap().get("other"), Some(&Reads::nothing()));
        assert_eq!(
            counted.parse(r#"{"x": {"y": [1], "z": {"deep": 1}, "w": [{"a": 1}, 2]}, "q": 1}"#).unwrap(),
            json!({"x": {"y": [1], "z": {}, "w": [{}, 2]}})
        );
        assert_eq!(
            counted.parse(r#"{"x": [{"y": 1, "z": 2}, {"w": 3}, [{"v": 4}]]}"#).unwrap(),
            json!({"x": [{"y": 1}, {}, [{}]]}),
            "a list keeps its elements, not which keys they have"
        );
        r.add(&counted);
        assert_eq!(r.get("x").unwrap().get("other"), Some(&Reads::nothing()));
        r.add(&Reads::All);
        assert!(r.is_all());
        assert_eq!(r.get("z"), Some(&Reads::All));
    }
}
