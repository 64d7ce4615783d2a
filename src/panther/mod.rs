//! Panther's API as the rest of the daemon sees it: plain types, one client trait, typed errors.
//!
//! Only this module knows the wire formats. [`rest`] speaks the REST API
//! (`../shared/panther/panther_open_api_v3_spec.yaml`), [`graphql`] the GraphQL API
//! (`schema/panther.graphql`); the pipeline is generic over [`PantherApi`], and [`Client`] picks one
//! of the two at run time (`panther.api`).

pub mod graphql;
pub mod rest;
mod retry;

use std::fmt;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use graphql::GraphqlClient;
pub use rest::RestClient;
pub use retry::RetryPolicy;

/// An alert's status. `CLOSED` is what Panther's UI calls "Invalid".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Open,
    Triaged,
    Resolved,
    Closed,
}

impl Status {
    pub const ALL: [Status; 4] = [Status::Open, Status::Triaged, Status::Resolved, Status::Closed];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "OPEN",
            Status::Triaged => "TRIAGED",
            Status::Resolved => "RESOLVED",
            Status::Closed => "CLOSED",
        }
    }

    /// Reads a status as Panther sends it: `INVALID` is a UI name, not a status on the wire.
    pub fn from_wire(s: &str) -> Option<Status> {
        Status::parse(s).filter(|_| !s.eq_ignore_ascii_case("INVALID"))
    }

    /// Reads a status as a user writes it: any case, `INVALID` for `CLOSED`.
    pub fn parse(s: &str) -> Option<Status> {
        match s.to_ascii_uppercase().as_str() {
            "OPEN" => Some(Status::Open),
            "TRIAGED" => Some(Status::Triaged),
            "RESOLVED" => Some(Status::Resolved),
            "CLOSED" | "INVALID" => Some(Status::Closed),
            _ => None,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
    Info,
}

impl Severity {
    pub const ALL: [Severity; 5] =
        [Severity::Critical, Severity::High, Severity::Medium, Severity::Low, Severity::Info];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "CRITICAL",
            Severity::High => "HIGH",
            Severity::Medium => "MEDIUM",
            Severity::Low => "LOW",
            Severity::Info => "INFO",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|v| v.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `HTML` or `PLAIN_TEXT`, as Panther names comment formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CommentFormat {
    Html,
    PlainText,
}

impl CommentFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            CommentFormat::Html => "HTML",
            CommentFormat::PlainText => "PLAIN_TEXT",
        }
    }
}

/// One alert, as much of it as the daemon uses. Statuses and severities Panther may add later are
/// kept as text (`None` in the typed field) rather than failing the whole page.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub id: String,
    pub title: String,
    pub created_at: Option<DateTime<Utc>>,
    /// `createdAt` as Panther sent it (kept for the comment and the ledger even when unparsable).
    pub created_at_raw: String,
    pub status: Option<Status>,
    pub status_raw: String,
    pub severity: Option<Severity>,
    pub severity_raw: String,
    pub detection_id: String,
    pub event_count: i64,
    pub last_received_event_at: Option<String>,
}

impl Alert {
    /// Reads one `AlertAPI.Alert` object. Only a missing or non-string `id` is an error: without it the
    /// alert cannot be answered. Any other field of an unexpected type reads as absent, so one odd
    /// field never costs an alert.
    pub fn from_json(v: &RawValue) -> Result<Alert, String> {
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(v.get()).map_err(|e| format!("not a JSON object: {}", decode_detail(&e)))?;
        Alert::from_map(&obj)
    }

