//! `hoist promote SHA --to DEST` end to end between two Debian
//! `docker-registry` instances on loopback: the source holds what `hoist
//! publish` pushed, the destination asks for its own htpasswd login (given
//! as `HOIST_REGISTRY_USER_<HOST>`). Every state is checked against what
//! the registries answer, and the requests against their logs.

mod common;

use common::docker::{Registry, RegistryOptions, http_request, require_engine};
use common::monorepo::{IMAGES, Monorepo, PREFIX, Run, repository};
use common::proxy::{FaultProxy, Request, Verdict};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DEST_USER: &str = "prod-pusher";
const DEST_PASSWORD: &str = "prod-pw-71c4e";

/// A source registry holding the example's images published from
/// `commits` new commits (oldest first), and an empty destination with its
/// own login.
fn setup(commits: usize) -> Option<(Monorepo, Registry, Registry, Vec<String>)> {
    if !require_engine() {
        return None;
    }
    let source = Registry::start(RegistryOptions::default())?;
    let dest = Registry::start(RegistryOptions {
        htpasswd: Some((DEST_USER.into(), DEST_PASSWORD.into())),
    })?;
    let mut repo = Monorepo::new(None)?;
    let mut shas = Vec::new();
    for n in 0..commits {
        let sha = repo.server_commit(&format!("change {n}"));
        let run = repo.publish(source.addr(), &[], &[]);
        assert_eq!(run.code(), Some(0), "{}", run.describe());
        shas.push(sha);
    }
    Some((repo, source, dest, shas))
}

/// `HOIST_REGISTRY_USER_<HOST>`-style names for `addr`.
fn login_vars(addr: &str) -> (String, String) {
    let key: String = addr
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    (
        format!("HOIST_REGISTRY_USER_{key}"),
        format!("HOIST_REGISTRY_PASSWORD_{key}"),
    )
}

/// `hoist promote <args> --registry SOURCE --to DEST`, with the
/// destination's login.
fn promote_to(repo: &Monorepo, source: &str, dest: &str, args: &[&str]) -> Run {
    let (from, to) = (format!("{source}/{PREFIX}"), format!("{dest}/{PREFIX}"));
    let mut full = vec!["promote", "--registry", &from, "--to", &to];
    full.extend_from_slice(args);
    let (user, password) = login_vars(dest);
    repo.run(&full, &[(&user, DEST_USER), (&password, DEST_PASSWORD)])
}

fn digest(registry: &Registry, image: &str, tag: &str) -> Option<String> {
    registry.manifest_digest(&repository(image), tag)
}

fn staging_tag(sha: &str) -> String {
    format!("staging-{}", &sha[..7])
}

/// The destination's log since `from` bytes: (requests, blob uploads).
fn requests(registry: &Registry, from: usize) -> Vec<String> {
    registry.log()[from..]
        .lines()
        .filter(|l| l.contains("response completed") && l.contains("http.request.uri="))
        .map(str::to_string)
        .collect()
}

fn image_report<'a>(run: &'a Run, destination: usize, name: &str) -> &'a serde_json::Value {
    run.json["to"][destination]["images"]
        .as_array()
        .and_then(|images| images.iter().find(|i| i["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in the report\n{}", run.describe()))
}

