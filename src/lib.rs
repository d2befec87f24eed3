//! mvp28: the backend of a WeChat mini-program AI chat product.

pub mod app;
pub mod auth;
pub mod billing;
pub mod chat;
pub mod clock;
pub mod config;
pub mod db;
pub mod error;
pub mod health;
pub mod ids;
pub mod jobs;
pub mod llm;
pub mod location;
pub mod media;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod pagination;
pub mod pay;
pub mod ratelimit;
pub mod storage;
pub mod voice;