    /// [`Alert::from_json`] on an object already read.
    pub fn from_map(obj: &serde_json::Map<String, serde_json::Value>) -> Result<Alert, String> {
        let text = |k: &str| obj.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let id = match obj.get("id") {
            // Panther's IDs are 32 hex characters; a huge one would not fit a comment's marker.
            Some(serde_json::Value::String(id)) if id.len() > MAX_ALERT_ID => {
                return Err(format!("`id` is over {MAX_ALERT_ID} bytes"))
            }
            Some(serde_json::Value::String(id)) if !id.is_empty() => id.clone(),
            Some(serde_json::Value::String(_)) => return Err("empty `id`".into()),
            Some(_) => return Err("`id` is not a string".into()),
            None => return Err("no `id`".into()),
        };
        let created_at_raw = text("createdAt").unwrap_or_default();
        let status_raw = text("status").unwrap_or_default();
        let severity_raw = text("severity").unwrap_or_default();
        Ok(Alert {
            id,
            title: text("title").unwrap_or_default(),
            created_at: parse_time(&created_at_raw),
            status: Status::from_wire(&status_raw),
            severity: Severity::parse(&severity_raw),
            created_at_raw,
            status_raw,
            severity_raw,
            detection_id: obj
                .get("detection")
                .and_then(|d| d.get("id"))
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned(),
            event_count: obj.get("eventCount").and_then(|v| v.as_i64()).unwrap_or(0),
            last_received_event_at: text("lastReceivedEventAt"),
        })
    }
}

/// The longest alert ID accepted from Panther or a webhook delivery.
pub const MAX_ALERT_ID: usize = 512;

/// The longest part of a decoding error's message kept (in characters).
pub const DECODE_DETAIL_CHARS: usize = 300;

/// Why Panther's answer did not decode, cut to [`DECODE_DETAIL_CHARS`]: serde's messages quote the
/// value they refused, which may be megabytes of the answer, and they end up in logs on every poll.
fn decode_detail(e: &serde_json::Error) -> String {
    e.to_string().chars().take(DECODE_DETAIL_CHARS).collect()
}

/// Parses an RFC 3339 time into UTC.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

/// Formats a time the way the daemon writes every time: RFC 3339, UTC, `Z`.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// What to list: one page of alerts created in `[created_after, created_before)`, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertQuery {
    pub created_after: DateTime<Utc>,
    pub created_before: DateTime<Utc>,
    pub statuses: Vec<Status>,
    pub severities: Vec<Severity>,
    pub cursor: Option<String>,
}

/// One page of alerts. An alert the daemon could not read is reported with why, not dropped silently.
#[derive(Debug, Default)]
pub struct AlertPage {
    pub alerts: Vec<Alert>,
    pub unreadable: Vec<String>,
    pub next: Option<String>,
    /// Each alert's first events where the transport carries them with the page (GraphQL does, REST
    /// does not), by alert ID; the rest are read with [`PantherApi::list_events`] from `next`.
    pub events: Vec<(String, EventPage)>,
}

#[derive(Debug)]
pub struct EventPage {
    pub events: Vec<Box<RawValue>>,
    pub next: Option<String>,
}

/// One alert comment (`CommentAPI.Comment`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Comment {
    pub id: String,
    #[serde(default)]
    pub alert_id: Option<String>,
    /// The spec leaves the body's type open; anything but a string counts as empty.
    #[serde(default, deserialize_with = "lenient_string")]
    pub body: String,
}

fn lenient_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::String(s) => s,
        _ => String::new(),
    })
}

#[derive(Debug)]
pub struct CommentPage {
    pub comments: Vec<Comment>,
    pub next: Option<String>,
}

/// A comment to create or the new content of one (`CommentAPI.ModifyCommentReq`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewComment {
    pub alert_id: String,
    pub body: String,
    pub format: CommentFormat,
}

/// A change to many alerts at once (REST `AlertAPI.BulkPatchAlertReq`, GraphQL
/// `updateAlertStatusById` / `updateAlertsAssigneeBy*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertPatch {
    pub ids: Vec<String>,
    pub status: Option<Status>,
    pub assignee: Option<Assignee>,
}

/// Who to assign: a Panther user ID, or an email address for a transport that assigns by email
/// ([`PantherApi::assigns_by_email`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignee {
    Id(String),
    Email(String),
}

