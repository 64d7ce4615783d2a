//! Threat-intel lookup tables: loading the three formats and answering lookups.
//!
//! A table is read whole, parsed, and turned into an immutable [`Index`]; a refresh builds a new one
//! beside the old and swaps it. Rows that cannot be used (unparsable JSON, unknown type, no valid key,
//! a bad id, confidence or expiration) are rejected and counted by reason, the first few with their
//! line; they never abort the load. A file that is not the declared format at all is an error.
//!
//! Eligibility (`status` is `active`, `expiration_ts` absent or later than now) is decided at load, for
//! the `now` given, and so is the winner of every key. [`Table::valid_until`] says when the earliest
//! eligible row expires, i.e. when the index must be rebuilt to stay exact.

pub mod index;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::Deserialize;

use crate::indicator::{normalize, Key, Kind, ROW_TYPES};
use crate::json::{Scalar, Values};
pub use index::{Entry, EntryId, Index, IndexBuilder, Span};

/// How a table file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Anomali ThreatStream rows as Panther normalizes them, one JSON object a line.
    Anomali,
    /// A header row, then one row a line; the key column is named by the table's `key`.
    Csv,
    /// One value a line, `#` comments, one `kind` for the whole table.
    List,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Anomali => "anomali",
            Format::Csv => "csv",
            Format::List => "list",
        }
    }
    fn expected(self) -> &'static str {
        match self {
            Format::Anomali => "anomali: one JSON object a line with `type` and `value` or `match`",
            Format::Csv => "csv: a header row naming the key column, then comma-separated rows",
            Format::List => "list: one indicator a line, `#` starts a comment",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "anomali" => Ok(Format::Anomali),
            "csv" => Ok(Format::Csv),
            "list" => Ok(Format::List),
            _ => Err(format!("unknown table format {s:?}: expected anomali, csv or list")),
        }
    }
}

/// What a table is and how to read it (one `[[tables]]` entry of the configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    pub name: String,
    pub path: PathBuf,
    pub format: Format,
    /// The kind of every row (required for `list`; for `csv`, instead of a kind column).
    pub kind: Option<Kind>,
    /// csv: the column holding the indicator (default `value`).
    pub key: Option<String>,
    /// csv without `kind`: the column holding each row's type, as Anomali names types (default `type`).
    pub kind_column: Option<String>,
    pub match_subdomains: bool,
}

impl TableSpec {
    pub fn anomali(name: impl Into<String>, path: impl Into<PathBuf>) -> TableSpec {
        TableSpec {
            name: name.into(),
            path: path.into(),
            format: Format::Anomali,
            kind: None,
            key: None,
            kind_column: None,
            match_subdomains: false,
        }
    }

    /// Checks the combination of settings, naming what to change.
    pub fn validate(&self) -> Result<(), TableError> {
        let problem = |p: &str| Err(TableError::Spec { table: self.name.clone(), problem: p.to_owned() });
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return problem("name must be non-empty and use only letters, digits, `_` and `-` (it becomes a key under p_enrichment)");
        }
        match self.format {
            Format::List if self.kind.is_none() => problem("a list table needs `kind` (ip, domain, email, hash or url)"),
            Format::Anomali if self.kind.is_some() || self.key.is_some() || self.kind_column.is_some() => {
                problem("an anomali table takes each row's kind from its `type`; remove `kind`, `key` and `kind_column`")
            }
            Format::List if self.key.is_some() || self.kind_column.is_some() => {
                problem("a list table has no columns; remove `key` and `kind_column`")
            }
            Format::Csv if self.kind.is_some() && self.kind_column.is_some() => {
                problem("set either `kind` (one kind for the table) or `kind_column`, not both")
            }
            _ => Ok(()),
        }
    }
}

/// Why a row was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    InvalidJson,
    UnknownType,
    NoValidKey,
    BadId,
    BadConfidence,
    BadExpiration,
    BadCsvRow,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::UnknownType => "unknown_type",
            RejectReason::NoValidKey => "no_valid_key",
            RejectReason::BadId => "bad_id",
            RejectReason::BadConfidence => "bad_confidence",
            RejectReason::BadExpiration => "bad_expiration",
            RejectReason::BadCsvRow => "bad_csv_row",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub line: u64,
    pub reason: RejectReason,
    pub detail: String,
}

