//! Secret hygiene: every command and the failure paths around them, run with a canary API key and a
//! canary webhook secret at trace level; neither may appear in anything the daemon prints, logs,
//! answers or writes to Panther.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::daemon::{ago, alert, ip_event, run_bin, Api, Env, KEY};

const HOOK: &str = "CANARY-HOOK-SECRET-9f3e";

fn leaks(what: &str, text: &str) {
    assert!(!text.contains(KEY), "{what} shows the API key:\n{text}");
    assert!(!text.contains(HOOK), "{what} shows the webhook secret:\n{text}");
}

fn printed(out: &std::process::Output) -> String {
    format!("{}{}", crate::text(&out.stdout), crate::text(&out.stderr))
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn no_command_or_failure_path_shows_the_api_key_or_the_webhook_secret() {
    let env = Env::new(Api::Rest).await;
    env.fake.add_alert(alert("s1", ago(5), "Okta.X", "t"), ip_event("198.51.100.7"));
    let extra = format!(
        "set_status = \"TRIAGED\"\n[log]\nlevel = \"trace\"\nformat = \"json\"\n\
         [webhook]\nlisten = \"127.0.0.1:0\"\nsecret = \"{HOOK}\"\n[server]\nlisten = \"127.0.0.1:0\"\n"
    );
    let cfg = env.config(&extra).display().to_string();
    let c = || vec!["-c".to_string(), cfg.clone()];
    let mut runs: Vec<(String, Vec<String>)> = vec![
        ("check-config".into(), [vec!["check-config".into()], c()].concat()),
        ("once --dry-run".into(), [vec!["once".into()], c(), vec!["--dry-run".into()]].concat()),
        ("once".into(), [vec!["once".into()], c()].concat()),
        ("triage".into(), [vec!["triage".into(), "s1".into()], c()].concat()),
        ("triage of an unknown alert".into(), [vec!["triage".into(), "nope".into()], c()].concat()),
    ];
    // Failure paths: a bad value beside the secrets, a TOML syntax error on the key's own line,
    // a refused key, Panther unreachable.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let bad = env.dir.path().join("bad.toml");
    std::fs::write(&bad, text.replace("requests_per_second = 1000", "requests_per_second = 0")).unwrap();
    let broken = env.dir.path().join("broken.toml");
    std::fs::write(&broken, text.replace(&format!("api_key = \"{KEY}\""), &format!("api_key = \"{KEY}"))).unwrap();
    let refused_fake = panther_triage::fake_panther::FakePanther::new("another-key");
    let refused_server = refused_fake.spawn().await.unwrap();
    let refused = env.dir.path().join("refused.toml");
    std::fs::write(&refused, text.replace(&env.server.url(), &refused_server.url())).unwrap();
    let gone = env.dir.path().join("gone.toml");
    std::fs::write(&gone, text.replace(&env.server.url(), "http://127.0.0.1:9")).unwrap();
    for (name, path) in [("a bad value", &bad), ("a syntax error", &broken)] {
        runs.push((
            format!("check-config with {name}"),
            vec!["check-config".into(), "-c".into(), path.display().to_string()],
        ));
    }
    for (name, path) in [("a refused key", &refused), ("Panther unreachable", &gone)] {
        runs.push((format!("once with {name}"), vec!["once".into(), "-c".into(), path.display().to_string()]));
    }
    for (what, args) in runs {
        let out = run_bin(args).await;
        leaks(&what, &printed(&out));
    }
    // The daemon itself: webhook refusals, then SIGTERM.
    let log = env.dir.path().join("run.log");
    let mut child = crate::bin()
        .args(["run", "-c", &cfg])
        .env_remove("RUST_LOG")
        .stdout(std::fs::File::create(env.dir.path().join("run.out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let hook_url = loop {
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        let line = logged.lines().find(|l| l.contains("Custom Webhook deliveries"));
        if let Some(l) = line {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            break format!("http://{}/webhook", v["listen"].as_str().unwrap());
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the daemon did not start: {logged}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let http = reqwest::Client::new();
    for secret in ["", "wrong", &HOOK[..HOOK.len() - 1]] {
        let resp = http
            .post(&hook_url)
            .header("X-Panther-Triage-Secret", secret)
            .json(&json!({"alertId": "s2"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        leaks("a refused webhook answer", &resp.text().await.unwrap());
    }
    let ok = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "{status:?}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("\"level\":\"TRACE\"") || logged.contains("TRACE"), "trace level was on");
    leaks("the daemon's log", &logged);
    leaks("the daemon's stdout", &std::fs::read_to_string(env.dir.path().join("run.out")).unwrap());
    for c in env.fake.comments("s1") {
        leaks("a comment", c["body"].as_str().unwrap());
    }
    // What reached Panther carried the key where it belongs, and only there.
    for r in env.fake.requests() {
        assert_eq!(r.api_key.as_deref(), Some(KEY));
        leaks("a request body", r.body.as_deref().unwrap_or(""));
    }
}
