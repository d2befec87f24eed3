//! The WeChat Pay v3 primitives, all from RustCrypto: RSA PKCS#1 v1.5 with
//! SHA-256 (`SHA256-RSA2048`) for signing and verifying, AES-256-GCM for
//! notification resources. Nothing here is hand-rolled; this module only
//! parses keys and adapts encodings (base64, PEM).

use std::collections::HashMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::distributions::Alphanumeric;
use rand::Rng;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};

/// WeChat Pay sends signatures starting with this to check that merchants
/// really verify them; such a signature must never be accepted.
pub const SIGNTEST_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// The merchant API private key (apiclient_key.pem).
pub struct MerchantKey {
    signing: SigningKey<Sha256>,
}

impl MerchantKey {
    /// Accepts PKCS#8 (`BEGIN PRIVATE KEY`, what the merchant platform
    /// issues) and PKCS#1 (`BEGIN RSA PRIVATE KEY`, what openssl used to write).
    pub fn from_pem(pem: &str) -> Result<MerchantKey, String> {
        let key = RsaPrivateKey::from_pkcs8_pem(pem).or_else(|e8| {
            RsaPrivateKey::from_pkcs1_pem(pem)
                .map_err(|e1| format!("not a PKCS#8 ({e8}) or PKCS#1 ({e1}) RSA private key"))
        })?;
        Ok(MerchantKey {
            signing: SigningKey::<Sha256>::new(key),
        })
    }

    /// Base64 of the RSA-SHA256 (PKCS#1 v1.5) signature of `message`.
    pub fn sign(&self, message: &[u8]) -> String {
        B64.encode(self.signing.sign(message).to_bytes())
    }
}

/// An RSA public key from PEM: SPKI (`BEGIN PUBLIC KEY`, the WeChat Pay
/// public key file) or PKCS#1 (`BEGIN RSA PUBLIC KEY`).
pub fn public_key_from_pem(pem: &str) -> Result<RsaPublicKey, String> {
    RsaPublicKey::from_public_key_pem(pem).or_else(|e8| {
        RsaPublicKey::from_pkcs1_pem(pem)
            .map_err(|e1| format!("not an SPKI ({e8}) or PKCS#1 ({e1}) RSA public key"))
    })
}

/// A WeChat Pay platform certificate (PEM): its serial number as WeChat Pay
/// writes it in Wechatpay-Serial (upper-case hex) and its RSA public key.
pub fn platform_cert_from_pem(
    pem: &str,
) -> Result<(String, RsaPublicKey, chrono::DateTime<chrono::Utc>), String> {
    use x509_cert::der::{DecodePem, Encode};
    let cert = x509_cert::Certificate::from_pem(pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    let tbs = &cert.tbs_certificate;
    let bytes = tbs.serial_number.as_bytes();
    let start = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    let serial: String = bytes[start..].iter().map(|b| format!("{b:02X}")).collect();
    let spki = tbs
        .subject_public_key_info
        .to_der()
        .map_err(|e| format!("unreadable public key: {e}"))?;
    let key =
        RsaPublicKey::from_public_key_der(&spki).map_err(|e| format!("not an RSA key: {e}"))?;
    let not_after = chrono::DateTime::<chrono::Utc>::from(tbs.validity.not_after.to_system_time());
    Ok((serial, key, not_after))
}

/// Why a WeChat Pay signature was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    UnknownSerial(String),
    SignTestProbe,
    BadSignature,
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyError::UnknownSerial(s) => write!(f, "unknown Wechatpay-Serial {s:?}"),
            VerifyError::SignTestProbe => {
                write!(f, "signature probe (WECHATPAY/SIGNTEST/) refused")
            }
            VerifyError::BadSignature => write!(f, "signature does not verify"),
        }
    }
}

/// The WeChat Pay platform keys we trust, by the serial WeChat Pay names
/// in `Wechatpay-Serial`: a public-key id (`PUB_KEY_ID_…`) and/or platform
/// certificate serials. Holding several lets a merchant switch modes
/// without a window where notifications fail.
#[derive(Default, Clone)]
pub struct PlatformKeys {
    keys: HashMap<String, VerifyingKey<Sha256>>,
}

