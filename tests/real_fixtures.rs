//! Every real-world workflow in `../shared/fixtures/real/` either yields its
//! push filters or fails with the precise error. The files are third-party,
//! so they are read from beside the checkout, never copied in; without that
//! folder the test says so and passes, except in CI, where it must be there.

use hoist::changes::{ChangedFiles, PushRef, Trigger, decide};
use hoist::workflow::{FilterKey, Workflow};
use std::path::{Path, PathBuf};

fn fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/real");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but {} is missing",
        dir.display()
    );
    eprintln!(
        "skipped: {} is absent (it sits beside the checkout in CI)",
        dir.display()
    );
    None
}

enum Expect {
    /// The push filters: branches, the number of `paths` patterns, and the
    /// line of the last one.
    Push {
        branches: &'static [&'static str],
        paths: Option<(usize, usize)>,
    },
    NotOnPush(&'static [&'static str]),
    /// The error message contains this text and points at this line.
    Error(&'static str, usize),
}

const CASES: &[(&str, Expect)] = &[
    (
        "gitea-harness-replays-quoted-on.yml",
        Expect::Push {
            branches: &["main", "staging"],
            paths: Some((4, 48)),
        },
    ),
    (
        "gitea-lint-curl-status-capture.yml",
        Expect::Push {
            branches: &["main", "staging"],
            paths: Some((3, 48)),
        },
    ),
    (
        "gitea-pwsi-1688c1a9-ecr-paths.yml",
        Expect::Push {
            branches: &["main"],
            paths: Some((5, 32)),
        },
    ),
    (
        "gitea-pwsi-HEAD.yml",
        Expect::Push {
            branches: &["main", "staging"],
            paths: Some((7, 75)),
        },
    ),
    (
        "gitea-pwsi-last-ecr-b89ca28a.yml",
        Expect::Push {
            branches: &["main"],
            paths: None,
        },
    ),
    (
        "gitea-redeploy-on-main-null-on-157a6409ab.yml",
        Expect::Error("`on:` is empty", 46),
    ),
    (
        "gitea-staging-tenant-cd.yml",
        Expect::Push {
            branches: &["main"],
            paths: Some((8, 78)),
        },
    ),
    (
        "gitea-test-ops-scripts.yml",
        Expect::Push {
            branches: &["main", "staging"],
            paths: Some((9, 67)),
        },
    ),
    (
        "github-canary-verify.yml",
        Expect::NotOnPush(&["workflow_run", "workflow_dispatch"]),
    ),
    (
        "github-check-merge-group-trigger.yml",
        Expect::Push {
            branches: &["staging", "main"],
            paths: Some((2, 27)),
        },
    ),
    (
        "github-promote-latest.yml",
        Expect::NotOnPush(&["workflow_dispatch"]),
    ),
    (
        "github-publish-platform-heredoc-col1-5b476c3c4c.yml",
        Expect::Error("is not valid YAML", 70),
    ),
    (
        "github-pwsi-conflict-markers-b87c9e4dfe.yml",
        Expect::Error("merge conflict markers", 27),
    ),
    (
        "github-pwsi-old-HEAD.yml",
        Expect::Push {
            branches: &["main"],
            paths: Some((4, 14)),
        },
    ),
];

