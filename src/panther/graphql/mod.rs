//! The GraphQL transport: `POST /public/graphql`, over the same HTTP client, rate limiter and retry
//! policy as [`RestClient`](super::RestClient).
//!
//! It spends fewer requests per alert than REST in two ways: a page of alerts carries each alert's
//! first events (`events(input:)` inline), and many `createAlertComment` mutations travel in one
//! document under aliases (`panther.comment_batch`). Panther's GraphQL has no way to list or edit
//! comments, so those (the marker check after an unknown outcome, and comment edits) go through REST
//! with the same key; so does the user lookup REST needs (GraphQL assigns by email directly).
//!
//! The documents are the `.graphql` files beside this one; a test validates each of them, and the
//! batched comment document at every size, against Panther's schema (`schema/panther.graphql`).
//!
//! GraphQL errors are read for what they are: `errors[]` beside partial `data`. An error's
//! `extensions.code` maps to the HTTP status it stands for ([`error_from`]), so the rest of the
//! daemon treats a throttled alias like a 429 and an internal error like a 5xx whose outcome is
//! unknown.

use reqwest::Method;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use url::Url;

use super::rest::{RestClient, PAGE_LIMIT};
use super::retry::RetryPolicy;
use super::*;

/// The alert fields every alert query reads.
pub const ALERT_FIELDS: &str = include_str!("alert_fields.graphql");
pub const LIST_ALERTS: &str = concat!(include_str!("list_alerts.graphql"), "\n", include_str!("alert_fields.graphql"));
pub const GET_ALERT: &str = concat!(include_str!("get_alert.graphql"), "\n", include_str!("alert_fields.graphql"));
pub const ALERT_EVENTS: &str = include_str!("alert_events.graphql");
/// One aliased comment mutation; [`batch_document`] repeats it.
pub const CREATE_ALERT_COMMENTS: &str = include_str!("create_alert_comments.graphql");
pub const UPDATE_ALERT_STATUS: &str = include_str!("update_alert_status.graphql");
pub const ASSIGN_ALERTS_BY_ID: &str = include_str!("assign_alerts_by_id.graphql");
pub const ASSIGN_ALERTS_BY_EMAIL: &str = include_str!("assign_alerts_by_email.graphql");
pub const PANTHER_VERSION: &str = include_str!("panther_version.graphql");

/// Every fixed document the client sends, by operation name (the validation test walks this).
pub const DOCUMENTS: &[(&str, &str)] = &[
    ("ListAlerts", LIST_ALERTS),
    ("GetAlert", GET_ALERT),
    ("AlertEvents", ALERT_EVENTS),
    ("CreateAlertComments", CREATE_ALERT_COMMENTS),
    ("UpdateAlertStatus", UPDATE_ALERT_STATUS),
    ("AssignAlertsById", ASSIGN_ALERTS_BY_ID),
    ("AssignAlertsByEmail", ASSIGN_ALERTS_BY_EMAIL),
    ("PantherVersion", PANTHER_VERSION),
];

/// The most comments one request may carry (`panther.comment_batch`): keeps one document, and the
/// work one failure puts in doubt, small.
pub const MAX_COMMENT_BATCH: usize = 50;

/// Settings for [`GraphqlClient::new`] beyond those of the REST client it shares.
#[derive(Debug, Clone, Copy)]
pub struct GraphqlSettings {
    /// Events read inline with each alert of a page (`enrich.events_per_alert`).
    pub events_per_alert: u32,
    /// Comments per request (`panther.comment_batch`), 1 to [`MAX_COMMENT_BATCH`].
    pub comment_batch: usize,
    pub retry: RetryPolicy,
}

pub struct GraphqlClient {
    rest: RestClient,
    endpoint: Url,
    s: GraphqlSettings,
}

#[derive(Debug, Deserialize)]
struct Response {
    #[serde(default)]
    data: Option<Map<String, Value>>,
    #[serde(default)]
    errors: Vec<GqlError>,
}

#[derive(Debug, Clone, Deserialize)]
struct GqlError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    path: Vec<Value>,
    #[serde(default)]
    extensions: Option<Extensions>,
}

#[derive(Debug, Clone, Deserialize)]
struct Extensions {
    #[serde(default)]
    code: Option<String>,
}

