//! Prometheus metrics: every name the daemon exports, their help text, and typed helpers to record
//! them.
//!
//! Names are written out in full as Prometheus shows them (counters end in `_total`, durations in
//! `_seconds`): grep the code for what you see on a dashboard. Labels take `&'static str` so that a
//! label value is one of a fixed vocabulary in the code, never text from an alert or from Panther
//! (table names come from the configuration, so they are bounded too).
//!
//! Recording before [`install`] (or in a process that never installs) does nothing. The recorder
//! is process-wide: [`install`] installs it once and hands every later caller the same handle.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Alerts read from Panther (a poll page or a webhook), new or already known. Label `source`.
pub const ALERTS_SEEN: &str = "panther_triage_alerts_seen_total";
/// Alerts recorded in the ledger for the first time. Label `source`.
pub const ALERTS_INGESTED: &str = "panther_triage_alerts_ingested_total";
/// Alerts left out before enrichment. Label `reason` (see [`reason`]).
pub const ALERTS_FILTERED: &str = "panther_triage_alerts_filtered_total";
/// Alerts given a verdict. Label `verdict` (`malicious`, `suspicious`, `benign`, `unknown`).
pub const ALERTS_TRIAGED: &str = "panther_triage_alerts_triaged_total";
/// Investigation comments created in Panther.
pub const COMMENTS_POSTED: &str = "panther_triage_comments_posted_total";
/// Investigation comments edited in place (re-triage).
pub const COMMENTS_UPDATED: &str = "panther_triage_comments_updated_total";
/// HTTP attempts to Panther, retries included. Labels `op`, `status` (the HTTP status, or `error`).
pub const API_REQUESTS: &str = "panther_triage_api_requests_total";
/// Time from sending a request to Panther to having its whole answer. Label `op`.
pub const API_REQUEST_DURATION: &str = "panther_triage_api_request_duration_seconds";
/// Requests to Panther sent again after a failure. Label `op`.
pub const API_RETRIES: &str = "panther_triage_api_retries_total";
/// Time spent waiting for the API key's rate limiter (only waits over 1 ms are counted).
pub const RATE_LIMIT_WAIT: &str = "panther_triage_rate_limit_wait_seconds";
/// Rows read from a lookup table's file at its last load. Label `table`.
pub const TABLE_ROWS: &str = "panther_triage_table_rows";
/// Rows of a lookup table that made it into the index at its last load. Label `table`.
pub const TABLE_ELIGIBLE_ROWS: &str = "panther_triage_table_eligible_rows";
/// Rows of a lookup table rejected at its last load. Label `table`.
pub const TABLE_REJECTED_ROWS: &str = "panther_triage_table_rejected_rows";
/// Unix time of a lookup table's last successful load. Label `table`.
pub const TABLE_LAST_REFRESH: &str = "panther_triage_table_last_refresh_timestamp_seconds";
/// Refreshes of a lookup table that failed (the previous index stays in use). Label `table`.
pub const TABLE_REFRESH_FAILURES: &str = "panther_triage_table_refresh_failures_total";
/// Age of the oldest alert in the ledger still waiting to be processed (0 when none waits).
pub const LEDGER_OLDEST_PENDING_AGE: &str = "panther_triage_ledger_oldest_pending_age_seconds";
/// Webhook deliveries received. Label `outcome` (see [`webhook_received`]).
pub const WEBHOOK_REQUESTS: &str = "panther_triage_webhook_requests_total";

/// Every metric name, for tests and documentation.
pub const ALL: [&str; 17] = [
    ALERTS_SEEN,
    ALERTS_INGESTED,
    ALERTS_FILTERED,
    ALERTS_TRIAGED,
    COMMENTS_POSTED,
    COMMENTS_UPDATED,
    API_REQUESTS,
    API_REQUEST_DURATION,
    API_RETRIES,
    RATE_LIMIT_WAIT,
    TABLE_ROWS,
    TABLE_ELIGIBLE_ROWS,
    TABLE_REJECTED_ROWS,
    TABLE_LAST_REFRESH,
    TABLE_REFRESH_FAILURES,
    LEDGER_OLDEST_PENDING_AGE,
    WEBHOOK_REQUESTS,
];

/// The vocabulary of [`alert_filtered`]'s `reason` label.
pub mod reason {
    /// The status is not in `filter.statuses`.
    pub const STATUS: &str = "status";
    /// The severity is not in `filter.severities`.
    pub const SEVERITY: &str = "severity";
    /// The detection ID does not match `filter.detection_id_regex`.
    pub const DETECTION_ID: &str = "detection_id";
    /// A duplicate of an alert triaged within the dedup window.
    pub const DUPLICATE: &str = "duplicate";
}

/// The vocabulary of [`alert_seen`]'s and [`alert_ingested`]'s `source` label.
pub mod source {
    /// Read by the poll loop.
    pub const POLL: &str = "poll";
    /// Announced by a webhook delivery.
    pub const WEBHOOK: &str = "webhook";
}

