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
        &["publish", "--dry-run", "--registry", ecr],
        &env,
    );
    let text = String::from_utf8_lossy(&text.stdout);
    for expected in [
        "1. changes",
        "run: ",
        "example-org/plugin-github-app-auth@main",
        "3. build 2 image(s)",
        "4. push to 123456789012.dkr.ecr.us-east-2.amazonaws.com/molecule-ai (ECR)",
        &format!("{ecr}/platform-tenant:staging-{}", &sha[..7]),
    ] {
        assert!(text.contains(expected), "{expected:?} in\n{text}");
    }
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

#[test]
fn a_newer_staging_latest_is_left_in_place() {
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
    let newer = repo.server_commit("newer");
    // The newer push finishes first.
    let first = repo.publish(registry.addr(), &["--force"], &[]);
    let newer_digests = assert_published(&registry, &first, &newer);
    let late = repo.publish(registry.addr(), &["--force", "--sha", &older], &[]);
    assert_eq!(late.code(), Some(0), "{}", late.describe());
    for (name, newer_digest) in IMAGES.iter().zip(&newer_digests) {
        let image = late.image(name);
        assert_eq!(
            image["staging_latest"]["action"],
            "left",
            "{}",
            late.describe()
        );
        assert!(
            image["staging_latest"]["note"]
                .as_str()
                .unwrap()
                .contains(&newer),
            "{}",
            late.describe()
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
    }
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
