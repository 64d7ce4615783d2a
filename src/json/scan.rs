//! A validating JSON scanner for the hot paths: it checks a whole value against the JSON grammar and
//! hands back the members of a top-level object as raw slices, without building anything.
//!
//! Why not only serde_json: table rows and alert events are mostly fields we never read, and skipping
//! them byte by byte dominated load time. This scanner finds string ends with `memchr` and does
//! nothing else per byte. It accepts a value only when serde_json would accept it too; wherever it
//! is unsure (a key with an escape, nesting deeper than serde's limit) it answers `None` and the
//! caller falls back to serde_json, which then decides and explains. A differential test holds the
//! two to the same verdicts.

/// serde_json's recursion limit: deeper values are refused by it, so we never accept them.
const MAX_DEPTH: u32 = 128;

/// A cursor over JSON text that validates as it goes. Callers walk objects and arrays with
/// callbacks that must consume exactly one value each (`value` does for anything they skip).
pub struct Scanner<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Flags (in the high bit of each byte) the bytes of `w` that end a plain run of string content:
/// `"`, `\` or a control character. The lowest flag is exact, which is all we use.
#[inline]
fn specials(w: u64) -> u64 {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    zero(w ^ (ONES * u64::from(b'"')))
        | zero(w ^ (ONES * u64::from(b'\\')))
        | (w.wrapping_sub(ONES * 0x20) & !w & HIGHS)
}

impl<'a> Scanner<'a> {
    fn new(s: &'a str) -> Self {
        Scanner { s, b: s.as_bytes(), i: 0 }
    }

