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
mod probe_table;
pub mod refresh;
mod template;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::Deserialize;
use smallvec::SmallVec;

use crate::chunks::{self, Chunk};
use crate::indicator::{normalize, Key, Kind, ROW_TYPES};
use crate::json::{scan, Scalar, Values};
use index::Layouts;
pub use index::{
    key_hash, Entry, EntryId, Index, IndexBuilder, Shape, Shapes, ShardedKeys, Span, TextCandidate, LAYOUT, VERBATIM,
};

/// What the first half of a lookup found (see [`Table::candidate`]).
#[derive(Debug, Clone, Copy)]
pub enum Candidate {
    Entry(EntryId),
    Text(TextCandidate),
}
pub use refresh::{refresh_loop, RefreshReport, TableSet};

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

/// One `[[tables]]` entry of the configuration file, as written; [`TableConfig::to_spec`] checks it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// The name under `p_enrichment` (letters, digits, `_`, `-`).
    pub name: String,
    pub path: PathBuf,
    /// `anomali`, `csv` or `list`.
    pub format: String,
    /// `ip`, `domain`, `email`, `hash` or `url`: required for `list`; for `csv`, one kind for every row.
    #[serde(default)]
    pub kind: Option<String>,
    /// csv: the column holding the indicator (default `value`).
    #[serde(default)]
    pub key: Option<String>,
    /// csv without `kind`: the column holding each row's type (default `type`).
    #[serde(default)]
    pub kind_column: Option<String>,
    /// How often the file is re-read even when unchanged (humantime, e.g. `60m`).
    #[serde(default)]
    pub refresh: Option<String>,
    #[serde(default)]
    pub match_subdomains: bool,
}

