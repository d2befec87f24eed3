use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Empty: GET /metrics answers loopback clients only. Set: it answers
    /// anyone sending `Authorization: Bearer <token>`.
    pub token: String,
}
