//! Panther's Custom Webhook destination: Panther POSTs each alert to `/webhook` as it is created.
//!
//! A delivery is accepted (2xx) only once its alert ID is durably in the ledger, so an alert Panther
//! counts as delivered is never lost; the alert itself is then read through the API and takes the
//! same path as a polled one (filters, dedup, enrichment, triage, write-back). Deliveries of the same
//! alert, a retried delivery, and the poller finding it later all meet in the ledger's alert ID: one
//! alert, one investigation.
//!
//! What is checked, before anything is recorded: the shared secret in the configured header,
//! compared in constant time (missing or wrong: 401); the body's size (over 1 MiB: 413); that it is
//! a JSON object with a non-empty string `alertId` (else 400 with the reason).

use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use crate::config::WebhookSettings;
use crate::panther::PantherApi;
use crate::poller::Pipeline;

/// The largest delivery accepted. Panther's alert payloads are a few KiB.
pub const MAX_BODY: usize = 1024 * 1024;
/// The longest alert ID accepted (Panther's are 32 hex characters).
const MAX_ID: usize = crate::panther::MAX_ALERT_ID;

struct Shared<A> {
    pipeline: Arc<Pipeline<A>>,
    header: String,
    secret: SecretString,
}

/// The receiver's routes: `POST /webhook`.
pub fn router<A: PantherApi + 'static>(pipeline: Arc<Pipeline<A>>, settings: &WebhookSettings) -> Router {
    let shared = Arc::new(Shared { pipeline, header: settings.secret_header.clone(), secret: settings.secret.clone() });
    Router::new().route("/webhook", post(deliver::<A>)).with_state(shared)
}

/// Serves the receiver on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

fn refuse(status: StatusCode, outcome: &'static str, reason: String) -> Response {
    crate::metrics::webhook_received(outcome);
    warn!(stage = "webhook", outcome, reason = %reason, "delivery refused");
    (status, axum::Json(json!({ "error": reason }))).into_response()
}

async fn deliver<A: PantherApi + 'static>(State(s): State<Arc<Shared<A>>>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let sent = parts.headers.get(s.header.as_str()).map(|v| v.as_bytes()).unwrap_or_default();
    let expected = s.secret.expose_secret().as_bytes();
    // Digests compared in constant time: neither how much of a guess was right nor the secret's
    // length shows in the time the answer takes.
    let same = Sha256::digest(sent).ct_eq(&Sha256::digest(expected));
    if !bool::from(same) || expected.is_empty() {
        return refuse(StatusCode::UNAUTHORIZED, "unauthorized", format!("missing or wrong `{}` header", s.header));
    }
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the body is over {MAX_BODY} bytes"));
    }
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is over {MAX_BODY} bytes or could not be read"),
            )
        }
    };
    let delivery = match parse(&bytes) {
        Ok(d) => d,
        Err(reason) => return refuse(StatusCode::BAD_REQUEST, "malformed", reason),
    };
    // SQLite and its fsync off the async workers; awaited, because the 200 waits for it.
    let recorded = {
        let (p, d) = (s.pipeline.clone(), delivery.clone());
        tokio::task::spawn_blocking(move || {
            p.ledger().record_webhook(&d.alert_id, &d.created_at, &d.detection_id, &d.title, &d.severity)
        })
        .await
    };
    match recorded {
        Err(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("cannot record the alert: {e}")),
        Ok(Ok(new)) => {
            crate::metrics::webhook_received(if new { "accepted" } else { "repeated" });
            crate::metrics::alert_seen(crate::metrics::source::WEBHOOK);
            if new {
                crate::metrics::alert_ingested(crate::metrics::source::WEBHOOK);
            }
            info!(alert_id = %delivery.alert_id, detection_id = %delivery.detection_id, stage = "webhook", outcome = if new { "recorded" } else { "repeated" }, "alert delivered");
            s.pipeline.wake();
            (StatusCode::OK, axum::Json(json!({ "alertId": delivery.alert_id, "new": new }))).into_response()
        }
        // Not durable, so not accepted: Panther delivers again.
        Ok(Err(e)) => refuse(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("cannot record the alert: {e}")),
    }
}

/// What a delivery says of its alert. Only `alertId` is required; the rest is read from Panther.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub alert_id: String,
    pub created_at: String,
    pub detection_id: String,
    pub title: String,
    pub severity: String,
}

/// Reads a Custom Webhook body (`alertId`, `createdAt`, `id` = the detection ID, `title`,
/// `severity`, ...). Fields other than `alertId` of an unexpected type read as empty.
pub fn parse(body: &[u8]) -> Result<Delivery, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let obj = v.as_object().ok_or("the body is not a JSON object")?;
    let alert_id = match obj.get("alertId") {
        Some(Value::String(id)) if !id.trim().is_empty() && id.len() <= MAX_ID => id.trim().to_owned(),
        Some(Value::String(id)) if id.len() > MAX_ID => return Err(format!("`alertId` is over {MAX_ID} bytes")),
        Some(Value::String(_)) => return Err("`alertId` is empty".into()),
        Some(_) => return Err("`alertId` is not a string".into()),
        None => return Err("no `alertId`: is this a Panther Custom Webhook delivery?".into()),
    };
    let text = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or_default().chars().take(1000).collect();
    Ok(Delivery {
        alert_id,
        created_at: text("createdAt"),
        detection_id: text("id"),
        title: text("title"),
        severity: text("severity"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_needs_an_alert_id_and_reads_the_rest_leniently() {
        let d = parse(br#"{"id":"AWS.Root","alertId":"abc","createdAt":"2026-01-01T00:00:00Z","severity":"HIGH","title":"t","tags":[1]}"#)
            .unwrap();
        assert_eq!((d.alert_id.as_str(), d.detection_id.as_str(), d.severity.as_str()), ("abc", "AWS.Root", "HIGH"));
        let odd = parse(br#"{"alertId":"x","title":{"no":1},"severity":7}"#).unwrap();
        assert_eq!((odd.title.as_str(), odd.severity.as_str()), ("", ""));
        for (body, why) in [
            (&b"not json"[..], "not JSON"),
            (b"[1]", "not a JSON object"),
            (b"{}", "no `alertId`"),
            (br#"{"alertId":""}"#, "empty"),
            (br#"{"alertId":7}"#, "not a string"),
            (b"\xff\xfe", "not JSON"),
        ] {
            assert!(parse(body).unwrap_err().contains(why), "{body:?}");
        }
        let long = format!(r#"{{"alertId":"{}"}}"#, "a".repeat(MAX_ID + 1));
        assert!(parse(long.as_bytes()).unwrap_err().contains("over"));
    }
}
