//! The operations, as plain functions of the state: check the request against the spec, act, answer.
//!
//! Query parameters are read from the decoded pairs rather than through axum's `Query`, which cannot
//! take a repeated key (`status=OPEN&status=TRIAGED`, the spec's default `form` + `explode` style).

use std::collections::HashSet;
use std::ops::Bound;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Map, Value};

use super::http::{ApiError, Reply};
use super::{now_rfc3339, Route, State, ALERT_TYPES, SEVERITIES, STATUSES};

pub(super) fn dispatch(
    st: &mut State,
    route: Route,
    id: Option<&str>,
    query: &[(String, String)],
    body: &[u8],
) -> Result<Reply, ApiError> {
    let id = id.unwrap_or_default();
    match route {
        Route::ListAlerts => list_alerts(st, query),
        Route::GetAlert => {
            Params::new(query, &[])?;
            let alert = st.alerts.get(id).ok_or_else(|| alert_not_found(id))?;
            Ok(Reply::Json(alert.json.clone()))
        }
        Route::ListEvents => {
            let p = Params::new(query, &["cursor", "limit"])?;
            let alert = st.alerts.get(id).ok_or_else(|| alert_not_found(id))?;
            page(&alert.events, "events", &p, 25, 50)
        }
        Route::ListComments => list_comments(st, query),
        Route::CreateComment => {
            Params::new(query, &[])?;
            create_comment(st, body)
        }
        Route::UpdateComment => {
            Params::new(query, &[])?;
            update_comment(st, id, body)
        }
        Route::PatchAlerts => {
            Params::new(query, &[])?;
            patch_alerts(st, body)
        }
        Route::ListUsers => list_users(st, query),
        Route::Any | Route::Graphql => Err(ApiError::not_found("no route")),
    }
}

/// Every parameter `GET /alerts` has in the spec.
const LIST_ALERTS_PARAMS: &[&str] = &[
    "type",
    "sub-type",
    "cursor",
    "limit",
    "created-after",
    "created-before",
    "detection-id",
    "sort-dir",
    "name-contains",
    "log-source",
    "log-type",
    "resource-type",
    "status",
    "severity",
    "assignee",
    "event-count-min",
    "event-count-max",
];

/// Spec parameters that filter on data `AlertAPI.Alert` does not carry, so the fake cannot honour
/// them; refusing beats silently returning everything.
const UNSUPPORTED_ALERT_PARAMS: &[&str] = &["sub-type", "log-source", "log-type", "resource-type"];

