//! The list table loader (`Table::from_bytes` with format `list`) on arbitrary bytes. Asserts: no
//! panic; the load report agrees with the index (see `tables_common`); every line that is not blank
//! or a `#` comment is counted as a row; every indexed row is `{"value": <the line, trimmed>}`, its
//! id is its line number, and its value finds it again.
//!
//! Input: one selector byte (the kind, `match_subdomains`), then the file.
#![no_main]

mod tables_common;

use libfuzzer_sys::fuzz_target;
use panther_triage::indicator::Kind;
use panther_triage::tables::{Format, TableSpec};
use tables_common::{assert_found, load, rows, without_bom};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, file)) = data.split_first() else { return };
    let kind = Kind::ALL[usize::from(sel & 7) % Kind::ALL.len()];
    let spec = TableSpec {
        format: Format::List,
        kind: Some(kind),
        match_subdomains: sel & 8 != 0,
        ..TableSpec::anomali("fuzz", "/fuzz/list.txt")
    };
    let Some(t) = load(&spec, file) else { return };
    let lines: Vec<&[u8]> = without_bom(file).split(|b| *b == b'\n').collect();
    let is_row = |l: &[u8]| match std::str::from_utf8(l) {
        Ok(s) => !s.trim().is_empty() && !s.trim().starts_with('#'),
        Err(_) => true,
    };
    assert_eq!(t.report.rows, lines.iter().filter(|l| is_row(l)).count() as u64, "rows are the non-comment lines");
    for (e, row) in rows(&t) {
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&row).unwrap_or_else(|err| panic!("row {row:?} is not a JSON object: {err}"));
        assert_eq!(obj.len(), 1, "{row}");
        let value = obj["value"].as_str().expect("a string value");
        let line: usize = t.entry_id(e).parse().expect("a list row's id is its line number");
        assert_eq!(std::str::from_utf8(lines[line - 1]).map(str::trim), Ok(value), "line {line}");
        assert_found(&t, kind, value);
    }
});
