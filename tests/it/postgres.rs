//! The Postgres backend: the whole integration suite once more on a
//! throwaway cluster, and what only several instances on one database can
//! show.

use std::process::Command;

use super::pgcluster::Cluster;

/// Re-runs this test binary with every test on a fresh Postgres database
/// (see `common::test_config`); tests of SQLite-only things skip there.
#[test]
fn the_integration_suite_passes_on_postgres() {
    if super::common::postgres_admin_url().is_some() {
        return; // this is the Postgres run itself
    }
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .env("MVP28_TEST_PG", cluster.url("postgres"))
        .args(["--skip", "postgres::", "--test-threads", "4"])
        .output()
        .expect("the suite runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("test result") || l.contains("FAILED") || l.contains("panicked"))
        .collect();
    eprintln!("Postgres run: {}", summary.join("\n"));
    assert!(
        out.status.success(),
        "the suite failed on Postgres:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
