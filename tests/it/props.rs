//! Property tests (proptest) for the three places where hostile or odd input meets a rule that must
//! hold for every input: indicator normalization (ENRICHMENT.md), the winner rule of a table's index,
//! and the comment renderer (escaping, caps, the marker). Case counts are kept small so that the
//! whole module runs in a few seconds; no failure file is written (a failure prints its minimal input).

use std::borrow::Cow;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::test_runner::Config;

use panther_triage::config::Section;
use panther_triage::indicator::{normalize, Invalid, Ip, Key, Kind};
use panther_triage::panther::CommentFormat;
use panther_triage::render::{self, Investigation, MAX_BODY, VALUE_CHARS};
use panther_triage::tables::{Table, TableSpec};
use panther_triage::triage::{Decision, Hit, Verdict};

fn config() -> Config {
    Config { cases: 256, failure_persistence: None, ..Config::default() }
}

// ---------------------------------------------------------------------------------------------
// Normalization
// ---------------------------------------------------------------------------------------------

/// Python's `str.strip()`, as `indicator` implements it: what the second pass would remove.
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// A key written back as text: what a table or an event holding the normalized value would say.
fn key_text(k: &Key<'_>) -> String {
    match k {
        Key::Ip(ip) => ip.to_string(),
        Key::Net(n) => {
            let a = if n.v6 { Ip::V6(n.start) } else { Ip::V4(n.start as u32) };
            format!("{a}/{}", n.prefix)
        }
        Key::Text(_, t) => t.to_string(),
    }
}

fn dotted(a: u32) -> String {
    let b = a.to_be_bytes();
    format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])
}

fn hextets(a: u128) -> [u16; 8] {
    std::array::from_fn(|i| (a >> (112 - 16 * i)) as u16)
}

/// IP-looking text in the many ways feeds and logs write addresses and networks.
fn ip_text() -> impl Strategy<Value = String> {
    (any::<u32>(), any::<u128>(), 0u8..12, 0u8..=128, any::<bool>(), 0u8..4).prop_map(
        |(v4, v6, form, p, upper, pad)| {
            let h = hextets(v6);
            let mut s = match form {
                0 => dotted(v4),
                1 => format!("::ffff:{}", dotted(v4)),
                2 => format!("::ffff:{:x}:{:x}", v4 >> 16, v4 & 0xffff),
                3 => h.iter().map(|x| format!("{x:04x}")).collect::<Vec<_>>().join(":"),
                4 => h.iter().map(|x| format!("{x:x}")).collect::<Vec<_>>().join(":"),
                5 => format!("{:x}::{:x}", h[0], h[7]),
                6 => format!("{}/{}", dotted(v4), p % 33),
                7 => format!("::ffff:{}/{}", dotted(v4), 96 + p % 33),
                8 => format!("{:x}:{:x}::/{p}", h[0], h[1]),
                9 => format!("fe80::{:x}%eth{}", h[7], p % 3),
                10 => format!("{}/{}", dotted(v4), dotted(u32::MAX.checked_shl(32 - u32::from(p % 33)).unwrap_or(0))),
                _ => format!("{}.{}", dotted(v4), p),
            };
            if upper {
                s = s.to_ascii_uppercase();
            }
            match pad {
                1 => format!(" {s}\t"),
                2 => format!("\u{3000}{s}\u{1c}"),
                _ => s,
            }
        },
    )
}

