//! `hoist init` end to end in a temp git repository shaped like a new
//! user's monorepo: services under `services/`, a shared `libs/`, a
//! workflow with path filters beside one without, and Dockerfiles that
//! belong to others (`node_modules`) or are not tracked. The file it writes
//! must load, and `hoist build --dry-run` must plan from it.

mod common;

use common::{git, hoist};
use serde_json::Value;
use std::path::Path;
use std::process::Output;

fn write(root: &Path, path: &str, text: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The monorepo, committed; `untracked/Dockerfile` is left out of git.
fn monorepo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        ".github/workflows/test.yml",
        "on: [push, pull_request]\njobs: {}\n",
    );
    write(
        root,
        ".github/workflows/images.yml",
        "on:\n  push:\n    branches: [main]\n    paths: ['services/**', 'libs/**']\njobs: {}\n",
    );
    write(root, "libs/util/util.txt", "shared\n");
    write(root, "services/api/main.txt", "api\n");
    write(
        root,
        "services/api/Dockerfile",
        "FROM scratch\nCOPY main.txt /srv/\n",
    );
    write(root, "services/worker/worker.txt", "worker\n");
    write(
        root,
        "services/worker/Dockerfile",
        "FROM scratch\nCOPY libs/util/ /srv/libs/\nCOPY services/worker/worker.txt /srv/\n",
    );
    write(root, "web/node_modules/pkg/Dockerfile", "FROM scratch\n");
    write(root, ".dockerignore", ".git\n");
    git(root, &["init", "-q", "-b", "main"]);
    git(root, &["add", "."]);
    git(root, &["commit", "-qm", "monorepo"]);
    write(root, "untracked/Dockerfile", "FROM scratch\n");
    dir
}

#[test]
fn init_writes_a_hoist_yaml_that_loads_and_builds() {
    let repo = monorepo();
    let root = repo.path();
    let out = hoist(root, &["init", "--registry", "reg.example/org"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = stdout(&out);
    assert!(
        report.contains("workflow  .github/workflows/images.yml"),
        "{report}"
    );
    let yaml = std::fs::read_to_string(root.join("hoist.yaml")).unwrap();
    for want in [
        "\nworkflow: '.github/workflows/images.yml'   # on.push has path filters\n",
        "\n# workflow: '.github/workflows/test.yml'   # no path filters on push\n",
        "\nregistry: 'reg.example/org'\n",
        "  api:\n    dockerfile: 'services/api/Dockerfile'\n    context: 'services/api'   # the Dockerfile's directory\n",
        "  worker:\n    dockerfile: 'services/worker/Dockerfile'\n    context: '.'   # the repository root: the Dockerfile copies libs/util, which is there and not in services/worker/\n",
    ] {
        assert!(yaml.contains(want), "{want:?} in:\n{yaml}");
    }
    assert!(!yaml.contains("node_modules"), "{yaml}");
    assert!(!yaml.contains("untracked"), "{yaml}");
    assert!(!yaml.contains("dialect:"), "a GitHub workflow: {yaml}");

    // The file drives the other commands: a dry run plans both images.
    let nowhere = [("DOCKER_HOST", "unix:///nonexistent/docker.sock")];
    let out = hoist(root, &["build", "--dry-run", "--format", "json"], &nowhere);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let images = plan["images"].as_array().unwrap();
    let names: Vec<&str> = images.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["api", "worker"]);
    let head = git(root, &["rev-parse", "HEAD"]);
    for image in images {
        assert_eq!(image["build_args"]["GIT_SHA"], head.as_str(), "{image}");
        assert!(
            image["tags"][0]
                .as_str()
                .unwrap()
                .starts_with("reg.example/org/"),
            "{image}"
        );
    }
    assert_eq!(images[0]["context"], "services/api");
    assert_eq!(images[1]["context"], ".");
    // And `hoist changes` reads the chosen workflow.
    let out = hoist(root, &["changes", "--check"], &[]);
    assert!(
        !stderr(&out).contains("cannot read workflow"),
        "{}",
        stderr(&out)
    );

    // An existing hoist.yaml is not replaced without --force.
    std::fs::write(root.join("hoist.yaml"), "# mine\n").unwrap();
    let out = hoist(root, &["init"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("hoist.yaml already exists"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(root.join("hoist.yaml")).unwrap(),
        "# mine\n"
    );
    let out = hoist(root, &["init", "--force"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let yaml = std::fs::read_to_string(root.join("hoist.yaml")).unwrap();
    assert!(yaml.contains("\n# registry: "), "no registry given: {yaml}");
    let leftovers: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("hoist-init"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn init_outside_git_or_with_a_bad_registry_is_an_input_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = hoist(dir.path(), &["init"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not in a git repository"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("hoist.yaml").exists());

    let repo = monorepo();
    let out = hoist(
        repo.path(),
        &["init", "--registry", "https://user:pw@reg.example"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--registry"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("pw@"), "{}", stderr(&out));
    assert!(!repo.path().join("hoist.yaml").exists());
}
