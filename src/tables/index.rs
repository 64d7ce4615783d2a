//! The lookup index of one table: exact keys in hash tables, CIDR networks flattened into disjoint
//! address segments, and the winner of every key computed once, at build time.
//!
//! Why shards: a load parses rows on every core, and the inserts must not then queue behind one
//! core. Every key is hashed once, where it is parsed, and its hash picks one of `SHARDS` shards;
//! shards share nothing, so a batch of parsed rows is inserted by all cores at once, each shard's
//! keys in file order (so ties go to the row seen first, as the reference keeps them). The same hash
//! serves a lookup's filter bit, its shard and its probe, and it is one process-wide function, so an
//! event value is hashed once for every table.
//!
//! Why segments: an address is matched by *every* eligible network that contains it, not only the
//! longest prefix. CIDR networks nest or are disjoint, so one sweep over them in address order yields
//! non-overlapping segments, each carrying the winner among all networks that cover it. A lookup is
//! then one hash probe and one binary search, whatever the number of networks and prefix lengths.

use std::sync::OnceLock;

use ahash::RandomState;
use hashbrown::hash_table::{Entry as Slot, HashTable};
use rayon::prelude::*;

use super::probe_table::{ProbeTable, TextKey, V4Key};
use super::template::Template;
use crate::indicator::{Ip, Key, Kind, Net};

/// One eligible table row, as compact as the output needs it: where its bytes are, and the three
/// fields the winner rule reads. Its `modified_ts` text is in its row block (among a stored row's
/// holes, or after the row); its id's text is in the key block of the same number.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// The block (high 32 bits) and the row's offset in its row block (low 32 bits).
    pub at: u64,
    pub row_len: u32,
    /// How the row is stored: `VERBATIM`, or the shape that rebuilds it from the array of its values.
    pub shape: u32,
    pub id_off: u32,
    pub id_len: u32,
    /// Where `modified_ts` is, from the row's start.
    pub modified_off: u32,
    pub modified_len: u32,
    pub id_num: i64,
    pub confidence: i64,
}

impl Entry {
    /// The row, in the row blocks.
    pub fn row(&self) -> Span {
        Span { off: self.at, len: self.row_len }
    }

    /// The `modified_ts` text, in the row blocks.
    pub fn modified(&self) -> Span {
        Span { off: self.at + u64::from(self.modified_off), len: self.modified_len }
    }

    /// The id's text, in the key blocks.
    pub fn id(&self) -> Span {
        Span { off: (self.at & !0xffff_ffff) | u64::from(self.id_off), len: self.id_len }
    }

    /// The layout the row is stored by, where it is stored as its holes (`VERBATIM` has the
    /// `LAYOUT` bit too, and is none).
    pub fn layout(&self) -> Option<u32> {
        (self.shape != VERBATIM && self.shape & LAYOUT != 0).then_some(self.shape & !LAYOUT)
    }
}

/// A byte range in the row blocks or the key blocks: the block in the high 32 bits of `off`, the
/// offset in the low.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub off: u64,
    pub len: u32,
}

/// A row stored as it was written.
pub const VERBATIM: u32 = u32::MAX;

/// The bit of `Entry::shape` that says the row is stored as the holes of layout `shape & !LAYOUT`.
pub const LAYOUT: u32 = 1 << 31;

/// The row templates of a table whose rows are stored as their holes.
pub(crate) type Layouts = Vec<std::sync::Arc<Template>>;

/// At most this many layouts are kept; rows of further layouts are stored otherwise.
const MAX_LAYOUTS: usize = 256;

/// The key list of rows stored compactly: a row `{"k1":v1,"k2":v2}` is kept as `[v1,v2]`, the keys
/// once per shape. Feeds write every row with the same keys, so this drops ~40% of the bytes kept.
pub type Shape = std::sync::Arc<[Box<str>]>;
pub type Shapes = Vec<Shape>;

/// At most this many shapes are kept; rows of further shapes are stored verbatim.
const MAX_SHAPES: usize = 256;

/// An entry's number: its segment in `Entries` (high bits) and its place there (low `SEGMENT_BITS`).
pub type EntryId = u32;

/// A segment of entries holds at most `1 << SEGMENT_BITS`: a batch of parsed rows, whose entries
/// become a segment as they are (no copy into one long list, which a load made on one core).
pub const SEGMENT_BITS: u32 = 10;

/// How many shards the exact keys are spread over: enough tasks to keep every core busy however
/// unevenly a batch's keys fall, few enough that each shard's tables stay large.
pub const SHARDS: usize = 16;

