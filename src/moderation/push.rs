//! WeChat's message push (消息推送) as the mini-program's server receives
//! it: the URL check, the signature of every push, the safe mode's
//! encrypted body, and the `wxa_media_check` event.
//!
//! - Every request carries `signature`, `timestamp` and `nonce` in its
//!   query: `signature` = hex SHA-1 of the Token, `timestamp` and `nonce`
//!   sorted as strings and joined. The URL check (GET) adds `echostr`,
//!   answered as given when the signature is right.
//! - Plain mode: the POST body is the event as JSON.
//! - Safe (and compatible) mode: the body carries `Encrypt`, the query
//!   `encrypt_type=aes` and `msg_signature` = hex SHA-1 of Token,
//!   timestamp, nonce and `Encrypt` sorted and joined. `Encrypt` is
//!   base64 of AES-256-CBC (key: the EncodingAESKey base64-decoded, IV:
//!   its first 16 bytes; PKCS#7 padding to 32-byte blocks) over
//!   16 random bytes, the message's length (4 bytes, big-endian), the
//!   message and the AppID.
//!
//! Only the data format JSON is read (the push settings' 数据格式).

use aes::cipher::{BlockDecryptMut, KeyIvInit};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::Deserialize;
use sha1::{Digest, Sha1};

/// The EncodingAESKey is 43 base64 characters of a 32-byte key; WeChat's
/// generated keys need not have zero trailing bits.
const KEY_B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Hex SHA-1 of `parts` sorted as strings and joined: the signature of a
/// push (Token, timestamp, nonce) and, in safe mode, the `msg_signature`
/// (the same plus `Encrypt`).
pub fn signature(parts: &[&str]) -> String {
    let mut sorted = parts.to_vec();
    sorted.sort_unstable();
    let digest = Sha1::digest(sorted.concat().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `given` is the signature of `parts` (compared in constant time;
/// case-insensitive hex).
pub fn verify(given: &str, parts: &[&str]) -> bool {
    let expected = signature(parts);
    let given = given.trim().to_ascii_lowercase();
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The safe mode's key.
#[derive(Clone)]
pub struct AesKey([u8; 32]);

impl std::fmt::Debug for AesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AesKey(…)")
    }
}

/// Why an encrypted push could not be read (safe to log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    #[error("Encrypt is not base64 of whole AES blocks")]
    Encoding,
    #[error("the decrypted message is malformed (wrong key?)")]
    Malformed,
    #[error("the message is for another AppID")]
    OtherApp,
}

impl AesKey {
    /// The 43-character EncodingAESKey; None when it is not one.
    pub fn parse(encoding_aes_key: &str) -> Option<AesKey> {
        let k = encoding_aes_key.trim();
        if k.len() != 43 {
            return None;
        }
        let bytes = KEY_B64.decode(k).ok()?;
        Some(AesKey(bytes.try_into().ok()?))
    }

    /// The message in `encrypt`, which must name `app_id`.
    pub fn decrypt(&self, encrypt: &str, app_id: &str) -> Result<String, DecryptError> {
        let mut buf = STANDARD
            .decode(encrypt.trim())
            .map_err(|_| DecryptError::Encoding)?;
        if buf.is_empty() || buf.len() % 16 != 0 {
            return Err(DecryptError::Encoding);
        }
        let iv: [u8; 16] = self.0[..16].try_into().expect("16 bytes");
        let plain = cbc::Decryptor::<aes::Aes256>::new(&self.0.into(), &iv.into())
            .decrypt_padded_mut::<aes::cipher::block_padding::NoPadding>(&mut buf)
            .map_err(|_| DecryptError::Encoding)?;
        // PKCS#7 to 32-byte blocks: the last byte says how many to drop.
        let pad = usize::from(*plain.last().ok_or(DecryptError::Malformed)?);
        if pad == 0 || pad > 32 || pad > plain.len() {
            return Err(DecryptError::Malformed);
        }
        let content = &plain[..plain.len() - pad];
        if content.len() < 20 {
            return Err(DecryptError::Malformed);
        }
        let len = u32::from_be_bytes(content[16..20].try_into().expect("4 bytes")) as usize;
        let rest = &content[20..];
        if len > rest.len() {
            return Err(DecryptError::Malformed);
        }
        let (msg, app) = rest.split_at(len);
        if app != app_id.as_bytes() {
            return Err(DecryptError::OtherApp);
        }
        String::from_utf8(msg.to_vec()).map_err(|_| DecryptError::Malformed)
    }

    /// What WeChat sends in safe mode (for tests and fakes): `msg` for
    /// `app_id`, with these 16 random bytes first.
    pub fn encrypt(&self, msg: &str, app_id: &str, random: [u8; 16]) -> String {
        use aes::cipher::BlockEncryptMut;
        let mut plain = random.to_vec();
        plain.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        plain.extend_from_slice(msg.as_bytes());
        plain.extend_from_slice(app_id.as_bytes());
        let pad = 32 - plain.len() % 32;
        plain.extend(std::iter::repeat_n(pad as u8, pad));
        let len = plain.len();
        let iv: [u8; 16] = self.0[..16].try_into().expect("16 bytes");
        let out = cbc::Encryptor::<aes::Aes256>::new(&self.0.into(), &iv.into())
            .encrypt_padded_mut::<aes::cipher::block_padding::NoPadding>(&mut plain, len)
            .expect("whole blocks");
        STANDARD.encode(out)
    }
}

/// The fields of a push this server reads; WeChat sends more
/// (`ToUserName`, `FromUserName`, `CreateTime`, `version`, `detail`, …).
#[derive(Debug, Default, Deserialize)]
pub struct Push {
    #[serde(rename = "MsgType")]
    pub msg_type: Option<String>,
    #[serde(rename = "Event")]
    pub event: Option<String>,
    /// Safe mode: the encrypted push.
    #[serde(rename = "Encrypt")]
    pub encrypt: Option<String>,
    pub appid: Option<String>,
    pub trace_id: Option<String>,
    pub result: Option<PushResult>,
    /// A check that failed: an errcode instead of a result.
    pub errcode: Option<i64>,
    pub errmsg: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct PushResult {
    pub suggest: Option<String>,
    /// WeChat sends it as a number or as a string ("100").
    pub label: Option<serde_json::Value>,
}

impl PushResult {
    pub fn label(&self) -> Option<i64> {
        match self.label.as_ref()? {
            serde_json::Value::Number(n) => n.as_i64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

/// The event pushed when a media_check_async check ends.
pub const MEDIA_CHECK_EVENT: &str = "wxa_media_check";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_sha1_of_the_sorted_parts() {
        // The example of WeChat's message push documentation: Token
        // "AAAAA", timestamp 1714036504, nonce 1514711492.
        let sig = signature(&["AAAAA", "1714036504", "1514711492"]);
        assert_eq!(sig, "f464b24fc39322e44b38aa78f5edd27bd1441696");
        assert!(verify(&sig, &["1514711492", "AAAAA", "1714036504"]));
        assert!(verify(
            &sig.to_uppercase(),
            &["AAAAA", "1714036504", "1514711492"]
        ));
        assert!(!verify(&sig, &["AAAAB", "1714036504", "1514711492"]));
        assert!(!verify("", &["AAAAA", "1714036504", "1514711492"]));
        assert!(!verify(&sig[..39], &["AAAAA", "1714036504", "1514711492"]));
    }

    #[test]
    fn safe_mode_round_trip_and_refusals() {
        let key = AesKey::parse("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
        let msg = r#"{"Event":"wxa_media_check","trace_id":"t1"}"#;
        let enc = key.encrypt(msg, "wx-app", [7; 16]);
        assert_eq!(key.decrypt(&enc, "wx-app").unwrap(), msg);
        assert_eq!(key.decrypt(&enc, "wx-other"), Err(DecryptError::OtherApp));
        let other = AesKey::parse("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefg").unwrap();
        assert!(other.decrypt(&enc, "wx-app").is_err());
        assert_eq!(
            key.decrypt("not base64!", "wx-app"),
            Err(DecryptError::Encoding)
        );
        assert_eq!(key.decrypt("AAAA", "wx-app"), Err(DecryptError::Encoding));
        assert!(AesKey::parse("short").is_none());
        assert!(AesKey::parse(&"a".repeat(44)).is_none());
    }

    #[test]
    fn labels_come_as_numbers_or_strings() {
        let p: Push = serde_json::from_str(
            r#"{"Event":"wxa_media_check","trace_id":"t","result":{"suggest":"risky","label":"20002"}}"#,
        )
        .unwrap();
        assert_eq!(p.result.unwrap().label(), Some(20002));
        let p: Push = serde_json::from_str(r#"{"result":{"suggest":"pass","label":100}}"#).unwrap();
        assert_eq!(p.result.unwrap().label(), Some(100));
    }
}