/// Text of every other shape: domains, emails, hashes, urls, and anything at all.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ip_text(),
        "[ \t]?[a-zA-Z0-9ÉéÖößΣς-]{1,8}(\\.[a-zA-Z0-9-]{1,8}){0,3}\\.{0,3}[ \t]?",
        "[a-zA-Z0-9.]{1,10}@[a-zA-Z0-9.]{1,10}",
        "[0-9a-fA-F]{32}|[0-9a-fA-F]{40}|[0-9a-fA-F]{64}|[0-9a-fA-FgG]{30,66}",
        "https?://[a-zA-Z0-9./?=&%-]{0,30}",
        "[0-9a-fA-F:./% ]{0,45}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// normalize(normalize(x)) == normalize(x) wherever the first succeeds, for every kind, for
    /// event values and table keys (networks) alike. The one exception is ENRICHMENT.md's rule for
    /// domains, "one trailing dot removed" (the reference strips, lower-cases, then removes dots):
    /// where what is left after the first pass still ends with a dot (`a..`) or with white space
    /// (`a .`), a second pass removes more. `one_trailing_dot_is_the_spec` pins that down.
    #[test]
    fn normalization_is_idempotent(x in any_text()) {
        for kind in Kind::ALL {
            for allow_net in [false, true] {
                let Ok(first) = normalize(kind, &x, allow_net) else { continue };
                let t = key_text(&first);
                if kind == Kind::Domain && (t.ends_with('.') || py_strip(&t) != t) {
                    continue;
                }
                let second = normalize(kind, &t, allow_net);
                prop_assert_eq!(second, Ok(first), "kind {} allow_net {} input {:?} text {:?}", kind, allow_net, x, t);
            }
        }
    }

    /// A domain's key ignores its case and one trailing dot.
    #[test]
    fn domain_keys_ignore_case_and_one_trailing_dot(
        d in "[a-z0-9-]{1,10}(\\.[a-z0-9-]{1,10}){0,3}",
        mask in any::<u64>(),
        dot in any::<bool>(),
    ) {
        let mixed: String =
            d.chars().enumerate().map(|(i, c)| if mask >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c }).collect();
        let written = if dot { format!("{mixed}.") } else { mixed.clone() };
        let want = normalize(Kind::Domain, &d, false);
        prop_assert_eq!(&want, &Ok(Key::Text(Kind::Domain, Cow::Borrowed(d.as_str()))));
        prop_assert_eq!(normalize(Kind::Domain, &written, false), want.clone());
        prop_assert_eq!(normalize(Kind::Domain, &written, true), want);
    }

    /// Unicode domains: the key is the lower-case form, whatever case the value was written in.
    #[test]
    fn domain_keys_are_lower_case_in_unicode_too(d in "[a-zA-ZÉéÖöÆæΣσДд]{1,8}(\\.[a-zA-ZÉéДд]{1,8}){0,2}\\.?") {
        let lower = d.to_lowercase();
        prop_assert_eq!(normalize(Kind::Domain, &d, false), normalize(Kind::Domain, &lower, false));
    }

    /// An IPv4-mapped IPv6 address, however written, is the IPv4 address; a mapped network of
    /// length 96+N is the IPv4 network of length N.
    #[test]
    fn ipv4_mapped_ipv6_normalizes_to_the_ipv4_key(a in any::<u32>(), form in 0u8..6, zone in any::<bool>(), n in 0u8..=32) {
        let d = dotted(a);
        let (hi, lo) = (a >> 16, a & 0xffff);
        let mut s = match form {
            0 => format!("::ffff:{d}"),
            1 => format!("::FFFF:{hi:X}:{lo:X}"),
            2 => format!("0:0:0:0:0:ffff:{d}"),
            3 => format!("0000:0000:0000:0000:0000:FFFF:{hi:04x}:{lo:04x}"),
            4 => format!("0::ffff:{hi:x}:{lo:x}"),
            _ => format!("::0:ffff:{d}"),
        };
        if zone {
            s.push_str("%eth0");
        }
        prop_assert_eq!(normalize(Kind::Ip, &s, false), Ok(Key::Ip(Ip::V4(a))), "{}", s);
        prop_assert_eq!(normalize(Kind::Ip, &s, false), normalize(Kind::Ip, &d, false));
        let net = format!("::ffff:{d}/{}", 96 + u32::from(n));
        let v4net = format!("{d}/{n}");
        let want = normalize(Kind::Ip, &v4net, true);
        prop_assert!(matches!(want, Ok(Key::Net(ref x)) if !x.v6), "{:?}", want);
        prop_assert_eq!(normalize(Kind::Ip, &net, true), want, "{}", net);
    }

    /// Hashes are case-insensitive and only 32, 40 or 64 hex digits.
    #[test]
    fn hash_keys_are_case_insensitive(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 16),
            proptest::collection::vec(any::<u8>(), 20),
            proptest::collection::vec(any::<u8>(), 32),
            proptest::collection::vec(any::<u8>(), 1..40),
        ],
        mask in any::<u128>(),
    ) {
        let lower: String = bytes.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        let mixed: String = lower
            .chars()
            .enumerate()
            .map(|(i, c)| if mask >> (i % 128) & 1 == 1 { c.to_ascii_uppercase() } else { c })
            .collect();
        let got = normalize(Kind::Hash, &mixed, false);
        if matches!(lower.len(), 32 | 40 | 64) {
            prop_assert_eq!(got, Ok(Key::Text(Kind::Hash, Cow::Borrowed(lower.as_str()))));
        } else {
            prop_assert_eq!(got, Err(Invalid::NotAHash));
        }
    }
}