/// The hash of every key and value, for the whole process (seeded at random once, so that values an
/// attacker puts in events cannot be chosen to collide).
fn hasher() -> &'static RandomState {
    static HASHER: OnceLock<RandomState> = OnceLock::new();
    HASHER.get_or_init(RandomState::new)
}

#[inline]
fn hash_v4(a: u32) -> u64 {
    hasher().hash_one(a)
}

fn hash_v6(a: u128) -> u64 {
    hasher().hash_one(a)
}

fn hash_net(n: &Net) -> u64 {
    hasher().hash_one(n)
}

fn hash_text(slot: usize, text: &[u8]) -> u64 {
    hasher().hash_one((slot as u8, text))
}

/// The hash a key is filed and found under, in every table.
#[inline]
pub fn key_hash(key: &Key<'_>) -> u64 {
    match key {
        Key::Ip(Ip::V4(a)) => hash_v4(*a),
        Key::Ip(Ip::V6(a)) => hash_v6(*a),
        Key::Net(n) => hash_net(n),
        Key::Text(kind, t) => hash_text(text_slot(*kind), t.as_bytes()),
    }
}

/// Bits of the hash that the hash tables use for neither the bucket (low bits) nor the tag (the top
/// seven), so that the keys of one shard still spread over their tables.
fn shard_of(hash: u64) -> usize {
    (hash >> 40) as usize % SHARDS
}

fn text_slot(kind: Kind) -> usize {
    match kind {
        Kind::Domain => 0,
        Kind::Email => 1,
        Kind::Hash => 2,
        Kind::Url | Kind::Ip => 3,
    }
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    start: u128,
    end: u128,
    winner: EntryId,
}

/// Entries and the bytes they point into; the winner rule compares through it.
#[derive(Debug, Default)]
pub struct Entries {
    /// The entries, in segments (see [`SEGMENT_BITS`]).
    segments: Vec<Vec<Entry>>,
    /// Row blocks: each eligible row (verbatim or compact) with its `modified_ts` text.
    pub rows: Vec<Vec<u8>>,
    /// Key blocks, one beside each row block: the ids and normalized text keys of its rows. A
    /// lookup reads only these, and they are a tenth the size of the rows, so they stay in cache
    /// where the rows would not.
    pub keys: Vec<Vec<u8>>,
    pub shapes: Shapes,
    pub(crate) layouts: Layouts,
}

fn in_blocks(blocks: &[Vec<u8>], s: Span) -> &[u8] {
    let block = &blocks[(s.off >> 32) as usize];
    let off = (s.off & 0xffff_ffff) as usize;
    &block[off..off + s.len as usize]
}

impl Entries {
    pub fn get(&self, id: EntryId) -> &Entry {
        &self.segments[(id >> SEGMENT_BITS) as usize][(id & ((1 << SEGMENT_BITS) - 1)) as usize]
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.segments.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.iter().all(Vec::is_empty)
    }

    /// Every entry with its id.
    pub fn iter(&self) -> impl Iterator<Item = (EntryId, &Entry)> {
        self.segments
            .iter()
            .enumerate()
            .flat_map(|(s, seg)| seg.iter().enumerate().map(move |(i, e)| (((s as u32) << SEGMENT_BITS) | i as u32, e)))
    }

    /// Adds a segment of at most `1 << SEGMENT_BITS` entries; the id of its first. An empty one (a
    /// batch of rejected or ineligible rows) takes no number, which no key refers to: numbers run
    /// out only after 2^22 segments of eligible rows, far past what memory holds, where blank or
    /// rejected lines (a few bytes each) would reach that in a few GiB of file.
    pub fn push_segment(&mut self, segment: Vec<Entry>) -> EntryId {
        debug_assert!(segment.len() <= 1 << SEGMENT_BITS);
        if segment.is_empty() {
            return 0;
        }
        self.segments.push(segment);
        ((self.segments.len() - 1) as u32) << SEGMENT_BITS
    }

    /// The bytes a span of the row blocks covers.
    pub fn in_rows(&self, s: Span) -> &[u8] {
        in_blocks(&self.rows, s)
    }

    /// The bytes a span of the key blocks covers.
    pub fn in_keys(&self, s: Span) -> &[u8] {
        in_blocks(&self.keys, s)
    }

    /// Adds an empty row block and its key block; their number.
    pub fn new_block(&mut self) -> usize {
        self.rows.push(Vec::new());
        self.keys.push(Vec::new());
        self.rows.len() - 1
    }

