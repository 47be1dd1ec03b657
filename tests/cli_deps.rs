//! `hoist deps` end to end: the binary cloning over smart HTTP from a real
//! `git http-backend` on loopback (with a token), and from `file://` bare
//! repositories.

mod common;

use common::git_server::{
    BareRepo, GitServer, ServerOptions, bare_repo, bare_repo_with, lfs_object, requests,
    upload_pack_posts,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const TOKEN: &str = "tok-3f9a1c-never-print-me";
const TOKEN_ENV: &str = "HOIST_TEST_GIT_TOKEN";

/// A project dir with a manifest, and a dir of bare repos to serve.
struct World {
    project: tempfile::TempDir,
    repos: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        World {
            project: tempfile::tempdir().unwrap(),
            repos: tempfile::tempdir().unwrap(),
        }
    }

    fn repo(&self, name: &str) -> BareRepo {
        bare_repo(self.repos.path(), &format!("org/{name}.git"), 3, 4)
    }

    fn manifest(&self, text: &str) {
        std::fs::write(self.project.path().join("manifest.json"), text).unwrap();
    }

    fn out(&self) -> PathBuf {
        self.project.path().join(".tenant-bundle-deps")
    }

    fn serve(&self, options: ServerOptions) -> Option<GitServer> {
        GitServer::start(self.repos.path(), options)
    }

    /// `hoist deps` against `base_url`, with the token set or not.
    fn deps(&self, base_url: &str, token: Option<&str>, extra: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hoist"));
        command
            .current_dir(self.project.path())
            .args(["deps", "--base-url", base_url, "--token-env", TOKEN_ENV])
            .args(extra)
            .env_remove(TOKEN_ENV)
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITHUB_OUTPUT")
            .env_remove("GITHUB_STEP_SUMMARY")
            .env_remove("HOIST_CONFIG")
            .stdin(Stdio::null());
        if let Some(token) = token {
            command.env(TOKEN_ENV, token);
        }
        command.output().unwrap()
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(out), stderr(out)))
}

/// The entry `category/name` in a `--format json` document.
fn entry<'a>(doc: &'a serde_json::Value, category: &str, name: &str) -> &'a serde_json::Value {
    doc["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["category"] == category && d["name"] == name)
        .unwrap_or_else(|| panic!("no entry {category}/{name} in {doc}"))
}

/// The files of a cloned tree, relative to it, sorted; an empty directory
/// (which no git tree can hold) is listed with a trailing `/`.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, files: &mut Vec<String>) {
        let mut empty = true;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            empty = false;
            if path.is_dir() {
                walk(base, &path, files);
            } else {
                let relative = path.strip_prefix(base).unwrap();
                files.push(relative.to_string_lossy().into_owned());
            }
        }
        if empty && dir != base {
            files.push(format!("{}/", dir.strip_prefix(base).unwrap().display()));
        }
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files);
    files.sort();
    files
}

fn expected_tree(repo: &BareRepo) -> Vec<String> {
    let mut files = repo.file_names();
    files.push(".hoist-dep.json".into());
    files.sort();
    files
}

