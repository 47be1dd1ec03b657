//! `hoist promote`, `rollback` and `status` end to end against moto's ECR
//! API: the registry `123456789012.dkr.ecr.us-east-1.amazonaws.com/molecule-ai`
//! given with `--registry`, its endpoint overridden to moto
//! (`AWS_ENDPOINT_URL_ECR`).
//!
//! moto serves no layers, so nothing is pushed: each commit's images are
//! seeded with `PutImage` (with `imageDigest`, see `tests/common/ecr.rs`)
//! under `staging-<sha7>`, as `hoist publish` leaves them. On ECR hoist
//! reads an image's commit from the `staging-<hex>` tags on its digest, and
//! tells forward from backwards in the project's git history: a small
//! repository of a few commits with a `hoist.yaml` listing the two images
//! (and no Dockerfile, which promote does not need). Every state is checked
//! against what moto holds afterwards, read straight through the SDK.

mod common;

use aws_sdk_ecr::types::{
    ImageIdentifier, ImageTagMutability, ImageTagMutabilityExclusionFilter,
    ImageTagMutabilityExclusionFilterType,
};
use common::ecr::{created, digest_of_tag, docker_manifest, sdk, seed, tags_of};
use common::moto::{ACCESS_KEY, ACCOUNT, Moto, REGION, SECRET_KEY};
use common::proxy::{FaultProxy, Request, Verdict};
use common::{git, hoist};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const PREFIX: &str = "molecule-ai";
const IMAGES: [&str; 2] = ["platform", "platform-tenant"];

fn registry() -> String {
    format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{PREFIX}")
}

fn repository(image: &str) -> String {
    format!("{PREFIX}/{image}")
}

fn staging(sha: &str) -> String {
    format!("staging-{}", &sha[..7])
}

/// The first 12 hex digits of a digest, as hoist's messages show it.
fn short(digest: &str) -> &str {
    &digest["sha256:".len()..][..12]
}

/// A git repository (`repo/` in a temporary folder) whose `hoist.yaml` lists
/// the two images, with `commits` commits, oldest first.
struct Project {
    root: tempfile::TempDir,
    shas: Vec<String>,
}

impl Project {
    fn new(commits: usize) -> Project {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("repo");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            dir.join("hoist.yaml"),
            "images:\n  platform: {}\n  platform-tenant: {}\n",
        )
        .unwrap();
        git(&dir, &["init", "-q", "-b", "main"]);
        let mut shas = Vec::new();
        for n in 0..commits {
            std::fs::write(dir.join("change.txt"), format!("change {n}\n")).unwrap();
            git(&dir, &["add", "-A"]);
            git(&dir, &["commit", "-q", "-m", &format!("change {n}")]);
            shas.push(git(&dir, &["rev-parse", "HEAD"]));
        }
        Project { root, shas }
    }

    fn dir(&self) -> PathBuf {
        self.root.path().join("repo")
    }
}

/// One run of hoist.
struct Run {
    out: Output,
    json: Value,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.out.status.code()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).to_string()
    }

    fn describe(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code(),
            String::from_utf8_lossy(&self.out.stdout),
            self.stderr()
        )
    }

    fn image(&self, name: &str) -> &Value {
        self.json["images"]
            .as_array()
            .and_then(|images| images.iter().find(|i| i["name"] == name))
            .unwrap_or_else(|| panic!("no image {name} in the report\n{}", self.describe()))
    }
}

/// moto, and the SDK straight to it, to seed what hoist finds and read
/// what it left.
struct Ecr {
    moto: Moto,
    sdk: aws_sdk_ecr::Client,
    runtime: tokio::runtime::Runtime,
}

impl Ecr {
    fn start() -> Option<Ecr> {
        let moto = Moto::start()?;
        let sdk = sdk(&moto);
        Some(Ecr {
            moto,
            sdk,
            runtime: tokio::runtime::Runtime::new().unwrap(),
        })
    }

    /// Creates the image's repository. `ImmutableWithExclusion` gets the
    /// exclusions `hoist publish --create-repos` sets: `staging-latest`,
    /// `latest` and `latest-previous` stay mutable.
    fn create(&self, image: &str, mutability: ImageTagMutability) {
        let filters = (mutability == ImageTagMutability::ImmutableWithExclusion).then(|| {
            ["staging-latest", "latest", "latest-previous"]
                .iter()
                .map(|tag| {
                    ImageTagMutabilityExclusionFilter::builder()
                        .filter_type(ImageTagMutabilityExclusionFilterType::Wildcard)
                        .filter(*tag)
                        .build()
                        .unwrap()
                })
                .collect()
        });
        self.runtime.block_on(async {
            created(
                self.sdk
                    .create_repository()
                    .repository_name(repository(image))
                    .image_tag_mutability(mutability)
                    .set_image_tag_mutability_exclusion_filters(filters)
                    .send()
                    .await,
            )
        });
    }

