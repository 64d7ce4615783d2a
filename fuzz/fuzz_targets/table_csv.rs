//! The csv table loader (`Table::from_bytes` with format `csv`) on arbitrary bytes, with the three
//! ways a csv table names its columns. Asserts: no panic; the load report agrees with the index (see
//! `tables_common`); every indexed row is a JSON object of strings, one per column, and its key
//! column finds it again.
//!
//! Input: one selector byte (which columns, the kind, `match_subdomains`), then the file.
#![no_main]

mod tables_common;

use std::fmt;

use libfuzzer_sys::fuzz_target;
use panther_triage::indicator::Kind;
use panther_triage::tables::{Format, TableSpec};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use tables_common::{assert_found, load, rows};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, file)) = data.split_first() else { return };
    let base =
        TableSpec { format: Format::Csv, match_subdomains: sel & 0x80 != 0, ..TableSpec::anomali("fuzz", "/f.csv") };
    let spec = match sel % 3 {
        // `value` and `type` columns.
        0 => base,
        // One kind for the table.
        1 => TableSpec { kind: Some(Kind::ALL[usize::from(sel >> 2) % Kind::ALL.len()]), ..base },
        // Columns named by the table.
        _ => TableSpec { key: Some("indicator".into()), kind_column: Some("kind".into()), ..base },
    };
    let Some(t) = load(&spec, file) else { return };
    let key_column = spec.key.as_deref().unwrap_or("value");
    let kind_column = spec.kind_column.as_deref().unwrap_or("type");
    for (_, row) in rows(&t) {
        let Pairs(fields) =
            serde_json::from_str(&row).unwrap_or_else(|e| panic!("row {row:?} is not a JSON object of strings: {e}"));
        // The loader reads the first column of a name.
        let column = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let kind = match spec.kind {
            Some(k) => k,
            None => column(kind_column)
                .and_then(|t| Kind::from_row_type(t.trim()))
                .unwrap_or_else(|| panic!("an indexed row without a known type: {row}")),
        };
        let value = column(key_column).unwrap_or_else(|| panic!("an indexed row without its key column: {row}"));
        assert_found(&t, kind, value);
    }
});

/// A JSON object of strings, its members in order (repeated names kept).
struct Pairs(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pairs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Pairs, A::Error> {
                let mut out = Vec::new();
                while let Some(pair) = m.next_entry::<String, String>()? {
                    out.push(pair);
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(V)
    }
}