/// Everything under `dir`, read as bytes, in one buffer (for secret scans).
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for file in tree(dir).iter().filter(|f| !f.ends_with('/')) {
        bytes.extend(std::fs::read(dir.join(file)).unwrap());
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn clones_branches_tags_and_shas_over_http_then_reuses_them() {
    let world = World::new();
    let mut branch = world.repo("branch");
    let tags = world.repo("tags");
    tags.tag("v1.0.0", &tags.shas[0]);
    tags.annotated_tag("v2.0.0", &tags.shas[1]);
    let pinned = world.repo("pinned");
    pinned.allow_reachable_sha1_in_want();
    let refusing = world.repo("refusing");
    let private = world.repo("private");
    world.manifest(&format!(
        r#"{{
  "_comment": "prose",
  "version": 1,
  // a whole-line comment, as real manifests have had
  "plugins": [
    {{"name": "branch", "repo": "org/branch"}},
    {{"name": "light", "repo": "org/tags", "ref": "v1.0.0"}},
    {{"name": "annotated", "repo": "org/tags", "ref": "v2.0.0", "runtime": "ignored"}}
  ],
  "workspace_templates": [
    {{"name": "pinned", "repo": "org/pinned", "ref": "{}"}},
    {{"name": "refusing", "repo": "org/refusing", "ref": "{}"}}
  ],
  "org_templates": [
    {{"name": "branch", "repo": "org/private", "private": true}}
  ]
}}"#,
        pinned.shas[1], refusing.shas[0]
    ));
    let log = world.repos.path().join("requests.jsonl");
    let public = ["branch", "tags", "pinned", "refusing"].map(|n| format!("org/{n}.git"));
    let Some(server) = world.serve(ServerOptions {
        token: Some(TOKEN.into()),
        public: public.to_vec(),
        log: Some(log.clone()),
        ..ServerOptions::default()
    }) else {
        return;
    };

    let out = world.deps(server.url(), Some(TOKEN), &["--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(
        (doc["cloned"].as_u64(), doc["failed"].as_u64()),
        (Some(6), Some(0)),
        "{doc}"
    );
    let commit = |category: &str, name: &str| {
        entry(&doc, category, name)["commit"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(commit("plugins", "light"), tags.shas[0]);
    assert_eq!(
        commit("plugins", "annotated"),
        tags.shas[1],
        "an annotated tag peels to its commit"
    );
    assert_eq!(commit("workspace_templates", "pinned"), pinned.shas[1]);
    assert_eq!(
        commit("workspace_templates", "refusing"),
        refusing.shas[0],
        "a refused sha falls back to a full fetch"
    );

    let out_dir = world.out();
    assert_eq!(
        tree(&out_dir.join("plugins/branch")),
        expected_tree(&branch)
    );
    assert_eq!(
        tree(&out_dir.join("org-templates/branch")),
        expected_tree(&private)
    );
    assert!(!out_dir.join("plugins/light/.git").exists());
    let content =
        std::fs::read_to_string(out_dir.join("workspace-configs-templates/pinned/file-000.txt"))
            .unwrap();
    assert!(
        content.contains("commit 2"),
        "the pinned commit's content: {content}"
    );
    let marker: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out_dir.join("plugins/annotated/.hoist-dep.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(marker["kind"], "tag");
    assert_eq!(marker["repo"], "org/tags");
    assert_eq!(marker["commit"], tags.shas[1].as_str());

    // A re-run with nothing changed reuses everything and downloads no pack.
    let before = upload_pack_posts(&log);
    let out = world.deps(server.url(), Some(TOKEN), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("6 dependencies: 0 cloned, 6 reused"),
        "{}",
        stdout(&out)
    );
    assert_eq!(upload_pack_posts(&log), before, "a re-run fetched objects");

    // A ref bump replaces exactly that entry.
    let new_head = branch.commit();
    let out = world.deps(server.url(), Some(TOKEN), &["--format", "json"]);
    let doc = json(&out);
    assert_eq!(
        (doc["cloned"].as_u64(), doc["reused"].as_u64()),
        (Some(1), Some(5)),
        "{doc}"
    );
    assert_eq!(entry(&doc, "plugins", "branch")["outcome"], "cloned");
    assert_eq!(entry(&doc, "org_templates", "branch")["outcome"], "reused");
    assert_eq!(commit_of(&out_dir.join("plugins/branch")), new_head);
    let content = std::fs::read_to_string(out_dir.join("plugins/branch/file-000.txt")).unwrap();
    assert!(content.contains("commit 4"), "{content}");
    let leftovers: Vec<_> = std::fs::read_dir(out_dir.join("plugins"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".hoist-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn commit_of(dir: &Path) -> String {
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(".hoist-dep.json")).unwrap()).unwrap();
    marker["commit"].as_str().unwrap().to_string()
}

#[test]
fn private_entries_tokens_and_missing_repos_fail_clearly() {
    let world = World::new();
    world.repo("public");
    world.repo("private");
    world.manifest(
        r#"{"plugins": [
  {"name": "public", "repo": "org/public"},
  {"name": "private", "repo": "org/private", "private": true}
]}"#,
    );
    let Some(server) = world.serve(ServerOptions {
        token: Some(TOKEN.into()),
        public: vec!["org/public.git".into()],
        ..ServerOptions::default()
    }) else {
        return;
    };

    // Strict: a private entry without its token fails the command, after
    // the others were fetched; nothing waits on a prompt.
    let out = world.deps(server.url(), None, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("1 of 2 dependencies failed"), "{err}");
    assert!(
        err.contains(&format!(
            "org/private needs authentication, and {TOKEN_ENV} is not set"
        )),
        "{err}"
    );
    assert!(world.out().join("plugins/public/file-000.txt").exists());
    assert!(!world.out().join("plugins/private").exists());

    // Tolerant: skipped with a warning, and the command succeeds.
    let out = world.deps(server.url(), None, &["--tolerant"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("0 cloned, 1 reused, 1 skipped, 0 failed"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains(&format!(
        "warning: skipped plugins/private: private, and {TOKEN_ENV} is not set"
    )));

    // A wrong token is rejected, and said so, even under --tolerant.
    let out = world.deps(server.url(), Some("wrong-token"), &["--tolerant"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the server rejected the token in HOIST_TEST_GIT_TOKEN"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("wrong-token"));

    // A missing repository is a 404 that names it.
    world.manifest(r#"{"plugins": [{"name": "gone", "repo": "org/gone"}]}"#);
    let out = world.deps(server.url(), Some(TOKEN), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("repository org/gone not found"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_manifests_are_input_errors_with_their_line() {
    let world = World::new();
    for (manifest, expect, line) in [
        (
            "{\"plugins\": [\n  {\"name\": \"a\", \"repo\": \"o/a\"},\n  {\"name\": \"a\", \"repo\": \"o/b\"}\n]}",
            "the name is used twice in `plugins`",
            3,
        ),
        (
            "{\"org_templates\": [\n  {\"name\": \"../../etc\", \"repo\": \"o/a\"}\n]}",
            "not a plain directory name",
            2,
        ),
        (
            "{\"plugins\": [\n  {\"name\": \"a\", \"repo\": \"o/a\", \"ref\": \"1f841df\"}\n]}",
            "short commit sha",
            2,
        ),
        (
            "{\"plugins\": [\n  {\"name\": \"a\", \"repo\": \"o/a\", \"provider\": \"gitlab\"}\n]}",
            "unknown provider 'gitlab'",
            0,
        ),
        (
            "{\"plugins\": [\n  {\"name\": \"a\"\n]}",
            "invalid manifest",
            3,
        ),
    ] {
        world.manifest(manifest);
        let out = world.deps("http://127.0.0.1:9", None, &[]);
        assert_eq!(out.status.code(), Some(2), "{manifest}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(expect), "{err}");
        if line > 0 {
            assert!(err.contains(&format!("manifest.json:{line}")), "{err}");
        }
    }
    assert!(
        !world.out().exists(),
        "nothing is written for a bad manifest"
    );
}

#[test]
fn full_clones_from_file_urls() {
    let world = World::new();
    let repo = world.repo("local");
    repo.tag("v1", &repo.shas[0]);
    world.manifest(
        r#"{"plugins": [{"name": "local", "repo": "org/local"}, {"name": "old", "repo": "org/local", "ref": "v1"}]}"#,
    );
    let base = format!("file://{}", world.repos.path().display());
    let out = world.deps(&base, None, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        tree(&world.out().join("plugins/local")),
        expected_tree(&repo)
    );
    assert_eq!(commit_of(&world.out().join("plugins/old")), repo.shas[0]);
}

#[test]
fn an_interrupted_run_is_repaired_by_the_next() {
    let world = World::new();
    let repos: Vec<BareRepo> = (0..4).map(|i| world.repo(&format!("r{i}"))).collect();
    let entries: Vec<String> = (0..4)
        .map(|i| format!(r#"{{"name": "r{i}", "repo": "org/r{i}"}}"#))
        .collect();
    world.manifest(&format!(r#"{{"plugins": [{}]}}"#, entries.join(", ")));
    let Some(slow) = world.serve(ServerOptions {
        delay_ms: 3_000,
        ..ServerOptions::default()
    }) else {
        return;
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_hoist"))
        .current_dir(world.project.path())
        .args(["deps", "--base-url", slow.url(), "--jobs", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it while the packs are on their way: the temp dirs exist by then.
    let plugins = world.out().join("plugins");
    let started = std::time::Instant::now();
    while started.elapsed().as_secs() < 10 {
        let temps = std::fs::read_dir(&plugins)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().contains(".hoist-tmp-"))
                    .count()
            })
            .unwrap_or(0);
        if temps == 4 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for i in 0..4 {
        assert!(
            !plugins.join(format!("r{i}")).exists(),
            "a half tree at a target path"
        );
    }
    drop(slow);

    let Some(server) = world.serve(ServerOptions::default()) else {
        return;
    };
    let out = world.deps(server.url(), None, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for (i, repo) in repos.iter().enumerate() {
        assert_eq!(tree(&plugins.join(format!("r{i}"))), expected_tree(repo));
    }
    let names: Vec<String> = std::fs::read_dir(&plugins)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 4, "leftovers were not removed: {names:?}");
}

#[test]
fn the_token_appears_nowhere() {
    let world = World::new();
    world.repo("secret");
    world.repo("gone-soon");
    world.manifest(
        r#"{"plugins": [{"name": "secret", "repo": "org/secret", "private": true}],
"org_templates": [{"name": "missing", "repo": "org/missing"}]}"#,
    );
    let Some(server) = world.serve(ServerOptions {
        token: Some(TOKEN.into()),
        ..ServerOptions::default()
    }) else {
        return;
    };
    let ci = tempfile::tempdir().unwrap();
    let output = ci.path().join("output");
    let summary = ci.path().join("summary");
    let mut outputs = Vec::new();
    for format in ["text", "json"] {
        let out = Command::new(env!("CARGO_BIN_EXE_hoist"))
            .current_dir(world.project.path())
            .args([
                "deps",
                "--base-url",
                server.url(),
                "--token-env",
                TOKEN_ENV,
                "--format",
                format,
            ])
            .env(TOKEN_ENV, TOKEN)
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_OUTPUT", &output)
            .env("GITHUB_STEP_SUMMARY", &summary)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "the missing repo fails the run");
        outputs.push(out);
    }
    assert!(world.out().join("plugins/secret/file-000.txt").exists());
    let mut everything = all_bytes(&world.out());
    everything.extend(all_bytes(ci.path()));
    for out in &outputs {
        everything.extend(&out.stdout);
        // The runner consumes `::add-mask::` lines (the token is masked
        // first, as publish masks it); every other line counts.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("::add-mask::{TOKEN}\n")),
            "the token is masked under a runner: {stderr}"
        );
        for line in stderr.lines().filter(|l| !l.starts_with("::add-mask::")) {
            everything.extend(line.as_bytes());
            everything.push(b'\n');
        }
    }
    assert!(
        contains(&everything, "org/missing"),
        "the scan reads real output"
    );
    assert!(
        contains(&everything, "cloned=1"),
        "GITHUB_OUTPUT was written"
    );
    assert!(!contains(&everything, TOKEN), "the token leaked");
}

#[test]
fn transient_failures_are_retried_and_missing_refs_are_named() {
    let world = World::new();
    let repo = world.repo("flaky");
    world.manifest(r#"{"plugins": [{"name": "flaky", "repo": "org/flaky"}]}"#);
    let Some(server) = world.serve(ServerOptions {
        fail_first: 2,
        ..ServerOptions::default()
    }) else {
        return;
    };
    let out = world.deps(server.url(), None, &["--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json(&out);
    let flaky = entry(&doc, "plugins", "flaky");
    assert_eq!(flaky["outcome"], "cloned");
    assert_eq!(flaky["attempts"], 3, "two 503s, then success: {flaky}");
    assert_eq!(flaky["commit"], repo.head());

    world.manifest(r#"{"plugins": [{"name": "flaky", "repo": "org/flaky", "ref": "release-9"}]}"#);
    let out = world.deps(server.url(), None, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("org/flaky has no branch or tag named 'release-9'"),
        "{}",
        stderr(&out)
    );
    // The old tree stays until a replacement is complete.
    assert_eq!(commit_of(&world.out().join("plugins/flaky")), repo.head());
}

#[test]
fn a_provider_from_hoist_yaml_brings_its_own_url_and_token() {
    let world = World::new();
    world.repo("default-dep");
    let other = tempfile::tempdir().unwrap();
    bare_repo(other.path(), "team/elsewhere.git", 2, 2);
    let Some(default) = world.serve(ServerOptions::default()) else {
        return;
    };
    let Some(forge) = GitServer::start(
        other.path(),
        ServerOptions {
            token: Some("other-token".into()),
            ..ServerOptions::default()
        },
    ) else {
        return;
    };
    std::fs::write(
        world.project.path().join("hoist.yaml"),
        format!(
            "git:\n  providers:\n    forge: {{base_url: '{}', token_env: OTHER_FORGE_TOKEN}}\n",
            forge.url()
        ),
    )
    .unwrap();
    world.manifest(
        r#"{"plugins": [
  {"name": "default-dep", "repo": "org/default-dep"},
  {"name": "elsewhere", "repo": "team/elsewhere", "provider": "forge", "private": true}
]}"#,
    );
    let run = |token: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hoist"));
        command
            .current_dir(world.project.path())
            .args(["deps", "--base-url", default.url(), "--format", "json"])
            .env_remove("OTHER_FORGE_TOKEN");
        if let Some(token) = token {
            command.env("OTHER_FORGE_TOKEN", token);
        }
        command.output().unwrap()
    };
    let out = run(Some("other-token"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["cloned"], 2);
    let marker: serde_json::Value = serde_json::from_slice(
        &std::fs::read(world.out().join("plugins/elsewhere/.hoist-dep.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(marker["provider"], "forge");
    std::fs::remove_dir_all(world.out()).unwrap();
    let out = run(None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .contains("team/elsewhere needs authentication, and OTHER_FORGE_TOKEN is not set")
    );
}

/// Every path under `dir` named `.git` (a submodule checkout has one).
fn git_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == ".git") {
            found.push(path.clone());
        }
        if path.is_dir() && !path.is_symlink() {
            found.extend(git_dirs(&path));
        }
    }
    found
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn submodules_are_fetched_at_their_commits_recursively_with_the_right_tokens() {
    let world = World::new();
    // A second forge on another port: no provider's, so no token goes there.
    let elsewhere = tempfile::tempdir().unwrap();
    let ext = bare_repo(elsewhere.path(), "ext/ext.git", 1, 1);
    let Some(foreign) = GitServer::start(
        elsewhere.path(),
        ServerOptions {
            log: Some(elsewhere.path().join("requests.jsonl")),
            ..ServerOptions::default()
        },
    ) else {
        return;
    };
    let log = world.repos.path().join("requests.jsonl");
    let Some(server) = world.serve(ServerOptions {
        token: Some(TOKEN.into()),
        log: Some(log.clone()),
        ..ServerOptions::default()
    }) else {
        return;
    };
    // leaf: pinned below its tip, on a server that refuses a bare sha (the
    // full-fetch fallback); lib: a relative URL, with leaf nested in it.
    let leaf = world.repo("leaf");
    let lib = bare_repo_with(
        world.repos.path(),
        "org/lib.git",
        &[
            ("lib.txt", b"the lib\n"),
            (
                ".gitmodules",
                b"[submodule \"deep\"]\n\tpath = deep\n\turl = ../leaf.git\n",
            ),
        ],
        &[("deep", &leaf.shas[0])],
    );
    let gitmodules = format!(
        "[submodule \"lib\"]\n\tpath = libs/lib\n\turl = ../lib.git\n\
         [submodule \"same\"]\n\tpath = vendor/same\n\turl = {}\n\
         [submodule \"ext\"]\n\tpath = vendor/ext\n\turl = {}\n\
         [submodule \"ssh\"]\n\tpath = vendor/ssh\n\turl = git@127.0.0.1:org/leaf.git\n",
        server.repo_url("org/leaf.git"),
        foreign.repo_url("ext/ext.git"),
    );
    let app = bare_repo_with(
        world.repos.path(),
        "org/app.git",
        &[
            ("README.md", b"app\n"),
            (".gitmodules", gitmodules.as_bytes()),
        ],
        &[
            ("libs/lib", &lib),
            ("vendor/same", &leaf.shas[1]),
            ("vendor/ext", ext.head()),
            // An ssh URL of the provider's host goes through the provider.
            ("vendor/ssh", leaf.head()),
        ],
    );
    world.manifest(r#"{"plugins": [{"name": "app", "repo": "org/app", "private": true}]}"#);

    let out = world.deps(server.url(), Some(TOKEN), &["--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(entry(&json(&out), "plugins", "app")["commit"], app.as_str());
    let dir = world.out().join("plugins/app");
    let mut expected: Vec<String> = [
        ".gitmodules",
        ".hoist-dep.json",
        "README.md",
        "libs/lib/.gitmodules",
        "libs/lib/lib.txt",
        "libs/lib/deep/file-000.txt",
        "libs/lib/deep/sub/file-001.txt",
        "libs/lib/deep/file-002.txt",
        "libs/lib/deep/sub/file-003.txt",
        "vendor/same/file-000.txt",
        "vendor/same/sub/file-001.txt",
        "vendor/same/file-002.txt",
        "vendor/same/sub/file-003.txt",
        "vendor/ext/file-000.txt",
        "vendor/ssh/file-000.txt",
        "vendor/ssh/sub/file-001.txt",
        "vendor/ssh/file-002.txt",
        "vendor/ssh/sub/file-003.txt",
    ]
    .map(String::from)
    .to_vec();
    expected.sort();
    assert_eq!(tree(&dir), expected);
    assert!(read(&dir.join("libs/lib/deep/file-000.txt")).contains("commit 1"));
    assert!(read(&dir.join("vendor/same/file-000.txt")).contains("commit 2"));
    assert!(read(&dir.join("vendor/ssh/file-000.txt")).contains("commit 3"));
    assert!(git_dirs(&dir).is_empty(), "{:?}", git_dirs(&dir));

    let marker: serde_json::Value =
        serde_json::from_str(&read(&dir.join(".hoist-dep.json"))).unwrap();
    let recorded: Vec<(String, String)> = marker["submodules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let field = |k: &str| s[k].as_str().unwrap().to_string();
            (field("path"), field("commit"))
        })
        .collect();
    assert_eq!(
        recorded,
        [
            ("libs/lib", lib.as_str()),
            ("libs/lib/deep", leaf.shas[0].as_str()),
            ("vendor/ext", ext.head()),
            ("vendor/same", leaf.shas[1].as_str()),
            ("vendor/ssh", leaf.head()),
        ]
        .map(|(p, c)| (p.to_string(), c.to_string()))
        .to_vec()
    );

    // The token went to its provider's server, and never to the other one.
    assert!(requests(&log).iter().any(|r| r["auth"] == true));
    let foreign_requests = requests(&elsewhere.path().join("requests.jsonl"));
    assert!(!foreign_requests.is_empty());
    assert!(
        foreign_requests.iter().all(|r| r["auth"] == false),
        "{foreign_requests:?}"
    );
    let mut everything = all_bytes(&world.out());
    everything.extend(&out.stdout);
    everything.extend(&out.stderr);
    assert!(!contains(&everything, TOKEN), "the token leaked");

    // The parent's commit pins its submodules: a re-run reuses the tree.
    let out = world.deps(server.url(), Some(TOKEN), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("1 reused"), "{}", stdout(&out));
}

#[test]
fn a_submodule_that_cannot_be_fetched_fails_its_dependency_by_name() {
    let world = World::new();
    let lib = world.repo("lib");
    let Some(server) = world.serve(ServerOptions::default()) else {
        return;
    };
    let locked_root = tempfile::tempdir().unwrap();
    let Some(locked) = GitServer::start(
        locked_root.path(),
        ServerOptions {
            token: Some("someone-elses".into()),
            ..ServerOptions::default()
        },
    ) else {
        return;
    };
    let with = |name: &str, gitmodules: &str, link: &str| {
        bare_repo_with(
            world.repos.path(),
            &format!("org/{name}.git"),
            &[("a.txt", b"a\n"), (".gitmodules", gitmodules.as_bytes())],
            &[(link, lib.head())],
        );
    };
    with(
        "gone",
        "[submodule \"x\"]\n\tpath = libs/gone\n\turl = ../missing.git\n",
        "libs/gone",
    );
    with("unlisted", "", "libs/unlisted");
    with(
        "local",
        "[submodule \"x\"]\n\tpath = etc\n\turl = file:///etc\n",
        "etc",
    );
    let locked_url = locked.repo_url("team/x.git").replace("://", "://user:pw@");
    with(
        "creds",
        &format!("[submodule \"x\"]\n\tpath = x\n\turl = {locked_url}\n"),
        "x",
    );
    with(
        "foreign",
        &format!(
            "[submodule \"x\"]\n\tpath = x\n\turl = {}\n",
            locked.repo_url("team/x.git")
        ),
        "x",
    );
    world.manifest(
        r#"{"plugins": [
  {"name": "gone", "repo": "org/gone"},
  {"name": "unlisted", "repo": "org/unlisted"},
  {"name": "local", "repo": "org/local"},
  {"name": "creds", "repo": "org/creds"},
  {"name": "foreign", "repo": "org/foreign"}
]}"#,
    );
    let out = world.deps(server.url(), Some(TOKEN), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("5 of 5 dependencies failed"), "{err}");
    for expect in [
        format!(
            "submodule libs/gone ({0}/org/missing.git): no repository at {0}/org/missing.git",
            server.url()
        ),
        "submodule libs/unlisted: .gitmodules has no entry for it".into(),
        "submodule etc (file:///etc): a local URL".into(),
        "carries credentials".into(),
        format!(
            "submodule x ({}): the server needs authentication, and its URL is under no configured provider's base URL",
            locked.repo_url("team/x.git"),
        ),
    ] {
        assert!(err.contains(&expect), "{expect}\n{err}");
    }
    assert!(!err.contains("user:pw"), "{err}");
    assert!(!err.contains(TOKEN), "{err}");
    assert!(!world.out().join("plugins/gone").exists(), "no half tree");
}

#[test]
fn lfs_files_are_fetched_with_the_token_when_opted_in() {
    let world = World::new();
    let big: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let lib_object = b"the library's LFS object\n".to_vec();
    let lib_dir = world.repos.path().join("org/assetlib.git");
    let lib_pointer = lfs_object(&lib_dir, &lib_object);
    let lib = bare_repo_with(
        world.repos.path(),
        "org/assetlib.git",
        &[("model.bin", lib_pointer.as_bytes())],
        &[],
    );
    let pointer = lfs_object(&world.repos.path().join("org/assets.git"), &big);
    let script = lfs_object(
        &world.repos.path().join("org/assets.git"),
        b"#!/bin/sh\necho hi\n",
    );
    bare_repo_with(
        world.repos.path(),
        "org/assets.git",
        &[
            ("big.bin", pointer.as_bytes()),
            ("copy/big.bin", pointer.as_bytes()),
            ("run.sh", script.as_bytes()),
            ("notes.txt", b"plain\n"),
            (
                ".gitmodules",
                b"[submodule \"lib\"]\n\tpath = lib\n\turl = ../assetlib.git\n",
            ),
        ],
        &[("lib", &lib)],
    );
    let log = world.repos.path().join("requests.jsonl");
    let Some(server) = world.serve(ServerOptions {
        token: Some(TOKEN.into()),
        log: Some(log.clone()),
        ..ServerOptions::default()
    }) else {
        return;
    };
    world.manifest(
        r#"{"plugins": [{"name": "assets", "repo": "org/assets", "private": true, "lfs": true}]}"#,
    );
    let check = |out: &Output| {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
        let dir = world.out().join("plugins/assets");
        assert!(std::fs::read(dir.join("big.bin")).unwrap() == big);
        assert!(std::fs::read(dir.join("copy/big.bin")).unwrap() == big);
        assert_eq!(read(&dir.join("run.sh")), "#!/bin/sh\necho hi\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "run.sh keeps its executable bit");
        assert_eq!(read(&dir.join("notes.txt")), "plain\n");
        assert_eq!(
            std::fs::read(dir.join("lib/model.bin")).unwrap(),
            lib_object
        );
        let marker: serde_json::Value =
            serde_json::from_str(&read(&dir.join(".hoist-dep.json"))).unwrap();
        assert_eq!(marker["lfs_files"], 4);
        let mut everything = all_bytes(&world.out());
        everything.extend(&out.stdout);
        everything.extend(&out.stderr);
        assert!(!contains(&everything, TOKEN), "the token leaked");
    };
    let out = world.deps(server.url(), Some(TOKEN), &[]);
    check(&out);
    let batches: Vec<serde_json::Value> = requests(&log)
        .into_iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .unwrap()
                .ends_with("/info/lfs/objects/batch")
        })
        .collect();
    assert_eq!(batches.len(), 2, "one batch per repository: {batches:?}");
    assert!(
        batches
            .iter()
            .all(|r| r["auth"] == true && r["status"] == 200)
    );

    // The same, opted in by hoist.yaml for every entry.
    std::fs::remove_dir_all(world.out()).unwrap();
    std::fs::write(
        world.project.path().join("hoist.yaml"),
        "git:\n  lfs: true\n",
    )
    .unwrap();
    world.manifest(r#"{"plugins": [{"name": "assets", "repo": "org/assets", "private": true}]}"#);
    check(&world.deps(server.url(), Some(TOKEN), &[]));
}

#[test]
fn lfs_files_fail_their_dependency_unless_fetched_and_verified() {
    let world = World::new();
    let repo_dir = world.repos.path().join("org/media.git");
    let pointers: Vec<(String, String)> = (0..12)
        .map(|i| {
            let content = format!("object {i}\n");
            (
                format!("media/clip-{i:02}.bin"),
                lfs_object(&repo_dir, content.as_bytes()),
            )
        })
        .collect();
    let files: Vec<(&str, &[u8])> = pointers
        .iter()
        .map(|(path, pointer)| (path.as_str(), pointer.as_bytes()))
        .collect();
    bare_repo_with(world.repos.path(), "org/media.git", &files, &[]);
    let corrupt = pointers[3]
        .1
        .lines()
        .nth(1)
        .unwrap()
        .trim_start_matches("oid sha256:");
    let Some(server) = world.serve(ServerOptions {
        lfs_corrupt: vec![corrupt.to_string()],
        ..ServerOptions::default()
    }) else {
        return;
    };

    // Not opted in: a failure that names the files and what to do.
    world.manifest(r#"{"plugins": [{"name": "media", "repo": "org/media"}]}"#);
    let out = world.deps(server.url(), None, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("org/media has Git LFS files, which would ship as pointer text: media/clip-00.bin, media/clip-01.bin"),
        "{err}"
    );
    assert!(err.contains("media/clip-09.bin, and 2 more"), "{err}");
    assert!(!err.contains("clip-10"), "{err}");
    assert!(err.contains(r#"set "lfs": true on the entry"#), "{err}");
    assert!(!world.out().join("plugins/media").exists());

    // Opted in, but one object is not what its pointer says.
    world.manifest(r#"{"plugins": [{"name": "media", "repo": "org/media", "lfs": true}]}"#);
    let out = world.deps(server.url(), None, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("the LFS object of media/clip-03.bin in org/media"),
        "{err}"
    );
    assert!(
        err.contains(&format!("not the pointer's 9 bytes with sha256 {corrupt}")),
        "{err}"
    );
    assert!(!world.out().join("plugins/media").exists());
}

#[test]
fn a_base_url_without_a_scheme_is_an_input_error() {
    let world = World::new();
    world.manifest(
        r#"{"plugins": [{"name": "a", "repo": "org/a"}, {"name": "b", "repo": "org/b"}]}"#,
    );
    let out = world.deps("git.example.com", None, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "error: the base URL 'git.example.com' of provider 'moleculesai' has no scheme"
        ),
        "{err}"
    );
    assert!(
        err.contains("hint: write it with its scheme, e.g. 'https://git.example.com'"),
        "{err}"
    );
    assert!(!err.contains("unsupported URL protocol"), "{err}");
    assert!(!world.out().exists(), "nothing is fetched");
}

#[test]
fn an_empty_token_variable_is_reported_as_empty() {
    let world = World::new();
    world.repo("private");
    world.manifest(r#"{"plugins": [{"name": "private", "repo": "org/private", "private": true}]}"#);
    let Some(server) = world.serve(ServerOptions {
        token: Some(TOKEN.into()),
        ..ServerOptions::default()
    }) else {
        return;
    };
    let out = world.deps(server.url(), Some(""), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "org/private needs authentication, and {TOKEN_ENV} is set but empty"
        )),
        "{}",
        stderr(&out)
    );
    let out = world.deps(server.url(), Some(""), &["--tolerant"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "skipped plugins/private: private, and {TOKEN_ENV} is set but empty"
        )),
        "{}",
        stderr(&out)
    );
}

/// A forge that redirects to another host: the host it sends hoist to asks
/// for credentials and gets nothing, and the dependency says why.
#[test]
fn the_token_never_follows_a_redirect_to_another_host() {
    let world = World::new();
    world.repo("private");
    world.manifest(r#"{"plugins": [{"name": "private", "repo": "org/private", "private": true}]}"#);
    let log = world.project.path().join("elsewhere.log");
    let Some(elsewhere) = world.serve(ServerOptions {
        token: Some(TOKEN.into()),
        log: Some(log.clone()),
        ..ServerOptions::default()
    }) else {
        return;
    };
    // `localhost` and `127.0.0.1` are one machine but two origins.
    let elsewhere_url = elsewhere.url().replace("127.0.0.1", "localhost");
    let Some(moved) = world.serve(ServerOptions {
        redirect_to: Some(elsewhere_url),
        ..ServerOptions::default()
    }) else {
        return;
    };
    let out = world.deps(moved.url(), Some(TOKEN), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("another host asked for credentials"),
        "{}",
        stderr(&out)
    );
    let requests = requests(&log);
    assert!(!requests.is_empty(), "the redirect was followed");
    assert!(
        requests.iter().all(|r| r["auth"] == false),
        "the other host never saw the token: {requests:?}"
    );
    assert!(!stderr(&out).contains(TOKEN));
}
