//! Batch jobs: POST /api/files/batch starts one over some of the user's
//! media, GET /api/jobs/{id} reports it. Jobs live in SQLite, so one
//! interrupted by a stop or crash resumes at the next start (its items
//! still pending or running are run again). At most `CONCURRENCY` items
//! run at once across all jobs, so a big batch cannot starve chat of
//! upstream capacity, and the slots go round-robin across users
//! (`fair.rs`), so one user's jobs cannot delay everyone else's.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::fair::FairSlots;
use super::views::{Job, JobItem, JobProgress};
use crate::auth::AuthUser;
use crate::billing::budget;
use crate::billing::calls::{self, End, Subject};
use crate::billing::Hold;
use crate::clock::{rfc3339, to_ms};
use crate::db::jobs::{self as repo, JobRow};
use crate::db::media::{self as media_repo, MediaRow};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::http::AppState;
use crate::ids::{JobId, MediaId, UserId};
use crate::llm::ChatMessage;

/// Items processed at once, over all jobs.
pub const CONCURRENCY: usize = 2;
/// Media ids accepted in one batch.
pub const MAX_ITEMS: usize = 20;
/// What "describe" asks the default model for each image.
pub const DESCRIBE_PROMPT: &str =
    "Describe this image in detail: what it shows, any text in it, and anything notable.";

/// Shared by every job of the process: the concurrency bound and the stop
/// signal that `Server::stop` raises.
pub struct Runner {
    slots: FairSlots,
    stop: watch::Sender<bool>,
    /// Names this process's holds for describe items: a restart releases
    /// the last process's and holds anew under its own.
    boot: String,
}

impl Default for Runner {
    fn default() -> Self {
        Self {
            slots: FairSlots::new(CONCURRENCY),
            stop: watch::channel(false).0,
            boot: crate::ids::random_hex(6),
        }
    }
}

impl Runner {
    /// Abandons running items (they stay `running` in the database and
    /// are re-run at the next start).
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }
}

/// Starts a job; answers its view (202).
pub async fn submit(
    state: &AppState,
    user: &AuthUser,
    media_ids: Vec<MediaId>,
    action: &str,
) -> AppResult<Job> {
    let (want, what) = match action {
        "extract_text" => ("application/pdf", "a PDF"),
        "describe" => ("image/", "an image"),
        _ => {
            return Err(AppError::validation(
                "action",
                "must be \"extract_text\" or \"describe\"",
            ))
        }
    };
    if media_ids.is_empty() || media_ids.len() > MAX_ITEMS {
        return Err(AppError::validation(
            "media_ids",
            format!("must list 1 to {MAX_ITEMS} media ids"),
        ));
    }
    if action == "describe" && !state.llm().resolve(None)?.vision() {
        return Err(AppError::validation(
            "action",
            "the default model does not accept images (no provider marked vision = true)",
        ));
    }
    for (i, id) in media_ids.iter().enumerate() {
        let field = format!("media_ids[{i}]");
        if media_ids[..i].contains(id) {
            return Err(AppError::validation(&field, "listed twice"));
        }
        let m = find_media(state, &user.id, id)
            .await?
            .ok_or_else(|| AppError::not_found("media"))?;
        if !m.content_type.starts_with(want) {
            return Err(AppError::validation(
                &field,
                format!("{action} needs {what}, not {}", m.content_type),
            ));
        }
    }
    let now = to_ms(state.now());
    let id = JobId::new(now);
    let (jid, uid, act) = (id.clone(), user.id.clone(), action.to_string());
    let max = state.config().jobs.max_pending_per_user;
    let (st, at) = (state.clone(), state.at());
    state
        .db()
        .write(move |tx| {
            if repo::count_unfinished(tx, &uid)? >= i64::from(max) {
                return Err(AppError::new(
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::TooManyJobs,
                    format!("{max} of your batch jobs are unfinished; wait for one to end"),
                )
                .with("max_pending_per_user", serde_json::json!(max)));
            }
            let n = media_ids.len() as i64;
            repo::create(tx, &jid, &uid, &act, &media_ids, now)?;
            if act == "describe" {
                // Each image costs what a message costs: all held now (402
                // before anything runs), each settled or released by its item.
                let keys = (0..n).map(|idx| hold_key(&st, &jid, idx, 0)).collect();
                Hold::reserve(tx, &st.config().quota, &at, &uid, keys)?;
            }
            Ok(())
        })
        .await?;
    tracing::info!(job_id = %id, action, "batch job started");
    spawn(state.clone(), id.clone());
    view(state, &user.id, &id).await
}

