//! Row templates: the rows of a feed file nearly all share one layout, byte for byte outside their
//! strings and numbers. A template is that layout, learned from a row the general scanner accepted;
//! a later row is read against it by comparing the fixed bytes and scanning only the holes (string
//! contents, numbers). That skips the per-member grammar work of the general scanner, which was
//! most of a load's instructions.
//!
//! A row that differs anywhere (another key, an escape, one more tag) is not read by the template
//! and goes to the general scanner as before. A row the template reads is valid JSON: its fixed
//! bytes are those of a valid row, and every hole holds a plain string content or a valid number,
//! so it has the very structure the learned row had.
//!
//! A template also stores the rows it reads: their holes alone, each followed by a `"` (which no
//! hole holds), and gives the row back byte for byte from them. The fixed bytes (keys, nested keys,
//! punctuation) are kept once, in the template.

use crate::json::scan;

/// At most this many templates per batch of rows; further layouts are read by the general scanner.
pub const MAX_TEMPLATES: usize = 4;

/// How many member roles a reader can ask for (see [`Template::learn`]).
pub const ROLES: usize = 8;

/// Rows of its sample a plain layout must read before a hole they all share is made fixed bytes
/// (see [`Template::learn_with_constants`]).
pub const MIN_SAMPLE: usize = 32;

/// What follows a step's fixed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hole {
    /// Plain string content (no escape, no control character), up to the closing quote, which is
    /// the first fixed byte of the next step.
    Str,
    /// A JSON number.
    Num,
    /// Nothing: the last step.
    End,
}

/// Fixed bytes `text[at..at + len]`, then a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Step {
    at: u32,
    len: u32,
    hole: Hole,
}

/// A place in a row: `off` bytes after the end of hole `after` (or after the row's start, where
/// `after` is `u32::MAX`): that is, inside the fixed bytes of the step that follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    after: u32,
    off: u32,
}

/// Where a template finds the value of a member a reader wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleAt {
    /// The value is one hole: a string (the hole is its content) or a number.
    Hole(u32),
    /// The value is a list of plain strings: holes `from..to`, in order.
    Strings(u32, u32),
    /// Anything else (a literal, an object, a list of other things): the raw value's text.
    Raw(Place, Place),
}

/// Where the holes of a row read by a template lie, as (start, end) byte offsets, in order.
#[derive(Debug, Default)]
pub struct Holes {
    spans: Vec<(u32, u32)>,
}

impl Holes {
    /// The text of hole `k` of `line`.
    pub fn get<'a>(&self, line: &'a str, k: u32) -> &'a str {
        let (s, e) = self.spans[k as usize];
        &line[s as usize..e as usize]
    }

    fn pos(&self, p: Place) -> usize {
        let base = match p.after {
            u32::MAX => 0,
            k => self.spans[k as usize].1,
        };
        (base + p.off) as usize
    }
}

/// A step's fixed bytes as four little-endian words, and which of their bytes count: compared a
/// word at a time against a 32-byte window of the row, without a call or a loop.
#[derive(Debug, Clone, Copy, Default)]
struct Words {
    words: [u64; 4],
    masks: [u64; 4],
    /// Whether the fixed bytes fit the window's first half (most do), which alone is then compared.
    short: bool,
}

impl Words {
    /// `None` for fixed bytes longer than a window.
    fn new(lit: &[u8]) -> Option<Words> {
        let mut w = Words::default();
        if lit.len() > W {
            return None;
        }
        for (i, &c) in lit.iter().enumerate() {
            w.words[i / 8] |= u64::from(c) << (8 * (i % 8));
            w.masks[i / 8] |= 0xff << (8 * (i % 8));
        }
        w.short = lit.len() <= 16;
        Some(w)
    }

    /// Whether `window` starts with the fixed bytes.
    #[inline]
    fn starts(&self, window: &[u8; 32]) -> bool {
        let word = |k: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&window[8 * k..8 * k + 8]);
            (u64::from_le_bytes(w) ^ self.words[k]) & self.masks[k]
        };
        if self.short {
            word(0) | word(1) == 0
        } else {
            word(0) | word(1) | word(2) | word(3) == 0
        }
    }
}

