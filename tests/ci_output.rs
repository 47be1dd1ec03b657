//! Under a runner (`GITHUB_ACTIONS=true`), nothing hoist did not write can
//! become a workflow command: a changed file's name, a branch name, a build
//! log, a registry's error body. Each test runs hoist as a step would and
//! reads its whole output as a runner does ([`common::runner`]): the only
//! commands are the ones hoist means (groups, its own annotations), and the
//! step summary keeps its table.

mod common;

use common::docker::{SCRATCH_DOCKERFILE, require_engine, scratch_context, unique_name};
use common::runner::{self, Command};
use common::{git, hoist};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Output;

const WORKFLOW: &str = "on:\n  push:\n    branches: [main]\n    paths: ['src/**']\n";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The commands a runner would execute from a step's output.
fn executed(out: &Output) -> Vec<Command> {
    runner::commands(&text(out))
}

/// A repository whose last commit adds `name` under a workflow that
/// filters on `src/**`.
fn repo_adding(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    git(root, &["init", "-q", "-b", "main"]);
    std::fs::write(root.join("workflow.yml"), WORKFLOW).unwrap();
    git(root, &["add", "."]);
    git(root, &["commit", "-q", "-m", "first"]);
    let path = root.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "x").unwrap();
    git(root, &["add", "--", name]);
    git(root, &["commit", "-q", "-m", "add"]);
    dir
}

fn changes(root: &Path, extra: &[&str]) -> (Output, String) {
    let summary = root.join("summary.md");
    let mut args = vec!["changes", "--workflow", "workflow.yml"];
    args.extend_from_slice(extra);
    let out = hoist(
        root,
        &args,
        &[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
        ],
    );
    let markdown = std::fs::read_to_string(&summary).unwrap_or_default();
    (out, markdown)
}

/// Every table row of a markdown text has `cells` cells: no value split a
/// row or ended a cell.
fn assert_table(markdown: &str, cells: usize) {
    for row in markdown.lines().filter(|l| l.starts_with('|')) {
        let unescaped_pipes = row.matches('|').count();
        assert_eq!(
            unescaped_pipes,
            cells + 1,
            "a broken row: {row}\n{markdown}"
        );
    }
}