/// What a load found.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Data rows read (blank and comment lines are not rows), rejected ones included.
    pub rows: u64,
    pub eligible: u64,
    pub rejected: BTreeMap<RejectReason, u64>,
    /// The first few rejections, with their line.
    pub examples: Vec<Rejection>,
    pub bytes: u64,
    pub elapsed: Duration,
    probe_seen: u64,
    probe_failed: u64,
}

/// How many rejections are kept with their line.
const EXAMPLES: usize = 5;
/// A file whose first this-many rows all fail is not in the declared format.
const PROBE_ROWS: u64 = 100;

impl LoadReport {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    fn accept(&mut self, eligible: bool) {
        self.rows += 1;
        self.eligible += u64::from(eligible);
        if self.probe_seen < PROBE_ROWS {
            self.probe_seen += 1;
        }
    }

    fn reject(&mut self, r: Rejection) {
        self.rows += 1;
        *self.rejected.entry(r.reason).or_default() += 1;
        if self.probe_seen < PROBE_ROWS {
            self.probe_seen += 1;
            self.probe_failed += 1;
        }
        if self.examples.len() < EXAMPLES {
            self.examples.push(r);
        }
    }

    /// Where the first rows all failed: the file is not the declared format.
    fn wrong_format(&self, spec: &TableSpec, done: bool) -> Option<TableError> {
        let decided = self.probe_seen >= PROBE_ROWS || done;
        if decided && self.probe_seen > 0 && self.probe_failed == self.probe_seen {
            let first = self.examples.first()?;
            return Some(TableError::WrongFormat {
                path: spec.path.clone(),
                line: first.line,
                expected: spec.format.expected(),
                rows: self.probe_seen,
                detail: first.detail.clone(),
            });
        }
        None
    }

    /// One line for logs and the CLI: rejections by reason, then the first few with file and line.
    pub fn summary(&self, spec: &TableSpec) -> String {
        let mut s = format!(
            "table {}: {} rows, {} eligible, {} rejected",
            spec.name,
            self.rows,
            self.eligible,
            self.rejected_total()
        );
        if !self.rejected.is_empty() {
            let by: Vec<String> = self.rejected.iter().map(|(r, n)| format!("{r}={n}")).collect();
            s.push_str(&format!(" ({})", by.join(", ")));
            for ex in &self.examples {
                s.push_str(&format!("\n  {}:{}: {}: {}", spec.path.display(), ex.line, ex.reason, ex.detail));
            }
        }
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("table {table}: {problem}")]
    Spec { table: String, problem: String },
    #[error("cannot read table file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{path}:{line}: not a {expected} file: the first {rows} rows all failed ({detail}); check the table's `format` and `path`"
    )]
    WrongFormat { path: PathBuf, line: u64, expected: &'static str, rows: u64, detail: String },
    #[error("{path}:1: {problem}")]
    Header { path: PathBuf, problem: String },
}

/// A loaded table: its index plus what the load found.
#[derive(Debug)]
pub struct Table {
    pub spec: TableSpec,
    pub index: Index,
    pub report: LoadReport,
    /// When the earliest eligible row expires; past it the index must be rebuilt to stay exact.
    pub valid_until: Option<DateTime<Utc>>,
}

impl Table {
    /// Reads and indexes the table file for the clock `now`.
    pub fn load(spec: &TableSpec, now: DateTime<Utc>) -> Result<Table, TableError> {
        spec.validate()?;
        let started = Instant::now();
        let buf = std::fs::read(&spec.path).map_err(|source| TableError::Io { path: spec.path.clone(), source })?;
        let mut t = Self::from_bytes(spec, buf, now)?;
        t.report.elapsed = started.elapsed();
        Ok(t)
    }

