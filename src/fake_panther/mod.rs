//! An in-process fake of Panther's REST and GraphQL APIs, for the integration tests and the `demo`
//! command.
//!
//! It answers the part of `shared/panther/panther_open_api_v3_spec.yaml` that panther-triage uses
//! (`/alerts`, `/alerts/{id}`, `/alerts/{id}/events`, `/alert-comments`, `/alert-comments/{id}`,
//! `/users`) with exactly the spec's shapes, and it is stricter than it needs to be on purpose: an
//! unknown query parameter, enum value, body field or cursor is a 400 naming it, so a client bug shows
//! up here rather than against the real Panther.
//!
//! It also answers `POST /public/graphql` ([`Route::Graphql`]): documents are validated and executed
//! over Panther's real SDL (`schema/panther.graphql`), over the same alerts, comments and users, so a
//! write through either API shows through the other. Its alerts, comments and status or assignee
//! changes go through the REST operations, cursors included; see `graphql` for the error codes.
//!
//! Tests steer it from outside: seed alerts and users, grow alerts ([`FakePanther::push_events`]),
//! slow it down ([`FakePanther::set_latency`]), queue faults ([`FakePanther::inject`] for whole
//! requests, [`FakePanther::fail_field`] for one GraphQL root field inside a batch), and read back
//! what it received ([`FakePanther::requests`]) and what it holds ([`FakePanther::comments`],
//! [`FakePanther::alert`]).
//!
//! # Layout
//! - this file: the public handle, the state, seeding and serving.
//! - `http`: one request's life: recording, auth, faults, latency, routing, the dropped connection.
//! - `endpoints`: the eight REST operations, as plain functions of the state.
//! - `graphql`: the GraphQL endpoint: parsing, validation, execution and its resolvers.

mod endpoints;
mod graphql;
mod http;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The fake server's shared state. Cloning is cheap and every clone sees the same alerts, comments and
/// request log, so a test keeps one clone while the server runs on another.
#[derive(Clone)]
pub struct FakePanther {
    inner: Arc<Inner>,
}

struct Inner {
    api_key: String,
    /// A std mutex, not a tokio one: it is never held across an `.await`, and one lock for everything
    /// keeps a write and its entry in the request log consistent with each other.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    alerts: HashMap<String, StoredAlert>,
    /// `(createdAt, id)` of every alert: the list order, and the keys the alert cursors point at.
    order: BTreeSet<(DateTime<Utc>, String)>,
    /// `CommentAPI.Comment` objects in creation order (their only order, and the list's).
    comments: Vec<Value>,
    comment_index: HashMap<String, usize>,
    comments_created: u64,
    /// `UserAPI.User` objects in the order they were added.
    users: Vec<Value>,
    requests: Vec<Recorded>,
    faults: VecDeque<QueuedFault>,
    /// GraphQL root fields that fail, in the order queued ([`FakePanther::fail_field`]).
    field_faults: Vec<FieldFault>,
    batch: BatchSemantics,
    /// Alerts whose GraphQL `title` fails ([`FakePanther::break_graphql_alert`]).
    unrenderable: std::collections::HashSet<String>,
    latency: Duration,
}

/// What the GraphQL side does with an operation's later root fields once one has failed (Panther
/// does not say; see `graphql`'s module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BatchSemantics {
    /// graphql-js: the failure nulls `data`, and the fields after it never run.
    #[default]
    StopAtFirstError,
    /// Every root field runs; each failure is reported under its own alias.
    RunEveryField,
}

struct StoredAlert {
    /// The `AlertAPI.Alert` object as it is answered.
    json: Value,
    events: Vec<Value>,
}

struct QueuedFault {
    route: Route,
    /// For `Route::Graphql`: only documents whose operation has this name.
    operation: Option<String>,
    fault: Fault,
    left: usize,
}

struct FieldFault {
    field: String,
    code: String,
    left: usize,
}

/// An operation of the API, for [`FakePanther::inject`] and [`Recorded::route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `GET /alerts`
    ListAlerts,
    /// `GET /alerts/{id}`
    GetAlert,
    /// `GET /alerts/{id}/events`
    ListEvents,
    /// `GET /alert-comments`
    ListComments,
    /// `POST /alert-comments`
    CreateComment,
    /// `POST /alert-comments/{id}`
    UpdateComment,
    /// `PATCH /alerts`
    PatchAlerts,
    /// `GET /users`
    ListUsers,
    /// `POST /public/graphql`, whatever the document does. A fault injected on it takes the whole
    /// request; [`FakePanther::fail_field`] fails one root field of it.
    Graphql,
    /// Any request at all, including one to a path the fake does not know.
    Any,
}

impl Route {
    /// The operation a request is for; `None` for a method and path the fake does not serve.
    pub fn of(method: &str, path: &str) -> Option<Route> {
        http::route_of(method, path).map(|(route, _)| route)
    }
}

