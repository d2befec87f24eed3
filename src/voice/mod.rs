//! Voice: speech-to-text and text-to-speech through an OpenAI-compatible
//! `/audio/*` API, charged like messages (`voice.cost_messages`) through
//! the same reserve -> call -> settle / release path as chat.

pub mod handlers;
pub mod service;
