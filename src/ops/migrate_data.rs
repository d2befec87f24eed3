//! `mvp28 migrate-data --from URL --to URL`: moves a whole deployment's
//! database from one backend to the other (SQLite → Postgres when it
//! outgrows one machine, and back). The target is opened (and migrated)
//! as `serve` would open it and must be empty; every application table is
//! copied in one target transaction, ids kept; then both sides are
//! audited and counted. The copy itself is `db::copy`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::billing::ledger;
use crate::config::{database_path, is_postgres_url, Config};
use crate::db::{self, copy, Db};
use crate::error::AppError;

/// One side of the copy, as given on the command line.
enum Endpoint {
    Sqlite(PathBuf),
    Postgres {
        url: String,
        /// Without the password.
        shown: String,
    },
}

impl Endpoint {
    fn parse(flag: &str, url: &str) -> anyhow::Result<Endpoint> {
        if is_postgres_url(url) {
            let shown =
                db::pg::PgConnector::new(url, None, Duration::from_secs(1), Duration::from_secs(1))
                    .with_context(|| flag.to_string())?
                    .describe();
            return Ok(Endpoint::Postgres {
                url: url.to_owned(),
                shown,
            });
        }
        let path = database_path(url).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
        Ok(Endpoint::Sqlite(PathBuf::from(path)))
    }

    fn shown(&self) -> String {
        match self {
            Endpoint::Sqlite(p) => format!("sqlite:{}", p.display()),
            Endpoint::Postgres { shown, .. } => shown.clone(),
        }
    }

    /// The URL with the other connection settings of `[database]`.
    fn settings<'a>(&'a self, config: &'a Config) -> Option<db::PgSettings<'a>> {
        match self {
            Endpoint::Sqlite(_) => None,
            Endpoint::Postgres { url, .. } => {
                let d = &config.database;
                Some(db::PgSettings {
                    url,
                    ca_file: Some(d.ca_file.as_str()).filter(|f| !f.is_empty()),
                    statement_timeout: Duration::from_millis(d.statement_timeout_ms),
                    connect_timeout: Duration::from_secs(d.connect_timeout_secs),
                })
            }
        }
    }

    /// Opened as `serve` opens it: created and migrated when new.
    fn open(&self, config: &Config) -> anyhow::Result<Db> {
        const POOL: u32 = 2;
        match (self, self.settings(config)) {
            (Endpoint::Sqlite(path), _) => Db::open_with(path, POOL, config.database.synchronous),
            (_, Some(settings)) => Db::open_postgres(&settings, POOL),
            (Endpoint::Postgres { .. }, None) => unreachable!("settings exist for postgres"),
        }
    }

    /// The source must exist and be at exactly this binary's schema: a
    /// copy between two versions would lose or invent columns.
    fn check_source_schema(&self, config: &Config) -> anyhow::Result<()> {
        let versions = match (self, self.settings(config)) {
            (Endpoint::Sqlite(path), _) => match db::schema_versions_sqlite(path)? {
                Some(v) => v,
                None => bail!("no database at {}", self.shown()),
            },
            (_, Some(settings)) => db::schema_versions_postgres(&settings)?,
            (Endpoint::Postgres { .. }, None) => unreachable!("settings exist for postgres"),
        };
        if versions.is_current() {
            return Ok(());
        }
        let (at, ours) = (versions.version(), versions.binary_version());
        if versions.applied.is_empty() {
            bail!(
                "the source {} holds no mvp28 schema: nothing to copy",
                self.shown()
            );
        }
        if at > ours {
            bail!(
                "the source {} is at schema version {at}, newer than this binary's {ours}: \
                 run migrate-data with the mvp28 that wrote it",
                self.shown()
            );
        }
        bail!(
            "the source {} is at schema version {at}, this binary's is {ours}: run \
             `mvp28 migrate` against it first (DATABASE_URL=<the --from URL> mvp28 migrate), \
             then migrate-data again",
            self.shown()
        )
    }
}

/// The cause an `AppError` carries (the CLI's view of a failed DB call).
fn cause(e: AppError) -> anyhow::Error {
    match e.source {
        Some(s) => s,
        None => anyhow::anyhow!("{}", e.message),
    }
}