impl GqlError {
    fn code(&self) -> &str {
        self.extensions.as_ref().and_then(|e| e.code.as_deref()).unwrap_or("")
    }

    /// The response name (alias) of the root field the error is about.
    fn root(&self) -> Option<&str> {
        self.path.first().and_then(|p| p.as_str())
    }
}

/// A GraphQL error as the HTTP answer it stands for. Panther documents no codes; these are the ones
/// GraphQL servers commonly use. An unknown code counts as a server error, whose outcome is unknown:
/// the safe reading for a write.
fn error_from(op: Op, e: &GqlError) -> ApiError {
    let message: String = format!("{}: {}", if e.code().is_empty() { "GraphQL error" } else { e.code() }, e.message)
        .chars()
        .take(300)
        .collect();
    let status = match e.code() {
        "UNAUTHENTICATED" => return ApiError::Unauthorized { op, status: 401 },
        "FORBIDDEN" => return ApiError::Unauthorized { op, status: 403 },
        // The document itself, or a variable of it, refused: not one alert's fault.
        "BAD_REQUEST" | "GRAPHQL_VALIDATION_FAILED" | "GRAPHQL_PARSE_FAILED" | "OPERATION_RESOLUTION_FAILURE" => {
            return ApiError::Incompatible { op, message }
        }
        "BAD_USER_INPUT" if e.root().is_none() => return ApiError::Incompatible { op, message },
        "THROTTLED" | "RATE_LIMITED" | "TOO_MANY_REQUESTS" => 429,
        "NOT_FOUND" => 404,
        "BAD_USER_INPUT" => 400,
        _ => 500,
    };
    ApiError::Status { op, status, message }
}

#[derive(Deserialize)]
struct Connection {
    edges: Vec<Edge>,
    #[serde(rename = "pageInfo")]
    page_info: PageInfo,
}

#[derive(Deserialize)]
struct Edge {
    node: Box<RawValue>,
}

#[derive(Deserialize)]
struct PageInfo {
    #[serde(rename = "hasNextPage")]
    has_next_page: bool,
    #[serde(rename = "endCursor", default)]
    end_cursor: Option<String>,
}

impl Connection {
    fn next(&self) -> Option<String> {
        self.page_info.end_cursor.clone().filter(|c| self.page_info.has_next_page && !c.is_empty())
    }
}

fn decode<T: serde::de::DeserializeOwned>(op: Op, v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::Decode { op, detail: decode_detail(&e) })
}

/// The batched comment document for `n` comments: [`CREATE_ALERT_COMMENTS`]'s field repeated under
/// aliases `c0`..`c{n-1}`, each with its own variable.
pub fn batch_document(n: usize) -> String {
    let doc = CREATE_ALERT_COMMENTS;
    // The template is `<comments> mutation Name($c0: T!) {\n  c0: field {...}\n}`: split it there.
    let (Some(open), Some(close)) = (doc.find("($c0"), doc.rfind('}')) else { return doc.to_owned() };
    let head = &doc[..open];
    let vars_end = open + doc[open..].find(')').unwrap_or(0);
    let var_type = doc[open..vars_end].split_once(':').map(|(_, t)| t.trim()).unwrap_or("CreateAlertCommentInput!");
    let body_start = doc[vars_end..].find('{').map(|i| vars_end + i + 1).unwrap_or(close);
    let field = &doc[body_start..close];
    let vars: Vec<String> = (0..n).map(|i| format!("$c{i}: {var_type}")).collect();
    let mut out = format!("{head}({}) {{", vars.join(", "));
    for i in 0..n {
        out.push_str(&field.replace("c0", &format!("c{i}")));
    }
    out.push_str("}\n");
    out
}

/// A document without its comment lines: they are for readers of the files, not for the wire.
fn without_comments(doc: &str) -> String {
    doc.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n")
}

/// Marks a cursor of a page read over REST (the fallback of [`GraphqlClient::rest_alerts`]), so the
/// next page is read over REST too: the two APIs' cursors are not interchangeable.
const REST_CURSOR: &str = "rest:";

/// The alias of the `i`th comment of a batch.
fn alias(i: usize) -> String {
    format!("c{i}")
}

