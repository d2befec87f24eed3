//! What clients see of accounts and tokens.

use serde::Serialize;
use utoipa::ToSchema;

use crate::billing::QuotaView;
use crate::clock::rfc3339;

#[derive(Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    /// RFC 3339 UTC
    pub created_at: String,
}

impl UserView {
    pub fn of(id: &str, created_at: i64) -> UserView {
        UserView {
            id: id.to_string(),
            created_at: rfc3339(created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    /// The bearer token (a JWT).
    pub token: String,
    /// RFC 3339 UTC
    pub expires_at: String,
    pub user: UserView,
}

#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    pub user: UserView,
    pub quota: QuotaView,
}