    /// The entry's row as the table wrote it, rebuilt from its shape where it was stored compactly.
    pub fn row_json(&self, e: &Entry) -> std::borrow::Cow<'_, str> {
        if let Some(layout) = e.layout() {
            let rebuilt = self.layouts.get(layout as usize).and_then(|t| t.rebuild(self.in_rows(e.row())));
            // Rows were validated as UTF-8 JSON when loaded, and a layout gives them back whole.
            return rebuilt.and_then(|r| String::from_utf8(r).ok()).unwrap_or_else(|| "{}".into()).into();
        }
        // Rows were validated as UTF-8 JSON when loaded.
        let text = std::str::from_utf8(self.in_rows(e.row())).unwrap_or("{}");
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

    /// Adds a layout unless it is known already or the list is full.
    pub(crate) fn intern_layout(&mut self, t: std::sync::Arc<Template>) {
        if self.layouts.len() < MAX_LAYOUTS && !self.layouts.contains(&t) {
            self.layouts.push(t);
        }
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
        let (x, y) = (self.get(a), self.get(b));
        if x.confidence != y.confidence {
            return x.confidence > y.confidence;
        }
        let (mx, my) = (self.in_rows(x.modified()), self.in_rows(y.modified()));
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

    /// The winner between an exact key's row and the networks around it, where either exists.
    fn with_networks(&self, exact: Option<EntryId>, network: Option<EntryId>) -> Option<EntryId> {
        match (exact, network) {
            (exact, Some(n)) => Some(self.best(exact, n)),
            (exact, None) => exact,
        }
    }
}

/// A key read from a row, waiting for its shard: its hash, and the row's entry (numbered within its
/// batch until the batch is absorbed).
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    hash: u64,
    entry: EntryId,
    key: PendingKey,
}

/// A key as the index files it: text keys already copied into the key blocks.
#[derive(Debug, Clone, Copy)]
enum PendingKey {
    V4(u32),
    V6(u128),
    Net(Net),
    Text(usize, Span),
}

/// The keys of one batch of rows, by shard, in file order.
#[derive(Debug)]
pub struct ShardedKeys(Vec<Vec<Pending>>);

impl Default for ShardedKeys {
    fn default() -> Self {
        ShardedKeys((0..SHARDS).map(|_| Vec::new()).collect())
    }
}

impl ShardedKeys {
    /// Files `key` for entry `entry`; a text key's bytes are appended to `block`, the key block that
    /// will be block number `block_index`.
    pub fn push(&mut self, key: &Key<'_>, entry: EntryId, block: &mut Vec<u8>, block_index: u64) {
        let (hash, key) = pending_key(key, block, block_index);
        self.0[shard_of(hash)].push(Pending { hash, entry, key });
    }
}

fn pending_key(key: &Key<'_>, block: &mut Vec<u8>, block_index: u64) -> (u64, PendingKey) {
    let hash = key_hash(key);
    let key = match key {
        Key::Ip(Ip::V4(a)) => PendingKey::V4(*a),
        Key::Ip(Ip::V6(a)) => PendingKey::V6(*a),
        Key::Net(n) => PendingKey::Net(*n),
        Key::Text(kind, t) => {
            let off = block.len() as u64;
            block.extend_from_slice(t.as_bytes());
            PendingKey::Text(text_slot(*kind), Span { off: (block_index << 32) | off, len: t.len() as u32 })
        }
    };
    (hash, key)
}

/// The exact keys whose hash picks this shard.
#[derive(Debug, Default)]
struct Shard {
    v4: ProbeTable<V4Key>,
    v6: HashTable<(u128, EntryId)>,
    nets: HashTable<(Net, EntryId)>,
    /// Per text slot (domains, emails, hashes, urls).
    text: [ProbeTable<TextKey>; 4],
}

/// What a hash table holds for a key: the key and its winning entry.
trait Filed {
    fn winner(&mut self) -> &mut EntryId;
}

impl<K> Filed for (K, EntryId) {
    fn winner(&mut self) -> &mut EntryId {
        &mut self.1
    }
}

/// Files `new` in `table`, or where its key is there already, keeps whichever entry wins.
fn file<T: Filed>(
    table: &mut HashTable<T>,
    hash: u64,
    eq: impl FnMut(&T) -> bool,
    rehash: impl Fn(&T) -> u64,
    mut new: T,
    entries: &Entries,
) {
    match table.entry(hash, eq, rehash) {
        Slot::Occupied(mut o) => {
            let (slot, entry) = (o.get_mut().winner(), *new.winner());
            if entries.better(entry, *slot) {
                *slot = entry;
            }
        }
        Slot::Vacant(v) => {
            v.insert(new);
        }
    }
}

