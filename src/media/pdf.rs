//! PDF text extraction (lopdf), bounded in memory, time and number for
//! real: each extraction runs in a child process of this binary
//! (`mvp28 extract-pdf`, hidden) that caps its own address space and CPU
//! time (RLIMIT_AS/RLIMIT_CPU) and is killed at the wall-clock timeout, and
//! at most [`MAX_CONCURRENT`] run at once. A decompression bomb ends the
//! child, never the server.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Extractions running at once (each a child process).
pub const MAX_CONCURRENT: usize = 2;

static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CONCURRENT);

/// Text kept per PDF (bytes); `llm.attachment_chars` cuts further when it
/// is sent to a model.
const MAX_TEXT_BYTES: usize = 1024 * 1024;

/// What one extraction may use.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The mvp28 binary to run as the child.
    pub helper: PathBuf,
    /// Address space of the child (RLIMIT_AS).
    pub max_memory_mib: u64,
    /// CPU seconds (RLIMIT_CPU) and the wall-clock timeout.
    pub timeout: Duration,
}

impl Limits {
    pub fn from_config(c: &crate::config::StorageConfig) -> Limits {
        let helper = if c.pdf_helper.is_empty() {
            std::env::current_exe().unwrap_or_else(|_| PathBuf::from("mvp28"))
        } else {
            PathBuf::from(&c.pdf_helper)
        };
        Limits {
            helper,
            max_memory_mib: c.pdf_max_memory_mib,
            timeout: Duration::from_secs(c.pdf_timeout_secs),
        }
    }
}

/// What a child that did not answer means for the user.
const TOO_BIG: &str = "the PDF could not be read within the extraction limits \
    (memory or time; a decompression bomb?)";

/// The PDF's text layer, or a short reason there is none.
pub async fn extract(bytes: bytes::Bytes, limits: &Limits) -> Result<String, String> {
    let _slot = SLOTS
        .acquire()
        .await
        .map_err(|_| "text extraction is shutting down".to_string())?;
    let mut child = tokio::process::Command::new(&limits.helper)
        .arg("extract-pdf")
        .arg("--max-memory-mib")
        .arg(limits.max_memory_mib.to_string())
        .arg("--max-cpu-secs")
        .arg(limits.timeout.as_secs().max(1).to_string())
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            tracing::error!(error = %e, helper = %limits.helper.display(), "cannot start the PDF extractor");
            "text extraction is unavailable on this server".to_string()
        })?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let run = async {
        // The child reads all of its input before it writes anything.
        let _ = stdin.write_all(&bytes).await;
        drop(stdin);
        let mut out = vec![];
        let _ = (&mut stdout)
            .take(MAX_TEXT_BYTES as u64 * 8 + 4096)
            .read_to_end(&mut out)
            .await;
        (out, child.wait().await)
    };
    let (out, status) = match tokio::time::timeout(limits.timeout, run).await {
        Ok(r) => r,
        // dropping the future kills the child (kill_on_drop)
        Err(_) => return Err(TOO_BIG.into()),
    };
    match status {
        Ok(s) if s.success() => {}
        _ => return Err(TOO_BIG.into()),
    }
    let answer: ChildAnswer = serde_json::from_slice(&out).map_err(|_| TOO_BIG.to_string())?;
    match answer {
        ChildAnswer { text: Some(t), .. } => Ok(t),
        ChildAnswer { error: Some(e), .. } => Err(e),
        _ => Err(TOO_BIG.into()),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ChildAnswer {
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `mvp28 extract-pdf`: limits itself, reads a PDF on stdin, answers JSON
/// on stdout. Run only by [`extract`].
pub fn child_main(max_memory_mib: u64, max_cpu_secs: u64) -> std::process::ExitCode {
    use std::io::{Read, Write};
    if let Err(e) = limit_self(max_memory_mib, max_cpu_secs) {
        eprintln!("extract-pdf: cannot set limits: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let mut bytes = vec![];
    if std::io::stdin().read_to_end(&mut bytes).is_err() {
        return std::process::ExitCode::FAILURE;
    }
    let answer = match extract_blocking(&bytes) {
        Ok(t) => ChildAnswer {
            text: Some(t),
            error: None,
        },
        Err(e) => ChildAnswer {
            text: None,
            error: Some(e),
        },
    };
    let out = serde_json::to_vec(&answer).expect("answer serializes");
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(&out).and_then(|_| stdout.flush()).is_err() {
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(unix)]
fn limit_self(max_memory_mib: u64, max_cpu_secs: u64) -> std::io::Result<()> {
    let set = |resource, value: u64| {
        let lim = libc::rlimit {
            rlim_cur: value as libc::rlim_t,
            rlim_max: value as libc::rlim_t,
        };
        // SAFETY: setrlimit with a valid, initialized struct.
        if unsafe { libc::setrlimit(resource, &lim) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    set(libc::RLIMIT_AS, max_memory_mib.saturating_mul(1024 * 1024))?;
    set(libc::RLIMIT_CPU, max_cpu_secs)
}

#[cfg(not(unix))]
fn limit_self(_max_memory_mib: u64, _max_cpu_secs: u64) -> std::io::Result<()> {
    Ok(())
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
