//! `mvp28 admin reconcile`: settles pending orders whose notification was
//! missed, and closes the ones that expired unpaid. Runs from the (sync)
//! admin CLI with a small runtime for the HTTP calls; settles through the
//! same `service::settle` as the webhook.

use chrono::{DateTime, Utc};

use super::service::{log_settled, settle, Refusal, Settled};
use super::Payments;
use crate::clock::to_ms;
use crate::config::Config;
use crate::db::{payments as repo, Db};

#[derive(Debug, Default)]
pub struct Summary {
    pub checked: usize,
    pub paid: usize,
    pub closed: usize,
    pub failed: usize,
    pub pending: usize,
    pub errors: usize,
}

pub fn run(
    config: &Config,
    db: &Db,
    older_than_minutes: u64,
    now: DateTime<Utc>,
) -> anyhow::Result<Summary> {
    let pay = Payments::from_config(config)?
        .ok_or_else(|| anyhow::anyhow!("payments are not enabled (wechat_pay.mch_id is empty)"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let now_ms = to_ms(now);
    let cutoff = now_ms - (older_than_minutes as i64).saturating_mul(60_000);
    let conn = db.conn()?;
    let err = |e: crate::error::AppError| anyhow::anyhow!("{}", e.message);
    let orders = repo::pending_before(&conn, cutoff).map_err(err)?;
    println!(
        "reconcile: {} pending order(s) older than {older_than_minutes} min",
        orders.len()
    );
    let mut sum = Summary::default();
    for p in orders {
        sum.checked += 1;
        let no = p.out_trade_no.as_str();
        let expired = now_ms > p.expires_at;
        let state = match rt.block_on(pay.client.query(no, now)) {
            Ok(Some(t)) => {
                let state = t.trade_state.clone();
                let (mch_id, app_id) = (pay.mch_id.clone(), pay.app_id.clone());
                let out = db
                    .write_blocking(move |tx| settle(tx, &mch_id, &app_id, &t, now_ms))
                    .map_err(err)?;
                log_settled(no, &out);
                match out {
                    Ok(Settled::Credited {
                        user_id,
                        amount_fen,
                    }) => {
                        println!("{no}: paid -> {amount_fen} fen credited to {user_id}");
                        sum.paid += 1;
                        continue;
                    }
                    Ok(Settled::AlreadyPaid) => {
                        println!("{no}: already paid");
                        sum.paid += 1;
                        continue;
                    }
                    Ok(Settled::Finished(to)) => {
                        println!("{no}: {state} -> {to}");
                        if to == "closed" {
                            sum.closed += 1;
                        } else {
                            sum.failed += 1;
                        }
                        continue;
                    }
                    Ok(Settled::Unchanged(_)) => state,
                    Err(r @ (Refusal::UnknownOrder | Refusal::Mismatch(_))) => {
                        println!("{no}: NOT settled: {r}");
                        sum.errors += 1;
                        continue;
                    }
                }
            }
            Ok(None) => "ORDER_NOT_EXIST".to_string(),
            Err(e) => {
                println!("{no}: query failed: {e}");
                sum.errors += 1;
                continue;
            }
        };
        if !expired || !matches!(state.as_str(), "NOTPAY" | "ORDER_NOT_EXIST") {
            println!("{no}: still {state}");
            sum.pending += 1;
            continue;
        }
        // Expired unpaid: close it at WeChat Pay too, so a payment page left
        // open cannot pay it after we gave up on it.
        if state == "NOTPAY" {
            if let Err(e) = rt.block_on(pay.client.close(no, now)) {
                println!("{no}: close failed: {e}");
                sum.errors += 1;
                continue;
            }
        }
        let closing = no.to_string();
        db.write_blocking(move |tx| repo::finish_pending(tx, &closing, "closed"))
            .map_err(err)?;
        println!("{no}: expired {state} -> closed");
        sum.closed += 1;
    }
    println!(
        "reconcile done: {} checked, {} paid, {} closed, {} failed, {} still pending, {} errors",
        sum.checked, sum.paid, sum.closed, sum.failed, sum.pending, sum.errors
    );
    Ok(sum)
}
