//! The command line: argument types (parsed by `main.rs`) and the commands they run.
//!
//! This is the edge of the library: commands return `anyhow` errors with context, and exit codes are
//! decided here (0 ok, 1 runtime failure, 2 bad configuration or usage).

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

use crate::enrich::{enrich, sort_tsv, tsv_rows, Events, Selector, Selectors, TsvRow};
use crate::indicator::Kind;
use crate::json::Scalar;
use crate::tables::{Format, Table, TableSpec};

#[derive(Debug, Parser)]
#[command(
    name = "panther-triage",
    version,
    about = "Triage Panther alerts: poll, enrich against threat intel, comment back"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon: poll Panther, triage, comment back, until SIGTERM.
    Run(crate::app::RunArgs),
    /// One poll-and-triage cycle (until nothing is left), then exit.
    Once(crate::app::OnceArgs),
    /// Investigate one alert now and print the result.
    Triage(crate::app::TriageArgs),
    /// Validate the configuration and print it with secrets redacted; exit 2 listing every problem.
    CheckConfig(crate::app::CheckConfigArgs),
    /// Ask a running daemon's /readyz whether it is ready (container health checks); exit 0 if so.
    CheckHealth(crate::app::CheckHealthArgs),
    /// Run the pipeline against a bundled fake Panther on loopback, with fixture alerts and tables.
    Demo(crate::app::DemoArgs),
    /// Offline enrichment of an alerts file against lookup tables (the ENRICHMENT.md TSV).
    Enrich(EnrichArgs),
    /// Measure table load and lookup speed against the Python reference on generated data.
    Bench(crate::bench::BenchArgs),
    /// Measure API calls per triaged alert and throughput against the rate limit, per transport.
    BenchApi(crate::bench_api::ApiBenchArgs),
    /// Measure webhook delivery to comment latency against the fake (p50, p99).
    BenchWebhook(crate::bench_api::WebhookBenchArgs),
    /// Soak: the daemon as a child process while alerts arrive; throughput, RSS, latency.
    BenchSoak(crate::bench_api::SoakArgs),
}

#[derive(Debug, Args)]
pub struct EnrichArgs {
    /// A table: a path to an Anomali JSONL file, or `path=FILE,format=anomali|csv|list[,name=N]
    /// [,kind=ip|domain|email|hash|url][,key=COLUMN][,kind_column=COLUMN][,subdomains=true]`.
    #[arg(long = "table", required = true, num_args = 1.., value_name = "TABLE")]
    pub tables: Vec<String>,
    /// Alerts, one JSON object a line, each with `id` and `events`.
    #[arg(long, value_name = "FILE.jsonl")]
    pub alerts: PathBuf,
    /// The clock that decides which rows have expired (RFC 3339, e.g. 2026-01-01T00:00:00Z); default: now.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// Match subdomains in every table (`www.evil.com` matched by a row for `evil.com`).
    #[arg(long)]
    pub subdomains: bool,
    /// An extra selector, `LOG_TYPE:DOTTED.PATH:KIND` (`*` as the log type for every log type).
    #[arg(long = "selector", value_name = "SELECTOR")]
    pub selectors: Vec<String>,
    /// Write every match as `alert_id TAB event_index TAB field TAB value TAB entry_id`, sorted.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Write each enriched event as JSONL: `{"alert_id", "event_index", "p_enrichment"}`.
    #[arg(long, value_name = "FILE")]
    pub enriched: Option<PathBuf>,
    /// Print the figures as one JSON line on stderr, in the reference's shape (for `bench`).
    #[arg(long)]
    pub stats_json: bool,
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Run(a) => crate::app::run(a),
        Command::Once(a) => crate::app::once(a),
        Command::Triage(a) => crate::app::triage(a),
        Command::CheckConfig(a) => crate::app::check_config(a),
        Command::Demo(a) => crate::app::demo(a),
        Command::CheckHealth(a) => crate::app::check_health(a),
        Command::Enrich(a) => run_enrich(a),
        Command::Bench(a) => crate::bench::run(a),
        Command::BenchApi(a) => crate::bench_api::run(a),
        Command::BenchWebhook(a) => crate::bench_api::run_webhook(a),
        Command::BenchSoak(a) => crate::bench_api::run_soak(a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            let code = if e.downcast_ref::<UsageError>().is_some() { 2 } else { 1 };
            eprintln!("error: {e:#}");
            code
        }
    }
}