/// What an injected fault does to the request that consumes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 with a `Retry-After` header; nothing is done.
    TooManyRequests { retry_after_secs: u64 },
    /// This status (e.g. 500, 502, 503) with a `{"message"}` body; nothing is done.
    ServerError { status: u16 },
    /// The normal answer, after this delay (on top of [`FakePanther::set_latency`]).
    Delay(Duration),
    /// This answer instead of the real one, nothing done: a truncated JSON page, an HTML error
    /// page with a 200, bytes that are not UTF-8.
    Raw { status: u16, content_type: &'static str, body: Vec<u8> },
    /// The request is carried out (a comment is stored, a PATCH applied), then the connection dies
    /// before a complete answer reaches the client: the case where only re-reading tells the client
    /// whether its write happened. Meant for `CreateComment`, `UpdateComment`, `PatchAlerts` and a
    /// `Graphql` mutation (on a read it just loses the answer). The client sees no response at all: with reqwest, `send()`
    /// fails with `is_request()` and hyper's `IncompleteMessage` as the source.
    CommitThenDrop,
    /// The request is carried out after this delay, whether or not the client is still waiting
    /// (it answers then, if anyone listens): Panther finishing a write the client timed out on, so
    /// that the write appears only some time after the client gave up. Meant for `CreateComment` or
    /// a `Graphql` mutation, with a delay past the client's timeout.
    LateCommit(Duration),
}

/// One request as the fake received it, and the status it was answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    /// The path as sent (still percent-encoded), without the query.
    pub path: String,
    /// The query's pairs, decoded, in order; a repeated parameter appears once per value.
    pub query: Vec<(String, String)>,
    /// The `X-API-Key` header as the client sent it, right or wrong.
    pub api_key: Option<String>,
    /// The body as text (lossy for non-UTF-8); `None` when empty.
    pub body: Option<String>,
    /// The status answered; 0 while the request is still being answered (latency, delay). A
    /// `CommitThenDrop` request records the status of the answer the client never got.
    pub status: u16,
}

impl Recorded {
    /// The operation this request was for, `None` for an unknown method and path.
    pub fn route(&self) -> Option<Route> {
        Route::of(&self.method, &self.path)
    }

    /// The values of one query parameter, in order.
    pub fn query_values(&self, name: &str) -> Vec<&str> {
        self.query.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }
}

/// A seed file that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    #[error("cannot read seed file {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: {message}", path.display())]
    Seed { path: PathBuf, line: usize, message: String },
}

/// A running fake on loopback. Dropping it stops the server (it stops accepting at once and ends when
/// the requests in flight are answered); [`FakeHandle::shutdown`] also waits for that.
#[derive(Debug)]
pub struct FakeHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl FakeHandle {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits until it has finished.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for FakeHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The statuses of `AlertAPI.Alert` (and of the list filter and the PATCH body).
const STATUSES: &[&str] = &["OPEN", "CLOSED", "TRIAGED", "RESOLVED"];
const SEVERITIES: &[&str] = &["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO"];
/// The values of the list's `type` parameter. `AlertAPI.Alert.type` itself is a free string in the
/// spec, but an alert of another type could never be listed, so seeding one is refused.
const ALERT_TYPES: &[&str] = &["ALERT", "DETECTION_ERROR", "SYSTEM_ERROR"];
const DETECTION_TYPES: &[&str] = &["RULE", "CORRELATION_RULE", "POLICY", "SCHEDULED_RULE"];

impl FakePanther {
    /// An empty fake that accepts requests carrying `X-API-Key: api_key`.
    pub fn new(api_key: &str) -> Self {
        FakePanther { inner: Arc::new(Inner { api_key: api_key.to_owned(), state: Mutex::new(State::default()) }) }
    }

    /// Loads a JSONL seed file: one line per alert, `{"alert": <AlertAPI.Alert>, "events": [...]}`
    /// (`events` may be left out). Blank lines are skipped. The first bad line is the error.
    pub fn from_seed_file(api_key: &str, path: &Path) -> Result<Self, FakeError> {
        let text = std::fs::read_to_string(path).map_err(|source| FakeError::Io { path: path.to_owned(), source })?;
        let fake = FakePanther::new(api_key);
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let seed_error = |message: String| FakeError::Seed { path: path.to_owned(), line: n + 1, message };
            let (alert, events) = parse_seed_line(line).map_err(seed_error)?;
            fake.try_add_alert(alert, events).map_err(seed_error)?;
        }
        Ok(fake)
    }

