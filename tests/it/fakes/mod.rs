pub mod anthropic;
pub mod openai;
pub mod s3;
pub mod voice;
pub mod wechat;
pub mod wechatpay;

/// Serves `router` on 127.0.0.1:0 for the rest of the test; returns its base URL.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}
