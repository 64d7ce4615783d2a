//! The fake against a real HTTP client on loopback, as the daemon's client will see it.

use std::time::{Duration, Instant};

use reqwest::{Client, Method};
use serde_json::{json, Value};

use super::*;

const KEY: &str = "test-key";

fn alert(id: &str, created_at: &str, status: &str) -> Value {
    json!({
        "id": id,
        "createdAt": created_at,
        "status": status,
        "severity": "HIGH",
        "title": format!("Suspicious thing {id}"),
        "type": "ALERT",
        "detection": {"id": "AWS.Suspicious", "type": "RULE"},
    })
}

/// `n` alerts `a0`, `a1`, ... created a minute apart from 2025-01-01T00:00:00Z.
fn fake_with_alerts(n: usize) -> FakePanther {
    let fake = FakePanther::new(KEY);
    for i in 0..n {
        fake.add_alert(alert(&format!("a{i}"), &format!("2025-01-01T00:{i:02}:00Z"), "OPEN"), vec![]);
    }
    fake
}

/// A request with the right key; the answer's status and JSON body (`Null` when empty).
async fn call(client: &Client, method: Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut request = client.request(method, url).header("X-API-Key", KEY);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).expect("JSON body") };
    (status, body)
}

async fn get(client: &Client, url: String) -> (u16, Value) {
    call(client, Method::GET, url, None).await
}

fn ids(page: &Value) -> Vec<String> {
    page["results"].as_array().expect("results").iter().map(|a| a["id"].as_str().expect("id").to_owned()).collect()
}

/// Follows `next` until it is absent; every page's ids in order.
async fn all_pages(client: &Client, first_url: String) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut url = first_url.clone();
    loop {
        let (status, page) = get(client, url).await;
        assert_eq!(status, 200, "{page}");
        pages.push(ids(&page));
        match page.get("next") {
            None => return pages,
            Some(next) => url = format!("{first_url}&cursor={}", next.as_str().expect("next is a string")),
        }
        assert!(pages.len() < 100, "paging does not end");
    }
}

fn message(body: &Value) -> &str {
    body["message"].as_str().expect("an error has a message")
}

#[tokio::test]
async fn requests_without_the_right_key_are_refused_and_recorded() {
    let fake = fake_with_alerts(1);
    let server = fake.spawn().await.unwrap();
    let client = Client::new();
    let url = format!("{}/alerts/a0", server.url());

    let none = client.get(&url).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let body: Value = none.json().await.unwrap();
    assert!(message(&body).contains("X-API-Key"));
    let wrong = client.get(&url).header("X-API-Key", "nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(get(&client, url).await.0, 200);

    let seen: Vec<(Option<String>, u16)> = fake.requests().into_iter().map(|r| (r.api_key, r.status)).collect();
    assert_eq!(seen, [(None, 401), (Some("nope".into()), 401), (Some(KEY.into()), 200)]);
    assert_eq!(fake.requests()[0].route(), Some(Route::GetAlert));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn list_pages_through_every_alert_once_in_ascending_order() {
    let fake = fake_with_alerts(5);
    let server = fake.spawn().await.unwrap();
    let client = Client::new();

    let pages = all_pages(&client, format!("{}/alerts?limit=2&sort-dir=asc", server.url())).await;
    assert_eq!(pages, [vec!["a0", "a1"], vec!["a2", "a3"], vec!["a4"]]);

    // The default order is newest first.
    let (_, page) = get(&client, format!("{}/alerts", server.url())).await;
    assert_eq!(ids(&page), ["a4", "a3", "a2", "a1", "a0"]);
    assert!(page.get("next").is_none());

    // A query the client builds with a repeated key arrives as sent.
    let recorded = fake.requests();
    assert_eq!(recorded[1].query_values("cursor").len(), 1);
    assert_eq!(recorded[0].query_values("sort-dir"), ["asc"]);
}

#[tokio::test]
async fn the_keyset_cursor_is_stable_when_alerts_arrive_between_pages() {
    let fake = fake_with_alerts(5);
    let server = fake.spawn().await.unwrap();
    let client = Client::new();
    let base = format!("{}/alerts?limit=2&sort-dir=asc", server.url());

    let (_, first) = get(&client, base.clone()).await;
    assert_eq!(ids(&first), ["a0", "a1"]);
    // One alert sorts before the cursor (an offset would repeat a1), one between a2 and a3.
    fake.add_alert(alert("early", "2024-12-31T23:59:00Z", "OPEN"), vec![]);
    fake.add_alert(alert("late", "2025-01-01T00:02:30Z", "OPEN"), vec![]);
    let cursor = first["next"].as_str().unwrap();
    let (_, second) = get(&client, format!("{base}&cursor={cursor}")).await;
    assert_eq!(ids(&second), ["a2", "late"]);
    let cursor = second["next"].as_str().unwrap();
    let (_, third) = get(&client, format!("{base}&cursor={cursor}")).await;
    assert_eq!(ids(&third), ["a3", "a4"]);
    assert!(third.get("next").is_none());

    // Descending uses the same keys the other way.
    let pages = all_pages(&client, format!("{}/alerts?limit=3", server.url())).await;
    assert_eq!(pages.concat(), ["a4", "a3", "late", "a2", "a1", "a0", "early"]);
}

#[tokio::test]
async fn status_and_time_filters() {
    let fake = FakePanther::new(KEY);
    for (i, status) in ["OPEN", "TRIAGED", "CLOSED", "RESOLVED", "OPEN"].iter().enumerate() {
        fake.add_alert(alert(&format!("a{i}"), &format!("2025-01-01T00:0{i}:00Z"), status), vec![]);
    }
    let server = fake.spawn().await.unwrap();
    let client = Client::new();
    let url = |q: &str| format!("{}/alerts?sort-dir=asc&{q}", server.url());

    let (status, page) = get(&client, url("status=OPEN&status=TRIAGED")).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&page), ["a0", "a1", "a4"]);

    // created-after is inclusive, created-before exclusive.
    let (_, page) = get(&client, url("created-after=2025-01-01T00:01:00Z&created-before=2025-01-01T00:03:00Z")).await;
    assert_eq!(ids(&page), ["a1", "a2"]);
    let (_, page) = get(&client, url("created-after=2025-01-01T00:04:00Z&status=OPEN")).await;
    assert_eq!(ids(&page), ["a4"]);
    let (_, page) = get(&client, url("created-before=2025-01-01")).await;
    assert!(ids(&page).is_empty());

    // A comma-joined list is one unknown value, not two: the spec's style repeats the key.
    let (status, body) = get(&client, url("status=OPEN,TRIAGED")).await;
    assert_eq!(status, 400);
    assert!(message(&body).contains("status"), "{body}");
    let (status, body) = get(&client, url("created-after=yesterday")).await;
    assert_eq!(status, 400);
    assert!(message(&body).contains("created-after"), "{body}");
    let (status, body) = get(&client, url("severity=SEVERE")).await;
    assert_eq!(status, 400);
    assert!(message(&body).contains("severity"), "{body}");
}

