//! Admin accounts and how a request proves it is an admin.
//!
//! - Passwords: Argon2id PHC strings (`admins.password_hash`), made by the
//!   CLI (`admin create-admin` / `reset-admin` print a one-time password).
//! - Browser sessions: a random token in the `mvp28_admin` cookie
//!   (`HttpOnly; SameSite=Strict; Path=/`, `Secure` under HTTPS), stored as
//!   its SHA-256; idle expiry [`IDLE_SECS`], absolute expiry
//!   [`ABSOLUTE_SECS`]. Every state-changing request on a session must carry
//!   the session's CSRF token in `X-CSRF-Token` (403 `csrf_failed`).
//! - API tokens: `Authorization: Bearer mvp28adm_…` from `admin
//!   create-token`, stored as SHA-256. A bearer header is never a cookie, so
//!   no CSRF token is needed with it.
//!
//! Neither is a mini-program JWT: the admin extractor only looks these up
//! in the admin tables, and the mini-program extractor only verifies JWTs,
//! so neither credential opens the other side.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::clock::to_ms;
use crate::db::admins as repo;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::http::AppState;

pub const COOKIE: &str = "mvp28_admin";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Prefix of admin API tokens (so they are recognisable in a leak scan).
pub const TOKEN_PREFIX: &str = "mvp28adm_";
/// A session unused this long is over.
pub const IDLE_SECS: i64 = 30 * 60;
/// A session is over this long after login, however busy.
pub const ABSOLUTE_SECS: i64 = 12 * 3600;
/// `last_seen_at` is written at most this often per session.
const TOUCH_EVERY_MS: i64 = 60_000;

/// Argon2id with the crate's default parameters (19 MiB, 2 passes).
pub fn hash_password(password: &str) -> AppResult<String> {
    let mut salt = [0u8; 16];
    rand::thread_rng().fill(&mut salt);
    let salt =
        SaltString::encode_b64(&salt).map_err(|e| AppError::internal(anyhow::anyhow!("{e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AppError::internal(anyhow::anyhow!("argon2: {e}")))
}

pub fn verify_password(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A one-time password: 20 characters without look-alikes (~114 bits).
pub fn new_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..20)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

pub fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new API token: (the token, its stored hash).
pub fn new_api_token() -> (String, String) {
    let token = format!("{TOKEN_PREFIX}{}", crate::ids::random_hex(24));
    let hash = sha256_hex(&token);
    (token, hash)
}

/// Admin names: 1–64 letters, digits, `.`, `_`, `-`, `@`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How the admin of a request authenticated.
#[derive(Debug, Clone)]
pub enum Via {
    Session { token_hash: String, csrf: String },
    Token { id: i64 },
}

/// A request from an admin (a session cookie or an admin API token).
#[derive(Debug, Clone)]
pub struct Admin {
    pub id: i64,
    pub name: String,
    pub via: Via,
}

impl Admin {
    /// The session's CSRF token (None for API tokens).
    pub fn csrf(&self) -> Option<&str> {
        match &self.via {
            Via::Session { csrf, .. } => Some(csrf),
            Via::Token { .. } => None,
        }
    }
}

/// The value of the admin session cookie, if the request has one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Whether cookies must be `Secure`: the public URL is HTTPS, or a proxy
/// says the request came over HTTPS.
pub fn secure(state: &AppState, headers: &HeaderMap) -> bool {
    state.config().server.public_url.starts_with("https://")
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

pub fn set_cookie(token: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={ABSOLUTE_SECS}{}",
        if secure { "; Secure" } else { "" }
    )
}

pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

fn unauthorized(msg: &str) -> AppError {
    AppError::unauthorized(msg)
}

/// The admin behind the request's bearer token or session cookie, with
/// CSRF checked for state-changing requests on a session.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
) -> AppResult<Admin> {
    let now = to_ms(state.now());
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let token = v
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or_else(|| unauthorized("malformed Authorization header"))?;
        if !token.starts_with(TOKEN_PREFIX) {
            // e.g. a mini-program user's JWT: never an admin credential
            return Err(unauthorized("not an admin API token"));
        }
        let hash = sha256_hex(token);
        let (id, name, token_id) = state
            .db()
            .run(move |c| repo::find_token(c, &hash))
            .await?
            .ok_or_else(|| unauthorized("unknown or revoked admin API token"))?;
        return Ok(Admin {
            id,
            name,
            via: Via::Token { id: token_id },
        });
    }
    let cookie = session_cookie(headers).ok_or_else(|| unauthorized("not logged in"))?;
    let hash = sha256_hex(cookie);
    let h = hash.clone();
    let s = state
        .db()
        .run(move |c| repo::find_session(c, &h))
        .await?
        .ok_or_else(|| unauthorized("session expired or unknown; log in again"))?;
    if now - s.last_seen_at > IDLE_SECS * 1000 || now - s.created_at > ABSOLUTE_SECS * 1000 {
        let h = hash.clone();
        state
            .db()
            .write(move |tx| repo::delete_session(tx, &h))
            .await?;
        return Err(unauthorized("session expired; log in again"));
    }
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let sent = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !constant_time_eq(sent.as_bytes(), s.csrf_token.as_bytes()) {
            return Err(AppError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::CsrfFailed,
                "missing or wrong X-CSRF-Token for this session",
            ));
        }
    }
    if now - s.last_seen_at >= TOUCH_EVERY_MS {
        let h = hash.clone();
        state
            .db()
            .write(move |tx| repo::touch_session(tx, &h, now))
            .await?;
    }
    Ok(Admin {
        id: s.admin_id,
        name: s.admin_name,
        via: Via::Session {
            token_hash: hash,
            csrf: s.csrf_token,
        },
    })
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let admin = authenticate(state, &parts.headers, &parts.method).await?;
        tracing::Span::current().record("user_id", format!("admin:{}", admin.name));
        Ok(admin)
    }
}

/// A new session for a verified admin: (cookie token, csrf token).
pub async fn start_session(state: &AppState, admin_id: i64) -> AppResult<(String, String)> {
    let token = crate::ids::random_hex(32);
    let csrf = crate::ids::random_hex(16);
    let now = to_ms(state.now());
    let (hash, c) = (sha256_hex(&token), csrf.clone());
    state
        .db()
        .write(move |tx| {
            repo::delete_expired_sessions(tx, now - IDLE_SECS * 1000, now - ABSOLUTE_SECS * 1000)?;
            repo::insert_session(tx, &hash, admin_id, &c, now)?;
            repo::set_last_login(tx, admin_id, now)
        })
        .await?;
    Ok((token, csrf))
}
