//! mvp28: the backend of a WeChat mini-program AI chat product.

pub mod auth;
pub mod billing;
pub mod chat;
pub mod clock;
pub mod config;
pub mod console;
pub mod db;
pub mod error;
pub mod http;
pub mod ids;
pub mod jobs;
pub mod llm;
pub mod location;
pub mod media;
pub mod moderation;
pub mod ops;
pub mod pay;
pub mod storage;
pub mod tls;
pub mod voice;
