//! Write-back, exactly once (DESIGN.md invariant 2).
//!
//! The intent of every write is in the ledger before the write. A comment whose outcome is unknown
//! (timeout, connection cut after sending, 5xx, a crash) is looked for by its marker among the
//! alert's comments before it is posted again. Status and assignee changes are idempotent; they are
//! batched, one `PATCH /alerts` per value.

use tracing::{error, info, warn};

use crate::ledger::{Write, WriteKind, WriteState};
use crate::panther::{AlertPatch, ApiError, Assignee, Comment, NewComment, PantherApi, Status};
use crate::poller::{Pipeline, PipelineError, Planned, ProcessReport};
use crate::render;

/// IDs per `PATCH /alerts`: keeps one request small; the spec sets no limit.
const PATCH_IDS: usize = 100;

/// A comment whose earlier attempt may have reached Panther is posted again only this many
/// `panther.timeout`s after that attempt went out, if its marker is still not found: a request the
/// client timed out on can still be stored behind its back, and Panther answers within a timeout
/// when it answers at all.
pub const REPOST_GRACE_TIMEOUTS: u32 = 2;

impl<A: PantherApi> Pipeline<A> {
    /// Posts one comment write. `check_first`: an earlier attempt may have reached Panther.
    pub(crate) async fn write_comment(
        &self,
        w: &Write,
        check_first: bool,
        r: &mut ProcessReport,
    ) -> Result<(), PipelineError> {
        let marker = render::marker(&w.alert_id, w.revision);
        if self.dry_run {
            self.planned_push(Planned::Comment { alert_id: w.alert_id.clone(), body: w.payload.clone() });
            self.ledger.finish_write(w.id, WriteState::Done, None, Some("dry run"))?;
            return Ok(());
        }
        if check_first {
            if let Some(c) = self.find_marker(&w.alert_id, &marker).await? {
                info!(stage = "sync", outcome = "already_posted", comment_id = %c.id, "our comment is already on the alert");
                self.ledger.finish_write(w.id, WriteState::Done, Some(&c.id), Some("found by marker"))?;
                return Ok(());
            }
            if let Some(wait) = self.may_still_land(w) {
                info!(
                    stage = "sync",
                    outcome = "waiting",
                    wait_ms = wait.as_millis() as u64,
                    "an earlier attempt at this comment may still land; looking again before posting"
                );
                r.deferred += 1;
                r.waiting = r.waiting.max(Some(wait));
                return Ok(());
            }
        }
        self.ledger.mark_sent(&[w.id])?;
        let new =
            NewComment { alert_id: w.alert_id.clone(), body: w.payload.clone(), format: self.cfg.sync.comment_format };
        let first = self.api.create_comment(&new).await;
        if first.as_ref().is_err_and(|e| !e.may_land_later()) {
            self.ledger.mark_unsent(w.id)?;
        }
        let posted = match first {
            Ok(c) => c,
            Err(e) if e.outcome_unknown() => {
                warn!(stage = "sync", outcome = "unknown", error = %e, "comment outcome unknown; looking for it before posting again");
                match self.find_marker(&w.alert_id, &marker).await? {
                    Some(c) => c,
                    // Not there yet, but Panther may still be working on the request: posting now
                    // could make two. The intent stays open; the next tick looks again first.
                    None => return Err(e.into()),
                }
            }
            Err(e) => return self.refused(w, e, r),
        };
        info!(stage = "sync", outcome = "commented", comment_id = %posted.id, "comment posted");
        self.ledger.finish_write(w.id, WriteState::Done, Some(&posted.id), None)?;
        crate::metrics::comment_posted();
        r.comments_posted += 1;
        Ok(())
    }

