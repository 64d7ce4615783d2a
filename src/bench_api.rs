//! `panther-triage bench-api`: what a backlog costs in API calls, per transport.
//!
//! A backlog of alerts is drained through the fake Panther on loopback with a per-request latency and
//! the client's rate limit set (`panther.requests_per_second`), once per transport. Printed per
//! transport: API calls per triaged alert, alerts per second, and that rate as a share of the bound
//! the rate limit sets (rate limit / calls per alert): the share shows whether the daemon keeps the
//! budget Panther grants it busy, the calls per alert how big that budget must be. Re-triage is off
//! here: it is a separate, bounded budget (`retriage.max_per_tick` checks, one request each, a tick).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::Utc;
use clap::Args;
use serde_json::json;

use crate::config::Config;
use crate::fake_panther::FakePanther;
use crate::panther::format_time;

#[derive(Debug, Args)]
pub struct ApiBenchArgs {
    /// Alerts in the backlog.
    #[arg(long, default_value_t = 5000)]
    pub alerts: u32,
    /// The client's rate limit, requests per second.
    #[arg(long, default_value_t = 20)]
    pub rps: u32,
    /// The fake's latency for every request.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    /// Events each alert holds.
    #[arg(long, default_value_t = 3)]
    pub events: u32,
    /// Transports to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "graphql,rest")]
    pub transports: Vec<String>,
}

/// What one drain cost.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiFigures {
    pub transport: String,
    pub alerts: u32,
    pub triaged: u64,
    pub comments: u64,
    pub calls: u64,
    pub elapsed: Duration,
    pub rps: u32,
}

impl ApiFigures {
    pub fn calls_per_alert(&self) -> f64 {
        self.calls as f64 / self.triaged.max(1) as f64
    }

