//! The daemon's commands: `run`, `once`, `triage`, `check-config`, `demo`. Each loads the
//! configuration, builds a [`Pipeline`] over the REST client, and reports; exit codes follow
//! DESIGN.md (0 ok, 1 runtime failure, 2 bad configuration or usage).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use clap::Args;

use crate::cli::UsageError;
use crate::config::{Api, Config, LogFormat};
use crate::fake_panther::FakePanther;
use crate::ledger::Ledger;
use crate::panther::graphql::GraphqlSettings;
use crate::panther::rest::RestSettings;
use crate::panther::{Client, GraphqlClient, PantherApi as _, RestClient};
use crate::poller::{Pipeline, Planned, ProcessReport, TickReport};
use crate::tables;

/// How long a stopping daemon lets the alert in hand finish (DESIGN.md invariant 7).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The configuration file (TOML); every key can be overridden by PANTHER_TRIAGE__SECTION__KEY.
    #[arg(short = 'c', long = "config", value_name = "FILE", env = "PANTHER_TRIAGE_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct OnceArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Write nothing to Panther (and change nothing in the state file); print what would be written.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct TriageArgs {
    /// The Panther alert ID.
    pub alert_id: String,
    #[command(flatten)]
    pub config: ConfigArg,
    /// Write nothing to Panther (and change nothing in the state file); print what would be written.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct CheckHealthArgs {
    /// The readiness URL of a running daemon (its `[server] listen` address).
    #[arg(long, default_value = "http://127.0.0.1:9464/readyz")]
    pub url: String,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's state and files in this directory instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The transport to drive the fake with.
    #[arg(long, default_value = "rest", value_parser = ["rest", "graphql"])]
    pub api: String,
}

fn load_config(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| UsageError(e.to_string()).into())
}

/// Logs go to stderr, as JSON lines or text; `RUST_LOG` overrides `log.level`.
pub fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: a file or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    // A second init (tests calling commands in one process) keeps the first subscriber.
    let _ = match cfg.log.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

/// The pipeline the configuration describes. `dry_run` works on a private copy of the ledger.
pub fn build(cfg: Config, dry_run: bool) -> anyhow::Result<Pipeline<Client>> {
    let dry_run = dry_run || cfg.sync.dry_run;
    let ledger = if dry_run { Ledger::snapshot(&cfg.state_path)? } else { Ledger::open(&cfg.state_path)? };
    let loaded = tables::load_all(&cfg.tables, Utc::now()).map_err(|e| UsageError(format!("{e}")))?;
    for t in &loaded {
        tracing::info!(table = t.name(), summary = %t.report.summary(&t.spec), "table loaded");
    }
    let tables = Arc::new(tables::TableSet::new(loaded));
    Ok(Pipeline::new(client(&cfg)?, ledger, Arc::new(cfg), tables, dry_run))
}

/// The Panther client `panther.api` asks for.
pub fn client(cfg: &Config) -> anyhow::Result<Client> {
    let rest = RestClient::new(RestSettings {
        url: cfg.panther.url.clone(),
        api_key: cfg.panther.api_key.clone(),
        requests_per_second: cfg.panther.requests_per_second,
        timeout: cfg.panther.timeout,
        retry: cfg.panther.retry,
    })?;
    Ok(match cfg.panther.api {
        Api::Rest => Client::Rest(rest),
        Api::Graphql => Client::Graphql(GraphqlClient::new(
            rest,
            GraphqlSettings {
                events_per_alert: cfg.enrich.events_per_alert,
                comment_batch: cfg.panther.comment_batch,
                retry: cfg.panther.retry,
            },
        )),
    })
}

pub fn check_config(a: CheckConfigArgs) -> anyhow::Result<()> {
    let cfg = load_config(&a.config.config)?;
    print!("# effective configuration of {} (secrets redacted)\n{}", cfg.file.display(), cfg.redacted());
    Ok(())
}