impl Shard {
    fn insert(&mut self, entries: &Entries, hash: u64, key: PendingKey, entry: EntryId) {
        match key {
            PendingKey::V4(a) => {
                self.v4.file(hash, V4Key { addr: a, entry }, |e| e.addr == a, |e| hash_v4(e.addr), entries)
            }
            PendingKey::V6(a) => file(&mut self.v6, hash, |e| e.0 == a, |e| hash_v6(e.0), (a, entry), entries),
            PendingKey::Net(n) => file(&mut self.nets, hash, |e| e.0 == n, |e| hash_net(&e.0), (n, entry), entries),
            PendingKey::Text(slot, span) => {
                let text = entries.in_keys(span);
                let new = TextKey { hash, at: span.off, len: span.len, entry };
                let eq = |e: &TextKey| e.hash == hash && entries.in_keys(e.span()) == text;
                self.text[slot].file(hash, new, eq, |e| e.hash, entries)
            }
        }
    }

    fn prefetch_slot(&self, p: &Pending) {
        match p.key {
            PendingKey::V4(_) => {
                if let Some(s) = self.v4.first_slot(p.hash) {
                    prefetch(s);
                }
            }
            PendingKey::Text(slot, _) => {
                if let Some(s) = self.text[slot].first_slot(p.hash) {
                    prefetch(s);
                }
            }
            PendingKey::V6(_) | PendingKey::Net(_) => {}
        }
    }

    fn find_text(&self, entries: &Entries, slot: usize, key: &[u8], hash: u64) -> Option<EntryId> {
        self.text[slot].find(hash, |e| e.hash == hash && entries.in_keys(e.span()) == key).map(|e| e.entry)
    }
}

/// Collects keys while a table loads; `finish` turns it into an `Index`.
pub struct IndexBuilder {
    pub entries: Entries,
    shards: Vec<Shard>,
}

impl Default for IndexBuilder {
    fn default() -> Self {
        IndexBuilder { entries: Entries::default(), shards: (0..SHARDS).map(|_| Shard::default()).collect() }
    }
}

impl IndexBuilder {
    pub fn push_entry(&mut self, e: Entry) -> EntryId {
        let segments = &mut self.entries.segments;
        if segments.last().is_none_or(|s| s.len() == 1 << SEGMENT_BITS) {
            segments.push(Vec::new());
        }
        let s = segments.len() - 1;
        segments[s].push(e);
        ((s as u32) << SEGMENT_BITS) | (segments[s].len() - 1) as u32
    }

    /// Sizes every table for `factor` times the `keys` of a first part of the file, so that they are
    /// not rehashed again and again as the rest loads, but with no more than about `budget` bytes
    /// of slots: a first part much denser in keys than the rest (short rows, then long or expired
    /// ones) would otherwise size them for keys that never come, in memory every slot of which is
    /// written. Tables grow past the budget as keys arrive.
    pub fn reserve_for<'k>(&mut self, keys: impl Iterator<Item = &'k ShardedKeys>, factor: f64, budget: usize) {
        if !(1.5..1e6).contains(&factor) {
            return;
        }
        // Per shard: IPv4, IPv6, then the text slots.
        let mut counts = vec![[0usize; 6]; SHARDS];
        for k in keys {
            for (s, list) in k.0.iter().enumerate() {
                for p in list {
                    let at = match p.key {
                        PendingKey::V4(_) => 0,
                        PendingKey::V6(_) => 1,
                        PendingKey::Text(slot, _) => 2 + slot,
                        PendingKey::Net(_) => continue,
                    };
                    counts[s][at] += 1;
                }
            }
        }
        let slot_bytes = [size_of::<V4Key>(), size_of::<(u128, EntryId)>(), size_of::<TextKey>()];
        let wanted: f64 = counts
            .iter()
            .flat_map(|n| n.iter().enumerate())
            .map(|(at, n)| (n * slot_bytes[at.min(2)]) as f64 * factor * 4.0 / 3.0)
            .sum();
        let factor = factor * (budget as f64 / wanted.max(1.0)).min(1.0);
        let scaled = |n: usize| (n as f64 * factor) as usize;
        self.shards.par_iter_mut().zip(counts).for_each(|(shard, n)| {
            shard.v4.reserve(scaled(n[0]), |e| hash_v4(e.addr));
            shard.v6.reserve(scaled(n[1]), |e| hash_v6(e.0));
            for (t, n) in shard.text.iter_mut().zip(&n[2..]) {
                t.reserve(scaled(*n), |e| e.hash);
            }
        });
    }

    /// Makes `entry` reachable under `key`, keeping whichever candidate wins. A text key's bytes go
    /// to the last key block.
    pub fn insert(&mut self, key: Key<'_>, entry: EntryId) {
        if self.entries.keys.is_empty() {
            self.entries.new_block();
        }
        let block_index = self.entries.keys.len() - 1;
        let block = &mut self.entries.keys[block_index];
        let (hash, key) = pending_key(&key, block, block_index as u64);
        self.shards[shard_of(hash)].insert(&self.entries, hash, key, entry);
    }

    /// Inserts batches of keys, each with the id its batch's first entry was given, every shard on
    /// whichever core is free. Their entries and text must be in `entries` already.
    pub fn insert_batches(&mut self, batches: &[(EntryId, ShardedKeys)]) {
        let entries = &self.entries;
        // Each key's first slot is fetched a few keys ahead of its insert: against a large table
        // nearly every insert is otherwise a cache miss of its own.
        const AHEAD: usize = 8;
        self.shards.par_iter_mut().enumerate().for_each(|(s, shard)| {
            let keys = batches.iter().flat_map(|(base, keys)| keys.0[s].iter().map(move |p| (*base, p)));
            let mut ahead = keys.clone().skip(AHEAD);
            for (base, p) in keys {
                if let Some((_, next)) = ahead.next() {
                    shard.prefetch_slot(next);
                }
                shard.insert(entries, p.hash, p.key, base + p.entry);
            }
        });
    }

    pub fn finish(self) -> Index {
        let IndexBuilder { entries, shards } = self;
        let (mut n4, mut n6) = (Vec::new(), Vec::new());
        for &(n, e) in shards.iter().flat_map(|s| s.nets.iter()) {
            if n.v6 {
                n6.push((n, e))
            } else {
                n4.push((n, e))
            }
        }
        // The text filters and the address work share nothing: they run side by side.
        let ((seg4, seg6, blocks4), filters) = rayon::join(
            || {
                let seg4 = segments(&entries, n4);
                let seg6 = segments(&entries, n6);
                let n4 = shards.iter().map(|s| s.v4.len()).sum();
                let blocks4 = V4Blocks::build(n4, shards.iter().flat_map(|s| s.v4.iter().map(|e| e.addr)), &seg4);
                (Segments4::new(&seg4), seg6, blocks4)
            },
            || shards.par_iter().map(TextFilter::build).collect(),
        );
        Index { entries, shards, filters, seg4, seg6, blocks4 }
    }
}

