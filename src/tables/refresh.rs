//! Tables that refresh without a restart.
//!
//! [`TableSet`] holds the tables the pipeline reads. [`TableSet::current`] hands out the set as an
//! `Arc<Vec<Table>>`: one alert is enriched against one snapshot, however long it takes. A reload
//! builds each new [`Table`] beside the old one, with no lock held, then swaps the whole vector at
//! once: a reader sees all the old tables or all the new ones, and a snapshot taken before a swap
//! stays usable (and unchanged) after it. Tables that were not rebuilt are carried into the new
//! vector by cloning, which shares their index.
//!
//! A table is rebuilt when
//! - its file changed: its (mtime, length, and on Unix device and inode) differ from what they were
//!   when it was last loaded (a file replaced by `rename`, as atomic writers and Kubernetes volume
//!   updates do, changes inode even where mtime and length happen to stay the same);
//! - its `refresh` period passed since it was last loaded (catches changes the stamp cannot see,
//!   e.g. a same-length rewrite within the file system's mtime granularity);
//! - `now` reached its [`Table::valid_until`]: a row expired, and the index answers only for the
//!   `now` it was built with;
//! - or on [`TableSet::reload_all`] (SIGHUP), whatever the file looks like.
//!
//! A table that fails to rebuild (file missing or unreadable, no longer the declared format) keeps
//! serving its old version; the failure is logged with the table and file and listed in
//! [`RefreshReport::failed`]. The same failure is not retried on every check: until the file changes
//! (or [`RETRY_FAILED`] passes, or a SIGHUP), the table counts as unchanged. A file that changes while
//! it is read (a writer that truncates and rewrites in place) is not swapped in half-written; it is
//! read again at the next check.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::{Table, TableSpec};

/// How long a table whose reload failed waits before the same file (unchanged since the failure)
/// is tried again by [`TableSet::reload_changed`]. A changed file is tried at the next check.
pub const RETRY_FAILED: Duration = Duration::from_secs(5 * 60);

/// The shortest period [`refresh_loop`] checks at (a zero period would spin).
const MIN_CHECK: Duration = Duration::from_millis(100);

/// What one reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshReport {
    /// Tables rebuilt and swapped in, by name.
    pub reloaded: Vec<String>,
    /// Tables that kept their old version: (name, why).
    pub failed: Vec<(String, String)>,
    /// Tables left as they were (nothing changed, or a failure not yet due for a retry).
    pub unchanged: usize,
}

/// The tables the pipeline reads, and what their files looked like when each was loaded.
pub struct TableSet {
    current: RwLock<Arc<Vec<Table>>>,
    /// One slot per table, in the same order. Held for a whole reload, so reloads never interleave.
    slots: Mutex<Vec<Slot>>,
}

/// What a table file looked like: changes to any of these mean the file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    dev: u64,
    ino: u64,
}

/// What a look at a table file found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    File(Stamp),
    /// The file could not be looked at (missing, no permission): the error's text.
    Unreadable(String),
}

#[derive(Debug)]
struct Slot {
    /// The file as it was when the serving version was read; `None`: unknown (read at the next check).
    stamp: Option<Stamp>,
    /// When the serving version was loaded (the `refresh` period counts from here).
    loaded_at: DateTime<Utc>,
    /// The last failed attempt since then: what the file looked like, and when.
    failed: Option<(Seen, DateTime<Utc>)>,
}

/// Why a table is rebuilt (for the log line).
#[derive(Debug, Clone, Copy)]
enum Why {
    Requested,
    FileChanged,
    Expiring,
    Period,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Why::Requested => "reload requested",
            Why::FileChanged => "file changed",
            Why::Expiring => "rows expired (valid_until passed)",
            Why::Period => "refresh period passed",
        })
    }
}

fn look(path: &Path) -> Seen {
    match std::fs::metadata(path) {
        Ok(m) => Seen::File(stamp_of(&m)),
        Err(e) => Seen::Unreadable(format!("cannot read table file {}: {e}", path.display())),
    }
}

fn stamp_of(m: &std::fs::Metadata) -> Stamp {
    #[cfg(unix)]
    let (dev, ino) = {
        use std::os::unix::fs::MetadataExt;
        (m.dev(), m.ino())
    };
    #[cfg(not(unix))]
    let (dev, ino) = (0, 0);
    Stamp { modified: m.modified().ok(), len: m.len(), dev, ino }
}