/// The bytes of a window: fixed bytes compared a word at a time, and holes copied whole.
const W: usize = 32;

/// The 32-byte window of `b` at `i`, where `b` holds one.
#[inline]
fn window(b: &[u8], i: usize) -> Option<&[u8; W]> {
    b.get(i..i + W).and_then(|w| <&[u8; W]>::try_from(w).ok())
}

/// A step's fixed bytes as words, where they fit two windows (a hole made fixed joins the fixed
/// bytes around it, which may then pass one window).
#[derive(Debug, Clone, Copy)]
struct Fixed {
    head: Words,
    tail: Option<Words>,
}

impl Fixed {
    fn new(lit: &[u8]) -> Option<Fixed> {
        let (head, tail) = lit.split_at(lit.len().min(W));
        let tail = match tail {
            [] => None,
            t => Some(Words::new(t)?),
        };
        Some(Fixed { head: Words::new(head)?, tail })
    }

    /// Whether `b` holds the fixed bytes at `i`; `None` where the windows would pass its end.
    #[inline]
    fn at(&self, b: &[u8], i: usize) -> Option<bool> {
        if !self.head.starts(window(b, i)?) {
            return Some(false);
        }
        match &self.tail {
            None => Some(true),
            Some(t) => Some(t.starts(window(b, i + W)?)),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Template {
    text: Vec<u8>,
    steps: Vec<Step>,
    /// Per step, its fixed bytes as words, where they fit two windows.
    words: Vec<Option<Fixed>>,
    /// Per role, where its member's value is (the last member of that name, as `json.loads` keeps).
    roles: [Option<RoleAt>; ROLES],
}

/// Two templates are the same layout when their fixed bytes and holes are: the roles follow.
impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text && self.steps == other.steps
    }
}

impl Template {
    /// Learns the layout of `line`, a JSON object the general scanner accepted. `None` where the
    /// row is not one a template can serve: a key or a string with an escape. `role` names the
    /// members a reader wants by their keys (roles below [`ROLES`]).
    pub fn learn(line: &str, role: impl Fn(&str) -> Option<u8>) -> Option<Template> {
        Self::learn_fixing(line, &role, &|_| false)
    }

    /// Learns the layout of `line` as [`Template::learn`] does, but with every hole that holds the
    /// same text in each row of `sample` the plain layout reads (at least [`MIN_SAMPLE`] of them)
    /// made fixed bytes, outside the members of a role. A feed's constant fields (its log type, a
    /// TLP every row shares) are then compared with the rest of the fixed bytes, not scanned, and
    /// not stored row by row. A row where such a field differs is not read by this template: its
    /// batch learns the plain layout from it, as from any other new layout.
    pub fn learn_with_constants<'a>(
        line: &str,
        role: impl Fn(&str) -> Option<u8>,
        sample: impl IntoIterator<Item = &'a str>,
    ) -> Option<Template> {
        let plain = Self::learn_fixing(line, &role, &|_| false)?;
        let mut first = Holes::default();
        if !plain.read(line, &mut first) {
            return Some(plain);
        }
        let mut same = vec![true; first.spans.len()];
        let mut holes = Holes::default();
        let mut read = 0;
        for row in sample {
            if plain.read(row, &mut holes) {
                read += 1;
                for (k, same) in same.iter_mut().enumerate() {
                    *same &= holes.get(row, k as u32) == first.get(line, k as u32);
                }
            }
        }
        if read < MIN_SAMPLE || !same.contains(&true) {
            return Some(plain);
        }
        Self::learn_fixing(line, &role, &|k| same[k])
    }