impl GraphqlClient {
    /// `rest` carries the URL, key, limiter, timeout and retries; GraphQL requests go to
    /// `{url}/public/graphql` through it.
    pub fn new(rest: RestClient, s: GraphqlSettings) -> GraphqlClient {
        let endpoint = rest.url(&["public", "graphql"]);
        let comment_batch = s.comment_batch.clamp(1, MAX_COMMENT_BATCH);
        GraphqlClient { rest, endpoint, s: GraphqlSettings { comment_batch, ..s } }
    }

    /// A page of alerts over REST, its cursor marked [`REST_CURSOR`].
    async fn rest_alerts(&self, q: &AlertQuery) -> Result<AlertPage, ApiError> {
        let cursor = q.cursor.as_deref().map(|c| c.trim_start_matches(REST_CURSOR).to_owned());
        let mut page = self.rest.list_alerts(&AlertQuery { cursor, ..q.clone() }).await?;
        page.next = page.next.map(|n| format!("{REST_CURSOR}{n}"));
        Ok(page)
    }

    async fn request(&self, op: Op, query: &str, variables: Value) -> Result<Response, ApiError> {
        let body = json!({ "query": without_comments(query), "variables": variables });
        let bytes = match self.rest.call(op, Method::POST, self.endpoint.clone(), &[], Some(&body)).await {
            Ok(b) => b,
            // A 4xx for the request as a whole (a validation failure, an endpoint that is not there)
            // says the daemon's document and this Panther disagree, not that an alert is bad.
            Err(ApiError::Status { status, message, .. }) if (400..500).contains(&status) && status != 429 => {
                return Err(ApiError::Incompatible { op, message: format!("HTTP {status}: {message}") })
            }
            Err(e) => return Err(e),
        };
        parse_response(op, &bytes)
    }