/// The hold of one describe item's attempt (`attempts` before it ran) in
/// this process (`boot`).
fn hold_key(state: &AppState, job_id: &JobId, idx: i64, attempt: i64) -> String {
    format!("{job_id}#{idx}#{attempt}@{}", state.jobs().boot)
}

/// GET /api/jobs/{id}: the owner's job with per-item progress and results.
pub async fn view(state: &AppState, user_id: &UserId, id: &JobId) -> AppResult<Job> {
    let (uid, jid) = (user_id.clone(), id.clone());
    let (job, items) = state
        .db()
        .run(move |c| {
            let job = repo::find_for_user(c, &uid, &jid)?;
            let items = match &job {
                Some(_) => repo::items(c, &jid)?,
                None => vec![],
            };
            Ok((job, items))
        })
        .await?;
    let job = job.ok_or_else(|| AppError::not_found("job"))?;
    let count = |s: &str| items.iter().filter(|i| i.state == s).count() as u64;
    Ok(Job {
        progress: JobProgress {
            total: items.len() as u64,
            pending: count("pending"),
            running: count("running"),
            done: count("done"),
            failed: count("failed"),
        },
        items: items
            .into_iter()
            .map(|i| JobItem {
                media_id: i.media_id,
                state: i.state,
                result: i.result,
                error: i.error,
            })
            .collect(),
        id: job.id,
        action: job.action,
        state: job.state,
        created_at: rfc3339(job.created_at),
        finished_at: job.finished_at.map(rfc3339),
    })
}

/// Startup: makes interrupted items pending again and restarts every job
/// still running.
pub async fn resume(state: &AppState) -> AppResult<usize> {
    let now = to_ms(state.now());
    let jobs = state
        .db()
        .write({
            let alive_after = crate::ops::cluster::alive_after(state.db());
            move |tx| repo::resume_all(tx, now, alive_after)
        })
        .await?;
    // The holds of interrupted describe items were released at start
    // (crash recovery): hold again for what will run, or fail the item.
    for j in jobs.iter().filter(|j| j.action == "describe") {
        let jid = j.id.clone();
        let items = state
            .db()
            .run(move |c| repo::runnable_items(c, &jid))
            .await?;
        for (idx, attempts) in items {
            let (jid, uid, at, st) = (j.id.clone(), j.user_id.clone(), state.at(), state.clone());
            let held = state
                .db()
                .write(move |tx| {
                    Hold::reserve(
                        tx,
                        &st.config().quota,
                        &at,
                        &uid,
                        vec![hold_key(&st, &jid, idx, attempts)],
                    )
                })
                .await;
            if let Err(e) = held {
                let (jid, why) = (j.id.clone(), Err(e.message));
                state
                    .db()
                    .write(move |tx| repo::finish_item(tx, &jid, idx, &why, now))
                    .await?;
            }
        }
    }
    for j in &jobs {
        tracing::info!(job_id = %j.id, "resuming batch job");
        spawn(state.clone(), j.id.clone());
    }
    Ok(jobs.len())
}

fn spawn(state: AppState, job_id: JobId) {
    tokio::spawn(async move {
        if let Err(e) = run(&state, &job_id).await {
            // The job stays running in the database: the next start resumes it.
            tracing::error!(job_id = %job_id, error = %e, "batch job stopped");
        }
    });
}

