//! `hoist publish` against moto's ECR API, as far as moto goes: it serves no
//! layers, so the engine push is covered against Debian's registry
//! (`cli_publish.rs`). What is covered here is everything hoist does
//! through the ECR API itself: a commit already published is a no-op whose
//! `staging-latest` moves registry-side, a missing repository, repositories
//! created by `--create-repos`, and throttling retried at the command level.

mod common;

use aws_sdk_ecr::types::ImageTagMutability;
use common::ecr::{create_repository, digest_of_tag, docker_manifest, sdk, seed};
use common::moto::{ACCESS_KEY, ACCOUNT, Moto, REGION, SECRET_KEY};
use common::proxy::FaultProxy;
use common::{git, hoist};
use serde_json::Value;
use std::path::Path;

const IMAGES: [&str; 2] = ["platform", "platform-tenant"];

fn registry() -> String {
    format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/molecule-ai")
}

/// The example monorepo, committed; returns its dir and HEAD.
fn monorepo() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/.");
    let copied = std::process::Command::new("cp")
        .arg("-R")
        .arg(examples)
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(copied.success());
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-q", "-m", "example"]);
    let head = git(dir.path(), &["rev-parse", "HEAD"]);
    (dir, head)
}

/// `hoist publish --format json` against ECR at `endpoint`, with no engine
/// reachable (a run that needs one fails).
fn publish(dir: &Path, endpoint: &str, extra: &[&str]) -> (Option<i32>, Value, String) {
    let registry = registry();
    let mut args = vec!["publish", "--registry", &registry, "--format", "json"];
    args.extend_from_slice(extra);
    let out = hoist(
        dir,
        &args,
        &[
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("DOCKER_HOST", "tcp://127.0.0.1:9"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains(SECRET_KEY));
    (
        out.status.code(),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        stderr,
    )
}

#[test]
fn a_published_commit_is_a_no_op_and_staging_latest_moves_registry_side() {
    let Some(moto) = Moto::start() else {
        return;
    };
    let (dir, sha) = monorepo();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = sdk(&moto);
    let mut seeded = Vec::new();
    for name in IMAGES {
        let repository = format!("molecule-ai/{name}");
        runtime.block_on(async {
            create_repository(&client, &repository, ImageTagMutability::Mutable).await;
            let older = seed(
                &client,
                &repository,
                "staging-latest",
                &docker_manifest("older"),
            )
            .await;
            let digest = seed(
                &client,
                &repository,
                &format!("staging-{}", &sha[..7]),
                &docker_manifest(name),
            )
            .await;
            assert_ne!(older, digest);
            seeded.push(digest);
        });
    }

    let (code, json, stderr) = publish(dir.path(), &moto.url(), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("nothing to build"), "{stderr}");
    for (name, digest) in IMAGES.iter().zip(&seeded) {
        let image = json["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == *name)
            .unwrap();
        assert_eq!(image["built"], false);
        assert_eq!(image["digest"], digest.as_str());
        assert_eq!(
            image["reference"],
            format!("{}/{name}@{digest}", registry())
        );
        // The older image there does not say which commit it came from.
        assert_eq!(image["staging_latest"]["action"], "moved-unsure", "{json}");
        let now = runtime.block_on(digest_of_tag(
            &client,
            &format!("molecule-ai/{name}"),
            "staging-latest",
        ));
        assert_eq!(now.as_ref(), Some(digest));
    }

    // Again: everything is in place.
    let (code, json, stderr) = publish(dir.path(), &moto.url(), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(json["images"][0]["staging_latest"]["action"], "in-place");
}

#[test]
fn a_missing_repository_fails_and_create_repos_creates_it() {
    let Some(moto) = Moto::start() else {
        return;
    };
    let (dir, _) = monorepo();
    let (code, _, stderr) = publish(dir.path(), &moto.url(), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("molecule-ai/platform"), "{stderr}");
    assert!(stderr.contains("--create-repos"), "{stderr}");

    // The repositories are created, then the build needs an engine (none here).
    let (code, _, stderr) = publish(dir.path(), &moto.url(), &["--create-repos"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("created"), "{stderr}");
    assert!(
        stderr.contains("cannot reach the Docker engine"),
        "{stderr}"
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = sdk(&moto);
    let names: Vec<String> = runtime.block_on(async {
        let out = client.describe_repositories().send().await.unwrap();
        out.repositories()
            .iter()
            .filter_map(|r| r.repository_name().map(str::to_string))
            .collect()
    });
    for name in IMAGES {
        assert!(names.contains(&format!("molecule-ai/{name}")), "{names:?}");
    }
}

#[test]
fn throttling_is_retried_and_counted_in_the_report() {
    let Some(moto) = Moto::start() else {
        return;
    };
    let (dir, sha) = monorepo();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = sdk(&moto);
    for name in IMAGES {
        let repository = format!("molecule-ai/{name}");
        runtime.block_on(async {
            create_repository(&client, &repository, ImageTagMutability::Mutable).await;
            seed(
                &client,
                &repository,
                &format!("staging-{}", &sha[..7]),
                &docker_manifest(name),
            )
            .await;
        });
    }
    let upstream = moto.url().trim_start_matches("http://").parse().unwrap();
    let proxy = FaultProxy::failing_first(upstream, 3, 429);
    let (code, json, stderr) = publish(dir.path(), &proxy.url(), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(json["retries"], 3, "{json}");
    assert_eq!(json["images"].as_array().unwrap().len(), 2);
}