    /// Adds an alert. It needs at least `id`, `createdAt` (RFC 3339), `status`, `severity`, `title`,
    /// `type` and `detection {id, type}`; `eventCount` is set to `events.len()` when absent.
    ///
    /// # Panics
    /// When the alert lacks one of those or its id is taken: seeding is test code, and a bad seed
    /// should stop the test where it was written.
    pub fn add_alert(&self, alert: Value, events: Vec<Value>) {
        if let Err(why) = self.try_add_alert(alert, events) {
            panic!("FakePanther::add_alert: {why}");
        }
    }

    fn try_add_alert(&self, mut alert: Value, events: Vec<Value>) -> Result<(), String> {
        let created_at = check_alert(&alert)?;
        let id = alert["id"].as_str().unwrap_or_default().to_owned();
        if let Some(map) = alert.as_object_mut() {
            map.entry("eventCount").or_insert_with(|| json!(events.len()));
        }
        let mut st = self.lock();
        if st.alerts.contains_key(&id) {
            return Err(format!("alert {id} already exists"));
        }
        st.order.insert((created_at, id.clone()));
        st.alerts.insert(id, StoredAlert { json: alert, events });
        Ok(())
    }

    /// Appends events to an alert, as Panther does while an alert's dedup period lasts: `eventCount`
    /// grows by their number and `lastReceivedEventAt` becomes now.
    ///
    /// # Panics
    /// When there is no such alert (a mistake in the test).
    pub fn push_events(&self, alert_id: &str, events: Vec<Value>) {
        let mut st = self.lock();
        let Some(alert) = st.alerts.get_mut(alert_id) else {
            panic!("FakePanther::push_events: no alert {alert_id}");
        };
        let added = events.len() as i64;
        alert.events.extend(events);
        let count = alert.json["eventCount"].as_i64().unwrap_or(0) + added;
        alert.json["eventCount"] = json!(count);
        alert.json["lastReceivedEventAt"] = json!(now_rfc3339());
    }

    /// Adds a user (or changes the email of an existing one), with plausible values for the other
    /// required `UserAPI.User` fields: names from the email's local part, an enabled analyst.
    pub fn add_user(&self, id: &str, email: &str) {
        let local = email.split('@').next().unwrap_or(email);
        let mut names = local.split(['.', '_', '-']).filter(|s| !s.is_empty()).map(capitalize);
        let given = names.next().unwrap_or_else(|| "Test".to_owned());
        let family = names.next().unwrap_or_else(|| "User".to_owned());
        let user = json!({
            "id": id,
            "email": email,
            "givenName": given,
            "familyName": family,
            "role": {"id": "fake-role-analyst", "name": "Analyst"},
            "enabled": true,
            "status": "CONFIRMED",
            "createdAt": now_rfc3339(),
        });
        let mut st = self.lock();
        match st.users.iter_mut().find(|u| u["id"] == id) {
            Some(existing) => *existing = user,
            None => st.users.push(user),
        }
    }

    /// Every request waits this long before it is answered (0 by default).
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Queues a fault for the next `times` requests to `route` (`Route::Any`: to anything). Faults are
    /// queued in order; each request consumes one use of the first queued fault that matches it.
    /// Requests refused for a missing or wrong API key consume nothing.
    pub fn inject(&self, route: Route, fault: Fault, times: usize) {
        if times > 0 {
            self.lock().faults.push_back(QueuedFault { route, operation: None, fault, left: times });
        }
    }

    /// [`FakePanther::inject`] for GraphQL requests whose operation is named `operation` (e.g.
    /// `CreateAlertComments`, as in `mutation CreateAlertComments(...)`), so a test can fail one
    /// kind of GraphQL request the way it fails one REST route.
    pub fn inject_graphql(&self, operation: &str, fault: Fault, times: usize) {
        if times > 0 {
            let operation = Some(operation.to_owned());
            self.lock().faults.push_back(QueuedFault { route: Route::Graphql, operation, fault, left: times });
        }
    }

    /// Fails the next `times` executions of the GraphQL root field `field` (e.g. `createAlertComment`,
    /// `alerts`), wherever it sits in a document: each gets a field error whose `extensions.code` is
    /// `code` (e.g. `THROTTLED`, `INTERNAL_SERVER_ERROR`), its path the alias, and does nothing; the
    /// document's other root fields, aliases of the same field included, run normally. Executions are
    /// counted in document order, so with two aliases and `times` 1 the first fails. A request refused
    /// before execution (a fault from [`FakePanther::inject`], a bad document) consumes nothing.
    pub fn fail_field(&self, field: &str, code: &str, times: usize) {
        if times > 0 {
            self.lock().field_faults.push(FieldFault { field: field.to_owned(), code: code.to_owned(), left: times });
        }
    }

    /// Makes the alert's `title` fail under GraphQL (REST still answers it): `Alert.title` is
    /// non-null, so the error takes the whole `alerts` page with it, as one alert Panther cannot
    /// render would.
    pub fn break_graphql_alert(&self, alert_id: &str) {
        self.lock().unrenderable.insert(alert_id.to_owned());
    }