    /// Posts the comment writes collected in a step, `comment_batch` to a request. Returns whether
    /// Panther had a bad minute: the step then stops, and writes not done stay intents for the next
    /// tick (which looks for their markers first).
    pub(crate) async fn flush_comments(
        &self,
        ws: &mut Vec<Write>,
        r: &mut ProcessReport,
    ) -> Result<bool, PipelineError> {
        match self.flush_comments_or_error(ws, r).await? {
            None => Ok(false),
            Some(e) => {
                warn!(stage = "sync", outcome = "deferred", error = %e, "Panther is not answering; comments wait for the next tick");
                r.deferred += 1;
                Ok(true)
            }
        }
    }

    /// [`Self::flush_comments`], returning the error that stopped it.
    pub(crate) async fn flush_comments_or_error(
        &self,
        ws: &mut Vec<Write>,
        r: &mut ProcessReport,
    ) -> Result<Option<ApiError>, PipelineError> {
        let ws = std::mem::take(ws);
        if ws.is_empty() {
            return Ok(None);
        }
        if self.dry_run {
            for w in &ws {
                self.planned_push(Planned::Comment { alert_id: w.alert_id.clone(), body: w.payload.clone() });
                self.ledger.finish_write(w.id, WriteState::Done, None, Some("dry run"))?;
            }
            return Ok(None);
        }
        let new: Vec<NewComment> = ws
            .iter()
            .map(|w| NewComment {
                alert_id: w.alert_id.clone(),
                body: w.payload.clone(),
                format: self.cfg.sync.comment_format,
            })
            .collect();
        self.ledger.mark_sent(&ws.iter().map(|w| w.id).collect::<Vec<_>>())?;
        let results = self.api.create_comments(&new).await;
        let mut stop: Option<ApiError> = None;
        for (w, result) in ws.iter().zip(results) {
            let span = tracing::info_span!("alert", alert_id = %w.alert_id);
            let _enter = span.enter();
            if result.as_ref().is_err_and(|e| !e.may_land_later()) {
                self.ledger.mark_unsent(w.id)?;
            }
            let posted = match result {
                Ok(c) => c,
                Err(e) if e.outcome_unknown() && stop.is_none() => {
                    warn!(stage = "sync", outcome = "unknown", error = %e, "comment outcome unknown; looking for it before posting again");
                    let marker = render::marker(&w.alert_id, w.revision);
                    match self.find_marker(&w.alert_id, &marker).await {
                        Ok(Some(c)) => c,
                        Ok(None) => {
                            stop = Some(e);
                            continue;
                        }
                        Err(look) => {
                            stop = Some(look);
                            continue;
                        }
                    }
                }
                Err(e) if e.retry_later() || e.outcome_unknown() => {
                    stop.get_or_insert(e);
                    continue;
                }
                Err(e) => {
                    self.refused(w, e, r)?;
                    continue;
                }
            };
            info!(stage = "sync", outcome = "commented", comment_id = %posted.id, "comment posted");
            self.ledger.finish_write(w.id, WriteState::Done, Some(&posted.id), None)?;
            crate::metrics::comment_posted();
            r.comments_posted += 1;
        }
        if stop.is_some() {
            for w in &ws {
                if self.ledger.writes(&w.alert_id)?.iter().any(|x| x.id == w.id && x.state == WriteState::Intent) {
                    self.ledger.note_attempt(&w.alert_id, &stop.as_ref().map(|e| e.to_string()).unwrap_or_default())?;
                }
            }
        }
        Ok(stop)
    }

