//! Configuration: one TOML file plus `PANTHER_TRIAGE__SECTION__KEY` environment overrides, read
//! in two steps (zero-to-production style): raw settings as written, then [`Config`], the checked,
//! typed settings the daemon runs on. Checking collects every problem (key, value, fix) instead of
//! stopping at the first, so one `check-config` run shows the whole list.
//!
//! Relative paths in the file (tables, state, secret files) are taken from the file's directory.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::enrich::{SelectorConfig, Selectors};
use crate::panther::{CommentFormat, RetryPolicy, Severity, Status};
use crate::regex::DetectionRegex;
use crate::tables::{TableConfig, TableSpec};
use crate::triage::{Rule, Verdict};

/// The environment prefix; `PANTHER_TRIAGE__PANTHER__API_KEY` sets `panther.api_key`.
pub const ENV_PREFIX: &str = "PANTHER_TRIAGE";
/// Longest body of a secret file read; anything bigger is not an API key.
const SECRET_FILE_MAX: u64 = 64 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    panther: RawPanther,
    poll: RawPoll,
    filter: RawFilter,
    enrich: RawEnrich,
    tables: Vec<TableConfig>,
    selectors: Vec<SelectorConfig>,
    triage: RawTriage,
    sync: RawSync,
    retriage: RawRetriage,
    webhook: Option<RawWebhook>,
    server: Option<RawServer>,
    state: RawState,
    log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPanther {
    url: Option<String>,
    api_key: Option<SecretString>,
    api_key_file: Option<PathBuf>,
    api: Option<String>,
    requests_per_second: Option<u32>,
    timeout: Option<String>,
    max_retries: Option<u32>,
    retry_backoff: Option<String>,
    comment_batch: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPoll {
    interval: Option<String>,
    lookback: Option<String>,
    overlap: Option<String>,
    max_alerts_per_tick: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawFilter {
    statuses: Option<Vec<String>>,
    severities: Option<Vec<String>>,
    detection_id_regex: Option<String>,
    dedup_window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawEnrich {
    events_per_alert: Option<u32>,
    max_events: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTriage {
    rules: Vec<RawRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRule {
    name: Option<String>,
    min_confidence: Option<i64>,
    threat_types: Vec<String>,
    tables: Vec<String>,
    severities: Vec<String>,
    detection_id_regex: Option<String>,
    has_matches: Option<bool>,
    verdict: Option<String>,
    set_status: Option<String>,
    assign_to: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSync {
    comment_format: Option<String>,
    include: Option<Vec<String>>,
    duplicates: Option<String>,
    dry_run: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRetriage {
    window: Option<String>,
    max_per_tick: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWebhook {
    listen: Option<String>,
    secret_header: Option<String>,
    secret: Option<SecretString>,
    secret_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawState {
    path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: Option<String>,
    level: Option<String>,
}

/// `panther.api`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Rest,
    Graphql,
}

/// Where a secret came from, for `check-config` (which never shows it) and the start-up check that
/// its file is the service's alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    /// `api_key` in the file or its environment override.
    Inline,
}

#[derive(Debug, Clone)]
pub struct PantherSettings {
    pub url: Url,
    pub api_key: SecretString,
    pub api_key_source: SecretSource,
    pub api: Api,
    pub requests_per_second: NonZeroU32,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Comments per GraphQL request (`panther.comment_batch`); REST sends one a request.
    pub comment_batch: usize,
}

#[derive(Debug, Clone)]
pub struct PollSettings {
    pub interval: Duration,
    pub lookback: Duration,
    pub overlap: Duration,
    /// New alerts recorded per tick, and alerts processed per tick: a backlog drains over several
    /// ticks while writes keep flowing.
    pub max_alerts_per_tick: usize,
}

#[derive(Debug, Clone)]
pub struct FilterSettings {
    pub statuses: Vec<Status>,
    pub severities: Vec<Severity>,
    pub detection_id: Option<DetectionRegex>,
    pub dedup_window: Duration,
}

#[derive(Debug, Clone)]
pub struct EnrichSettings {
    pub events_per_alert: u32,
    pub max_events: u32,
}

/// What each comment carries (`sync.include`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Verdict,
    Matches,
    Indicators,
    Timeline,
}

impl Section {
    pub const ALL: [Section; 4] = [Section::Verdict, Section::Matches, Section::Indicators, Section::Timeline];

    pub fn as_str(self) -> &'static str {
        match self {
            Section::Verdict => "verdict",
            Section::Matches => "matches",
            Section::Indicators => "indicators",
            Section::Timeline => "timeline",
        }
    }
}

/// `sync.duplicates`: what a dedup duplicate gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duplicates {
    Link,
    Skip,
}

#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub comment_format: CommentFormat,
    pub include: Vec<Section>,
    pub duplicates: Duplicates,
    pub dry_run: bool,
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub listen: SocketAddr,
    pub secret_header: String,
    pub secret: SecretString,
    pub secret_source: SecretSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub panther: PantherSettings,
    pub poll: PollSettings,
    pub filter: FilterSettings,
    pub enrich: EnrichSettings,
    pub tables: Vec<TableSpec>,
    pub selectors: Selectors,
    pub rules: Vec<Rule>,
    pub sync: SyncSettings,
    pub retriage_window: Duration,
    /// Triaged alerts re-checked for new events per tick (`retriage.max_per_tick`).
    pub retriage_max_per_tick: usize,
    pub webhook: Option<WebhookSettings>,
    pub server_listen: Option<SocketAddr>,
    pub state_path: PathBuf,
    pub log: LogSettings,
}

/// One thing wrong with the configuration: the key, the value found (never a secret) and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub value: Option<String>,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "`{}` = {v:?}: {}", self.key, self.fix),
            None => write!(f, "`{}`: {}", self.key, self.fix),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {detail}", path.display())]
    Syntax { path: PathBuf, detail: String },
    #[error("{} has {} problem(s):\n{}", path.display(), problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

impl Config {
    /// Reads `path` with overrides from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_env(path, std::env::vars())
    }

    /// Reads `path` with overrides from `env` (tests pass their own environment).
    pub fn load_with_env(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Config::from_toml(path, &text, env)
    }

    /// Parses TOML text as if read from `path` (which anchors relative paths).
    pub fn from_toml(
        path: &Path,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let env: std::collections::HashMap<String, String> =
            env.into_iter().filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__"))).collect();
        let syntax = |e: config::ConfigError| ConfigError::Syntax { path: path.into(), detail: syntax_detail(&e) };
        let raw: RawConfig = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("filter.statuses")
                    .with_list_parse_key("filter.severities")
                    .with_list_parse_key("sync.include")
                    .try_parsing(true)
                    .source(Some(env)),
            )
            .build()
            .map_err(syntax)?
            .try_deserialize()
            .map_err(syntax)?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut c = Checker { base, problems: Vec::new() };
        let config = c.check(raw, path);
        match config {
            Some(cfg) if c.problems.is_empty() => Ok(cfg),
            _ => Err(ConfigError::Invalid { path: path.into(), problems: c.problems }),
        }
    }

    /// The effective configuration as TOML, secrets replaced by where they came from.
    pub fn redacted(&self) -> String {
        use toml::{Table, Value};
        let s = |v: &str| Value::String(v.to_owned());
        let d = |v: Duration| Value::String(humantime::format_duration(v).to_string());
        let list = |v: Vec<&str>| Value::Array(v.into_iter().map(s).collect());
        let mut root = Table::new();
        let mut t = Table::new();
        t.insert("url".into(), s(self.panther.url.as_str()));
        t.insert(
            "api_key".into(),
            s(&match &self.panther.api_key_source {
                SecretSource::File(p) => format!("<redacted: read from {}>", p.display()),
                SecretSource::Inline => "<redacted>".to_owned(),
            }),
        );
        t.insert("api".into(), s(if self.panther.api == Api::Rest { "rest" } else { "graphql" }));
        t.insert("requests_per_second".into(), Value::Integer(self.panther.requests_per_second.get().into()));
        t.insert("timeout".into(), d(self.panther.timeout));
        t.insert("max_retries".into(), Value::Integer(self.panther.retry.max_retries.into()));
        t.insert("retry_backoff".into(), d(self.panther.retry.min_backoff));
        t.insert("comment_batch".into(), Value::Integer(self.panther.comment_batch as i64));
        root.insert("panther".into(), Value::Table(t));
        let mut t = Table::new();
        t.insert("interval".into(), d(self.poll.interval));
        t.insert("lookback".into(), d(self.poll.lookback));
        t.insert("overlap".into(), d(self.poll.overlap));
        t.insert("max_alerts_per_tick".into(), Value::Integer(self.poll.max_alerts_per_tick as i64));
        root.insert("poll".into(), Value::Table(t));
        let mut t = Table::new();
        t.insert("statuses".into(), list(self.filter.statuses.iter().map(|x| x.as_str()).collect()));
        t.insert("severities".into(), list(self.filter.severities.iter().map(|x| x.as_str()).collect()));
        if let Some(re) = &self.filter.detection_id {
            t.insert("detection_id_regex".into(), s(re.as_str()));
        }
        t.insert("dedup_window".into(), d(self.filter.dedup_window));
        root.insert("filter".into(), Value::Table(t));
        let mut t = Table::new();
        t.insert("events_per_alert".into(), Value::Integer(self.enrich.events_per_alert.into()));
        t.insert("max_events".into(), Value::Integer(self.enrich.max_events.into()));
        root.insert("enrich".into(), Value::Table(t));
        let tables = self
            .tables
            .iter()
            .map(|spec| {
                let mut t = Table::new();
                t.insert("name".into(), s(&spec.name));
                t.insert("path".into(), s(&spec.path.display().to_string()));
                t.insert("format".into(), s(spec.format.as_str()));
                if let Some(k) = spec.kind {
                    t.insert("kind".into(), s(k.as_str()));
                }
                if let Some(r) = spec.refresh {
                    t.insert("refresh".into(), d(r));
                }
                t.insert("match_subdomains".into(), Value::Boolean(spec.match_subdomains));
                Value::Table(t)
            })
            .collect();
        root.insert("tables".into(), Value::Array(tables));
        let rules = self
            .rules
            .iter()
            .map(|r| {
                let mut t = Table::new();
                t.insert("name".into(), s(&r.name));
                if let Some(c) = r.min_confidence {
                    t.insert("min_confidence".into(), Value::Integer(c));
                }
                if !r.threat_types.is_empty() {
                    t.insert("threat_types".into(), list(r.threat_types.iter().map(String::as_str).collect()));
                }
                if !r.tables.is_empty() {
                    t.insert("tables".into(), list(r.tables.iter().map(String::as_str).collect()));
                }
                if !r.severities.is_empty() {
                    t.insert("severities".into(), list(r.severities.iter().map(|x| x.as_str()).collect()));
                }
                if let Some(re) = &r.detection_id {
                    t.insert("detection_id_regex".into(), s(re.as_str()));
                }
                if let Some(m) = r.has_matches {
                    t.insert("has_matches".into(), Value::Boolean(m));
                }
                t.insert("verdict".into(), s(r.verdict.as_str()));
                if let Some(st) = r.set_status {
                    t.insert("set_status".into(), s(st.as_str()));
                }
                if let Some(a) = &r.assign_to {
                    t.insert("assign_to".into(), s(a));
                }
                Value::Table(t)
            })
            .collect();
        let mut t = Table::new();
        t.insert("rules".into(), Value::Array(rules));
        root.insert("triage".into(), Value::Table(t));
        let mut t = Table::new();
        t.insert("comment_format".into(), s(self.sync.comment_format.as_str()));
        t.insert("include".into(), list(self.sync.include.iter().map(|x| x.as_str()).collect()));
        t.insert("duplicates".into(), s(if self.sync.duplicates == Duplicates::Link { "link" } else { "skip" }));
        t.insert("dry_run".into(), Value::Boolean(self.sync.dry_run));
        root.insert("sync".into(), Value::Table(t));
        let mut t = Table::new();
        t.insert("window".into(), d(self.retriage_window));
        t.insert("max_per_tick".into(), Value::Integer(self.retriage_max_per_tick as i64));
        root.insert("retriage".into(), Value::Table(t));
        if let Some(w) = &self.webhook {
            let mut t = Table::new();
            t.insert("listen".into(), s(&w.listen.to_string()));
            t.insert("secret_header".into(), s(&w.secret_header));
            t.insert("secret".into(), s("<redacted>"));
            root.insert("webhook".into(), Value::Table(t));
        }
        if let Some(l) = self.server_listen {
            let mut t = Table::new();
            t.insert("listen".into(), s(&l.to_string()));
            root.insert("server".into(), Value::Table(t));
        }
        let mut t = Table::new();
        t.insert("path".into(), s(&self.state_path.display().to_string()));
        root.insert("state".into(), Value::Table(t));
        let mut t = Table::new();
        t.insert("format".into(), s(if self.log.format == LogFormat::Json { "json" } else { "text" }));
        t.insert("level".into(), s(&self.log.level));
        root.insert("log".into(), Value::Table(t));
        toml::to_string_pretty(&root).unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }
}

/// The config crate's messages name the key; what they quote of the file is dropped, because the
/// line with a syntax error may be the one holding the API key.
fn syntax_detail(e: &config::ConfigError) -> String {
    let full = e.to_string();
    let s: Vec<&str> = full
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !(t.starts_with('|') || t.split_once(" |").is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit())))
        })
        .collect();
    let mut s = s.join(" ");
    // "invalid type: string \"...\"" quotes the value: never do that for a secret.
    if let (Some(start), Some(end)) = (s.find("invalid type: "), s.find(" for key")) {
        if start < end && (s.contains("api_key") || s.contains("secret")) {
            s.replace_range(start..end, "a value of the wrong type");
        }
    }
    if s.contains("unknown field") {
        format!("{s}; remove the key or fix its spelling (unknown keys are errors so a typo cannot disable a setting)")
    } else {
        s
    }
}

