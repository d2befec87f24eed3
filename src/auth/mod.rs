//! Authentication: login providers, JWT sessions and the `AuthUser` extractor.

pub mod handlers;
pub mod jwt;
pub mod service;
pub mod views;
pub mod wechat;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;

use crate::db;
use crate::error::AppError;
use crate::http::AppState;
use crate::ids::UserId;

/// The bearer token of a request: the Authorization header, else (for
/// clients like wx.connectSocket that cannot set headers) a `token` query
/// parameter when `query` is given.
pub fn bearer_token<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .filter(|t| !t.is_empty())
}

/// The user id of a request whose `Authorization` header token was verified
/// earlier in the same request (by the rate limiter), so the signature is
/// checked once.
#[derive(Clone, Debug)]
pub struct VerifiedHeaderToken(pub UserId);

/// A request from a live user holding a valid token.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: UserId,
    pub created_at: i64,
}

impl AuthUser {
    pub async fn from_token(state: &AppState, token: Option<&str>) -> Result<AuthUser, AppError> {
        let token = token.ok_or_else(|| AppError::unauthorized("missing bearer token"))?;
        let user_id = state
            .jwt()
            .verify(token, state.now())
            .map_err(AppError::unauthorized)?;
        Self::load(state, user_id).await
    }

    /// The live user behind an already verified token.
    async fn load(state: &AppState, user_id: UserId) -> Result<AuthUser, AppError> {
        let user = match state.known_user(&user_id) {
            Some(created_at) => db::users::UserRow {
                id: user_id,
                created_at,
            },
            None => {
                let row = state
                    .db()
                    .run(move |c| db::users::find_active(c, &user_id))
                    .await?
                    .ok_or_else(|| AppError::unauthorized("account no longer exists"))?;
                state.remember_user(&row.id, row.created_at);
                row
            }
        };
        tracing::Span::current().record("user_id", user.id.as_str());
        Ok(AuthUser {
            id: user.id,
            created_at: user.created_at,
        })
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // The rate limiter already verified this request's header token.
        if let Some(VerifiedHeaderToken(user_id)) = parts.extensions.remove::<VerifiedHeaderToken>()
        {
            return AuthUser::load(state, user_id).await;
        }
        AuthUser::from_token(state, bearer_token(&parts.headers, None)).await
    }
}
