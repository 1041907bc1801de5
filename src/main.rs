//! The `tailor` binary: parse the command line, run the command (`src/cli/`, one file each).

mod cli;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    cli::run(cli::Cli::parse())
}
