use serde::{Deserialize, Serialize};

use super::{bad, check_url, ConfigError};

/// Speech-to-text and text-to-speech through an OpenAI-compatible
/// `/audio/*` API (docs/media.md). Disabled while `api_key` is empty.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoiceConfig {
    pub base_url: String,
    pub api_key: String,
    pub stt_model: String,
    pub tts_model: String,
    /// TTS voice used when a request names none.
    pub voice: String,
    pub timeout_secs: u64,
    /// Messages of quota one transcription or synthesis costs (0 = free).
    pub cost_messages: u32,
    /// Longest text accepted for speech, in Unicode scalar values.
    pub max_speech_chars: usize,
    /// Who transcribes: "openai" (`{base_url}/audio/transcriptions`) or
    /// "assemblyai" (upload, create transcript, poll).
    pub stt_provider: String,
    pub assemblyai_base_url: String,
    pub assemblyai_api_key: String,
    /// Pause between AssemblyAI status polls.
    pub assemblyai_poll_ms: u64,
}

impl Default for VoiceConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com/v1".into(),
            api_key: String::new(),
            stt_model: "whisper-1".into(),
            tts_model: "tts-1".into(),
            voice: "alloy".into(),
            timeout_secs: 60,
            cost_messages: 1,
            max_speech_chars: 4096,
            stt_provider: "openai".into(),
            assemblyai_base_url: "https://api.assemblyai.com".into(),
            assemblyai_api_key: String::new(),
            assemblyai_poll_ms: 1000,
        }
    }
}

impl VoiceConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_url("voice.base_url", &self.base_url)?;
        check_url("voice.assemblyai_base_url", &self.assemblyai_base_url)?;
        if !matches!(self.stt_provider.as_str(), "openai" | "assemblyai") {
            return Err(bad(
                "voice.stt_provider",
                "must be \"openai\" or \"assemblyai\"",
            ));
        }
        if self.assemblyai_poll_ms == 0 {
            return Err(bad("voice.assemblyai_poll_ms", "must be > 0"));
        }
        if self.timeout_secs == 0 {
            return Err(bad("voice.timeout_secs", "must be > 0"));
        }
        if self.max_speech_chars == 0 {
            return Err(bad("voice.max_speech_chars", "must be > 0"));
        }
        if !self.api_key.is_empty() && (self.stt_model.is_empty() || self.tts_model.is_empty()) {
            return Err(bad(
                "voice.stt_model",
                "stt_model and tts_model must be set",
            ));
        }
        Ok(())
    }
}
