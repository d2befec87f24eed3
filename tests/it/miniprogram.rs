//! The mini-program side (issue 17), through HTTP as a WeChat client sends
//! it: wx.getLocation's object, login's extra fields, wx.uploadFile's
//! multipart form, wx.connectSocket to /api/chat/stream, UTF-16 offsets
//! (JavaScript's string.length), and conversation continuity.

use std::time::Duration;

use chrono::Duration as ChronoDuration;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::*;
use crate::fakes::openai::{Behavior, FakeOpenAi};
use crate::fakes::s3::FakeS3;
use crate::streaming::{sse_events, ws_next, ws_send, Ws};

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n-bytes-sent-by-wx.uploadFile";

/// A reply with ASCII, CJK, emoji (astral: two UTF-16 units each) and a
/// flag (two astral scalars), sent to the echo model.
const ASTRAL: &str = "hi 😀 你好 🇨🇳 x𝄞y 👍🏽 end";

fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// The string after `units` UTF-16 code units (a char boundary).
fn after_units(s: &str, units: usize) -> String {
    let v: Vec<u16> = s.encode_utf16().collect();
    String::from_utf16(&v[units..]).expect("a char boundary")
}

// ------------------------------------------------------------ location

#[tokio::test]
async fn location_accepts_wx_get_location_success_object_as_it_is() {
    let app = TestApp::spawn().await;
    let (tok, _) = app.login("geo").await;
    // exactly what wx.getLocation({type: 'wgs84'}) hands its success callback
    let wx = json!({
        "latitude": 39.9087, "longitude": 116.3975, "speed": 1.5,
        "accuracy": 30, "altitude": 43.2, "verticalAccuracy": 5,
        "horizontalAccuracy": 30, "errMsg": "getLocation:ok"
    });
    let (s, b) = app.post("/api/location/report", Some(&tok), wx).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["accepted"], 1);
    // a device that cannot measure speed reports -1: stored as unknown
    let (s, b) = app
        .post(
            "/api/location/report",
            Some(&tok),
            json!({"points": [{"latitude": 1, "longitude": 2, "speed": -1,
                "verticalAccuracy": 0, "horizontalAccuracy": 65, "errMsg": "getLocation:ok"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let (_, page) = app.get("/api/location", Some(&tok)).await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{page}");
    let first = items.iter().find(|p| p["latitude"] == 39.9087).unwrap();
    assert_eq!(
        first["coord_type"], "wgs84",
        "wx.getLocation's default is wgs84"
    );
    assert_eq!(first["speed"], 1.5);
    assert_eq!(first["altitude"], 43.2);
    assert_eq!(first["vertical_accuracy"], 5.0);
    assert_eq!(first["horizontal_accuracy"], 30.0);
    assert_eq!(first["accuracy"], 30.0);
    assert!(first.get("errMsg").is_none() && first.get("err_msg").is_none());
    let second = items.iter().find(|p| p["latitude"] == 1.0).unwrap();
    assert_eq!(second["speed"], Value::Null);
    assert_eq!(second["altitude"], Value::Null);
    assert_eq!(second["vertical_accuracy"], 0.0);

    // any other unknown field is still refused, in a batch too
    let (s, b) = app
        .post(
            "/api/location/report",
            Some(&tok),
            json!({"latitude": 1, "longitude": 2, "heading": 90}),
        )
        .await;
    assert_error(s, &b, 400, "invalid_request");
    let (s, b) = app
        .post(
            "/api/location/report",
            Some(&tok),
            json!({"points": [{"latitude": 1, "longitude": 2, "errMsg": "ok", "foo": 1}]}),
        )
        .await;
    assert_error(s, &b, 400, "invalid_request");
    // the WeChat fields are typed
    let (s, b) = app
        .post(
            "/api/location/report",
            Some(&tok),
            json!({"latitude": 1, "longitude": 2, "altitude": "high"}),
        )
        .await;
    let e = assert_error(s, &b, 422, "validation");
    assert_eq!(e["field"], "altitude");
}

// ------------------------------------------------------------ login

#[tokio::test]
async fn login_accepts_the_fields_wechat_flows_put_beside_the_code() {
    let app = TestApp::spawn().await;
    let (s, b) = app
        .post(
            "/api/auth/wechat",
            None,
            json!({
                "code": "dev:profile",
                "userInfo": {"nickName": "微信用户", "avatarUrl": "https://thirdwx.qlogo.cn/x/132",
                    "gender": 0, "language": "zh_CN", "city": "", "province": "", "country": ""},
                "encryptedData": "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZM==",
                "iv": "r7BXXKkLb8qrSNn05n0qiA==",
                "signature": "75e81ceda165f4ffa64f4068af58c64b8f54b88c",
                "rawData": "{\"nickName\":\"微信用户\"}",
                "cloudID": "12_abc"
            }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, again) = app.login("profile").await;
    assert_eq!(b["user"]["id"], again, "the extras change nothing");
    let (s, b) = app
        .post(
            "/api/auth/wechat",
            None,
            json!({"code": "dev:profile", "nickname": "x"}),
        )
        .await;
    assert_error(s, &b, 400, "invalid_request");
    let (s, b) = app
        .post(
            "/api/auth/wechat",
            None,
            json!({"code": "dev:profile", "userInfo": "not an object"}),
        )
        .await;
    assert_error(s, &b, 422, "validation");
}

// ------------------------------------------------------------ uploads

/// Local URLs are built on `server.public_url`; point them at the test server.
fn reach(app: &TestApp, url: &str) -> String {
    match url.strip_prefix(&app.config.server.public_url) {
        Some(rest) => app.url(rest),
        None => url.to_string(),
    }
}

/// A form as wx.uploadFile sends it: formData fields, then the file.
fn wx_form(
    name: &str,
    filename: &str,
    content_type: Option<&str>,
    bytes: &[u8],
) -> reqwest::multipart::Form {
    let mut part = reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(filename.to_string());
    if let Some(ct) = content_type {
        part = part.mime_str(ct).unwrap();
    }
    reqwest::multipart::Form::new()
        .text("purpose", "avatar")
        .text("note", "from wx.uploadFile formData")
        .part(name.to_string(), part)
}

async fn upload(app: &TestApp, token: &str, form: reqwest::multipart::Form) -> (StatusCode, Value) {
    app.send(
        app.client.post(app.url("/api/upload")).multipart(form),
        Some(token),
    )
    .await
}

async fn check_upload_round_trip(app: &TestApp, token: &str) {
    let (s, b) = upload(
        app,
        token,
        wx_form("file", "tmp_1234.png", Some("image/png"), PNG),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let media = &b["media"];
    assert_eq!(media["content_type"], "image/png");
    assert_eq!(media["size"], PNG.len());
    assert!(b["url_expires_at"].is_string(), "{b}");
    // the same view as commit and GET /api/media/{id}
    let (s, again) = app
        .get(
            &format!("/api/media/{}", media["id"].as_str().unwrap()),
            Some(token),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["media"]["size"], media["size"]);
    let url = reach(app, media["url"].as_str().unwrap());
    let got = app.client.get(url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), PNG);
}

#[tokio::test]
async fn multipart_upload_as_wx_upload_file_sends_it_local() {
    let app = TestApp::builder()
        .config(|c| c.storage.max_upload_bytes = 4 * 1024 * 1024)
        .spawn()
        .await;
    let (token, _) = app.login("uploader").await;
    check_upload_round_trip(&app, &token).await;

    // devices that send application/octet-stream: the type comes from the name
    let (s, b) = upload(
        &app,
        &token,
        wx_form(
            "file",
            "wxfile://tmp_abc.JPG",
            Some("application/octet-stream"),
            b"\xff\xd8\xff-jpeg",
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["media"]["content_type"], "image/jpeg");

    // typed like a presign
    let (s, b) = upload(
        &app,
        &token,
        wx_form("file", "run.sh", Some("text/x-sh"), b"echo"),
    )
    .await;
    assert_error(s, &b, 415, "unsupported_media_type");
    let (s, b) = upload(
        &app,
        &token,
        wx_form("file", "a.png", Some("image/png"), b""),
    )
    .await;
    let e = assert_error(s, &b, 422, "validation");
    assert_eq!(e["field"], "file");
    // no part named file
    let (s, b) = upload(
        &app,
        &token,
        wx_form("photo", "a.png", Some("image/png"), PNG),
    )
    .await;
    let e = assert_error(s, &b, 422, "validation");
    assert_eq!(e["field"], "file");
    // not multipart at all
    let (s, b) = app
        .post("/api/upload", Some(&token), json!({"file": "x"}))
        .await;
    assert_error(s, &b, 415, "unsupported_media_type");
    // no token
    let (s, b) = app
        .send(
            app.client.post(app.url("/api/upload")).multipart(wx_form(
                "file",
                "a.png",
                Some("image/png"),
                PNG,
            )),
            None,
        )
        .await;
    assert_error(s, &b, 401, "unauthorized");

    // cut off at storage.max_upload_bytes (past the axum 2 MB default), and
    // nothing is kept
    let max = 4 * 1024 * 1024;
    let exact = vec![7u8; max];
    let (s, b) = upload(
        &app,
        &token,
        wx_form("file", "big.pdf", Some("application/pdf"), &exact),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "exactly the limit is accepted: {b}");
    let over = vec![7u8; max + 1];
    let (s, b) = upload(
        &app,
        &token,
        wx_form("file", "big.pdf", Some("application/pdf"), &over),
    )
    .await;
    assert_error(s, &b, 413, "payload_too_large");
    let huge = vec![7u8; max + 200 * 1024];
    let (s, b) = upload(
        &app,
        &token,
        wx_form("file", "big.pdf", Some("application/pdf"), &huge),
    )
    .await;
    assert_error(s, &b, 413, "payload_too_large");
    let conn = super::common::TestDb::of(&app);
    let n: i64 = conn
        .query_row("SELECT count(*) FROM media", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3, "png, jpeg, the exact-limit pdf");
    let files = walk(std::path::Path::new(&app.config.storage.local_dir));
    assert_eq!(files, 3, "no partial objects left behind");
}

fn walk(dir: &std::path::Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk(&p)
            } else {
                usize::from(
                    !p.to_string_lossy().contains("staging") && !p.to_string_lossy().contains("#"),
                )
            }
        })
        .sum()
}

#[tokio::test]
async fn multipart_upload_to_s3() {
    let fake = FakeS3::start().await;
    let s3 = fake.config();
    let app = TestApp::builder()
        .config(|c| {
            c.storage.kind = "s3".into();
            c.storage.s3 = s3;
        })
        .spawn()
        .await;
    let (token, _) = app.login("s3uploader").await;
    check_upload_round_trip(&app, &token).await;
    // larger than one S3 part (5 MiB): a real multipart upload
    let big: Vec<u8> = (0..6 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    let (s, b) = upload(
        &app,
        &token,
        wx_form("file", "doc.pdf", Some("application/pdf"), &big),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["media"]["size"], big.len());
    let got = app
        .client
        .get(b["media"]["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.unwrap().as_ref() == big.as_slice());
}

// ------------------------------------------------------------ streaming

async fn ws_at(app: &TestApp, path: &str, token: &str) -> Ws {
    let url = format!(
        "{}?token={token}",
        app.url(path).replace("http://", "ws://")
    );
    tokio_tungstenite::connect_async(url.into_client_request().unwrap())
        .await
        .expect("ws connects")
        .0
}

/// Deltas until done/error, each checked: its offset is where it starts.
async fn ws_collect(ws: &mut Ws, start: usize) -> (String, Value) {
    let mut text = String::new();
    loop {
        let f = ws_next(ws).await;
        match f["type"].as_str().unwrap() {
            "delta" => {
                assert_eq!(
                    f["offset"].as_u64().unwrap() as usize,
                    start + utf16_len(&text),
                    "offset in UTF-16 units: {f}"
                );
                text.push_str(f["text"].as_str().unwrap());
            }
            _ => return (text, f),
        }
    }
}

#[tokio::test]
async fn websocket_at_the_stream_path_and_sse_still_there() {
    let app = TestApp::spawn().await;
    let (token, _) = app.login("socket").await;
    // wx.connectSocket({url: '…/api/chat/stream'})
    let mut ws = ws_at(&app, "/api/chat/stream", &token).await;
    ws_send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(ws_next(&mut ws).await["type"], "pong");
    ws_send(
        &mut ws,
        json!({"type": "chat", "message": "over the alias"}),
    )
    .await;
    let (text, done) = ws_collect(&mut ws, 0).await;
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(text, "echo: over the alias");

    // POST there is still Server-Sent Events, unbuffered
    let res = app
        .client
        .post(app.url("/api/chat/stream"))
        .bearer_auth(&token)
        .json(&json!({"message": "sse too"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(res.headers()["cache-control"], "no-cache");
    assert_eq!(res.headers()["x-accel-buffering"], "no");
    let events = sse_events(&res.text().await.unwrap());
    assert_eq!(events.last().unwrap().0, "done");

    // a GET without an upgrade is refused in our shape, and so is a bad token
    let (s, b) = app.get("/api/chat/stream", Some(&token)).await;
    assert!(s.is_client_error(), "{s} {b}");
    assert!(b["error"]["code"].is_string(), "{b}");
    let bad = tokio_tungstenite::connect_async(
        format!(
            "{}?token=nope",
            app.url("/api/chat/stream").replace("http://", "ws://")
        )
        .into_client_request()
        .unwrap(),
    )
    .await;
    assert!(bad.is_err(), "a bad token is refused before the upgrade");
}

#[tokio::test]
async fn offsets_count_utf16_code_units_in_sse_and_websocket() {
    let app = TestApp::spawn().await;
    let (token, _) = app.login("emoji").await;
    let reply = format!("echo: {ASTRAL}");

    // SSE: every delta's offset is the UTF-16 length before it
    let res = app
        .client
        .post(app.url("/api/chat/stream"))
        .bearer_auth(&token)
        .json(&json!({"message": ASTRAL}))
        .send()
        .await
        .unwrap();
    let events = sse_events(&res.text().await.unwrap());
    let mut text = String::new();
    for (e, d) in &events {
        if e == "delta" {
            assert_eq!(
                d["offset"].as_u64().unwrap() as usize,
                utf16_len(&text),
                "{d}"
            );
            assert!(d["message_id"].is_string());
            text.push_str(d["text"].as_str().unwrap());
        }
    }
    assert_eq!(text, reply);
    let (_, done) = events.last().unwrap();
    let message_id = done["message"]["id"].as_str().unwrap().to_string();

    // WebSocket resume at every char boundary, in UTF-16 units (what
    // JavaScript's text.length gives), reconstructs the exact reply
    let mut ws = ws_at(&app, "/api/chat/ws", &token).await;
    let mut boundaries = vec![0];
    let mut units = 0;
    for c in reply.chars() {
        units += c.len_utf16();
        boundaries.push(units);
    }
    for &offset in &boundaries {
        ws_send(
            &mut ws,
            json!({"type": "resume", "message_id": message_id, "offset": offset}),
        )
        .await;
        let (rest, done) = ws_collect(&mut ws, offset).await;
        assert_eq!(done["type"], "done", "{done}");
        assert_eq!(rest, after_units(&reply, offset), "resume at {offset}");
    }
    // inside a surrogate pair, or past the end: an error frame naming offset
    let emoji_at = utf16_len(&reply[..reply.find('😀').unwrap()]);
    for offset in [emoji_at + 1, utf16_len(&reply) + 1] {
        ws_send(
            &mut ws,
            json!({"type": "resume", "message_id": message_id, "offset": offset}),
        )
        .await;
        let f = ws_next(&mut ws).await;
        assert_eq!(f["type"], "error", "{f}");
        assert_eq!(f["error"]["code"], "validation", "{f}");
    }
}

#[tokio::test]
async fn resume_of_a_live_reply_counts_utf16_units() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::builder()
        .config(|c| c.llm.providers = vec![fake.provider(5)])
        .spawn()
        .await;
    let (token, _) = app.login("live").await;
    fake.set(Behavior::Gated);
    let mut ws = ws_at(&app, "/api/chat/stream", &token).await;
    // the fake answers "reply to: <message>": the first chunk is "reply "
    ws_send(&mut ws, json!({"type": "chat", "message": "😀😀 and 中文"})).await;
    let first = ws_next(&mut ws).await;
    assert_eq!(first["type"], "delta", "{first}");
    assert_eq!(first["offset"], 0);
    let got = first["text"].as_str().unwrap().to_string();
    let message_id = first["message_id"].as_str().unwrap().to_string();
    drop(ws);
    let mut ws2 = ws_at(&app, "/api/chat/ws", &token).await;
    ws_send(
        &mut ws2,
        json!({"type": "resume", "message_id": message_id, "offset": utf16_len(&got)}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    fake.open_gate();
    let (rest, done) = ws_collect(&mut ws2, utf16_len(&got)).await;
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(format!("{got}{rest}"), "reply to: 😀😀 and 中文");
}

// ------------------------------------------------------------ continuity

async fn chat(app: &TestApp, token: &str, body: Value) -> Value {
    let (s, b) = app.post("/api/chat", Some(token), body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

#[tokio::test]
async fn chat_without_session_id_continues_a_fresh_conversation() {
    let fake = FakeOpenAi::start().await;
    let app = TestApp::builder()
        .config(|c| c.llm.providers = vec![fake.provider(5)])
        .spawn()
        .await;
    let (token, _) = app.login("talker").await;
    // as the original mini-program sends it: {message, model}
    let a = chat(
        &app,
        &token,
        json!({"message": "my name is Li", "model": "gpt-4o-mini"}),
    )
    .await;
    app.clock.advance(ChronoDuration::minutes(29));
    let b = chat(
        &app,
        &token,
        json!({"message": "what is my name?", "model": "gpt-4o-mini"}),
    )
    .await;
    assert_eq!(a["session_id"], b["session_id"], "continued");
    // the conversation's context went upstream
    let sent = &fake.requests()[1].body["messages"];
    let texts: Vec<&str> = sent
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert!(texts.contains(&"my name is Li"), "{sent}");
    assert_eq!(texts.last(), Some(&"what is my name?"));

    // new_session always starts one, with no context
    let c = chat(
        &app,
        &token,
        json!({"message": "fresh start", "new_session": true}),
    )
    .await;
    assert_ne!(c["session_id"], b["session_id"]);
    let sent = &fake.requests()[2].body["messages"];
    assert_eq!(sent.as_array().unwrap().len(), 1, "{sent}");
    // and that one is now the latest
    let d = chat(&app, &token, json!({"message": "still here"})).await;
    assert_eq!(d["session_id"], c["session_id"]);

    // past the window: a new conversation
    app.clock.advance(ChronoDuration::minutes(31));
    let e = chat(&app, &token, json!({"message": "later"})).await;
    assert_ne!(e["session_id"], d["session_id"]);
    // new_session with session_id is a contradiction
    let (s, body) = app
        .post(
            "/api/chat",
            Some(&token),
            json!({"message": "x", "session_id": e["session_id"], "new_session": true}),
        )
        .await;
    let err = assert_error(s, &body, 422, "validation");
    assert_eq!(err["field"], "new_session");
    // another user's conversation is never continued
    let (other, _) = app.login("someone-else").await;
    let f = chat(&app, &other, json!({"message": "hello"})).await;
    assert_ne!(f["session_id"], e["session_id"]);

    // over the WebSocket too
    let mut ws = ws_at(&app, "/api/chat/stream", &token).await;
    ws_send(&mut ws, json!({"type": "chat", "message": "via socket"})).await;
    let (_, done) = ws_collect(&mut ws, 0).await;
    assert_eq!(done["session_id"], e["session_id"]);
    ws_send(
        &mut ws,
        json!({"type": "chat", "message": "new", "new_session": true}),
    )
    .await;
    let (_, done) = ws_collect(&mut ws, 0).await;
    assert_ne!(done["session_id"], e["session_id"]);
}

#[tokio::test]
async fn continue_within_zero_always_starts_a_new_conversation() {
    let app = TestApp::builder()
        .config(|c| c.chat.continue_within_minutes = 0)
        .spawn()
        .await;
    let (token, _) = app.login("loner").await;
    let a = chat(&app, &token, json!({"message": "one"})).await;
    let b = chat(&app, &token, json!({"message": "two"})).await;
    assert_ne!(a["session_id"], b["session_id"]);
}

#[test]
fn continue_within_minutes_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config(dir.path());
    c.chat.continue_within_minutes = 7 * 24 * 60 + 1;
    let e = c.validate().unwrap_err();
    assert_eq!(e.key, "chat.continue_within_minutes");
}

/// wx.uploadFile uploads count against the same per-user storage bound as
/// presigned ones; a refused one leaves neither a row nor an object.
#[tokio::test]
async fn multipart_uploads_stop_at_the_users_storage_quota() {
    let app = TestApp::builder()
        .config(|c| c.storage.max_bytes_per_user = 1000)
        .spawn()
        .await;
    let (token, _) = app.login("filler").await;
    let (s, b) = upload(
        &app,
        &token,
        wx_form("file", "a.png", Some("image/png"), &[7u8; 600]),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = upload(
        &app,
        &token,
        wx_form("file", "b.png", Some("image/png"), &[7u8; 600]),
    )
    .await;
    let e = assert_error(s, &b, 403, "storage_quota_exceeded");
    assert_eq!(e["max_bytes_per_user"], 1000, "{b}");
    let (s, b) = upload(
        &app,
        &token,
        wx_form("file", "c.png", Some("image/png"), &[7u8; 400]),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "exactly at the bound still fits: {b}");
}