    /// Puts the image built from `sha` (a manifest of its own) under `tag`,
    /// as a push does; returns its digest.
    fn put(&self, image: &str, sha: &str, tag: &str) -> String {
        let bytes = docker_manifest(&format!("{image} built from {sha}"));
        self.runtime
            .block_on(seed(&self.sdk, &repository(image), tag, &bytes))
    }

    /// Publishes `sha`'s image under `staging-<sha7>`, as `hoist publish`
    /// leaves it; returns its digest.
    fn publish(&self, image: &str, sha: &str) -> String {
        self.put(image, sha, &staging(sha))
    }

    /// The digest `tag` names, as `BatchGetImage` answers.
    fn digest(&self, image: &str, tag: &str) -> Option<String> {
        self.runtime
            .block_on(digest_of_tag(&self.sdk, &repository(image), tag))
    }

    /// Every tag of the image's repository with its digest, as
    /// `DescribeImages` answers.
    fn tags(&self, image: &str) -> BTreeMap<String, String> {
        self.runtime.block_on(async {
            let out = self
                .sdk
                .describe_images()
                .repository_name(repository(image))
                .send()
                .await
                .unwrap();
            out.image_details()
                .iter()
                .flat_map(|d| {
                    let digest = d.image_digest().unwrap().to_string();
                    d.image_tags()
                        .iter()
                        .map(move |t| (t.clone(), digest.clone()))
                })
                .collect()
        })
    }

    fn all_tags(&self) -> Vec<BTreeMap<String, String>> {
        IMAGES.iter().map(|image| self.tags(image)).collect()
    }

    /// `imagePushedAt` of a digest, in RFC 3339 to the second.
    fn pushed_at(&self, image: &str, digest: &str) -> String {
        let secs = self.runtime.block_on(async {
            let out = self
                .sdk
                .describe_images()
                .repository_name(repository(image))
                .image_ids(ImageIdentifier::builder().image_digest(digest).build())
                .send()
                .await
                .unwrap();
            out.image_details()[0].image_pushed_at().unwrap().secs()
        });
        time::OffsetDateTime::from_unix_timestamp(secs)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    }

    /// `hoist -C repo <args> --registry <ECR> --format json`, run from the
    /// folder above the repository, the ECR endpoint being moto.
    fn hoist(&self, project: &Project, args: &[&str]) -> Run {
        self.hoist_via(project, &self.moto.url(), args)
    }

    /// The same, through `endpoint` (a proxy in front of moto).
    fn hoist_via(&self, project: &Project, endpoint: &str, args: &[&str]) -> Run {
        let dir = project.dir();
        let registry = registry();
        let mut full = vec!["-C", dir.to_str().unwrap()];
        full.extend_from_slice(args);
        full.extend(["--registry", &registry, "--format", "json"]);
        let out = hoist(
            project.root.path(),
            &full,
            &[
                ("AWS_ENDPOINT_URL_ECR", endpoint),
                ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
                ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ],
        );
        let run = Run {
            json: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
            out,
        };
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&run.out.stdout),
            run.stderr()
        );
        assert!(!said.contains(SECRET_KEY), "{said}");
        run
    }
}

/// moto with both repositories created as hoist creates them, and the
/// images of a project's `commits` commits published.
fn published(commits: usize) -> Option<(Ecr, Project)> {
    let ecr = Ecr::start()?;
    let project = Project::new(commits);
    for image in IMAGES {
        ecr.create(image, ImageTagMutability::ImmutableWithExclusion);
        for sha in &project.shas {
            ecr.publish(image, sha);
        }
    }
    Some((ecr, project))
}

/// Every image's `latest` names the staging image of `sha` in moto.
fn assert_latest(ecr: &Ecr, sha: &str) {
    for image in IMAGES {
        let staged = ecr.digest(image, &staging(sha));
        assert!(staged.is_some(), "{image}:{} is gone", staging(sha));
        assert_eq!(
            ecr.digest(image, "latest"),
            staged,
            "{image}:latest should be {}",
            &sha[..7]
        );
    }
}

