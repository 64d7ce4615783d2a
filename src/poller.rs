//! The core loop: poll Panther into the ledger, then work the ledger's backlog through filter,
//! enrich, triage and write-back.
//!
//! A tick is two steps with a bound each ([`Pipeline::poll`], [`Pipeline::process`]); the loop
//! ([`Pipeline::run`]) repeats ticks at `poll.interval`, at once while a backlog remains, until its
//! shutdown future resolves. Tests drive the steps directly.
//!
//! Invariant 1 (nothing missed): each poll re-reads `poll.overlap` behind the watermark; the ledger's
//! ID set drops what it already holds; the watermark moves only in the transaction that records the
//! page it comes from.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{error, info, warn, Instrument};

use crate::config::{Config, Duplicates};
use crate::enrich::{enrich, Events};
use crate::filter::{self, Outcome};
use crate::ledger::{Decided, Entry, Ledger, LedgerError, Stage, WriteKind};
use crate::panther::{AlertQuery, ApiError, EventPage, PantherApi};
use crate::render::{self, Investigation};
use crate::retriage::RetriageReport;
use crate::tables::TableSet;
use crate::triage::{self, Decision, Hit};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// A write `--dry-run` did not make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    Comment { alert_id: String, body: String },
    CommentEdit { alert_id: String, comment_id: String, body: String },
    Status { ids: Vec<String>, status: String },
    Assignee { ids: Vec<String>, assignee: String },
}

impl std::fmt::Display for Planned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Planned::Comment { alert_id, body } => write!(f, "would comment on alert {alert_id}:\n{body}\n"),
            Planned::CommentEdit { alert_id, comment_id, body } => {
                write!(f, "would edit comment {comment_id} on alert {alert_id}:\n{body}\n")
            }
            Planned::Status { ids, status } => writeln!(f, "would set status {status} on {}", ids.join(", ")),
            Planned::Assignee { ids, assignee } => writeln!(f, "would assign {assignee} to {}", ids.join(", ")),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    pub pages: u32,
    pub listed: u64,
    pub new: u64,
    /// Alerts Panther listed that could not be read (no ID): logged, counted, never silent.
    pub unreadable: u64,
    /// Every page of the window was read (false when the per-tick bound stopped it).
    pub complete: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessReport {
    pub filtered: u64,
    pub duplicates: u64,
    pub triaged: u64,
    pub by_verdict: std::collections::BTreeMap<String, u64>,
    pub comments_posted: u64,
    /// Our comments edited with a new revision (re-triage).
    pub comments_updated: u64,
    pub patches: u64,
    pub failed: u64,
    /// Alerts left for a later tick because Panther had a bad minute.
    pub deferred: u64,
    /// Where a comment was held back because an earlier attempt at it may still be stored by
    /// Panther: the longest such wait left, as last seen (after it, a look for the comment that
    /// finds nothing lets it be posted).
    pub waiting: Option<std::time::Duration>,
    /// The first investigation comment written (or planned) in this step.
    pub first_comment: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    pub poll: PollReport,
    pub process: ProcessReport,
    pub retriage: RetriageReport,
    /// Work is left that the bounds kept for the next tick.
    pub more: bool,
}

/// Everything a tick needs. Generic over the transport (`PantherApi`).
pub struct Pipeline<A> {
    pub(crate) api: A,
    pub(crate) ledger: Ledger,
    pub(crate) cfg: Arc<Config>,
    /// The lookup tables; a refresh swaps them between alerts, never during one.
    pub(crate) tables: Arc<TableSet>,
    pub(crate) dry_run: bool,
    pub(crate) planned: Mutex<Vec<Planned>>,
    /// Email -> Panther user ID, resolved once per process.
    pub(crate) users: tokio::sync::Mutex<HashMap<String, Option<String>>>,
    /// Events that came with an alert's page (GraphQL), kept until the alert is processed.
    prefetched: Mutex<HashMap<String, EventPage>>,
    /// Where a poll the per-tick bound cut short stopped: the next poll goes on from there instead of
    /// reading the window again from its start.
    resume: Mutex<Option<AlertQuery>>,
    /// Rung by the webhook receiver: an alert is waiting in the ledger.
    wake: tokio::sync::Notify,
    /// Set with `wake`, cleared when the backlog is worked: lets long steps (re-triage) yield.
    wake_pending: AtomicBool,
    stopping: AtomicBool,
}

