//! One request's life: recorded on arrival, refused without the right key, a queued fault applied,
//! delayed, routed, answered; the connection cut for `CommitThenDrop`; the work done on a task of
//! its own, late, for `LateCommit`.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::{endpoints, graphql, FakePanther, Fault, Recorded, Route};

/// Bodies past this are refused: the API's requests are a comment or a list of ids.
const MAX_BODY: usize = 1 << 20;

/// A failed request, answered as the spec's `*.BadRequestError` / `*.NotFoundError`: `{"message"}`.
#[derive(Debug)]
pub(super) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::NOT_FOUND, message: message.into() }
    }
}

/// A successful answer.
pub(super) enum Reply {
    Json(Value),
    /// A JSON body with another status: GraphQL refuses a document with a 400 in its own shape.
    JsonWithStatus(StatusCode, Value),
    /// 204 with no body (`PATCH /alerts`).
    NoContent,
}

/// The operation for a method and path, with the path's `{id}` (percent-decoded) where it has one.
pub(super) fn route_of(method: &str, path: &str) -> Option<(Route, Option<String>)> {
    let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    let id = |raw: &str| percent_decode(raw).filter(|id| !id.is_empty());
    match (method, segments.as_slice()) {
        ("GET", ["alerts"]) => Some((Route::ListAlerts, None)),
        ("PATCH", ["alerts"]) => Some((Route::PatchAlerts, None)),
        ("GET", ["alerts", raw]) => Some((Route::GetAlert, Some(id(raw)?))),
        ("GET", ["alerts", raw, "events"]) => Some((Route::ListEvents, Some(id(raw)?))),
        ("GET", ["alert-comments"]) => Some((Route::ListComments, None)),
        ("POST", ["alert-comments"]) => Some((Route::CreateComment, None)),
        ("POST", ["alert-comments", raw]) => Some((Route::UpdateComment, Some(id(raw)?))),
        ("GET", ["users"]) => Some((Route::ListUsers, None)),
        ("POST", ["public", "graphql"]) => Some((Route::Graphql, None)),
        _ => None,
    }
}

/// The only handler: everything about a request that is not one endpoint's business.
pub(super) async fn handle(State(fake): State<FakePanther>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let sent_key = parts.headers.get("x-api-key");
    // GraphQL, as Apollo Server does, takes only JSON bodies (which also keeps it safe from CSRF).
    let json_body = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    let authorized = sent_key.is_some_and(|k| k.as_bytes() == fake.inner.api_key.as_bytes());
    let api_key = sent_key.map(|k| String::from_utf8_lossy(k.as_bytes()).into_owned());
    let body = axum::body::to_bytes(body, MAX_BODY).await;
    let route = route_of(parts.method.as_str(), &path);

    let (index, fault, latency) = {
        let mut st = fake.lock();
        st.requests.push(Recorded {
            method: parts.method.to_string(),
            path: path.clone(),
            query: query.clone(),
            api_key,
            body: body.as_ref().ok().filter(|b| !b.is_empty()).map(|b| String::from_utf8_lossy(b).into_owned()),
            status: 0,
        });
        let operation = body.as_ref().ok().and_then(|b| operation_name(b));
        let fault =
            if authorized { st.take_fault(route.as_ref().map(|(r, _)| *r), operation.as_deref()) } else { None };
        (st.requests.len() - 1, fault, st.latency)
    };

    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(Fault::Delay(delay)) = &fault {
        tokio::time::sleep(*delay).await;
    }

    if let (true, Some(Fault::Raw { status, content_type, body })) = (authorized, &fault) {
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
        fake.lock().requests[index].status = status.as_u16();
        return (status, [(header::CONTENT_TYPE, *content_type)], body.clone()).into_response();
    }
    let work = Work {
        fake: fake.clone(),
        fault: fault.clone(),
        key: match (sent_key.is_some(), authorized) {
            (false, _) => KeyCheck::Missing,
            (true, false) => KeyCheck::Wrong,
            (true, true) => KeyCheck::Right,
        },
        method: parts.method.to_string(),
        path: path.clone(),
        route,
        query,
        body,
        json_body,
    };
    let answer = match &fault {
        // Carried out on a task of its own: a client that gives up (its timeout) drops this
        // handler, and the work is done all the same, later, as Panther finishes what it started.
        Some(Fault::LateCommit(delay)) => {
            let delay = *delay;
            let task = tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                work.answer()
            });
            match task.await {
                Ok(answer) => answer,
                Err(e) => Err(ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: e.to_string() }),
            }
        }
        _ => work.answer(),
    };

    let (status, value) = match answer {
        Ok(Reply::Json(value)) => (StatusCode::OK, Some(value)),
        Ok(Reply::JsonWithStatus(status, value)) => (status, Some(value)),
        Ok(Reply::NoContent) => (StatusCode::NO_CONTENT, None),
        Err(e) => (e.status, Some(json!({ "message": e.message }))),
    };
    fake.lock().requests[index].status = status.as_u16();
    let mut response = match (&fault, value) {
        (Some(Fault::CommitThenDrop), value) => return dropped_response(value),
        (_, Some(value)) => (status, axum::Json(value)).into_response(),
        (_, None) => status.into_response(),
    };
    if let Some(Fault::TooManyRequests { retry_after_secs }) = &fault {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
    }
    response
}

