//! `hoist changes` end to end: the binary against real git repositories
//! made in temp dirs, with the environment a Gitea or GitHub runner sets.

use std::io::Write;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const WORKFLOW: &str = ".gitea/workflows/publish-workspace-server-image.yml";

/// The reference pipeline's filters.
const PUBLISH: &str = r#"name: publish-workspace-server-image
on:
  push:
    branches: [main, staging]
    paths:
      - 'workspace-server/**'
      - 'canvas/**'
      - 'manifest.json'
      - 'scripts/**'
      - '.gitea/workflows/publish-workspace-server-image.yml'
  workflow_dispatch:
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: echo build
"#;

struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    /// A repository on `main` with the publish workflow and a few files.
    fn new() -> Repo {
        let repo = Repo {
            dir: tempfile::tempdir().unwrap(),
        };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.write(WORKFLOW, PUBLISH);
        repo.write("workspace-server/main.go", "package main\n");
        repo.write("canvas/app.tsx", "export {}\n");
        repo.write("manifest.json", "{}\n");
        repo.write("scripts/build.sh", "true\n");
        repo.write("docs/guide.md", "# guide\n");
        repo.commit("initial");
        repo
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, file: &str, text: &str) {
        let path = self.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn git(&self, args: &[&str]) -> String {
        common::git(self.path(), args)
    }

    /// Commits everything; returns the new commit's sha.
    fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    fn hoist(&self, args: &[&str]) -> Run {
        Run::new(self.path()).args(args)
    }
}

/// A hoist invocation with a clean CI environment.
struct Run {
    command: Command,
    stdin: Option<String>,
}

impl Run {
    fn new(dir: &Path) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hoist"));
        command.current_dir(dir);
        for name in [
            "GITHUB_ACTIONS",
            "GITEA_ACTIONS",
            "GITHUB_REF",
            "GITHUB_EVENT_PATH",
            "GITHUB_OUTPUT",
            "GITHUB_STEP_SUMMARY",
            "HOIST_WORKFLOW",
            "HOIST_CONFIG",
        ] {
            command.env_remove(name);
        }
        Run {
            command,
            stdin: None,
        }
    }

    fn args(mut self, args: &[&str]) -> Run {
        self.command.args(args);
        self
    }

    fn env(mut self, name: &str, value: impl AsRef<std::ffi::OsStr>) -> Run {
        self.command.env(name, value);
        self
    }

    fn stdin(mut self, text: &str) -> Run {
        self.stdin = Some(text.to_string());
        self
    }

    fn output(mut self) -> Output {
        self.command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.command.spawn().unwrap();
        let input = self.stdin.take().unwrap_or_default();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs `--format json` and returns the decision.
    fn json(self) -> serde_json::Value {
        let out = self.args(&["--format", "json"]).output();
        assert_eq!(
            out.status.code(),
            Some(0),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn base_and_head_decide_from_the_diff() {
    let repo = Repo::new();
    let first = repo.git(&["rev-parse", "HEAD"]);
    repo.write("docs/guide.md", "# guide, edited\n");
    let docs = repo.commit("docs only");
    repo.write("workspace-server/handler.go", "package main\n");
    let server = repo.commit("server");

    let skip = repo
        .hoist(&["changes", "--base", &first, "--head", &docs])
        .json();
    assert_eq!(skip["run"], false);
    assert_eq!(skip["changed"], 1);
    assert_eq!(skip["matched"], serde_json::json!([]));
    assert!(
        skip["reason"]
            .as_str()
            .unwrap()
            .contains("none of the 1 changed files")
    );

    let run = repo
        .hoist(&["changes", "--base", &first, "--head", &server])
        .json();
    assert_eq!(run["run"], true);
    assert_eq!(run["changed"], 2);
    assert_eq!(
        run["matched"],
        serde_json::json!(["workspace-server/handler.go"])
    );

    // Text output: the decision line, then the matched files.
    let out = repo
        .hoist(&["changes", "--base", &docs, "--head", &server])
        .output();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out).0,
        "run: 1 of 1 changed files match `paths`\n  workspace-server/handler.go\n"
    );
}

#[test]
fn defaults_to_the_last_commit_on_the_current_branch() {
    let repo = Repo::new();
    repo.write("canvas/page.tsx", "export {}\n");
    repo.commit("canvas");
    let decision = repo.hoist(&["changes"]).json();
    assert_eq!(decision["run"], true, "{decision}");
    repo.git(&["checkout", "-q", "-b", "feature/x"]);
    let decision = repo.hoist(&["changes"]).json();
    assert_eq!(decision["run"], false);
    assert_eq!(
        decision["reason"],
        "branch 'feature/x' is not selected by `branches`"
    );
}

#[test]
fn reads_the_push_event_and_writes_ci_outputs() {
    let repo = Repo::new();
    let before = repo.git(&["rev-parse", "HEAD"]);
    repo.write("manifest.json", "{\"version\": 1}\n");
    let after = repo.commit("bump manifest");
    let ci = tempfile::tempdir().unwrap();
    let event = ci.path().join("event.json");
    std::fs::write(
        &event,
        serde_json::json!({"ref": "refs/heads/staging", "before": before, "after": after})
            .to_string(),
    )
    .unwrap();
    let output = ci.path().join("output");
    let summary = ci.path().join("summary.md");
    let out = repo
        .hoist(&["changes"])
        .env("GITHUB_EVENT_PATH", &event)
        .env("GITHUB_OUTPUT", &output)
        .env("GITHUB_STEP_SUMMARY", &summary)
        .output();
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert!(
        text(&out)
            .0
            .starts_with("run: 1 of 1 changed files match `paths`")
    );
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "run=true\n");
    let summary = std::fs::read_to_string(&summary).unwrap();
    assert!(
        summary.contains("**run**") && summary.contains("<code>manifest.json</code>"),
        "{summary}"
    );

    // GITHUB_REF wins over the event's ref; a skip writes run=false.
    let out = repo
        .hoist(&["changes"])
        .env("GITHUB_EVENT_PATH", &event)
        .env("GITHUB_REF", "refs/heads/dev")
        .env("GITHUB_OUTPUT", &output)
        .output();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "run=true\nrun=false\n"
    );
}