/// Sweeps networks of one family in address order (outer before inner at the same start) and emits
/// disjoint segments, each with the winner among every network covering it.
fn segments(entries: &Entries, mut nets: Vec<(Net, EntryId)>) -> Vec<Segment> {
    nets.sort_unstable_by_key(|(n, _)| (n.start, n.prefix));
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
    for (n, mine) in nets {
        close_until(&mut out, &mut open, &mut cursor, Some(n.start));
        if let (Some(&(_, w)), Some(c)) = (open.last(), cursor) {
            if c < n.start {
                emit(&mut out, c, n.start - 1, w);
            }
        }
        cursor = Some(n.start);
        let effective = entries.best(open.last().map(|o| o.1), mine);
        open.push((n.end(), effective));
    }
    close_until(&mut out, &mut open, &mut cursor, None);
    out
}

/// IPv4 segments as three dense arrays: the starts a lookup searches take 4 bytes each, not the
/// 48 of a `Segment`, so thousands of networks stay in a core's cache.
#[derive(Debug, Default)]
struct Segments4 {
    starts: Vec<u32>,
    ends: Vec<u32>,
    winners: Vec<EntryId>,
}

impl Segments4 {
    fn new(segs: &[Segment]) -> Segments4 {
        // IPv4 segments hold 32-bit bounds.
        Segments4 {
            starts: segs.iter().map(|s| s.start as u32).collect(),
            ends: segs.iter().map(|s| s.end as u32).collect(),
            winners: segs.iter().map(|s| s.winner).collect(),
        }
    }

    fn find(&self, a: u32) -> Option<EntryId> {
        let i = self.starts.partition_point(|&s| s <= a).checked_sub(1)?;
        (a <= self.ends[i]).then(|| self.winners[i])
    }
}

fn find(segs: &[Segment], a: u128) -> Option<EntryId> {
    let i = segs.partition_point(|s| s.start <= a);
    let s = segs.get(i.checked_sub(1)?)?;
    (a <= s.end).then_some(s.winner)
}

/// One bit per IPv4 block (a /24 for a large table, larger blocks for a smaller one): set where the
/// table has an address or a network in that block. Nearly every address an alert holds is in no
/// table, and this answers that with one bit test instead of a hash probe and a binary search.
/// About 64 bits a key (so about one address in 64 that the table lacks gets past it), between
/// 8 KiB and 2 MiB: a small table's fits the processor's nearer caches and costs few page faults.
#[derive(Debug, Default)]
struct V4Blocks {
    bits: Vec<u64>,
    /// A block is an address shifted right by this much.
    shift: u32,
}