fn assert_previous(ecr: &Ecr, sha: Option<&str>) {
    for image in IMAGES {
        assert_eq!(
            ecr.digest(image, "latest-previous"),
            sha.and_then(|sha| ecr.digest(image, &staging(sha))),
            "{image}:latest-previous"
        );
    }
}

/// Whether a request the proxy saw is an ECR `PutImage` call.
fn is_put_image(request: &Request) -> bool {
    request
        .header("x-amz-target")
        .is_some_and(|t| t.ends_with(".PutImage"))
}

#[test]
fn promote_retags_on_ecr_verified_and_a_rerun_writes_nothing() {
    let Some((ecr, project)) = published(2) else {
        return;
    };
    let (a, b) = (&project.shas[0], &project.shas[1]);
    let before = ecr.all_tags();

    let first = ecr.hoist(&project, &["promote", a]);
    assert_eq!(first.code(), Some(0), "{}", first.describe());
    assert_eq!(first.json["promoted"], true);
    assert_eq!(first.json["moved"], 2, "{}", first.describe());
    assert_eq!(first.json["sha"], a.as_str());
    assert_eq!(first.json["retries"], 0);
    for image in IMAGES {
        let entry = first.image(image);
        assert_eq!(entry["direction"]["direction"], "first");
        assert_eq!(entry["repository"], repository(image));
    }
    assert_latest(&ecr, a);
    assert_previous(&ecr, None);
    // Only `latest` was added: every other tag names what it named.
    for (image, mut was) in IMAGES.iter().zip(before) {
        was.insert("latest".into(), ecr.digest(image, &staging(a)).unwrap());
        assert_eq!(ecr.tags(image), was, "{image}");
        let digest = ecr.digest(image, "latest").unwrap();
        assert_eq!(
            ecr.runtime
                .block_on(tags_of(&ecr.sdk, &repository(image), &digest)),
            ["latest", staging(a).as_str()]
        );
    }

    // Again, by the short sha, through a proxy that counts the calls:
    // latest names it already, so not one PutImage is sent.
    let proxy = FaultProxy::start(ecr.moto.addr, Arc::new(|_| Verdict::Forward));
    let before = ecr.all_tags();
    let again = ecr.hoist_via(&project, &proxy.url(), &["promote", &a[..7]]);
    assert_eq!(again.code(), Some(0), "{}", again.describe());
    assert_eq!(again.json["moved"], 0, "{}", again.describe());
    assert_eq!(again.json["promoted"], true);
    assert_eq!(
        again.image("platform")["direction"]["direction"],
        "in-place"
    );
    let seen = proxy.seen();
    assert!(!seen.is_empty());
    assert!(
        !seen.iter().any(|s| is_put_image(&s.request)),
        "{:#?}",
        seen.iter()
            .map(|s| s.request.header("x-amz-target"))
            .collect::<Vec<_>>()
    );
    assert_eq!(ecr.all_tags(), before);

    // Forward: latest-previous keeps the rollback target.
    let next = ecr.hoist(&project, &["promote", b]);
    assert_eq!(next.code(), Some(0), "{}", next.describe());
    assert_eq!(next.json["moved"], 4, "{}", next.describe());
    assert_eq!(next.image("platform")["direction"]["direction"], "forward");
    assert_latest(&ecr, b);
    assert_previous(&ecr, Some(a));
    for image in IMAGES {
        let tags = ecr.tags(image);
        let (digest_a, digest_b) = (&tags[&staging(a)], &tags[&staging(b)]);
        assert_ne!(digest_a, digest_b);
        assert_eq!(
            ecr.runtime
                .block_on(tags_of(&ecr.sdk, &repository(image), digest_b)),
            ["latest", staging(b).as_str()]
        );
        assert_eq!(
            ecr.runtime
                .block_on(tags_of(&ecr.sdk, &repository(image), digest_a)),
            ["latest-previous", staging(a).as_str()]
        );
    }
}

