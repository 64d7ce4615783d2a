//! Panther's GraphQL API, `POST /public/graphql`, over the same state as the REST side: what one API
//! changes, the other shows.
//!
//! Documents are parsed, validated and executed over the real SDL (`schema/panther.graphql`) with
//! apollo-compiler's executor, so a document the real API would refuse (an unknown field, a wrong
//! argument, `type` selected unaliased from two members of the `AlertOrigin` union) is refused here
//! too. Refusals mimic Apollo Server 4 (run with `status400ForVariableCoercionErrors`):
//! - a body that is not JSON, lacks `query`, or has an unknown key: 400, `BAD_REQUEST`;
//! - a syntax error: 400, `GRAPHQL_PARSE_FAILED`;
//! - a validation error: 400, `GRAPHQL_VALIDATION_FAILED`;
//! - an unknown `operationName`, or several operations and none named: 400,
//!   `OPERATION_RESOLUTION_FAILURE`;
//! - variables that do not coerce to their types: 400, `BAD_USER_INPUT`.
//!
//! Every such body is `{"errors": [{message, locations?, extensions: {code}}]}` with no `data`.
//! Anything else is a 200 with `data` and, if a field failed, `errors` whose entries carry `path`
//! (aliases as written) and `extensions.code`: `BAD_USER_INPUT`, `NOT_FOUND`, a code queued with
//! [`FakePanther::fail_field`](super::FakePanther::fail_field), or `INTERNAL_SERVER_ERROR` for a field
//! the fake does not implement.
//!
//! The fake implements `Query.alerts`, `Query.alert`, `Query.generalSettings` and the mutations
//! `createAlertComment`, `updateAlertStatusById`, `updateAlertsAssigneeById` and
//! `updateAlertsAssigneeByEmail`. Reads and writes go through the REST operations
//! (`endpoints::dispatch`), so both APIs check, store and page alike, and cursors are the REST ones.
//!
//! # Alerts as GraphQL sees them
//! `Alert.type` comes from the REST alert's `type` and `detection.type`: an `ALERT` is `RULE`,
//! `POLICY` or `SCHEDULED_RULE` after its detection (a `CORRELATION_RULE`, which `AlertType` lacks, is
//! `RULE`); a `DETECTION_ERROR` is `SCHEDULED_RULE_ERROR` for a scheduled rule, else `RULE_ERROR`; a
//! `SYSTEM_ERROR` is `SYSTEM_ERROR`. `origin` is a `SystemError` for a `SYSTEM_ERROR` alert whose
//! `systemError.type` is a `SystemErrorType`, else a `Detection` built from `detection` (never a
//! `DeletedDetection`).
//!
//! # Each root field on its own
//! apollo-compiler, like graphql-js, stops executing an operation's root fields at the first one whose
//! error nulls all of `data`, and every root field used here is non-null. Panther does not document
//! what its server does with a batch of aliased mutations when one fails, so the fake can do either
//! ([`BatchSemantics`](super::BatchSemantics)): stop at the first failure (the default, as
//! graphql-js does: later aliases never run and report nothing), or run every alias. Either way it
//! executes the operation once per root response key, in document order, the other root fields
//! skipped each time, and merges the answers; every failure is reported under its alias, and `data`
//! is null if any of them failed, as GraphQL's null propagation says.

use std::cell::RefCell;
use std::sync::OnceLock;

use apollo_compiler::ast::Type;
use apollo_compiler::executable::Operation;
use apollo_compiler::parser::Parser;
use apollo_compiler::request::coerce_variable_values;
use apollo_compiler::resolvers::{Execution, FieldError, ObjectValue, ResolveInfo, ResolvedValue};
use apollo_compiler::response::{GraphQLError, JsonMap, JsonValue};
use apollo_compiler::schema::ExtendedType;
use apollo_compiler::validation::{DiagnosticList, Valid};
use apollo_compiler::{ExecutableDocument, Schema};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::http::{ApiError, Reply};
use super::{endpoints, FieldFault, Route, State};

/// `GeneralSettingsConfig.pantherVersion`: no real version looks like it.
pub(super) const PANTHER_VERSION: &str = "1.0.0-fake";