impl V4Blocks {
    /// `addrs` gives `n_addrs` addresses; `segs` are the IPv4 network segments.
    fn build(n_addrs: usize, addrs: impl Iterator<Item = u32>, segs: &[Segment]) -> V4Blocks {
        if n_addrs == 0 && segs.is_empty() {
            return V4Blocks::default();
        }
        let nbits = ((n_addrs + segs.len()) * 64).next_power_of_two().clamp(1 << 16, 1 << 24);
        let shift = 32 - nbits.trailing_zeros();
        let mut bits = vec![0u64; nbits / 64];
        let mut set = |block: usize| bits[block >> 6] |= 1 << (block & 63);
        for a in addrs {
            set((a >> shift) as usize);
        }
        for s in segs {
            // IPv4 segments hold 32-bit bounds.
            for block in (s.start as u32 >> shift) as usize..=(s.end as u32 >> shift) as usize {
                set(block);
            }
        }
        V4Blocks { bits, shift }
    }

    /// The word `may_hold` reads for `a`.
    fn word(&self, a: u32) -> Option<&u64> {
        self.bits.get((a.checked_shr(self.shift).unwrap_or(0) >> 6) as usize)
    }

    fn may_hold(&self, a: u32) -> bool {
        let block = a.checked_shr(self.shift).unwrap_or(0);
        self.word(a).is_some_and(|w| w & (1 << (block & 63)) != 0)
    }
}

/// One bit per hash of every text key (domains, emails, hashes, urls) of a shard, about 16 bits a
/// key: a clear bit proves a value is not in the table with one memory access, where the hash table
/// would need two or three (control bytes, bucket, the key's text).
#[derive(Debug)]
struct TextFilter {
    bits: Vec<u64>,
    mask: u64,
}

impl TextFilter {
    fn build(shard: &Shard) -> TextFilter {
        let keys: usize = shard.text.iter().map(ProbeTable::len).sum();
        if keys == 0 {
            return TextFilter { bits: Vec::new(), mask: 0 };
        }
        let nbits = (keys * 16).next_power_of_two().clamp(1 << 9, 1 << 30);
        let mut f = TextFilter { bits: vec![0; nbits / 64], mask: nbits as u64 - 1 };
        for k in shard.text.iter().flat_map(ProbeTable::iter) {
            let b = k.hash & f.mask;
            f.bits[(b >> 6) as usize] |= 1 << (b & 63);
        }
        f
    }

    fn may_hold(&self, hash: u64) -> bool {
        let b = hash & self.mask;
        self.bits.get((b >> 6) as usize).is_some_and(|w| w & (1 << (b & 63)) != 0)
    }
}

/// A text key's entry found by the key's hash alone, to be confirmed by its text.
#[derive(Debug, Clone, Copy)]
pub struct TextCandidate {
    span: Span,
    entry: EntryId,
}

/// Asks the processor to fetch the start of `what` into its cache; it never faults.
fn prefetch<T: ?Sized>(what: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and cannot fault, whatever the address; SSE
    // (which it needs) is part of x86_64 itself.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(std::ptr::from_ref(what).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = what;
}

/// A built table index. It answers for the `now` it was built with: eligibility was decided then.
#[derive(Debug)]
pub struct Index {
    pub entries: Entries,
    shards: Vec<Shard>,
    /// The text filter of each shard.
    filters: Vec<TextFilter>,
    seg4: Segments4,
    seg6: Vec<Segment>,
    blocks4: V4Blocks,
}

impl Index {
    /// `hash` is the address's `key_hash`.
    pub fn lookup_ip(&self, ip: Ip, hash: u64) -> Option<EntryId> {
        let shard = &self.shards[shard_of(hash)];
        match ip {
            Ip::V4(a) if !self.blocks4.may_hold(a) => None,
            Ip::V4(a) => {
                let exact = shard.v4.find(hash, |e| e.addr == a).map(|e| e.entry);
                self.entries.with_networks(exact, self.seg4.find(a))
            }
            Ip::V6(a) => {
                let exact = shard.v6.find(hash, |e| e.0 == a).map(|e| e.1);
                self.entries.with_networks(exact, find(&self.seg6, a))
            }
        }
    }

    /// With `subdomains`, every parent of a domain is a candidate too (`www.evil.com` -> `evil.com`,
    /// `com`), under the same winner rule. `hash` is the key's `key_hash`.
    pub fn lookup_text(&self, kind: Kind, key: &str, hash: u64, subdomains: bool) -> Option<EntryId> {
        let slot = text_slot(kind);
        let find =
            |name: &str, hash: u64| self.shards[shard_of(hash)].find_text(&self.entries, slot, name.as_bytes(), hash);
        let mut best = find(key, hash);
        if subdomains && kind == Kind::Domain {
            let mut name = key;
            while let Some((_, parent)) = name.split_once('.') {
                name = parent;
                if let Some(c) = find(name, hash_text(slot, name.as_bytes())) {
                    best = Some(self.entries.best(best, c));
                }
            }
        }
        best
    }

