//! Indicator kinds and their normalization (ENRICHMENT.md, "Normalization").
//!
//! Table keys and event values go through the same functions, so a table row and an event value meet
//! exactly when their normalized forms are equal. The IP parsers follow Python's `ipaddress` module
//! rule for rule (leading zeros, `::` placement, IPv4 netmask/hostmask prefixes, scope IDs), because
//! the reference implementation is written with it and our output must match it byte for byte.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::str::FromStr;

use smallvec::SmallVec;

/// What an indicator is, which decides how it is normalized and which table keys it can meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Ip,
    Domain,
    Email,
    Hash,
    Url,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Ip, Kind::Domain, Kind::Email, Kind::Hash, Kind::Url];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ip => "ip",
            Kind::Domain => "domain",
            Kind::Email => "email",
            Kind::Hash => "hash",
            Kind::Url => "url",
        }
    }

    /// The kind of an Anomali `type` (or a csv kind column): `ipv6` is an ip, `md5`/`sha1`/`sha256`
    /// are hashes (a feed's `md5` row may hold any of the three lengths).
    pub fn from_row_type(t: &str) -> Option<Kind> {
        Some(match t {
            "ip" | "ipv6" => Kind::Ip,
            "domain" => Kind::Domain,
            "email" => Kind::Email,
            "md5" | "sha1" | "sha256" | "hash" => Kind::Hash,
            "url" => Kind::Url,
            _ => return None,
        })
    }
}

/// The row types a table may declare, for error messages.
pub const ROW_TYPES: &str = "ip, ipv6, domain, email, md5, sha1, sha256, hash, url";

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown kind {s:?}: expected one of ip, domain, email, hash, url"))
    }
}

/// An IP address in canonical form: IPv4-mapped IPv6 addresses are already IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ip {
    V4(u32),
    V6(u128),
}

impl fmt::Display for Ip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Ip::V4(a) => {
                let (buf, n) = ipv4_text(a);
                // Digits and dots only.
                f.write_str(std::str::from_utf8(&buf[..n]).unwrap_or_default())
            }
            Ip::V6(a) => fmt_ipv6(a, f),
        }
    }
}

impl Ip {
    /// The address as text, as `Display` writes it; for IPv4 without the formatting machinery (every
    /// match prints its value, and a large table has tens of thousands of IPv4 matches a run).
    pub fn text(&self) -> String {
        match *self {
            Ip::V4(a) => {
                let (buf, n) = ipv4_text(a);
                buf[..n].iter().map(|&c| char::from(c)).collect()
            }
            Ip::V6(_) => self.to_string(),
        }
    }
}

/// `a` as a dotted quad: the bytes, and how many of them there are.
fn ipv4_text(a: u32) -> ([u8; 15], usize) {
    let mut buf = [0u8; 15];
    let mut n = 0;
    for (k, octet) in a.to_be_bytes().into_iter().enumerate() {
        if k > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    (buf, n)
}

/// A CIDR network with its host bits cleared. `start`/`end` are inclusive bounds in the address
/// space of its family (IPv4 networks use the low 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Net {
    pub v6: bool,
    pub start: u128,
    pub prefix: u8,
}

impl Net {
    pub fn end(&self) -> u128 {
        let bits = if self.v6 { 128 } else { 32 };
        let host_bits = bits - u32::from(self.prefix);
        if host_bits == 0 {
            self.start
        } else if host_bits == 128 {
            u128::MAX
        } else {
            self.start | ((1u128 << host_bits) - 1)
        }
    }
}

/// A normalized value: what table keys are stored as and event values are looked up by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key<'a> {
    Ip(Ip),
    Net(Net),
    /// domain, email, hash or url, in normalized text.
    Text(Kind, Cow<'a, str>),
}

impl Key<'_> {
    /// The same key, owning its text.
    pub fn into_owned(self) -> Key<'static> {
        match self {
            Key::Ip(ip) => Key::Ip(ip),
            Key::Net(n) => Key::Net(n),
            Key::Text(kind, t) => Key::Text(kind, Cow::Owned(t.into_owned())),
        }
    }
}

