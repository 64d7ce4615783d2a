//! Enrichment: an alert's events against the lookup tables, as Panther shapes it.
//!
//! [`enrich`] is pure: no I/O, no clock, no async. It takes parsed events, loaded tables and the
//! selectors, and returns every match (the winning row per table, selector and value) plus every value
//! it skipped and why. It never fails: a value that is not valid for its kind is skipped, an event
//! that is not a JSON object is skipped, and the rest of the alert is still enriched.

use std::borrow::Cow;
use std::fmt;

use serde::de::IgnoredAny;
use smallvec::SmallVec;

use crate::indicator::{normalize, parse_ipv4, Invalid, Ip, Key, Kind};
use crate::json::scan::{self, Scanner};
use crate::json::{write_str_literal, Object, Scalar, Values};
use crate::tables::{key_hash, Candidate, EntryId, Table};

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
            return Err(format!(
                "selector path {path:?} has an empty segment; write it as dotted keys, e.g. \"userIdentity.sourceIp\""
            ));
        }
        Ok(Selector { field: path.to_owned(), path: parts, kind, log_type: log_type.map(str::to_owned) })
    }
}

/// One `[[selectors]]` entry of the configuration file, as written.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorConfig {
    /// The log type whose events this selector reads (e.g. `AWS.CloudTrail`); every log type if absent.
    #[serde(default)]
    pub log_type: Option<String>,
    /// A dotted path of object keys into the event (e.g. `sourceIPAddress`, `client.ipAddress`).
    pub path: String,
    /// `ip`, `domain`, `email`, `hash` or `url`.
    pub kind: String,
}

impl SelectorConfig {
    pub fn to_selector(&self) -> Result<Selector, String> {
        let kind: Kind = self.kind.parse().map_err(|e| format!("selector {:?}: `kind`: {e}", self.path))?;
        Selector::new(self.log_type.as_deref(), &self.path, kind)
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

    /// The selectors whose path starts with the member `key`.
    fn starting_with(&self, key: &str) -> SmallVec<[usize; 4]> {
        self.list.iter().enumerate().filter(|(_, s)| scan::same_name(&s.path[0], key)).map(|(i, _)| i).collect()
    }
}

/// The member names an alert scan keeps: the first segment of every selector's path, and
/// `p_log_type` where a selector is for one log type. Every other member is validated and passed
/// over, never stored. A kept member carries the number of its name, so that `enrich` finds its
/// selectors without comparing names again.
#[derive(Debug, Clone)]
pub struct KeptKeys {
    /// A bit per name length (63 for any longer), so most names are turned away without a compare.
    lengths: u64,
    names: Vec<Box<str>>,
    /// Per name, the selectors whose path starts with it.
    selectors: Vec<SmallVec<[usize; 4]>>,
    /// The first segment of every selector, in order: which selectors these are for.
    heads: Vec<Box<str>>,
    /// Whether some names have no number (more than 254).
    overflow: bool,
}

/// A member whose name is not a kept one's (or was not read by a kept scan).
const NO_HEAD: u8 = u8::MAX;

impl KeptKeys {
    fn new(selectors: &Selectors) -> KeptKeys {
        let heads: Vec<Box<str>> = selectors.list.iter().map(|s| s.path[0].as_str().into()).collect();
        let by_log_type = selectors.list.iter().any(|s| s.log_type.is_some()).then_some("p_log_type");
        let mut k = KeptKeys { lengths: 0, names: Vec::new(), selectors: Vec::new(), heads, overflow: false };
        for name in selectors.list.iter().map(|s| s.path[0].as_str()).chain(by_log_type) {
            k.lengths |= 1 << name.len().min(63);
            // Past 254 names, members are matched to selectors by name in `enrich`.
            if k.names.len() == usize::from(NO_HEAD) {
                k.overflow = true;
            } else if !k.names.iter().any(|n| **n == *name) {
                k.selectors.push(selectors.starting_with(name));
                k.names.push(name.into());
            }
        }
        k
    }

    /// Whether the scan keeps a member of this name, and the name's number where it has one.
    fn wants(&self, name: &str) -> Option<u8> {
        if self.lengths >> name.len().min(63) & 1 == 0 {
            return None;
        }
        match self.names.iter().position(|n| scan::same_name(n, name)) {
            Some(i) => Some(i as u8),
            // More selector names than numbers: kept, and matched by name later.
            None if self.overflow => Some(NO_HEAD),
            None => None,
        }
    }

