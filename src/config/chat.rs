use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};

/// Conversations (docs: README, "Conversation continuity").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChatConfig {
    /// A chat without `session_id` continues the user's latest conversation
    /// when its last message is younger than this; 0: always a new one.
    pub continue_within_minutes: u32,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            continue_within_minutes: 30,
        }
    }
}

/// A week; past that "continue the conversation" means something else.
const MAX_CONTINUE_MINUTES: u32 = 7 * 24 * 60;

impl ChatConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.continue_within_minutes > MAX_CONTINUE_MINUTES {
            return Err(bad(
                "chat.continue_within_minutes",
                format!("must be 0-{MAX_CONTINUE_MINUTES} (0: never continue)"),
            ));
        }
        Ok(())
    }
}
