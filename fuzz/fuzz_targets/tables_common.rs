//! What every table load must hold, whatever the format: shared by the three table targets.
// Each target uses some of these helpers.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use panther_triage::indicator::{normalize, Ip, Key, Kind};
use panther_triage::tables::{Table, TableSpec};

/// The clock every load is given.
pub fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").map(|t| t.with_timezone(&Utc)).expect("a valid time")
}

/// Loads `bytes` as `spec` says and checks the load report against the index; `None` where the
/// file was refused as a whole (not the declared format, an unusable header).
pub fn load(spec: &TableSpec, bytes: &[u8]) -> Option<Table> {
    let t = match Table::from_bytes(spec, bytes.to_vec(), now()) {
        Ok(t) => t,
        Err(e) => {
            let _ = e.to_string();
            return None;
        }
    };
    let r = &t.report;
    let rejected = r.rejected_total();
    assert!(rejected <= r.rows, "{rejected} rejected of {} rows", r.rows);
    assert!(r.eligible <= r.rows - rejected, "{} eligible of {} accepted", r.eligible, r.rows - rejected);
    assert_eq!(t.index.entries.len() as u64, r.eligible, "one index entry per eligible row");
    assert_eq!(r.examples.len() as u64, rejected.min(5), "the first five rejections are kept");
    assert_eq!(r.bytes, bytes.len() as u64);
    let last_line = bytes.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    let mut previous = 0;
    for ex in &r.examples {
        assert!((1..=last_line).contains(&ex.line), "rejection at line {} of {last_line}", ex.line);
        assert!(ex.line >= previous, "rejections out of file order");
        assert!(r.rejected.get(&ex.reason).is_some_and(|n| *n > 0), "an example of an uncounted reason");
        previous = ex.line;
    }
    if let Some(v) = t.valid_until {
        assert!(v > now(), "valid until {v}, which is not after now");
    }
    let _ = r.summary(&t.spec);
    Some(t)
}

/// Every entry of the table, with its row as the table gives it back.
pub fn rows(t: &Table) -> impl Iterator<Item = (u32, String)> + '_ {
    t.index.entries.iter().map(|(e, _)| (e, t.row_json(e).into_owned()))
}

/// Asserts that `value`, a table key of `kind` that was accepted at load, finds a row.
pub fn assert_found(t: &Table, kind: Kind, value: &str) {
    let key = normalize(kind, value, true).unwrap_or_else(|why| panic!("accepted key {value:?} is {why}"));
    let probe = match key {
        // A network is looked up by its first address.
        Key::Net(n) if n.v6 => Key::Ip(Ip::V6(n.start)),
        Key::Net(n) => Key::Ip(Ip::V4(n.start as u32)),
        other => other,
    };
    assert!(t.may_match(&probe), "may_match says no for the row key {value:?} ({probe:?})");
    assert!(t.lookup(&probe).is_some(), "the row key {value:?} ({probe:?}) finds no row");
}

/// The first bytes of a file without a UTF-8 byte order mark.
pub fn without_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}
