//! The webhook body parser (`webhook::parse`) on arbitrary bytes. Asserts: no panic; an accepted
//! delivery has a non-empty, trimmed alert ID of at most `MAX_ALERT_ID` bytes and other fields of at
//! most 1,000 characters; and a delivery written back as a body parses to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use panther_triage::panther::MAX_ALERT_ID;
use panther_triage::webhook::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(d) = parse(data) else { return };
    assert!(!d.alert_id.is_empty() && d.alert_id.len() <= MAX_ALERT_ID, "alert ID {:?}", d.alert_id);
    assert_eq!(d.alert_id, d.alert_id.trim(), "the alert ID is not trimmed");
    for f in [&d.created_at, &d.detection_id, &d.title, &d.severity] {
        assert!(f.chars().count() <= 1000, "a field of {} characters", f.chars().count());
    }
    let again = serde_json::json!({
        "alertId": d.alert_id, "createdAt": d.created_at, "id": d.detection_id, "title": d.title,
        "severity": d.severity,
    });
    assert_eq!(parse(again.to_string().as_bytes()).as_ref(), Ok(&d), "a delivery does not read back as itself");
});