fn list_alerts(st: &State, query: &[(String, String)]) -> Result<Reply, ApiError> {
    let p = Params::new(query, LIST_ALERTS_PARAMS)?;
    if let Some(name) = UNSUPPORTED_ALERT_PARAMS.iter().find(|name| p.given(name)) {
        return Err(ApiError::bad_request(format!("`{name}` is in Panther's API but this fake cannot filter on it")));
    }
    let after = p.time("created-after")?;
    let before = p.time("created-before")?;
    let statuses = p.enum_all("status", STATUSES)?;
    let severities = p.enum_all("severity", SEVERITIES)?;
    let alert_type = p.enum_one("type", ALERT_TYPES)?.unwrap_or("ALERT");
    let descending = p.enum_one("sort-dir", &["asc", "desc"])? != Some("asc");
    let detection_id = p.one("detection-id")?;
    let name_contains = p.one("name-contains")?.map(str::to_lowercase);
    let assignees: Vec<&str> = p.all("assignee").collect();
    let min_events = p.int("event-count-min")?;
    let max_events = p.int("event-count-max")?;
    let limit = p.limit(25, 50)?;
    let cursor = p.one("cursor")?.map(read_alert_cursor).transpose()?;

    let text = |a: &Value, pointer: &str| a.pointer(pointer).and_then(Value::as_str).map(str::to_owned);
    let wanted = |a: &Value, created: &DateTime<Utc>| {
        let count = a["eventCount"].as_i64().unwrap_or(0);
        after.is_none_or(|t| *created >= t)
            && before.is_none_or(|t| *created < t)
            && (statuses.is_empty() || statuses.iter().any(|s| a["status"] == *s))
            && (severities.is_empty() || severities.iter().any(|s| a["severity"] == *s))
            && a["type"] == alert_type
            && detection_id.is_none_or(|d| a["detection"]["id"] == d)
            && name_contains.as_ref().is_none_or(|n| text(a, "/title").is_some_and(|t| t.to_lowercase().contains(n)))
            && (assignees.is_empty() || assignees.iter().any(|id| a["assignee"]["id"] == *id))
            && min_events.is_none_or(|m| count >= m)
            && max_events.is_none_or(|m| count <= m)
    };

    // Keyset paging: the page starts strictly after the cursor's (createdAt, id), wherever that alert
    // now sits, so alerts added between two requests neither shift nor repeat the ones that follow.
    let keys: Box<dyn Iterator<Item = &(DateTime<Utc>, String)>> = match (descending, cursor) {
        (false, None) => Box::new(st.order.iter()),
        (false, Some(key)) => Box::new(st.order.range((Bound::Excluded(key), Bound::Unbounded))),
        (true, None) => Box::new(st.order.iter().rev()),
        (true, Some(key)) => Box::new(st.order.range((Bound::Unbounded, Bound::Excluded(key))).rev()),
    };
    let mut results = Vec::new();
    let mut last = None;
    let mut more = false;
    for key in keys {
        let Some(alert) = st.alerts.get(&key.1) else { continue };
        if !wanted(&alert.json, &key.0) {
            continue;
        }
        if results.len() == limit {
            more = true;
            break;
        }
        results.push(alert.json.clone());
        last = Some(key);
    }
    let next = last.filter(|_| more).map(|(created, id)| {
        encode_cursor(&format!("alerts:{}:{}:{id}", created.timestamp(), created.timestamp_subsec_nanos()))
    });
    Ok(Reply::Json(page_json(results, next)))
}

fn read_alert_cursor(cursor: &str) -> Result<(DateTime<Utc>, String), ApiError> {
    let invalid = || ApiError::bad_request(format!("`cursor`: {cursor:?} is not a cursor this operation gave out"));
    let text = decode_cursor(cursor).ok_or_else(invalid)?;
    let mut parts = text.strip_prefix("alerts:").ok_or_else(invalid)?.splitn(3, ':');
    let secs = parts.next().and_then(|s| s.parse::<i64>().ok()).ok_or_else(invalid)?;
    let nanos = parts.next().and_then(|s| s.parse::<u32>().ok()).ok_or_else(invalid)?;
    let id = parts.next().ok_or_else(invalid)?;
    let created = DateTime::from_timestamp(secs, nanos).ok_or_else(invalid)?;
    Ok((created, id.to_owned()))
}

fn alert_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("alert {id} not found"))
}

fn list_comments(st: &State, query: &[(String, String)]) -> Result<Reply, ApiError> {
    let p = Params::new(query, &["alert-id", "cursor", "limit"])?;
    let alert_id = p.one("alert-id")?.ok_or_else(|| ApiError::bad_request("`alert-id` is required"))?;
    let comments: Vec<Value> = st.comments.iter().filter(|c| c["alertId"] == alert_id).cloned().collect();
    page(&comments, "comments", &p, 25, 50)
}

/// A `CommentAPI.ModifyCommentReq`, checked.
struct CommentReq {
    alert_id: String,
    body: String,
    format: String,
}

fn parse_comment_req(body: &[u8]) -> Result<CommentReq, ApiError> {
    let map = parse_body(body, "CommentAPI.ModifyCommentReq", &["alertId", "body", "format"])?;
    let field = |name: &str| match map.get(name) {
        None | Some(Value::Null) => Err(ApiError::bad_request(format!("`{name}` is required"))),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::bad_request(format!("`{name}` must be a string"))),
    };
    let req = CommentReq { alert_id: field("alertId")?, body: field("body")?, format: field("format")? };
    if req.format != "HTML" && req.format != "PLAIN_TEXT" {
        return Err(ApiError::bad_request(format!("`format` must be HTML or PLAIN_TEXT, not {:?}", req.format)));
    }
    Ok(req)
}