#[tokio::test]
async fn many_alerts_sharing_one_created_at_each_come_once() {
    let fake = FakePanther::new(KEY);
    for i in 0..120 {
        fake.add_alert(alert(&format!("same-{i:03}"), "2025-06-01T12:00:00Z", "OPEN"), vec![]);
    }
    let server = fake.spawn().await.unwrap();
    let client = Client::new();

    for dir in ["asc", "desc"] {
        let pages = all_pages(&client, format!("{}/alerts?limit=50&sort-dir={dir}", server.url())).await;
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [50, 50, 20]);
        let mut all = pages.concat();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 120);
    }
}

#[tokio::test]
async fn bad_queries_are_400s_naming_the_parameter() {
    let fake = fake_with_alerts(3);
    let server = fake.spawn().await.unwrap();
    let client = Client::new();
    let base = server.url();

    for (query, named) in [
        ("status[]=OPEN", "status[]"),
        ("createdAfter=2025-01-01T00:00:00Z", "createdAfter"),
        ("limit=51", "limit"),
        ("limit=0", "limit"),
        ("limit=ten", "limit"),
        ("sort-dir=ascending", "sort-dir"),
        ("cursor=zz", "cursor"),
        ("cursor=616c657274733a", "cursor"),
        ("limit=2&limit=3", "limit"),
        ("log-type=AWS.CloudTrail", "log-type"),
    ] {
        let (status, body) = get(&client, format!("{base}/alerts?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(message(&body).contains(named), "{query}: {body}");
    }
    // Another list's cursor is not an alerts cursor.
    fake.add_user("u1", "one@example.com");
    fake.add_user("u2", "two@example.com");
    let (_, users) = get(&client, format!("{base}/users?limit=1")).await;
    let foreign = users["next"].as_str().unwrap();
    assert_eq!(get(&client, format!("{base}/alerts?cursor={foreign}")).await.0, 400);

    let (status, body) = get(&client, format!("{base}/alerts/a0?verbose=1")).await;
    assert_eq!((status, message(&body).contains("verbose")), (400, true));
    let (status, body) = get(&client, format!("{base}/no/such/path")).await;
    assert_eq!(status, 404);
    assert!(message(&body).contains("/no/such/path"));
    let (status, _) = call(&client, Method::DELETE, format!("{base}/alerts/a0"), None).await;
    assert_eq!(status, 404);
    assert_eq!(get(&client, format!("{base}/alerts/missing")).await.0, 404);
}

#[tokio::test]
async fn comments_are_validated_created_and_listed() {
    let fake = fake_with_alerts(1);
    let server = fake.spawn().await.unwrap();
    let client = Client::new();
    let url = format!("{}/alert-comments", server.url());

    for (body, named) in [
        (json!({"alertId": "a0", "body": "hi"}), "format"),
        (json!({"alertId": "a0", "body": "hi", "format": "MARKDOWN"}), "format"),
        (json!({"alertId": "a0", "body": 3, "format": "HTML"}), "body"),
        (json!({"alertId": "a0", "body": "hi", "format": "HTML", "pinned": true}), "pinned"),
        (json!(["a0"]), "object"),
    ] {
        let (status, answer) = call(&client, Method::POST, url.clone(), Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(message(&answer).contains(named), "{body}: {answer}");
    }
    let (status, _) =
        call(&client, Method::POST, url.clone(), Some(json!({"alertId": "nope", "body": "hi", "format": "HTML"})))
            .await;
    assert_eq!(status, 404);
    assert!(fake.comments("a0").is_empty());

    let (status, comment) =
        call(&client, Method::POST, url.clone(), Some(json!({"alertId": "a0", "body": "<p>hi</p>", "format": "HTML"})))
            .await;
    assert_eq!(status, 200, "{comment}");
    assert_eq!(comment["alertId"], "a0");
    assert_eq!(comment["body"], "<p>hi</p>");
    assert_eq!(comment["format"], "HTML");
    assert_eq!(comment["createdBy"], json!({"id": "api-token", "type": "api-token"}));
    let created_at = comment["createdAt"].as_str().unwrap();
    assert!(created_at.ends_with('Z') && DateTime::parse_from_rfc3339(created_at).is_ok(), "{created_at}");
    assert!(!comment["id"].as_str().unwrap().is_empty());
    call(&client, Method::POST, url.clone(), Some(json!({"alertId": "a0", "body": "second", "format": "PLAIN_TEXT"})))
        .await;

    let (status, page) = get(&client, format!("{url}?alert-id=a0")).await;
    assert_eq!(status, 200);
    let bodies: Vec<&str> = page["results"].as_array().unwrap().iter().map(|c| c["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["<p>hi</p>", "second"]);
    assert!(page.get("next").is_none());
    assert_eq!(fake.comments("a0")[0], comment);
    let pages = all_pages(&client, format!("{url}?alert-id=a0&limit=1")).await;
    assert_eq!(pages.len(), 2);

    let (status, body) = get(&client, url.clone()).await;
    assert_eq!((status, message(&body).contains("alert-id")), (400, true));
    let (_, page) = get(&client, format!("{url}?alert-id=other")).await;
    assert_eq!(page, json!({"results": []}));
}

#[tokio::test]
async fn a_comment_is_updated_in_place() {
    let fake = fake_with_alerts(2);
    let server = fake.spawn().await.unwrap();
    let client = Client::new();
    let url = format!("{}/alert-comments", server.url());
    let (_, created) =
        call(&client, Method::POST, url.clone(), Some(json!({"alertId": "a0", "body": "v1", "format": "PLAIN_TEXT"})))
            .await;
    let id = created["id"].as_str().unwrap();

    tokio::time::sleep(Duration::from_millis(5)).await;
    let (status, updated) = call(
        &client,
        Method::POST,
        format!("{url}/{id}"),
        Some(json!({"alertId": "a0", "body": "v2", "format": "HTML"})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        (updated["id"].as_str(), updated["body"].as_str(), updated["format"].as_str()),
        (Some(id), Some("v2"), Some("HTML"))
    );
    assert_eq!(updated["createdAt"], created["createdAt"]);
    assert_ne!(updated["updatedAt"], created["updatedAt"]);
    assert_eq!(fake.comments("a0"), [updated]);

    let body = json!({"alertId": "a0", "body": "v3", "format": "HTML"});
    assert_eq!(call(&client, Method::POST, format!("{url}/nope"), Some(body)).await.0, 404);
    let moved = json!({"alertId": "a1", "body": "v3", "format": "HTML"});
    assert_eq!(call(&client, Method::POST, format!("{url}/{id}"), Some(moved)).await.0, 400);
    let no_format = json!({"alertId": "a0", "body": "v3"});
    assert_eq!(call(&client, Method::POST, format!("{url}/{id}"), Some(no_format)).await.0, 400);
    assert_eq!(fake.comments("a0")[0]["body"], "v2");
}

#[tokio::test]
async fn patch_sets_status_and_assignee_or_changes_nothing() {
    let fake = fake_with_alerts(3);
    fake.add_user("u-1", "jane.doe@example.com");
    let server = fake.spawn().await.unwrap();
    let client = Client::new();
    let url = format!("{}/alerts", server.url());

    let response = client
        .patch(&url)
        .header("X-API-Key", KEY)
        .json(&json!({"ids": ["a0", "a1"], "status": "TRIAGED", "assignee": "u-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(response.bytes().await.unwrap().is_empty());
    for id in ["a0", "a1"] {
        let alert = fake.alert(id).unwrap();
        assert_eq!(alert["status"], "TRIAGED");
        assert_eq!(alert["assignee"], json!({"id": "u-1", "type": "user"}));
    }
    assert_eq!(fake.alert("a2").unwrap()["status"], "OPEN");
    // What GET answers is what the fake holds.
    let (_, got) = get(&client, format!("{url}/a1")).await;
    assert_eq!(Some(got), fake.alert("a1"));

    let (status, body) =
        call(&client, Method::PATCH, url.clone(), Some(json!({"ids": ["a2", "zz"], "status": "CLOSED"}))).await;
    assert_eq!(status, 404);
    assert!(message(&body).contains("zz"));
    assert_eq!(fake.alert("a2").unwrap()["status"], "OPEN");

    for bad in [
        json!({"status": "CLOSED"}),
        json!({"ids": ["a2"], "status": "INVALID"}),
        json!({"ids": ["a2"], "assignee": "nobody"}),
        json!({"ids": ["a2"]}),
        json!({"ids": ["a2"], "status": "CLOSED", "note": "x"}),
    ] {
        assert_eq!(call(&client, Method::PATCH, url.clone(), Some(bad.clone())).await.0, 400, "{bad}");
    }
    assert_eq!(fake.alert("a2").unwrap()["status"], "OPEN");

    // An empty assignee unassigns.
    let (status, _) = call(&client, Method::PATCH, url, Some(json!({"ids": ["a0"], "assignee": ""}))).await;
    assert_eq!(status, 204);
    assert!(fake.alert("a0").unwrap().get("assignee").is_none());
}

#[tokio::test]
async fn a_429_fault_carries_retry_after_and_is_consumed_once() {
    let fake = fake_with_alerts(1);
    fake.add_user("u-1", "jane@example.com");
    fake.inject(Route::ListAlerts, Fault::TooManyRequests { retry_after_secs: 7 }, 1);
    let server = fake.spawn().await.unwrap();
    let client = Client::new();

    // Another route and a refused request leave the fault queued.
    assert_eq!(get(&client, format!("{}/users", server.url())).await.0, 200);
    assert_eq!(client.get(format!("{}/alerts", server.url())).send().await.unwrap().status(), 401);

    let response = client.get(format!("{}/alerts", server.url())).header("X-API-Key", KEY).send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert!(response.json::<Value>().await.unwrap()["message"].is_string());
    assert_eq!(get(&client, format!("{}/alerts", server.url())).await.0, 200);

    fake.inject(Route::Any, Fault::ServerError { status: 503 }, 2);
    assert_eq!(get(&client, format!("{}/users", server.url())).await.0, 503);
    assert_eq!(get(&client, format!("{}/alerts/a0", server.url())).await.0, 503);
    assert_eq!(get(&client, format!("{}/alerts/a0", server.url())).await.0, 200);
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 401, 429, 200, 503, 503, 200]);
}

#[tokio::test]
async fn commit_then_drop_stores_the_comment_but_the_client_sees_an_error() {
    let fake = fake_with_alerts(1);
    fake.inject(Route::CreateComment, Fault::CommitThenDrop, 1);
    let server = fake.spawn().await.unwrap();
    let client = Client::new();
    let url = format!("{}/alert-comments", server.url());
    let body = json!({"alertId": "a0", "body": "marker", "format": "PLAIN_TEXT"});

    let result = client.post(&url).header("X-API-Key", KEY).json(&body).send().await;
    // hyper gives up on the connection before it flushes anything, so reqwest sees no response at
    // all: `send` fails with a request error whose source is hyper's `IncompleteMessage`, after the
    // request went out (not a connect error, not a timeout).
    let error = result.expect_err("the connection is cut before an answer arrives");
    assert!(error.is_request() && !error.is_connect() && !error.is_timeout(), "{error:?}");
    assert!(format!("{error:?}").contains("IncompleteMessage"), "{error:?}");
    assert_eq!(fake.comments("a0").len(), 1);
    assert_eq!(fake.comments("a0")[0]["body"], "marker");
    assert_eq!(fake.requests()[0].status, 200);

    // The fault is spent: the retry is answered, and the client can find the first write.
    let (status, _) = call(&client, Method::POST, url.clone(), Some(body)).await;
    assert_eq!(status, 200);
    let (_, page) = get(&client, format!("{url}?alert-id=a0")).await;
    assert_eq!(page["results"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_late_commit_stores_the_comment_after_the_client_has_given_up() {
    let fake = fake_with_alerts(1);
    fake.inject(Route::CreateComment, Fault::LateCommit(Duration::from_millis(400)), 1);
    let server = fake.spawn().await.unwrap();
    let client = Client::builder().timeout(Duration::from_millis(100)).build().unwrap();
    let url = format!("{}/alert-comments", server.url());
    let body = json!({"alertId": "a0", "body": "marker", "format": "PLAIN_TEXT"});

    let error = client.post(&url).header("X-API-Key", KEY).json(&body).send().await.expect_err("timed out");
    assert!(error.is_timeout(), "{error:?}");
    assert!(fake.comments("a0").is_empty(), "not stored yet when the client gives up");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(fake.comments("a0").len(), 1, "stored all the same, after the client left");
    assert_eq!(fake.comments("a0")[0]["body"], "marker");
}

#[tokio::test]
async fn commit_then_drop_applies_a_patch() {
    let fake = fake_with_alerts(1);
    fake.inject(Route::PatchAlerts, Fault::CommitThenDrop, 1);
    let server = fake.spawn().await.unwrap();
    let client = Client::new();
    let result = client
        .patch(format!("{}/alerts", server.url()))
        .header("X-API-Key", KEY)
        .json(&json!({"ids": ["a0"], "status": "RESOLVED"}))
        .send()
        .await;
    assert!(result.is_err());
    assert_eq!(fake.alert("a0").unwrap()["status"], "RESOLVED");
}

#[tokio::test]
async fn events_page_and_grow() {
    let fake = FakePanther::new(KEY);
    let events: Vec<Value> = (0..7).map(|i| json!({"p_row_id": format!("r{i}")})).collect();
    fake.add_alert(alert("a0", "2025-01-01T00:00:00Z", "OPEN"), events);
    assert_eq!(fake.alert("a0").unwrap()["eventCount"], 7);
    let server = fake.spawn().await.unwrap();
    let client = Client::new();
    let url = format!("{}/alerts/a0/events?limit=3", server.url());

    let rows = |page: &Value| -> Vec<String> {
        page["results"].as_array().unwrap().iter().map(|e| e["p_row_id"].as_str().unwrap().to_owned()).collect()
    };
    let (_, p1) = get(&client, url.clone()).await;
    let (_, p2) = get(&client, format!("{url}&cursor={}", p1["next"].as_str().unwrap())).await;
    let (_, p3) = get(&client, format!("{url}&cursor={}", p2["next"].as_str().unwrap())).await;
    assert_eq!([rows(&p1), rows(&p2), rows(&p3)].concat(), ["r0", "r1", "r2", "r3", "r4", "r5", "r6"]);
    assert_eq!(rows(&p3).len(), 1);
    assert!(p3.get("next").is_none());

    // New events land after the old ones; the alert says how many and when.
    fake.push_events("a0", vec![json!({"p_row_id": "r7"}), json!({"p_row_id": "r8"})]);
    let (_, p3_again) = get(&client, format!("{url}&cursor={}", p2["next"].as_str().unwrap())).await;
    assert_eq!(rows(&p3_again), ["r6", "r7", "r8"]);
    let alert = fake.alert("a0").unwrap();
    assert_eq!(alert["eventCount"], 9);
    assert!(alert["lastReceivedEventAt"].is_string());

    assert_eq!(get(&client, format!("{}/alerts/zz/events", server.url())).await.0, 404);
    assert_eq!(get(&client, format!("{url}&cursor=00")).await.0, 400);
    assert_eq!(get(&client, format!("{}/alerts/a0/events?limit=51", server.url())).await.0, 400);
}

#[tokio::test]
async fn users_are_found_by_exact_email() {
    let fake = FakePanther::new(KEY);
    fake.add_user("u-1", "jane.doe@example.com");
    fake.add_user("u-2", "oncall@example.com");
    let server = fake.spawn().await.unwrap();
    let client = Client::new();

    let (status, page) = get(&client, format!("{}/users?email=oncall%40example.com", server.url())).await;
    assert_eq!(status, 200);
    assert_eq!(page["results"].as_array().unwrap().len(), 1);
    let user = &page["results"][0];
    assert_eq!(user["id"], "u-2");
    for field in ["email", "givenName", "familyName", "role", "enabled"] {
        assert!(!user[field].is_null(), "UserAPI.User requires {field}");
    }
    assert!(user["role"]["name"].is_string());
    let (_, page) = get(&client, format!("{}/users?email=ONCALL%40example.com", server.url())).await;
    assert_eq!(page, json!({"results": []}));
    let (_, page) = get(&client, format!("{}/users", server.url())).await;
    assert_eq!(page["results"][0]["givenName"], "Jane");
    assert_eq!(page["results"][0]["familyName"], "Doe");
    assert_eq!(get(&client, format!("{}/users?limit=61", server.url())).await.0, 400);
}

#[tokio::test]
async fn latency_and_delay_slow_the_answer() {
    let fake = fake_with_alerts(1);
    let server = fake.spawn().await.unwrap();
    let client = Client::new();
    let url = format!("{}/alerts/a0", server.url());

    fake.set_latency(Duration::from_millis(150));
    let started = Instant::now();
    assert_eq!(get(&client, url.clone()).await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));

    fake.set_latency(Duration::ZERO);
    fake.inject(Route::GetAlert, Fault::Delay(Duration::from_millis(150)), 1);
    let started = Instant::now();
    assert_eq!(get(&client, url.clone()).await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
    let started = Instant::now();
    assert_eq!(get(&client, url).await.0, 200);
    assert!(started.elapsed() < Duration::from_millis(150));
}

#[tokio::test]
async fn serve_stops_when_its_shutdown_signal_resolves() {
    let fake = fake_with_alerts(1);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts/a0", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(fake.clone().serve(listener, async move {
        let _ = stopped.await;
    }));
    let client = Client::new();
    assert_eq!(get(&client, url.clone()).await.0, 200);
    drop(client);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(Client::new().get(url).send().await.is_err());
}

#[test]
fn seed_files_load_and_bad_lines_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("seed.jsonl");
    let line = |id: &str| json!({"alert": alert(id, "2025-01-01T00:00:00Z", "OPEN"), "events": [{"x": 1}]}).to_string();
    std::fs::write(&good, format!("{}\n\n{}\n", line("s1"), line("s2"))).unwrap();
    let fake = FakePanther::from_seed_file(KEY, &good).unwrap();
    assert_eq!(fake.alert("s2").unwrap()["eventCount"], 1);

    let bad = dir.path().join("bad.jsonl");
    let mut broken = alert("s3", "2025-01-01T00:00:00Z", "OPEN");
    broken["type"] = json!("RULE");
    std::fs::write(&bad, format!("{}\n{}\n", line("s1"), json!({"alert": broken}))).unwrap();
    let error = FakePanther::from_seed_file(KEY, &bad).unwrap_err();
    let text = error.to_string();
    assert!(text.contains("bad.jsonl:2:") && text.contains("type"), "{text}");
    assert!(matches!(error, FakeError::Seed { line: 2, .. }));

    std::fs::write(&bad, format!("{}\n{}\n", line("s1"), line("s1"))).unwrap();
    assert!(FakePanther::from_seed_file(KEY, &bad).unwrap_err().to_string().contains("already exists"));
    let missing = FakePanther::from_seed_file(KEY, &dir.path().join("missing.jsonl")).unwrap_err();
    assert!(matches!(missing, FakeError::Io { .. }));
}

#[test]
fn routes_are_known_by_method_and_path() {
    assert_eq!(Route::of("GET", "/alerts"), Some(Route::ListAlerts));
    assert_eq!(Route::of("PATCH", "/alerts"), Some(Route::PatchAlerts));
    assert_eq!(Route::of("GET", "/alerts/a%2Fb/events"), Some(Route::ListEvents));
    assert_eq!(Route::of("POST", "/alert-comments/c1"), Some(Route::UpdateComment));
    assert_eq!(Route::of("GET", "/alert-comments/c1"), None);
    assert_eq!(Route::of("GET", "/alerts/"), None);
    assert_eq!(Route::of("GET", "/alerts/%zz"), None);
    assert_eq!(Route::of("POST", "/public/graphql"), Some(Route::Graphql));
    assert_eq!(Route::of("GET", "/public/graphql"), None);
    assert_eq!(http::route_of("GET", "/alerts/a%2Fb"), Some((Route::GetAlert, Some("a/b".to_owned()))));
}

// The GraphQL endpoint.

/// A GraphQL request with the right key; the status and the JSON answer.
async fn graphql(client: &Client, base: &str, query: &str, variables: Value) -> (u16, Value) {
    let body = json!({"query": query, "variables": variables});
    call(client, Method::POST, format!("{base}/public/graphql"), Some(body)).await
}

fn error_codes(answer: &Value) -> Vec<&str> {
    let errors = answer["errors"].as_array().map(Vec::as_slice).unwrap_or_default();
    errors.iter().map(|e| e["extensions"]["code"].as_str().expect("every error has a code")).collect()
}

const ALERTS_PAGE: &str = r#"
query Page($cursor: String) {
  alerts(input: {createdAtAfter: "2025-01-01T00:00:00Z", createdAtBefore: "2025-01-02T00:00:00Z",
                 sortDir: ascending, pageSize: 2, cursor: $cursor}) {
    edges {
      node {
        id
        createdAt
        type
        origin { ... on Detection { id detectionType: type } }
        events(input: {pageSize: 1}) { edges { node } pageInfo { hasNextPage endCursor } }
      }
    }
    pageInfo { hasNextPage endCursor hasPreviousPage startCursor }
  }
}"#;

#[tokio::test]
async fn graphql_pages_through_alerts_in_ascending_order_with_events_inline() {
    let fake = FakePanther::new(KEY);
    // Seeded out of order; one at the exclusive upper bound and one detection error stay out.
    for i in [3, 0, 4, 1, 2] {
        let events = vec![json!({"p_row_id": format!("a{i}-r0")}), json!({"p_row_id": format!("a{i}-r1")})];
        fake.add_alert(alert(&format!("a{i}"), &format!("2025-01-01T00:0{i}:00Z"), "OPEN"), events);
    }
    fake.add_alert(alert("at-the-bound", "2025-01-02T00:00:00Z", "OPEN"), vec![]);
    let mut error = alert("error", "2025-01-01T00:00:30Z", "OPEN");
    error["type"] = json!("DETECTION_ERROR");
    fake.add_alert(error, vec![]);
    let server = fake.spawn().await.unwrap();
    let client = Client::new();
    let base = server.url();

    let mut pages: Vec<Vec<String>> = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let (status, answer) = graphql(&client, &base, ALERTS_PAGE, json!({"cursor": cursor})).await;
        assert_eq!(status, 200, "{answer}");
        assert!(answer.get("errors").is_none(), "{answer}");
        let alerts = &answer["data"]["alerts"];
        let info = &alerts["pageInfo"];
        assert_eq!(info["hasPreviousPage"], !cursor.is_null());
        assert_eq!(info["startCursor"], cursor);
        let mut page = Vec::new();
        for edge in alerts["edges"].as_array().unwrap() {
            let node = &edge["node"];
            let id = node["id"].as_str().unwrap();
            assert_eq!(node["type"], "RULE");
            assert_eq!(node["origin"], json!({"id": "AWS.Suspicious", "detectionType": "RULE"}));
            let events = &node["events"];
            assert_eq!(events["edges"], json!([{"node": {"p_row_id": format!("{id}-r0")}}]));
            assert_eq!(events["pageInfo"]["hasNextPage"], true);
            assert!(events["pageInfo"]["endCursor"].is_string());
            page.push(id.to_owned());
        }
        pages.push(page);
        assert_eq!(info["hasNextPage"], !info["endCursor"].is_null());
        if info["hasNextPage"] == false {
            break;
        }
        cursor = info["endCursor"].clone();
        assert!(pages.len() < 10, "paging does not end");
    }
    assert_eq!(pages, [vec!["a0", "a1"], vec!["a2", "a3"], vec!["a4"]]);

    // An events cursor continues where the inline page stopped.
    let (_, first) = graphql(&client, &base, ALERTS_PAGE, json!({})).await;
    let events_cursor = &first["data"]["alerts"]["edges"][0]["node"]["events"]["pageInfo"]["endCursor"];
    let query = r#"query($c: String) { alert(id: "a0") { events(input: {pageSize: 1, cursor: $c}) {
        edges { node } pageInfo { hasNextPage endCursor hasPreviousPage } } } }"#;
    let (_, rest) = graphql(&client, &base, query, json!({"c": events_cursor})).await;
    let events = &rest["data"]["alert"]["events"];
    assert_eq!(events["edges"], json!([{"node": {"p_row_id": "a0-r1"}}]), "{rest}");
    assert_eq!(events["pageInfo"], json!({"hasNextPage": false, "endCursor": null, "hasPreviousPage": true}));

    // The listing types map to the REST types.
    let query = r#"{ alerts(input: {detectionId: "AWS.Suspicious", type: DETECTION_ERROR}) {
        edges { node { id type } } } }"#;
    let (_, errors) = graphql(&client, &base, query, json!({})).await;
    assert_eq!(errors["data"]["alerts"]["edges"], json!([{"node": {"id": "error", "type": "RULE_ERROR"}}]));
}