    /// [`Template::learn`], with the holes `fixed` names (by their place among all of the row's
    /// holes) taken as fixed bytes, but for those inside a role's member.
    fn learn_fixing(line: &str, role: &dyn Fn(&str) -> Option<u8>, fixed: &dyn Fn(usize) -> bool) -> Option<Template> {
        if line.contains('\\') {
            return None;
        }
        let b = line.as_bytes();
        let base = line.as_ptr() as usize;
        let offset = |s: &str| s.as_ptr() as usize - base;
        // (key, value start, value end), in bytes of `line`.
        let mut spans: Vec<(&str, usize, usize)> = Vec::new();
        scan::walk_object(line, |sc, k, d| {
            let raw = sc.value(d)?;
            spans.push((k.text, offset(raw), offset(raw) + raw.len()));
            Some(())
        })?;
        // The holes, in order: (start, end, kind).
        let mut holes: Vec<(usize, usize, Hole)> = Vec::new();
        for &(_, start, end) in &spans {
            let mut i = start;
            while i < end {
                match b[i] {
                    b'"' => {
                        // No escapes (checked above): the next quote closes the string.
                        let close = i + 1 + b[i + 1..end].iter().position(|&c| c == b'"')?;
                        holes.push((i + 1, close, Hole::Str));
                        i = close + 1;
                    }
                    b'-' | b'0'..=b'9' => {
                        let stop = b[i..end]
                            .iter()
                            .position(|c| !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                            .map_or(end, |p| i + p);
                        holes.push((i, stop, Hole::Num));
                        i = stop;
                    }
                    _ => i += 1,
                }
            }
        }
        // The role of a member's key, where it has one a template can place.
        let role_of = |key: &str| role(key).filter(|r| usize::from(*r) < ROLES);
        let in_role = |h: &(usize, usize, Hole)| {
            spans.iter().any(|&(key, start, end)| start <= h.0 && h.1 <= end && role_of(key).is_some())
        };
        let mut k = 0;
        holes.retain(|h| {
            k += 1;
            !fixed(k - 1) || in_role(h)
        });
        let mut t = Template::default();
        let mut at = 0;
        for &(start, end, hole) in holes.iter().chain(&[(b.len(), b.len(), Hole::End)]) {
            t.steps.push(Step { at: t.text.len() as u32, len: (start - at) as u32, hole });
            t.words.push(Fixed::new(&b[at..start]));
            t.text.extend_from_slice(&b[at..start]);
            at = end;
        }
        // A place in the fixed bytes: after the last hole that ends at or before it.
        let place = |p: usize| -> Option<Place> {
            let (after, from) = match holes.iter().rposition(|h| h.1 <= p) {
                Some(k) => (k as u32, holes[k].1),
                None => (u32::MAX, 0),
            };
            // A place inside a hole is no place in the fixed bytes.
            let inside = holes.get(after.wrapping_add(1) as usize).is_some_and(|h| h.0 < p);
            (!inside).then_some(Place { after, off: (p - from) as u32 })
        };
        for (key, start, end) in spans {
            let Some(r) = role_of(key) else { continue };
            // The holes inside the value.
            let first = holes.partition_point(|h| h.0 < start);
            let last = holes.partition_point(|h| h.1 <= end);
            let inner = &holes[first..last];
            let at = match inner {
                [(s, e, Hole::Str)] if *s == start + 1 && *e == end - 1 => RoleAt::Hole(first as u32),
                [(s, e, Hole::Num)] if *s == start && *e == end => RoleAt::Hole(first as u32),
                [_, ..]
                    if inner.iter().all(|h| h.2 == Hole::Str) && {
                        // Exactly `["a","b",...]`: the value less its holes is `["` `","`... `"]`.
                        let mut bare = String::new();
                        let mut from = start;
                        for h in inner {
                            bare.push_str(&line[from..h.0]);
                            from = h.1;
                        }
                        bare.push_str(&line[from..end]);
                        bare == format!("[\"{}\"]", vec![""; inner.len()].join("\",\""))
                    } =>
                {
                    RoleAt::Strings(first as u32, last as u32)
                }
                _ => RoleAt::Raw(place(start)?, place(end)?),
            };
            t.roles[usize::from(r)] = Some(at);
        }
        Some(t)
    }

    /// Where the member of role `r` is, if the layout has one.
    pub fn role(&self, r: u8) -> Option<RoleAt> {
        self.roles.get(usize::from(r)).copied().flatten()
    }

    /// Whether hole `k` is a string's content (else a number).
    pub fn is_string(&self, k: u32) -> bool {
        self.steps.get(k as usize).is_some_and(|s| s.hole == Hole::Str)
    }

    /// The raw text of a member's value that `RoleAt::Raw` places.
    pub fn raw<'a>(&self, line: &'a str, holes: &Holes, at: RoleAt) -> &'a str {
        match at {
            RoleAt::Raw(start, end) => &line[holes.pos(start)..holes.pos(end)],
            RoleAt::Hole(k) if self.is_string(k) => {
                let (s, e) = holes.spans[k as usize];
                &line[s as usize - 1..e as usize + 1]
            }
            RoleAt::Hole(k) => holes.get(line, k),
            RoleAt::Strings(from, to) => {
                let (s, e) = (holes.spans[from as usize].0 - 2, holes.spans[to as usize - 1].1 + 2);
                &line[s as usize..e as usize]
            }
        }
    }

    /// Reads `line` against the template into `holes`; false where the row does not have this
    /// layout.
    pub fn read(&self, line: &str, holes: &mut Holes) -> bool {
        let b = line.as_bytes();
        holes.spans.clear();
        let mut i = 0;
        for (step, words) in self.steps.iter().zip(&self.words) {
            let len = step.len as usize;
            let same = match words.as_ref().and_then(|w| w.at(b, i)) {
                Some(same) => same,
                None => b.get(i..i + len) == self.text.get(step.at as usize..step.at as usize + len),
            };
            if !same {
                return false;
            }
            i += len;
            let start = i;
            i = match step.hole {
                Hole::Str => match scan::plain_end(line, i) {
                    end if b.get(end) == Some(&b'"') => end,
                    _ => return false,
                },
                Hole::Num => match plain_digits_end(b, i).or_else(|| scan::number_end(line, i)) {
                    Some(end) => end,
                    None => return false,
                },
                Hole::End => return i == b.len(),
            };
            holes.spans.push((start as u32, i as u32));
        }
        false
    }

    /// Where hole `k` of a row this template read starts among the bytes `store` writes for it (with
    /// `k` the number of holes: how many bytes it writes).
    pub fn stored_offset(&self, holes: &Holes, k: u32) -> usize {
        holes.spans[..k as usize].iter().map(|(s, e)| (e - s) as usize + 1).sum()
    }

    /// Appends a row this template read, as its holes each followed by `"` (which no hole holds).
    pub fn store(&self, line: &str, holes: &Holes, block: &mut Vec<u8>) {
        let b = line.as_bytes();
        let base = block.len();
        // Room for a whole window past the last hole: most holes are short, and a copy of a fixed
        // 32 bytes (then overwritten past the hole) is two vector moves where a copy of the
        // hole's length is a call to memcpy.
        block.resize(base + self.stored_offset(holes, holes.spans.len() as u32) + W, 0);
        let out = &mut block[base..];
        let mut at = 0;
        for &(s, e) in &holes.spans {
            let (s, e) = (s as usize, e as usize);
            let n = e - s;
            match (b.get(s..s + W), out.get_mut(at..at + W)) {
                (Some(window), Some(to)) if n <= W => to.copy_from_slice(window),
                _ => out[at..at + n].copy_from_slice(&b[s..e]),
            }
            at += n;
            out[at] = b'"';
            at += 1;
        }
        block.truncate(base + at);
    }

    /// The row `read` stored as `stored`, byte for byte; `None` where `stored` is not one.
    pub fn rebuild(&self, stored: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(self.text.len() + stored.len());
        let mut rest = stored;
        for step in &self.steps {
            out.extend_from_slice(self.text.get(step.at as usize..(step.at + step.len) as usize)?);
            if step.hole != Hole::End {
                let end = memchr::memchr(b'"', rest)?;
                out.extend_from_slice(&rest[..end]);
                rest = &rest[end + 1..];
            }
        }
        rest.is_empty().then_some(out)
    }
}