/// Whether a request carried the API key.
enum KeyCheck {
    Missing,
    Wrong,
    Right,
}

/// What a request asks, to be carried out now or (for `LateCommit`) later.
struct Work {
    fake: FakePanther,
    fault: Option<Fault>,
    key: KeyCheck,
    method: String,
    path: String,
    route: Option<(Route, Option<String>)>,
    query: Vec<(String, String)>,
    body: Result<Bytes, axum::Error>,
    json_body: bool,
}

impl Work {
    /// The answer, with the operation carried out under the fake's lock (and without an await).
    fn answer(self) -> Result<Reply, ApiError> {
        let Work { fake, fault, key, method, path, route, query, body, json_body } = self;
        match key {
            KeyCheck::Missing => {
                return Err(ApiError { status: StatusCode::UNAUTHORIZED, message: "missing X-API-Key header".into() })
            }
            KeyCheck::Wrong => {
                return Err(ApiError { status: StatusCode::UNAUTHORIZED, message: "invalid API key".into() })
            }
            KeyCheck::Right => {}
        }
        match (&fault, route, body) {
            (Some(Fault::TooManyRequests { .. }), ..) => Err(ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: "rate limit exceeded (injected fault)".into(),
            }),
            (Some(Fault::ServerError { status }), ..) => Err(ApiError {
                status: StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                message: format!("internal error (injected fault {status})"),
            }),
            (_, None, _) => Err(ApiError::not_found(format!("no route for {method} {path}"))),
            (_, Some(_), Err(_)) => {
                Err(ApiError::bad_request(format!("request body unreadable or larger than {MAX_BODY} bytes")))
            }
            (_, Some((Route::Graphql, _)), Ok(body)) => {
                let mut st = fake.lock();
                Ok(graphql::execute(&mut st, &body, json_body))
            }
            (_, Some((route, id)), Ok(body)) => {
                let mut st = fake.lock();
                endpoints::dispatch(&mut st, route, id.as_deref(), &query, &body)
            }
        }
    }
}

impl super::State {
    /// Consumes one use of the first queued fault that matches a request to `route` (and, for
    /// GraphQL, to the document's `operation`).
    fn take_fault(&mut self, route: Option<Route>, operation: Option<&str>) -> Option<Fault> {
        let at = self.faults.iter().position(|q| {
            q.route == Route::Any
                || (Some(q.route) == route && (q.operation.is_none() || q.operation.as_deref() == operation))
        })?;
        let queued = &mut self.faults[at];
        queued.left -= 1;
        let fault = queued.fault.clone();
        if queued.left == 0 {
            self.faults.remove(at);
        }
        Some(fault)
    }
}

/// The name of a GraphQL request's operation: the word after the first `query` or `mutation`
/// keyword of its document (enough for steering faults; execution parses properly).
fn operation_name(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let doc = v.get("query")?.as_str()?;
    let mut words = doc
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split(|c: char| !(c.is_alphanumeric() || c == '_')))
        .filter(|w| !w.is_empty());
    words.find(|w| *w == "query" || *w == "mutation")?;
    words.next().map(str::to_owned)
}

/// An answer that never arrives whole. It promises (`Content-Length`) the full JSON while the body
/// holds only its first half; when the body ends short of the promise, hyper aborts the connection.
/// As hyper 1.x does it, that happens before anything is flushed, so the client gets no response at
/// all (reqwest: a request error caused by hyper's `IncompleteMessage`; the tests pin this). A body
/// that fails outright would do the same, but needs a `Stream` or `HttpBody` implementation and so a
/// crate this project does not depend on directly. The status is 200 even where the answer was a 204,
/// which cannot carry the body that is cut.
fn dropped_response(value: Option<Value>) -> Response {
    let full = value.map(|v| v.to_string()).unwrap_or_else(|| "{}".to_owned()).into_bytes();
    let sent = Bytes::from(full[..full.len() / 2].to_vec());
    // A streamed body has no known length, so hyper uses our Content-Length instead of its own.
    let body = Body::from_stream(Body::from(sent).into_data_stream());
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(full.len()));
    response
}

/// Decodes `%XX` escapes in a path segment; `None` for a broken escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
