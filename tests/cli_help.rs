//! Each command's `--help` ends with the exit codes that command can
//! return, and only those: `--check` is named where it exists.

mod common;

use common::hoist;

const COMMANDS: [&str; 8] = [
    "changes", "init", "deps", "build", "publish", "promote", "rollback", "status",
];

/// The `Exit codes:` footer of `hoist <command> --help`.
fn footer(command: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = hoist(dir.path(), &[command, "--help"], &[]);
    assert_eq!(out.status.code(), Some(0), "{command}");
    let help = String::from_utf8(out.stdout).unwrap();
    let (_, footer) = help
        .split_once("Exit codes:")
        .unwrap_or_else(|| panic!("{command} --help has no exit codes:\n{help}"));
    footer.to_string()
}

#[test]
fn every_command_lists_its_own_exit_codes() {
    for command in COMMANDS {
        let footer = footer(command);
        for code in ["\n  0  ", "\n  1  ", "\n  2  "] {
            assert!(footer.contains(code), "{command}: {footer}");
        }
        assert_eq!(
            footer.contains("--check"),
            command == "changes",
            "{command}: --check only where it exists: {footer}"
        );
    }
    let footers: std::collections::BTreeSet<String> = COMMANDS.iter().map(|c| footer(c)).collect();
    assert_eq!(footers.len(), COMMANDS.len(), "each command says its own");
}

/// `-C` naming no directory is said as such, not as a missing file in it.
#[test]
fn a_missing_directory_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let out = hoist(
        dir.path(),
        &["-C", missing.to_str().unwrap(), "changes"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no such directory"), "{stderr}");
}
