//! jq programs (the `jaq` crates) compiled once per mapping and run per
//! record or per batch.

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data, unwrap_valr};
use jaq_json::{Num, Val};
use serde_json::{Number, Value};

use super::projection::Projection;

type Filter = jaq_core::Filter<data::JustLut<Val>>;

/// A compiled jq program.
pub struct Jq {
    filter: Filter,
    /// The same program evaluated on `serde_json` values directly, when it
    /// only picks and rebuilds (see `projection`).
    projection: Option<Projection>,
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
        Ok(Self { filter, projection: Projection::compile(code) })
    }

    /// Runs the program on `input` and expects exactly one output.
    pub fn run_one(&self, input: &Value) -> Result<Value, String> {
        match self.run(input)?.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err("the jq program produced no value; expected one".into()),
            _ => Err("the jq program produced more than one value; expected one (collect them with [...])".into()),
        }
    }

    /// What the program reads of its input: all of it unless it is a
    /// projection (see [`Projection::reads`]).
    pub fn reads(&self) -> switchyard_sdk::Reads {
        self.projection.as_ref().map_or(switchyard_sdk::Reads::All, Projection::reads)
    }

    /// The program's output by its projection alone; `None` when it has
    /// none or the projection leaves the input to jaq.
    pub fn project(&self, input: &Value) -> Option<Value> {
        self.projection.as_ref().and_then(|p| p.eval(input))
    }

    /// Runs the program on `input`: its outputs (at most two), or its first error.
    pub fn run(&self, input: &Value) -> Result<Vec<Value>, String> {
        if let Some(out) = self.project(input) {
            return Ok(vec![out]);
        }
        self.run_jaq(input)
    }

    /// Runs the program on jaq alone.
    fn run_jaq(&self, input: &Value) -> Result<Vec<Value>, String> {
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
    use switchyard_sdk::Reads;

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

    /// A small deterministic generator (xorshift), so failures reproduce.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        fn key(&mut self) -> &'static str {
            ["a", "b", "c", "é"][self.next(4)]
        }

        fn record(&mut self, depth: usize) -> Value {
            match self.next(if depth == 0 { 7 } else { 10 }) {
                0 => Value::Null,
                1 => Value::Bool(self.next(2) == 0),
                2 => json!(self.next(5) as i64 - 2),
                3 => json!([1.0, 2.5, -0.0, 1e3][self.next(4)]),
                4 => json!(u64::MAX - self.next(2) as u64),
                5 | 6 => json!(["", "x", "ÉtÉ", "a\"b"][self.next(4)]),
                7 | 8 => {
                    let n = self.next(4);
                    Value::Object((0..n).map(|_| (self.key().to_string(), self.record(depth - 1))).collect())
                }
                _ => Value::Array((0..self.next(4)).map(|_| self.record(depth - 1)).collect()),
            }
        }

        fn program(&mut self, depth: usize) -> String {
            let path = |g: &mut Gen| {
                let steps: String = (0..1 + g.next(3))
                    .map(|_| match g.next(3) {
                        0 => format!(".[{}]", g.next(3)),
                        1 => format!(".[\"{}\"]", g.key()),
                        _ => format!(".{}", ["a", "b", "c"][g.next(3)]),
                    })
                    .collect();
                steps
            };
            if depth == 0 {
                return match self.next(6) {
                    0 => ".".into(),
                    1 => [
                        "1",
                        "1.0",
                        "2.5",
                        "-0",
                        "-0.0",
                        "\"x\"",
                        "\"\\u00e9\\n\"",
                        "true",
                        "false",
                        "null",
                        "18446744073709551615",
                    ][self.next(11)]
                    .into(),
                    2 => "length".into(),
                    3 => "not".into(),
                    _ => path(self),
                };
            }
            let d = depth - 1;
            match self.next(13) {
                0 => format!(
                    "{{{}: ({}), \"{}\": ({}), {}}}",
                    ["a", "b", "c"][self.next(3)],
                    self.program(d),
                    ["é", "k 2"][self.next(2)],
                    self.program(d),
                    ["a", "b"][self.next(2)]
                ),
                1 => format!("[({}), ({})]", self.program(d), self.program(d)),
                2 => format!("({}) | ({})", self.program(d), self.program(d)),
                3 => format!("({}) == ({})", self.program(d), self.program(d)),
                4 => format!("({}) != ({})", self.program(d), self.program(d)),
                5 => format!("({}) and ({})", self.program(d), self.program(d)),
                6 => format!("({}) or ({})", self.program(d), self.program(d)),
                7 => format!("({}) // ({})", self.program(d), self.program(d)),
                8 => format!("({}){}", self.program(d), path(self)),
                9 => format!("[{}[] | ({})]", path(self), self.program(d)),
                10 => format!("map({})", self.program(d)),
                11 => format!("[{}[]{}]", path(self), path(self)),
                _ => self.program(0),
            }
        }
    }

    #[test]
    fn projections_agree_with_jaq() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let (mut decided, mut total, mut collected) = (0, 0, 0);
        for _ in 0..800 {
            let code = g.program(3);
            let collects = code.contains("[]") || code.contains("map(");
            let jq = Jq::compile(&code).unwrap_or_else(|e| panic!("{code}: {e}"));
            let projection = jq.projection.as_ref().unwrap_or_else(|| panic!("{code}: not compiled as a projection"));
            let reads = projection.reads();
            for _ in 0..25 {
                // Objects at the top, as records are, so most paths resolve.
                let record: Value = ["a", "b", "c"].iter().map(|k| (k.to_string(), g.record(3))).collect();
                total += 1;
                // The record cut down to what the program reads (as a
                // mapping parses a payload) decides the same way.
                let cut = reads.prune(&record);
                assert_eq!(projection.eval(&cut), projection.eval(&record), "program {code} on {record}, cut to {cut}");
                if let Some(fast) = projection.eval(&record) {
                    decided += 1;
                    collected += usize::from(collects);
                    let jaq = jq.run_jaq(&record);
                    assert_eq!(jaq, Ok(vec![fast.clone()]), "program {code} on {record}");
                }
            }
        }
        // Random paths often hit what jaq reports as an error (indexing a
        // string, iterating a number), which is left undecided; the rest is
        // compared.
        assert!(decided * 10 > total, "only {decided} of {total} decided");
        assert!(collected > 300, "only {collected} decided programs collect over a list");
    }

    #[test]
    fn projections_name_what_they_read() {
        let reads = |code: &str| Projection::compile(code).unwrap().reads();
        let paths = |paths: &[&[&str]]| Reads::paths(paths);
        let mut counted = paths(&[&["detail", "id"]]);
        counted.add_length(&["items"]);
        assert_eq!(reads("{id: .detail.id, n: (.items | length)}"), counted);
        assert_eq!(reads(".detail | {a: .a, b: .b[0].c}"), paths(&[&["detail", "a"], &["detail", "b", "c"]]));
        assert_eq!(reads(".a[0] | length"), paths(&[&["a"]]), "an element's length reads it whole");
        assert_eq!(reads("{k: 1} | .k"), Reads::nothing());
        assert_eq!(reads(".a == 1 and (.b.c // .d)"), paths(&[&["a"], &["b", "c"], &["d"]]));
        assert!(reads(".").is_all());
        assert!(reads("{all: .}").is_all());
        assert!(!reads("length").is_all(), "length reads the keys, not the values");
        assert!(reads("[length, .]").is_all());
        assert_eq!(reads("[.items[] | {sku, n: .q.n}]"), paths(&[&["items", "sku"], &["items", "q", "n"]]));
        assert_eq!(reads("[.items[].sku]"), paths(&[&["items", "sku"]]));
        assert_eq!(reads("[.items[] | length]"), paths(&[&["items"]]), "an element's length reads it whole");
        assert_eq!(reads(".x | map(.a)"), paths(&[&["x", "a"]]));
    }

    #[test]
    fn programs_beyond_projections_run_on_jaq() {
        for code in [
            "{a: .a[]}",
            ".a + 1",
            "\"\\(.a)\"",
            "def f: .; f",
            ".a?",
            "[.a[]?]",
            "[.a[].b[]]",
            "[.a[] | (1, 2)]",
            "$__loc__",
            ".[-1]",
            "{(.k): 1}",
        ] {
            assert!(Projection::compile(code).is_none(), "{code}");
        }
        // An error jaq reports still comes from jaq.
        let jq = Jq::compile("{x: .a.b}").unwrap();
        assert!(jq.run(&json!({"a": "text"})).unwrap_err().starts_with("jq error"));
        assert_eq!(jq.run(&json!({"a": {"b": [1]}})).unwrap(), vec![json!({"x": [1]})]);
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