    /// Whether these are the kept keys of `selectors`.
    fn built_for(&self, selectors: &Selectors) -> bool {
        self.heads.len() == selectors.list.len()
            && self.heads.iter().zip(&selectors.list).all(|(h, s)| **h == *s.path[0])
    }
}

/// One member of an event: its name, its raw JSON text, and where the scan already read it as a
/// list, the range of its elements in `Events::elements`.
#[derive(Debug)]
struct Member<'a> {
    key: Cow<'a, str>,
    raw: &'a str,
    list: Option<(u32, u32)>,
    /// The number of its name among the kept keys, or `NO_HEAD`.
    head: u8,
}

/// The events of one alert, read one level deep: each member keeps its raw JSON text, parsed further
/// only when a selector asks. All events share one vector of members, so reading an alert costs a
/// couple of allocations, not one per event.
#[derive(Debug, Default)]
pub struct Events<'a> {
    members: Vec<Member<'a>>,
    /// The elements of list members the scan read in passing (see [`Events::scan_list`]).
    elements: Vec<Scalar<'a>>,
    /// Per event, the range of its members; `None` for an event that is not a JSON object.
    spans: Vec<Option<(u32, u32)>>,
    /// Where set, `scan_list` keeps only these members (what `selectors` can read).
    kept: Option<KeptKeys>,
}

impl<'a> Events<'a> {
    /// Events whose scan keeps only what `selectors` read: the cheaper choice for an alerts file,
    /// where most members of most events are none of the selectors'.
    pub fn for_selectors(selectors: &Selectors) -> Events<'a> {
        Events { kept: Some(KeptKeys::new(selectors)), ..Events::default() }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Forgets every event, keeping the memory for the next alert.
    pub fn clear(&mut self) {
        self.members.clear();
        self.elements.clear();
        self.spans.clear();
    }

    /// Adds one event from its JSON text (an event that is not an object is kept, to be reported).
    pub fn push_json(&mut self, json: &'a str) -> Result<(), serde_json::Error> {
        let start = self.members.len();
        let members = &mut self.members;
        let fast = json.trim_start().starts_with('{')
            && scan::walk_object(json, |sc, k, d| {
                let raw = sc.value(d)?;
                members.push(Member { key: k.decoded(), raw, list: None, head: NO_HEAD });
                Some(())
            })
            .is_some();
        if fast {
            self.close(start);
            return Ok(());
        }
        self.members.truncate(start);
        if json.trim_start().starts_with('{') {
            let obj = Object::parse(json)?;
            self.members.extend(obj.members.into_iter().map(|(key, raw)| Member {
                key,
                raw,
                list: None,
                head: NO_HEAD,
            }));
            self.close(start);
        } else {
            serde_json::from_str::<IgnoredAny>(json)?;
            self.spans.push(None);
        }
        Ok(())
    }

    /// Reads a JSON array of events at the scanner's cursor, as part of scanning a whole alert. The
    /// elements of a kept list member are read in the same pass. `None` where the scanner defers to
    /// serde_json (the caller then re-reads the alert with it).
    pub fn scan_list(&mut self, sc: &mut Scanner<'a>, depth: u32) -> Option<()> {
        sc.array(depth + 1, |sc, d| {
            if sc.at_object() {
                let start = self.members.len();
                let (members, elements, kept) = (&mut self.members, &mut self.elements, &self.kept);
                sc.object(d + 1, |sc, k, d| {
                    let key = k.decoded();
                    let head = match kept {
                        Some(kept) => match kept.wants(&key) {
                            Some(head) => head,
                            None => {
                                sc.skip(d)?;
                                return Some(());
                            }
                        },
                        None => NO_HEAD,
                    };
                    if !sc.at_array() {
                        let raw = sc.value(d)?;
                        members.push(Member { key, raw, list: None, head });
                        return Some(());
                    }
                    let first = elements.len() as u32;
                    // Each arm pushes its own value: one `push` of either arm's answer built it on
                    // the stack and copied it in a width the store could not forward (a stall for
                    // every list element).
                    let raw = sc.array_of_values(d, |raw, plain| match plain {
                        Some(s) => elements.push(Scalar::Str(Cow::Borrowed(s))),
                        None => elements.push(Scalar::read(raw)),
                    })?;
                    members.push(Member { key, raw, list: Some((first, elements.len() as u32)), head });
                    Some(())
                })?;
                self.close(start);
            } else {
                sc.value(d)?;
                self.spans.push(None);
            }
            Some(())
        })
    }

    fn close(&mut self, start: usize) {
        // An alert's events fit u32 many members: Panther caps events, and bodies are capped before this.
        self.spans.push(Some((start as u32, self.members.len() as u32)));
    }

    fn event(&self, i: usize) -> Option<EventView<'_, 'a>> {
        let (a, b) = self.spans.get(i).copied().flatten()?;
        Some(EventView { members: &self.members[a as usize..b as usize], elements: &self.elements })
    }
}

