//! Chat: turns, live generations, conversations and their messages, over
//! plain HTTP, Server-Sent Events and WebSocket.

pub mod handlers;
pub mod live;
pub mod service;
pub mod stream;
pub mod types;
pub mod views;
pub mod ws;
