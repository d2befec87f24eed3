use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub per_user_per_minute: u32,
    pub per_ip_per_minute: u32,
    /// POST /api/auth/* per client IP; stricter because logins cost a WeChat call.
    pub login_per_ip_per_minute: u32,
    /// Location reports have their own per-user bucket so a chatty device
    /// cannot starve chat.
    pub location_per_user_per_minute: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_user_per_minute: 30,
            per_ip_per_minute: 120,
            login_per_ip_per_minute: 10,
            location_per_user_per_minute: 60,
        }
    }
}
