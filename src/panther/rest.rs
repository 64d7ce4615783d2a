//! The REST transport: `../shared/panther/panther_open_api_v3_spec.yaml`, over reqwest with rustls.
//!
//! Every request waits for the API key's rate limiter, carries the key in a header marked sensitive,
//! and is retried per [`RetryPolicy`](super::RetryPolicy).
//! Each attempt (by operation and status), retry and rate-limiter wait is counted in [`crate::metrics`].

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use url::Url;

use super::retry::{self, RetryPolicy};
use super::*;

/// Panther's page size limit for alerts, events and comments.
pub const PAGE_LIMIT: u32 = 50;
/// The longest error message from Panther carried into our own errors.
const MESSAGE_CHARS: usize = 300;

/// Settings for [`RestClient::new`].
#[derive(Clone)]
pub struct RestSettings {
    /// The API URL shown on Panther's API Tokens page, e.g. `https://api.acme.runpanther.net`.
    pub url: Url,
    pub api_key: SecretString,
    pub requests_per_second: NonZeroU32,
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

pub struct RestClient {
    http: reqwest::Client,
    base: Url,
    api_key: SecretString,
    limiter: Arc<DefaultDirectRateLimiter>,
    timeout: Duration,
    retry: RetryPolicy,
}

/// One limiter per API key in the process: two clients on one key share Panther's patience.
/// Keyed by a hash of the key, so the map never holds the key itself.
fn limiter_for(key: &SecretString, rps: NonZeroU32) -> Arc<DefaultDirectRateLimiter> {
    use std::hash::{BuildHasher, Hasher};
    static LIMITERS: OnceLock<Mutex<HashMap<u64, Arc<DefaultDirectRateLimiter>>>> = OnceLock::new();
    static SEED: OnceLock<ahash::RandomState> = OnceLock::new();
    let mut h = SEED.get_or_init(ahash::RandomState::new).build_hasher();
    h.write(key.expose_secret().as_bytes());
    let id = h.finish();
    let mut map = LIMITERS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    map.entry(id).or_insert_with(|| Arc::new(RateLimiter::direct(Quota::per_second(rps)))).clone()
}

#[derive(Deserialize)]
struct Page {
    results: Vec<Box<RawValue>>,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct TypedPage<T> {
    results: Vec<T>,
    #[serde(default)]
    next: Option<String>,
}

/// `AlertAPI.BulkPatchAlertReq`.
#[derive(serde::Serialize)]
struct BulkPatch<'a> {
    ids: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    assignee: Option<String>,
}

#[derive(Deserialize)]
struct UserRow {
    id: String,
    #[serde(default)]
    email: Option<String>,
}

/// An empty `next` means the last page, as an absent one does.
fn next_cursor(next: Option<String>) -> Option<String> {
    next.filter(|n| !n.is_empty())
}

impl RestClient {
    pub fn new(s: RestSettings) -> Result<RestClient, ApiError> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!("panther-triage/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(s.timeout.min(Duration::from_secs(10)))
            // A redirect could carry the key (a custom header, which reqwest keeps across hosts)
            // somewhere else: Panther's API does not redirect, so none is followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ApiError::Connect {
                op: Op::ListAlerts,
                detail: format!("cannot build the HTTP client: {e}"),
            })?;
        let limiter = limiter_for(&s.api_key, s.requests_per_second);
        Ok(RestClient { http, base: s.url, api_key: s.api_key, limiter, timeout: s.timeout, retry: s.retry })
    }

    pub(super) fn url(&self, path: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().extend(path);
        }
        url
    }

    /// Sends one request, retrying per policy; returns the body of a 2xx answer.
    pub(super) async fn call(
        &self,
        op: Op,
        method: Method,
        url: Url,
        query: &[(&str, String)],
        body: Option<&(impl serde::Serialize + Sync)>,
    ) -> Result<Vec<u8>, ApiError> {
        let mut delays = self.retry.delays();
        let mut attempt = 1u32;
        loop {
            let (err, retry_after) = match self.attempt(op, method.clone(), url.clone(), query, body).await {
                Ok(b) => return Ok(b),
                Err(e) => e,
            };
            let next = if retry::retryable(op, &err) { delays.next() } else { None };
            let Some(backoff) = next else { return Err(err) };
            let wait = retry::wait(backoff, retry_after);
            tracing::warn!(operation = op.as_str(), attempt, error = %err, wait = %humantime::format_duration(wait), "retrying");
            crate::metrics::api_retry(op_label(op));
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        op: Op,
        method: Method,
        url: Url,
        query: &[(&str, String)],
        body: Option<&(impl serde::Serialize + Sync)>,
    ) -> Result<Vec<u8>, (ApiError, Option<Duration>)> {
        let waiting = std::time::Instant::now();
        self.limiter.until_ready().await;
        crate::metrics::rate_limit_wait(waiting.elapsed());
        let mut key = HeaderValue::from_str(self.api_key.expose_secret()).map_err(|_| {
            (ApiError::Unauthorized { op, status: 0 }, None) // unreachable in practice: config checks the key's characters
        })?;
        key.set_sensitive(true);
        let mut req = self.http.request(method, url).header("X-API-Key", key).timeout(self.timeout);
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let started = std::time::Instant::now();
        // Metrics: one `api_request` per attempt, `status="error"` when no complete answer came.
        let failed = |e: reqwest::Error| {
            crate::metrics::api_request(op_label(op), None, started.elapsed());
            (self.transport_error(op, &e), None)
        };
        let resp = req.send().await.map_err(failed)?;
        let status = resp.status();
        let retry_after =
            resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(retry::parse_retry_after);
        let body = resp.bytes().await.map_err(failed)?;
        crate::metrics::api_request(op_label(op), Some(status.as_u16()), started.elapsed());
        tracing::debug!(
            operation = op.as_str(),
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "panther api"
        );
        if status.is_success() {
            return Ok(body.to_vec());
        }
        Err((answer_error(op, status, &body), retry_after))
    }

    fn transport_error(&self, op: Op, e: &reqwest::Error) -> ApiError {
        // reqwest's messages name the URL; ours never carry a query string with secrets (the key is
        // a header), so they are safe to show.
        let detail = error_chain(e);
        if e.is_timeout() {
            ApiError::Timeout { op, timeout: self.timeout }
        } else if e.is_connect() {
            ApiError::Connect { op, detail }
        } else {
            ApiError::Transport { op, detail }
        }
    }

    /// The body of a successful `GET`.
    async fn get(&self, op: Op, url: Url, query: &[(&str, String)]) -> Result<Vec<u8>, ApiError> {
        self.call(op, Method::GET, url, query, None::<&()>).await
    }
}