/// API latency buckets, in seconds: Panther answers in tens to hundreds of milliseconds.
const API_BUCKETS: [f64; 13] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];
/// Rate-limiter wait buckets, in seconds.
const WAIT_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// Waits at or below this are not waits (the limiter answering at once takes microseconds).
const WAIT_THRESHOLD: Duration = Duration::from_millis(1);
/// How often histogram samples are folded into buckets when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Installs the process-wide Prometheus recorder and describes every metric; later calls return the
/// same handle. Fails only when a different recorder was installed first.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let mut slot = HANDLE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(h) = slot.as_ref() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(API_REQUEST_DURATION.into()), &API_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(RATE_LIMIT_WAIT.into()), &WAIT_BUCKETS)?
        .install_recorder()?;
    describe();
    // Metrics without labels are shown from the start, at 0, rather than after their first event.
    counter!(COMMENTS_POSTED).increment(0);
    counter!(COMMENTS_UPDATED).increment(0);
    gauge!(LEDGER_OLDEST_PENDING_AGE).set(0.0);
    // The recorder keeps histogram samples until they are folded into buckets: do it even when
    // nobody scrapes. A thread, so that `install` needs no runtime; it lives as long as the process.
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || loop {
        std::thread::sleep(UPKEEP_EVERY);
        upkeep.run_upkeep();
    });
    if let Err(e) = spawned {
        // Rendering also folds samples in; without the thread memory grows only between scrapes.
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread");
    }
    *slot = Some(handle.clone());
    Ok(handle)
}

/// Registers the help text and unit of every metric (called by [`install`]).
fn describe() {
    describe_counter!(ALERTS_SEEN, Unit::Count, "Alerts read from Panther, new or already known, by source.");
    describe_counter!(ALERTS_INGESTED, Unit::Count, "Alerts recorded in the ledger for the first time, by source.");
    describe_counter!(ALERTS_FILTERED, Unit::Count, "Alerts left out before enrichment, by reason.");
    describe_counter!(ALERTS_TRIAGED, Unit::Count, "Alerts given a verdict, by verdict.");
    describe_counter!(COMMENTS_POSTED, Unit::Count, "Investigation comments created in Panther.");
    describe_counter!(COMMENTS_UPDATED, Unit::Count, "Investigation comments edited in place.");
    describe_counter!(
        API_REQUESTS,
        Unit::Count,
        "HTTP attempts to Panther (retries included), by operation and status (\"error\": no HTTP answer)."
    );
    describe_histogram!(API_REQUEST_DURATION, Unit::Seconds, "Latency of HTTP attempts to Panther, by operation.");
    describe_counter!(API_RETRIES, Unit::Count, "Requests to Panther sent again after a failure, by operation.");
    describe_histogram!(RATE_LIMIT_WAIT, Unit::Seconds, "Waits for the API key's rate limiter longer than 1 ms.");
    describe_gauge!(TABLE_ROWS, Unit::Count, "Rows read from a lookup table's file at its last load.");
    describe_gauge!(TABLE_ELIGIBLE_ROWS, Unit::Count, "Rows of a lookup table indexed at its last load.");
    describe_gauge!(TABLE_REJECTED_ROWS, Unit::Count, "Rows of a lookup table rejected at its last load.");
    describe_gauge!(TABLE_LAST_REFRESH, Unit::Seconds, "Unix time of a lookup table's last successful load.");
    describe_counter!(TABLE_REFRESH_FAILURES, Unit::Count, "Failed refreshes of a lookup table.");
    describe_gauge!(
        LEDGER_OLDEST_PENDING_AGE,
        Unit::Seconds,
        "Age of the oldest alert in the ledger waiting to be processed (0 when none waits)."
    );
    describe_counter!(WEBHOOK_REQUESTS, Unit::Count, "Webhook deliveries received, by outcome.");
}

/// An alert was read from Panther; `source` is [`source::POLL`] or [`source::WEBHOOK`].
pub fn alert_seen(source: &'static str) {
    counter!(ALERTS_SEEN, "source" => source).increment(1);
}

/// An alert was recorded in the ledger for the first time; `source` as for [`alert_seen`].
pub fn alert_ingested(source: &'static str) {
    counter!(ALERTS_INGESTED, "source" => source).increment(1);
}

/// An alert was left out; `reason` is one of [`reason`]'s constants.
pub fn alert_filtered(reason: &'static str) {
    counter!(ALERTS_FILTERED, "reason" => reason).increment(1);
}

/// An alert was given a verdict; pass `Verdict::as_str()`.
pub fn alert_triaged(verdict: &'static str) {
    counter!(ALERTS_TRIAGED, "verdict" => verdict).increment(1);
}

/// An investigation comment was created in Panther.
pub fn comment_posted() {
    counter!(COMMENTS_POSTED).increment(1);
}

/// An investigation comment was edited in place.
pub fn comment_updated() {
    counter!(COMMENTS_UPDATED).increment(1);
}

