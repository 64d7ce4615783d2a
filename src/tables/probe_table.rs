//! The hash table that holds a shard's IPv4 addresses and text keys (domains, emails, hashes,
//! urls): open addressing with linear probing.
//!
//! Why not hashbrown's: against a large table nearly every lookup that passes the filter is two
//! cache misses, one after the other (hashbrown's control bytes, then the bucket they point at), and
//! there is no way to fetch them ahead. Here the slot a key starts from follows from its hash alone,
//! so a batch of lookups can ask for all their slots at once (`prefetch`) and then find most keys in
//! the first slot they read.

use super::index::{Entries, EntryId, Span};

/// A text key: its hash (so that neither a probe nor a growth reads the text of a different key)
/// and where its normalized text lies in the key blocks.
#[derive(Debug, Clone, Copy)]
pub struct TextKey {
    pub hash: u64,
    pub at: u64,
    pub len: u32,
    pub entry: EntryId,
}

impl TextKey {
    pub fn span(&self) -> Span {
        Span { off: self.at, len: self.len }
    }
}

/// What a `ProbeTable` slot holds: a key and its winning entry, or nothing.
pub trait Probed: Copy {
    const VACANT: Self;
    fn is_vacant(&self) -> bool;
    fn winner(&mut self) -> &mut EntryId;
}

impl Probed for TextKey {
    /// No key's text is `u32::MAX` bytes long (a span cannot say so).
    const VACANT: TextKey = TextKey { hash: 0, at: 0, len: u32::MAX, entry: 0 };

    fn is_vacant(&self) -> bool {
        self.len == u32::MAX
    }

    fn winner(&mut self) -> &mut EntryId {
        &mut self.entry
    }
}

/// An IPv4 address key and its winning entry.
#[derive(Debug, Clone, Copy)]
pub struct V4Key {
    pub addr: u32,
    pub entry: EntryId,
}

impl Probed for V4Key {
    /// No entry is numbered `u32::MAX`: that would take 2^32 rows of 48 bytes, which no load reaches.
    const VACANT: V4Key = V4Key { addr: 0, entry: EntryId::MAX };

    fn is_vacant(&self) -> bool {
        self.entry == EntryId::MAX
    }

    fn winner(&mut self) -> &mut EntryId {
        &mut self.entry
    }
}

/// At most this share of the slots is used (`MAX_LOAD_NUM / MAX_LOAD_DEN`): linear probing gets
/// long past it, above all for keys that are not there.
const MAX_LOAD_NUM: usize = 3;
const MAX_LOAD_DEN: usize = 4;

#[derive(Debug)]
pub struct ProbeTable<T> {
    /// A power of two many, or none.
    slots: Vec<T>,
    len: usize,
}

impl<T> Default for ProbeTable<T> {
    fn default() -> Self {
        ProbeTable { slots: Vec::new(), len: 0 }
    }
}

