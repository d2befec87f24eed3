//! LLM providers behind one streaming trait, and the routing table that maps
//! a model name to an ordered list of (provider, provider's model id) with
//! failover before the first token and a circuit breaker per provider.

mod anthropic;
pub mod breaker;
mod echo;
mod openai;
pub mod sse;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use futures_util::stream::{self, Stream, StreamExt};

use crate::billing::types::CallOutcome;
use crate::config::LlmConfig;
use crate::error::{AppError, ErrorCode};

pub use anthropic::AnthropicProvider;
pub use breaker::Breaker;
pub use echo::EchoProvider;
pub use openai::OpenAiProvider;

#[derive(Debug, Clone)]
pub struct ChatMessage {
    pub role: &'static str,
    pub content: String,
    /// Images sent along with `content` (user messages only). Empty for
    /// the text-only path, which then costs nothing extra; shared so that
    /// failover retries do not copy the bytes.
    pub images: Vec<Arc<Image>>,
}

impl ChatMessage {
    pub fn text(role: &'static str, content: String) -> Self {
        Self {
            role,
            content,
            images: vec![],
        }
    }
}

/// An image attachment as providers need it.
#[derive(Debug)]
pub struct Image {
    /// e.g. "image/png"
    pub media_type: String,
    /// A short-lived URL the provider can fetch (S3 presigned GET); None
    /// when the object is only reachable through us (local storage).
    pub url: Option<String>,
    /// The bytes, base64: Anthropic takes nothing else, and it is the
    /// data-URL fallback for OpenAI-compatible APIs.
    pub base64: String,
}

