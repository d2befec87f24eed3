//! The WeChat Pay v3 primitives, all from `ring` (the crypto rustls already
//! uses; RustCrypto's `rsa` carries RUSTSEC-2023-0071): RSA PKCS#1 v1.5
//! with SHA-256 (`SHA256-RSA2048`) for signing and verifying, AES-256-GCM
//! for notification resources. Nothing here is hand-rolled; this module only
//! parses keys and adapts encodings (base64, PEM, SPKI -> PKCS#1).

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::distributions::Alphanumeric;
use rand::Rng;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::rand::SystemRandom;
use ring::signature::{
    RsaKeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
};

/// WeChat Pay sends signatures starting with this to check that merchants
/// really verify them; such a signature must never be accepted.
pub const SIGNTEST_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// The DER inside a PEM block labelled `label`, if `pem` holds one.
fn pem_block(pem: &str, label: &str) -> Option<Result<Vec<u8>, String>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    Some(
        B64.decode(b64)
            .map_err(|e| format!("{label}: bad base64: {e}")),
    )
}

/// The merchant API private key (apiclient_key.pem).
pub struct MerchantKey {
    pair: RsaKeyPair,
    rng: SystemRandom,
}

impl MerchantKey {
    /// Accepts PKCS#8 (`BEGIN PRIVATE KEY`, what the merchant platform
    /// issues) and PKCS#1 (`BEGIN RSA PRIVATE KEY`, what openssl used to write).
    pub fn from_pem(pem: &str) -> Result<MerchantKey, String> {
        let pair = if let Some(der) = pem_block(pem, "PRIVATE KEY") {
            RsaKeyPair::from_pkcs8(&der?)
                .map_err(|e| format!("not a PKCS#8 RSA private key: {e}"))?
        } else if let Some(der) = pem_block(pem, "RSA PRIVATE KEY") {
            RsaKeyPair::from_der(&der?).map_err(|e| format!("not a PKCS#1 RSA private key: {e}"))?
        } else {
            return Err("not a PKCS#8 or PKCS#1 RSA private key (PEM)".into());
        };
        Ok(MerchantKey {
            pair,
            rng: SystemRandom::new(),
        })
    }

    /// Base64 of the RSA-SHA256 (PKCS#1 v1.5) signature of `message`.
    pub fn sign(&self, message: &[u8]) -> String {
        let mut sig = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &self.rng, message, &mut sig)
            .expect("RSA signing with a valid key cannot fail");
        B64.encode(sig)
    }
}

/// An RSA public key (PKCS#1 `RSAPublicKey` DER, what ring verifies with).
#[derive(Clone, Debug)]
pub struct RsaPublicKey(Arc<Vec<u8>>);

impl RsaPublicKey {
    fn from_spki_der(der: &[u8]) -> Result<RsaPublicKey, String> {
        use x509_cert::der::Decode;
        let spki = x509_cert::spki::SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| format!("not an SPKI public key: {e}"))?;
        // rsaEncryption
        if spki.algorithm.oid.to_string() != "1.2.840.113549.1.1.1" {
            return Err("not an RSA key".into());
        }
        let bits = spki
            .subject_public_key
            .as_bytes()
            .ok_or("unaligned public key bits")?;
        Ok(RsaPublicKey(Arc::new(bits.to_vec())))
    }
}

/// An RSA public key from PEM: SPKI (`BEGIN PUBLIC KEY`, the WeChat Pay
/// public key file) or PKCS#1 (`BEGIN RSA PUBLIC KEY`).
pub fn public_key_from_pem(pem: &str) -> Result<RsaPublicKey, String> {
    if let Some(der) = pem_block(pem, "PUBLIC KEY") {
        return RsaPublicKey::from_spki_der(&der?);
    }
    if let Some(der) = pem_block(pem, "RSA PUBLIC KEY") {
        return Ok(RsaPublicKey(Arc::new(der?)));
    }
    Err("not an SPKI or PKCS#1 RSA public key (PEM)".into())
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
    let key = RsaPublicKey::from_spki_der(&spki)?;
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
    keys: HashMap<String, RsaPublicKey>,
}

impl PlatformKeys {
    pub fn insert(&mut self, serial: &str, key: RsaPublicKey) {
        self.keys.insert(serial.to_string(), key);
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
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.0.as_slice())
            .verify(message, &raw)
            .map_err(|_| VerifyError::BadSignature)
    }
}

/// The APIv3 key: decrypts notification resources (AEAD_AES_256_GCM).
#[derive(Clone)]
pub struct ApiV3Key {
    cipher: Arc<LessSafeKey>,
}

impl ApiV3Key {
    /// The key is used as its 32 bytes of text, as WeChat Pay specifies.
    pub fn new(key: &str) -> Result<ApiV3Key, String> {
        if key.len() != 32 {
            return Err(format!("must be exactly 32 bytes (got {})", key.len()));
        }
        let key = UnboundKey::new(&AES_256_GCM, key.as_bytes()).map_err(|e| e.to_string())?;
        Ok(ApiV3Key {
            cipher: Arc::new(LessSafeKey::new(key)),
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
        let mut ct = B64
            .decode(ciphertext.trim())
            .map_err(|_| "ciphertext is not base64")?;
        let plain = self
            .cipher
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated_data.as_bytes()),
                &mut ct,
            )
            .map_err(|_| "ciphertext does not decrypt (wrong key or tampered)")?;
        Ok(plain.to_vec())
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
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use aes_gcm::Aes256Gcm;
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    use rsa::RsaPrivateKey;

    #[test]
    fn sign_verify_round_trip_and_refusals() {
        // (test-only keygen; ring takes 2048 bits and up)
        let sk = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
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
                &aes_gcm::Nonce::from(*b"abcdefghijkl"),
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
