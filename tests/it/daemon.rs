//! The core loop against the fake Panther on loopback: what users fear (a missed alert, a comment
//! posted twice, a leaked key) is each a test here.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use panther_triage::app;
use panther_triage::config::Config;
use panther_triage::fake_panther::{FakeHandle, FakePanther, Fault, Route};
use panther_triage::ledger::Stage;
use panther_triage::panther::{format_time, Client};
use panther_triage::poller::Pipeline;
use serde_json::{json, Value};

const KEY: &str = "CANARY-KEY-5d1c0a7e";

struct Env {
    fake: FakePanther,
    server: FakeHandle,
    dir: tempfile::TempDir,
}

impl Env {
    async fn new() -> Env {
        let fake = FakePanther::new(KEY);
        fake.add_user("u-oncall", "oncall@acme.example");
        let server = fake.spawn().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("intel.jsonl"), intel()).unwrap();
        Env { fake, server, dir }
    }

    /// A configuration file for this fake; `extra` adds or replaces sections.
    fn config(&self, extra: &str) -> PathBuf {
        let text = format!(
            "[panther]\nurl = \"{}\"\napi_key = \"{KEY}\"\nrequests_per_second = 1000\ntimeout = \"2s\"\n\
             retry_backoff = \"10ms\"\nmax_retries = 3\n\
             [[tables]]\nname = \"intel\"\npath = \"intel.jsonl\"\nformat = \"anomali\"\n\
             [[triage.rules]]\nname = \"bad\"\nmin_confidence = 80\nverdict = \"malicious\"\n{extra}",
            self.server.url()
        );
        let path = self.dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn pipeline(&self, extra: &str) -> Pipeline<Client> {
        let cfg = Config::load_with_env(&self.config(extra), Vec::new()).unwrap();
        app::build(cfg, false).unwrap()
    }

    /// Comments per alert ID.
    fn comment_count(&self, id: &str) -> usize {
        self.fake.comments(id).len()
    }

    fn writes(&self) -> usize {
        self.fake.requests().iter().filter(|r| r.method != "GET").count()
    }
}

fn intel() -> String {
    let row = |id: u32, v: &str, conf: u32| {
        json!({"id": id.to_string(), "value": v, "match": [v], "type": "ip", "confidence": conf, "status": "active",
               "modified_ts": "2025-01-01 00:00:00", "expiration_ts": "", "threat_type": "c2", "source": "Feed"})
        .to_string()
    };
    [row(1, "198.51.100.7", 95), row(2, "203.0.113.9", 20)].join("\n")
}

fn ago(minutes: i64) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::minutes(minutes)
}

fn alert(id: &str, created: DateTime<Utc>, detection: &str, title: &str) -> Value {
    json!({"id": id, "type": "ALERT", "status": "OPEN", "severity": "HIGH", "title": title,
           "createdAt": format_time(created), "detection": {"id": detection, "type": "RULE"}})
}

