//! Reserve -> settle or release.

use crate::db::sql::{Conn, Tx};

use super::quota::exhausted_error;
use super::types::{LedgerKind, ReservationKind, ReservationState};
use super::At;
use crate::config::QuotaConfig;
use crate::db::billing::{self as repo, Reservation};
use crate::db::Db;
use crate::error::AppResult;
use crate::ids::{new_id, UserId};

/// What a piece of work will cost, set aside: one message's worth for each
/// key (a chat reply's message id; `{op}.{n}` for work that costs several).
#[derive(Debug)]
pub struct Hold {
    keys: Vec<String>,
}

impl Hold {
    /// Holds one message's worth for each key, all or nothing: a free
    /// message of the day while any is left, else `price_fen` of spendable
    /// balance; 402 `quota_exhausted` when neither (the caller's transaction
    /// then rolls back, holding nothing).
    pub fn reserve(
        tx: &Tx<'_>,
        quota: &QuotaConfig,
        at: &At,
        user_id: &UserId,
        keys: Vec<String>,
    ) -> AppResult<Hold> {
        repo::ensure_quota_row(tx, user_id, at.ms)?;
        for key in &keys {
            let (s, q) = repo::settings_and_quota(tx, user_id, &at.day)?;
            let (kind, amount_fen) = if q.free_used_today < s.free_daily {
                repo::set_free_used(tx, user_id, &at.day, q.free_used_today + 1, at.ms)?;
                (ReservationKind::Free, 0)
            } else if q.available_fen() >= s.price_fen {
                repo::add_held(tx, user_id, s.price_fen, at.ms)?;
                (ReservationKind::Paid, s.price_fen)
            } else {
                let topups = super::topups::live(tx, &quota.topup_amounts_fen)?;
                return Err(exhausted_error(s.price_fen, &topups));
            };
            let r = Reservation {
                id: new_id("rsv", at.ms),
                user_id: user_id.clone(),
                key: key.clone(),
                kind,
                amount_fen,
                free_day: at.day.clone(),
            };
            repo::insert_reservation(tx, &r, at.ms)?;
        }
        Ok(Hold { keys })
    }

    /// The keys of work that costs `n` messages: `{op}.0` … `{op}.{n-1}`.
    pub fn keys(op: &str, n: u32) -> Vec<String> {
        (0..n).map(|i| format!("{op}.{i}")).collect()
    }

    /// The hold already taken for `key` (e.g. by an earlier transaction).
    pub fn of(key: impl Into<String>) -> Hold {
        Hold {
            keys: vec![key.into()],
        }
    }

    /// Every hold still open (at start, after a crash: all of them).
    pub fn open(conn: &Conn) -> AppResult<Vec<Hold>> {
        Ok(repo::held_keys(conn)?.into_iter().map(Hold::of).collect())
    }

    /// The open holds of instances no longer alive (none beat since
    /// `alive_after`): what a crash or a stop left behind.
    pub fn orphaned(conn: &Conn, alive_after: i64) -> AppResult<Vec<Hold>> {
        Ok(crate::db::instances::orphaned_holds(conn, alive_after)?
            .into_iter()
            .map(Hold::of)
            .collect())
    }

    pub fn key(&self) -> &str {
        &self.keys[0]
    }

    /// Turns the hold into a charge, inside the transaction that stores the
    /// work: one `charge` ledger row per paid message. Returns the fen
    /// charged; 0 for free messages or when nothing was held.
    pub fn settle(&self, tx: &Tx<'_>, now_ms: i64) -> AppResult<i64> {
        let mut charged = 0;
        for key in &self.keys {
            let Some(r) = repo::close_held(tx, key, ReservationState::Settled, now_ms)? else {
                continue;
            };
            if r.kind == ReservationKind::Paid && r.amount_fen > 0 {
                repo::charge_held(tx, &r.user_id, r.amount_fen, now_ms)?;
                repo::append_ledger(
                    tx,
                    &r.user_id,
                    -r.amount_fen,
                    LedgerKind::Charge,
                    key,
                    now_ms,
                )?;
                charged += r.amount_fen;
            }
        }
        Ok(charged)
    }

    /// Gives back what is held: the free message (if its day is still the
    /// counted day) or the held fen. The ledger is not touched.
    pub fn release(&self, tx: &Tx<'_>, now_ms: i64) -> AppResult<()> {
        for key in &self.keys {
            let Some(r) = repo::close_held(tx, key, ReservationState::Released, now_ms)? else {
                continue;
            };
            match r.kind {
                ReservationKind::Paid => repo::add_held(tx, &r.user_id, -r.amount_fen, now_ms)?,
                ReservationKind::Free => repo::give_back_free(tx, &r.user_id, &r.free_day, now_ms)?,
            }
        }
        Ok(())
    }