/// Why an event value (or a table key) was not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Invalid {
    NotAnIp,
    EmptyDomain,
    NoAtSign,
    NotAHash,
    NotAString,
}

impl Invalid {
    pub fn as_str(self) -> &'static str {
        match self {
            Invalid::NotAnIp => "not an IP address",
            Invalid::EmptyDomain => "empty domain",
            Invalid::NoAtSign => "email without @",
            Invalid::NotAHash => "not 32, 40 or 64 hex digits",
            Invalid::NotAString => "not a string",
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Python's `str.strip()`: Unicode White_Space plus the four ASCII separators U+001C..U+001F that
/// Python also counts as space.
fn py_strip(s: &str) -> &str {
    let b = s.as_bytes();
    // Fast path: no space at either end, as nearly every value in real data.
    if b.first().is_some_and(|c| c.is_ascii_graphic()) && b.last().is_some_and(|c| c.is_ascii_graphic()) {
        return s;
    }
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// Whether any byte is an ASCII capital or not ASCII: eight bytes at a time, the last word
/// overlapping the one before it (short values are the rule: domains, emails, hashes).
fn has_capital_or_non_ascii(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // For an ASCII byte x, x + 0x3f reaches the high bit from 'A' on and x + 0x25 past 'Z'. A byte
    // that is not ASCII may carry into its neighbour, but it is flagged by its own high bit anyway.
    let flags = |w: u64| (w | (w.wrapping_add(ONES * 0x3f) & !w.wrapping_add(ONES * 0x25))) & HIGHS;
    let word = |i: usize| b.get(i..i + 8).and_then(|c| <[u8; 8]>::try_from(c).ok()).map(u64::from_le_bytes);
    if b.len() < 8 {
        return b.iter().any(|c| c.is_ascii_uppercase() || !c.is_ascii());
    }
    let mut seen = 0;
    let mut i = 0;
    while i + 8 < b.len() {
        seen |= word(i).map_or(HIGHS, flags);
        i += 8;
    }
    seen |= word(b.len() - 8).map_or(HIGHS, flags);
    seen != 0
}

/// Lower-cases without allocating when the text is already lower case (the common case).
fn lower(s: &str) -> Cow<'_, str> {
    if !has_capital_or_non_ascii(s.as_bytes()) {
        return Cow::Borrowed(s);
    }
    if s.is_ascii() {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        let l = s.to_lowercase();
        if l == s {
            Cow::Borrowed(s)
        } else {
            Cow::Owned(l)
        }
    }
}

/// Normalizes a value of `kind`. Networks (`a.b.c.d/N`) are accepted only where `allow_net` is set:
/// table keys may be networks, event values may not.
pub fn normalize(kind: Kind, value: &str, allow_net: bool) -> Result<Key<'_>, Invalid> {
    let v = py_strip(value);
    match kind {
        Kind::Ip => {
            if let Some(a) = parse_ipv4(v) {
                return Ok(Key::Ip(Ip::V4(a)));
            }
            if memchr::memchr(b'/', v.as_bytes()).is_some() {
                if allow_net {
                    parse_net(v).map(Key::Net).ok_or(Invalid::NotAnIp)
                } else {
                    Err(Invalid::NotAnIp)
                }
            } else {
                // An IPv6 zone ("%eth0") is not part of the address.
                let addr = match memchr::memchr(b'%', v.as_bytes()) {
                    Some(i) => &v[..i],
                    None => v,
                };
                parse_ip(addr).map(Key::Ip).ok_or(Invalid::NotAnIp)
            }
        }
        Kind::Domain => {
            let l = lower(v);
            let trimmed = match l {
                Cow::Borrowed(b) => Cow::Borrowed(b.strip_suffix('.').unwrap_or(b)),
                Cow::Owned(mut o) => {
                    if o.ends_with('.') {
                        o.pop();
                    }
                    Cow::Owned(o)
                }
            };
            if trimmed.is_empty() {
                Err(Invalid::EmptyDomain)
            } else {
                Ok(Key::Text(Kind::Domain, trimmed))
            }
        }
        Kind::Email => {
            let l = lower(v);
            if l.contains('@') {
                Ok(Key::Text(Kind::Email, l))
            } else {
                Err(Invalid::NoAtSign)
            }
        }
        Kind::Hash => {
            let ok = matches!(v.len(), 32 | 40 | 64) && v.bytes().fold(true, |ok, b| ok & b.is_ascii_hexdigit());
            if ok {
                Ok(Key::Text(Kind::Hash, lower(v)))
            } else {
                Err(Invalid::NotAHash)
            }
        }
        Kind::Url => Ok(Key::Text(Kind::Url, Cow::Borrowed(v))),
    }
}

/// An address as Python's `ip_address` reads it, with IPv4-mapped IPv6 turned into IPv4.
pub fn parse_ip(s: &str) -> Option<Ip> {
    if let Some(a) = parse_ipv4(s) {
        return Some(Ip::V4(a));
    }
    let a = parse_ipv6(s)?;
    Some(match ipv4_mapped(a) {
        Some(v4) => Ip::V4(v4),
        None => Ip::V6(a),
    })
}

fn ipv4_mapped(a: u128) -> Option<u32> {
    // Truncation is the point: the low 32 bits are the IPv4 address.
    (a >> 32 == 0xffff).then_some(a as u32)
}

/// A network as Python's `ip_network(s, strict=False)` reads it; an IPv4-mapped IPv6 network of
/// length >= 96 becomes the IPv4 network of length N-96.
pub fn parse_net(s: &str) -> Option<Net> {
    let (addr, prefix) = s.split_once('/')?;
    if prefix.contains('/') {
        return None;
    }
    if let Some(a) = parse_ipv4(addr) {
        let p = prefix_digits(prefix, 32).or_else(|| ipv4_mask_prefix(prefix))?;
        return Some(Net { v6: false, start: u128::from(a & mask32(p)), prefix: p });
    }
    let addr = match addr.split_once('%') {
        // Python accepts one non-empty scope ID on an IPv6 network address and ignores it.
        Some((a, scope)) if !scope.is_empty() && !scope.contains('%') => a,
        Some(_) => return None,
        None => addr,
    };
    let a = parse_ipv6(addr)?;
    let p = prefix_digits(prefix, 128)?;
    let start = a & mask128(p);
    if p >= 96 {
        if let Some(v4) = ipv4_mapped(start) {
            return Some(Net { v6: false, start: u128::from(v4), prefix: p - 96 });
        }
    }
    Some(Net { v6: true, start, prefix: p })
}

fn mask32(p: u8) -> u32 {
    if p == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(p))
    }
}

