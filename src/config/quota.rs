use chrono::FixedOffset;
use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    pub free_daily: i64,
    pub price_fen: i64,
    pub timezone: String,
    pub topup_amounts_fen: Vec<i64>,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            free_daily: 20,
            price_fen: 100,
            timezone: "+08:00".into(),
            topup_amounts_fen: vec![600, 1000, 3000],
        }
    }
}

impl QuotaConfig {
    pub fn offset(&self) -> FixedOffset {
        parse_offset(&self.timezone).expect("validated at load")
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.free_daily < 0 {
            return Err(bad("quota.free_daily", "must be >= 0"));
        }
        if self.price_fen < 0 {
            return Err(bad("quota.price_fen", "must be >= 0"));
        }
        parse_offset(&self.timezone)
            .ok_or_else(|| bad("quota.timezone", "must be a UTC offset like \"+08:00\""))?;
        if self.topup_amounts_fen.iter().any(|a| *a <= 0) {
            return Err(bad("quota.topup_amounts_fen", "amounts must be > 0"));
        }
        Ok(())
    }
}

pub fn parse_offset(s: &str) -> Option<FixedOffset> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("utc") || s == "Z" {
        return FixedOffset::east_opt(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    let h: i32 = h.parse().ok()?;
    let m: i32 = m.parse().ok()?;
    if h > 14 || m > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}