/// The operations the daemon performs, named in errors, logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    ListAlerts,
    GetAlert,
    ListEvents,
    ListComments,
    CreateComment,
    UpdateComment,
    PatchAlerts,
    FindUser,
    Ping,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::ListAlerts => "list alerts",
            Op::GetAlert => "get alert",
            Op::ListEvents => "list alert events",
            Op::ListComments => "list alert comments",
            Op::CreateComment => "create alert comment",
            Op::UpdateComment => "update alert comment",
            Op::PatchAlerts => "update alerts",
            Op::FindUser => "find user",
            Op::Ping => "check the connection",
        }
    }

    /// Whether sending the request twice has the effect of sending it once. Only creating a comment
    /// is not: a retry after an unknown outcome goes through the marker check in `sync` instead.
    pub fn idempotent(self) -> bool {
        self != Op::CreateComment
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a call to Panther failed. Messages name the operation and never carry the API key.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{op}: Panther answered HTTP {status}: {message}")]
    Status { op: Op, status: u16, message: String },
    #[error("{op}: no answer within {}", humantime::format_duration(*.timeout))]
    Timeout { op: Op, timeout: Duration },
    #[error("{op}: cannot reach Panther: {detail}")]
    Connect { op: Op, detail: String },
    #[error("{op}: the connection failed after the request was sent, so its outcome is unknown: {detail}")]
    Transport { op: Op, detail: String },
    #[error("{op}: Panther's answer does not have the documented shape: {detail}")]
    Decode { op: Op, detail: String },
    #[error("{op}: the API key was refused (HTTP {status}); check panther.api_key and its permissions")]
    Unauthorized { op: Op, status: u16 },
    /// Panther refused the request as a whole (a GraphQL document that does not validate against its
    /// schema): the daemon and this Panther disagree, and no alert is to blame.
    #[error("{op}: Panther refused the request itself ({message}); this version of panther-triage and this Panther's API disagree: the alerts wait; upgrade panther-triage, or set panther.api = \"rest\"")]
    Incompatible { op: Op, message: String },
}

