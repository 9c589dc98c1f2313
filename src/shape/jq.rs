//! jq programs (the `jaq` crates) compiled once per mapping and run per
//! record or per batch.

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data, unwrap_valr};
use jaq_json::{Num, Val};
use serde_json::{Number, Value};

type Filter = jaq_core::Filter<data::JustLut<Val>>;

/// A compiled jq program.
pub struct Jq {
    filter: Filter,
}

impl std::fmt::Debug for Jq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Jq")
    }
}

/// A program produces at most this many outputs before it counts as
/// producing too many; it also stops an endless generator.
const MAX_OUTPUTS: usize = 2;

impl Jq {
    /// Compiles `code`; the error lists what the parser or compiler reported.
    pub fn compile(code: &str) -> Result<Self, String> {
        let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
        let funs = jaq_core::funs().chain(jaq_std::funs()).chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader
            .load(&arena, File { code, path: () })
            .map_err(|errors| format!("cannot parse jq program: {}", describe(&errors)))?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errors| format!("cannot compile jq program: {}", describe(&errors)))?;
        Ok(Self { filter })
    }

    /// Runs the program on `input` and expects exactly one output.
    pub fn run_one(&self, input: &Value) -> Result<Value, String> {
        match self.run(input)?.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err("the jq program produced no value; expected one".into()),
            _ => Err("the jq program produced more than one value; expected one (collect them with [...])".into()),
        }
    }

    /// Runs the program on `input`: its outputs (at most two), or its first error.
    pub fn run(&self, input: &Value) -> Result<Vec<Value>, String> {
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut out = Vec::new();
        for result in self.filter.id.run((ctx, to_val(input))).map(unwrap_valr).take(MAX_OUTPUTS) {
            match result {
                Ok(value) => out.push(from_val(&value)),
                Err(error) => return Err(format!("jq error: {error}")),
            }
        }
        Ok(out)
    }
}

fn describe<T: std::fmt::Debug>(errors: &T) -> String {
    // jaq reports errors as (file, [(message, span)]) lists; its Debug form
    // names what was expected and where, which is what a user needs.
    let text = format!("{errors:?}");
    if text.chars().count() > 500 { format!("{}...", text.chars().take(500).collect::<String>()) } else { text }
}

/// serde_json → jaq, without a round trip through text.
pub fn to_val(value: &Value) -> Val {
    match value {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => Val::Num(match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Num::from_integral(i),
            (None, Some(u)) => Num::from_integral(u),
            (None, None) => Num::Float(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Value::String(s) => Val::utf8_str(s.clone().into_bytes()),
        Value::Array(items) => Val::Arr(items.iter().map(to_val).collect::<Vec<_>>().into()),
        Value::Object(fields) => {
            Val::obj(fields.iter().map(|(k, v)| (Val::utf8_str(k.clone().into_bytes()), to_val(v))).collect())
        }
    }
}

/// jaq → serde_json. Object keys that are not strings (jaq allows them)
/// become their JSON text.
pub fn from_val(value: &Val) -> Value {
    match value {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => number(n),
        Val::TStr(b) | Val::BStr(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        Val::Arr(items) => Value::Array(items.iter().map(from_val).collect()),
        Val::Obj(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
                        other => other.to_string(),
                    };
                    (key, from_val(v))
                })
                .collect(),
        ),
    }
}

fn number(n: &Num) -> Value {
    match n {
        Num::Int(i) => Value::from(*i as i64),
        Num::Float(f) => Number::from_f64(*f).map(Value::Number).unwrap_or(Value::Null),
        // Big integers and decimals keep their digits when serde_json can
        // hold them, else fall back to the nearest float.
        other => {
            let text = Val::Num(other.clone()).to_string();
            serde_json::from_str::<Number>(&text)
                .map(Value::Number)
                .or_else(|_| text.parse::<f64>().map(|f| Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)))
                .unwrap_or(Value::Null)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn runs_programs_with_the_standard_library() {
        let jq = Jq::compile("{id: .value.id, names: [.value.items[].name | ascii_upcase]}").unwrap();
        let out = jq.run_one(&json!({"value": {"id": 7, "items": [{"name": "a"}, {"name": "b"}]}})).unwrap();
        assert_eq!(out, json!({"id": 7, "names": ["A", "B"]}));
    }

    #[test]
    fn values_round_trip() {
        let v = json!({"n": null, "b": true, "i": -3, "f": 1.5, "big": 18446744073709551615u64, "s": "é", "a": [1, [2]], "o": {"k": {}}});
        assert_eq!(from_val(&to_val(&v)), v);
    }

    #[test]
    fn errors_are_reported_not_raised() {
        assert!(Jq::compile("{a: ").unwrap_err().contains("cannot parse"));
        assert!(Jq::compile("nosuchfn(1)").unwrap_err().contains("cannot compile"));
        let jq = Jq::compile(".a | ascii_downcase").unwrap();
        assert!(jq.run_one(&json!({"a": 1})).unwrap_err().starts_with("jq error"));
        assert!(Jq::compile("empty").unwrap().run_one(&json!(1)).unwrap_err().contains("no value"));
        assert!(Jq::compile("1, 2, 3").unwrap().run_one(&json!(1)).unwrap_err().contains("more than one"));
        // An endless generator stops at the output bound.
        assert_eq!(Jq::compile("repeat(1)").unwrap().run(&json!(1)).unwrap().len(), MAX_OUTPUTS);
    }
}