/// The actor for writes made with an API key. The spec's Actor object puts the enum
/// (`user`, `api-token`, `system`) on `id` and leaves `type` a free string, the reverse of what one
/// would expect; `api-token` in both fields reads right either way.
fn api_token_actor() -> Value {
    json!({"id": "api-token", "type": "api-token"})
}

fn create_comment(st: &mut State, body: &[u8]) -> Result<Reply, ApiError> {
    let req = parse_comment_req(body)?;
    if !st.alerts.contains_key(&req.alert_id) {
        return Err(alert_not_found(&req.alert_id));
    }
    st.comments_created += 1;
    let id = format!("00000000-0000-4000-8000-{:012x}", st.comments_created);
    let now = now_rfc3339();
    let comment = json!({
        "id": id,
        "alertId": req.alert_id,
        "body": req.body,
        "format": req.format,
        "createdAt": now,
        "updatedAt": now,
        "createdBy": api_token_actor(),
        "updatedBy": api_token_actor(),
    });
    st.comment_index.insert(id, st.comments.len());
    st.comments.push(comment.clone());
    Ok(Reply::Json(comment))
}

fn update_comment(st: &mut State, id: &str, body: &[u8]) -> Result<Reply, ApiError> {
    let req = parse_comment_req(body)?;
    let at = *st.comment_index.get(id).ok_or_else(|| ApiError::not_found(format!("comment {id} not found")))?;
    let comment = &mut st.comments[at];
    if comment["alertId"] != req.alert_id.as_str() {
        return Err(ApiError::bad_request(format!(
            "`alertId` {:?} is not the alert of comment {id} ({})",
            req.alert_id, comment["alertId"]
        )));
    }
    comment["body"] = json!(req.body);
    comment["format"] = json!(req.format);
    comment["updatedAt"] = json!(now_rfc3339());
    comment["updatedBy"] = api_token_actor();
    Ok(Reply::Json(comment.clone()))
}

/// `PATCH /alerts` with an `AlertAPI.BulkPatchAlertReq`: all ids must exist or nothing changes.
/// An empty `assignee` unassigns; any other must be a known user id.
fn patch_alerts(st: &mut State, body: &[u8]) -> Result<Reply, ApiError> {
    let map = parse_body(body, "AlertAPI.BulkPatchAlertReq", &["ids", "status", "assignee"])?;
    let ids: Vec<&str> = match map.get("ids") {
        None | Some(Value::Null) => return Err(ApiError::bad_request("`ids` is required")),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or_else(|| ApiError::bad_request("`ids` must be an array of strings")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::bad_request("`ids` must be an array of strings")),
    };
    if ids.is_empty() {
        return Err(ApiError::bad_request("`ids` is empty"));
    }
    let status = match map.get("status") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if STATUSES.contains(&s.as_str()) => Some(s.as_str()),
        Some(other) => {
            return Err(ApiError::bad_request(format!("`status` must be one of {}, not {other}", STATUSES.join(", "))))
        }
    };
    let assignee = match map.get("assignee") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(ApiError::bad_request("`assignee` must be a string (a user id)")),
    };
    if status.is_none() && assignee.is_none() {
        return Err(ApiError::bad_request("nothing to change: give `status`, `assignee` or both"));
    }
    if let Some(user) = assignee.filter(|a| !a.is_empty()) {
        if !st.users.iter().any(|u| u["id"] == user) {
            return Err(ApiError::bad_request(format!("`assignee`: no user with id {user:?}")));
        }
    }
    let missing: Vec<&str> = ids.iter().copied().filter(|id| !st.alerts.contains_key(*id)).collect();
    if !missing.is_empty() {
        return Err(ApiError::not_found(format!("alerts not found: {}", missing.join(", "))));
    }
    for id in ids {
        let Some(alert) = st.alerts.get_mut(id).and_then(|a| a.json.as_object_mut()) else { continue };
        if let Some(status) = status {
            alert.insert("status".into(), json!(status));
        }
        match assignee {
            Some("") => {
                alert.remove("assignee");
            }
            Some(user) => {
                alert.insert("assignee".into(), json!({"id": user, "type": "user"}));
            }
            None => {}
        }
        alert.insert("updatedBy".into(), api_token_actor());
    }
    Ok(Reply::NoContent)
}

