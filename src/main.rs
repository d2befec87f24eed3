use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    mvp28::cli::run(mvp28::cli::Cli::parse())
}