/// The most a `pageSize` may ask for, as the REST `limit`.
const MAX_PAGE_SIZE: i64 = 50;
const DEFAULT_PAGE_SIZE: i64 = 25;

const SYSTEM_ERROR_TYPES: &[&str] = &[
    "ALERT_DELIVERY",
    "DETECTION_ALERT_LIMIT_EXCEEDED",
    "SOURCE_CLASSIFICATION_FAILURES",
    "SOURCE_LOG_PROCESSING_ERRORS",
    "SOURCE_NO_DATA",
    "SOURCE_PERMISSIONS_CHECKS",
    "SOURCE_SCANNING_ERRORS",
];

/// Separates an error code from its message inside a [`FieldError`], which has only a message; the
/// code is moved to `extensions.code` once execution is over.
const CODE_MARK: char = '\u{1f}';

/// The SDL, checked once: it is a byte copy of Panther's, so a failure is a broken checkout.
fn schema() -> &'static Valid<Schema> {
    static SCHEMA: OnceLock<Valid<Schema>> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        Schema::parse_and_validate(include_str!("../../schema/panther.graphql"), "schema/panther.graphql")
            .unwrap_or_else(|e| panic!("schema/panther.graphql is not a valid GraphQL schema: {e}"))
    })
}

/// One request to `/public/graphql`, answered while the caller holds the state lock.
/// `json_body`: whether the request said `Content-Type: application/json`.
pub(super) fn execute(st: &mut State, body: &[u8], json_body: bool) -> Reply {
    match answer(st, body, json_body) {
        Ok(value) => Reply::Json(value),
        Err((status, errors)) => Reply::JsonWithStatus(status, json!({ "errors": errors })),
    }
}

/// A request refused before execution: its status and `errors`.
type Refusal = (StatusCode, Vec<Value>);

fn refuse(code: &str, message: impl Into<String>) -> Refusal {
    (StatusCode::BAD_REQUEST, vec![json!({"message": message.into(), "extensions": {"code": code}})])
}

fn answer(st: &mut State, body: &[u8], json_body: bool) -> Result<Value, Refusal> {
    let request = parse_request(body, json_body)?;
    let schema = schema();
    let ast = Parser::new()
        .parse_ast(request.query, "request.graphql")
        .map_err(|e| diagnostics("GRAPHQL_PARSE_FAILED", &e.errors))?;
    let document =
        ast.to_executable_validate(schema).map_err(|e| diagnostics("GRAPHQL_VALIDATION_FAILED", &e.errors))?;
    let operation = document
        .operations
        .get(request.operation_name.as_deref())
        .map_err(|e| refuse("OPERATION_RESOLUTION_FAILURE", e.message().to_string()))?;
    let variables = coerce_variable_values(schema, operation, &request.variables).map_err(|e| {
        let mut error = graphql_error_json(&e.to_graphql_error(&document.sources));
        error["extensions"] = json!({"code": "BAD_USER_INPUT"});
        (StatusCode::BAD_REQUEST, vec![error])
    })?;
    run(st, &document, operation, &variables)
}

struct Request {
    query: String,
    variables: JsonMap,
    operation_name: Option<String>,
}

fn parse_request(body: &[u8], json_body: bool) -> Result<Request, Refusal> {
    if !json_body {
        return Err(refuse("BAD_REQUEST", "a GraphQL POST needs `Content-Type: application/json`"));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| refuse("BAD_REQUEST", format!("the body is not JSON: {e}")))?;
    let Value::Object(mut map) = value else {
        return Err(refuse("BAD_REQUEST", "the body must be a JSON object {query, variables?, operationName?}"));
    };
    if let Some(key) = map.keys().find(|k| !["query", "variables", "operationName", "extensions"].contains(&k.as_str()))
    {
        return Err(refuse("BAD_REQUEST", format!("unknown key `{key}` in the request body")));
    }
    let query = match map.remove("query") {
        Some(Value::String(q)) if !q.trim().is_empty() => q,
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(refuse("BAD_REQUEST", "GraphQL operations must contain a non-empty `query`"))
        }
        Some(_) => return Err(refuse("BAD_REQUEST", "`query` must be a string")),
    };
    let variables = match map.remove("variables") {
        None | Some(Value::Null) => JsonMap::new(),
        Some(Value::Object(vars)) => match JsonValue::from(Value::Object(vars)) {
            JsonValue::Object(vars) => vars,
            _ => JsonMap::new(),
        },
        Some(_) => return Err(refuse("BAD_REQUEST", "`variables` must be an object")),
    };
    let operation_name = match map.remove("operationName") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name),
        Some(_) => return Err(refuse("BAD_REQUEST", "`operationName` must be a string")),
    };
    Ok(Request { query, variables, operation_name })
}

