//! Comment bodies: the investigation as HTML (default) or plain text.
//!
//! Pure. Everything that came from outside (alert fields, event values, table rows) is hostile:
//! it is escaped (HTML) or flattened to one line (plain text), and capped. A body never exceeds
//! [`MAX_BODY`] bytes; when the matches do not fit, the comment says how many were left out.
//! Every body ends with the marker that makes writes exactly-once (DESIGN.md invariant 2).

use std::fmt::Write as _;

use crate::config::Section;
use crate::panther::CommentFormat;
use crate::triage::{Decision, Hit};

/// Panther's comment limit is 10,000 characters; bytes are counted, which is never more.
pub const MAX_BODY: usize = 10_000;
/// The longest piece of any outside value shown, in characters.
pub const VALUE_CHARS: usize = 200;
/// Skipped values listed at most.
const SKIPPED_SHOWN: usize = 10;

/// The marker `panther-triage:<alert id>:<revision>`. Characters of the alert ID that could end an
/// HTML comment or a line are percent-encoded, so no ID can break out of it.
pub fn marker(alert_id: &str, revision: i64) -> String {
    let mut id = String::with_capacity(alert_id.len());
    for c in alert_id.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            id.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(id, "%{b:02X}");
            }
        }
    }
    format!("panther-triage:{id}:{revision}")
}

/// Whether `body` is one of ours carrying `marker`: the marker is where the daemon puts it (the last
/// line), not merely quoted somewhere by a person.
pub fn has_marker(body: &str, marker: &str) -> bool {
    let last = body.trim_end().rsplit('\n').next().unwrap_or("").trim();
    last == marker || last == format!("<!-- {marker} -->")
}

fn marker_line(format: CommentFormat, marker: &str) -> String {
    match format {
        CommentFormat::Html => format!("\n<!-- {marker} -->"),
        CommentFormat::PlainText => format!("\n{marker}"),
    }
}

/// A value from outside, capped and made safe for the format.
pub fn outside(format: CommentFormat, v: &str) -> String {
    let mut capped: String = v.chars().take(VALUE_CHARS).collect();
    if capped.len() < v.len() {
        capped.push('…');
    }
    match format {
        CommentFormat::Html => escape_html(&capped),
        // Line and paragraph separators too: a value must not start a line of its own (one that
        // could pass for our marker to a reader).
        CommentFormat::PlainText => capped
            .chars()
            .map(|c| if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') { ' ' } else { c })
            .collect(),
    }
}

pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Everything one investigation comment shows.
#[derive(Debug, Clone)]
pub struct Investigation<'a> {
    pub alert_id: &'a str,
    pub title: &'a str,
    pub detection_id: &'a str,
    pub severity: &'a str,
    pub created_at: &'a str,
    pub decision: &'a Decision,
    pub hits: &'a [Hit],
    /// Values looked up in the tables.
    pub lookups: u64,
    /// Values skipped (invalid), as `(value, reason)`; `skipped_total` counts every one.
    pub skipped: &'a [(String, String)],
    pub skipped_total: u64,
    pub events_read: usize,
    pub event_count: i64,
    /// The `enrich.max_events` cap stopped the reading.
    pub events_capped: bool,
    pub last_event_at: Option<&'a str>,
    pub triaged_at: &'a str,
    pub revision: i64,
}

/// Builds the body piece by piece, keeping room for the closing note and the marker.
struct Body {
    format: CommentFormat,
    text: String,
    budget: usize,
}

impl Body {
    fn fits(&self, piece: &str) -> bool {
        self.text.len() + piece.len() <= self.budget
    }

    fn push(&mut self, piece: &str) -> bool {
        if self.fits(piece) {
            self.text.push_str(piece);
            true
        } else {
            false
        }
    }

    fn v(&self, s: &str) -> String {
        outside(self.format, s)
    }
}

