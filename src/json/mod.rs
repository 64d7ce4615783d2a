//! Borrowed JSON pieces for the hot paths (table rows, alert events): strings stay slices of the input
//! where they have no escapes, and anything we do not read is skipped by the parser, never built into
//! a `serde_json::Value` tree.

pub mod scan;

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use smallvec::SmallVec;

/// A JSON value we only need to tell apart by type: strings are kept, numbers are kept, the rest is
/// recognised and dropped.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Str(Cow<'a, str>),
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Null,
    /// An array or an object.
    Other,
}

struct ScalarVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ScalarVisitor<'a> {
    type Value = Scalar<'a>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::U64(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::I64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::F64(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor(PhantomData))
    }
}

/// `line` as text, checked as UTF-8 with SIMD (table rows and alert lines are checked whole, and
/// that check was a tenth of a load); where it is not UTF-8, the standard check says where.
pub fn utf8(line: &[u8]) -> Result<&str, std::str::Utf8Error> {
    simdutf8::basic::from_utf8(line).or_else(|_| std::str::from_utf8(line))
}

/// A field that may hold one value or a list of them (Panther's `p_any_*` fields are lists, a
/// custom selector usually points at one string).
#[derive(Debug, Clone, PartialEq)]
pub enum Values<'a> {
    One(Scalar<'a>),
    Many(SmallVec<[Scalar<'a>; 4]>),
}

impl<'a> Values<'a> {
    pub fn is_list(&self) -> bool {
        matches!(self, Values::Many(_))
    }
    pub fn iter(&self) -> impl Iterator<Item = &Scalar<'a>> {
        let (one, many) = match self {
            Values::One(s) => (Some(s), &[][..]),
            Values::Many(v) => (None, &v[..]),
        };
        one.into_iter().chain(many.iter())
    }

    /// Reads one value or a list of values from raw JSON text.
    pub fn parse(raw: &'a str) -> Result<Values<'a>, serde_json::Error> {
        if raw.starts_with('[') {
            let mut out = SmallVec::new();
            // One element serde_json cannot decode must not cost the others: `read` never fails.
            let fast = scan::walk_array(raw, |sc, d| {
                let e = match sc.value_or_plain(d)? {
                    (_, Some(s)) => Scalar::Str(Cow::Borrowed(s)),
                    (raw, None) => Scalar::read(raw),
                };
                out.push(e);
                Some(())
            });
            return match fast {
                Some(()) => Ok(Values::Many(out)),
                None => serde_json::from_str(raw),
            };
        }
        if scan::is_valid(raw) {
            return Ok(Values::One(Scalar::read(raw)));
        }
        Scalar::parse(raw).map(Values::One)
    }
}

struct ValuesVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ValuesVisitor<'a> {
    type Value = Values<'a>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value or a list of values")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = SmallVec::new();
        while let Some(s) = seq.next_element::<Scalar<'a>>()? {
            out.push(s);
        }
        Ok(Values::Many(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        ScalarVisitor(PhantomData).visit_map(map).map(Values::One)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        ScalarVisitor(PhantomData).visit_borrowed_str(v).map(Values::One)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        ScalarVisitor(PhantomData).visit_str(v).map(Values::One)
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        ScalarVisitor(PhantomData).visit_string(v).map(Values::One)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        ScalarVisitor(PhantomData).visit_u64(v).map(Values::One)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        ScalarVisitor(PhantomData).visit_i64(v).map(Values::One)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        ScalarVisitor(PhantomData).visit_f64(v).map(Values::One)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        ScalarVisitor(PhantomData).visit_bool(v).map(Values::One)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Values::One(Scalar::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Values::One(Scalar::Null))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Values<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValuesVisitor(PhantomData))
    }
}

/// A JSON object read one level deep: each member's value is left as raw text, to be read only if a
/// selector asks for it.
#[derive(Debug, Default)]
pub struct Object<'a> {
    pub members: SmallVec<[(Cow<'a, str>, &'a str); 16]>,
}

impl<'a> Object<'a> {
    /// Reads an object with the fast scanner, or serde_json where the scanner defers to it (nesting
    /// deeper than it follows) or the text is not valid JSON (serde_json then explains).
    pub fn parse(s: &'a str) -> Result<Object<'a>, serde_json::Error> {
        let mut members = SmallVec::new();
        let fast = scan::walk_object(s, |sc, k, d| {
            let v = sc.value(d)?;
            members.push((k.decoded(), v));
            Some(())
        });
        match fast {
            Some(()) => Ok(Object { members }),
            None => serde_json::from_str(s),
        }
    }

    /// The last member of that name, as JSON parsers that keep one value per name do.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.members.iter().rev().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
}

struct ObjectVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ObjectVisitor<'a> {
    type Value = Object<'a>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = SmallVec::new();
        while let Some(k) = map.next_key::<Cow<'a, str>>()? {
            let v: &'a RawValue = map.next_value()?;
            members.push((k, v.get()));
        }
        Ok(Object { members })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Object<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectVisitor(PhantomData))
    }
}

