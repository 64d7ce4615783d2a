//! What every decoded Panther answer must hold: shared by the REST and GraphQL targets.

use panther_triage::panther::{Alert, AlertPage, ApiError, EventPage, DECODE_DETAIL_CHARS, MAX_ALERT_ID};

pub fn check_alert(a: &Alert) {
    assert!(!a.id.is_empty() && a.id.len() <= MAX_ALERT_ID, "alert ID of {} bytes", a.id.len());
    if a.created_at.is_some() {
        assert!(!a.created_at_raw.is_empty());
    }
    if let Some(s) = a.status {
        assert!(s.as_str().eq_ignore_ascii_case(&a.status_raw), "status {s} read from {:?}", a.status_raw);
    }
    if let Some(s) = a.severity {
        assert!(s.as_str().eq_ignore_ascii_case(&a.severity_raw), "severity {s} read from {:?}", a.severity_raw);
    }
}

pub fn check_page(p: &AlertPage) {
    p.alerts.iter().for_each(check_alert);
    assert_ne!(p.next.as_deref(), Some(""), "an empty cursor is the last page");
    for (id, events) in &p.events {
        assert!(p.alerts.iter().any(|a| &a.id == id), "events for {id:?}, which is not on the page");
        check_events(events);
    }
    for u in &p.unreadable {
        // The reason (a decoding error's cut to DECODE_DETAIL_CHARS), then at most 200 characters of
        // the alert: an unreadable alert is logged on every poll.
        let n = u.chars().count();
        assert!(n <= DECODE_DETAIL_CHARS + 200 + 50, "an unreadable alert reported in {n} characters");
    }
}

pub fn check_events(p: &EventPage) {
    assert_ne!(p.next.as_deref(), Some(""), "an empty cursor is the last page");
}

/// An error is shown in logs and comments: it must print, and a message carried from Panther is cut.
pub fn check_error(e: &ApiError) {
    let shown = e.to_string();
    assert!(!shown.is_empty());
    match e {
        ApiError::Status { message, .. } | ApiError::Incompatible { message, .. } => {
            assert!(message.chars().count() <= 300 + 20, "a message of {} characters", message.chars().count());
        }
        ApiError::Decode { detail, .. } => {
            let n = detail.chars().count();
            assert!(n <= DECODE_DETAIL_CHARS + 50, "a decoding error of {n} characters");
        }
        _ => {}
    }
}
