//! jq programs that only pick and rebuild: evaluated directly on the
//! record's JSON, without converting it into jaq's values and back.
//!
//! Most record transforms are projections such as
//! `{id: .detail.orderId, total: .detail.total, n: (.detail.items | length)}`.
//! Running one through jaq means converting the whole record into jaq's
//! value type, interpreting the program, and converting the output back: on
//! a 1 KB record that costs two to three times parsing the record. A program
//! built only from the forms below is compiled here as well (from jaq's own
//! syntax tree) and evaluated on the `serde_json` value directly:
//!
//! - `.`, literals (numbers, negative ones too, strings without interpolation, `true`, `false`,
//!   `null`), paths of keys and non-negative indices (`.a.b`, `.["k"]`, `.[0]`);
//! - object construction with literal keys (`{a: f, "b": g, c}`), arrays of
//!   single values (`[f, g]`), pipes;
//! - `==`, `!=`, `and`, `or`, `//`, `not`, `length`;
//! - collecting over a list: `[.items[]]`, `[.items[].sku]`,
//!   `[.items[] | {sku, qty}]`, `map(f)`, where what follows `[]` is one of
//!   these forms.
//!
//! Every form yields exactly one value, so the program does too (a collection
//! yields its one list). Whatever
//! jaq would report as an error (indexing a string, the length of a boolean)
//! is not decided here: evaluation gives up and the program runs on jaq,
//! which produces the error. jaq remains the definition of the semantics;
//! a differential test runs both on generated programs and records.

use std::borrow::Cow;

use jaq_core::load::lex::StrPart;
use jaq_core::load::parse::{BinaryOp, Term};
use jaq_core::ops::Cmp;
use jaq_core::path::{Opt, Part};
use serde_json::{Map, Number, Value};
use switchyard_sdk::Reads;

#[derive(Debug)]
pub enum Projection {
    Id,
    Literal(Value),
    Path(Box<Projection>, Vec<Step>),
    Object(Vec<(String, Projection)>),
    Array(Vec<Projection>),
    Pipe(Box<Projection>, Box<Projection>),
    Equal(Box<Projection>, Box<Projection>, bool),
    And(Box<Projection>, Box<Projection>),
    Or(Box<Projection>, Box<Projection>),
    Alternative(Box<Projection>, Box<Projection>),
    Not,
    Length,
    /// `[source[] | each]`.
    Collect(Box<Projection>, Box<Projection>),
}

#[derive(Debug)]
pub enum Step {
    Key(String),
    Position(usize),
}

/// The evaluation cannot decide: the program must run on jaq.
struct Undecided;

impl Projection {
    /// The projection for `code`, or `None` when the program uses anything
    /// outside the forms above.
    pub fn compile(code: &str) -> Option<Projection> {
        let term = jaq_core::load::parse(code, |p| p.term())?;
        from_term(&term)
    }

    /// The program's one output, or `None` when jaq must decide.
    pub fn eval(&self, input: &Value) -> Option<Value> {
        self.apply(input).ok().map(Cow::into_owned)
    }

    /// What the program reads of its input: a record holding only these
    /// paths (see [`Reads`]) gives the same output as the whole record, or
    /// leaves the program to jaq on both.
    pub fn reads(&self) -> Reads {
        let mut reads = Reads::nothing();
        if let Some(output) = self.located(Some(Vec::new()), &mut reads) {
            reads.add_path(&output);
        }
        reads
    }

    /// Adds to `reads` what this form reads of the record when its input is
    /// the record's value at `input` (`None`: a value built by the program,
    /// whose reads were counted where it was built). Returns where in the
    /// record its output lies, when it is a value of the record passed on
    /// as it is; the caller decides how much of that is read.
    fn located(&self, input: Option<Vec<String>>, reads: &mut Reads) -> Option<Vec<String>> {
        let whole = |form: &Projection, reads: &mut Reads| {
            if let Some(path) = form.located(input.clone(), reads) {
                reads.add_path(&path);
            }
        };
        match self {
            Projection::Id => input,
            Projection::Literal(_) => None,
            Projection::Path(base, steps) => {
                let mut path = base.located(input, reads)?;
                // Keys named under a list reach each of its elements, so a
                // position keeps the path; what is read there is read whole,
                // as an element is not told apart from its list.
                path.extend(steps.iter().filter_map(|step| match step {
                    Step::Key(key) => Some(key.clone()),
                    Step::Position(_) => None,
                }));
                if steps.iter().any(|step| matches!(step, Step::Position(_))) {
                    reads.add_path(&path);
                    return None;
                }
                Some(path)
            }
            Projection::Pipe(left, right) => {
                let middle = left.located(input, reads);
                right.located(middle, reads)
            }
            Projection::Object(fields) => {
                fields.iter().for_each(|(_, value)| whole(value, reads));
                None
            }
            Projection::Array(items) => {
                items.iter().for_each(|item| whole(item, reads));
                None
            }
            Projection::Equal(left, right, _)
            | Projection::And(left, right)
            | Projection::Or(left, right)
            | Projection::Alternative(left, right) => {
                whole(left, reads);
                whole(right, reads);
                None
            }
            Projection::Length => {
                if let Some(path) = input {
                    reads.add_length(&path);
                }
                None
            }
            Projection::Not => {
                whole(&Projection::Id, reads);
                None
            }
            Projection::Collect(source, each) => {
                let Some(list) = source.located(input, reads) else {
                    each.located(None, reads);
                    return None;
                };
                // What `each` reads of an element, which the list's reads
                // pass to every element. Which keys an element has is not
                // passed on (see `Reads`): an element's length reads it whole.
                let mut element = Reads::nothing();
                if let Some(output) = each.located(Some(Vec::new()), &mut element) {
                    element.add_path(&output);
                }
                if matches!(element, Reads::Keys { every_key: true, .. }) {
                    element = Reads::All;
                }
                reads.add_at(&list, &element);
                None
            }
        }
    }

