//! Chat: turns, conversations and their messages.

pub mod handlers;
pub mod service;