impl Image {
    /// What an OpenAI-compatible `image_url` part points at.
    pub fn openai_url(&self) -> String {
        match &self.url {
            Some(u) => u.clone(),
            None => format!("data:{};base64,{}", self.media_type, self.base64),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LlmRequest {
    /// The provider's own model id.
    pub model: String,
    pub messages: Vec<ChatMessage>,
    /// Reply length cap sent upstream (`llm.max_output_tokens`): the
    /// upstream cost of one message is bounded.
    pub max_tokens: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Text(String),
    /// Token usage as reported by the upstream (either part may be missing).
    Usage {
        prompt_tokens: Option<i64>,
        completion_tokens: Option<i64>,
    },
}

#[derive(Debug, Clone)]
pub enum LlmError {
    Timeout,
    /// Connection failures, 429, 5xx, unusable bodies. `detail` is for logs
    /// (already free of the API key), never for clients.
    Upstream {
        status: Option<u16>,
        detail: String,
        retry_after_secs: Option<u64>,
    },
}

impl LlmError {
    pub fn upstream(status: Option<u16>, detail: impl Into<String>) -> Self {
        LlmError::Upstream {
            status,
            detail: detail.into(),
            retry_after_secs: None,
        }
    }

    /// A 4xx other than 408 and 429: content filtered, context too long,
    /// a bad request. The request's fault, not the provider's: it neither
    /// counts toward the breaker nor fails over.
    pub fn is_request_fault(&self) -> bool {
        matches!(self, LlmError::Upstream { status: Some(s), .. }
            if (400..500).contains(s) && *s != 408 && *s != 429)
    }

    /// What the operator sees of a failed call (stored with it in
    /// `llm_calls.error`): short, without the request, key-like words
    /// redacted.
    pub fn summary(&self) -> String {
        match self {
            LlmError::Timeout => "timed out".into(),
            LlmError::Upstream { status, detail, .. } => short_error(&match status {
                Some(s) => format!("HTTP {s}: {detail}"),
                None => detail.clone(),
            }),
        }
    }

    pub fn to_app_error(&self, provider: &str) -> AppError {
        match self {
            LlmError::Timeout => {
                tracing::warn!(provider, "upstream timed out");
                AppError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    ErrorCode::UpstreamError,
                    "the model did not answer in time; you were not charged",
                )
            }
            LlmError::Upstream { status, detail, .. } => {
                tracing::warn!(provider, status, detail = %detail, "upstream failed");
                let msg = match status {
                    Some(s) => {
                        format!("the model provider failed (HTTP {s}); you were not charged")
                    }
                    None => "the model provider failed; you were not charged".into(),
                };
                AppError::new(StatusCode::BAD_GATEWAY, ErrorCode::UpstreamError, msg)
            }
        }
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, LlmError>> + Send>>;

pub trait Provider: Send + Sync {
    fn name(&self) -> &str;
    /// Starts a streamed completion. Errors before the stream exists are
    /// returned directly; later ones come through the stream.
    fn stream(&self, req: LlmRequest) -> BoxFuture<'_, Result<EventStream, LlmError>>;
}

struct Slot {
    provider: Arc<dyn Provider>,
    /// Config says its models accept images.
    vision: bool,
    breaker: Mutex<Breaker>,
}

/// One step of a route: which provider, asked for which of its model ids.
#[derive(Clone)]
struct Target {
    slot: Arc<Slot>,
    model_id: String,
}

/// The providers that can serve one model, in failover order.
#[derive(Clone)]
pub struct Route {
    model: String,
    targets: Vec<Target>,
    max_tokens: u32,
}

/// An upstream stream that has produced its first token (or ended).
pub struct Opened {
    pub provider: String,
    pub model_id: String,
    pub events: EventStream,
    slot: Arc<Slot>,
    /// When the request that produced this stream was sent.
    pub started: std::time::Instant,
}

/// A provider call that failed before its first token.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub provider: String,
    pub model_id: String,
    pub latency_ms: i64,
    /// `Error` or `Timeout`
    pub outcome: CallOutcome,
    /// [`LlmError::summary`] of the failure.
    pub error: String,
}

/// Longest error text kept with a failed call.
pub const ERROR_TEXT_MAX: usize = 200;

/// An error text fit to store and show an operator: whitespace collapsed,
/// words that look like secrets (`sk-…`, `Bearer …`'s token, long runs of
/// letters and digits) redacted, at most [`ERROR_TEXT_MAX`] characters.
/// Provider errors are already scrubbed of the configured key; this is the
/// second line of defence.
pub fn short_error(text: &str) -> String {
    let secretish = |w: &str| {
        let core = w.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        let lower = core.to_ascii_lowercase();
        let has_digit = core.chars().any(|c| c.is_ascii_digit());
        let has_alpha = core.chars().any(|c| c.is_ascii_alphabetic());
        lower.starts_with("sk-")
            || lower.starts_with("sk_")
            || lower.starts_with("mvp28adm_")
            || (core.len() >= 24
                && has_digit
                && has_alpha
                && core
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.+/=".contains(c)))
    };
    let mut out = String::new();
    let mut after_bearer = false;
    for w in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        if after_bearer || secretish(w) {
            out.push_str("[redacted]");
        } else {
            out.push_str(w);
        }
        after_bearer = w.eq_ignore_ascii_case("bearer");
    }
    if out.chars().count() > ERROR_TEXT_MAX {
        out = out.chars().take(ERROR_TEXT_MAX - 1).collect();
        out.push('…');
    }
    out
}

/// Token counts as the upstream reported them (either may be missing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub prompt: Option<i64>,
    pub completion: Option<i64>,
}

impl Opened {
    /// Reads the stream to its end, handing each text to `on_text`; returns
    /// the usage reported and the error that cut the stream short, if any.
    /// Mid-stream outcomes still feed the breaker (never a failover).
    pub async fn drain(
        &mut self,
        now: impl Fn() -> DateTime<Utc>,
        mut on_text: impl FnMut(&str),
    ) -> (TokenUsage, Option<LlmError>) {
        let mut usage = TokenUsage::default();
        let mut failure = None;
        while let Some(ev) = self.events.next().await {
            match ev {
                Ok(StreamEvent::Text(t)) => on_text(&t),
                Ok(StreamEvent::Usage {
                    prompt_tokens,
                    completion_tokens,
                }) => {
                    usage.prompt = prompt_tokens.or(usage.prompt);
                    usage.completion = completion_tokens.or(usage.completion);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let mut b = self.slot.breaker.lock().expect("breaker lock");
        if failure.is_none() {
            b.on_success();
        } else {
            b.on_failure(now(), None);
        }
        (usage, failure)
    }
}

impl Route {
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Every provider of this route accepts images (so no failover can
    /// send an image to a model that cannot see it).
    pub fn vision(&self) -> bool {
        !self.targets.is_empty() && self.targets.iter().all(|t| t.slot.vision)
    }

    /// Tries each provider in order until one yields a first token. A
    /// provider whose breaker is open is skipped; once a token has arrived
    /// there is no failover.
    pub async fn open(
        &self,
        messages: Vec<ChatMessage>,
        now: impl Fn() -> DateTime<Utc>,
        attempts: &mut Vec<Attempt>,
    ) -> Result<Opened, AppError> {
        let mut last: Option<(String, LlmError)> = None;
        let mut resting: Option<u64> = None;
        for (i, t) in self.targets.iter().enumerate() {
            let name = t.slot.provider.name().to_string();
            let admitted = {
                let mut b = t.slot.breaker.lock().expect("breaker lock");
                // The model's last remaining option (nothing before it could
                // answer) is tried even through an open circuit: a breaker
                // orders failover, it must not turn errors into an outage.
                let is_last = i + 1 == self.targets.len();
                let ok = if is_last {
                    b.try_last(now())
                } else {
                    b.try_acquire(now())
                };
                if !ok {
                    resting = b.resting_for(now()).or(resting);
                }
                ok
            };
            if !admitted {
                tracing::info!(provider = %name, "circuit open: skipped");
                continue;
            }
            let req = LlmRequest {
                model: t.model_id.clone(),
                messages: messages.clone(),
                max_tokens: self.max_tokens,
            };
            let started = std::time::Instant::now();
            match first_token(t.slot.provider.stream(req).await).await {
                Ok(events) => {
                    t.slot.breaker.lock().expect("breaker lock").on_success();
                    return Ok(Opened {
                        provider: name,
                        model_id: t.model_id.clone(),
                        events,
                        slot: t.slot.clone(),
                        started,
                    });
                }
                Err(e) => {
                    attempts.push(Attempt {
                        provider: name.clone(),
                        model_id: t.model_id.clone(),
                        latency_ms: started.elapsed().as_millis() as i64,
                        outcome: if matches!(e, LlmError::Timeout) {
                            CallOutcome::Timeout
                        } else {
                            CallOutcome::Error
                        },
                        error: e.summary(),
                    });
                    if e.is_request_fault() {
                        // The request's fault (filtered, too long, bad):
                        // another provider would refuse it too, and it says
                        // nothing about this one's health.
                        t.slot.breaker.lock().expect("breaker lock").on_neutral();
                        return Err(e.to_app_error(&name));
                    }
                    let retry_after = match &e {
                        LlmError::Upstream {
                            retry_after_secs, ..
                        } => *retry_after_secs,
                        LlmError::Timeout => None,
                    };
                    t.slot
                        .breaker
                        .lock()
                        .expect("breaker lock")
                        .on_failure(now(), retry_after);
                    tracing::warn!(provider = %name, error = ?e, "provider failed before the first token; trying the next");
                    last = Some((name, e));
                }
            }
        }
        Err(match last {
            Some((name, e)) => e.to_app_error(&name),
            None => AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::UpstreamUnavailable,
                "every provider for this model is cooling down after failures; retry shortly",
            )
            .with_retry_after(resting.unwrap_or(5)),
        })
    }
}

/// The provider a config entry describes; None when it has no api_key
/// (disabled).
pub fn provider_from_config(p: &crate::config::ProviderConfig) -> Option<Arc<dyn Provider>> {
    Some(match p.kind.as_str() {
        "echo" => Arc::new(EchoProvider::new(&p.name)),
        _ if p.api_key.is_empty() => return None,
        "anthropic" => Arc::new(AnthropicProvider::new(p)),
        _ => Arc::new(OpenAiProvider::new(p)),
    })
}

/// A probe asks for a word, not a reply: it proves the key and the model.
const PROBE_MAX_TOKENS: u32 = 8;

/// A tiny real completion of `model` (for `mvp28 doctor`): Ok once the
/// first token arrives; the rest of the reply is not waited for.
pub async fn probe(provider: &dyn Provider, model: &str) -> Result<(), LlmError> {
    let req = LlmRequest {
        model: model.to_string(),
        messages: vec![ChatMessage::text("user", "Reply with the word: ok".into())],
        max_tokens: PROBE_MAX_TOKENS,
    };
    first_token(provider.stream(req).await).await.map(drop)
}

/// Waits for the first text and gives back a stream that replays what was
/// read, then continues. A stream that ends without any text is an empty
/// reply: a failure (nothing to store or charge), like any other before the
/// first token. The stream handed back is fused, so nothing downstream can
/// poll an upstream adapter past its end.
async fn first_token(opened: Result<EventStream, LlmError>) -> Result<EventStream, LlmError> {
    let mut events = opened?.fuse();
    let mut head = vec![];
    loop {
        match events.next().await {
            Some(Ok(ev)) => {
                let is_text = matches!(&ev, StreamEvent::Text(t) if !t.is_empty());
                head.push(Ok(ev));
                if is_text {
                    break;
                }
            }
            Some(Err(e)) => return Err(e),
            None => return Err(LlmError::upstream(Some(200), "the reply had no text")),
        }
    }
    Ok(Box::pin(stream::iter(head).chain(events)))
}

/// Which routes serve which model.
#[derive(Clone)]
pub struct Llm {
    routes: Arc<HashMap<String, Route>>,
    default_model: String,
}

impl Llm {
    /// Builds the table; returns warnings worth logging at start (echo in use,
    /// providers skipped for lack of a key).
    pub fn from_config(cfg: &LlmConfig) -> (Llm, Vec<String>) {
        let mut warnings = vec![];
        let mut slots: Vec<(String, Arc<Slot>, Vec<String>)> = vec![];
        let new_slot = |p: Arc<dyn Provider>, vision: bool| {
            Arc::new(Slot {
                provider: p,
                vision,
                breaker: Mutex::new(Breaker::new(
                    cfg.breaker_failures,
                    chrono::Duration::seconds(cfg.breaker_cooldown_secs as i64),
                )),
            })
        };
        for p in &cfg.providers {
            let Some(provider) = provider_from_config(p) else {
                warnings.push(format!(
                    "LLM provider {:?} has no api_key and is disabled",
                    p.name
                ));
                continue;
            };
            slots.push((
                p.name.clone(),
                new_slot(provider, p.vision),
                p.models.clone(),
            ));
        }
        let mut routes: HashMap<String, Route> = HashMap::new();
        if slots.is_empty() {
            warnings.push(
                "no LLM provider is configured: the echo provider answers every model \
                 (set OPENAI_API_KEY or llm.providers[].api_key for real replies)"
                    .into(),
            );
            // Offline echo "sees" images (it ignores them), so attachments
            // can be tried without any credentials.
            let echo = new_slot(Arc::new(EchoProvider::new("echo")), true);
            let mut models = vec![cfg.default_model.clone()];
            models.extend(cfg.providers.iter().flat_map(|p| p.models.clone()));
            models.extend(cfg.routes.iter().map(|r| r.model.clone()));
            for m in models {
                routes.insert(
                    m.clone(),
                    Route {
                        model: m.clone(),
                        targets: vec![Target {
                            slot: echo.clone(),
                            model_id: m,
                        }],
                        max_tokens: cfg.max_output_tokens,
                    },
                );
            }
        } else {
            // Without an explicit route, a model is served by every provider
            // listing it, in config order.
            for (_, slot, models) in &slots {
                for m in models {
                    routes
                        .entry(m.clone())
                        .or_insert_with(|| Route {
                            model: m.clone(),
                            targets: vec![],
                            max_tokens: cfg.max_output_tokens,
                        })
                        .targets
                        .push(Target {
                            slot: slot.clone(),
                            model_id: m.clone(),
                        });
                }
            }
            for r in &cfg.routes {
                let mut targets = vec![];
                for entry in &r.providers {
                    let (name, model_id) = entry.split_once(':').unwrap_or((entry, &r.model));
                    match slots.iter().find(|(n, _, _)| n == name) {
                        Some((_, slot, _)) => targets.push(Target {
                            slot: slot.clone(),
                            model_id: model_id.to_string(),
                        }),
                        None => warnings.push(format!(
                            "route {:?}: provider {name:?} is disabled or unknown; skipped",
                            r.model
                        )),
                    }
                }
                if targets.is_empty() {
                    warnings.push(format!("route {:?} has no usable provider", r.model));
                    continue;
                }
                routes.insert(
                    r.model.clone(),
                    Route {
                        model: r.model.clone(),
                        targets,
                        max_tokens: cfg.max_output_tokens,
                    },
                );
            }
        }
        if !routes.contains_key(&cfg.default_model) {
            warnings.push(format!(
                "llm.default_model {:?} is not served by any provider; requests must name a model",
                cfg.default_model
            ));
        }
        (
            Llm {
                routes: Arc::new(routes),
                default_model: cfg.default_model.clone(),
            },
            warnings,
        )
    }

    /// The route for the requested model, else the default one.
    pub fn resolve(&self, requested: Option<&str>) -> Result<Route, AppError> {
        let model = requested.unwrap_or(&self.default_model);
        match self.routes.get(model) {
            Some(r) => Ok(r.clone()),
            None => {
                let mut known: Vec<&str> = self.routes.keys().map(String::as_str).collect();
                known.sort();
                Err(AppError::invalid_request(format!(
                    "model {model:?} is not offered; available: {}",
                    known.join(", ")
                ))
                .with_code(ErrorCode::UnknownModel))
            }
        }
    }

    /// Every provider in use, once, with the model ids it is asked for and
    /// its circuit breaker's state (the operator console).
    pub fn providers(&self) -> Vec<ProviderStatus> {
        let mut out: Vec<(Arc<Slot>, Vec<String>)> = vec![];
        for route in self.routes.values() {
            for t in &route.targets {
                match out.iter_mut().find(|(s, _)| Arc::ptr_eq(s, &t.slot)) {
                    Some((_, models)) if !models.contains(&t.model_id) => {
                        models.push(t.model_id.clone())
                    }
                    Some(_) => {}
                    None => out.push((t.slot.clone(), vec![t.model_id.clone()])),
                }
            }
        }
        let mut out: Vec<ProviderStatus> = out
            .into_iter()
            .map(|(slot, mut models)| {
                models.sort();
                ProviderStatus {
                    name: slot.provider.name().to_string(),
                    models,
                    breaker: slot.breaker.lock().expect("breaker lock").state(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// One small request straight to the named provider, past its breaker
    /// (which it does not feed): the first token's text, or why it failed.
    /// None when no such provider is in use.
    pub async fn probe(&self, provider: &str) -> Option<Result<String, String>> {
        let target = self
            .routes
            .values()
            .flat_map(|r| r.targets.iter())
            .find(|t| t.slot.provider.name() == provider)?
            .clone();
        let req = LlmRequest {
            model: target.model_id.clone(),
            messages: vec![ChatMessage::text("user", "Reply with one word: ok".into())],
            max_tokens: PROBE_MAX_TOKENS,
        };
        let call = async {
            let mut events = first_token(target.slot.provider.stream(req).await).await?;
            let mut text = String::new();
            while let Some(ev) = events.next().await {
                if let StreamEvent::Text(t) = ev? {
                    text.push_str(&t);
                    break;
                }
            }
            Ok::<_, LlmError>(text)
        };
        Some(
            match tokio::time::timeout(std::time::Duration::from_secs(30), call).await {
                Ok(Ok(text)) => Ok(text),
                Ok(Err(LlmError::Timeout)) | Err(_) => Err("timed out".into()),
                Ok(Err(LlmError::Upstream { status, detail, .. })) => Err(match status {
                    Some(s) => format!("HTTP {s}: {detail}"),
                    None => detail,
                }),
            },
        )
    }
}

/// One provider as the operator console shows it.
#[derive(Debug, Clone)]
pub struct ProviderStatus {
    pub name: String,
    pub models: Vec<String>,
    pub breaker: breaker::State,
}

pub(crate) fn http_client(timeout: std::time::Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(timeout.min(std::time::Duration::from_secs(10)))
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .build()
        .expect("reqwest client")
}

/// Upstream text may quote the key back (OpenAI does): never pass it on.
fn scrub(text: &str, key: &str) -> String {
    let t: String = text.chars().take(300).collect();
    if key.is_empty() {
        t
    } else {
        t.replace(key, "<redacted>")
    }
}

fn transport_error(e: reqwest::Error, key: &str) -> LlmError {
    if e.is_timeout() {
        LlmError::Timeout
    } else {
        LlmError::upstream(None, scrub(&e.without_url().to_string(), key))
    }
}

/// Sends, waiting at most `timeout` for the response head; a non-2xx answer
/// becomes an error carrying its status and Retry-After.
async fn send_with_timeout(
    send: impl Future<Output = Result<reqwest::Response, reqwest::Error>>,
    timeout: std::time::Duration,
    key: &str,
) -> Result<reqwest::Response, LlmError> {
    let res = tokio::time::timeout(timeout, send)
        .await
        .map_err(|_| LlmError::Timeout)?
        .map_err(|e| transport_error(e, key))?;
    let status = res.status();
    if status.is_success() {
        return Ok(res);
    }
    let retry_after_secs = res
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = tokio::time::timeout(timeout, res.bytes())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    Err(LlmError::Upstream {
        status: Some(status.as_u16()),
        detail: scrub(&String::from_utf8_lossy(&body), key),
        retry_after_secs,
    })
}

/// Turns an SSE response into our events. `parse` maps one SSE event to
/// events (Ok(None) marks the normal end). Waiting more than `idle` for the
/// next bytes is a timeout; a body that ends before the end marker is an
/// error, so a cut-off reply is never taken for a complete one.
fn upstream_events(
    res: reqwest::Response,
    idle: std::time::Duration,
    key: String,
    parse: impl Fn(&sse::SseEvent) -> Result<Option<Vec<StreamEvent>>, LlmError> + Send + 'static,
) -> EventStream {
    let body = res
        .bytes_stream()
        .map(move |r| r.map_err(|e| transport_error(e, &key)));
    events_from_body(Box::pin(body), idle, parse)
}

type BodyStream = Pin<Box<dyn Stream<Item = Result<bytes::Bytes, LlmError>> + Send>>;

/// [`upstream_events`] over any byte stream (transport errors already
/// mapped). The result is fused: polling it after its end yields `None`.
fn events_from_body(
    body: BodyStream,
    idle: std::time::Duration,
    parse: impl Fn(&sse::SseEvent) -> Result<Option<Vec<StreamEvent>>, LlmError> + Send + 'static,
) -> EventStream {
    struct St<P> {
        body: BodyStream,
        decoder: sse::SseDecoder,
        pending: std::collections::VecDeque<StreamEvent>,
        finished: bool,
        parse: P,
        idle: std::time::Duration,
    }
    let st = St {
        body,
        decoder: sse::SseDecoder::default(),
        pending: Default::default(),
        finished: false,
        parse,
        idle,
    };
    Box::pin(
        stream::unfold(st, |mut st| async move {
            loop {
                if let Some(ev) = st.pending.pop_front() {
                    return Some((Ok(ev), st));
                }
                if st.finished {
                    return None;
                }
                let chunk = match tokio::time::timeout(st.idle, st.body.next()).await {
                    Err(_) => Err(LlmError::Timeout),
                    Ok(None) => Err(LlmError::upstream(
                        None,
                        "stream ended before its end marker",
                    )),
                    Ok(Some(r)) => r,
                };
                let bytes = match chunk {
                    Ok(b) => b,
                    Err(e) => {
                        st.finished = true;
                        return Some((Err(e), st));
                    }
                };
                for ev in st.decoder.push(&bytes) {
                    match (st.parse)(&ev) {
                        Ok(Some(events)) => st.pending.extend(events),
                        Ok(None) => {
                            st.finished = true;
                            break;
                        }
                        Err(e) => {
                            st.finished = true;
                            st.pending.clear();
                            return Some((Err(e), st));
                        }
                    }
                }
            }
        })
        .fuse(),
    )
}

#[cfg(test)]
mod tests {

    #[test]
    fn error_texts_are_short_and_keep_no_secrets() {
        let e = LlmError::upstream(
            Some(401),
            "{\"error\": {\"message\": \"Incorrect API key provided: sk-live-AbC123. Auth: Bearer abc\ndef\"}}",
        );
        let s = e.summary();
        assert!(s.starts_with("HTTP 401: "), "{s}");
        assert!(
            !s.contains("sk-live") && !s.contains("abc") && !s.contains('\n'),
            "{s}"
        );
        assert_eq!(LlmError::Timeout.summary(), "timed out");
        let long = short_error(&"word ".repeat(100));
        assert_eq!(long.chars().count(), ERROR_TEXT_MAX);
        assert!(long.ends_with('…'));
        assert!(short_error("id 0123456789abcdef0123456789abcdef end").contains("[redacted]"));
        assert_eq!(
            short_error("HTTP 503: Service Unavailable"),
            "HTTP 503: Service Unavailable"
        );
    }

    use super::*;

    /// Wires an OpenAI-compatible upstream might send, good and bad.
    fn wires() -> Vec<String> {
        let role = r#"data: {"choices":[{"delta":{"role":"assistant","content":""}}]}"#;
        let text = |t: &str| format!(r#"data: {{"choices":[{{"delta":{{"content":"{t}"}}}}]}}"#);
        let stop = r#"data: {"choices":[{"delta":{},"finish_reason":"stop"}]}"#;
        let usage = r#"data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#;
        let done = "data: [DONE]";
        let full = [
            role.to_string(),
            text("a"),
            text("b"),
            stop.into(),
            usage.into(),
            done.into(),
        ];
        let mut out = vec![
            String::new(),
            "\n\n".into(),
            format!("{role}\n\n{stop}\n\n{done}\n\n"),
            format!("{done}\n\n{}\n\n", text("late")),
            format!("{usage}\n\n{stop}\n\n{}\n\n{role}\n\n{done}\n\n", text("x")),
            "data: {not json\n\n".into(),
            "data: {\"error\":{\"message\":\"boom\"}}\n\n".into(),
            ": keepalive\n\nevent: ping\n\n".into(),
        ];
        let whole: String = full.iter().map(|l| format!("{l}\n\n")).collect();
        // every truncation of a good reply
        for cut in 0..whole.len() {
            out.push(whole[..cut].to_string());
        }
        out.push(whole);
        out
    }

    async fn run(wire: String, split: usize) {
        let bytes = wire.into_bytes();
        let chunks: Vec<Result<bytes::Bytes, LlmError>> = bytes
            .chunks(split.max(1))
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let body: BodyStream = Box::pin(stream::iter(chunks));
        let events = events_from_body(body, std::time::Duration::from_secs(5), openai::parse_chunk);
        if let Ok(mut s) = first_token(Ok(events)).await {
            while s.next().await.is_some() {}
            // polled again after its end: no panic
            assert!(s.next().await.is_none());
            assert!(s.next().await.is_none());
        }
    }

    #[tokio::test]
    async fn no_upstream_wire_panics_or_hangs_the_adapter() {
        for wire in wires() {
            for split in [1, 3, 7, 64, 4096] {
                tokio::time::timeout(std::time::Duration::from_secs(5), run(wire.clone(), split))
                    .await
                    .expect("the adapter ends");
            }
        }
    }

    #[tokio::test]
    async fn a_reply_without_text_is_an_error() {
        let wire = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\ndata: [DONE]\n\n";
        let body: BodyStream = Box::pin(stream::iter(vec![Ok(bytes::Bytes::from(wire))]));
        let events = events_from_body(body, std::time::Duration::from_secs(5), openai::parse_chunk);
        assert!(first_token(Ok(events)).await.is_err());
    }
}