fn mask128(p: u8) -> u128 {
    if p == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(p))
    }
}

fn prefix_digits(s: &str, max: u8) -> Option<u8> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = s.trim_start_matches('0');
    if digits.len() > 3 {
        return None;
    }
    let n: u16 = if digits.is_empty() { 0 } else { digits.parse().ok()? };
    (n <= u16::from(max)).then_some(n as u8)
}

/// Python also takes an IPv4 prefix as a dotted netmask (`255.255.0.0`) or hostmask (`0.0.255.255`).
fn ipv4_mask_prefix(s: &str) -> Option<u8> {
    let m = parse_ipv4(s)?;
    let contiguous = |m: u32| -> Option<u8> {
        let ones = m.leading_ones();
        (m.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
    };
    contiguous(m).or_else(|| contiguous(!m))
}

/// Dotted quad, four decimal octets, no leading zeros (Python's rule since 3.9.5). Read octet by
/// octet with the digits unrolled: this runs for every address of every event.
pub fn parse_ipv4(s: &str) -> Option<u32> {
    let b = s.as_bytes();
    if !(7..=15).contains(&b.len()) {
        return None;
    }
    let digit = |i: usize| b.get(i).map(|c| u32::from(c.wrapping_sub(b'0'))).filter(|d| *d < 10);
    let mut out = 0u32;
    let mut i = 0;
    for octet in 0..4 {
        if octet > 0 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let mut v = digit(i)?;
        i += 1;
        if let Some(d) = digit(i) {
            // A leading zero ("01") is not an octet.
            if v == 0 {
                return None;
            }
            v = v * 10 + d;
            i += 1;
            if let Some(d) = digit(i) {
                v = v * 10 + d;
                i += 1;
            }
        }
        if v > 255 {
            return None;
        }
        out = (out << 8) | v;
    }
    (i == b.len()).then_some(out)
}

/// IPv6 text as Python's `IPv6Address._ip_int_from_string` reads it (no scope ID).
pub fn parse_ipv6(s: &str) -> Option<u128> {
    if let Some(a) = parse_ipv6_full(s.as_bytes()) {
        return Some(a);
    }
    parse_ipv6_general(s)
}

/// The full form, eight groups of one to four hex digits, in one pass: every address without a run
/// of zero groups prints this way, and it needs none of the general rules. `None` hands anything
/// else (`::`, an embedded IPv4 address, a mistake) to them.
fn parse_ipv6_full(b: &[u8]) -> Option<u128> {
    let (mut out, mut group, mut digits, mut colons) = (0u128, 0u32, 0u32, 0u32);
    for &c in b {
        let d = match c {
            b':' => {
                if digits == 0 || colons == 7 {
                    return None;
                }
                out = (out << 16) | u128::from(group);
                (group, digits) = (0, 0);
                colons += 1;
                continue;
            }
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        if digits == 4 {
            return None;
        }
        group = (group << 4) | u32::from(d);
        digits += 1;
    }
    (colons == 7 && digits > 0).then_some((out << 16) | u128::from(group))
}

fn parse_ipv6_general(s: &str) -> Option<u128> {
    if s.is_empty() {
        return None;
    }
    // On the stack: an address has at most 9 parts (more is refused below), and this runs per lookup.
    let mut parts: SmallVec<[&str; 10]> = s.split(':').collect();
    if parts.len() < 3 {
        return None;
    }
    let mut tail_v4: Option<u32> = None;
    if parts.last().is_some_and(|p| p.contains('.')) {
        tail_v4 = Some(parse_ipv4(parts.pop()?)?);
    }
    // The embedded IPv4 address stands for two hextets.
    let extra = if tail_v4.is_some() { 2 } else { 0 };
    let total = parts.len() + extra;
    if total > 9 {
        return None;
    }
    let mut hextets: SmallVec<[u16; 8]> = SmallVec::new();
    let skip = {
        let mut skip = None;
        for (i, p) in parts.iter().enumerate().take(total.saturating_sub(1)).skip(1) {
            if i < parts.len() && p.is_empty() {
                if skip.is_some() {
                    return None;
                }
                skip = Some(i);
            }
        }
        skip
    };
    let hextet = |p: &str| -> Option<u16> {
        if p.is_empty() || p.len() > 4 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u16::from_str_radix(p, 16).ok()
    };
    let last_empty = tail_v4.is_none() && parts.last().is_some_and(|p| p.is_empty());
    match skip {
        Some(i) => {
            let mut hi = i;
            let mut lo = total - i - 1;
            if parts[0].is_empty() {
                hi -= 1;
                if hi != 0 {
                    return None;
                }
            }
            if last_empty {
                lo -= 1;
                if lo != 0 {
                    return None;
                }
            }
            let skipped = 8usize.checked_sub(hi + lo)?;
            if skipped < 1 {
                return None;
            }
            for p in &parts[..hi] {
                hextets.push(hextet(p)?);
            }
            hextets.extend(std::iter::repeat_n(0, skipped));
            let lo_parts = lo - if tail_v4.is_some() { 2 } else { 0 };
            for p in &parts[parts.len() - lo_parts..] {
                hextets.push(hextet(p)?);
            }
        }
        None => {
            if total != 8 || parts[0].is_empty() || last_empty {
                return None;
            }
            for p in &parts {
                hextets.push(hextet(p)?);
            }
        }
    }
    if let Some(v4) = tail_v4 {
        hextets.push((v4 >> 16) as u16);
        hextets.push(v4 as u16);
    }
    if hextets.len() != 8 {
        return None;
    }
    Some(hextets.iter().fold(0u128, |acc, h| (acc << 16) | u128::from(*h)))
}

/// RFC 5952 text as Python prints it: lower-case hex, the first longest run of two or more zero
/// hextets compressed to `::`.
fn fmt_ipv6(a: u128, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let h: [u16; 8] = std::array::from_fn(|i| (a >> (112 - 16 * i)) as u16);
    let (mut best_start, mut best_len, mut cur_start, mut cur_len) = (0usize, 0usize, 0usize, 0usize);
    for (i, x) in h.iter().enumerate() {
        if *x == 0 {
            if cur_len == 0 {
                cur_start = i;
            }
            cur_len += 1;
            if cur_len > best_len {
                best_start = cur_start;
                best_len = cur_len;
            }
        } else {
            cur_len = 0;
        }
    }
    let write_run = |f: &mut fmt::Formatter<'_>, run: &[u16]| -> fmt::Result {
        for (i, x) in run.iter().enumerate() {
            if i > 0 {
                f.write_char(':')?;
            }
            write!(f, "{x:x}")?;
        }
        Ok(())
    };
    if best_len > 1 {
        write_run(f, &h[..best_start])?;
        f.write_str("::")?;
        write_run(f, &h[best_start + best_len..])
    } else {
        write_run(f, &h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<String> {
        match normalize(Kind::Ip, s, false) {
            Ok(Key::Ip(a)) => Some(a.to_string()),
            _ => None,
        }
    }

    fn net(s: &str) -> Option<(String, u8)> {
        match normalize(Kind::Ip, s, true) {
            Ok(Key::Net(n)) => {
                let a = if n.v6 { Ip::V6(n.start) } else { Ip::V4(n.start as u32) };
                Some((a.to_string(), n.prefix))
            }
            _ => None,
        }
    }

    fn text(kind: Kind, s: &str) -> Result<String, Invalid> {
        match normalize(kind, s, false)? {
            Key::Text(_, t) => Ok(t.into_owned()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ipv4_is_a_strict_dotted_quad() {
        assert_eq!(ip("1.2.3.4").as_deref(), Some("1.2.3.4"));
        assert_eq!(ip(" 10.0.0.1\n").as_deref(), Some("10.0.0.1"));
        for bad in ["1.2.3.04", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.", "a.b.c.d", "1.2.3.4 5", "", "+1.2.3.4"] {
            assert_eq!(ip(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ipv4_mapped_ipv6_is_the_ipv4_address() {
        assert_eq!(ip("::ffff:1.2.3.4").as_deref(), Some("1.2.3.4"));
        assert_eq!(ip("::FFFF:0102:0304").as_deref(), Some("1.2.3.4"));
        // IPv4-compatible (::a.b.c.d) and ::ffff:0:a.b.c.d are not mapped addresses.
        assert_eq!(ip("::1.2.3.4").as_deref(), Some("::102:304"));
        assert_eq!(ip("::ffff:0:1.2.3.4").as_deref(), Some("::ffff:0:102:304"));
    }

    /// The octet reader as first written, a plain loop: the reference the unrolled one is held to.
    fn parse_ipv4_loop(s: &str) -> Option<u32> {
        let b = s.as_bytes();
        if !(7..=15).contains(&b.len()) {
            return None;
        }
        let (mut out, mut octet, mut digits, mut dots, mut lead_zero) = (0u32, 0u32, 0u8, 0u8, false);
        for &c in b {
            match c {
                b'0'..=b'9' => {
                    if lead_zero || digits == 3 {
                        return None;
                    }
                    lead_zero = digits == 0 && c == b'0';
                    octet = octet * 10 + u32::from(c - b'0');
                    digits += 1;
                }
                b'.' => {
                    if digits == 0 || octet > 255 || dots == 3 {
                        return None;
                    }
                    out = (out << 8) | octet;
                    (octet, digits, lead_zero) = (0, 0, false);
                    dots += 1;
                }
                _ => return None,
            }
        }
        (dots == 3 && digits > 0 && octet <= 255).then_some((out << 8) | octet)
    }

    #[test]
    fn capitals_and_non_ascii_are_found_at_every_position_and_length() {
        for len in 0..40 {
            assert!(!has_capital_or_non_ascii(&"a.z@-09[`{".repeat(4).as_bytes()[..len]), "len {len}");
            for at in 0..len {
                for odd in ["A", "Z", "\u{e9}", "\u{7f}"] {
                    let mut s = "a".repeat(len);
                    if odd.len() == 1 || at + odd.len() <= len {
                        s.replace_range(at..at + odd.len(), odd);
                        let want = odd != "\u{7f}";
                        assert_eq!(has_capital_or_non_ascii(s.as_bytes()), want, "{s:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_ipv4_reader_agrees_with_a_plain_loop() {
        let mut next = crate::json::scan::test_rng(0x9E37_79B9_7F4A_7C15);
        let alphabet = b"0123456789....12590 x/";
        let mut valid = 0;
        for round in 0..200_000 {
            let s: String = if round % 2 == 0 {
                // Near misses of a dotted quad: 3 to 5 parts of 0 to 4 digits.
                (0..3 + next(3))
                    .map(|_| (0..next(5)).map(|_| char::from(alphabet[next(10)])).collect::<String>())
                    .collect::<Vec<_>>()
                    .join(".")
            } else {
                (0..next(17)).map(|_| char::from(alphabet[next(alphabet.len())])).collect()
            };
            let want = parse_ipv4_loop(&s);
            valid += usize::from(want.is_some());
            assert_eq!(parse_ipv4(&s), want, "{s:?}");
        }
        assert!(valid > 1000, "too few valid addresses to test with: {valid}");
        for bad in ["1.2.3.04", "256.1.1.1", "1.2.3", "1.2.3.4.", "1..2.3", "1.2.3.1000", "01.2.3.4"] {
            assert_eq!(parse_ipv4(bad), None, "{bad:?}");
        }
        assert_eq!(parse_ipv4("0.10.200.255"), Some(0x000a_c8ff));
    }

    #[test]
    fn the_full_form_reader_agrees_with_the_general_rules() {
        let mut next = crate::json::scan::test_rng(0xD1B5_4A32_D192_ED03);
        let alphabet = b"0123456789abcdefABCDEF::::::.%g";
        let mut full = 0;
        for round in 0..200_000 {
            let s: String = if round % 2 == 0 {
                // Near misses of the full form: 6 to 9 groups of 1 to 5 digits.
                let groups = 6 + next(4);
                (0..groups)
                    .map(|_| (0..1 + next(5)).map(|_| char::from(alphabet[next(22)])).collect::<String>())
                    .collect::<Vec<_>>()
                    .join(":")
            } else {
                (0..next(45)).map(|_| char::from(alphabet[next(alphabet.len())])).collect()
            };
            let fast = parse_ipv6_full(s.as_bytes());
            if fast.is_some() {
                full += 1;
                assert_eq!(fast, parse_ipv6_general(&s), "{s}");
            }
        }
        assert!(full > 1000, "too few inputs in the full form to test it: {full}");
        assert_eq!(
            parse_ipv6("2001:db8:54a7:3f63:700:957a:64c6:c3db"),
            Some(0x2001_0db8_54a7_3f63_0700_957a_64c6_c3db)
        );
    }

    #[test]
    fn ipv4_prints_as_a_dotted_quad_without_leading_zeros() {
        let octets = [0u32, 1, 9, 10, 11, 99, 100, 101, 199, 200, 249, 250, 255];
        for a in octets.iter().flat_map(|&x| octets.iter().map(move |&y| (x << 24) | (y << 16) | (y << 8) | x)) {
            let plain = format!("{}.{}.{}.{}", a >> 24, (a >> 16) & 0xff, (a >> 8) & 0xff, a & 0xff);
            assert_eq!(Ip::V4(a).text(), plain);
            assert_eq!(Ip::V4(a).to_string(), plain);
        }
    }

    #[test]
    fn ipv6_prints_in_rfc5952_form_as_python_does() {
        let cases = [
            ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
            ("0:0:0:0:0:0:0:0", "::"),
            ("1:0:0:1:0:0:0:1", "1:0:0:1::1"),
            ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
            ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
            ("::1:2:3:4:5:6:7", "0:1:2:3:4:5:6:7"),
            ("0001:2::3", "1:2::3"),
            ("::1", "::1"),
        ];
        for (input, want) in cases {
            assert_eq!(ip(input).as_deref(), Some(want), "{input}");
        }
        for bad in ["1::2::3", ":1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "1::2:3:4:5:6:7:8", "12345::1", "::g", "1:2"] {
            assert_eq!(ip(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn zone_ids_are_dropped() {
        assert_eq!(ip("fe80::1%eth0").as_deref(), Some("fe80::1"));
        assert_eq!(ip("FE80::1%25").as_deref(), Some("fe80::1"));
        assert_eq!(net("fe80::1%eth0/64"), Some(("fe80::".into(), 64)));
        assert_eq!(net("fe80::1%/64"), None);
    }

    #[test]
    fn cidr_host_bits_are_ignored() {
        assert_eq!(net("10.1.2.3/8"), Some(("10.0.0.0".into(), 8)));
        assert_eq!(net("10.1.2.3/08"), Some(("10.0.0.0".into(), 8)));
        assert_eq!(net("1.2.3.4/32"), Some(("1.2.3.4".into(), 32)));
        assert_eq!(net("0.0.0.0/0"), Some(("0.0.0.0".into(), 0)));
        assert_eq!(net("2001:db8::ff/120"), Some(("2001:db8::".into(), 120)));
        assert_eq!(net("10.0.0.0/255.0.0.0"), Some(("10.0.0.0".into(), 8)));
        assert_eq!(net("10.0.0.0/0.255.255.255"), Some(("10.0.0.0".into(), 8)));
        for bad in ["10.0.0.0/33", "10.0.0.0/", "10.0.0.0/8/8", "::/129", "10.0.0.0/255.0.255.0", "10.0.0.0/+8"] {
            assert_eq!(net(bad), None, "{bad:?}");
        }
        // Event values are addresses, never networks.
        assert_eq!(ip("10.0.0.0/8"), None);
    }

    #[test]
    fn ipv4_mapped_networks_become_ipv4_networks() {
        assert_eq!(net("::ffff:10.1.2.3/104"), Some(("10.0.0.0".into(), 8)));
        assert_eq!(net("::ffff:0:0/96"), Some(("0.0.0.0".into(), 0)));
        // Shorter than /96 it is not inside the mapped range, so it stays IPv6.
        assert_eq!(net("::ffff:0:0/95"), Some(("::fffe:0:0".into(), 95)));
    }

    #[test]
    fn domains_are_lower_case_without_one_trailing_dot() {
        assert_eq!(text(Kind::Domain, "WWW.Evil.COM."), Ok("www.evil.com".into()));
        assert_eq!(text(Kind::Domain, "evil.com"), Ok("evil.com".into()));
        assert_eq!(text(Kind::Domain, "."), Err(Invalid::EmptyDomain));
        assert_eq!(text(Kind::Domain, "  "), Err(Invalid::EmptyDomain));
    }

    #[test]
    fn hashes_are_lower_case_hex_of_three_lengths() {
        let md5 = "D41D8CD98F00B204E9800998ECF8427E";
        assert_eq!(text(Kind::Hash, md5), Ok(md5.to_ascii_lowercase()));
        assert_eq!(text(Kind::Hash, &"a".repeat(40)).map(|s| s.len()), Ok(40));
        assert_eq!(text(Kind::Hash, &"a".repeat(64)).map(|s| s.len()), Ok(64));
        assert_eq!(text(Kind::Hash, &"a".repeat(33)), Err(Invalid::NotAHash));
        assert_eq!(text(Kind::Hash, "g41d8cd98f00b204e9800998ecf8427e"), Err(Invalid::NotAHash));
    }

    #[test]
    fn emails_are_lower_case_and_need_an_at_sign() {
        assert_eq!(text(Kind::Email, "Bob@Example.COM"), Ok("bob@example.com".into()));
        assert_eq!(text(Kind::Email, "bob.example.com"), Err(Invalid::NoAtSign));
    }

    #[test]
    fn urls_compare_as_given() {
        assert_eq!(text(Kind::Url, "https://Evil.com/A"), Ok("https://Evil.com/A".into()));
    }

    #[test]
    fn strip_matches_python_whitespace() {
        assert_eq!(text(Kind::Domain, "\u{1c}evil.com\u{3000}"), Ok("evil.com".into()));
    }
}