struct Checker {
    base: PathBuf,
    problems: Vec<Problem>,
}

impl Checker {
    fn problem(&mut self, key: &str, value: Option<&str>, fix: impl Into<String>) {
        self.problems.push(Problem { key: key.into(), value: value.map(str::to_owned), fix: fix.into() });
    }

    fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn duration(&mut self, key: &str, v: Option<&str>, default: Duration) -> Duration {
        let Some(v) = v else { return default };
        match humantime::parse_duration(v) {
            Ok(d) => d,
            Err(e) => {
                self.problem(key, Some(v), format!("{e}; write a duration such as \"90s\", \"15m\" or \"1h 30m\""));
                default
            }
        }
    }

    fn secret(
        &mut self,
        key: &str,
        inline: Option<SecretString>,
        file: Option<&Path>,
    ) -> Option<(SecretString, SecretSource)> {
        let file_key = format!("{key}_file");
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.problem(key, None, format!("set `{key}` or `{file_key}`, not both"));
                None
            }
            (Some(s), None) => {
                if s.expose_secret().trim().is_empty() {
                    self.problem(key, None, "is empty");
                    return None;
                }
                Some((s, SecretSource::Inline))
            }
            (None, Some(p)) => {
                let path = self.path(p);
                match read_secret_file(&path) {
                    Ok(s) => Some((s, SecretSource::File(path))),
                    Err(e) => {
                        self.problem(&file_key, Some(&path.display().to_string()), e);
                        None
                    }
                }
            }
            (None, None) => None,
        }
    }

    fn check(&mut self, raw: RawConfig, file: &Path) -> Option<Config> {
        let panther = self.panther(raw.panther);
        let interval = self.duration("poll.interval", raw.poll.interval.as_deref(), Duration::from_secs(60));
        if interval.is_zero() {
            self.problem("poll.interval", Some("0s"), "must be more than zero");
        }
        let poll = PollSettings {
            interval,
            lookback: self.duration("poll.lookback", raw.poll.lookback.as_deref(), Duration::from_secs(24 * 3600)),
            overlap: self.duration("poll.overlap", raw.poll.overlap.as_deref(), Duration::from_secs(600)),
            max_alerts_per_tick: raw.poll.max_alerts_per_tick.unwrap_or(500),
        };
        const DAY: u64 = 24 * 3600;
        if poll.interval > Duration::from_secs(DAY) {
            self.problem(
                "poll.interval",
                raw.poll.interval.as_deref(),
                "at most 1 day; Panther is polled at least daily",
            );
        }
        if poll.lookback > Duration::from_secs(366 * DAY) {
            self.problem("poll.lookback", raw.poll.lookback.as_deref(), "at most 366 days");
        }
        if poll.overlap < Duration::from_secs(1) || poll.overlap > Duration::from_secs(7 * DAY) {
            self.problem(
                "poll.overlap",
                raw.poll.overlap.as_deref(),
                "between 1s and 7 days: without an overlap, alerts Panther indexes late are missed (10m is the default)",
            );
        }
        if poll.max_alerts_per_tick == 0 {
            self.problem("poll.max_alerts_per_tick", Some("0"), "must be at least 1");
        }
        let filter = self.filter(raw.filter);
        let enrich = EnrichSettings {
            events_per_alert: raw.enrich.events_per_alert.unwrap_or(25),
            max_events: raw.enrich.max_events.unwrap_or(200),
        };
        if !(1..=50).contains(&enrich.events_per_alert) {
            let v = enrich.events_per_alert.to_string();
            self.problem("enrich.events_per_alert", Some(&v), "must be 1 to 50 (Panther's page size limit)");
        }
        if enrich.max_events == 0 {
            self.problem("enrich.max_events", Some("0"), "must be at least 1");
        }
        let mut tables = Vec::new();
        for (i, t) in raw.tables.into_iter().enumerate() {
            match t.to_spec() {
                Ok(mut spec) => {
                    spec.path = self.path(&spec.path);
                    if tables.iter().any(|s: &TableSpec| s.name == spec.name) {
                        self.problem(
                            &format!("tables[{i}].name"),
                            Some(&spec.name),
                            "two tables have this name; give each its own",
                        );
                    }
                    tables.push(spec);
                }
                Err(e) => self.problem(&format!("tables[{i}]"), None, e.to_string()),
            }
        }
        let mut selectors = Vec::new();
        for (i, s) in raw.selectors.iter().enumerate() {
            match s.to_selector() {
                Ok(sel) => selectors.push(sel),
                Err(e) => self.problem(&format!("selectors[{i}]"), None, e),
            }
        }
        let table_names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        let rules =
            raw.triage.rules.into_iter().enumerate().filter_map(|(i, r)| self.rule(i, r, &table_names)).collect();
        let sync = self.sync(raw.sync);
        let retriage_window =
            self.duration("retriage.window", raw.retriage.window.as_deref(), Duration::from_secs(24 * 3600));
        let retriage_max_per_tick = raw.retriage.max_per_tick.unwrap_or(50) as usize;
        if retriage_max_per_tick > 10_000 {
            self.problem(
                "retriage.max_per_tick",
                Some(&retriage_max_per_tick.to_string()),
                "must be at most 10000 (0 turns re-triage off); each check is one request",
            );
        }
        let webhook = raw.webhook.and_then(|w| self.webhook(w));
        let server_listen = raw.server.and_then(|s| {
            let v = s.listen.unwrap_or_else(|| "127.0.0.1:9464".into());
            self.listen("server.listen", &v)
        });
        let state_path = self.path(raw.state.path.as_deref().unwrap_or(Path::new("state.db")));
        let log = self.log(raw.log);
        Some(Config {
            file: file.to_path_buf(),
            panther: panther?,
            poll,
            filter,
            enrich,
            tables,
            selectors: Selectors::new(selectors),
            rules,
            sync,
            retriage_window,
            retriage_max_per_tick,
            webhook,
            server_listen,
            state_path,
            log,
        })
    }

    fn panther(&mut self, p: RawPanther) -> Option<PantherSettings> {
        let url = match p.url.as_deref() {
            None => {
                self.problem("panther.url", None, "is required: the API URL from Panther's API Tokens page");
                None
            }
            Some(u) => match check_url(u) {
                Ok(url) => Some(url),
                Err(fix) => {
                    // A URL with credentials in it is not echoed: they may be the key.
                    let shown = if u.contains('@') { None } else { Some(u) };
                    self.problem("panther.url", shown, fix);
                    None
                }
            },
        };
        let key = self.secret("panther.api_key", p.api_key, p.api_key_file.as_deref());
        if let Some((k, _)) = &key {
            if reqwest::header::HeaderValue::from_str(k.expose_secret().trim()).is_err() {
                self.problem("panther.api_key", None, "contains characters an HTTP header cannot carry");
            }
        } else if !self.problems.iter().any(|p| p.key.starts_with("panther.api_key")) {
            self.problem(
                "panther.api_key",
                None,
                format!(
                    "is required: set `api_key_file`, `api_key`, or the environment variable {}",
                    env_name("panther.api_key")
                ),
            );
        }
        let api = match p.api.as_deref().unwrap_or("rest") {
            "rest" => Api::Rest,
            "graphql" => Api::Graphql,
            other => {
                self.problem("panther.api", Some(other), "must be \"rest\" or \"graphql\"");
                Api::Rest
            }
        };
        let rps = NonZeroU32::new(p.requests_per_second.unwrap_or(5));
        if rps.is_none() {
            self.problem("panther.requests_per_second", Some("0"), "must be at least 1");
        }
        let timeout = self.duration("panther.timeout", p.timeout.as_deref(), Duration::from_secs(30));
        if timeout.is_zero() {
            self.problem("panther.timeout", Some("0s"), "must be more than zero");
        }
        let defaults = RetryPolicy::default();
        let retry = RetryPolicy {
            max_retries: p.max_retries.unwrap_or(defaults.max_retries),
            min_backoff: self.duration("panther.retry_backoff", p.retry_backoff.as_deref(), defaults.min_backoff),
            max_backoff: defaults.max_backoff,
        };
        let max = crate::panther::graphql::MAX_COMMENT_BATCH;
        let comment_batch = p.comment_batch.unwrap_or(20) as usize;
        if !(1..=max).contains(&comment_batch) {
            self.problem(
                "panther.comment_batch",
                Some(&comment_batch.to_string()),
                format!("must be 1 to {max} (comments per GraphQL request)"),
            );
        }
        let (api_key, api_key_source) = key?;
        Some(PantherSettings {
            url: url?,
            api_key: SecretString::from(api_key.expose_secret().trim().to_owned()),
            api_key_source,
            api,
            requests_per_second: rps?,
            timeout,
            retry,
            comment_batch,
        })
    }

    fn filter(&mut self, f: RawFilter) -> FilterSettings {
        let statuses = match f.statuses {
            None => vec![Status::Open],
            Some(list) => {
                self.enum_list("filter.statuses", &list, Status::parse, "OPEN, TRIAGED, RESOLVED, CLOSED (or INVALID)")
            }
        };
        let severities = match f.severities {
            None => Severity::ALL.to_vec(),
            Some(list) => {
                self.enum_list("filter.severities", &list, Severity::parse, "CRITICAL, HIGH, MEDIUM, LOW, INFO")
            }
        };
        let detection_id = f.detection_id_regex.as_deref().and_then(|p| self.regex("filter.detection_id_regex", p));
        FilterSettings {
            statuses,
            severities,
            detection_id,
            dedup_window: self.duration("filter.dedup_window", f.dedup_window.as_deref(), Duration::ZERO),
        }
    }

    fn regex(&mut self, key: &str, p: &str) -> Option<DetectionRegex> {
        match DetectionRegex::new(p) {
            Ok(re) => Some(re),
            Err(e) => {
                self.problem(key, Some(p), format!("not a valid pattern ({e}); Python `re` syntax is expected"));
                None
            }
        }
    }

    fn enum_list<T: PartialEq>(
        &mut self,
        key: &str,
        list: &[String],
        parse: fn(&str) -> Option<T>,
        valid: &str,
    ) -> Vec<T> {
        let mut out = Vec::new();
        if list.is_empty() {
            self.problem(key, Some("[]"), format!("an empty list would let nothing through; list some of {valid}"));
        }
        for v in list {
            match parse(v.trim()) {
                Some(x) if !out.contains(&x) => out.push(x),
                Some(_) => {}
                None => self.problem(key, Some(v), format!("unknown value; use {valid}")),
            }
        }
        out
    }

    fn rule(&mut self, i: usize, r: RawRule, tables: &[&str]) -> Option<Rule> {
        let key = |k: &str| format!("triage.rules[{i}].{k}");
        let name = r.name.unwrap_or_else(|| format!("rule {}", i + 1));
        let verdict = match r.verdict.as_deref() {
            None => {
                self.problem(&key("verdict"), None, "is required: malicious, suspicious, benign or unknown");
                None
            }
            Some(v) => {
                let parsed = Verdict::parse(v);
                if parsed.is_none() {
                    self.problem(&key("verdict"), Some(v), "use malicious, suspicious, benign or unknown");
                }
                parsed
            }
        };
        let set_status = r.set_status.as_deref().and_then(|s| {
            let st = Status::parse(s);
            if st.is_none() {
                self.problem(&key("set_status"), Some(s), "use OPEN, TRIAGED, RESOLVED or CLOSED (INVALID)");
            }
            st
        });
        for t in &r.tables {
            if !tables.contains(&t.as_str()) {
                self.problem(&key("tables"), Some(t), "no [[tables]] entry has this name");
            }
        }
        let severities = if r.severities.is_empty() {
            Vec::new()
        } else {
            self.enum_list(&key("severities"), &r.severities, Severity::parse, "CRITICAL, HIGH, MEDIUM, LOW, INFO")
        };
        let detection_id = r.detection_id_regex.as_deref().and_then(|p| self.regex(&key("detection_id_regex"), p));
        if let Some(a) = r.assign_to.as_deref() {
            if a.trim().is_empty() {
                self.problem(&key("assign_to"), Some(a), "give a user's email address or Panther user ID");
            }
        }
        Some(Rule {
            name,
            min_confidence: r.min_confidence,
            threat_types: r.threat_types.iter().map(|t| t.to_ascii_lowercase()).collect(),
            tables: r.tables,
            severities,
            detection_id,
            has_matches: r.has_matches,
            verdict: verdict?,
            set_status,
            assign_to: r.assign_to.map(|a| a.trim().to_owned()),
        })
    }

    fn sync(&mut self, s: RawSync) -> SyncSettings {
        let comment_format = match s.comment_format.as_deref().map(str::to_ascii_uppercase).as_deref() {
            None | Some("HTML") => CommentFormat::Html,
            Some("PLAIN_TEXT") => CommentFormat::PlainText,
            Some(_) => {
                self.problem("sync.comment_format", s.comment_format.as_deref(), "use \"HTML\" or \"PLAIN_TEXT\"");
                CommentFormat::Html
            }
        };
        let include = match s.include {
            None => Section::ALL.to_vec(),
            Some(list) => self.enum_list(
                "sync.include",
                &list,
                |v| Section::ALL.into_iter().find(|s| s.as_str().eq_ignore_ascii_case(v)),
                "verdict, matches, indicators, timeline",
            ),
        };
        let duplicates = match s.duplicates.as_deref() {
            None | Some("link") => Duplicates::Link,
            Some("skip") => Duplicates::Skip,
            Some(v) => {
                self.problem("sync.duplicates", Some(v), "use \"link\" or \"skip\"");
                Duplicates::Link
            }
        };
        SyncSettings { comment_format, include, duplicates, dry_run: s.dry_run.unwrap_or(false) }
    }

    fn listen(&mut self, key: &str, v: &str) -> Option<SocketAddr> {
        match v.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(key, Some(v), "write an address and port such as \"127.0.0.1:8088\"");
                None
            }
        }
    }

    fn webhook(&mut self, w: RawWebhook) -> Option<WebhookSettings> {
        let listen = self.listen("webhook.listen", w.listen.as_deref().unwrap_or("127.0.0.1:8088"));
        let secret_header = w.secret_header.unwrap_or_else(|| "X-Panther-Triage-Secret".into());
        if reqwest::header::HeaderName::from_bytes(secret_header.as_bytes()).is_err() {
            self.problem("webhook.secret_header", Some(&secret_header), "is not a valid HTTP header name");
        }
        let secret = self.secret("webhook.secret", w.secret, w.secret_file.as_deref());
        if secret.is_none() && !self.problems.iter().any(|p| p.key.starts_with("webhook.secret")) {
            self.problem(
                "webhook.secret",
                None,
                "is required: set `secret_file` or `secret` (the receiver never runs open)",
            );
        }
        let (secret, secret_source) = secret?;
        Some(WebhookSettings { listen: listen?, secret_header, secret, secret_source })
    }

    fn log(&mut self, l: RawLog) -> LogSettings {
        let format = match l.format.as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(v) => {
                self.problem("log.format", Some(v), "use \"json\" or \"text\"");
                LogFormat::Json
            }
        };
        let level = l.level.unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            self.problem("log.level", Some(&level), "use error, warn, info, debug or trace (or a tracing filter)");
        }
        LogSettings { format, level }
    }
}

