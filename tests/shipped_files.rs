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
            workflow.event("push").is_some() || workflow.event("workflow_dispatch").is_some(),
            "{} runs on push or by hand",
            file.display()
        );
    }
}

/// The promote workflows run by hand with a required `sha`, which reaches
/// hoist as HOIST_PROMOTE_SHA, never pasted into the script.
#[test]
fn the_promote_workflows_take_a_sha_by_hand() {
    for name in ["promote-latest.yml", "promote-to-production.yml"] {
        promote_workflow_takes_a_sha_by_hand(name);
    }
    let production =
        std::fs::read_to_string(root().join("workflows/promote-to-production.yml")).unwrap();
    assert!(production.contains("HOIST_PROMOTE_TO: ${{ vars.HOIST_PROMOTE_TO }}"));
}

fn promote_workflow_takes_a_sha_by_hand(name: &str) {
    let text = std::fs::read_to_string(root().join("workflows").join(name)).unwrap();
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let sha = &yaml["on"]["workflow_dispatch"]["inputs"]["sha"];
    assert_eq!(sha["required"], serde_yaml::Value::Bool(true), "{text}");
    let step = yaml["jobs"]["promote"]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| {
            s["run"]
                .as_str()
                .is_some_and(|r| r.contains("hoist promote"))
        })
        .expect("a step that runs hoist promote");
    assert_eq!(
        step["env"]["HOIST_PROMOTE_SHA"].as_str(),
        Some("${{ inputs.sha }}")
    );
    assert!(!step["run"].as_str().unwrap().contains("inputs.sha"));
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

/// Every `hoist …` command line in the shipped workflows is one the parser
/// accepts (with `${{ … }}` expressions left out, as an empty one would be).
#[test]
fn every_hoist_command_line_in_the_workflows_parses() {
    use clap::Parser;
    let dirs = ["workflows", "examples/.gitea/workflows"];
    let expression = regex::Regex::new(r"\$\{\{[^}]*\}\}").unwrap();
    let mut checked = Vec::new();
    for file in dirs.iter().flat_map(|d| yaml_files(&root().join(d))) {
        let text = std::fs::read_to_string(&file).unwrap();
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let jobs = yaml["jobs"].as_mapping().unwrap();
        for job in jobs.values() {
            for step in job["steps"].as_sequence().into_iter().flatten() {
                let Some(run) = step["run"].as_str() else {
                    continue;
                };
                for line in run.lines().map(str::trim) {
                    if !line.starts_with("hoist ") {
                        continue;
                    }
                    let line = expression.replace_all(line, "");
                    let words: Vec<&str> = line.split_whitespace().collect();
                    if let Err(e) = hoist::cli::Cli::try_parse_from(&words) {
                        panic!("{}: `{line}` does not parse:\n{e}", file.display());
                    }
                    checked.push(line.to_string());
                }
            }
        }
    }
    assert!(
        checked.iter().any(|l| l.starts_with("hoist publish")),
        "{checked:?}"
    );
    assert!(
        checked
            .iter()
            .any(|l| l.starts_with("hoist changes --check")),
        "{checked:?}"
    );
    assert!(
        checked.iter().any(|l| l.starts_with("hoist promote")),
        "{checked:?}"
    );
}

/// The example monorepo carries the ready-to-copy publish workflow itself.
#[test]
fn the_example_carries_the_shipped_publish_workflow() {
    let name = "publish-workspace-server-image.yml";
    let shipped = std::fs::read_to_string(root().join("workflows").join(name)).unwrap();
    let example =
        std::fs::read_to_string(root().join("examples/.gitea/workflows").join(name)).unwrap();
    assert_eq!(
        shipped, example,
        "copy workflows/{name} into examples/.gitea/workflows/"
    );
}