#[test]
fn a_new_branch_fails_open() {
    let repo = Repo::new();
    let head = repo.git(&["rev-parse", "HEAD"]);
    let dir = tempfile::tempdir().unwrap();
    let event = dir.path().join("event.json");
    let zeros = "0".repeat(40);
    std::fs::write(
        &event,
        serde_json::json!({"ref": "refs/heads/main", "before": zeros, "after": head}).to_string(),
    )
    .unwrap();
    let decision = repo
        .hoist(&["changes"])
        .env("GITHUB_EVENT_PATH", &event)
        .json();
    assert_eq!(decision["run"], true);
    let reason = decision["reason"].as_str().unwrap();
    assert!(
        reason.contains("new branch") && reason.contains("fail open"),
        "{reason}"
    );

    // A deleted branch has nothing to build.
    std::fs::write(
        &event,
        serde_json::json!({"ref": "refs/heads/main", "before": head, "after": zeros}).to_string(),
    )
    .unwrap();
    let decision = repo
        .hoist(&["changes"])
        .env("GITHUB_EVENT_PATH", &event)
        .json();
    assert_eq!(decision["run"], false);
    assert!(decision["reason"].as_str().unwrap().contains("deleted"));
}

#[test]
fn a_base_missing_from_a_shallow_clone_fails_open() {
    let repo = Repo::new();
    let before = repo.git(&["rev-parse", "HEAD"]);
    repo.write("docs/other.md", "x\n");
    let after = repo.commit("docs");
    let clone = tempfile::tempdir().unwrap();
    let url = format!("file://{}", repo.path().display());
    let status = Command::new("git")
        .args(["clone", "-q", "--depth", "1", &url])
        .arg(clone.path().join("c"))
        .status()
        .unwrap();
    assert!(status.success());
    let decision = Run::new(&clone.path().join("c"))
        .args(&[
            "changes",
            "--base",
            &before,
            "--head",
            &after,
            "--ref",
            "refs/heads/main",
        ])
        .json();
    assert_eq!(decision["run"], true);
    let reason = decision["reason"].as_str().unwrap();
    assert!(
        reason.contains("not in this clone") && reason.contains("fail open"),
        "{reason}"
    );
    // Only a sha can be missing history: a name the clone does not hold,
    // or an empty base (an unset `github.event.before`), is an input error.
    for base in ["nosuchbranch", ""] {
        let out = Run::new(&clone.path().join("c"))
            .args(&[
                "changes",
                "--base",
                base,
                "--head",
                &after,
                "--ref",
                "refs/heads/main",
            ])
            .output();
        assert_eq!(out.status.code(), Some(2), "{base:?}: {out:?}");
    }
}