#[test]
fn images_are_copied_digest_for_digest_latest_moves_there_and_a_rerun_copies_nothing() {
    let Some((repo, source, dest, shas)) = setup(2) else {
        return;
    };
    let (a, b) = (&shas[0], &shas[1]);

    // The dry run lists what is missing and writes nothing.
    let dry = promote_to(&repo, source.addr(), dest.addr(), &[a, "--dry-run"]);
    assert_eq!(dry.code(), Some(0), "{}", dry.describe());
    assert_eq!(dry.json["dry_run"], true);
    for image in IMAGES {
        let planned = image_report(&dry, 0, image);
        assert!(planned["copy"]["blobs"].as_u64().unwrap() >= 2, "{planned}");
        assert!(planned["copy"]["bytes"].as_u64().unwrap() > 0, "{planned}");
        assert_eq!(planned["writes"].as_array().unwrap().len(), 1, "{planned}");
        assert_eq!(digest(&dest, image, "latest"), None);
    }

    let first = promote_to(&repo, source.addr(), dest.addr(), &[a]);
    assert_eq!(first.code(), Some(0), "{}", first.describe());
    for image in IMAGES {
        let wanted = digest(&source, image, &staging_tag(a)).unwrap();
        assert_eq!(digest(&dest, image, "latest"), Some(wanted.clone()));
        assert_eq!(digest(&dest, image, &staging_tag(a)), Some(wanted));
        // The source's tags stay as they were.
        assert_eq!(digest(&source, image, "latest"), None);
    }
    assert!(first.json["copied"][0]["blobs_copied"].as_u64().unwrap() >= 4);
    assert!(
        first.outputs.contains("promoted=true\n"),
        "{}",
        first.outputs
    );

    // Again: the destination's staging tag names the image, so nothing is
    // copied or written, and few requests are made.
    let log = dest.log().len();
    let again = promote_to(&repo, source.addr(), dest.addr(), &[a]);
    assert_eq!(again.code(), Some(0), "{}", again.describe());
    assert_eq!(again.json["moved"], 0, "{}", again.describe());
    assert_eq!(again.json["copied"][0]["bytes"], 0);
    let seen = requests(&dest, log);
    assert!(
        !seen.iter().any(|l| l.contains("/blobs/")),
        "no blob request on a re-run: {seen:#?}"
    );
    // staging-<sha7> and latest of each image.
    assert!(seen.len() <= 2 * IMAGES.len(), "{seen:#?}");

    // Forward to B, into a destination that already holds B's largest
    // platform layer (as another image's push would have left it): only
    // the rest is sent.
    let platform = repository("platform");
    let (status, _, manifest) = http_request(
        source.addr(),
        "GET",
        &format!("/v2/{platform}/manifests/{}", staging_tag(b)),
        None,
        &[("Accept", DOCKER_MANIFEST)],
    )
    .unwrap();
    assert_eq!(status, 200, "{manifest}");
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let held = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|l| l["size"].as_u64())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        dest.upload_blob(&platform, &source.blob(&platform, &held)),
        held
    );
    let log = dest.log().len();
    let next = promote_to(&repo, source.addr(), dest.addr(), &[b]);
    assert_eq!(next.code(), Some(0), "{}", next.describe());
    let copied = &next.json["copied"][0];
    assert!(copied["blobs_skipped"].as_u64().unwrap() >= 1, "{copied}");
    let sent_again: Vec<String> = requests(&dest, log)
        .into_iter()
        .filter(|l| {
            l.contains(&format!("/{platform}/blobs/uploads/"))
                && l.contains(&held["sha256:".len()..])
        })
        .collect();
    assert!(
        sent_again.is_empty(),
        "{held} was sent again: {sent_again:#?}"
    );
    for image in IMAGES {
        assert_eq!(
            digest(&dest, image, "latest"),
            digest(&source, image, &staging_tag(b))
        );
        assert_eq!(
            digest(&dest, image, "latest-previous"),
            digest(&source, image, &staging_tag(a))
        );
    }

    // Backwards in the destination: refused, nothing moves.
    let back = promote_to(&repo, source.addr(), dest.addr(), &[a]);
    assert_eq!(back.code(), Some(1), "{}", back.describe());
    assert!(
        back.stderr().contains("would not move forward"),
        "{}",
        back.describe()
    );
    for image in IMAGES {
        assert_eq!(
            digest(&dest, image, "latest"),
            digest(&source, image, &staging_tag(b))
        );
    }

    // status reads the destination as any registry.
    let (user, password) = login_vars(dest.addr());
    let status = repo.run(
        &["status", "--registry", &format!("{}/{PREFIX}", dest.addr())],
        &[(&user, DEST_USER), (&password, DEST_PASSWORD)],
    );
    assert_eq!(status.code(), Some(0), "{}", status.describe());
    let latest = &status.json["images"][0]["latest"];
    assert_eq!(latest["revision"], b.as_str(), "{}", status.describe());
    assert_eq!(latest["staging_tag"], staging_tag(b).as_str());
}

#[test]
fn the_source_login_is_not_sent_to_the_destination() {
    let Some((repo, source, dest, shas)) = setup(1) else {
        return;
    };
    // The plain pair is the source's: the destination gets none, and says so.
    let (from, to) = (
        format!("{}/{PREFIX}", source.addr()),
        format!("{}/{PREFIX}", dest.addr()),
    );
    let run = repo.run(
        &["promote", &shas[0], "--registry", &from, "--to", &to],
        &[
            ("HOIST_REGISTRY_USER", DEST_USER),
            ("HOIST_REGISTRY_PASSWORD", DEST_PASSWORD),
        ],
    );
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    assert!(
        run.stderr().contains("requires a login"),
        "{}",
        run.describe()
    );
    assert!(!run.stderr().contains(DEST_PASSWORD));
}

