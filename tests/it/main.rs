//! All integration tests in one binary (one link step).

mod common;
mod fakes;

mod auth;
mod chat;
mod foundation;
mod location;
mod uploads;