/// An alert's investigation before it is written.
pub(crate) struct Work {
    pub(crate) decision: Decision,
    pub(crate) body: String,
    pub(crate) event_count: i64,
    /// Fingerprint of the verdict, the rule and the matches: re-triage edits the comment only when
    /// it changes.
    pub(crate) digest: String,
}

impl<A: PantherApi> Pipeline<A> {
    pub fn new(api: A, ledger: Ledger, cfg: Arc<Config>, tables: Arc<TableSet>, dry_run: bool) -> Self {
        Pipeline {
            api,
            ledger,
            cfg,
            tables,
            dry_run,
            planned: Mutex::new(Vec::new()),
            users: tokio::sync::Mutex::new(HashMap::new()),
            prefetched: Mutex::new(HashMap::new()),
            resume: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
            wake_pending: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn tables(&self) -> &Arc<TableSet> {
        &self.tables
    }

    /// Whether writes are only planned (`--dry-run` or `sync.dry_run`).
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// The writes `--dry-run` planned so far, taken.
    pub fn take_planned(&self) -> Vec<Planned> {
        std::mem::take(&mut *self.planned.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads new alerts into the ledger: from `overlap` behind the watermark (or `lookback` on a
    /// first start) up to now, every page, until the per-tick bound of new alerts. A poll the bound
    /// cut short is resumed by the next one from the page it stopped at (a complete pass still
    /// starts behind the watermark, so what was indexed late behind the cursor is read then).
    pub async fn poll(&self) -> Result<PollReport, PipelineError> {
        let now = Utc::now();
        let p = &self.cfg.poll;
        let after = match self.ledger.watermark()? {
            Some(w) => before(w, p.overlap),
            None => before(now, p.lookback),
        };
        let fresh_query = AlertQuery {
            created_after: after,
            created_before: now,
            statuses: self.cfg.filter.statuses.clone(),
            severities: self.cfg.filter.severities.clone(),
            cursor: None,
        };
        let resumed = self.resume.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut q = resumed.clone().unwrap_or_else(|| fresh_query.clone());
        let mut r = PollReport::default();
        loop {
            let page = match self.api.list_alerts(&q).await {
                Ok(page) => page,
                // A cursor kept from an earlier tick may have expired: start the pass again.
                Err(e)
                    if resumed.is_some()
                        && q.cursor == resumed.as_ref().and_then(|r| r.cursor.clone())
                        && !e.retry_later() =>
                {
                    warn!(stage = "poll", error = %e, "the saved cursor was refused; reading the window from its start");
                    q = fresh_query.clone();
                    continue;
                }
                Err(e) => {
                    if e.retry_later() && q.cursor.is_some() {
                        // Keep the place: the next tick goes on from it rather than from the start.
                        *self.resume.lock().unwrap_or_else(|e| e.into_inner()) = Some(q.clone());
                    }
                    return Err(e.into());
                }
            };
            r.pages += 1;
            r.listed += page.alerts.len() as u64;
            for _ in &page.alerts {
                crate::metrics::alert_seen(crate::metrics::source::POLL);
            }
            for why in &page.unreadable {
                error!(stage = "poll", outcome = "unreadable", detail = %why, "Panther listed an alert that cannot be read");
                r.unreadable += 1;
            }
            // Never past `now`: an alert stamped in the future must not hide the next ones.
            let watermark = page.alerts.iter().filter_map(|a| a.created_at).max().map(|m| m.min(now));
            let fresh = self.ledger.record_page(&page.alerts, "poll", watermark)?;
            let mut events: HashMap<String, EventPage> = page.events.into_iter().collect();
            for (a, new) in page.alerts.iter().zip(&fresh) {
                if *new {
                    crate::metrics::alert_ingested(crate::metrics::source::POLL);
                    info!(alert_id = %a.id, detection_id = %a.detection_id, stage = "poll", outcome = "recorded", "new alert");
                    if let Some(ev) = events.remove(&a.id) {
                        self.keep_prefetched(a.id.clone(), ev);
                    }
                }
            }
            r.new += fresh.iter().filter(|n| **n).count() as u64;
            match page.next {
                None => {
                    r.complete = true;
                    break;
                }
                Some(c) if r.new >= p.max_alerts_per_tick as u64 || self.stopping() => {
                    q.cursor = Some(c);
                    *self.resume.lock().unwrap_or_else(|e| e.into_inner()) = Some(q);
                    break;
                }
                Some(c) => q.cursor = Some(c),
            }
        }
        Ok(r)
    }

    /// Works through up to `poll.max_alerts_per_tick` unfinished alerts, oldest first. A transient
    /// Panther failure stops the step (the rest waits for the next tick); an alert Panther refuses
    /// for good is marked failed with the reason.
    pub async fn process(&self) -> Result<ProcessReport, PipelineError> {
        self.wake_pending.store(false, Ordering::SeqCst);
        let mut r = ProcessReport::default();
        let mut batch = Vec::new();
        let mut comments = Vec::new();
        let mut stopped = false;
        let entries = self.ledger.unfinished(self.cfg.poll.max_alerts_per_tick)?;
        for e in entries {
            if self.stopping() {
                break;
            }
            if comments.len() >= self.api.comment_batch() && self.flush_comments(&mut comments, &mut r).await? {
                stopped = true;
                break;
            }
            let span = tracing::info_span!("alert", alert_id = %e.id, detection_id = %e.detection_id);
            match self.handle(&e, &mut batch, &mut comments, &mut r).instrument(span).await {
                Ok(()) => {}
                Err(PipelineError::Api(err @ ApiError::Unauthorized { .. })) => {
                    // The key lacks a permission: every alert would fail the same way. Stop and
                    // mark nothing, so fixing the key lets them all through.
                    error!(alert_id = %e.id, stage = "process", outcome = "deferred", error = %err, "Panther refused the API key; nothing more is processed this tick");
                    self.ledger.note_attempt(&e.id, &err.to_string())?;
                    r.deferred += 1;
                    break;
                }
                Err(PipelineError::Api(err)) if err.retry_later() || err.outcome_unknown() => {
                    warn!(alert_id = %e.id, stage = "process", outcome = "deferred", error = %err, "Panther is not answering; the alert waits for the next tick");
                    self.ledger.note_attempt(&e.id, &err.to_string())?;
                    r.deferred += 1;
                    break;
                }
                Err(PipelineError::Api(err)) => {
                    error!(alert_id = %e.id, stage = "process", outcome = "failed", error = %err, "Panther refused a request for this alert");
                    self.ledger.set_stage(&e.id, Stage::Failed, Some(&err.to_string()))?;
                    r.failed += 1;
                }
                Err(other) => return Err(other),
            }
        }
        if !stopped && self.flush_comments(&mut comments, &mut r).await? {
            stopped = true;
        }
        if !stopped {
            // Deferred work keeps its intents; the next tick collects them again.
            self.flush_patches(batch, &mut r).await?;
        }
        let lag = self.ledger.oldest_pending_age()?.map_or(0.0, |age| age.as_secs_f64());
        crate::metrics::ledger_oldest_pending_age(lag);
        Ok(r)
    }

    /// One poll, one process and one re-triage step.
    pub async fn tick(&self) -> Result<TickReport, PipelineError> {
        let poll = self.poll().await?;
        let process = self.process().await?;
        let more = !poll.complete || (self.ledger.backlog()? > 0 && process.deferred == 0);
        // New alerts first: re-triage runs once the backlog is worked off.
        let retriage = if process.deferred == 0 && !more { self.retriage().await? } else { RetriageReport::default() };
        Ok(TickReport { poll, process, retriage, more })
    }

    /// Ticks until nothing is left or Panther stops answering (`once`).
    pub async fn drain(&self) -> Result<TickReport, PipelineError> {
        let mut total = TickReport::default();
        loop {
            let t = self.tick().await?;
            let progress =
                t.poll.new + t.process.triaged + t.process.filtered + t.process.duplicates + t.process.failed;
            add(&mut total, &t);
            if !t.more || t.process.deferred > 0 || progress == 0 {
                total.more = t.more;
                return Ok(total);
            }
        }
    }

    /// Investigates one alert now (`triage ALERT_ID`), whatever the poller has seen of it. An alert
    /// already answered is not answered again.
    pub async fn triage_one(&self, id: &str) -> Result<(Entry, ProcessReport), PipelineError> {
        let alert = self.api.get_alert(id).await?;
        self.ledger.record_page(std::slice::from_ref(&alert), "manual", None)?;
        let mut r = ProcessReport::default();
        // Asked for by name: an alert that failed earlier (a refused key, say) is tried again.
        self.ledger.reopen(&alert.id)?;
        let e = self.ledger.require(&alert.id)?;
        if matches!(e.stage, Stage::Pending | Stage::Writing) {
            let (mut batch, mut comments) = (Vec::new(), Vec::new());
            let span = tracing::info_span!("alert", alert_id = %e.id, detection_id = %e.detection_id);
            self.handle(&e, &mut batch, &mut comments, &mut r).instrument(span).await?;
            if let Some(err) = self.flush_comments_or_error(&mut comments, &mut r).await? {
                return Err(err.into());
            }
            self.flush_patches(batch, &mut r).await?;
        }
        let e = self.ledger.require(&alert.id)?;
        Ok((e, r))
    }

    /// Tells the loop an alert is waiting in the ledger (a webhook delivery): it works the backlog
    /// now rather than at the next interval.
    pub fn wake(&self) {
        self.wake_pending.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    pub(crate) fn wake_pending(&self) -> bool {
        self.wake_pending.load(Ordering::SeqCst)
    }

    /// Works the ledger's backlog without polling (what a webhook delivery needs).
    pub async fn process_now(&self) -> Result<TickReport, PipelineError> {
        let process = self.process().await?;
        let more = self.ledger.backlog()? > 0 && process.deferred == 0;
        Ok(TickReport { process, more, ..TickReport::default() })
    }

    /// [`Pipeline::run_with`] with nothing to tell after each tick.
    pub async fn run(&self, shutdown: impl Future<Output = ()>, grace: Duration) {
        self.run_with(shutdown, grace, |_| {}).await
    }

    /// The daemon loop: ticks every `poll.interval` (at once while a backlog remains, and works the
    /// backlog at once when [`Pipeline::wake`] rings) until `shutdown` resolves; then stops taking
    /// new alerts, lets the alert in hand finish within `grace`, and returns. A failed tick is
    /// logged and retried next interval: Panther's bad minute must not end the daemon.
    /// `after_tick` sees each polling tick's result (health, the systemd watchdog).
    pub async fn run_with(
        &self,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
        after_tick: impl Fn(&Result<TickReport, PipelineError>),
    ) {
        let mut interval = tokio::time::interval(self.cfg.poll.interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let mut more = false;
        loop {
            let mut woken = false;
            if !more {
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = interval.tick() => {}
                    _ = self.wake.notified() => woken = true,
                }
            }
            let tick = async {
                if woken {
                    self.process_now().await
                } else {
                    self.tick().await
                }
            };
            tokio::pin!(tick);
            let result = tokio::select! {
                r = &mut tick => r,
                _ = &mut shutdown => {
                    self.stopping.store(true, Ordering::SeqCst);
                    info!(stage = "shutdown", "stopping: finishing the alert in hand");
                    match tokio::time::timeout(grace, tick).await {
                        Ok(r) => { log_tick(&r); }
                        Err(_) => warn!(stage = "shutdown", "the alert in hand did not finish in time; the ledger records its open write, checked on restart"),
                    }
                    break;
                }
            };
            log_tick(&result);
            if !woken {
                after_tick(&result);
            }
            for planned in self.take_planned() {
                info!(stage = "sync", outcome = "dry_run", planned = %planned, "not written (dry run)");
            }
            more = matches!(&result, Ok(t) if t.more);
        }
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Writes what a revised alert owes (re-triage): the comment edit, then status and assignee.
    pub(crate) async fn write_revision(&self, e: &Entry, r: &mut ProcessReport) -> Result<(), PipelineError> {
        let (mut batch, mut comments) = (Vec::new(), Vec::new());
        self.handle(e, &mut batch, &mut comments, r).await?;
        if let Some(err) = self.flush_comments_or_error(&mut comments, r).await? {
            return Err(err.into());
        }
        self.flush_patches(batch, r).await
    }

    /// Keeps events that came with a page for the alert's investigation. Bounded: past a few ticks'
    /// worth, they are dropped and read again when needed.
    fn keep_prefetched(&self, id: String, events: EventPage) {
        let mut map = self.prefetched.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() < 4 * self.cfg.poll.max_alerts_per_tick {
            map.insert(id, events);
        }
    }

    fn take_prefetched(&self, id: &str) -> Option<EventPage> {
        self.prefetched.lock().unwrap_or_else(|e| e.into_inner()).remove(id)
    }

    /// Takes one alert as far as it can go: filter, dedup, enrich, triage, then its writes.
    async fn handle(
        &self,
        e: &Entry,
        batch: &mut Vec<crate::ledger::Write>,
        comments: &mut Vec<crate::ledger::Write>,
        r: &mut ProcessReport,
    ) -> Result<(), PipelineError> {
        let prefetched = self.take_prefetched(&e.id);
        let fetched;
        let e = if e.fetched {
            e
        } else {
            // Known by its ID only (a webhook delivery): read it from Panther first.
            match self.api.get_alert(&e.id).await {
                Ok(a) => {
                    self.ledger.fill(&a)?;
                    fetched = self.ledger.require(&e.id)?;
                    &fetched
                }
                Err(err) if err.status() == Some(404) => {
                    // Panther may push an alert before its API serves it: wait through the poll
                    // overlap (the poller fills the row when it lists the alert), then give up.
                    let young = e.created.is_none_or(|c| {
                        Utc::now() - c < chrono::Duration::from_std(self.cfg.poll.overlap).unwrap_or_default()
                    });
                    if young {
                        info!(
                            stage = "webhook",
                            outcome = "waiting",
                            "Panther does not serve this alert yet; trying again next tick"
                        );
                        self.ledger.note_attempt(&e.id, &err.to_string())?;
                        r.deferred += 1;
                        return Ok(());
                    }
                    let why = format!("Panther has no alert {} (a webhook delivered an ID it does not know)", e.id);
                    warn!(stage = "webhook", outcome = "failed", "{why}");
                    self.ledger.set_stage(&e.id, Stage::Failed, Some(&why))?;
                    r.failed += 1;
                    return Ok(());
                }
                Err(err) => return Err(err.into()),
            }
        };
        // Writes recorded in an earlier run may have reached Panther: check before writing again.
        let mut check_first = e.stage == Stage::Writing;
        if e.stage == Stage::Pending {
            match filter::check(&self.cfg.filter, &e.status, &e.severity, &e.detection_id) {
                Outcome::Drop(kind, reason) => {
                    crate::metrics::alert_filtered(kind);
                    info!(stage = "filter", outcome = "filtered", reason = %reason, "alert filtered out");
                    self.ledger.set_stage(&e.id, Stage::Filtered, Some(&reason))?;
                    r.filtered += 1;
                    return Ok(());
                }
                Outcome::KeepDespite(why) => warn!(stage = "filter", outcome = "kept", reason = %why, "alert kept"),
                Outcome::Keep => {}
            }
            let window = self.cfg.filter.dedup_window;
            let original = match e.created {
                Some(t) if !window.is_zero() => self.ledger.original_of(&e.id, &e.detection_id, &e.title, t, window)?,
                _ => None,
            };
            if let Some(orig) = original {
                let writes = match self.cfg.sync.duplicates {
                    Duplicates::Link => {
                        let w = humantime::format_duration(window).to_string();
                        vec![(
                            WriteKind::Comment,
                            render::duplicate_link(&e.id, &orig, &w, self.cfg.sync.comment_format),
                        )]
                    }
                    Duplicates::Skip => vec![],
                };
                info!(stage = "filter", outcome = "duplicate", original = %orig, "duplicate of an earlier alert");
                crate::metrics::alert_filtered(crate::metrics::reason::DUPLICATE);
                let d = Decided {
                    verdict: "duplicate",
                    rule: None,
                    event_count: e.event_count,
                    last_event_at: e.last_event_at.as_deref(),
                    digest: None,
                };
                if !self.ledger.decide(&e.id, &d, Some(&orig), &writes)? {
                    return Ok(()); // another process sharing the state file has it
                }
                r.duplicates += 1;
            } else {
                let work = self.investigate(e, prefetched, 1).await?;
                let mut writes = vec![(WriteKind::Comment, work.body.clone())];
                if let Some(s) = work.decision.set_status {
                    writes.push((WriteKind::Status, s.as_str().to_owned()));
                }
                if let Some(a) = &work.decision.assign_to {
                    writes.push((WriteKind::Assignee, a.clone()));
                }
                let v = work.decision.verdict.as_str();
                info!(stage = "triage", outcome = v, rule = work.decision.rule.as_deref().unwrap_or("-"), "verdict");
                let d = Decided {
                    verdict: v,
                    rule: work.decision.rule.as_deref(),
                    event_count: work.event_count,
                    last_event_at: e.last_event_at.as_deref(),
                    digest: Some(&work.digest),
                };
                if !self.ledger.decide(&e.id, &d, None, &writes)? {
                    return Ok(()); // another process sharing the state file has it
                }
                *r.by_verdict.entry(v.to_owned()).or_default() += 1;
                crate::metrics::alert_triaged(work.decision.verdict.as_str());
                r.triaged += 1;
                if r.first_comment.is_none() {
                    r.first_comment = Some(work.body);
                }
            }
            check_first = false;
        }
        for w in self.ledger.writes(&e.id)? {
            if w.state != crate::ledger::WriteState::Intent {
                continue;
            }
            match w.kind {
                // A write that may have reached Panther already is looked for first, alone.
                WriteKind::Comment if check_first => self.write_comment(&w, true, r).await?,
                WriteKind::Comment => comments.push(w),
                WriteKind::CommentEdit => self.edit_comment(&w, r).await?,
                WriteKind::Status | WriteKind::Assignee => batch.push(w),
            }
        }
        Ok(())
    }

    /// Reads the alert's events (those that came with its page, then up to `enrich.max_events`),
    /// enriches, decides and renders.
    pub(crate) async fn investigate(
        &self,
        e: &Entry,
        prefetched: Option<EventPage>,
        revision: i64,
    ) -> Result<Work, PipelineError> {
        let es = &self.cfg.enrich;
        let max = es.max_events as usize;
        let mut from_page = prefetched.as_ref().is_some_and(|p| p.next.is_some());
        let (mut raw, mut cursor, mut read_more) = match prefetched {
            Some(p) => {
                let more = p.next.is_some();
                (p.events, p.next, more)
            }
            None => (Vec::new(), None, true),
        };
        let capped;
        loop {
            if raw.len() >= max {
                capped = cursor.is_some() || raw.len() > max || e.event_count > max as i64;
                raw.truncate(max);
                break;
            }
            if !read_more {
                capped = false;
                break;
            }
            let want = es.events_per_alert.min((max - raw.len()) as u32);
            let page = match self.api.list_events(&e.id, want, cursor.as_deref()).await {
                Ok(page) => page,
                // A cursor that came with the page ticks ago may have expired: read from the start.
                Err(err) if from_page && !err.retry_later() && !err.outcome_unknown() => {
                    warn!(stage = "enrich", error = %err, "the events cursor that came with the alert was refused; reading its events again");
                    (raw, cursor, from_page) = (Vec::new(), None, false);
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            raw.extend(page.events);
            from_page = false;
            read_more = page.next.is_some();
            cursor = page.next;
        }
        let mut events = Events::default();
        for ev in &raw {
            // The events came through serde_json already, so they are valid JSON.
            if let Err(err) = events.push_json(ev.get()) {
                warn!(stage = "enrich", error = %err, "an event could not be read");
            }
        }
        let selectors = &self.cfg.selectors;
        let tables = self.tables.current();
        let found = enrich(&events, &tables, selectors);
        let mut hits: Vec<Hit> = Vec::new();
        for m in &found.matches {
            let table = &tables[m.table];
            let row: serde_json::Value = serde_json::from_str(&table.row_json(m.entry)).unwrap_or_default();
            let hit = Hit {
                table: table.name().to_owned(),
                field: selectors.get(m.selector).field.clone(),
                value: m.value.clone(),
                row_id: table.entry_id(m.entry).to_owned(),
                confidence: row.get("confidence").and_then(json_int),
                threat_type: row.get("threat_type").and_then(|v| v.as_str()).map(str::to_owned),
                source: ["source", "itype"]
                    .iter()
                    .find_map(|k| row.get(*k).and_then(|v| v.as_str()))
                    .map(str::to_owned),
            };
            if !hits.iter().any(|h| h.table == hit.table && h.value == hit.value && h.row_id == hit.row_id) {
                hits.push(hit);
            }
        }
        let severity = crate::panther::Severity::parse(&e.severity);
        let decision = triage::decide(&self.cfg.rules, severity, &e.detection_id, &hits);
        let skipped: Vec<(String, String)> =
            found.skipped.iter().map(|s| (s.value.clone(), s.reason.to_string())).collect();
        let triaged_at = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let inv = Investigation {
            alert_id: &e.id,
            title: &e.title,
            detection_id: &e.detection_id,
            severity: &e.severity,
            created_at: &e.created_at,
            decision: &decision,
            hits: &hits,
            lookups: found.lookups,
            skipped: &skipped,
            skipped_total: found.skipped_total,
            events_read: raw.len(),
            event_count: e.event_count.max(raw.len() as i64),
            events_capped: capped,
            last_event_at: e.last_event_at.as_deref(),
            triaged_at: &triaged_at,
            revision,
        };
        let body = render::investigation(&inv, self.cfg.sync.comment_format, &self.cfg.sync.include);
        let digest = digest(&decision, &hits);
        Ok(Work { decision, body, event_count: e.event_count.max(raw.len() as i64), digest })
    }
}

/// A stable fingerprint (FNV-1a, 64 bits) of what a comment says: the verdict, the rule and the
/// matches, in a fixed order. Stable across runs and versions, unlike `std`'s hasher.
fn digest(d: &Decision, hits: &[Hit]) -> String {
    let mut parts: Vec<String> =
        hits.iter().map(|h| format!("{}\u{1f}{}\u{1f}{}\u{1f}{}", h.table, h.field, h.value, h.row_id)).collect();
    parts.sort();
    let text = format!("{}\u{1e}{}\u{1e}{}", d.verdict.as_str(), d.rule.as_deref().unwrap_or(""), parts.join("\u{1e}"));
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A confidence as Python's `int()` would read it from a row: integers, floats, numeric strings.
fn json_int(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn add(total: &mut TickReport, t: &TickReport) {
    let (p, q) = (&mut total.poll, &t.poll);
    p.pages += q.pages;
    p.listed += q.listed;
    p.new += q.new;
    p.unreadable += q.unreadable;
    p.complete = q.complete;
    total.process.add(&t.process);
    let (p, q) = (&mut total.retriage, &t.retriage);
    p.checked += q.checked;
    p.grown += q.grown;
    p.revised += q.revised;
    p.process.add(&q.process);
}

impl ProcessReport {
    fn add(&mut self, q: &ProcessReport) {
        let p = self;
        p.filtered += q.filtered;
        p.duplicates += q.duplicates;
        p.triaged += q.triaged;
        for (k, v) in &q.by_verdict {
            *p.by_verdict.entry(k.clone()).or_default() += v;
        }
        p.comments_posted += q.comments_posted;
        p.comments_updated += q.comments_updated;
        p.patches += q.patches;
        p.failed += q.failed;
        p.deferred += q.deferred;
        if q.waiting.is_some() {
            p.waiting = q.waiting;
        }
        if p.first_comment.is_none() {
            p.first_comment.clone_from(&q.first_comment);
        }
    }
}

fn log_tick(r: &Result<TickReport, PipelineError>) {
    match r {
        Ok(t) => info!(
            stage = "tick",
            new = t.poll.new,
            triaged = t.process.triaged,
            filtered = t.process.filtered,
            duplicates = t.process.duplicates,
            deferred = t.process.deferred,
            "tick done"
        ),
        Err(e) => error!(stage = "tick", error = %e, "tick failed; retrying next interval"),
    }
}

/// The time `d` before `t`, or the earliest time there is (a duration from config can be huge).
pub fn before(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d).ok().and_then(|d| t.checked_sub_signed(d)).unwrap_or(DateTime::<Utc>::MIN_UTC)
}