/// `op` as a metric label: snake_case, one per [`Op`].
fn op_label(op: Op) -> &'static str {
    match op {
        Op::ListAlerts => "list_alerts",
        Op::GetAlert => "get_alert",
        Op::ListEvents => "list_events",
        Op::ListComments => "list_comments",
        Op::CreateComment => "create_comment",
        Op::UpdateComment => "update_comment",
        Op::PatchAlerts => "patch_alerts",
        Op::FindUser => "find_user",
        Op::Ping => "ping",
    }
}

/// An error and its causes on one line (reqwest hides the useful part in `source()`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// What Panther said went wrong: REST's `{"message"}`, GraphQL's `{"errors":[{"message",
/// "extensions":{"code"}}]}`, or the body as text.
fn error_message(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::from_utf8_lossy(body).into_owned();
    };
    if let Some(m) = v.get("message").and_then(|m| m.as_str()) {
        return m.to_owned();
    }
    if let Some(errors) = v.get("errors").and_then(|e| e.as_array()) {
        let all: Vec<String> = errors
            .iter()
            .map(|e| {
                let msg = e.get("message").and_then(|m| m.as_str()).unwrap_or("(no message)");
                match e.pointer("/extensions/code").and_then(|c| c.as_str()) {
                    Some(code) => format!("{code}: {msg}"),
                    None => msg.to_owned(),
                }
            })
            .collect();
        return all.join("; ");
    }
    String::from_utf8_lossy(body).into_owned()
}

/// The error a non-2xx answer stands for, with what Panther said (cut to [`MESSAGE_CHARS`]).
fn answer_error(op: Op, status: StatusCode, body: &[u8]) -> ApiError {
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ApiError::Unauthorized { op, status: status.as_u16() },
        _ => ApiError::Status {
            op,
            status: status.as_u16(),
            message: error_message(body).chars().take(MESSAGE_CHARS).collect(),
        },
    }
}

/// Reads the body of a successful answer.
fn decode<T: DeserializeOwned>(op: Op, body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::Decode { op, detail: decode_detail(&e) })
}

/// A `GET /alerts` answer: the page, each alert read on its own (an unreadable one is reported, not
/// fatal).
fn alert_page(body: &[u8]) -> Result<AlertPage, ApiError> {
    let page: Page = decode(Op::ListAlerts, body)?;
    let mut alerts = Vec::with_capacity(page.results.len());
    let mut unreadable = Vec::new();
    for raw in &page.results {
        match Alert::from_json(raw) {
            Ok(a) => alerts.push(a),
            Err(why) => unreadable.push(format!("{why}: {}", raw.get().chars().take(200).collect::<String>())),
        }
    }
    Ok(AlertPage { alerts, unreadable, next: next_cursor(page.next), events: Vec::new() })
}

