//! The workflows and the example that ship with hoist stay valid: every
//! workflow parses and compiles, and `hoist changes --check` is clean on the
//! example monorepo.

mod common;

use hoist::changes::Trigger;
use hoist::workflow::Workflow;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_workflow_parses_and_compiles() {
    let dirs = ["workflows", ".gitea/workflows", "examples/.gitea/workflows"];
    let files: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|d| yaml_files(&root().join(d)))
        .collect();
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        let workflow = Workflow::read(&file).unwrap_or_else(|e| panic!("{e}"));
        Trigger::of(&workflow).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            workflow.event("push").is_some(),
            "{} runs on push",
            file.display()
        );
    }
}

#[test]
fn check_is_clean_on_the_example() {
    let repo = tempfile::tempdir().unwrap();
    let copy = Command::new("cp")
        .arg("-R")
        .arg(root().join("examples/."))
        .arg(repo.path())
        .status()
        .unwrap();
    assert!(copy.success());
    let git = |args: &[&str]| common::git(repo.path(), args);
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "example"]);
    let out = Command::new(env!("CARGO_BIN_EXE_hoist"))
        .args(["changes", "--check"])
        .current_dir(repo.path())
        .env_remove("HOIST_WORKFLOW")
        .env_remove("HOIST_CONFIG")
        .env_remove("GITHUB_ACTIONS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("no findings"), "{stdout}");
}