fn ip_event(ip: &str) -> Vec<Value> {
    vec![json!({"p_log_type": "AWS.CloudTrail", "p_any_ip_addresses": [ip]})]
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_that_appear_late_behind_the_watermark_are_triaged() {
    let env = Env::new().await;
    env.fake.add_alert(alert("a1", ago(5), "Okta.X", "t1"), ip_event("10.0.0.1"));
    let p = env.pipeline("");
    p.drain().await.unwrap();
    assert!(p.ledger().watermark().unwrap().is_some());
    // Indexed late: created before the watermark, but inside the overlap window.
    env.fake.add_alert(alert("late", ago(8), "Okta.X", "t2"), ip_event("198.51.100.7"));
    let r = p.drain().await.unwrap();
    assert_eq!(r.poll.new, 1);
    assert_eq!(env.comment_count("late"), 1);
    assert_eq!(env.comment_count("a1"), 1, "the first alert is not answered again");
    assert_eq!(p.ledger().get("late").unwrap().unwrap().verdict.as_deref(), Some("malicious"));
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_sharing_one_created_at_across_pages_are_each_triaged_once() {
    let env = Env::new().await;
    let t = ago(3);
    for i in 0..120 {
        env.fake.add_alert(alert(&format!("same{i:03}"), t, "Okta.X", &format!("t{i}")), ip_event("10.0.0.1"));
    }
    // The per-tick bound cuts the group; the next tick resumes through the overlap.
    let p = env.pipeline("[poll]\nmax_alerts_per_tick = 30\n");
    let first = p.tick().await.unwrap();
    assert!(!first.poll.complete && first.poll.new < 120, "{first:?}");
    let r = p.drain().await.unwrap();
    assert_eq!(first.poll.new + r.poll.new, 120);
    assert!(r.poll.pages >= 3, "50 a page: {r:?}");
    // A second cycle sees them all again in the overlap and writes nothing.
    let before = env.writes();
    p.drain().await.unwrap();
    assert_eq!(env.writes(), before);
    for i in 0..120 {
        assert_eq!(env.comment_count(&format!("same{i:03}")), 1, "alert same{i:03}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_dropped_after_the_comment_was_committed_does_not_post_twice() {
    let env = Env::new().await;
    env.fake.add_alert(alert("a1", ago(5), "Okta.X", "t"), ip_event("198.51.100.7"));
    env.fake.inject(Route::CreateComment, Fault::CommitThenDrop, 1);
    let p = env.pipeline("");
    let r = p.drain().await.unwrap();
    assert_eq!(r.process.triaged, 1);
    assert_eq!(env.comment_count("a1"), 1);
    let listed = env.fake.requests().iter().filter(|r| r.route() == Some(Route::ListComments)).count();
    assert!(listed >= 1, "the marker was looked for before posting again");
    assert_eq!(p.ledger().get("a1").unwrap().unwrap().stage, Stage::Done);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_resumes_from_the_ledger_with_nothing_missed_or_repeated() {
    let env = Env::new().await;
    for i in 0..60 {
        env.fake.add_alert(alert(&format!("r{i:02}"), ago(90 - i), "Okta.X", &format!("t{i}")), ip_event("10.0.0.1"));
    }
    let extra = "[poll]\nmax_alerts_per_tick = 7\n";
    {
        let p = env.pipeline(extra);
        p.tick().await.unwrap(); // a bounded tick, then the process "dies"
    }
    // Alerts created while the daemon was down.
    env.fake.add_alert(alert("down", ago(1), "Okta.X", "t-down"), ip_event("10.0.0.1"));
    let p = env.pipeline(extra);
    p.drain().await.unwrap();
    for i in 0..60 {
        assert_eq!(env.comment_count(&format!("r{i:02}")), 1, "alert r{i:02}");
    }
    assert_eq!(env.comment_count("down"), 1);
    assert_eq!(p.ledger().counts().unwrap().done, 61);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_left_unknown_by_a_crash_is_checked_by_marker_after_restart() {
    let env = Env::new().await;
    env.fake.add_alert(alert("a1", ago(5), "Okta.X", "t"), ip_event("198.51.100.7"));
    // The comment is committed but the answer is lost, and Panther cannot list comments right now:
    // the outcome stays unknown and the intent stays in the ledger.
    env.fake.inject(Route::CreateComment, Fault::CommitThenDrop, 1);
    env.fake.inject(Route::ListComments, Fault::ServerError { status: 503 }, 4);
    {
        let p = env.pipeline("");
        let r = p.drain().await.unwrap();
        assert_eq!(r.process.deferred, 1, "{r:?}");
        assert_eq!(p.ledger().get("a1").unwrap().unwrap().stage, Stage::Writing);
    }
    let p = env.pipeline("");
    p.drain().await.unwrap();
    assert_eq!(env.comment_count("a1"), 1, "found by its marker, not posted again");
    assert_eq!(p.ledger().get("a1").unwrap().unwrap().stage, Stage::Done);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_429s_and_5xx_is_survived() {
    let env = Env::new().await;
    for i in 0..3 {
        env.fake.add_alert(alert(&format!("b{i}"), ago(10 - i), "Okta.X", &format!("t{i}")), ip_event("198.51.100.7"));
    }
    env.fake.inject(Route::ListAlerts, Fault::TooManyRequests { retry_after_secs: 0 }, 2);
    env.fake.inject(Route::ListEvents, Fault::ServerError { status: 503 }, 2);
    env.fake.inject(Route::CreateComment, Fault::TooManyRequests { retry_after_secs: 1 }, 1);
    env.fake.inject(Route::CreateComment, Fault::ServerError { status: 502 }, 1);
    env.fake.inject(Route::PatchAlerts, Fault::ServerError { status: 500 }, 2);
    let p = env.pipeline("set_status = \"TRIAGED\"\n");
    let started = std::time::Instant::now();
    let r = p.drain().await.unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_secs(1), "Retry-After: 1 was honoured");
    // The comment answered 502 was not found by its marker: it waits for the next tick, which looks
    // again before posting.
    assert_eq!(r.process.deferred, 1, "{r:?}");
    let again = p.drain().await.unwrap();
    assert_eq!(r.process.triaged + again.process.triaged, 3, "{again:?}");
    assert_eq!(again.process.deferred, 0, "{again:?}");
    for i in 0..3 {
        assert_eq!(env.comment_count(&format!("b{i}")), 1, "alert b{i}");
    }
    let reqs = env.fake.requests();
    assert!(reqs.iter().filter(|r| r.status == 429).count() >= 3);
    assert!(reqs.iter().filter(|r| r.status >= 500).count() >= 5);
    for i in 0..3 {
        assert_eq!(env.fake.alert(&format!("b{i}")).unwrap()["status"], "TRIAGED", "the PATCH survived its 5xx");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_panther_keeps_failing_on_does_not_hold_up_the_others() {
    let env = Env::new().await;
    env.fake.add_alert(alert("stuck", ago(20), "Okta.X", "t1"), ip_event("10.0.0.1"));
    env.fake.add_alert(alert("next", ago(10), "Okta.X", "t2"), ip_event("10.0.0.1"));
    // Every attempt (1 + max_retries) at the oldest alert's events fails.
    env.fake.inject(Route::ListEvents, Fault::ServerError { status: 503 }, 4);
    let p = env.pipeline("");
    let r = p.drain().await.unwrap();
    assert_eq!((r.process.deferred, r.process.triaged), (1, 0), "{r:?}");
    p.drain().await.unwrap();
    let events: Vec<String> = env
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.route() == Some(Route::ListEvents) && r.status == 200)
        .map(|r| r.path)
        .collect();
    assert!(events[0].contains("next"), "the alert that failed before goes last: {events:?}");
    assert_eq!((env.comment_count("stuck"), env.comment_count("next")), (1, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_filter_keeps_and_drops_and_says_why() {
    let env = Env::new().await;
    let t = ago(30);
    let at = |m: i64| t + chrono::Duration::minutes(m);
    env.fake.add_alert(alert("keep", at(0), "Okta.Login", "kept"), ip_event("10.0.0.1"));
    env.fake.add_alert(alert("aws", at(1), "AWS.Root", "dropped by regex"), ip_event("10.0.0.1"));
    let mut low = alert("low", at(2), "Okta.Low", "low");
    low["severity"] = json!("LOW");
    env.fake.add_alert(low, ip_event("10.0.0.1"));
    let mut triaged = alert("triaged", at(3), "Okta.Done", "done");
    triaged["status"] = json!("TRIAGED");
    env.fake.add_alert(triaged, ip_event("10.0.0.1"));
    env.fake.add_alert(alert("dup1", at(4), "Okta.Dup", "same title"), ip_event("10.0.0.1"));
    env.fake.add_alert(alert("dup2", at(10), "Okta.Dup", "same title"), ip_event("10.0.0.1"));
    env.fake.add_alert(alert("dup3", at(25), "Okta.Dup", "same title"), ip_event("10.0.0.1"));
    let extra = "[filter]\nstatuses = [\"OPEN\"]\nseverities = [\"HIGH\", \"CRITICAL\"]\n\
                 detection_id_regex = \"^(?!AWS).*\"\ndedup_window = \"15m\"\n";
    let p = env.pipeline(extra);
    p.drain().await.unwrap();
    // The poll asks Panther for the configured statuses and severities only.
    let list = env.fake.requests().into_iter().find(|r| r.route() == Some(Route::ListAlerts)).unwrap();
    assert_eq!(list.query_values("status"), ["OPEN"]);
    assert_eq!(list.query_values("severity"), ["HIGH", "CRITICAL"]);
    // Alerts the listing could not filter (asked for by ID) go through the same filters.
    for id in ["low", "triaged"] {
        p.triage_one(id).await.unwrap();
    }
    let l = p.ledger();
    let stage = |id: &str| l.get(id).unwrap().unwrap();
    assert_eq!(stage("keep").stage, Stage::Done);
    assert_eq!(env.comment_count("keep"), 1);
    for (id, why) in [("aws", "detection ID"), ("low", "severity"), ("triaged", "status")] {
        let e = stage(id);
        assert_eq!(e.stage, Stage::Filtered, "{id}");
        assert!(e.reason.as_deref().unwrap_or("").contains(why), "{id}: {:?}", e.reason);
        assert_eq!(env.comment_count(id), 0, "a filtered alert gets nothing written ({id})");
    }
    // Within the window: a duplicate of the first, with a short link comment. Outside: an original.
    assert_eq!(stage("dup2").original_id.as_deref(), Some("dup1"));
    let link = env.fake.comments("dup2");
    assert_eq!(link.len(), 1);
    assert!(link[0]["body"].as_str().unwrap().contains("duplicate of alert <b>dup1</b>"), "{link:?}");
    assert_eq!(stage("dup3").original_id, None);
    assert_eq!(env.comment_count("dup3"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_skip_posts_nothing_and_rules_write_status_and_assignee_in_batches() {
    let env = Env::new().await;
    let t = ago(30);
    for i in 0..3 {
        env.fake.add_alert(
            alert(&format!("m{i}"), t + chrono::Duration::seconds(i), "Okta.M", &format!("m{i}")),
            ip_event("198.51.100.7"),
        );
    }
    env.fake.add_alert(alert("d1", t, "Okta.Dup", "same"), ip_event("10.0.0.1"));
    env.fake.add_alert(alert("d2", t + chrono::Duration::minutes(1), "Okta.Dup", "same"), ip_event("10.0.0.1"));
    let extra = "[filter]\ndedup_window = \"15m\"\n[sync]\nduplicates = \"skip\"\n\
                 [[triage.rules]]\nname = \"bad too\"\nverdict = \"benign\"\n";
    // Replace the default rule by one that writes back.
    let cfg_rule = "set_status = \"TRIAGED\"\nassign_to = \"oncall@acme.example\"\n";
    let p = env.pipeline(&format!("{cfg_rule}{extra}"));
    p.drain().await.unwrap();
    assert_eq!(env.comment_count("d2"), 0);
    assert_eq!(p.ledger().get("d2").unwrap().unwrap().stage, Stage::Done);
    for i in 0..3 {
        let a = env.fake.alert(&format!("m{i}")).unwrap();
        assert_eq!(a["status"], "TRIAGED");
        assert_eq!(a["assignee"]["id"], "u-oncall");
    }
    let patches: Vec<_> = env.fake.requests().into_iter().filter(|r| r.method == "PATCH").collect();
    assert_eq!(patches.len(), 2, "one PATCH for the status, one for the assignee: {patches:?}");
    let finds = env.fake.requests().iter().filter(|r| r.route() == Some(Route::ListUsers)).count();
    assert_eq!(finds, 1, "the email is resolved once");
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_html_arrives_escaped() {
    let env = Env::new().await;
    let mut a = alert("x1", ago(5), "Okta.<script>", "<img src=x onerror=alert(1)>");
    a["severity"] = json!("CRITICAL");
    let events =
        vec![json!({"p_any_ip_addresses": ["198.51.100.7", "<svg onload=alert(2)>"], "p_log_type": "<b>x</b>"})];
    env.fake.add_alert(a, events);
    env.pipeline("").drain().await.unwrap();
    let body = env.fake.comments("x1")[0]["body"].as_str().unwrap().to_owned();
    for bad in ["<img", "<script", "<svg"] {
        assert!(!body.contains(bad), "{bad} in {body}");
    }
    assert!(body.contains("&lt;img src=x onerror=alert(1)&gt;"), "{body}");
    assert!(body.contains("&lt;svg onload=alert(2)&gt;"), "the skipped value is shown escaped: {body}");
}

/// Runs the binary with a timeout, from a blocking thread so the fake keeps serving.
async fn run_bin(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || crate::run(crate::bin().args(&args).env_remove("RUST_LOG"))).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_sends_no_write_and_prints_what_it_would_write() {
    let env = Env::new().await;
    env.fake.add_alert(alert("a1", ago(5), "Okta.X", "t"), ip_event("198.51.100.7"));
    let cfg = env.config("set_status = \"TRIAGED\"\n").display().to_string();
    let out = run_bin(vec!["once".into(), "-c".into(), cfg.clone(), "--dry-run".into()]).await;
    let stdout = crate::text(&out.stdout);
    assert!(out.status.success(), "{}", crate::text(&out.stderr));
    assert!(
        stdout.contains("would comment on alert a1") && stdout.contains("would set status TRIAGED on a1"),
        "{stdout}"
    );
    assert_eq!(env.writes(), 0);
    // The state file is untouched: a real run afterwards still does the work.
    let out = run_bin(vec!["once".into(), "-c".into(), cfg]).await;
    assert!(out.status.success(), "{}", crate::text(&out.stderr));
    assert_eq!(env.comment_count("a1"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_key_appears_in_no_log_line_error_or_comment() {
    let env = Env::new().await;
    env.fake.add_alert(alert("a1", ago(5), "Okta.X", "t"), ip_event("198.51.100.7"));
    env.fake.inject(Route::ListEvents, Fault::ServerError { status: 500 }, 1);
    let cfg = env.config("[log]\nlevel = \"trace\"\nformat = \"json\"\n").display().to_string();
    let out = run_bin(vec!["once".into(), "-c".into(), cfg.clone()]).await;
    assert!(out.status.success(), "{}", crate::text(&out.stderr));
    let printed = format!("{}{}", crate::text(&out.stdout), crate::text(&out.stderr));
    assert!(printed.contains("a1"), "the run logged its work: {printed}");
    assert!(!printed.contains(KEY), "the key leaked into the output");
    assert!(env.fake.requests().iter().all(|r| r.api_key.as_deref() == Some(KEY)), "the key reaches Panther");
    for c in env.fake.comments("a1") {
        assert!(!c["body"].as_str().unwrap().contains(KEY));
    }
    let shown = run_bin(vec!["check-config".into(), "-c".into(), cfg]).await;
    assert!(shown.status.success());
    assert!(!crate::text(&shown.stdout).contains(KEY) && crate::text(&shown.stdout).contains("<redacted>"));
    // A refused key: the error names the problem, not the key.
    let fake = FakePanther::new("another-key");
    let server = fake.spawn().await.unwrap();
    let text =
        std::fs::read_to_string(env.dir.path().join("config.toml")).unwrap().replace(&env.server.url(), &server.url());
    let path = env.dir.path().join("refused.toml");
    std::fs::write(&path, text).unwrap();
    let out = run_bin(vec!["once".into(), "-c".into(), path.display().to_string()]).await;
    assert_eq!(out.status.code(), Some(1));
    let printed = format!("{}{}", crate::text(&out.stdout), crate::text(&out.stderr));
    assert!(printed.contains("API key was refused") && !printed.contains(KEY), "{printed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_config_exits_2_naming_the_key() {
    let env = Env::new().await;
    let cfg = env.config("[filter]\nseverities = [\"SEVERE\"]\ndedup_window = \"a while\"\n").display().to_string();
    for cmd in ["check-config", "once"] {
        let out = run_bin(vec![cmd.into(), "-c".into(), cfg.clone()]).await;
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = crate::text(&out.stderr);
        assert!(err.contains("filter.severities") && err.contains("filter.dedup_window"), "{cmd}: {err}");
    }
    let typo = env.config("[filter]\nstatus = [\"OPEN\"]\n").display().to_string();
    let out = run_bin(vec!["check-config".into(), "-c".into(), typo]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(crate::text(&out.stderr).contains("status"), "{}", crate::text(&out.stderr));
    assert_eq!(env.writes(), 0);
}

#[test]
fn the_demo_runs_and_prints_a_summary_and_the_first_comment() {
    let out = crate::run(crate::bin().arg("demo").env_remove("RUST_LOG"));
    let stdout = crate::text(&out.stdout);
    assert!(out.status.success(), "{}", crate::text(&out.stderr));
    assert!(
        stdout.contains("malicious") && stdout.contains("filtered 2") && stdout.contains("duplicates 2"),
        "{stdout}"
    );
    assert!(stdout.contains("first comment posted") && stdout.contains("<!-- panther-triage:"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_loop_triages_new_alerts_each_interval_and_stops_on_its_signal() {
    let env = Env::new().await;
    env.fake.add_alert(alert("first", ago(5), "Okta.X", "t1"), ip_event("10.0.0.1"));
    let p = std::sync::Arc::new(env.pipeline("[poll]\ninterval = \"100ms\"\n"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = {
        let p = p.clone();
        tokio::spawn(
            async move { p.run(async { stopped.await.unwrap_or(()) }, std::time::Duration::from_secs(5)).await },
        )
    };
    let wait_for = |id: &'static str| {
        let fake = env.fake.clone();
        async move {
            for _ in 0..100 {
                if !fake.comments(id).is_empty() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            panic!("alert {id} was not triaged by the loop");
        }
    };
    wait_for("first").await;
    env.fake.add_alert(alert("second", ago(1), "Okta.X", "t2"), ip_event("10.0.0.1"));
    wait_for("second").await;
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), runner)
        .await
        .expect("the loop stops on its signal")
        .unwrap();
    assert_eq!(env.comment_count("first"), 1);
    assert_eq!(env.comment_count("second"), 1);
}