const LIST_USERS_PARAMS: &[&str] =
    &["cursor", "limit", "contains", "email", "id", "ids", "include-deactivated", "status"];

/// `GET /users`. As the spec says, `email` (an exact match) makes every other parameter ignored.
fn list_users(st: &State, query: &[(String, String)]) -> Result<Reply, ApiError> {
    let p = Params::new(query, LIST_USERS_PARAMS)?;
    if let Some(email) = p.one("email")? {
        let found = st.users.iter().filter(|u| u["email"] == email).cloned().collect();
        return Ok(Reply::Json(page_json(found, None)));
    }
    let contains = p.one("contains")?.map(str::to_lowercase);
    let mut ids: HashSet<&str> = p.all("id").collect();
    ids.extend(p.one("ids")?.into_iter().flat_map(|list| list.split(',')).map(str::trim).filter(|s| !s.is_empty()));
    let status = p.one("status")?;
    match p.one("include-deactivated")? {
        None | Some("true" | "false") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!("`include-deactivated`: {other:?} is not true or false")))
        }
    }
    let users: Vec<Value> = st
        .users
        .iter()
        .filter(|u| ids.is_empty() || u["id"].as_str().is_some_and(|id| ids.contains(id)))
        .filter(|u| status.is_none_or(|s| u["status"] == s))
        .filter(|u| {
            contains.as_ref().is_none_or(|c| {
                ["email", "givenName", "familyName"]
                    .iter()
                    .any(|f| u[*f].as_str().is_some_and(|v| v.to_lowercase().contains(c)))
            })
        })
        .cloned()
        .collect();
    page(&users, "users", &p, 60, 60)
}

/// A request body that must be one JSON object with only the named fields.
fn parse_body(body: &[u8], schema: &str, fields: &[&str]) -> Result<Map<String, Value>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(format!("a {schema} body is required")));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON ({e}); expected {schema}")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::bad_request(format!("the body must be a JSON object ({schema})")));
    };
    if let Some(unknown) = map.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown field `{unknown}` in {schema} (its fields: {})",
            fields.join(", ")
        )));
    }
    Ok(map)
}

/// One page of a list that only grows at its end (events, comments, users), so an offset is a stable
/// cursor. The cursor names its list, so one operation's cursor is refused by another.
fn page(items: &[Value], kind: &str, p: &Params, default_limit: usize, max_limit: usize) -> Result<Reply, ApiError> {
    let limit = p.limit(default_limit, max_limit)?;
    let start = match p.one("cursor")? {
        None => 0,
        Some(cursor) => decode_cursor(cursor)
            .and_then(|text| text.strip_prefix(kind)?.strip_prefix(':')?.parse::<usize>().ok())
            .filter(|offset| *offset <= items.len())
            .ok_or_else(|| {
                ApiError::bad_request(format!("`cursor`: {cursor:?} is not a cursor this operation gave out"))
            })?,
    };
    let end = start.saturating_add(limit).min(items.len());
    let next = (end < items.len()).then(|| encode_cursor(&format!("{kind}:{end}")));
    Ok(Reply::Json(page_json(items[start..end].to_vec(), next)))
}

