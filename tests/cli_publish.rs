//! `hoist publish` end to end: the example monorepo in a fresh git
//! repository, its dependencies served by the loopback git server, built by
//! the real engine and pushed to Debian's `docker-registry` on loopback
//! (with and without htpasswd). Everything hoist reports is checked against
//! what the registry itself answers.

mod common;

use common::docker::{self, Registry, RegistryOptions, TempImage, require_engine};
use common::monorepo::{IMAGES, Monorepo, PREFIX, Run, repository};
use common::proxy::{FaultProxy, Request, Verdict};
use common::{git, hoist};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Both images' tags name the digest the report gives, as the registry
/// itself answers; returns the digests.
fn assert_published(registry: &Registry, run: &Run, sha: &str) -> Vec<String> {
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    assert_eq!(run.json["published"], true);
    assert_eq!(run.json["sha"], sha);
    let mut digests = Vec::new();
    for name in IMAGES {
        let image = run.image(name);
        let digest = image["digest"].as_str().unwrap().to_string();
        let repo = repository(name);
        let staging = registry.manifest_digest(&repo, &format!("staging-{}", &sha[..7]));
        assert_eq!(staging.as_deref(), Some(digest.as_str()), "{name}");
        assert_eq!(
            image["reference"],
            format!("{}/{repo}@{digest}", registry.addr())
        );
        assert!(
            run.outputs.contains(&format!("{name}-digest={digest}\n")),
            "{}",
            run.outputs
        );
        assert!(
            run.outputs
                .contains(&format!("{name}-ref={}/{repo}@{digest}\n", registry.addr()))
        );
        assert!(
            run.summary.contains(&format!("| {name} |")),
            "{}",
            run.summary
        );
        digests.push(digest);
    }
    assert!(run.outputs.contains("published=true\n"));
    assert!(run.outputs.contains(&format!("sha7={}\n", &sha[..7])));
    digests
}

fn staging_latest(registry: &Registry, image: &str) -> Option<String> {
    registry.manifest_digest(&repository(image), "staging-latest")
}

#[test]
fn publishes_end_to_end_and_a_rerun_is_a_no_op() {
    if !require_engine() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(mut repo) = Monorepo::new(None) else {
        return;
    };
    let sha = repo.head();
    let first = repo.publish(registry.addr(), &[], &[]);
    let digests = assert_published(&registry, &first, &sha);
    // It says why it ran, as it says why it skips.
    let reason = first.json["reason"].as_str().unwrap();
    assert!(reason.contains("changed files match `paths`"), "{reason}");
    assert!(first.summary.contains("run: "), "{}", first.summary);
    // Push lines carry the same padded image prefix as build lines.
    let width = IMAGES.iter().map(|i| i.len()).max().unwrap();
    let stderr = first.stderr();
    for name in IMAGES {
        let prefix = format!("{name:width$} | ");
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(":staging-latest: ")),
            "{prefix:?}: {stderr}"
        );
    }
    for (name, digest) in IMAGES.iter().zip(&digests) {
        assert_eq!(staging_latest(&registry, name).as_ref(), Some(digest));
        assert_eq!(first.image(name)["built"], true);
        assert_eq!(first.image(name)["staging_latest"]["action"], "moved");
        // BuildKit's session: the engine asked for what the Dockerfile copies.
        let sent = &first.image(name)["context_sent"];
        assert_eq!(sent["route"], "session", "{}", first.describe());
        assert!(sent["files"].as_u64().unwrap() > 0, "{}", first.describe());
        assert!(sent["bytes"].as_u64().unwrap() > 0, "{}", first.describe());
    }
    // The dependencies were pre-cloned into the bundle dir, and shipped.
    let bundle = repo.path().join(".tenant-bundle-deps");
    assert!(bundle.join("plugins/github-app-auth").is_dir());
    assert!(bundle.join("workspace-configs-templates/starter").is_dir());
    // The registry's digest, never the local image id.
    for name in IMAGES {
        let id = first.image(name)["digest"].as_str().unwrap().to_string();
        let local = docker::docker(&[
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            &format!("{}/{PREFIX}/{name}:staging-{}", registry.addr(), &sha[..7]),
        ]);
        assert_ne!(id, local, "the config id is not the manifest digest");
    }

    let again = repo.publish(registry.addr(), &[], &[]);
    assert_eq!(assert_published(&registry, &again, &sha), digests);
    for name in IMAGES {
        assert_eq!(again.image(name)["built"], false, "{}", again.describe());
        assert!(again.image(name).get("context_sent").is_none(), "not built");
        assert_eq!(again.image(name)["staging_latest"]["action"], "in-place");
    }
    assert!(
        again.stderr().contains("nothing to build"),
        "{}",
        again.describe()
    );
    assert!(
        !again.stderr().contains("deps |"),
        "no dependency fetched again"
    );
}

