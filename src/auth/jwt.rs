//! HS256 session tokens: sub = user id, iat, exp, iss.

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
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: i64,
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
        }
    }

    /// A token for `user_id` and when it expires.
    pub fn issue(&self, user_id: &UserId, now: DateTime<Utc>) -> (String, DateTime<Utc>) {
        let exp = now + chrono::Duration::seconds(self.ttl_secs);
        let claims = Claims {
            sub: user_id.to_string(),
            iat: now.timestamp(),
            exp: exp.timestamp(),
            iss: ISSUER.into(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding cannot fail");
        (token, exp)
    }

    /// The user id of a valid, unexpired token.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<UserId, &'static str> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| "invalid token")?;
        if data.claims.exp <= now.timestamp() {
            return Err("token expired");
        }
        if data.claims.iat > now.timestamp() + 60 {
            return Err("token issued in the future");
        }
        Ok(UserId::from(data.claims.sub))
    }
}