/// `{results, next}`, with `next` left out on the last page as the spec's list responses do.
fn page_json(results: Vec<Value>, next: Option<String>) -> Value {
    let mut page = json!({ "results": results });
    if let Some(next) = next {
        page["next"] = json!(next);
    }
    page
}

/// Cursors are hex so that clients treat them as opaque rather than parse them.
fn encode_cursor(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(cursor: &str) -> Option<String> {
    if cursor.len() % 2 != 0 || !cursor.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..cursor.len()).step_by(2).map(|i| u8::from_str_radix(&cursor[i..i + 2], 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

/// A query's parameters, checked against the names an operation takes. Empty values count as not
/// given (the spec allows empty values everywhere); a scalar given twice is an error.
struct Params<'a> {
    pairs: &'a [(String, String)],
}

impl<'a> Params<'a> {
    fn new(pairs: &'a [(String, String)], known: &[&str]) -> Result<Self, ApiError> {
        if let Some((name, _)) = pairs.iter().find(|(name, _)| !known.contains(&name.as_str())) {
            let takes = if known.is_empty() { "no query parameters".to_owned() } else { known.join(", ") };
            return Err(ApiError::bad_request(format!(
                "unknown query parameter `{name}` (this operation takes: {takes})"
            )));
        }
        Ok(Params { pairs })
    }

    fn given(&self, name: &str) -> bool {
        self.all(name).next().is_some()
    }

    fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.pairs.iter().filter(move |(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.as_str())
    }

    fn one(&self, name: &str) -> Result<Option<&'a str>, ApiError> {
        if self.pairs.iter().filter(|(k, _)| k == name).count() > 1 {
            return Err(ApiError::bad_request(format!("`{name}` is given more than once")));
        }
        Ok(self.all(name).next())
    }

    fn enum_one(&self, name: &str, allowed: &[&'a str]) -> Result<Option<&'a str>, ApiError> {
        match self.one(name)? {
            Some(v) if !allowed.contains(&v) => {
                Err(ApiError::bad_request(format!("`{name}`: {v:?} is not one of {}", allowed.join(", "))))
            }
            v => Ok(v),
        }
    }

    fn enum_all(&self, name: &str, allowed: &[&str]) -> Result<Vec<&'a str>, ApiError> {
        let values: Vec<&str> = self.all(name).collect();
        match values.iter().find(|v| !allowed.contains(v)) {
            Some(v) => Err(ApiError::bad_request(format!(
                "`{name}`: {v:?} is not one of {} (repeat the parameter for several values)",
                allowed.join(", ")
            ))),
            None => Ok(values),
        }
    }

    fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.one(name)?
            .map(|v| v.parse().map_err(|_| ApiError::bad_request(format!("`{name}`: {v:?} is not an integer"))))
            .transpose()
    }

    fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.int("limit")? {
            None => Ok(default),
            Some(n) if n < 1 => Err(ApiError::bad_request(format!("`limit` must be at least 1, not {n}"))),
            Some(n) if n as u64 > max as u64 => {
                Err(ApiError::bad_request(format!("`limit` is at most {max}, not {n}")))
            }
            Some(n) => Ok(n as usize),
        }
    }

    /// A time in one of the forms the spec lists: RFC 3339, `2025-01-01`, `2025-01`, Unix seconds.
    fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        let Some(v) = self.one(name)? else { return Ok(None) };
        let parsed = if v.bytes().all(|b| b.is_ascii_digit()) {
            v.parse::<i64>().ok().and_then(|secs| DateTime::from_timestamp(secs, 0))
        } else if let Ok(t) = DateTime::parse_from_rfc3339(v) {
            Some(t.with_timezone(&Utc))
        } else {
            let day = if v.len() == 7 { format!("{v}-01") } else { v.to_owned() };
            NaiveDate::parse_from_str(&day, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc())
        };
        parsed.map(Some).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`{name}`: {v:?} is not a time (RFC 3339 like 2025-01-01T15:04:05Z, 2025-01-01, 2025-01 or Unix seconds)"
            ))
        })
    }
}
