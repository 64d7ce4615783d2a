//! The lookup index of one table: exact keys in hash maps, CIDR networks flattened into disjoint
//! address segments, and the winner of every key computed once, at build time.
//!
//! Why segments: an address is matched by *every* eligible network that contains it, not only the
//! longest prefix. CIDR networks nest or are disjoint, so one sweep over them in address order yields
//! non-overlapping segments, each carrying the winner among all networks that cover it. A lookup is
//! then one hash probe (an exact key, already combined with its covering networks) or one binary
//! search, whatever the number of networks and prefix lengths.

use std::borrow::Cow;
use std::collections::HashMap;

use ahash::RandomState;

use crate::indicator::{Ip, Key, Kind, Net};

/// One eligible table row, as compact as the output needs it: its raw JSON object and the three
/// fields the winner rule reads. Text lives in the table's byte arena.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub row: Span,
    /// How the row is stored: `VERBATIM`, or the shape that rebuilds it from the array of its values.
    pub shape: u32,
    pub id: Span,
    pub modified: Span,
    pub id_num: i64,
    pub confidence: i64,
}

/// A byte range in an arena.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub off: u64,
    pub len: u32,
}

impl Span {
    pub fn range(self) -> std::ops::Range<usize> {
        // Spans are made from in-memory offsets, so they fit usize.
        let off = self.off as usize;
        off..off + self.len as usize
    }
}

/// A row stored as it was written.
pub const VERBATIM: u32 = u32::MAX;

/// The key list of rows stored compactly: a row `{"k1":v1,"k2":v2}` is kept as `[v1,v2]`, the keys
/// once per shape. Feeds write every row with the same keys, so this drops ~40% of the bytes kept.
pub type Shape = std::sync::Arc<[Box<str>]>;
pub type Shapes = Vec<Shape>;

/// At most this many shapes are kept; rows of further shapes are stored verbatim.
const MAX_SHAPES: usize = 256;

/// An entry's index in `Index::entries`.
pub type EntryId = u32;

#[derive(Debug, Clone, Copy)]
struct Segment {
    start: u128,
    end: u128,
    winner: EntryId,
}

type Map<K> = HashMap<K, EntryId, RandomState>;

/// Entries and the bytes they point into; the winner rule compares through it.
#[derive(Debug, Default)]
pub struct Entries {
    pub list: Vec<Entry>,
    /// Row blocks: each eligible row (verbatim or compact), its id and its `modified_ts` text. A
    /// span holds its block in the high 32 bits of `off`.
    pub rows: Vec<Vec<u8>>,
    pub shapes: Shapes,
}

impl Entries {
    /// An entry's id or `modified_ts` text (kept in the row blocks beside the row).
    pub fn text(&self, s: Span) -> &[u8] {
        self.row(s)
    }

    pub fn row(&self, s: Span) -> &[u8] {
        let chunk = &self.rows[(s.off >> 32) as usize];
        let off = (s.off & 0xffff_ffff) as usize;
        &chunk[off..off + s.len as usize]
    }

    /// The entry's row as the table wrote it, rebuilt from its shape where it was stored compactly.
    pub fn row_json(&self, e: &Entry) -> std::borrow::Cow<'_, str> {
        // Rows were validated as UTF-8 JSON when loaded.
        let text = std::str::from_utf8(self.row(e.row)).unwrap_or("{}");
        let Some(keys) = self.shapes.get(e.shape as usize) else { return text.into() };
        let mut out = String::with_capacity(text.len() + keys.iter().map(|k| k.len() + 4).sum::<usize>());
        out.push('{');
        let mut i = 0;
        crate::json::scan::walk_array(text, |sc, d| {
            let v = sc.value(d)?;
            if i > 0 {
                out.push(',');
            }
            out.push('"');
            out.push_str(keys.get(i)?);
            out.push_str("\":");
            out.push_str(v);
            i += 1;
            Some(())
        });
        out.push('}');
        out.into()
    }

    /// Adds a shape unless it is known already or the list is full.
    pub fn intern_shape(&mut self, keys: Shape) {
        if self.shapes.len() < MAX_SHAPES && !self.shapes.contains(&keys) {
            self.shapes.push(keys);
        }
    }

    /// ENRICHMENT.md's rule: higher confidence, then the newer `modified_ts` (as text), then the lower
    /// numeric id. True where `a` beats `b`; an exact tie keeps the one seen first.
    pub fn better(&self, a: EntryId, b: EntryId) -> bool {
        let (x, y) = (&self.list[a as usize], &self.list[b as usize]);
        if x.confidence != y.confidence {
            return x.confidence > y.confidence;
        }
        let (mx, my) = (self.text(x.modified), self.text(y.modified));
        if mx != my {
            return mx > my;
        }
        x.id_num < y.id_num
    }

    fn best(&self, a: Option<EntryId>, b: EntryId) -> EntryId {
        match a {
            Some(a) if !self.better(b, a) => a,
            _ => b,
        }
    }
}

