//! Live operations: the daemon as `run` wires it (health, readiness, metrics, table refresh,
//! systemd notifications, SIGHUP and SIGTERM), in process and as the real binary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use panther_triage::app;

use crate::daemon::{ago, alert, ip_event, Api, Env};

/// Polls `check` every 25 ms until it holds or `within` passes.
async fn eventually(within: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < within {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("not within {within:?}: {what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_serves_health_and_metrics_and_turns_unready_when_panther_is_gone() {
    let env = Env::new(Api::Rest).await;
    env.fake.add_alert(alert("m1", ago(5), "Okta.X", "t"), ip_event("198.51.100.7"));
    let p = Arc::new(env.pipeline("[poll]\ninterval = \"100ms\"\n[server]\nlisten = \"127.0.0.1:0\"\n"));
    let listeners = app::Listeners::bind(p.config()).await.unwrap();
    let base = format!("http://{}", listeners.server.as_ref().unwrap().local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(app::daemon(p.clone(), listeners, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let req = http.get(format!("{base}{path}"));
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    eventually(Duration::from_secs(10), "ready after the first poll", async || get("/readyz").await.0 == 200).await;
    eventually(Duration::from_secs(10), "m1 triaged", async || env.comment_count("m1") == 1).await;
    let check = crate::daemon::run_bin(vec!["check-health".into(), "--url".into(), format!("{base}/readyz")]).await;
    assert!(check.status.success(), "{}", crate::text(&check.stderr));
    let (status, metrics) = get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "panther_triage_alerts_seen_total{source=\"poll\"}",
        "panther_triage_alerts_ingested_total{source=\"poll\"}",
        "panther_triage_alerts_triaged_total{verdict=\"malicious\"}",
        "panther_triage_comments_posted_total",
        "panther_triage_comments_updated_total",
        "panther_triage_api_requests_total{op=\"list_alerts\",status=\"200\"}",
        "panther_triage_api_request_duration_seconds_bucket",
        "panther_triage_table_rows{table=\"intel\"}",
        "panther_triage_table_last_refresh_timestamp_seconds{table=\"intel\"}",
        "panther_triage_ledger_oldest_pending_age_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }
    // Panther goes away: within a few intervals the daemon says it is not ready, and why.
    let Env { server, .. } = env;
    server.shutdown().await.unwrap();
    eventually(Duration::from_secs(10), "unready without Panther", async || get("/readyz").await.0 == 503).await;
    let (_, why) = get("/readyz").await;
    assert!(why.contains("last successful poll") || why.contains("last poll error"), "{why}");
    assert_eq!(get("/healthz").await.0, 200, "alive all the same");
    let check = crate::daemon::run_bin(vec!["check-health".into(), "--url".into(), format!("{base}/readyz")]).await;
    assert_eq!(check.status.code(), Some(1));
    assert!(crate::text(&check.stderr).contains("not ready (HTTP 503)"), "{}", crate::text(&check.stderr));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), daemon).await.unwrap().unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_file_broken_during_refresh_leaves_the_old_table_serving() {
    let env = Env::new(Api::Rest).await;
    let p = env.pipeline("");
    let path = env.dir.path().join("intel.jsonl");
    std::fs::write(&path, b"\x00\x01 not a row\n".repeat(200)).unwrap();
    let report = p.tables().reload_all(Utc::now());
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(report.failed[0].1.contains("intel.jsonl"), "the failure names the file: {report:?}");
    env.fake.add_alert(alert("t1", ago(5), "Okta.X", "t"), ip_event("198.51.100.7"));
    p.drain().await.unwrap();
    assert_eq!(p.ledger().get("t1").unwrap().unwrap().verdict.as_deref(), Some("malicious"), "the old table served");
    // A good new file is taken: the indicator is gone from the feed.
    std::fs::write(&path, "").unwrap();
    let report = p.tables().reload_all(Utc::now());
    assert_eq!(report.reloaded, ["intel"], "{report:?}");
    env.fake.add_alert(alert("t2", ago(4), "Okta.X", "t2"), ip_event("198.51.100.7"));
    p.drain().await.unwrap();
    assert_eq!(p.ledger().get("t2").unwrap().unwrap().verdict.as_deref(), Some("unknown"), "the new table served");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_batch_of_writes_loses_nothing_and_duplicates_nothing() {
    use std::os::unix::net::UnixDatagram;
    let env = Env::new(Api::Rest).await;
    for i in 0..3 {
        env.fake.add_alert(alert(&format!("early{i}"), ago(30 - i), "Okta.X", "t"), ip_event("10.0.0.1"));
    }
    let notify_path = env.dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_nonblocking(true).unwrap();
    let cfg = env.config("[poll]\ninterval = \"300ms\"\n[log]\nformat = \"text\"\n");
    let log = env.dir.path().join("daemon.log");
    let mut child = crate::bin()
        .args(["run", "-c", cfg.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("RUST_LOG")
        .stdout(std::fs::File::create(env.dir.path().join("stdout.log")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill").args([sig, &pid]).status().unwrap().success();
        assert!(ok, "kill {sig}");
    };
    eventually(Duration::from_secs(20), "the first tick", async || {
        (0..3).all(|i| env.comment_count(&format!("early{i}")) == 1)
    })
    .await;
    signal("-HUP");
    // A batch of writes, slowed down so the signal lands in the middle of it.
    env.fake.set_latency(Duration::from_millis(40));
    for i in 0..40 {
        env.fake.add_alert(
            alert(&format!("b{i:02}"), ago(20) + chrono::Duration::seconds(i), "Okta.X", "t"),
            ip_event("10.0.0.1"),
        );
    }
    let batch = |env: &Env| (0..40).filter(|i| env.comment_count(&format!("b{i:02}")) > 0).count();
    eventually(Duration::from_secs(20), "the batch under way", async || batch(&env) >= 3).await;
    signal("-TERM");
    let stopped = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the daemon did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert!(stopped.success(), "{stopped:?}");
    let done_at_stop = batch(&env);
    assert!(done_at_stop < 40, "the signal landed before the batch was done ({done_at_stop})");
    for i in 0..40 {
        assert!(env.comment_count(&format!("b{i:02}")) <= 1, "b{i:02} commented twice");
    }
    // A restart finishes the batch: every alert exactly once.
    env.fake.set_latency(Duration::ZERO);
    let out = crate::daemon::run_bin(vec!["once".into(), "-c".into(), cfg.display().to_string()]).await;
    assert!(out.status.success(), "{}", crate::text(&out.stderr));
    for i in 0..40 {
        assert_eq!(env.comment_count(&format!("b{i:02}")), 1, "b{i:02}");
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    // The file did not change, so only SIGHUP reloads it.
    assert!(logged.contains("SIGHUP: reloading every table") && logged.contains("table reloaded"), "{logged}");
    let mut said = String::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = notify.recv(&mut buf) {
        said.push_str(&String::from_utf8_lossy(&buf[..n]));
        said.push('\n');
    }
    let first = |what: &str| said.find(what).unwrap_or_else(|| panic!("{what} not sent to systemd: {said}"));
    assert!(first("READY=1") < first("WATCHDOG=1") && first("WATCHDOG=1") < first("STOPPING=1"), "{said}");
}