impl TableConfig {
    /// The checked settings, or the first problem with the key to change.
    pub fn to_spec(&self) -> Result<TableSpec, TableError> {
        let problem =
            |key: &str, p: String| TableError::Spec { table: self.name.clone(), problem: format!("`{key}`: {p}") };
        let spec = TableSpec {
            name: self.name.clone(),
            path: self.path.clone(),
            format: self.format.parse().map_err(|e| problem("format", e))?,
            kind: self.kind.as_deref().map(str::parse).transpose().map_err(|e| problem("kind", e))?,
            key: self.key.clone(),
            kind_column: self.kind_column.clone(),
            refresh: self
                .refresh
                .as_deref()
                .map(humantime::parse_duration)
                .transpose()
                .map_err(|e| problem("refresh", format!("{e}; write a duration such as \"60m\" or \"1h 30m\"")))?,
            match_subdomains: self.match_subdomains,
        };
        spec.validate()?;
        Ok(spec)
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
    /// How often the daemon re-reads the file even when it has not changed.
    pub refresh: Option<Duration>,
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
            refresh: None,
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
            Format::List if self.kind.is_none() => {
                problem("a list table needs `kind` (ip, domain, email, hash or url)")
            }
            Format::Anomali if self.kind.is_some() || self.key.is_some() || self.kind_column.is_some() => problem(
                "an anomali table takes each row's kind from its `type`; remove `kind`, `key` and `kind_column`",
            ),
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
    RowTooLong,
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
            RejectReason::RowTooLong => "row_too_long",
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

/// Lines longer than a chunk are rare; the largest line a test builds.
#[cfg(test)]
const CHUNK: usize = chunks::CHUNK;

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

    /// A batch's rows at once, as `accept` and `reject` would have taken them one by one:
    /// `rejections` are the rejected rows with their places among the `rows`.
    fn absorb(&mut self, rows: u64, eligible: u64, rejections: Vec<(u64, Rejection)>) {
        let probed = rows.min(PROBE_ROWS - self.probe_seen);
        self.probe_seen += probed;
        self.probe_failed += rejections.iter().filter(|(at, _)| *at < probed).count() as u64;
        self.rows += rows;
        self.eligible += eligible;
        for (_, r) in rejections {
            *self.rejected.entry(r.reason).or_default() += 1;
            if self.examples.len() < EXAMPLES {
                self.examples.push(r);
            }
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

/// A loaded table: its index plus what the load found. Cloning shares the index (a refresh keeps the
/// tables it did not rebuild by cloning them into the new set).
#[derive(Debug, Clone)]
pub struct Table {
    pub spec: TableSpec,
    pub index: Arc<Index>,
    pub report: LoadReport,
    /// When the earliest eligible row expires; past it the index must be rebuilt to stay exact.
    pub valid_until: Option<DateTime<Utc>>,
}

impl Table {
    /// Reads and indexes the table file for the clock `now`.
    pub fn load(spec: &TableSpec, now: DateTime<Utc>) -> Result<Table, TableError> {
        spec.validate()?;
        let io_err = |source| TableError::Io { path: spec.path.clone(), source };
        if spec.format == Format::Anomali {
            let started = Instant::now();
            let file = std::fs::File::open(&spec.path).map_err(io_err)?;
            let size = file.metadata().map_err(io_err)?.len();
            let clock = Clock { now: now.naive_utc(), earliest_expiry: None };
            let (index, report, earliest) = load_anomali_from(spec, file, size, clock)?;
            return Ok(Self::assemble(spec, index, report, earliest, size, started));
        }
        let buf = chunks::read_file(&spec.path).map_err(io_err)?;
        Self::from_bytes(spec, buf, now)
    }

    /// Indexes table bytes already in memory (tests and fuzzing use it; `load` streams instead).
    pub fn from_bytes(spec: &TableSpec, mut buf: Vec<u8>, now: DateTime<Utc>) -> Result<Table, TableError> {
        spec.validate()?;
        let started = Instant::now();
        let size = buf.len() as u64;
        let clock = Clock { now: now.naive_utc(), earliest_expiry: None };
        let (index, report, earliest) = match spec.format {
            Format::Anomali => load_anomali_from(spec, std::io::Cursor::new(buf), size, clock)?,
            Format::Csv | Format::List => {
                if buf.starts_with(b"\xEF\xBB\xBF") {
                    buf.drain(..3);
                }
                if spec.format == Format::Csv {
                    load_csv(spec, &buf, clock)?
                } else {
                    load_list(spec, &buf)?
                }
            }
        };
        Ok(Self::assemble(spec, index, report, earliest, size, started))
    }

    fn assemble(
        spec: &TableSpec,
        index: Index,
        mut report: LoadReport,
        earliest: Option<NaiveDateTime>,
        bytes: u64,
        started: Instant,
    ) -> Table {
        report.bytes = bytes;
        report.elapsed = started.elapsed();
        Table { spec: spec.clone(), index: Arc::new(index), report, valid_until: earliest.map(|t| t.and_utc()) }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// False where `key` surely has no row here; cheap, for filtering a batch before `lookup`.
    pub fn may_match(&self, key: &Key<'_>) -> bool {
        self.may_match_hashed(key, key_hash(key))
    }

    pub fn lookup(&self, key: &Key<'_>) -> Option<EntryId> {
        self.lookup_hashed(key, key_hash(key))
    }

    /// `may_match` for a key whose `key_hash` is known (one hash serves every table).
    pub fn may_match_hashed(&self, key: &Key<'_>, hash: u64) -> bool {
        self.index.may_match(key, hash, self.spec.match_subdomains)
    }

    /// Whether `key` is looked up by its own hash alone: all but a domain in a table that matches
    /// subdomains, whose every parent is looked up too.
    fn by_own_hash(&self, key: &Key<'_>) -> bool {
        !(self.spec.match_subdomains && matches!(key, Key::Text(Kind::Domain, _)))
    }

    /// Fetches ahead the filter word `may_match_hashed` will read for this key.
    pub fn prefetch(&self, key: &Key<'_>, hash: u64) {
        if self.by_own_hash(key) {
            self.index.prefetch(key, hash);
        }
    }

    /// Fetches ahead the first table slot `candidate` will read for this key.
    pub fn prefetch_slot(&self, key: &Key<'_>, hash: u64) {
        if self.by_own_hash(key) {
            self.index.prefetch_slot(key, hash);
        }
    }

    /// `lookup` for a key whose `key_hash` is known.
    pub fn lookup_hashed(&self, key: &Key<'_>, hash: u64) -> Option<EntryId> {
        self.index.lookup(key, hash, self.spec.match_subdomains)
    }

    /// The first half of `lookup_hashed`, for a batch of keys: a winner, or for a text key the entry
    /// filed under its hash with its text fetched ahead, which `confirm` then compares.
    pub fn candidate(&self, key: &Key<'_>, hash: u64) -> Option<Candidate> {
        match key {
            Key::Text(kind, _) if self.by_own_hash(key) => self.index.text_candidate(*kind, hash).map(Candidate::Text),
            _ => self.lookup_hashed(key, hash).map(Candidate::Entry),
        }
    }

    /// The second half of `lookup_hashed`: the winner `candidate` found, once its text is confirmed.
    pub fn confirm(&self, c: Candidate, key: &Key<'_>, hash: u64) -> Option<EntryId> {
        match (c, key) {
            (Candidate::Entry(e), _) => Some(e),
            (Candidate::Text(t), Key::Text(kind, text)) => self.index.confirm_text(t, *kind, text, hash),
            (Candidate::Text(_), _) => None,
        }
    }

    /// The winning row's JSON object, as it was in the table (csv and list rows as built at load).
    pub fn row_json(&self, e: EntryId) -> Cow<'_, str> {
        self.index.entries.row_json(self.index.entry(e))
    }

    /// The row's id as the table wrote it.
    pub fn entry_id(&self, e: EntryId) -> &str {
        self.id_text(self.index.entry(e).id())
    }

    /// The ids of many entries of these tables. Against a large table each id costs two cache
    /// misses, the entry and then its text; read in two loops of independent loads rather than one
    /// id after the other, the misses of a batch overlap.
    pub fn entry_ids<'t>(tables: &'t [Table], entries: &[(usize, EntryId)]) -> Vec<&'t str> {
        let spans: SmallVec<[Span; 32]> = entries.iter().map(|&(t, e)| tables[t].index.entry(e).id()).collect();
        entries.iter().zip(spans).map(|(&(t, _), span)| tables[t].id_text(span)).collect()
    }

    fn id_text(&self, span: Span) -> &str {
        std::str::from_utf8(self.index.entries.in_keys(span)).unwrap_or("")
    }
}

#[derive(Clone, Copy)]
struct Clock {
    now: NaiveDateTime,
    earliest_expiry: Option<NaiveDateTime>,
}

/// A csv or list row after parsing, before it enters the index.
struct Parsed {
    keys: SmallVec<[Key<'static>; 1]>,
    eligible: bool,
    expires: Option<NaiveDateTime>,
    confidence: i64,
    id_num: i64,
}

/// Where an Anomali row's bytes went in its batch block: verbatim, as the array of its values with
/// the shape (key list) that rebuilds it, or as its holes with the layout (`LAYOUT` | its number)
/// that rebuilds it.
#[derive(Clone, Copy, Default)]
struct RowLoc {
    off: u32,
    len: u32,
    shape: u32,
}

/// The earlier of two expiry times, where either is set.
fn earliest(a: Option<NaiveDateTime>, b: Option<NaiveDateTime>) -> Option<NaiveDateTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl IndexBuilder {
    /// Adds an eligible csv or list row with the bytes built for it: its JSON object and
    /// `modified_ts` in the last row block, its id in the last key block (new blocks past 1 GiB).
    fn add_built(&mut self, p: Parsed, [row, id, modified]: [&[u8]; 3], clock: &mut Clock) {
        // A block's offsets are 32-bit; a row, its keys and id are far below 1 GiB (`MAX_ROW_BYTES`).
        let full = |b: Option<&Vec<u8>>| b.is_none_or(|b| b.len() > 1 << 30);
        if full(self.entries.rows.last()) || full(self.entries.keys.last()) {
            self.entries.new_block();
        }
        let block = self.entries.rows.len() - 1;
        let rows = &mut self.entries.rows[block];
        let at = ((block as u64) << 32) | rows.len() as u64;
        rows.extend_from_slice(row);
        rows.extend_from_slice(modified);
        let keys = &mut self.entries.keys[block];
        let id_off = keys.len() as u32;
        keys.extend_from_slice(id);
        let e = self.push_entry(Entry {
            at,
            row_len: row.len() as u32,
            shape: VERBATIM,
            id_off,
            id_len: id.len() as u32,
            modified_off: row.len() as u32,
            modified_len: modified.len() as u32,
            id_num: p.id_num,
            confidence: p.confidence,
        });
        for k in p.keys {
            self.insert(k, e);
        }
        clock.earliest_expiry = earliest(clock.earliest_expiry, p.expires);
    }
}

fn load_anomali_from<R: Read + Send>(
    spec: &TableSpec,
    source: R,
    size_hint: u64,
    clock: Clock,
) -> Result<(Index, LoadReport, Option<NaiveDateTime>), TableError> {
    load_anomali_chunked(spec, source, size_hint, clock, chunks::CHUNK)
}

fn load_anomali_chunked<R: Read + Send>(
    spec: &TableSpec,
    source: R,
    size_hint: u64,
    clock: Clock,
    chunk_size: usize,
) -> Result<(Index, LoadReport, Option<NaiveDateTime>), TableError> {
    let io_err = |source| TableError::Io { path: spec.path.clone(), source };
    chunks::read_in_background(source, chunk_size, size_hint, |chunks, recycle| {
        load_anomali(spec, &mut chunks.map(|r| r.map_err(io_err)), recycle, size_hint, clock)
    })
}

fn load_anomali(
    spec: &TableSpec,
    chunks: &mut dyn Iterator<Item = Result<Chunk, TableError>>,
    recycle: chunks::Recycle<'_>,
    size_hint: u64,
    mut clock: Clock,
) -> Result<(Index, LoadReport, Option<NaiveDateTime>), TableError> {
    let mut b = IndexBuilder::default();
    let mut report = LoadReport::default();
    let now = clock.now;
    // The serial part is short (counts; entries and blocks moved in whole); the keys go in on every
    // core.
    let absorb = |b: &mut IndexBuilder, report: &mut LoadReport, clock: &mut Clock, batches: Vec<Batch>| {
        let mut keys = Vec::with_capacity(batches.len());
        for batch in batches {
            report.absorb(batch.rows, batch.eligible, batch.rejections);
            clock.earliest_expiry = earliest(clock.earliest_expiry, batch.earliest_expiry);
            keys.push((b.entries.push_segment(batch.entries), batch.keys));
            b.entries.rows.push(batch.block);
            b.entries.keys.push(batch.key_block);
        }
        b.insert_batches(&keys);
    };
    let mut first = true;
    let mut pending: Option<Vec<Batch>> = None;
    // The chunks come unnumbered: their lines are numbered as they are split.
    let mut next_line = 1;
    for item in chunks {
        let mut chunk = item?;
        if first {
            if chunk.bytes.starts_with(b"\xEF\xBB\xBF") {
                chunk.bytes.drain(..3);
            }
            // The first row's layout, learned before the parse, serves the first chunk's rows.
            if let Some(t) = first_layout(&chunk.bytes) {
                b.entries.intern_layout(Arc::new(t));
            }
        }
        // The shapes and layouts a chunk's rows taught are interned once it is parsed: they serve
        // the rows of the next chunk on.
        let known = Known { shapes: b.entries.shapes.clone(), layouts: b.entries.layouts.clone() };
        // This chunk's batches become the row blocks after those absorbed and those pending.
        let first_block = (b.entries.rows.len() + pending.as_ref().map_or(0, Vec::len)) as u64;
        let (_, batches) = rayon::join(
            || {
                if let Some(batches) = pending.take() {
                    absorb(&mut b, &mut report, &mut clock, batches);
                }
            },
            || parse_chunk(&chunk, next_line, &known, now, first_block),
        );
        let (mut batches, after) = batches;
        next_line = after;
        for batch in &mut batches {
            if let Some(shape) = batch.new_shape.take() {
                b.entries.intern_shape(shape);
            }
            if let Some(layout) = batch.new_layout.take() {
                b.entries.intern_layout(layout);
            }
        }
        if first {
            // Sized from what the first chunk held, rather than rehashed again and again as they grow.
            let factor = size_hint as f64 / chunk.bytes.len().max(1) as f64;
            // A real table's slots take a tenth of its file or less (the generator's: 0.04).
            b.reserve_for(batches.iter().map(|b| &b.keys), factor, (size_hint / 8) as usize);
        }
        first = false;
        if let Some(err) = report.wrong_format(spec, false) {
            return Err(err);
        }
        // Parsed rows hold what they need in their blocks: the chunk's buffer can be read into again.
        recycle(chunk.bytes);
        pending = Some(batches);
    }
    if let Some(batches) = pending.take() {
        absorb(&mut b, &mut report, &mut clock, batches);
    }
    if let Some(err) = report.wrong_format(spec, true) {
        return Err(err);
    }
    Ok((b.finish(), report, clock.earliest_expiry))
}

/// What one parallel task made of its rows, in file order.
#[derive(Default)]
struct Batch {
    /// The eligible rows' bytes, each row followed by its `modified_ts` text.
    block: Vec<u8>,
    /// Their ids and normalized text keys.
    key_block: Vec<u8>,
    /// The eligible rows; their keys' entry numbers count from the first of them.
    entries: Vec<Entry>,
    keys: ShardedKeys,
    rows: u64,
    eligible: u64,
    /// Rejected rows, each with its place among the batch's rows.
    rejections: Vec<(u64, Rejection)>,
    new_shape: Option<Shape>,
    new_layout: Option<Arc<template::Template>>,
    earliest_expiry: Option<NaiveDateTime>,
}

/// The shapes and layouts a table knew when a chunk's parse began.
struct Known {
    shapes: Shapes,
    layouts: Layouts,
}

/// Rows per parallel task: enough that its block of row bytes is about a hundred KiB, few enough
/// that a chunk makes several tasks for the cores to share. A batch's entries are one segment.
const BATCH_ROWS: usize = 512;
const _: () = assert!(BATCH_ROWS <= 1 << index::SEGMENT_BITS);

/// Parses the non-blank lines of a chunk in parallel, keeping file order. Batch `i` writes what it
/// keeps to what will be row block `first_block + i`.
/// The chunk's batches, its lines numbered from `first_line`; and the number of the line after it.
fn parse_chunk(
    chunk: &Chunk,
    first_line: u64,
    known: &Known,
    now: NaiveDateTime,
    first_block: u64,
) -> (Vec<Batch>, u64) {
    use rayon::prelude::*;
    let (lines, next_line) = chunks::lines_from(&chunk.bytes, first_line);
    let batches = lines
        .par_chunks(BATCH_ROWS)
        .enumerate()
        .map(|(i, lines)| {
            let block = Vec::with_capacity(lines.iter().map(|(_, l)| l.len()).sum::<usize>() * 3 / 4);
            let mut out = BatchOut {
                batch: Batch {
                    block,
                    key_block: Vec::with_capacity(lines.len() * 32),
                    entries: Vec::with_capacity(lines.len()),
                    ..Batch::default()
                },
                block_index: first_block + i as u64,
                hint: ShapeHint::default(),
                members: Vec::with_capacity(32),
                templates: Templates::knowing(&known.layouts),
            };
            let run = chunks::TextRun::check(&chunk.bytes, lines);
            for (n, l) in lines {
                let text = run.as_ref().and_then(|r| r.line(l));
                if let Err((reason, detail)) = parse_anomali_row(l, text, now, known, &mut out) {
                    let at = out.batch.rows;
                    out.batch.rejections.push((at, Rejection { line: *n, reason, detail }));
                }
                out.batch.rows += 1;
            }
            let mut batch = out.batch;
            if batch.block.len() < batch.block.capacity() / 2 {
                // Mostly ineligible rows: the block is kept for the table's life, so keep it small.
                batch.block.shrink_to_fit();
            }
            batch
        })
        .collect();
    (batches, next_line)
}

/// The fields of an Anomali row that matching reads; every other field is skipped by the parser
/// and carried into the output as raw bytes.
#[derive(Deserialize, Default)]
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

/// Every member of a row as (key, raw value), where the fast scanner read it; one buffer per batch.
type Members<'a> = Vec<(&'a str, &'a str)>;

/// The longest row kept. Real indicator rows are a few KiB, and a `match` list of 100k addresses is
/// under 2 MiB; a longer line is a broken feed. The cap also bounds row blocks (at most twice a chunk
/// plus one row) far inside their 32-bit offsets.
pub const MAX_ROW_BYTES: usize = 64 << 20;

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

impl<'a> AnomaliRow<'a> {
    /// The members a template read; `None` where one of them must go to serde_json.
    fn from_template(t: &template::Template, text: &'a str, holes: &template::Holes) -> Option<AnomaliRow<'a>> {
        let mut row = AnomaliRow::default();
        for r in 0..template::ROLES as u8 {
            match t.role(r) {
                None => {}
                Some(template::RoleAt::Strings(from, to)) if r == ROLE_MATCH => {
                    row.match_keys = Some(Values::Many(
                        (from..to).map(|k| Scalar::Str(Cow::Borrowed(holes.get(text, k)))).collect(),
                    ));
                }
                // A string's content is all a role but `match` reads, and `match` reads a string
                // the same way; no need to find its quotes.
                Some(template::RoleAt::Hole(k)) if t.is_string(k) => {
                    row.take_string(r, holes.get(text, k));
                }
                Some(at) => row.take_role(r, t.raw(text, holes, at), None)?,
            }
        }
        Some(row)
    }

    /// Reads a row with the fast scanner; `None` where it defers to serde_json (text that is not JSON,
    /// nesting deeper than it follows), which then decides and explains.
    fn scan(text: &'a str, members: &mut Members<'a>) -> Option<AnomaliRow<'a>> {
        let mut row = AnomaliRow::default();
        let mut plain_keys = true;
        members.clear();
        scan::walk_object(text, |sc, k, d| {
            let (raw, plain) = sc.value_or_plain(d)?;
            plain_keys &= !k.escaped;
            if plain_keys {
                members.push((k.text, raw));
            }
            row.take(k, raw, plain)
        })?;
        if !plain_keys {
            // Rows with escaped keys are kept verbatim.
            members.clear();
        }
        Some(row)
    }

    /// Takes one member; `None` where the scanner must defer to serde_json.
    fn take(&mut self, k: scan::RawKey<'a>, raw: &'a str, plain: Option<&'a str>) -> Option<()> {
        // Most keys are none of ours: their length alone says so, without comparing text.
        if !k.escaped && !matches!(k.text.len(), 2 | 4 | 5 | 6 | 10 | 11 | 13) {
            return Some(());
        }
        match role(&k.decoded()) {
            Some(r) => self.take_role(r, raw, plain),
            None => Some(()),
        }
    }

    /// The field of a role that holds one value (all but `match`).
    fn slot(&mut self, role: u8) -> Option<&mut Option<Scalar<'a>>> {
        Some(match role {
            ROLE_ID => &mut self.id,
            ROLE_VALUE => &mut self.value,
            ROLE_TYPE => &mut self.row_type,
            ROLE_CONFIDENCE => &mut self.confidence,
            ROLE_STATUS => &mut self.status,
            ROLE_EXPIRATION => &mut self.expiration_ts,
            ROLE_MODIFIED => &mut self.modified_ts,
            _ => return None,
        })
    }

    /// Takes a string member (its content) that plays `role`.
    fn take_string(&mut self, role: u8, content: &'a str) {
        let s = Scalar::Str(Cow::Borrowed(content));
        match self.slot(role) {
            Some(slot) => *slot = Some(s),
            None if role == ROLE_MATCH => self.match_keys = Some(Values::One(s)),
            None => {}
        }
    }

    /// Takes the member that plays `role`. A repeated field reads as its last value, as Python's
    /// json.loads keeps it.
    fn take_role(&mut self, role: u8, raw: &'a str, plain: Option<&'a str>) -> Option<()> {
        if let Some(content) = plain {
            self.take_string(role, content);
        } else if let Some(slot) = self.slot(role) {
            // A JSON null reads as an absent field.
            *slot = Some(Scalar::read(raw)).filter(|s| *s != Scalar::Null);
        } else if role == ROLE_MATCH {
            self.match_keys = match Values::parse(raw).ok()? {
                Values::One(Scalar::Null) => None,
                other => Some(other),
            };
        }
        Some(())
    }
}

const ROLE_ID: u8 = 0;
const ROLE_VALUE: u8 = 1;
const ROLE_TYPE: u8 = 2;
const ROLE_CONFIDENCE: u8 = 3;
const ROLE_STATUS: u8 = 4;
const ROLE_EXPIRATION: u8 = 5;
const ROLE_MODIFIED: u8 = 6;
const ROLE_MATCH: u8 = 7;

/// Which of the fields matching reads a key names.
fn role(key: &str) -> Option<u8> {
    Some(match key {
        "id" => ROLE_ID,
        "value" => ROLE_VALUE,
        "type" => ROLE_TYPE,
        "confidence" => ROLE_CONFIDENCE,
        "status" => ROLE_STATUS,
        "expiration_ts" => ROLE_EXPIRATION,
        "modified_ts" => ROLE_MODIFIED,
        "match" => ROLE_MATCH,
        _ => return None,
    })
}

/// Which shape the last rows of a batch had, and whether the batch already offered a new one.
#[derive(Default)]
struct ShapeHint {
    last: usize,
    offered: bool,
}

/// Writes an eligible row into its batch's block: as the array of its values where it is exactly
/// `{"k1":v1,...}` (no white space, plain keys) with a known shape, else verbatim. A row of an
/// unknown shape offers its key list, once per batch, for later rows to use.
fn place_row(
    line: &[u8],
    members: &[(&str, &str)],
    shapes: &Shapes,
    block: &mut Vec<u8>,
    hint: &mut ShapeHint,
) -> (RowLoc, Option<Shape>) {
    let off = block.len() as u32;
    let same = |s: &Shape| s.len() == members.len() && s.iter().zip(members).all(|(a, (b, _))| **a == **b);
    let exact =
        !members.is_empty() && 1 + members.iter().map(|(k, v)| k.len() + 4 + v.len()).sum::<usize>() == line.len();
    let mut offer = None;
    if exact {
        let found =
            shapes.get(hint.last).filter(|s| same(s)).map(|_| hint.last).or_else(|| shapes.iter().position(same));
        match found {
            Some(id) => {
                hint.last = id;
                block.reserve(line.len());
                block.push(b'[');
                for (i, (_, v)) in members.iter().enumerate() {
                    if i > 0 {
                        block.push(b',');
                    }
                    push_value(block, line, v);
                }
                block.push(b']');
                return (RowLoc { off, len: block.len() as u32 - off, shape: id as u32 }, None);
            }
            None if !hint.offered => {
                hint.offered = true;
                offer = Some(members.iter().map(|(k, _)| Box::from(*k)).collect());
            }
            None => {}
        }
    }
    block.extend_from_slice(line);
    (RowLoc { off, len: line.len() as u32, shape: VERBATIM }, offer)
}

/// Where a batch's rows go, and its scratch space.
struct BatchOut<'a> {
    batch: Batch,
    /// The row block `batch.block` will be.
    block_index: u64,
    hint: ShapeHint,
    members: Members<'a>,
    templates: Templates,
}

/// The row layouts a batch has learned, and the scratch space reading with them takes.
#[derive(Default)]
struct Templates {
    learned: Vec<Learned>,
    /// The template that read the last row: the first one tried for the next.
    last: usize,
    /// Rows tried against the templates, and rows they read: a batch whose rows mostly fit none
    /// stops trying.
    tried: u32,
    read: u32,
    /// The template that read the current row, if one did.
    current: Option<usize>,
    /// Rows offered to learn from (a row with escapes teaches nothing; a few such rows stop it).
    offered: u32,
    holes: template::Holes,
}

/// A learned template, and the table's layout number for it once the table knows the layout.
struct Learned {
    template: Arc<template::Template>,
    layout: Option<u32>,
}

impl Templates {
    /// Templates that start with the first layouts the table knows (leaving room to learn more).
    fn knowing(layouts: &Layouts) -> Templates {
        let learned = layouts
            .iter()
            .take(template::MAX_TEMPLATES / 2)
            .enumerate()
            .map(|(id, t)| Learned { template: t.clone(), layout: Some(id as u32) })
            .collect();
        Templates { learned, ..Templates::default() }
    }