#[test]
fn a_rename_counts_both_paths() {
    let repo = Repo::new();
    let start = repo.git(&["rev-parse", "HEAD"]);
    // Out of a filtered directory: the old path matches.
    repo.git(&["mv", "canvas/app.tsx", "docs/app.tsx"]);
    let moved_out = repo.commit("move out");
    let decision = repo
        .hoist(&["changes", "--base", &start, "--head", &moved_out])
        .json();
    assert_eq!(decision["changed"], 2);
    assert_eq!(decision["matched"], serde_json::json!(["canvas/app.tsx"]));
    // Into a filtered directory: the new path matches.
    repo.git(&["mv", "docs/guide.md", "scripts/guide.md"]);
    let moved_in = repo.commit("move in");
    let decision = repo
        .hoist(&["changes", "--base", &moved_out, "--head", &moved_in])
        .json();
    assert_eq!(decision["matched"], serde_json::json!(["scripts/guide.md"]));
}

#[test]
fn reads_changed_files_from_stdin_or_a_file() {
    let repo = Repo::new();
    let decision = repo
        .hoist(&["changes", "--files-from", "-", "--ref", "refs/heads/main"])
        .stdin("docs/a.md\n./canvas/b.tsx\r\n\n")
        .json();
    assert_eq!(decision["changed"], 2);
    assert_eq!(decision["matched"], serde_json::json!(["canvas/b.tsx"]));
    repo.write("changed.txt", "README.md\n");
    let decision = repo
        .hoist(&[
            "changes",
            "--files-from",
            "changed.txt",
            "--ref",
            "refs/tags/v1.2.0",
        ])
        .json();
    assert_eq!(decision["run"], false);
    assert!(
        decision["reason"]
            .as_str()
            .unwrap()
            .contains("tag pushes do not trigger it")
    );
}

#[test]
fn the_push_event_is_read_only_when_needed() {
    let repo = Repo::new();
    let missing = repo.path().join("no-such-event.json");
    let decision = repo
        .hoist(&["changes", "--files-from", "-", "--ref", "refs/heads/main"])
        .env("GITHUB_EVENT_PATH", &missing)
        .stdin("canvas/a.tsx\n")
        .json();
    assert_eq!(decision["run"], true, "flags name everything: {decision}");
    let out = repo
        .hoist(&["changes"])
        .env("GITHUB_EVENT_PATH", &missing)
        .output();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out)
            .1
            .contains("cannot read push event (GITHUB_EVENT_PATH)"),
        "{:?}",
        text(&out)
    );
}