#[test]
fn a_put_image_whose_answer_is_lost_is_retried_and_image_already_exists_is_success() {
    let Some((ecr, project)) = published(1) else {
        return;
    };
    let a = &project.shas[0];
    // The first PutImage reaches moto, which moves the tag; its answer never
    // comes back, so hoist sends it again, and moto answers that the image
    // is there already.
    let puts = Arc::new(AtomicUsize::new(0));
    let counted = puts.clone();
    let proxy = FaultProxy::start(
        ecr.moto.addr,
        Arc::new(move |request: &Request| {
            if is_put_image(request) && counted.fetch_add(1, Ordering::SeqCst) == 0 {
                Verdict::ForwardButCut
            } else {
                Verdict::Forward
            }
        }),
    );
    let run = ecr.hoist_via(&project, &proxy.url(), &["promote", a]);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    assert_eq!(run.json["retries"], 1, "{}", run.describe());
    assert_eq!(run.json["moved"], 2);
    assert_eq!(run.json["promoted"], true);
    // Two images' latest, one of them twice.
    assert_eq!(puts.load(Ordering::SeqCst), 3);
    assert_latest(&ecr, a);
    assert_previous(&ecr, None);

    // What moto answers a PutImage of a tag that already names the image.
    let bytes = docker_manifest(&format!("platform built from {a}"));
    let error = ecr
        .runtime
        .block_on(async {
            ecr.sdk
                .put_image()
                .repository_name(repository("platform"))
                .image_manifest(std::str::from_utf8(&bytes).unwrap())
                .image_manifest_media_type(hoist::registry::DOCKER_MANIFEST)
                .image_tag("latest")
                .image_digest(hoist::registry::digest_of(&bytes))
                .send()
                .await
        })
        .unwrap_err();
    assert!(
        error
            .as_service_error()
            .is_some_and(|e| e.is_image_already_exists_exception()),
        "{error:?}"
    );
}