impl ApiError {
    /// HTTP status, where Panther answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } | ApiError::Unauthorized { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether Panther may have carried out the request although the daemon saw a failure.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            ApiError::Timeout { .. } | ApiError::Transport { .. } | ApiError::Decode { .. } => true,
            ApiError::Status { status, .. } => *status >= 500,
            ApiError::Connect { .. } | ApiError::Unauthorized { .. } | ApiError::Incompatible { .. } => false,
        }
    }

    /// Whether Panther may still carry the request out after the daemon saw this failure: no whole
    /// answer came (a timeout, a cut connection), or a 5xx, which a gateway gives while the request
    /// may still run behind it. An answer that arrived whole, readable or not, ends the request.
    pub fn may_land_later(&self) -> bool {
        match self {
            ApiError::Timeout { .. } | ApiError::Transport { .. } => true,
            ApiError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// Whether trying again later may succeed (a bad minute at Panther), as opposed to a request
    /// Panther will always refuse.
    pub fn transient(&self) -> bool {
        match self {
            ApiError::Status { status, .. } => *status == 429 || *status >= 500,
            ApiError::Unauthorized { .. } | ApiError::Incompatible { .. } => false,
            ApiError::Decode { .. } => false,
            _ => true,
        }
    }

    /// Whether work should stop and be tried later rather than be marked failed: Panther's bad
    /// minute, a key that lacks a permission, or a request Panther refuses whatever the alert (fixing
    /// the key or upgrading must let every alert through).
    pub fn retry_later(&self) -> bool {
        self.transient() || matches!(self, ApiError::Unauthorized { .. } | ApiError::Incompatible { .. })
    }
}

/// Everything the daemon asks of Panther. The pipeline is generic over it; `rest::RestClient`
/// implements it over HTTP, tests may implement it in memory.
pub trait PantherApi: Send + Sync {
    fn list_alerts(&self, q: &AlertQuery) -> impl Future<Output = Result<AlertPage, ApiError>> + Send;
    fn get_alert(&self, id: &str) -> impl Future<Output = Result<Alert, ApiError>> + Send;
    fn list_events(
        &self,
        alert_id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> impl Future<Output = Result<EventPage, ApiError>> + Send;
    fn list_comments(
        &self,
        alert_id: &str,
        cursor: Option<&str>,
    ) -> impl Future<Output = Result<CommentPage, ApiError>> + Send;
    fn create_comment(&self, c: &NewComment) -> impl Future<Output = Result<Comment, ApiError>> + Send;
    fn update_comment(&self, id: &str, c: &NewComment) -> impl Future<Output = Result<Comment, ApiError>> + Send;
    fn patch_alerts(&self, p: &AlertPatch) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// The user ID for an email address, `None` when Panther has no such user.
    fn find_user_id(&self, email: &str) -> impl Future<Output = Result<Option<String>, ApiError>> + Send;

    /// How many comments [`PantherApi::create_comments`] sends in one request.
    fn comment_batch(&self) -> usize {
        1
    }

    /// Creates several comments, one result each, in order. The list may be shorter than `cs`: the
    /// comments past its end were not sent (Panther had a bad minute) and stay to be written later.
    fn create_comments(&self, cs: &[NewComment]) -> impl Future<Output = Vec<Result<Comment, ApiError>>> + Send {
        async move {
            let mut out = Vec::with_capacity(cs.len());
            for c in cs {
                let r = self.create_comment(c).await;
                let stop = matches!(&r, Err(e) if e.retry_later() || e.outcome_unknown());
                out.push(r);
                if stop {
                    break;
                }
            }
            out
        }
    }

    /// Whether [`AlertPatch::assignee`] may be an email address (no user lookup needed).
    fn assigns_by_email(&self) -> bool {
        false
    }

    /// A cheap call that proves the URL and key work; returns what Panther says of itself.
    fn ping(&self) -> impl Future<Output = Result<String, ApiError>> + Send;
}

/// The transport `panther.api` chose.
pub enum Client {
    Rest(RestClient),
    Graphql(GraphqlClient),
}

/// Forwards a call to whichever transport is in use.
macro_rules! either {
    ($self:ident, $c:ident => $call:expr) => {
        match $self {
            Client::Rest($c) => $call.await,
            Client::Graphql($c) => $call.await,
        }
    };
}

impl PantherApi for Client {
    async fn list_alerts(&self, q: &AlertQuery) -> Result<AlertPage, ApiError> {
        either!(self, c => c.list_alerts(q))
    }
    async fn get_alert(&self, id: &str) -> Result<Alert, ApiError> {
        either!(self, c => c.get_alert(id))
    }
    async fn list_events(&self, alert_id: &str, limit: u32, cursor: Option<&str>) -> Result<EventPage, ApiError> {
        either!(self, c => c.list_events(alert_id, limit, cursor))
    }
    async fn list_comments(&self, alert_id: &str, cursor: Option<&str>) -> Result<CommentPage, ApiError> {
        either!(self, c => c.list_comments(alert_id, cursor))
    }
    async fn create_comment(&self, nc: &NewComment) -> Result<Comment, ApiError> {
        either!(self, c => c.create_comment(nc))
    }
    async fn update_comment(&self, id: &str, nc: &NewComment) -> Result<Comment, ApiError> {
        either!(self, c => c.update_comment(id, nc))
    }
    async fn patch_alerts(&self, p: &AlertPatch) -> Result<(), ApiError> {
        either!(self, c => c.patch_alerts(p))
    }
    async fn find_user_id(&self, email: &str) -> Result<Option<String>, ApiError> {
        either!(self, c => c.find_user_id(email))
    }
    fn comment_batch(&self) -> usize {
        match self {
            Client::Rest(c) => c.comment_batch(),
            Client::Graphql(c) => c.comment_batch(),
        }
    }
    async fn create_comments(&self, cs: &[NewComment]) -> Vec<Result<Comment, ApiError>> {
        either!(self, c => c.create_comments(cs))
    }
    fn assigns_by_email(&self) -> bool {
        matches!(self, Client::Graphql(_))
    }
    async fn ping(&self) -> Result<String, ApiError> {
        either!(self, c => c.ping())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn invalid_is_an_alias_of_closed_in_config_but_not_on_the_wire() {
        assert_eq!(Status::parse("invalid"), Some(Status::Closed));
        assert_eq!(Status::parse("Open"), Some(Status::Open));
        assert_eq!(Status::parse("NEW"), None);
        let a = Alert::from_json(&raw(r#"{"id":"a","type":"ALERT","status":"INVALID"}"#)).unwrap();
        assert_eq!((a.status, a.status_raw.as_str()), (None, "INVALID"));
    }

    #[test]
    fn an_alert_with_odd_fields_is_read_and_one_without_id_is_refused() {
        let a = Alert::from_json(&raw(
            r#"{"id":"a1","type":"ALERT","status":"OPEN","severity":"SEVERE","createdAt":"yesterday",
                "detection":{"id":"AWS.Root","type":"RULE"},"eventCount":3,"extra":{"x":1}}"#,
        ))
        .unwrap();
        assert_eq!(a.severity, None);
        assert_eq!(a.severity_raw, "SEVERE");
        assert_eq!(a.created_at, None);
        assert_eq!(a.detection_id, "AWS.Root");
        assert_eq!(a.event_count, 3);
        assert!(Alert::from_json(&raw(r#"{"type":"ALERT","status":"OPEN"}"#)).unwrap_err().contains("id"));
        assert!(Alert::from_json(&raw(r#"{"id":7}"#)).is_err());
        let odd =
            Alert::from_json(&raw(r#"{"id":"a2","createdAt":1700000000,"title":{"x":1},"eventCount":"3"}"#)).unwrap();
        assert_eq!((odd.title.as_str(), odd.created_at, odd.event_count), ("", None, 0));
    }

    #[test]
    fn a_refused_value_is_not_quoted_whole_in_the_error() {
        // Found by the rest_decode fuzz target: an alert that was a long string gave a message
        // quoting all of it, twice, logged on every poll.
        let long = format!("\"{}\"", "x".repeat(100_000));
        let why = Alert::from_json(&raw(&long)).unwrap_err();
        assert!(why.starts_with("not a JSON object: invalid type: string") && why.len() < 400, "{} bytes", why.len());
    }

    #[test]
    fn only_failures_after_sending_leave_the_outcome_unknown() {
        let op = Op::CreateComment;
        assert!(ApiError::Timeout { op, timeout: Duration::from_secs(1) }.outcome_unknown());
        assert!(ApiError::Status { op, status: 502, message: String::new() }.outcome_unknown());
        assert!(!ApiError::Status { op, status: 429, message: String::new() }.outcome_unknown());
        assert!(!ApiError::Status { op, status: 400, message: String::new() }.transient());
        assert!(!ApiError::Connect { op, detail: String::new() }.outcome_unknown());
        // Of those, only a request still in flight somewhere can land later: an answer that came whole
        // (but unreadable, or a batch alias with no result) ended it.
        assert!(ApiError::Timeout { op, timeout: Duration::from_secs(1) }.may_land_later());
        assert!(ApiError::Transport { op, detail: String::new() }.may_land_later());
        assert!(ApiError::Status { op, status: 504, message: String::new() }.may_land_later());
        assert!(!ApiError::Decode { op, detail: String::new() }.may_land_later());
        assert!(!ApiError::Status { op, status: 429, message: String::new() }.may_land_later());
    }
}