pub fn run(config: &Config, from: &str, to: &str) -> anyhow::Result<ExitCode> {
    let source = Endpoint::parse("--from", from)?;
    let target = Endpoint::parse("--to", to)?;
    let same = match (&source, &target) {
        (Endpoint::Sqlite(a), Endpoint::Sqlite(b)) => {
            a == b
                || a.canonicalize()
                    .ok()
                    .is_some_and(|a| Some(a) == b.canonicalize().ok())
        }
        (Endpoint::Postgres { url: a, .. }, Endpoint::Postgres { url: b, .. }) => a == b,
        _ => false,
    };
    if same {
        bail!("--from and --to are the same database ({})", source.shown());
    }
    source.check_source_schema(config)?;
    // No `serve` may write a SQLite side while it is copied (its lock);
    // on Postgres, stopping the instances is the operator's part.
    let _locks = [&source, &target]
        .into_iter()
        .filter_map(|e| match e {
            Endpoint::Sqlite(p) => Some(crate::ops::lock::acquire(p)),
            Endpoint::Postgres { .. } => None,
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let src = source.open(config)?;
    let dst = target.open(config)?;
    let source_tables = src
        .read_blocking(|c| copy::tables(c).map_err(AppError::internal))
        .map_err(cause)?;
    // The target's view of them: its counters are the ones to move.
    let tables = dst
        .read_blocking(|c| copy::tables(c).map_err(AppError::internal))
        .map_err(cause)?;
    copy::check_same_schema(&source_tables, &tables)
        .with_context(|| format!("{} and {}", source.shown(), target.shown()))?;

    let occupied = occupied(&dst, &tables)?;
    if !occupied.is_empty() {
        eprintln!(
            "refused: the target {} is not empty ({}); migrate-data only fills a new, empty \
             database — nothing was written",
            target.shown(),
            occupied.join(", ")
        );
        return Ok(ExitCode::FAILURE);
    }

    println!("copying {} → {}", source.shown(), target.shown());
    let started = Instant::now();
    let copied = {
        let (src, tables) = (src.clone(), tables.clone());
        dst.write_blocking(move |tx| {
            // Checked again inside the transaction: nothing slipped in.
            let counts = copy::row_counts(tx, &tables)?;
            if let Some((name, n)) = counts.iter().find(|(_, n)| *n > 0) {
                return Err(AppError::conflict(format!(
                    "the target is no longer empty ({name}: {n} rows)"
                )));
            }
            let pooled = src.conn()?;
            let from = pooled.conn();
            copy::begin_snapshot(&from)?;
            let copied = copy::copy_tables(&from, tx, &tables);
            let _ = copy::end_snapshot(&from);
            copied.map_err(AppError::internal)
        })
        .map_err(cause)
        .context("copying (the target was rolled back: nothing was written)")?
    };
    let took = started.elapsed();
    dst.checkpoint()?;

    // What each side holds now, and whether its money adds up.
    let counts_src = src
        .read_blocking(|c| Ok(copy::row_counts(c, &tables)?))
        .map_err(cause)?;
    let counts_dst = dst
        .read_blocking(|c| Ok(copy::row_counts(c, &tables)?))
        .map_err(cause)?;
    let audit_src = src.read_blocking(ledger::audit).map_err(cause)?;
    let audit_dst = dst.read_blocking(ledger::audit).map_err(cause)?;

    let width = tables
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!("{:width$}  {:>10}  {:>10}", "table", "source", "target");
    let mut differ = vec![];
    let (mut total_src, mut total_dst) = (0u64, 0u64);
    for (((name, s), (_, d)), (_, c)) in counts_src.iter().zip(&counts_dst).zip(&copied) {
        let mark = if s == d && d == c { "" } else { "  DIFFERS" };
        if !mark.is_empty() {
            differ.push(name.as_str());
        }
        println!("{name:width$}  {s:>10}  {d:>10}{mark}");
        total_src += s;
        total_dst += d;
    }
    println!("{:width$}  {total_src:>10}  {total_dst:>10}", "total");
    let mut ok = differ.is_empty();
    for (side, (checked, mismatches)) in [("source", &audit_src), ("target", &audit_dst)] {
        if mismatches.is_empty() {
            println!("audit {side}: ok, {checked} balances equal their ledger sums");
        } else {
            ok = false;
            for m in mismatches {
                println!(
                    "audit {side}: MISMATCH {}: balance {} fen, ledger sum {} fen",
                    m.user_id, m.balance_fen, m.ledger_sum
                );
            }
            println!(
                "audit {side}: FAILED, {} of {checked} balances differ",
                mismatches.len()
            );
        }
    }
    if !differ.is_empty() {
        println!(
            "row counts differ in {} (was the source written during the copy?)",
            differ.join(", ")
        );
    }
    if ok {
        println!(
            "migrate-data ok: {} tables, {total_dst} rows in {:.1} s; point DATABASE_URL at {}",
            tables.len(),
            took.as_secs_f64(),
            target.shown()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("migrate-data FAILED: see above");
        Ok(ExitCode::FAILURE)
    }
}

/// "users: 3 rows", … for every table of `db` that holds rows.
fn occupied(db: &Db, tables: &[copy::Table]) -> anyhow::Result<Vec<String>> {
    let counts = db
        .read_blocking(|c| Ok(copy::row_counts(c, tables)?))
        .map_err(cause)?;
    Ok(counts
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(t, n)| format!("{t}: {n} rows"))
        .collect())
}