#[test]
fn never_backwards_without_allow_older_and_rollback_swaps_twice() {
    let Some((ecr, project)) = published(2) else {
        return;
    };
    let (a, b) = (&project.shas[0], &project.shas[1]);
    let run = ecr.hoist(&project, &["promote", b]);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    assert_latest(&ecr, b);

    let before = ecr.all_tags();
    let refused = ecr.hoist(&project, &["promote", a]);
    assert_eq!(refused.code(), Some(1), "{}", refused.describe());
    let stderr = refused.stderr();
    assert!(stderr.contains("nothing promoted"), "{stderr}");
    assert!(
        stderr.contains(&format!("backwards: latest holds {}", &b[..7])),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-older"), "{stderr}");
    assert_eq!(ecr.all_tags(), before);

    let older = ecr.hoist(&project, &["promote", a, "--allow-older"]);
    assert_eq!(older.code(), Some(0), "{}", older.describe());
    assert_eq!(
        older.image("platform-tenant")["direction"]["direction"],
        "backwards"
    );
    assert_eq!(
        older.image("platform-tenant")["direction"]["revision"],
        &b[..7]
    );
    assert_latest(&ecr, a);
    assert_previous(&ecr, Some(b));

    let back = ecr.hoist(&project, &["rollback"]);
    assert_eq!(back.code(), Some(0), "{}", back.describe());
    assert_eq!(back.json["moved"], 4);
    assert_latest(&ecr, b);
    assert_previous(&ecr, Some(a));
    let undone = ecr.hoist(&project, &["rollback"]);
    assert_eq!(undone.code(), Some(0), "{}", undone.describe());
    assert_latest(&ecr, a);
    assert_previous(&ecr, Some(b));

    // `rollback SHA` is a promotion that may go backwards (here forward).
    let to = ecr.hoist(&project, &["rollback", b]);
    assert_eq!(to.code(), Some(0), "{}", to.describe());
    assert_latest(&ecr, b);
    assert_previous(&ecr, Some(a));
    // The staging tags were never touched.
    for image in IMAGES {
        for sha in [a, b] {
            assert_eq!(
                ecr.tags(image)[&staging(sha)],
                before[IMAGES.iter().position(|i| *i == image).unwrap()][&staging(sha)]
            );
        }
    }
}

#[test]
fn status_reports_what_ecr_holds_with_push_times_and_newest_staging_first() {
    let Some(ecr) = Ecr::start() else {
        return;
    };
    let project = Project::new(3);
    let (a, b, c) = (&project.shas[0], &project.shas[1], &project.shas[2]);
    for image in IMAGES {
        ecr.create(image, ImageTagMutability::ImmutableWithExclusion);
    }
    // One commit a second: moto's push times are whole seconds.
    for (n, sha) in [a, b, c].into_iter().enumerate() {
        if n > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        for image in IMAGES {
            ecr.publish(image, sha);
            ecr.put(image, sha, "staging-latest");
        }
    }
    for sha in [a, b] {
        let run = ecr.hoist(&project, &["promote", sha]);
        assert_eq!(run.code(), Some(0), "{}", run.describe());
    }
    assert_latest(&ecr, b);
    assert_previous(&ecr, Some(a));

    let before = ecr.all_tags();
    let status = ecr.hoist(&project, &["status"]);
    assert_eq!(status.code(), Some(0), "{}", status.describe());
    assert_eq!(status.json["registry"], registry());
    assert_eq!(ecr.all_tags(), before, "status writes nothing");
    for image in IMAGES {
        let entry = status.image(image);
        assert_eq!(entry["repository"], repository(image));
        let digest = |sha: &str| ecr.digest(image, &staging(sha)).unwrap();
        for (key, sha) in [("latest", b), ("latest_previous", a), ("staging_latest", c)] {
            let state = &entry[key];
            assert_eq!(state["digest"], digest(sha), "{image} {key}: {state}");
            // ECR tells the commit by the staging tag on the same digest.
            assert_eq!(state["revision"], &sha[..7], "{image} {key}");
            assert_eq!(state["staging_tag"], staging(sha), "{image} {key}");
            assert_eq!(
                state["pushed_at"],
                ecr.pushed_at(image, &digest(sha)),
                "{image} {key}"
            );
        }
        // Newest first by push time: c, b, a, each on its own second.
        let staged = entry["staging"].as_array().unwrap();
        let tags: Vec<&str> = staged.iter().map(|t| t["tag"].as_str().unwrap()).collect();
        assert_eq!(tags, [staging(c), staging(b), staging(a)], "{entry}");
        let times: Vec<&str> = staged
            .iter()
            .map(|t| t["pushed_at"].as_str().unwrap())
            .collect();
        assert!(times[0] > times[1] && times[1] > times[2], "{times:?}");
        for (tag, sha) in staged.iter().zip([c, b, a]) {
            assert_eq!(tag["digest"], digest(sha));
        }
        assert_eq!(entry["warnings"].as_array().unwrap().len(), 0, "{entry}");
    }

    let two = ecr.hoist(
        &project,
        &["status", "--staging", "2", "--image", "platform"],
    );
    assert_eq!(two.code(), Some(0), "{}", two.describe());
    assert_eq!(two.json["images"].as_array().unwrap().len(), 1);
    let tags: Vec<&str> = two.image("platform")["staging"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tag"].as_str().unwrap())
        .collect();
    assert_eq!(tags, [staging(c), staging(b)]);
}

#[test]
fn an_immutable_latest_fails_the_promotion_and_the_first_image_is_put_back() {
    let Some(ecr) = Ecr::start() else {
        return;
    };
    let project = Project::new(2);
    let (a, b) = (&project.shas[0], &project.shas[1]);
    // The first image's repository as hoist creates it; the second's tags
    // all immutable, and its latest names a's image already.
    ecr.create("platform", ImageTagMutability::ImmutableWithExclusion);
    ecr.create("platform-tenant", ImageTagMutability::Immutable);
    for image in IMAGES {
        for sha in [a, b] {
            ecr.publish(image, sha);
        }
    }
    ecr.put("platform-tenant", a, "latest");
    let tenant_a = ecr.digest("platform-tenant", &staging(a)).unwrap();
    assert_eq!(
        ecr.digest("platform-tenant", "latest"),
        Some(tenant_a.clone())
    );

    // platform's latest does not exist yet: it is written, then removed
    // again (ECR removes a tag alone).
    let before = ecr.all_tags();
    let failed = ecr.hoist(&project, &["promote", b]);
    assert_eq!(failed.code(), Some(1), "{}", failed.describe());
    let stderr = failed.stderr();
    let tenant = repository("platform-tenant");
    let platform = repository("platform");
    assert!(
        stderr.contains(&format!("cannot point {tenant}:latest at")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("the tag already names {tenant_a}")),
        "{stderr}"
    );
    assert!(stderr.contains("immutable"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{tenant}:latest-previous: removed again (it did not exist before)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{platform}:latest: removed again (it did not exist before)"
        )),
        "{stderr}"
    );
    assert_eq!(ecr.digest("platform", "latest"), None);
    assert_eq!(
        ecr.digest("platform-tenant", "latest"),
        Some(tenant_a.clone())
    );
    assert_previous(&ecr, None);
    assert_eq!(ecr.all_tags(), before, "all or none");

    // platform's latest names a's image: it is moved, then put back.
    let run = ecr.hoist(&project, &["promote", a, "--image", "platform"]);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    let platform_a = ecr.digest("platform", &staging(a)).unwrap();
    assert_eq!(ecr.digest("platform", "latest"), Some(platform_a.clone()));
    let before = ecr.all_tags();
    let failed = ecr.hoist(&project, &["promote", b]);
    assert_eq!(failed.code(), Some(1), "{}", failed.describe());
    let stderr = failed.stderr();
    assert!(
        stderr.contains(&format!("cannot point {tenant}:latest at")),
        "{stderr}"
    );
    assert!(stderr.contains("immutable"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{platform}:latest: put back to {}",
            short(&platform_a)
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{platform}:latest-previous: removed again (it did not exist before)"
        )),
        "{stderr}"
    );
    assert_latest(&ecr, a);
    assert_previous(&ecr, None);
    assert_eq!(ecr.all_tags(), before, "all or none");
}

