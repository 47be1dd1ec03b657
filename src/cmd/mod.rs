//! The commands: each reads its inputs, calls the core, and prints.

mod build;
mod changes;
mod deps;
mod init;
mod promote;
mod publish;

use crate::ci::Ci;
use crate::cli::{Cli, Command};
use crate::error::Result;

/// Runs a parsed command line; returns the exit code of a command that ran.
pub fn run(cli: Cli, ci: &Ci) -> Result<u8> {
    match cli.command {
        Command::Changes(args) => changes::run(&cli.dir, cli.config.as_deref(), args, ci),
        Command::Deps(args) => deps::run(&cli.dir, cli.config.as_deref(), args, ci),
        Command::Init(args) => init::run(&cli.dir, cli.config.as_deref(), args, ci),
        Command::Build(args) => build::run(&cli.dir, cli.config.as_deref(), args, ci),
        Command::Publish(args) => publish::run(&cli.dir, cli.config.as_deref(), args, ci),
        Command::Promote(args) => promote::promote(&cli.dir, cli.config.as_deref(), args, ci),
        Command::Rollback(args) => promote::rollback(&cli.dir, cli.config.as_deref(), args, ci),
        Command::Status(args) => promote::status(&cli.dir, cli.config.as_deref(), args, ci),
    }
}

/// Pretty JSON and a newline, safe to print under a runner
/// ([`crate::ci::json_safe`]); the values printed here always serialise.
fn json(value: &impl serde::Serialize) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    crate::ci::json_safe(text)
}
