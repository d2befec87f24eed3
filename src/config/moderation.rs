use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};

/// Content security: WeChat's msgSecCheck (v2) on every message in and every
/// reply out (README "Content security"). Off by default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModerationConfig {
    /// On: needs `wechat.app_id` (and its secret) for the access token.
    pub enabled: bool,
    /// msgSecCheck scene: 1 profile, 2 comment, 3 forum, 4 social log.
    pub scene: u8,
    /// What WeChat's `suggest: "review"` means here: "pass" (logged) or "block".
    pub on_review: String,
    /// A streamed reply is checked (and only then sent) at sentence ends, or
    /// every this many characters when no sentence ends.
    pub segment_chars: usize,
    /// WeChat unreachable, busy or rate limited: true lets the text through
    /// (logged, counted); false answers 503 `moderation_unavailable`.
    pub fail_open: bool,
    /// Images (chat attachments, uploads of an image type) too, with
    /// `wxa/media_check_async`; the verdict comes on the message push
    /// callback (`wechat.push_token`). Needs `enabled`.
    pub images: bool,
    /// An image whose verdict has not come this long after its check
    /// started counts as a check that failed: `fail_open` decides.
    pub image_timeout_secs: u64,
}

impl Default for ModerationConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            scene: 2,
            on_review: "pass".into(),
            segment_chars: 200,
            fail_open: false,
            images: false,
            image_timeout_secs: 1800,
        }
    }
}

impl ModerationConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=4).contains(&self.scene) {
            return Err(bad("moderation.scene", "must be 1, 2, 3 or 4"));
        }
        if !matches!(self.on_review.as_str(), "pass" | "block") {
            return Err(bad("moderation.on_review", "must be \"pass\" or \"block\""));
        }
        if self.segment_chars == 0 || self.segment_chars > 2500 {
            return Err(bad("moderation.segment_chars", "must be 1-2500"));
        }
        if self.image_timeout_secs == 0 || self.image_timeout_secs > 86_400 {
            return Err(bad("moderation.image_timeout_secs", "must be 1-86400"));
        }
        Ok(())
    }

    /// `suggest: "review"` is treated as risky.
    pub fn review_blocks(&self) -> bool {
        self.on_review == "block"
    }
}