#[test]
fn a_missing_repository_fails_naming_it_and_nothing_moves() {
    let Some(ecr) = Ecr::start() else {
        return;
    };
    let project = Project::new(2);
    let (a, b) = (&project.shas[0], &project.shas[1]);
    // platform-tenant's repository does not exist.
    ecr.create("platform", ImageTagMutability::ImmutableWithExclusion);
    for sha in [a, b] {
        ecr.publish("platform", sha);
    }
    let run = ecr.hoist(&project, &["promote", a, "--image", "platform"]);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    let before = ecr.tags("platform");

    let tenant = repository("platform-tenant");
    for args in [
        vec!["promote", b.as_str()],
        vec!["rollback"],
        vec!["status"],
    ] {
        let failed = ecr.hoist(&project, &args);
        assert_eq!(failed.code(), Some(1), "{args:?}: {}", failed.describe());
        let stderr = failed.stderr();
        assert!(
            stderr.contains(&format!("ECR repository {tenant} does not exist")),
            "{args:?}: {stderr}"
        );
        assert_eq!(ecr.tags("platform"), before, "{args:?}");
    }
    assert_eq!(
        ecr.digest("platform", "latest"),
        ecr.digest("platform", &staging(a))
    );
    assert_eq!(ecr.digest("platform", "latest-previous"), None);
}

// --- found as bugs, fixed since ---

/// The hint of a missing repository names only flags the command has: once
/// it said "run with --create-repos" to promote, rollback and status, which
/// reject that flag (exit 2).
#[test]
fn a_missing_repository_hint_names_only_flags_the_command_has() {
    let Some(ecr) = Ecr::start() else {
        return;
    };
    let project = Project::new(1);
    let a = &project.shas[0];
    ecr.create("platform", ImageTagMutability::ImmutableWithExclusion);
    ecr.publish("platform", a);
    for args in [
        vec!["promote", a.as_str()],
        vec!["rollback"],
        vec!["status"],
    ] {
        let failed = ecr.hoist(&project, &args);
        assert_eq!(failed.code(), Some(1), "{args:?}: {}", failed.describe());
        // The flag the hint suggests does not exist for this command.
        let mut with_flag = args.clone();
        with_flag.push("--create-repos");
        let suggested = ecr.hoist(&project, &with_flag);
        assert_eq!(suggested.code(), Some(2), "{}", suggested.describe());
        let stderr = failed.stderr();
        assert!(!stderr.contains("--create-repos"), "{args:?}: {stderr}");
    }
    assert_eq!(ecr.digest("platform", "latest"), None);
}

/// A failed write keeps its hint: an immutable `latest` on ECR says how to
/// make it mutable (an exclusion filter of IMMUTABLE_WITH_EXCLUSION).
#[test]
fn an_immutable_latest_failure_keeps_the_hint_to_make_latest_mutable() {
    let Some(ecr) = Ecr::start() else {
        return;
    };
    let project = Project::new(2);
    let (a, b) = (&project.shas[0], &project.shas[1]);
    for image in IMAGES {
        ecr.create(image, ImageTagMutability::Immutable);
        for sha in [a, b] {
            ecr.publish(image, sha);
        }
        ecr.put(image, a, "latest");
    }
    let before = ecr.all_tags();
    let failed = ecr.hoist(&project, &["promote", b]);
    assert_eq!(failed.code(), Some(1), "{}", failed.describe());
    assert_eq!(ecr.all_tags(), before, "all or none");
    let stderr = failed.stderr();
    assert!(stderr.contains("immutable"), "{stderr}");
    assert!(
        stderr.contains("hint: ") && stderr.contains("make latest mutable"),
        "{stderr}"
    );
}

