//! Prefixed, time-ordered public ids (`usr_…`, `ses_…`, `msg_…`) so an id of
//! one kind can never be passed where another is expected unnoticed.

use rand::RngCore;

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

#[cfg(test)]
mod tests {
    #[test]
    fn ids_sort_by_time_and_carry_prefix() {
        let a = super::new_id("usr", 1_000);
        let b = super::new_id("usr", 2_000);
        assert!(a.starts_with("usr_") && a.len() == 30);
        assert!(a < b);
    }
}