/// `https://` only, except loopback addresses (tests, the demo).
pub fn check_url(u: &str) -> Result<Url, String> {
    let url = Url::parse(u).map_err(|e| format!("not a URL ({e}); write it as https://api.<your-panther-domain>"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(a)) => IpAddr::V4(a).is_loopback(),
        Some(url::Host::Ipv6(a)) => IpAddr::V6(a).is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Err("must start with https:// (plain http is allowed for loopback addresses only)".into()),
    }
    if url.host().is_none() {
        return Err("has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; put the API key in `api_key_file`".into());
    }
    Ok(url)
}

fn read_secret_file(path: &Path) -> Result<SecretString, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let mut buf = String::new();
    f.take(SECRET_FILE_MAX).read_to_string(&mut buf).map_err(|e| format!("cannot read it as text: {e}"))?;
    let trimmed = buf.trim();
    if trimmed.is_empty() {
        return Err("the file is empty".into());
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

/// The environment variable that overrides `key` (`panther.api_key` -> `PANTHER_TRIAGE__PANTHER__API_KEY`).
pub fn env_name(key: &str) -> String {
    let mut s = String::from(ENV_PREFIX);
    for part in key.split('.') {
        s.push_str("__");
        s.push_str(&part.to_ascii_uppercase());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[panther]\nurl = \"https://api.acme.runpanther.net\"\napi_key = \"CANARY-KEY-123\"\n";

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_toml(Path::new("/etc/panther-triage/config.toml"), text, env)
    }

    fn problems(text: &str) -> Vec<Problem> {
        problems_env(text, &[])
    }

    #[test]
    fn defaults_fill_what_is_not_written() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(c.filter.statuses, vec![Status::Open]);
        assert_eq!(c.filter.severities.len(), 5);
        assert_eq!(c.poll.interval, Duration::from_secs(60));
        assert_eq!(c.panther.timeout, Duration::from_secs(30));
        assert_eq!(c.state_path, Path::new("/etc/panther-triage/state.db"));
        assert_eq!(c.sync.include, Section::ALL.to_vec());
    }

    #[test]
    fn graphql_is_chosen_with_its_comment_batch_and_a_batch_out_of_range_is_refused() {
        let c = load(MINIMAL, &[("PANTHER_TRIAGE__PANTHER__API", "graphql")]).unwrap();
        assert_eq!((c.panther.api, c.panther.comment_batch), (Api::Graphql, 20));
        let c = load(MINIMAL, &[("PANTHER_TRIAGE__PANTHER__COMMENT_BATCH", "5")]).unwrap();
        assert_eq!(c.panther.comment_batch, 5);
        for bad in ["0", "51"] {
            let p = problems_env(MINIMAL, &[("PANTHER_TRIAGE__PANTHER__COMMENT_BATCH", bad)]);
            assert!(p.iter().any(|p| p.key == "panther.comment_batch" && p.fix.contains("1 to 50")), "{bad}: {p:?}");
        }
        let p = problems_env(MINIMAL, &[("PANTHER_TRIAGE__PANTHER__API", "soap")]);
        assert!(p.iter().any(|p| p.key == "panther.api"), "{p:?}");
    }

    fn problems_env(text: &str, env: &[(&str, &str)]) -> Vec<Problem> {
        match load(text, env) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn environment_overrides_every_key_including_lists_and_the_key() {
        let text = "[panther]\nurl = \"https://api.acme.runpanther.net\"\n";
        let c = load(
            text,
            &[
                ("PANTHER_TRIAGE__PANTHER__API_KEY", "12345"),
                ("PANTHER_TRIAGE__FILTER__STATUSES", "OPEN,INVALID"),
                ("PANTHER_TRIAGE__POLL__INTERVAL", "15s"),
                ("UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.panther.api_key.expose_secret(), "12345");
        assert_eq!(c.filter.statuses, vec![Status::Open, Status::Closed]);
        assert_eq!(c.poll.interval, Duration::from_secs(15));
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let err = load(&format!("{MINIMAL}[filter]\nstatuss = [\"OPEN\"]\n"), &[]).unwrap_err().to_string();
        assert!(err.contains("statuss"), "{err}");
        let err = load(MINIMAL, &[("PANTHER_TRIAGE__FILTER__SEVERITY", "HIGH")]).unwrap_err().to_string();
        assert!(err.contains("severity"), "{err}");
    }

    #[test]
    fn every_problem_is_listed_with_key_and_fix() {
        let text = "[panther]\nurl = \"http://api.acme.runpanther.net\"\n[poll]\ninterval = \"soon\"\n\
                    [filter]\nstatuses = [\"OPEN\", \"NEW\"]\ndetection_id_regex = \"(\"\n\
                    [[triage.rules]]\nverdict = \"evil\"\ntables = [\"nope\"]\n";
        let p = problems(text);
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        for k in ["panther.url", "panther.api_key", "poll.interval", "filter.statuses", "filter.detection_id_regex"] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
        assert!(keys.contains(&"triage.rules[0].verdict") && keys.contains(&"triage.rules[0].tables"), "{keys:?}");
        let url = p.iter().find(|p| p.key == "panther.url").unwrap();
        assert!(url.fix.contains("https://"), "{url}");
    }

    #[test]
    fn windows_are_bounded_and_a_url_with_credentials_is_not_echoed() {
        let p = problems(
            "[panther]\nurl = \"https://x:CANARY@api.acme.net\"\napi_key = \"k\"\n[poll]\noverlap = \"0s\"\nlookback = \"1000000y\"\ninterval = \"3d\"\n",
        );
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["panther.url", "poll.interval", "poll.lookback", "poll.overlap"]);
        assert!(!p.iter().any(|p| p.to_string().contains("CANARY")), "{p:?}");
    }

    #[test]
    fn http_is_allowed_for_loopback_only() {
        assert!(check_url("http://127.0.0.1:8080").is_ok());
        assert!(check_url("http://[::1]:8080").is_ok());
        assert!(check_url("http://localhost:8080").is_ok());
        assert!(check_url("http://10.0.0.1").is_err());
        assert!(check_url("ftp://127.0.0.1").is_err());
        assert!(check_url("https://user:pw@api.x.net").is_err());
    }

    #[test]
    fn the_key_comes_from_a_file_and_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "CANARY-FROM-FILE\n").unwrap();
        let path = dir.path().join("c.toml");
        let text = "[panther]\nurl = \"https://api.acme.runpanther.net\"\napi_key_file = \"key\"\n";
        let c = Config::from_toml(&path, text, Vec::new()).unwrap();
        assert_eq!(c.panther.api_key.expose_secret(), "CANARY-FROM-FILE");
        let shown = c.redacted();
        assert!(!shown.contains("CANARY"), "{shown}");
        assert!(shown.contains("read from"), "{shown}");
        assert!(!format!("{c:?}").contains("CANARY"), "Debug must not print the key");
        let both = format!("{text}api_key = \"x\"\n");
        let err = Config::from_toml(&path, &both, Vec::new()).unwrap_err().to_string();
        assert!(err.contains("not both"), "{err}");
    }

    #[test]
    fn a_problem_never_echoes_a_secret() {
        let url = "[panther]\nurl = \"https://api.acme.runpanther.net\"\n";
        let text = format!("{url}api_key = \"CANARY\nKEY\"\n");
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(!err.contains("CANARY") && !err.contains("KEY\""), "{err}");
        assert!(err.contains("line 4"), "{err}");
        let text = format!("{url}api_key = [\"CANARY\"]\n");
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(!err.contains("CANARY") && err.contains("api_key"), "{err}");
        let text = format!("{url}api_key = \"CANARY\\u0007\"\n[webhook]\nsecret = \"\"\n");
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(!err.contains("CANARY"), "{err}");
        assert!(err.contains("panther.api_key") && err.contains("webhook.secret"), "{err}");
    }

    #[test]
    fn redacted_output_reads_back_as_the_same_configuration() {
        let c = load(&format!("{MINIMAL}[filter]\ndetection_id_regex = \"^(?!AWS).*\"\n"), &[]).unwrap();
        let shown = c.redacted();
        let again = load(&shown.replace("<redacted>", "k"), &[]).unwrap();
        assert_eq!(again.filter.detection_id.unwrap().as_str(), "^(?!AWS).*");
        assert_eq!(again.poll.lookback, c.poll.lookback);
    }

    #[test]
    fn env_names_follow_the_contract() {
        assert_eq!(env_name("panther.api_key"), "PANTHER_TRIAGE__PANTHER__API_KEY");
    }
}