/// Parse or validation diagnostics as a refusal, each with its message, locations and `code`. The
/// parser can report one syntax error twice; it is answered once.
fn diagnostics(code: &str, list: &DiagnosticList) -> Refusal {
    let mut errors: Vec<Value> = Vec::new();
    for diagnostic in list.iter() {
        let mut error = graphql_error_json(&diagnostic.to_json());
        error["extensions"] = json!({ "code": code });
        if !errors.contains(&error) {
            errors.push(error);
        }
    }
    (StatusCode::BAD_REQUEST, errors)
}

fn graphql_error_json(error: &GraphQLError) -> Value {
    serde_json::to_value(error).unwrap_or_else(|_| json!({"message": error.message}))
}

/// Executes the operation once per root response key (see the module doc) and merges the answers.
fn run(
    st: &mut State,
    document: &Valid<ExecutableDocument>,
    operation: &Operation,
    variables: &Valid<JsonMap>,
) -> Result<Value, Refusal> {
    let ctx = Ctx { st: RefCell::new(st) };
    let root = |only: Option<String>| Root {
        ctx: &ctx,
        type_name: operation.object_type().to_string(),
        only,
        seen: RefCell::default(),
    };
    let execute = |root: &Root<'_, '_>| {
        Execution::new(schema(), document).operation(operation).coerced_variable_values(variables).execute_sync(root)
    };
    // A first pass resolves nothing, only learning the root keys as the executor collects them
    // (fragments, @skip and @include included).
    let discovery = root(None);
    let first = execute(&discovery);
    let keys = discovery.seen.into_inner();
    let answers = if keys.is_empty() {
        vec![first]
    } else {
        let stop_at_failure = ctx.st.borrow().batch == super::BatchSemantics::StopAtFirstError;
        let mut answers = Vec::new();
        for key in keys {
            let answer = execute(&root(Some(key)));
            let failed = matches!(&answer, Ok(a) if a.data.is_none()) || answer.is_err();
            answers.push(answer);
            if failed && stop_at_failure {
                break;
            }
        }
        answers
    };

    let mut data = Some(Map::new());
    let mut errors: Vec<Value> = Vec::new();
    for answer in answers {
        let answer = answer.map_err(|e| {
            let mut error = graphql_error_json(&e.to_graphql_error(&document.sources));
            error["extensions"] = json!({"code": "INTERNAL_SERVER_ERROR"});
            (StatusCode::INTERNAL_SERVER_ERROR, vec![error])
        })?;
        for error in &answer.errors {
            let error = field_error_json(error);
            // A root field whose arguments fail reports in every pass.
            if !errors.contains(&error) {
                errors.push(error);
            }
        }
        match (answer.data, data.as_mut()) {
            (Some(part), Some(all)) => {
                if let Ok(Value::Object(part)) = serde_json::to_value(part) {
                    all.extend(part);
                }
            }
            (None, _) => data = None,
            (Some(_), None) => {}
        }
    }
    let mut response = json!({ "data": data });
    if !errors.is_empty() {
        response["errors"] = Value::Array(errors);
    }
    Ok(response)
}

/// A field error as answered: a resolver's code moved from the message to `extensions.code`; errors
/// the executor raised itself (a resolver returned the wrong shape) are `INTERNAL_SERVER_ERROR`.
fn field_error_json(error: &GraphQLError) -> Value {
    let mut value = graphql_error_json(error);
    let coded = error.message.strip_prefix("resolver error: ").and_then(|m| m.split_once(CODE_MARK));
    let code = match coded {
        Some((code, message)) => {
            value["message"] = json!(message);
            code
        }
        None => "INTERNAL_SERVER_ERROR",
    };
    match value.get_mut("extensions").and_then(Value::as_object_mut) {
        Some(extensions) => {
            extensions.insert("code".into(), json!(code));
        }
        None => value["extensions"] = json!({ "code": code }),
    }
    value
}