#[test]
fn a_copy_cut_mid_blob_resumes_where_the_destination_stands() {
    let Some((repo, source, dest, shas)) = setup(1) else {
        return;
    };
    // The first read of each blob of more than a few bytes is cut half-way.
    let upstream = source.addr().parse().unwrap();
    let cut_once = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let rule = {
        let cut_once = cut_once.clone();
        Arc::new(move |request: &Request| {
            let blob_get = request.method == "GET" && request.path.contains("/blobs/sha256:");
            if blob_get && cut_once.lock().unwrap().insert(request.path.clone()) {
                Verdict::ForwardHalf
            } else {
                Verdict::Forward
            }
        })
    };
    let proxy = FaultProxy::start(upstream, rule);
    let proxied = proxy.addr.to_string();
    let (user, password) = login_vars(dest.addr());
    let (from, to) = (
        format!("{proxied}/{PREFIX}"),
        format!("{}/{PREFIX}", dest.addr()),
    );
    // In 64 KiB chunks: the destination keeps every chunk it got.
    let run = repo.run(
        &["promote", &shas[0], "--registry", &from, "--to", &to],
        &[
            (&user, DEST_USER),
            (&password, DEST_PASSWORD),
            ("HOIST_PUSH_CHUNK_SIZE", "64KiB"),
        ],
    );
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    let copied = &run.json["copied"][0];
    assert!(copied["resumed"].as_u64().unwrap() >= 1, "{copied}");
    let ranged = proxy
        .seen()
        .iter()
        .filter(|s| s.request.header("range").is_some_and(|r| r != "bytes=0-"))
        .count();
    assert!(ranged >= 1, "a resumed read asks for the rest only");
    for image in IMAGES {
        let wanted = digest(&source, image, &staging_tag(&shas[0]));
        assert_eq!(digest(&dest, image, "latest"), wanted);
    }
    // Every layer the destination holds is whole.
    for image in IMAGES {
        let (status, _, manifest) = http_request(
            dest.addr(),
            "GET",
            &format!("/v2/{}/manifests/latest", repository(image)),
            Some((DEST_USER, DEST_PASSWORD)),
            &[(
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json",
            )],
        )
        .unwrap();
        assert_eq!(status, 200, "{manifest}");
        let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
        for layer in manifest["layers"].as_array().unwrap() {
            let wanted = layer["digest"].as_str().unwrap();
            let bytes = dest.blob(&repository(image), wanted);
            assert_eq!(hoist::registry::digest_of(&bytes), wanted);
        }
    }
}

#[test]
fn a_failed_copy_of_the_second_image_moves_no_tag_in_the_destination() {
    let Some((repo, source, dest, shas)) = setup(1) else {
        return;
    };
    let upstream = dest.addr().parse().unwrap();
    let failing = Arc::new(AtomicBool::new(true));
    let rule = {
        let failing = failing.clone();
        Arc::new(move |request: &Request| {
            let tenant_manifest = request.method == "PUT"
                && request.path.contains("/platform-tenant/manifests/sha256:");
            if tenant_manifest && failing.load(Ordering::Relaxed) {
                Verdict::Fail(400)
            } else {
                Verdict::Forward
            }
        })
    };
    let proxy = FaultProxy::start(upstream, rule);
    let proxied = proxy.addr.to_string();
    // A second, healthy destination (anonymous), listed first.
    let Some(mirror) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let (from, to, also) = (
        format!("{}/{PREFIX}", source.addr()),
        format!("{proxied}/{PREFIX}"),
        format!("{}/{PREFIX}", mirror.addr()),
    );
    let (user, password) = login_vars(&proxied);
    let env = [
        (user.as_str(), DEST_USER),
        (password.as_str(), DEST_PASSWORD),
    ];
    let args = [
        "promote",
        &shas[0],
        "--registry",
        &from,
        "--to",
        &also,
        "--to",
        &to,
    ];
    let run = repo.run(&args, &env);
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    assert!(
        run.stderr().contains("no destination tag moved"),
        "{}",
        run.describe()
    );
    for image in IMAGES {
        for tag in ["latest", "latest-previous", &staging_tag(&shas[0])] {
            assert_eq!(digest(&dest, image, tag), None, "{image}:{tag}");
            assert_eq!(digest(&mirror, image, tag), None, "mirror {image}:{tag}");
        }
    }

    // Once the destination takes it, a re-run finishes the job without
    // sending platform's blobs again.
    failing.store(false, Ordering::Relaxed);
    let log = dest.log().len();
    let again = repo.run(&args, &env);
    assert_eq!(again.code(), Some(0), "{}", again.describe());
    let uploads = requests(&dest, log)
        .into_iter()
        .filter(|l| l.contains("/platform/blobs/uploads/"))
        .count();
    assert_eq!(uploads, 0, "platform's blobs were copied by the first run");
    for image in IMAGES {
        let wanted = digest(&source, image, &staging_tag(&shas[0]));
        assert_eq!(digest(&dest, image, "latest"), wanted);
        assert_eq!(digest(&mirror, image, "latest"), wanted);
    }
}

