//! Location reports: validation, history, erasure and retention.

pub mod handlers;
pub mod service;
mod validate;
pub mod views;

pub use service::{purge_expired, spawn_retention};