impl<'a> Scalar<'a> {
    /// Reads raw JSON text that the scanner has already validated: plain strings and small
    /// non-negative integers directly, anything else through serde_json.
    pub fn parse(raw: &'a str) -> Result<Scalar<'a>, serde_json::Error> {
        let b = raw.as_bytes();
        match b.first() {
            Some(b'"') => {
                if let Some(s) = scan::plain_str(raw) {
                    return Ok(Scalar::Str(Cow::Borrowed(s)));
                }
            }
            Some(b'0'..=b'9') if b.iter().all(u8::is_ascii_digit) => {
                if let Ok(n) = raw.parse::<u64>() {
                    return Ok(Scalar::U64(n));
                }
            }
            Some(b'n') if raw == "null" => return Ok(Scalar::Null),
            Some(b't') if raw == "true" => return Ok(Scalar::Bool(true)),
            Some(b'f') if raw == "false" => return Ok(Scalar::Bool(false)),
            Some(b'[' | b'{') if scan::is_valid(raw) => return Ok(Scalar::Other),
            _ => {}
        }
        serde_json::from_str(raw)
    }

    /// Reads JSON text that is known to be valid, never failing: the two valid values serde_json
    /// cannot decode become their nearest meaning (a string with a lone surrogate escape gets
    /// U+FFFD there; a number beyond f64 is infinite), as Python's `json.loads` also accepts them.
    pub fn read(raw: &'a str) -> Scalar<'a> {
        match Scalar::parse(raw) {
            Ok(s) => s,
            Err(_) => match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
                Some(content) => Scalar::Str(Cow::Owned(scan::unescape(content))),
                None if raw.starts_with('-') => Scalar::F64(f64::NEG_INFINITY),
                None if raw.starts_with(|c: char| c.is_ascii_digit()) => Scalar::F64(f64::INFINITY),
                None => Scalar::Other,
            },
        }
    }
}

/// Writes `s` as a JSON string literal.
pub fn write_str_literal(out: &mut String, s: &str) {
    // serde_json's escaping cannot fail on a String.
    out.push_str(&serde_json::Value::from(s).to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_tell_a_list_from_one_value() {
        let v: Values = serde_json::from_str(r#"["a", 1, null, {"x": [1]}]"#).unwrap();
        assert!(v.is_list());
        let got: Vec<_> = v.iter().cloned().collect();
        assert_eq!(got, vec![Scalar::Str("a".into()), Scalar::U64(1), Scalar::Null, Scalar::Other]);
        // Values serde_json cannot decode still leave the rest of the list readable.
        let v = Values::parse(r#"["1.2.3.4", "\ud800", 1e400, true]"#).unwrap();
        let got: Vec<_> = v.iter().cloned().collect();
        assert_eq!(
            got,
            vec![
                Scalar::Str("1.2.3.4".into()),
                Scalar::Str("\u{FFFD}".into()),
                Scalar::F64(f64::INFINITY),
                Scalar::Bool(true)
            ]
        );
        let one: Values = serde_json::from_str(r#""1.2.3.4""#).unwrap();
        assert!(!one.is_list());
        assert_eq!(one.iter().count(), 1);
    }

    /// Whatever the scanner takes for valid JSON, the typed readers read without error: a valid
    /// document is never dropped because one of its values is unusual.
    #[test]
    fn typed_readers_read_every_valid_mutant() {
        let seed = r#"{"a":["1.2.3.4","\ud83d\ude00",1e3,-0.5,true,null,{"b":[]}],"c\u0064":"x\ty","e":{"f":"g"}}"#;
        let alphabet: &[u8] = b"{}[]\":,\\ 0123456789.eE+-truefalsnuldDcCaA8";
        let mut next = scan::test_rng(0x2545_F491_4F6C_DD1D);
        let mut valid = 0;
        for _ in 0..30_000 {
            let mut b = seed.as_bytes().to_vec();
            for _ in 0..1 + next(2) {
                let pos = next(b.len());
                b[pos] = alphabet[next(alphabet.len())];
            }
            let Ok(s) = std::str::from_utf8(&b) else { continue };
            if !scan::is_valid(s) {
                continue;
            }
            valid += 1;
            if s.starts_with('{') {
                let o = Object::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
                for (_, raw) in &o.members {
                    Values::parse(raw).unwrap_or_else(|e| panic!("{s}: {raw}: {e}"));
                }
            }
        }
        assert!(valid > 500, "too few valid mutants ({valid}) to test anything");
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let s: Scalar = serde_json::from_str(r#""plain""#).unwrap();
        assert!(matches!(s, Scalar::Str(Cow::Borrowed("plain"))));
        let e: Scalar = serde_json::from_str(r#""a\"b""#).unwrap();
        assert_eq!(e, Scalar::Str(Cow::Owned("a\"b".into())));
    }

    #[test]
    fn object_keeps_raw_members_and_the_last_duplicate() {
        for text in [r#"{"a": [1, 2], "b": "x", "a": "last"}"#, r#"{"a": [1, 2], "\u0062": "x", "a": "last"}"#] {
            let o = Object::parse(text).unwrap();
            assert_eq!(o.get("a"), Some(r#""last""#));
            assert_eq!(o.get("b"), Some(r#""x""#));
            assert!(o.get("c").is_none());
        }
    }
}