    #[inline(always)]
    fn ws(&mut self) {
        while let Some(c) = self.b.get(self.i) {
            match c {
                b' ' | b'\t' | b'\n' | b'\r' => self.i += 1,
                _ => break,
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// Moves the cursor to the next `"`, `\` or control character of a string's content.
    #[inline]
    fn skip_plain(&mut self) {
        #[cfg(target_arch = "x86_64")]
        {
            // SSE2 is part of x86_64 itself, so this needs no run-time check.
            use std::arch::x86_64::{
                _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
            };
            while self.i + 16 <= self.b.len() {
                // SAFETY: the 16 bytes read start at `i` and end within `b`, as checked above.
                let mask = unsafe {
                    let v = _mm_loadu_si128(self.b.as_ptr().add(self.i).cast());
                    let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
                    let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
                    // max(v, 0x1f) == 0x1f exactly for the bytes <= 0x1f (unsigned).
                    let control = _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1f)), _mm_set1_epi8(0x1f));
                    _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control))
                };
                if mask != 0 {
                    self.i += mask.trailing_zeros() as usize;
                    return;
                }
                self.i += 16;
            }
        }
        while let Some(chunk) = self.b.get(self.i..self.i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            let m = specials(u64::from_le_bytes(w));
            if m != 0 {
                self.i += (m.trailing_zeros() / 8) as usize;
                return;
            }
            self.i += 8;
        }
        while let Some(&c) = self.b.get(self.i) {
            if c == b'"' || c == b'\\' || c < 0x20 {
                return;
            }
            self.i += 1;
        }
    }

    /// A string at the cursor; returns its content and whether it holds escapes.
    #[inline(always)]
    fn string(&mut self) -> Option<(&'a str, bool)> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            self.skip_plain();
            match self.peek()? {
                b'"' => {
                    let content = &self.s[start..self.i];
                    self.i += 1;
                    return Some((content, escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.i += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            let hex = self.b.get(self.i + 1..self.i + 5)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.i += 5;
                        }
                        _ => return None,
                    }
                }
                // A control character: JSON wants it escaped.
                _ => return None,
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        (self.b.get(self.i..self.i + word.len())? == word).then(|| self.i += word.len())
    }

    /// One value of any kind at the cursor, validated; returns its raw text.
    pub fn value(&mut self, depth: u32) -> Option<&'a str> {
        let start = self.i;
        self.skip_value(depth)?;
        Some(&self.s[start..self.i])
    }

    /// Validates and passes over one value the caller does not keep. A string, the value most
    /// members that are passed over hold, is read in line rather than by the general walk.
    #[inline(always)]
    pub fn skip(&mut self, depth: u32) -> Option<()> {
        if self.peek() == Some(b'"') {
            return self.string().map(drop);
        }
        self.skip_value(depth)
    }

    /// Validates and skips one value inside a container at nesting `depth`. Nested containers are
    /// followed with a loop and a bit per open container (1 for an object), not by recursion: the
    /// values we skip (tags, metadata) are where most of a row's structure is.
    fn skip_value(&mut self, depth: u32) -> Option<()> {
        let mut objects: u128 = 0;
        let mut open: u32 = 0;
        'value: loop {
            match self.peek()? {
                b'"' => self.string().map(drop)?,
                c @ (b'{' | b'[') => {
                    if depth + open + 1 > MAX_DEPTH {
                        return None;
                    }
                    self.i += 1;
                    self.ws();
                    let object = c == b'{';
                    if self.eat(if object { b'}' } else { b']' }).is_none() {
                        objects = (objects << 1) | u128::from(object);
                        open += 1;
                        if object {
                            self.key_and_colon()?;
                        }
                        continue 'value;
                    }
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            }
            // Past a value: close what ends here, or go on to the next member or element.
            while open > 0 {
                self.ws();
                let object = objects & 1 == 1;
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        self.ws();
                        if object {
                            self.key_and_colon()?;
                        }
                        continue 'value;
                    }
                    b'}' if object => {}
                    b']' if !object => {}
                    _ => return None,
                }
                self.i += 1;
                objects >>= 1;
                open -= 1;
            }
            return Some(());
        }
    }

    /// A member's key and the colon after it, leaving the cursor at its value.
    #[inline]
    fn key_and_colon(&mut self) -> Option<()> {
        self.string()?;
        self.ws();
        self.eat(b':')?;
        self.ws();
        Some(())
    }

    /// One value at the cursor, validated: its raw text, and its content where it is a string
    /// without escapes (which the caller then need not scan again). In line: its answer built in the
    /// caller's registers is stored straight into the caller's list, where one returned through
    /// memory was copied in a width the store could not forward (a stall per list element).
    #[inline(always)]
    pub fn value_or_plain(&mut self, depth: u32) -> Option<(&'a str, Option<&'a str>)> {
        if self.peek() != Some(b'"') {
            return self.value(depth).map(|raw| (raw, None));
        }
        let start = self.i;
        let (content, escaped) = self.string()?;
        Some((&self.s[start..self.i], (!escaped).then_some(content)))
    }

    /// An array at the cursor (in place of `value(depth)`), validated, with each element handed to
    /// `element` as [`Scanner::value_or_plain`] reads it; returns the array's raw text. Callers that
    /// want a list's elements read them here, in the one pass, rather than scanning the text again.
    pub fn array_of_values(
        &mut self,
        depth: u32,
        mut element: impl FnMut(&'a str, Option<&'a str>),
    ) -> Option<&'a str> {
        let start = self.i;
        self.array(depth + 1, |sc, d| {
            let (raw, plain) = sc.value_or_plain(d)?;
            element(raw, plain);
            Some(())
        })?;
        Some(&self.s[start..self.i])
    }

    /// Whether the cursor is at an object.
    pub fn at_object(&self) -> bool {
        self.peek() == Some(b'{')
    }

    /// Whether the cursor is at an array.
    pub fn at_array(&self) -> bool {
        self.peek() == Some(b'[')
    }

    /// An object at the cursor. `member` gets each key with the cursor at the value, which it must
    /// consume.
    pub fn object(
        &mut self,
        depth: u32,
        mut member: impl FnMut(&mut Self, RawKey<'a>, u32) -> Option<()>,
    ) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'{')?;
        self.ws();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let (key, escaped) = self.string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            member(self, RawKey { text: key, escaped }, depth)?;
            if self.next_or_close(b'}')? {
                return Some(());
            }
        }
    }

    /// An array at the cursor; `element` is called with the cursor at each element, which it must
    /// consume.
    pub fn array(&mut self, depth: u32, mut element: impl FnMut(&mut Self, u32) -> Option<()>) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'[')?;
        self.ws();
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            element(self, depth)?;
            if self.next_or_close(b']')? {
                return Some(());
            }
        }
    }

    /// After a member or element: past a `,` (false) or the closing `close` (true); `None` if
    /// neither follows.
    fn next_or_close(&mut self, close: u8) -> Option<bool> {
        self.ws();
        let c = self.peek()?;
        self.i += 1;
        if c == close {
            return Some(true);
        }
        (c == b',').then(|| self.ws()).map(|()| false)
    }

    fn end(&mut self) -> Option<()> {
        self.ws();
        (self.i == self.b.len()).then_some(())
    }
}