/// One event's members.
struct EventView<'e, 'a> {
    members: &'e [Member<'a>],
    elements: &'e [Scalar<'a>],
}

impl<'a> EventView<'_, 'a> {
    /// The last member of that name, as JSON parsers that keep one value per name do.
    fn get(&self, name: &str) -> Option<&'a str> {
        self.members.iter().rev().find(|m| scan::same_name(&m.key, name)).map(|m| m.raw)
    }

    fn log_type(&self) -> Option<Cow<'a, str>> {
        let raw = self.get("p_log_type")?;
        if let Some(s) = scan::plain_str(raw) {
            return Some(Cow::Borrowed(s));
        }
        match Scalar::parse(raw) {
            Ok(Scalar::Str(s)) => Some(s),
            _ => None,
        }
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
        use std::collections::BTreeMap;
        // table -> field -> its matches. Two selectors with one path (say one for every log type,
        // one for AWS.CloudTrail) share their field: one key, each row once.
        let mut by_table: BTreeMap<usize, BTreeMap<&str, Vec<&Match>>> = BTreeMap::new();
        for m in self.matches.iter().filter(|m| m.event == event) {
            let field = by_table.entry(m.table).or_default().entry(&selectors.get(m.selector).field).or_default();
            if !field.iter().any(|x| x.value == m.value && x.entry == m.entry) {
                field.push(m);
            }
        }
        let mut out = String::from("{");
        for (ti, (t, fields)) in by_table.iter().enumerate() {
            if ti > 0 {
                out.push(',');
            }
            write_str_literal(&mut out, tables[*t].name());
            out.push_str(":{");
            for (fi, (field, ms)) in fields.iter().enumerate() {
                if fi > 0 {
                    out.push(',');
                }
                write_str_literal(&mut out, field);
                out.push(':');
                let list = ms.iter().any(|m| m.list);
                if list {
                    out.push('[');
                }
                for (mi, m) in ms.iter().enumerate() {
                    if mi > 0 {
                        out.push(',');
                    }
                    row_with_p_match(&mut out, &tables[*t].row_json(m.entry), &m.value);
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

/// Appends the row object with `p_match` added as its last member (replacing one the row had).
fn row_with_p_match(out: &mut String, row: &str, value: &str) {
    // A row that has a `p_match` of its own (perhaps written with escapes) gets it replaced.
    if row.contains("p_match") || row.contains("\\u") {
        if let Ok(obj) = Object::parse(row) {
            if !obj.members.iter().any(|(k, _)| k == "p_match") {
                return append_p_match(out, row, value);
            }
            out.push('{');
            for (k, v) in obj.members.iter().filter(|(k, _)| *k != "p_match") {
                write_str_literal(out, k);
                out.push(':');
                out.push_str(v);
                out.push(',');
            }
            out.push_str("\"p_match\":");
            write_str_literal(out, value);
            out.push('}');
            return;
        }
    }
    append_p_match(out, row, value);
}

/// Appends the row with `p_match` written in before its closing brace.
fn append_p_match(out: &mut String, row: &str, value: &str) {
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
pub fn enrich(events: &Events<'_>, tables: &[Table], selectors: &Selectors) -> Enrichment {
    let mut out = Enrichment::default();
    // Sized for every value the scan read in passing, so that it does not grow again and again.
    let mut probes: Vec<Probe> = Vec::with_capacity(events.elements.len() + events.len());
    // A kept scan numbered each member's name; trusted only for the selectors it was made for.
    let kept = events.kept.as_ref().filter(|k| k.built_for(selectors));
    let mut prefetched = 0;
    for ei in 0..events.len() {
        // The filter words of the event before's keys are fetched while this one is read.
        for p in &probes[prefetched..] {
            for t in tables {
                t.prefetch(&p.key, p.hash);
            }
        }
        prefetched = probes.len();
        let Some(ev) = events.event(ei) else {
            out.skip(ei, None, "", SkipReason::EventNotAnObject);
            continue;
        };
        // Read only where a selector is for one log type.
        let mut log_type = None;
        // One pass over the members, each dispatched to the selectors that start with its key.
        for (mi, m) in ev.members.iter().enumerate() {
            let by_name;
            let heads = match kept.and_then(|k| k.selectors.get(usize::from(m.head))) {
                Some(heads) => heads,
                None => {
                    by_name = selectors.starting_with(&m.key);
                    &by_name
                }
            };
            for &si in heads {
                let sel = selectors.get(si);
                if sel.log_type.is_some()
                    && sel.log_type.as_deref() != log_type.get_or_insert_with(|| ev.log_type()).as_deref()
                {
                    continue;
                }
                // A repeated key: the last one is the event's value, as JSON parsers read it.
                if ev.members[mi + 1..].iter().any(|o| scan::same_name(&o.key, &m.key)) {
                    continue;
                }
                let parsed;
                let (list, values): (bool, &[Scalar<'_>]) = match (sel.path.len(), m.list) {
                    (1, Some((a, b))) => (true, &ev.elements[a as usize..b as usize]),
                    _ => {
                        let raw = if sel.path.len() == 1 { Some(m.raw) } else { descend(m.raw, &sel.path[1..]) };
                        let Some(Ok(v)) = raw.map(Values::parse) else { continue };
                        parsed = v;
                        match &parsed {
                            Values::One(s) => (false, std::slice::from_ref(s)),
                            Values::Many(v) => (true, &v[..]),
                        }
                    }
                };
                gather(&mut out, &mut probes, list, values, ei, si, sel.kind);
            }
        }
    }
    // Every key is tested against each table's one-access filter (its word fetched while the next
    // event was gathered), and the few that may match have their first table slot fetched; then
    // they find their candidate (a text key's by its hash alone, its text fetched ahead), and a last
    // pass confirms them in the same order, so that the cache misses of an alert's lookups overlap
    // rather than follow one another.
    let mut passed: Vec<(usize, usize)> = Vec::with_capacity(16);
    for (pi, p) in probes.iter().enumerate() {
        for (ti, table) in tables.iter().enumerate() {
            if table.may_match_hashed(&p.key, p.hash) {
                table.prefetch_slot(&p.key, p.hash);
                passed.push((pi, ti));
            }
        }
    }
    let mut found: Vec<(usize, usize, Candidate)> = Vec::with_capacity(passed.len());
    for (pi, ti) in passed {
        let p = &probes[pi];
        if let Some(c) = tables[ti].candidate(&p.key, p.hash) {
            found.push((pi, ti, c));
        }
    }
    let mut event_start = (usize::MAX, 0);
    for (pi, ti, candidate) in found {
        let p = &probes[pi];
        if event_start.0 != p.event {
            event_start = (p.event, out.matches.len());
        }
        let Some(entry) = tables[ti].confirm(candidate, &p.key, p.hash) else { continue };
        let value = shown(&p.key);
        let dup = out.matches[event_start.1..]
            .iter()
            .any(|m| m.selector == p.selector && m.table == ti && m.value == value && m.entry == entry);
        if !dup {
            out.matches.push(Match { event: p.event, selector: p.selector, table: ti, value, entry, list: p.list });
        }
    }
    out
}

/// A normalized value waiting to be looked up.
struct Probe<'a> {
    event: usize,
    selector: usize,
    list: bool,
    /// The key's `key_hash`, the same for every table.
    hash: u64,
    key: Key<'a>,
}

/// Follows the rest of a dotted path through nested objects.
fn descend<'a>(mut cur: &'a str, rest: &[String]) -> Option<&'a str> {
    for key in rest {
        if !cur.starts_with('{') {
            return None;
        }
        cur = Object::parse(cur).ok()?.get(key)?;
    }
    Some(cur)
}

/// Normalizes the values of one selector into probes; what is not valid is skipped with a reason.
fn gather<'a>(
    out: &mut Enrichment,
    probes: &mut Vec<Probe<'a>>,
    list: bool,
    values: &[Scalar<'a>],
    ei: usize,
    si: usize,
    kind: Kind,
) {
    for v in values {
        let key = match v {
            Scalar::Null => continue,
            Scalar::Str(Cow::Borrowed(s)) => {
                let s: &'a str = s;
                out.lookups += 1;
                // Most values are IPv4 addresses: read in line, their key is built in registers,
                // where `normalize`'s answer comes back through memory in a shape whose reads stall
                // on its writes. An address with spaces around it is left to `normalize` to strip.
                if let Some(a) = (kind == Kind::Ip).then(|| parse_ipv4(s)).flatten() {
                    let key = Key::Ip(Ip::V4(a));
                    probes.push(Probe { event: ei, selector: si, list, hash: key_hash(&key), key });
                    continue;
                }
                normalize(kind, s, false).map_err(|why| (why, s.to_owned()))
            }
            Scalar::Str(Cow::Owned(s)) => {
                out.lookups += 1;
                normalize(kind, s, false).map(Key::into_owned).map_err(|why| (why, s.clone()))
            }
            other => {
                out.skip(ei, Some(si), &format!("{other:?}"), SkipReason::Invalid(Invalid::NotAString));
                continue;
            }
        };
        match key {
            Ok(key) => probes.push(Probe { event: ei, selector: si, list, hash: key_hash(&key), key }),
            Err((why, s)) => out.skip(ei, Some(si), &s, SkipReason::Invalid(why)),
        }
    }
}

/// The normalized value as printed in `p_match` and the TSV.
pub fn shown(key: &Key<'_>) -> String {
    match key {
        Key::Ip(ip) => ip.text(),
        Key::Net(n) => format!("{n:?}"),
        Key::Text(_, t) => t.to_string(),
    }
}

/// One line of the comparison TSV: `alert_id TAB event_index TAB field TAB value TAB entry_id`.
/// The field and entry id are borrowed from the selectors and tables, the alert id shared by the
/// alert's lines: a large run makes many of these.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TsvRow<'t> {
    pub alert_id: std::sync::Arc<str>,
    pub event: usize,
    pub field: &'t str,
    pub value: String,
    pub entry_id: &'t str,
}

impl TsvRow<'_> {
    pub fn write_to(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        // Writing to a Vec cannot fail.
        let _ = writeln!(out, "{}\t{}\t{}\t{}\t{}", self.alert_id, self.event, self.field, self.value, self.entry_id);
    }
}

