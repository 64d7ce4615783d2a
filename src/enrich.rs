//! Enrichment: an alert's events against the lookup tables, as Panther shapes it.
//!
//! [`enrich`] is pure: no I/O, no clock, no async. It takes parsed events, loaded tables and the
//! selectors, and returns every match (the winning row per table, selector and value) plus every value
//! it skipped and why. It never fails: a value that is not valid for its kind is skipped, an event
//! that is not a JSON object is skipped, and the rest of the alert is still enriched.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::indicator::{normalize, Invalid, Key, Kind};
use crate::json::{write_str_literal, Object, Scalar, Values};
use crate::tables::{EntryId, Table};

/// The `p_any_*` fields Panther fills for every log type: the default selectors.
pub const DEFAULT_SELECTORS: [(&str, Kind); 6] = [
    ("p_any_ip_addresses", Kind::Ip),
    ("p_any_domain_names", Kind::Domain),
    ("p_any_emails", Kind::Email),
    ("p_any_md5_hashes", Kind::Hash),
    ("p_any_sha1_hashes", Kind::Hash),
    ("p_any_sha256_hashes", Kind::Hash),
];

/// An event field whose values are looked up as indicators of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// The dotted path as configured; it names the selector under `p_enrichment.<table>`.
    pub field: String,
    path: Vec<String>,
    pub kind: Kind,
    /// Only events of this log type; `None` for every log type.
    pub log_type: Option<String>,
}

impl Selector {
    /// A selector for `log_type` (or every log type) reading the dotted `path` of object keys.
    pub fn new(log_type: Option<&str>, path: &str, kind: Kind) -> Result<Selector, String> {
        let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
        if parts.iter().any(String::is_empty) {
            return Err(format!("selector path {path:?} has an empty segment; write it as dotted keys, e.g. \"userIdentity.sourceIp\""));
        }
        Ok(Selector { field: path.to_owned(), path: parts, kind, log_type: log_type.map(str::to_owned) })
    }
}

/// The selectors in force: the defaults for every log type, then the configured ones.
#[derive(Debug, Clone)]
pub struct Selectors {
    list: Vec<Selector>,
}

impl Default for Selectors {
    fn default() -> Self {
        Selectors::new(Vec::new())
    }
}

impl Selectors {
    pub fn new(custom: Vec<Selector>) -> Selectors {
        let mut list: Vec<Selector> = DEFAULT_SELECTORS
            .iter()
            .map(|(f, k)| Selector { field: (*f).to_owned(), path: vec![(*f).to_owned()], kind: *k, log_type: None })
            .collect();
        for s in custom {
            if !list.contains(&s) {
                list.push(s);
            }
        }
        Selectors { list }
    }

    pub fn get(&self, i: usize) -> &Selector {
        &self.list[i]
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn applying_to<'s>(&'s self, log_type: Option<&'s str>) -> impl Iterator<Item = (usize, &'s Selector)> + 's {
        self.list
            .iter()
            .enumerate()
            .filter(move |(_, s)| s.log_type.is_none() || s.log_type.as_deref() == log_type)
    }
}

/// One event of an alert, read one level deep; members are parsed further only when a selector asks.
#[derive(Debug)]
pub struct Event<'a> {
    obj: Option<Object<'a>>,
}

impl<'a> Event<'a> {
    /// Reads an event from its JSON text. Anything but an object is an event with nothing to match,
    /// reported as skipped by `enrich`.
    pub fn parse(json: &'a str) -> Result<Event<'a>, serde_json::Error> {
        serde_json::from_str(json)
    }

    fn log_type(&self) -> Option<Cow<'a, str>> {
        let raw = self.obj.as_ref()?.get("p_log_type")?;
        match serde_json::from_str::<Scalar<'a>>(raw.get()) {
            Ok(Scalar::Str(s)) => Some(s),
            _ => None,
        }
    }

    fn get_path(&self, path: &[String]) -> Option<&'a RawValue> {
        let (first, rest) = path.split_first()?;
        let mut cur = self.obj.as_ref()?.get(first)?;
        for key in rest {
            let inner: Object<'a> = serde_json::from_str(cur.get()).ok()?;
            cur = inner.get(key)?;
        }
        Some(cur)
    }
}