    /// Replaces the body of our comment with a new revision (re-triage). Editing is idempotent, so
    /// an unknown outcome is simply tried again next tick.
    pub(crate) async fn edit_comment(&self, w: &Write, r: &mut ProcessReport) -> Result<(), PipelineError> {
        let Some(target) = w.comment_id.as_deref() else {
            error!(alert_id = %w.alert_id, stage = "sync", outcome = "refused", "no comment of ours to edit");
            self.ledger.finish_write(w.id, WriteState::Failed, None, Some("no comment of ours to edit"))?;
            return Ok(());
        };
        if self.dry_run {
            self.planned_push(Planned::CommentEdit {
                alert_id: w.alert_id.clone(),
                comment_id: target.to_owned(),
                body: w.payload.clone(),
            });
            self.ledger.finish_write(w.id, WriteState::Done, None, Some("dry run"))?;
            return Ok(());
        }
        let new =
            NewComment { alert_id: w.alert_id.clone(), body: w.payload.clone(), format: self.cfg.sync.comment_format };
        match self.api.update_comment(target, &new).await {
            Ok(_) => {
                info!(alert_id = %w.alert_id, stage = "sync", outcome = "comment_updated", comment_id = %target, revision = w.revision, "comment updated");
                crate::metrics::comment_updated();
                self.ledger.finish_write(w.id, WriteState::Done, Some(target), None)?;
                r.comments_updated += 1;
                Ok(())
            }
            Err(e) if e.outcome_unknown() || e.retry_later() => Err(e.into()),
            Err(e) => {
                // Our comment is gone (an analyst deleted it) or cannot be edited: the revision's
                // edit is given up; the alert keeps its earlier comment and stays triaged.
                error!(alert_id = %w.alert_id, stage = "sync", outcome = "refused", error = %e, "Panther refused the comment edit");
                self.ledger.finish_write(w.id, WriteState::Failed, None, Some(&e.to_string()))?;
                Ok(())
            }
        }
    }

    /// A write Panther refuses for good (4xx other than 429) is recorded failed and logged; a
    /// transient failure goes back to the caller, and the write stays an intent.
    fn refused(&self, w: &Write, e: ApiError, r: &mut ProcessReport) -> Result<(), PipelineError> {
        if e.retry_later() {
            return Err(e.into());
        }
        r.failed += 1;
        error!(alert_id = %w.alert_id, stage = "sync", outcome = "refused", error = %e, "Panther refused our write");
        self.ledger.finish_write(w.id, WriteState::Failed, None, Some(&e.to_string()))?;
        self.ledger.set_stage(&w.alert_id, crate::ledger::Stage::Failed, Some(&e.to_string()))?;
        Ok(())
    }

    /// How much longer an earlier attempt at comment `w` could still be stored by Panther, which may
    /// finish a request after the client gave up on it; `None` once that is past, or when no attempt
    /// may still land. Until then a marker that is not found proves nothing, and posting again
    /// could make two comments.
    fn may_still_land(&self, w: &Write) -> Option<std::time::Duration> {
        let grace = chrono::Duration::from_std(self.cfg.panther.timeout * REPOST_GRACE_TIMEOUTS).ok()?;
        let left = w.sent_at? + grace - chrono::Utc::now();
        left.to_std().ok().filter(|d| !d.is_zero())
    }

    /// Our comment with `marker` on the alert, if there is one (all pages read).
    async fn find_marker(&self, alert_id: &str, marker: &str) -> Result<Option<Comment>, ApiError> {
        let mut cursor: Option<String> = None;
        loop {
            let page = self.api.list_comments(alert_id, cursor.as_deref()).await?;
            if let Some(c) = page.comments.into_iter().find(|c| render::has_marker(&c.body, marker)) {
                return Ok(Some(c));
            }
            match page.next {
                Some(n) => cursor = Some(n),
                None => return Ok(None),
            }
        }
    }