    /// [`release`](Self::release) in a write of its own, for work that
    /// failed before anything else was stored. A failure is logged: the
    /// hold stays open and is released at the next start.
    pub async fn release_alone(self, db: &Db, now_ms: i64) {
        if let Err(e) = db.write(move |tx| self.release(tx, now_ms)).await {
            tracing::error!(error = %e, "could not release a hold");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::{ledger, quota};

    type Job = Box<dyn FnOnce(&Tx<'_>) -> AppResult<i64> + Send>;

    fn at(ms: i64) -> At {
        At {
            ms,
            day: "2026-12-01".into(),
            month: "2026-12".into(),
        }
    }

    /// Free messages first, then price_fen of balance, then 402; settle
    /// charges once through the ledger, release gives back; the balance
    /// always equals the ledger's sum.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn free_then_paid_then_exhausted_and_the_ledger_balances() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("b.db"), 2).unwrap();
        let cfg = QuotaConfig::default();
        let run = |f: Job| {
            let db = db.clone();
            async move { db.write(f).await }
        };
        run(Box::new(|tx| {
            repo::seed_setting(tx, repo::FREE_DAILY, 1, 0)?;
            repo::seed_setting(tx, repo::PRICE_FEN, 100, 0)?;
            crate::db::users::upsert_by_openid(tx, "o1", None, 0)?;
            Ok(0)
        }))
        .await
        .unwrap();
        let uid: UserId = db
            .run(|c| Ok(c.query_row("SELECT id FROM users", [], |r| r.get(0))?))
            .await
            .unwrap();
        let u = uid.clone();
        // 150 fen of balance: one free message, one paid, then refused
        run(Box::new(move |tx| {
            Ok(ledger::grant(tx, &u, 150, "test", 1)?.expect("a credit"))
        }))
        .await
        .unwrap();
        let (c, u) = (cfg.clone(), uid.clone());
        let charged = run(Box::new(move |tx| {
            let free = Hold::reserve(tx, &c, &at(2), &u, vec!["m1".into()])?;
            let paid = Hold::reserve(tx, &c, &at(2), &u, vec!["m2".into()])?;
            let refused = Hold::reserve(tx, &c, &at(2), &u, vec!["m3".into()]).unwrap_err();
            assert_eq!(refused.code, crate::error::ErrorCode::QuotaExhausted);
            let q = quota::view(tx, &u, "2026-12-01")?;
            assert_eq!((q.free_remaining, q.balance_fen), (0, 50), "100 held");
            Ok(free.settle(tx, 3)? + paid.settle(tx, 3)?)
        }))
        .await
        .unwrap();
        assert_eq!(charged, 100);
        // settling twice charges nothing more; a release after settle is a no-op
        let u = uid.clone();
        let again = run(Box::new(move |tx| {
            Hold::of("m2").release(tx, 4)?;
            let q = quota::view(tx, &u, "2026-12-01")?;
            assert_eq!(q.balance_fen, 50);
            Hold::of("m2").settle(tx, 4)
        }))
        .await
        .unwrap();
        assert_eq!(again, 0);
        // a released paid hold gives its fen back, several keys all or nothing
        let (c, u) = (cfg.clone(), uid.clone());
        run(Box::new(move |tx| {
            assert!(Hold::reserve(tx, &c, &at(5), &u, Hold::keys("op", 2)).is_err());
            Ok(0)
        }))
        .await
        .unwrap();
        let (c, u) = (cfg.clone(), uid.clone());
        run(Box::new(move |tx| {
            ledger::grant(tx, &u, 100, "test", 5)?.expect("a credit");
            let h = Hold::reserve(tx, &c, &at(5), &u, Hold::keys("vop", 1))?;
            assert_eq!(quota::view(tx, &u, "2026-12-01")?.balance_fen, 50);
            h.release(tx, 6)?;
            assert_eq!(quota::view(tx, &u, "2026-12-01")?.balance_fen, 150);
            Ok(0)
        }))
        .await
        .unwrap();
        let (checked, mismatches) = db.run(ledger::audit).await.unwrap();
        assert_eq!((checked, mismatches.len()), (1, 0));
        let sum: i64 = db
            .run(|c| Ok(c.query_row("SELECT sum(delta_fen) FROM ledger", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(sum, 150);
    }
}