/// Collects keys while a table loads; `finish` turns it into an `Index`.
#[derive(Default)]
pub struct IndexBuilder {
    pub entries: Entries,
    v4: Map<u32>,
    v6: Map<u128>,
    text: [Map<Box<str>>; 4],
    nets: HashMap<Net, EntryId, RandomState>,
}

fn text_slot(kind: Kind) -> usize {
    match kind {
        Kind::Domain => 0,
        Kind::Email => 1,
        Kind::Hash => 2,
        Kind::Url | Kind::Ip => 3,
    }
}

impl IndexBuilder {
    pub fn push_entry(&mut self, e: Entry) -> EntryId {
        let id = self.entries.list.len() as EntryId;
        self.entries.list.push(e);
        id
    }

    /// Grows every map and list for about `rows` rows in all, in the proportions seen so far.
    pub fn reserve_rows(&mut self, rows: usize) {
        let seen = self.entries.list.len().max(1);
        let factor = rows as f64 / seen as f64;
        if !(1.5..1e6).contains(&factor) {
            return;
        }
        let more = |n: usize| (n as f64 * (factor - 1.0)) as usize;
        self.entries.list.reserve(more(self.entries.list.len()));
        self.v4.reserve(more(self.v4.len()));
        self.v6.reserve(more(self.v6.len()));
        for m in &mut self.text {
            m.reserve(more(m.len()));
        }
    }

    /// Makes `entry` reachable under `key`, keeping whichever candidate wins.
    pub fn insert(&mut self, key: Key<'_>, entry: EntryId) {
        let entries = &self.entries;
        let keep = |slot: &mut EntryId| {
            if entries.better(entry, *slot) {
                *slot = entry;
            }
        };
        match key {
            Key::Ip(Ip::V4(a)) => self.v4.entry(a).and_modify(keep).or_insert(entry),
            Key::Ip(Ip::V6(a)) => self.v6.entry(a).and_modify(keep).or_insert(entry),
            Key::Net(n) => self.nets.entry(n).and_modify(keep).or_insert(entry),
            Key::Text(kind, t) => {
                let map = &mut self.text[text_slot(kind)];
                match t {
                    // A key the loader already owns goes in as it is: one probe, not two.
                    Cow::Owned(t) => map.entry(t.into_boxed_str()).and_modify(keep).or_insert(entry),
                    Cow::Borrowed(t) => match map.get_mut(t) {
                        Some(slot) => {
                            keep(slot);
                            slot
                        }
                        None => map.entry(Box::from(t)).or_insert(entry),
                    },
                }
            }
        };
    }

    pub fn finish(self) -> Index {
        let IndexBuilder { entries, mut v4, mut v6, text, nets } = self;
        let (mut n4, mut n6): (Vec<Net>, Vec<Net>) = (Vec::new(), Vec::new());
        for n in nets.keys() {
            if n.v6 {
                n6.push(*n)
            } else {
                n4.push(*n)
            }
        }
        // The text filter and the address work share nothing: they run side by side, as the end of
        // a load otherwise has one core idle.
        let ((seg4, seg6, blocks4), text_filter) = rayon::join(
            || {
                let seg4 = segments(&entries, n4, &nets);
                let seg6 = segments(&entries, n6, &nets);
                // Exact addresses absorb the networks that cover them, so a hit needs one probe.
                for (a, slot) in v4.iter_mut() {
                    if let Some(w) = find(&seg4, u128::from(*a)) {
                        *slot = entries.best(Some(*slot), w);
                    }
                }
                for (a, slot) in v6.iter_mut() {
                    if let Some(w) = find(&seg6, *a) {
                        *slot = entries.best(Some(*slot), w);
                    }
                }
                let blocks4 = V4Blocks::build(v4.keys().copied(), &seg4);
                (seg4, seg6, blocks4)
            },
            || TextFilter::build(&text),
        );
        Index { entries, v4, v6, text, seg4, seg6, blocks4, text_filter }
    }
}