/// A resolver's failure, before it becomes a [`FieldError`].
#[derive(Debug)]
struct Failure {
    code: String,
    message: String,
}

impl Failure {
    fn new(code: &str, message: impl Into<String>) -> Self {
        Failure { code: code.to_owned(), message: message.into() }
    }

    fn bad_input(message: impl Into<String>) -> Self {
        Failure::new("BAD_USER_INPUT", message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Failure::new("NOT_FOUND", message)
    }

    fn unsupported(what: &str) -> Self {
        Failure::new("INTERNAL_SERVER_ERROR", format!("{what} is not supported by the fake"))
    }
}

impl From<Failure> for FieldError {
    fn from(failure: Failure) -> Self {
        FieldError { message: format!("{}{CODE_MARK}{}", failure.code, failure.message) }
    }
}

/// A REST refusal as a field error: its 400s are bad input, its 404s missing things.
impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        let code = match e.status {
            StatusCode::BAD_REQUEST => "BAD_USER_INPUT",
            StatusCode::NOT_FOUND => "NOT_FOUND",
            _ => "INTERNAL_SERVER_ERROR",
        };
        Failure::new(code, e.message)
    }
}

/// The state, shared by the objects of one execution. The resolvers are called one at a time and
/// each borrows only while it runs, so the `RefCell` is never borrowed twice.
struct Ctx<'s> {
    st: RefCell<&'s mut State>,
}

impl Ctx<'_> {
    fn rest(&self, route: Route, id: Option<&str>, query: &[(String, String)], body: &[u8]) -> Result<Reply, Failure> {
        let mut st = self.st.borrow_mut();
        endpoints::dispatch(&mut st, route, id, query, body).map_err(Failure::from)
    }
}

/// `Query` or `Mutation`, resolving one root response key (`only`) and skipping the others, or, for
/// discovery (`only: None`), skipping everything and noting the keys in `seen`.
struct Root<'c, 's> {
    ctx: &'c Ctx<'s>,
    type_name: String,
    only: Option<String>,
    seen: RefCell<Vec<String>>,
}

impl ObjectValue for Root<'_, '_> {
    fn type_name(&self) -> &str {
        &self.type_name
    }

    fn resolve_field<'a>(&'a self, info: &'a ResolveInfo<'a>) -> Result<ResolvedValue<'a>, FieldError> {
        let key = info.field_selections()[0].response_key().as_str();
        match &self.only {
            None => {
                self.seen.borrow_mut().push(key.to_owned());
                return Ok(ResolvedValue::SkipForPartialExecution);
            }
            Some(only) if only != key => return Ok(ResolvedValue::SkipForPartialExecution),
            Some(_) => {}
        }
        let field = info.field_name();
        let fault = self.ctx.st.borrow_mut().take_field_fault(field);
        if let Some(code) = fault {
            return Err(Failure::new(&code, format!("{field} failed (injected fault {code})")).into());
        }
        let args = serde_json::to_value(info.arguments()).unwrap_or_default();
        let input = &args["input"];
        let value = match (self.type_name.as_str(), field) {
            ("Query", "alerts") => self.alerts(input)?,
            ("Query", "alert") => {
                let id = args["id"].as_str().unwrap_or_default();
                let st = self.ctx.st.borrow();
                let alert = st.alerts.get(id).ok_or_else(|| Failure::not_found(format!("alert {id} not found")))?;
                alert_json(&st, &alert.json)
            }
            ("Query", "generalSettings") => {
                json!({"__typename": "GeneralSettingsConfig", "pantherVersion": PANTHER_VERSION})
            }
            ("Mutation", "createAlertComment") => self.create_comment(input)?,
            ("Mutation", "updateAlertStatusById") => {
                let status = input["status"].as_str().unwrap_or_default();
                self.patch(input, json!({ "status": status }), "UpdateAlertStatusByIdOutput")?
            }
            ("Mutation", "updateAlertsAssigneeById") => {
                let assignee = match input["assigneeId"].as_str().filter(|a| !a.is_empty()) {
                    None => String::new(),
                    Some(id) => {
                        let st = self.ctx.st.borrow();
                        st.users
                            .iter()
                            .any(|u| u["id"] == id)
                            .then(|| id.to_owned())
                            .ok_or_else(|| Failure::not_found(format!("user {id} not found")))?
                    }
                };
                self.patch(input, json!({ "assignee": assignee }), "UpdateAlertsAssigneeByIdOutput")?
            }
            ("Mutation", "updateAlertsAssigneeByEmail") => {
                let assignee = match input["assigneeEmail"].as_str().filter(|a| !a.is_empty()) {
                    None => String::new(),
                    Some(email) => {
                        let st = self.ctx.st.borrow();
                        let user = st.users.iter().find(|u| u["email"] == email);
                        let id = user.and_then(|u| u["id"].as_str());
                        id.map(str::to_owned)
                            .ok_or_else(|| Failure::not_found(format!("no user with email {email:?}")))?
                    }
                };
                self.patch(input, json!({ "assignee": assignee }), "UpdateAlertsAssigneeByEmailOutput")?
            }
            (type_name, field) => return Err(Failure::unsupported(&format!("`{type_name}.{field}`")).into()),
        };
        Ok(resolved(self.ctx, &info.field_definition().ty, value))
    }
}