/// A member's key as it stands between the quotes, with whether it holds escapes.
#[derive(Debug, Clone, Copy)]
pub struct RawKey<'a> {
    pub text: &'a str,
    pub escaped: bool,
}

impl<'a> RawKey<'a> {
    /// The key's text: borrowed where it has no escapes.
    pub fn decoded(self) -> std::borrow::Cow<'a, str> {
        if self.escaped {
            unescape(self.text).into()
        } else {
            self.text.into()
        }
    }

    /// Whether the key reads `name` (plain keys compare without decoding).
    pub fn is(self, name: &str) -> bool {
        if self.escaped {
            unescape(self.text) == name
        } else {
            self.text == name
        }
    }
}

/// Decodes the content of a string this scanner validated. A lone surrogate escape (`\ud800`),
/// which JSON allows but UTF-8 cannot hold, becomes U+FFFD.
pub fn unescape(content: &str) -> String {
    let mut out = String::with_capacity(content.len());
    let mut rest = content;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let esc = &rest[i + 1..];
        let Some(c) = esc.chars().next() else { break };
        rest = &esc[c.len_utf8()..];
        match c {
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let hex = |t: &str| t.get(..4).and_then(|h| u32::from_str_radix(h, 16).ok());
                let Some(hi) = hex(rest) else { break };
                rest = &rest[4..];
                let lo = rest.strip_prefix("\\u").and_then(hex).filter(|lo| (0xDC00..0xE000).contains(lo));
                let code = match (hi, lo) {
                    (0xD800..=0xDBFF, Some(lo)) => {
                        rest = &rest[6..];
                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                    }
                    _ => hi,
                };
                out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
            }
            other => out.push(other),
        }
    }
    out.push_str(rest);
    out
}

/// Where the run of plain string content starting at byte `i` of `s` ends: at the first `"`, `\` or
/// control character, or the end of `s`.
pub fn plain_end(s: &str, i: usize) -> usize {
    let mut sc = Scanner { s, b: s.as_bytes(), i };
    sc.skip_plain();
    sc.i
}

/// Where the JSON number starting at byte `i` of `s` ends; `None` if no valid number starts there.
pub fn number_end(s: &str, i: usize) -> Option<usize> {
    let mut sc = Scanner { s, b: s.as_bytes(), i };
    sc.number()?;
    Some(sc.i)
}

/// Whether two short texts (member names) are equal, compared a word at a time in line: names
/// are compared for every member of every event, and a call to `memcmp` costs more than the compare.
#[inline]
pub fn same_name(a: &str, b: &str) -> bool {
    same_bytes(a.as_bytes(), b.as_bytes())
}

/// `a == b` for short runs of bytes, a word at a time in line (see [`same_name`]).
#[inline]
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if !(8..=32).contains(&a.len()) {
        return a == b;
    }
    let word = |s: &[u8], i: usize| s.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok());
    let last = a.len() - 8;
    [0, 8, 16, 24].iter().all(|&i| {
        let i = i.min(last);
        word(a, i) == word(b, i)
    })
}

