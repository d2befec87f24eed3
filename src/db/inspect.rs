//! A look at the database without changing it (for `mvp28 doctor`): it is
//! opened without creating it, nothing is migrated, and the write probe is
//! rolled back.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::{applied_versions, embedded};

pub struct Inspection {
    /// "wal", "delete", …
    pub journal_mode: String,
    /// Embedded migrations not yet applied: (version, name).
    pub pending: Vec<(i32, String)>,
    /// The highest applied version, when newer than this binary knows.
    pub newer: Option<i32>,
    /// A write (table created, row inserted) went through and was rolled back.
    pub writable: Result<(), String>,
}

/// None when the file does not exist (serve creates and migrates it).
pub fn inspect(path: &Path) -> anyhow::Result<Option<Inspection>> {
    if !path.exists() {
        return Ok(None);
    }
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // A running server may hold the write lock for a moment.
    conn.busy_timeout(Duration::from_secs(5))?;
    let journal_mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    let applied = applied_versions(&conn)?;
    let runner = embedded::migrations::runner();
    let known = runner.get_migrations();
    let newest_known = known.iter().map(|m| m.version()).max().unwrap_or(0);
    let mut pending: Vec<(i32, String)> = known
        .iter()
        .filter(|m| !applied.contains(&m.version()))
        .map(|m| (m.version(), m.name().to_string()))
        .collect();
    pending.sort();
    let newer = applied.iter().copied().max().filter(|v| *v > newest_known);
    let writable = probe_write(&mut conn).map_err(|e| e.to_string());
    Ok(Some(Inspection {
        journal_mode,
        pending,
        newer,
        writable,
    }))
}

fn probe_write(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE mvp28_doctor_probe (x INTEGER); INSERT INTO mvp28_doctor_probe VALUES (1);",
    )?;
    // Dropped without commit: rolled back.
    drop(tx);
    Ok(())
}

/// Bytes free for this user on the filesystem holding `dir` (statvfs).
#[cfg(unix)]
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path contains a NUL byte"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` is written by
    // statvfs before it is read (only when it returns 0).
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(not(unix))]
pub fn free_bytes(_dir: &Path) -> std::io::Result<u64> {
    Err(std::io::Error::other("not measured on this platform"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_migrated_database_is_current_writable_and_unchanged_by_the_probe() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        assert!(inspect(&path).unwrap().is_none(), "absent: not created");
        assert!(!path.exists());
        drop(super::super::Db::open(&path, 1).unwrap());
        let i = inspect(&path).unwrap().unwrap();
        assert_eq!(i.journal_mode, "wal");
        assert!(i.pending.is_empty());
        assert_eq!(i.newer, None);
        assert_eq!(i.writable, Ok(()));
        let conn = Connection::open(&path).unwrap();
        let probe: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'mvp28_doctor_probe'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(probe, 0, "the probe was rolled back");
        assert!(free_bytes(dir.path()).unwrap() > 0);
    }
}
