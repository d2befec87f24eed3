//! Prefixed, time-ordered public ids (`usr_…`, `ses_…`, `msg_…`) so an id of
//! one kind can never be passed where another is expected unnoticed.

use crate::db::sql::{FromValue, ToValue, ValueRef};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// 48 bits of milliseconds then 80 random bits, Crockford base32 (26 chars).
pub fn new_id(prefix: &str, now_ms: i64) -> String {
    let mut rnd = [0u8; 10];
    rand::thread_rng().fill_bytes(&mut rnd);
    let mut n: u128 = (now_ms as u128 & 0xFFFF_FFFF_FFFF) << 80;
    for (i, b) in rnd.iter().enumerate() {
        n |= (*b as u128) << (8 * (9 - i));
    }
    let mut out = String::with_capacity(prefix.len() + 27);
    out.push_str(prefix);
    out.push('_');
    for i in (0..26).rev() {
        out.push(ALPHABET[((n >> (5 * i)) & 31) as usize] as char);
    }
    out
}

/// Random URL-safe token of `bytes` random bytes, hex encoded.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// `id_type!(Name, "prefix")`: a public id that cannot be passed where an
/// id of another kind is expected. Serialized, stored and shown as its
/// text; `&Name` reads as `&str` where any text will do (logs, URLs).
macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A fresh id, ordered by `now_ms`.
            pub fn new(now_ms: i64) -> Self {
                Self(new_id($prefix, now_ms))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_string())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl ToValue for $name {
            fn to_value(&self) -> ValueRef<'_> {
                ValueRef::Text(&self.0)
            }
        }

        impl FromValue for $name {
            fn from_value(v: ValueRef<'_>) -> Result<Self, String> {
                String::from_value(v).map(Self)
            }
        }
    };
}

id_type!(
    /// A user (`usr_…`).
    UserId,
    "usr"
);
id_type!(
    /// A conversation (`ses_…`).
    SessionId,
    "ses"
);
id_type!(
    /// A message, the user's or a reply (`msg_…`).
    MessageId,
    "msg"
);
id_type!(
    /// An uploaded or generated file (`med_…`).
    MediaId,
    "med"
);
id_type!(
    /// A batch job (`job_…`).
    JobId,
    "job"
);

#[cfg(test)]
mod tests {
    #[test]
    fn ids_sort_by_time_and_carry_prefix() {
        let a = super::new_id("usr", 1_000);
        let b = super::new_id("usr", 2_000);
        assert!(a.starts_with("usr_") && a.len() == 30);
        assert!(a < b);
    }

    #[test]
    fn typed_ids_read_and_write_as_their_text() {
        let id = super::UserId::new(1_000);
        assert!(id.starts_with("usr_"));
        let json = serde_json::to_value(&id).unwrap();
        assert_eq!(json, serde_json::json!(id.as_str()));
        let back: super::SessionId = serde_json::from_value(serde_json::json!("ses_x")).unwrap();
        assert_eq!(back.as_str(), "ses_x");
        let db = rusqlite::Connection::open_in_memory().unwrap();
        let c = crate::db::sql::Conn::sqlite(&db);
        let read: super::MediaId = c
            .query_row("SELECT ?1", [&super::MediaId::from("med_y")], |r| r.get(0))
            .unwrap();
        assert_eq!(read.as_str(), "med_y");
    }
}