    /// Reads `text` with a learned template.
    fn row<'a>(&mut self, text: &'a str) -> Option<AnomaliRow<'a>> {
        self.current = None;
        if self.learned.is_empty() || (self.tried >= 256 && self.read * 2 < self.tried) {
            return None;
        }
        self.tried += 1;
        let n = self.learned.len();
        for k in 0..n {
            let t = (self.last + k) % n;
            let template = &self.learned[t].template;
            if template.read(text, &mut self.holes) {
                self.last = t;
                self.current = Some(t);
                self.read += 1;
                return AnomaliRow::from_template(template, text, &self.holes);
            }
        }
        None
    }

    /// The template that read the current row, with the table's layout number for it.
    fn layout(&self) -> Option<(&template::Template, u32)> {
        let l = self.learned.get(self.current?)?;
        Some((&l.template, l.layout?))
    }

    /// Learns the layout of a row the general scanner read, while there is room for one more.
    /// A layout the table does not know yet is offered for it to keep (once a batch).
    fn learn(&mut self, text: &str, known: &Layouts, offer: &mut Option<Arc<template::Template>>) {
        if self.learned.len() < template::MAX_TEMPLATES && self.offered < 2 * template::MAX_TEMPLATES as u32 {
            self.offered += 1;
            if let Some(template) = template::Template::learn(text, role) {
                let layout = known.iter().position(|k| **k == template).map(|id| id as u32);
                let template = Arc::new(template);
                if layout.is_none() && offer.is_none() {
                    *offer = Some(template.clone());
                }
                self.last = self.learned.len();
                self.learned.push(Learned { template, layout });
            }
        }
    }
}

/// Appends `v`, a slice of `line`. Most values are short, and a copy of a fixed 32 bytes (then
/// cut back) compiles to two vector moves where a copy of `v.len()` bytes is a call to memcpy.
fn push_value(block: &mut Vec<u8>, line: &[u8], v: &str) {
    const W: usize = 32;
    let off = (v.as_ptr() as usize).wrapping_sub(line.as_ptr() as usize);
    if v.len() <= W {
        if let Some(Ok(window)) = line.get(off..off.saturating_add(W)).map(<&[u8; W]>::try_from) {
            let at = block.len();
            block.extend_from_slice(window);
            block.truncate(at + v.len());
            return;
        }
    }
    block.extend_from_slice(v.as_bytes());
}

