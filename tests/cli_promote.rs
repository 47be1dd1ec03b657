//! `hoist promote`, `rollback` and `status` end to end against Debian's
//! `docker-registry` on loopback, with images that `hoist publish` pushed
//! (or, for a multi-platform index, that the test wrote through the
//! registry API). Every state is checked against what the registry itself
//! answers.

mod common;

use common::canary::Canary;
use common::docker::{Registry, RegistryOptions, http_request, require_engine};
use common::monorepo::{IMAGES, Monorepo, PREFIX, Run, repository};
use common::proxy::{FaultProxy, Request, Verdict};
use common::{git, hoist};
use std::sync::Arc;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A registry holding the example's images published from `commits` new
/// commits, oldest first; their shas.
fn published(commits: usize) -> Option<(Monorepo, Registry, Vec<String>)> {
    if !require_engine() {
        return None;
    }
    let registry = Registry::start(RegistryOptions::default())?;
    let mut repo = Monorepo::new(None)?;
    let mut shas = Vec::new();
    for n in 0..commits {
        let sha = repo.server_commit(&format!("change {n}"));
        let run = repo.publish(registry.addr(), &[], &[]);
        assert_eq!(run.code(), Some(0), "{}", run.describe());
        shas.push(sha);
    }
    Some((repo, registry, shas))
}

fn target(registry: &str) -> String {
    format!("{registry}/{PREFIX}")
}

/// `hoist <verb> --registry <registry>/molecule-ai <args>`.
fn hoist_on(repo: &Monorepo, registry: &str, verb: &str, args: &[&str]) -> Run {
    let target = target(registry);
    let mut full = vec![verb, "--registry", &target];
    full.extend_from_slice(args);
    repo.run(&full, &[])
}

fn digest(registry: &Registry, image: &str, tag: &str) -> Option<String> {
    registry.manifest_digest(&repository(image), tag)
}

fn staging(registry: &Registry, image: &str, sha: &str) -> String {
    digest(registry, image, &format!("staging-{}", &sha[..7])).expect("published")
}

/// Every image's `latest` names the staging image of `sha`.
fn assert_latest(registry: &Registry, sha: &str) {
    for image in IMAGES {
        assert_eq!(
            digest(registry, image, "latest"),
            Some(staging(registry, image, sha)),
            "{image}:latest should be {}",
            &sha[..7]
        );
    }
}

fn assert_previous(registry: &Registry, sha: Option<&str>) {
    for image in IMAGES {
        assert_eq!(
            digest(registry, image, "latest-previous"),
            sha.map(|sha| staging(registry, image, sha)),
            "{image}:latest-previous"
        );
    }
}

/// The registry's log lines written since `from` bytes that answer a
/// request on a blob.
fn blob_requests(registry: &Registry, from: usize) -> Vec<String> {
    registry.log()[from..]
        .lines()
        .filter(|l| l.contains("http.request.uri=") && l.contains("/blobs/"))
        .map(str::to_string)
        .collect()
}

