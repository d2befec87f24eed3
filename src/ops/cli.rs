//! Command line: serve | migrate | config check | admin …

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Operator commands; they take effect live while `serve` runs.
    Admin {
        #[command(subcommand)]
        command: crate::ops::admin::AdminCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the effective config (secrets redacted); exit 2 when invalid.
    Check,
}

/// Exit codes: 0 ok, 1 failure (or audit mismatch), 2 invalid config/usage.
pub fn run(cli: Cli) -> ExitCode {
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Serve => {
            crate::ops::logging::init(&config.log);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(crate::ops::serve::serve(config)))
                .map(|_| ExitCode::SUCCESS)
        }
        Command::Migrate { status } => migrate(&config, status),
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            // Key files are part of the config: a bad one fails here, not
            // at the first payment.
            if let Err(e) = crate::pay::Payments::from_config(&config) {
                eprintln!("error: invalid config: {e:#}");
                return ExitCode::from(2);
            }
            if let Err(e) = crate::tls::check(&config) {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            print!("{}", config.redacted_toml());
            eprintln!("config ok");
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin { command } => crate::ops::admin::run(&config, command),
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
