//! `mvp28 admin reconcile`: settles pending orders whose notification was
//! missed, and closes the ones that expired unpaid. Runs from the admin
//! CLI (in a small runtime) and from the operator console; settles through
//! the same `service::settle` as the webhook.

use chrono::{DateTime, Utc};

use super::service::{log_settled, settle, Refusal, Settled};
use super::Payments;
use crate::clock::to_ms;
use crate::config::Config;
use crate::db::{payments as repo, Db};
use crate::error::AppResult;

#[derive(Debug, Default, serde::Serialize, utoipa::ToSchema)]
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
    rt.block_on(reconcile(&pay, db, older_than_minutes, now, &mut |line| {
        println!("{line}")
    }))
    .map_err(|e| anyhow::anyhow!("{}", e.message))
}

/// Reconciles the pending orders older than `older_than_minutes`, telling
/// `report` one line per order and a summary line (the CLI prints them,
/// the operator console returns them).
pub async fn reconcile(
    pay: &Payments,
    db: &Db,
    older_than_minutes: u64,
    now: DateTime<Utc>,
    report: &mut (dyn FnMut(String) + Send),
) -> AppResult<Summary> {
    let now_ms = to_ms(now);
    let cutoff = now_ms - (older_than_minutes as i64).saturating_mul(60_000);
    let orders = db.run(move |c| repo::pending_before(c, cutoff)).await?;
    report(format!(
        "reconcile: {} pending order(s) older than {older_than_minutes} min",
        orders.len()
    ));
    let mut sum = Summary::default();
    for p in orders {
        sum.checked += 1;
        let no = p.out_trade_no.as_str();
        let expired = now_ms > p.expires_at;
        let state = match pay.client.query(no, now).await {
            Ok(Some(t)) => {
                let state = t.trade_state.clone();
                let (mch_id, app_id) = (pay.mch_id.clone(), pay.app_id.clone());
                let out = db
                    .write(move |tx| settle(tx, &mch_id, &app_id, &t, now_ms))
                    .await?;
                log_settled(no, &out);
                match out {
                    Ok(Settled::Credited {
                        user_id,
                        amount_fen,
                    }) => {
                        report(format!(
                            "{no}: paid -> {amount_fen} fen credited to {user_id}"
                        ));
                        sum.paid += 1;
                        continue;
                    }
                    Ok(Settled::AlreadyPaid) => {
                        report(format!("{no}: already paid"));
                        sum.paid += 1;
                        continue;
                    }
                    Ok(Settled::Finished(to)) => {
                        report(format!("{no}: {state} -> {to}"));
                        if to == "closed" {
                            sum.closed += 1;
                        } else {
                            sum.failed += 1;
                        }
                        continue;
                    }
                    Ok(Settled::Unchanged(_)) => state,
                    Err(r @ (Refusal::UnknownOrder | Refusal::Mismatch(_))) => {
                        report(format!("{no}: NOT settled: {r}"));
                        sum.errors += 1;
                        continue;
                    }
                }
            }
            Ok(None) => "ORDER_NOT_EXIST".to_string(),
            Err(e) => {
                report(format!("{no}: query failed: {e}"));
                sum.errors += 1;
                continue;
            }
        };
        if !expired || !matches!(state.as_str(), "NOTPAY" | "ORDER_NOT_EXIST") {
            report(format!("{no}: still {state}"));
            sum.pending += 1;
            continue;
        }
        // Expired unpaid: close it at WeChat Pay too, so a payment page left
        // open cannot pay it after we gave up on it.
        if state == "NOTPAY" {
            if let Err(e) = pay.client.close(no, now).await {
                report(format!("{no}: close failed: {e}"));
                sum.errors += 1;
                continue;
            }
        }
        let closing = no.to_string();
        db.write(move |tx| repo::finish_pending(tx, &closing, "closed"))
            .await?;
        report(format!("{no}: expired {state} -> closed"));
        sum.closed += 1;
    }
    report(format!(
        "reconcile done: {} checked, {} paid, {} closed, {} failed, {} still pending, {} errors",
        sum.checked, sum.paid, sum.closed, sum.failed, sum.pending, sum.errors
    ));
    Ok(sum)
}
