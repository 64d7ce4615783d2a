//! Filters: which alerts the team wants triaged. Pure; the dedup window's lookup of earlier alerts
//! is the ledger's, done by the caller.

use crate::config::FilterSettings;
use crate::metrics::reason;
use crate::panther::{Severity, Status};

/// What the filters say of one alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Keep,
    /// Kept although the detection-ID pattern could not be evaluated: never drop an alert on an error.
    KeepDespite(String),
    /// Dropped: which filter (a `metrics::reason` label) and why, in words.
    Drop(&'static str, String),
}

/// Applies the status, severity and detection-ID filters (the dedup window comes after these).
pub fn check(f: &FilterSettings, status: &str, severity: &str, detection_id: &str) -> Outcome {
    let st = Status::from_wire(status);
    if !st.is_some_and(|s| f.statuses.contains(&s)) {
        return Outcome::Drop(reason::STATUS, format!("status {status:?} is not in filter.statuses"));
    }
    if !Severity::parse(severity).is_some_and(|s| f.severities.contains(&s)) {
        return Outcome::Drop(reason::SEVERITY, format!("severity {severity:?} is not in filter.severities"));
    }
    if let Some(re) = &f.detection_id {
        match re.is_match(detection_id) {
            Ok(true) => {}
            Ok(false) => {
                return Outcome::Drop(
                    reason::DETECTION_ID,
                    format!("detection ID {detection_id:?} does not match filter.detection_id_regex"),
                )
            }
            Err(e) => return Outcome::KeepDespite(format!("filter.detection_id_regex could not be evaluated: {e}")),
        }
    }
    Outcome::Keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regex::DetectionRegex;
    use std::time::Duration;

    fn settings(re: Option<&str>) -> FilterSettings {
        FilterSettings {
            statuses: vec![Status::Open],
            severities: vec![Severity::Critical, Severity::High],
            detection_id: re.map(|r| DetectionRegex::new(r).unwrap()),
            dedup_window: Duration::ZERO,
        }
    }

    #[test]
    fn each_filter_keeps_and_drops() {
        let f = settings(Some("^(?!AWS).*"));
        assert_eq!(check(&f, "OPEN", "HIGH", "Okta.Login"), Outcome::Keep);
        assert!(matches!(check(&f, "TRIAGED", "HIGH", "Okta.Login"), Outcome::Drop(_, r) if r.contains("status")));
        assert!(matches!(check(&f, "INVALID", "HIGH", "Okta.Login"), Outcome::Drop(..)));
        assert!(matches!(check(&f, "OPEN", "LOW", "Okta.Login"), Outcome::Drop(_, r) if r.contains("severity")));
        assert!(matches!(check(&f, "OPEN", "", "Okta.Login"), Outcome::Drop(..)));
        assert!(matches!(check(&f, "OPEN", "HIGH", "AWS.Root"), Outcome::Drop(_, r) if r.contains("detection")));
    }

    #[test]
    fn a_pattern_that_cannot_be_evaluated_keeps_the_alert() {
        let f = settings(Some(r"^(?=.)(a+)+$"));
        let id = format!("{}b", "a".repeat(40));
        assert!(matches!(check(&f, "OPEN", "HIGH", &id), Outcome::KeepDespite(_)));
    }
}