/// One HTTP attempt to Panther finished: `status` is the HTTP status, `None` when no answer came
/// (timeout, connection refused or cut: labelled `error`); `elapsed` is send to the end of the body.
pub fn api_request(op: &'static str, status: Option<u16>, elapsed: Duration) {
    let status = match status {
        Some(s) => s.to_string(),
        None => "error".to_owned(),
    };
    counter!(API_REQUESTS, "op" => op, "status" => status).increment(1);
    histogram!(API_REQUEST_DURATION, "op" => op).record(elapsed);
}

/// A request to Panther is about to be sent again.
pub fn api_retry(op: &'static str) {
    counter!(API_RETRIES, "op" => op).increment(1);
}

/// The rate limiter held a request back for `waited`; waits of 1 ms or less are ignored.
pub fn rate_limit_wait(waited: Duration) {
    if waited > WAIT_THRESHOLD {
        histogram!(RATE_LIMIT_WAIT).record(waited);
    }
}

/// A lookup table was loaded: rows read, rows indexed, rows rejected.
pub fn table_loaded(name: &str, rows: usize, eligible: usize, rejected: usize) {
    let table = name.to_owned();
    gauge!(TABLE_ROWS, "table" => table.clone()).set(rows as f64);
    gauge!(TABLE_ELIGIBLE_ROWS, "table" => table.clone()).set(eligible as f64);
    gauge!(TABLE_REJECTED_ROWS, "table" => table).set(rejected as f64);
}

/// A lookup table's refresh failed (the index loaded before stays in use).
pub fn table_refresh_failed(name: &str) {
    counter!(TABLE_REFRESH_FAILURES, "table" => name.to_owned()).increment(1);
}

/// A lookup table was (re)loaded successfully at `unix_secs`.
pub fn table_refreshed_at(name: &str, unix_secs: i64) {
    gauge!(TABLE_LAST_REFRESH, "table" => name.to_owned()).set(unix_secs as f64);
}

/// The oldest alert waiting in the ledger is `secs` old (0 when none waits).
pub fn ledger_oldest_pending_age(secs: f64) {
    gauge!(LEDGER_OLDEST_PENDING_AGE).set(secs.max(0.0));
}

/// A webhook delivery was answered; `outcome` is a fixed word such as `accepted`, `duplicate`,
/// `unauthorized`, `invalid` or `error`.
pub fn webhook_received(outcome: &'static str) {
    counter!(WEBHOOK_REQUESTS, "outcome" => outcome).increment(1);
}

/// Records one sample of every metric (for tests of the exposition).
#[cfg(test)]
pub(crate) fn record_one_of_each() {
    alert_seen(source::POLL);
    alert_ingested(source::POLL);
    alert_filtered(reason::SEVERITY);
    alert_triaged("malicious");
    comment_posted();
    comment_updated();
    api_request("list_alerts", Some(200), Duration::from_millis(40));
    api_request("list_alerts", None, Duration::from_millis(5));
    api_retry("list_alerts");
    rate_limit_wait(Duration::from_millis(20));
    table_loaded("test_table", 10, 8, 2);
    table_refresh_failed("test_table");
    table_refreshed_at("test_table", 1_700_000_000);
    ledger_oldest_pending_age(12.5);
    webhook_received("accepted");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_twice_gives_the_same_recorder() {
        let a = install().expect("install");
        let b = install().expect("second install");
        comment_updated();
        let (ra, rb) = (a.render(), b.render());
        assert!(ra.contains(COMMENTS_UPDATED), "{ra}");
        assert!(rb.contains(COMMENTS_UPDATED), "{rb}");
    }

    #[test]
    fn every_metric_is_exported_with_its_help_text() {
        let h = install().expect("install");
        record_one_of_each();
        let text = h.render();
        for name in ALL {
            assert!(text.contains(&format!("# HELP {name} ")), "no help for {name}:\n{text}");
            assert!(text.contains(&format!("# TYPE {name} ")), "no type for {name}:\n{text}");
        }
        assert!(text.contains(r#"panther_triage_api_requests_total{op="list_alerts",status="error"}"#), "{text}");
        assert!(text.contains(r#"panther_triage_api_requests_total{op="list_alerts",status="200"}"#), "{text}");
        assert!(text.contains(r#"panther_triage_api_request_duration_seconds_bucket{op="list_alerts",le="0.05"}"#));
        assert!(text.contains(r#"panther_triage_table_eligible_rows{table="test_table"} 8"#), "{text}");
        assert!(text.contains(r#"panther_triage_alerts_filtered_total{reason="severity"}"#), "{text}");
    }

    #[test]
    fn a_limiter_wait_is_counted() {
        let h = install().expect("install");
        let count = || {
            let text = h.render();
            text.lines()
                .find_map(|l| l.strip_prefix("panther_triage_rate_limit_wait_seconds_count "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let before = count();
        rate_limit_wait(Duration::from_millis(3));
        assert!(count() > before);
    }
}