struct EventVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for EventVisitor<'a> {
    type Value = Event<'a>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(12));
        while let Some(k) = map.next_key::<Cow<'a, str>>()? {
            let v: &'a RawValue = map.next_value()?;
            members.push((k, v));
        }
        Ok(Event { obj: Some(Object { members }) })
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Event { obj: None })
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Event { obj: None })
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Event { obj: None })
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Event { obj: None })
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Event { obj: None })
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Event { obj: None })
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Event { obj: None })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Event<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EventVisitor(std::marker::PhantomData))
    }
}

/// A winning row for one value of one selector in one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub event: usize,
    pub selector: usize,
    pub table: usize,
    /// The normalized value that matched (what `p_match` holds).
    pub value: String,
    pub entry: EntryId,
    /// Whether the selector held a list (then `p_enrichment` holds a list of rows).
    pub list: bool,
}

/// Why a value was not looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    Invalid(Invalid),
    EventNotAnObject,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Invalid(i) => i.fmt(f),
            SkipReason::EventNotAnObject => f.write_str("event is not a JSON object"),
        }
    }
}

/// A value that was skipped, with why. Values come from log data, so they are capped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub event: usize,
    pub selector: Option<usize>,
    pub value: String,
    pub reason: SkipReason,
}

/// The longest piece of a skipped value kept, in characters.
pub const SKIPPED_VALUE_CHARS: usize = 256;
/// At most this many skipped values are kept per alert; `skipped_total` counts them all.
pub const SKIPPED_KEPT: usize = 100;

/// Everything `enrich` found for one alert.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enrichment {
    pub matches: Vec<Match>,
    pub skipped: Vec<Skipped>,
    pub skipped_total: u64,
    /// Values looked up (string values of every selector, valid or not).
    pub lookups: u64,
}

impl Enrichment {
    fn skip(&mut self, event: usize, selector: Option<usize>, value: &str, reason: SkipReason) {
        self.skipped_total += 1;
        if self.skipped.len() < SKIPPED_KEPT {
            let value: String = value.chars().take(SKIPPED_VALUE_CHARS).collect();
            self.skipped.push(Skipped { event, selector, value, reason });
        }
    }

    /// The `p_enrichment` object of one event as JSON text (`{}` where nothing matched):
    /// `{"<table>": {"<selector>": [row + p_match, ...]}}`, a single row for a one-value selector.
    pub fn p_enrichment(&self, event: usize, tables: &[Table], selectors: &Selectors) -> String {
        let mut by_table: Vec<(usize, Vec<(usize, Vec<&Match>)>)> = Vec::new();
        for m in self.matches.iter().filter(|m| m.event == event) {
            let t = match by_table.iter_mut().find(|(t, _)| *t == m.table) {
                Some(t) => t,
                None => {
                    by_table.push((m.table, Vec::new()));
                    by_table.last_mut().expect("just pushed")
                }
            };
            match t.1.iter_mut().find(|(s, _)| *s == m.selector) {
                Some(s) => s.1.push(m),
                None => t.1.push((m.selector, vec![m])),
            }
        }
        by_table.sort_by_key(|(t, _)| *t);
        let mut out = String::from("{");
        for (ti, (t, sels)) in by_table.iter_mut().enumerate() {
            if ti > 0 {
                out.push(',');
            }
            write_str_literal(&mut out, tables[*t].name());
            out.push_str(":{");
            sels.sort_by_key(|(s, _)| *s);
            for (si, (s, ms)) in sels.iter().enumerate() {
                if si > 0 {
                    out.push(',');
                }
                write_str_literal(&mut out, &selectors.get(*s).field);
                out.push(':');
                let list = ms.first().is_some_and(|m| m.list);
                if list {
                    out.push('[');
                }
                for (mi, m) in ms.iter().enumerate() {
                    if mi > 0 {
                        out.push(',');
                    }
                    row_with_p_match(&mut out, tables[*t].row_json(m.entry), &m.value);
                    if !list {
                        break;
                    }
                }
                if list {
                    out.push(']');
                }
            }
            out.push('}');
        }
        out.push('}');
        out
    }
}