/// The configuration (which may hold secrets) and the secret files should be the service's alone.
fn warn_if_readable_by_others(cfg: &Config) {
    use crate::config::SecretSource;
    let mut files = vec![("configuration", cfg.file.clone())];
    if let SecretSource::File(p) = &cfg.panther.api_key_source {
        files.push(("API key file", p.clone()));
    }
    if let Some(SecretSource::File(p)) = cfg.webhook.as_ref().map(|w| &w.secret_source) {
        files.push(("webhook secret file", p.clone()));
    }
    for (what, path) in files {
        if crate::private_file::readable_by_others(&path) {
            tracing::warn!(stage = "start", file = %path.display(), "the {what} is readable by other users; `chmod o-r` it (secrets must be the service's alone)");
        }
    }
}

/// What every daemon command starts with: the checked configuration, logging, a runtime, the pipeline.
fn start(config: &Path, dry_run: bool) -> anyhow::Result<(tokio::runtime::Runtime, Pipeline<Client>)> {
    let cfg = load_config(config)?;
    init_logging(&cfg);
    warn_if_readable_by_others(&cfg);
    let rt = runtime()?;
    Ok((rt, build(cfg, dry_run)?))
}

pub fn once(a: OnceArgs) -> anyhow::Result<()> {
    let (rt, p) = start(&a.config.config, a.dry_run)?;
    let report = rt.block_on(p.drain()).context("the poll-and-triage cycle failed")?;
    print_planned(&p.take_planned());
    println!("{}", summary(&report));
    Ok(())
}

pub fn triage(a: TriageArgs) -> anyhow::Result<()> {
    let (rt, p) = start(&a.config.config, a.dry_run)?;
    let (entry, report) = rt.block_on(p.triage_one(&a.alert_id)).with_context(|| format!("alert {}", a.alert_id))?;
    print_planned(&p.take_planned());
    print!("{}", triage_outcome(&entry, &report, p.dry_run()));
    Ok(())
}

/// What `triage ALERT_ID` prints of the alert it investigated.
pub fn triage_outcome(entry: &crate::ledger::Entry, report: &ProcessReport, dry_run: bool) -> String {
    let mut out = format!("alert {}: {}\n", entry.id, entry.stage.as_str());
    if let Some(v) = &entry.verdict {
        out += &format!("verdict: {v}\n");
    }
    if let Some(r) = &entry.reason {
        out += &format!("reason: {r}\n");
    }
    if let Some(o) = &entry.original_id {
        out += &format!("duplicate of: {o}\n");
    }
    if let Some(wait) = report.waiting {
        // Otherwise the stage alone (`writing`) does not say why nothing was posted.
        out += &format!(
            "comment: held back: an earlier attempt may still be stored by Panther; it is looked for again, \
             and posted if missing, by a tick or `triage {}` from {}s on\n",
            entry.id,
            wait.as_secs_f64().ceil()
        );
    }
    if !dry_run {
        if let Some(body) = &report.first_comment {
            out += &format!("comment:\n{body}\n");
        }
    }
    out
}

pub fn run(a: RunArgs) -> anyhow::Result<()> {
    let (rt, p) = start(&a.config.config, false)?;
    rt.block_on(async {
        let listeners = Listeners::bind(p.config()).await?;
        daemon(Arc::new(p), listeners, shutdown_signal()).await
    })
}

/// The daemon's listening sockets, bound before anything else starts so that a taken or wrong
/// address fails the start at once.
pub struct Listeners {
    pub server: Option<tokio::net::TcpListener>,
    pub webhook: Option<tokio::net::TcpListener>,
}

impl Listeners {
    pub async fn bind(cfg: &Config) -> anyhow::Result<Listeners> {
        async fn bind(
            key: &str,
            addr: Option<std::net::SocketAddr>,
        ) -> anyhow::Result<Option<tokio::net::TcpListener>> {
            match addr {
                None => Ok(None),
                Some(a) => tokio::net::TcpListener::bind(a)
                    .await
                    .map(Some)
                    .with_context(|| format!("cannot listen on {a} ({key}); is another process using it?")),
            }
        }
        Ok(Listeners {
            server: bind("server.listen", cfg.server_listen).await?,
            webhook: bind("webhook.listen", cfg.webhook.as_ref().map(|w| w.listen)).await?,
        })
    }
}

