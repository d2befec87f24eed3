//! All integration tests in one binary (one link step).

mod common;
mod fakes;

mod auth;
mod browser;
mod chat;
mod console;
mod crash;
mod field;
mod foundation;
mod hardening;
mod location;
mod media;
mod migrate_data;
mod miniprogram;
mod moderation;
mod openapi;
mod ops;
mod pay;
mod pgcluster;
mod postgres;
mod sdk;
mod streaming;
mod tls;
mod uploads;
mod usage;
