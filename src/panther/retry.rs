//! When to try a failed request again, and how long to wait first.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use super::{ApiError, Op};

/// Retries with jittered exponential backoff (`panther.max_retries`, `panther.retry_backoff`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first wait; each later one doubles, with jitter, up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_retries: 5, min_backoff: Duration::from_millis(500), max_backoff: Duration::from_secs(30) }
    }
}

/// The longest `Retry-After` honoured: a bigger value is capped so a confused server cannot park the
/// daemon for hours; the poll loop tries again next tick anyway.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

impl RetryPolicy {
    pub(crate) fn delays(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.min_backoff)
            .with_max_delay(self.max_backoff.max(self.min_backoff))
            .with_max_times(self.max_retries as usize)
            .with_jitter()
            .build()
    }
}

/// Whether `err` may be retried for `op`. A request that is not idempotent (creating a comment) is
/// sent again only when Panther surely did not act on it: a 429, or no connection at all.
pub(crate) fn retryable(op: Op, err: &ApiError) -> bool {
    if op.idempotent() {
        return err.transient();
    }
    match err {
        ApiError::Status { status, .. } => *status == 429,
        ApiError::Connect { .. } => true,
        _ => false,
    }
}

/// How long to wait before the next attempt: the backoff, or longer when Panther asked for it.
pub(crate) fn wait(backoff: Duration, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(ra) => ra.min(MAX_RETRY_AFTER).max(backoff),
        None => backoff,
    }
}

/// Reads `Retry-After` in seconds (the HTTP-date form is not used by Panther; it counts as absent).
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stops_after_max_retries() {
        let p = RetryPolicy {
            max_retries: 4,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        let d: Vec<_> = p.delays().collect();
        assert_eq!(d.len(), 4);
        // Jitter adds up to one more base delay; the base doubles from 100 ms.
        assert!(d[0] >= Duration::from_millis(100) && d[0] <= Duration::from_millis(200), "{d:?}");
        assert!(d[3] >= Duration::from_millis(800), "{d:?}");
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let b = Duration::from_millis(500);
        assert_eq!(wait(b, parse_retry_after("3")), Duration::from_secs(3));
        assert_eq!(wait(b, parse_retry_after("0")), b);
        assert_eq!(wait(b, parse_retry_after("86400")), MAX_RETRY_AFTER);
        assert_eq!(wait(b, parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT")), b);
    }

    #[test]
    fn a_comment_is_resent_only_when_panther_surely_did_not_act() {
        let status = |status| ApiError::Status { op: Op::CreateComment, status, message: String::new() };
        assert!(retryable(Op::CreateComment, &status(429)));
        assert!(!retryable(Op::CreateComment, &status(503)));
        assert!(retryable(Op::ListAlerts, &status(503)));
        assert!(!retryable(Op::ListAlerts, &status(404)));
        let t = ApiError::Timeout { op: Op::CreateComment, timeout: Duration::from_secs(1) };
        assert!(!retryable(Op::CreateComment, &t));
        assert!(retryable(Op::UpdateComment, &t));
        assert!(retryable(Op::CreateComment, &ApiError::Connect { op: Op::CreateComment, detail: String::new() }));
    }
}