/// A mistake in how the command was called: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// Reads a `--table` argument.
pub fn parse_table_arg(arg: &str, subdomains: bool) -> anyhow::Result<TableSpec> {
    let mut spec = if arg.contains("path=") {
        let mut path = None;
        let mut spec = TableSpec::anomali("", "");
        let mut name = None;
        for part in arg.split(',') {
            let (k, v) =
                part.split_once('=').ok_or_else(|| usage(format!("--table {arg:?}: {part:?} is not key=value")))?;
            match k.trim() {
                "path" => path = Some(PathBuf::from(v)),
                "name" => name = Some(v.to_owned()),
                "format" => spec.format = v.parse::<Format>().map_err(usage)?,
                "kind" => spec.kind = Some(v.parse::<Kind>().map_err(usage)?),
                "key" => spec.key = Some(v.to_owned()),
                "kind_column" => spec.kind_column = Some(v.to_owned()),
                "subdomains" => {
                    spec.match_subdomains = v.parse().map_err(|_| usage(format!("--table {arg:?}: subdomains is true or false")))?
                }
                other => {
                    return Err(usage(format!(
                        "--table {arg:?}: unknown option {other:?} (path, name, format, kind, key, kind_column, subdomains)"
                    )))
                }
            }
        }
        spec.path = path.ok_or_else(|| usage(format!("--table {arg:?}: no path=")))?;
        if let Some(n) = name {
            spec.name = n;
        }
        spec
    } else {
        TableSpec::anomali("", arg)
    };
    if spec.name.is_empty() {
        spec.name = spec
            .path
            .file_stem()
            .map(|s| {
                s.to_string_lossy()
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
                    .collect()
            })
            .unwrap_or_else(|| "table".to_owned());
    }
    spec.match_subdomains |= subdomains;
    spec.validate().map_err(|e| usage(e.to_string()))?;
    Ok(spec)
}

/// Reads a `--selector LOG_TYPE:PATH:KIND` argument.
pub fn parse_selector_arg(arg: &str) -> anyhow::Result<Selector> {
    let mut parts = arg.rsplitn(3, ':');
    let (kind, path, log_type) = match (parts.next(), parts.next(), parts.next()) {
        (Some(k), Some(p), Some(l)) => (k, p, l),
        _ => {
            return Err(usage(format!(
                "--selector {arg:?}: expected LOG_TYPE:DOTTED.PATH:KIND, e.g. AWS.CloudTrail:sourceIPAddress:ip"
            )))
        }
    };
    let kind: Kind = kind.parse().map_err(usage)?;
    let log_type = (log_type != "*").then_some(log_type);
    Selector::new(log_type, path, kind).map_err(usage)
}

pub fn parse_now(now: Option<&str>) -> anyhow::Result<DateTime<Utc>> {
    match now {
        None => Ok(Utc::now()),
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| usage(format!("--now {s:?}: {e}; write it as RFC 3339, e.g. 2026-01-01T00:00:00Z"))),
    }
}

/// Bytes of alerts read per batch: the buffers are recycled, so small ones keep the memory that
/// must be freshly mapped small.
const ALERT_CHUNK: usize = 1 << 20;

/// What the alert lines produced, added up in file order.
#[derive(Default)]
struct Totals<'t> {
    rows: Vec<TsvRow<'t>>,
    lookups: u64,
    skipped: u64,
    alerts: u64,
    events: usize,
    /// Lines that could not be read: the line's number within its part of the file, and why.
    bad_alerts: Vec<(u64, String)>,
    enriched: Vec<String>,
    /// How many lines the part holds (blank ones too): where the next part's numbering starts.
    lines: u64,
}

impl<'t> Totals<'t> {
    /// Adds what one alert line produced (its TSV rows are already in `rows`).
    fn add(&mut self, r: Result<AlertResult, (u64, String)>) {
        match r {
            Ok(r) => {
                self.alerts += 1;
                self.lookups += r.lookups;
                self.skipped += r.skipped;
                self.events += r.events;
                self.enriched.extend(r.enriched);
            }
            Err(e) => self.bad_alerts.push(e),
        }
    }

