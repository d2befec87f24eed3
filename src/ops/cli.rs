//! Command line: serve | migrate | config check | doctor | admin …

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::dotenv::Environment;
use crate::config::Config;

#[derive(Parser, Debug)]
#[command(
    name = "mvp28",
    version,
    about = "WeChat mini-program AI chat backend in one binary"
)]
pub struct Cli {
    /// Config file (default: ./config.toml when present). Environment
    /// variables MVP28_SECTION__KEY and the original deployment's names
    /// (DATABASE_URL, JWT_SECRET, WECHAT_APPID, …) override it.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Environment file in dotenv syntax (default: ./.env when present, or
    /// MVP28_ENV_FILE). Variables already in the environment win over it.
    #[arg(long, global = true, value_name = "PATH")]
    pub env_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP server (migrates the database first).
    Serve,
    /// Apply pending database migrations.
    Migrate {
        /// List applied and pending migrations instead of applying them.
        #[arg(long)]
        status: bool,
    },
    /// Copy the whole database into a new, empty one (SQLite ⇄ Postgres);
    /// audit and count both sides.
    ///
    /// Moves a deployment to the other backend: SQLite to Postgres when it
    /// outgrows one machine, or back. The target is created and migrated as `serve` would; the
    /// source must be at this binary's schema version (run `migrate` on it
    /// first). Refuses a target holding any row. Every table is copied in
    /// one transaction, ids kept; then both sides are audited (balances
    /// against the ledger) and their row counts compared. Stop every
    /// `serve` on the source first. Exit 0 when counts match and both
    /// audits are clean, 1 otherwise.
    #[command(
        after_help = "Examples:\n  mvp28 migrate-data --from sqlite:data/mvp28.db --to 'postgres://mvp28:…@db.example.com:5432/mvp28?sslmode=require'\n  mvp28 migrate-data --from \"$DATABASE_URL\" --to sqlite:/var/lib/mvp28/mvp28.db\n\nConnection settings other than the URL (ca_file, timeouts) come from [database]."
    )]
    MigrateData {
        /// The deployment's database: sqlite:PATH (or a plain path) or
        /// postgres://user:password@host:port/db
        #[arg(long, value_name = "URL")]
        from: String,
        /// The new, empty database to fill, in the same forms (a SQLite
        /// file is created when absent)
        #[arg(long, value_name = "URL")]
        to: String,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Pre-flight checks before going live: config and mode, database,
    /// storage, each model, WeChat login and Pay credentials, public URL,
    /// clock. One line each; exit 0 when nothing failed, 1 otherwise.
    Doctor {
        /// Machine-readable output (one JSON document on stdout)
        #[arg(long)]
        json: bool,
    },
    /// Operator commands; they take effect live while `serve` runs.
    Admin {
        #[command(subcommand)]
        command: crate::ops::admin::AdminCommand,
    },
    /// Internal: extracts a PDF's text from stdin under resource limits
    /// (run by the server as a child process).
    #[command(hide = true)]
    ExtractPdf {
        #[arg(long)]
        max_memory_mib: u64,
        #[arg(long)]
        max_cpu_secs: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the effective config (secrets redacted) and the mode (dev or
    /// prod); exit 2 when invalid, when `serve` would refuse it, or on an
    /// unknown MVP28_* variable.
    Check,
}

/// Exit codes: 0 ok, 1 failure (or audit mismatch), 2 invalid config/usage.
pub fn run(cli: Cli) -> ExitCode {
    // The extraction child needs no config (and must not depend on one).
    if let Command::ExtractPdf {
        max_memory_mib,
        max_cpu_secs,
    } = cli.command
    {
        return crate::media::pdf::child_main(max_memory_mib, max_cpu_secs);
    }
    let env = match Environment::load(cli.env_file.as_deref()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Command::Doctor { json } = cli.command {
        return crate::ops::doctor::run(cli.config.as_deref(), &env, json);
    }
    // `config check` is where a stray MVP28_* variable is a mistake to fix;
    // everywhere else it is only warned about.
    let strict = matches!(cli.command, Command::Config { .. });
    let (config, warnings) = match Config::load(cli.config.as_deref(), &env.vars, strict) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Serve => {
            let mode = match config.mode() {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            // Held until `serve` has returned: dropping it writes out every
            // queued log line (the access lines of the last requests too).
            let _log_guard = crate::ops::logging::init(&config.log, &env.vars);
            if let Some(file) = &env.file {
                tracing::info!(file = %file.display(), "environment file read");
            }
            for w in &warnings {
                tracing::warn!("{w}");
            }
            if mode.explicit_dev {
                warn_dev_mode(&mode);
            }
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(crate::ops::serve::serve(config)))
                .map(|_| ExitCode::SUCCESS)
        }
        Command::Migrate { status } => {
            print_warnings(&warnings);
            migrate(&config, status)
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            // Key files are part of the config: a bad one fails here, not
            // at the first payment.
            if let Err(e) = crate::pay::Payments::from_config(&config) {
                eprintln!("error: invalid config: {e:#}");
                return ExitCode::from(2);
            }
            // What `serve` would refuse, refused here the same way.
            let mode = match config.mode() {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Err(e) = crate::tls::check(&config) {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            print!("{}", config.redacted_toml());
            eprintln!("config ok: {} mode ({})", mode.name(), mode.why);
            Ok(ExitCode::SUCCESS)
        }
        Command::MigrateData { from, to } => {
            print_warnings(&warnings);
            crate::ops::migrate_data::run(&config, &from, &to)
        }
        Command::Admin { command } => {
            print_warnings(&warnings);
            crate::ops::admin::run(&config, command)
        }
        // Returned above, before the config is loaded (doctor reports a
        // config that does not load as one of its checks).
        Command::Doctor { json } => Ok(crate::ops::doctor::run(cli.config.as_deref(), &env, json)),
        Command::ExtractPdf { .. } => unreachable!("handled before the config is read"),
    };
    match result {
        Ok(code) => code,
        // Found only when serving starts (certificate files, the ACME directory).
        Err(e) if e.downcast_ref::<crate::config::ConfigError>().is_some() => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The loud line a deployment running dev features on purpose gets.
fn warn_dev_mode(mode: &crate::config::Mode) {
    let what = match (mode.dev_login, mode.echo) {
        (true, true) => {
            "anyone can log in with code \"dev:<name>\" and replies come from the echo model"
        }
        (true, false) => "anyone can log in with code \"dev:<name>\"",
        _ => "replies come from the echo model",
    };
    tracing::warn!(
        "DEV MODE ON A DEPLOYMENT ({}): {what}; /api/health says \"mode\":\"dev\"",
        mode.why
    );
}

fn print_warnings(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

fn migrate(config: &Config, status: bool) -> anyhow::Result<ExitCode> {
    let db = crate::ops::serve::open_db(config, crate::clock::to_ms(chrono::Utc::now()))?;
    let list = db.migration_status()?;
    if status {
        for m in &list {
            let state = if m.applied { "applied" } else { "pending" };
            println!("V{}__{}\t{state}", m.version, m.name);
        }
    } else {
        println!(
            "database {} is at schema version {} ({} migrations applied)",
            db.path().display(),
            list.iter().map(|m| m.version).max().unwrap_or(0),
            list.iter().filter(|m| m.applied).count()
        );
    }
    Ok(ExitCode::SUCCESS)
}
