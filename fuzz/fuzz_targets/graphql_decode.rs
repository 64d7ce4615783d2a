//! The GraphQL client's decoders (`panther::graphql::fuzzing`: the code the client runs on each
//! response body, `{data, errors}` with partial data and per-alias errors) on arbitrary bytes.
//! Asserts: no panic; a failure is a typed `ApiError` that prints; an alert read has an ID of 1 to
//! `MAX_ALERT_ID` bytes; events that came inline belong to an alert of the page; a comment batch
//! answers once per comment sent, in order, each created comment naming its alert.
//!
//! Input: one selector byte (which answer; for a comment batch, how many comments), then the body.
#![no_main]

mod panther_common;

use libfuzzer_sys::fuzz_target;
use panther_common::{check_alert, check_error, check_events, check_page};
use panther_triage::panther::graphql::fuzzing as gql;
use panther_triage::panther::graphql::MAX_COMMENT_BATCH;
use panther_triage::panther::{ApiError, CommentFormat, NewComment};

fn checked<T>(r: Result<T, ApiError>) -> Option<T> {
    r.map_err(|e| check_error(&e)).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else { return };
    match sel % 5 {
        0 => {
            if let Some(p) = checked(gql::list_alerts(body)) {
                check_page(&p);
            }
        }
        1 => {
            if let Some(a) = checked(gql::get_alert(body)) {
                check_alert(&a);
            }
        }
        2 => {
            if let Some(p) = checked(gql::alert_events(body)) {
                check_events(&p);
            }
        }
        3 => {
            let n = 1 + usize::from(sel / 5) % MAX_COMMENT_BATCH;
            let sent: Vec<NewComment> = (0..n)
                .map(|i| NewComment { alert_id: format!("alert-{i}"), body: "b".into(), format: CommentFormat::Html })
                .collect();
            if let Some(results) = checked(gql::create_alert_comments(body, &sent)) {
                assert_eq!(results.len(), n, "one result per comment sent");
                for r in &results {
                    match r {
                        Ok(c) => assert!(c.alert_id.is_some(), "a created comment without its alert"),
                        Err(e) => check_error(e),
                    }
                }
            }
        }
        _ => {
            let _ = checked(gql::update_alert_status(body));
        }
    }
});