    /// Indexes table bytes already in memory (used by `load`, tests and fuzzing).
    pub fn from_bytes(spec: &TableSpec, mut buf: Vec<u8>, now: DateTime<Utc>) -> Result<Table, TableError> {
        spec.validate()?;
        let started = Instant::now();
        if buf.starts_with(b"\xEF\xBB\xBF") {
            buf.drain(..3);
        }
        let bytes = buf.len() as u64;
        let clock = Clock { now: now.naive_utc(), earliest_expiry: None };
        let (index, mut report, earliest) = match spec.format {
            Format::Anomali => load_anomali(spec, buf, clock)?,
            Format::Csv => load_csv(spec, &buf, clock)?,
            Format::List => load_list(spec, &buf)?,
        };
        report.bytes = bytes;
        report.elapsed = started.elapsed();
        Ok(Table { spec: spec.clone(), index, report, valid_until: earliest.map(|t| t.and_utc()) })
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn lookup(&self, key: &Key<'_>) -> Option<EntryId> {
        self.index.lookup(key, self.spec.match_subdomains)
    }

    /// The winning row's JSON object, as it was in the table (csv and list rows as built at load).
    pub fn row_json(&self, e: EntryId) -> &str {
        let entry = self.index.entry(e);
        // Rows were validated as UTF-8 JSON when loaded.
        std::str::from_utf8(&self.index.entries.rows[entry.row.range()]).unwrap_or("{}")
    }

    /// The row's id as the table wrote it.
    pub fn entry_id(&self, e: EntryId) -> &str {
        let entry = self.index.entry(e);
        std::str::from_utf8(self.index.entries.text(entry.id)).unwrap_or("")
    }
}

#[derive(Clone, Copy)]
struct Clock {
    now: NaiveDateTime,
    earliest_expiry: Option<NaiveDateTime>,
}

/// A row after parsing, before it enters the index.
struct Parsed<'a> {
    raw: &'a [u8],
    keys: Vec<Key<'a>>,
    eligible: bool,
    expires: Option<NaiveDateTime>,
    confidence: u8,
    id_num: u64,
    id: Cow<'a, str>,
    modified: Cow<'a, str>,
}

type RowResult<'a> = Result<Parsed<'a>, (RejectReason, String)>;

impl IndexBuilder {
    fn add(&mut self, p: Parsed<'_>, row: Span, clock: &mut Clock) {
        let id = self.text_span(p.id.as_bytes());
        let modified = self.text_span(p.modified.as_bytes());
        let e = self.push_entry(Entry { row, id, modified, id_num: p.id_num, confidence: p.confidence });
        for k in p.keys {
            self.insert(k, e);
        }
        if let Some(x) = p.expires {
            clock.earliest_expiry = Some(clock.earliest_expiry.map_or(x, |c| c.min(x)));
        }
    }

    fn text_span(&mut self, b: &[u8]) -> Span {
        let off = self.entries.texts.len() as u64;
        self.entries.texts.extend_from_slice(b);
        Span { off, len: b.len() as u32 }
    }
}

/// Bytes of table file parsed per parallel batch.
const CHUNK: usize = 2 << 20;

