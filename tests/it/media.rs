//! Media understanding (docs/media.md): PDF text at commit, chat
//! attachments (PDF text, images for vision models), voice, batch jobs.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;
use crate::fakes::anthropic::FakeAnthropic;
use crate::fakes::openai::FakeOpenAi;
use crate::fakes::s3::FakeS3;

pub const PNG: &[u8] = b"\x89PNG\r\n\x1a\n-image-bytes-for-the-vision-test";

/// A real, minimal PDF (one page) written with lopdf; `text` None draws
/// a line instead, so the page has content but no text layer.
pub fn pdf(text: Option<&str>) -> Vec<u8> {
    use lopdf::content::{Content, Operation};
    use lopdf::{dictionary, Document, Object, Stream};
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
    });
    let resources_id = doc.add_object(dictionary! {
        "Font" => dictionary! { "F1" => font_id },
    });
    let operations = match text {
        Some(t) => vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 24.into()]),
            Operation::new("Td", vec![72.into(), 700.into()]),
            Operation::new("Tj", vec![Object::string_literal(t)]),
            Operation::new("ET", vec![]),
        ],
        None => vec![
            Operation::new("m", vec![72.into(), 72.into()]),
            Operation::new("l", vec![300.into(), 300.into()]),
            Operation::new("S", vec![]),
        ],
    };
    let content = Content { operations };
    let content_id = doc.add_object(Stream::new(dictionary! {}, content.encode().unwrap()));
    let page_id = doc.add_object(dictionary! {
        "Type" => "Page", "Parent" => pages_id, "Contents" => content_id,
    });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => vec![page_id.into()], "Count" => 1,
            "Resources" => resources_id, "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog_id);
    let mut out = vec![];
    doc.save_to(&mut out).unwrap();
    out
}

pub const CORRUPT_PDF: &[u8] =
    b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 9 0 R >> garbage\n%%EOF";

fn reach(app: &TestApp, url: &str) -> String {
    match url.strip_prefix(&app.config.server.public_url) {
        Some(rest) => app.url(rest),
        None => url.to_string(),
    }
}

