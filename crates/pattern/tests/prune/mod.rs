//! An event cut down to the paths a pattern tests (`Pattern::paths`), as a mapping parses a payload
//! for its filters: objects on the way keep the keys named, lists keep every element, and the value at
//! the end of a path is kept whole.

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Default)]
pub struct Trie {
    whole: bool,
    keys: BTreeMap<String, Trie>,
}

impl Trie {
    pub fn new(paths: &[Vec<&str>]) -> Trie {
        let mut trie = Trie::default();
        for path in paths {
            let mut at = &mut trie;
            for key in path {
                at = at.keys.entry(key.to_string()).or_default();
            }
            at.whole = true;
        }
        trie
    }

    pub fn prune(&self, value: &Value) -> Value {
        match value {
            _ if self.whole => value.clone(),
            Value::Object(object) => Value::Object(
                object.iter().filter_map(|(k, v)| self.keys.get(k).map(|t| (k.clone(), t.prune(v)))).collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(|i| self.prune(i)).collect()),
            other => other.clone(),
        }
    }
}