/// Sweeps networks of one family in address order (outer before inner at the same start) and emits
/// disjoint segments, each with the winner among every network covering it.
fn segments(entries: &Entries, mut nets: Vec<Net>, owner: &HashMap<Net, EntryId, RandomState>) -> Vec<Segment> {
    nets.sort_unstable_by_key(|n| (n.start, n.prefix));
    let mut out: Vec<Segment> = Vec::new();
    // Open networks, outermost first: (end, effective winner including the ones around it).
    let mut open: Vec<(u128, EntryId)> = Vec::new();
    // Where the next segment starts; None once the address space is exhausted.
    let mut cursor: Option<u128> = Some(0);
    let emit = |out: &mut Vec<Segment>, start: u128, end: u128, winner: EntryId| {
        if let Some(last) = out.last_mut() {
            if last.winner == winner && last.end.checked_add(1) == Some(start) {
                last.end = end;
                return;
            }
        }
        out.push(Segment { start, end, winner });
    };
    let close_until =
        |out: &mut Vec<Segment>, open: &mut Vec<(u128, EntryId)>, cursor: &mut Option<u128>, limit: Option<u128>| {
            while let Some(&(end, w)) = open.last() {
                if limit.is_some_and(|l| end >= l) {
                    break;
                }
                if let Some(c) = *cursor {
                    if c <= end {
                        emit(out, c, end, w);
                    }
                }
                *cursor = end.checked_add(1);
                open.pop();
            }
        };
    for n in nets {
        close_until(&mut out, &mut open, &mut cursor, Some(n.start));
        if let (Some(&(_, w)), Some(c)) = (open.last(), cursor) {
            if c < n.start {
                emit(&mut out, c, n.start - 1, w);
            }
        }
        cursor = Some(n.start);
        let mine = owner[&n];
        let effective = entries.best(open.last().map(|o| o.1), mine);
        open.push((n.end(), effective));
    }
    close_until(&mut out, &mut open, &mut cursor, None);
    out
}

fn find(segs: &[Segment], a: u128) -> Option<EntryId> {
    let i = segs.partition_point(|s| s.start <= a);
    let s = segs.get(i.checked_sub(1)?)?;
    (a <= s.end).then_some(s.winner)
}

/// One bit per IPv4 /24 block: set where the table has an address or a network in that block.
/// Nearly every address an alert holds is in no table, and this answers that with one bit test
/// instead of a hash probe and a binary search. 2 MiB, only for tables with IPv4 keys.
#[derive(Debug, Default)]
struct V4Blocks(Vec<u64>);

impl V4Blocks {
    fn build(addrs: impl Iterator<Item = u32>, segs: &[Segment]) -> V4Blocks {
        let mut bits = vec![0u64; 1 << 18];
        let mut any = false;
        let mut set = |block: usize| bits[block >> 6] |= 1 << (block & 63);
        for a in addrs {
            set((a >> 8) as usize);
            any = true;
        }
        for s in segs {
            // IPv4 segments hold 32-bit bounds.
            for block in (s.start >> 8) as usize..=(s.end >> 8) as usize {
                set(block);
            }
            any = true;
        }
        if any {
            V4Blocks(bits)
        } else {
            V4Blocks(Vec::new())
        }
    }

    fn may_hold(&self, a: u32) -> bool {
        let block = (a >> 8) as usize;
        self.0.get(block >> 6).is_some_and(|w| w & (1 << (block & 63)) != 0)
    }
}

/// One bit per hash bucket of every text key (domains, emails, hashes, urls), about 16 bits a key: a
/// clear bit proves a value is not in the table with one memory access, where the map would need
/// two or three (control bytes, bucket, the key's text).
#[derive(Debug)]
struct TextFilter {
    bits: Vec<u64>,
    mask: u64,
    hasher: RandomState,
}

