//! `hoist build` end to end against the real engine (Debian's dockerd, which
//! scripts/test starts): FROM-scratch images with a static busybox, both
//! builders, concurrent builds, a failing step, smoke gates, bad input and
//! an unreachable engine. Every image name is unique to its test and
//! removed afterwards.

mod common;

use common::docker::{
    self, Registry, RegistryOptions, SCRATCH_DOCKERFILE, TempImage, require_engine, scratch_context,
};
use common::hoist;
use serde_json::Value;
use std::path::Path;
use std::process::Output;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// A project dir with a hoist.yaml and one build context per image.
struct Project {
    dir: tempfile::TempDir,
    /// The unique image names of this test, removed (with every tag) on drop.
    images: Vec<String>,
}

impl Project {
    fn new() -> Project {
        Project {
            dir: tempfile::tempdir().unwrap(),
            images: Vec::new(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Adds an image built from `dockerfile` in the context `ctx-<n>`;
    /// returns its unique name. `None` when busybox is missing (skip).
    fn image(&mut self, dockerfile: &str) -> Option<String> {
        let name = docker::unique_name("build");
        let context = self.path().join(format!("ctx-{}", self.images.len()));
        scratch_context(&context, dockerfile)?;
        self.images.push(name.clone());
        Some(name)
    }

    /// Writes hoist.yaml: every image with its context, plus `extra` YAML
    /// lines per image (indented by the caller, after `dockerfile:`).
    fn config(&self, extra: &[&str]) {
        let mut yaml = String::from("images:\n");
        for (index, name) in self.images.iter().enumerate() {
            yaml.push_str(&format!(
                "  {name}:\n    context: ctx-{index}\n    dockerfile: ctx-{index}/Dockerfile\n"
            ));
            if let Some(lines) = extra.get(index) {
                yaml.push_str(lines);
            }
        }
        std::fs::write(self.path().join("hoist.yaml"), yaml).unwrap();
    }

    fn hoist(&self, args: &[&str]) -> Output {
        hoist(self.path(), args, &[])
    }

    fn tag(&self, index: usize, tag: &str) -> String {
        format!("{}:{tag}", self.images[index])
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        for name in &self.images {
            for tag in ["staging-0123456", "staging-latest"] {
                drop(TempImage::new(format!("{name}:{tag}")));
            }
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(out), stderr(out)))
}

/// What `docker inspect` says of an image, as JSON.
fn inspect(image: &str) -> Value {
    let text = docker::docker(&["image", "inspect", image]);
    let mut all: Vec<Value> = serde_json::from_str(&text).unwrap();
    all.remove(0)
}

/// The output of the image's default command.
fn run(image: &str) -> String {
    docker::docker(&["run", "--rm", image])
}

/// Both builders: a multi-stage build with ARG, RUN through busybox sh and
/// COPY --from; the build arg and labels read back from the image.
#[test]
fn builds_with_buildkit_and_classic_with_args_and_labels() {
    if !require_engine() {
        return;
    }
    for builder in ["buildkit", "classic"] {
        let mut project = Project::new();
        let Some(_) = project.image(SCRATCH_DOCKERFILE) else {
            return;
        };
        project.config(&[
            "    build_args: {GREETING: 'hi-${sha7}-${ref_name}'}\n    labels: {team: core}\n",
        ]);
        let out = project.hoist(&[
            "build",
            "--sha",
            SHA,
            "--builder",
            builder,
            "--format",
            "json",
        ]);
        assert!(out.status.success(), "{builder}: {}", stderr(&out));
        let result = json(&out);
        let image = &result["images"][0];
        let id = image["image_id"].as_str().unwrap();
        assert!(id.starts_with("sha256:"), "{result}");
        assert_eq!(result["builder"], builder);

        let tag = project.tag(0, "staging-0123456");
        let latest = project.tag(0, "staging-latest");
        assert_eq!(image["tags"], serde_json::json!([tag, latest]));
        for name in [&tag, &latest] {
            assert_eq!(inspect(name)["Id"], id, "{name} names the built image");
        }
        // No git repository and no GITHUB_REF_NAME: ${ref_name} is empty.
        assert_eq!(
            run(&tag),
            "hi-0123456-",
            "{builder}: the build arg reached RUN"
        );
        let labels = &inspect(&tag)["Config"]["Labels"];
        assert_eq!(labels["org.opencontainers.image.revision"], SHA);
        assert_eq!(labels["team"], "core");
        let description = format!("{} — pending canary verify", project.images[0]);
        assert_eq!(labels["org.opencontainers.image.description"], description);
        let created = labels["org.opencontainers.image.created"].as_str().unwrap();
        assert!(created.ends_with('Z') && created.len() == 20, "{created}");
        assert!(
            labels.get("molecule.workflow.run_id").is_none(),
            "not in CI"
        );
    }
}

/// An image that is not a reference one gets `GIT_SHA` without saying so;
/// `--build-arg` (repeatable, `KEY` alone from the environment) sets args
/// over hoist.yaml's for this build; top-level `labels:` reach every image
/// and replace the reference defaults. All read back from the image.
#[test]
fn git_sha_by_default_build_args_from_the_command_line_and_labels() {
    if !require_engine() {
        return;
    }
    let dockerfile = "FROM scratch\nCOPY busybox /bin/busybox\nARG GIT_SHA=none\nARG MODE=none\nARG FROM_ENV=none\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo $GIT_SHA $MODE $FROM_ENV > /out\"]\nCMD [\"/bin/busybox\", \"cat\", \"/out\"]\n";
    let mut project = Project::new();
    let Some(_) = project.image(dockerfile) else {
        return;
    };
    let mut yaml = String::from(
        "labels:\n  team: platform\n  org.opencontainers.image.description: '${image} at ${sha7}'\n",
    );
    project.config(&["    build_args: {MODE: from-yaml}\n"]);
    yaml.push_str(&std::fs::read_to_string(project.path().join("hoist.yaml")).unwrap());
    std::fs::write(project.path().join("hoist.yaml"), &yaml).unwrap();

    // build_args written: exactly those, so no GIT_SHA.
    let out = project.hoist(&["build", "--sha", SHA]);
    assert!(out.status.success(), "{}", stderr(&out));
    let tag = project.tag(0, "staging-0123456");
    assert_eq!(run(&tag), "none from-yaml none");

    // Nothing written: GIT_SHA; the command line wins over hoist.yaml.
    project.config(&[]);
    std::fs::write(
        project.path().join("hoist.yaml"),
        yaml.replace("    build_args: {MODE: from-yaml}\n", ""),
    )
    .unwrap();
    let args = [
        "build",
        "--sha",
        SHA,
        "--build-arg",
        "MODE=one-off",
        "--build-arg",
        "FROM_ENV",
    ];
    let out = hoist(project.path(), &args, &[("FROM_ENV", "env-value")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(run(&tag), format!("{SHA} one-off env-value"));
    assert!(
        stderr(&out).contains("differ from what `hoist publish` builds"),
        "a one-off build says so: {}",
        stderr(&out)
    );
    let labels = &inspect(&tag)["Config"]["Labels"];
    assert_eq!(labels["team"], "platform");
    let description = format!("{} at 0123456", project.images[0]);
    assert_eq!(labels["org.opencontainers.image.description"], description);
    assert_eq!(labels["org.opencontainers.image.revision"], SHA);

    // The dry run shows them; a KEY alone that is not set is not passed.
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let out = hoist(project.path(), &dry, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("arg         MODE=one-off\n"), "{text}");
    assert!(
        text.contains(&format!("arg         GIT_SHA={SHA}\n")),
        "{text}"
    );
    assert!(!text.contains("FROM_ENV"), "{text}");
    assert!(
        stderr(&out).contains("FROM_ENV is not set"),
        "{}",
        stderr(&out)
    );
    // A value from the environment may be a token: the plan shows that it
    // is passed, not what it is, in text and JSON.
    let out = hoist(project.path(), &dry, &[("FROM_ENV", "s3cr3t-value")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("arg         FROM_ENV=***\n"),
        "{}",
        stdout(&out)
    );
    let mut json = dry.clone();
    json.extend(["--format", "json"]);
    let out = hoist(project.path(), &json, &[("FROM_ENV", "s3cr3t-value")]);
    assert!(!stdout(&out).contains("s3cr3t"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("\"FROM_ENV\": \"***\""),
        "{}",
        stdout(&out)
    );

    for bad in ["=x", "1ABC=x", "A B=x", ""] {
        let out = project.hoist(&["build", "--sha", SHA, "--dry-run", "--build-arg", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--build-arg"), "{}", stderr(&out));
    }
}

/// The first build for a registry: the cache source (`staging-latest`)
/// does not exist yet, which BuildKit reports as an error of its
/// cache-import step; hoist says it as a note, and the build succeeds.
#[test]
fn a_first_build_has_no_cache_yet_and_says_so_without_an_error() {
    if !require_engine() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let mut project = Project::new();
    let Some(_) = project.image(SCRATCH_DOCKERFILE) else {
        return;
    };
    let prefix = format!("{}/{}", registry.addr(), docker::unique_name("first"));
    project.config(&[]);
    let yaml = std::fs::read_to_string(project.path().join("hoist.yaml")).unwrap();
    std::fs::write(
        project.path().join("hoist.yaml"),
        format!("registry: {prefix}\n{yaml}"),
    )
    .unwrap();
    let source = format!("{prefix}/{}:staging-latest", project.images[0]);
    let out = project.hoist(&["build", "--sha", SHA]);
    let log = stderr(&out);
    for tag in ["staging-0123456", "staging-latest"] {
        docker::remove_image(&format!("{prefix}/{}:{tag}", project.images[0]));
    }
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&format!("no cache yet at {source}: first build")),
        "{log}"
    );
    assert!(!log.contains("ERROR"), "{log}");
}

/// Two images build at once; each log line carries its image's name, and
/// in CI each image gets its own group, plus the run id label.
#[test]
fn builds_images_concurrently_with_readable_logs() {
    if !require_engine() {
        return;
    }
    let mut project = Project::new();
    let slow = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sleep\", \"1\"]\nCMD [\"/bin/busybox\", \"true\"]\n";
    let (Some(a), Some(b)) = (project.image(slow), project.image(slow)) else {
        return;
    };
    project.config(&[]);
    let out = project.hoist(&["build", "--sha", SHA]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    for name in [&a, &b] {
        assert!(
            log.lines()
                .any(|l| l.starts_with(name.as_str()) && l.contains("| #")),
            "{name} has prefixed lines:\n{log}"
        );
        assert!(
            stdout(&out).contains(&format!("built {name} ")),
            "{}",
            stdout(&out)
        );
        assert!(docker::image_exists(&format!("{name}:staging-latest")));
    }

    let ci_out = tempfile::NamedTempFile::new().unwrap();
    let ci_env = [
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_RUN_ID", "4242"),
        ("GITHUB_OUTPUT", ci_out.path().to_str().unwrap()),
    ];
    let out = hoist(project.path(), &["build", "--sha", SHA], &ci_env);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    for name in [&a, &b] {
        let start = log.find(&format!("::group::build {name}")).unwrap();
        let end = start + log[start..].find("::endgroup::").unwrap();
        assert!(
            log[start..end].contains("#1 "),
            "{name}'s log is in its group"
        );
    }
    let labels = &inspect(&format!("{a}:staging-0123456"))["Config"]["Labels"];
    assert_eq!(labels["molecule.workflow.run_id"], "4242");
    let outputs = std::fs::read_to_string(ci_out.path()).unwrap();
    assert!(
        outputs.contains(&format!("{a}-image-id=sha256:")),
        "{outputs}"
    );
    assert!(outputs.contains("sha7=0123456"), "{outputs}");
}

/// A failing RUN: exit 1, the error names the image, the step and the last
/// lines; the other image still finished and is tagged.
#[test]
fn a_failing_step_names_image_step_and_output() {
    if !require_engine() {
        return;
    }
    for builder in ["buildkit", "classic"] {
        let mut project = Project::new();
        let broken = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo about-to-fail; exit 3\"]\n";
        let (Some(bad), Some(good)) = (project.image(broken), project.image(SCRATCH_DOCKERFILE))
        else {
            return;
        };
        project.config(&[]);
        let out = project.hoist(&["build", "--sha", SHA, "--builder", builder]);
        assert_eq!(out.status.code(), Some(1), "{builder}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("error: {bad}: build failed at step `")),
            "{builder}: {err}"
        );
        assert!(
            err.contains("echo about-to-fail; exit 3"),
            "{builder}: the step: {err}"
        );
        assert!(err.contains("last lines of the build"), "{builder}: {err}");
        assert!(err.contains("about-to-fail"), "{builder}: {err}");
        assert!(
            docker::image_exists(&format!("{good}:staging-latest")),
            "{builder}: the other build finished"
        );
        assert!(!docker::image_exists(&format!("{bad}:staging-latest")));
    }
}

/// busybox httpd serving a health file passes; a path it does not serve
/// fails within the timeout, shows the container's log, removes the
/// container and untags the image.
#[test]
fn smoke_gates_pass_and_fail() {
    if !require_engine() {
        return;
    }
    let server = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox mkdir -p /www && echo ok > /www/health\"]\nCMD [\"/bin/busybox\", \"sh\", \"-c\", \"echo serving $MODE; exec /bin/busybox httpd -f -p 8080 -h /www\"]\n";
    let mut project = Project::new();
    let (Some(good), Some(bad)) = (project.image(server), project.image(server)) else {
        return;
    };
    project.config(&[
        "    smoke: {port: 8080, path: /health, timeout: 20s, env: {MODE: good}}\n",
        "    smoke: {port: 8080, path: /missing, timeout: 2s, env: {MODE: broken}}\n",
    ]);

    let out = project.hoist(&["build", "--sha", SHA, "--image", &good, "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["images"][0]["smoke"], "passed");

    let out = project.hoist(&["build", "--sha", SHA, "--image", &bad]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{bad}: smoke gate failed: no HTTP 200 on 8080/missing"
        )),
        "{err}"
    );
    assert!(err.contains("HTTP 404"), "{err}");
    assert!(err.contains("serving broken"), "the container log: {err}");
    assert!(
        !docker::image_exists(&format!("{bad}:staging-latest")),
        "untagged"
    );
    let left = docker::docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=dev.hoist.smoke={bad}"),
    ]);
    assert_eq!(left, "", "the smoke container was removed");

    // A command that exits at once fails without waiting for the timeout.
    project.config(&[
        "",
        "    smoke: {port: 8080, timeout: 60s, command: ['/bin/busybox', 'sh', '-c', 'echo bye; exit 7']}\n",
    ]);
    let started = std::time::Instant::now();
    let out = project.hoist(&["build", "--sha", SHA, "--image", &bad]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the container exited with code 7"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("bye"), "{}", stderr(&out));
    assert!(
        started.elapsed().as_secs() < 60,
        "it did not wait for the timeout"
    );
}

/// `--dry-run` prints the plan without an engine: DOCKER_HOST points nowhere.
#[test]
fn dry_run_prints_the_plan_without_an_engine() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("workspace-server")).unwrap();
    for file in ["Dockerfile", "Dockerfile.tenant"] {
        std::fs::write(
            dir.path().join("workspace-server").join(file),
            "FROM scratch\n",
        )
        .unwrap();
    }
    // Without it the repository's .git would be sent to the engine too.
    std::fs::write(dir.path().join(".dockerignore"), ".git\n").unwrap();
    common::git(dir.path(), &["init", "-q", "-b", "main"]);
    common::git(
        dir.path(),
        &[
            "remote",
            "add",
            "origin",
            "https://x-access-token:s3cret@git.example/org/repo.git",
        ],
    );
    common::git(dir.path(), &["add", "."]);
    common::git(dir.path(), &["commit", "-qm", "one"]);
    let head = common::git(dir.path(), &["rev-parse", "HEAD"]);
    let nowhere = [("DOCKER_HOST", "unix:///nonexistent/docker.sock")];

    let out = hoist(
        dir.path(),
        &[
            "build",
            "--dry-run",
            "--registry",
            "reg.example/molecule-ai",
        ],
        &nowhere,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let sha7 = &head[..7];
    for want in [
        format!("would build 2 image(s) of {sha7} with BuildKit"),
        "dockerfile  workspace-server/Dockerfile.tenant".to_string(),
        format!("arg         GIT_SHA={head}"),
        "arg         NEXT_PUBLIC_PLATFORM_URL=\n".to_string(),
        format!("tag         reg.example/molecule-ai/platform:staging-{sha7}"),
        "cache from  reg.example/molecule-ai/platform-tenant:staging-latest".to_string(),
        "label       org.opencontainers.image.source=https://git.example/org/repo".to_string(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("s3cret"), "{text}");

    let out = hoist(
        dir.path(),
        &[
            "build",
            "--dry-run",
            "--format",
            "json",
            "--image",
            "platform",
        ],
        &nowhere,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let plan = json(&out);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["images"].as_array().unwrap().len(), 1);
    assert_eq!(
        plan["images"][0]["tags"][0],
        format!("platform:staging-{sha7}")
    );
    // Two Dockerfiles and the .dockerignore.
    assert_eq!(plan["contexts"][0]["files"], 3);
}

/// Bad input exits 2 with the input named; an unreachable engine exits 1
/// naming the socket tried, with a hint.
#[test]
fn bad_input_and_an_unreachable_engine() {
    let dir = tempfile::tempdir().unwrap();
    let no_engine = [("DOCKER_HOST", "unix:///nonexistent/docker.sock")];
    let sha = ["build", "--sha", SHA];

    let out = hoist(dir.path(), &sha, &no_engine);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("workspace-server/Dockerfile"),
        "{}",
        stderr(&out)
    );

    std::fs::write(
        dir.path().join("hoist.yaml"),
        "images:\n  app:\n    dockerfile: Dockerfile\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    let out = hoist(
        dir.path(),
        &["build", "--sha", SHA, "--image", "nope"],
        &no_engine,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown image 'nope' (this project builds: app)"),
        "{}",
        stderr(&out)
    );

    // A registry with a password in it is refused, as publish refuses it,
    // and the password is never shown (not even in a dry run's tags).
    for registry in [
        "robot:s3cr3t@reg.example/team",
        "reg.example/robot:s3cr3t@team",
    ] {
        let out = hoist(
            dir.path(),
            &["build", "--sha", SHA, "--dry-run", "--registry", registry],
            &no_engine,
        );
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert_eq!(out.status.code(), Some(2), "{all}");
        assert!(!all.contains("s3cr3t"), "{all}");
    }

    std::fs::write(
        dir.path().join("hoist.yaml"),
        "images:\n  app:\n    dockerfil: Dockerfile\n",
    )
    .unwrap();
    let out = hoist(dir.path(), &sha, &no_engine);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown field `dockerfil`"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("hoist.yaml:3"), "{}", stderr(&out));

    std::fs::write(
        dir.path().join("hoist.yaml"),
        "images:\n  app:\n    context: missing\n",
    )
    .unwrap();
    let out = hoist(dir.path(), &sha, &no_engine);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));

    let out = hoist(dir.path(), &["build", "--sha", "not-a-sha"], &no_engine);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    std::fs::write(dir.path().join("hoist.yaml"), "images:\n  app: {}\n").unwrap();
    let out = hoist(dir.path(), &sha, &no_engine);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach the Docker engine at unix:///nonexistent/docker.sock"),
        "{err}"
    );
    assert!(err.contains("hint: "), "{err}");

    let bad_scheme = [("DOCKER_HOST", "ftp://engine")];
    let out = hoist(dir.path(), &sha, &bad_scheme);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("DOCKER_HOST 'ftp://engine' is not an engine address"));

    let closed = [("DOCKER_HOST", "tcp://127.0.0.1:9")];
    let out = hoist(dir.path(), &sha, &closed);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("tcp://127.0.0.1:9"),
        "{}",
        stderr(&out)
    );
}

/// A repository made with `git init` and nothing committed yet: the build
/// says so, rather than that `HEAD` names no commit.
#[test]
fn a_repository_without_commits_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let init = std::process::Command::new("git")
        .args(["init", "-q", "."])
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(init.success());
    std::fs::write(
        dir.path().join("hoist.yaml"),
        "images:\n  app:\n    dockerfile: Dockerfile\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    let out = hoist(dir.path(), &["build", "--dry-run"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("this repository has no commits yet"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--sha"), "{}", stderr(&out));
}