/// The table gauges: rows, eligible, rejected, and when it was loaded.
fn record_loaded(t: &Table, at: DateTime<Utc>) {
    let n = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    crate::metrics::table_loaded(&t.spec.name, n(t.report.rows), n(t.report.eligible), n(t.report.rejected_total()));
    crate::metrics::table_refreshed_at(&t.spec.name, at.timestamp());
}

/// `a + d`, saturating where chrono cannot represent the sum.
fn after(a: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d).ok().and_then(|d| a.checked_add_signed(d)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl TableSet {
    /// A set from tables just loaded (`app::build` loads them). Each file is looked at now; one whose
    /// length is no longer what was loaded is read again at the first check. Sets each table's gauges.
    pub fn new(tables: Vec<Table>) -> TableSet {
        let loaded_at = Utc::now();
        let slots = tables
            .iter()
            .map(|t| {
                let stamp = match look(&t.spec.path) {
                    Seen::File(s) if s.len == t.report.bytes => Some(s),
                    _ => None,
                };
                record_loaded(t, loaded_at);
                Slot { stamp, loaded_at, failed: None }
            })
            .collect();
        TableSet { current: RwLock::new(Arc::new(tables)), slots: Mutex::new(slots) }
    }

    /// Records every table's figures as metrics again (after the metrics recorder is installed:
    /// figures recorded before it went nowhere).
    pub fn publish_metrics(&self) {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        for (t, slot) in self.current().iter().zip(slots.iter()) {
            record_loaded(t, slot.loaded_at);
        }
    }

    /// The tables now: a cheap snapshot to use for one alert. Never waits for a reload to build.
    pub fn current(&self) -> Arc<Vec<Table>> {
        // The lock only guards a pointer swap; a poisoned lock still holds a whole vector.
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Rebuilds, for `now`, each table whose file changed, whose `refresh` period passed or whose
    /// `valid_until` passed, and swaps them in together. Blocking: run it off the async workers.
    pub fn reload_changed(&self, now: DateTime<Utc>) -> RefreshReport {
        self.reload(now, false)
    }

    /// Rebuilds every table for `now` (SIGHUP), and swaps them in together; a table that fails keeps
    /// its old version. Blocking.
    pub fn reload_all(&self, now: DateTime<Utc>) -> RefreshReport {
        self.reload(now, true)
    }

    fn lock_slots(&self) -> MutexGuard<'_, Vec<Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reload(&self, now: DateTime<Utc>, all: bool) -> RefreshReport {
        let mut slots = self.lock_slots();
        // Only reloads swap, and they hold `slots`: this is the vector the swap replaces.
        let old = self.current();
        let mut report = RefreshReport::default();
        let mut built: Vec<Option<Table>> = Vec::with_capacity(old.len());
        for (table, slot) in old.iter().zip(slots.iter_mut()) {
            let new = reload_one(table, slot, now, all, &mut report);
            built.push(new);
        }
        if built.iter().any(Option::is_some) {
            let next: Vec<Table> =
                built.into_iter().zip(old.iter()).map(|(new, old)| new.unwrap_or_else(|| old.clone())).collect();
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        }
        drop(slots);
        if !report.reloaded.is_empty() || !report.failed.is_empty() {
            tracing::info!(
                reloaded = report.reloaded.len(),
                failed = report.failed.len(),
                unchanged = report.unchanged,
                "tables refreshed"
            );
        }
        report
    }
}

/// Rebuilds one table if it is due; records the outcome in `slot` and `report`.
fn reload_one(
    table: &Table,
    slot: &mut Slot,
    now: DateTime<Utc>,
    all: bool,
    report: &mut RefreshReport,
) -> Option<Table> {
    let spec = &table.spec;
    let seen = look(&spec.path);
    let why = if all {
        Some(Why::Requested)
    } else if slot.stamp.map(Seen::File).as_ref() != Some(&seen) {
        Some(Why::FileChanged)
    } else if table.valid_until.is_some_and(|v| v <= now) {
        Some(Why::Expiring)
    } else if spec.refresh.is_some_and(|p| after(slot.loaded_at, p) <= now) {
        Some(Why::Period)
    } else {
        None
    };
    let Some(why) = why else {
        report.unchanged += 1;
        return None;
    };
    if !all {
        if let Some((failed_seen, at)) = &slot.failed {
            if *failed_seen == seen && now < after(*at, RETRY_FAILED) {
                tracing::debug!(table = %spec.name, file = %spec.path.display(), "table still failing; retry later");
                report.unchanged += 1;
                return None;
            }
        }
    }
    let before = match &seen {
        Seen::File(s) => *s,
        Seen::Unreadable(why_not) => {
            fail(spec, slot, seen.clone(), now, why_not.clone(), report);
            return None;
        }
    };
    match Table::load(spec, now) {
        Ok(new) => {
            // A file rewritten while we read it may be half-written: read it again at the next check.
            if look(&spec.path) != seen {
                let why_not = "the file changed while it was read; it is read again at the next check".to_owned();
                tracing::warn!(table = %spec.name, file = %spec.path.display(), "{why_not}");
                crate::metrics::table_refresh_failed(&spec.name);
                report.failed.push((spec.name.clone(), why_not));
                return None;
            }
            tracing::info!(
                table = %spec.name,
                file = %spec.path.display(),
                reason = %why,
                summary = %new.report.summary(&new.spec),
                "table reloaded"
            );
            record_loaded(&new, now);
            *slot = Slot { stamp: Some(before), loaded_at: now, failed: None };
            report.reloaded.push(spec.name.clone());
            Some(new)
        }
        Err(e) => {
            fail(spec, slot, seen, now, e.to_string(), report);
            None
        }
    }
}

fn fail(spec: &TableSpec, slot: &mut Slot, seen: Seen, now: DateTime<Utc>, why: String, report: &mut RefreshReport) {
    tracing::error!(
        table = %spec.name,
        file = %spec.path.display(),
        error = %why,
        "table reload failed; the loaded version keeps serving"
    );
    crate::metrics::table_refresh_failed(&spec.name);
    slot.failed = Some((seen, now));
    report.failed.push((spec.name.clone(), why));
}

impl fmt::Debug for TableSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.current().iter().map(|t| t.spec.name.clone()).collect();
        f.debug_struct("TableSet").field("tables", &names).finish()
    }
}