async fn run(state: &AppState, job_id: &JobId) -> AppResult<()> {
    let runner = state.jobs();
    let mut stop = runner.stop.subscribe();
    if *stop.borrow() {
        return Ok(());
    }
    let id = job_id.clone();
    let Some(job) = state.db().run(move |c| repo::find(c, &id)).await? else {
        return Ok(()); // deleted with its account
    };
    let mut tasks = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = runner.slots.acquire(&job.user_id) => p,
            _ = stop.wait_for(|s| *s) => { tasks.abort_all(); return Ok(()); }
        };
        let (jid, now) = (job.id.clone(), to_ms(state.now()));
        let Some((idx, media_id, attempt)) = state
            .db()
            .write(move |tx| repo::claim_next(tx, &jid, now))
            .await?
        else {
            break;
        };
        let (st, j) = (state.clone(), job.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let outcome = process(&st, &j, &media_id).await;
            let (jid, now) = (j.id.clone(), to_ms(st.now()));
            let hold =
                (j.action == "describe").then(|| Hold::of(hold_key(&st, &j.id, idx, attempt)));
            if let Err(e) = st
                .db()
                .write(move |tx| {
                    // The item's result and its charge (or release) in one write.
                    match (&hold, &outcome) {
                        (Some(h), Ok(_)) => {
                            h.settle(tx, now)?;
                        }
                        (Some(h), Err(_)) => h.release(tx, now)?,
                        (None, _) => {}
                    }
                    repo::finish_item(tx, &jid, idx, &outcome, now)
                })
                .await
            {
                tracing::error!(error = %e, "could not record a batch item");
            }
        });
    }
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            _ = stop.wait_for(|s| *s) => { tasks.abort_all(); return Ok(()); }
        }
    }
    let (jid, now) = (job.id.clone(), to_ms(state.now()));
    if state
        .db()
        .write(move |tx| repo::finish_if_done(tx, &jid, now))
        .await?
    {
        tracing::info!(job_id = %job.id, "batch job done");
    }
    Ok(())
}

async fn find_media(
    state: &AppState,
    user_id: &UserId,
    id: &MediaId,
) -> AppResult<Option<MediaRow>> {
    let (uid, mid) = (user_id.clone(), id.clone());
    Ok(state
        .db()
        .run(move |c| media_repo::find_for_user(c, &uid, &mid))
        .await?
        .filter(|m| m.committed))
}

/// One item: Ok(result text) or Err(why it failed, shown to the user).
async fn process(state: &AppState, job: &JobRow, media_id: &MediaId) -> Result<String, String> {
    let m = match find_media(state, &job.user_id, media_id).await {
        Ok(Some(m)) => m,
        Ok(None) => return Err("the media no longer exists".into()),
        Err(e) => return Err(format!("internal error: {}", e.code)),
    };
    match job.action.as_str() {
        "extract_text" => match crate::media::extract_and_store(state, &m).await {
            Ok(outcome) => outcome,
            Err(e) => Err(e.message),
        },
        _ => describe(state, &job.id, &m).await,
    }
}

/// Sends the image to the default (vision) model; stores the description.
/// Charged like a message: the item's hold is settled when it succeeds.
async fn describe(state: &AppState, job_id: &JobId, m: &MediaRow) -> Result<String, String> {
    let route = state.llm().resolve(None).map_err(|e| e.message)?;
    if !route.vision() {
        return Err("the default model does not accept images".into());
    }
    // Budgets bound background spend too; the user is not charged.
    let at = state.at();
    state
        .db()
        .run(move |c| budget::check(c, &at))
        .await
        .map_err(|e| e.message)?;
    crate::moderation::images::check_attach(state, m)
        .await
        .map_err(|e| e.message)?;
    let image = crate::media::load_image(state, m)
        .await
        .map_err(|e| e.message)?;
    let messages = vec![ChatMessage {
        role: "user",
        content: DESCRIBE_PROMPT.into(),
        images: vec![Arc::new(image)],
    }];
    let subject = Subject {
        user_id: m.user_id.clone(),
        reference: job_id.to_string(),
        model: route.model().to_string(),
    };
    let mut text = String::new();
    let metered = state
        .meter()
        .call(&route, messages, &subject, |t| text.push_str(t))
        .await;
    calls::record_alone(state.db(), state.metrics(), state.at(), metered.calls).await;
    let ok = match metered.end {
        End::Complete => true,
        End::Refused(e) => return Err(e.message),
        End::Cut(e) => {
            tracing::warn!(error = %e, "describe failed mid-stream");
            false
        }
    };
    if !ok || text.trim().is_empty() {
        return Err("the model failed to describe the image".into());
    }
    let (id, t) = (m.id.clone(), text.clone());
    state
        .db()
        .write(move |tx| media_repo::set_description(tx, &id, &t))
        .await
        .map_err(|e| e.message)?;
    Ok(text)
}
