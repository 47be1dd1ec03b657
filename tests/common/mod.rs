//! Helpers shared by the integration tests.

// Each test crate uses only some of these helpers.
#![allow(dead_code)]

pub mod canary;
pub mod docker;
pub mod ecr;
pub mod git_server;
pub mod monorepo;
pub mod moto;
pub mod proxy;
pub mod runner;

use std::path::Path;
use std::process::Command;

/// Runs git in `dir` with a fixed identity and no global config; panics
/// with git's stderr when it fails. Returns stdout, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs the hoist binary in `dir` as a fresh shell would: no `GITHUB_*`,
/// `GITEA_*` or `HOIST_*` variable of the test's own environment leaks in,
/// only `env`.
pub fn hoist(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hoist"));
    command
        .current_dir(dir)
        .args(args)
        .stdin(std::process::Stdio::null());
    for (name, _) in std::env::vars() {
        if ["GITHUB_", "GITEA_", "HOIST_"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
        {
            command.env_remove(name);
        }
    }
    // hoist's record of uploaded layers stays out of the home of whoever
    // runs the tests (a test that looks at it gives its own).
    let cache = std::env::temp_dir().join(format!("hoist-test-cache-{}", std::process::id()));
    command.env("HOIST_CACHE_DIR", cache);
    command.envs(env.iter().copied()).output().unwrap()
}