    /// The entry filed under a text key's hash, if any, with the key's text fetched into the cache
    /// ahead of `confirm_text`. (Subdomain matching takes `lookup_text`.)
    pub fn text_candidate(&self, kind: Kind, hash: u64) -> Option<TextCandidate> {
        let e = self.shards[shard_of(hash)].text[text_slot(kind)].find(hash, |e| e.hash == hash)?;
        prefetch(self.entries.in_keys(e.span()));
        Some(TextCandidate { span: e.span(), entry: e.entry })
    }

    /// The winner for a text key whose candidate `text_candidate` found: its entry where the texts
    /// agree; where they do not (two keys of one hash), the lookup proper decides.
    pub fn confirm_text(&self, c: TextCandidate, kind: Kind, key: &str, hash: u64) -> Option<EntryId> {
        if self.entries.in_keys(c.span) == key.as_bytes() {
            Some(c.entry)
        } else {
            self.lookup_text(kind, key, hash, false)
        }
    }

    /// False where `key` is surely not in the table (one memory access, no false "false"): callers
    /// test a batch of keys with this first, so the cache misses of the batch overlap. `hash` is the
    /// key's `key_hash`.
    pub fn may_match(&self, key: &Key<'_>, hash: u64, subdomains: bool) -> bool {
        match key {
            Key::Ip(Ip::V4(a)) => self.blocks4.may_hold(*a),
            Key::Ip(Ip::V6(_)) | Key::Net(_) => true,
            Key::Text(Kind::Domain, _) if subdomains => true,
            Key::Text(..) => self.filters[shard_of(hash)].may_hold(hash),
        }
    }

    /// Fetches into the cache the filter word `may_match` will read for `key`, so that a batch of
    /// keys fetched while later ones are still being read finds them there. Not the table slot: all
    /// but a few keys stop at the filter, and fetching every key's slot as well cost more than it
    /// saved (`prefetch_slot` fetches it for those that pass).
    pub fn prefetch(&self, key: &Key<'_>, hash: u64) {
        let s = shard_of(hash);
        match key {
            Key::Ip(Ip::V4(a)) => {
                if let Some(w) = self.blocks4.word(*a) {
                    prefetch(w);
                }
            }
            Key::Text(..) => {
                let f = &self.filters[s];
                if let Some(w) = f.bits.get(((hash & f.mask) >> 6) as usize) {
                    prefetch(w);
                }
            }
            Key::Ip(Ip::V6(_)) | Key::Net(_) => {}
        }
    }

    /// Fetches the first table slot a lookup of `key` reads (for a key that passed its filter).
    pub fn prefetch_slot(&self, key: &Key<'_>, hash: u64) {
        let shard = &self.shards[shard_of(hash)];
        match key {
            Key::Ip(Ip::V4(_)) => {
                if let Some(slot) = shard.v4.first_slot(hash) {
                    prefetch(slot);
                }
            }
            Key::Text(kind, _) => {
                if let Some(slot) = shard.text[text_slot(*kind)].first_slot(hash) {
                    prefetch(slot);
                }
            }
            Key::Ip(Ip::V6(_)) | Key::Net(_) => {}
        }
    }

    /// The winning entry for `key`; `hash` is its `key_hash`.
    pub fn lookup(&self, key: &Key<'_>, hash: u64, subdomains: bool) -> Option<EntryId> {
        match key {
            Key::Ip(ip) => self.lookup_ip(*ip, hash),
            Key::Text(kind, t) => self.lookup_text(*kind, t, hash, subdomains),
            Key::Net(_) => None,
        }
    }

    pub fn entry(&self, id: EntryId) -> &Entry {
        self.entries.get(id)
    }
}

#[cfg(test)]
impl Index {
    /// Bytes of IPv4 and text-key slots held, used or not.
    pub fn slot_bytes(&self) -> usize {
        let v4 = self.shards.iter().map(|s| s.v4.capacity() * size_of::<V4Key>());
        let text = self.shards.iter().flat_map(|s| s.text.iter().map(|t| t.capacity() * size_of::<TextKey>()));
        v4.chain(text).sum()
    }
}