/// Walks the JSON object `s` with `member` (see [`Scanner::object`]) and checks nothing follows it.
/// `None` where `s` is not valid JSON or `member` refused something.
pub fn walk_object<'a>(s: &'a str, member: impl FnMut(&mut Scanner<'a>, RawKey<'a>, u32) -> Option<()>) -> Option<()> {
    let mut sc = Scanner::new(s);
    sc.ws();
    sc.object(1, member)?;
    sc.end()
}

/// The members of the JSON object `s` (plain keys only), after checking all of `s` is valid JSON;
/// the tests' view of what `walk_object` hands over.
#[cfg(test)]
fn object_members(s: &str) -> Option<Vec<(&str, &str)>> {
    let mut out = Vec::new();
    walk_object(s, |sc, k, d| {
        let v = sc.value(d)?;
        out.push(((!k.escaped).then_some(k.text)?, v));
        Some(())
    })?;
    Some(out)
}

/// Walks the JSON array `s` with `element` (see [`Scanner::array`]) and checks nothing follows it.
pub fn walk_array<'a>(s: &'a str, element: impl FnMut(&mut Scanner<'a>, u32) -> Option<()>) -> Option<()> {
    let mut sc = Scanner::new(s);
    sc.ws();
    sc.array(1, element)?;
    sc.end()
}

/// The content of a JSON string literal that has no escapes (raw text from this scanner).
pub fn plain_str(raw: &str) -> Option<&str> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

/// Whether `s` is one valid JSON value.
pub fn is_valid(s: &str) -> bool {
    let mut sc = Scanner::new(s);
    sc.ws();
    sc.value(0).is_some() && sc.end().is_some()
}

