//! HS256 session tokens: sub = user id, iat, exp, iss, and auth_time (when
//! the session began, at login): refresh carries it forward, so a session
//! ends `auth.session_max_days` after its login whatever is refreshed.

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
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

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: i64,
    /// Absolute session lifetime: refresh never extends past login + this.
    session_max_secs: i64,
}

impl JwtKeys {
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        // Only HS256 is accepted: `alg: none` and every other algorithm fail
        // validation, so a token cannot pick its own verification method.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
        validation.leeway = 0;
        // Expiry is checked against our (injectable) clock, not the system's.
        validation.validate_exp = false;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
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
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding cannot fail");
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
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| "invalid token")?;
        if data.claims.exp <= now.timestamp() {
            return Err("token expired");
        }
        if data.claims.iat > now.timestamp() + 60 {
            return Err("token issued in the future");
        }
        Ok(data.claims)
    }
}
