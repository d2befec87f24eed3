//! Consistent online backups with SQLite's backup API: safe while `serve`
//! writes (WAL readers are never blocked), copied in steps with progress,
//! written to a temporary file, integrity-checked, then renamed into place.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use rusqlite::{Connection, OpenFlags};

/// Copies the database at `src` to `dest`; `progress(done_pages, total_pages)`.
pub fn backup_to(
    src: &Path,
    dest: &Path,
    mut progress: impl FnMut(i32, i32),
) -> anyhow::Result<u64> {
    if dest.exists() {
        bail!("{} already exists; refusing to overwrite", dest.display());
    }
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = partial_path(dest);
    let _ = std::fs::remove_file(&tmp);
    let source = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {}", src.display()))?;
    source.busy_timeout(Duration::from_secs(10))?;
    {
        let mut target =
            Connection::open(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let backup = rusqlite::backup::Backup::new(&source, &mut target)?;
        loop {
            let more = backup.step(256)?;
            let p = backup.progress();
            progress(p.pagecount - p.remaining, p.pagecount);
            match more {
                rusqlite::backup::StepResult::Done => break,
                rusqlite::backup::StepResult::More => {}
                // a writer holds a lock this instant: wait a little, go on
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    let check = Connection::open_with_flags(&tmp, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    // the copy is a standalone file: no WAL to carry around
    let _: String = check.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
    let ok: String = check.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    drop(check);
    if ok != "ok" {
        let _ = std::fs::remove_file(&tmp);
        bail!("backup failed its integrity check: {ok}");
    }
    std::fs::rename(&tmp, dest).with_context(|| format!("renaming to {}", dest.display()))?;
    Ok(std::fs::metadata(dest)?.len())
}

fn partial_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// Backup file name for a scheduled run.
pub fn scheduled_name(now: chrono::DateTime<chrono::Utc>) -> String {
    format!("mvp28-{}.db", now.format("%Y%m%dT%H%M%SZ"))
}

/// Keeps the newest `keep` scheduled backups in `dir`, deleting the rest.
pub fn prune(dir: &Path, keep: usize) -> anyhow::Result<usize> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("mvp28-") && n.ends_with(".db"))
        })
        .collect();
    files.sort();
    let excess = files.len().saturating_sub(keep);
    for f in &files[..excess] {
        std::fs::remove_file(f)?;
    }
    Ok(excess)
}

/// `serve`'s scheduled backups (`backup.every_hours` > 0).
/// Why `admin backup` (and the console's) refuse on Postgres.
pub const POSTGRES_BACKUPS: &str = "this deployment keeps its data in Postgres: back it up with \
     pg_dump (pg_dump --format=custom \"$DATABASE_URL\" > mvp28.dump) or your provider's \
     backups and point-in-time recovery (Supabase: Database > Backups); docs/postgres.md";

pub fn spawn_schedule(state: crate::http::AppState) {
    let cfg = state.config().backup.clone();
    if cfg.every_hours == 0 {
        return;
    }
    if state.db().backend() == crate::db::Backend::Postgres {
        tracing::warn!("backup.every_hours is ignored on Postgres: {POSTGRES_BACKUPS}");
        return;
    }
    tokio::spawn(async move {
        let every = Duration::from_secs(u64::from(cfg.every_hours) * 3600);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            let src = state.db().path().to_path_buf();
            let dir = PathBuf::from(&cfg.dir);
            let dest = dir.join(scheduled_name(state.now()));
            let keep = cfg.keep as usize;
            let result = tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, usize)> {
                let bytes = backup_to(&src, &dest, |_, _| {})?;
                Ok((bytes, prune(&dir, keep)?))
            })
            .await;
            match result {
                Ok(Ok((bytes, pruned))) => {
                    tracing::info!(bytes, pruned, "scheduled backup written")
                }
                Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "scheduled backup failed"),
                Err(e) => tracing::error!(error = %e, "scheduled backup task failed"),
            }
        }
    });
}

/// `s3://bucket/key` → (bucket, key).
pub fn parse_s3_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty() && !key.ends_with('/'))
        .then(|| (bucket.to_string(), key.to_string()))
}

/// The S3 bucket of an `s3://` destination, with the endpoint, region and
/// keys of `[storage.s3]`.
fn s3_store(
    s3: &crate::config::S3Config,
    bucket: &str,
) -> anyhow::Result<object_store::aws::AmazonS3> {
    use object_store::aws::AmazonS3Builder;
    if s3.endpoint.is_empty() || s3.access_key_id.is_empty() || s3.secret_access_key.is_empty() {
        bail!(
            "an s3:// destination needs storage.s3.endpoint, access_key_id and secret_access_key"
        );
    }
    let endpoint = s3.endpoint.trim_end_matches('/');
    let mut builder = AmazonS3Builder::new();
    if !s3.session_token.is_empty() {
        builder = builder.with_token(&s3.session_token);
    }
    builder
        .with_endpoint(endpoint)
        .with_region(if s3.region.is_empty() {
            "us-east-1"
        } else {
            &s3.region
        })
        .with_bucket_name(bucket)
        .with_access_key_id(&s3.access_key_id)
        .with_secret_access_key(&s3.secret_access_key)
        .with_virtual_hosted_style_request(false)
        .with_allow_http(endpoint.starts_with("http://"))
        .build()
        .context("configuring the S3 destination")
}

/// Whether `bucket/key` exists already (a backup never overwrites).
pub async fn s3_exists(
    s3: &crate::config::S3Config,
    bucket: &str,
    key: &str,
) -> anyhow::Result<bool> {
    use object_store::ObjectStoreExt;
    let store = s3_store(s3, bucket)?;
    match store.head(&object_store::path::Path::from(key)).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(anyhow::anyhow!("asking the bucket about {key}: {e}")),
    }
}

/// Uploads a finished backup file through object_store to `bucket/key`,
/// using the endpoint, region and keys of `[storage.s3]` (streamed in parts,
/// never read whole into memory). Returns the bytes sent.
pub async fn upload(
    s3: &crate::config::S3Config,
    file: &Path,
    bucket: &str,
    key: &str,
) -> anyhow::Result<u64> {
    use tokio::io::AsyncWriteExt;
    let store = s3_store(s3, bucket)?;
    let mut writer = object_store::buffered::BufWriter::new(
        std::sync::Arc::new(store),
        object_store::path::Path::from(key),
    );
    let mut src = tokio::fs::File::open(file).await?;
    let sent = tokio::io::copy(&mut src, &mut writer)
        .await
        .context("uploading the backup")?;
    writer.shutdown().await.context("finishing the upload")?;
    Ok(sent)
}