#[test]
fn a_changed_file_name_cannot_become_a_workflow_command() {
    let name = "src/a\n::warning title=x::hello";
    let repo = repo_adding(name);
    let (out, summary) = changes(repo.path(), &["--base", "HEAD~1", "--head", "HEAD"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(executed(&out), [], "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("  \"src/a\\n::warning title=x::hello\"\n"),
        "the name, quoted as git quotes it, on one line: {stdout}"
    );
    assert!(summary.contains("| matched files |"), "{summary}");
    assert_table(&summary, 1);
    assert!(!summary.contains("::warning"), "{summary}");
}

#[test]
fn a_legacy_command_inside_a_file_name_is_not_executed() {
    let repo = repo_adding("src/##[set-output name=run;]false|<b>x</b>");
    let (out, summary) = changes(repo.path(), &["--base", "HEAD~1", "--head", "HEAD"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(executed(&out), [], "{}", text(&out));
    assert_table(&summary, 1);
    assert!(!summary.contains("<b>"), "no HTML from a name: {summary}");
    // JSON keeps the name exactly, without a `##[` a runner would read.
    let json = hoist(
        repo.path(),
        &[
            "changes",
            "--workflow",
            "workflow.yml",
            "--base",
            "HEAD~1",
            "--head",
            "HEAD",
            "--format",
            "json",
        ],
        &[("GITHUB_ACTIONS", "true")],
    );
    assert_eq!(executed(&json), []);
    let decision: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        decision["matched"][0],
        "src/##[set-output name=run;]false|<b>x</b>"
    );
}

#[test]
fn a_branch_name_with_a_newline_stays_on_its_line() {
    let repo = repo_adding("src/main.go");
    let list = repo.path().join("files.txt");
    std::fs::write(&list, "src/main.go\n").unwrap();
    let (out, summary) = changes(
        repo.path(),
        &[
            "--ref",
            "refs/heads/feat\n::add-mask::x\n##[error]y",
            "--files-from",
            list.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(executed(&out), [], "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("skip: "), "{stdout}");
    assert!(
        stdout.contains("feat\\n::add-mask::x\\n##\\[error]y"),
        "{stdout}"
    );
    assert!(!summary.contains("::add-mask"), "{summary}");
}

/// A hoist.yaml with one image built from `dockerfile`.
fn project(dockerfile: &str) -> Option<(tempfile::TempDir, String)> {
    let dir = tempfile::tempdir().unwrap();
    scratch_context(&dir.path().join("ctx"), dockerfile)?;
    let name = unique_name("ci-output");
    std::fs::write(
        dir.path().join("hoist.yaml"),
        format!("images:\n  {name}:\n    context: ctx\n    dockerfile: ctx/Dockerfile\n"),
    )
    .unwrap();
    Some((dir, name))
}

fn remove_images(name: &str) {
    for tag in ["staging-0123456", "staging-latest"] {
        let _ =
            common::docker::try_docker(&[], &["image", "rm", "--force", &format!("{name}:{tag}")]);
    }
}

/// The build log hoist relays is shown as it is, and none of its lines is
/// executed: not `::add-mask::`, not `::stop-commands::` (which would
/// silence hoist's own commands after it), not a legacy `##[` command.
#[test]
fn a_build_log_cannot_issue_workflow_commands() {
    if !require_engine() {
        return;
    }
    let step = "echo '::add-mask::leaked'; echo '::stop-commands::stolen'; echo 'x ##[set-output name=y;]z'";
    for (builder, fails) in [("classic", false), ("buildkit", false), ("classic", true)] {
        let run = if fails {
            format!("{step}; exit 3")
        } else {
            step.to_string()
        };
        let dockerfile = format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"{run}\"]\n"
        );
        let Some((dir, name)) = project(&dockerfile) else {
            return;
        };
        let out = hoist(
            dir.path(),
            &["build", "--sha", SHA, "--builder", builder, "--no-cache"],
            &[("GITHUB_ACTIONS", "true")],
        );
        remove_images(&name);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(if fails { 1 } else { 0 }), "{all}");
        let names: Vec<String> = executed(&out).into_iter().map(|c| c.name).collect();
        let expected: &[&str] = if fails {
            &["group", "endgroup", "error"]
        } else {
            &["group", "endgroup"]
        };
        assert_eq!(names, expected, "{builder}, fails: {fails}: {all}");
        assert!(
            all.contains("::add-mask::leaked"),
            "the log is shown: {all}"
        );
    }
}

/// A registry whose every answer is a 403 with `body`.
fn hostile_registry(body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 8192];
            let _ = stream.read(&mut request);
            let answer = format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    addr
}

#[test]
fn a_registry_error_body_cannot_issue_workflow_commands() {
    let body = r#"{"errors":[{"code":"DENIED","message":"denied\n::add-mask::pwned\n##[stop-commands]t\n::warning::x"}]}"#;
    let registry = hostile_registry(body);
    let dir = tempfile::tempdir().unwrap();
    let out = hoist(
        dir.path(),
        &[
            "status",
            "--registry",
            &format!("{registry}/prefix"),
            "--image",
            "platform",
        ],
        &[("GITHUB_ACTIONS", "true")],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let names: Vec<String> = executed(&out).into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["error"], "only hoist's own annotation: {all}");
    assert!(
        all.contains("denied"),
        "the registry's words are shown: {all}"
    );
}

/// A scratch Dockerfile still builds under a runner: the guard changes no
/// output that could not be a command.
#[test]
fn plain_output_is_left_as_it_is() {
    if !require_engine() {
        return;
    }
    let Some((dir, name)) = project(SCRATCH_DOCKERFILE) else {
        return;
    };
    let out = hoist(
        dir.path(),
        &["build", "--sha", SHA, "--format", "json"],
        &[("GITHUB_ACTIONS", "true")],
    );
    remove_images(&name);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let document: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(document["images"][0]["name"], name.as_str());
}