/// The investigation comment.
pub fn investigation(inv: &Investigation<'_>, format: CommentFormat, include: &[Section]) -> String {
    let mark = marker_line(format, &marker(inv.alert_id, inv.revision));
    // Room for the marker and one "left out" note.
    let mut b = Body { format, text: String::new(), budget: MAX_BODY.saturating_sub(mark.len() + 200) };
    let html = format == CommentFormat::Html;
    let d = inv.decision;
    let rule = d.rule.as_deref().map(|r| b.v(r));
    if html {
        b.push(&format!("<p><b>panther-triage verdict: {}</b>", d.verdict.as_str().to_uppercase()));
        if let Some(r) = &rule {
            b.push(&format!(" (rule: <i>{r}</i>)"));
        }
        b.push("</p>\n");
    } else {
        b.push(&format!("panther-triage verdict: {}", d.verdict.as_str().to_uppercase()));
        if let Some(r) = &rule {
            b.push(&format!(" (rule: {r})"));
        }
        b.push("\n");
    }
    let mut left_out = 0usize;
    for section in include {
        match section {
            Section::Verdict => {
                let reasons: Vec<String> = d.reasons.iter().map(|r| b.v(r)).collect();
                if html {
                    let items: String = reasons.iter().map(|r| format!("<li>{r}</li>")).collect();
                    b.push(&format!("<p>Why:</p><ul>{items}</ul>\n"));
                } else {
                    b.push("\nWhy:\n");
                    for r in &reasons {
                        b.push(&format!("- {r}\n"));
                    }
                }
            }
            Section::Matches => {
                let n = inv.hits.len();
                if html {
                    b.push(&format!("<p><b>Threat-intel matches ({n})</b></p>\n"));
                    if n > 0 {
                        b.push("<table><tr><th>indicator</th><th>field</th><th>table</th><th>confidence</th><th>threat type</th><th>source</th><th>row</th></tr>\n");
                    }
                } else {
                    b.push(&format!("\nThreat-intel matches ({n}):\n"));
                }
                for (i, h) in inv.hits.iter().enumerate() {
                    let conf = h.confidence.map(|c| c.to_string()).unwrap_or_else(|| "-".into());
                    let threat = h.threat_type.as_deref().map(|t| b.v(t)).unwrap_or_else(|| "-".into());
                    let source = h.source.as_deref().map(|t| b.v(t)).unwrap_or_else(|| "-".into());
                    let row = if html {
                        format!(
                            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{conf}</td><td>{threat}</td><td>{source}</td><td>{}</td></tr>\n",
                            b.v(&h.value),
                            b.v(&h.field),
                            b.v(&h.table),
                            b.v(&h.row_id)
                        )
                    } else {
                        format!(
                            "- {} in {} matched {} row {} (confidence {conf}, threat type {threat}, source {source})\n",
                            b.v(&h.value),
                            b.v(&h.field),
                            b.v(&h.table),
                            b.v(&h.row_id)
                        )
                    };
                    // Keep room for the table's end tag and the later sections' headers.
                    if !(b.text.len() + row.len() + 600 <= b.budget && b.push(&row)) {
                        left_out = n - i;
                        break;
                    }
                }
                if html && n > 0 {
                    b.push("</table>\n");
                }
            }
            Section::Indicators => {
                let shown: Vec<String> = inv
                    .skipped
                    .iter()
                    .take(SKIPPED_SHOWN)
                    .map(|(v, why)| format!("{} ({})", b.v(v), b.v(why)))
                    .collect();
                let summary = format!(
                    "{} value(s) looked up in {} event(s); {} skipped as not a valid indicator",
                    inv.lookups, inv.events_read, inv.skipped_total
                );
                if html {
                    b.push(&format!("<p><b>Indicators</b></p><p>{summary}</p>\n"));
                    if !shown.is_empty() {
                        let items: String = shown.iter().map(|s| format!("<li>{s}</li>")).collect();
                        b.push(&format!("<ul>{items}</ul>\n"));
                    }
                } else {
                    b.push(&format!("\nIndicators: {summary}\n"));
                    for s in &shown {
                        b.push(&format!("- skipped {s}\n"));
                    }
                }
            }
            Section::Timeline => {
                let mut lines = vec![
                    format!("alert created {}", b.v(inv.created_at)),
                    format!("detection {} (severity {})", b.v(inv.detection_id), b.v(inv.severity)),
                ];
                if let Some(l) = inv.last_event_at {
                    lines.push(format!("last event received {}", b.v(l)));
                }
                let mut events = format!("{} of {} event(s) read", inv.events_read, inv.event_count.max(0));
                if inv.events_capped {
                    events.push_str(" (stopped at enrich.max_events)");
                }
                lines.push(events);
                lines.push(format!("triaged {}", inv.triaged_at));
                if html {
                    let items: String = lines.iter().map(|l| format!("<li>{l}</li>")).collect();
                    b.push(&format!("<p><b>Timeline</b> ({})</p><ul>{items}</ul>\n", b.v(inv.title)));
                } else {
                    b.push(&format!("\nTimeline ({}):\n", b.v(inv.title)));
                    for l in &lines {
                        b.push(&format!("- {l}\n"));
                    }
                }
            }
        }
    }
    b.budget = MAX_BODY.saturating_sub(mark.len());
    if left_out > 0 {
        let note = format!("{left_out} more match(es) not shown: the comment would exceed Panther's size limit");
        b.push(&if html { format!("<p><i>{note}</i></p>\n") } else { format!("\n{note}\n") });
    }
    let mut text = b.text;
    text.truncate(text.trim_end().len());
    text.push_str(&mark);
    text
}