#[test]
fn bad_input_exits_2_with_the_place_and_a_hint() {
    let repo = Repo::new();
    let out = repo.hoist(&["changes", "--workflow", "nope.yml"]).output();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).1.contains("cannot read workflow nope.yml"),
        "{:?}",
        text(&out)
    );

    repo.write(
        "bad.yml",
        "on:\n  push:\n    paths:\n      - 'ok/**'\n      - 'src/[a.]'\n",
    );
    let out = repo.hoist(&["changes", "--workflow", "bad.yml"]).output();
    assert_eq!(out.status.code(), Some(2));
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("--> bad.yml:5") && stderr.contains("'src/[a.]'"),
        "{stderr}"
    );

    repo.write(
        "both.yml",
        "on:\n  push:\n    paths: [a]\n    paths-ignore: [b]\n",
    );
    let out = repo
        .hoist(&["changes", "--workflow", "both.yml"])
        .env("GITHUB_ACTIONS", "true")
        .output();
    assert_eq!(out.status.code(), Some(2));
    let (stdout, stderr) = text(&out);
    assert!(
        stderr.contains("has both `paths` and `paths-ignore`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("\n::error file=both.yml,line=4::"),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");

    repo.write("hoist.yaml", "workflow: bad.yml\nregistyr: x\n");
    let out = repo.hoist(&["changes"]).output();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).1.contains("unknown field `registyr`"),
        "{:?}",
        text(&out)
    );

    let out = repo.hoist(&["changes", "--base", "HEAD"]).output();
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit 2");
}

#[test]
fn the_config_file_names_the_workflow() {
    let repo = Repo::new();
    repo.write("ci/other.yml", "on:\n  push:\n    branches: [release]\n");
    repo.write("hoist.yaml", "# hoist\nworkflow: ci/other.yml\n");
    repo.commit("config");
    let decision = repo.hoist(&["changes"]).json();
    assert_eq!(
        decision["reason"],
        "branch 'main' is not selected by `branches`"
    );
    let decision = repo
        .hoist(&["changes"])
        .env("HOIST_WORKFLOW", WORKFLOW)
        .json();
    assert_eq!(
        decision["run"], false,
        "the config commit touches no filtered path"
    );
    assert!(
        decision["reason"]
            .as_str()
            .unwrap()
            .contains("none of the 2 changed files")
    );
}

#[test]
fn check_finds_patterns_that_match_nothing() {
    let repo = Repo::new();
    let clean = repo.hoist(&["changes", "--check"]).output();
    assert_eq!(clean.status.code(), Some(0), "{:?}", text(&clean));
    assert!(text(&clean).0.contains("no findings"));

    repo.write(
        WORKFLOW,
        &PUBLISH.replace(
            "'manifest.json'",
            "'manifest.json'\n      - '.github/workflows/publish-platform-image.yml'",
        ),
    );
    repo.write(
        ".gitea/workflows/pr.yml",
        "on:\n  pull_request:\n    paths: ['!docs/**']\n    paths-ignore:\n      - '!canvas/**'\n",
    );
    repo.commit("lint targets");
    let out = repo.hoist(&["changes", "--check"]).output();
    assert_eq!(out.status.code(), Some(1));
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains(&format!(
            "{WORKFLOW}:9: on.push.paths: '.github/workflows/publish-platform-image.yml' matches no file tracked at HEAD"
        )),
        "{stdout}"
    );
    assert!(stdout.ends_with("1 finding\n"), "{stdout}");

    let out = repo
        .hoist(&[
            "changes",
            "--check",
            "--workflow",
            ".gitea/workflows/pr.yml",
            "--format",
            "json",
        ])
        .output();
    assert_eq!(out.status.code(), Some(1));
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let summary: Vec<(u64, &str)> = findings
        .iter()
        .map(|f| (f["line"].as_u64().unwrap(), f["message"].as_str().unwrap()))
        .collect();
    assert_eq!(summary.len(), 3, "{summary:?}");
    assert!(
        summary
            .iter()
            .any(|(l, m)| *l == 3 && m.contains("only `!` patterns"))
    );
    assert!(
        summary
            .iter()
            .any(|(l, m)| *l == 4 && m.contains("GitHub rejects"))
    );
    assert!(
        summary
            .iter()
            .any(|(l, m)| *l == 5 && m.contains("`!` in `paths-ignore`"))
    );
}

#[test]
fn works_from_another_directory_with_dash_c() {
    let repo = Repo::new();
    repo.write("canvas/x.tsx", "x\n");
    repo.commit("canvas");
    let elsewhere = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let decision = Run::new(&elsewhere)
        .args(&["-C", repo.path().to_str().unwrap(), "changes"])
        .json();
    assert_eq!(decision["matched"], serde_json::json!(["canvas/x.tsx"]));
}

