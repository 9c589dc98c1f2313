//! Matchers over one leaf (scalar) event value, and the value normalisations they share with the index.

use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Number, Value};

/// EventBridge compares numbers only inside ±5e9; outside that range a value is not "numeric" at all.
pub(crate) const NUMERIC_LIMIT: f64 = 5e9;

/// EventBridge's comparable form of a number in range: `(5e9 + n) * 1e6`, truncated. Using the same
/// arithmetic makes `numeric` and number equality agree with EventBridge on its six-decimal precision
/// (values differing only past the sixth decimal compare equal), and gives an integer we can hash.
pub(crate) fn scaled(f: f64) -> Option<i64> {
    if (-NUMERIC_LIMIT..=NUMERIC_LIMIT).contains(&f) {
        // Always non-negative and below 1e16, so the cast neither saturates nor loses the sign.
        Some((1e6 * (NUMERIC_LIMIT + f)) as i64)
    } else {
        None
    }
}

/// The identity of a JSON number for exact matching: `300`, `300.0` and `3e2` share one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum NumKey {
    /// In EventBridge's numeric range: its comparable form.
    Scaled(i64),
    /// Out of range but integral: compared exactly, so 12-digit account ids still match.
    Int(i128),
    /// Out of range and not integral (or beyond `i128`): compared by bit pattern.
    Float(u64),
}

pub(crate) fn num_key(n: &Number) -> NumKey {
    let int = n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from));
    if let Some(i) = int {
        if i.unsigned_abs() <= 5_000_000_000 {
            // Exact in f64 at this magnitude.
            if let Some(k) = scaled(i as f64) {
                return NumKey::Scaled(k);
            }
        }
        return NumKey::Int(i);
    }
    match n.as_f64() {
        Some(f) => {
            if let Some(k) = scaled(f) {
                NumKey::Scaled(k)
            } else if f.fract() == 0.0 && f.abs() < 1e37 {
                NumKey::Int(f as i128)
            } else {
                NumKey::Float(f.to_bits())
            }
        }
        // Only reachable with serde_json's arbitrary_precision and a number f64 cannot hold.
        None => NumKey::Float(f64::NAN.to_bits()),
    }
}

/// The comparable form of an event number, if it is in EventBridge's numeric range.
pub(crate) fn numeric_value(n: &Number) -> Option<i64> {
    match num_key(n) {
        NumKey::Scaled(k) => Some(k),
        _ => None,
    }
}

/// Case folding for the `equals-ignore-case` family: a character maps to the lowercase of its uppercase
/// when both mappings are single characters, else to itself. That is the rule of Java's
/// `String.equalsIgnoreCase` (Event Ruler, the engine behind EventBridge, is a Java library) and agrees
/// with Unicode simple case folding for nearly all characters (`ſ`→`s`, `K` (Kelvin)→`k`, `ς`→`σ`);
/// characters whose case mapping expands (`ß`, `İ`) only equal themselves. Folding is one character to
/// one, so lengths in characters survive.
pub(crate) fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    let mut upper = c.to_uppercase();
    let u = match (upper.next(), upper.next()) {
        (Some(u), None) => u,
        _ => c,
    };
    let mut lower = u.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) => l,
        _ => c,
    }
}

pub(crate) fn fold(s: &str) -> Box<str> {
    s.chars().map(fold_char).collect::<String>().into_boxed_str()
}

fn folded_starts_with(s: &str, folded_prefix: &str) -> bool {
    let mut it = s.chars().map(fold_char);
    folded_prefix.chars().all(|p| it.next() == Some(p))
}

fn folded_ends_with(s: &str, folded_suffix: &str) -> bool {
    let mut it = s.chars().rev().map(fold_char);
    folded_suffix.chars().rev().all(|p| it.next() == Some(p))
}

fn folded_eq(s: &str, folded: &str) -> bool {
    let mut it = s.chars().map(fold_char);
    folded.chars().all(|p| it.next() == Some(p)) && it.next().is_none()
}

/// A `wildcard` operand: literal segments separated by `*`, each `*` matching any run of characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Wildcard {
    /// One more segment than there are stars; never empty.
    segments: Vec<Box<str>>,
}

impl Wildcard {
    pub(crate) fn parse(pattern: &str) -> Result<Wildcard, String> {
        let mut segments = Vec::new();
        let mut current = String::new();
        let mut chars = pattern.chars();
        let mut last_was_star = false;
        while let Some(c) = chars.next() {
            match c {
                '*' => {
                    if last_was_star {
                        return Err(format!("consecutive '*' characters are not allowed in wildcard \"{pattern}\""));
                    }
                    segments.push(std::mem::take(&mut current).into_boxed_str());
                    last_was_star = true;
                    continue;
                }
                '\\' => match chars.next() {
                    Some(escaped @ ('*' | '\\')) => current.push(escaped),
                    Some(other) => {
                        return Err(format!(
                            "invalid escape \"\\{other}\" in wildcard \"{pattern}\": only \\* and \\\\ may be escaped"
                        ));
                    }
                    None => return Err(format!("wildcard \"{pattern}\" ends with a lone backslash")),
                },
                other => current.push(other),
            }
            last_was_star = false;
        }
        segments.push(current.into_boxed_str());
        Ok(Wildcard { segments })
    }

