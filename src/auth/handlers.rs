//! POST /api/auth/wechat, POST /api/auth/refresh, GET and DELETE /api/me.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::AuthUser;
use crate::app::AppState;
use crate::clock::{rfc3339, to_ms};
use crate::db;
use crate::error::{ApiJson, AppError, AppResult};
use crate::quota;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/wechat", post(login))
        .route("/api/auth/refresh", post(refresh))
        .route("/api/me", get(me).delete(delete_me))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    code: String,
}

fn token_body(state: &AppState, user_id: &str, created_at: i64) -> Value {
    let (token, exp) = state.jwt().issue(user_id, state.now());
    json!({
        "token": token,
        "expires_at": rfc3339(to_ms(exp)),
        "user": {"id": user_id, "created_at": rfc3339(created_at)},
    })
}

async fn login(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> AppResult<Json<Value>> {
    let code = req.code.trim();
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
    Ok(Json(token_body(&state, &user.id, user.created_at)))
}

async fn refresh(State(state): State<AppState>, user: AuthUser) -> Json<Value> {
    Json(token_body(&state, &user.id, user.created_at))
}

async fn me(State(state): State<AppState>, user: AuthUser) -> AppResult<Json<Value>> {
    let today = state.today();
    let uid = user.id.clone();
    let q = state
        .db()
        .run(move |c| quota::view(c, &uid, &today))
        .await?;
    Ok(Json(json!({
        "user": {"id": user.id, "created_at": rfc3339(user.created_at)},
        "quota": q,
    })))
}

async fn delete_me(State(state): State<AppState>, user: AuthUser) -> AppResult<StatusCode> {
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
    Ok(StatusCode::NO_CONTENT)
}