/// Where a number of plain digits starting at `i` ends: the common case of a JSON number (a count,
/// a score) read without the general rules. `None` where it is anything else (a sign, a leading
/// zero, a fraction or an exponent), which the general rules then read.
fn plain_digits_end(b: &[u8], i: usize) -> Option<usize> {
    let digits = b.get(i..)?.iter().take_while(|c| c.is_ascii_digit()).count();
    let end = i + digits;
    let plain = match digits {
        0 => false,
        1 => true,
        _ => b[i] != b'0',
    };
    (plain && !matches!(b.get(end), Some(b'.' | b'e' | b'E'))).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROW: &str = r#"{"id":"400000001","value":"38.158.13.55","match":["38.158.13.55","1.2.3.4"],"type":"ip","confidence":12,"status":"active","tags":[{"id":"t564","name":"nova","tlp":"white"}],"meta":{"severity":"low","n":-1.5e3,"ok":true,"none":null}, "p_log_type" : "Anomali.Indicator" , "e":"", "x":[] }"#;

    /// Roles for the test: each key below is a role, by its place in the list.
    const KEYS: [&str; ROLES] = ["id", "value", "match", "type", "confidence", "meta", "e", "x"];

    fn role(k: &str) -> Option<u8> {
        KEYS.iter().position(|r| *r == k).map(|r| r as u8)
    }

    /// Every role's raw value as the general scanner reads it (the last member of its name).
    fn general(line: &str) -> Option<Vec<Option<&str>>> {
        let mut out = vec![None; ROLES];
        scan::walk_object(line, |sc, k, d| {
            let raw = sc.value(d)?;
            if let Some(r) = role(k.text) {
                out[r as usize] = Some(raw);
            }
            Some(())
        })?;
        Some(out)
    }

    /// Every role's raw value as the template reads it, and the row rebuilt from its stored holes.
    fn read<'a>(t: &Template, line: &'a str) -> Option<Vec<Option<&'a str>>> {
        let mut holes = Holes::default();
        if !t.read(line, &mut holes) {
            return None;
        }
        let mut block = b"before".to_vec();
        t.store(line, &holes, &mut block);
        assert_eq!(t.rebuild(&block[6..]).as_deref(), Some(line.as_bytes()), "stored and rebuilt");
        for k in 0..holes.spans.len() as u32 {
            let at = 6 + t.stored_offset(&holes, k);
            assert_eq!(&block[at..at + holes.get(line, k).len()], holes.get(line, k).as_bytes(), "hole {k} as stored");
        }
        Some((0..ROLES as u8).map(|r| t.role(r).map(|at| t.raw(line, &holes, at))).collect())
    }

    #[test]
    fn a_template_reads_only_rows_of_its_layout_and_reads_them_as_the_general_scanner_does() {
        let t = Template::learn(ROW, role).unwrap();
        assert_eq!(read(&t, ROW), general(ROW));
        assert_eq!(t.role(2), Some(RoleAt::Strings(2, 4)), "match is a list of plain strings");
        assert!(matches!(t.role(0), Some(RoleAt::Hole(0))) && matches!(t.role(4), Some(RoleAt::Hole(_))));
        assert!(matches!(t.role(5), Some(RoleAt::Raw(..))) && matches!(t.role(7), Some(RoleAt::Raw(..))));
        mutants_are_read_only_where_valid_and_as_the_general_scanner_reads_them(&t, 0x2545_F491_4F6C_DD1D);
    }

    #[test]
    fn a_template_with_fixed_fields_reads_mutants_as_the_general_scanner_does() {
        // Every member outside a role is shared by the sample, so fixed: the fixed bytes around
        // `tags` and `p_log_type` then pass one window (up to two, and past two).
        let sample = vec![ROW; MIN_SAMPLE];
        let t = Template::learn_with_constants(ROW, role, sample).unwrap();
        let plain = Template::learn(ROW, role).unwrap();
        assert!(t.steps.len() < plain.steps.len() && t.steps.iter().any(|s| s.len as usize > 2 * W));
        assert!(t.steps.iter().any(|s| (W + 1..=2 * W).contains(&(s.len as usize))));
        assert_eq!(read(&t, ROW), general(ROW));
        mutants_are_read_only_where_valid_and_as_the_general_scanner_reads_them(&t, 0x9E37_79B9_7F4A_7C15);
    }

    #[test]
    fn fields_every_sampled_row_shares_become_fixed_bytes_but_not_roles_nor_on_a_thin_sample() {
        let row =
            |id: u32, feed: &str| format!(r#"{{"id":"{id}","type":"ip","feed":"{feed}","tlp":"white","n":{id}}}"#);
        let first = row(1, "F1");
        let rows: Vec<String> = (2..2 + MIN_SAMPLE as u32).map(|i| row(i, "F1")).collect();
        let sample = || rows.iter().map(String::as_str);
        let plain = Template::learn(&first, role).unwrap();
        let t = Template::learn_with_constants(&first, role, sample()).unwrap();
        // `feed` and `tlp` are fixed; `type` is shared too, but a role, and `id` and `n` differ.
        assert_eq!(t.steps.len(), plain.steps.len() - 2);
        assert!(matches!(t.role(3), Some(RoleAt::Hole(_))), "type stays a hole");
        let other = row(77, "F1");
        assert_eq!(read(&t, &other), general(&other));
        let stored = |t: &Template, line: &str| {
            let mut holes = Holes::default();
            assert!(t.read(line, &mut holes));
            t.stored_offset(&holes, holes.spans.len() as u32)
        };
        assert_eq!(stored(&plain, &other), stored(&t, &other) + "F1".len() + 1 + "white".len() + 1);
        // A row where one of them differs is not read by it (its batch learns the plain layout).
        assert_eq!(read(&t, &row(78, "F2")), None);
        assert_eq!(read(&plain, &row(78, "F2")), general(&row(78, "F2")));
        // One sampled row fewer than `MIN_SAMPLE`, or one that differs: not fixed.
        assert_eq!(Template::learn_with_constants(&first, role, sample().skip(1)), Some(plain.clone()));
        let f2 = row(99, "F2");
        let t = Template::learn_with_constants(&first, role, sample().chain([f2.as_str()])).unwrap();
        assert_eq!(t.steps.len(), plain.steps.len() - 1, "only tlp is fixed");
        assert_eq!(read(&t, &f2), general(&f2));
    }

    /// Random mutations of `ROW`: those `t` reads are valid JSON, read as the general scanner reads
    /// them (and stored and rebuilt byte for byte); many are read and many refused.
    fn mutants_are_read_only_where_valid_and_as_the_general_scanner_reads_them(t: &Template, seed: u64) {
        mutants_of_are_read_only_where_valid_and_as_the_general_scanner_reads_them(t, None, ROW, seed, 100_000, 5_000);
    }

    /// As above, for `rounds` mutants of `row`, at least `min_read` of them read; where `plain` is
    /// given (the template `t` folds), every mutant `t` reads, `plain` reads too, and alike.
    fn mutants_of_are_read_only_where_valid_and_as_the_general_scanner_reads_them(
        t: &Template,
        plain: Option<&Template>,
        row: &str,
        seed: u64,
        rounds: usize,
        min_read: usize,
    ) {
        let mut next = scan::test_rng(seed);
        let alphabet: Vec<char> = "\"\\{}[]:,0123456789-+.eE \t\n\u{1}atrufnlé".chars().collect();
        let (mut same_layout, mut refused) = (0, 0);
        for _ in 0..rounds {
            let mut chars: Vec<char> = row.chars().collect();
            for _ in 0..1 + next(2) {
                let at = next(chars.len());
                let c = alphabet[next(alphabet.len())];
                match next(3) {
                    0 => chars[at] = c,
                    1 => chars.insert(at, c),
                    _ => {
                        chars.remove(at);
                    }
                }
            }
            let line: String = chars.into_iter().collect();
            match read(t, &line) {
                Some(members) => {
                    same_layout += 1;
                    assert!(serde_json::from_str::<serde_json::Value>(&line).is_ok(), "accepted invalid JSON: {line}");
                    if let Some(plain) = plain {
                        assert_eq!(read(plain, &line).as_ref(), Some(&members), "the plain layout: {line}");
                    }
                    assert_eq!(Some(members), general(&line), "{line}");
                }
                None => refused += 1,
            }
        }
        assert!(same_layout > min_read && refused > rounds / 20, "read {same_layout}, refused {refused}");
    }

    #[test]
    fn folded_numbers_empty_strings_objects_and_a_last_member_read_as_the_plain_layout_does() {
        // Roles here: id, value, match, type, confidence, meta, e, x (`KEYS`); the rest folds.
        let rows = [
            r#"{"n":5,"id":"1","value":"a","type":"ip","k":[1,-2.5e3,"",0],"w":"","o":{"a":"","b":7},"z":5}"#,
            r#"{"type":"ip","value":"b","id":"2","q":"","r":"","confidence":5,"s":55,"match":["a",""],"t":true,"u":"c"}"#,
            r#"{"a":0,"b":-0,"c":1e5,"e":null,"d":"x","id":9,"type":"ip","value":"v","zz":"end"}"#,
        ];
        for (i, row) in rows.into_iter().enumerate() {
            let plain = Template::learn(row, role).unwrap();
            let t = Template::learn_with_constants(row, role, vec![row; MIN_SAMPLE]).unwrap();
            assert!(t.steps.len() < plain.steps.len(), "row {i} folds");
            assert_eq!(read(&t, row), general(row));
            mutants_of_are_read_only_where_valid_and_as_the_general_scanner_reads_them(
                &t,
                Some(&plain),
                row,
                0x1234 + i as u64,
                60_000,
                // A row with most of its bytes fixed has few mutants left to read (about 3 in 100).
                600,
            );
        }
        // A folded number is followed by a fixed byte that no digit is: `5,` is not `55,`.
        let t = Template::learn_with_constants(rows[0], role, vec![rows[0]; MIN_SAMPLE]).unwrap();
        assert_eq!(read(&t, &rows[0].replace(r#""n":5,"#, r#""n":55,"#)), None);
    }

    #[test]
    fn fixed_bytes_compare_a_word_at_a_time_as_bytes_compare() {
        let mut next = scan::test_rng(77);
        let byte = |next: &mut dyn FnMut(usize) -> usize| b"ab\"{"[next(4)];
        for len in 0..=70usize {
            let lit: Vec<u8> = (0..len).map(|_| byte(&mut next)).collect();
            let fixed = Fixed::new(&lit);
            assert_eq!(fixed.is_some(), len <= 2 * W, "{len} bytes");
            let Some(fixed) = fixed else { continue };
            for _ in 0..2000 {
                let pre = next(5);
                let mut b = vec![b'x'; pre];
                b.extend_from_slice(&lit);
                let post = next(80);
                b.extend((0..post).map(|_| byte(&mut next)));
                if next(2) == 0 {
                    let k = next(b.len().max(1));
                    if let Some(c) = b.get_mut(k) {
                        *c = byte(&mut next);
                    }
                }
                if next(4) == 0 && b.len() > pre {
                    let cut = pre + next(b.len() - pre);
                    b.truncate(cut);
                }
                // Past the row's end the caller compares bytes; anywhere else, the words must agree.
                if let Some(same) = fixed.at(&b, pre) {
                    assert_eq!(same, b.get(pre..pre + len) == Some(&lit[..]), "{len} bytes at {pre} of {b:?}");
                }
            }
        }
    }

    #[test]
    fn rows_with_escapes_teach_no_template() {
        assert!(Template::learn(r#"{"id":"a\"b","type":"ip"}"#, |_| None).is_none());
        assert!(Template::learn(r#"{"i\u0064":"1"}"#, |_| None).is_none());
        let t = Template::learn(r#"{"id":"1","value":"x"}"#, role).unwrap();
        assert!(read(&t, r#"{"id":"2","value":"a\u0041"}"#).is_none(), "an escape goes to the general scanner");
        assert!(read(&t, r#"{"id":2,"value":"y"}"#).is_none(), "a number where a string was");
        assert!(read(&t, r#"{"id":"2","value":"y","x":1}"#).is_none(), "one more member");
        assert_eq!(read(&t, r#"{"id":"22","value":"yé"}"#).map(|m| m[1]), Some(Some("\"yé\"")));
    }

    #[test]
    fn a_repeated_member_is_read_as_its_last_value_and_templates_compare_by_layout() {
        let t = Template::learn(r#"{"id":"1","id":2}"#, role).unwrap();
        assert_eq!(read(&t, r#"{"id":"9","id":35}"#).map(|m| m[0]), Some(Some("35")));
        assert_eq!(Template::learn(r#"{"id":"7","id":8}"#, role), Some(t.clone()));
        assert_ne!(Template::learn(r#"{"id":"7","id":"8"}"#, role), Some(t));
    }
}