/// The exception to idempotence above, as ENRICHMENT.md and the reference have it.
#[test]
fn one_trailing_dot_is_the_spec() {
    let key = |s: &str| normalize(Kind::Domain, s, false).map(|k| key_text(&k));
    assert_eq!(key("Evil.COM.."), Ok("evil.com.".to_owned()));
    assert_eq!(key("evil.com."), Ok("evil.com".to_owned()));
    assert_eq!(key("evil.com ."), Ok("evil.com ".to_owned()));
}

// ---------------------------------------------------------------------------------------------
// The winner rule
// ---------------------------------------------------------------------------------------------

const NOW: &str = "2026-01-01T00:00:00Z";

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(NOW).map(|t| t.with_timezone(&Utc)).unwrap()
}

/// What one generated row looks like; `id` is set afterwards (ids are distinct).
#[derive(Debug, Clone)]
struct RowGen {
    /// Indexes into the key forms of the case (some cover the looked-up value, some do not).
    keys: Vec<usize>,
    confidence: i64,
    confidence_as_text: bool,
    id_as_text: bool,
    /// 0 active, 1 inactive, 2 "Active" (not active: the rule is exact), 3 no status.
    status: u8,
    /// 0 none, 1 past, 2 exactly now (expired), 3 future, 4 empty string (never expires).
    expiry: u8,
    /// None: no `modified_ts`; else one of three times, so ties are common.
    modified: Option<u8>,
    type_variant: u8,
}

fn row_gen() -> impl Strategy<Value = RowGen> {
    (
        proptest::collection::vec(0usize..64, 1..3),
        0i64..5,
        any::<bool>(),
        any::<bool>(),
        prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)],
        0u8..5,
        proptest::option::of(0u8..3),
        0u8..4,
    )
        .prop_map(|(keys, c, ct, it, status, expiry, modified, type_variant)| RowGen {
            keys,
            confidence: c * 25,
            confidence_as_text: ct,
            id_as_text: it,
            status,
            expiry,
            modified,
            type_variant,
        })
}

/// One case: the kind, the looked-up value, the key forms (text, covers the value?), subdomains.
struct Case {
    kind: Kind,
    query: String,
    forms: Vec<(String, bool)>,
    subdomains: bool,
}

fn case_for(which: u8, a: u32, h: [u8; 20], subdomains: bool, salt: u8) -> Case {
    match which % 3 {
        0 => {
            // An IPv4 address; its exact forms, networks that contain it, and some that do not.
            let d = dotted(a);
            let mut forms = vec![
                (d.clone(), true),
                (format!("::ffff:{d}"), true),
                (format!("::FFFF:{:x}:{:x}", a >> 16, a & 0xffff), true),
                (format!("{d}/32"), true),
                (dotted(a ^ 1), false),
            ];
            // Prefixes from /8 up: the index's /24 block filter walks every block of a network, which
            // for /0 costs ~30 ms a case in the unoptimized test build (index.rs's tests cover /0).
            for n in [8u32, 16, 24, u32::from(salt % 24) + 9] {
                // Host bits left in: the network is the same.
                forms.push((format!("{d}/{n}"), true));
                forms.push((format!("::ffff:{d}/{}", 96 + n), true));
                // Flip a bit inside the prefix: a network that does not contain the address.
                let other = a ^ (1u32 << (32 - n));
                forms.push((format!("{}/{n}", dotted(other)), false));
            }
            Case { kind: Kind::Ip, query: d, forms, subdomains: false }
        }
        1 => {
            // A domain; with subdomain matching, its parents are candidates too.
            let base = format!("x{salt}.evil.com");
            let mut forms = vec![
                (base.clone(), true),
                (base.to_ascii_uppercase(), true),
                (format!("{base}."), true),
                (format!("X{salt}.Evil.Com."), true),
                (format!("y{salt}.evil.com"), false),
                (format!("w.x{salt}.evil.com"), false),
                ("evil.co".to_owned(), false),
            ];
            forms.push(("evil.com".to_owned(), subdomains));
            forms.push(("EVIL.com.".to_owned(), subdomains));
            forms.push(("com".to_owned(), subdomains));
            Case { kind: Kind::Domain, query: base, forms, subdomains }
        }
        _ => {
            let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
            let mut other = h;
            other[0] ^= 1;
            let other: String = other.iter().map(|b| format!("{b:02x}")).collect();
            let forms =
                vec![(hex.clone(), true), (hex.to_ascii_uppercase(), true), (format!(" {hex} "), true), (other, false)];
            Case { kind: Kind::Hash, query: hex, forms, subdomains: false }
        }
    }
}