    /// Chooses what a GraphQL operation does after a root field fails ([`BatchSemantics`]).
    pub fn set_batch_semantics(&self, batch: BatchSemantics) {
        self.lock().batch = batch;
    }

    /// Every request received so far, in arrival order, including refused ones.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// The comments on an alert (`CommentAPI.Comment`), in creation order.
    pub fn comments(&self, alert_id: &str) -> Vec<Value> {
        self.lock().comments.iter().filter(|c| c["alertId"] == alert_id).cloned().collect()
    }

    /// How many comments were created so far (cheap: for load tests that wait for a count).
    pub fn comments_created(&self) -> u64 {
        self.lock().comments_created
    }

    /// Every comment, in creation order.
    pub fn all_comments(&self) -> Vec<Value> {
        self.lock().comments.clone()
    }

    /// The alert as it is now (`AlertAPI.Alert`), with any status and assignee a PATCH set.
    pub fn alert(&self, alert_id: &str) -> Option<Value> {
        self.lock().alerts.get(alert_id).map(|a| a.json.clone())
    }

    /// The whole API as one router; every path goes through one handler so that unknown routes,
    /// wrong methods and refused requests are recorded and answered like the rest.
    pub fn router(&self) -> axum::Router {
        axum::Router::new().fallback(http::handle).with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, then finishes the requests in flight.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router()).with_graceful_shutdown(shutdown).await
    }

    /// Serves on a fresh loopback port (127.0.0.1:0, never another interface) in a spawned task.
    pub async fn spawn(&self) -> std::io::Result<FakeHandle> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        // A dropped sender also ends the wait, so a leaked handle cannot keep the server up.
        let task = tokio::spawn(self.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        Ok(FakeHandle { addr, stop: Some(stop), task: Some(task) })
    }

    /// The state, even after a panic elsewhere poisoned the lock: a failed test should not turn every
    /// later assertion into a poison error.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for FakePanther {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("FakePanther")
            .field("alerts", &st.alerts.len())
            .field("comments", &st.comments.len())
            .field("users", &st.users.len())
            .field("requests", &st.requests.len())
            .finish_non_exhaustive()
    }
}

/// One seed line: `{"alert": {...}, "events": [...]}`.
fn parse_seed_line(line: &str) -> Result<(Value, Vec<Value>), String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut map) = value else {
        return Err("expected an object {\"alert\": {...}, \"events\": [...]}".into());
    };
    if let Some(key) = map.keys().find(|k| *k != "alert" && *k != "events") {
        return Err(format!("unknown key `{key}` (a line has `alert` and `events`)"));
    }
    let alert = map.remove("alert").ok_or("missing `alert`")?;
    let events = match map.remove("events") {
        None => Vec::new(),
        Some(Value::Array(events)) => events,
        Some(_) => return Err("`events` must be an array".into()),
    };
    Ok((alert, events))
}

/// Checks that an alert has what the fake needs to list, filter and patch it; returns its `createdAt`.
fn check_alert(alert: &Value) -> Result<DateTime<Utc>, String> {
    if !alert.is_object() {
        return Err("an alert must be a JSON object".into());
    }
    let text = |name: &str| alert[name].as_str().ok_or_else(|| format!("alert needs a string `{name}`"));
    let id = text("id")?;
    if id.is_empty() {
        return Err("alert `id` is empty".into());
    }
    let one_of = |name: &str, value: &str, allowed: &[&str]| {
        if allowed.contains(&value) {
            Ok(())
        } else {
            Err(format!("alert {id}: `{name}` is {value:?}, not one of {}", allowed.join(", ")))
        }
    };
    let created_at = text("createdAt")?;
    let created_at = DateTime::parse_from_rfc3339(created_at)
        .map_err(|e| format!("alert {id}: `createdAt` {created_at:?} is not RFC 3339: {e}"))?
        .with_timezone(&Utc);
    one_of("status", text("status")?, STATUSES)?;
    one_of("severity", text("severity")?, SEVERITIES)?;
    one_of("type", text("type")?, ALERT_TYPES)?;
    text("title")?;
    let detection = &alert["detection"];
    detection["id"].as_str().ok_or_else(|| format!("alert {id} needs a string `detection.id`"))?;
    let detection_type =
        detection["type"].as_str().ok_or_else(|| format!("alert {id} needs a string `detection.type`"))?;
    one_of("detection.type", detection_type, DETECTION_TYPES)?;
    if let Some(count) = alert.get("eventCount") {
        if !count.is_i64() && !count.is_u64() {
            return Err(format!("alert {id}: `eventCount` must be an integer"));
        }
    }
    Ok(created_at)
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Now as the API writes times: RFC 3339, UTC, `Z`.
fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}