/// Tells systemd (`Type=notify`) how the daemon is doing; a no-op outside systemd.
fn notify_systemd(state: sd_notify::NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!(stage = "systemd", error = %e, "cannot notify systemd");
    }
}

/// Everything `run` does: the health and metrics server, the webhook receiver, table refresh
/// (and SIGHUP), the poll loop, and systemd's notifications, until `shutdown` resolves.
pub async fn daemon(
    p: Arc<Pipeline<Client>>,
    listeners: Listeners,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let cfg = p.config();
    tracing::info!(stage = "start", version = env!("CARGO_PKG_VERSION"), "panther-triage running");
    let metrics = crate::metrics::install().context("cannot start the metrics recorder")?;
    p.tables().publish_metrics();
    let health = Arc::new(crate::health::Health::new(cfg.poll.interval));
    health.set_ledger_open(true);
    health.set_tables_loaded(true);
    // Every helper task stops when this flips.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    if let Some(l) = listeners.server {
        tracing::info!(stage = "start", listen = %l.local_addr()?, "health and metrics at /healthz, /readyz, /metrics");
        tokio::spawn(crate::server::serve(l, health.clone(), metrics, stopped()));
    }
    if let (Some(l), Some(w)) = (listeners.webhook, &cfg.webhook) {
        tracing::info!(stage = "start", listen = %l.local_addr()?, "Panther Custom Webhook deliveries at POST /webhook");
        tokio::spawn(crate::webhook::serve(l, crate::webhook::router(p.clone(), w), stopped()));
    }
    let (hup_tx, hup_rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(tables::refresh_loop(p.tables().clone(), Duration::from_secs(5), hup_rx, stopped()));
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
        let stop = stopped();
        tokio::spawn(async move {
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    Some(()) = hup.recv() => {
                        tracing::info!(stage = "tables", "SIGHUP: reloading every table");
                        let _ = hup_tx.try_send(());
                    }
                }
            }
        });
    }
    // Say at once whether the URL and key work; a failure is logged, not fatal: the loop retries.
    match p.api.ping().await {
        Ok(said) => tracing::info!(stage = "start", panther = %said, "connected to Panther"),
        Err(e) => tracing::error!(stage = "start", error = %e, "cannot use Panther yet; polling will keep trying"),
    }
    notify_systemd(sd_notify::NotifyState::Ready);
    let shutdown = async {
        shutdown.await;
        notify_systemd(sd_notify::NotifyState::Stopping);
    };
    let after_tick = |r: &Result<TickReport, crate::poller::PipelineError>| match r {
        Ok(_) => {
            health.poll_succeeded();
            notify_systemd(sd_notify::NotifyState::Watchdog);
        }
        Err(e) => health.poll_failed(&e.to_string()),
    };
    p.run_with(shutdown, SHUTDOWN_GRACE, after_tick).await;
    let _ = stop_tx.send(true);
    tracing::info!(stage = "shutdown", "stopped");
    Ok(())
}