impl Root<'_, '_> {
    /// `Query.alerts`: the REST list, asked with the equivalent query parameters.
    fn alerts(&self, input: &Value) -> Result<Value, Failure> {
        for unsupported in ["logSources", "logTypes", "resourceTypes", "subtypes"] {
            if input[unsupported].as_array().is_some_and(|list| !list.is_empty()) {
                return Err(Failure::unsupported(&format!("the `{unsupported}` filter")));
            }
        }
        let after = time_arg(input, "createdAtAfter")?;
        let before = time_arg(input, "createdAtBefore")?;
        let detection_id = non_empty(input, "detectionId");
        if detection_id.is_none() && (after.is_none() || before.is_none()) {
            return Err(Failure::bad_input("give either `detectionId` or both `createdAtAfter` and `createdAtBefore`"));
        }
        let page_size = page_size(input)?;
        let cursor = non_empty(input, "cursor");

        let mut query: Vec<(String, String)> = vec![("limit".into(), page_size.to_string())];
        let mut add = |name: &str, value: &str| query.push((name.to_owned(), value.to_owned()));
        let sort_dir = if input["sortDir"] == "ascending" { "asc" } else { "desc" };
        add("sort-dir", sort_dir);
        add("type", input["type"].as_str().unwrap_or("ALERT"));
        for (name, value) in [
            ("created-after", after.as_deref()),
            ("created-before", before.as_deref()),
            ("detection-id", detection_id),
            ("cursor", cursor),
            ("name-contains", non_empty(input, "nameContains")),
        ] {
            if let Some(value) = value {
                add(name, value);
            }
        }
        for (name, field) in [("event-count-min", "eventCountMin"), ("event-count-max", "eventCountMax")] {
            if let Some(n) = input[field].as_i64() {
                add(name, &n.to_string());
            }
        }
        for (name, field) in [("status", "statuses"), ("severity", "severities"), ("assignee", "assigneeIds")] {
            for value in input[field].as_array().into_iter().flatten().filter_map(Value::as_str) {
                add(name, value);
            }
        }
        let page = rest_json(self.ctx.rest(Route::ListAlerts, None, &query, b"")?);
        let st = self.ctx.st.borrow();
        let edges: Vec<Value> = page["results"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|alert| json!({"__typename": "AlertsOutputEdge", "node": alert_json(&st, alert)}))
            .collect();
        Ok(json!({
            "__typename": "AlertsOutput",
            "edges": edges,
            "pageInfo": page_info("AlertsOutputPageInfo", cursor, page.get("next")),
        }))
    }