#[test]
fn the_dialect_comes_from_the_flag_the_config_or_the_runner() {
    let repo = Repo::new();
    repo.write(
        "w.yml",
        "on:\n  push:\n    paths-ignore: ['.github/**', '!.github/workflows/build.yml']\n",
    );
    let decide = |run: Run| run.stdin(".github/workflows/build.yml\n").json();
    let args = [
        "changes",
        "--workflow",
        "w.yml",
        "--files-from",
        "-",
        "--ref",
        "main",
    ];

    let github = decide(repo.hoist(&args));
    assert_eq!(
        (&github["run"], &github["dialect"]),
        (&serde_json::json!(true), &serde_json::json!("github"))
    );
    let gitea = decide(repo.hoist(&args).env("GITEA_ACTIONS", "true"));
    assert_eq!(
        (&gitea["run"], &gitea["dialect"]),
        (&serde_json::json!(false), &serde_json::json!("gitea"))
    );
    assert_eq!(
        gitea["reason"],
        "Gitea: all 1 changed files are ignored by `paths-ignore`"
    );
    let flag = decide(repo.hoist(&args).args(&["--dialect", "gitea"]));
    assert_eq!(flag["run"], false);

    // hoist.yaml beats the runner, the flag beats hoist.yaml.
    repo.write("hoist.yaml", "dialect: github\n");
    let file = decide(repo.hoist(&args).env("GITEA_ACTIONS", "true"));
    assert_eq!(file["dialect"], "github");
    let flag = decide(
        repo.hoist(&args)
            .env("GITEA_ACTIONS", "true")
            .args(&["--dialect", "gitea"]),
    );
    assert_eq!(flag["dialect"], "gitea");
    repo.write("hoist.yaml", "dialect: forgejo\n");
    let out = repo.hoist(&args).stdin("a\n").output();
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    assert!(text(&out).1.contains("hoist.yaml"), "{:?}", text(&out));
}

#[test]
fn gitea_ignores_every_branch_a_negated_ignore_item_does_not_match() {
    let repo = Repo::new();
    repo.write(
        "w.yml",
        "on:\n  push:\n    branches-ignore: ['release/**', '!release/keep']\n",
    );
    for branch in ["main", "release/keep"] {
        let args = ["changes", "--workflow", "w.yml", "--files-from", "-"];
        let git_ref = format!("refs/heads/{branch}");
        let github = repo
            .hoist(&args)
            .args(&["--ref", &git_ref])
            .stdin("a\n")
            .json();
        assert_eq!(github["run"], true, "{branch}: {github}");
        let gitea = repo
            .hoist(&args)
            .args(&["--ref", &git_ref, "--dialect", "gitea"])
            .stdin("a\n")
            .json();
        assert_eq!(gitea["run"], false, "{branch}: {gitea}");
    }
    let out = repo
        .hoist(&[
            "changes",
            "--workflow",
            "w.yml",
            "--files-from",
            "-",
            "--ref",
            "main",
            "--dialect",
            "gitea",
        ])
        .stdin("a\n")
        .output();
    assert_eq!(
        text(&out).0,
        "skip: Gitea: branch 'main' is ignored by `branches-ignore` ('!release/keep': Gitea ignores every name a `!` pattern does not match)\n"
    );
}

#[test]
fn gitea_never_runs_a_workflow_with_an_unknown_key_or_a_merge_key() {
    let repo = Repo::new();
    repo.write(
        "typo.yml",
        "on:\n  push:\n    branches: [main]\n    paths_ignored: ['docs/**']\n",
    );
    repo.write(
        "merge.yml",
        "x: &filters\n  branches: [main]\non:\n  push:\n    <<: *filters\n",
    );
    for (file, reason) in [
        (
            "typo.yml",
            "`on.push.paths_ignored` is not a filter Gitea knows",
        ),
        (
            "merge.yml",
            "a YAML merge key `<<:` under `on.push` (line 5)",
        ),
    ] {
        let args = [
            "changes",
            "--workflow",
            file,
            "--files-from",
            "-",
            "--ref",
            "main",
        ];
        let github = repo.hoist(&args).stdin("canvas/a.tsx\n").json();
        assert_eq!(github["run"], true, "{file}: {github}");
        let gitea = repo
            .hoist(&args)
            .args(&["--dialect", "gitea"])
            .stdin("canvas/a.tsx\n")
            .json();
        assert_eq!(gitea["run"], false, "{file}: {gitea}");
        assert!(
            gitea["reason"].as_str().unwrap().contains(reason),
            "{file}: {gitea}"
        );
    }
}

