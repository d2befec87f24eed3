use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    mvp28::ops::cli::run(mvp28::ops::cli::Cli::parse())
}