/// Reads one row; an eligible row goes into the batch with its keys.
/// `text` is `line` where it is known to be UTF-8 already.
fn parse_anomali_row<'a>(
    line: &'a [u8],
    text: Option<&'a str>,
    now: NaiveDateTime,
    known: &Known,
    out: &mut BatchOut<'a>,
) -> Result<(), (RejectReason, String)> {
    if line.len() > MAX_ROW_BYTES {
        return Err((
            RejectReason::RowTooLong,
            format!("{} bytes, more than the {MAX_ROW_BYTES} a row may hold", line.len()),
        ));
    }
    // One UTF-8 check for the whole line (or its batch's) is faster than serde_json's check of each
    // string, and it also covers the members we skip, which are carried into the output as they are.
    let text = match text {
        Some(text) => text,
        None => crate::json::utf8(line).map_err(|e| (RejectReason::InvalidJson, format!("not UTF-8 text: {e}")))?,
    };
    // Rows a template reads are stored by it; the members are for rows the general scanner read.
    out.members.clear();
    let row = match out.templates.row(text).or_else(|| {
        AnomaliRow::scan(text, &mut out.members)
            .inspect(|_| out.templates.learn(text, &known.layouts, &mut out.batch.new_layout))
    }) {
        Some(row) => row,
        None => {
            out.members.clear();
            serde_json::from_str(text).map_err(|e| (RejectReason::InvalidJson, format!("invalid JSON: {e}")))?
        }
    };
    let kind = match &row.row_type {
        Some(Scalar::Str(t)) => Kind::from_row_type(t).ok_or_else(|| {
            (RejectReason::UnknownType, format!("unknown type {}: expected one of {ROW_TYPES}", quote(t)))
        })?,
        _ => return Err((RejectReason::UnknownType, format!("no string `type`: expected one of {ROW_TYPES}"))),
    };
    let (id_num, id) = parse_id(row.id.as_ref())?;
    let confidence = parse_confidence(row.confidence.as_ref())?;
    let expires = match &row.expiration_ts {
        // The reference's `if not s`: absent, null, "", 0 and false all mean "never expires".
        None | Some(Scalar::Null | Scalar::Bool(false) | Scalar::U64(0) | Scalar::I64(0)) => None,
        Some(Scalar::F64(f)) if *f == 0.0 => None,
        Some(Scalar::Str(s)) if s.is_empty() => None,
        Some(Scalar::Str(s)) => Some(parse_ts(s).ok_or_else(|| {
            (RejectReason::BadExpiration, format!("expiration_ts {} is not a \"YYYY-MM-DD HH:MM:SS\" time", quote(s)))
        })?),
        Some(_) => return Err((RejectReason::BadExpiration, "expiration_ts is not a string".into())),
    };
    let active = matches!(&row.status, Some(Scalar::Str(s)) if s == "active");
    let eligible = active && expires.is_none_or(|x| x > now);
    // `match` lists every key the row is reachable under; without it, `value` is the key.
    let candidates: SmallVec<[&Scalar; 4]> = match &row.match_keys {
        Some(v @ Values::Many(list)) if !list.is_empty() => v.iter().collect(),
        Some(Values::One(s @ Scalar::Str(t))) if !t.is_empty() => smallvec::smallvec![s],
        _ => row.value.iter().collect(),
    };
    let mut keys: SmallVec<[Key<'_>; 2]> = SmallVec::new();
    let mut first_bad = None;
    for c in candidates {
        match c {
            Scalar::Str(s) => match normalize(kind, s, true) {
                Ok(k) => keys.push(k),
                Err(why) => first_bad = first_bad.or_else(|| Some(format!("{} is {why}", quote(s)))),
            },
            _ => first_bad = first_bad.or_else(|| Some("a key that is not a string".to_owned())),
        }
    }
    if keys.is_empty() {
        let why = first_bad.unwrap_or_else(|| "no `match` or `value`".to_owned());
        return Err((RejectReason::NoValidKey, format!("no valid {kind} key: {why}")));
    }
    if !eligible {
        return Ok(());
    }
    let modified = match &row.modified_ts {
        Some(Scalar::Str(s)) => s.as_bytes(),
        _ => b"",
    };
    let batch = &mut out.batch;
    let (r, modified_in_row) = match out.templates.layout() {
        Some((t, layout)) => {
            let off = batch.block.len();
            let holes = &out.templates.holes;
            t.store(text, holes, &mut batch.block);
            // A string `modified_ts` is one of the holes just stored: the entry points at it.
            let modified_at = match t.role(ROLE_MODIFIED) {
                Some(template::RoleAt::Hole(k)) if t.is_string(k) => Some(t.stored_offset(holes, k)),
                _ => None,
            };
            (RowLoc { off: off as u32, len: (batch.block.len() - off) as u32, shape: LAYOUT | layout }, modified_at)
        }
        None => {
            let (r, new_shape) = place_row(line, &out.members, &known.shapes, &mut batch.block, &mut out.hint);
            if new_shape.is_some() {
                batch.new_shape = new_shape;
            }
            (r, None)
        }
    };
    // Elsewhere the `modified_ts` text follows the row; the id goes to the key block.
    let modified_off = match modified_in_row {
        Some(at) => at as u32,
        None => {
            batch.block.extend_from_slice(modified);
            r.len
        }
    };
    let id_off = batch.key_block.len() as u32;
    batch.key_block.extend_from_slice(id.as_bytes());
    let entry = batch.entries.len() as EntryId;
    batch.entries.push(Entry {
        at: (out.block_index << 32) | u64::from(r.off),
        row_len: r.len,
        shape: r.shape,
        id_off,
        id_len: id.len() as u32,
        modified_off,
        modified_len: modified.len() as u32,
        id_num,
        confidence,
    });
    for k in &keys {
        batch.keys.push(k, entry, &mut batch.key_block, out.block_index);
    }
    batch.eligible += 1;
    batch.earliest_expiry = earliest(batch.earliest_expiry, expires);
    Ok(())
}

/// Rows after the first that show which of its fields every row shares (see `first_layout`).
const LAYOUT_SAMPLE: usize = 256;

/// The layout of a table's first row (in `chunk`, its first chunk), where a template can serve it;
/// with the fields that the rows after it share, up to [`LAYOUT_SAMPLE`] of them, made fixed bytes.
fn first_layout(chunk: &[u8]) -> Option<template::Template> {
    let mut lines = chunk.split(|c| *c == b'\n').map(<[u8]>::trim_ascii).filter(|l| !l.is_empty());
    let text = crate::json::utf8(lines.next()?).ok()?;
    AnomaliRow::scan(text, &mut Vec::new())?;
    let sample = lines.take(LAYOUT_SAMPLE).map_while(|l| crate::json::utf8(l).ok());
    template::Template::learn_with_constants(text, role, sample)
}

/// An integer as Python's `int()` reads a string: white space around it, an optional sign, ASCII
/// digits with single `_` between them. `None` where it is not one, or does not fit i64.
fn py_int(s: &str) -> Option<i64> {
    // Nearly every id and confidence is plain digits that fit: read those without the general rules.
    if (1..=18).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_digit()) {
        return Some(s.bytes().fold(0i64, |n, c| n * 10 + i64::from(c - b'0')));
    }
    py_int_general(s)
}

fn py_int_general(s: &str) -> Option<i64> {
    let t = s.trim_matches(|c: char| c.is_whitespace());
    let (neg, digits) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let b = digits.as_bytes();
    if b.is_empty() || b[0] == b'_' || b[b.len() - 1] == b'_' || digits.contains("__") {
        return None;
    }
    let mut n: i64 = 0;
    for &c in b.iter().filter(|c| **c != b'_') {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(i64::from(c - b'0'))?;
    }
    Some(if neg { -n } else { n })
}

/// A row's `id`: its number for the winner rule and its text for output, as the reference takes them
/// (`int(id)` when two rows tie, `str(id)` in the output). An id `int()` cannot read still matches
/// (the reference only reads the number on a tie, where it then crashes); it ranks after every
/// numeric id, which keeps ties decided.
fn parse_id<'a>(id: Option<&Scalar<'a>>) -> Result<(i64, Cow<'a, str>), (RejectReason, String)> {
    match id {
        Some(Scalar::Str(s)) => Ok((py_int(s).unwrap_or(NON_NUMERIC_ID), s.clone())),
        Some(Scalar::U64(n)) => Ok((i64::try_from(*n).unwrap_or(NON_NUMERIC_ID), Cow::Owned(n.to_string()))),
        Some(Scalar::I64(n)) => Ok((*n, Cow::Owned(n.to_string()))),
        Some(Scalar::Bool(b)) => Ok((i64::from(*b), Cow::Borrowed(if *b { "True" } else { "False" }))),
        // JSON's -0 reads as a float; Python reads it as the integer 0.
        Some(Scalar::F64(f)) if *f == 0.0 => Ok((0, Cow::Borrowed("0"))),
        Some(Scalar::F64(f)) if f.is_finite() => Ok((py_trunc(*f), Cow::Owned(f.to_string()))),
        Some(other) => Err((RejectReason::BadId, format!("id {other:?} is neither a string nor a number"))),
        None => Err((RejectReason::BadId, "no `id`".into())),
    }
}

/// Where the winner rule puts an id that is not a number Python's `int()` reads (or beyond i64).
const NON_NUMERIC_ID: i64 = i64::MAX;

/// Python's `int(float)`: toward zero, saturating where i64 ends.
fn py_trunc(f: f64) -> i64 {
    // `as` saturates, and NaN cannot reach here (checked finite by the callers).
    f.trunc() as i64
}

/// A row's `confidence` as the reference takes it (`int(confidence)`, 0 when absent). ENRICHMENT.md
/// says 0 to 100, but a feed's 150 or -1 still competes there, so it competes here too.
fn parse_confidence(c: Option<&Scalar<'_>>) -> Result<i64, (RejectReason, String)> {
    let bad = |what: String| Err((RejectReason::BadConfidence, format!("confidence {what} is not an integer")));
    match c {
        None | Some(Scalar::Null) => Ok(0),
        Some(Scalar::U64(n)) => Ok(i64::try_from(*n).unwrap_or(i64::MAX)),
        Some(Scalar::I64(n)) => Ok(*n),
        Some(Scalar::F64(f)) if f.is_finite() => Ok(py_trunc(*f)),
        Some(Scalar::Bool(b)) => Ok(i64::from(*b)),
        Some(Scalar::Str(s)) => py_int(s).map_or_else(|| bad(quote(s)), Ok),
        Some(other) => bad(format!("{other:?}")),
    }
}

/// A timestamp as the reference reads it: `T` may stand for the space, trailing `Z`s are dropped,
/// and the first 19 characters must be `%Y-%m-%d %H:%M:%S` (fields after the year may have one digit).
pub fn parse_ts(s: &str) -> Option<NaiveDateTime> {
    match parse_ts_canonical(s.as_bytes()) {
        Some(t) => t,
        None => parse_ts_general(s),
    }
}

fn parse_ts_general(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim_end_matches('Z');
    let head: &str = match s.char_indices().nth(19) {
        Some((i, _)) => &s[..i],
        None => s,
    };
    // The reference turns every `T` into a space, and strptime reads a space as any run of white space.
    let (date, time) = head.split_once(|c: char| c == 'T' || c.is_whitespace())?;
    let time = time.trim_start_matches(|c: char| c == 'T' || c.is_whitespace());
    if time.contains('T') {
        return None;
    }
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

/// The form nearly every feed writes, `YYYY-MM-DD HH:MM:SS` and nothing more, read without the
/// general rules (which give the same answer for it): `None` where `b` is not in that form.
fn parse_ts_canonical(b: &[u8]) -> Option<Option<NaiveDateTime>> {
    let b: &[u8; 19] = b.try_into().ok()?;
    let digit = |i: usize| b[i].is_ascii_digit().then(|| u32::from(b[i] - b'0'));
    let two = |i: usize| Some(digit(i)? * 10 + digit(i + 1)?);
    if (b[4], b[7], b[10], b[13], b[16]) != (b'-', b'-', b' ', b':', b':') {
        return None;
    }
    let year = two(0)? * 100 + two(2)?;
    let (month, day, hour, minute, second) = (two(5)?, two(8)?, two(11)?, two(14)?, two(17)?);
    Some(
        NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)
            .and_then(|d| d.and_hms_opt(hour, minute, second)),
    )
}

/// The line a csv record starts on, from where the reader stood before it: the reader may not yet
/// have consumed the previous line's end (`\r\n`), and skips blank lines silently.
fn record_line(buf: &[u8], pos: &csv::Position) -> u64 {
    let mut line = pos.line();
    let mut i = usize::try_from(pos.byte()).unwrap_or(usize::MAX);
    while let Some(&c) = buf.get(i) {
        match c {
            b'\n' => line += 1,
            b'\r' => {}
            _ => break,
        }
        i += 1;
    }
    line
}