#[test]
fn gitea_decides_a_new_branch_on_its_head_commit() {
    let repo = Repo::new();
    repo.write("docs/guide.md", "# edited\n");
    let docs = repo.commit("docs");
    repo.write("canvas/app.tsx", "export const x = 1\n");
    let canvas = repo.commit("canvas");
    let dir = tempfile::tempdir().unwrap();
    let event = dir.path().join("event.json");
    let zeros = "0".repeat(40);
    let decide = |after: &str, dialect: &str| {
        std::fs::write(
            &event,
            serde_json::json!({"ref": "refs/heads/main", "before": zeros, "after": after})
                .to_string(),
        )
        .unwrap();
        repo.hoist(&["changes", "--dialect", dialect])
            .env("GITHUB_EVENT_PATH", &event)
            .json()
    };
    // GitHub's before is all zeros too: hoist cannot know, so it runs.
    assert_eq!(decide(&docs, "github")["run"], true);
    let gitea = decide(&docs, "gitea");
    assert_eq!(gitea["run"], false, "{gitea}");
    assert_eq!(gitea["changed"], 1);
    let gitea = decide(&canvas, "gitea");
    assert_eq!(gitea["run"], true, "{gitea}");
    assert_eq!(gitea["matched"], serde_json::json!(["canvas/app.tsx"]));
}

#[test]
fn check_finds_what_users_get_wrong_with_file_and_line() {
    let repo = Repo::new();
    repo.write(".github/workflows/build.yml", "on: push\njobs: {}\n");
    repo.write(
        "w.yml",
        r#"x: &filters
  branches: [main]
on:
  push:
    branch: main
    paths_ignored: ['docs/**']
    <<: *filters
    tags:
    paths-ignore: ['.github/**', '!.github/workflows/build.yml', '']
  pull_request:
    branches: ['!main']
    paths: []
  release:
    branches-ignore: ['release/**', '!release/keep']
"#,
    );
    repo.commit("workflows");
    let out = repo
        .hoist(&["changes", "--check", "--workflow", "w.yml"])
        .output();
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    let (stdout, _) = text(&out);
    for expected in [
        "w.yml:5: on.push.branch: `branch` is not a filter of `on.push`: GitHub ignores it and runs every push, Gitea never matches it, so the workflow never runs on push; did you mean `branches`?",
        "w.yml:6: on.push.paths_ignored: `paths_ignored` is not a filter of `on.push`",
        "did you mean `paths-ignore`?",
        "w.yml:7: on.push.<<: a YAML merge key (`<<:`) in `on.push`: GitHub does not support merge keys",
        "w.yml:8: on.push.tags: `tags:` has nothing after it (null)",
        "w.yml:9: on.push.paths-ignore: '' an empty pattern matches no file",
        "w.yml:11: on.pull_request.branches: `branches` has only `!` patterns",
        "w.yml:12: on.pull_request.paths: GitHub and Gitea decide this filter differently: for a pull request changing only",
        "w.yml:14: on.release.branches-ignore: '!release/keep' `!` in `branches-ignore` re-includes on GitHub, but on Gitea ignores every branch it does not match (for a `release` event for `main`, GitHub runs and Gitea skips)",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }

    // The `!` in paths-ignore, with the push that shows the difference.
    repo.write(
        "ignore.yml",
        "on:\n  push:\n    paths-ignore: ['.github/**', '!.github/workflows/build.yml']\n",
    );
    repo.commit("ignore");
    let out = repo
        .hoist(&[
            "changes",
            "--check",
            "--workflow",
            "ignore.yml",
            "--format",
            "json",
        ])
        .output();
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["line"], 3);
    assert_eq!(findings[0]["pattern"], "!.github/workflows/build.yml");
    assert!(
        findings[0]["message"].as_str().unwrap().contains(
            "for a push changing only `.github/workflows/build.yml`, GitHub runs and Gitea skips"
        ),
        "{findings:?}"
    );
}