/// A seeded xorshift generator for the mutation tests here and in `json`: `next(n)` is in `0..n`.
#[cfg(test)]
pub(crate) fn test_rng(mut state: u64) -> impl FnMut(usize) -> usize {
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde_ok(s: &str) -> bool {
        serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok()
    }

    #[test]
    fn names_are_equal_exactly_when_their_bytes_are() {
        let base = "p_any_ip_addresses_and_more_text_to_40";
        for len in 0..base.len() {
            let a = &base[..len];
            assert!(same_name(a, a), "{a:?}");
            assert!(!same_name(a, &base[..len + 1]), "{a:?}");
            for at in 0..len {
                let mut b = a.to_owned().into_bytes();
                b[at] ^= 0x20;
                let b = String::from_utf8(b).unwrap();
                assert!(!same_name(a, &b), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn members_are_raw_slices() {
        let m = object_members(r#" {"a": 1, "b" : "x\"y", "c": [1, {"d": null}], "e": -0.5e+3} "#).unwrap();
        let got: Vec<_> = m.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(got, vec![("a", "1"), ("b", r#""x\"y""#), ("c", r#"[1, {"d": null}]"#), ("e", "-0.5e+3")]);
        assert_eq!(plain_str(r#""x\"y""#), None);
        assert_eq!(plain_str(r#""xy""#), Some("xy"));
        let mut elements = Vec::new();
        walk_array(r#"["a", "b"]"#, |sc, d| sc.value(d).map(|v| elements.push(v))).unwrap();
        assert_eq!(elements, [r#""a""#, r#""b""#]);
    }

    #[test]
    fn escaped_keys_are_flagged_and_decode() {
        assert!(object_members(r#"{"\u0069d": 1}"#).is_none());
        let mut keys = Vec::new();
        walk_object(r#"{"\u0069d": 1, "a\"b": 2, "plain": 3}"#, |sc, k, d| {
            keys.push((k.decoded().into_owned(), k.escaped, k.is("id")));
            sc.value(d).map(drop)
        })
        .unwrap();
        assert_eq!(keys, vec![("id".into(), true, true), ("a\"b".into(), true, false), ("plain".into(), false, false)]);
    }

    #[test]
    fn unescape_matches_serde_and_replaces_lone_surrogates() {
        for content in [r#"a\"b\\c\/d\b\f\n\r\t"#, r#"\u00e9\u4e2d\ud83d\ude00x"#, "plain"] {
            let theirs: String = serde_json::from_str(&format!("\"{content}\"")).unwrap();
            assert_eq!(unescape(content), theirs, "{content}");
        }
        assert_eq!(unescape(r#"\ud800x\udc00"#), "\u{FFFD}x\u{FFFD}");
    }

    #[test]
    fn invalid_json_is_refused() {
        for bad in [
            "{",
            "}",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "[1,]",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":+1}",
            "{\"a\":1e}",
            "{\"a\":tru}",
            "{\"a\":\"\u{1}\"}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12g4\"}",
            "{\"a\":1} x",
            "{\"a\" 1}",
            "{'a':1}",
            "{\"a\":NaN}",
            "",
            "{\"a\":\"unterminated}",
        ] {
            assert!(!is_valid(bad), "accepted {bad:?}");
            assert!(!serde_ok(bad), "serde accepts {bad:?}; fix the test");
        }
    }

    #[test]
    fn deep_nesting_is_left_to_serde() {
        // Beyond serde's recursion limit the scanner defers rather than recurse further.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(!is_valid(&deep));
        let fine = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(is_valid(&fine) && serde_ok(&fine));
    }

    /// The scanner may refuse what serde_json accepts (it then falls back), but never the reverse.
    #[test]
    fn never_accepts_what_serde_json_refuses_under_random_mutation() {
        let seeds = [
            r#"{"id":"400000001","value":"38.158.13.55","match":["38.158.13.55"],"type":"ip","confidence":12,"status":"active","tags":[{"id":"t5","tlp":"white"}],"meta":{"severity":"low"},"x":[true,false,null,-1.5e3]}"#,
            r#"{"events":[{"p_any_ip_addresses":["1.2.3.4","::1"],"n":{"a":[1,2,{"b":"c\u00e9\n"}]}}],"id":"a"}"#,
        ];
        let alphabet: &[u8] = b"{}[]\":,\\ 0123456789.eE+-truefalsnl\t\x01abcu/";
        let mut next = test_rng(0x9E37_79B9_7F4A_7C15);
        let mut accepted_mutants = 0;
        for round in 0..40_000 {
            let mut b = seeds[round % seeds.len()].as_bytes().to_vec();
            for _ in 0..1 + next(3) {
                let pos = next(b.len() + 1);
                match next(3) {
                    0 if pos < b.len() => {
                        b.remove(pos);
                    }
                    1 => b.insert(pos, alphabet[next(alphabet.len())]),
                    _ if pos < b.len() => b[pos] = alphabet[next(alphabet.len())],
                    _ => {}
                }
            }
            let Ok(s) = std::str::from_utf8(&b) else { continue };
            let ours = is_valid(s);
            let theirs = serde_ok(s);
            // Passing over members (`skip`, a string's fast path) judges as reading them does.
            let read = walk_object(s, |sc, _, d| sc.value(d).map(drop)).is_some();
            assert_eq!(walk_object(s, |sc, _, d| sc.skip(d)).is_some(), read, "{s}");
            assert!(!ours || theirs, "scanner accepted what serde_json refuses: {s}");
            if ours {
                accepted_mutants += 1;
                // Where the scanner splits an object, each member is what serde_json reads there.
                if let (Some(m), Ok(serde_json::Value::Object(v))) = (object_members(s), serde_json::from_str(s)) {
                    for (k, raw) in m.iter().filter(|(k, _)| m.iter().filter(|(x, _)| x == k).count() == 1) {
                        let theirs: serde_json::Value = serde_json::from_str(raw).unwrap();
                        assert_eq!(Some(&theirs), v.get(*k), "{s}");
                    }
                }
            }
        }
        assert!(accepted_mutants > 1000, "the mutations were too destructive to test anything");
    }
}
