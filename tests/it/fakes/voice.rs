//! A fake OpenAI-compatible audio API: POST /v1/audio/transcriptions
//! (multipart, parsed by hand and recorded field by field) and
//! POST /v1/audio/speech (JSON, recorded; answers fake MP3 bytes); and
//! AssemblyAI's POST /v2/upload, POST /v2/transcript, GET /v2/transcript/{id}
//! (answers "processing" once, then "completed").

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

pub const API_KEY: &str = "sk-voice-FAKE-0123";
pub const TRANSCRIPT: &str = "你好, this is the recording";
pub const AAI_KEY: &str = "aai-FAKE-KEY";
pub const MP3: &[u8] = b"ID3\x04\x00fake-mp3-frames";

/// One multipart field: its filename and Content-Type (file parts), and bytes.
#[derive(Clone, Debug)]
pub struct Field {
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub authorization: Option<String>,
    /// Multipart fields by name (transcriptions).
    pub fields: BTreeMap<String, Field>,
    /// JSON body (speech).
    pub json: Value,
}

#[derive(Default)]
struct Inner {
    fail_with: Option<u16>,
    /// How long a transcription takes to answer.
    delay: std::time::Duration,
    transcriptions: Vec<Recorded>,
    speeches: Vec<Recorded>,
    /// AssemblyAI: uploaded bodies, transcript requests, status polls.
    uploads: Vec<(Option<String>, Vec<u8>)>,
    transcripts: Vec<Recorded>,
    polls: usize,
}

#[derive(Clone)]
pub struct FakeVoice {
    pub base_url: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeVoice {
    pub async fn start() -> FakeVoice {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let router = Router::new()
            .route("/v1/audio/transcriptions", post(transcriptions))
            .route("/v1/audio/speech", post(speech))
            .route("/v2/upload", post(aai_upload))
            .route("/v2/transcript", post(aai_create))
            .route("/v2/transcript/{id}", get(aai_poll))
            .with_state(inner.clone());
        let base = super::serve(router).await;
        FakeVoice {
            base_url: format!("{base}/v1"),
            inner,
        }
    }

    /// Every later request answers this status (None: succeed).
    pub fn fail_with(&self, status: Option<u16>) {
        self.inner.lock().unwrap().fail_with = status;
    }

    /// Later transcriptions take this long to answer.
    pub fn set_delay(&self, d: std::time::Duration) {
        self.inner.lock().unwrap().delay = d;
    }

    pub fn transcriptions(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().transcriptions.clone()
    }

    pub fn speeches(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().speeches.clone()
    }

    pub fn uploads(&self) -> Vec<(Option<String>, Vec<u8>)> {
        self.inner.lock().unwrap().uploads.clone()
    }

    pub fn transcripts(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().transcripts.clone()
    }

    pub fn polls(&self) -> usize {
        self.inner.lock().unwrap().polls
    }

    /// Transcription through the AssemblyAI endpoints of this fake.
    pub fn assemblyai_config(&self) -> mvp28::config::VoiceConfig {
        mvp28::config::VoiceConfig {
            stt_provider: "assemblyai".into(),
            assemblyai_base_url: self.base_url.trim_end_matches("/v1").to_string(),
            assemblyai_api_key: AAI_KEY.into(),
            assemblyai_poll_ms: 10,
            ..self.config()
        }
    }

    pub fn config(&self) -> mvp28::config::VoiceConfig {
        mvp28::config::VoiceConfig {
            base_url: self.base_url.clone(),
            api_key: API_KEY.into(),
            timeout_secs: 5,
            ..Default::default()
        }
    }
}

fn auth(h: &HeaderMap) -> Option<String> {
    h.get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// multipart/form-data, parsed by hand (RFC 7578): enough for a test.
fn parse_multipart(content_type: &str, body: &[u8]) -> BTreeMap<String, Field> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .expect("boundary")
        .trim_matches('"');
    let delim = format!("--{boundary}").into_bytes();
    let mut out = BTreeMap::new();
    let mut pos = find(body, &delim, 0).expect("first boundary") + delim.len();
    loop {
        if body[pos..].starts_with(b"--") {
            break; // closing delimiter
        }
        pos += 2; // CRLF after the delimiter
        let head_end = find(body, b"\r\n\r\n", pos).expect("part headers");
        let head = String::from_utf8_lossy(&body[pos..head_end]).to_string();
        let data_start = head_end + 4;
        let next = find(body, &delim, data_start).expect("next boundary");
        let data = body[data_start..next - 2].to_vec(); // minus CRLF
        let mut name = String::new();
        let mut filename = None;
        let mut content_type = None;
        for line in head.split("\r\n") {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("content-disposition:") {
                for p in line.split(';').map(str::trim) {
                    if let Some(v) = p.strip_prefix("name=") {
                        name = v.trim_matches('"').to_string();
                    } else if let Some(v) = p.strip_prefix("filename=") {
                        filename = Some(v.trim_matches('"').to_string());
                    }
                }
            } else if lower.starts_with("content-type:") {
                content_type = Some(line["content-type:".len()..].trim().to_string());
            }
        }
        out.insert(
            name,
            Field {
                filename,
                content_type,
                data,
            },
        );
        pos = next + delim.len();
    }
    out
}

async fn transcriptions(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let fields = parse_multipart(ct, &body);
    let (fail_with, delay) = {
        let mut g = inner.lock().unwrap();
        g.transcriptions.push(Recorded {
            authorization: auth(&headers),
            fields,
            json: Value::Null,
        });
        (g.fail_with, g.delay)
    };
    tokio::time::sleep(delay).await;
    if let Some(code) = fail_with {
        let body = json!({"error": {"message": format!("bad key {API_KEY}")}});
        return (StatusCode::from_u16(code).unwrap(), Json(body)).into_response();
    }
    Json(json!({ "text": TRANSCRIPT })).into_response()
}

async fn speech(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut g = inner.lock().unwrap();
    g.speeches.push(Recorded {
        authorization: auth(&headers),
        fields: BTreeMap::new(),
        json: body,
    });
    if let Some(code) = g.fail_with {
        return (StatusCode::from_u16(code).unwrap(), "upstream down").into_response();
    }
    ([(header::CONTENT_TYPE, "audio/mpeg")], MP3).into_response()
}

async fn aai_upload(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut g = inner.lock().unwrap();
    g.uploads.push((auth(&headers), body.to_vec()));
    if let Some(code) = g.fail_with {
        return (StatusCode::from_u16(code).unwrap(), "down").into_response();
    }
    Json(json!({"upload_url": "https://cdn.assemblyai.example/upload/abc"})).into_response()
}

async fn aai_create(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut g = inner.lock().unwrap();
    g.transcripts.push(Recorded {
        authorization: auth(&headers),
        fields: BTreeMap::new(),
        json: body,
    });
    Json(json!({"id": "tr-123", "status": "queued"})).into_response()
}

async fn aai_poll(State(inner): State<Arc<Mutex<Inner>>>, Path(id): Path<String>) -> Response {
    let mut g = inner.lock().unwrap();
    g.polls += 1;
    if g.polls < 2 {
        return Json(json!({"id": id, "status": "processing"})).into_response();
    }
    Json(json!({"id": id, "status": "completed", "text": TRANSCRIPT})).into_response()
}
