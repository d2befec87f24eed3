//! PDF text extraction (lopdf), bounded in size and time.

use std::time::Duration;

/// Extraction gives up after this long; the blocking thread may run on
/// until lopdf returns, but nobody waits for it.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Text kept per PDF (bytes); `llm.attachment_chars` cuts further when it
/// is sent to a model.
const MAX_TEXT_BYTES: usize = 1024 * 1024;

/// The PDF's text layer, or a short reason there is none. Never panics
/// out: lopdf runs on the blocking pool and a panic there is an error.
pub async fn extract(bytes: bytes::Bytes) -> Result<String, String> {
    let task = tokio::task::spawn_blocking(move || extract_blocking(&bytes));
    match tokio::time::timeout(TIMEOUT, task).await {
        Err(_) => Err("text extraction timed out".into()),
        Ok(Err(_)) => Err("the PDF could not be read (parser failure)".into()),
        Ok(Ok(r)) => r,
    }
}

fn extract_blocking(bytes: &[u8]) -> Result<String, String> {
    let doc =
        lopdf::Document::load_mem(bytes).map_err(|e| format!("the PDF could not be read: {e}"))?;
    let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
    if pages.is_empty() {
        return Err("the PDF has no pages".into());
    }
    let text = doc
        .extract_text(&pages)
        .map_err(|e| format!("the PDF's text could not be extracted: {e}"))?;
    let text = normalize(&text);
    if text.is_empty() {
        return Err("the PDF has no text layer (a scan?); send its pages as images instead".into());
    }
    Ok(truncate_bytes(text, MAX_TEXT_BYTES))
}

/// Trims each line and drops runs of blank lines (lopdf emits many).
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            blank = !out.is_empty();
            continue;
        }
        if blank {
            out.push('\n');
            blank = false;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(line);
    }
    out
}

fn truncate_bytes(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// At most `max` Unicode scalar values of `s`, marked when cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((i, _)) => format!("{}\n[… truncated]", &s[..i]),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(super::extract_blocking(b"%PDF-1.4 garbage").is_err());
        assert!(super::extract_blocking(b"").is_err());
    }

    #[test]
    fn normalize_and_truncate() {
        assert_eq!(super::normalize("  a \n\n\n b\n"), "a\n\nb");
        assert_eq!(super::truncate_chars("héllo", 2), "hé\n[… truncated]");
        assert_eq!(super::truncate_chars("hé", 2), "hé");
        assert_eq!(super::truncate_bytes("héllo".into(), 2), "h");
    }
}