impl PlatformKeys {
    pub fn insert(&mut self, serial: &str, key: RsaPublicKey) {
        self.keys
            .insert(serial.to_string(), VerifyingKey::<Sha256>::new(key));
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn serials(&self) -> Vec<String> {
        let mut s: Vec<String> = self.keys.keys().cloned().collect();
        s.sort();
        s
    }

    /// Verifies base64 `signature` of `message` by the key named `serial`.
    pub fn verify(&self, serial: &str, message: &[u8], signature: &str) -> Result<(), VerifyError> {
        if signature.starts_with(SIGNTEST_PREFIX) {
            return Err(VerifyError::SignTestProbe);
        }
        // Certificate serials are hex; WeChat has sent them in either case.
        let key = self
            .keys
            .get(serial)
            .or_else(|| self.keys.get(&serial.to_ascii_uppercase()))
            .ok_or_else(|| VerifyError::UnknownSerial(serial.chars().take(64).collect()))?;
        let raw = B64
            .decode(signature.trim())
            .map_err(|_| VerifyError::BadSignature)?;
        let sig = Signature::try_from(raw.as_slice()).map_err(|_| VerifyError::BadSignature)?;
        key.verify(message, &sig)
            .map_err(|_| VerifyError::BadSignature)
    }
}

/// The APIv3 key: decrypts notification resources (AEAD_AES_256_GCM).
#[derive(Clone)]
pub struct ApiV3Key {
    cipher: Aes256Gcm,
}

impl ApiV3Key {
    /// The key is used as its 32 bytes of text, as WeChat Pay specifies.
    pub fn new(key: &str) -> Result<ApiV3Key, String> {
        if key.len() != 32 {
            return Err(format!("must be exactly 32 bytes (got {})", key.len()));
        }
        Ok(ApiV3Key {
            cipher: Aes256Gcm::new_from_slice(key.as_bytes()).map_err(|e| e.to_string())?,
        })
    }

    /// Decrypts a base64 `ciphertext` (with its 16-byte tag appended) under
    /// the 12-character `nonce` and `associated_data`.
    pub fn decrypt(
        &self,
        nonce: &str,
        associated_data: &str,
        ciphertext: &str,
    ) -> Result<Vec<u8>, &'static str> {
        let nonce: [u8; 12] = nonce
            .as_bytes()
            .try_into()
            .map_err(|_| "nonce must be 12 bytes")?;
        let ct = B64
            .decode(ciphertext.trim())
            .map_err(|_| "ciphertext is not base64")?;
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &ct,
                    aad: associated_data.as_bytes(),
                },
            )
            .map_err(|_| "ciphertext does not decrypt (wrong key or tampered)")
    }
}

/// A random nonce of `len` ASCII letters and digits.
pub fn nonce_str(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

    #[test]
    fn sign_verify_round_trip_and_refusals() {
        // 1024 bits keeps this unit test quick; production keys are 2048.
        let sk = RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
        let pem = sk.to_pkcs8_pem(LineEnding::LF).unwrap();
        let key = MerchantKey::from_pem(&pem).unwrap();
        let pk_pem = sk
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let mut platform = PlatformKeys::default();
        platform.insert("PUB_KEY_ID_1", public_key_from_pem(&pk_pem).unwrap());
        let sig = key.sign(b"hello\n");
        assert_eq!(platform.verify("PUB_KEY_ID_1", b"hello\n", &sig), Ok(()));
        assert_eq!(
            platform.verify("PUB_KEY_ID_1", b"hellO\n", &sig),
            Err(VerifyError::BadSignature)
        );
        assert!(matches!(
            platform.verify("PUB_KEY_ID_2", b"hello\n", &sig),
            Err(VerifyError::UnknownSerial(_))
        ));
        assert_eq!(
            platform.verify("PUB_KEY_ID_1", b"hello\n", "WECHATPAY/SIGNTEST/abc"),
            Err(VerifyError::SignTestProbe)
        );
        assert!(MerchantKey::from_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )
        .is_err());
    }

    #[test]
    fn aes_gcm_round_trip() {
        let key = "0123456789abcdef0123456789abcdef";
        let cipher = Aes256Gcm::new_from_slice(key.as_bytes()).unwrap();
        let ct = cipher
            .encrypt(
                &Nonce::from(*b"abcdefghijkl"),
                Payload {
                    msg: b"{\"a\":1}",
                    aad: b"transaction",
                },
            )
            .unwrap();
        let k = ApiV3Key::new(key).unwrap();
        let pt = k
            .decrypt("abcdefghijkl", "transaction", &B64.encode(&ct))
            .unwrap();
        assert_eq!(pt, b"{\"a\":1}");
        assert!(k
            .decrypt("abcdefghijkl", "other", &B64.encode(&ct))
            .is_err());
        assert!(ApiV3Key::new("short").is_err());
    }
}
