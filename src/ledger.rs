//! The ledger: what the daemon has seen and written, in SQLite (WAL, `synchronous=FULL`).
//!
//! It is the daemon's memory across restarts and its durable queue: an alert is recorded before the
//! watermark moves past it, a write's intent is recorded before the write and its result after, so
//! after a crash the ledger says what may have happened and the daemon checks before acting again.
//! Only this module touches SQLite.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use crate::panther::{format_time, parse_time, Alert};

/// Schema changes, applied in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE alerts (
    id            TEXT PRIMARY KEY,
    created_at    TEXT NOT NULL,     -- as Panther sent it
    created_ms    INTEGER,           -- parsed, for ordering and the dedup window; NULL when unparsable
    detection_id  TEXT NOT NULL,
    title         TEXT NOT NULL,
    severity      TEXT NOT NULL,
    status        TEXT NOT NULL,
    source        TEXT NOT NULL,     -- poll | webhook | manual
    stage         TEXT NOT NULL,     -- pending | writing | done | filtered | failed
    reason        TEXT,              -- why filtered or failed
    verdict       TEXT,
    rule          TEXT,
    revision      INTEGER NOT NULL DEFAULT 0,
    event_count   INTEGER NOT NULL DEFAULT 0,
    last_event_at TEXT,
    original_id   TEXT,              -- the alert this one duplicates
    attempts      INTEGER NOT NULL DEFAULT 0,
    first_seen    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX alerts_by_stage ON alerts(stage, created_ms);
CREATE INDEX alerts_by_detection ON alerts(detection_id, title, created_ms);
CREATE TABLE writes (
    id          INTEGER PRIMARY KEY,
    alert_id    TEXT NOT NULL REFERENCES alerts(id),
    kind        TEXT NOT NULL,       -- comment | status | assignee
    revision    INTEGER NOT NULL,
    payload     TEXT NOT NULL,       -- the comment body, the status, the assignee
    state       TEXT NOT NULL,       -- intent | done | failed
    comment_id  TEXT,
    detail      TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (alert_id, kind, revision)
);
CREATE TABLE progress (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#,
    r#"
ALTER TABLE alerts ADD COLUMN fetched INTEGER NOT NULL DEFAULT 1;  -- 0: known by ID only (a webhook delivery)
ALTER TABLE alerts ADD COLUMN digest TEXT;          -- fingerprint of the verdict and matches last written
ALTER TABLE alerts ADD COLUMN triaged_ms INTEGER;   -- when the verdict was last written (re-triage window)
ALTER TABLE alerts ADD COLUMN checked_ms INTEGER;   -- when re-triage last looked for new events
CREATE INDEX alerts_for_retriage ON alerts(stage, triaged_ms);
"#,
    r#"
ALTER TABLE writes ADD COLUMN sent_at TEXT;  -- when a request for it went out that may still land (NULL: none)
UPDATE writes SET sent_at = updated_at WHERE state = 'intent';  -- an older daemon may have sent these
"#,
];

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("state database {path}: {source}; check `state.path` and that the directory is writable")]
    Open { path: String, source: rusqlite::Error },
    #[error("state database {path} was written by a newer panther-triage (schema {found}, this one knows {known}); upgrade, or point `state.path` elsewhere")]
    TooNew { path: String, found: i64, known: i64 },
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database: alert {0} is not recorded")]
    Missing(String),
}

/// Where an alert is in the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Recorded, not yet looked at.
    Pending,
    /// Decided; its writes (in `writes`) are not all done.
    Writing,
    /// Every write done (or none owed: a dedup duplicate with `duplicates = "skip"`).
    Done,
    /// Did not pass the filters; `reason` says which.
    Filtered,
    /// Panther refuses to serve it (deleted, say); `reason` says why. Never retried by itself.
    Failed,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Pending => "pending",
            Stage::Writing => "writing",
            Stage::Done => "done",
            Stage::Filtered => "filtered",
            Stage::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Stage {
        match s {
            "writing" => Stage::Writing,
            "done" => Stage::Done,
            "filtered" => Stage::Filtered,
            "failed" => Stage::Failed,
            _ => Stage::Pending,
        }
    }
}

/// An alert as the ledger holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: String,
    pub created_at: String,
    pub created: Option<DateTime<Utc>>,
    pub detection_id: String,
    pub title: String,
    pub severity: String,
    pub status: String,
    pub stage: Stage,
    pub reason: Option<String>,
    pub verdict: Option<String>,
    pub revision: i64,
    pub event_count: i64,
    pub original_id: Option<String>,
    pub attempts: i64,
    /// False for an alert known by its ID only (a webhook delivery not yet read from Panther).
    pub fetched: bool,
    pub last_event_at: Option<String>,
    pub digest: Option<String>,
    /// The triage rule that decided the verdict written last.
    pub rule: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Comment,
    /// A new revision of our comment: the body replaces the one of the comment in `comment_id`.
    CommentEdit,
    Status,
    Assignee,
}