    /// The value of the one root field `field`, or the error that stands in its place, with the
    /// errors of nested fields that failed. A transient GraphQL error (`THROTTLED`, an internal
    /// error) on a read or an idempotent write is retried per `panther.max_retries`, as the REST
    /// client retries a 429 or a 5xx (HTTP-level failures are retried below, in `call`).
    async fn field(
        &self,
        op: Op,
        query: &str,
        variables: Value,
        field: &str,
    ) -> Result<(Value, Vec<GqlError>), ApiError> {
        let mut delays = self.s.retry.delays();
        loop {
            let resp = self.request(op, query, variables.clone()).await?;
            let err = match take_field(op, resp, field) {
                Ok(found) => return Ok(found),
                Err(e) => e,
            };
            // (A missing field with no error is a decoding error: not transient, so not retried.)
            let wait = if op.idempotent() && err.transient() { delays.next() } else { None };
            let Some(wait) = wait else { return Err(err) };
            tracing::warn!(operation = op.as_str(), error = %err, wait = %humantime::format_duration(wait), "retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// Sends one batch, retrying only the aliases Panther throttled. Returns one result per comment.
    async fn comment_batch_once(&self, cs: &[NewComment]) -> Vec<Result<Comment, ApiError>> {
        let op = Op::CreateComment;
        let mut results: Vec<Option<Result<Comment, ApiError>>> = (0..cs.len()).map(|_| None).collect();
        let mut pending: Vec<usize> = (0..cs.len()).collect();
        let mut delays = self.s.retry.delays();
        loop {
            let doc = batch_document(pending.len());
            let mut vars = Map::new();
            for (k, &i) in pending.iter().enumerate() {
                let c = &cs[i];
                vars.insert(alias(k), json!({ "alertId": c.alert_id, "body": c.body, "format": c.format.as_str() }));
            }
            let resp = match self.request(op, &doc, Value::Object(vars)).await {
                Ok(r) => r,
                Err(e) => {
                    for &i in &pending {
                        results[i] = Some(Err(e.clone()));
                    }
                    break;
                }
            };
            let mut throttled = Vec::new();
            let sent: Vec<&NewComment> = pending.iter().map(|&i| &cs[i]).collect();
            for (&i, result) in pending.iter().zip(batch_results(op, resp, &sent)) {
                match result {
                    Err(ApiError::Status { status: 429, .. }) => throttled.push(i),
                    other => results[i] = Some(other),
                }
            }
            if throttled.is_empty() {
                break;
            }
            match delays.next() {
                Some(wait) => {
                    tracing::warn!(operation = op.as_str(), throttled = throttled.len(), wait = %humantime::format_duration(wait), "Panther throttled part of a comment batch; retrying those comments only");
                    tokio::time::sleep(wait).await;
                    pending = throttled;
                }
                None => {
                    for i in throttled {
                        results[i] = Some(Err(ApiError::Status {
                            op,
                            status: 429,
                            message: "THROTTLED: retries exhausted".into(),
                        }));
                    }
                    break;
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ApiError::Decode { op, detail: "no answer for this comment".into() })))
            .collect()
    }
}

/// A response body as GraphQL's `{data, errors}`.
fn parse_response(op: Op, body: &[u8]) -> Result<Response, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::Decode { op, detail: format!("not a GraphQL response: {}", decode_detail(&e)) })
}

/// The value of the one root field `field` of a response, with the errors of nested fields that
/// failed; or the error that stands in its place.
fn take_field(op: Op, mut resp: Response, field: &str) -> Result<(Value, Vec<GqlError>), ApiError> {
    let value = resp.data.as_mut().and_then(|d| d.remove(field)).unwrap_or(Value::Null);
    if !value.is_null() {
        for e in &resp.errors {
            // A nested field failed (an alert's events, say): what came is used, the rest read later.
            tracing::warn!(operation = op.as_str(), error = %error_from(op, e), "Panther answered in part");
        }
        return Ok((value, resp.errors));
    }
    Err(match resp.errors.first() {
        Some(e) => error_from(op, e),
        None => ApiError::Decode { op, detail: format!("no `{field}` in the answer") },
    })
}

/// The result of each comment of a batch (`sent[k]` under alias `c{k}`), in order, from the answer.
fn batch_results(op: Op, resp: Response, sent: &[&NewComment]) -> Vec<Result<Comment, ApiError>> {
    let mut data = resp.data.unwrap_or_default();
    // Errors with a path belong to one alias each; one without belongs to the whole request.
    let per_alias = resp.errors.iter().any(|e| e.root().is_some());
    let mut out = Vec::with_capacity(sent.len());
    for (k, c) in sent.iter().enumerate() {
        let name = alias(k);
        let posted = data.remove(&name).filter(|v| !v.is_null());
        out.push(match posted {
            Some(v) => match v.get("comment").cloned().map(|v| decode::<Comment>(op, v)) {
                Some(Ok(mut comment)) => {
                    comment.alert_id.get_or_insert_with(|| c.alert_id.clone());
                    Ok(comment)
                }
                Some(Err(e)) => Err(e),
                None => Err(ApiError::Decode { op, detail: format!("`{name}` has no comment") }),
            },
            None => {
                let own = resp.errors.iter().find(|e| e.root() == Some(name.as_str()));
                let whole = resp.errors.first().filter(|_| !per_alias);
                match own.or(whole) {
                    Some(e) => Err(error_from(op, e)),
                    // Another alias failed and, the fields being non-null, took `data` with
                    // it: whether this one ran is unknown (graphql-js stops at the failure,
                    // other servers go on). The marker check decides.
                    None => Err(ApiError::Decode {
                        op,
                        detail: format!("no result for `{name}`: another comment of the batch failed"),
                    }),
                }
            }
        });
    }
    out
}

/// The `alerts` field of a `ListAlerts` answer as a page: each alert node read on its own (an
/// unreadable one is reported, not fatal), with the events that came inline.
fn alert_page(op: Op, alerts: Value) -> Result<AlertPage, ApiError> {
    #[derive(Deserialize)]
    struct Page {
        edges: Vec<NodeEdge>,
        #[serde(rename = "pageInfo")]
        page_info: PageInfo,
    }
    #[derive(Deserialize)]
    struct NodeEdge {
        node: Value,
    }
    let page: Page = decode(op, alerts)?;
    let next = page.page_info.end_cursor.filter(|c| page.page_info.has_next_page && !c.is_empty());
    let mut out = AlertPage { next, ..AlertPage::default() };
    for edge in page.edges {
        let shown: String = edge.node.to_string().chars().take(200).collect();
        let obj = match edge.node {
            Value::Object(o) => o,
            _ => {
                out.unreadable.push(format!("not a JSON object: {shown}"));
                continue;
            }
        };
        match alert_from_node(obj) {
            Ok((alert, events)) => {
                // Events that did not come (null, an error) are read later with list_events.
                if let Some(Ok(p)) = events.filter(|e| !e.is_null()).map(|e| event_page(Op::ListEvents, e)) {
                    out.events.push((alert.id.clone(), p));
                }
                out.alerts.push(alert);
            }
            Err(why) => out.unreadable.push(format!("{why}: {shown}")),
        }
    }
    Ok(out)
}

/// The `alert` field of a `GetAlert` answer.
fn one_alert(op: Op, v: Value) -> Result<Alert, ApiError> {
    let obj = match v {
        Value::Object(o) => o,
        _ => return Err(ApiError::Decode { op, detail: "`alert` is not an object".into() }),
    };
    alert_from_node(obj).map(|(a, _)| a).map_err(|detail| ApiError::Decode { op, detail })
}

/// The `alert` field of an `AlertEvents` answer, with the errors beside it: its events, or why they
/// did not come.
fn alert_events(op: Op, alert: &Value, errors: &[GqlError]) -> Result<EventPage, ApiError> {
    match alert.get("events") {
        Some(v) if !v.is_null() => event_page(op, v.clone()),
        // The events failed on their own: their error, read for what it is.
        _ => Err(match errors.iter().find(|e| e.path.iter().any(|p| p == "events")) {
            Some(e) => error_from(op, e),
            None => ApiError::Decode { op, detail: "the alert's `events` is missing".into() },
        }),
    }
}

/// The decoders of Panther's GraphQL answers, for the fuzz targets (`fuzz/`): each runs, on a
/// response body, the code path the client runs on it (retries aside). Not part of the daemon's API.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// A `ListAlerts` body.
    pub fn list_alerts(body: &[u8]) -> Result<AlertPage, ApiError> {
        let op = Op::ListAlerts;
        alert_page(op, take_field(op, parse_response(op, body)?, "alerts")?.0)
    }
    /// A `GetAlert` body.
    pub fn get_alert(body: &[u8]) -> Result<Alert, ApiError> {
        let op = Op::GetAlert;
        one_alert(op, take_field(op, parse_response(op, body)?, "alert")?.0)
    }
    /// An `AlertEvents` body.
    pub fn alert_events(body: &[u8]) -> Result<EventPage, ApiError> {
        let op = Op::ListEvents;
        let (alert, errors) = take_field(op, parse_response(op, body)?, "alert")?;
        super::alert_events(op, &alert, &errors)
    }
    /// A `CreateAlertComments` body for a batch of `sent` comments: one result each, in order.
    pub fn create_alert_comments(body: &[u8], sent: &[NewComment]) -> Result<Vec<Result<Comment, ApiError>>, ApiError> {
        let op = Op::CreateComment;
        Ok(batch_results(op, parse_response(op, body)?, &sent.iter().collect::<Vec<_>>()))
    }
    /// An `UpdateAlertStatus` body.
    pub fn update_alert_status(body: &[u8]) -> Result<(), ApiError> {
        let op = Op::PatchAlerts;
        take_field(op, parse_response(op, body)?, "updateAlertStatusById").map(drop)
    }
}