impl<T: Probed> ProbeTable<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Slots held, used or not.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().filter(|s| !s.is_vacant())
    }

    /// The slot a key of this hash is first looked for in. The hash's own bits also pick the shard
    /// and the filter bit, so they are mixed again here, lest keys of one shard crowd together.
    fn home(&self, hash: u64) -> usize {
        let bits = self.slots.len().trailing_zeros();
        if bits == 0 {
            return 0;
        }
        (hash.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
    }

    /// Makes room for `more` keys beyond those held without growing again; `rehash` gives a held
    /// key's hash.
    pub fn reserve(&mut self, more: usize, rehash: impl Fn(&T) -> u64) {
        let want = self.len + more;
        if want * MAX_LOAD_DEN > self.slots.len() * MAX_LOAD_NUM {
            let slots = (want * MAX_LOAD_DEN).div_ceil(MAX_LOAD_NUM).next_power_of_two().max(16);
            let old = std::mem::replace(&mut self.slots, vec![T::VACANT; slots]);
            let mask = slots - 1;
            for k in old.into_iter().filter(|k| !k.is_vacant()) {
                let mut i = self.home(rehash(&k));
                while !self.slots[i].is_vacant() {
                    i = (i + 1) & mask;
                }
                self.slots[i] = k;
            }
        }
    }

    /// The key of this hash that `eq` accepts.
    pub fn find(&self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<&T> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(hash);
        loop {
            let s = &self.slots[i];
            if s.is_vacant() {
                return None;
            }
            if eq(s) {
                return Some(s);
            }
            i = (i + 1) & mask;
        }
    }

    /// The slot `find` will read first for this hash, to fetch into the cache ahead of it.
    pub fn first_slot(&self, hash: u64) -> Option<&T> {
        self.slots.get(self.home(hash))
    }

    /// Files `new`, whose hash is `hash`; where a key `eq` accepts is there already, keeps whichever
    /// entry wins.
    pub fn file(
        &mut self,
        hash: u64,
        mut new: T,
        mut eq: impl FnMut(&T) -> bool,
        rehash: impl Fn(&T) -> u64,
        entries: &Entries,
    ) {
        if new.is_vacant() {
            return;
        }
        self.reserve(1, rehash);
        let mask = self.slots.len() - 1;
        let mut i = self.home(hash);
        loop {
            let s = &mut self.slots[i];
            if s.is_vacant() {
                *s = new;
                self.len += 1;
                return;
            }
            if eq(s) {
                let entry = *new.winner();
                if entries.better(entry, *s.winner()) {
                    *s.winner() = entry;
                }
                return;
            }
            i = (i + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::index::{Entry, IndexBuilder};

    /// Entries numbered 0.. with the given confidences (their modified texts all empty).
    fn entries(confidences: impl Iterator<Item = i64>) -> IndexBuilder {
        let mut b = IndexBuilder::default();
        b.entries.new_block();
        for (n, confidence) in confidences.enumerate() {
            b.push_entry(Entry::bare(n as i64, confidence));
        }
        b
    }

    #[test]
    fn crowded_slots_and_growth_keep_every_key_and_its_winner() {
        // 3,000 addresses, each filed three times in a row (entries 3a+2, 3a+1, 3a with confidences
        // 50, 90, 10: the winner comes second, so neither keeping the first entry nor the last one
        // passes), under a hash that gives only 64 distinct homes: every key probes past others, and
        // the table grows many times from empty, moving keys whose winner is already decided.
        const N: u32 = 3_000;
        let b = entries((0..N * 3).map(|e| [10, 90, 50][e as usize % 3]));
        let hash = |a: u32| u64::from(a % 64) << 58;
        let mut t = ProbeTable::<V4Key>::default();
        for a in 0..N {
            for round in [2, 1, 0] {
                let new = V4Key { addr: a, entry: a * 3 + round };
                t.file(hash(a), new, |e| e.addr == a, |e| hash(e.addr), &b.entries);
            }
        }
        assert_eq!(t.len(), N as usize);
        assert_eq!(t.iter().count(), N as usize);
        for a in 0..N {
            let found = t.find(hash(a), |e| e.addr == a).map(|e| e.entry);
            assert_eq!(found, Some(a * 3 + 1), "address {a}");
        }
        assert!(t.find(hash(N), |e| e.addr == N).is_none(), "a key never filed");
        assert!(ProbeTable::<V4Key>::default().find(0, |_| true).is_none(), "an empty table");
    }

    #[test]
    fn a_reserved_table_does_not_move_its_keys_again() {
        let b = entries(std::iter::repeat_n(50, 1000));
        let hash = |a: u32| u64::from(a).wrapping_mul(0x2545_f491_4f6c_dd1d);
        let mut t = ProbeTable::<V4Key>::default();
        t.reserve(1000, |e| hash(e.addr));
        let slots = t.slots.len();
        for a in 0..1000 {
            t.file(hash(a), V4Key { addr: a, entry: a }, |e| e.addr == a, |e| hash(e.addr), &b.entries);
        }
        assert_eq!(t.slots.len(), slots);
        assert!(t.len() * MAX_LOAD_DEN <= slots * MAX_LOAD_NUM);
    }
}
