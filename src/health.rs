//! What `/readyz` answers: the daemon is ready when its ledger is open, its lookup tables are
//! loaded, and a poll of Panther succeeded within the last three poll intervals.
//!
//! The pipeline reports into a shared [`Health`] (`Arc<Health>`); the server reads it.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How many poll intervals may pass without a successful poll before the daemon is not ready.
pub const STALE_AFTER_INTERVALS: u32 = 3;
/// The longest poll error kept for `/readyz` (in characters).
const ERROR_CHARS: usize = 300;

/// The daemon's health, shared between the pipeline (writer) and the server (reader).
#[derive(Debug)]
pub struct Health {
    poll_interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    ledger_open: bool,
    tables_loaded: bool,
    last_success: Option<Instant>,
    last_error: Option<String>,
}

impl Health {
    /// Not ready yet: no ledger, no tables, no poll; `poll_interval` is `poll.interval`.
    pub fn new(poll_interval: Duration) -> Health {
        Health { poll_interval, state: Mutex::new(State::default()) }
    }

    /// Records whether the ledger is open.
    pub fn set_ledger_open(&self, open: bool) {
        self.state().ledger_open = open;
    }

    /// Records whether the lookup tables are loaded.
    pub fn set_tables_loaded(&self, loaded: bool) {
        self.state().tables_loaded = loaded;
    }

    /// Records a successful poll now (and forgets the last error).
    pub fn poll_succeeded(&self) {
        self.poll_succeeded_at(Instant::now());
    }

    /// Records a successful poll at `at` (for tests: an injected clock).
    pub fn poll_succeeded_at(&self, at: Instant) {
        let mut s = self.state();
        s.last_success = Some(at);
        s.last_error = None;
    }

    /// Records a failed poll and why (kept on one line, shortened); readiness changes only once the
    /// last success is too old.
    pub fn poll_failed(&self, reason: &str) {
        let one_line: String = reason.chars().map(|c| if c.is_control() { ' ' } else { c }).take(ERROR_CHARS).collect();
        self.state().last_error = Some(one_line);
    }

    /// `Ok` when ready now, else every reason why not.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        self.readiness_at(Instant::now())
    }

    /// [`readiness`](Self::readiness) as of `now` (for tests: an injected clock).
    pub fn readiness_at(&self, now: Instant) -> Result<(), Vec<String>> {
        let s = self.state();
        let mut why = Vec::new();
        if !s.ledger_open {
            why.push("ledger not open".to_owned());
        }
        if !s.tables_loaded {
            why.push("lookup tables not loaded".to_owned());
        }
        let limit = self.poll_interval.saturating_mul(STALE_AFTER_INTERVALS);
        match s.last_success {
            None => why.push("no successful poll yet".to_owned()),
            Some(at) => {
                let age = now.saturating_duration_since(at);
                if age > limit {
                    why.push(format!(
                        "last successful poll {} ago, more than {STALE_AFTER_INTERVALS} poll intervals ({})",
                        humantime::format_duration(round_secs(age)),
                        humantime::format_duration(limit)
                    ));
                }
            }
        }
        if !why.is_empty() {
            if let Some(e) = &s.last_error {
                why.push(format!("last poll error: {e}"));
            }
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why)
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whole seconds above a second (so the reason does not read "1m 35s 412ms 77us").
fn round_secs(d: Duration) -> Duration {
    if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(d.as_millis() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(30);

    fn up() -> Health {
        let h = Health::new(INTERVAL);
        h.set_ledger_open(true);
        h.set_tables_loaded(true);
        h
    }

    #[test]
    fn not_ready_before_anything_happened() {
        let h = Health::new(INTERVAL);
        let why = h.readiness().expect_err("not ready");
        assert_eq!(why, ["ledger not open", "lookup tables not loaded", "no successful poll yet"]);
    }

    #[test]
    fn not_ready_before_the_first_poll_even_with_ledger_and_tables() {
        let h = up();
        assert_eq!(h.readiness().expect_err("not ready"), ["no successful poll yet"]);
        h.poll_failed("list alerts: connection refused\nsecond line");
        assert_eq!(
            h.readiness().expect_err("not ready"),
            ["no successful poll yet", "last poll error: list alerts: connection refused second line"]
        );
    }

    #[test]
    fn ready_within_three_intervals_of_the_last_success() {
        let h = up();
        let t0 = Instant::now();
        h.poll_succeeded_at(t0);
        assert_eq!(h.readiness_at(t0), Ok(()));
        assert_eq!(h.readiness_at(t0 + INTERVAL * 3), Ok(()));
        // A failed poll alone does not make the daemon unready while the last success is recent.
        h.poll_failed("list alerts: 503");
        assert_eq!(h.readiness_at(t0 + INTERVAL * 2), Ok(()));
        let why = h.readiness_at(t0 + INTERVAL * 3 + Duration::from_secs(5)).expect_err("stale");
        assert_eq!(
            why,
            [
                "last successful poll 1m 35s ago, more than 3 poll intervals (1m 30s)",
                "last poll error: list alerts: 503"
            ]
        );
        // A later success makes it ready again and forgets the error.
        h.poll_succeeded_at(t0 + INTERVAL * 4);
        assert_eq!(h.readiness_at(t0 + INTERVAL * 5), Ok(()));
    }

    #[test]
    fn a_closed_ledger_or_unloaded_tables_make_it_unready() {
        let h = up();
        let t0 = Instant::now();
        h.poll_succeeded_at(t0);
        h.set_ledger_open(false);
        assert_eq!(h.readiness_at(t0), Err(vec!["ledger not open".to_owned()]));
        h.set_ledger_open(true);
        h.set_tables_loaded(false);
        assert_eq!(h.readiness_at(t0), Err(vec!["lookup tables not loaded".to_owned()]));
    }

    #[test]
    fn long_errors_are_shortened() {
        let h = up();
        h.poll_failed(&"x".repeat(10_000));
        let why = h.readiness().expect_err("not ready");
        assert_eq!(why[1].len(), "last poll error: ".len() + ERROR_CHARS);
    }

    #[test]
    fn health_is_shareable() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Health>();
    }
}