    /// `Mutation.createAlertComment`: `POST /alert-comments`.
    fn create_comment(&self, input: &Value) -> Result<Value, Failure> {
        let format = input["format"].as_str().unwrap_or("PLAIN_TEXT");
        let body = json!({"alertId": input["alertId"], "body": input["body"], "format": format});
        let comment = rest_json(self.ctx.rest(Route::CreateComment, None, &[], body.to_string().as_bytes())?);
        let st = self.ctx.st.borrow();
        let alert = st.alerts.get(comment["alertId"].as_str().unwrap_or_default()).map(|a| alert_json(&st, &a.json));
        Ok(json!({
            "__typename": "CreateAlertCommentOutput",
            "comment": {
                "__typename": "Comment",
                "id": comment["id"],
                "body": comment["body"],
                "createdAt": comment["createdAt"],
                "format": comment["format"],
                "createdBy": actor_json(&st, &comment["createdBy"]),
                "entity": alert,
            },
        }))
    }

    /// The alert mutations: `PATCH /alerts`, which changes all the alerts or, when one is missing, none.
    fn patch(&self, input: &Value, mut change: Value, output: &str) -> Result<Value, Failure> {
        let ids: Vec<&str> = input["ids"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        change["ids"] = json!(ids);
        self.ctx.rest(Route::PatchAlerts, None, &[], change.to_string().as_bytes())?;
        let st = self.ctx.st.borrow();
        let alerts: Vec<Value> =
            ids.iter().filter_map(|id| st.alerts.get(*id)).map(|a| alert_json(&st, &a.json)).collect();
        Ok(json!({ "__typename": output, "alerts": alerts }))
    }
}

/// Any other object: its fields are those of a JSON object that names its type in `__typename`. A
/// field the object lacks is one the fake does not implement. `Alert.events` is resolved on demand.
struct Object<'c, 's> {
    ctx: &'c Ctx<'s>,
    json: Map<String, Value>,
}

impl ObjectValue for Object<'_, '_> {
    fn type_name(&self) -> &str {
        self.json.get("__typename").and_then(Value::as_str).unwrap_or_default()
    }

    fn resolve_field<'a>(&'a self, info: &'a ResolveInfo<'a>) -> Result<ResolvedValue<'a>, FieldError> {
        let field = info.field_name();
        let value = match (self.type_name(), field) {
            ("Alert", "title")
                if self.ctx.st.borrow().unrenderable.contains(self.json["id"].as_str().unwrap_or("")) =>
            {
                return Err(Failure::new("INTERNAL_SERVER_ERROR", "cannot render this alert's title (injected)").into())
            }
            ("Alert", "events") => {
                let args = serde_json::to_value(info.arguments()).unwrap_or_default();
                let id = self.json.get("id").and_then(Value::as_str).unwrap_or_default();
                self.events(id, &args["input"])?
            }
            (type_name, _) => match self.json.get(field) {
                Some(value) => value.clone(),
                None => return Err(Failure::unsupported(&format!("`{type_name}.{field}`")).into()),
            },
        };
        Ok(resolved(self.ctx, &info.field_definition().ty, value))
    }
}

impl Object<'_, '_> {
    /// `Alert.events`: `GET /alerts/{id}/events`, with its cursors.
    fn events(&self, alert_id: &str, input: &Value) -> Result<Value, Failure> {
        let page_size = page_size(input)?;
        let cursor = non_empty(input, "cursor");
        let mut query = vec![("limit".to_owned(), page_size.to_string())];
        if let Some(cursor) = cursor {
            query.push(("cursor".to_owned(), cursor.to_owned()));
        }
        let page = rest_json(self.ctx.rest(Route::ListEvents, Some(alert_id), &query, b"")?);
        let edges: Vec<Value> = page["results"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|event| json!({"__typename": "AlertEventsOutputEdge", "node": event}))
            .collect();
        Ok(json!({
            "__typename": "AlertEventsOutput",
            "edges": edges,
            "pageInfo": page_info("CursorBasedPaginationPageInfo", cursor, page.get("next")),
        }))
    }
}