/// The short comment on a dedup duplicate, pointing at the original.
pub fn duplicate_link(alert_id: &str, original_id: &str, window: &str, format: CommentFormat) -> String {
    let orig = outside(format, original_id);
    let mark = marker_line(format, &marker(alert_id, 1));
    match format {
        CommentFormat::Html => format!(
            "<p>panther-triage: duplicate of alert <b>{orig}</b> (same detection and title within {window}); its investigation is on that alert.</p>{mark}"
        ),
        CommentFormat::PlainText => format!(
            "panther-triage: duplicate of alert {orig} (same detection and title within {window}); its investigation is on that alert.{mark}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triage::Verdict;

    fn decision() -> Decision {
        Decision {
            verdict: Verdict::Malicious,
            rule: Some("<b>rule</b>".into()),
            reasons: vec!["1.2.3.4 matched".into()],
            set_status: None,
            assign_to: None,
        }
    }

    fn inv<'a>(d: &'a Decision, hits: &'a [Hit], title: &'a str) -> Investigation<'a> {
        Investigation {
            alert_id: "a1",
            title,
            detection_id: "AWS.Root",
            severity: "HIGH",
            created_at: "2026-01-01T00:00:00Z",
            decision: d,
            hits,
            lookups: 4,
            skipped: &[],
            skipped_total: 0,
            events_read: 2,
            event_count: 2,
            events_capped: false,
            last_event_at: None,
            triaged_at: "2026-01-01T00:01:00Z",
            revision: 1,
        }
    }

    fn hit(value: &str) -> Hit {
        Hit {
            table: "anomali".into(),
            field: "p_any_ip_addresses".into(),
            value: value.into(),
            row_id: "42".into(),
            ..Hit::default()
        }
    }

    #[test]
    fn hostile_values_arrive_escaped_and_the_marker_is_last() {
        let d = decision();
        let hits = [hit("<script>alert(1)</script>")];
        let body = investigation(&inv(&d, &hits, "<img src=x onerror=alert(1)>"), CommentFormat::Html, &Section::ALL);
        assert!(!body.contains("<img") && !body.contains("<script>") && !body.contains("<b>rule"), "{body}");
        assert!(body.contains("&lt;img src=x onerror=alert(1)&gt;"), "{body}");
        assert!(body.ends_with("<!-- panther-triage:a1:1 -->"), "{body}");
        assert!(has_marker(&body, &marker("a1", 1)));
        assert!(!has_marker(&body, &marker("a1", 2)));
    }

    #[test]
    fn plain_text_values_cannot_forge_a_marker_line() {
        let d = decision();
        let hits = [hit("x\npanther-triage:a2:1")];
        let body = investigation(&inv(&d, &hits, "t"), CommentFormat::PlainText, &Section::ALL);
        assert!(!body.contains("\npanther-triage:a2:1"), "{body}");
        assert!(body.ends_with("\npanther-triage:a1:1"));
    }

    #[test]
    fn a_huge_investigation_is_cut_below_the_limit_with_a_note() {
        let d = decision();
        let long = "9".repeat(1000);
        let hits: Vec<Hit> = (0..500).map(|i| hit(&format!("10.0.{i}.1{long}"))).collect();
        for format in [CommentFormat::Html, CommentFormat::PlainText] {
            let body = investigation(&inv(&d, &hits, &long), format, &Section::ALL);
            assert!(body.len() <= MAX_BODY, "{}", body.len());
            assert!(body.contains("more match(es) not shown"), "{body}");
            assert!(body.contains("Timeline"), "later sections still fit");
            assert!(has_marker(&body, &marker("a1", 1)));
            assert!(!body.contains(&"9".repeat(VALUE_CHARS + 1)), "values are capped");
        }
    }

    #[test]
    fn sections_follow_the_include_list() {
        let d = decision();
        let body = investigation(&inv(&d, &[], "t"), CommentFormat::PlainText, &[Section::Verdict]);
        assert!(body.contains("Why:") && !body.contains("Timeline") && !body.contains("Threat-intel"), "{body}");
    }

    #[test]
    fn a_marker_cannot_be_broken_by_the_alert_id() {
        assert_eq!(marker("ab-->x\n", 2), "panther-triage:ab--%3Ex%0A:2");
        let link = duplicate_link("a<2", "<orig>", "15m", CommentFormat::Html);
        assert!(link.contains("&lt;orig&gt;") && has_marker(&link, &marker("a<2", 1)), "{link}");
    }
}