impl TextFilter {
    fn build(maps: &[Map<Box<str>>; 4]) -> TextFilter {
        let keys: usize = maps.iter().map(|m| m.len()).sum();
        let nbits = (keys * 16).next_power_of_two().clamp(1 << 12, 1 << 30);
        let mut f = TextFilter { bits: vec![0; nbits / 64], mask: nbits as u64 - 1, hasher: RandomState::new() };
        for (slot, m) in maps.iter().enumerate() {
            for k in m.keys() {
                let b = f.bit(slot, k);
                f.bits[(b >> 6) as usize] |= 1 << (b & 63);
            }
        }
        f
    }

    fn bit(&self, slot: usize, key: &str) -> u64 {
        self.hasher.hash_one((slot, key)) & self.mask
    }

    fn may_hold(&self, slot: usize, key: &str) -> bool {
        let b = self.bit(slot, key);
        self.bits[(b >> 6) as usize] & (1 << (b & 63)) != 0
    }
}

/// A built table index. It answers for the `now` it was built with: eligibility was decided then.
#[derive(Debug)]
pub struct Index {
    pub entries: Entries,
    v4: Map<u32>,
    v6: Map<u128>,
    text: [Map<Box<str>>; 4],
    seg4: Vec<Segment>,
    seg6: Vec<Segment>,
    blocks4: V4Blocks,
    text_filter: TextFilter,
}

impl Index {
    pub fn lookup_ip(&self, ip: Ip) -> Option<EntryId> {
        match ip {
            Ip::V4(a) if !self.blocks4.may_hold(a) => None,
            Ip::V4(a) => self.v4.get(&a).copied().or_else(|| find(&self.seg4, u128::from(a))),
            Ip::V6(a) => self.v6.get(&a).copied().or_else(|| find(&self.seg6, a)),
        }
    }

    /// With `subdomains`, every parent of a domain is a candidate too (`www.evil.com` -> `evil.com`,
    /// `com`), under the same winner rule.
    pub fn lookup_text(&self, kind: Kind, key: &str, subdomains: bool) -> Option<EntryId> {
        let map = &self.text[text_slot(kind)];
        let mut best = map.get(key).copied();
        if subdomains && kind == Kind::Domain {
            let mut name = key;
            while let Some((_, parent)) = name.split_once('.') {
                name = parent;
                if let Some(c) = map.get(name) {
                    best = Some(self.entries.best(best, *c));
                }
            }
        }
        best
    }

    /// False where `key` is surely not in the table (one memory access, no false "false"): callers
    /// test a batch of keys with this first, so the cache misses of the batch overlap.
    pub fn may_match(&self, key: &Key<'_>, subdomains: bool) -> bool {
        match key {
            Key::Ip(Ip::V4(a)) => self.blocks4.may_hold(*a),
            Key::Ip(Ip::V6(_)) | Key::Net(_) => true,
            Key::Text(Kind::Domain, _) if subdomains => true,
            Key::Text(kind, t) => self.text_filter.may_hold(text_slot(*kind), t),
        }
    }

    pub fn lookup(&self, key: &Key<'_>, subdomains: bool) -> Option<EntryId> {
        match key {
            Key::Ip(ip) => self.lookup_ip(*ip),
            Key::Text(kind, t) => self.lookup_text(*kind, t, subdomains),
            Key::Net(_) => None,
        }
    }

