//! Batch jobs over a user's media and their items (docs/media.md).

use crate::db::sql::{params, Conn, OptionalExtension, Row, Tx};

use crate::error::AppResult;
use crate::ids::{JobId, MediaId, UserId};

/// An item interrupted this many times (crashes mid-item) is failed
/// instead of retried forever.
pub const MAX_ATTEMPTS: i64 = 3;

#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: JobId,
    pub user_id: UserId,
    pub action: String,
    pub state: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct ItemRow {
    pub idx: i64,
    pub media_id: MediaId,
    pub state: String,
    pub result: Option<String>,
    pub error: Option<String>,
}

pub fn create(
    tx: &Tx<'_>,
    id: &JobId,
    user_id: &UserId,
    action: &str,
    media_ids: &[MediaId],
    now: i64,
) -> AppResult<()> {
    tx.execute(
        "INSERT INTO jobs (id, user_id, action, state, created_at, owner)
         VALUES (?1, ?2, ?3, 'running', ?4, ?5)",
        params![id, user_id, action, now, tx.instance()],
    )?;
    let mut stmt = tx.prepare(
        "INSERT INTO job_items (job_id, idx, media_id, state, updated_at) VALUES (?1, ?2, ?3, 'pending', ?4)",
    )?;
    for (i, m) in media_ids.iter().enumerate() {
        stmt.execute(params![id, i as i64, m, now])?;
    }
    Ok(())
}

const JOB_COLS: &str = "id, user_id, action, state, created_at, finished_at";

fn job_row(r: &Row<'_>) -> crate::db::sql::DbResult<JobRow> {
    Ok(JobRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        action: r.get(2)?,
        state: r.get(3)?,
        created_at: r.get(4)?,
        finished_at: r.get(5)?,
    })
}

pub fn find(conn: &Conn, id: &JobId) -> AppResult<Option<JobRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"),
            [id],
            job_row,
        )
        .optional()?)
}

pub fn find_for_user(conn: &Conn, user_id: &UserId, id: &JobId) -> AppResult<Option<JobRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1 AND user_id = ?2"),
            params![id, user_id],
            job_row,
        )
        .optional()?)
}

pub fn items(conn: &Conn, job_id: &JobId) -> AppResult<Vec<ItemRow>> {
    let mut stmt = conn.prepare(
        "SELECT idx, media_id, state, result, error FROM job_items WHERE job_id = ?1 ORDER BY idx",
    )?;
    let rows = stmt.query_map([job_id], |r| {
        Ok(ItemRow {
            idx: r.get(0)?,
            media_id: r.get(1)?,
            state: r.get(2)?,
            result: r.get(3)?,
            error: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Startup: jobs still running, their interrupted items made pending again.
/// Claims the running jobs whose owner is not alive (no beat since
/// `alive_after`) for this instance, resets their interrupted items, and
/// returns them.
pub fn resume_all(tx: &Tx<'_>, now: i64, alive_after: i64) -> AppResult<Vec<JobRow>> {
    tx.execute(
        "UPDATE jobs SET owner = ?1 WHERE state = 'running'
         AND (owner IS NULL OR owner NOT IN (SELECT id FROM instances WHERE heartbeat_at >= ?2))",
        params![tx.instance(), alive_after],
    )?;
    tx.execute(
        "UPDATE job_items SET state = 'pending', updated_at = ?1
         WHERE state = 'running'
         AND job_id IN (SELECT id FROM jobs WHERE state = 'running' AND owner = ?2)",
        params![now, tx.instance()],
    )?;
    let mut stmt = tx.prepare(&format!(
        "SELECT {JOB_COLS} FROM jobs WHERE state = 'running' AND owner = ?1 ORDER BY created_at"
    ))?;
    let rows = stmt.query_map([tx.instance()], job_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A user's jobs still running.
pub fn count_unfinished(conn: &Conn, user_id: &UserId) -> AppResult<i64> {
    Ok(conn
        .prepare_cached("SELECT count(*) FROM jobs WHERE user_id = ?1 AND state = 'running'")?
        .query_row([user_id], |r| r.get(0))?)
}

/// (idx, attempts) of a job's items that will run again.
pub fn runnable_items(conn: &Conn, job_id: &JobId) -> AppResult<Vec<(i64, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT idx, attempts FROM job_items WHERE job_id = ?1 AND state = 'pending'
         AND attempts < ?2 ORDER BY idx",
    )?;
    let rows = stmt.query_map(params![job_id, MAX_ATTEMPTS], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Marks the next pending item running and returns (idx, media_id,
/// attempts before this one).
pub fn claim_next(tx: &Tx<'_>, job_id: &JobId, now: i64) -> AppResult<Option<(i64, MediaId, i64)>> {
    tx.execute(
        "UPDATE job_items SET state = 'failed', error = 'interrupted too many times', updated_at = ?3
         WHERE job_id = ?1 AND state = 'pending' AND attempts >= ?2",
        params![job_id, MAX_ATTEMPTS, now],
    )?;
    let next: Option<(i64, MediaId, i64)> = tx
        .query_row(
            "SELECT idx, media_id, attempts FROM job_items WHERE job_id = ?1 AND state = 'pending'
             ORDER BY idx LIMIT 1",
            [job_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    if let Some((idx, _, _)) = &next {
        tx.execute(
            "UPDATE job_items SET state = 'running', attempts = attempts + 1, updated_at = ?3
             WHERE job_id = ?1 AND idx = ?2",
            params![job_id, idx, now],
        )?;
    }
    Ok(next)
}

pub fn finish_item(
    tx: &Tx<'_>,
    job_id: &JobId,
    idx: i64,
    outcome: &Result<String, String>,
    now: i64,
) -> AppResult<()> {
    let (state, result, error) = match outcome {
        Ok(r) => ("done", Some(r.as_str()), None),
        Err(e) => ("failed", None, Some(e.as_str())),
    };
    tx.execute(
        "UPDATE job_items SET state = ?3, result = ?4, error = ?5, updated_at = ?6
         WHERE job_id = ?1 AND idx = ?2",
        params![job_id, idx, state, result, error, now],
    )?;
    Ok(())
}

/// Marks the job done once no item is pending or running; true if it is.
pub fn finish_if_done(tx: &Tx<'_>, job_id: &JobId, now: i64) -> AppResult<bool> {
    let open: i64 = tx.query_row(
        "SELECT count(*) FROM job_items WHERE job_id = ?1 AND state IN ('pending', 'running')",
        [job_id],
        |r| r.get(0),
    )?;
    if open > 0 {
        return Ok(false);
    }
    tx.execute(
        "UPDATE jobs SET state = 'done', finished_at = ?2 WHERE id = ?1 AND state = 'running'",
        params![job_id, now],
    )?;
    Ok(true)
}