#[test]
fn a_staging_tag_pushed_onto_another_commits_image_is_never_promoted() {
    let Some((ecr, mut project)) = published(2) else {
        return;
    };
    let (a, b) = (project.shas[0].clone(), project.shas[1].clone());
    let run = ecr.hoist(&project, &["promote", &b]);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    // A later commit's staging tag put by hand on a's images: on ECR the
    // tags on a digest are what tells its commit, and a's own tag is one.
    let dir = project.dir();
    std::fs::write(dir.join("change.txt"), "by hand\n").unwrap();
    git(&dir, &["commit", "-q", "-am", "by hand"]);
    let y = git(&dir, &["rev-parse", "HEAD"]);
    project.shas.push(y.clone());
    for image in IMAGES {
        ecr.put(image, &a, &staging(&y));
        assert_eq!(
            ecr.digest(image, &staging(&y)),
            ecr.digest(image, &staging(&a))
        );
    }

    let before = ecr.all_tags();
    for args in [vec!["promote", &y[..7]], vec!["rollback", y.as_str()]] {
        let refused = ecr.hoist(&project, &args);
        assert_eq!(refused.code(), Some(1), "{args:?}: {}", refused.describe());
        let stderr = refused.stderr();
        for image in IMAGES {
            assert!(
                stderr.contains(&format!(
                    "{image}: {PREFIX}/{image}:{} holds an image built from commit {}, not {y}",
                    staging(&y),
                    &a[..7]
                )),
                "{args:?}: {stderr}"
            );
        }
        assert_eq!(ecr.all_tags(), before, "{args:?}: nothing moves");
    }
    assert_latest(&ecr, &b);

    let status = ecr.hoist(&project, &["status"]);
    assert_eq!(status.code(), Some(0), "{}", status.describe());
    for image in IMAGES {
        let warnings = status.image(image)["warnings"].as_array().unwrap();
        assert!(
            warnings
                .iter()
                .any(|w| w.as_str().unwrap().contains(&format!(
                    "{} holds an image built from commit {}",
                    staging(&y),
                    &a[..7]
                ))),
            "{warnings:?}"
        );
    }
}

/// The account a promotion's destination lives in, reached by assuming a
/// role there (moto's STS hands out keys of the role's account).
const PRODUCTION: &str = "111111111111";

/// An SDK client for the production account: the test's keys assume the
/// role, as hoist does with `aws_role_arn`.
fn production_sdk(moto: &Moto) -> aws_sdk_ecr::Client {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(moto.url())
            .credentials_provider(aws_sdk_ecr::config::Credentials::new(
                ACCESS_KEY, SECRET_KEY, None, None, "test",
            ))
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .load()
            .await;
        let role = aws_config::sts::AssumeRoleProvider::builder(format!(
            "arn:aws:iam::{PRODUCTION}:role/hoist-promote"
        ))
        .session_name("test")
        .configure(&base)
        .build()
        .await;
        let config = base
            .into_builder()
            .credentials_provider(aws_sdk_ecr::config::SharedCredentialsProvider::new(role))
            .build();
        aws_sdk_ecr::Client::new(&config)
    })
}

/// moto keeps no blobs (it has no registry endpoint), so the images are
/// OCI indexes that name no manifest: the copy is all manifest paths.
fn blobless_index(image: &str, sha: &str) -> bytes::Bytes {
    bytes::Bytes::from(format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\
         \"manifests\":[],\"annotations\":{{\"built\":\"{image} from {sha}\"}}}}"
    ))
}