/// Keeps `set` fresh until `shutdown` resolves: every `check_every` it runs
/// [`TableSet::reload_changed`], and on each message of `hup` (fed from SIGHUP) [`TableSet::reload_all`],
/// both on a blocking thread so parsing never runs on the async workers. Messages that queued up
/// during a reload make one more reload, not one each. A closed `hup` only stops the SIGHUP path.
///
/// On shutdown a reload in progress is not awaited: it finishes on its blocking thread (the runtime
/// waits for it when dropped, unless shut down with a timeout) and its result is still swapped in.
pub async fn refresh_loop(
    set: Arc<TableSet>,
    check_every: Duration,
    mut hup: mpsc::Receiver<()>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(check_every.max(MIN_CHECK));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the tables were just loaded.
    tick.tick().await;
    let mut hup_open = true;
    loop {
        let all = tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => false,
            msg = hup.recv(), if hup_open => match msg {
                Some(()) => true,
                None => {
                    hup_open = false;
                    continue;
                }
            },
        };
        if all {
            tracing::info!("SIGHUP: reloading every table");
            while hup.try_recv().is_ok() {}
        }
        let job = {
            let set = Arc::clone(&set);
            tokio::task::spawn_blocking(move || {
                let now = Utc::now();
                if all {
                    set.reload_all(now)
                } else {
                    set.reload_changed(now)
                }
            })
        };
        tokio::select! {
            () = &mut shutdown => return,
            done = job => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "table refresh task failed; the loaded tables keep serving");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicator::{normalize, Kind};
    use crate::tables::Format;
    use std::path::PathBuf;
    use std::time::UNIX_EPOCH;

    fn list_spec(name: &str, path: PathBuf) -> TableSpec {
        TableSpec { format: Format::List, kind: Some(Kind::Ip), ..TableSpec::anomali(name, path) }
    }

    /// Writes `body` and sets the file's mtime to `secs` after the epoch.
    fn write(path: &Path, body: &str, secs: u64) {
        std::fs::write(path, body).unwrap();
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(UNIX_EPOCH + Duration::from_secs(secs)).unwrap();
    }

    fn has(tables: &[Table], table: usize, ip: &str) -> bool {
        let key = normalize(Kind::Ip, ip, false).unwrap();
        tables[table].lookup(&key).is_some()
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// A set of one list table at `dir/a.txt` holding 1.1.1.1.
    fn one(dir: &Path) -> (TableSet, PathBuf) {
        let path = dir.join("a.txt");
        write(&path, "1.1.1.1\n", 1_000);
        let table = Table::load(&list_spec("a", path.clone()), Utc::now()).unwrap();
        (TableSet::new(vec![table]), path)
    }

    #[test]
    fn a_changed_file_is_reloaded_and_an_unchanged_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (set, path) = one(dir.path());
        let first = set.current();
        let r = set.reload_changed(Utc::now());
        assert_eq!(r, RefreshReport { unchanged: 1, ..RefreshReport::default() });
        assert!(Arc::ptr_eq(&first, &set.current()), "nothing swapped");

        // Same length, new mtime: a change.
        write(&path, "2.2.2.2\n", 2_000);
        let r = set.reload_changed(Utc::now());
        assert_eq!(r.reloaded, vec!["a".to_owned()]);
        assert!(r.failed.is_empty());
        let now = set.current();
        assert!(has(&now, 0, "2.2.2.2") && !has(&now, 0, "1.1.1.1"));

        // Read once: the next check leaves it alone.
        let r = set.reload_changed(Utc::now());
        assert_eq!(r.unchanged, 1);
        assert!(Arc::ptr_eq(&now, &set.current()));
    }

    #[test]
    fn a_file_turned_to_garbage_keeps_the_old_table_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (set, path) = one(dir.path());
        write(&path, "\u{0}\u{1}binary\nnot an ip\n\u{7f}\n", 2_000);
        let now = Utc::now();
        let r = set.reload_changed(now);
        assert!(r.reloaded.is_empty());
        assert_eq!(r.failed.len(), 1);
        assert_eq!(r.failed[0].0, "a");
        assert!(r.failed[0].1.contains("not a list"), "{}", r.failed[0].1);
        assert!(has(&set.current(), 0, "1.1.1.1"), "the old table keeps serving");

        // The same failure is not retried at every check, but is after a while.
        assert_eq!(set.reload_changed(now + chrono::Duration::seconds(5)).unchanged, 1);
        assert_eq!(set.reload_changed(now + chrono::Duration::minutes(6)).failed.len(), 1);

        // Fixed: read at the next check.
        write(&path, "3.3.3.3\n", 3_000);
        let r = set.reload_changed(now + chrono::Duration::minutes(7));
        assert_eq!(r.reloaded, vec!["a".to_owned()]);
        assert!(has(&set.current(), 0, "3.3.3.3"));
    }

    #[test]
    fn a_deleted_file_keeps_the_old_table() {
        let dir = tempfile::tempdir().unwrap();
        let (set, path) = one(dir.path());
        std::fs::remove_file(&path).unwrap();
        let r = set.reload_changed(Utc::now());
        assert_eq!(r.failed.len(), 1);
        assert!(r.failed[0].1.contains("a.txt"), "{}", r.failed[0].1);
        assert!(has(&set.current(), 0, "1.1.1.1"));
        // A SIGHUP tries again, and fails the same way.
        assert_eq!(set.reload_all(Utc::now()).failed.len(), 1);
        write(&path, "4.4.4.4\n", 4_000);
        assert_eq!(set.reload_changed(Utc::now()).reloaded, vec!["a".to_owned()]);
        assert!(has(&set.current(), 0, "4.4.4.4"));
    }

    #[test]
    fn reload_all_rebuilds_every_table_in_one_swap() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
        write(&a, "1.1.1.1\n", 1_000);
        write(&b, "2.2.2.2\n", 1_000);
        let tables = crate::tables::load_all(&[list_spec("a", a), list_spec("b", b)], Utc::now()).unwrap();
        let set = TableSet::new(tables);
        let before = set.current();
        let r = set.reload_all(Utc::now());
        assert_eq!(r.reloaded, vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(r.unchanged, 0);
        let after = set.current();
        assert!(!Arc::ptr_eq(&before.as_ref()[0].index, &after[0].index));
        assert!(!Arc::ptr_eq(&before.as_ref()[1].index, &after[1].index));
        assert!(has(&after, 0, "1.1.1.1") && has(&after, 1, "2.2.2.2"));
    }

    #[test]
    fn only_the_changed_table_is_rebuilt_the_others_are_shared() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
        write(&a, "1.1.1.1\n", 1_000);
        write(&b, "2.2.2.2\n", 1_000);
        let tables = crate::tables::load_all(&[list_spec("a", a), list_spec("b", b.clone())], Utc::now()).unwrap();
        let set = TableSet::new(tables);
        let before = set.current();
        write(&b, "5.5.5.5\n", 2_000);
        let r = set.reload_changed(Utc::now());
        assert_eq!((r.reloaded, r.unchanged), (vec!["b".to_owned()], 1));
        let after = set.current();
        assert!(Arc::ptr_eq(&before[0].index, &after[0].index), "a was not re-read");
        assert!(has(&after, 1, "5.5.5.5"));
    }

    #[test]
    fn the_refresh_period_reloads_an_unchanged_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        write(&path, "1.1.1.1\n", 1_000);
        let spec = TableSpec { refresh: Some(Duration::from_secs(3600)), ..list_spec("a", path) };
        let set = TableSet::new(vec![Table::load(&spec, Utc::now()).unwrap()]);
        let start = Utc::now();
        assert_eq!(set.reload_changed(start + chrono::Duration::minutes(30)).unchanged, 1);
        let r = set.reload_changed(start + chrono::Duration::minutes(61));
        assert_eq!(r.reloaded, vec!["a".to_owned()]);
        // The period now counts from that load.
        assert_eq!(set.reload_changed(start + chrono::Duration::minutes(90)).unchanged, 1);
        assert_eq!(set.reload_changed(start + chrono::Duration::minutes(122)).reloaded.len(), 1);
    }

    #[test]
    fn a_table_is_rebuilt_when_its_rows_expire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intel.jsonl");
        let row = |id: u32, ip: &str, exp: &str| {
            format!(
                r#"{{"id":"{id}","value":"{ip}","type":"ip","confidence":50,"status":"active","expiration_ts":"{exp}"}}"#
            )
        };
        let body = [row(1, "1.1.1.1", "2026-06-01 00:00:00"), row(2, "2.2.2.2", "")].join("\n");
        write(&path, &body, 1_000);
        let spec = TableSpec::anomali("intel", path);
        let set = TableSet::new(vec![Table::load(&spec, t("2026-01-01T00:00:00Z")).unwrap()]);
        assert!(has(&set.current(), 0, "1.1.1.1"));
        assert_eq!(set.reload_changed(t("2026-05-31T23:59:59Z")).unchanged, 1);
        let r = set.reload_changed(t("2026-06-01T00:00:00Z"));
        assert_eq!(r.reloaded, vec!["intel".to_owned()]);
        let now = set.current();
        assert!(!has(&now, 0, "1.1.1.1") && has(&now, 0, "2.2.2.2"));
        assert_eq!(now[0].valid_until, None);
        assert_eq!(set.reload_changed(t("2027-01-01T00:00:00Z")).unchanged, 1);
    }

    #[test]
    fn a_snapshot_taken_before_a_swap_stays_usable() {
        let dir = tempfile::tempdir().unwrap();
        let (set, path) = one(dir.path());
        let snapshot = set.current();
        write(&path, "9.9.9.9\n10.0.0.1\n", 2_000);
        assert_eq!(set.reload_changed(Utc::now()).reloaded.len(), 1);
        assert!(has(&snapshot, 0, "1.1.1.1") && !has(&snapshot, 0, "9.9.9.9"), "the old view is intact");
        assert_eq!(snapshot[0].report.rows, 1);
        let now = set.current();
        assert!(has(&now, 0, "9.9.9.9") && !has(&now, 0, "1.1.1.1"));
        assert_eq!(now[0].report.rows, 2);
    }

    #[test]
    fn a_file_changed_after_the_initial_load_is_read_at_the_first_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        write(&path, "1.1.1.1\n", 1_000);
        let table = Table::load(&list_spec("a", path.clone()), Utc::now()).unwrap();
        write(&path, "1.1.1.1\n2.2.2.2\n", 1_000);
        let set = TableSet::new(vec![table]);
        assert_eq!(set.reload_changed(Utc::now()).reloaded.len(), 1);
        assert!(has(&set.current(), 0, "2.2.2.2"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_loop_reloads_on_hup_and_stops_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let (set, _path) = one(dir.path());
        let set = Arc::new(set);
        let before = set.current();
        let (hup_tx, hup_rx) = mpsc::channel(1);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(refresh_loop(Arc::clone(&set), Duration::from_secs(3600), hup_rx, async move {
            let _ = stop_rx.await;
        }));
        hup_tx.send(()).await.unwrap();
        let swapped = tokio::time::timeout(Duration::from_secs(10), async {
            while Arc::ptr_eq(&before, &set.current()) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(swapped.is_ok(), "SIGHUP reloaded the table");
        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
    }
}
