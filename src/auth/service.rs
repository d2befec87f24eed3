//! Login, tokens, the caller's profile, account deletion.

use super::views::{MeResponse, TokenResponse, UserView};
use super::AuthUser;
use crate::billing::quota;
use crate::clock::{rfc3339, to_ms};
use crate::db;
use crate::error::{AppError, AppResult};
use crate::http::AppState;
use crate::ids::UserId;

/// POST /api/auth/wechat: the code's WeChat identity (or the dev login's),
/// the user of that openid (created on first login), a token.
pub async fn login(state: &AppState, code: &str) -> AppResult<TokenResponse> {
    let code = code.trim();
    if code.is_empty() || code.len() > 256 {
        return Err(AppError::validation("code", "must be 1-256 characters"));
    }
    let identity = state.login().identify(code).await?;
    let now = to_ms(state.now());
    let user = state
        .db()
        .write(move |tx| {
            db::users::upsert_by_openid(tx, &identity.openid, identity.unionid.as_deref(), now)
        })
        .await?;
    tracing::info!(user_id = %user.id, "login");
    Ok(token(state, &user.id, user.created_at))
}

/// A fresh token for the user.
pub fn token(state: &AppState, user_id: &UserId, created_at: i64) -> TokenResponse {
    let (token, exp) = state.jwt().issue(user_id, state.now());
    TokenResponse {
        token,
        expires_at: rfc3339(to_ms(exp)),
        user: UserView::of(user_id, created_at),
    }
}

/// POST /api/auth/refresh: a fresh token for the same session, never valid
/// past its login + `auth.session_max_days`.
pub fn refresh(state: &AppState, user: &AuthUser, token: &str) -> AppResult<TokenResponse> {
    let (token, exp) = state
        .jwt()
        .refresh(token, state.now())
        .map_err(AppError::unauthorized)?;
    Ok(TokenResponse {
        token,
        expires_at: rfc3339(to_ms(exp)),
        user: UserView::of(&user.id, user.created_at),
    })
}

/// GET /api/me: the caller and their quota today.
pub async fn me(state: &AppState, user: &AuthUser) -> AppResult<MeResponse> {
    let day = state.at().day;
    let uid = user.id.clone();
    let q = state.db().run(move |c| quota::view(c, &uid, &day)).await?;
    Ok(MeResponse {
        user: UserView::of(&user.id, user.created_at),
        quota: q,
    })
}

/// DELETE /api/me: erases the account's personal data (payments and ledger
/// rows stay, anonymised), then its stored files.
pub async fn delete_account(state: &AppState, user: &AuthUser) -> AppResult<()> {
    let now = to_ms(state.now());
    let uid = user.id.clone();
    let keys = state
        .db()
        .write(move |tx| db::users::delete_account(tx, &uid, now))
        .await?;
    // after the commit, so a request racing the deletion cannot re-add it
    state.forget_user(&user.id);
    state.storage().delete_all(&keys).await;
    tracing::info!(user_id = %user.id, media = keys.len(), "account deleted");
    Ok(())
}