    fn apply<'a>(&self, input: &'a Value) -> Result<Cow<'a, Value>, Undecided> {
        Ok(match self {
            Projection::Id => Cow::Borrowed(input),
            Projection::Literal(v) => Cow::Owned(v.clone()),
            Projection::Path(base, steps) => match base.apply(input)? {
                Cow::Borrowed(v) => Cow::Borrowed(walk(v, steps)?),
                Cow::Owned(v) => Cow::Owned(walk(&v, steps)?.clone()),
            },
            Projection::Object(fields) => {
                let mut object = Map::new();
                for (key, value) in fields {
                    object.insert(key.clone(), value.apply(input)?.into_owned());
                }
                Cow::Owned(Value::Object(object))
            }
            Projection::Array(items) => Cow::Owned(Value::Array(
                items.iter().map(|i| i.apply(input).map(Cow::into_owned)).collect::<Result<_, _>>()?,
            )),
            Projection::Pipe(left, right) => match left.apply(input)? {
                Cow::Borrowed(v) => right.apply(v)?,
                Cow::Owned(v) => Cow::Owned(right.apply(&v)?.into_owned()),
            },
            Projection::Equal(left, right, negated) => {
                Cow::Owned(Value::Bool(equal(&*left.apply(input)?, &*right.apply(input)?) != *negated))
            }
            Projection::And(left, right) => {
                Cow::Owned(Value::Bool(truthy(&*left.apply(input)?) && truthy(&*right.apply(input)?)))
            }
            Projection::Or(left, right) => {
                Cow::Owned(Value::Bool(truthy(&*left.apply(input)?) || truthy(&*right.apply(input)?)))
            }
            Projection::Alternative(left, right) => {
                let first = left.apply(input)?;
                if truthy(&first) { first } else { right.apply(input)? }
            }
            Projection::Not => Cow::Owned(Value::Bool(!truthy(input))),
            Projection::Length => Cow::Owned(length(input)?),
            Projection::Collect(source, each) => match &*source.apply(input)? {
                Value::Array(items) => Cow::Owned(Value::Array(
                    items.iter().map(|i| each.apply(i).map(Cow::into_owned)).collect::<Result<_, _>>()?,
                )),
                // Objects iterate their values in jaq's key order; anything
                // else is an error there.
                _ => return Err(Undecided),
            },
        })
    }
}