#[test]
fn a_push_the_filters_do_not_select_is_not_published() {
    let Some(mut repo) = Monorepo::new(None) else {
        return;
    };
    std::fs::write(repo.path().join("docs/README.md"), "more words\n").unwrap();
    git(repo.path(), &["commit", "-q", "-am", "docs"]);
    // No registry, no engine: nothing past the decision is touched.
    let run = repo.publish("127.0.0.1:9", &[], &[]);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    assert_eq!(run.json["published"], false);
    assert!(
        run.json["reason"].as_str().unwrap().contains("paths"),
        "{}",
        run.describe()
    );
    assert!(run.outputs.contains("published=false\n"), "{}", run.outputs);
    assert!(run.summary.contains("not published"));
    assert!(!repo.path().join(".tenant-bundle-deps").exists());
}

#[test]
fn the_dry_run_prints_the_whole_plan_without_engine_network_or_credentials() {
    let Some(repo) = Monorepo::new(None) else {
        return;
    };
    let ecr = "123456789012.dkr.ecr.us-east-2.amazonaws.com/molecule-ai";
    let env = [
        ("DOCKER_HOST", "tcp://127.0.0.1:9"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
    ];
    let out = hoist(
        repo.path(),
        &[
            "publish",
            "--dry-run",
            "--registry",
            ecr,
            "--format",
            "json",
        ],
        &env,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sha = repo.head();
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["changes"]["decision"]["run"], true);
    assert_eq!(plan["registry"]["kind"], "ECR");
    // The push route, by default: hoist uploads, one request per blob.
    assert_eq!(plan["registry"]["push"]["via"], "registry");
    assert_eq!(plan["registry"]["push"]["chunk_size"], Value::Null);
    assert_eq!(plan["registry"]["push"]["jobs"], 4);
    let deps: Vec<String> = plan["deps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{}@{}",
                d["repo"].as_str().unwrap(),
                d["ref"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        deps.contains(&"example-org/template-starter@v1.2.0".to_string()),
        "{deps:?}"
    );
    for (index, name) in IMAGES.iter().enumerate() {
        let push = &plan["images"][index];
        assert_eq!(push["name"], *name);
        assert_eq!(
            push["staging_reference"],
            format!("{ecr}/{name}:staging-{}", &sha[..7])
        );
        assert_eq!(
            push["latest_reference"],
            format!("{ecr}/{name}:staging-latest")
        );
        assert_eq!(plan["build"]["images"][index]["build_args"]["GIT_SHA"], sha);
    }

    let text = hoist(
        repo.path(),
        &[
            "publish",
            "--dry-run",
            "--registry",
            ecr,
            "--chunk-size",
            "90MiB",
        ],
        &env,
    );
    let text = String::from_utf8_lossy(&text.stdout);
    for expected in [
        "1. changes",
        "run: ",
        "example-org/plugin-github-app-auth@main",
        "3. build 2 image(s)",
        "4. push to 123456789012.dkr.ecr.us-east-2.amazonaws.com/molecule-ai (ECR): hoist uploads, chunks of at most 32.0 MiB (push.chunk_size 90.0 MiB, capped",
        &format!("{ecr}/platform-tenant:staging-{}", &sha[..7]),
    ] {
        assert!(text.contains(expected), "{expected:?} in\n{text}");
    }
    let engine = hoist(
        repo.path(),
        &[
            "publish",
            "--dry-run",
            "--registry",
            ecr,
            "--push-via",
            "engine",
        ],
        &env,
    );
    let engine = String::from_utf8_lossy(&engine.stdout);
    assert!(
        engine.contains("(ECR): the engine pushes (docker push)"),
        "{engine}"
    );
    let ignored = hoist(
        repo.path(),
        &[
            "publish",
            "--dry-run",
            "--registry",
            ecr,
            "--push-via",
            "engine",
            "--chunk-size",
            "1MiB",
        ],
        &env,
    );
    let stdout = String::from_utf8_lossy(&ignored.stdout);
    assert!(
        stdout.contains("push.chunk_size applies only to hoist's upload and is ignored"),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&ignored.stderr).contains("the engine's push does not chunk"),
        "a warning says so too"
    );
    let bad = hoist(
        repo.path(),
        &[
            "publish",
            "--dry-run",
            "--registry",
            ecr,
            "--chunk-size",
            "lots",
        ],
        &env,
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--chunk-size is 'lots'"));
}

#[test]
fn a_missing_registry_is_an_input_error() {
    let Some(repo) = Monorepo::new(None) else {
        return;
    };
    // The example names a registry; this project does not.
    std::fs::write(
        repo.path().join("hoist.yaml"),
        "workflow: .gitea/workflows/publish-workspace-server-image.yml\n",
    )
    .unwrap();
    let out = hoist(repo.path(), &["publish", "--dry-run"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a registry"));
    let out = hoist(
        repo.path(),
        &["publish", "--dry-run", "--registry", "https://ghcr.io/org"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("scheme"));
}

#[test]
fn a_staging_tag_from_another_commit_fails_unless_forced() {
    if !require_engine() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(mut repo) = Monorepo::new(None) else {
        return;
    };
    let sha = repo.head();
    // Someone else's image under this commit's staging tag.
    let context = tempfile::tempdir().unwrap();
    let Some(_) = docker::scratch_context(context.path(), docker::SCRATCH_DOCKERFILE) else {
        return;
    };
    let squatter =
        TempImage::new(registry.image(&repository("platform"), &format!("staging-{}", &sha[..7])));
    docker::docker_env(
        &[("DOCKER_BUILDKIT", "1")],
        &[
            "build",
            "-q",
            "--label",
            "org.opencontainers.image.revision=1111111111111111111111111111111111111111",
            "-t",
            squatter.name(),
            context.path().to_str().unwrap(),
        ],
    );
    docker::docker(&["push", squatter.name()]);
    let theirs = registry
        .manifest_digest(&repository("platform"), &format!("staging-{}", &sha[..7]))
        .unwrap();

    let refused = repo.publish(registry.addr(), &[], &[]);
    assert_eq!(refused.code(), Some(1), "{}", refused.describe());
    let stderr = refused.stderr();
    assert!(stderr.contains(&theirs), "names the digest there: {stderr}");
    assert!(stderr.contains("1111111111111111111111111111111111111111"));
    assert!(stderr.contains("--force"));
    assert!(!stderr.contains("deps |"), "nothing fetched or built");
    assert_eq!(
        registry
            .manifest_digest(&repository("platform"), &format!("staging-{}", &sha[..7]))
            .as_ref(),
        Some(&theirs)
    );
    assert!(registry.tags(&repository("platform-tenant")).is_empty());

    let forced = repo.publish(registry.addr(), &["--force"], &[]);
    let digests = assert_published(&registry, &forced, &sha);
    assert_ne!(digests[0], theirs);
}

/// `hoist publish` (JSON) run in `dir`, a checkout of `repo`'s repository
/// (a worktree), with `repo`'s forge for the dependencies.
fn publish_in(
    dir: &Path,
    repo: &Monorepo,
    registry: &str,
    args: &[&str],
) -> (Option<i32>, Value, String) {
    let target = format!("{registry}/{PREFIX}");
    let mut full = vec!["publish", "--registry", &target, "--format", "json"];
    full.extend_from_slice(args);
    let out = hoist(dir, &full, &[("HOIST_GIT_BASE_URL", repo.forge.url())]);
    (
        out.status.code(),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The text of `path` inside the image that `repo:tag` names in the
/// registry, pulled by its digest.
fn file_in_pushed_image(registry: &Registry, repo: &str, tag: &str, path: &str) -> String {
    let digest = registry
        .manifest_digest(repo, tag)
        .unwrap_or_else(|| panic!("{repo}:{tag} is in the registry"));
    let pinned = TempImage::new(format!("{}/{repo}@{digest}", registry.addr()));
    docker::docker(&["pull", "-q", pinned.name()]);
    let container = docker::docker(&["create", pinned.name(), "none"]);
    let copied = docker::try_docker(&[], &["cp", &format!("{container}:{path}"), "-"]);
    docker::docker(&["rm", &container]);
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    // A tar of the one file: its text is in there as it is.
    String::from_utf8_lossy(&copied.stdout).to_string()
}

/// The `org.opencontainers.image.revision` label of the image `repo:tag`
/// names, read from the registry (manifest, then config blob).
fn revision_in_registry(registry: &Registry, repo: &str, tag: &str) -> Option<String> {
    let accept = "application/vnd.docker.distribution.manifest.v2+json, \
                  application/vnd.oci.image.manifest.v1+json";
    let (status, _, body) = docker::http_request(
        registry.addr(),
        "GET",
        &format!("/v2/{repo}/manifests/{tag}"),
        registry.credentials(),
        &[("Accept", accept)],
    )
    .unwrap();
    assert_eq!(status, 200, "{repo}:{tag}: {body}");
    let manifest: Value = serde_json::from_str(&body).unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap();
    let (status, body) = registry.get(
        &format!("/v2/{repo}/blobs/{config}"),
        registry.credentials(),
    );
    assert_eq!(status, 200, "{body}");
    let config: Value = serde_json::from_str(&body).unwrap();
    config["config"]["Labels"]["org.opencontainers.image.revision"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn a_sha_that_is_not_head_is_refused_with_the_commands_that_publish_it() {
    let Some(mut repo) = Monorepo::new(None) else {
        return;
    };
    let older = repo.head();
    let newer = repo.server_commit("only in the newer commit");
    // No engine, no registry: the refusal comes before either.
    for extra in [&[][..], &["--dry-run"][..]] {
        let mut args = vec!["--force", "--sha", &older[..7]];
        args.extend_from_slice(extra);
        let run = repo.publish(
            "127.0.0.1:9",
            &args,
            &[("DOCKER_HOST", "tcp://127.0.0.1:9")],
        );
        assert_eq!(run.code(), Some(2), "{}", run.describe());
        let stderr = run.stderr();
        assert!(
            stderr.contains(&format!("--sha names commit {}", &older[..7])),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("checked-out commit is {}", &newer[..7])),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "git worktree add --detach ../hoist-{} {older}",
                &older[..7]
            )),
            "{stderr}"
        );
        assert!(stderr.contains("hoist -C ../hoist-"), "{stderr}");
        assert!(!run.outputs.contains("published="), "{}", run.outputs);
    }
    // GITHUB_SHA is held to the same rule.
    let ci = repo.publish(
        "127.0.0.1:9",
        &["--force", "--dry-run"],
        &[("GITHUB_SHA", older.as_str())],
    );
    assert_eq!(ci.code(), Some(2), "{}", ci.describe());
    assert!(
        ci.stderr().contains("GITHUB_SHA names commit"),
        "{}",
        ci.describe()
    );
    // A name of HEAD's commit is HEAD.
    for name in ["main", &newer[..7], newer.as_str()] {
        let run = repo.publish("127.0.0.1:9", &["--force", "--dry-run", "--sha", name], &[]);
        assert_eq!(run.code(), Some(0), "{name}: {}", run.describe());
        assert_eq!(run.json["sha"], newer.as_str());
    }
}

#[test]
fn a_newer_staging_latest_is_left_in_place_and_the_older_image_holds_the_older_files() {
    if !require_engine() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(mut repo) = Monorepo::new(None) else {
        return;
    };
    let older = repo.head();
    let newer = repo.server_commit("only in the newer commit");
    // The newer push finishes first.
    let first = repo.publish(registry.addr(), &["--force"], &[]);
    let newer_digests = assert_published(&registry, &first, &newer);
    // The older commit, published as the refusal's hint says: from a
    // checkout of its own.
    let checkouts = tempfile::tempdir().unwrap();
    let old = checkouts.path().join("old");
    git(
        repo.path(),
        &["worktree", "add", "--detach", old.to_str().unwrap(), &older],
    );
    let (code, late, stderr) = publish_in(&old, &repo, registry.addr(), &["--force"]);
    for name in IMAGES {
        for tag in [format!("staging-{}", &older[..7]), "staging-latest".into()] {
            repo.images.push(TempImage::new(format!(
                "{}/{PREFIX}/{name}:{tag}",
                registry.addr()
            )));
        }
    }
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(late["sha"], older.as_str());
    for (name, newer_digest) in IMAGES.iter().zip(&newer_digests) {
        let image = late["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == *name)
            .unwrap();
        assert_eq!(image["staging_latest"]["action"], "left", "{late}");
        assert!(
            image["staging_latest"]["note"]
                .as_str()
                .unwrap()
                .contains(&newer),
            "{late}"
        );
        assert_eq!(staging_latest(&registry, name).as_ref(), Some(newer_digest));
        let older_digest = image["digest"].as_str().unwrap();
        assert_eq!(
            registry
                .manifest_digest(&repository(name), &format!("staging-{}", &older[..7]))
                .as_deref(),
            Some(older_digest)
        );
        assert_eq!(image["tags"].as_array().unwrap().len(), 1);
        assert_eq!(
            revision_in_registry(
                &registry,
                &repository(name),
                &format!("staging-{}", &older[..7])
            )
            .as_deref(),
            Some(older.as_str())
        );
    }
    // Each image holds the files of the commit its tag and label name.
    let main_go = "/srv/workspace-server/main.go";
    let old_files = file_in_pushed_image(
        &registry,
        &repository("platform"),
        &format!("staging-{}", &older[..7]),
        main_go,
    );
    assert!(old_files.contains("package main"), "{old_files}");
    assert!(
        !old_files.contains("only in the newer commit"),
        "{old_files}"
    );
    let new_files = file_in_pushed_image(
        &registry,
        &repository("platform"),
        &format!("staging-{}", &newer[..7]),
        main_go,
    );
    assert!(
        new_files.contains("only in the newer commit"),
        "{new_files}"
    );
    git(
        repo.path(),
        &["worktree", "remove", "--force", old.to_str().unwrap()],
    );
}

#[test]
fn tracked_changes_in_a_context_refuse_the_publish_and_others_do_not() {
    let Some(mut repo) = Monorepo::new(None) else {
        return;
    };
    let sha = repo.head();
    let nowhere = [("DOCKER_HOST", "tcp://127.0.0.1:9")];
    // Modified, staged, deleted: all under the (root) context.
    let main_go = repo.path().join("workspace-server/main.go");
    std::fs::write(&main_go, "package main // edited\n").unwrap();
    let package = repo.path().join("canvas/package.json");
    std::fs::write(&package, "{}\n").unwrap();
    git(repo.path(), &["add", "canvas/package.json"]);
    std::fs::remove_file(repo.path().join("canvas/app/page.tsx")).unwrap();
    // Untracked files follow .dockerignore as before; docs/ is ignored.
    std::fs::write(repo.path().join("docs/README.md"), "edited\n").unwrap();
    std::fs::write(repo.path().join("new-untracked.txt"), "x\n").unwrap();
    for extra in [&[][..], &["--dry-run"][..]] {
        let mut args = vec!["--force"];
        args.extend_from_slice(extra);
        let run = repo.publish("127.0.0.1:9", &args, &nowhere);
        assert_eq!(run.code(), Some(2), "{}", run.describe());
        let stderr = run.stderr();
        assert!(stderr.contains("3 tracked file(s)"), "{stderr}");
        for path in [
            "workspace-server/main.go (in platform, platform-tenant)",
            "canvas/package.json (in platform, platform-tenant)",
            "canvas/app/page.tsx",
        ] {
            assert!(stderr.contains(path), "{path} in {stderr}");
        }
        assert!(
            stderr.contains(&format!("differ from commit {}", &sha[..7])),
            "{stderr}"
        );
        assert!(!stderr.contains("docs/README.md"), "{stderr}");
        assert!(!stderr.contains("new-untracked"), "{stderr}");
        assert!(stderr.contains("--allow-dirty"), "{stderr}");
        assert!(!stderr.contains("deps |"), "nothing fetched: {stderr}");
    }
    assert!(!repo.path().join(".tenant-bundle-deps").exists());

    // `hoist build` builds it, and says so: labelled and tagged -dirty.
    let build = hoist(
        repo.path(),
        &["build", "--dry-run", "--registry", "127.0.0.1:9/x"],
        &nowhere,
    );
    assert_eq!(build.status.code(), Some(0));
    let text = String::from_utf8_lossy(&build.stdout);
    assert!(text.contains("warning: 3 tracked file(s)"), "{text}");
    assert!(text.contains("workspace-server/main.go"), "{text}");
    assert!(
        text.contains(&format!(
            "tag         127.0.0.1:9/x/platform:staging-{}-dirty",
            &sha[..7]
        )),
        "{text}"
    );
    assert!(
        !text.contains("tag         127.0.0.1:9/x/platform:staging-latest"),
        "{text}"
    );
    assert!(
        text.contains(&format!("org.opencontainers.image.revision={sha}-dirty")),
        "{text}"
    );

    // A tree whose changes are outside every image's context (or ignored
    // by it) is the commit, as far as the images go.
    git(repo.path(), &["checkout", "--", "."]);
    git(repo.path(), &["reset", "-q", "--hard"]);
    std::fs::write(
        repo.path().join("hoist.yaml"),
        "workflow: .gitea/workflows/publish-workspace-server-image.yml\nimages:\n  platform:\n    context: workspace-server\n    dockerfile: workspace-server/Dockerfile\n",
    )
    .unwrap();
    git(
        repo.path(),
        &["commit", "-qam", "one image, its own context"],
    );
    std::fs::write(repo.path().join("canvas/package.json"), "{}\n").unwrap();
    std::fs::write(repo.path().join("hoist.yaml.bak"), "x\n").unwrap();
    let run = repo.publish("127.0.0.1:9", &["--force", "--dry-run"], &nowhere);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    assert!(run.json.get("dirty").is_none(), "{}", run.json);
    assert!(!run.stderr().contains("differ"), "{}", run.describe());
}

#[test]
fn allow_dirty_pushes_only_the_dirty_tag_labelled_as_such() {
    if !require_engine() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(mut repo) = Monorepo::new(None) else {
        return;
    };
    let sha = repo.head();
    let sha7 = &sha[..7];
    std::fs::write(
        repo.path().join("workspace-server/main.go"),
        "package main // uncommitted\n",
    )
    .unwrap();
    for name in IMAGES {
        repo.images.push(TempImage::new(format!(
            "{}/{PREFIX}/{name}:staging-{sha7}-dirty",
            registry.addr()
        )));
    }
    let dry = repo.publish(
        registry.addr(),
        &["--force", "--allow-dirty", "--dry-run"],
        &[],
    );
    assert_eq!(dry.code(), Some(0), "{}", dry.describe());
    assert_eq!(
        dry.json["images"][0]["staging_tag"],
        format!("staging-{sha7}-dirty")
    );
    assert_eq!(dry.json["images"][0]["latest_reference"], Value::Null);
    assert_eq!(dry.json["dirty"][0]["paths"][0], "workspace-server/main.go");

    let run = repo.publish(
        registry.addr(),
        &["--force", "--allow-dirty", "--tag", "sha-${sha7}"],
        &[],
    );
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    assert_eq!(run.json["dirty"][0]["paths"][0], "workspace-server/main.go");
    assert!(
        run.json["notes"][0].as_str().unwrap().contains("dirty"),
        "{}",
        run.describe()
    );
    for name in IMAGES {
        let repo_name = repository(name);
        // The one tag: neither staging-<sha7>, nor staging-latest, nor --tag.
        assert_eq!(registry.tags(&repo_name), [format!("staging-{sha7}-dirty")]);
        assert_eq!(
            revision_in_registry(&registry, &repo_name, &format!("staging-{sha7}-dirty")),
            Some(format!("{sha}-dirty"))
        );
        let image = run.image(name);
        assert!(image.get("staging_latest").is_none(), "{}", run.describe());
        assert_eq!(
            image["tags"],
            serde_json::json!([format!(
                "{}/{repo_name}:staging-{sha7}-dirty",
                registry.addr()
            )])
        );
    }
    // What it holds is the tree it says it is.
    let files = file_in_pushed_image(
        &registry,
        &repository("platform"),
        &format!("staging-{sha7}-dirty"),
        "/srv/workspace-server/main.go",
    );
    assert!(files.contains("uncommitted"), "{files}");
    // A second dirty publish replaces the dirty tag: it names no commit.
    let again = repo.publish(registry.addr(), &["--force", "--allow-dirty"], &[]);
    assert_eq!(again.code(), Some(0), "{}", again.describe());
    assert!(
        again.stderr().contains("an earlier build of a dirty tree"),
        "{}",
        again.describe()
    );
    // The text report says it too, with the paths.
    let text = hoist(
        repo.path(),
        &[
            "publish",
            "--force",
            "--allow-dirty",
            "--registry",
            &format!("{}/{PREFIX}", registry.addr()),
        ],
        &[("HOIST_GIT_BASE_URL", repo.forge.url())],
    );
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert_eq!(
        text.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&text.stderr)
    );
    assert!(
        stdout.contains("dirty (--allow-dirty): labelled"),
        "{stdout}"
    );
    assert!(stdout.contains("workspace-server/main.go"), "{stdout}");
}

#[test]
fn extra_tags_name_the_same_manifest_as_the_staging_tag() {
    if !require_engine() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(mut repo) = Monorepo::new(None) else {
        return;
    };
    let config = repo.path().join("hoist.yaml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("tags: ['${version}', '${major}.${minor}', '${major}']\n");
    std::fs::write(&config, text).unwrap();
    git(repo.path(), &["commit", "-qam", "release tags"]);
    git(repo.path(), &["tag", "v1.2.3"]);
    let sha = repo.head();
    let sha7 = &sha[..7];
    let tag_push = [
        ("GITHUB_REF", "refs/tags/v1.2.3"),
        ("GITHUB_REF_NAME", "v1.2.3"),
    ];
    let sha_tag = format!("sha-{sha7}");
    let extra = ["1.2.3", "1.2", "1", sha_tag.as_str()];
    for name in IMAGES {
        for tag in extra {
            repo.images.push(TempImage::new(format!(
                "{}/{PREFIX}/{name}:{tag}",
                registry.addr()
            )));
        }
    }
    let dry = hoist(
        repo.path(),
        &[
            "publish",
            "--dry-run",
            "--force",
            "--registry",
            &format!("{}/{PREFIX}", registry.addr()),
            "--tag",
            "sha-${sha7}",
        ],
        &tag_push,
    );
    let dry_text = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry_text.contains(&format!(
            "{}/{PREFIX}/platform:1.2 (registry-side, the same manifest)",
            registry.addr()
        )),
        "{dry_text}"
    );
    // `${ref_name}` follows GITHUB_REF when GITHUB_REF_NAME is not set,
    // as `${version}` does.
    let only_ref = hoist(
        repo.path(),
        &[
            "publish",
            "--dry-run",
            "--force",
            "--registry",
            &format!("{}/{PREFIX}", registry.addr()),
            "--tag",
            "at-${ref_name}",
        ],
        &[("GITHUB_REF", "refs/tags/v1.2.3")],
    );
    let only_ref = String::from_utf8_lossy(&only_ref.stdout);
    assert!(only_ref.contains("/platform:at-v1.2.3 "), "{only_ref}");

    let run = repo.publish(
        registry.addr(),
        &["--force", "--tag", "sha-${sha7}"],
        &tag_push,
    );
    let digests = assert_published(&registry, &run, &sha);
    for (name, digest) in IMAGES.iter().zip(&digests) {
        for tag in extra {
            assert_eq!(
                registry.manifest_digest(&repository(name), tag).as_ref(),
                Some(digest),
                "{name}:{tag}"
            );
            let reference = format!("{}/{}:{tag}", registry.addr(), repository(name));
            assert!(
                run.image(name)["tags"]
                    .as_array()
                    .unwrap()
                    .contains(&Value::from(reference.clone())),
                "{}",
                run.describe()
            );
        }
        assert!(run.summary.contains(&sha_tag), "{}", run.summary);
        let tags_output = run
            .outputs
            .lines()
            .find(|l| l.starts_with(&format!("{name}-tags=")))
            .unwrap_or_else(|| panic!("{}", run.outputs));
        assert!(
            tags_output.contains(&format!(":sha-{sha7}")),
            "{tags_output}"
        );
    }

    // A branch push: the semver templates are left out with a note.
    let branch = repo.publish(
        registry.addr(),
        &["--force"],
        &[
            ("GITHUB_REF", "refs/heads/main"),
            ("GITHUB_REF_NAME", "main"),
        ],
    );
    assert_eq!(branch.code(), Some(0), "{}", branch.describe());
    let notes = branch.json["notes"].as_array().unwrap();
    assert_eq!(notes.len(), 3, "{}", branch.describe());
    assert!(
        notes[0].as_str().unwrap().contains("not a tag push"),
        "{notes:?}"
    );

    // A tag hoist manages itself is refused, naming the template.
    let reserved = repo.publish(
        registry.addr(),
        &["--force", "--dry-run", "--tag", "latest"],
        &[],
    );
    assert_eq!(reserved.code(), Some(2), "{}", reserved.describe());
    assert!(
        reserved.stderr().contains("'latest' (--tag)"),
        "{}",
        reserved.describe()
    );
}

#[test]
fn the_change_decision_is_the_published_commits_own() {
    let Some(repo) = Monorepo::new(None) else {
        return;
    };
    let first = repo.head();
    let server = repo.server_commit("server change");
    std::fs::write(repo.path().join("docs/README.md"), "more words\n").unwrap();
    git(repo.path(), &["commit", "-q", "-am", "docs"]);
    let docs = repo.head();
    let event = repo.path().join("event.json");
    let event_path = event.to_str().unwrap().to_string();
    let decide = |before: &str, after: &str| {
        let payload =
            serde_json::json!({"ref": "refs/heads/main", "before": before, "after": after});
        std::fs::write(&event, payload.to_string()).unwrap();
        let run = repo.run(
            &["publish", "--dry-run", "--registry", "127.0.0.1:9/x"],
            &[
                ("GITHUB_EVENT_PATH", &event_path),
                ("DOCKER_HOST", "tcp://127.0.0.1:9"),
            ],
        );
        assert_eq!(run.code(), Some(0), "{}", run.describe());
        run.json["changes"]["decision"].clone()
    };
    // An event for another commit (the server push) does not decide the
    // publish of HEAD, a docs-only commit: its own diff does.
    let other = decide(&first, &server);
    assert_eq!(other["run"], false, "{other}");
    // The event of HEAD's own push decides by its whole range.
    let own = decide(&first, &docs);
    assert_eq!(own["run"], true, "{own}");
}

#[test]
fn htpasswd_registry_takes_the_login_and_refuses_a_wrong_one() {
    if !require_engine() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions {
        htpasswd: Some(("hoist".into(), "s3cret-registry-pw".into())),
    }) else {
        return;
    };
    let Some(mut repo) = Monorepo::new(None) else {
        return;
    };
    let sha = repo.head();
    let wrong = repo.publish(
        registry.addr(),
        &[],
        &[
            ("HOIST_REGISTRY_USER", "hoist"),
            ("HOIST_REGISTRY_PASSWORD", "wrong-pw-4711"),
        ],
    );
    assert_eq!(wrong.code(), Some(1), "{}", wrong.describe());
    assert!(wrong.stderr().contains("hoist"), "{}", wrong.describe());
    assert!(!wrong.stderr().contains("wrong-pw-4711"));
    assert!(!wrong.outputs.contains("published=true"));

    let right = repo.publish(
        registry.addr(),
        &[],
        &[
            ("HOIST_REGISTRY_USER", "hoist"),
            ("HOIST_REGISTRY_PASSWORD", "s3cret-registry-pw"),
        ],
    );
    assert_published(&registry, &right, &sha);
}

#[test]
fn a_registry_that_stops_mid_run_is_reported_without_claiming_what_is_not_there() {
    if !require_engine() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(mut repo) = Monorepo::new(None) else {
        return;
    };
    // The registry "stops" once the first manifest has been written.
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = stopped.clone();
    let upstream = registry.addr().parse().unwrap();
    let proxy = FaultProxy::start(
        upstream,
        Arc::new(move |request: &Request| {
            if flag.load(Ordering::SeqCst) {
                return Verdict::Cut;
            }
            if request.method == "PUT" && request.path.contains("/manifests/") {
                flag.store(true, Ordering::SeqCst);
            }
            Verdict::Forward
        }),
    );
    let run = repo.publish(&proxy.addr.to_string(), &[], &[]);
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    assert!(stopped.load(Ordering::SeqCst));
    assert!(run.stderr().contains("not published"), "{}", run.describe());
    assert_eq!(
        run.json,
        Value::Null,
        "no report of pushed images on stdout"
    );
    assert!(!run.outputs.contains("published=true"), "{}", run.outputs);
    assert!(!run.outputs.contains("-digest="), "{}", run.outputs);
    // What the registry holds is at most the one manifest written before it stopped.
    let held: usize = IMAGES
        .iter()
        .map(|name| registry.tags(&repository(name)).len())
        .sum();
    assert!(held <= 1, "{held}");
}

#[test]
fn secrets_never_appear_in_anything_hoist_prints_or_writes() {
    if !require_engine() {
        return;
    }
    const GIT_TOKEN: &str = "gitea-token-5f2b9c";
    const PASSWORD: &str = "registry-pw-8d1e47";
    const AWS_SECRET: &str = "aws-secret-0a9b8c7d";
    let Some(registry) = Registry::start(RegistryOptions {
        htpasswd: Some(("hoist".into(), PASSWORD.into())),
    }) else {
        return;
    };
    let Some(mut repo) = Monorepo::new(Some(GIT_TOKEN)) else {
        return;
    };
    let sha = repo.head();
    let env = [
        ("GITHUB_ACTIONS", "true"),
        ("MOLECULE_GITEA_TOKEN", GIT_TOKEN),
        ("HOIST_REGISTRY_USER", "hoist"),
        ("HOIST_REGISTRY_PASSWORD", PASSWORD),
        ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
    ];
    let runs = [
        repo.publish(registry.addr(), &[], &env),
        repo.publish(registry.addr(), &[], &env),
    ];
    assert_published(&registry, &runs[0], &sha);
    let dry = hoist(
        repo.path(),
        &[
            "publish",
            "--dry-run",
            "--registry",
            &format!("{}/x", registry.addr()),
        ],
        &env,
    );
    // The runner consumes `::add-mask::` lines; every other line counts.
    let unmasked = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| !line.starts_with("::add-mask::"))
            .map(str::to_string)
            .collect()
    };
    let mut texts = vec![String::from_utf8_lossy(&dry.stdout).to_string()];
    texts.extend(unmasked(&String::from_utf8_lossy(&dry.stderr)));
    for run in &runs {
        texts.push(String::from_utf8_lossy(&run.out.stdout).to_string());
        texts.push(run.outputs.clone());
        texts.push(run.summary.clone());
        let stderr = run.stderr();
        for secret in [GIT_TOKEN, PASSWORD, AWS_SECRET] {
            assert!(
                stderr.contains(&format!("::add-mask::{secret}\n")),
                "{secret} is masked"
            );
        }
        texts.extend(unmasked(&stderr));
    }
    texts.extend(files_under(&repo.path().join(".tenant-bundle-deps")));
    for text in &texts {
        for secret in [GIT_TOKEN, PASSWORD, AWS_SECRET] {
            assert!(!text.contains(secret), "{secret} leaked into:\n{text}");
        }
    }
}

/// The contents of every file under `dir`, as lossy text (git internals too).
fn files_under(dir: &Path) -> Vec<String> {
    let mut texts = Vec::new();
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        } else if let Ok(bytes) = std::fs::read(&path) {
            texts.push(String::from_utf8_lossy(&bytes).to_string());
        }
    }
    assert!(!texts.is_empty(), "{} holds files", dir.display());
    texts
}

#[test]
fn publish_decides_in_the_dialect_it_is_given() {
    let Some(repo) = Monorepo::new(None) else {
        return;
    };
    let env = [("DOCKER_HOST", "tcp://127.0.0.1:9")];
    let plan = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec![
            "publish",
            "--dry-run",
            "--registry",
            "127.0.0.1:9/x",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        let out = hoist(repo.path(), &args, env);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    // Explicitly not on a Gitea runner, whatever runs the tests.
    let github = plan(&[], &[env[0], ("GITEA_ACTIONS", "")]);
    assert_eq!(github["changes"]["decision"]["dialect"], "github");
    let gitea = plan(&["--dialect", "gitea"], &env);
    assert_eq!(gitea["changes"]["decision"]["dialect"], "gitea");
    assert!(
        gitea["changes"]["decision"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("Gitea: "),
        "{gitea}"
    );
    let runner = plan(&[], &[env[0], ("GITEA_ACTIONS", "true")]);
    assert_eq!(runner["changes"]["decision"]["dialect"], "gitea");
}