impl WriteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteKind::Comment => "comment",
            WriteKind::CommentEdit => "comment_edit",
            WriteKind::Status => "status",
            WriteKind::Assignee => "assignee",
        }
    }

    fn parse(s: &str) -> WriteKind {
        match s {
            "status" => WriteKind::Status,
            "assignee" => WriteKind::Assignee,
            "comment_edit" => WriteKind::CommentEdit,
            _ => WriteKind::Comment,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteState {
    /// Recorded before the write; the write may or may not have happened.
    Intent,
    Done,
    /// Panther refused it for good (a 4xx other than 429); `detail` says why.
    Failed,
}

impl WriteState {
    fn as_str(self) -> &'static str {
        match self {
            WriteState::Intent => "intent",
            WriteState::Done => "done",
            WriteState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> WriteState {
        match s {
            "done" => WriteState::Done,
            "failed" => WriteState::Failed,
            _ => WriteState::Intent,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub id: i64,
    pub alert_id: String,
    pub kind: WriteKind,
    pub revision: i64,
    pub payload: String,
    pub state: WriteState,
    pub comment_id: Option<String>,
    pub detail: Option<String>,
    /// When a request for this write went out whose outcome is not known to be a refusal: Panther
    /// may still carry it out. `None` when no such request is recorded.
    pub sent_at: Option<DateTime<Utc>>,
}

/// Counts by stage, for summaries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: u64,
    pub writing: u64,
    pub done: u64,
    pub filtered: u64,
    pub failed: u64,
}

pub struct Ledger {
    conn: Mutex<Connection>,
}

fn now() -> String {
    format_time(Utc::now())
}

impl Ledger {
    /// Opens (creating if needed) the state database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| LedgerError::Open {
                path: shown.clone(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        }
        // Private from the start: SQLite gives the WAL and shared-memory files the same mode.
        crate::private_file::ensure(path).map_err(|e| LedgerError::Open {
            path: shown.clone(),
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
        })?;
        let conn = Connection::open(path).map_err(|source| LedgerError::Open { path: shown.clone(), source })?;
        Ledger::init(conn, &shown)
    }

    /// A ledger that lives in memory only (`--dry-run` without a state file, tests).
    pub fn in_memory() -> Result<Ledger, LedgerError> {
        Ledger::init(Connection::open_in_memory()?, ":memory:")
    }

    /// A private copy of the state database at `path` (or an empty ledger when there is none):
    /// `--dry-run` works on it so that nothing it does changes what a real run will do.
    pub fn snapshot(path: &Path) -> Result<Ledger, LedgerError> {
        if !path.exists() {
            return Ledger::in_memory();
        }
        let shown = path.display().to_string();
        let src = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|source| LedgerError::Open { path: shown.clone(), source })?;
        let mut mem = Connection::open_in_memory()?;
        {
            let backup = rusqlite::backup::Backup::new(&src, &mut mem)?;
            backup.run_to_completion(256, Duration::ZERO, None)?;
        }
        Ledger::init(mem, &shown)
    }

    fn init(conn: Connection, shown: &str) -> Result<Ledger, LedgerError> {
        conn.busy_timeout(Duration::from_secs(10))?;
        // WAL keeps readers off the writer's back; FULL makes each commit durable before we act on it.
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(LedgerError::TooNew { path: shown.to_owned(), found: version, known });
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(m)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(Ledger { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn schema_version(&self) -> Result<i64, LedgerError> {
        Ok(self.conn().query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// The poll watermark: every alert created before it, down to the overlap, is in the ledger.
    pub fn watermark(&self) -> Result<Option<DateTime<Utc>>, LedgerError> {
        let v: Option<String> =
            self.conn().query_row("SELECT value FROM progress WHERE key = 'watermark'", [], |r| r.get(0)).optional()?;
        Ok(v.as_deref().and_then(parse_time))
    }

    /// Records a page of alerts and, in the same transaction, moves the watermark forward to
    /// `watermark` (never back). Returns the alerts that were new.
    pub fn record_page(
        &self,
        alerts: &[Alert],
        source: &str,
        watermark: Option<DateTime<Utc>>,
    ) -> Result<Vec<bool>, LedgerError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut fresh = Vec::with_capacity(alerts.len());
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR IGNORE INTO alerts (id, created_at, created_ms, detection_id, title, severity, status,
                     event_count, last_event_at, first_seen, updated_at, source, stage)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, 'pending')",
            )?;
            let mut fill = tx.prepare_cached(FILL_STUB)?;
            let now = now();
            for a in alerts {
                let ms = a.created_at.map(|t| t.timestamp_millis());
                let mut values = alert_values(a, &ms, &now).to_vec();
                values.push(&source);
                let n = ins.execute(&*values)?;
                // A webhook delivery known by its ID only gets its data here (it is not new).
                if n == 0 {
                    fill.execute(alert_values(a, &ms, &now))?;
                }
                fresh.push(n == 1);
            }
        }
        if let Some(w) = watermark {
            let old: Option<String> =
                tx.query_row("SELECT value FROM progress WHERE key = 'watermark'", [], |r| r.get(0)).optional()?;
            if old.as_deref().and_then(parse_time).is_none_or(|o| w > o) {
                tx.execute(
                    "INSERT INTO progress (key, value) VALUES ('watermark', ?1)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    params![format_time(w)],
                )?;
            }
        }
        tx.commit()?;
        Ok(fresh)
    }

    /// Records an alert Panther pushed (Custom Webhook) by what the delivery says of it, to be read
    /// from Panther before it is worked on. Durable when this returns. Returns whether it was new.
    pub fn record_webhook(
        &self,
        id: &str,
        created_at: &str,
        detection_id: &str,
        title: &str,
        severity: &str,
    ) -> Result<bool, LedgerError> {
        let now = now();
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO alerts (id, created_at, created_ms, detection_id, title, severity, status, source,
                 stage, fetched, first_seen, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, '', 'webhook', 'pending', 0, ?7, ?7)",
            params![
                id,
                created_at,
                parse_time(created_at).map(|t| t.timestamp_millis()),
                detection_id,
                title,
                severity,
                now
            ],
        )?;
        Ok(n == 1)
    }

    /// Fills an alert known by its ID only with what Panther says of it.
    pub fn fill(&self, a: &Alert) -> Result<(), LedgerError> {
        let conn = self.conn();
        let ms = a.created_at.map(|t| t.timestamp_millis());
        conn.prepare_cached(FILL_STUB)?.execute(alert_values(a, &ms, &now()))?;
        Ok(())
    }

    /// Alerts triaged since `since` (an original, not a duplicate, whose writes are all done), the
    /// longest unchecked first: the ones re-triage looks at for new events.
    pub fn retriage_due(&self, since: DateTime<Utc>, limit: usize) -> Result<Vec<Entry>, LedgerError> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM alerts
             WHERE stage = 'done' AND original_id IS NULL AND digest IS NOT NULL AND triaged_ms >= ?1
             ORDER BY checked_ms IS NOT NULL, checked_ms, triaged_ms LIMIT ?2"
        ))?;
        let rows = st.query_map(params![since.timestamp_millis(), limit as i64], entry)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Notes that re-triage looked at the alert, and what it found of its events.
    pub fn checked(&self, id: &str, event_count: i64, last_event_at: Option<&str>) -> Result<(), LedgerError> {
        self.conn().execute(
            "UPDATE alerts SET checked_ms = ?2, event_count = MAX(event_count, ?3),
                 last_event_at = COALESCE(?4, last_event_at) WHERE id = ?1",
            params![id, Utc::now().timestamp_millis(), event_count, last_event_at],
        )?;
        Ok(())
    }

    /// Records a new revision of a triaged alert (its events changed the verdict or the matches) and
    /// the writes it owes, in one transaction; the alert goes back to `writing`. Returns false,
    /// changing nothing, when the alert is no longer at `revision` and done (someone revised it).
    pub fn revise(
        &self,
        id: &str,
        revision: i64,
        d: &Decided<'_>,
        writes: &[(WriteKind, String, Option<String>)],
    ) -> Result<bool, LedgerError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now = now();
        let next = revision + 1;
        let changed = tx.execute(
            "UPDATE alerts SET stage = 'writing', verdict = ?2, rule = ?3, event_count = ?4, last_event_at = ?5,
                 digest = ?6, triaged_ms = ?7, revision = ?8, updated_at = ?9
             WHERE id = ?1 AND stage = 'done' AND revision = ?10",
            params![
                id,
                d.verdict,
                d.rule,
                d.event_count,
                d.last_event_at,
                d.digest,
                Utc::now().timestamp_millis(),
                next,
                now,
                revision
            ],
        )?;
        if changed == 0 {
            return Ok(false);
        }
        for (kind, payload, target) in writes {
            tx.execute(
                "INSERT OR IGNORE INTO writes (alert_id, kind, revision, payload, state, comment_id, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 'intent', ?5, ?6, ?6)",
                params![id, kind.as_str(), next, payload, target, now],
            )?;
        }
        close_if_done(&tx, id, &now)?;
        tx.commit()?;
        Ok(true)
    }

    /// The ID of our comment on the alert (the last one posted), if any.
    pub fn comment_id(&self, alert_id: &str) -> Result<Option<String>, LedgerError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT comment_id FROM writes WHERE alert_id = ?1 AND kind = 'comment' AND state = 'done'
                   AND comment_id IS NOT NULL ORDER BY revision DESC, id DESC LIMIT 1",
                params![alert_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn get(&self, id: &str) -> Result<Option<Entry>, LedgerError> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!("SELECT {ENTRY_COLUMNS} FROM alerts WHERE id = ?1"))?;
        Ok(st.query_row(params![id], entry).optional()?)
    }

    /// An alert that must be recorded (one the caller just recorded).
    pub fn require(&self, id: &str) -> Result<Entry, LedgerError> {
        self.get(id)?.ok_or_else(|| LedgerError::Missing(id.to_owned()))
    }

    /// Alerts still owed work: oldest first, but those that failed before go after those that did
    /// not, so one alert Panther keeps failing on cannot hold up the rest.
    pub fn unfinished(&self, limit: usize) -> Result<Vec<Entry>, LedgerError> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM alerts WHERE stage IN ('pending', 'writing')
             ORDER BY attempts, created_ms IS NULL, created_ms, id LIMIT ?1"
        ))?;
        let rows = st.query_map(params![limit as i64], entry)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How long the oldest alert still owed work has waited since Panther created it (the lag).
    pub fn oldest_pending_age(&self) -> Result<Option<Duration>, LedgerError> {
        let oldest: Option<i64> = self.conn().query_row(
            "SELECT MIN(created_ms) FROM alerts WHERE stage IN ('pending', 'writing')",
            [],
            |r| r.get(0),
        )?;
        let now = Utc::now().timestamp_millis();
        Ok(oldest.map(|ms| Duration::from_millis(now.saturating_sub(ms).max(0) as u64)))
    }

    /// Whether there is work left that [`unfinished`](Self::unfinished) would return.
    pub fn backlog(&self) -> Result<u64, LedgerError> {
        Ok(self.conn().query_row("SELECT COUNT(*) FROM alerts WHERE stage IN ('pending', 'writing')", [], |r| {
            r.get::<_, i64>(0)
        })? as u64)
    }

    pub fn set_stage(&self, id: &str, stage: Stage, reason: Option<&str>) -> Result<(), LedgerError> {
        self.conn().execute(
            "UPDATE alerts SET stage = ?2, reason = ?3, updated_at = ?4 WHERE id = ?1",
            params![id, stage.as_str(), reason, now()],
        )?;
        Ok(())
    }

    /// Counts an attempt that failed for a reason that may pass (Panther's bad minute).
    pub fn note_attempt(&self, id: &str, why: &str) -> Result<(), LedgerError> {
        self.conn().execute(
            "UPDATE alerts SET attempts = attempts + 1, reason = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, why, now()],
        )?;
        Ok(())
    }

    /// The first alert of the same detection and title created within `window` before `created`
    /// that was itself not a duplicate: the one a duplicate points at.
    pub fn original_of(
        &self,
        id: &str,
        detection_id: &str,
        title: &str,
        created: DateTime<Utc>,
        window: Duration,
    ) -> Result<Option<String>, LedgerError> {
        let to = created.timestamp_millis();
        let from = to.saturating_sub(window.as_millis().min(i64::MAX as u128) as i64);
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT id FROM alerts
             WHERE detection_id = ?1 AND title = ?2 AND created_ms BETWEEN ?3 AND ?4 AND id <> ?5
               AND original_id IS NULL AND stage IN ('writing', 'done')
             ORDER BY created_ms, id LIMIT 1",
        )?;
        Ok(st.query_row(params![detection_id, title, from, to, id], |r| r.get(0)).optional()?)
    }

    /// Records what triage decided and the writes it owes, all in one transaction; the alert moves
    /// from `pending` to `writing`. Returns false, changing nothing, when the alert was no longer
    /// pending (another process sharing the state file decided first). Writes already recorded are
    /// kept as they are.
    pub fn decide(
        &self,
        id: &str,
        d: &Decided<'_>,
        original_id: Option<&str>,
        writes: &[(WriteKind, String)],
    ) -> Result<bool, LedgerError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now = now();
        let revision = 1;
        let changed = tx.execute(
            "UPDATE alerts SET stage = 'writing', verdict = ?2, rule = ?3, original_id = ?4, event_count = ?5,
                 revision = ?6, reason = NULL, updated_at = ?7, last_event_at = COALESCE(?8, last_event_at),
                 digest = ?9, triaged_ms = ?10
             WHERE id = ?1 AND stage = 'pending'",
            params![
                id,
                d.verdict,
                d.rule,
                original_id,
                d.event_count,
                revision,
                now,
                d.last_event_at,
                d.digest,
                Utc::now().timestamp_millis()
            ],
        )?;
        if changed == 0 {
            return Ok(false);
        }
        for (kind, payload) in writes {
            tx.execute(
                "INSERT OR IGNORE INTO writes (alert_id, kind, revision, payload, state, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 'intent', ?5, ?5)",
                params![id, kind.as_str(), revision, payload, now],
            )?;
        }
        // Nothing owed (a duplicate with `duplicates = "skip"`): done now.
        close_if_done(&tx, id, &now)?;
        tx.commit()?;
        Ok(true)
    }

    /// Puts a failed alert back in the queue (`triage ALERT_ID` on it, once the cause is fixed).
    /// Writes that were done stay done; failed ones are forgotten so they are tried again.
    pub fn reopen(&self, id: &str) -> Result<(), LedgerError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM writes WHERE alert_id = ?1 AND state = 'failed'", params![id])?;
        tx.execute(
            "UPDATE alerts SET stage = 'pending', reason = NULL, attempts = 0, updated_at = ?2
             WHERE id = ?1 AND stage = 'failed'",
            params![id, now()],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn writes(&self, alert_id: &str) -> Result<Vec<Write>, LedgerError> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT id, alert_id, kind, revision, payload, state, comment_id, detail, sent_at FROM writes
             WHERE alert_id = ?1 ORDER BY id",
        )?;
        let rows = st.query_map(params![alert_id], |r| {
            Ok(Write {
                id: r.get(0)?,
                alert_id: r.get(1)?,
                kind: WriteKind::parse(&r.get::<_, String>(2)?),
                revision: r.get(3)?,
                payload: r.get(4)?,
                state: WriteState::parse(&r.get::<_, String>(5)?),
                comment_id: r.get(6)?,
                detail: r.get(7)?,
                sent_at: r.get::<_, Option<String>>(8)?.as_deref().and_then(parse_time),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records that requests for these writes are going out now, before they do: an attempt whose
    /// outcome is never learned (a timeout, a crash) is then known to have started no earlier.
    pub fn mark_sent(&self, write_ids: &[i64]) -> Result<(), LedgerError> {
        self.set_sent(write_ids, Some(&now()))
    }

    /// Records that the request for this write was refused whole: nothing of it can still land.
    pub fn mark_unsent(&self, write_id: i64) -> Result<(), LedgerError> {
        self.set_sent(&[write_id], None)
    }

    fn set_sent(&self, write_ids: &[i64], at: Option<&str>) -> Result<(), LedgerError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare_cached("UPDATE writes SET sent_at = ?2 WHERE id = ?1")?;
            for id in write_ids {
                st.execute(params![id, at])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Marks a write done (with the comment it created) or failed; when none of the alert's writes
    /// is left open, the alert is done.
    pub fn finish_write(
        &self,
        write_id: i64,
        state: WriteState,
        comment_id: Option<&str>,
        detail: Option<&str>,
    ) -> Result<(), LedgerError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now = now();
        let alert_id: String = tx.query_row(
            "UPDATE writes SET state = ?2, comment_id = COALESCE(?3, comment_id), detail = ?4, updated_at = ?5
             WHERE id = ?1 RETURNING alert_id",
            params![write_id, state.as_str(), comment_id, detail, now],
            |r| r.get(0),
        )?;
        close_if_done(&tx, &alert_id, &now)?;
        tx.commit()?;
        Ok(())
    }

    pub fn counts(&self) -> Result<Counts, LedgerError> {
        let conn = self.conn();
        let mut st = conn.prepare_cached("SELECT stage, COUNT(*) FROM alerts GROUP BY stage")?;
        let mut c = Counts::default();
        for row in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))? {
            let (stage, n) = row?;
            match Stage::parse(&stage) {
                Stage::Pending => c.pending += n,
                Stage::Writing => c.writing += n,
                Stage::Done => c.done += n,
                Stage::Filtered => c.filtered += n,
                Stage::Failed => c.failed += n,
            }
        }
        Ok(c)
    }

    /// Every alert with its stage and reason, oldest first (for reports and tests).
    pub fn entries(&self) -> Result<Vec<Entry>, LedgerError> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!("SELECT {ENTRY_COLUMNS} FROM alerts ORDER BY created_ms, id"))?;
        let rows = st.query_map([], entry)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// What triage decided for an alert, as the ledger keeps it.
#[derive(Debug, Clone, Copy)]
pub struct Decided<'a> {
    pub verdict: &'a str,
    pub rule: Option<&'a str>,
    pub event_count: i64,
    pub last_event_at: Option<&'a str>,
    /// Fingerprint of the verdict and matches (re-triage compares it); `None` for a duplicate.
    pub digest: Option<&'a str>,
}