fn load_anomali(spec: &TableSpec, buf: Vec<u8>, mut clock: Clock) -> Result<(Index, LoadReport, Option<NaiveDateTime>), TableError> {
    let mut b = IndexBuilder::default();
    let mut report = LoadReport::default();
    let base = buf.as_ptr() as usize;
    {
        let chunks = split_chunks(&buf, CHUNK);
        let now = clock.now;
        let mut pending: Option<Vec<(u64, RowResult<'_>)>> = None;
        let absorb = |b: &mut IndexBuilder, report: &mut LoadReport, clock: &mut Clock, rows: Vec<(u64, RowResult<'_>)>| {
            for (line, r) in rows {
                match r {
                    Ok(p) => {
                        report.accept(p.eligible);
                        if p.eligible {
                            let row = Span { off: (p.raw.as_ptr() as usize - base) as u64, len: p.raw.len() as u32 };
                            b.add(p, row, clock);
                        }
                    }
                    Err((reason, detail)) => report.reject(Rejection { line, reason, detail }),
                }
            }
        };
        for (range, first_line) in chunks {
            let (_, parsed) = rayon::join(
                || {
                    if let Some(rows) = pending.take() {
                        absorb(&mut b, &mut report, &mut clock, rows);
                    }
                },
                || parse_lines(&buf[range], first_line, |line| parse_anomali_row(line, now)),
            );
            if let Some(err) = report.wrong_format(spec, false) {
                return Err(err);
            }
            pending = Some(parsed);
        }
        if let Some(rows) = pending.take() {
            absorb(&mut b, &mut report, &mut clock, rows);
        }
    }
    if let Some(err) = report.wrong_format(spec, true) {
        return Err(err);
    }
    b.entries.rows = buf;
    Ok((b.finish(), report, clock.earliest_expiry))
}

/// Splits `buf` into ranges of about `size` bytes that end at a newline, each with the number of its
/// first line.
fn split_chunks(buf: &[u8], size: usize) -> Vec<(std::ops::Range<usize>, u64)> {
    let mut out = Vec::new();
    let (mut start, mut line) = (0usize, 1u64);
    while start < buf.len() {
        let probe = (start + size).min(buf.len());
        let end = match memchr::memchr(b'\n', &buf[probe..]) {
            Some(i) => probe + i + 1,
            None => buf.len(),
        };
        out.push((start..end, line));
        line += memchr::memchr_iter(b'\n', &buf[start..end]).count() as u64;
        start = end;
    }
    out
}

/// Parses the non-blank lines of a chunk in parallel, keeping file order.
fn parse_lines<'a, F>(chunk: &'a [u8], first_line: u64, parse: F) -> Vec<(u64, RowResult<'a>)>
where
    F: Fn(&'a [u8]) -> RowResult<'a> + Sync,
{
    use rayon::prelude::*;
    let mut lines: Vec<(u64, &'a [u8])> = Vec::with_capacity(chunk.len() / 256 + 1);
    let mut n = first_line;
    for line in chunk.split(|b| *b == b'\n') {
        let t = line.trim_ascii();
        if !t.is_empty() {
            lines.push((n, t));
        }
        n += 1;
    }
    lines.par_iter().with_min_len(512).map(|(n, l)| (*n, parse(l))).collect()
}

/// The fields of an Anomali row that matching reads; every other field is skipped by the parser
/// and carried into the output as raw bytes.
#[derive(Deserialize)]
struct AnomaliRow<'a> {
    #[serde(default, borrow)]
    id: Option<Scalar<'a>>,
    #[serde(default, borrow)]
    value: Option<Scalar<'a>>,
    #[serde(default, borrow, rename = "match")]
    match_keys: Option<Values<'a>>,
    #[serde(default, borrow, rename = "type")]
    row_type: Option<Scalar<'a>>,
    #[serde(default, borrow)]
    confidence: Option<Scalar<'a>>,
    #[serde(default, borrow)]
    status: Option<Scalar<'a>>,
    #[serde(default, borrow)]
    expiration_ts: Option<Scalar<'a>>,
    #[serde(default, borrow)]
    modified_ts: Option<Scalar<'a>>,
}

/// The longest piece of a rejected value quoted in a message.
const QUOTE: usize = 80;

fn quote(s: &str) -> String {
    let cut: String = s.chars().take(QUOTE).collect();
    if cut.len() < s.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

fn parse_anomali_row(line: &[u8], now: NaiveDateTime) -> RowResult<'_> {
    let row: AnomaliRow = serde_json::from_slice(line).map_err(|e| (RejectReason::InvalidJson, format!("invalid JSON: {e}")))?;
    let kind = match &row.row_type {
        Some(Scalar::Str(t)) => Kind::from_row_type(t)
            .ok_or_else(|| (RejectReason::UnknownType, format!("unknown type {}: expected one of {ROW_TYPES}", quote(t))))?,
        _ => return Err((RejectReason::UnknownType, format!("no string `type`: expected one of {ROW_TYPES}"))),
    };
    let (id_num, id) = parse_id(row.id.as_ref())?;
    let confidence = parse_confidence(row.confidence.as_ref())?;
    let expires = match &row.expiration_ts {
        None | Some(Scalar::Null) => None,
        Some(Scalar::Str(s)) if s.is_empty() => None,
        Some(Scalar::Str(s)) => Some(parse_ts(s).ok_or_else(|| {
            (RejectReason::BadExpiration, format!("expiration_ts {} is not a \"YYYY-MM-DD HH:MM:SS\" time", quote(s)))
        })?),
        Some(_) => return Err((RejectReason::BadExpiration, "expiration_ts is not a string".into())),
    };
    let active = matches!(&row.status, Some(Scalar::Str(s)) if s == "active");
    let eligible = active && expires.is_none_or(|x| x > now);
    // `match` lists every key the row is reachable under; without it, `value` is the key.
    let candidates: Vec<&Scalar> = match &row.match_keys {
        Some(v @ Values::Many(list)) if !list.is_empty() => v.iter().collect(),
        Some(Values::One(s @ Scalar::Str(t))) if !t.is_empty() => vec![s],
        _ => row.value.iter().collect(),
    };
    let mut keys = Vec::with_capacity(candidates.len());
    let mut first_bad = None;
    for c in candidates {
        match c {
            Scalar::Str(s) => match normalize(kind, s, true) {
                Ok(k) => keys.push(owned_key(k)),
                Err(why) => first_bad = first_bad.or_else(|| Some(format!("{} is {why}", quote(s)))),
            },
            _ => first_bad = first_bad.or_else(|| Some("a key that is not a string".to_owned())),
        }
    }
    if keys.is_empty() {
        let why = first_bad.unwrap_or_else(|| "no `match` or `value`".to_owned());
        return Err((RejectReason::NoValidKey, format!("no valid {kind} key: {why}")));
    }
    let modified = match row.modified_ts {
        Some(Scalar::Str(s)) => s,
        _ => Cow::Borrowed(""),
    };
    Ok(Parsed { raw: line, keys, eligible, expires: expires.filter(|_| eligible), confidence, id_num, id, modified })
}

/// The index keeps its own copy of text keys; making it here moves the allocation off the sequential
/// insert path and into the parallel parse.
fn owned_key(k: Key<'_>) -> Key<'static> {
    match k {
        Key::Ip(ip) => Key::Ip(ip),
        Key::Net(n) => Key::Net(n),
        Key::Text(kind, t) => Key::Text(kind, Cow::Owned(t.into_owned())),
    }
}

fn parse_id<'a>(id: Option<&Scalar<'a>>) -> Result<(u64, Cow<'a, str>), (RejectReason, String)> {
    match id {
        Some(Scalar::Str(s)) => match s.parse::<u64>() {
            Ok(n) if s.bytes().all(|b| b.is_ascii_digit()) => Ok((n, s.clone())),
            _ => Err((RejectReason::BadId, format!("id {} is not a non-negative integer", quote(s)))),
        },
        Some(Scalar::U64(n)) => Ok((*n, Cow::Owned(n.to_string()))),
        _ => Err((RejectReason::BadId, "no `id` (a non-negative integer, as a string or number)".into())),
    }
}

fn parse_confidence(c: Option<&Scalar<'_>>) -> Result<u8, (RejectReason, String)> {
    let bad = |what: String| Err((RejectReason::BadConfidence, format!("confidence {what} is not an integer from 0 to 100")));
    let n: i64 = match c {
        None | Some(Scalar::Null) => 0,
        Some(Scalar::U64(n)) => i64::try_from(*n).unwrap_or(i64::MAX),
        Some(Scalar::I64(n)) => *n,
        // Python's int() truncates toward zero.
        Some(Scalar::F64(f)) if f.is_finite() => f.trunc() as i64,
        Some(Scalar::Str(s)) => match s.trim().parse::<i64>() {
            Ok(n) => n,
            Err(_) => return bad(quote(s)),
        },
        Some(other) => return bad(format!("{other:?}")),
    };
    u8::try_from(n).ok().filter(|n| *n <= 100).map_or_else(|| bad(n.to_string()), Ok)
}

/// A timestamp as the reference reads it: `T` may stand for the space, trailing `Z`s are dropped,
/// and the first 19 characters must be `%Y-%m-%d %H:%M:%S` (fields after the year may have one digit).
pub fn parse_ts(s: &str) -> Option<NaiveDateTime> {
    let s = s.replace('T', " ");
    let s = s.trim_end_matches('Z');
    let head: &str = match s.char_indices().nth(19) {
        Some((i, _)) => &s[..i],
        None => s,
    };
    let (date, time) = head.split_once(' ')?;
    let num = |p: &str, min: usize, max: usize| -> Option<u32> {
        (p.len() >= min && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit())).then(|| p.parse().ok())?
    };
    let mut d = date.split('-');
    let (y, m, dd) = (num(d.next()?, 4, 4)?, num(d.next()?, 1, 2)?, num(d.next()?, 1, 2)?);
    let mut t = time.split(':');
    let (h, mi, sec) = (num(t.next()?, 1, 2)?, num(t.next()?, 1, 2)?, num(t.next()?, 1, 2)?);
    if d.next().is_some() || t.next().is_some() {
        return None;
    }
    NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, m, dd)?.and_hms_opt(h, mi, sec)
}

