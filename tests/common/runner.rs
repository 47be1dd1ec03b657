//! Reads a step's output as a workflow runner does, to tell which lines it
//! would execute as commands.
//!
//! The rules are GitHub's runner's (actions/runner,
//! `Runner.Common/ActionCommand.cs` and `Runner.Worker/ActionCommandManager.cs`),
//! the more lenient of the two runners hoist runs under: a line is a command
//! when it starts with `::name` after leading white space (`TryParseV2`), or
//! else when it holds `##[name` anywhere (`TryParse`), for a registered
//! command name; `::stop-commands::TOKEN` ignores every command until one
//! named TOKEN. act's runner (Gitea's) takes a subset of these lines: `::`
//! and `##[` only at the very start.

/// The command names GitHub's runner registers (its command extensions and
/// `stop-commands`).
const REGISTERED: &[&str] = &[
    "set-env",
    "set-output",
    "save-state",
    "add-mask",
    "add-path",
    "add-matcher",
    "remove-matcher",
    "debug",
    "warning",
    "error",
    "notice",
    "group",
    "endgroup",
    "echo",
    "stop-commands",
];

/// A command the runner would execute: its name and its data (still
/// escaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub name: String,
    pub data: String,
}

/// The commands a runner executes when a step prints `output`, in order;
/// `stop-commands` and its resume line are handled, not returned.
pub fn commands(output: &str) -> Vec<Command> {
    let mut executed = Vec::new();
    let mut stopped_until: Option<String> = None;
    // .NET's `ReadLine`, which the runner reads with, also ends a line at a bare `\r`.
    for line in output.split(['\n', '\r']) {
        let Some(command) = parse(line, stopped_until.as_deref()) else {
            continue;
        };
        match &stopped_until {
            Some(token) if command.name.eq_ignore_ascii_case(token) => stopped_until = None,
            Some(_) => {}
            None if command.name == "stop-commands" => stopped_until = Some(command.data),
            None => executed.push(command),
        }
    }
    executed
}

fn parse(line: &str, token: Option<&str>) -> Option<Command> {
    let known = |name: &str| REGISTERED.contains(&name) || Some(name) == token;
    let trimmed = line.trim_start();
    if let Some(rest) = trimmed.strip_prefix("::")
        && let Some(end) = rest.find("::")
    {
        let info = &rest[..end];
        let name = info.split(' ').next().unwrap_or_default();
        if known(name) {
            return Some(Command {
                name: name.to_string(),
                data: rest[end + 2..].to_string(),
            });
        }
    }
    let start = line.find("##[")? + 3;
    let end = start + line[start..].find(']')?;
    let name = line[start..end].split(' ').next().unwrap_or_default();
    known(name).then(|| Command {
        name: name.to_string(),
        data: line[end + 1..].to_string(),
    })
}