    pub fn alerts_per_second(&self) -> f64 {
        self.triaged as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The most alerts per second the rate limit allows at this cost.
    pub fn bound(&self) -> f64 {
        self.rps as f64 / self.calls_per_alert()
    }

    /// The drain's speed as a share of the fastest the rate limiter allows for these calls. The
    /// limiter (governor) starts with a burst of `rps` requests, so the shortest possible drain is
    /// `(calls - rps) / rps` seconds, not `calls / rps`.
    pub fn share_of_bound(&self) -> f64 {
        let fastest = self.calls.saturating_sub(u64::from(self.rps)) as f64 / self.rps as f64;
        100.0 * fastest / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The one indicator the benchmarks' intel table knows (one alert in ten carries it).
const KNOWN_BAD_IP: &str = "198.51.100.7";

/// The benchmarks' intel table: one active, high-confidence row for [`KNOWN_BAD_IP`].
fn write_intel(dir: &std::path::Path) -> anyhow::Result<()> {
    let row = json!({"id": "1", "value": KNOWN_BAD_IP, "match": [KNOWN_BAD_IP], "type": "ip", "confidence": 95,
                     "status": "active", "modified_ts": "2025-01-01 00:00:00", "expiration_ts": "", "threat_type": "c2"});
    std::fs::write(dir.join("intel.jsonl"), row.to_string())?;
    Ok(())
}

pub fn run(a: ApiBenchArgs) -> anyhow::Result<()> {
    let rt = crate::app::runtime()?;
    println!(
        "bench-api: {} alerts x {} events, rate limit {} req/s, latency {} per request",
        a.alerts,
        a.events,
        a.rps,
        humantime::format_duration(a.latency)
    );
    println!(
        "{:<8} {:>9} {:>8} {:>15} {:>10} {:>9} {:>10} {:>9}",
        "api", "triaged", "calls", "calls/alert", "seconds", "alerts/s", "bound/s", "of bound"
    );
    for t in &a.transports {
        let f = rt.block_on(drain_backlog(t, a.alerts, a.events, a.rps, a.latency))?;
        println!(
            "{:<8} {:>9} {:>8} {:>15.4} {:>10.1} {:>9.2} {:>10.2} {:>8.1}%",
            f.transport,
            f.triaged,
            f.calls,
            f.calls_per_alert(),
            f.elapsed.as_secs_f64(),
            f.alerts_per_second(),
            f.bound(),
            f.share_of_bound()
        );
        if f.comments != u64::from(a.alerts) {
            bail!("{}: {} comments for {} alerts: the drain did not finish", f.transport, f.comments, a.alerts);
        }
    }
    Ok(())
}

/// Seeds a fake with `alerts` alerts (one in ten with an indicator the intel table knows), drains it
/// with the `transport` client, and counts the requests the fake received.
pub async fn drain_backlog(
    transport: &str,
    alerts: u32,
    events: u32,
    rps: u32,
    latency: Duration,
) -> anyhow::Result<ApiFigures> {
    // A key of its own: the rate limiter is per key and per process.
    let key = format!("bench-{transport}-{rps}-{}", latency.as_micros());
    let fake = FakePanther::new(&key);
    let now = Utc::now();
    for i in 0..alerts {
        // Spread over the last 100 minutes, oldest first.
        let created =
            now - chrono::Duration::milliseconds(6_000_000 * i64::from(alerts - i) / i64::from(alerts.max(1)));
        let alert = json!({
            "id": format!("bench-{i:06}"), "type": "ALERT", "status": "OPEN", "severity": "HIGH",
            "title": format!("Suspicious login {i}"), "createdAt": format_time(created),
            "detection": {"id": format!("Okta.Rule{}", i % 7), "type": "RULE"},
        });
        let evs = (0..events)
            .map(|j| {
                let ip =
                    if i % 10 == 0 && j == 0 { KNOWN_BAD_IP.to_owned() } else { format!("10.0.{}.{}", i % 250, j) };
                json!({"p_log_type": "Okta.SystemLog", "p_any_ip_addresses": [ip], "seq": j})
            })
            .collect();
        fake.add_alert(alert, evs);
    }
    let server = fake.spawn().await.context("cannot start the fake Panther on loopback")?;
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    write_intel(dir.path())?;
    let text = format!(
        "[panther]\nurl = \"{}\"\napi_key = \"{key}\"\napi = \"{transport}\"\nrequests_per_second = {rps}\n\
         timeout = \"30s\"\n[poll]\nlookback = \"3h\"\n[retriage]\nmax_per_tick = 0\n\
         [[tables]]\nname = \"intel\"\npath = \"intel.jsonl\"\nformat = \"anomali\"\n\
         [[triage.rules]]\nname = \"known bad\"\nmin_confidence = 80\nverdict = \"malicious\"\n",
        server.url()
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text)?;
    let cfg = Config::from_toml(&path, &text, Vec::new())?;
    let p = tokio::task::block_in_place(|| crate::app::build(cfg, false))?;
    fake.set_latency(latency);
    let started = Instant::now();
    let report = p.drain().await.context("the drain failed")?;
    let elapsed = started.elapsed();
    let calls = fake.requests().len() as u64;
    server.shutdown().await.ok();
    Ok(ApiFigures {
        transport: transport.to_owned(),
        alerts,
        triaged: report.process.triaged,
        comments: report.process.comments_posted,
        calls,
        elapsed,
        rps,
    })
}

#[derive(Debug, Args)]
pub struct WebhookBenchArgs {
    /// Deliveries, one alert each, sent one after another.
    #[arg(long, default_value_t = 1000)]
    pub deliveries: u32,
    /// The fake's latency for every request.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    /// The transport the daemon uses to read the alert and write the comment.
    #[arg(long, default_value = "rest", value_parser = ["rest", "graphql"])]
    pub api: String,
}

/// Time from a webhook delivery (the POST sent) to its comment stored at the fake, per delivery.
pub async fn webhook_latency(api: &str, deliveries: u32, latency: Duration) -> anyhow::Result<Vec<Duration>> {
    let key = format!("bench-webhook-{api}");
    let fake = FakePanther::new(&key);
    let server = fake.spawn().await.context("cannot start the fake Panther on loopback")?;
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    std::fs::write(dir.path().join("intel.jsonl"), "")?;
    let secret = "bench-secret";
    let text = format!(
        "[panther]\nurl = \"{}\"\napi_key = \"{key}\"\napi = \"{api}\"\nrequests_per_second = 1000\n\
         [poll]\ninterval = \"1h\"\n[retriage]\nmax_per_tick = 0\n\
         [[tables]]\nname = \"intel\"\npath = \"intel.jsonl\"\nformat = \"anomali\"\n\
         [webhook]\nlisten = \"127.0.0.1:0\"\nsecret = \"{secret}\"\n[log]\nlevel = \"warn\"\n",
        server.url()
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text)?;
    let cfg = Config::from_toml(&path, &text, Vec::new())?;
    let header = cfg.webhook.as_ref().map(|w| w.secret_header.clone()).unwrap_or_default();
    let p = std::sync::Arc::new(tokio::task::block_in_place(|| crate::app::build(cfg, false))?);
    let listeners = crate::app::Listeners::bind(p.config()).await?;
    let hook = match &listeners.webhook {
        Some(l) => format!("http://{}/webhook", l.local_addr()?),
        None => bail!("no webhook listener"),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(crate::app::daemon(p.clone(), listeners, async {
        let _ = stopped.await;
    }));
    fake.set_latency(latency);
    // The daemon's first tick polls at once: let it finish before the deliveries start.
    tokio::time::sleep(Duration::from_millis(200) + latency * 4).await;
    let http = reqwest::Client::new();
    let mut times = Vec::with_capacity(deliveries as usize);
    for i in 0..deliveries {
        let id = format!("hook-{i:06}");
        let created = format_time(Utc::now());
        fake.add_alert(
            json!({"id": id, "type": "ALERT", "status": "OPEN", "severity": "HIGH", "title": "t",
                   "createdAt": created, "detection": {"id": "Okta.Rule", "type": "RULE"}}),
            vec![json!({"p_log_type": "Okta.SystemLog", "p_any_ip_addresses": ["10.0.0.1"]})],
        );
        let body = json!({"id": "Okta.Rule", "alertId": id, "createdAt": created, "severity": "HIGH", "title": "t"});
        let started = Instant::now();
        let resp = http.post(&hook).header(header.as_str(), secret).json(&body).send().await?;
        if !resp.status().is_success() {
            bail!("delivery {id}: HTTP {}", resp.status());
        }
        loop {
            if !fake.comments(&id).is_empty() {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("delivery {id}: no comment after 30s");
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        times.push(started.elapsed());
    }
    let _ = stop.send(());
    let _ = daemon.await;
    server.shutdown().await.ok();
    Ok(times)
}

pub fn run_webhook(a: WebhookBenchArgs) -> anyhow::Result<()> {
    let rt = crate::app::runtime()?;
    let mut t = rt.block_on(webhook_latency(&a.api, a.deliveries, a.latency))?;
    t.sort();
    let at = |q: f64| t[((t.len() as f64 * q).ceil() as usize).clamp(1, t.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "bench-webhook: {} deliveries over {}, latency {} per request: delivery to comment p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        t.len(),
        a.api,
        humantime::format_duration(a.latency),
        ms(at(0.50)),
        ms(at(0.99)),
        ms(at(1.0))
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// Alerts created during the run.
    #[arg(long, default_value_t = 20_000)]
    pub alerts: u32,
    /// Alerts created per second (keep it under the bound: rate limit / calls per alert).
    #[arg(long, default_value_t = 100)]
    pub alert_rate: u32,
    /// The daemon's rate limit, requests per second.
    #[arg(long, default_value_t = 20)]
    pub rps: u32,
    /// The fake's latency for every request.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    #[arg(long, default_value = "graphql", value_parser = ["rest", "graphql"])]
    pub api: String,
    /// `poll.overlap`: every poll re-reads this much behind the watermark.
    #[arg(long, default_value = "10m")]
    pub overlap: String,
}

/// A process's resident set now and at its peak, in bytes (Linux `/proc/<pid>/status`).
fn rss_of(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| {
        status.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse::<u64>().ok().map(|k| k * 1024)
    };
    Some((kb("VmRSS:")?, kb("VmHWM:")?))
}

/// The soak run: the real daemon (`run`, a child process, so its memory is its own) against the
/// fake while alerts arrive at a steady rate; prints throughput against the bound, the daemon's
/// RSS before and after and at its peak, and alert-to-comment latency.
pub fn run_soak(a: SoakArgs) -> anyhow::Result<()> {
    let rt = crate::app::runtime()?;
    rt.block_on(soak(a))
}

async fn soak(a: SoakArgs) -> anyhow::Result<()> {
    let key = "soak-key";
    let fake = FakePanther::new(key);
    let server = fake.spawn().await.context("cannot start the fake Panther on loopback")?;
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    write_intel(dir.path())?;
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[panther]\nurl = \"{}\"\napi_key = \"{key}\"\napi = \"{}\"\nrequests_per_second = {}\ntimeout = \"30s\"\n\
             [poll]\ninterval = \"1s\"\nlookback = \"1h\"\noverlap = \"{}\"\n[retriage]\nmax_per_tick = 0\n\
             [[tables]]\nname = \"intel\"\npath = \"intel.jsonl\"\nformat = \"anomali\"\n\
             [[triage.rules]]\nname = \"known bad\"\nmin_confidence = 80\nverdict = \"malicious\"\n\
             [log]\nlevel = \"warn\"\n",
            server.url(),
            a.api,
            a.rps,
            a.overlap
        ),
    )?;
    fake.set_latency(a.latency);
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut child = std::process::Command::new(exe)
        .args(["run", "-c"])
        .arg(&cfg)
        .stderr(std::fs::File::create(dir.path().join("daemon.log"))?)
        .spawn()
        .context("cannot start the daemon")?;
    let pid = child.id();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (before, _) = rss_of(pid).context("cannot read the daemon's memory (Linux /proc only)")?;
    let started = Instant::now();
    let mut created = Vec::with_capacity(a.alerts as usize);
    let every = Duration::from_secs_f64(1.0 / f64::from(a.alert_rate.max(1)));
    for i in 0..a.alerts {
        let due = started + every * i;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let now = Utc::now();
        let ip = if i % 10 == 0 { KNOWN_BAD_IP.to_owned() } else { format!("10.1.{}.{}", i % 250, i % 7) };
        fake.add_alert(
            json!({"id": format!("soak-{i:06}"), "type": "ALERT", "status": "OPEN", "severity": "HIGH",
                   "title": format!("t{i}"), "createdAt": format_time(now), "detection": {"id": "Okta.Rule", "type": "RULE"}}),
            vec![json!({"p_log_type": "Okta.SystemLog", "p_any_ip_addresses": [ip]})],
        );
        created.push(now);
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while fake.comments_created() < u64::from(a.alerts) {
        if Instant::now() > deadline {
            bail!("only {} of {} alerts were commented after 10 minutes", fake.comments_created(), a.alerts);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (after, peak) = rss_of(pid).context("cannot read the daemon's memory")?;
    let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    let mut latencies: Vec<f64> = fake
        .all_comments()
        .iter()
        .filter_map(|c| {
            let i: usize = c["alertId"].as_str()?.strip_prefix("soak-")?.parse().ok()?;
            let at = crate::panther::parse_time(c["createdAt"].as_str()?)?;
            Some((at - created[i]).num_milliseconds() as f64 / 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1];
    let rate = f64::from(a.alerts) / elapsed.as_secs_f64();
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "soak: {} alerts over {} at {}/s, rate limit {} req/s, latency {}, overlap {}: done in {:.0} s, {:.1} alerts/s ({:.0}% of the rate they arrived at)",
        a.alerts,
        a.api,
        a.alert_rate,
        a.rps,
        humantime::format_duration(a.latency),
        a.overlap,
        elapsed.as_secs_f64(),
        rate,
        100.0 * rate / f64::from(a.alert_rate)
    );
    println!(
        "soak: daemon RSS {:.1} MiB before, {:.1} MiB after, peak {:.1} MiB; alert created to comment p50 {:.2} s, p99 {:.2} s",
        mb(before),
        mb(after),
        mb(peak),
        at(0.5),
        at(0.99)
    );
    server.shutdown().await.ok();
    Ok(())
}