fn load_csv(
    spec: &TableSpec,
    buf: &[u8],
    mut clock: Clock,
) -> Result<(Index, LoadReport, Option<NaiveDateTime>), TableError> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(buf);
    let headers = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            return Err(TableError::Header { path: spec.path.clone(), problem: format!("unreadable csv header: {e}") })
        }
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
                problem: format!(
                    "no column named {name:?} for each row's type; set the table's `kind` or `kind_column`"
                ),
            })?)
        }
    };
    let (id_col, conf_col, status_col, exp_col, mod_col) =
        (col("id"), col("confidence"), col("status"), col("expiration_ts"), col("modified_ts"));
    let mut record = csv::StringRecord::new();
    loop {
        let line = record_line(buf, rdr.position());
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                report.reject(Rejection { line, reason: RejectReason::BadCsvRow, detail: e.to_string() });
                continue;
            }
        }
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let field = |c: Option<usize>| c.and_then(|c| record.get(c)).map(str::trim).filter(|s| !s.is_empty());
        let parsed = (|| -> Result<(Parsed, String), (RejectReason, String)> {
            let size = record.as_slice().len();
            if size > MAX_ROW_BYTES {
                return Err((
                    RejectReason::RowTooLong,
                    format!("{size} bytes, more than the {MAX_ROW_BYTES} a row may hold"),
                ));
            }
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
                (None, None) => {
                    return Err((RejectReason::UnknownType, format!("empty type: expected one of {ROW_TYPES}")))
                }
            };
            let (id_num, id) = match field(id_col) {
                Some(s) => parse_id(Some(&Scalar::Str(Cow::Borrowed(s))))?,
                None => (i64::try_from(line).unwrap_or(i64::MAX), Cow::Owned(line.to_string())),
            };
            let confidence = parse_confidence(field(conf_col).map(|s| Scalar::Str(Cow::Borrowed(s))).as_ref())?;
            let expires = match field(exp_col) {
                Some(s) => Some(parse_ts(s).ok_or_else(|| {
                    (
                        RejectReason::BadExpiration,
                        format!("expiration_ts {} is not a \"YYYY-MM-DD HH:MM:SS\" time", quote(s)),
                    )
                })?),
                None => None,
            };
            let active = field(status_col).is_none_or(|s| s == "active");
            let eligible = active && expires.is_none_or(|x| x > clock.now);
            let raw_key = record.get(key_col).unwrap_or("");
            let key = normalize(kind, raw_key, true).map_err(|why| {
                (RejectReason::NoValidKey, format!("no valid {kind} key: {} is {why}", quote(raw_key)))
            })?;
            let key = key.into_owned();
            let p = Parsed {
                keys: smallvec::smallvec![key],
                eligible,
                expires: expires.filter(|_| eligible),
                confidence,
                id_num,
            };
            Ok((p, id.into_owned()))
        })();
        match parsed {
            Ok((p, id)) => {
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
                    let modified = field(mod_col).unwrap_or("");
                    b.add_built(p, [obj.as_bytes(), id.as_bytes(), modified.as_bytes()], &mut clock);
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
    Ok((b.finish(), report, clock.earliest_expiry))
}

fn load_list(spec: &TableSpec, buf: &[u8]) -> Result<(Index, LoadReport, Option<NaiveDateTime>), TableError> {
    let kind = spec
        .kind
        .ok_or_else(|| TableError::Spec { table: spec.name.clone(), problem: "a list table needs `kind`".into() })?;
    let mut report = LoadReport::default();
    let mut b = IndexBuilder::default();
    let mut clock = Clock { now: NaiveDateTime::MIN, earliest_expiry: None };
    for (i, raw) in buf.split(|b| *b == b'\n').enumerate() {
        let line = i as u64 + 1;
        let text = match std::str::from_utf8(raw) {
            Ok(t) => t.trim(),
            Err(e) => {
                report.reject(Rejection {
                    line,
                    reason: RejectReason::NoValidKey,
                    detail: format!("not UTF-8 text: {e}"),
                });
                if let Some(err) = report.wrong_format(spec, false) {
                    return Err(err);
                }
                continue;
            }
        };
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        if text.len() > MAX_ROW_BYTES {
            report.reject(Rejection {
                line,
                reason: RejectReason::RowTooLong,
                detail: format!("{} bytes, more than the {MAX_ROW_BYTES} a row may hold", text.len()),
            });
            continue;
        }
        match normalize(kind, text, true) {
            Ok(key) => {
                report.accept(true);
                let mut obj = String::from("{\"value\":");
                crate::json::write_str_literal(&mut obj, text);
                obj.push('}');
                let key = key.into_owned();
                let p = Parsed {
                    keys: smallvec::smallvec![key],
                    eligible: true,
                    expires: None,
                    confidence: 0,
                    id_num: i64::try_from(line).unwrap_or(i64::MAX),
                };
                b.add_built(p, [obj.as_bytes(), line.to_string().as_bytes(), b""], &mut clock);
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
    Ok((b.finish(), report, None))
}

/// Checks that no two tables share a name: the name is their key under `p_enrichment`.
pub fn check_names(specs: &[TableSpec]) -> Result<(), TableError> {
    for (i, a) in specs.iter().enumerate() {
        if specs[..i].iter().any(|b| b.name == a.name) {
            return Err(TableError::Spec {
                table: a.name.clone(),
                problem: "two tables have this name; give each its own `name`".into(),
            });
        }
    }
    Ok(())
}

/// Loads every table, in order. The first failure stops: a table the configuration names must load.
pub fn load_all(specs: &[TableSpec], now: DateTime<Utc>) -> Result<Vec<Table>, TableError> {
    check_names(specs)?;
    specs.iter().map(|s| Table::load(s, now)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicator::{normalize, Kind};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").map(|t| t.with_timezone(&Utc)).unwrap()
    }

    fn spec(format: Format) -> TableSpec {
        TableSpec { format, ..TableSpec::anomali("t", "/fixtures/t") }
    }

    fn anomali(lines: &[&str]) -> Result<Table, TableError> {
        Table::from_bytes(&spec(Format::Anomali), lines.join("\n").into_bytes(), now())
    }

    /// The winning row's id for an event value of `kind`, or None.
    fn winner(t: &Table, kind: Kind, value: &str) -> Option<String> {
        let key = normalize(kind, value, false).ok()?;
        t.lookup(&key).map(|e| t.entry_id(e).to_owned())
    }

    fn row(id: u32, value: &str, kind: &str, confidence: u8, status: &str, expiration: &str) -> String {
        format!(
            r#"{{"id":"{id}","value":"{value}","match":["{value}"],"type":"{kind}","confidence":{confidence},"status":"{status}","modified_ts":"2025-01-01 00:00:00","expiration_ts":"{expiration}","threat_type":"c2"}}"#
        )
    }

    #[test]
    fn only_active_unexpired_rows_match() {
        let t = anomali(&[
            &row(1, "1.1.1.1", "ip", 50, "active", "2026-06-01 00:00:00"),
            &row(2, "2.2.2.2", "ip", 50, "inactive", "2026-06-01 00:00:00"),
            &row(3, "3.3.3.3", "ip", 50, "active", "2025-12-31 23:59:59"),
            &row(4, "4.4.4.4", "ip", 50, "active", "2026-01-01 00:00:00"),
            &row(5, "5.5.5.5", "ip", 50, "active", ""),
        ])
        .unwrap();
        assert_eq!(winner(&t, Kind::Ip, "1.1.1.1").as_deref(), Some("1"));
        assert_eq!(winner(&t, Kind::Ip, "2.2.2.2"), None, "inactive");
        assert_eq!(winner(&t, Kind::Ip, "3.3.3.3"), None, "expired though active");
        assert_eq!(winner(&t, Kind::Ip, "4.4.4.4"), None, "expiring exactly now is expired");
        assert_eq!(winner(&t, Kind::Ip, "5.5.5.5").as_deref(), Some("5"), "no expiration never expires");
        assert_eq!((t.report.rows, t.report.eligible, t.report.rejected_total()), (5, 2, 0));
        assert_eq!(t.valid_until.map(|v| v.to_rfc3339()), Some("2026-06-01T00:00:00+00:00".into()));
    }

    #[test]
    fn an_inactive_high_confidence_row_does_not_shadow_an_active_one() {
        let t = anomali(&[
            &row(1, "evil.com", "domain", 99, "inactive", ""),
            &row(2, "evil.com", "domain", 10, "active", ""),
        ])
        .unwrap();
        assert_eq!(winner(&t, Kind::Domain, "EVIL.com.").as_deref(), Some("2"));
    }

    #[test]
    fn ties_between_rows_of_one_file_go_to_the_newest_modified_then_the_lowest_id() {
        let r = |id: u32, modified: &str| {
            format!(
                r#"{{"id":"{id}","value":"1.2.3.4","type":"ip","confidence":50,"status":"active","modified_ts":"{modified}"}}"#
            )
        };
        let t = anomali(&[&r(5, "2025-01-01 00:00:00"), &r(9, "2025-03-01 00:00:00"), &r(7, "2025-02-01 00:00:00")])
            .unwrap();
        assert_eq!(winner(&t, Kind::Ip, "1.2.3.4").as_deref(), Some("9"));
        let t = anomali(&[&r(8, "2025-03-01 00:00:00"), &r(4, "2025-03-01 00:00:00"), &r(6, "2025-03-01 00:00:00")])
            .unwrap();
        assert_eq!(winner(&t, Kind::Ip, "1.2.3.4").as_deref(), Some("4"));
    }

    #[test]
    fn a_repeated_field_reads_as_its_last_value() {
        let t = anomali(&[
            r#"{"id":"1","value":"1.1.1.1","type":"ip","status":"inactive","status":"active"}"#,
            r#"{"id":"2","value":"2.2.2.2","type":"ip","status":"active","status":"inactive"}"#,
            r#"{"id":"3","value":"3.3.3.3","value":"4.4.4.4","type":"ip","status":"active","note":"\ud800"}"#,
            r#"{"id":"5","\u0076alue":"5.5.5.5","type":"ip","status":"active"}"#,
        ])
        .unwrap();
        assert_eq!(winner(&t, Kind::Ip, "1.1.1.1").as_deref(), Some("1"));
        assert_eq!(winner(&t, Kind::Ip, "2.2.2.2"), None);
        assert_eq!(winner(&t, Kind::Ip, "3.3.3.3"), None);
        assert_eq!(winner(&t, Kind::Ip, "4.4.4.4").as_deref(), Some("3"));
        assert_eq!(winner(&t, Kind::Ip, "5.5.5.5").as_deref(), Some("5"), "an escaped key means its text");
        assert_eq!(t.report.rejected_total(), 0);
        let e = t.lookup(&normalize(Kind::Ip, "4.4.4.4", false).unwrap()).unwrap();
        assert!(t.row_json(e).ends_with(r#""note":"\ud800"}"#), "carried verbatim: {}", t.row_json(e));
    }

    #[test]
    fn ids_and_confidences_read_as_the_reference_reads_them() {
        let r = |id: &str, conf: &str| {
            format!(r#"{{"id":{id},"value":"1.2.3.4","type":"ip","confidence":{conf},"status":"active"}}"#)
        };
        // Out-of-range confidences still compete, as they do in the reference, even beyond 32 bits.
        let t = anomali(&[&r("\"1\"", "100"), &r("\"2\"", "3000000000"), &r("\"3\"", "-1")]).unwrap();
        assert_eq!(winner(&t, Kind::Ip, "1.2.3.4").as_deref(), Some("2"));
        // Ids as Python's int() reads them on a tie: white space, signs, `_` between digits, floats
        // truncated, true as 1; the lowest wins and is printed as the table wrote it.
        let t =
            anomali(&[&r("\" 1_000 \"", "5"), &r("\"+999\"", "5"), &r("1001", "5"), &r("\"-3\"", "\" 5 \"")]).unwrap();
        assert_eq!(winner(&t, Kind::Ip, "1.2.3.4").as_deref(), Some("-3"));
        let t = anomali(&[&r("4.7", "5"), &r("\"5\"", "5")]).unwrap();
        assert_eq!(winner(&t, Kind::Ip, "1.2.3.4").as_deref(), Some("4.7"));
        let t = anomali(&[&r("true", "5"), &r("\"2\"", "5")]).unwrap();
        assert_eq!(winner(&t, Kind::Ip, "1.2.3.4").as_deref(), Some("True"));
        // An id int() cannot read still matches alone, and loses a tie to any numeric id.
        let t = anomali(&[&r("\"abc\"", "5")]).unwrap();
        assert_eq!(winner(&t, Kind::Ip, "1.2.3.4").as_deref(), Some("abc"));
        let t = anomali(&[&r("\"1__0\"", "5"), &r("\"99999\"", "5")]).unwrap();
        assert_eq!(winner(&t, Kind::Ip, "1.2.3.4").as_deref(), Some("99999"));
        // Only a missing id, or one that is a list or an object, is refused.
        for bad in [r#"{"value":"1.2.3.4","type":"ip","status":"active"}"#.to_owned(), r("[1]", "5"), r("{}", "5")] {
            let t = anomali(&[&bad, &r("\"7\"", "5")]).unwrap();
            assert_eq!(t.report.rejected.get(&RejectReason::BadId), Some(&1), "{bad}");
        }
        let t = anomali(&[&r("\"1\"", "true"), &r("\"2\"", "0.9")]).unwrap();
        assert_eq!(winner(&t, Kind::Ip, "1.2.3.4").as_deref(), Some("1"), "true is 1, 0.9 truncates to 0");
        let never = r#"{"id":"8","value":"8.8.8.8","type":"ip","status":"active","expiration_ts":0}"#;
        assert_eq!(winner(&anomali(&[never]).unwrap(), Kind::Ip, "8.8.8.8").as_deref(), Some("8"), "0 never expires");
    }

    #[test]
    fn compact_rows_come_back_byte_for_byte() {
        // Small chunks, so that shapes found in the first chunks serve most rows.
        let lines: Vec<String> = (0..3000)
            .map(|i| match i % 5 {
                0 => row(i + 1, &format!("10.2.{}.{}", i / 250, i % 250), "ip", 9, "active", ""),
                1 => format!(r#"{{"id":"{}","value":"10.2.{}.{}","type":"ip","status":"active","tags":[{{"a":"b,c"}},"]"],"n":-1.5e3}}"#, i + 1, i / 250, i % 250),
                2 => format!(r#"{{"id":"{}","value":"10.2.{}.{}","type":"ip","status":"active","s":"x\"y\\z \u00e9"}}"#, i + 1, i / 250, i % 250),
                3 => format!(r#"{{ "id":"{}","value":"10.2.{}.{}","type":"ip","status":"active"}}"#, i + 1, i / 250, i % 250),
                _ => format!(r#"{{"id":"{}","value":"10.2.{}.{}","type":"ip","status":"active","empty":{{}},"list":[]}}"#, i + 1, i / 250, i % 250),
            })
            .collect();
        let body = lines.join("\n").into_bytes();
        let size = body.len() as u64;
        let clock = Clock { now: now().naive_utc(), earliest_expiry: None };
        let (index, report, _) =
            load_anomali_chunked(&spec(Format::Anomali), std::io::Cursor::new(body), size, clock, 4096).unwrap();
        let t = Table { spec: spec(Format::Anomali), index: Arc::new(index), report, valid_until: None };
        let compact = t.index.entries.iter().filter(|(_, e)| e.shape != VERBATIM).count();
        assert!(compact > 2000, "only {compact} of 3000 rows stored compactly");
        // Rows no template reads (escapes, a layout the batch has not learned yet) go to the
        // general scanner and are stored by shape.
        assert!(t.index.entries.shapes.len() >= 2, "{} shapes", t.index.entries.shapes.len());
        // Both compact forms are in use: a layout's holes (rows a template read) and a shape's
        // values (rows with escapes, which only the general scanner reads).
        let by_layout = t.index.entries.iter().filter(|(_, e)| e.layout().is_some()).count();
        let by_shape = t.index.entries.iter().filter(|(_, e)| e.shape & LAYOUT == 0).count();
        assert!(by_layout > 1500 && by_shape > 300, "{by_layout} rows by layout, {by_shape} by shape");
        for (i, line) in lines.iter().enumerate() {
            let ip = format!("10.2.{}.{}", i / 250, i % 250);
            let e = t.lookup(&normalize(Kind::Ip, &ip, false).unwrap()).unwrap();
            assert_eq!(t.row_json(e), line.as_str(), "row {i}");
            assert_eq!(t.entry_id(e), (i + 1).to_string());
        }
    }

    #[test]
    fn a_first_chunk_dense_in_keys_does_not_size_the_tables_for_the_whole_file() {
        // 4 KiB chunks: the first holds short rows with a domain each, the other 12 MiB long rows
        // that have expired (no keys). Sized by the first chunk alone, the text tables would take
        // 3,000 times its 60-odd keys (about 12 MiB of slots); they stay within twice the budget,
        // an eighth of the file.
        let mut text: String = (0..100)
            .map(|n| format!(r#"{{"id":"{n}","value":"d{n}.example","type":"domain","status":"active"}}"#) + "\n")
            .collect();
        let pad = "x".repeat(4000);
        for n in 0..3100 {
            text.push_str(&format!(
                r#"{{"id":"{}","value":"e{n}.example","type":"domain","status":"active","expiration_ts":"2020-01-01 00:00:00","pad":"{pad}"}}"#,
                1000 + n
            ));
            text.push('\n');
        }
        let size = text.len();
        let clock = Clock { now: now().naive_utc(), earliest_expiry: None };
        let (index, report, _) =
            load_anomali_chunked(&spec(Format::Anomali), std::io::Cursor::new(text), size as u64, clock, 4096).unwrap();
        assert_eq!(report.eligible, 100);
        assert!(index.slot_bytes() <= 2 * size / 8, "{} bytes of slots for 100 keys", index.slot_bytes());
        let t = Table { spec: spec(Format::Anomali), index: Arc::new(index), report, valid_until: None };
        for n in 0..100 {
            assert!(t.lookup(&normalize(Kind::Domain, &format!("d{n}.example"), false).unwrap()).is_some(), "d{n}");
        }
    }

    #[test]
    fn rejected_rows_in_later_chunks_are_reported_at_their_own_lines() {
        // Blank lines count as lines; bad rows sit in the first, a middle and the last chunks.
        let bad = [7, 1_204, 2_999];
        let text: String = (1..=3000)
            .map(|n| match n {
                n if bad.contains(&n) => "{not json\n".to_owned(),
                n if n % 10 == 0 => "\n".to_owned(),
                n => row(n, &format!("10.3.{}.{}", n / 250, n % 250), "ip", 9, "active", "") + "\n",
            })
            .collect();
        let size = text.len() as u64;
        let clock = Clock { now: now().naive_utc(), earliest_expiry: None };
        let (_, report, _) =
            load_anomali_chunked(&spec(Format::Anomali), std::io::Cursor::new(text), size, clock, 4096).unwrap();
        assert!(size > 40 * 4096, "many chunks");
        assert_eq!(report.examples.iter().map(|e| e.line).collect::<Vec<_>>(), bad.map(u64::from));
        assert_eq!(report.rows, 2700, "blank lines are not rows; bad ones are");
    }

    #[test]
    fn the_first_rows_layout_serves_a_table_of_one_chunk() {
        // A table smaller than a chunk: its rows are stored by the first row's layout, not whole.
        let lines: Vec<String> =
            (0..1000).map(|i| row(i + 1, &format!("10.3.{}.{}", i / 250, i % 250), "ip", 9, "active", "")).collect();
        let t = anomali(&lines.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        let by_layout = t.index.entries.iter().filter(|(_, e)| e.layout().is_some()).count();
        assert_eq!(by_layout, 1000);
        for (i, line) in lines.iter().enumerate().step_by(97) {
            let e = t.lookup(&normalize(Kind::Ip, &format!("10.3.{}.{}", i / 250, i % 250), false).unwrap()).unwrap();
            assert_eq!(t.row_json(e), line.as_str());
        }
    }

    #[test]
    fn fields_the_first_rows_share_are_not_stored_per_row_and_rows_that_differ_still_load() {
        // The first 2,000 rows share `feed` and `tlp`; then `feed` changes. Values are all of one
        // width, so that rows stored alike take the same bytes.
        let ip = |i: usize| format!("10.{}.{}.{}", 100 + i / 10_000, 100 + i / 100 % 100, 100 + i % 100);
        let line = |i: usize| {
            let feed = if i < 2000 { "F1" } else { "F2" };
            format!(
                r#"{{"id":"{}","value":"{}","type":"ip","status":"active","feed":"{feed}","tlp":"white"}}"#,
                100_000 + i,
                ip(i)
            )
        };
        let lines: Vec<String> = (0..4000).map(line).collect();
        let body = lines.join("\n").into_bytes();
        let size = body.len() as u64;
        let clock = Clock { now: now().naive_utc(), earliest_expiry: None };
        let (index, report, _) =
            load_anomali_chunked(&spec(Format::Anomali), std::io::Cursor::new(body), size, clock, 16 << 10).unwrap();
        assert_eq!(report.eligible, 4000);
        let t = Table { spec: spec(Format::Anomali), index: Arc::new(index), report, valid_until: None };
        let stored = |i: usize| {
            let e = t.lookup(&normalize(Kind::Ip, &ip(i), false).unwrap()).unwrap();
            assert_eq!(t.row_json(e), lines[i].as_str(), "row {i}");
            let e = t.index.entry(e);
            e.layout().map(|_| e.row().len)
        };
        // The rows that share both keep neither; the others keep both (each value and its `"`).
        // A batch's first row that differs is read by the general scanner (its layout is learned
        // from it) and stored by its shape.
        let (shared, other) = (stored(0), stored(3999));
        assert_eq!(other, shared.map(|n| n + ("F2".len() + 1) as u32 + ("white".len() + 1) as u32));
        let mut by_shape = 0;
        for i in 0..4000 {
            match stored(i) {
                n if i < 2000 => assert_eq!(n, shared, "row {i}"),
                None => by_shape += 1,
                n => assert_eq!(n, other, "row {i}"),
            }
        }
        assert!(by_shape < 40, "{by_shape} rows stored by shape");
    }

    #[test]
    fn rows_come_back_byte_for_byte_however_they_are_stored() {
        // Compact rows (one shape), rows with white space, escapes or another shape (verbatim).
        let mut lines: Vec<String> =
            (0..5000).map(|i| row(i + 1, &format!("10.1.{}.{}", i / 250, i % 250), "ip", 9, "active", "")).collect();
        lines.push(r#"{"id":"90001", "value":"9.9.9.1","type":"ip","status":"active"}"#.into());
        lines.push(
            r#"{"id":"90002","value":"9.9.9.2","type":"ip","status":"active","note":"a \"quoted\" \u00e9"}"#.into(),
        );
        lines.push(r#"{"value":"9.9.9.3","id":"90003","type":"ip","status":"active","x":[1,{"y":null}]}"#.into());
        let t = anomali(&lines.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        for (i, line) in lines.iter().enumerate().filter(|(i, _)| i % 499 == 0 || *i >= 5000) {
            let ip = if i < 5000 { format!("10.1.{}.{}", i / 250, i % 250) } else { format!("9.9.9.{}", i - 4999) };
            let e = t.lookup(&normalize(Kind::Ip, &ip, false).unwrap()).unwrap();
            assert_eq!(t.row_json(e), line.as_str(), "row {i}");
        }
    }

    #[test]
    fn hashes_in_upper_case_match_and_md5_rows_may_hold_any_length() {
        let sha256 = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        let t = anomali(&[&row(7, sha256, "md5", 50, "active", "")]).unwrap();
        assert_eq!(winner(&t, Kind::Hash, &sha256.to_lowercase()).as_deref(), Some("7"));
        assert_eq!(winner(&t, Kind::Hash, sha256).as_deref(), Some("7"));
    }

    #[test]
    fn every_key_in_match_reaches_the_row() {
        let line =
            r#"{"id":"9","value":"a.com","match":["a.com","B.com."],"type":"domain","confidence":5,"status":"active"}"#;
        let t = anomali(&[line]).unwrap();
        assert_eq!(winner(&t, Kind::Domain, "a.com").as_deref(), Some("9"));
        assert_eq!(winner(&t, Kind::Domain, "b.com").as_deref(), Some("9"));
        assert_eq!(t.row_json(t.lookup(&normalize(Kind::Domain, "a.com", false).unwrap()).unwrap()), line);
    }

    #[test]
    fn subdomain_matching_is_per_table_and_off_by_default() {
        let lines =
            [row(1, "evil.com", "domain", 20, "active", ""), row(2, "www.evil.com", "domain", 10, "active", "")];
        let plain = Table::from_bytes(&spec(Format::Anomali), lines.join("\n").into_bytes(), now()).unwrap();
        assert_eq!(winner(&plain, Kind::Domain, "a.b.evil.com"), None);
        assert_eq!(winner(&plain, Kind::Domain, "www.evil.com").as_deref(), Some("2"));
        let sub = TableSpec { match_subdomains: true, ..spec(Format::Anomali) };
        let sub = Table::from_bytes(&sub, lines.join("\n").into_bytes(), now()).unwrap();
        assert_eq!(winner(&sub, Kind::Domain, "a.b.evil.com").as_deref(), Some("1"));
        // The parent wins on confidence even where the exact name has a row too.
        assert_eq!(winner(&sub, Kind::Domain, "www.evil.com").as_deref(), Some("1"));
        assert_eq!(winner(&sub, Kind::Domain, "notevil.com"), None);
    }

    #[test]
    fn bad_rows_are_rejected_by_reason_with_their_line_and_the_load_goes_on() {
        let t = anomali(&[
            &row(1, "1.1.1.1", "ip", 50, "active", ""),
            "{not json",
            &row(2, "x", "asn", 50, "active", ""),
            &row(3, "999.1.1.1", "ip", 50, "active", ""),
            "",
            &row(4, "4.4.4.4", "ip", 50, "active", "next tuesday"),
            r#"{"value":"5.5.5.5","type":"ip","status":"active"}"#,
            r#"{"id":"6","value":"6.6.6.6","type":"ip","status":"active","confidence":"high"}"#,
            &row(7, "7.7.7.7", "ip", 50, "active", ""),
        ])
        .unwrap();
        let by = |r| t.report.rejected.get(&r).copied().unwrap_or(0);
        assert_eq!(by(RejectReason::InvalidJson), 1);
        assert_eq!(by(RejectReason::UnknownType), 1);
        assert_eq!(by(RejectReason::NoValidKey), 1);
        assert_eq!(by(RejectReason::BadExpiration), 1);
        assert_eq!(by(RejectReason::BadId), 1);
        assert_eq!(by(RejectReason::BadConfidence), 1);
        assert_eq!((t.report.rows, t.report.eligible), (8, 2), "the blank line is not a row");
        let lines: Vec<u64> = t.report.examples.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 6, 7]);
        assert!(t.report.examples[1].detail.contains("\"asn\""), "{:?}", t.report.examples[1]);
        let summary = t.report.summary(&t.spec);
        assert!(summary.contains("/fixtures/t:2: invalid_json"), "{summary}");
        assert_eq!(winner(&t, Kind::Ip, "7.7.7.7").as_deref(), Some("7"));
    }

    #[test]
    fn a_line_that_is_not_utf8_is_rejected_alone_and_its_batch_loads() {
        // Rows are checked as UTF-8 a batch at a time; a batch holding one bad line is checked line by
        // line, so that only that line is rejected, with its number.
        let mut file = Vec::new();
        for id in 1..=20u32 {
            let line = row(id, &format!("10.0.0.{id}"), "ip", 50, "active", "").replace("c2", "caf\\u00e9 \u{e9}");
            let mut line = line.into_bytes();
            if id == 7 {
                let at = line.windows(3).position(|w| w == b"caf").unwrap();
                line[at] = 0xff;
            }
            file.extend_from_slice(&line);
            file.push(b'\n');
        }
        let t = Table::from_bytes(&spec(Format::Anomali), file, now()).unwrap();
        assert_eq!((t.report.rows, t.report.eligible, t.report.rejected_total()), (20, 19, 1));
        assert_eq!(t.report.examples[0].line, 7);
        assert!(t.report.examples[0].detail.contains("not UTF-8"), "{:?}", t.report.examples[0]);
        let e = t.lookup(&normalize(Kind::Ip, "10.0.0.8", false).unwrap()).unwrap();
        assert!(t.row_json(e).contains("caf\\u00e9 \u{e9}"), "{}", t.row_json(e));
        assert!(winner(&t, Kind::Ip, "10.0.0.7").is_none());
    }

    #[test]
    fn a_file_that_is_not_the_declared_format_is_an_error_naming_file_and_line() {
        let csv = "value,type\n1.2.3.4,ip\n".repeat(80);
        let err = Table::from_bytes(&spec(Format::Anomali), csv.into_bytes(), now()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, TableError::WrongFormat { line: 1, .. }), "{msg}");
        assert!(msg.starts_with("/fixtures/t:1: not a anomali") && msg.contains("format"), "{msg}");
        let binary: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
        assert!(matches!(
            Table::from_bytes(&spec(Format::Anomali), binary, now()),
            Err(TableError::WrongFormat { .. })
        ));
        // One good row among the first hundred is enough: the file is the right format with bad rows.
        let mut mostly_bad = vec!["{bad".to_owned(); 150];
        mostly_bad[120] = row(1, "1.1.1.1", "ip", 1, "active", "");
        assert!(matches!(
            anomali(&mostly_bad.iter().map(String::as_str).collect::<Vec<_>>()),
            Err(TableError::WrongFormat { .. })
        ));
        mostly_bad[50] = row(2, "2.2.2.2", "ip", 1, "active", "");
        assert!(anomali(&mostly_bad.iter().map(String::as_str).collect::<Vec<_>>()).is_ok());
    }

    #[test]
    fn empty_files_and_byte_order_marks() {
        let t = Table::from_bytes(&spec(Format::Anomali), Vec::new(), now()).unwrap();
        assert_eq!(t.report.rows, 0);
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend_from_slice(row(1, "1.1.1.1", "ip", 1, "active", "").as_bytes());
        let t = Table::from_bytes(&spec(Format::Anomali), bom, now()).unwrap();
        assert_eq!(winner(&t, Kind::Ip, "1.1.1.1").as_deref(), Some("1"));
    }

    #[test]
    fn rows_across_chunk_boundaries_and_a_row_longer_than_a_chunk() {
        // 20,000 rows straddle the reader's chunk boundaries; one row is longer than a chunk.
        let pad = "x".repeat(CHUNK + 10);
        let big =
            format!(r#"{{"id":"1","value":"9.9.9.9","type":"ip","status":"active","confidence":1,"pad":"{pad}"}}"#);
        let mut lines: Vec<String> =
            (0..20_000).map(|i| row(i + 10, &format!("10.0.{}.{}", i / 256, i % 256), "ip", 1, "active", "")).collect();
        lines.insert(7_000, big.clone());
        let t = anomali(&lines.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        assert_eq!((t.report.rows, t.report.rejected_total()), (20_001, 0));
        let e = t.lookup(&normalize(Kind::Ip, "9.9.9.9", false).unwrap()).unwrap();
        assert_eq!(t.row_json(e), big.as_str());
        assert_eq!(winner(&t, Kind::Ip, "10.0.78.31").as_deref(), Some(&*(78 * 256 + 31 + 10).to_string()));
        assert_eq!(winner(&t, Kind::Ip, "10.0.27.87").as_deref(), Some(&*(27 * 256 + 87 + 10).to_string()));
    }

    #[test]
    fn keys_met_in_many_batches_and_chunks_keep_the_winner_rule() {
        // 30,000 rows over 40 keys of each of three kinds, parsed in many batches over several
        // chunks and inserted shard by shard on every core. Confidences, `modified_ts` and ids
        // repeat, so exact ties happen: the row met first in the file must keep them.
        let keys: Vec<(&str, String)> = (0..40)
            .flat_map(|k| {
                [
                    ("ip", format!("10.{k}.0.1")),
                    ("domain", format!("d{k}.example")),
                    ("ipv6", format!("2001:db8::{k:x}")),
                ]
            })
            .collect();
        let mut lines = Vec::new();
        let mut best: std::collections::HashMap<usize, (i64, String, i64, usize)> = Default::default();
        for i in 0..30_000usize {
            // Each key's (confidence, id, modified) repeats every 2,880 rows: in another batch of
            // the same chunk, as often as not.
            let k = i % keys.len();
            let (kind, value) = &keys[k];
            let (confidence, id) = ((i / 120 % 3) as i64, (i / 360 % 4) as i64);
            let modified = format!("2025-01-0{} 00:00:00", 1 + i / 1440 % 2);
            let status = if i % 11 == 0 { "inactive" } else { "active" };
            lines.push(format!(
                r#"{{"id":"{id}","value":"{value}","type":"{kind}","confidence":{confidence},"status":"{status}","modified_ts":"{modified}","n":{i},"pad":"{}"}}"#,
                "p".repeat(i % 150)
            ));
            if status != "active" {
                continue;
            }
            let beats = |b: &(i64, String, i64, usize)| {
                (confidence, &modified) > (b.0, &b.1) || (confidence == b.0 && modified == b.1 && id < b.2)
            };
            if best.get(&k).is_none_or(beats) {
                best.insert(k, (confidence, modified, id, i));
            }
        }
        let t = anomali(&lines.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        assert!(t.index.entries.rows.len() > 10, "the rows were read in many batches");
        for (k, (kind, value)) in keys.iter().enumerate() {
            let kind = Kind::from_row_type(kind).unwrap();
            let e = t.lookup(&normalize(kind, value, false).unwrap()).unwrap();
            let row: serde_json::Value = serde_json::from_str(&t.row_json(e)).unwrap();
            assert_eq!(row["n"].as_u64(), Some(best[&k].3 as u64), "winner for {value}");
        }
    }

    #[test]
    fn a_batch_absorbed_at_once_reports_as_its_rows_taken_one_by_one() {
        let rejection = |line: u64| Rejection { line, reason: RejectReason::BadId, detail: format!("row {line}") };
        // Sequences of accepted (eligible or not) and rejected rows, cut into batches of many sizes:
        // the counts, the first examples and the format probe must not depend on the cut.
        let mut state = 12345u64;
        for case in 0..200 {
            let n = (case * 7) % 260;
            let rows: Vec<u8> = (0..n)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let fail_rate = if case % 3 == 0 { 1 } else { 4 };
                    if (state >> 33) % 5 < fail_rate {
                        2
                    } else {
                        ((state >> 40) % 2) as u8
                    }
                })
                .collect();
            let mut one_by_one = LoadReport::default();
            for (i, r) in rows.iter().enumerate() {
                match r {
                    2 => one_by_one.reject(rejection(i as u64 + 1)),
                    r => one_by_one.accept(*r == 1),
                }
            }
            for size in [1, 3, 64, 100, 101, 2048] {
                let mut batched = LoadReport::default();
                for (b, cut) in rows.chunks(size).enumerate() {
                    let first = (b * size) as u64;
                    let rejections = (0..cut.len() as u64)
                        .filter(|&j| cut[j as usize] == 2)
                        .map(|j| (j, rejection(first + j + 1)))
                        .collect();
                    let eligible = cut.iter().filter(|r| **r == 1).count() as u64;
                    batched.absorb(cut.len() as u64, eligible, rejections);
                }
                assert_eq!(format!("{batched:?}"), format!("{one_by_one:?}"), "case {case}, batches of {size}");
                let spec = spec(Format::Anomali);
                assert_eq!(
                    batched.wrong_format(&spec, false).map(|e| e.to_string()),
                    one_by_one.wrong_format(&spec, false).map(|e| e.to_string())
                );
            }
        }
    }

    #[test]
    fn a_row_longer_than_the_cap_is_rejected_with_its_line() {
        let list = TableSpec { kind: Some(Kind::Url), ..spec(Format::List) };
        let long = format!("https://x/{}", "a".repeat(MAX_ROW_BYTES));
        let t = Table::from_bytes(&list, format!("https://ok/\n{long}\nhttps://ok2/\n").into_bytes(), now()).unwrap();
        assert_eq!(t.report.rejected.get(&RejectReason::RowTooLong), Some(&1));
        assert_eq!((t.report.examples[0].line, t.report.eligible), (2, 2));
        let mut anomali_row = row(1, "1.1.1.1", "ip", 1, "active", "");
        anomali_row.insert_str(1, &format!(r#""pad":"{}","#, "y".repeat(MAX_ROW_BYTES)));
        let t = anomali(&[&anomali_row, &row(2, "2.2.2.2", "ip", 1, "active", "")]).unwrap();
        assert_eq!(t.report.rejected.get(&RejectReason::RowTooLong), Some(&1));
        assert_eq!(winner(&t, Kind::Ip, "2.2.2.2").as_deref(), Some("2"));
    }

    #[test]
    fn csv_tables_take_the_key_column_and_a_kind_per_row_or_per_table() {
        let body = "indicator,type,confidence,note\nEvil.COM,domain,80,\"a, b\"\n1.2.3.4,ip,20,\n5.6.7.8,asn,1,\n";
        let spec_kinds = TableSpec { key: Some("indicator".into()), ..spec(Format::Csv) };
        let t = Table::from_bytes(&spec_kinds, body.as_bytes().to_vec(), now()).unwrap();
        assert_eq!(winner(&t, Kind::Domain, "evil.com").as_deref(), Some("2"), "id is the line number");
        assert_eq!(winner(&t, Kind::Ip, "1.2.3.4").as_deref(), Some("3"));
        assert_eq!(t.report.rejected.get(&RejectReason::UnknownType), Some(&1));
        let e = t.lookup(&normalize(Kind::Domain, "evil.com", false).unwrap()).unwrap();
        assert_eq!(t.row_json(e), r#"{"indicator":"Evil.COM","type":"domain","confidence":"80","note":"a, b"}"#);

        let one_kind = TableSpec { kind: Some(Kind::Ip), key: Some("ip".into()), ..spec(Format::Csv) };
        let t =
            Table::from_bytes(&one_kind, b"ip,id,status\n10.0.0.0/8,77,active\n11.0.0.1,78,inactive\n".to_vec(), now())
                .unwrap();
        assert_eq!(winner(&t, Kind::Ip, "10.200.0.1").as_deref(), Some("77"));
        assert_eq!(winner(&t, Kind::Ip, "11.0.0.1"), None);

        let err = Table::from_bytes(&spec(Format::Csv), b"a,b\n1,2\n".to_vec(), now()).unwrap_err();
        assert!(err.to_string().contains("no column named \"value\""), "{err}");
    }

    #[test]
    fn csv_line_numbers_hold_with_crlf_and_blank_lines() {
        let one = TableSpec { kind: Some(Kind::Ip), ..spec(Format::Csv) };
        let body = b"value,note\r\n1.1.1.1,x\r\n\r\n\r\n2.2.2.2,x\r\nnope,x\r\n3.3.3.3,\"a\r\nb\"\r\n4.4.4.4,x\r\n";
        let t = Table::from_bytes(&one, body.to_vec(), now()).unwrap();
        assert_eq!(winner(&t, Kind::Ip, "1.1.1.1").as_deref(), Some("2"));
        assert_eq!(winner(&t, Kind::Ip, "2.2.2.2").as_deref(), Some("5"));
        assert_eq!(t.report.examples.iter().map(|e| e.line).collect::<Vec<_>>(), vec![6]);
        // A quoted field spanning lines: the row starts on line 7, the next on line 9.
        assert_eq!(winner(&t, Kind::Ip, "3.3.3.3").as_deref(), Some("7"));
        assert_eq!(winner(&t, Kind::Ip, "4.4.4.4").as_deref(), Some("9"));
        let lf = Table::from_bytes(&one, b"value\n\n1.1.1.1\n1.1.1\n".to_vec(), now()).unwrap();
        assert_eq!(winner(&lf, Kind::Ip, "1.1.1.1").as_deref(), Some("3"));
        assert_eq!(lf.report.examples[0].line, 4);
    }

    #[test]
    fn list_tables_skip_comments_and_blank_lines() {
        let list = TableSpec { kind: Some(Kind::Ip), ..spec(Format::List) };
        let t =
            Table::from_bytes(&list, b"# tor exits\n\n1.2.3.4\n  5.6.7.8  \nnot-an-ip\n192.0.2.9/24\n".to_vec(), now())
                .unwrap();
        assert_eq!((t.report.rows, t.report.eligible, t.report.rejected_total()), (4, 3, 1));
        assert_eq!(winner(&t, Kind::Ip, "1.2.3.4").as_deref(), Some("3"));
        assert_eq!(winner(&t, Kind::Ip, "192.0.2.200").as_deref(), Some("6"));
        assert_eq!(t.report.examples[0].line, 5);
        assert!(TableSpec { kind: None, ..list }.validate().is_err(), "a list needs a kind");
    }

    #[test]
    fn timestamps_read_as_the_reference_reads_them() {
        let t = |s| parse_ts(s).map(|d| d.to_string());
        assert_eq!(t("2026-01-02 03:04:05").as_deref(), Some("2026-01-02 03:04:05"));
        assert_eq!(t("2026-01-02T03:04:05Z").as_deref(), Some("2026-01-02 03:04:05"));
        assert_eq!(t("2026-01-02T03:04:05.123456Z").as_deref(), Some("2026-01-02 03:04:05"));
        assert_eq!(t("2026-1-2 3:4:5").as_deref(), Some("2026-01-02 03:04:05"));
        // Python cuts at 19 characters before strptime, which reads a run of spaces as one.
        assert_eq!(t("2026-01-02  03:04:05").as_deref(), Some("2026-01-02 03:04:00"));
        assert_eq!(t("2026-02-30 00:00:00"), None);
        assert_eq!(t("tomorrow"), None);
    }

    #[test]
    fn the_fast_readers_agree_with_the_general_rules() {
        let mut next = crate::json::scan::test_rng(7);
        let alphabet = b"0123456789-: TZx";
        for round in 0..200_000 {
            // Mostly well-formed times with one byte changed, so both paths see near misses.
            let mut b = *b"2026-05-11 13:45:59";
            for _ in 0..round % 3 {
                b[next(19)] = alphabet[next(alphabet.len())];
            }
            let s = std::str::from_utf8(&b).unwrap();
            if let Some(fast) = parse_ts_canonical(&b) {
                assert_eq!(fast, parse_ts_general(s), "{s}");
            }
        }
        assert!(parse_ts_canonical(b"2026-05-11T13:45:59").is_none(), "the T form takes the general path");
        for s in [
            "0",
            "007",
            "123456789012345678",
            "1234567890123456789",
            "9223372036854775807",
            "-5",
            " 42",
            "1_000",
            "1__0",
            "x",
        ] {
            assert_eq!(py_int(s), py_int_general(s), "{s}");
        }
    }
}