#[cfg(test)]
impl Entry {
    /// An entry with no row and no id text: enough for the winner rule by confidence and id.
    pub fn bare(id_num: i64, confidence: i64) -> Entry {
        Entry {
            at: 0,
            row_len: 0,
            shape: VERBATIM,
            id_off: 0,
            id_len: 0,
            modified_off: 0,
            modified_len: 0,
            id_num,
            confidence,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicator::normalize;

    /// Builds an index from (key, confidence, modified, id) rows of kind ip.
    fn build(rows: &[(&str, i64, &str, i64)]) -> Index {
        let mut b = IndexBuilder::default();
        b.entries.new_block();
        for (key, confidence, modified, id_num) in rows {
            let at = b.entries.rows[0].len() as u64;
            b.entries.rows[0].extend_from_slice(modified.as_bytes());
            let e = b.push_entry(Entry {
                at,
                row_len: 0,
                shape: VERBATIM,
                id_off: 0,
                id_len: 0,
                modified_off: 0,
                modified_len: modified.len() as u32,
                id_num: *id_num,
                confidence: *confidence,
            });
            b.insert(normalize(Kind::Ip, key, true).unwrap(), e);
        }
        b.finish()
    }

    fn winner(ix: &Index, ip: &str) -> Option<i64> {
        let key = normalize(Kind::Ip, ip, false).unwrap();
        ix.lookup(&key, key_hash(&key), false).map(|e| ix.entry(e).id_num)
    }

    #[test]
    fn an_empty_segment_takes_no_entry_number() {
        let mut e = Entries::default();
        assert_eq!(e.push_segment(vec![Entry::bare(1, 10)]), 0);
        for _ in 0..5 {
            e.push_segment(Vec::new());
        }
        let second = e.push_segment(vec![Entry::bare(2, 20)]);
        assert_eq!(second, 1 << SEGMENT_BITS, "the next segment's number, as if no empty one came");
        assert_eq!(e.get(second).id_num, 2);
        assert_eq!(e.iter().map(|(id, x)| (id, x.id_num)).collect::<Vec<_>>(), [(0, 1), (second, 2)]);
    }

    #[test]
    fn a_text_candidate_counts_only_once_its_text_agrees() {
        let mut b = IndexBuilder::default();
        b.entries.new_block();
        let mut add = |text: &str, id: i64| {
            let e = b.push_entry(Entry::bare(id, 50));
            b.insert(normalize(Kind::Domain, text, true).unwrap(), e);
        };
        add("a.example", 1);
        add("b.example", 2);
        let ix = b.finish();
        let hash = |t: &str| key_hash(&normalize(Kind::Domain, t, false).unwrap());
        let (a, bb) = (hash("a.example"), hash("b.example"));
        let winner = |e: Option<EntryId>| e.map(|e| ix.entry(e).id_num);
        let ca = ix.text_candidate(Kind::Domain, a).unwrap();
        assert_eq!(winner(ix.confirm_text(ca, Kind::Domain, "a.example", a)), Some(1));
        // As if b.example's hash had found a.example's entry: the text decides, by the lookup proper.
        assert_eq!(winner(ix.confirm_text(ca, Kind::Domain, "b.example", bb)), Some(2));
        assert_eq!(winner(ix.confirm_text(ca, Kind::Domain, "c.example", hash("c.example"))), None);
        assert!(ix.text_candidate(Kind::Email, a).is_none(), "another kind's table");
    }

    #[test]
    fn the_ipv4_block_filter_is_sized_by_the_table_and_passes_every_address_it_holds() {
        let seg = |start: u32, end: u32| Segment { start: start.into(), end: end.into(), winner: 0 };
        let spread = |n: u32| (0..n).map(move |i| i.wrapping_mul(2_654_435_761));
        for n in [1u32, 100, 5_000, 300_000] {
            let segs = [seg(0x0a00_0000, 0x0aff_ffff), seg(0xc0a8_0100, 0xc0a8_01ff)];
            let f = V4Blocks::build(n as usize, spread(n), &segs);
            assert!(spread(n).all(|a| f.may_hold(a)), "{n} addresses: one refused");
            for a in [0x0a00_0000, 0x0a12_3456, 0x0aff_ffff, 0xc0a8_0100, 0xc0a8_01ff] {
                assert!(f.may_hold(a), "{n} addresses: {a:#x} in a network refused");
            }
            let bytes = f.bits.len() * 8;
            let want = if n <= 1_000 {
                8 << 10
            } else if n == 5_000 {
                64 << 10
            } else {
                2 << 20
            };
            assert_eq!(bytes, want, "{n} addresses");
        }
        // A small table's blocks are coarse, a large one's are /24s: either way, most of the
        // space is refused.
        let f = V4Blocks::build(1, std::iter::once(0x0102_0304), &[]);
        assert!(!f.may_hold(0x0902_0304) && !f.may_hold(0xffff_ffff));
        assert!(V4Blocks::build(0, std::iter::empty(), &[]).bits.is_empty());
        assert!(!V4Blocks::default().may_hold(0x0102_0304));
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
