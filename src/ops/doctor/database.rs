//! The database as `serve` will find it (inspected, never migrated) and
//! the free space beside it.

use std::path::Path;

use super::Check;
use crate::config::Config;

pub fn database(cfg: &Config) -> Vec<Check> {
    use crate::db::inspect;
    let path = Path::new(&cfg.database.path);
    let key = "database.path";
    let mut out = vec![];
    match inspect::inspect(path) {
        Ok(None) => out.push(Check::ok(
            "database",
            format!(
                "{} does not exist yet: serve creates and migrates it",
                path.display()
            ),
        )),
        Ok(Some(i)) => {
            let mut notes = vec![];
            if let Err(e) = &i.writable {
                out.push(Check::fail(
                    "database",
                    key,
                    format!("{} is not writable: {e}", path.display()),
                    "make the file, its -wal/-shm files and its directory writable by the service user",
                ));
            }
            if let Some(v) = i.newer {
                out.push(Check::fail(
                    "database",
                    key,
                    format!("schema version {v} was written by a newer mvp28"),
                    "upgrade the binary",
                ));
            }
            if i.journal_mode.eq_ignore_ascii_case("wal") {
                notes.push("WAL on".to_string());
            } else {
                out.push(Check::warn(
                    "database",
                    key,
                    format!("journal mode is {} (serve switches it to WAL)", i.journal_mode),
                    "start serve once, or check that the filesystem supports WAL (not a network share)",
                ));
            }
            if i.pending.is_empty() {
                notes.push("migrations current".into());
            } else {
                out.push(Check::warn(
                    "database",
                    key,
                    format!(
                        "{} migration(s) pending (first: V{}__{})",
                        i.pending.len(),
                        i.pending[0].0,
                        i.pending[0].1
                    ),
                    "run `mvp28 migrate` (serve also applies them at start)",
                ));
            }
            if i.writable.is_ok() && i.newer.is_none() {
                out.push(Check::ok(
                    "database",
                    format!(
                        "{}: writable (a write rolled back), {}",
                        path.display(),
                        notes.join(", ")
                    ),
                ));
            }
        }
        Err(e) => out.push(Check::fail(
            "database",
            key,
            format!("cannot open {}: {e:#}", path.display()),
            "check the path and its permissions",
        )),
    }
    let dir = cfg.data_dir();
    let probe_dir = if dir.exists() {
        dir.clone()
    } else {
        std::path::PathBuf::from(".")
    };
    match inspect::free_bytes(&probe_dir) {
        Ok(free) => {
            let mib = free / (1024 * 1024);
            let msg = format!("{mib} MiB free in {}", probe_dir.display());
            let fix = "free space or move database.path / storage.local_dir to a larger disk";
            out.push(if mib < 100 {
                Check::fail("disk", key, msg, fix)
            } else if mib < 1024 {
                Check::warn("disk", key, msg, fix)
            } else {
                Check::ok("disk", msg)
            });
        }
        Err(e) => out.push(Check::warn(
            "disk",
            key,
            format!("free space not measured: {e}"),
            "",
        )),
    }
    out
}