    pub fn entry(&self, id: EntryId) -> &Entry {
        &self.entries.list[id as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicator::normalize;

    /// Builds an index from (key, confidence, modified, id) rows of kind ip.
    fn build(rows: &[(&str, i64, &str, i64)]) -> Index {
        let mut b = IndexBuilder::default();
        for (key, confidence, modified, id_num) in rows {
            if b.entries.rows.is_empty() {
                b.entries.rows.push(Vec::new());
            }
            let off = b.entries.rows[0].len() as u64;
            b.entries.rows[0].extend_from_slice(modified.as_bytes());
            let e = b.push_entry(Entry {
                row: Span::default(),
                shape: VERBATIM,
                id: Span::default(),
                modified: Span { off, len: modified.len() as u32 },
                id_num: *id_num,
                confidence: *confidence,
            });
            b.insert(normalize(Kind::Ip, key, true).unwrap(), e);
        }
        b.finish()
    }

    fn winner(ix: &Index, ip: &str) -> Option<i64> {
        let key = normalize(Kind::Ip, ip, false).unwrap();
        ix.lookup(&key, false).map(|e| ix.entry(e).id_num)
    }

    #[test]
    fn every_containing_network_competes_not_only_the_longest_prefix() {
        // A high-confidence /8 beats a low-confidence /24 inside it ...
        let ix = build(&[("10.0.0.0/8", 90, "", 1), ("10.1.2.0/24", 10, "", 2)]);
        assert_eq!(winner(&ix, "10.1.2.3"), Some(1));
        assert_eq!(winner(&ix, "10.9.9.9"), Some(1));
        // ... and the reverse: a high-confidence /24 beats the /8 only inside the /24.
        let ix = build(&[("10.0.0.0/8", 10, "", 1), ("10.1.2.0/24", 90, "", 2)]);
        assert_eq!(winner(&ix, "10.1.2.3"), Some(2));
        assert_eq!(winner(&ix, "10.1.3.0"), Some(1));
        assert_eq!(winner(&ix, "10.1.1.255"), Some(1));
        assert_eq!(winner(&ix, "11.0.0.0"), None);
    }

    #[test]
    fn an_exact_address_competes_with_its_networks() {
        let ix = build(&[("10.1.2.3", 20, "", 5), ("10.0.0.0/8", 30, "", 6)]);
        assert_eq!(winner(&ix, "10.1.2.3"), Some(6));
        let ix = build(&[("10.1.2.3", 40, "", 5), ("10.0.0.0/8", 30, "", 6)]);
        assert_eq!(winner(&ix, "10.1.2.3"), Some(5));
    }

    #[test]
    fn ties_go_to_the_newest_modified_then_the_lowest_id() {
        let ix = build(&[("1.2.3.4", 50, "2025-01-01 00:00:00", 1), ("1.2.3.4", 50, "2025-02-01 00:00:00", 2)]);
        assert_eq!(winner(&ix, "1.2.3.4"), Some(2));
        let ix = build(&[("1.2.3.4", 50, "2025-01-01 00:00:00", 9), ("1.2.3.4", 50, "2025-01-01 00:00:00", 3)]);
        assert_eq!(winner(&ix, "1.2.3.4"), Some(3));
    }

    #[test]
    fn nested_and_adjacent_networks_of_both_families() {
        let ix = build(&[
            ("0.0.0.0/0", 1, "", 1),
            ("10.0.0.0/8", 5, "", 2),
            ("10.128.0.0/9", 3, "", 3),
            ("10.128.0.0/16", 9, "", 4),
            ("255.255.255.255/32", 7, "", 5),
            ("::/0", 2, "", 6),
            ("2001:db8::/32", 4, "", 7),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", 8, "", 8),
        ]);
        assert_eq!(winner(&ix, "9.255.255.255"), Some(1));
        assert_eq!(winner(&ix, "10.0.0.1"), Some(2));
        assert_eq!(winner(&ix, "10.200.0.1"), Some(2), "the /8 beats the lower /9");
        assert_eq!(winner(&ix, "10.128.5.5"), Some(4));
        assert_eq!(winner(&ix, "255.255.255.255"), Some(5));
        assert_eq!(winner(&ix, "2001:db8::1"), Some(7));
        assert_eq!(winner(&ix, "2001:db9::1"), Some(6));
        assert_eq!(winner(&ix, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), Some(8));
        assert_eq!(winner(&ix, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"), Some(6));
    }

    #[test]
    fn mapped_ipv6_networks_cover_ipv4_addresses() {
        let ix = build(&[("::ffff:192.0.2.0/120", 50, "", 1)]);
        assert_eq!(winner(&ix, "192.0.2.77"), Some(1));
        assert_eq!(winner(&ix, "::ffff:192.0.2.77"), Some(1));
        assert_eq!(winner(&ix, "192.0.3.1"), None);
    }
}