#[test]
fn an_index_is_copied_with_every_child_and_the_same_digest() {
    let Some((repo, source, dest, shas)) = setup(2) else {
        return;
    };
    // An index over platform's two images, the second marked as an
    // attestation, written over the second commit's staging tag.
    let platform = repository("platform");
    let entry = |sha: &str, platform_json: &str, annotations: &str| {
        let digest = digest(&source, "platform", &staging_tag(sha)).unwrap();
        let (status, head, body) = http_request(
            source.addr(),
            "GET",
            &format!("/v2/{platform}/manifests/{digest}"),
            None,
            &[("Accept", DOCKER_MANIFEST)],
        )
        .unwrap();
        assert_eq!(status, 200, "{head}");
        (
            digest.clone(),
            format!(
                r#"{{"mediaType":"{DOCKER_MANIFEST}","digest":"{digest}","size":{},"platform":{platform_json}{annotations}}}"#,
                body.len()
            ),
        )
    };
    let (amd64, amd64_entry) = entry(&shas[1], r#"{"architecture":"amd64","os":"linux"}"#, "");
    let (attestation, attestation_entry) = entry(
        &shas[0],
        r#"{"architecture":"unknown","os":"unknown"}"#,
        r#","annotations":{"vnd.docker.reference.type":"attestation-manifest"}"#,
    );
    let index = format!(
        "{{\n  \"schemaVersion\": 2,\n  \"mediaType\": \"{OCI_INDEX}\",\n  \"manifests\": [{amd64_entry}, {attestation_entry}]\n}}\n"
    );
    let tag = staging_tag(&shas[1]);
    let (status, head, _) = common::docker::http_put(
        source.addr(),
        &format!("/v2/{platform}/manifests/{tag}"),
        OCI_INDEX,
        index.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 201, "{head}");

    let run = promote_to(
        &repo,
        source.addr(),
        dest.addr(),
        &[&shas[1], "--image", "platform"],
    );
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    assert_eq!(run.json["copied"][0]["manifests"], 3, "{}", run.describe());
    let (status, head, body) = http_request(
        dest.addr(),
        "GET",
        &format!("/v2/{platform}/manifests/latest"),
        Some((DEST_USER, DEST_PASSWORD)),
        &[("Accept", OCI_INDEX)],
    )
    .unwrap();
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, index, "the index's bytes, unchanged");
    assert_eq!(
        digest(&dest, "platform", "latest"),
        digest(&source, "platform", &tag)
    );
    // Both children, and every blob they name, are in the destination.
    for child in [&amd64, &attestation] {
        let (status, _, body) = http_request(
            dest.addr(),
            "GET",
            &format!("/v2/{platform}/manifests/{child}"),
            Some((DEST_USER, DEST_PASSWORD)),
            &[("Accept", DOCKER_MANIFEST)],
        )
        .unwrap();
        assert_eq!(status, 200, "{child}");
        let manifest: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut blobs = vec![manifest["config"]["digest"].as_str().unwrap().to_string()];
        for layer in manifest["layers"].as_array().unwrap() {
            blobs.push(layer["digest"].as_str().unwrap().to_string());
        }
        for blob in blobs {
            let bytes = dest.blob(&platform, &blob);
            assert_eq!(hoist::registry::digest_of(&bytes), blob);
        }
    }
    assert_eq!(digest(&dest, "platform-tenant", "latest"), None);
}

#[test]
fn a_destination_listed_twice_or_a_blank_variable_is_an_input_error() {
    let dir = tempfile::tempdir().unwrap();
    let twice = common::hoist(
        dir.path(),
        &[
            "promote",
            "abc1234",
            "--registry",
            "127.0.0.1:9/src",
            "--to",
            "127.0.0.1:9/prod",
            "--to",
            "127.0.0.1:9/prod/",
        ],
        &[],
    );
    assert_eq!(twice.status.code(), Some(2), "{twice:?}");
    assert!(String::from_utf8_lossy(&twice.stderr).contains("listed twice"));
    let blank = common::hoist(
        dir.path(),
        &["promote", "abc1234", "--registry", "127.0.0.1:9/src"],
        &[("HOIST_PROMOTE_TO", " , ")],
    );
    assert_eq!(blank.status.code(), Some(2), "{blank:?}");
    assert!(String::from_utf8_lossy(&blank.stderr).contains("names no registry"));
}