#[tokio::test]
async fn graphql_alerts_needs_a_range_or_a_detection_and_sorts_newest_first() {
    let fake = fake_with_alerts(3);
    let server = fake.spawn().await.unwrap();
    let client = Client::new();
    let base = server.url();

    let query = r#"{ alerts(input: {createdAtAfter: "2025-01-01T00:00:00Z"}) { edges { node { id } } } }"#;
    let (status, answer) = graphql(&client, &base, query, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(answer["data"], Value::Null, "{answer}");
    assert_eq!(error_codes(&answer), ["BAD_USER_INPUT"]);
    assert_eq!(answer["errors"][0]["path"], json!(["alerts"]));
    assert!(answer["errors"][0]["message"].as_str().unwrap().contains("createdAtBefore"), "{answer}");

    // A detection alone is enough; the schema's default order is descending.
    let query =
        r#"{ alerts(input: {detectionId: "AWS.Suspicious"}) { edges { node { id } } pageInfo { hasNextPage } } }"#;
    let (_, answer) = graphql(&client, &base, query, json!({})).await;
    let ids: Vec<&str> = answer["data"]["alerts"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a2", "a1", "a0"], "{answer}");

    for input in
        [r#"{detectionId: "AWS.Suspicious", pageSize: 51}"#, r#"{detectionId: "AWS.Suspicious", cursor: "zz"}"#]
    {
        let query = format!("{{ alerts(input: {input}) {{ edges {{ node {{ id }} }} }} }}");
        let (_, answer) = graphql(&client, &base, &query, json!({})).await;
        assert_eq!(error_codes(&answer), ["BAD_USER_INPUT"], "{input}: {answer}");
    }
    let query = r#"{ alert(id: "a0") { events(input: {pageSize: 51}) { edges { node } } } }"#;
    let (_, answer) = graphql(&client, &base, query, json!({})).await;
    assert_eq!(error_codes(&answer), ["BAD_USER_INPUT"], "{answer}");
    assert_eq!(answer["errors"][0]["path"], json!(["alert", "events"]));

    // A missing alert nulls the non-null `alert`, and so `data`.
    let (status, answer) = graphql(&client, &base, r#"{ alert(id: "nope") { id } }"#, json!({})).await;
    assert_eq!((status, &answer["data"]), (200, &Value::Null));
    assert_eq!(error_codes(&answer), ["NOT_FOUND"]);

    let query = r#"{ generalSettings { pantherVersion } a: alert(id: "a1") { id title runbook lastReceivedEventAt
        assignee { id } origin { __typename } } }"#;
    let (_, answer) = graphql(&client, &base, query, json!({})).await;
    assert_eq!(answer["data"]["generalSettings"]["pantherVersion"], graphql::PANTHER_VERSION);
    assert_eq!(
        answer["data"]["a"],
        json!({"id": "a1", "title": "Suspicious thing a1", "runbook": "", "lastReceivedEventAt": "2025-01-01T00:01:00Z",
               "assignee": null, "origin": {"__typename": "Detection"}})
    );
    // A field the fake does not implement is a field error, not a made-up value.
    let (_, answer) = graphql(&client, &base, "{ users { id } }", json!({})).await;
    assert_eq!(error_codes(&answer), ["INTERNAL_SERVER_ERROR"]);
    assert!(answer["errors"][0]["message"].as_str().unwrap().contains("not supported by the fake"));
}

#[tokio::test]
async fn graphql_refuses_bad_requests_and_documents_as_apollo_server_does() {
    let fake = fake_with_alerts(1);
    let server = fake.spawn().await.unwrap();
    let client = Client::new();
    let base = server.url();
    let url = format!("{base}/public/graphql");

    let refused = |answer: &Value, code: &str| {
        assert!(answer.get("data").is_none(), "{answer}");
        assert!(!error_codes(answer).is_empty() && error_codes(answer).iter().all(|c| *c == code), "{answer}");
    };
    let (status, answer) = graphql(&client, &base, r#"{ alert(id: "a0") { id colour } }"#, json!({})).await;
    assert_eq!(status, 400);
    refused(&answer, "GRAPHQL_VALIDATION_FAILED");
    assert!(answer["errors"][0]["message"].as_str().unwrap().contains("colour"), "{answer}");

    // `type` is a DetectionType on Detection and a SystemErrorType on SystemError: one response key
    // cannot be both, so the union's members need aliases.
    let unaliased = r#"{ alert(id: "a0") { origin { ... on Detection { type } ... on SystemError { type } } } }"#;
    let (status, answer) = graphql(&client, &base, unaliased, json!({})).await;
    assert_eq!(status, 400, "{answer}");
    refused(&answer, "GRAPHQL_VALIDATION_FAILED");
    let aliased = r#"{ alert(id: "a0") { origin { ... on Detection { detectionType: type }
        ... on SystemError { errorType: type } ... on DeletedDetection { id } } } }"#;
    let (status, answer) = graphql(&client, &base, aliased, json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["alert"]["origin"], json!({"detectionType": "RULE"}));

    let (status, answer) = graphql(&client, &base, "{ alert(id: \"a0\") { id ", json!({})).await;
    assert_eq!(status, 400);
    refused(&answer, "GRAPHQL_PARSE_FAILED");
    assert_eq!(answer["errors"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(answer["errors"][0]["locations"], json!([{"line": 1, "column": 24}]), "{answer}");

    let query = "query($id: ID!) { alert(id: $id) { id } }";
    let (status, answer) = graphql(&client, &base, query, json!({"id": {"not": "an id"}})).await;
    assert_eq!(status, 400);
    refused(&answer, "BAD_USER_INPUT");
    let (status, answer) = graphql(&client, &base, query, json!({})).await;
    assert_eq!(status, 400);
    refused(&answer, "BAD_USER_INPUT");
    let (status, answer) = graphql(&client, &base, query, json!({"id": "a0"})).await;
    assert_eq!((status, &answer["data"]["alert"]["id"]), (200, &json!("a0")));

    let two = "query A { generalSettings { pantherVersion } } query B { alert(id: \"a0\") { id } }";
    let (status, answer) = graphql(&client, &base, two, json!({})).await;
    assert_eq!(status, 400);
    refused(&answer, "OPERATION_RESOLUTION_FAILURE");
    let body = json!({"query": two, "operationName": "B"});
    let (status, answer) = call(&client, Method::POST, url.clone(), Some(body)).await;
    assert_eq!((status, &answer["data"]["alert"]["id"]), (200, &json!("a0")));

    for body in ["{not json", "[]", r#"{"variables": {}}"#, r#"{"query": "{ x }", "extra": 1}"#] {
        let response = client
            .post(&url)
            .header("X-API-Key", KEY)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        refused(&response.json().await.unwrap(), "BAD_REQUEST");
    }
    let response = client.post(&url).header("X-API-Key", KEY).body(r#"{"query": "{ x }"}"#).send().await.unwrap();
    assert_eq!(response.status(), 400, "no JSON content type");

    // The key is checked as on the REST side.
    let body = json!({"query": "{ generalSettings { pantherVersion } }"});
    let none = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let wrong = client.post(&url).header("X-API-Key", "nope").json(&body).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let last = fake.requests().pop().unwrap();
    assert_eq!((last.route(), last.status), (Some(Route::Graphql), 401));
    assert!(last.body.unwrap().contains("generalSettings"));
}

const TWO_COMMENTS: &str = r#"
mutation Comments($alert: ID!) {
  first: createAlertComment(input: {alertId: $alert, body: "one"}) {
    comment { id body format createdBy { ... on APIToken { id } } entity { ... on Alert { id } } }
  }
  second: createAlertComment(input: {alertId: $alert, body: "<b>two</b>", format: HTML}) { comment { id body format } }
}"#;

#[tokio::test]
async fn graphql_batched_comments_each_run_and_fail_alone() {
    let fake = fake_with_alerts(1);
    let server = fake.spawn().await.unwrap();
    let client = Client::new();
    let base = server.url();
    let rest_bodies = |page: &Value| -> Vec<String> {
        page["results"].as_array().unwrap().iter().map(|c| c["body"].as_str().unwrap().to_owned()).collect()
    };

    let (status, answer) = graphql(&client, &base, TWO_COMMENTS, json!({"alert": "a0"})).await;
    assert_eq!(status, 200);
    assert!(answer.get("errors").is_none(), "{answer}");
    let first = &answer["data"]["first"]["comment"];
    assert_eq!(first["body"], "one");
    assert_eq!(first["format"], "PLAIN_TEXT");
    assert_eq!(first["createdBy"], json!({"id": "fake-api-token"}));
    assert_eq!(first["entity"], json!({"id": "a0"}));
    assert_eq!(answer["data"]["second"]["comment"]["format"], "HTML");
    let (_, page) = get(&client, format!("{base}/alert-comments?alert-id=a0")).await;
    assert_eq!(rest_bodies(&page), ["one", "<b>two</b>"]);
    assert_eq!(page["results"][0]["id"], first["id"]);

    // The first alias is throttled and does nothing; by default (graphql-js) the second never runs.
    fake.fail_field("createAlertComment", "THROTTLED", 1);
    let (_, answer) = graphql(&client, &base, TWO_COMMENTS, json!({"alert": "a0"})).await;
    assert_eq!(error_codes(&answer), ["THROTTLED"], "{answer}");
    assert_eq!(answer["data"], Value::Null);
    assert_eq!(fake.comments("a0").len(), 2, "nothing ran past the failure");

    // Run every field: the second still runs.
    fake.set_batch_semantics(super::BatchSemantics::RunEveryField);
    fake.fail_field("createAlertComment", "THROTTLED", 1);
    let (status, answer) = graphql(&client, &base, TWO_COMMENTS, json!({"alert": "a0"})).await;
    assert_eq!(status, 200);
    assert_eq!(error_codes(&answer), ["THROTTLED"], "{answer}");
    assert_eq!(answer["errors"][0]["path"], json!(["first"]));
    assert_eq!(answer["data"], Value::Null, "a non-null root field failed");
    let (_, page) = get(&client, format!("{base}/alert-comments?alert-id=a0")).await;
    assert_eq!(rest_bodies(&page), ["one", "<b>two</b>", "<b>two</b>"]);

    // An alias on a missing alert fails alone too, whatever its place.
    let query = r#"mutation { a: createAlertComment(input: {alertId: "a0", body: "three"}) { comment { id } }
        b: createAlertComment(input: {alertId: "zz", body: "lost"}) { comment { id } }
        c: createAlertComment(input: {alertId: "a0", body: "four"}) { comment { id } } }"#;
    let (_, answer) = graphql(&client, &base, query, json!({})).await;
    assert_eq!(error_codes(&answer), ["NOT_FOUND"], "{answer}");
    assert_eq!(answer["errors"][0]["path"], json!(["b"]));
    assert_eq!(fake.comments("a0").len(), 5);
    assert_eq!(fake.comments("a0")[4]["body"], "four");
}

#[tokio::test]
async fn graphql_alert_mutations_show_through_rest() {
    let fake = fake_with_alerts(2);
    fake.add_user("u-1", "jane.doe@example.com");
    let server = fake.spawn().await.unwrap();
    let client = Client::new();
    let base = server.url();

    let query = r#"mutation { updateAlertStatusById(input: {ids: ["a0", "a1"], status: TRIAGED}) {
        alerts { id status } } }"#;
    let (status, answer) = graphql(&client, &base, query, json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["data"]["updateAlertStatusById"]["alerts"],
        json!([{"id": "a0", "status": "TRIAGED"}, {"id": "a1", "status": "TRIAGED"}])
    );
    let (_, rest) = get(&client, format!("{base}/alerts/a0")).await;
    assert_eq!(rest["status"], "TRIAGED");

    let query = r#"mutation($email: String) { updateAlertsAssigneeByEmail(input: {ids: ["a1"], assigneeEmail: $email}) {
        alerts { id assignee { id email givenName role { name } } } } }"#;
    let (_, answer) = graphql(&client, &base, query, json!({"email": "jane.doe@example.com"})).await;
    assert_eq!(
        answer["data"]["updateAlertsAssigneeByEmail"]["alerts"][0]["assignee"],
        json!({"id": "u-1", "email": "jane.doe@example.com", "givenName": "Jane", "role": {"name": "Analyst"}}),
        "{answer}"
    );
    let (_, rest) = get(&client, format!("{base}/alerts/a1")).await;
    assert_eq!(rest["assignee"], json!({"id": "u-1", "type": "user"}));

    let (_, answer) = graphql(&client, &base, query, json!({"email": "nobody@example.com"})).await;
    assert_eq!(error_codes(&answer), ["NOT_FOUND"], "{answer}");
    assert_eq!(fake.alert("a1").unwrap()["assignee"]["id"], "u-1");
    // No email unassigns.
    let (_, answer) = graphql(&client, &base, query, json!({})).await;
    assert!(answer.get("errors").is_none(), "{answer}");
    assert!(get(&client, format!("{base}/alerts/a1")).await.1.get("assignee").is_none());

    let query = r#"mutation { updateAlertsAssigneeById(input: {ids: ["a0"], assigneeId: "u-1"}) { alerts { assignee { id } } } }"#;
    let (_, answer) = graphql(&client, &base, query, json!({})).await;
    assert_eq!(answer["data"]["updateAlertsAssigneeById"]["alerts"][0]["assignee"]["id"], "u-1", "{answer}");
    assert_eq!(fake.alert("a0").unwrap()["assignee"]["id"], "u-1");

    // An unknown id fails the call and changes none of its alerts.
    let query = r#"mutation { updateAlertStatusById(input: {ids: ["a0", "zz"], status: RESOLVED}) { alerts { id } } }"#;
    let (_, answer) = graphql(&client, &base, query, json!({})).await;
    assert_eq!(error_codes(&answer), ["NOT_FOUND"], "{answer}");
    assert_eq!(answer["errors"][0]["path"], json!(["updateAlertStatusById"]));
    assert_eq!(fake.alert("a0").unwrap()["status"], "TRIAGED");
}