    /// Adds up the totals of consecutive parts of the file, in order, numbering their bad lines
    /// within the whole file. Their TSV rows stay in their parts (returned apart, in order) for
    /// `sort_tsv` to join.
    fn merge(parts: Vec<Totals<'t>>) -> (Totals<'t>, Vec<Vec<TsvRow<'t>>>) {
        let mut all = Totals::default();
        let mut rows = Vec::with_capacity(parts.len());
        for mut p in parts {
            for bad in &mut p.bad_alerts {
                bad.0 += all.lines;
            }
            all.lines += p.lines;
            rows.push(std::mem::take(&mut p.rows));
            all.lookups += p.lookups;
            all.skipped += p.skipped;
            all.alerts += p.alerts;
            all.events += p.events;
            all.bad_alerts.append(&mut p.bad_alerts);
            all.enriched.append(&mut p.enriched);
        }
        (all, rows)
    }
}

/// What one alert line produced, besides its TSV rows.
struct AlertResult {
    lookups: u64,
    skipped: u64,
    events: usize,
    enriched: Vec<String>,
}

fn run_enrich(a: EnrichArgs) -> anyhow::Result<()> {
    let now = parse_now(a.now.as_deref())?;
    let specs = a.tables.iter().map(|t| parse_table_arg(t, a.subdomains)).collect::<anyhow::Result<Vec<_>>>()?;
    crate::tables::check_names(&specs).map_err(|e| usage(format!("{e} (set it with --table path=...,name=...)")))?;
    let selectors =
        Selectors::new(a.selectors.iter().map(|s| parse_selector_arg(s)).collect::<anyhow::Result<Vec<_>>>()?);

    // The worker threads start before the clock does, as the daemon starts them once for its whole
    // life (and as the reference's clock starts once its interpreter is up): a load is timed from
    // opening the table file to the index being ready.
    rayon::broadcast(|_| ());
    let load_started = Instant::now();
    let tables = crate::tables::load_all(&specs, now)?;
    let load_s = load_started.elapsed().as_secs_f64();

    let match_started = Instant::now();
    let want_enriched = a.enriched.is_some();
    let file =
        std::fs::File::open(&a.alerts).with_context(|| format!("cannot read alerts file {}", a.alerts.display()))?;
    // Chunks come unnumbered (counting their lines as they are read was a pass on the reading
    // thread); each numbers its own lines from 1 and the merge adds the lines before it.
    let per_chunk = crate::chunks::map_chunks(file, ALERT_CHUNK, rayon::current_num_threads() + 1, |chunk| {
        let mut events = Events::for_selectors(&selectors);
        let mut totals = Totals::default();
        let (lines, next) = crate::chunks::lines_from(&chunk.bytes, 1);
        totals.lines = next - 1;
        for (n, line) in lines {
            let r = enrich_line(line, &tables, &selectors, want_enriched, &mut events, &mut totals.rows);
            totals.add(r.map_err(|e| (n, e)));
        }
        totals
    })
    .with_context(|| format!("cannot read alerts file {}", a.alerts.display()))?;
    let (Totals { lookups, skipped, alerts, events, bad_alerts, enriched, .. }, row_parts) = Totals::merge(per_chunk);
    // The reference stops its clock before it sorts (`sorted` copies its set into a list); so does
    // this, before the sort joins the parts' rows into one vector.
    let match_s = match_started.elapsed().as_secs_f64();
    let rows = sort_tsv(row_parts);

    if let Some(path) = &a.out {
        let mut buf = Vec::with_capacity(rows.len() * 80);
        for r in &rows {
            r.write_to(&mut buf);
        }
        crate::private_file::write(path, buf).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &a.enriched {
        let mut body = enriched.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        crate::private_file::write(path, body).with_context(|| format!("cannot write {}", path.display()))?;
    }

    let mut out = std::io::stdout().lock();
    for t in &tables {
        writeln!(out, "{} in {:.3}s", t.report.summary(&t.spec), t.report.elapsed.as_secs_f64())?;
    }
    writeln!(
        out,
        "alerts {alerts}, events {events}, lookups {lookups}, matches {}, skipped values {skipped}, in {match_s:.3}s",
        rows.len()
    )?;
    if a.stats_json {
        let stats = serde_json::json!({
            "rows": tables.iter().map(|t| t.report.rows).sum::<u64>(),
            "eligible_rows": tables.iter().map(|t| t.report.eligible).sum::<u64>(),
            "rejected_rows": tables.iter().map(|t| t.report.rejected_total()).sum::<u64>(),
            "load_s": load_s,
            "alerts": alerts,
            "lookups": lookups,
            "match_s": match_s,
            "matches": rows.len(),
            "peak_rss_bytes": crate::bench::peak_rss_bytes(),
        });
        eprintln!("{stats}");
    }
    if !bad_alerts.is_empty() {
        for (n, e) in bad_alerts.iter().take(5) {
            eprintln!("skipped alert: {}:{n}: {e}", a.alerts.display());
        }
        anyhow::bail!(
            "{} alert line(s) could not be read and were skipped (the first are listed above); the others were enriched",
            bad_alerts.len()
        );
    }
    Ok(())
}

/// An alert line of an alerts file: its id, and its events read into a reused buffer.
struct AlertLine;

impl AlertLine {
    /// Reads an alert line in one pass with the fast scanner. A repeated `id` or `events` reads as
    /// its last value, as JSON parsers keep it. Where the scanner defers (text that is not JSON,
    /// nesting deeper than it follows), serde_json reads the line or explains what is wrong.
    fn parse<'a>(text: &'a str, events: &mut Events<'a>) -> Result<Option<Scalar<'a>>, String> {
        events.clear();
        let mut id = None;
        let mut not_a_list = false;
        let fast = crate::json::scan::walk_object(text, |sc, k, d| {
            if k.is("id") {
                id = Some(Scalar::read(sc.value(d)?));
            } else if k.is("events") {
                events.clear();
                not_a_list = false;
                if sc.at_array() {
                    events.scan_list(sc, d)?;
                } else {
                    not_a_list = sc.value(d)? != "null";
                }
            } else {
                sc.skip(d)?;
            }
            Some(())
        });
        let not_a_list_error = || "`events` is not a list".to_owned();
        if fast.is_some() {
            if not_a_list {
                return Err(not_a_list_error());
            }
            return Ok(id.filter(|s| *s != Scalar::Null));
        }
        let obj = crate::json::Object::parse(text).map_err(|e| format!("not an alert JSON object: {e}"))?;
        events.clear();
        match obj.get("events") {
            None | Some("null") => {}
            Some(raw) if raw.starts_with('[') => {
                let list: Vec<&serde_json::value::RawValue> =
                    serde_json::from_str(raw).map_err(|e| format!("unreadable events: {e}"))?;
                for ev in list {
                    events.push_json(ev.get()).map_err(|e| format!("unreadable event: {e}"))?;
                }
            }
            Some(_) => return Err(not_a_list_error()),
        }
        Ok(obj.get("id").map(Scalar::read).filter(|s| *s != Scalar::Null))
    }
}

fn enrich_line<'a, 't>(
    line: &'a [u8],
    tables: &'t [Table],
    selectors: &'t Selectors,
    want_enriched: bool,
    events: &mut Events<'a>,
    rows: &mut Vec<TsvRow<'t>>,
) -> Result<AlertResult, String> {
    let text = crate::json::utf8(line).map_err(|e| format!("not UTF-8 text: {e}"))?;
    // The id as the reference prints it (`str(alert["id"])`).
    let id: std::sync::Arc<str> = match AlertLine::parse(text, events)? {
        Some(Scalar::Str(s)) => s.as_ref().into(),
        Some(Scalar::U64(n)) => n.to_string().into(),
        Some(Scalar::I64(n)) => n.to_string().into(),
        Some(Scalar::F64(f)) => f.to_string().into(),
        Some(Scalar::Bool(b)) => if b { "True" } else { "False" }.into(),
        _ => return Err("alert has no `id` (a string or a number)".into()),
    };
    let e = enrich(events, tables, selectors);
    let mut enriched = Vec::new();
    if want_enriched {
        let mut events: Vec<usize> = e.matches.iter().map(|m| m.event).collect();
        events.dedup();
        for ev in events {
            let mut s = String::from("{\"alert_id\":");
            crate::json::write_str_literal(&mut s, &id);
            s.push_str(&format!(",\"event_index\":{ev},\"p_enrichment\":"));
            s.push_str(&e.p_enrichment(ev, tables, selectors));
            s.push('}');
            enriched.push(s);
        }
    }
    let (lookups, skipped) = (e.lookups, e.skipped_total);
    tsv_rows(id, e, tables, selectors, rows);
    Ok(AlertResult { lookups, skipped, events: events.len(), enriched })
}
