//! HS256 session tokens: sub = user id, iat, exp, iss, and auth_time (when
//! the session began, at login): refresh carries it forward, so a session
//! ends `auth.session_max_days` after its login whatever is refreshed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use chrono::{DateTime, Utc};
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::ids::UserId;

pub const ISSUER: &str = "mvp28";

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    /// When the session began (login). Absent in tokens minted before it
    /// existed: their `iat` stands in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

/// The only header we write and the only algorithm we accept.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
}

/// HS256 (HMAC-SHA256, RFC 7518 §3.2) with `ring`: the one algorithm these
/// tokens use needs no JWT library and no RSA code in the binary.
pub struct JwtKeys {
    key: hmac::Key,
    ttl_secs: i64,
    /// Absolute session lifetime: refresh never extends past login + this.
    session_max_secs: i64,
}

impl JwtKeys {
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            ttl_secs: ttl_secs as i64,
            session_max_secs: i64::MAX / 4,
        }
    }

    /// Sessions end this long after their login (`auth.session_max_days`).
    pub fn with_session_max(mut self, secs: u64) -> Self {
        self.session_max_secs = secs.min(i64::MAX as u64 / 4) as i64;
        self
    }

    /// A token for a new session (a login) of `user_id` and when it expires.
    pub fn issue(&self, user_id: &UserId, now: DateTime<Utc>) -> (String, DateTime<Utc>) {
        self.mint(user_id, now, now.timestamp())
    }

    fn mint(
        &self,
        user_id: &UserId,
        now: DateTime<Utc>,
        auth_time: i64,
    ) -> (String, DateTime<Utc>) {
        let end = auth_time.saturating_add(self.session_max_secs);
        let exp = (now.timestamp() + self.ttl_secs).min(end);
        let claims = Claims {
            sub: user_id.to_string(),
            iat: now.timestamp(),
            exp,
            iss: ISSUER.into(),
            auth_time: Some(auth_time),
        };
        let header = B64URL.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = B64URL.encode(serde_json::to_vec(&claims).expect("claims serialize"));
        let signing_input = format!("{header}.{payload}");
        let sig = B64URL.encode(hmac::sign(&self.key, signing_input.as_bytes()));
        let token = format!("{signing_input}.{sig}");
        (
            token,
            DateTime::from_timestamp(exp, 0).expect("a representable expiry"),
        )
    }

    /// A fresh token for the session of a valid `token`: same login time,
    /// so never valid past login + `auth.session_max_days`.
    pub fn refresh(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<(String, DateTime<Utc>), &'static str> {
        let claims = self.claims(token, now)?;
        let auth_time = claims.auth_time.unwrap_or(claims.iat);
        if now.timestamp() >= auth_time.saturating_add(self.session_max_secs) {
            return Err("session expired (auth.session_max_days); log in again");
        }
        Ok(self.mint(&UserId::from(claims.sub), now, auth_time))
    }

    /// The user id of a valid, unexpired token.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<UserId, &'static str> {
        self.claims(token, now).map(|c| UserId::from(c.sub))
    }

    fn claims(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, &'static str> {
        const INVALID: &str = "invalid token";
        let (signing_input, sig) = token.rsplit_once('.').ok_or(INVALID)?;
        let (header, payload) = signing_input.split_once('.').ok_or(INVALID)?;
        // Only HS256 is accepted: `alg: none` and every other algorithm
        // fail, so a token cannot pick its own verification method.
        let header: JoseHeader = B64URL
            .decode(header)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or(INVALID)?;
        if header.alg != "HS256" {
            return Err(INVALID);
        }
        let sig = B64URL.decode(sig).map_err(|_| INVALID)?;
        hmac::verify(&self.key, signing_input.as_bytes(), &sig).map_err(|_| INVALID)?;
        // sub, iat, exp and iss are required by the type
        let claims: Claims = B64URL
            .decode(payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or(INVALID)?;
        if claims.iss != ISSUER {
            return Err(INVALID);
        }
        if claims.exp <= now.timestamp() {
            return Err("token expired");
        }
        if claims.iat > now.timestamp() + 60 {
            return Err("token issued in the future");
        }
        Ok(claims)
    }
}