#[tokio::test]
async fn graphql_request_faults_take_the_whole_request() {
    let fake = fake_with_alerts(1);
    fake.inject(Route::Graphql, Fault::TooManyRequests { retry_after_secs: 3 }, 1);
    let server = fake.spawn().await.unwrap();
    let client = Client::new();
    let base = server.url();
    let url = format!("{base}/public/graphql");
    let body = json!({"query": TWO_COMMENTS, "variables": {"alert": "a0"}});

    let response = client.post(&url).header("X-API-Key", KEY).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");
    assert!(fake.comments("a0").is_empty());

    fake.inject(Route::Graphql, Fault::CommitThenDrop, 1);
    let error = client.post(&url).header("X-API-Key", KEY).json(&body).send().await.expect_err("no answer");
    assert!(error.is_request() && !error.is_connect() && !error.is_timeout(), "{error:?}");
    let bodies: Vec<Value> = fake.comments("a0").iter().map(|c| c["body"].clone()).collect();
    assert_eq!(bodies, ["one", "<b>two</b>"]);

    fake.inject(Route::Graphql, Fault::ServerError { status: 502 }, 1);
    assert_eq!(graphql(&client, &base, "{ generalSettings { pantherVersion } }", json!({})).await.0, 502);
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200, 502]);
    assert!(fake.requests().iter().all(|r| r.route() == Some(Route::Graphql)));
}
