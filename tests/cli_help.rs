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

/// `hoist --version` names the commit it was built from: this checkout's
/// HEAD (with `-dirty` while its sources differ), unless the build was
/// given `HOIST_COMMIT`.
#[test]
fn the_version_names_the_commit_it_was_built_from() {
    let dir = tempfile::tempdir().unwrap();
    let out = hoist(dir.path(), &["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let version = String::from_utf8(out.stdout).unwrap();
    let expected = format!("hoist {} (", env!("CARGO_PKG_VERSION"));
    assert!(version.starts_with(&expected), "{version}");
    if std::env::var_os("HOIST_COMMIT").is_some() {
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let head = std::process::Command::new("git")
        .args(["-C", root, "rev-parse", "--short=7", "HEAD"])
        .output();
    match head {
        Ok(head) if head.status.success() => {
            let sha = String::from_utf8(head.stdout).unwrap();
            assert!(
                version.contains(&format!("({}", sha.trim())),
                "{version} should name {sha}"
            );
        }
        // Built outside a checkout: it says so.
        _ => assert!(version.contains("(commit unknown)"), "{version}"),
    }
}