fn row_type(kind: Kind, v: u8) -> &'static str {
    match kind {
        Kind::Ip => ["ip", "ipv6"][usize::from(v % 2)],
        Kind::Domain => "domain",
        Kind::Hash => ["md5", "sha1", "sha256", "hash"][usize::from(v % 4)],
        Kind::Email => "email",
        Kind::Url => "url",
    }
}

const MODIFIED: [&str; 3] = ["2025-01-01 00:00:00", "2025-06-01 12:00:00", "2025-06-01 12:00:01"];

fn row_line(case: &Case, r: &RowGen, id: i64) -> String {
    let keys: Vec<String> =
        r.keys.iter().map(|k| serde_json::to_string(&case.forms[k % case.forms.len()].0).unwrap()).collect();
    let mut s = format!(
        r#"{{"id":{},"value":{},"match":[{}],"type":"{}","confidence":{}"#,
        if r.id_as_text { format!("\"{id}\"") } else { id.to_string() },
        keys[0],
        keys.join(","),
        row_type(case.kind, r.type_variant),
        if r.confidence_as_text { format!("\"{}\"", r.confidence) } else { r.confidence.to_string() },
    );
    match r.status {
        0 => s.push_str(r#","status":"active""#),
        1 => s.push_str(r#","status":"inactive""#),
        2 => s.push_str(r#","status":"Active""#),
        _ => {}
    }
    match r.expiry {
        1 => s.push_str(r#","expiration_ts":"2025-12-31 23:59:59""#),
        2 => s.push_str(r#","expiration_ts":"2026-01-01 00:00:00""#),
        3 => s.push_str(r#","expiration_ts":"2026-01-01 00:00:01""#),
        4 => s.push_str(r#","expiration_ts":"""#),
        _ => {}
    }
    if let Some(m) = r.modified {
        let _ = write!(s, r#","modified_ts":"{}""#, MODIFIED[usize::from(m)]);
    }
    s.push_str(r#","threat_type":"c2"}"#);
    s
}

/// ENRICHMENT.md, written out plainly: the candidates are the eligible rows (status exactly
/// `active`, no expiration or one later than now) with a key that covers the value; the highest
/// confidence wins, then the newest `modified_ts` as text (absent = ""), then the lowest id.
fn reference_winner(case: &Case, rows: &[(RowGen, i64)]) -> Option<i64> {
    rows.iter()
        .filter(|(r, _)| r.status == 0 && matches!(r.expiry, 0 | 3 | 4))
        .filter(|(r, _)| r.keys.iter().any(|k| case.forms[k % case.forms.len()].1))
        .max_by(|(a, ia), (b, ib)| {
            let ma = a.modified.map_or("", |m| MODIFIED[usize::from(m)]);
            let mb = b.modified.map_or("", |m| MODIFIED[usize::from(m)]);
            a.confidence.cmp(&b.confidence).then(ma.cmp(mb)).then(ib.cmp(ia))
        })
        .map(|(_, id)| *id)
}

proptest! {
    #![proptest_config(config())]

    /// For random rows under one value (every key form that reaches it, networks, decoys, inactive
    /// and expired rows, ties), the index's winner is the reference's.
    #[test]
    fn the_index_winner_is_the_reference_winner(
        which in 0u8..3,
        a in any::<u32>(),
        h in any::<[u8; 20]>(),
        subdomains in any::<bool>(),
        salt in any::<u8>(),
        rows in proptest::collection::vec(row_gen(), 1..12),
        ids in Just((-20i64..200).collect::<Vec<_>>()).prop_shuffle(),
        garbage in 0usize..3,
        reversed in any::<bool>(),
    ) {
        let case = case_for(which, a, h, subdomains, salt);
        let rows: Vec<(RowGen, i64)> = rows.into_iter().zip(ids).collect();
        let mut lines: Vec<String> = rows.iter().map(|(r, id)| row_line(&case, r, *id)).collect();
        // Bad rows are rejected and counted; they never win and never stop the load.
        for g in 0..garbage {
            lines.insert(g * 2 % (lines.len() + 1), format!(r#"{{"id":"9{g}","type":"ip","value":"#));
        }
        if reversed {
            lines.reverse();
        }
        let spec = TableSpec { match_subdomains: case.subdomains, ..TableSpec::anomali("t", "/nonexistent/t.jsonl") };
        let table = Table::from_bytes(&spec, lines.join("\n").into_bytes(), now()).unwrap();
        prop_assert_eq!(table.report.rejected_total(), garbage as u64);
        let key = normalize(case.kind, &case.query, false).unwrap();
        let got = table.lookup(&key).map(|e| table.entry_id(e).parse::<i64>().unwrap());
        let want = reference_winner(&case, &rows);
        prop_assert_eq!(got, want, "query {:?}\n{}", case.query, lines.join("\n"));
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

/// Pieces that break naive escaping, markers and line handling.
const HOSTILE: &[&str] = &[
    "<",
    ">",
    "&",
    "\"",
    "'",
    "<!--",
    "-->",
    "--!>",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "</td></tr></table>",
    "<p>",
    "&lt;",
    "&#60;",
    "\n",
    "\r\n",
    "\r",
    "\t",
    "\u{0}",
    "\u{1b}[31m",
    "\u{7f}",
    "\u{85}",
    "\u{b}",
    "\u{c}",
    "\u{2028}",
    "\u{2029}",
    "é",
    "中文",
    "🦀",
    "\u{202e}",
    "panther-triage:",
    "panther-triage:a1:1",
    "<!-- panther-triage:a1:1 -->",
    ":1",
    " ",
    "x",
];

fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::collection::vec(proptest::sample::select(HOSTILE), 0..8).prop_map(|v| v.concat()),
        1 => any::<String>(),
        // Past the cap.
        1 => (proptest::sample::select(HOSTILE), 150usize..400).prop_map(|(s, n)| s.repeat(n)),
    ]
}

/// An alert ID as the daemon can meet one: Panther's are 32 hex digits, and the webhook refuses
/// any over 512 bytes. Longer ones are `a_body_stays_under_the_limit_whatever_the_alert_id`'s.
fn alert_id() -> impl Strategy<Value = String> {
    hostile().prop_map(|mut s| {
        while s.len() > 512 {
            s.pop();
        }
        s
    })
}

fn hit() -> impl Strategy<Value = Hit> {
    (
        hostile(),
        hostile(),
        hostile(),
        hostile(),
        proptest::option::of(-5i64..150),
        proptest::option::of(hostile()),
        proptest::option::of(hostile()),
    )
        .prop_map(|(table, field, value, row_id, confidence, threat_type, source)| Hit {
            table,
            field,
            value,
            row_id,
            confidence,
            threat_type,
            source,
        })
}

#[derive(Debug, Clone)]
struct Inputs {
    alert_id: String,
    title: String,
    detection_id: String,
    severity: String,
    created_at: String,
    last_event_at: Option<String>,
    rule: Option<String>,
    reasons: Vec<String>,
    hits: Vec<Hit>,
    skipped: Vec<(String, String)>,
    include: Vec<Section>,
    revision: i64,
}

fn inputs() -> impl Strategy<Value = Inputs> {
    (
        (alert_id(), hostile(), hostile(), hostile(), hostile(), proptest::option::of(hostile())),
        (
            proptest::option::of(hostile()),
            proptest::collection::vec(hostile(), 0..3),
            proptest::collection::vec(hit(), 0..6),
            proptest::collection::vec((hostile(), hostile()), 0..4),
            proptest::sample::subsequence(Section::ALL.to_vec(), 0..=4).prop_shuffle(),
            1i64..5,
        ),
    )
        .prop_map(
            |(
                (alert_id, title, detection_id, severity, created_at, last_event_at),
                (rule, reasons, hits, skipped, include, revision),
            )| Inputs {
                alert_id,
                title,
                detection_id,
                severity,
                created_at,
                last_event_at,
                rule,
                reasons,
                hits,
                skipped,
                include,
                revision,
            },
        )
}

fn render_body(i: &Inputs, format: CommentFormat) -> String {
    let decision = Decision {
        verdict: Verdict::Suspicious,
        rule: i.rule.clone(),
        reasons: i.reasons.clone(),
        set_status: None,
        assign_to: None,
    };
    let inv = Investigation {
        alert_id: &i.alert_id,
        title: &i.title,
        detection_id: &i.detection_id,
        severity: &i.severity,
        created_at: &i.created_at,
        decision: &decision,
        hits: &i.hits,
        lookups: 3,
        skipped: &i.skipped,
        skipped_total: i.skipped.len() as u64,
        events_read: 2,
        event_count: 2,
        events_capped: false,
        last_event_at: i.last_event_at.as_deref(),
        triaged_at: "2026-01-01T00:01:00Z",
        revision: i.revision,
    };
    render::investigation(&inv, format, &i.include)
}

/// The renderer's own tags: every `<` in an HTML body must open one of these (or the marker).
const OWN_TAGS: &[&str] = &[
    "<p>", "</p>", "<b>", "</b>", "<i>", "</i>", "<ul>", "</ul>", "<li>", "</li>", "<table>", "</table>", "<tr>",
    "</tr>", "<th>", "</th>", "<td>", "</td>",
];
/// The entities `escape_html` writes: every `&` in an HTML body must start one of these.
const OWN_ENTITIES: &[&str] = &["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"];

/// Checks that markup in an HTML body is only the renderer's: no `<`, `>` or `&` from the input,
/// no control character but the newline, and one HTML comment, the marker, at the very end.
fn check_html(body: &str, marker_line: &str) -> Result<(), String> {
    let Some(head) = body.strip_suffix(marker_line) else {
        return Err(format!("the body does not end with {marker_line:?}"));
    };
    let mut rest = head;
    while let Some(i) = rest.find(['<', '>', '&']) {
        let at = &rest[i..];
        let own = if at.starts_with('&') { OWN_ENTITIES } else { OWN_TAGS };
        match own.iter().find(|t| at.starts_with(**t)) {
            Some(t) => rest = &at[t.len()..],
            None => return Err(format!("input markup survives at {:?}", &at[..at.len().min(40)])),
        }
    }
    if let Some(c) = head.chars().find(|c| c.is_control() && *c != '\n') {
        return Err(format!("control character {c:?} in the body"));
    }
    Ok(())
}

/// Every character that starts a new line somewhere: a viewer may break a line at any of them.
fn is_line_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{b}' | '\u{c}' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

proptest! {
    #![proptest_config(config())]

    /// HTML: nothing the input opened survives, the body fits, and the marker is last, intact,
    /// and the only HTML comment.
    #[test]
    fn html_bodies_hold_only_the_renderers_markup(i in inputs()) {
        let body = render_body(&i, CommentFormat::Html);
        let marker = render::marker(&i.alert_id, i.revision);
        let marker_line = format!("\n<!-- {marker} -->");
        prop_assert!(body.len() <= MAX_BODY, "{} bytes", body.len());
        if let Err(why) = check_html(&body, &marker_line) {
            prop_assert!(false, "{}\n{}", why, body);
        }
        prop_assert_eq!(body.matches("<!--").count(), 1, "{}", body);
        prop_assert_eq!(body.matches("-->").count(), 1, "{}", body);
        prop_assert!(render::has_marker(&body, &marker));
        prop_assert!(!render::has_marker(&body, &render::marker(&i.alert_id, i.revision + 1)));
        prop_assert!(!marker.contains(['<', '>', '\n', ' ']), "{}", marker);
    }

    /// Plain text: the input cannot start a line (by any line-break character) that looks like a
    /// marker; the marker is the last line, intact, and the only one.
    #[test]
    fn plain_text_input_cannot_start_a_marker_line(i in inputs()) {
        let body = render_body(&i, CommentFormat::PlainText);
        let marker = render::marker(&i.alert_id, i.revision);
        prop_assert!(body.len() <= MAX_BODY, "{} bytes", body.len());
        let lines: Vec<&str> = body.split(is_line_break).collect();
        prop_assert_eq!(lines.last().copied(), Some(marker.as_str()), "{}", body);
        let tail = format!("\n{marker}");
        prop_assert!(body.ends_with(&tail));
        for l in &lines[..lines.len() - 1] {
            prop_assert!(!l.trim_start().starts_with("panther-triage:"), "a line looks like a marker: {:?}\n{:?}", l, body);
        }
        if let Some(c) = body.chars().find(|c| c.is_control() && *c != '\n') {
            prop_assert!(false, "control character {:?} in the body", c);
        }
        prop_assert!(render::has_marker(&body, &marker));
        prop_assert!(!render::has_marker(&body, &render::marker(&i.alert_id, i.revision + 1)));
    }

    /// One outside value: capped at VALUE_CHARS characters (plus the ellipsis) before escaping.
    #[test]
    fn outside_values_are_capped(s in hostile()) {
        let plain = render::outside(CommentFormat::PlainText, &s);
        prop_assert!(plain.chars().count() <= VALUE_CHARS + 1);
        let html = render::outside(CommentFormat::Html, &s);
        let unescaped = OWN_ENTITIES.iter().zip(["&", "<", ">", "\"", "'"]).fold(html.clone(), |t, (e, c)| t.replace(e, c));
        prop_assert!(unescaped.chars().count() <= VALUE_CHARS + 1, "{:?}", html);
        prop_assert!(check_html(&html, "").is_ok(), "{:?}", html);
    }

    /// The duplicate link escapes the original's ID and carries the marker last.
    #[test]
    fn duplicate_links_escape_and_end_with_the_marker(alert_id in alert_id(), original in hostile()) {
        let marker = render::marker(&alert_id, 1);
        let body = render::duplicate_link(&alert_id, &original, "15m", CommentFormat::Html);
        if let Err(why) = check_html(&body, &format!("<!-- {marker} -->")) {
            prop_assert!(false, "{}\n{}", why, body);
        }
        prop_assert!(render::has_marker(&body, &marker));
        let body = render::duplicate_link(&alert_id, &original, "15m", CommentFormat::PlainText);
        let lines: Vec<&str> = body.split(is_line_break).collect();
        prop_assert_eq!(lines.len(), 2, "{:?}", body);
        prop_assert_eq!(lines[1], marker.as_str());
    }
}

/// `render` promises a body of at most MAX_BODY bytes, and the marker (percent-encoded, so up to
/// three bytes per character of the ID) is not capped by it: alert IDs are bounded at the door
/// instead. An ID over `MAX_ALERT_ID` bytes is refused when read from Panther (and by the webhook),
/// and the worst ID that gets in still makes a body under the limit.
#[test]
fn a_body_stays_under_the_limit_whatever_the_alert_id() {
    use panther_triage::panther::{Alert, MAX_ALERT_ID};
    let raw = |id: &str| serde_json::value::RawValue::from_string(serde_json::json!({ "id": id }).to_string()).unwrap();
    assert!(Alert::from_json(&raw(&"<".repeat(MAX_ALERT_ID + 1))).unwrap_err().contains("over"));
    assert!(Alert::from_json(&raw(&"<".repeat(MAX_ALERT_ID))).is_ok());
    let i = Inputs {
        alert_id: "<".repeat(MAX_ALERT_ID),
        title: "<".repeat(5000),
        detection_id: "<".repeat(5000),
        severity: String::new(),
        created_at: String::new(),
        last_event_at: None,
        rule: None,
        reasons: Vec::new(),
        hits: Vec::new(),
        skipped: Vec::new(),
        include: Vec::new(),
        revision: 1,
    };
    for format in [CommentFormat::Html, CommentFormat::PlainText] {
        let body = render_body(&i, format);
        assert!(body.len() <= MAX_BODY, "{format:?}: {} bytes", body.len());
    }
}