// A webhook alert given up on (Panther did not serve it) is worked again once the poller finds it.
const FILL_STUB: &str =
    "UPDATE alerts SET created_at = ?2, created_ms = ?3, detection_id = ?4, title = ?5, severity = ?6,
     status = ?7, event_count = ?8, last_event_at = ?9, fetched = 1, updated_at = ?10,
     stage = CASE stage WHEN 'failed' THEN 'pending' ELSE stage END,
     reason = CASE stage WHEN 'failed' THEN NULL ELSE reason END
     WHERE id = ?1 AND fetched = 0";

/// An alert's columns, in the order `FILL_STUB` and `record_page`'s insert number them (?1..?10).
fn alert_values<'a>(
    a: &'a Alert,
    created_ms: &'a Option<i64>,
    now: &'a dyn rusqlite::ToSql,
) -> [&'a dyn rusqlite::ToSql; 10] {
    [
        &a.id,
        &a.created_at_raw,
        created_ms,
        &a.detection_id,
        &a.title,
        &a.severity_raw,
        &a.status_raw,
        &a.event_count,
        &a.last_received_event_at,
        now,
    ]
}

/// Moves a `writing` alert to `done` once none of its writes is an open intent.
fn close_if_done(tx: &rusqlite::Transaction<'_>, alert_id: &str, now: &str) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE alerts SET stage = 'done', updated_at = ?2
         WHERE id = ?1 AND stage = 'writing'
           AND NOT EXISTS (SELECT 1 FROM writes WHERE alert_id = ?1 AND state = 'intent')",
        params![alert_id, now],
    )?;
    Ok(())
}

