//! All integration tests in one binary (one link step).

mod common;
mod fakes;

mod auth;
mod chat;
mod crash;
mod foundation;
mod location;
mod media;
mod openapi;
mod ops;
mod pay;
mod streaming;
mod tls;
mod uploads;
mod usage;
