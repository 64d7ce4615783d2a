//! The REST client's decoders (`panther::rest::fuzzing`, the code the client runs on each response
//! body) on arbitrary bytes. Asserts: no panic; a failed decode is `ApiError::Decode`; an alert read
//! has an ID of 1 to `MAX_ALERT_ID` bytes and typed fields that agree with their text; an error
//! answer is `Unauthorized` exactly for 401 and 403 and carries at most 300 characters of Panther's
//! message.
//!
//! Input: one selector byte (which answer; for error answers two more bytes of HTTP status), then the
//! body.
#![no_main]

mod panther_common;

use libfuzzer_sys::fuzz_target;
use panther_common::{check_alert, check_error, check_events, check_page};
use panther_triage::panther::rest::fuzzing as rest;
use panther_triage::panther::{ApiError, Op};

fn decoded<T>(r: Result<T, ApiError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            check_error(&e);
            assert!(matches!(e, ApiError::Decode { .. }), "a body that does not decode gave {e:?}");
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else { return };
    match sel % 7 {
        0 => {
            if let Some(p) = decoded(rest::list_alerts(body)) {
                check_page(&p);
                assert!(p.events.is_empty(), "REST pages carry no events");
            }
        }
        1 => {
            if let Some(a) = decoded(rest::get_alert(body)) {
                check_alert(&a);
            }
        }
        2 => {
            if let Some(p) = decoded(rest::list_events(body)) {
                check_events(&p);
            }
        }
        3 => {
            if let Some(p) = decoded(rest::list_comments(body)) {
                assert_ne!(p.next.as_deref(), Some(""));
            }
        }
        4 => {
            let _ = decoded(rest::create_comment(body));
        }
        5 => {
            let email = "analyst@example.com";
            let _ = decoded(rest::find_user_id(body, email));
        }
        _ => {
            let [a, b, rest @ ..] = body else { return };
            let status = 100 + u16::from_le_bytes([*a, *b]) % 900;
            let e = rest::error_answer(Op::ListAlerts, status, rest);
            check_error(&e);
            assert_eq!(matches!(e, ApiError::Unauthorized { .. }), status == 401 || status == 403, "{status}: {e:?}");
            assert_eq!(e.status(), Some(status));
        }
    }
});