/// An alert node as Panther's GraphQL sends it, in the shape [`Alert::from_map`] reads: the
/// detection ID comes from `origin` (`Detection` or `DeletedDetection`). GraphQL's `Alert` has no
/// event count, so it reads as 0 (the events read stand in for it).
fn alert_from_node(mut obj: Map<String, Value>) -> Result<(Alert, Option<Value>), String> {
    let events = obj.remove("events");
    if let Some(origin) = obj.remove("origin") {
        let detection = origin.get("__typename").and_then(|t| t.as_str()).is_some_and(|t| t != "SystemError");
        if detection {
            obj.insert("detection".into(), origin);
        }
    }
    Alert::from_map(&obj).map(|a| (a, events))
}

fn event_page(op: Op, v: Value) -> Result<EventPage, ApiError> {
    let conn: Connection = decode(op, v)?;
    let next = conn.next();
    Ok(EventPage { events: conn.edges.into_iter().map(|e| e.node).collect(), next })
}

impl PantherApi for GraphqlClient {
    async fn list_alerts(&self, q: &AlertQuery) -> Result<AlertPage, ApiError> {
        let op = Op::ListAlerts;
        if q.cursor.as_deref().is_some_and(|c| c.starts_with(REST_CURSOR)) {
            return self.rest_alerts(q).await;
        }
        let mut input = json!({
            "createdAtAfter": format_time(q.created_after),
            "createdAtBefore": format_time(q.created_before),
            "pageSize": PAGE_LIMIT,
            "sortBy": "createdAt",
            "sortDir": "ascending",
        });
        if !q.statuses.is_empty() {
            input["statuses"] = json!(q.statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>());
        }
        if !q.severities.is_empty() {
            input["severities"] = json!(q.severities.iter().map(|s| s.as_str()).collect::<Vec<_>>());
        }
        if let Some(c) = &q.cursor {
            input["cursor"] = json!(c);
        }
        let vars = json!({ "input": input, "events": { "pageSize": self.s.events_per_alert.clamp(1, PAGE_LIMIT) } });
        let alerts = match self.field(op, LIST_ALERTS, vars, "alerts").await {
            Ok((alerts, _)) => alerts,
            // One alert Panther cannot render takes the whole page with it (every field on the way
            // is non-null): this window is read over REST instead, which reports that alert alone.
            Err(e)
                if (!e.retry_later() && !e.outcome_unknown()) || matches!(&e, ApiError::Status { status: 500, .. }) =>
            {
                tracing::warn!(operation = op.as_str(), error = %e, "a GraphQL page of alerts failed; reading the window over REST");
                return self.rest_alerts(&AlertQuery { cursor: None, ..q.clone() }).await;
            }
            Err(e) => return Err(e),
        };
        alert_page(op, alerts)
    }

