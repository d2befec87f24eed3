//! `mvp28 admin …`: operator commands against the same database `serve`
//! uses; each is one transaction and takes effect live.

use std::process::ExitCode;

use clap::Subcommand;

use crate::billing::{self, budget, ledger, At};
use crate::clock::{rfc3339, to_ms};
use crate::config::Config;
use crate::db::{self, billing as repo};
use crate::ids::UserId;

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Set the price of a message beyond the free quota, in fen (100 = 1 CNY).
    SetPrice {
        #[arg(value_name = "FEN", value_parser = clap::value_parser!(i64).range(0..=1_000_000))]
        fen: i64,
    },
    /// Set the number of free messages per user per day.
    SetFreeQuota {
        #[arg(value_name = "N", value_parser = clap::value_parser!(i64).range(0..=1_000_000_000))]
        n: i64,
    },
    /// Set the top-up amounts a checkout may ask for, in fen, live
    /// (e.g. 600,1200,3000: 1 to 10 distinct amounts of 1 to 10000000 fen).
    SetTopups {
        #[arg(value_name = "FEN,FEN,…")]
        amounts: String,
    },
    /// Credit (or, with a negative amount, debit) a user's balance.
    Grant {
        #[arg(long, value_name = "USER_ID")]
        user: UserId,
        #[arg(long, value_name = "FEN", allow_negative_numbers = true)]
        fen: i64,
        #[arg(long, value_name = "TEXT", default_value = "admin grant")]
        reason: String,
    },
    /// Show users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Check that every balance equals the sum of its ledger rows; exit 1
    /// listing the users that do not.
    Audit,
    /// Write a consistent copy of the database (safe while serving).
    Backup {
        /// Destination file (must not exist), or s3://bucket/key to upload
        /// it with the endpoint and keys of [storage.s3]
        #[arg(long, value_name = "PATH|s3://BUCKET/KEY")]
        to: std::path::PathBuf,
    },
    /// Change the model spend budgets live (upstream currency; 0 = none).
    SetBudget {
        /// Budget per local calendar day, e.g. 5 or 2.50
        #[arg(long, value_name = "AMOUNT")]
        daily: Option<f64>,
        /// Budget per local calendar month
        #[arg(long, value_name = "AMOUNT")]
        monthly: Option<f64>,
    },
    /// Calls, tokens, spend, failures and income over the last days.
    Usage {
        /// How many local calendar days, today included
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=3660))]
        days: u32,
        /// Rows per model, provider, day or user
        #[arg(long, value_enum, default_value_t = UsageBy::Model)]
        by: UsageBy,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Create an operator console account; prints its one-time password.
    CreateAdmin {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Give a console account a new one-time password (ends its sessions).
    ResetAdmin {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// List the console accounts.
    ListAdmins,
    /// Create an admin API token (Authorization: Bearer …) for NAME; printed once.
    CreateToken {
        #[arg(value_name = "NAME")]
        name: String,
        /// What the token is for
        #[arg(long, value_name = "TEXT", default_value = "api")]
        label: String,
    },
    /// Revoke an admin API token by its id (from create-token).
    RevokeToken {
        #[arg(value_name = "ID")]
        id: i64,
    },
    /// The admin audit trail (console and CLI actions), newest first.
    AuditLog {
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10000))]
        limit: u32,
    },
    /// Query pending WeChat Pay orders at WeChat Pay: settle the paid ones
    /// (credit once), close the expired unpaid ones. Exit 1 on any error.
    Reconcile {
        /// Only orders created at least this many minutes ago.
        #[arg(long, value_name = "N", default_value_t = 10)]
        older_than_minutes: u64,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum UsageBy {
    Model,
    Provider,
    Day,
    User,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Quota, balance and the last ledger rows of a user.
    Show {
        #[arg(value_name = "USER_ID")]
        user: UserId,
    },
}

pub fn run(config: &Config, cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    let now = chrono::Utc::now();
    let now_ms = to_ms(now);
    let db = crate::ops::serve::open_db(config, now_ms)?;
    let pooled = db.conn().map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let conn = pooled.conn();
    let err = |e: crate::error::AppError| anyhow::anyhow!("{}", e.message);
    let set = |key: &'static str, value: i64| {
        db.write_blocking(move |tx| {
            let before = repo::get_setting(tx, key)?;
            repo::set_setting(tx, key, value, now_ms)?;
            let (b, a) = (
                serde_json::json!({ key: before }).to_string(),
                serde_json::json!({ key: value }).to_string(),
            );
            db::admins::append_audit(tx, "cli", "settings.set", key, Some(&b), Some(&a), now_ms)
        })
        .map_err(err)
    };
    match cmd {
        AdminCommand::SetPrice { fen } => {
            set(repo::PRICE_FEN, fen)?;
            println!("price_fen = {fen} (live)");
        }
        AdminCommand::SetFreeQuota { n } => {
            set(repo::FREE_DAILY, n)?;
            println!("free_daily = {n} (live)");
        }
        AdminCommand::SetTopups { amounts } => {
            let amounts =
                billing::topups::parse(&amounts).map_err(|e| anyhow::anyhow!("set-topups: {e}"))?;
            let fallback = config.quota.topup_amounts_fen.clone();
            let a = amounts.clone();
            db.write_blocking(move |tx| {
                let before = billing::topups::live(tx, &fallback)?;
                repo::set_topups(tx, &a, now_ms)?;
                let (b, a) = (
                    serde_json::json!({ "topup_amounts_fen": before }).to_string(),
                    serde_json::json!({ "topup_amounts_fen": a }).to_string(),
                );
                db::admins::append_audit(
                    tx,
                    "cli",
                    "settings.set",
                    "topup_amounts_fen",
                    Some(&b),
                    Some(&a),
                    now_ms,
                )
            })
            .map_err(err)?;
            println!("topup_amounts_fen = {amounts:?} (live)");
        }
        AdminCommand::Grant { user, fen, reason } => {
            if fen == 0 {
                anyhow::bail!("--fen must not be 0");
            }
            if reason.trim().is_empty() {
                anyhow::bail!("--reason must not be empty");
            }
            let (uid, why) = (user.clone(), reason.clone());
            let result = db
                .write_blocking(move |tx| {
                    if !db::users::exists(tx, &uid)? {
                        return Ok(None);
                    }
                    let (before, _) = repo::balance(tx, &uid)?;
                    let out = ledger::grant(tx, &uid, fen, &why, now_ms)?;
                    if let Ok(after) = &out {
                        let (b, a) = (
                            serde_json::json!({ "balance_fen": before }).to_string(),
                            serde_json::json!({ "balance_fen": after, "fen": fen, "reason": why })
                                .to_string(),
                        );
                        let action = if fen > 0 { "user.grant" } else { "user.debit" };
                        db::admins::append_audit(
                            tx,
                            "cli",
                            action,
                            &uid,
                            Some(&b),
                            Some(&a),
                            now_ms,
                        )?;
                    }
                    Ok(Some(out))
                })
                .map_err(err)?;
            match result {
                None => anyhow::bail!("no user {user}"),
                Some(Err(i)) => anyhow::bail!(
                    "refused: balance {} fen ({} held by replies in flight) cannot go below zero by {fen}",
                    i.balance_fen,
                    i.held_fen
                ),
                Some(Ok(balance)) => println!("{user}: {fen:+} fen, balance {balance} fen"),
            }
        }
        AdminCommand::User {
            command: UserCommand::Show { user },
        } => {
            if !db::users::exists(&conn, &user).map_err(err)? {
                anyhow::bail!("no user {user}");
            }
            let today = At::new(now, config.quota.offset()).day;
            let q = billing::quota::view(&conn, &user, &today).map_err(err)?;
            let state = repo::quota_state(&conn, &user, &today).map_err(err)?;
            println!("user {user}");
            println!(
                "  free today   {}/{} used ({today})",
                q.free_used_today, q.free_limit
            );
            println!(
                "  balance      {} fen ({} held)",
                state.balance_fen, state.held_fen
            );
            println!("  price        {} fen", q.price_fen);
            let shortfall = ledger::refund_shortfall(&conn, &user).map_err(err)?;
            if shortfall > 0 {
                println!("  refund shortfall {shortfall} fen (refunded after it was spent)");
            }
            println!("  last ledger rows:");
            for r in ledger::ledger_tail(&conn, &user, 10).map_err(err)? {
                println!(
                    "    #{:<6} {}  {:>+8}  -> {:>8}  {:<6} {}",
                    r.id,
                    rfc3339(r.created_at),
                    r.delta_fen,
                    r.balance_after,
                    r.kind,
                    r.reference
                );
            }
        }
        AdminCommand::Backup { to } => {
            drop(pooled);
            if db.backend() == crate::db::Backend::Postgres {
                eprintln!("{}", crate::ops::backup::POSTGRES_BACKUPS);
                return Ok(ExitCode::FAILURE);
            }
            let target = to.to_string_lossy().into_owned();
            let s3 = if target.starts_with("s3://") {
                Some(crate::ops::backup::parse_s3_url(&target).ok_or_else(|| {
                    anyhow::anyhow!("an s3 destination looks like s3://bucket/path/file.db")
                })?)
            } else {
                None
            };
            // An s3:// backup is written locally first, then uploaded.
            let local = match &s3 {
                Some(_) => config.data_dir().join(format!(
                    ".upload-{}",
                    crate::ops::backup::scheduled_name(now)
                )),
                None => to.clone(),
            };
            let mut last = -1;
            let bytes = crate::ops::backup::backup_to(db.path(), &local, |done, total| {
                let pct = if total > 0 { done * 100 / total } else { 100 };
                if pct / 10 != last / 10 {
                    eprintln!("backup: {pct}% ({done}/{total} pages)");
                    last = pct;
                }
            })?;
            if let Some((bucket, key)) = s3 {
                eprintln!("backup: uploading {bytes} bytes to s3://{bucket}/{key}");
                let uploaded = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(crate::ops::backup::upload(
                        &config.storage.s3,
                        &local,
                        &bucket,
                        &key,
                    ));
                let _ = std::fs::remove_file(&local);
                uploaded?;
            }
            println!("backup written to {target} ({bytes} bytes)");
            return Ok(ExitCode::SUCCESS);
        }
        AdminCommand::SetBudget { daily, monthly } => {
            if daily.is_none() && monthly.is_none() {
                anyhow::bail!("give --daily and/or --monthly");
            }
            for (key, value) in [
                (budget::DAILY_BUDGET, daily),
                (budget::MONTHLY_BUDGET, monthly),
            ] {
                let Some(v) = value else { continue };
                if !v.is_finite() || v < 0.0 {
                    anyhow::bail!("budgets are amounts >= 0 (0 = no budget)");
                }
                set(key, budget::to_nanos(v))?;
                println!(
                    "{key} = {} (live)",
                    budget::format_units(budget::to_nanos(v))
                );
            }
        }
        AdminCommand::Usage { days, by, json } => {
            billing::report::print(&conn, config, now, days, by, json).map_err(err)?;
        }
        AdminCommand::Audit => {
            let (checked, mismatches) = ledger::audit(&conn).map_err(err)?;
            // Not a mismatch: money refunded after it was spent, for the
            // operator to settle outside the ledger.
            for (user, fen) in ledger::refund_shortfalls(&conn).map_err(err)? {
                println!("refund shortfall {user}: {fen} fen refunded after it was spent");
            }
            if mismatches.is_empty() {
                println!("audit ok: {checked} balances equal their ledger sums");
            } else {
                for m in &mismatches {
                    println!(
                        "MISMATCH {}: balance {} fen, ledger sum {} fen",
                        m.user_id, m.balance_fen, m.ledger_sum
                    );
                }
                println!(
                    "audit FAILED: {} of {checked} balances differ",
                    mismatches.len()
                );
                return Ok(ExitCode::FAILURE);
            }
        }
        AdminCommand::CreateAdmin { name } => {
            return crate::console::accounts::create(&db, &name, now_ms);
        }
        AdminCommand::ResetAdmin { name } => {
            return crate::console::accounts::reset(&db, &name, now_ms);
        }
        AdminCommand::ListAdmins => {
            return crate::console::accounts::list(&conn);
        }
        AdminCommand::CreateToken { name, label } => {
            return crate::console::accounts::create_token(&db, &name, &label, now_ms);
        }
        AdminCommand::RevokeToken { id } => {
            return crate::console::accounts::revoke_token(&db, id, now_ms);
        }
        AdminCommand::AuditLog { limit } => {
            return crate::console::accounts::audit_log(&conn, limit);
        }
        AdminCommand::Reconcile { older_than_minutes } => {
            drop(pooled);
            let sum = crate::pay::reconcile::run(config, &db, older_than_minutes, now)?;
            if sum.errors > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