/// A `GET /alerts/{id}` answer.
fn one_alert(body: &[u8]) -> Result<Alert, ApiError> {
    let op = Op::GetAlert;
    let raw: Box<RawValue> = decode(op, body)?;
    Alert::from_json(&raw).map_err(|detail| ApiError::Decode { op, detail })
}

/// A `GET /alerts/{id}/events` answer.
fn event_page(body: &[u8]) -> Result<EventPage, ApiError> {
    let page: Page = decode(Op::ListEvents, body)?;
    Ok(EventPage { events: page.results, next: next_cursor(page.next) })
}

/// A `GET /alert-comments` answer.
fn comment_page(body: &[u8]) -> Result<CommentPage, ApiError> {
    let page: TypedPage<Comment> = decode(Op::ListComments, body)?;
    Ok(CommentPage { comments: page.results, next: next_cursor(page.next) })
}

/// A `GET /users?email=` answer: the ID of the user with exactly that email, if any.
fn user_id(body: &[u8], email: &str) -> Result<Option<String>, ApiError> {
    let page: TypedPage<UserRow> = decode(Op::FindUser, body)?;
    // `email` is an exact match on Panther's side; checking again costs nothing and guards a
    // server that ignores the parameter.
    Ok(page
        .results
        .into_iter()
        .find(|u| u.email.as_deref().is_some_and(|e| e.eq_ignore_ascii_case(email)))
        .map(|u| u.id))
}

/// The decoders of Panther's REST answers, for the fuzz targets (`fuzz/`): each is the code path the
/// client runs on a response body. Not part of the daemon's API.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// A `GET /alerts` body.
    pub fn list_alerts(body: &[u8]) -> Result<AlertPage, ApiError> {
        alert_page(body)
    }
    /// A `GET /alerts/{id}` body.
    pub fn get_alert(body: &[u8]) -> Result<Alert, ApiError> {
        one_alert(body)
    }
    /// A `GET /alerts/{id}/events` body.
    pub fn list_events(body: &[u8]) -> Result<EventPage, ApiError> {
        event_page(body)
    }
    /// A `GET /alert-comments` body.
    pub fn list_comments(body: &[u8]) -> Result<CommentPage, ApiError> {
        comment_page(body)
    }
    /// A `POST /alert-comments` body (the comment created).
    pub fn create_comment(body: &[u8]) -> Result<Comment, ApiError> {
        decode(Op::CreateComment, body)
    }
    /// A `GET /users` body, looked up for `email`.
    pub fn find_user_id(body: &[u8], email: &str) -> Result<Option<String>, ApiError> {
        user_id(body, email)
    }
    /// A non-2xx answer: `status` (100 to 999) and its body.
    pub fn error_answer(op: Op, status: u16, body: &[u8]) -> ApiError {
        answer_error(op, StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body)
    }
}

impl PantherApi for RestClient {
    async fn list_alerts(&self, q: &AlertQuery) -> Result<AlertPage, ApiError> {
        let mut query = vec![
            ("created-after", format_time(q.created_after)),
            ("created-before", format_time(q.created_before)),
            ("sort-dir", "asc".to_owned()),
            ("limit", PAGE_LIMIT.to_string()),
        ];
        query.extend(q.statuses.iter().map(|s| ("status", s.as_str().to_owned())));
        query.extend(q.severities.iter().map(|s| ("severity", s.as_str().to_owned())));
        if let Some(c) = &q.cursor {
            query.push(("cursor", c.clone()));
        }
        let op = Op::ListAlerts;
        alert_page(&self.get(op, self.url(&["alerts"]), &query).await?)
    }

    async fn get_alert(&self, id: &str) -> Result<Alert, ApiError> {
        one_alert(&self.get(Op::GetAlert, self.url(&["alerts", id]), &[]).await?)
    }

    async fn list_events(&self, alert_id: &str, limit: u32, cursor: Option<&str>) -> Result<EventPage, ApiError> {
        let mut query = vec![("limit", limit.clamp(1, PAGE_LIMIT).to_string())];
        if let Some(c) = cursor {
            query.push(("cursor", c.to_owned()));
        }
        let url = self.url(&["alerts", alert_id, "events"]);
        event_page(&self.get(Op::ListEvents, url, &query).await?)
    }

    async fn list_comments(&self, alert_id: &str, cursor: Option<&str>) -> Result<CommentPage, ApiError> {
        let mut query = vec![("alert-id", alert_id.to_owned()), ("limit", PAGE_LIMIT.to_string())];
        if let Some(c) = cursor {
            query.push(("cursor", c.to_owned()));
        }
        let url = self.url(&["alert-comments"]);
        comment_page(&self.get(Op::ListComments, url, &query).await?)
    }

