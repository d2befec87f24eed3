//! What clients see of payments.

use serde::Serialize;
use utoipa::ToSchema;

// WeChat's names, camelCase on the wire.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PayParams {
    pub app_id: String,
    pub time_stamp: String,
    pub nonce_str: String,
    /// `prepay_id=…`
    pub package: String,
    /// `RSA`
    pub sign_type: &'static str,
    pub pay_sign: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutResponse {
    pub out_trade_no: String,
    pub pay_params: PayParams,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderStatus {
    pub out_trade_no: String,
    pub amount_fen: i64,
    /// `pending`, `paid`, `closed` or `failed`
    pub status: String,
    /// RFC 3339 UTC, once paid
    pub paid_at: Option<String>,
}