const ENTRY_COLUMNS: &str = "id, created_at, detection_id, title, severity, status, stage, reason, verdict, revision,
    event_count, original_id, attempts, fetched, last_event_at, digest, rule";

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let created_at: String = r.get(1)?;
    Ok(Entry {
        id: r.get(0)?,
        created: parse_time(&created_at),
        created_at,
        detection_id: r.get(2)?,
        title: r.get(3)?,
        severity: r.get(4)?,
        status: r.get(5)?,
        stage: Stage::parse(&r.get::<_, String>(6)?),
        reason: r.get(7)?,
        verdict: r.get(8)?,
        revision: r.get(9)?,
        event_count: r.get(10)?,
        original_id: r.get(11)?,
        attempts: r.get(12)?,
        fetched: r.get::<_, i64>(13)? != 0,
        last_event_at: r.get(14)?,
        digest: r.get(15)?,
        rule: r.get(16)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(verdict: &str, event_count: i64) -> Decided<'_> {
        Decided { verdict, rule: None, event_count, last_event_at: None, digest: Some("d1") }
    }

    #[cfg(unix)]
    #[test]
    fn the_state_file_and_its_journal_are_the_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let l = Ledger::open(&path).unwrap();
        l.record_page(&[alert("a", "2026-01-01T00:00:00Z")], "poll", None).unwrap();
        for f in ["state.db", "state.db-wal", "state.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
    }

    #[test]
    fn a_state_file_from_the_first_schema_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO alerts (id, created_at, detection_id, title, severity, status, source, stage, first_seen,
                     updated_at) VALUES ('old', '2026-01-01T00:00:00Z', 'D', 't', 'HIGH', 'OPEN', 'poll', 'done', 'x', 'x')",
                [],
            )
            .unwrap();
        }
        let l = Ledger::open(&path).unwrap();
        assert_eq!(l.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let e = l.require("old").unwrap();
        assert!(e.fetched && e.stage == Stage::Done && e.digest.is_none(), "{e:?}");
    }

    #[test]
    fn a_comment_sent_is_remembered_until_its_request_is_known_refused() {
        let l = Ledger::in_memory().unwrap();
        l.record_page(&[alert("a", "2026-01-01T00:00:00Z")], "poll", None).unwrap();
        l.decide("a", &decided("unknown", 1), None, &[(WriteKind::Comment, "v1".into())]).unwrap();
        let id = l.writes("a").unwrap()[0].id;
        assert_eq!(l.writes("a").unwrap()[0].sent_at, None, "decided, not sent");
        let before = Utc::now() - chrono::Duration::seconds(1);
        l.mark_sent(&[id]).unwrap();
        assert!(l.writes("a").unwrap()[0].sent_at.is_some_and(|t| t >= before));
        l.mark_unsent(id).unwrap();
        assert_eq!(l.writes("a").unwrap()[0].sent_at, None);
    }

    #[test]
    fn an_intent_from_before_sends_were_recorded_counts_as_maybe_sent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let conn = Connection::open(&path).unwrap();
            for m in &MIGRATIONS[..2] {
                conn.execute_batch(m).unwrap();
            }
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute_batch(
                "INSERT INTO alerts (id, created_at, detection_id, title, severity, status, source, stage, first_seen,
                     updated_at) VALUES ('a', '2026-01-01T00:00:00Z', 'D', 't', 'HIGH', 'OPEN', 'poll', 'writing', 'x', 'x');
                 INSERT INTO writes (alert_id, kind, revision, payload, state, created_at, updated_at)
                     VALUES ('a', 'comment', 1, 'v1', 'intent', '2026-01-02T00:00:00Z', '2026-01-02T00:00:05Z'),
                            ('a', 'status', 1, 'TRIAGED', 'done', '2026-01-02T00:00:00Z', '2026-01-02T00:00:06Z');",
            )
            .unwrap();
        }
        let l = Ledger::open(&path).unwrap();
        let w = l.writes("a").unwrap();
        assert_eq!(w[0].sent_at, parse_time("2026-01-02T00:00:05Z"), "an older daemon may have sent it");
        assert_eq!(w[1].sent_at, None, "done: nothing to wait for");
    }

    #[test]
    fn a_webhook_delivery_is_a_stub_until_read_and_the_poller_fills_it_once() {
        let l = Ledger::in_memory().unwrap();
        assert!(l.record_webhook("w1", "2026-01-01T00:00:00Z", "Okta.X", "t", "HIGH").unwrap());
        assert!(!l.record_webhook("w1", "2026-01-01T00:00:00Z", "Okta.X", "t", "HIGH").unwrap(), "idempotent");
        let e = l.require("w1").unwrap();
        assert!(!e.fetched && e.stage == Stage::Pending);
        let mut a = alert("w1", "2026-01-01T00:00:00Z");
        a.status_raw = "OPEN".into();
        assert_eq!(l.record_page(std::slice::from_ref(&a), "poll", None).unwrap(), [false], "known, so not new");
        let e = l.require("w1").unwrap();
        assert!(e.fetched);
        assert_eq!(e.status, "OPEN");
    }

    #[test]
    fn a_revision_reopens_a_done_alert_once_with_the_edit_it_owes() {
        let l = Ledger::in_memory().unwrap();
        l.record_page(&[alert("a", "2026-01-01T00:00:00Z")], "poll", None).unwrap();
        l.decide("a", &decided("unknown", 1), None, &[(WriteKind::Comment, "v1".into())]).unwrap();
        let w = l.writes("a").unwrap();
        l.finish_write(w[0].id, WriteState::Done, Some("c9"), None).unwrap();
        assert_eq!(l.comment_id("a").unwrap().as_deref(), Some("c9"));
        let since = parse_time("2000-01-01T00:00:00Z").unwrap();
        assert_eq!(l.retriage_due(since, 10).unwrap().len(), 1);
        let d = Decided { digest: Some("d2"), ..decided("malicious", 2) };
        let edit = [(WriteKind::CommentEdit, "v2".to_owned(), Some("c9".to_owned()))];
        assert!(l.revise("a", 1, &d, &edit).unwrap());
        assert!(!l.revise("a", 1, &d, &edit).unwrap(), "a second revision from the same one changes nothing");
        let e = l.require("a").unwrap();
        assert_eq!((e.stage, e.revision, e.verdict.as_deref()), (Stage::Writing, 2, Some("malicious")));
        let w = l.writes("a").unwrap();
        assert_eq!((w[1].kind, w[1].comment_id.as_deref(), w[1].revision), (WriteKind::CommentEdit, Some("c9"), 2));
        assert!(l.retriage_due(since, 10).unwrap().is_empty(), "not while its edit is owed");
    }

    fn alert(id: &str, created: &str) -> Alert {
        Alert {
            id: id.into(),
            title: "t".into(),
            created_at: parse_time(created),
            created_at_raw: created.into(),
            status: None,
            status_raw: "OPEN".into(),
            severity: None,
            severity_raw: "HIGH".into(),
            detection_id: "D".into(),
            event_count: 1,
            last_received_event_at: None,
        }
    }

    #[test]
    fn alerts_are_recorded_once_and_the_watermark_only_moves_forward() {
        let l = Ledger::in_memory().unwrap();
        let t1 = parse_time("2026-01-01T00:00:00Z");
        let fresh = l
            .record_page(&[alert("a", "2026-01-01T00:00:00Z"), alert("b", "2026-01-01T00:00:01Z")], "poll", t1)
            .unwrap();
        assert_eq!(fresh, vec![true, true]);
        let fresh =
            l.record_page(&[alert("b", "2026-01-01T00:00:01Z")], "poll", parse_time("2025-01-01T00:00:00Z")).unwrap();
        assert_eq!(fresh, vec![false]);
        assert_eq!(l.watermark().unwrap(), t1, "the watermark never moves back");
        assert_eq!(l.unfinished(10).unwrap().iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        // An alert that keeps failing goes behind the others.
        l.note_attempt("a", "timeout").unwrap();
        assert_eq!(l.unfinished(10).unwrap().iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["b", "a"]);
    }

    #[test]
    fn an_alert_without_a_readable_time_is_still_queued() {
        let l = Ledger::in_memory().unwrap();
        l.record_page(&[alert("x", "yesterday"), alert("a", "2026-01-01T00:00:00Z")], "poll", None).unwrap();
        assert_eq!(l.unfinished(10).unwrap().iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["a", "x"]);
    }

    #[test]
    fn a_reopened_alert_keeps_its_done_writes() {
        let l = Ledger::in_memory().unwrap();
        l.record_page(&[alert("a", "2026-01-01T00:00:00Z")], "poll", None).unwrap();
        l.decide(
            "a",
            &decided("malicious", 1),
            None,
            &[(WriteKind::Comment, "b".into()), (WriteKind::Status, "TRIAGED".into())],
        )
        .unwrap();
        let w = l.writes("a").unwrap();
        l.finish_write(w[0].id, WriteState::Done, Some("c1"), None).unwrap();
        l.finish_write(w[1].id, WriteState::Failed, None, Some("403")).unwrap();
        l.set_stage("a", Stage::Failed, Some("403")).unwrap();
        l.reopen("a").unwrap();
        assert_eq!(l.get("a").unwrap().unwrap().stage, Stage::Pending);
        assert_eq!(l.writes("a").unwrap().len(), 1, "the done comment stays, the failed write goes");
    }

    #[test]
    fn state_survives_reopening_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.db");
        {
            let l = Ledger::open(&path).unwrap();
            l.record_page(&[alert("a", "2026-01-01T00:00:00Z")], "poll", parse_time("2026-01-01T00:00:00Z")).unwrap();
        }
        let l = Ledger::open(&path).unwrap();
        assert_eq!(l.schema_version().unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(l.get("a").unwrap().unwrap().stage, Stage::Pending);
        l.conn().pragma_update(None, "user_version", 99).unwrap();
        drop(l);
        assert!(matches!(Ledger::open(&path), Err(LedgerError::TooNew { found: 99, .. })));
    }

    #[test]
    fn an_alert_is_done_when_its_last_write_is() {
        let l = Ledger::in_memory().unwrap();
        l.record_page(&[alert("a", "2026-01-01T00:00:00Z")], "poll", None).unwrap();
        l.decide(
            "a",
            &decided("malicious", 3),
            None,
            &[(WriteKind::Comment, "body".into()), (WriteKind::Status, "TRIAGED".into())],
        )
        .unwrap();
        let w = l.writes("a").unwrap();
        assert_eq!(w.len(), 2);
        l.finish_write(w[0].id, WriteState::Done, Some("c1"), None).unwrap();
        assert_eq!(l.get("a").unwrap().unwrap().stage, Stage::Writing);
        l.finish_write(w[1].id, WriteState::Done, None, None).unwrap();
        assert_eq!(l.get("a").unwrap().unwrap().stage, Stage::Done);
        assert_eq!(l.writes("a").unwrap()[0].comment_id.as_deref(), Some("c1"));
        // A second decision (another process, a retry) changes nothing.
        assert!(!l.decide("a", &decided("benign", 3), None, &[(WriteKind::Comment, "other".into())]).unwrap());
        assert_eq!(l.writes("a").unwrap()[0].payload, "body");
        assert_eq!(l.get("a").unwrap().unwrap().verdict.as_deref(), Some("malicious"));
    }

    #[test]
    fn the_original_of_a_duplicate_is_the_first_within_the_window() {
        let l = Ledger::in_memory().unwrap();
        let a = [
            alert("a", "2026-01-01T00:00:00Z"),
            alert("b", "2026-01-01T00:10:00Z"),
            alert("c", "2026-01-01T00:30:00Z"),
        ];
        l.record_page(&a, "poll", None).unwrap();
        l.decide("a", &decided("unknown", 1), None, &[]).unwrap();
        let win = Duration::from_secs(15 * 60);
        let orig = |e: &Alert| l.original_of(&e.id, "D", "t", e.created_at.unwrap(), win).unwrap();
        assert_eq!(orig(&a[1]).as_deref(), Some("a"));
        assert_eq!(orig(&a[2]), None, "outside the window");
        assert_eq!(l.original_of("b", "D", "other title", a[1].created_at.unwrap(), win).unwrap(), None);
    }

    #[test]
    fn a_snapshot_is_a_private_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let l = Ledger::open(&path).unwrap();
        l.record_page(&[alert("a", "2026-01-01T00:00:00Z")], "poll", None).unwrap();
        let snap = Ledger::snapshot(&path).unwrap();
        snap.set_stage("a", Stage::Done, None).unwrap();
        assert_eq!(l.get("a").unwrap().unwrap().stage, Stage::Pending);
        assert_eq!(snap.get("a").unwrap().unwrap().stage, Stage::Done);
    }
}