/// A JSON value as the executor wants it for a field of type `ty`: lists item by item, objects of
/// object, union and interface types as [`Object`]s, anything else (scalars, enums, `JSON`) as it is.
fn resolved<'a>(ctx: &'a Ctx<'_>, ty: &Type, value: Value) -> ResolvedValue<'a> {
    match (ty, value) {
        (_, Value::Null) => ResolvedValue::null(),
        (Type::List(inner) | Type::NonNullList(inner), Value::Array(items)) => {
            let items: Vec<ResolvedValue<'a>> = items.into_iter().map(|item| resolved(ctx, inner, item)).collect();
            ResolvedValue::list(items)
        }
        (Type::Named(name) | Type::NonNullNamed(name), Value::Object(json)) => match schema().types.get(name) {
            Some(ExtendedType::Object(_) | ExtendedType::Union(_) | ExtendedType::Interface(_)) => {
                ResolvedValue::object(Object { ctx, json })
            }
            _ => ResolvedValue::leaf(JsonValue::from(Value::Object(json))),
        },
        // A mismatch (say, a scalar where a list belongs) is left to the executor to report.
        (_, value) => ResolvedValue::leaf(JsonValue::from(value)),
    }
}

/// The JSON of a REST answer (the operations the fake calls all answer JSON).
fn rest_json(reply: Reply) -> Value {
    match reply {
        Reply::Json(value) | Reply::JsonWithStatus(_, value) => value,
        Reply::NoContent => Value::Null,
    }
}

fn non_empty<'v>(input: &'v Value, name: &str) -> Option<&'v str> {
    input[name].as_str().filter(|s| !s.is_empty())
}

/// `pageSize` (default 25), at most [`MAX_PAGE_SIZE`] like the REST `limit`.
fn page_size(input: &Value) -> Result<i64, Failure> {
    match &input["pageSize"] {
        Value::Null => Ok(DEFAULT_PAGE_SIZE),
        value => match value.as_i64() {
            Some(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
            _ => Err(Failure::bad_input(format!("`pageSize` must be between 1 and {MAX_PAGE_SIZE}, not {value}"))),
        },
    }
}

/// A `DateTime` argument: RFC 3339, answered back normalized to UTC.
fn time_arg(input: &Value, name: &str) -> Result<Option<String>, Failure> {
    match &input[name] {
        Value::Null => Ok(None),
        Value::String(text) => DateTime::parse_from_rfc3339(text)
            .map(|t| Some(t.with_timezone(&Utc).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)))
            .map_err(|e| Failure::bad_input(format!("`{name}`: {text:?} is not an RFC 3339 date-time: {e}"))),
        other => Err(Failure::bad_input(format!("`{name}`: {other} is not a date-time string"))),
    }
}

/// Relay-style page info: `startCursor` is the cursor this page was asked with.
fn page_info(type_name: &str, cursor: Option<&str>, next: Option<&Value>) -> Value {
    json!({
        "__typename": type_name,
        "startCursor": cursor,
        "hasPreviousPage": cursor.is_some(),
        "endCursor": next,
        "hasNextPage": next.is_some(),
    })
}

/// An `Alert` from the stored REST `AlertAPI.Alert` (see the module doc for `type` and `origin`).
fn alert_json(st: &State, rest: &Value) -> Value {
    let text = |name: &str| rest.get(name).filter(|v| v.is_string()).cloned();
    let detection = &rest["detection"];
    let created_at = rest["createdAt"].clone();
    let deliveries: Vec<Value> = rest["deliveries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            let mut d = d.as_object()?.clone();
            d.insert("__typename".into(), json!("AlertDelivery"));
            Some(Value::Object(d))
        })
        .collect();
    let assignee =
        rest["assignee"]["id"].as_str().and_then(|id| st.users.iter().find(|u| u["id"] == id)).map(user_json);
    json!({
        "__typename": "Alert",
        "id": rest["id"],
        "title": rest["title"],
        "createdAt": created_at,
        "severity": rest["severity"],
        "status": rest["status"],
        "type": alert_type(rest),
        "description": text("description").or_else(|| detection.get("description").cloned()).unwrap_or(json!("")),
        "reference": text("reference").unwrap_or(json!("")),
        "runbook": text("runbook").unwrap_or(json!("")),
        "lastReceivedEventAt": text("lastReceivedEventAt").unwrap_or_else(|| created_at.clone()),
        "firstEventOccurredAt": text("firstEventOccurredAt"),
        "updatedAt": text("updatedAt"),
        "updatedBy": actor_json(st, &rest["updatedBy"]),
        "deliveries": deliveries,
        "assignee": assignee,
        "origin": origin_json(rest),
    })
}

