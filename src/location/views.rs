//! What clients see of location reports.

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Accepted {
    /// Points stored
    pub accepted: usize,
}

#[derive(Serialize, ToSchema)]
pub struct PointOut {
    pub id: i64,
    pub latitude: f64,
    pub longitude: f64,
    pub accuracy: Option<f64>,
    pub coord_type: &'static str,
    pub recorded_at: String,
    pub created_at: String,
    /// m/s, when the device reported it
    pub speed: Option<f64>,
    /// metres, when the device reported it
    pub altitude: Option<f64>,
    pub vertical_accuracy: Option<f64>,
    pub horizontal_accuracy: Option<f64>,
}

/// Newest first.
#[derive(Serialize, ToSchema)]
pub struct LocationPage {
    pub items: Vec<PointOut>,
    pub next_cursor: Option<String>,
}