    async fn get_alert(&self, id: &str) -> Result<Alert, ApiError> {
        let op = Op::GetAlert;
        let (v, _) = self.field(op, GET_ALERT, json!({ "id": id }), "alert").await?;
        one_alert(op, v)
    }

    async fn list_events(&self, alert_id: &str, limit: u32, cursor: Option<&str>) -> Result<EventPage, ApiError> {
        let op = Op::ListEvents;
        let mut input = json!({ "pageSize": limit.clamp(1, PAGE_LIMIT) });
        if let Some(c) = cursor {
            input["cursor"] = json!(c);
        }
        let (alert, errors) = self.field(op, ALERT_EVENTS, json!({ "id": alert_id, "input": input }), "alert").await?;
        alert_events(op, &alert, &errors)
    }

    async fn list_comments(&self, alert_id: &str, cursor: Option<&str>) -> Result<CommentPage, ApiError> {
        self.rest.list_comments(alert_id, cursor).await
    }

    async fn create_comment(&self, c: &NewComment) -> Result<Comment, ApiError> {
        let mut all = self.comment_batch_once(std::slice::from_ref(c)).await;
        all.pop().unwrap_or_else(|| Err(ApiError::Decode { op: Op::CreateComment, detail: "no answer".into() }))
    }

    async fn update_comment(&self, id: &str, c: &NewComment) -> Result<Comment, ApiError> {
        self.rest.update_comment(id, c).await
    }

    async fn patch_alerts(&self, p: &AlertPatch) -> Result<(), ApiError> {
        let op = Op::PatchAlerts;
        if let Some(status) = p.status {
            let vars = json!({ "input": { "ids": p.ids, "status": status.as_str() } });
            self.field(op, UPDATE_ALERT_STATUS, vars, "updateAlertStatusById").await?;
        }
        match &p.assignee {
            None => {}
            Some(Assignee::Id(id)) => {
                let vars = json!({ "input": { "ids": p.ids, "assigneeId": id } });
                self.field(op, ASSIGN_ALERTS_BY_ID, vars, "updateAlertsAssigneeById").await?;
            }
            Some(Assignee::Email(email)) => {
                let vars = json!({ "input": { "ids": p.ids, "assigneeEmail": email } });
                self.field(op, ASSIGN_ALERTS_BY_EMAIL, vars, "updateAlertsAssigneeByEmail").await?;
            }
        }
        Ok(())
    }