    async fn create_comment(&self, c: &NewComment) -> Result<Comment, ApiError> {
        let op = Op::CreateComment;
        decode(op, &self.call(op, Method::POST, self.url(&["alert-comments"]), &[], Some(c)).await?)
    }

    async fn update_comment(&self, id: &str, c: &NewComment) -> Result<Comment, ApiError> {
        let op = Op::UpdateComment;
        decode(op, &self.call(op, Method::POST, self.url(&["alert-comments", id]), &[], Some(c)).await?)
    }

    async fn patch_alerts(&self, p: &AlertPatch) -> Result<(), ApiError> {
        let assignee = match &p.assignee {
            None => None,
            Some(Assignee::Id(id)) => Some(id.clone()),
            // The pipeline resolves emails first (`assigns_by_email` is false); this keeps the type honest.
            Some(Assignee::Email(email)) => match self.find_user_id(email).await? {
                Some(id) => Some(id),
                None => {
                    return Err(ApiError::Status {
                        op: Op::PatchAlerts,
                        status: 404,
                        message: format!("no Panther user with email {email:?}"),
                    })
                }
            },
        };
        let body = BulkPatch { ids: &p.ids, status: p.status, assignee };
        self.call(Op::PatchAlerts, Method::PATCH, self.url(&["alerts"]), &[], Some(&body)).await.map(drop)
    }

    async fn ping(&self) -> Result<String, ApiError> {
        // The smallest read the spec offers: one alert of the last minute.
        let now = chrono::Utc::now();
        let query = [
            ("created-after", format_time(now - chrono::Duration::minutes(1))),
            ("created-before", format_time(now)),
            ("limit", "1".to_owned()),
        ];
        let _: Page = decode(Op::ListAlerts, &self.get(Op::ListAlerts, self.url(&["alerts"]), &query).await?)?;
        Ok("REST API answered".to_owned())
    }

    async fn find_user_id(&self, email: &str) -> Result<Option<String>, ApiError> {
        let query = [("email", email.to_owned())];
        user_id(&self.get(Op::FindUser, self.url(&["users"]), &query).await?, email)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_panther::{FakePanther, Fault, Route};

    const KEY: &str = "rest-metrics-test-key";

    fn client(url: &str, max_retries: u32) -> RestClient {
        RestClient::new(RestSettings {
            url: url.parse().expect("url"),
            api_key: KEY.to_owned().into(),
            requests_per_second: NonZeroU32::new(10_000).expect("nonzero"),
            timeout: Duration::from_secs(10),
            retry: RetryPolicy {
                max_retries,
                min_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(2),
            },
        })
        .expect("client")
    }

    /// The value of `series` (name and labels) in a rendering, 0 when absent.
    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    #[tokio::test]
    async fn every_attempt_and_retry_is_counted() {
        let metrics = crate::metrics::install().expect("metrics");
        let fake = FakePanther::new(KEY);
        fake.add_alert(
            serde_json::json!({"id": "m1", "type": "ALERT", "status": "OPEN", "severity": "HIGH", "title": "t",
                "createdAt": "2024-01-01T00:00:00.000Z", "detection": {"id": "D", "type": "RULE"}}),
            vec![],
        );
        fake.inject(Route::GetAlert, Fault::ServerError { status: 503 }, 1);
        let server = fake.spawn().await.expect("fake");
        let ok = r#"panther_triage_api_requests_total{op="get_alert",status="200"}"#;
        let unavailable = r#"panther_triage_api_requests_total{op="get_alert",status="503"}"#;
        let retries = r#"panther_triage_api_retries_total{op="get_alert"}"#;
        let before = metrics.render();
        client(&server.url(), 1).get_alert("m1").await.expect("the retry succeeds");
        let after = metrics.render();
        for series in [ok, unavailable, retries] {
            assert!(value(&after, series) >= value(&before, series) + 1.0, "{series} not counted:\n{after}");
        }
        assert!(after.contains(r#"panther_triage_api_request_duration_seconds_count{op="get_alert"}"#), "{after}");
        server.shutdown().await.expect("shutdown");

        // No HTTP answer at all: status "error".
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", closed.local_addr().expect("addr"));
        drop(closed);
        let error = r#"panther_triage_api_requests_total{op="get_alert",status="error"}"#;
        let before = metrics.render();
        assert!(client(&url, 0).get_alert("m1").await.is_err());
        assert!(value(&metrics.render(), error) >= value(&before, error) + 1.0);
    }
}