#[test]
fn every_real_workflow_yields_its_filters_or_a_precise_error() {
    let Some(dir) = fixtures() else { return };
    let mut failures = Vec::new();
    for (name, expect) in CASES {
        let path = dir.join(name);
        let parsed = Workflow::read(&path);
        let outcome = match (expect, &parsed) {
            (Expect::Push { branches, paths }, Ok(workflow)) => {
                let push = workflow.event("push").expect("a push event");
                let got_branches: Vec<&str> = push
                    .filter(FilterKey::Branches)
                    .map(|f| f.patterns.iter().map(|p| p.text.as_str()).collect())
                    .unwrap_or_default();
                let got_paths = push
                    .filter(FilterKey::Paths)
                    .map(|f| (f.patterns.len(), f.patterns.last().map_or(0, |p| p.line)));
                let compiled = Trigger::of(workflow).map(|_| ()).map_err(|e| e.to_string());
                (got_branches == *branches && got_paths == *paths && compiled.is_ok())
                    .then_some(())
                    .ok_or(format!(
                        "branches {got_branches:?}, paths {got_paths:?}, compiled {compiled:?}"
                    ))
            }
            (Expect::NotOnPush(events), Ok(workflow)) => {
                let names: Vec<&str> = workflow.events.iter().map(|e| e.name.as_str()).collect();
                let decision = decide(
                    &Trigger::of(workflow).unwrap(),
                    Some(&PushRef::Branch("main".into())),
                    &ChangedFiles::Known(vec!["a".into()]),
                )
                .unwrap();
                (names == *events
                    && !decision.run
                    && decision.reason.contains("not triggered by push"))
                .then_some(())
                .ok_or(format!("events {names:?}, decision {decision:?}"))
            }
            (Expect::Error(text, line), Err(error)) => {
                let got_line = error.location.as_ref().map(|l| l.line);
                (error.message.contains(text) && got_line == Some(*line) && error.exit_code() == 2)
                    .then_some(())
                    .ok_or(format!("error at line {got_line:?}: {error}"))
            }
            (_, Ok(_)) => Err("parsed, but an error was expected".to_string()),
            (_, Err(error)) => Err(format!("failed: {error}")),
        };
        if let Err(why) = outcome {
            failures.push(format!("{name}: {why}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_fixture_is_covered() {
    let Some(dir) = fixtures() else { return };
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".yml") && !CASES.iter().any(|(n, _)| *n == name) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "fixtures without an expectation: {missing:?}"
    );
}

#[test]
fn the_reference_publish_filters_decide_like_github() {
    let Some(dir) = fixtures() else { return };
    let workflow = Workflow::read(&dir.join("gitea-pwsi-1688c1a9-ecr-paths.yml")).unwrap();
    let trigger = Trigger::of(&workflow).unwrap();
    let main = PushRef::Branch("main".into());
    let run = |files: &[&str], push_ref: &PushRef| {
        let files = ChangedFiles::Known(files.iter().map(|f| f.to_string()).collect());
        decide(&trigger, Some(push_ref), &files).unwrap()
    };
    let decision = run(&["workspace-server/cmd/main.go", "README.md"], &main);
    assert!(decision.run);
    assert_eq!(decision.matched, ["workspace-server/cmd/main.go"]);
    assert_eq!(decision.changed, 2);
    assert!(!run(&["docs/architecture.md", "README.md"], &main).run);
    assert!(run(&["manifest.json"], &main).run);
    assert!(!run(&["canvas/app/page.tsx"], &PushRef::Branch("staging".into())).run);
    // Tags are not selected: the workflow filters branches only.
    assert!(!run(&["canvas/app/page.tsx"], &PushRef::Tag("v1.0.0".into())).run);
}

#[test]
fn every_real_manifest_parses_into_its_dependencies() {
    use hoist::manifest::{Category, GitRef};
    let Some(dir) = fixtures() else { return };
    // (file, plugins, workspace templates, org templates, private, pinned shas)
    let cases = [
        ("manifest-2e87bab0-private-flag.json", 21, 7, 3, 3, 31),
        ("manifest-8e304e69-initial.json", 20, 8, 5, 0, 0),
        ("manifest-952bfb3c-json5-comment.json", 21, 9, 6, 0, 0),
        ("manifest-e6305c5e-first-sha-pinned.json", 21, 6, 3, 0, 30),
        ("manifest-new-HEAD.json", 22, 6, 3, 1, 31),
        ("manifest-old-HEAD.json", 21, 8, 6, 0, 0),
    ];
    let mut covered = 0;
    for (name, plugins, workspace, org, private, pinned) in cases {
        let deps = hoist::manifest::read(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let count = |category| deps.iter().filter(|d| d.category == category).count();
        let got = (
            count(Category::Plugins),
            count(Category::WorkspaceTemplates),
            count(Category::OrgTemplates),
            deps.iter().filter(|d| d.private).count(),
            deps.iter()
                .filter(|d| matches!(d.git_ref, GitRef::Commit(_)))
                .count(),
        );
        assert_eq!(got, (plugins, workspace, org, private, pinned), "{name}");
        assert!(deps.iter().all(|d| !d.repo.contains("://")), "{name}");
        covered += 1;
    }
    let on_disk = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("manifest-")
        })
        .count();
    assert_eq!(covered, on_disk, "a real manifest without an expectation");
}
