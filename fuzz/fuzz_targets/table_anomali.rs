//! The Anomali table loader (`Table::from_bytes` with format `anomali`) on arbitrary bytes.
//! Asserts: no panic; the load report agrees with the index (see `tables_common`); every non-blank
//! line is counted as a row; every indexed row comes back byte for byte as a line of the file; and
//! a row without `match` is found again under its `value`.
//!
//! Input: one selector byte (bit 0: `match_subdomains`), then the file.
#![no_main]

mod tables_common;

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use panther_triage::indicator::Kind;
use panther_triage::tables::TableSpec;
use serde_json::Value;
use tables_common::{assert_found, load, rows, without_bom};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, file)) = data.split_first() else { return };
    let spec = TableSpec { match_subdomains: sel & 1 == 1, ..TableSpec::anomali("fuzz", "/fuzz/anomali.jsonl") };
    let Some(t) = load(&spec, file) else { return };
    let lines: Vec<&[u8]> =
        without_bom(file).split(|b| *b == b'\n').map(<[u8]>::trim_ascii).filter(|l| !l.is_empty()).collect();
    assert_eq!(t.report.rows, lines.len() as u64, "every non-blank line is a row, and only those");
    let lines: HashSet<&[u8]> = lines.into_iter().collect();
    for (_, row) in rows(&t) {
        assert!(lines.contains(row.as_bytes()), "row {row:?} is not a line of the file");
        // Python's json.loads reads the row as serde_json does (the last of a repeated field wins);
        // rows serde_json refuses (a lone surrogate, say) the loader may still carry verbatim.
        let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(&row) else { continue };
        let (Some(Value::String(ty)), Some(Value::String(v)), None) =
            (obj.get("type"), obj.get("value"), obj.get("match"))
        else {
            continue;
        };
        let kind = Kind::from_row_type(ty).expect("an indexed row has a known type");
        assert_found(&t, kind, v);
    }
});
