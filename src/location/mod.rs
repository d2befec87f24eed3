//! Location reports: validation, history, erasure and retention.

pub mod handlers;
mod validate;

use std::time::Duration;

use crate::clock::to_ms;
use crate::db;
use crate::error::AppResult;
use crate::http::AppState;

const PURGE_BATCH: u32 = 5000;

/// Deletes points older than `location.retention_days`; returns the count.
pub async fn purge_expired(state: &AppState) -> AppResult<usize> {
    let days = i64::from(state.config().location.retention_days);
    let cutoff = to_ms(state.now() - chrono::Duration::days(days));
    let mut n = 0;
    loop {
        // One bounded write at a time, so a large purge never holds the
        // writer (and every chat turn queued behind it) for long.
        let deleted = state
            .db()
            .write(move |tx| db::location::purge_batch(tx, cutoff, PURGE_BATCH))
            .await?;
        n += deleted;
        if deleted < PURGE_BATCH as usize {
            break;
        }
    }
    tracing::info!(
        deleted = n,
        retention_days = days,
        "location retention sweep"
    );
    Ok(n)
}

/// Runs the retention sweep hourly (the caller runs the first one at start).
pub fn spawn_retention(state: AppState) {
    tokio::spawn(async move {
        let hour = Duration::from_secs(3600);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + hour, hour);
        loop {
            tick.tick().await;
            if let Err(e) = purge_expired(&state).await {
                tracing::warn!(error = %e, "location retention sweep failed");
            }
        }
    });
}