fn from_term(term: &Term<&str>) -> Option<Projection> {
    let boxed = |t: &Term<&str>| from_term(t).map(Box::new);
    Some(match term {
        Term::Id => Projection::Id,
        Term::Num(text) => Projection::Literal(Value::Number(number(text)?)),
        Term::Neg(inner) => match &**inner {
            Term::Num(text) => Projection::Literal(Value::Number(number(&format!("-{text}"))?)),
            _ => return None,
        },
        Term::Str(None, parts) => Projection::Literal(Value::String(literal(parts)?)),
        Term::Call("map", args) if args.len() == 1 => {
            Projection::Collect(Box::new(Projection::Id), Box::new(from_term(&args[0])?))
        }
        Term::Call(name, args) if args.is_empty() => match *name {
            "true" => Projection::Literal(Value::Bool(true)),
            "false" => Projection::Literal(Value::Bool(false)),
            "null" => Projection::Literal(Value::Null),
            "not" => Projection::Not,
            "length" => Projection::Length,
            _ => return None,
        },
        Term::Path(base, path) => {
            let steps = path
                .0
                .iter()
                .map(|(part, opt)| match (part, opt) {
                    (Part::Index(index), Opt::Essential) => step(index),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Projection::Path(boxed(base)?, steps)
        }
        Term::Obj(entries) => Projection::Object(
            entries
                .iter()
                .map(|(key, value)| {
                    let Term::Str(None, parts) = key else { return None };
                    let key = literal(parts)?;
                    let value = match value {
                        Some(v) => from_term(v)?,
                        // `{a}` is `{a: .a}`.
                        None => Projection::Path(Box::new(Projection::Id), vec![Step::Key(key.clone())]),
                    };
                    Some((key, value))
                })
                .collect::<Option<_>>()?,
        ),
        Term::Arr(None) => Projection::Literal(Value::Array(Vec::new())),
        Term::Arr(Some(inner)) if let Some(collect) = collect(inner) => collect,
        Term::Arr(Some(items)) => {
            let mut out = Vec::new();
            commas(items, &mut out)?;
            Projection::Array(out)
        }
        Term::BinOp(left, op, right) => {
            let (l, r) = (boxed(left)?, boxed(right)?);
            match op {
                BinaryOp::Pipe(None) => Projection::Pipe(l, r),
                BinaryOp::Cmp(Cmp::Eq) => Projection::Equal(l, r, false),
                BinaryOp::Cmp(Cmp::Ne) => Projection::Equal(l, r, true),
                BinaryOp::And => Projection::And(l, r),
                BinaryOp::Or => Projection::Or(l, r),
                BinaryOp::Alt => Projection::Alternative(l, r),
                _ => return None,
            }
        }
        _ => return None,
    })
}

/// `[p[]]`, `[p[].q]` and `[p[] | f]` (`p`, `q` paths without iteration).
fn collect(inner: &Term<&str>) -> Option<Projection> {
    let (path_term, rest) = match inner {
        Term::BinOp(left, BinaryOp::Pipe(None), right) => (&**left, Some(&**right)),
        other => (other, None),
    };
    let Term::Path(base, path) = path_term else { return None };
    let iterate = path.0.iter().position(|part| matches!(part, (Part::Range(None, None), Opt::Essential)))?;
    let steps = |parts: &[(Part<Term<&str>>, Opt)]| {
        parts
            .iter()
            .map(|(part, opt)| match (part, opt) {
                (Part::Index(index), Opt::Essential) => step(index),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
    };
    let source = Projection::Path(Box::new(from_term(base)?), steps(&path.0[..iterate])?);
    let after = steps(&path.0[iterate + 1..])?;
    let each = match (after.is_empty(), rest) {
        (true, None) => Projection::Id,
        (true, Some(f)) => from_term(f)?,
        (false, None) => Projection::Path(Box::new(Projection::Id), after),
        (false, Some(f)) => {
            Projection::Pipe(Box::new(Projection::Path(Box::new(Projection::Id), after)), Box::new(from_term(f)?))
        }
    };
    Some(Projection::Collect(Box::new(source), Box::new(each)))
}

/// The items of `[a, b, c]`: commas are allowed only there, where each
/// item still yields one value.
fn commas(term: &Term<&str>, out: &mut Vec<Projection>) -> Option<()> {
    match term {
        Term::BinOp(left, BinaryOp::Comma, right) => {
            commas(left, out)?;
            commas(right, out)
        }
        other => {
            out.push(from_term(other)?);
            Some(())
        }
    }
}

fn step(index: &Term<&str>) -> Option<Step> {
    match index {
        Term::Str(None, parts) => Some(Step::Key(literal(parts)?)),
        Term::Num(text) => text.parse().ok().map(Step::Position),
        _ => None,
    }
}

/// A string literal's text; `None` when it interpolates.
fn literal(parts: &[StrPart<&str, Term<&str>>]) -> Option<String> {
    let mut text = String::new();
    for part in parts {
        match part {
            StrPart::Str(s) => text.push_str(s),
            StrPart::Char(c) => text.push(*c),
            StrPart::Term(_) => return None,
        }
    }
    Some(text)
}

/// A number literal as the jaq path would hand it back: integers exact,
/// others as serde_json reads their text.
fn number(text: &str) -> Option<Number> {
    match text.parse::<i64>() {
        Ok(i) => Some(Number::from(i)),
        Err(_) => serde_json::from_str::<Number>(text).ok(),
    }
}

fn walk<'a>(mut value: &'a Value, steps: &[Step]) -> Result<&'a Value, Undecided> {
    for step in steps {
        value = match (value, step) {
            (Value::Null, _) => &Value::Null,
            (Value::Object(fields), Step::Key(key)) => fields.get(key).unwrap_or(&Value::Null),
            (Value::Array(items), Step::Position(i)) => items.get(*i).unwrap_or(&Value::Null),
            // An error in jaq (or, for an object and a number, jaq's own rule).
            _ => return Err(Undecided),
        };
    }
    Ok(value)
}

fn truthy(value: &Value) -> bool {
    !matches!(value, Value::Null | Value::Bool(false))
}

fn length(value: &Value) -> Result<Value, Undecided> {
    Ok(match value {
        Value::Null => Value::from(0),
        Value::String(s) => Value::from(s.chars().count()),
        Value::Array(items) => Value::from(items.len()),
        Value::Object(fields) => Value::from(fields.len()),
        // Numbers give their absolute value in jaq; rare enough to leave to it.
        Value::Number(_) | Value::Bool(_) => return Err(Undecided),
    })
}

/// jq's equality: numbers by value (`1 == 1.0`), objects regardless of
/// key order.
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_equal(x, y),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| equal(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

fn number_equal(x: &Number, y: &Number) -> bool {
    let int = |n: &Number| n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from));
    match (int(x), int(y)) {
        (Some(i), Some(j)) => i == j,
        _ => match (x.as_f64(), y.as_f64()) {
            (Some(f), Some(g)) => f == g,
            _ => false,
        },
    }
}