/// presign -> PUT -> commit; returns the media id.
pub async fn upload(app: &TestApp, token: &str, filename: &str, ct: &str, body: &[u8]) -> String {
    let (s, p) = app
        .post(
            "/api/upload/presign",
            Some(token),
            json!({"filename": filename, "content_type": ct, "size": body.len()}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let res = app
        .client
        .put(reach(app, p["url"].as_str().unwrap()))
        .header("content-type", ct)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "PUT {}", res.status());
    let (s, c) = app
        .post(
            "/api/upload/commit",
            Some(token),
            json!({"upload_id": p["upload_id"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    c["media"]["id"].as_str().unwrap().to_string()
}

pub async fn me(app: &TestApp, token: &str) -> Value {
    let (s, b) = app.get("/api/me", Some(token)).await;
    assert_eq!(s, StatusCode::OK);
    b["quota"].clone()
}

pub async fn texts(app: &TestApp, id: &str) -> mvp28::db::media::MediaTexts {
    let id = mvp28::ids::MediaId::from(id);
    app.state()
        .db()
        .run(move |c| mvp28::db::media::texts(c, &id))
        .await
        .unwrap()
}

async fn openai_app(
    fake: &FakeOpenAi,
    vision: bool,
    f: impl FnOnce(&mut mvp28::config::Config),
) -> TestApp {
    let mut p = fake.provider(5);
    p.vision = vision;
    TestApp::builder()
        .config(|c| {
            c.llm.providers = vec![p];
            f(c);
        })
        .spawn()
        .await
}

fn last_user(body: &Value) -> Value {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .unwrap()["content"]
        .clone()
}

#[tokio::test]
async fn pdf_text_is_extracted_at_commit_and_sent_truncated() {
    let fake = FakeOpenAi::start().await;
    let app = openai_app(&fake, false, |c| c.llm.attachment_chars = 16).await;
    let (token, _) = app.login("alice").await;
    let id = upload(
        &app,
        &token,
        "report.pdf",
        "application/pdf",
        &pdf(Some("Quarterly revenue grew 12 percent")),
    )
    .await;
    let t = texts(&app, &id).await;
    assert_eq!(t.extract_error, None);
    assert!(
        t.extracted_text
            .as_deref()
            .unwrap()
            .contains("Quarterly revenue grew 12 percent"),
        "{t:?}"
    );

    let (s, b) = app
        .post(
            "/api/chat",
            Some(&token),
            json!({"message": "summarize", "attachments": [id]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let sent = last_user(&fake.requests()[0].body);
    let sent = sent.as_str().expect("text-only content stays a string");
    assert!(sent.starts_with("summarize"), "{sent}");
    assert!(sent.contains("[Attached PDF \"report.pdf\"]"), "{sent}");
    assert!(sent.contains("Quarterly revenu\n"), "{sent}");
    assert!(!sent.contains("12 percent"), "not truncated: {sent}");
    assert!(sent.contains("[… truncated]"), "{sent}");

    // The listing shows what the user message carried.
    let session = b["session_id"].as_str().unwrap();
    let (_, list) = app
        .get(&format!("/api/sessions/{session}/messages"), Some(&token))
        .await;
    assert_eq!(
        list["items"][0]["attachments"],
        json!([{"id": id, "content_type": "application/pdf", "filename": "report.pdf"}])
    );
    assert!(list["items"][1].get("attachments").is_none(), "{list}");

    // A later turn names the attachment without re-sending it.
    let (s, b) = app
        .post(
            "/api/chat",
            Some(&token),
            json!({"message": "and?", "session_id": session}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let msgs = fake.requests()[1].body["messages"].clone();
    let first = msgs[0]["content"].as_str().unwrap();
    assert_eq!(
        first,
        "summarize\n[attached earlier: \"report.pdf\" (application/pdf)]"
    );
}

#[tokio::test]
async fn pdf_without_text_or_corrupt_commits_but_cannot_be_attached() {
    let fake = FakeOpenAi::start().await;
    let app = openai_app(&fake, false, |_| {}).await;
    let (token, _) = app.login("alice").await;
    let blank = upload(&app, &token, "scan.pdf", "application/pdf", &pdf(None)).await;
    let broken = upload(&app, &token, "broken.pdf", "application/pdf", CORRUPT_PDF).await;
    let t = texts(&app, &blank).await;
    assert!(
        t.extract_error
            .as_deref()
            .unwrap()
            .contains("no text layer"),
        "{t:?}"
    );
    let t = texts(&app, &broken).await;
    assert!(
        t.extract_error
            .as_deref()
            .unwrap()
            .contains("could not be read"),
        "{t:?}"
    );
    for id in [&blank, &broken] {
        let (s, b) = app
            .post(
                "/api/chat",
                Some(&token),
                json!({"message": "read it", "attachments": [id]}),
            )
            .await;
        let err = assert_error(s, &b, 422, "validation");
        assert_eq!(err["field"], "attachments[0]", "{b}");
    }
    assert_eq!(fake.count(), 0);
    assert_eq!(
        me(&app, &token).await["free_used_today"],
        0,
        "nothing charged"
    );
}

#[tokio::test]
async fn attachments_must_be_the_callers_committed_media() {
    let fake = FakeOpenAi::start().await;
    let app = openai_app(&fake, true, |c| c.llm.max_attachments = 2).await;
    let (alice, _) = app.login("alice").await;
    let (bob, _) = app.login("bob").await;
    let img = upload(&app, &alice, "a.png", "image/png", PNG).await;
    let (s, b) = app
        .post(
            "/api/chat",
            Some(&bob),
            json!({"message": "hi", "attachments": [img]}),
        )
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app
        .post(
            "/api/chat",
            Some(&alice),
            json!({"message": "hi", "attachments": ["med_nope"]}),
        )
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app
        .post(
            "/api/chat",
            Some(&alice),
            json!({"message": "hi", "attachments": [img, img]}),
        )
        .await;
    assert_error(s, &b, 422, "validation");
    let (s, b) = app
        .post(
            "/api/chat",
            Some(&alice),
            json!({"message": "hi", "attachments": ["a", "b", "c"]}),
        )
        .await;
    let err = assert_error(s, &b, 422, "validation");
    assert_eq!(err["field"], "attachments");
    assert_eq!(fake.count(), 0);
}

#[tokio::test]
async fn images_need_a_vision_model_and_are_refused_before_charging() {
    let fake = FakeOpenAi::start().await;
    let app = openai_app(&fake, false, |_| {}).await;
    let (token, _) = app.login("alice").await;
    let img = upload(&app, &token, "cat.png", "image/png", PNG).await;
    let (s, b) = app
        .post(
            "/api/chat",
            Some(&token),
            json!({"message": "what is this?", "attachments": [img]}),
        )
        .await;
    let err = assert_error(s, &b, 422, "validation");
    assert_eq!(err["field"], "attachments[0]");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("does not accept images"),
        "{b}"
    );
    assert_eq!(fake.count(), 0);
    assert_eq!(me(&app, &token).await["free_used_today"], 0);
}

#[tokio::test]
async fn images_go_to_openai_as_data_urls_on_local_storage() {
    use base64::Engine;
    let fake = FakeOpenAi::start().await;
    let app = openai_app(&fake, true, |_| {}).await;
    let (token, _) = app.login("alice").await;
    let img = upload(&app, &token, "cat.png", "image/png", PNG).await;
    let (s, b) = app
        .post(
            "/api/chat",
            Some(&token),
            json!({"message": "what is this?", "attachments": [img]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let parts = last_user(&fake.requests()[0].body);
    let want = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(PNG)
    );
    assert_eq!(
        parts,
        json!([{"type": "text", "text": "what is this?"},
               {"type": "image_url", "image_url": {"url": want}}])
    );
    assert_eq!(me(&app, &token).await["free_used_today"], 1);
}

#[tokio::test]
async fn images_go_to_openai_as_presigned_urls_on_s3() {
    let s3 = FakeS3::start().await;
    let fake = FakeOpenAi::start().await;
    let s3cfg = s3.config();
    let app = openai_app(&fake, true, |c| {
        c.storage.kind = "s3".into();
        c.storage.s3 = s3cfg;
    })
    .await;
    let (token, _) = app.login("alice").await;
    let img = upload(&app, &token, "cat.png", "image/png", PNG).await;
    let (s, b) = app
        .post(
            "/api/chat",
            Some(&token),
            json!({"message": "see", "attachments": [img]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let parts = last_user(&fake.requests()[0].body);
    let url = parts[1]["image_url"]["url"].as_str().unwrap();
    assert!(url.contains("X-Amz-Signature="), "{url}");
    // The URL works without any credentials.
    let got = reqwest::get(url).await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), PNG);
}

#[tokio::test]
async fn images_go_to_anthropic_as_base64_blocks() {
    use base64::Engine;
    let fake = FakeAnthropic::start().await;
    let mut p = fake.provider();
    p.vision = true;
    let app = TestApp::builder()
        .config(|c| {
            c.llm.providers = vec![p];
            c.llm.default_model = "claude-haiku".into();
        })
        .spawn()
        .await;
    let (token, _) = app.login("alice").await;
    let img = upload(&app, &token, "cat.png", "image/png", PNG).await;
    let (s, b) = app
        .post(
            "/api/chat",
            Some(&token),
            json!({"message": "see", "attachments": [img]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let body = &fake.requests()[0].body;
    assert_eq!(
        body["messages"][0]["content"],
        json!([{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                 "data": base64::engine::general_purpose::STANDARD.encode(PNG)}},
               {"type": "text", "text": "see"}])
    );
}

// ------------------------------------------------------------------ voice

use crate::fakes::voice::{FakeVoice, AAI_KEY, MP3, TRANSCRIPT};

const AUDIO: &[u8] = b"ID3\x04\x00-an-uploaded-recording";

async fn voice_app(fake: &FakeVoice, f: impl FnOnce(&mut mvp28::config::Config)) -> TestApp {
    let v = fake.config();
    TestApp::builder()
        .config(|c| {
            c.voice = v;
            f(c);
        })
        .spawn()
        .await
}

#[tokio::test]
async fn voice_without_a_key_is_disabled() {
    let app = TestApp::spawn().await;
    let (token, _) = app.login("alice").await;
    let (s, b) = app
        .post(
            "/api/voice/transcribe",
            Some(&token),
            json!({"media_id": "med_x"}),
        )
        .await;
    assert_error(s, &b, 503, "voice_disabled");
    let (s, b) = app
        .post("/api/voice/speech", Some(&token), json!({"text": "hi"}))
        .await;
    assert_error(s, &b, 503, "voice_disabled");
}

#[tokio::test]
async fn transcription_sends_multipart_charges_once_and_is_stored() {
    let fake = FakeVoice::start().await;
    let app = voice_app(&fake, |_| {}).await;
    let (token, _) = app.login("alice").await;
    let id = upload(&app, &token, "memo.mp3", "audio/mpeg", AUDIO).await;
    let (s, b) = app
        .post(
            "/api/voice/transcribe",
            Some(&token),
            json!({"media_id": id}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["media_id"], id);
    assert_eq!(b["text"], TRANSCRIPT);
    assert_eq!(b["quota"]["free_remaining"], 19);
    let rec = &fake.transcriptions()[0];
    assert_eq!(
        rec.authorization.as_deref(),
        Some("Bearer sk-voice-FAKE-0123")
    );
    let file = &rec.fields["file"];
    assert_eq!(file.data, AUDIO);
    assert_eq!(file.content_type.as_deref(), Some("audio/mpeg"));
    assert!(
        file.filename.as_deref().unwrap().ends_with(".mp3"),
        "{file:?}"
    );
    assert_eq!(rec.fields["model"].data, b"whisper-1");
    assert_eq!(
        texts(&app, &id).await.transcript.as_deref(),
        Some(TRANSCRIPT)
    );

    // Asked again: the stored text, no second upstream call, no charge.
    let (s, b) = app
        .post(
            "/api/voice/transcribe",
            Some(&token),
            json!({"media_id": id}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["text"], TRANSCRIPT);
    assert_eq!(fake.transcriptions().len(), 1);
    assert_eq!(me(&app, &token).await["free_used_today"], 1);

    // A transcribed recording can be attached to a message (echo model).
    let (s, b) = app
        .post(
            "/api/chat",
            Some(&token),
            json!({"message": "reply to this", "attachments": [id]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(
        b["message"]["content"]
            .as_str()
            .unwrap()
            .contains(TRANSCRIPT),
        "{b}"
    );
}

#[tokio::test]
async fn transcription_refusals_and_refund_on_upstream_failure() {
    let fake = FakeVoice::start().await;
    let app = voice_app(&fake, |_| {}).await;
    let (alice, _) = app.login("alice").await;
    let (bob, _) = app.login("bob").await;
    let audio = upload(&app, &alice, "memo.mp3", "audio/mpeg", AUDIO).await;
    let image = upload(&app, &alice, "a.png", "image/png", PNG).await;
    let (s, b) = app
        .post(
            "/api/voice/transcribe",
            Some(&bob),
            json!({"media_id": audio}),
        )
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app
        .post(
            "/api/voice/transcribe",
            Some(&alice),
            json!({"media_id": image}),
        )
        .await;
    let err = assert_error(s, &b, 422, "validation");
    assert_eq!(err["field"], "media_id");
    // Untranscribed audio cannot be attached yet.
    let (s, b) = app
        .post(
            "/api/chat",
            Some(&alice),
            json!({"message": "x", "attachments": [audio]}),
        )
        .await;
    assert_error(s, &b, 422, "validation");

    fake.fail_with(Some(500));
    let (s, b) = app
        .post(
            "/api/voice/transcribe",
            Some(&alice),
            json!({"media_id": audio}),
        )
        .await;
    let err = assert_error(s, &b, 502, "upstream_error");
    assert!(!b.to_string().contains("sk-voice"), "key leaked: {err}");
    assert_eq!(fake.transcriptions().len(), 1);
    assert_eq!(me(&app, &alice).await["free_used_today"], 0, "refunded");
    assert_eq!(texts(&app, &audio).await.transcript, None);

    // voice calls are accounted like model calls, failed ones included
    fake.fail_with(None);
    let (s, _) = app
        .post(
            "/api/voice/transcribe",
            Some(&alice),
            json!({"media_id": audio}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let conn = super::common::TestDb::of(&app);
    let calls: Vec<(String, String)> = conn
        .query_all(
            "SELECT provider, outcome FROM llm_calls ORDER BY id",
            [] as [&dyn mvp28::db::sql::ToValue; 0],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        calls,
        vec![
            ("voice".to_string(), "error".to_string()),
            ("voice".to_string(), "ok".to_string())
        ]
    );
}

#[tokio::test]
async fn voice_quota_is_reserved_before_the_upstream_is_called() {
    let fake = FakeVoice::start().await;
    // Two messages per call, one free message a day, no balance.
    let app = voice_app(&fake, |c| {
        c.voice.cost_messages = 2;
        c.quota.free_daily = 1;
    })
    .await;
    let (token, _) = app.login("alice").await;
    let audio = upload(&app, &token, "memo.mp3", "audio/mpeg", AUDIO).await;
    let (s, b) = app
        .post(
            "/api/voice/transcribe",
            Some(&token),
            json!({"media_id": audio}),
        )
        .await;
    assert_error(s, &b, 402, "quota_exhausted");
    let (s, b) = app
        .post("/api/voice/speech", Some(&token), json!({"text": "hello"}))
        .await;
    assert_error(s, &b, 402, "quota_exhausted");
    assert!(fake.transcriptions().is_empty() && fake.speeches().is_empty());
    // All or nothing: the one free message is still there.
    assert_eq!(me(&app, &token).await["free_used_today"], 0);
}

#[tokio::test]
async fn speech_is_stored_as_the_users_media_and_charged() {
    let fake = FakeVoice::start().await;
    let app = voice_app(&fake, |c| c.quota.free_daily = 0).await;
    let (token, uid) = app.login("alice").await;
    let out = app.cli(&["admin", "grant", "--user", &uid, "--fen", "250"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (s, b) = app
        .post(
            "/api/voice/speech",
            Some(&token),
            json!({"text": "  早上好  ", "voice": "nova"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["media"]["content_type"], "audio/mpeg");
    assert_eq!(b["media"]["size"], MP3.len());
    assert_eq!(b["quota"]["charged_fen"], 100);
    assert_eq!(b["quota"]["balance_fen"], 150);
    let rec = &fake.speeches()[0];
    assert_eq!(
        rec.json,
        json!({"model": "tts-1", "input": "早上好", "voice": "nova", "response_format": "mp3"})
    );
    // Downloadable without a bearer, and an ordinary media record.
    let got = reqwest::get(reach(&app, b["media"]["url"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), MP3);
    let id = b["media"]["id"].as_str().unwrap();
    let (s, m) = app.get(&format!("/api/media/{id}"), Some(&token)).await;
    assert_eq!(s, StatusCode::OK, "{m}");

    // Validation, then an upstream failure: refunded, nothing stored.
    let (s, b) = app
        .post("/api/voice/speech", Some(&token), json!({"text": " "}))
        .await;
    assert_eq!(assert_error(s, &b, 422, "validation")["field"], "text");
    let (s, b) = app
        .post(
            "/api/voice/speech",
            Some(&token),
            json!({"text": "hi", "voice": "../x"}),
        )
        .await;
    assert_eq!(assert_error(s, &b, 422, "validation")["field"], "voice");
    fake.fail_with(Some(503));
    let (s, b) = app
        .post("/api/voice/speech", Some(&token), json!({"text": "again"}))
        .await;
    assert_error(s, &b, 502, "upstream_error");
    assert_eq!(me(&app, &token).await["balance_fen"], 150, "refunded");
    fn files(d: &std::path::Path) -> usize {
        std::fs::read_dir(d).map_or(0, |rd| {
            rd.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        files(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
    }
    let dir = std::path::Path::new(&app.config.storage.local_dir)
        .join("u")
        .join(&uid);
    assert_eq!(files(&dir), 1, "only the first audio is stored");
}

// ------------------------------------------------------------------ batch jobs

use crate::fakes::openai::Behavior;

pub async fn wait_job(app: &TestApp, token: &str, id: &str) -> Value {
    for _ in 0..200 {
        let (s, b) = app.get(&format!("/api/jobs/{id}"), Some(token)).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        if b["state"] == "done" {
            return b;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("job {id} did not finish");
}

#[tokio::test]
async fn extract_text_job_reports_each_file() {
    let fake = FakeOpenAi::start().await;
    let app = openai_app(&fake, false, |_| {}).await;
    let (token, _) = app.login("alice").await;
    let (bob, _) = app.login("bob").await;
    let good = upload(
        &app,
        &token,
        "a.pdf",
        "application/pdf",
        &pdf(Some("Batch text here")),
    )
    .await;
    let bad = upload(&app, &token, "b.pdf", "application/pdf", CORRUPT_PDF).await;
    let img = upload(&app, &token, "c.png", "image/png", PNG).await;

    let (s, b) = app
        .post(
            "/api/files/batch",
            Some(&token),
            json!({"media_ids": [good, bad], "action": "ocr"}),
        )
        .await;
    assert_eq!(assert_error(s, &b, 422, "validation")["field"], "action");
    let (s, b) = app
        .post(
            "/api/files/batch",
            Some(&token),
            json!({"media_ids": [], "action": "extract_text"}),
        )
        .await;
    assert_eq!(assert_error(s, &b, 422, "validation")["field"], "media_ids");
    let (s, b) = app
        .post(
            "/api/files/batch",
            Some(&token),
            json!({"media_ids": [img], "action": "extract_text"}),
        )
        .await;
    assert_eq!(
        assert_error(s, &b, 422, "validation")["field"],
        "media_ids[0]"
    );
    let (s, b) = app
        .post(
            "/api/files/batch",
            Some(&token),
            json!({"media_ids": [img], "action": "describe"}),
        )
        .await;
    assert_eq!(
        assert_error(s, &b, 422, "validation")["field"],
        "action",
        "default model is not vision"
    );
    let (s, b) = app
        .post(
            "/api/files/batch",
            Some(&bob),
            json!({"media_ids": [good], "action": "extract_text"}),
        )
        .await;
    assert_error(s, &b, 404, "not_found");

    let (s, b) = app
        .post(
            "/api/files/batch",
            Some(&token),
            json!({"media_ids": [good, bad], "action": "extract_text"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["progress"]["total"], 2);
    let id = b["id"].as_str().unwrap();
    let (s, b) = app.get(&format!("/api/jobs/{id}"), Some(&bob)).await;
    assert_error(s, &b, 404, "not_found");
    let done = wait_job(&app, &token, id).await;
    assert_eq!(
        done["progress"],
        json!({"total": 2, "pending": 0, "running": 0, "done": 1, "failed": 1})
    );
    assert_eq!(done["items"][0]["media_id"], good);
    assert_eq!(done["items"][0]["result"], "Batch text here");
    assert_eq!(done["items"][1]["state"], "failed");
    assert!(
        done["items"][1]["error"]
            .as_str()
            .unwrap()
            .contains("could not be read"),
        "{done}"
    );
    assert!(done["finished_at"].is_string());
    assert_eq!(fake.count(), 0);
}

#[tokio::test]
async fn describe_job_resumes_after_a_restart() {
    let fake = FakeOpenAi::start().await;
    let mut app = openai_app(&fake, true, |_| {}).await;
    let (token, _) = app.login("alice").await;
    let mut ids = vec![];
    for i in 0..3 {
        ids.push(upload(&app, &token, &format!("{i}.png"), "image/png", PNG).await);
    }
    // Upstream answers its first words, then hangs: items stay running.
    fake.set(Behavior::Gated);
    let (s, b) = app
        .post(
            "/api/files/batch",
            Some(&token),
            json!({"media_ids": ids, "action": "describe"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    for _ in 0..200 {
        if fake.count() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(fake.count(), 2, "at most two items at once");
    let (_, b) = app.get(&format!("/api/jobs/{id}"), Some(&token)).await;
    assert_eq!(b["progress"]["running"], 2, "{b}");
    assert_eq!(b["progress"]["pending"], 1, "{b}");

    // The stop abandons both; the next start re-runs them and the third.
    fake.set(Behavior::Echo);
    app.restart().await;
    let done = wait_job(&app, &token, &id).await;
    assert_eq!(done["progress"]["done"], 3, "{done}");
    for item in done["items"].as_array().unwrap() {
        assert!(
            item["result"]
                .as_str()
                .unwrap()
                .starts_with("reply to: Describe this image"),
            "{item}"
        );
    }
    assert_eq!(fake.count(), 5, "two interrupted calls, then three");
    let sent = &fake.requests()[4].body["messages"][0]["content"];
    assert_eq!(sent[1]["type"], "image_url", "{sent}");
    assert!(texts(&app, &ids[0]).await.description.is_some());
    // Each image costs a message, once, whatever the restart did
    // (docs/media.md); and is recorded as model usage.
    assert_eq!(me(&app, &token).await["free_used_today"], 3);
    let job = id.clone();
    let calls: i64 = app
        .state()
        .db()
        .run(move |c| {
            Ok(c.query_row(
                "SELECT count(*) FROM llm_calls WHERE message_id = ?1 AND outcome = 'ok'",
                [&job],
                |r| r.get(0),
            )?)
        })
        .await
        .unwrap();
    assert_eq!(calls, 3);
}

#[tokio::test]
async fn streamed_chat_takes_attachments_and_refuses_before_the_stream() {
    // No provider configured: the offline echo model, which accepts images.
    let app = TestApp::spawn().await;
    let (token, _) = app.login("alice").await;
    let doc = upload(
        &app,
        &token,
        "s.pdf",
        "application/pdf",
        &pdf(Some("Hello stream")),
    )
    .await;
    let img = upload(&app, &token, "s.png", "image/png", PNG).await;
    let res = app
        .client
        .post(app.url("/api/chat/stream"))
        .bearer_auth(&token)
        .json(&json!({"message": "look", "attachments": [doc, img]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(
        text.contains("event: done") && text.contains("Hello stream"),
        "{text}"
    );

    let res = app
        .client
        .post(app.url("/api/chat/stream"))
        .bearer_auth(&token)
        .json(&json!({"message": "look", "attachments": ["med_missing"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
}

#[tokio::test]
async fn transcription_through_assemblyai_uploads_creates_and_polls() {
    let fake = FakeVoice::start().await;
    let cfg = fake.assemblyai_config();
    let app = TestApp::builder()
        .config(|c| {
            c.voice = cfg;
            c.voice.api_key = String::new(); // TTS off; STT needs only AssemblyAI's key
        })
        .spawn()
        .await;
    let (token, _) = app.login("alice").await;
    let audio = upload(&app, &token, "memo.m4a", "audio/mp4", AUDIO).await;
    let (s, b) = app
        .post("/api/voice/speech", Some(&token), json!({"text": "hi"}))
        .await;
    assert_error(s, &b, 503, "voice_disabled");

    fake.fail_with(Some(500));
    let (s, b) = app
        .post(
            "/api/voice/transcribe",
            Some(&token),
            json!({"media_id": audio}),
        )
        .await;
    assert_error(s, &b, 502, "upstream_error");
    assert_eq!(me(&app, &token).await["free_used_today"], 0, "refunded");

    fake.fail_with(None);
    let (s, b) = app
        .post(
            "/api/voice/transcribe",
            Some(&token),
            json!({"media_id": audio}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["text"], TRANSCRIPT);
    let uploads = fake.uploads();
    assert_eq!(
        uploads.last().unwrap(),
        &(Some(AAI_KEY.to_string()), AUDIO.to_vec())
    );
    let created = &fake.transcripts()[0];
    assert_eq!(created.authorization.as_deref(), Some(AAI_KEY));
    assert_eq!(
        created.json["audio_url"],
        "https://cdn.assemblyai.example/upload/abc"
    );
    assert_eq!(fake.polls(), 2, "polled until completed");
    assert!(fake.transcriptions().is_empty(), "OpenAI endpoint unused");
    assert_eq!(me(&app, &token).await["free_used_today"], 1);
}
