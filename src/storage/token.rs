//! Signed, expiring grants for the local backend's own upload and download
//! routes: `base64url(json) "." base64url(hmac_sha256)`.
//!
//! The MAC key is derived from the JWT secret (HMAC with a fixed label), so
//! a grant can never be replayed as a session token or the other way round,
//! and rotating the JWT secret revokes outstanding grants too.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

const LABEL: &[u8] = b"mvp28/storage/local-url/v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Grant {
    /// PUT exactly this object, at most `size` bytes of `content_type`.
    Put {
        key: String,
        size: u64,
        content_type: String,
        /// Unix seconds (app clock).
        exp: i64,
    },
    /// GET this object, served as `content_type`.
    Get {
        key: String,
        content_type: String,
        exp: i64,
    },
}

impl Grant {
    fn exp(&self) -> i64 {
        match self {
            Grant::Put { exp, .. } | Grant::Get { exp, .. } => *exp,
        }
    }
}

#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    pub fn derive(jwt_secret: &[u8]) -> TokenKey {
        let mut mac = Hmac::<Sha256>::new_from_slice(jwt_secret).expect("any key length");
        mac.update(LABEL);
        TokenKey(mac.finalize().into_bytes().into())
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length")
    }

    pub fn sign(&self, grant: &Grant) -> String {
        let payload = B64.encode(serde_json::to_vec(grant).expect("grant serializes"));
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let tag = B64.encode(mac.finalize().into_bytes());
        format!("{payload}.{tag}")
    }

    /// The grant of an authentic, unexpired token.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<Grant, &'static str> {
        let (payload, tag) = token.split_once('.').ok_or("malformed token")?;
        let tag = B64.decode(tag).map_err(|_| "malformed token")?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&tag).map_err(|_| "invalid signature")?;
        let json = B64.decode(payload).map_err(|_| "malformed token")?;
        let grant: Grant = serde_json::from_slice(&json).map_err(|_| "malformed token")?;
        if grant.exp() <= now_secs {
            return Err("link expired");
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put() -> Grant {
        Grant::Put {
            key: "u/usr_1/2026/11/med_1.png".into(),
            size: 10,
            content_type: "image/png".into(),
            exp: 1000,
        }
    }

    #[test]
    fn round_trip_expiry_and_tampering() {
        let k = TokenKey::derive(b"secret-secret-secret-secret-secret");
        let t = k.sign(&put());
        assert_eq!(k.verify(&t, 999), Ok(put()));
        assert_eq!(k.verify(&t, 1000), Err("link expired"));
        // Another key (another deployment, or a rotated secret) refuses it.
        let other = TokenKey::derive(b"another-secret-another-secret-xx");
        assert!(other.verify(&t, 0).is_err());
        // A changed payload (bigger size) fails the MAC.
        let (_, tag) = t.split_once('.').unwrap();
        let mut bigger = put();
        if let Grant::Put { size, .. } = &mut bigger {
            *size = 10_000;
        }
        let forged_payload = B64.encode(serde_json::to_vec(&bigger).unwrap());
        assert!(k.verify(&format!("{forged_payload}.{tag}"), 0).is_err());
    }

    #[test]
    fn derived_key_is_not_the_jwt_secret() {
        let secret = b"secret-secret-secret-secret-secret";
        assert_ne!(&TokenKey::derive(secret).0[..], &secret[..32]);
    }
}
