//! The ceiling for scripts/bench.sh: a bare axum server (the same axum
//! features and tokio runtime as mvp28) answering a small JSON body, with
//! no middleware, no database and no logging.
//!
//!   cargo run --release --example hello_bench -- [127.0.0.1:18090]

use axum::routing::get;
use axum::{Json, Router};

#[tokio::main]
async fn main() {
    let bind = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18090".into());
    let app = Router::new().route(
        "/",
        get(|| async { Json(serde_json::json!({"status": "ok", "version": "hello"})) }),
    );
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .unwrap_or_else(|e| panic!("binding {bind}: {e}"));
    axum::serve(listener, app).await.unwrap();
}
