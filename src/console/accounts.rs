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

// ------------------------------------------------------ from the console

use serde_json::json;

use super::auth::Admin;
use super::views::{AdminList, AdminView, NewToken, OneTimePassword, TokenView};
use crate::clock::to_ms;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::http::AppState;

/// A password hash off the async threads (Argon2 takes ~50 ms).
async fn hash_off_thread(password: String) -> AppResult<String> {
    tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!("hashing task: {e}")))?
}

fn audit_json(v: serde_json::Value) -> String {
    v.to_string()
}

/// Every admin with their open sessions and API tokens (never a secret).
pub async fn admins(state: &AppState) -> AppResult<AdminList> {
    let (admins, tokens, sessions) = state
        .db()
        .run(|c| Ok((repo::list(c)?, repo::tokens(c)?, repo::session_counts(c)?)))
        .await?;
    Ok(AdminList {
        items: admins
            .into_iter()
            .map(|(a, _)| AdminView {
                sessions: sessions
                    .iter()
                    .find(|(id, _)| *id == a.id)
                    .map(|(_, n)| *n)
                    .unwrap_or(0),
                tokens: tokens
                    .iter()
                    .filter(|t| t.admin_id == a.id)
                    .map(|t| TokenView {
                        id: t.id,
                        label: t.label.clone(),
                        created_at: rfc3339(t.created_at),
                        revoked_at: t.revoked_at.map(rfc3339),
                    })
                    .collect(),
                name: a.name,
                created_at: rfc3339(a.created_at),
                last_login_at: a.last_login_at.map(rfc3339),
            })
            .collect(),
    })
}

/// `create-admin` from the console: the one-time password is in the
/// answer, once; the audit row names the new admin, never the password.
pub async fn create_admin(
    state: &AppState,
    admin: &Admin,
    name: String,
) -> AppResult<OneTimePassword> {
    if !auth::valid_name(&name) {
        return Err(AppError::validation(
            "name",
            "1-64 letters, digits, '.', '_', '-' or '@'",
        ));
    }
    let password = auth::new_password();
    let hash = hash_off_thread(password.clone()).await?;
    let now = to_ms(state.now());
    let (actor, n) = (admin.name.clone(), name.clone());
    state
        .db()
        .write(move |tx| {
            if !repo::create(tx, &n, &hash, now)? {
                return Err(AppError::conflict(format!(
                    "an admin named {n:?} exists already"
                )));
            }
            repo::append_audit(
                tx,
                &actor,
                "admin.create",
                &n,
                None,
                Some(&audit_json(json!({"name": n}))),
                now,
            )
        })
        .await?;
    tracing::info!(admin = %admin.name, created = %name, "admin account created from the console");
    Ok(OneTimePassword { name, password })
}

/// `reset-admin` from the console: a new one-time password, every session
/// of that admin ended. Never the caller's own account: a password the
/// console shows is for handing to someone else, and a stolen session must
/// not be able to lock its owner out (another admin, or the CLI on the
/// server, resets it).
pub async fn reset_admin(
    state: &AppState,
    admin: &Admin,
    name: String,
) -> AppResult<OneTimePassword> {
    if name == admin.name {
        return Err(AppError::new(
            axum::http::StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "an admin cannot reset their own password from the console; another admin can, or `mvp28 admin reset-admin` on the server",
        ));
    }
    let password = auth::new_password();
    let hash = hash_off_thread(password.clone()).await?;
    let now = to_ms(state.now());
    let (actor, n) = (admin.name.clone(), name.clone());
    state
        .db()
        .write(move |tx| {
            let target = repo::find_by_name(tx, &n)?.ok_or_else(|| AppError::not_found("admin"))?;
            let sessions = repo::session_counts(tx)?
                .into_iter()
                .find(|(id, _)| *id == target.id)
                .map(|(_, c)| c)
                .unwrap_or(0);
            repo::reset_password(tx, &n, &hash, now)?;
            repo::append_audit(
                tx,
                &actor,
                "admin.reset",
                &n,
                Some(&audit_json(json!({"sessions": sessions}))),
                Some(&audit_json(json!({"sessions": 0, "password": "new"}))),
                now,
            )
        })
        .await?;
    tracing::info!(admin = %admin.name, reset = %name, "admin password reset from the console");
    Ok(OneTimePassword { name, password })
}

/// `create-token` from the console, for the caller (so the audit trail's
/// "who" of what the token does is the admin who made it).
pub async fn create_api_token(
    state: &AppState,
    admin: &Admin,
    label: String,
) -> AppResult<NewToken> {
    let label = label.trim().to_string();
    if label.is_empty() || label.chars().count() > 100 {
        return Err(AppError::validation("label", "1 to 100 characters"));
    }
    let (token, hash) = auth::new_api_token();
    let now = to_ms(state.now());
    let (actor, l) = (admin.name.clone(), label.clone());
    let id = state
        .db()
        .write(move |tx| {
            let id = repo::insert_token(tx, &actor, &hash, &l, now)?
                .ok_or_else(|| AppError::unauthorized("admin account gone"))?;
            repo::append_audit(
                tx,
                &actor,
                "token.create",
                &actor,
                None,
                Some(&audit_json(json!({"token_id": id, "label": l}))),
                now,
            )?;
            Ok(id)
        })
        .await?;
    tracing::info!(admin = %admin.name, token_id = id, "admin API token created from the console");
    Ok(NewToken {
        id,
        admin: admin.name.clone(),
        label,
        token,
    })
}

/// `revoke-token` from the console: any admin's token, the caller's own
/// included (even the one this request came with: revoking only takes
/// access away).
pub async fn revoke_api_token(state: &AppState, admin: &Admin, id: i64) -> AppResult<()> {
    let now = to_ms(state.now());
    let actor = admin.name.clone();
    state
        .db()
        .write(move |tx| {
            let t = repo::token(tx, id)?.ok_or_else(|| AppError::not_found("token"))?;
            if t.revoked_at.is_some() {
                return Err(AppError::conflict("the token is already revoked"));
            }
            repo::revoke_token(tx, id, now)?;
            repo::append_audit(
                tx,
                &actor,
                "token.revoke",
                &id.to_string(),
                Some(&audit_json(
                    json!({"admin": t.admin_name, "label": t.label, "revoked": false}),
                )),
                Some(&audit_json(json!({"revoked": true}))),
                now,
            )
        })
        .await?;
    tracing::info!(admin = %admin.name, token_id = id, "admin API token revoked from the console");
    Ok(())
}