#[test]
fn files_from_reads_git_quoted_and_nul_separated_names() {
    let repo = Repo::new();
    repo.write("w.yml", "on:\n  push:\n    paths: ['i18n/**']\n");
    repo.commit("workflow");
    let args = [
        "changes",
        "--workflow",
        "w.yml",
        "--files-from",
        "-",
        "--ref",
        "main",
    ];
    // As `git diff --name-only` prints it with the default core.quotePath.
    repo.write("i18n/résumé.json", "{}\n");
    repo.commit("i18n");
    let printed = repo.git(&["diff", "--name-only", "HEAD~1", "HEAD"]);
    assert_eq!(printed, "\"i18n/r\\303\\251sum\\303\\251.json\"");
    let decision = repo.hoist(&args).stdin(&format!("{printed}\n")).json();
    assert_eq!(decision["run"], true, "{decision}");
    assert_eq!(decision["matched"], serde_json::json!(["i18n/résumé.json"]));

    // `-z`: detected from the NUL, or forced by --files-from-nul.
    let decision = repo
        .hoist(&args)
        .stdin("docs/a.md\0i18n/new\nline.json\0")
        .json();
    assert_eq!(decision["changed"], 2);
    assert_eq!(
        decision["matched"],
        serde_json::json!(["i18n/new\nline.json"])
    );
    let decision = repo
        .hoist(&args)
        .args(&["--files-from-nul"])
        .stdin("\"i18n/quoted\"")
        .json();
    assert_eq!(
        decision["run"], false,
        "a NUL list is not unquoted: {decision}"
    );

    // A quoted name git could not have printed is an input error at its line.
    let out = repo
        .hoist(&args)
        .stdin("docs/a.md\n\"i18n/\\q\"\n")
        .output();
    assert_eq!(out.status.code(), Some(2));
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("line 2 of <stdin>") && stderr.contains("hint:"),
        "{stderr}"
    );
    let out = repo.hoist(&args).stdin("\"i18n/\\377\"\n").output();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("not valid UTF-8"), "{:?}", text(&out));
}

#[test]
fn a_base_that_does_not_resolve_in_a_full_clone_is_an_input_error() {
    let repo = Repo::new();
    let out = repo
        .hoist(&["changes", "--base", "no-such-commit", "--head", "HEAD"])
        .output();
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    let (stdout, stderr) = text(&out);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("--base 'no-such-commit' names no commit of this repository")
            && stderr.contains("hint:"),
        "{stderr}"
    );
    let unknown_sha = "1234567890abcdef1234567890abcdef12345678";
    let out = repo
        .hoist(&["changes", "--base", unknown_sha, "--head", "HEAD"])
        .output();
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
}

/// Without configuration hoist reads the reference repository's workflow;
/// where there is none, the hint says how to name another.
#[test]
fn a_missing_default_workflow_names_the_ways_to_choose_one() {
    let repo = Repo::new();
    std::fs::remove_file(repo.path().join(WORKFLOW)).unwrap();
    let out = repo.hoist(&["changes"]).output();
    assert_eq!(out.status.code(), Some(2));
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("cannot read workflow .gitea/workflows/publish-workspace-server-image.yml"),
        "{stderr}"
    );
    let hint = stderr
        .lines()
        .find(|l| l.starts_with("hint: "))
        .unwrap_or_default();
    for want in ["--workflow FILE", "`workflow:` in hoist.yaml", "hoist init"] {
        assert!(hint.contains(want), "{want:?} in {stderr}");
    }
}