fn load_csv(spec: &TableSpec, buf: &[u8], mut clock: Clock) -> Result<(Index, LoadReport, Option<NaiveDateTime>), TableError> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(buf);
    let headers = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(e) => return Err(TableError::Header { path: spec.path.clone(), problem: format!("unreadable csv header: {e}") }),
    };
    let mut report = LoadReport::default();
    let mut b = IndexBuilder::default();
    if headers.is_empty() || headers.iter().all(str::is_empty) {
        return Ok((b.finish(), report, None));
    }
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let key_name = spec.key.as_deref().unwrap_or("value");
    let key_col = col(key_name).ok_or_else(|| TableError::Header {
        path: spec.path.clone(),
        problem: format!(
            "no column named {key_name:?} (columns: {}); set the table's `key` to the indicator column",
            headers.iter().collect::<Vec<_>>().join(", ")
        ),
    })?;
    let kind_col = match spec.kind {
        Some(_) => None,
        None => {
            let name = spec.kind_column.as_deref().unwrap_or("type");
            Some(col(name).ok_or_else(|| TableError::Header {
                path: spec.path.clone(),
                problem: format!("no column named {name:?} for each row's type; set the table's `kind` or `kind_column`"),
            })?)
        }
    };
    let (id_col, conf_col, status_col, exp_col, mod_col) =
        (col("id"), col("confidence"), col("status"), col("expiration_ts"), col("modified_ts"));
    let mut rows_arena: Vec<u8> = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let line = rdr.position().line() + 1;
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                report.reject(Rejection { line, reason: RejectReason::BadCsvRow, detail: e.to_string() });
                continue;
            }
        }
        let line = record.position().map_or(line, |p| p.line());
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let field = |c: Option<usize>| c.and_then(|c| record.get(c)).map(str::trim).filter(|s| !s.is_empty());
        let parsed = (|| -> RowResult<'static> {
            if record.len() != headers.len() {
                return Err((
                    RejectReason::BadCsvRow,
                    format!("{} fields where the header has {}", record.len(), headers.len()),
                ));
            }
            let kind = match (spec.kind, field(kind_col)) {
                (Some(k), _) => k,
                (None, Some(t)) => Kind::from_row_type(t).ok_or_else(|| {
                    (RejectReason::UnknownType, format!("unknown type {}: expected one of {ROW_TYPES}", quote(t)))
                })?,
                (None, None) => return Err((RejectReason::UnknownType, format!("empty type: expected one of {ROW_TYPES}"))),
            };
            let (id_num, id) = match field(id_col) {
                Some(s) => parse_id(Some(&Scalar::Str(Cow::Borrowed(s))))?,
                None => (line, Cow::Owned(line.to_string())),
            };
            let confidence = parse_confidence(field(conf_col).map(|s| Scalar::Str(Cow::Borrowed(s))).as_ref())?;
            let expires = match field(exp_col) {
                Some(s) => Some(parse_ts(s).ok_or_else(|| {
                    (RejectReason::BadExpiration, format!("expiration_ts {} is not a \"YYYY-MM-DD HH:MM:SS\" time", quote(s)))
                })?),
                None => None,
            };
            let active = field(status_col).is_none_or(|s| s == "active");
            let eligible = active && expires.is_none_or(|x| x > clock.now);
            let raw_key = record.get(key_col).unwrap_or("");
            let key = normalize(kind, raw_key, true)
                .map_err(|why| (RejectReason::NoValidKey, format!("no valid {kind} key: {} is {why}", quote(raw_key))))?;
            let key = owned_key(key);
            Ok(Parsed {
                raw: &[],
                keys: vec![key],
                eligible,
                expires: expires.filter(|_| eligible),
                confidence,
                id_num,
                id: Cow::Owned(id.into_owned()),
                modified: Cow::Owned(field(mod_col).unwrap_or("").to_owned()),
            })
        })();
        match parsed {
            Ok(p) => {
                report.accept(p.eligible);
                if p.eligible {
                    let mut obj = String::from("{");
                    for (i, (h, v)) in headers.iter().zip(record.iter()).enumerate() {
                        if i > 0 {
                            obj.push(',');
                        }
                        crate::json::write_str_literal(&mut obj, h.trim());
                        obj.push(':');
                        crate::json::write_str_literal(&mut obj, v);
                    }
                    obj.push('}');
                    let row = push_row(&mut rows_arena, &obj);
                    b.add(p, row, &mut clock);
                }
            }
            Err((reason, detail)) => report.reject(Rejection { line, reason, detail }),
        }
        if let Some(err) = report.wrong_format(spec, false) {
            return Err(err);
        }
    }
    if let Some(err) = report.wrong_format(spec, true) {
        return Err(err);
    }
    b.entries.rows = rows_arena;
    Ok((b.finish(), report, clock.earliest_expiry))
}