    pub(crate) fn matches(&self, s: &str) -> bool {
        let Some((first, rest)) = self.segments.split_first() else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return s == &**first;
        };
        if s.len() < first.len() + last.len() || !s.starts_with(&**first) || !s.ends_with(&**last) {
            return false;
        }
        // Leftmost-first placement of each middle segment is optimal for `*`-only globs: taking the
        // earliest occurrence leaves the most room for the segments after it.
        let Some(mut window) = s.get(first.len()..s.len() - last.len()) else {
            return false;
        };
        for segment in middle {
            match window.find(&**segment) {
                Some(at) => match window.get(at + segment.len()..) {
                    Some(after) => window = after,
                    None => return false,
                },
                None => return false,
            }
        }
        true
    }
}

/// A `cidr` operand, with the host bits of the base address cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Cidr {
    V4 { net: u32, mask: u32 },
    V6 { net: u128, mask: u128 },
}

impl Cidr {
    pub(crate) fn parse(text: &str) -> Result<Cidr, String> {
        let Some((addr, len)) = text.split_once('/') else {
            return Err(format!("\"{text}\" is not a CIDR block: expected address/prefix-length, like 10.0.0.0/24"));
        };
        if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("\"{text}\": the prefix length must be a decimal number"));
        }
        let bits: u32 = len.parse().map_err(|_| format!("\"{text}\": the prefix length must be a decimal number"))?;
        match addr.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => {
                if bits > 32 {
                    return Err(format!("\"{text}\": an IPv4 prefix length is at most 32"));
                }
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                Ok(Cidr::V4 { net: u32::from(a) & mask, mask })
            }
            Ok(IpAddr::V6(a)) => {
                if bits > 128 {
                    return Err(format!("\"{text}\": an IPv6 prefix length is at most 128"));
                }
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                Ok(Cidr::V6 { net: u128::from(a) & mask, mask })
            }
            Err(_) => Err(format!("\"{text}\": \"{addr}\" is not an IPv4 or IPv6 address")),
        }
    }

    fn contains(&self, s: &str) -> bool {
        match self {
            Cidr::V4 { net, mask } => s.parse::<Ipv4Addr>().is_ok_and(|a| u32::from(a) & mask == *net),
            Cidr::V6 { net, mask } => s.parse::<Ipv6Addr>().is_ok_and(|a| u128::from(a) & mask == *net),
        }
    }
}

/// A numeric interval over comparable forms (see [`scaled`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Range {
    pub(crate) low: i64,
    pub(crate) low_inclusive: bool,
    pub(crate) high: i64,
    pub(crate) high_inclusive: bool,
}

impl Range {
    fn contains(&self, k: i64) -> bool {
        let above = if self.low_inclusive { k >= self.low } else { k > self.low };
        let below = if self.high_inclusive { k <= self.high } else { k < self.high };
        above && below
    }
}

/// What an `anything-but` excludes. It matches a leaf value exactly when the value is not excluded,
/// whatever the value's type: EventBridge only ever rules out values of the operand's own type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Excluded {
    /// Sorted, for binary search.
    Strings(Vec<Box<str>>),
    /// Comparable forms, sorted.
    Numbers(Vec<i64>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    /// Folded.
    EqualsIgnoreCase(Vec<Box<str>>),
    Wildcards(Vec<Wildcard>),
}

impl Excluded {
    fn excludes(&self, v: &Value) -> bool {
        match (self, v) {
            (Excluded::Strings(list), Value::String(s)) => list.binary_search_by(|x| (**x).cmp(s.as_str())).is_ok(),
            (Excluded::Numbers(list), Value::Number(n)) => {
                numeric_value(n).is_some_and(|k| list.binary_search(&k).is_ok())
            }
            (Excluded::Prefix(p), Value::String(s)) => s.starts_with(&**p),
            (Excluded::Suffix(p), Value::String(s)) => s.ends_with(&**p),
            (Excluded::EqualsIgnoreCase(list), Value::String(s)) => list.iter().any(|f| folded_eq(s, f)),
            (Excluded::Wildcards(list), Value::String(s)) => list.iter().any(|w| w.matches(s)),
            _ => false,
        }
    }
}

