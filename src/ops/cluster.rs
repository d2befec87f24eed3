//! Several instances on one database (Postgres): liveness, cleanup of what
//! a dead instance left, and leases so background work runs once
//! cluster-wide. On SQLite there is one server per file (`ops::lock`), so
//! everything found at start is from a dead process and every lease is
//! this process's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::db::{instances, Backend, Db};
use crate::error::AppResult;
use crate::http::AppState;

/// How often a serving instance beats.
const BEAT: Duration = Duration::from_secs(5);
/// An instance silent this long is dead: its holds are released and its
/// batch jobs taken over.
const LIVENESS_MS: i64 = 30_000;

/// Wall-clock ms: liveness is real time, whatever the app's clock says.
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Owners that beat at or after this instant are alive.
pub fn alive_after(db: &Db) -> i64 {
    match db.backend() {
        Backend::Sqlite => i64::MAX,
        Backend::Postgres => wall_ms() - LIVENESS_MS,
    }
}

/// Registers this instance (before it serves).
pub async fn join(db: &Db) -> AppResult<()> {
    let now = wall_ms();
    db.write(move |tx| instances::register(tx, now)).await
}

/// A clean stop: what this instance still holds is released by the others
/// (or by the next start) without waiting for it to look dead.
pub async fn leave(db: &Db) -> AppResult<()> {
    db.write(instances::retire).await
}

/// Beats; on Postgres also releases, every few beats, the holds of
/// instances that died (a crashed instance's holds would otherwise stay
/// until some instance restarts).
pub fn spawn_heartbeat(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(BEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beats = 0u64;
        loop {
            tick.tick().await;
            beats += 1;
            let now = wall_ms();
            if let Err(e) = state
                .db()
                .write(move |tx| instances::register(tx, now))
                .await
            {
                tracing::warn!(error = %e, "instance heartbeat failed");
                continue;
            }
            if state.db().backend() == Backend::Postgres && beats % 3 == 0 {
                let now_ms = crate::clock::to_ms(state.now());
                match crate::chat::service::recover_orphans(state.db(), now_ms).await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(count = n, "released holds of an instance that died"),
                    Err(e) => {
                        tracing::warn!(error = %e, "releasing a dead instance's holds failed")
                    }
                }
                let before = now - 24 * 3600 * 1000;
                let _ = state
                    .db()
                    .write(move |tx| instances::forget_dead(tx, before))
                    .await;
            }
        }
    });
}

/// True when this instance should run the periodic work `name` now (it
/// holds the lease for `ttl`); on SQLite always.
pub async fn lease(db: &Db, name: &'static str, ttl: Duration) -> AppResult<bool> {
    if db.backend() == Backend::Sqlite {
        return Ok(true);
    }
    let now = wall_ms();
    let ttl_ms = ttl.as_millis() as i64;
    db.write(move |tx| instances::take_lease(tx, name, now, ttl_ms))
        .await
}