    async fn find_user_id(&self, email: &str) -> Result<Option<String>, ApiError> {
        self.rest.find_user_id(email).await
    }

    fn comment_batch(&self) -> usize {
        self.s.comment_batch
    }

    async fn create_comments(&self, cs: &[NewComment]) -> Vec<Result<Comment, ApiError>> {
        let mut out = Vec::with_capacity(cs.len());
        for chunk in cs.chunks(self.s.comment_batch) {
            let results = self.comment_batch_once(chunk).await;
            let stop = results.iter().any(|r| matches!(r, Err(e) if e.retry_later() || e.outcome_unknown()));
            out.extend(results);
            if stop {
                break; // Panther is having a bad minute: the rest waits
            }
        }
        out
    }

    fn assigns_by_email(&self) -> bool {
        true
    }

    async fn ping(&self) -> Result<String, ApiError> {
        let (v, _) = self.field(Op::Ping, PANTHER_VERSION, json!({}), "generalSettings").await?;
        let version = v.get("pantherVersion").and_then(|v| v.as_str()).unwrap_or("(version not shown)");
        Ok(format!("Panther {version}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_document_repeats_the_field_under_numbered_aliases() {
        let one = batch_document(1);
        assert!(one.contains("mutation CreateAlertComments($c0: CreateAlertCommentInput!)"), "{one}");
        let three = batch_document(3);
        assert!(three
            .contains("($c0: CreateAlertCommentInput!, $c1: CreateAlertCommentInput!, $c2: CreateAlertCommentInput!)"));
        for i in 0..3 {
            assert!(three.contains(&format!("c{i}: createAlertComment(input: $c{i})")), "{three}");
        }
        assert_eq!(three.matches("createAlertComment(").count(), 3);
    }

    #[test]
    fn error_codes_read_as_the_http_answers_they_stand_for() {
        let e = |code: &str| GqlError {
            message: "m".into(),
            path: vec![json!("c0")],
            extensions: Some(Extensions { code: Some(code.into()) }),
        };
        let op = Op::CreateComment;
        assert_eq!(error_from(op, &e("THROTTLED")).status(), Some(429));
        assert!(error_from(op, &e("THROTTLED")).transient());
        assert!(!error_from(op, &e("THROTTLED")).outcome_unknown());
        assert!(matches!(error_from(op, &e("FORBIDDEN")), ApiError::Unauthorized { .. }));
        assert_eq!(error_from(op, &e("NOT_FOUND")).status(), Some(404));
        // A refused document is nobody's alert's fault: the work waits, nothing is marked failed.
        let refused = error_from(op, &e("GRAPHQL_VALIDATION_FAILED"));
        assert!(matches!(refused, ApiError::Incompatible { .. }) && refused.retry_later() && !refused.transient());
        assert_eq!(error_from(op, &e("BAD_USER_INPUT")).status(), Some(400), "one alias's input");
        // An unknown code: the write may have happened, so the daemon looks before writing again.
        assert!(error_from(op, &e("SOMETHING_NEW")).outcome_unknown());
    }

    #[test]
    fn an_alert_node_reads_its_detection_from_origin_and_not_from_a_system_error() {
        let node = json!({"id":"a1","title":"t","createdAt":"2026-01-01T00:00:00Z","severity":"HIGH","status":"OPEN",
            "origin":{"__typename":"Detection","id":"AWS.Root","name":"Root","detectionType":"RULE"},
            "events":{"edges":[{"node":{"x":1}}],"pageInfo":{"hasNextPage":true,"endCursor":"e1"}}});
        let Value::Object(obj) = node else { unreachable!() };
        let (a, events) = alert_from_node(obj).unwrap();
        assert_eq!(a.detection_id, "AWS.Root");
        let page = event_page(Op::ListEvents, events.unwrap()).unwrap();
        assert_eq!((page.events.len(), page.next.as_deref()), (1, Some("e1")));
        let sys = json!({"id":"a2","origin":{"__typename":"SystemError","relatedComponent":"x","systemErrorType":"SOURCE_NO_DATA"}});
        let Value::Object(obj) = sys else { unreachable!() };
        assert_eq!(alert_from_node(obj).unwrap().0.detection_id, "");
    }
}
