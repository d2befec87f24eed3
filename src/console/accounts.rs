//! The console's accounts from the command line: `mvp28 admin
//! create-admin | reset-admin | list-admins | create-token | revoke-token |
//! audit-log`. Passwords and tokens are printed once and stored hashed.

use crate::db::sql::Conn;
use std::process::ExitCode;

use super::auth;
use crate::clock::rfc3339;
use crate::db::{admins as repo, Db};

fn err(e: crate::error::AppError) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    if !auth::valid_name(name) {
        anyhow::bail!("an admin name is 1-64 letters, digits, '.', '_', '-' or '@'");
    }
    Ok(())
}

pub fn create(db: &Db, name: &str, now: i64) -> anyhow::Result<ExitCode> {
    check_name(name)?;
    let password = auth::new_password();
    let hash = auth::hash_password(&password).map_err(err)?;
    let n = name.to_string();
    let created = db
        .write_blocking(move |tx| {
            let created = repo::create(tx, &n, &hash, now)?;
            if created {
                repo::append_audit(tx, "cli", "admin.create", &n, None, None, now)?;
            }
            Ok(created)
        })
        .map_err(err)?;
    if !created {
        anyhow::bail!("an admin named {name:?} exists already (reset-admin gives a new password)");
    }
    println!("admin {name} created; one-time password (shown once, store it now):");
    println!("{password}");
    Ok(ExitCode::SUCCESS)
}

pub fn reset(db: &Db, name: &str, now: i64) -> anyhow::Result<ExitCode> {
    let password = auth::new_password();
    let hash = auth::hash_password(&password).map_err(err)?;
    let n = name.to_string();
    let done = db
        .write_blocking(move |tx| {
            let done = repo::reset_password(tx, &n, &hash, now)?;
            if done {
                repo::append_audit(tx, "cli", "admin.reset", &n, None, None, now)?;
            }
            Ok(done)
        })
        .map_err(err)?;
    if !done {
        anyhow::bail!("no admin named {name:?}");
    }
    println!("admin {name}: new one-time password (their sessions are ended):");
    println!("{password}");
    Ok(ExitCode::SUCCESS)
}

pub fn list(conn: &Conn) -> anyhow::Result<ExitCode> {
    let rows = repo::list(conn).map_err(err)?;
    if rows.is_empty() {
        println!("no admins yet: mvp28 admin create-admin NAME");
    }
    for (a, tokens) in rows {
        println!(
            "{}\tcreated {}\tlast login {}\t{} API token(s)",
            a.name,
            rfc3339(a.created_at),
            a.last_login_at
                .map(rfc3339)
                .unwrap_or_else(|| "never".into()),
            tokens
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn create_token(db: &Db, name: &str, label: &str, now: i64) -> anyhow::Result<ExitCode> {
    if label.trim().is_empty() || label.len() > 100 {
        anyhow::bail!("--label: 1 to 100 characters");
    }
    let (token, hash) = auth::new_api_token();
    let (n, l) = (name.to_string(), label.to_string());
    let id = db
        .write_blocking(move |tx| {
            let id = repo::insert_token(tx, &n, &hash, &l, now)?;
            if let Some(id) = id {
                repo::append_audit(
                    tx,
                    "cli",
                    "token.create",
                    &n,
                    None,
                    Some(&format!("{{\"token_id\":{id}}}")),
                    now,
                )?;
            }
            Ok(id)
        })
        .map_err(err)?;
    let Some(id) = id else {
        anyhow::bail!("no admin named {name:?}");
    };
    println!("admin API token #{id} for {name} (shown once; send as Authorization: Bearer …):");
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

pub fn revoke_token(db: &Db, id: i64, now: i64) -> anyhow::Result<ExitCode> {
    let done = db
        .write_blocking(move |tx| {
            let done = repo::revoke_token(tx, id, now)?;
            if done {
                repo::append_audit(tx, "cli", "token.revoke", &id.to_string(), None, None, now)?;
            }
            Ok(done)
        })
        .map_err(err)?;
    if !done {
        anyhow::bail!("no live token #{id}");
    }
    println!("token #{id} revoked");
    Ok(ExitCode::SUCCESS)
}

pub fn audit_log(conn: &Conn, limit: u32) -> anyhow::Result<ExitCode> {
    for r in repo::audit_tail(conn, limit).map_err(err)? {
        println!(
            "#{:<6} {}  {:<12} {:<20} {}  {} -> {}",
            r.id,
            rfc3339(r.created_at),
            r.actor,
            r.action,
            r.target,
            r.before.as_deref().unwrap_or("-"),
            r.after.as_deref().unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}
