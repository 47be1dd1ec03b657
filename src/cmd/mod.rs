//! The commands: each reads its inputs, calls the core, and prints.

mod build;
mod changes;
mod deps;
mod init;
mod promote;
mod promote_to;
mod publish;

use crate::ci::Ci;
use crate::cli::{Cli, Command};
use crate::error::Result;

/// Runs a parsed command line; returns the exit code of a command that ran.
pub fn run(cli: Cli, ci: &Ci) -> Result<u8> {
    // Said first: every later error would name a file inside it instead.
    if !cli.dir.is_dir() {
        return Err(crate::error::Error::input(format!(
            "-C {}: no such directory",
            cli.dir.display()
        ))
        .hint("pass the directory of the repository hoist should run in"));
    }
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

/// One image's log line outside a runner, as build and push print them:
/// the image's name padded to `width`, then the line (as `docker compose`
/// prefixes its services' logs).
fn prefixed(name: &str, width: usize, line: &str) -> String {
    format!("{name:width$} | {line}")
}

/// One image's finished log, as build and push print it: under a runner a
/// `::group::<stage> <image>` whose lines (the engine's, a build's) are
/// relayed as they are; elsewhere each line [`prefixed`].
fn print_image_log(ci: &Ci, stage: &str, name: &str, width: usize, lines: &[String]) {
    if ci.actions {
        ci.group(&format!("{stage} {name}"));
        ci.relay(lines.iter().map(String::as_str));
        ci.end_group();
    } else {
        for line in lines {
            ci.say(&prefixed(name, width, line));
        }
    }
}

/// Pretty JSON and a newline, safe to print under a runner
/// ([`crate::ci::json_safe`]); the values printed here always serialise.
fn json(value: &impl serde::Serialize) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    crate::ci::json_safe(text)
}