#[test]
fn promote_to_another_account_copies_by_digest_and_moves_latest_there_only() {
    let Some(ecr) = Ecr::start() else {
        return;
    };
    let project = Project::new(2);
    let destination = format!("{PRODUCTION}.dkr.ecr.{REGION}.amazonaws.com/{PREFIX}");
    std::fs::write(
        project.dir().join("hoist.yaml"),
        format!(
            "images:\n  platform: {{}}\n  platform-tenant: {{}}\npromote:\n  to:\n    - registry: {destination}\n      aws_role_arn: arn:aws:iam::{PRODUCTION}:role/hoist-promote\n"
        ),
    )
    .unwrap();
    let mut digests = BTreeMap::new();
    for image in IMAGES {
        ecr.create(image, ImageTagMutability::ImmutableWithExclusion);
        for sha in &project.shas {
            let digest = ecr.runtime.block_on(common::ecr::seed_as(
                &ecr.sdk,
                &repository(image),
                &staging(sha),
                &blobless_index(image, sha),
                "application/vnd.oci.image.index.v1+json",
            ));
            digests.insert((image, sha.clone()), digest);
        }
    }
    let (a, b) = (&project.shas[0], &project.shas[1]);

    // Production has no repositories yet: refused, saying how to go on.
    let refused = ecr.hoist(&project, &["promote", a]);
    assert_eq!(refused.code(), Some(1), "{}", refused.describe());
    assert!(
        refused.stderr().contains("--create-repos"),
        "{}",
        refused.describe()
    );

    // moto's PutImage without a tag (how hoist writes a copied manifest
    // before any tag moves) fails with a 500 in a repository with tag
    // exclusions, which `--create-repos` sets: production's repositories
    // are made mutable here instead (README, tests: moto's gaps).
    let production = production_sdk(&ecr.moto);
    for image in IMAGES {
        ecr.runtime.block_on(common::ecr::create_repository(
            &production,
            &repository(image),
            ImageTagMutability::Mutable,
        ));
    }
    let first = ecr.hoist(&project, &["promote", a]);
    assert_eq!(first.code(), Some(0), "{}", first.describe());
    let in_production = |image: &str, tag: &str| {
        ecr.runtime
            .block_on(digest_of_tag(&production, &repository(image), tag))
    };
    for image in IMAGES {
        let wanted = digests[&(image, a.clone())].clone();
        assert_eq!(in_production(image, "latest"), Some(wanted.clone()));
        assert_eq!(in_production(image, &staging(a)), Some(wanted));
        // Staging's own latest is not touched.
        assert_eq!(ecr.digest(image, "latest"), None);
    }

    // Forward to B in production; then backwards is refused there.
    let next = ecr.hoist(&project, &["promote", b]);
    assert_eq!(next.code(), Some(0), "{}", next.describe());
    for image in IMAGES {
        assert_eq!(
            in_production(image, "latest"),
            Some(digests[&(image, b.clone())].clone())
        );
        assert_eq!(
            in_production(image, "latest-previous"),
            Some(digests[&(image, a.clone())].clone())
        );
    }
    let back = ecr.hoist(&project, &["promote", a]);
    assert_eq!(back.code(), Some(1), "{}", back.describe());
    assert!(
        back.stderr().contains("would not move forward"),
        "{}",
        back.describe()
    );
}

/// A destination's `aws_profile` wins over the keys in the environment
/// (the source's): here the profile assumes the production role itself
/// (`role_arn` with `source_profile`, from `AWS_CONFIG_FILE`).
#[test]
fn a_destination_profile_wins_over_the_environment_keys() {
    let Some(ecr) = Ecr::start() else {
        return;
    };
    let project = Project::new(1);
    let a = &project.shas[0];
    let destination = format!("{PRODUCTION}.dkr.ecr.{REGION}.amazonaws.com/{PREFIX}");
    std::fs::write(
        project.dir().join("hoist.yaml"),
        format!(
            "images:\n  platform: {{}}\n  platform-tenant: {{}}\npromote:\n  to:\n    - registry: {destination}\n      aws_profile: production\n"
        ),
    )
    .unwrap();
    let aws_config = project.root.path().join("aws-config");
    std::fs::write(
        &aws_config,
        format!(
            "[profile base]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n\n\
             [profile production]\nrole_arn = arn:aws:iam::{PRODUCTION}:role/hoist-promote\nsource_profile = base\n"
        ),
    )
    .unwrap();
    let production = production_sdk(&ecr.moto);
    let mut wanted = BTreeMap::new();
    for image in IMAGES {
        ecr.create(image, ImageTagMutability::ImmutableWithExclusion);
        let digest = ecr.runtime.block_on(common::ecr::seed_as(
            &ecr.sdk,
            &repository(image),
            &staging(a),
            &blobless_index(image, a),
            "application/vnd.oci.image.index.v1+json",
        ));
        wanted.insert(image, digest);
        ecr.runtime.block_on(common::ecr::create_repository(
            &production,
            &repository(image),
            ImageTagMutability::Mutable,
        ));
    }
    let dir = project.dir();
    let source = registry();
    let moto = ecr.moto.url();
    let out = hoist(
        project.root.path(),
        &[
            "-C",
            dir.to_str().unwrap(),
            "promote",
            a,
            "--registry",
            &source,
            "--format",
            "json",
        ],
        &[
            // Generic: the profile's STS call goes to moto too.
            ("AWS_ENDPOINT_URL", &moto),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_CONFIG_FILE", aws_config.to_str().unwrap()),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for image in IMAGES {
        let latest = ecr
            .runtime
            .block_on(digest_of_tag(&production, &repository(image), "latest"));
        assert_eq!(latest.as_ref(), Some(&wanted[image]), "{image}");
        // Not in the source's account: its keys were not used there.
        assert_eq!(ecr.digest(image, "latest"), None);
    }
}
