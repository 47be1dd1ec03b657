//! The commands: each reads its inputs, calls the core, and prints.

mod changes;

use crate::ci::Ci;
use crate::cli::{Cli, Command};
use crate::error::Result;

/// Runs a parsed command line; returns the exit code of a command that ran.
pub fn run(cli: Cli, ci: &Ci) -> Result<u8> {
    match cli.command {
        Command::Changes(args) => changes::run(&cli.dir, cli.config.as_deref(), args, ci),
    }
}
