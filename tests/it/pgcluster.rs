//! A throwaway PostgreSQL cluster from Debian's `postgresql` package,
//! started by the tests themselves: `initdb` + `pg_ctl` (as the `postgres`
//! system user when the tests run as root) in a temp dir, on a free port,
//! stopped and removed when dropped.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

/// The newest installed server's bin directory, if any.
fn server_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

static SKIPPED: std::sync::Once = std::sync::Once::new();

impl Cluster {
    /// None (after one loud line) where PostgreSQL is not installed; under
    /// CI=true a missing PostgreSQL is a failure instead.
    pub fn start() -> Option<Cluster> {
        let Some(bin) = server_bin() else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true but no PostgreSQL server under /usr/lib/postgresql (.ci/run installs it)");
            }
            SKIPPED.call_once(|| {
                eprintln!(
                    "SKIPPED: PostgreSQL tests — no initdb under /usr/lib/postgresql (apt-get install postgresql)"
                )
            });
            return None;
        };
        let as_postgres = is_root();
        let base = std::env::temp_dir().join(format!(
            "mvp28-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&base).expect("cluster dir");
        let dir = base.join("data");
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&base)
                .status()
                .expect("chown runs")
                .success();
            assert!(ok, "chown of the cluster dir failed");
        }
        let port = super::common::free_port();
        let cluster = Cluster {
            dir,
            bin,
            port,
            as_postgres,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.dir.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        );
        cluster.pg_ctl_start();
        Some(cluster)
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .command(tool)
            .args(args)
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap_or_else(|e| panic!("{tool} runs: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The superuser URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Starts it again after [`stop`](Self::stop): same data, same port.
    pub fn restart(&self) {
        self.pg_ctl_start();
    }

    fn pg_ctl_start(&self) {
        let base = self.dir.parent().expect("base");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c full_page_writes=off -c max_connections=400 -c shared_buffers=32MB",
            self.port,
            base.display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.dir.to_string_lossy(),
                "-o",
                &opts,
                "-l",
                &base.join("log").to_string_lossy(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    pub fn stop(&self) {
        let _ = self
            .command("pg_ctl")
            .args([
                "-D",
                &self.dir.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// `CREATE DATABASE` on the cluster behind `admin_url`; the new one's URL.
pub fn create_db(admin_url: &str) -> String {
    // The synchronous client cannot run inside the test's async runtime.
    let admin = admin_url.to_owned();
    std::thread::spawn(move || create_db_here(&admin))
        .join()
        .expect("create_db")
}

fn create_db_here(admin_url: &str) -> String {
    let name = format!(
        "t{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        rand_suffix()
    );
    let mut client =
        postgres::Client::connect(admin_url, postgres::NoTls).expect("connect to the test cluster");
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create database");
    match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("bad admin url {admin_url}"),
    }
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish() as u32
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        if let Some(base) = self.dir.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}