/// `AlertType` from the REST `type` and `detection.type`.
fn alert_type(rest: &Value) -> &'static str {
    let detection_type = rest["detection"]["type"].as_str().unwrap_or_default();
    match (rest["type"].as_str().unwrap_or_default(), detection_type) {
        ("SYSTEM_ERROR", _) => "SYSTEM_ERROR",
        ("DETECTION_ERROR", "SCHEDULED_RULE") => "SCHEDULED_RULE_ERROR",
        ("DETECTION_ERROR", _) => "RULE_ERROR",
        (_, "POLICY") => "POLICY",
        (_, "SCHEDULED_RULE") => "SCHEDULED_RULE",
        _ => "RULE",
    }
}

fn origin_json(rest: &Value) -> Value {
    let system_error = rest["systemError"]["type"].as_str().filter(|t| SYSTEM_ERROR_TYPES.contains(t));
    if let (Some("SYSTEM_ERROR"), Some(error_type)) = (rest["type"].as_str(), system_error) {
        let component = match error_type {
            "ALERT_DELIVERY" => "DESTINATION",
            "DETECTION_ALERT_LIMIT_EXCEEDED" => "DETECTION",
            _ => "LOG_SOURCE",
        };
        return json!({"__typename": "SystemError", "type": error_type, "relatedComponent": component});
    }
    let detection = &rest["detection"];
    let or = |name: &str, fallback: &Value| detection.get(name).filter(|v| !v.is_null()).unwrap_or(fallback).clone();
    json!({
        "__typename": "Detection",
        "id": detection["id"],
        "name": or("name", &detection["id"]),
        "type": detection["type"],
        "createdAt": or("createdAt", &rest["createdAt"]),
        "description": detection.get("description"),
        "updatedAt": detection.get("updatedAt"),
        "createdBy": null,
        "updatedBy": null,
    })
}

/// A `User` from a `UserAPI.User`; its `Role` gets the permissions an analyst would have.
fn user_json(user: &Value) -> Value {
    json!({
        "__typename": "User",
        "id": user["id"],
        "email": user["email"],
        "givenName": user["givenName"],
        "familyName": user["familyName"],
        "enabled": user["enabled"],
        "createdAt": user["createdAt"],
        "status": user["status"],
        "lastLoggedInAt": null,
        "role": {
            "__typename": "Role",
            "id": user["role"]["id"],
            "name": user["role"]["name"],
            "createdAt": user["createdAt"],
            "updatedAt": user["createdAt"],
            "permissions": ["AlertRead", "AlertModify"],
            "logTypeAccessKind": "ALLOW_ALL",
            "logTypeAccess": null,
            "updatedBy": null,
        },
    })
}

/// An `Actor` from a REST actor (`{"id": "api-token" | <user id>, "type": ...}`): the fake's API token,
/// a known user, or null.
fn actor_json(st: &State, actor: &Value) -> Value {
    if actor["type"] == "api-token" || actor["id"] == "api-token" {
        return json!({
            "__typename": "APIToken",
            "id": "fake-api-token",
            "name": "fake-panther API token",
            "allowedCIDRBlocks": [],
            "createdAt": "2025-01-01T00:00:00Z",
            "permissions": ["AlertRead", "AlertModify"],
            "expiresAt": null,
            "lastUsedAt": null,
            "rotatedAt": null,
            "rotatedBy": null,
            "updatedAt": null,
            "updatedBy": null,
            "value": null,
        });
    }
    let user = actor["id"].as_str().and_then(|id| st.users.iter().find(|u| u["id"] == id));
    user.map(user_json).unwrap_or(Value::Null)
}

impl State {
    /// Consumes one use of the first queued field fault for a root field named `field`.
    fn take_field_fault(&mut self, field: &str) -> Option<String> {
        let at = self.field_faults.iter().position(|f| f.field == field)?;
        let fault: &mut FieldFault = &mut self.field_faults[at];
        fault.left -= 1;
        let code = fault.code.clone();
        if fault.left == 0 {
            self.field_faults.remove(at);
        }
        Some(code)
    }
}
