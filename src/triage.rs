//! Triage: from an alert and its enrichment to a verdict, by rules from the configuration.
//!
//! Pure: no I/O. Rules are tried in order and the first whose every condition holds decides; when
//! none does, the verdict is `unknown`. The result says which rule fired and why, for the comment.

use std::fmt;

use crate::panther::{Severity, Status};
use crate::regex::DetectionRegex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Malicious,
    Suspicious,
    Benign,
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Malicious => "malicious",
            Verdict::Suspicious => "suspicious",
            Verdict::Benign => "benign",
            Verdict::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Verdict> {
        [Verdict::Malicious, Verdict::Suspicious, Verdict::Benign, Verdict::Unknown]
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[triage.rules]]` entry, checked. Match conditions (`min_confidence`, `threat_types`,
/// `tables`) must all hold for one and the same matched row.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub min_confidence: Option<i64>,
    /// Lower-case.
    pub threat_types: Vec<String>,
    pub tables: Vec<String>,
    pub severities: Vec<Severity>,
    pub detection_id: Option<DetectionRegex>,
    /// `Some(true)`: only alerts with at least one match; `Some(false)`: only alerts with none.
    pub has_matches: Option<bool>,
    pub verdict: Verdict,
    pub set_status: Option<Status>,
    /// An email address or a Panther user ID.
    pub assign_to: Option<String>,
}

/// One matched table row as triage and the comment see it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hit {
    pub table: String,
    /// The event field the value came from (`p_any_ip_addresses`, `sourceIPAddress`, ...).
    pub field: String,
    pub value: String,
    /// The row's `id`.
    pub row_id: String,
    pub confidence: Option<i64>,
    pub threat_type: Option<String>,
    /// The row's `source` or `itype`, when it has one: what the feed calls it.
    pub source: Option<String>,
}

/// What triage decided, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub verdict: Verdict,
    /// The rule that fired, `None` when none did.
    pub rule: Option<String>,
    pub reasons: Vec<String>,
    pub set_status: Option<Status>,
    pub assign_to: Option<String>,
}

impl Rule {
    /// The reasons this rule holds for the alert, or `None` when a condition fails.
    fn check(&self, severity: Option<Severity>, detection_id: &str, hits: &[Hit]) -> Option<Vec<String>> {
        let mut reasons = Vec::new();
        if let Some(want) = self.has_matches {
            if want == hits.is_empty() {
                return None;
            }
            reasons.push(if want { "the alert has matches".to_owned() } else { "no indicator matched".to_owned() });
        }
        if !self.severities.is_empty() {
            let s = severity.filter(|s| self.severities.contains(s))?;
            reasons.push(format!("severity is {s}"));
        }
        if let Some(re) = &self.detection_id {
            // An evaluation error (backtracking limit) means "no" here: a rule must not fire on a guess.
            if !re.is_match(detection_id).unwrap_or(false) {
                return None;
            }
            reasons.push(format!("detection ID matches /{}/", re.as_str()));
        }
        let wants_hit = self.min_confidence.is_some() || !self.threat_types.is_empty() || !self.tables.is_empty();
        if wants_hit {
            let hit = hits.iter().find(|h| self.hit_qualifies(h))?;
            let mut what = format!("{} matched table {}", hit.value, hit.table);
            if let Some(c) = hit.confidence {
                what.push_str(&format!(" with confidence {c}"));
            }
            if let Some(t) = &hit.threat_type {
                what.push_str(&format!(", threat type {t}"));
            }
            reasons.push(what);
        }
        Some(reasons)
    }

    fn hit_qualifies(&self, h: &Hit) -> bool {
        self.min_confidence.is_none_or(|min| h.confidence.is_some_and(|c| c >= min))
            && (self.threat_types.is_empty()
                || h.threat_type.as_ref().is_some_and(|t| self.threat_types.iter().any(|w| w.eq_ignore_ascii_case(t))))
            && (self.tables.is_empty() || self.tables.contains(&h.table))
    }
}

/// Applies the rules in order; the first that holds decides.
pub fn decide(rules: &[Rule], severity: Option<Severity>, detection_id: &str, hits: &[Hit]) -> Decision {
    for rule in rules {
        if let Some(reasons) = rule.check(severity, detection_id, hits) {
            return Decision {
                verdict: rule.verdict,
                rule: Some(rule.name.clone()),
                reasons,
                set_status: rule.set_status,
                assign_to: rule.assign_to.clone(),
            };
        }
    }
    let why = if hits.is_empty() { "no indicator matched and no rule applies" } else { "no rule applies" };
    Decision { verdict: Verdict::Unknown, rule: None, reasons: vec![why.to_owned()], set_status: None, assign_to: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, verdict: Verdict) -> Rule {
        Rule {
            name: name.into(),
            min_confidence: None,
            threat_types: vec![],
            tables: vec![],
            severities: vec![],
            detection_id: None,
            has_matches: None,
            verdict,
            set_status: None,
            assign_to: None,
        }
    }

    fn hit(table: &str, confidence: i64, threat: &str) -> Hit {
        Hit {
            table: table.into(),
            value: "1.2.3.4".into(),
            confidence: Some(confidence),
            threat_type: Some(threat.into()),
            ..Hit::default()
        }
    }

    #[test]
    fn the_first_rule_that_holds_decides_with_its_reasons() {
        let rules = vec![
            Rule {
                min_confidence: Some(80),
                threat_types: vec!["c2".into(), "malware".into()],
                ..rule("bad", Verdict::Malicious)
            },
            Rule { has_matches: Some(true), ..rule("any", Verdict::Suspicious) },
            Rule { has_matches: Some(false), ..rule("clean", Verdict::Benign) },
        ];
        let d = decide(&rules, Some(Severity::High), "X", &[hit("anomali", 90, "C2")]);
        assert_eq!((d.verdict, d.rule.as_deref()), (Verdict::Malicious, Some("bad")));
        assert!(d.reasons[0].contains("confidence 90") && d.reasons[0].contains("anomali"), "{:?}", d.reasons);
        // Confidence and threat type must hold for the same row.
        let split = [hit("anomali", 90, "spam"), hit("anomali", 10, "c2")];
        assert_eq!(decide(&rules, None, "X", &split).rule.as_deref(), Some("any"));
        assert_eq!(decide(&rules, None, "X", &[]).verdict, Verdict::Benign);
    }

    #[test]
    fn no_rule_means_unknown() {
        let d = decide(&[], None, "X", &[hit("t", 1, "c2")]);
        assert_eq!((d.verdict, d.rule), (Verdict::Unknown, None));
    }

    #[test]
    fn severity_detection_and_table_conditions() {
        let r = Rule {
            severities: vec![Severity::Critical],
            detection_id: Some(DetectionRegex::new("^AWS\\.").unwrap()),
            tables: vec!["tor".into()],
            ..rule("r", Verdict::Suspicious)
        };
        let rules = [r];
        assert_eq!(
            decide(&rules, Some(Severity::Critical), "AWS.Root", &[hit("tor", 0, "")]).verdict,
            Verdict::Suspicious
        );
        assert_eq!(decide(&rules, Some(Severity::High), "AWS.Root", &[hit("tor", 0, "")]).verdict, Verdict::Unknown);
        assert_eq!(decide(&rules, Some(Severity::Critical), "Okta.X", &[hit("tor", 0, "")]).verdict, Verdict::Unknown);
        assert_eq!(
            decide(&rules, Some(Severity::Critical), "AWS.Root", &[hit("anomali", 0, "")]).verdict,
            Verdict::Unknown
        );
        // A row without a confidence never meets a minimum.
        let min = [Rule { min_confidence: Some(0), ..rule("m", Verdict::Benign) }];
        let none = Hit { confidence: None, ..hit("t", 0, "") };
        assert_eq!(decide(&min, None, "X", &[none]).verdict, Verdict::Unknown);
    }
}