#[test]
fn promote_moves_latest_registry_side_verified_and_a_rerun_is_a_no_op() {
    let Some((repo, registry, shas)) = published(2) else {
        return;
    };
    let (a, b) = (&shas[0], &shas[1]);

    let log = registry.log().len();
    let first = hoist_on(&repo, registry.addr(), "promote", &[a]);
    assert_eq!(first.code(), Some(0), "{}", first.describe());
    assert_latest(&registry, a);
    assert_previous(&registry, None);
    assert_eq!(first.json["promoted"], true);
    assert_eq!(first.json["moved"], 2);
    assert_eq!(first.json["sha"], a.as_str());
    for image in IMAGES {
        let digest = staging(&registry, image, a);
        assert!(
            first
                .outputs
                .contains(&format!("{image}-digest={digest}\n")),
            "{}",
            first.outputs
        );
        assert!(
            first
                .summary
                .contains(&format!("| {image} | <code>latest</code> | (none) |"))
        );
    }
    assert!(first.outputs.contains("promoted=true\n"));
    // Registry-side: manifests only; the one blob read per image is the
    // source's config, whose revision label says which commit it is.
    let blobs = blob_requests(&registry, log);
    assert!(blobs.len() <= IMAGES.len(), "{blobs:#?}");
    assert!(
        blobs.iter().all(|l| l.contains("http.request.method=GET")),
        "{blobs:#?}"
    );

    let again = hoist_on(&repo, registry.addr(), "promote", &[&a[..7]]);
    assert_eq!(again.code(), Some(0), "{}", again.describe());
    assert_eq!(again.json["moved"], 0);
    assert_latest(&registry, a);

    // Forward: latest-previous keeps the rollback target. Checking the
    // source's commit and telling forward from backwards read the configs
    // of the source and of what latest names, and no other blob.
    let log = registry.log().len();
    let next = hoist_on(&repo, registry.addr(), "promote", &[b]);
    assert_eq!(next.code(), Some(0), "{}", next.describe());
    assert_latest(&registry, b);
    assert_previous(&registry, Some(a));
    assert_eq!(next.json["moved"], 4);
    for image in IMAGES {
        assert_eq!(next.image(image)["identity"]["state"], "confirmed");
        assert_eq!(next.image(image)["identity"]["revision"], b.as_str());
    }
    let blobs = blob_requests(&registry, log);
    assert!(blobs.len() <= 2 * IMAGES.len(), "{blobs:#?}");
    assert!(
        blobs.iter().all(|l| l.contains("http.request.method=GET")),
        "{blobs:#?}"
    );

    // What status says is what the registry holds.
    let status = hoist_on(&repo, registry.addr(), "status", &[]);
    assert_eq!(status.code(), Some(0), "{}", status.describe());
    for image in IMAGES {
        let entry = status.json["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == image)
            .unwrap();
        assert_eq!(entry["latest"]["digest"], staging(&registry, image, b));
        assert_eq!(entry["latest"]["revision"], b.as_str());
        assert_eq!(
            entry["latest"]["staging_tag"],
            format!("staging-{}", &b[..7])
        );
        assert_eq!(
            entry["latest_previous"]["digest"],
            staging(&registry, image, a)
        );
        assert_eq!(
            entry["staging_latest"]["digest"],
            staging(&registry, image, b)
        );
        // Newest first, by the commits' times in this clone.
        let tags: Vec<&str> = entry["staging"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["tag"].as_str().unwrap())
            .collect();
        assert_eq!(
            tags,
            vec![
                format!("staging-{}", &b[..7]),
                format!("staging-{}", &a[..7])
            ]
        );
        assert_eq!(entry["warnings"].as_array().unwrap().len(), 0);
    }
}

#[test]
fn never_backwards_by_accident_and_rollback_swaps_twice() {
    let Some((repo, registry, shas)) = published(2) else {
        return;
    };
    let (a, b) = (&shas[0], &shas[1]);
    let run = hoist_on(&repo, registry.addr(), "promote", &[b]);
    assert_eq!(run.code(), Some(0), "{}", run.describe());

    let refused = hoist_on(&repo, registry.addr(), "promote", &[a]);
    assert_eq!(refused.code(), Some(1), "{}", refused.describe());
    let stderr = refused.stderr();
    assert!(stderr.contains("backwards"), "{stderr}");
    assert!(stderr.contains("--allow-older"), "{stderr}");
    assert_latest(&registry, b);
    assert_previous(&registry, None);

    let dry = hoist_on(
        &repo,
        registry.addr(),
        "promote",
        &[a, "--allow-older", "--dry-run"],
    );
    assert_eq!(dry.code(), Some(0), "{}", dry.describe());
    assert_eq!(dry.json["dry_run"], true);
    assert_eq!(dry.json["images"][0]["direction"]["direction"], "backwards");
    assert_latest(&registry, b);

    let older = hoist_on(&repo, registry.addr(), "promote", &[a, "--allow-older"]);
    assert_eq!(older.code(), Some(0), "{}", older.describe());
    assert_latest(&registry, a);
    assert_previous(&registry, Some(b));

    let back = hoist_on(&repo, registry.addr(), "rollback", &[]);
    assert_eq!(back.code(), Some(0), "{}", back.describe());
    assert_latest(&registry, b);
    assert_previous(&registry, Some(a));
    let undone = hoist_on(&repo, registry.addr(), "rollback", &[]);
    assert_eq!(undone.code(), Some(0), "{}", undone.describe());
    assert_latest(&registry, a);
    assert_previous(&registry, Some(b));

    // `rollback SHA` is a promotion that may go backwards.
    let to = hoist_on(&repo, registry.addr(), "rollback", &[b]);
    assert_eq!(to.code(), Some(0), "{}", to.describe());
    assert_latest(&registry, b);

    // Refs are resolved in the local repository, as `git` and
    // `publish --sha` resolve them: a tag, HEAD, a branch.
    git(repo.path(), &["tag", "v1.2", a]);
    let tag = hoist_on(&repo, registry.addr(), "rollback", &["v1.2"]);
    assert_eq!(tag.code(), Some(0), "{}", tag.describe());
    assert_eq!(tag.json["sha"], a.as_str());
    assert_latest(&registry, a);
    let head = hoist_on(&repo, registry.addr(), "promote", &["HEAD"]);
    assert_eq!(head.code(), Some(0), "{}", head.describe());
    assert_eq!(head.json["sha"], b.as_str());
    assert_latest(&registry, b);
    let branch = hoist_on(&repo, registry.addr(), "promote", &["main"]);
    assert_eq!(branch.code(), Some(0), "{}", branch.describe());
    assert_eq!(branch.json["sha"], b.as_str());
}

#[test]
fn a_sha_that_is_not_published_moves_nothing() {
    let Some((repo, registry, shas)) = published(1) else {
        return;
    };
    let run = hoist_on(&repo, registry.addr(), "promote", &[&shas[0]]);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    // A bad canary URL is an input error even when nothing would move.
    for url in ["ftp://127.0.0.1:1/", "http://u:hunter2@127.0.0.1:1/"] {
        let bad = hoist_on(
            &repo,
            registry.addr(),
            "promote",
            &[&shas[0], "--wait-for", url],
        );
        assert_eq!(bad.code(), Some(2), "{url}: {}", bad.describe());
        assert!(!bad.stderr().contains("hunter2"), "{}", bad.describe());
    }
    let unpublished = repo.server_commit("never published");

    let missing = hoist_on(&repo, registry.addr(), "promote", &[&unpublished]);
    assert_eq!(missing.code(), Some(1), "{}", missing.describe());
    let stderr = missing.stderr();
    for image in IMAGES {
        assert!(
            stderr.contains(&format!("{PREFIX}/{image}:staging-{}", &unpublished[..7])),
            "{stderr}"
        );
    }
    assert_latest(&registry, &shas[0]);

    for bad in ["not-a-sha", "staging-abcdef1", "refs/heads/nope"] {
        let run = hoist_on(&repo, registry.addr(), "promote", &[bad]);
        assert_eq!(run.code(), Some(2), "{bad}: {}", run.describe());
        assert!(
            run.stderr()
                .contains(&format!("'{bad}' names no commit of this repository")),
            "{}",
            run.stderr()
        );
    }
    // A sha the clone does not hold is said to be unknown to it, and only
    // then looked for in the registry.
    let unknown = hoist_on(&repo, registry.addr(), "promote", &["0123abc"]);
    assert_eq!(unknown.code(), Some(1), "{}", unknown.describe());
    let stderr = unknown.stderr();
    assert!(
        stderr.contains("commit 0123abc is unknown to this repository, and"),
        "{stderr}"
    );
    assert!(stderr.contains("staging-0123abc not in"), "{stderr}");
    assert_latest(&registry, &shas[0]);
    // No rollback target yet: a clear failure, nothing moved.
    let rollback = hoist_on(&repo, registry.addr(), "rollback", &[]);
    assert_eq!(rollback.code(), Some(1), "{}", rollback.describe());
    assert!(rollback.stderr().contains("latest-previous does not exist"));
    assert_latest(&registry, &shas[0]);
    // status warns of it, as an annotation in CI, and its JSON still parses.
    let status = repo.run(
        &["status", "--registry", &target(registry.addr())],
        &[("GITHUB_ACTIONS", "true")],
    );
    assert_eq!(status.code(), Some(0), "{}", status.describe());
    for image in status.json["images"].as_array().unwrap() {
        // Each listed staging tag comes with the digest it names.
        let name = image["name"].as_str().unwrap();
        let listed = &image["staging"][0];
        let tag = listed["tag"].as_str().unwrap();
        assert_eq!(
            listed["digest"].as_str(),
            digest(&registry, name, tag).as_deref(),
            "{image}"
        );
        let warnings = image["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), 1, "{image}");
        assert!(
            warnings[0]
                .as_str()
                .unwrap()
                .contains("a rollback has no target"),
            "{image}"
        );
    }
    // One warning names every image it concerns, printed once.
    let stderr = status.stderr();
    let gaps: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("a rollback has no target"))
        .collect();
    assert_eq!(gaps.len(), 1, "{stderr}");
    assert!(gaps[0].starts_with("::warning::"), "{stderr}");
    assert!(gaps[0].contains(&IMAGES.join(", ")), "{stderr}");
    // The text shows the commit beside each digest, and the warning once.
    let text = hoist(
        repo.path(),
        &["status", "--registry", &target(registry.addr())],
        &[],
    );
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    let latest = text
        .lines()
        .find(|l| l.trim_start().starts_with("latest "))
        .unwrap();
    assert!(
        latest.contains(&format!("  {}  staging-{}", &shas[0][..7], &shas[0][..7])),
        "{text}"
    );
    assert_eq!(
        text.matches("a rollback has no target").count(),
        1,
        "{text}"
    );
}

/// A proxy in front of `registry` that answers 403 to the PUT of
/// `image:tag` and forwards every other request.
fn failing_put(registry: &Registry, image: &str, tag: &str) -> FaultProxy {
    let failing = format!("/v2/{PREFIX}/{image}/manifests/{tag}");
    FaultProxy::start(
        registry.addr().parse().unwrap(),
        Arc::new(move |request: &Request| {
            if request.method == "PUT" && request.path == failing {
                Verdict::Fail(403)
            } else {
                Verdict::Forward
            }
        }),
    )
}

#[test]
fn a_failed_write_puts_back_the_images_already_moved() {
    let Some((repo, registry, shas)) = published(2) else {
        return;
    };
    let (a, b) = (&shas[0], &shas[1]);
    let run = hoist_on(&repo, registry.addr(), "promote", &[a]);
    assert_eq!(run.code(), Some(0), "{}", run.describe());

    // The second image's `latest` cannot be written.
    let proxy = failing_put(&registry, "platform-tenant", "latest");
    let failed = hoist_on(&repo, &proxy.addr.to_string(), "promote", &[b]);
    assert_eq!(failed.code(), Some(1), "{}", failed.describe());
    let stderr = failed.stderr();
    assert!(
        stderr.contains(&format!("cannot point {PREFIX}/platform-tenant:latest")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{PREFIX}/platform:latest: put back to")),
        "{stderr}"
    );
    // Production is where it was, for every image.
    assert_latest(&registry, a);
    // The first image's latest was written, then put back.
    let puts: Vec<String> = proxy
        .seen()
        .iter()
        .filter(|s| s.request.method == "PUT")
        .map(|s| s.request.path.clone())
        .collect();
    assert_eq!(
        puts.iter()
            .filter(|p| **p == format!("/v2/{PREFIX}/platform/manifests/latest"))
            .count(),
        2,
        "{puts:#?}"
    );
    // latest-previous did not exist before; where the registry cannot remove
    // a tag alone, the report says where it is left.
    for image in IMAGES {
        let previous = digest(&registry, image, "latest-previous");
        match previous {
            None => {}
            Some(previous) => {
                assert_eq!(previous, staging(&registry, image, a));
                assert!(
                    stderr.contains(&format!("{PREFIX}/{image}:latest-previous: left at")),
                    "{stderr}"
                );
            }
        }
    }
}

#[test]
fn a_failed_rollback_memory_write_moves_no_latest() {
    let Some((repo, registry, shas)) = published(3) else {
        return;
    };
    let (a, b, c) = (&shas[0], &shas[1], &shas[2]);
    for sha in [a, b] {
        let run = hoist_on(&repo, registry.addr(), "promote", &[sha]);
        assert_eq!(run.code(), Some(0), "{}", run.describe());
    }
    assert_previous(&registry, Some(a));

    // Every image's latest-previous is written at once, before any latest;
    // the second image's cannot be.
    let proxy = failing_put(&registry, "platform-tenant", "latest-previous");
    let failed = hoist_on(&repo, &proxy.addr.to_string(), "promote", &[c]);
    assert_eq!(failed.code(), Some(1), "{}", failed.describe());
    let stderr = failed.stderr();
    assert!(
        stderr.contains(&format!(
            "cannot point {PREFIX}/platform-tenant:latest-previous"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{PREFIX}/platform:latest-previous: put back to")),
        "{stderr}"
    );
    // No latest was written; both tags are where they were.
    let latest_puts = proxy
        .seen()
        .iter()
        .filter(|s| s.request.method == "PUT" && s.request.path.ends_with("/manifests/latest"))
        .count();
    assert_eq!(latest_puts, 0);
    assert_latest(&registry, b);
    assert_previous(&registry, Some(a));
}

#[test]
fn waits_for_the_canaries_and_a_timeout_moves_nothing() {
    let Some((repo, registry, shas)) = published(1) else {
        return;
    };
    let sha = &shas[0];
    let never = Canary::switching("0000000", "0000000", 0);
    let late = Canary::switching("1111111", sha, 3);
    let run = hoist_on(
        &repo,
        registry.addr(),
        "promote",
        &[
            sha,
            "--wait-for",
            &late.url(),
            "--wait-for",
            &never.url(),
            "--timeout",
            "1s",
            "--interval",
            "100ms",
        ],
    );
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    assert!(run.stderr().contains(&never.url()), "{}", run.stderr());
    for image in IMAGES {
        assert_eq!(digest(&registry, image, "latest"), None);
    }

    let ready = hoist_on(
        &repo,
        registry.addr(),
        "promote",
        &[sha, "--wait-for", &late.url(), "--interval", "100ms"],
    );
    assert_eq!(ready.code(), Some(0), "{}", ready.describe());
    assert_latest(&registry, sha);
    assert!(late.polls() >= 4);
}

#[test]
fn a_promotion_by_someone_else_meanwhile_stops_the_run() {
    let Some((repo, registry, shas)) = published(2) else {
        return;
    };
    let (a, b) = (&shas[0], &shas[1]);
    let run = hoist_on(&repo, registry.addr(), "promote", &[a]);
    assert_eq!(run.code(), Some(0), "{}", run.describe());

    // While hoist waits for the canary, another job moves platform:latest
    // to b's image; then the canary reports b.
    let addr = registry.addr().to_string();
    let (b7, platform_b) = (b[..7].to_string(), staging(&registry, "platform", b));
    let canary = Canary::start(Arc::new(move |poll| {
        if poll == 1 {
            retag(&addr, &repository("platform"), &platform_b, "latest");
        }
        format!(r#"{{"sha":"{}"}}"#, if poll < 2 { "aaaaaaa" } else { &b7 })
    }));
    let raced = hoist_on(
        &repo,
        registry.addr(),
        "promote",
        &[b, "--wait-for", &canary.url(), "--interval", "100ms"],
    );
    assert_eq!(raced.code(), Some(1), "{}", raced.describe());
    assert!(
        raced.stderr().contains("changed while hoist was planning"),
        "{}",
        raced.stderr()
    );
    // Nothing of hoist's was written: the other job's move stands, and the
    // second image is untouched.
    assert_eq!(
        digest(&registry, "platform", "latest"),
        Some(staging(&registry, "platform", b))
    );
    assert_eq!(
        digest(&registry, "platform-tenant", "latest"),
        Some(staging(&registry, "platform-tenant", a))
    );
    assert_previous(&registry, None);
}

/// Points `repo:tag` at the manifest `digest`, as another tool would.
fn retag(addr: &str, repo: &str, digest: &str, tag: &str) {
    let accept = "application/vnd.docker.distribution.manifest.v2+json";
    let (status, head, body) = http_request(
        addr,
        "GET",
        &format!("/v2/{repo}/manifests/{digest}"),
        None,
        &[("Accept", accept)],
    )
    .unwrap();
    assert_eq!(status, 200, "{head}");
    let media_type = common::docker::header(&head, "content-type").unwrap();
    let (status, head, _) = common::docker::http_put(
        addr,
        &format!("/v2/{repo}/manifests/{tag}"),
        &media_type,
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 201, "{head}");
}

#[test]
fn an_oci_index_is_promoted_byte_for_byte() {
    let Some((repo, registry, shas)) = published(2) else {
        return;
    };
    // A two-platform index over the two platform images, written through
    // the registry API over the staging tag of the second commit (its
    // first platform, the one whose label tells the commit, is that
    // commit's image).
    let platform = repository("platform");
    let entry = |sha: &str, arch: &str| {
        let digest = staging(&registry, "platform", sha);
        let (status, head, body) = http_request(
            registry.addr(),
            "GET",
            &format!("/v2/{platform}/manifests/{digest}"),
            None,
            &[(
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json",
            )],
        )
        .unwrap();
        assert_eq!(status, 200, "{head}");
        format!(
            r#"{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{digest}","size":{},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#,
            body.len()
        )
    };
    let index = format!(
        "{{\n  \"schemaVersion\": 2,\n  \"mediaType\": \"{OCI_INDEX}\",\n  \"manifests\": [{}, {}]\n}}\n",
        entry(&shas[1], "amd64"),
        entry(&shas[0], "arm64")
    );
    let sha = &shas[1];
    let staging_tag = format!("staging-{}", &sha[..7]);
    let (status, head, _) = common::docker::http_put(
        registry.addr(),
        &format!("/v2/{platform}/manifests/{staging_tag}"),
        OCI_INDEX,
        index.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 201, "{head}");

    let run = hoist_on(
        &repo,
        registry.addr(),
        "promote",
        &[sha, "--image", "platform"],
    );
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    let (status, head, body) = http_request(
        registry.addr(),
        "GET",
        &format!("/v2/{platform}/manifests/latest"),
        None,
        &[("Accept", OCI_INDEX)],
    )
    .unwrap();
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, index, "the index's bytes, unchanged");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-type: {OCI_INDEX}")),
        "{head}"
    );
    assert_eq!(
        digest(&registry, "platform", "latest"),
        digest(&registry, "platform", &staging_tag)
    );
    assert_eq!(digest(&registry, "platform-tenant", "latest"), None);
}

#[test]
fn a_shallow_clone_fetches_the_history_it_needs_or_refuses() {
    let Some((repo, registry, shas)) = published(2) else {
        return;
    };
    let (a, b) = (&shas[0], &shas[1]);
    let run = hoist_on(&repo, registry.addr(), "promote", &[b]);
    assert_eq!(run.code(), Some(0), "{}", run.describe());

    // A CI checkout: one commit deep, and latest's commit is not in it.
    let clone = tempfile::tempdir().unwrap();
    let origin = format!("file://{}", repo.path().display());
    let shallow = clone.path().join("checkout");
    common::git(
        clone.path(),
        &["clone", "-q", "--depth", "1", &origin, "checkout"],
    );
    common::git(&shallow, &["checkout", "-q", "--detach", "HEAD"]);
    let target = target(registry.addr());
    let promote_a =
        |dir: &std::path::Path| common::hoist(dir, &["promote", a, "--registry", &target], &[]);

    // The history is fetched, so hoist knows a is older: refused.
    let out = promote_a(&shallow);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("fetching history from origin"), "{stderr}");
    assert!(stderr.contains("backwards"), "{stderr}");
    assert_eq!(
        common::git(&shallow, &["rev-parse", "--is-shallow-repository"]),
        "false"
    );
    assert_latest(&registry, b);

    // Without a reachable origin it cannot tell, says so, and refuses.
    let cut = clone.path().join("cut");
    common::git(
        clone.path(),
        &["clone", "-q", "--depth", "1", &origin, "cut"],
    );
    common::git(
        &cut,
        &["remote", "set-url", "origin", "file:///nonexistent/repo"],
    );
    let out = promote_a(&cut);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot tell whether this goes backwards"),
        "{stderr}"
    );
    assert_latest(&registry, b);
}

/// Under the staging tag of a new commit `y`, the images of an older
/// commit `a`, put there by hand: what a collision of 7 characters (or a
/// mistaken `crane tag`) leaves. `latest` names `b`'s images. Returns the
/// repo, the registry, `a`, `b` and `y`.
fn another_commits_image() -> Option<(Monorepo, Registry, String, String, String)> {
    let (repo, registry, shas) = published(2)?;
    let (a, b) = (shas[0].clone(), shas[1].clone());
    let run = hoist_on(&repo, registry.addr(), "promote", &[&b]);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    let y = repo.server_commit("published by hand");
    for image in IMAGES {
        retag(
            registry.addr(),
            &repository(image),
            &staging(&registry, image, &a),
            &format!("staging-{}", &y[..7]),
        );
    }
    Some((repo, registry, a, b, y))
}

#[test]
fn a_staging_tag_holding_another_commits_image_is_never_promoted() {
    let Some((repo, registry, a, b, y)) = another_commits_image() else {
        return;
    };
    let y_tag = format!("staging-{}", &y[..7]);
    // Short or full, promote or rollback: refused before anything moves,
    // naming the image and both commits.
    for args in [
        vec!["promote", &y[..7]],
        vec!["promote", y.as_str()],
        vec!["promote", y.as_str(), "--dry-run"],
        vec!["rollback", y.as_str()],
    ] {
        let refused = hoist_on(&repo, registry.addr(), args[0], &args[1..]);
        assert_eq!(refused.code(), Some(1), "{args:?}: {}", refused.describe());
        let stderr = refused.stderr();
        for image in IMAGES {
            assert!(
                stderr.contains(&format!(
                    "{image}: {PREFIX}/{image}:{y_tag} holds an image built from commit {a}, not {y}"
                )),
                "{args:?}: {stderr}"
            );
        }
        assert!(
            stderr.contains(&format!("hoist publish --sha {y} --force")),
            "{stderr}"
        );
        assert_latest(&registry, &b);
        assert_previous(&registry, None);
    }

    // status flags the tag, and only that one.
    let status = hoist_on(&repo, registry.addr(), "status", &[]);
    assert_eq!(status.code(), Some(0), "{}", status.describe());
    for image in IMAGES {
        let entry = status.image(image);
        for tag in entry["staging"].as_array().unwrap() {
            let identity = &tag["identity"];
            if tag["tag"] == y_tag.as_str() {
                assert_eq!(identity["state"], "other", "{tag}");
                assert_eq!(identity["revision"], a.as_str(), "{tag}");
            } else {
                assert_eq!(identity["state"], "confirmed", "{tag}");
            }
        }
        // Besides the one that latest-previous does not exist yet.
        let flagged: Vec<&str> = entry["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|w| w.as_str().filter(|w| w.contains("holds an image")))
            .collect();
        assert_eq!(flagged.len(), 1, "{entry}");
        assert!(
            flagged[0].contains(&format!("{y_tag} holds an image built from commit {a}")),
            "{flagged:?}"
        );
    }
}

/// Uploads `bytes` as a blob of `repo` (POST, then PUT with the digest);
/// returns its digest.
fn push_blob(addr: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = hoist::registry::digest_of(bytes);
    let (status, head, _) = http_request(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        None,
        &[],
    )
    .unwrap();
    assert_eq!(status, 202, "{head}");
    let location = common::docker::header(&head, "location").unwrap();
    let path = location
        .strip_prefix(&format!("http://{addr}"))
        .unwrap_or(&location);
    let separator = if path.contains('?') { '&' } else { '?' };
    let (status, head, _) = common::docker::http_put(
        addr,
        &format!("{path}{separator}digest={digest}"),
        "application/octet-stream",
        bytes,
    )
    .unwrap();
    assert_eq!(status, 201, "{head}");
    digest
}

#[test]
fn an_image_that_does_not_say_its_commit_is_promoted_with_a_warning() {
    let Some((repo, registry, shas)) = published(1) else {
        return;
    };
    // The published image of shas[0] with its revision label taken out
    // (the config rewritten, the layers kept), under the staging tag of a
    // new commit: an image built by hand, without hoist's labels.
    let sha = repo.server_commit("built by hand");
    let tag = format!("staging-{}", &sha[..7]);
    let media_type = "application/vnd.docker.distribution.manifest.v2+json";
    for image in IMAGES {
        let repository = repository(image);
        let digest = staging(&registry, image, &shas[0]);
        let (status, head, body) = http_request(
            registry.addr(),
            "GET",
            &format!("/v2/{repository}/manifests/{digest}"),
            None,
            &[("Accept", media_type)],
        )
        .unwrap();
        assert_eq!(status, 200, "{head}");
        let mut manifest: serde_json::Value = serde_json::from_str(&body).unwrap();
        let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
        let (status, config) =
            registry.get(&format!("/v2/{repository}/blobs/{config_digest}"), None);
        assert_eq!(status, 200, "{config}");
        let mut config: serde_json::Value = serde_json::from_str(&config).unwrap();
        let labels = config["config"]["Labels"].as_object_mut().unwrap();
        assert!(labels.remove("org.opencontainers.image.revision").is_some());
        let config = serde_json::to_vec(&config).unwrap();
        manifest["config"]["digest"] = push_blob(registry.addr(), &repository, &config).into();
        manifest["config"]["size"] = config.len().into();
        let (status, head, _) = common::docker::http_put(
            registry.addr(),
            &format!("/v2/{repository}/manifests/{tag}"),
            media_type,
            &serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
        assert_eq!(status, 201, "{head}");
    }

    let run = hoist_on(&repo, registry.addr(), "promote", &[&sha]);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    let stderr = run.stderr();
    for image in IMAGES {
        assert_eq!(run.image(image)["identity"]["state"], "untold");
        let warning = format!(
            "warning: {image}: {PREFIX}/{image}:{tag} does not say which commit it was built from"
        );
        assert_eq!(stderr.matches(&warning).count(), 1, "{stderr}");
        assert_eq!(
            digest(&registry, image, "latest"),
            digest(&registry, image, &tag)
        );
    }
}

/// A `DOCKER_CONFIG` dir whose `config.json` is `config`.
fn docker_config(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    dir
}

#[test]
fn a_credential_helper_that_is_not_installed_is_no_login_with_one_warning() {
    let Some((mut repo, registry, shas)) = published(1) else {
        return;
    };
    // Docker Desktop's helper, on a machine without Docker Desktop; and a
    // per-registry helper that is not installed either.
    let stores = docker_config(r#"{"auths": {}, "credsStore": "desktop"}"#);
    let helpers = docker_config(&format!(
        r#"{{"credHelpers": {{"{}": "hoist-test-absent"}}}}"#,
        registry.addr()
    ));
    for (config, program) in [
        (&stores, "docker-credential-desktop"),
        (&helpers, "docker-credential-hoist-test-absent"),
    ] {
        let env = [("DOCKER_CONFIG", config.path().to_str().unwrap())];
        let once = |run: &Run, what: &str| {
            assert_eq!(run.code(), Some(0), "{what}: {}", run.describe());
            let stderr = run.stderr();
            let warning = format!(
                "is not installed: going on without a login for {}",
                registry.addr()
            );
            assert_eq!(stderr.matches(&warning).count(), 1, "{what}: {stderr}");
            assert_eq!(stderr.matches(program).count(), 1, "{what}: {stderr}");
        };
        let target = target(registry.addr());
        let status = repo.run(&["status", "--registry", &target], &env);
        once(&status, "status");
        let promote = repo.run(&["promote", &shas[0], "--registry", &target], &env);
        once(&promote, "promote");
        assert_latest(&registry, &shas[0]);
        // publish pushes through the engine, anonymously too.
        let sha = repo.server_commit(program);
        let publish = repo.publish(registry.addr(), &[], &env);
        once(&publish, "publish");
        assert!(digest(&registry, "platform", &format!("staging-{}", &sha[..7])).is_some());
    }
}

#[test]
fn a_registry_that_wants_a_login_still_fails_with_the_login_hint() {
    let Some(registry) = Registry::start(RegistryOptions {
        htpasswd: Some(("ci".to_string(), "s3cret".to_string())),
    }) else {
        return;
    };
    let Some(repo) = Monorepo::new(None) else {
        return;
    };
    let config = docker_config(r#"{"credsStore": "desktop"}"#);
    let run = repo.run(
        &["status", "--registry", &target(registry.addr())],
        &[("DOCKER_CONFIG", config.path().to_str().unwrap())],
    );
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    let stderr = run.stderr();
    assert!(
        stderr.contains(&format!("{} requires a login", registry.addr())),
        "{stderr}"
    );
    assert!(
        stderr.contains("docker-credential-desktop (named in"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("docker login {}", registry.addr())),
        "{stderr}"
    );
}