    /// Sends the status and assignee writes collected in a step, grouped by value.
    pub(crate) async fn flush_patches(&self, writes: Vec<Write>, r: &mut ProcessReport) -> Result<(), PipelineError> {
        let mut groups: Vec<(WriteKind, String, Vec<Write>)> = Vec::new();
        for w in writes {
            match groups.iter_mut().find(|(k, p, _)| *k == w.kind && *p == w.payload) {
                Some(g) => g.2.push(w),
                None => groups.push((w.kind, w.payload.clone(), vec![w])),
            }
        }
        for (kind, value, ws) in groups {
            for chunk in ws.chunks(PATCH_IDS) {
                let ids: Vec<String> = chunk.iter().map(|w| w.alert_id.clone()).collect();
                let patch = match kind {
                    WriteKind::Status => match Status::parse(&value) {
                        Some(s) => AlertPatch { ids, status: Some(s), assignee: None },
                        None => continue, // config checked it; a ledger from elsewhere is not ours to guess
                    },
                    WriteKind::Assignee => match self.assignee(&value).await? {
                        Some(user) => AlertPatch { ids, status: None, assignee: Some(user) },
                        None => {
                            let why = format!("no Panther user {value:?}; check assign_to in [[triage.rules]]");
                            error!(stage = "sync", outcome = "refused", detail = %why, "cannot assign");
                            for w in chunk {
                                self.ledger.finish_write(w.id, WriteState::Failed, None, Some(&why))?;
                            }
                            continue;
                        }
                    },
                    WriteKind::Comment | WriteKind::CommentEdit => continue,
                };
                if self.dry_run {
                    self.planned_push(match kind {
                        WriteKind::Status => Planned::Status { ids: patch.ids.clone(), status: value.clone() },
                        _ => Planned::Assignee { ids: patch.ids.clone(), assignee: value.clone() },
                    });
                } else {
                    match self.api.patch_alerts(&patch).await {
                        Ok(()) => r.patches += 1,
                        Err(e) if e.retry_later() => return Err(e.into()),
                        Err(e) if chunk.len() > 1 => {
                            // One bad ID (an alert deleted since) must not sink the others: one by one.
                            warn!(stage = "sync", error = %e, "a batched alert update was refused; sending it alert by alert");
                            for w in chunk {
                                let one = AlertPatch { ids: vec![w.alert_id.clone()], ..patch.clone() };
                                match self.api.patch_alerts(&one).await {
                                    Ok(()) => {
                                        r.patches += 1;
                                        self.ledger.finish_write(w.id, WriteState::Done, None, None)?;
                                    }
                                    Err(e) if e.retry_later() => return Err(e.into()),
                                    Err(e) => self.patch_refused(w, &e)?,
                                }
                            }
                            continue;
                        }
                        Err(e) => {
                            for w in chunk {
                                self.patch_refused(w, &e)?;
                            }
                            continue;
                        }
                    }
                }
                info!(stage = "sync", outcome = "updated", kind = kind.as_str(), value = %value, alerts = chunk.len(), "alerts updated");
                for w in chunk {
                    self.ledger.finish_write(w.id, WriteState::Done, None, None)?;
                }
            }
        }
        Ok(())
    }

    fn patch_refused(&self, w: &Write, e: &ApiError) -> Result<(), PipelineError> {
        error!(alert_id = %w.alert_id, stage = "sync", outcome = "refused", error = %e, "Panther refused an alert update");
        self.ledger.finish_write(w.id, WriteState::Failed, None, Some(&e.to_string()))?;
        Ok(())
    }

    /// `assign_to` as Panther takes it: an email address where the transport assigns by email,
    /// else the user ID it names (looked up once per process); anything else is an ID already.
    async fn assignee(&self, who: &str) -> Result<Option<Assignee>, ApiError> {
        if !who.contains('@') {
            return Ok(Some(Assignee::Id(who.to_owned())));
        }
        if self.api.assigns_by_email() {
            return Ok(Some(Assignee::Email(who.to_owned())));
        }
        Ok(self.user_id(who).await?.map(Assignee::Id))
    }

    async fn user_id(&self, who: &str) -> Result<Option<String>, ApiError> {
        let mut users = self.users.lock().await;
        if let Some(id) = users.get(who) {
            return Ok(id.clone());
        }
        let id = if self.dry_run { Some(who.to_owned()) } else { self.api.find_user_id(who).await? };
        users.insert(who.to_owned(), id.clone());
        Ok(id)
    }

    fn planned_push(&self, p: Planned) {
        self.planned.lock().unwrap_or_else(|e| e.into_inner()).push(p);
    }
}