fn push_row(arena: &mut Vec<u8>, json: &str) -> Span {
    let off = arena.len() as u64;
    arena.extend_from_slice(json.as_bytes());
    Span { off, len: json.len() as u32 }
}

fn load_list(spec: &TableSpec, buf: &[u8]) -> Result<(Index, LoadReport, Option<NaiveDateTime>), TableError> {
    let kind = spec.kind.ok_or_else(|| TableError::Spec { table: spec.name.clone(), problem: "a list table needs `kind`".into() })?;
    let mut report = LoadReport::default();
    let mut b = IndexBuilder::default();
    let mut rows_arena: Vec<u8> = Vec::new();
    let mut clock = Clock { now: NaiveDateTime::MIN, earliest_expiry: None };
    for (i, raw) in buf.split(|b| *b == b'\n').enumerate() {
        let line = i as u64 + 1;
        let text = match std::str::from_utf8(raw) {
            Ok(t) => t.trim(),
            Err(e) => {
                report.reject(Rejection { line, reason: RejectReason::NoValidKey, detail: format!("not UTF-8 text: {e}") });
                if let Some(err) = report.wrong_format(spec, false) {
                    return Err(err);
                }
                continue;
            }
        };
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        match normalize(kind, text, true) {
            Ok(key) => {
                report.accept(true);
                let mut obj = String::from("{\"value\":");
                crate::json::write_str_literal(&mut obj, text);
                obj.push('}');
                let row = push_row(&mut rows_arena, &obj);
                let key = owned_key(key);
                let p = Parsed {
                    raw: &[],
                    keys: vec![key],
                    eligible: true,
                    expires: None,
                    confidence: 0,
                    id_num: line,
                    id: Cow::Owned(line.to_string()),
                    modified: Cow::Borrowed(""),
                };
                b.add(p, row, &mut clock);
            }
            Err(why) => report.reject(Rejection {
                line,
                reason: RejectReason::NoValidKey,
                detail: format!("no valid {kind} key: {} is {why}", quote(text)),
            }),
        }
        if let Some(err) = report.wrong_format(spec, false) {
            return Err(err);
        }
    }
    if let Some(err) = report.wrong_format(spec, true) {
        return Err(err);
    }
    b.entries.rows = rows_arena;
    Ok((b.finish(), report, None))
}

/// Loads every table, in order. The first failure stops: a table the configuration names must load.
pub fn load_all(specs: &[TableSpec], now: DateTime<Utc>) -> Result<Vec<Table>, TableError> {
    specs.iter().map(|s| Table::load(s, now)).collect()
}