/// Appends the TSV rows of one alert's enrichment to `out`.
pub fn tsv_rows<'t>(
    alert_id: std::sync::Arc<str>,
    e: Enrichment,
    tables: &'t [Table],
    selectors: &'t Selectors,
    out: &mut Vec<TsvRow<'t>>,
) {
    let winners: SmallVec<[(usize, EntryId); 32]> = e.matches.iter().map(|m| (m.table, m.entry)).collect();
    out.extend(e.matches.into_iter().zip(Table::entry_ids(tables, &winners)).map(|(m, entry_id)| TsvRow {
        alert_id: alert_id.clone(),
        event: m.event,
        field: &selectors.get(m.selector).field,
        value: m.value,
        entry_id,
    }));
}

/// The rows of every part, sorted as ENRICHMENT.md says (bytewise, the event index as a number),
/// repeats dropped. The parts are joined here, not as they are made: the one copy is the sort's.
pub fn sort_tsv<'t>(parts: Vec<Vec<TsvRow<'t>>>) -> Vec<TsvRow<'t>> {
    let mut rows = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for mut p in parts {
        rows.append(&mut p);
    }
    rows.sort_unstable();
    rows.dedup();
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::{Format, TableSpec};
    use chrono::{DateTime, Utc};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").map(|t| t.with_timezone(&Utc)).unwrap()
    }

    fn table(name: &str, rows: &[(&str, &str, u8)]) -> Table {
        let body: Vec<String> = rows
            .iter()
            .enumerate()
            .map(|(i, (v, t, c))| {
                format!(
                    r#"{{"id":"{}","value":"{v}","type":"{t}","confidence":{c},"status":"active","threat_type":"c2"}}"#,
                    i + 1
                )
            })
            .collect();
        Table::from_bytes(&TableSpec::anomali(name, format!("/t/{name}.jsonl")), body.join("\n").into_bytes(), now())
            .unwrap()
    }

    fn events<'a>(json: &[&'a str]) -> Events<'a> {
        let mut ev = Events::default();
        for j in json {
            ev.push_json(j).unwrap();
        }
        ev
    }

    fn found(e: &Enrichment, tables: &[Table], sel: &Selectors) -> Vec<String> {
        e.matches
            .iter()
            .map(|m| {
                format!("{}:{}:{}={}", m.event, sel.get(m.selector).field, m.value, tables[m.table].entry_id(m.entry))
            })
            .collect()
    }

    #[test]
    fn matches_come_out_in_panthers_shape() {
        let tables = [table("intel", &[("1.2.3.4", "ip", 80), ("evil.com", "domain", 50)])];
        let sel = Selectors::new(vec![Selector::new(Some("AWS.CloudTrail"), "sourceIPAddress", Kind::Ip).unwrap()]);
        let ev = events(&[
            r#"{"p_log_type":"AWS.CloudTrail","p_any_ip_addresses":["1.2.3.4","::ffff:1.2.3.4","5.5.5.5"],"p_any_domain_names":["EVIL.com."],"sourceIPAddress":"1.2.3.4"}"#,
        ]);
        let e = enrich(&ev, &tables, &sel);
        let p: serde_json::Value = serde_json::from_str(&e.p_enrichment(0, &tables, &sel)).unwrap();
        let ips = &p["intel"]["p_any_ip_addresses"];
        assert_eq!(ips.as_array().map(Vec::len), Some(1), "the mapped form is the same value: {p}");
        assert_eq!(ips[0]["p_match"], "1.2.3.4");
        assert_eq!(ips[0]["threat_type"], "c2", "the row is carried whole");
        assert_eq!(p["intel"]["p_any_domain_names"][0]["p_match"], "evil.com");
        // A one-value selector holds one row, not a list.
        assert_eq!(p["intel"]["sourceIPAddress"]["id"], "1");
        assert_eq!(e.lookups, 5);
        assert_eq!(e.p_enrichment(1, &tables, &sel), "{}");
    }

    #[test]
    fn invalid_values_are_skipped_with_a_reason_and_the_rest_still_matches() {
        let tables = [table("intel", &[("1.2.3.4", "ip", 80)])];
        let sel = Selectors::default();
        let ev = events(&[
            r#"{"p_any_ip_addresses":["999.1.1.1", 42, null, "1.2.3.4"],"p_any_md5_hashes":["xyz"],"p_any_emails":["nobody"]}"#,
            r#"["not", "an", "event"]"#,
            r#"{"p_any_ip_addresses":["1.2.3.4"]}"#,
        ]);
        let e = enrich(&ev, &tables, &sel);
        assert_eq!(found(&e, &tables, &sel), vec!["0:p_any_ip_addresses:1.2.3.4=1", "2:p_any_ip_addresses:1.2.3.4=1"]);
        let reasons: Vec<String> = e.skipped.iter().map(|s| format!("{}:{}:{}", s.event, s.value, s.reason)).collect();
        assert_eq!(
            reasons,
            vec![
                "0:999.1.1.1:not an IP address",
                "0:U64(42):not a string",
                "0:xyz:not 32, 40 or 64 hex digits",
                "0:nobody:email without @",
                "1::event is not a JSON object",
            ]
        );
        assert_eq!(e.lookups, 5, "invalid strings are looked up (and counted) as the reference counts them");
    }

    #[test]
    fn selectors_for_one_log_type_and_dotted_paths() {
        let tables = [table("intel", &[("9.9.9.9", "ip", 10), ("bad@x.io", "email", 10)])];
        let sel = Selectors::new(vec![
            Selector::new(Some("Okta.SystemLog"), "client.ipAddress", Kind::Ip).unwrap(),
            Selector::new(None, "actor.email", Kind::Email).unwrap(),
        ]);
        let ev = events(&[
            r#"{"p_log_type":"Okta.SystemLog","client":{"ipAddress":"9.9.9.9"},"actor":{"email":"Bad@X.io"}}"#,
            r#"{"p_log_type":"AWS.CloudTrail","client":{"ipAddress":"9.9.9.9"},"actor":{"email":"bad@x.io"}}"#,
            r#"{"p_log_type":"Okta.SystemLog","client":"9.9.9.9"}"#,
        ]);
        let e = enrich(&ev, &tables, &sel);
        assert_eq!(
            found(&e, &tables, &sel),
            vec!["0:client.ipAddress:9.9.9.9=1", "0:actor.email:bad@x.io=2", "1:actor.email:bad@x.io=2"]
        );
        assert!(Selector::new(None, "a..b", Kind::Ip).is_err());
    }

    #[test]
    fn a_repeated_key_is_read_as_its_last_value() {
        let tables = [table("intel", &[("1.1.1.1", "ip", 10), ("2.2.2.2", "ip", 10)])];
        let sel = Selectors::default();
        let ev = events(&[r#"{"p_any_ip_addresses":["1.1.1.1"],"p_any_ip_addresses":["2.2.2.2"]}"#]);
        assert_eq!(found(&enrich(&ev, &tables, &sel), &tables, &sel), vec!["0:p_any_ip_addresses:2.2.2.2=2"]);
        // Escaped keys go through serde_json and mean the same.
        let ev = events(&[r#"{"p_any_ip_\u0061ddresses":["1.1.1.1"]}"#]);
        assert_eq!(found(&enrich(&ev, &tables, &sel), &tables, &sel), vec!["0:p_any_ip_addresses:1.1.1.1=1"]);
    }

    #[test]
    fn every_table_is_consulted() {
        let tables = [table("a", &[("1.1.1.1", "ip", 10)]), table("b", &[("1.1.0.0/16", "ip", 10)])];
        let sel = Selectors::default();
        let ev = events(&[r#"{"p_any_ip_addresses":["1.1.1.1"]}"#]);
        let e = enrich(&ev, &tables, &sel);
        let p: serde_json::Value = serde_json::from_str(&e.p_enrichment(0, &tables, &sel)).unwrap();
        assert_eq!(p["a"]["p_any_ip_addresses"][0]["id"], "1");
        assert_eq!(p["b"]["p_any_ip_addresses"][0]["value"], "1.1.0.0/16");
        let mut rows = Vec::new();
        tsv_rows("A1".into(), e.clone(), &tables, &sel, &mut rows);
        let rows = sort_tsv(vec![rows]);
        let mut out = Vec::new();
        rows.iter().for_each(|r| r.write_to(&mut out));
        assert_eq!(String::from_utf8(out).unwrap(), "A1\t0\tp_any_ip_addresses\t1.1.1.1\t1\n");
    }

    #[test]
    fn two_selectors_on_one_path_share_one_key_and_rows_replace_their_own_p_match() {
        let tables = [table("intel", &[("1.2.3.4", "ip", 80)])];
        let sel = Selectors::new(vec![
            Selector::new(None, "src", Kind::Ip).unwrap(),
            Selector::new(Some("AWS.CloudTrail"), "src", Kind::Ip).unwrap(),
        ]);
        let ev = events(&[r#"{"p_log_type":"AWS.CloudTrail","src":"1.2.3.4"}"#]);
        let e = enrich(&ev, &tables, &sel);
        let text = e.p_enrichment(0, &tables, &sel);
        assert_eq!(text.matches("\"src\"").count(), 1, "{text}");
        let p: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(p["intel"]["src"]["id"], "1");

        for row in [
            r#"{"id":"5","value":"9.9.9.9","type":"ip","status":"active","p_match":"stale"}"#,
            r#"{"id":"5","value":"9.9.9.9","type":"ip","status":"active","p\u005fmatch":"stale"}"#,
        ] {
            let t = [Table::from_bytes(&TableSpec::anomali("t", "/t"), row.as_bytes().to_vec(), now()).unwrap()];
            let ev = events(&[r#"{"p_any_ip_addresses":["9.9.9.9"]}"#]);
            let text = enrich(&ev, &t, &Selectors::default()).p_enrichment(0, &t, &Selectors::default());
            let p: serde_json::Value = serde_json::from_str(&text).unwrap();
            let members = p["t"]["p_any_ip_addresses"][0].as_object().unwrap().len();
            assert_eq!(members, 5, "one p_match, the table's replaced: {text}");
            assert_eq!(p["t"]["p_any_ip_addresses"][0]["p_match"], "9.9.9.9");
        }
        // A row with other escapes keeps its bytes.
        let row = r#"{"id":"6","value":"9.9.9.8","type":"ip","status":"active","note":"caf\u00e9"}"#;
        let t = [Table::from_bytes(&TableSpec::anomali("t", "/t"), row.as_bytes().to_vec(), now()).unwrap()];
        let ev = events(&[r#"{"p_any_ip_addresses":["9.9.9.8"]}"#]);
        let text = enrich(&ev, &t, &Selectors::default()).p_enrichment(0, &t, &Selectors::default());
        assert!(text.contains(r#""note":"caf\u00e9","p_match":"9.9.9.8"}"#), "{text}");
    }

    #[test]
    fn one_undecodable_element_does_not_cost_the_rest_of_the_list() {
        let tables = [table("intel", &[("1.2.3.4", "ip", 80)])];
        let sel = Selectors::default();
        let ev = events(&[r#"{"p_any_ip_addresses":["\ud800", 1e400, "1.2.3.4"]}"#]);
        let e = enrich(&ev, &tables, &sel);
        assert_eq!(found(&e, &tables, &sel), vec!["0:p_any_ip_addresses:1.2.3.4=1"]);
        assert_eq!(e.lookups, 2);
        assert_eq!(e.skipped.len(), 2);
    }

    #[test]
    fn skipped_values_are_capped() {
        let tables = [table("intel", &[("1.1.1.1", "ip", 10)])];
        let long = "x".repeat(10_000);
        let many: Vec<String> = (0..500).map(|i| format!("\"bad{i}\"")).collect();
        let json = format!(r#"{{"p_any_ip_addresses":["{long}",{}]}}"#, many.join(","));
        let ev = events(&[&json]);
        let e = enrich(&ev, &tables, &Selectors::default());
        assert_eq!(e.skipped.len(), SKIPPED_KEPT);
        assert_eq!(e.skipped_total, 501);
        assert_eq!(e.skipped[0].value.chars().count(), SKIPPED_VALUE_CHARS);
    }

    #[test]
    fn list_format_tables_work_through_enrich() {
        let spec = TableSpec {
            kind: Some(Kind::Domain),
            format: Format::List,
            match_subdomains: true,
            ..TableSpec::anomali("blocked", "/t/b.txt")
        };
        let tables = [Table::from_bytes(&spec, b"evil.com\n".to_vec(), now()).unwrap()];
        let sel = Selectors::default();
        let ev = events(&[r#"{"p_any_domain_names":["a.b.Evil.Com"]}"#]);
        assert_eq!(found(&enrich(&ev, &tables, &sel), &tables, &sel), vec!["0:p_any_domain_names:a.b.evil.com=1"]);
    }

    /// Reads `[events...]` the way an alerts file is read: one scan that keeps only what the
    /// selectors read, with list elements read in passing.
    fn scanned<'a>(list: &'a str, sel: &Selectors) -> Events<'a> {
        let mut ev = Events::for_selectors(sel);
        let wrapped: &'a str = Box::leak(format!(r#"{{"events":{list}}}"#).into_boxed_str());
        scan::walk_object(wrapped, |sc, _, d| ev.scan_list(sc, d)).unwrap();
        ev
    }

    #[test]
    fn an_alert_scan_that_keeps_only_selected_members_finds_what_a_full_read_finds() {
        let tables = [table(
            "intel",
            &[("1.2.3.4", "ip", 80), ("5.6.7.8", "ip", 70), ("evil.com", "domain", 50), ("a@b.co", "email", 60)],
        )];
        let sel = Selectors::new(vec![
            Selector::new(Some("AWS.CloudTrail"), "sourceIPAddress", Kind::Ip).unwrap(),
            Selector::new(None, "client.ip", Kind::Ip).unwrap(),
        ]);
        let events_json = [
            // The log type after the member its selector reads; a nested path; other members.
            r#"{"sourceIPAddress":"5.6.7.8","userAgent":"x","client":{"ip":"1.2.3.4"},"p_log_type":"AWS.CloudTrail"}"#,
            // A repeated list: the last one counts.
            r#"{"p_any_ip_addresses":["1.2.3.4"],"p_row_id":"r","p_any_ip_addresses":["5.6.7.8",null,7,"bad"]}"#,
            // An escaped name that reads as a selector's, and escaped values.
            r#"{"p_any_domain_names":["EVIL.com."],"p_any\u005femails":["A@B.CO","\u0061@b.co"]}"#,
            // A list where one value is expected, a value where a list is, and not an object at all.
            r#"{"p_log_type":"AWS.CloudTrail","sourceIPAddress":["5.6.7.8"],"p_any_ip_addresses":"1.2.3.4"}"#,
            r#"["not an event"]"#,
            r#"{}"#,
        ];
        let list = format!("[{}]", events_json.join(","));
        let full = enrich(&events(&events_json), &tables, &sel);
        let fast = enrich(&scanned(&list, &sel), &tables, &sel);
        assert_eq!(found(&fast, &tables, &sel), found(&full, &tables, &sel));
        assert_eq!(fast, full, "the same matches, skipped values and lookups");
        assert_eq!(
            found(&fast, &tables, &sel),
            vec![
                "0:sourceIPAddress:5.6.7.8=2",
                "0:client.ip:1.2.3.4=1",
                "1:p_any_ip_addresses:5.6.7.8=2",
                "2:p_any_domain_names:evil.com=3",
                "2:p_any_emails:a@b.co=4",
                "3:sourceIPAddress:5.6.7.8=2",
                "3:p_any_ip_addresses:1.2.3.4=1",
            ]
        );
        let skipped: Vec<String> = fast.skipped.iter().map(|s| format!("{}:{}", s.event, s.value)).collect();
        assert_eq!(skipped, vec!["1:U64(7)", "1:bad", "4:"], "null is no value; 4 is not an object");
    }

    #[test]
    fn a_scan_for_hundreds_of_selectors_still_finds_each_ones_member() {
        // More first path segments than a kept member can number: the rest are matched by name.
        let tables = [table("intel", &[("1.2.3.4", "ip", 80), ("5.6.7.8", "ip", 70)])];
        let sel = Selectors::new((0..300).map(|i| Selector::new(None, &format!("f{i}"), Kind::Ip).unwrap()).collect());
        let events_json = [r#"{"f3":"1.2.3.4","f299":"5.6.7.8","g299":"5.6.7.8","f2999":"1.2.3.4"}"#];
        let list = format!("[{}]", events_json.join(","));
        let fast = enrich(&scanned(&list, &sel), &tables, &sel);
        assert_eq!(fast, enrich(&events(&events_json), &tables, &sel));
        assert_eq!(found(&fast, &tables, &sel), vec!["0:f3:1.2.3.4=1", "0:f299:5.6.7.8=2"]);
        // A scan made for other selectors is not trusted to number this one's members.
        let other = Selectors::new(vec![Selector::new(None, "g299", Kind::Ip).unwrap()]);
        let mut ev = Events::for_selectors(&other);
        let wrapped = format!(r#"{{"events":{list}}}"#);
        scan::walk_object(&wrapped, |sc, _, d| ev.scan_list(sc, d)).unwrap();
        // Its member g299 is numbered 0 there; here selector 0 is f3, which it must not be read as.
        let reordered = Selectors::new(vec![
            Selector::new(None, "f3", Kind::Ip).unwrap(),
            Selector::new(None, "g299", Kind::Ip).unwrap(),
        ]);
        assert_eq!(found(&enrich(&ev, &tables, &reordered), &tables, &reordered), vec!["0:g299:5.6.7.8=2"]);
    }
}