/// Appends the row object with `p_match` added as its last member.
fn row_with_p_match(out: &mut String, row: &str, value: &str) {
    let body = row.trim_end();
    let body = body.strip_suffix('}').unwrap_or(body);
    out.push_str(body);
    if !body.trim_end().ends_with('{') {
        out.push(',');
    }
    out.push_str("\"p_match\":");
    write_str_literal(out, value);
    out.push('}');
}

/// Matches every selected value of every event against every table.
pub fn enrich(events: &[Event<'_>], tables: &[Table], selectors: &Selectors) -> Enrichment {
    let mut out = Enrichment::default();
    for (ei, ev) in events.iter().enumerate() {
        if ev.obj.is_none() {
            out.skip(ei, None, "", SkipReason::EventNotAnObject);
            continue;
        }
        let log_type = ev.log_type();
        let first_match = out.matches.len();
        for (si, sel) in selectors.applying_to(log_type.as_deref()) {
            let Some(raw) = ev.get_path(&sel.path) else { continue };
            let Ok(values) = serde_json::from_str::<Values>(raw.get()) else { continue };
            let list = values.is_list();
            for v in values.iter() {
                let s = match v {
                    Scalar::Str(s) => s,
                    Scalar::Null => continue,
                    other => {
                        out.skip(ei, Some(si), &format!("{other:?}"), SkipReason::Invalid(Invalid::NotAString));
                        continue;
                    }
                };
                out.lookups += 1;
                let key = match normalize(sel.kind, s, false) {
                    Ok(k) => k,
                    Err(why) => {
                        out.skip(ei, Some(si), s, SkipReason::Invalid(why));
                        continue;
                    }
                };
                for (ti, table) in tables.iter().enumerate() {
                    if let Some(entry) = table.lookup(&key) {
                        let value = shown(&key);
                        let dup = out.matches[first_match..]
                            .iter()
                            .any(|m| m.selector == si && m.table == ti && m.value == value && m.entry == entry);
                        if !dup {
                            out.matches.push(Match { event: ei, selector: si, table: ti, value, entry, list });
                        }
                    }
                }
            }
        }
    }
    out
}

/// The normalized value as printed in `p_match` and the TSV.
pub fn shown(key: &Key<'_>) -> String {
    match key {
        Key::Ip(ip) => ip.to_string(),
        Key::Net(n) => format!("{n:?}"),
        Key::Text(_, t) => t.to_string(),
    }
}

/// One line of the comparison TSV: `alert_id TAB event_index TAB field TAB value TAB entry_id`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TsvRow {
    pub alert_id: String,
    pub event: usize,
    pub field: String,
    pub value: String,
    pub entry_id: String,
}

impl TsvRow {
    pub fn write_to(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        // Writing to a Vec cannot fail.
        let _ = writeln!(out, "{}\t{}\t{}\t{}\t{}", self.alert_id, self.event, self.field, self.value, self.entry_id);
    }
}

/// The TSV rows of one alert's enrichment.
pub fn tsv_rows(alert_id: &str, e: &Enrichment, tables: &[Table], selectors: &Selectors) -> Vec<TsvRow> {
    e.matches
        .iter()
        .map(|m| TsvRow {
            alert_id: alert_id.to_owned(),
            event: m.event,
            field: selectors.get(m.selector).field.clone(),
            value: m.value.clone(),
            entry_id: tables[m.table].entry_id(m.entry).to_owned(),
        })
        .collect()
}

/// Sorts as ENRICHMENT.md says (bytewise, the event index as a number) and drops repeats.
pub fn sort_tsv(rows: &mut Vec<TsvRow>) {
    rows.sort_unstable();
    rows.dedup();
}

/// How many matches each table contributed, for reports.
pub fn matches_by_table(e: &Enrichment) -> HashMap<usize, usize> {
    let mut m = HashMap::new();
    for x in &e.matches {
        *m.entry(x.table).or_default() += 1;
    }
    m
}