/// One matcher of a leaf's list, other than `exists` (which is about the absence of values, not a value).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Matcher {
    String(Box<str>),
    Number(NumKey),
    Bool(bool),
    Null,
    Prefix(Box<str>),
    /// Folded operand.
    PrefixIgnoreCase(Box<str>),
    Suffix(Box<str>),
    /// Folded operand.
    SuffixIgnoreCase(Box<str>),
    /// Folded operand.
    EqualsIgnoreCase(Box<str>),
    Wildcard(Wildcard),
    Numeric(Range),
    Cidr(Cidr),
    AnythingBut(Excluded),
}

impl Matcher {
    /// `v` is a scalar: arrays are flattened and objects skipped before matchers see values.
    pub(crate) fn matches(&self, v: &Value) -> bool {
        match (self, v) {
            (Matcher::String(p), Value::String(s)) => **p == *s.as_str(),
            (Matcher::Number(k), Value::Number(n)) => *k == num_key(n),
            (Matcher::Bool(b), Value::Bool(x)) => b == x,
            (Matcher::Null, Value::Null) => true,
            (Matcher::Prefix(p), Value::String(s)) => s.starts_with(&**p),
            (Matcher::PrefixIgnoreCase(p), Value::String(s)) => folded_starts_with(s, p),
            (Matcher::Suffix(p), Value::String(s)) => s.ends_with(&**p),
            (Matcher::SuffixIgnoreCase(p), Value::String(s)) => folded_ends_with(s, p),
            (Matcher::EqualsIgnoreCase(p), Value::String(s)) => folded_eq(s, p),
            (Matcher::Wildcard(w), Value::String(s)) => w.matches(s),
            (Matcher::Numeric(r), Value::Number(n)) => numeric_value(n).is_some_and(|k| r.contains(k)),
            (Matcher::Cidr(c), Value::String(s)) => c.contains(s),
            (Matcher::AnythingBut(x), v) => !x.excludes(v),
            _ => false,
        }
    }
}

/// Calls `f` on every scalar under `v`, flattening arrays at any depth and skipping objects (their leaves
/// live at longer paths); stops at, and returns, the first `true`.
pub(crate) fn any_scalar(v: &Value, f: &mut impl FnMut(&Value) -> bool) -> bool {
    match v {
        Value::Array(items) => items.iter().any(|item| any_scalar(item, f)),
        Value::Object(_) => false,
        scalar => f(scalar),
    }
}

/// A small multiplicative hasher for the index's hash maps: keys are pattern literals, and event values
/// are only looked up, never inserted, so flooding attacks on the hash function have nothing to grow.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        // Final avalanche so that the low bits, which hashbrown uses for buckets, depend on every input bit.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h
    }
}

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<FastHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_segments() {
        let w = Wildcard::parse("a*b*c").unwrap();
        assert!(w.matches("abc"));
        assert!(w.matches("aXbYc"));
        assert!(w.matches("abbbc"));
        assert!(!w.matches("ab"));
        assert!(!w.matches("ac"));
        let w = Wildcard::parse("*").unwrap();
        assert!(w.matches(""));
        assert!(w.matches("anything"));
        let w = Wildcard::parse("a*a").unwrap();
        assert!(!w.matches("a"));
        assert!(w.matches("aa"));
        let w = Wildcard::parse(r"a\*b").unwrap();
        assert!(w.matches("a*b"));
        assert!(!w.matches("axb"));
        assert!(Wildcard::parse("a**").is_err());
        assert!(Wildcard::parse(r"a\b").is_err());
        assert!(Wildcard::parse("a\\").is_err());
    }

    #[test]
    fn numbers_share_keys() {
        let k = |s: &str| num_key(&serde_json::from_str::<Number>(s).unwrap());
        assert_eq!(k("300"), k("300.0"));
        assert_eq!(k("300"), k("3e2"));
        assert_eq!(k("-0.0"), k("0"));
        assert_eq!(k("123456789012"), k("1.23456789012e11"));
        assert_ne!(k("1"), k("2"));
        assert_eq!(k("1.0000001"), k("1.0000001"));
    }

    #[test]
    fn folding() {
        assert_eq!(&*fold("ÉTÉ"), "été");
        assert_eq!(fold_char('ſ'), 's');
        assert_eq!(fold_char('\u{212A}'), 'k');
        assert_eq!(fold_char('ς'), 'σ');
        assert_eq!(fold_char('ß'), 'ß');
    }

    #[test]
    fn cidr() {
        let c = Cidr::parse("10.0.0.0/24").unwrap();
        assert!(c.contains("10.0.0.255"));
        assert!(!c.contains("10.0.1.0"));
        let c = Cidr::parse("2001:db8::/32").unwrap();
        assert!(c.contains("2001:db8:1::1"));
        assert!(!c.contains("2001:db9::1"));
        assert!(Cidr::parse("10.0.0.0").is_err());
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("10.0.0/8").is_err());
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("1.2.3.4"));
    }
}