/// Asks a running daemon whether it is ready (for container health checks): exit 0 when it is.
pub fn check_health(a: CheckHealthArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the runtime")?;
    rt.block_on(async {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
        let resp = http.get(&a.url).send().await.with_context(|| format!("no answer from {}", a.url))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status.is_success() {
            println!("{}", body.trim());
            Ok(())
        } else {
            anyhow::bail!("not ready (HTTP {}): {}", status.as_u16(), body.trim().replace('\n', "; "))
        }
    })
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn print_planned(planned: &[Planned]) {
    for p in planned {
        println!("{p}");
    }
}

pub fn summary(r: &TickReport) -> String {
    let verdicts: Vec<String> = r.process.by_verdict.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!(
        "listed {} alert(s), {} new; triaged {} ({}); filtered {}; duplicates {}; failed {}; deferred {}; comments posted {}; alert updates {}{}",
        r.poll.listed,
        r.poll.new,
        r.process.triaged,
        if verdicts.is_empty() { "-".to_owned() } else { verdicts.join(", ") },
        r.process.filtered,
        r.process.duplicates,
        r.process.failed,
        r.process.deferred,
        r.process.comments_posted,
        r.process.patches,
        if r.poll.unreadable > 0 { format!("; {} unreadable alert(s), see the log", r.poll.unreadable) } else { String::new() },
    )
}

/// The demo: the bundled fake Panther on loopback, seeded with `fixtures/demo/`, and the real
/// pipeline against it.
pub fn demo(a: DemoArgs) -> anyhow::Result<()> {
    let tmp;
    let dir = match a.dir {
        Some(d) => {
            std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
            d
        }
        None => {
            tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    let rt = runtime()?;
    rt.block_on(demo_in(&dir, &a.api))
}

const DEMO_KEY: &str = "demo-api-key";
const DEMO_ALERTS: &str = include_str!("../fixtures/demo/alerts.jsonl");
const DEMO_TABLE: &str = include_str!("../fixtures/demo/anomali.jsonl");
const DEMO_TOR: &str = include_str!("../fixtures/demo/tor_exit_nodes.txt");
const DEMO_CONFIG: &str = include_str!("../fixtures/demo/config.toml");

/// The demo's alerts with their times moved so the newest is a few minutes old: the fixture keeps
/// fixed times, the poller looks back from now.
pub fn demo_seed(now: chrono::DateTime<Utc>) -> anyhow::Result<String> {
    let base = crate::panther::parse_time("2026-01-01T00:00:00Z").context("demo base time")?;
    // Whole seconds: the fixture's times stay readable.
    let shift = chrono::Duration::seconds((now - base - chrono::Duration::hours(2)).num_seconds());
    let mut out = String::new();
    for (i, line) in DEMO_ALERTS.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("fixtures/demo/alerts.jsonl:{}", i + 1))?;
        for key in ["createdAt", "firstEventOccurredAt", "lastReceivedEventAt"] {
            if let Some(t) = v["alert"][key].as_str().and_then(crate::panther::parse_time) {
                v["alert"][key] = serde_json::Value::String(crate::panther::format_time(t + shift));
            }
        }
        out.push_str(&v.to_string());
        out.push('\n');
    }
    Ok(out)
}

async fn demo_in(dir: &Path, api: &str) -> anyhow::Result<()> {
    let seed = dir.join("fake-panther-alerts.jsonl");
    std::fs::write(&seed, demo_seed(Utc::now())?)?;
    std::fs::write(dir.join("anomali.jsonl"), DEMO_TABLE)?;
    std::fs::write(dir.join("tor_exit_nodes.txt"), DEMO_TOR)?;
    let fake = FakePanther::from_seed_file(DEMO_KEY, &seed)?;
    fake.add_user("u-oncall", "oncall@acme.example");
    let server = fake.spawn().await.context("cannot start the fake Panther on loopback")?;
    let config_path = dir.join("config.toml");
    let text = DEMO_CONFIG.replace("http://127.0.0.1:1", &server.url()).replacen(
        "[panther]\n",
        &format!("[panther]\napi = \"{api}\"\n"),
        1,
    );
    std::fs::write(&config_path, &text)?;
    let cfg = Config::from_toml(&config_path, &text, Vec::new())?;
    init_logging(&cfg);
    let total = DEMO_ALERTS.lines().filter(|l| !l.trim().is_empty()).count();
    println!("demo: fake Panther on {} with {total} alerts; state in {}", server.url(), cfg.state_path.display());
    let p = tokio::task::block_in_place(|| build(cfg, false))?;
    let report = p.drain().await.context("the demo's poll-and-triage cycle failed")?;
    println!("{}", summary(&report));
    if let Some(first) = report.process.first_comment {
        println!("\nfirst comment posted:\n{first}");
    }
    let writes = fake.requests().iter().filter(|r| r.method != "GET").count();
    println!("\nthe fake Panther received {writes} write request(s); run the demo again and it posts as many: each run starts empty");
    server.shutdown().await?;
    Ok(())
}
