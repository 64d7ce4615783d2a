//! Re-triage: Panther keeps adding events to an open alert for its deduplication period, so an
//! alert triaged at creation can later hold the event that matters.
//!
//! Each tick looks at up to `retriage.max_per_tick` alerts triaged within `retriage.window`, the
//! longest unchecked first. One that grew (a higher event count, a later `lastReceivedEventAt`) is
//! investigated again with all its events; when the verdict, the rule or the matches change (the
//! digest), the ledger records a new revision with the writes it owes: an edit of our comment in
//! place (never a second comment), and the status or assignee its new rule sets, if different.

use chrono::Utc;
use tracing::{info, warn, Instrument};

use crate::ledger::{Decided, Stage, WriteKind};
use crate::panther::PantherApi;
use crate::poller::{before, Pipeline, PipelineError, ProcessReport};

/// What one re-triage step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetriageReport {
    pub checked: u64,
    /// Alerts that had new events.
    pub grown: u64,
    /// Alerts whose new events changed what our comment says: a new revision.
    pub revised: u64,
    pub process: ProcessReport,
}

impl<A: PantherApi> Pipeline<A> {
    /// One bounded re-triage step. A transient Panther failure ends the step; the rest waits.
    pub async fn retriage(&self) -> Result<RetriageReport, PipelineError> {
        let mut r = RetriageReport::default();
        let limit = self.cfg.retriage_max_per_tick;
        if limit == 0 || self.cfg.retriage_window.is_zero() {
            return Ok(r);
        }
        let since = before(Utc::now(), self.cfg.retriage_window);
        for e in self.ledger.retriage_due(since, limit)? {
            if self.stopping() {
                break;
            }
            if self.wake_pending() {
                break; // a webhook delivery waits: new alerts first
            }
            let span = tracing::info_span!("alert", alert_id = %e.id, detection_id = %e.detection_id);
            // Noted first, so an alert Panther keeps failing on goes behind the others.
            self.ledger.checked(&e.id, e.event_count, None)?;
            let a = match self.api.get_alert(&e.id).instrument(span.clone()).await {
                Ok(a) => a,
                Err(err) if everyone_fails(&err) => {
                    warn!(alert_id = %e.id, stage = "retriage", outcome = "deferred", error = %err, "Panther is not answering; re-triage waits for the next tick");
                    break;
                }
                Err(err) => {
                    warn!(alert_id = %e.id, stage = "retriage", error = %err, "cannot re-check this alert");
                    continue;
                }
            };
            r.checked += 1;
            // Resolved or closed by an analyst since: not ours to edit or re-status any more.
            if !a.status.is_some_and(|s| self.cfg.filter.statuses.contains(&s)) {
                continue;
            }
            // Where the ledger has no last-event time (the alert was first listed where Panther gave
            // none, say a REST page read for a failed GraphQL one) and Panther now gives one, it is
            // read again: GraphQL gives no event count to compare instead. An unchanged result is
            // not written, and the time is kept for the next look.
            let grown = a.event_count > e.event_count
                || matches!((&a.last_received_event_at, &e.last_event_at), (Some(new), Some(old)) if newer(new, old))
                || (a.last_received_event_at.is_some() && e.last_event_at.is_none());
            if !grown {
                continue;
            }
            r.grown += 1;
            let mut grown_entry = e.clone();
            grown_entry.event_count = a.event_count.max(e.event_count);
            grown_entry.last_event_at = a.last_received_event_at.clone();
            let revision = e.revision + 1;
            let work = match self.investigate(&grown_entry, None, revision).instrument(span.clone()).await {
                Ok(w) => w,
                Err(PipelineError::Api(err)) => {
                    warn!(alert_id = %e.id, stage = "retriage", outcome = "deferred", error = %err, "cannot read the new events yet");
                    break;
                }
                Err(other) => return Err(other),
            };
            // What it knows now, so an unchanged result is not investigated again for the same events.
            self.ledger.checked(&e.id, work.event_count, a.last_received_event_at.as_deref())?;
            if e.digest.as_deref() == Some(work.digest.as_str()) {
                info!(alert_id = %e.id, stage = "retriage", outcome = "unchanged", events = work.event_count, "new events; the verdict and matches stand");
                continue;
            }
            let Some(comment_id) = self.ledger.comment_id(&e.id)? else {
                continue; // nothing of ours to edit (a dry run, a comment refused earlier)
            };
            let mut writes = vec![(WriteKind::CommentEdit, work.body.clone(), Some(comment_id))];
            let old_rule = self.cfg.rules.iter().find(|rule| Some(rule.name.as_str()) == e.rule.as_deref());
            if let Some(s) = work.decision.set_status {
                if old_rule.and_then(|o| o.set_status) != Some(s) {
                    writes.push((WriteKind::Status, s.as_str().to_owned(), None));
                }
            }
            if let Some(who) = &work.decision.assign_to {
                if old_rule.and_then(|o| o.assign_to.as_ref()) != Some(who) {
                    writes.push((WriteKind::Assignee, who.clone(), None));
                }
            }
            let d = Decided {
                verdict: work.decision.verdict.as_str(),
                rule: work.decision.rule.as_deref(),
                event_count: work.event_count,
                last_event_at: a.last_received_event_at.as_deref(),
                digest: Some(&work.digest),
            };
            if !self.ledger.revise(&e.id, e.revision, &d, &writes)? {
                continue; // revised meanwhile by another process sharing the state file
            }
            info!(alert_id = %e.id, stage = "retriage", outcome = "revised", verdict = d.verdict, revision, "new events changed the result; editing our comment");
            r.revised += 1;
            let revised = self.ledger.require(&e.id)?;
            if revised.stage == Stage::Writing {
                // Written now; if Panther fails, the intents stay and the next tick's process step
                // (which works every `writing` alert) writes them.
                match self.write_revision(&revised, &mut r.process).instrument(span).await {
                    Ok(()) => {}
                    Err(PipelineError::Api(err)) => {
                        warn!(alert_id = %e.id, stage = "retriage", outcome = "deferred", error = %err, "the revision waits for the next tick");
                        break;
                    }
                    Err(other) => return Err(other),
                }
            }
        }
        Ok(r)
    }
}

/// Whether an error says Panther is failing every request now (no connection, throttled, the key
/// refused), rather than failing on this one alert.
fn everyone_fails(err: &crate::panther::ApiError) -> bool {
    use crate::panther::ApiError;
    matches!(
        err,
        ApiError::Connect { .. }
            | ApiError::Unauthorized { .. }
            | ApiError::Incompatible { .. }
            | ApiError::Timeout { .. }
    ) || err.status() == Some(429)
}

/// Whether time `a` is later than time `b` (RFC 3339; text that does not parse compares as text).
fn newer(a: &str, b: &str) -> bool {
    match (crate::panther::parse_time(a), crate::panther::parse_time(b)) {
        (Some(a), Some(b)) => a > b,
        _ => a != b,
    }
}
