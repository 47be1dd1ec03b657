//! hoist's own upload of built images (`push.via: registry`, the default)
//! against Debian's `docker-registry` on loopback, sometimes behind the
//! fault proxy: chunked uploads under a proxy's body cap (and the 413 hint
//! without them), a cut chunk resent from where the registry stands, a cut
//! streamed upload resumed by a new attempt, a re-publish that uploads only
//! the changed layer, a layer shared by two images of one run uploaded
//! once, and chunked uploads with basic auth. What hoist reports is checked
//! against what the registry holds and logs, and every pushed layer is read
//! back, gunzipped and hashed against the local image's diff ids.
//!
//! The images are FROM scratch with a few MB of random bytes, so that a
//! layer does not compress away and chunk counts mean something.

mod common;

use common::docker::{self, Registry, RegistryOptions, TempImage, require_engine};
use common::proxy::{FaultProxy, Request, Seen, Verdict};
use common::{git, hoist};
use flate2::read::GzDecoder;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The repository prefix every test publishes under.
const PREFIX: &str = "hoist-push";
/// The random layer: big enough for ten chunks, small enough to be quick.
const BIG: usize = 2 << 20;
/// The proxy's body cap (as nginx's `client_max_body_size`).
const CAP: usize = 256 << 10;
/// The chunk size given to hoist, below the cap.
const CHUNK: usize = 200 << 10;
const CHUNK_FLAG: &str = "200KiB";

/// Two layers: the static busybox and [`BIG`] random bytes.
const BUSYBOX_AND_BIG: &str = "FROM scratch\nCOPY busybox /bin/busybox\nCOPY big.bin /big.bin\n";

/// A committed project whose `hoist.yaml` lists images built from one
/// context, `ctx`: the static busybox, `big.bin` ([`BIG`] random bytes) and
/// whatever else a test writes there.
struct Project {
    dir: tempfile::TempDir,
    /// Local tags hoist makes, removed on drop.
    local: Vec<TempImage>,
}

impl Project {
    /// `images`: (name, Dockerfile text); each Dockerfile is
    /// `ctx/<name>.Dockerfile`. `files`: more files of the context. `None`
    /// when busybox is missing outside CI.
    fn new(images: &[(&str, &str)], files: &[(&str, &str)]) -> Option<Project> {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        docker::scratch_context(&ctx, "")?;
        std::fs::remove_file(ctx.join("Dockerfile")).unwrap();
        let mut big = vec![0u8; BIG];
        fastrand::fill(&mut big);
        std::fs::write(ctx.join("big.bin"), big).unwrap();
        for (name, text) in files {
            std::fs::write(ctx.join(name), text).unwrap();
        }
        let mut yaml = String::from("images:\n");
        for (name, dockerfile) in images {
            std::fs::write(ctx.join(format!("{name}.Dockerfile")), dockerfile).unwrap();
            yaml.push_str(&format!(
                "  {name}:\n    context: ctx\n    dockerfile: ctx/{name}.Dockerfile\n"
            ));
        }
        std::fs::write(dir.path().join("hoist.yaml"), yaml).unwrap();
        git(dir.path(), &["init", "-q", "-b", "main"]);
        git(dir.path(), &["add", "-A"]);
        git(dir.path(), &["commit", "-q", "-m", "project"]);
        Some(Project {
            dir,
            local: Vec::new(),
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn sha7(&self) -> String {
        git(self.path(), &["rev-parse", "--short=7", "HEAD"])
    }

    /// Writes `text` to `ctx/<name>` and commits it.
    fn commit_file(&self, name: &str, text: &str) {
        std::fs::write(self.path().join("ctx").join(name), text).unwrap();
        git(self.path(), &["commit", "-q", "-am", name]);
    }

    /// `hoist publish --force --format json` to `<host>/hoist-push` with
    /// `args` and `env`.
    fn publish(&mut self, host: &str, images: &[&str], args: &[&str], env: &[(&str, &str)]) -> Run {
        let target = format!("{host}/{PREFIX}");
        let mut full = vec![
            "publish",
            "--registry",
            &target,
            "--force",
            "--format",
            "json",
        ];
        full.extend_from_slice(args);
        let out = hoist(self.path(), &full, env);
        let sha7 = self.sha7();
        for image in images {
            for tag in [format!("staging-{sha7}"), "staging-latest".to_string()] {
                self.local
                    .push(TempImage::new(format!("{target}/{image}:{tag}")));
            }
        }
        Run {
            json: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
            out,
            sha7,
        }
    }
}

struct Run {
    out: Output,
    json: Value,
    sha7: String,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.out.status.code(),
            String::from_utf8_lossy(&self.out.stdout),
            String::from_utf8_lossy(&self.out.stderr)
        )
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).to_string()
    }

    fn image(&self, name: &str) -> &Value {
        self.json["images"]
            .as_array()
            .and_then(|images| images.iter().find(|i| i["name"] == name))
            .unwrap_or_else(|| panic!("no image {name} in the report\n{}", self.describe()))
    }

    /// The image's `upload` report.
    fn upload(&self, name: &str) -> &Value {
        let upload = &self.image(name)["upload"];
        assert!(upload.is_object(), "no upload report\n{}", self.describe());
        upload
    }

    fn retries(&self) -> u64 {
        self.json["retries"].as_u64().unwrap()
    }

    /// Asserts that the run published and that the registry's
    /// `staging-<sha7>` of each image is the digest the report gives.
    fn assert_published(&self, registry: &Registry, images: &[&str]) {
        assert_eq!(self.out.status.code(), Some(0), "{}", self.describe());
        assert_eq!(self.json["published"], true, "{}", self.describe());
        for name in images {
            let digest = registry.manifest_digest(&repo(name), &format!("staging-{}", self.sha7));
            assert_eq!(
                digest.as_deref(),
                self.image(name)["digest"].as_str(),
                "{name}\n{}",
                self.describe()
            );
        }
    }
}

/// `hoist-push/<image>`.
fn repo(image: &str) -> String {
    format!("{PREFIX}/{image}")
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The manifest `repo:reference` names in the registry.
fn manifest(registry: &Registry, repo: &str, reference: &str) -> Value {
    let accept = "application/vnd.docker.distribution.manifest.v2+json, \
                  application/vnd.oci.image.manifest.v1+json";
    let (status, _, body) = docker::http_request(
        registry.addr(),
        "GET",
        &format!("/v2/{repo}/manifests/{reference}"),
        registry.credentials(),
        &[("Accept", accept)],
    )
    .unwrap();
    assert_eq!(status, 200, "{repo}:{reference}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The layer digests a manifest lists, bottom first.
fn layer_digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// Config and layer sizes of a manifest, added up: the bytes an upload of
/// every blob sends.
fn blob_bytes(manifest: &Value) -> u64 {
    let layers: u64 = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    manifest["config"]["size"].as_u64().unwrap() + layers
}

/// The diff ids of a local image (`RootFS.Layers`).
fn local_diff_ids(image: &str) -> Vec<String> {
    let json = docker::docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .RootFS.Layers}}",
        image,
    ]);
    serde_json::from_str(&json).unwrap()
}

/// The image `repo:reference` in the registry is the local image `local`:
/// its config's diff ids are the local ones, and every layer blob is what
/// its digest and size say and gunzips to the bytes of its diff id.
/// Returns the manifest.
fn assert_same_image(registry: &Registry, repo: &str, reference: &str, local: &str) -> Value {
    let manifest = manifest(registry, repo, reference);
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config = registry.blob(repo, config_digest);
    assert_eq!(sha256(&config), config_digest);
    assert_eq!(
        config.len() as u64,
        manifest["config"]["size"].as_u64().unwrap()
    );
    let config: Value = serde_json::from_slice(&config).unwrap();
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    assert_eq!(diff_ids, local_diff_ids(local), "{repo}:{reference}");
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len(), "{manifest}");
    for (layer, diff_id) in layers.iter().zip(&diff_ids) {
        let digest = layer["digest"].as_str().unwrap();
        let blob = registry.blob(repo, digest);
        assert_eq!(sha256(&blob), digest, "the registry holds what it names");
        assert_eq!(
            blob.len() as u64,
            layer["size"].as_u64().unwrap(),
            "{digest}"
        );
        let mut tar = Vec::new();
        GzDecoder::new(blob.as_slice())
            .read_to_end(&mut tar)
            .unwrap_or_else(|e| panic!("{digest} is not gzip: {e}"));
        assert_eq!(&sha256(&tar), diff_id, "{digest} gunzips to its diff id");
    }
    manifest
}

/// The `PATCH` body bytes the proxy passed on to the registry.
fn patch_bytes_forwarded(seen: &[Seen]) -> u64 {
    seen.iter()
        .filter(|s| s.request.method == "PATCH" && s.verdict == Verdict::Forward)
        .map(|s| s.request.body_len as u64)
        .sum()
}

/// Lines of the registry's access log that finish an upload of `digest`
/// (`PUT .../blobs/uploads/...digest=<digest>`).
fn commits_of(log: &str, digest: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("\"PUT /v2/") && l.contains("/blobs/uploads/") && l.contains(digest))
        .count()
}

/// With a chunk size under a proxy's body cap, every request fits and the
/// image arrives whole; without one, the 413 fails the publish at once with
/// a hint naming `push.chunk_size`.
#[test]
fn chunks_fit_under_a_proxy_body_cap_and_a_413_names_push_chunk_size() {
    if !require_engine() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(mut project) = Project::new(&[("app", BUSYBOX_AND_BIG)], &[]) else {
        return;
    };
    let proxy = FaultProxy::start(
        registry.addr().parse().unwrap(),
        Arc::new(|request: &Request| {
            if request.body_len > CAP {
                Verdict::Fail(413)
            } else {
                Verdict::Forward
            }
        }),
    );
    let host = proxy.addr.to_string();

    let refused = project.publish(&host, &["app"], &[], &[]);
    assert_eq!(refused.out.status.code(), Some(1), "{}", refused.describe());
    assert!(
        refused.stderr().contains("push.chunk_size"),
        "{}",
        refused.describe()
    );
    let seen = proxy.seen();
    let rejected = seen
        .iter()
        .filter(|s| s.verdict == Verdict::Fail(413))
        .count();
    assert!(rejected >= 1, "a body over the cap was sent: {seen:#?}");
    // Permanent: no blob is sent again after its 413.
    assert!(rejected <= 2, "{rejected} bodies refused for 2 layers");
    assert!(registry.tags(&repo("app")).is_empty());

    let before = seen.len();
    let run = project.publish(&host, &["app"], &["--chunk-size", CHUNK_FLAG], &[]);
    run.assert_published(&registry, &["app"]);
    let seen = proxy.seen();
    let seen = &seen[before..];
    for s in seen {
        assert_eq!(s.verdict, Verdict::Forward, "{:?}", s.request);
        assert!(s.request.body_len <= CAP, "{:?}", s.request);
    }
    let patches: Vec<&Request> = seen
        .iter()
        .map(|s| &s.request)
        .filter(|r| r.method == "PATCH")
        .collect();
    for patch in &patches {
        assert!(patch.body_len <= CHUNK, "{patch:?}");
        assert_eq!(
            patch.header("content-length"),
            Some(patch.body_len.to_string().as_str()),
            "{patch:?}"
        );
        assert!(patch.header("content-range").is_some(), "{patch:?}");
    }
    assert!(patches.len() > BIG / CHUNK, "{} PATCHes", patches.len());

    let local = format!("{host}/{PREFIX}/app:staging-{}", run.sha7);
    let manifest = assert_same_image(
        &registry,
        &repo("app"),
        &format!("staging-{}", run.sha7),
        &local,
    );
    let upload = run.upload("app");
    assert_eq!(
        upload["bytes"].as_u64(),
        Some(blob_bytes(&manifest)),
        "{upload}"
    );
    assert_eq!(
        upload["blobs_uploaded"], 3,
        "config and two layers: {upload}"
    );
}

/// A chunk whose connection is cut (the registry never sees it) is sent
/// again from where the registry stands: the bytes that reach the registry
/// are exactly the blobs, once.
#[test]
fn a_cut_chunk_is_resent_from_where_the_registry_stands() {
    if !require_engine() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(mut project) = Project::new(&[("app", BUSYBOX_AND_BIG)], &[]) else {
        return;
    };
    let patches = AtomicUsize::new(0);
    let proxy = FaultProxy::start(
        registry.addr().parse().unwrap(),
        Arc::new(move |request: &Request| {
            if request.method == "PATCH" && patches.fetch_add(1, Ordering::SeqCst) == 2 {
                Verdict::Cut
            } else {
                Verdict::Forward
            }
        }),
    );
    let host = proxy.addr.to_string();
    let run = project.publish(&host, &["app"], &["--chunk-size", CHUNK_FLAG], &[]);
    run.assert_published(&registry, &["app"]);
    assert!(run.retries() >= 1, "{}", run.describe());

    let seen = proxy.seen();
    let cut: Vec<&Seen> = seen.iter().filter(|s| s.verdict == Verdict::Cut).collect();
    assert_eq!(cut.len(), 1, "{seen:#?}");
    assert_eq!(cut[0].request.method, "PATCH");
    let local = format!("{host}/{PREFIX}/app:staging-{}", run.sha7);
    let manifest = assert_same_image(
        &registry,
        &repo("app"),
        &format!("staging-{}", run.sha7),
        &local,
    );
    assert_eq!(
        patch_bytes_forwarded(&seen),
        blob_bytes(&manifest),
        "only the cut chunk is sent again"
    );
    // The report counts the cut chunk as sent: it was.
    assert_eq!(
        run.upload("app")["bytes"].as_u64(),
        Some(blob_bytes(&manifest) + cut[0].request.body_len as u64),
        "{}",
        run.describe()
    );
}

/// Without a chunk size each blob goes as one streamed PATCH; when the big
/// layer's is cut, the next attempt exports again, skips what is committed
/// and sends the big layer once more, nothing else.
#[test]
fn a_cut_streamed_upload_is_resumed_by_a_new_attempt() {
    if !require_engine() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(mut project) = Project::new(&[("app", BUSYBOX_AND_BIG)], &[]) else {
        return;
    };
    let cut = AtomicUsize::new(0);
    let proxy = FaultProxy::start(
        registry.addr().parse().unwrap(),
        Arc::new(move |request: &Request| {
            let streamed = request
                .header("transfer-encoding")
                .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
            if request.method == "PATCH"
                && streamed
                && request.body_len >= BIG
                && cut.fetch_add(1, Ordering::SeqCst) == 0
            {
                Verdict::Cut
            } else {
                Verdict::Forward
            }
        }),
    );
    let host = proxy.addr.to_string();
    let run = project.publish(&host, &["app"], &[], &[]);
    run.assert_published(&registry, &["app"]);
    assert!(run.retries() >= 1, "{}", run.describe());
    assert!(
        run.stderr().contains("resuming"),
        "the push says it resumed: {}",
        run.describe()
    );

    let seen = proxy.seen();
    assert_eq!(
        seen.iter().filter(|s| s.verdict == Verdict::Cut).count(),
        1,
        "the big layer went as one streamed PATCH: {seen:#?}"
    );
    // One request per blob: the layers streamed, the config (from memory)
    // whole.
    let forwarded: Vec<&Request> = seen
        .iter()
        .filter(|s| s.request.method == "PATCH" && s.verdict == Verdict::Forward)
        .map(|s| &s.request)
        .collect();
    for patch in &forwarded {
        let streamed = patch.header("transfer-encoding") == Some("chunked");
        let whole = patch
            .header("content-range")
            .is_some_and(|range| range.starts_with("0-"));
        assert!(streamed || whole, "{patch:?}");
    }
    let local = format!("{host}/{PREFIX}/app:staging-{}", run.sha7);
    let manifest = assert_same_image(
        &registry,
        &repo("app"),
        &format!("staging-{}", run.sha7),
        &local,
    );
    assert_eq!(forwarded.len(), 3, "config and two layers: {forwarded:#?}");
    assert_eq!(
        patch_bytes_forwarded(&seen),
        blob_bytes(&manifest),
        "each blob reached the registry once"
    );
}

/// A publish after a commit that changes only the last layer uploads that
/// layer and the config: the big layer, named by `staging-latest`, is
/// skipped and never uploaded again.
#[test]
fn a_republish_uploads_only_the_changed_layer() {
    if !require_engine() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let dockerfile = "FROM scratch\nCOPY big.bin /big.bin\nCOPY small.txt /small.txt\n";
    let Some(mut project) = Project::new(&[("app", dockerfile)], &[("small.txt", "one\n")]) else {
        return;
    };
    let first = project.publish(registry.addr(), &["app"], &[], &[]);
    first.assert_published(&registry, &["app"]);
    let before = manifest(&registry, &repo("app"), &format!("staging-{}", first.sha7));
    let big = layer_digests(&before)[0].clone();
    assert_eq!(commits_of(&registry.log(), &big), 1, "{}", registry.log());
    let logged = registry.log().len();

    project.commit_file("small.txt", "two\n");
    let second = project.publish(registry.addr(), &["app"], &[], &[]);
    second.assert_published(&registry, &["app"]);
    assert_ne!(first.sha7, second.sha7);
    assert_eq!(second.image("app")["built"], true);
    let local = format!("{}/{PREFIX}/app:staging-{}", registry.addr(), second.sha7);
    let after = assert_same_image(
        &registry,
        &repo("app"),
        &format!("staging-{}", second.sha7),
        &local,
    );
    let layers = layer_digests(&after);
    assert_eq!(layers[0], big, "the big layer is the same blob");
    assert_ne!(
        layers[1],
        layer_digests(&before)[1],
        "the small layer changed"
    );

    let upload = second.upload("app");
    assert!(upload["blobs_skipped"].as_u64().unwrap() >= 1, "{upload}");
    assert_eq!(
        upload["blobs_uploaded"], 2,
        "the small layer and the config: {upload}"
    );
    assert!(upload["bytes"].as_u64().unwrap() < 100_000, "{upload}");
    let log = registry.log();
    let later = &log[logged..];
    assert_eq!(commits_of(later, &big), 0, "{later}");
    assert!(
        commits_of(later, &layers[1]) == 1,
        "the small layer was uploaded: {later}"
    );
}

/// How long the proxy holds the shared layer's upload in
/// [`a_layer_two_images_share_is_uploaded_once_and_mounted`]: longer than
/// hoist's five tries with their backoffs take (about 3 s), so that an
/// image that polled for the layer instead of waiting would give up.
const SLOW_UPLOAD: std::time::Duration = std::time::Duration::from_secs(6);

/// Two images of one run that start with the same layer: one uploads it
/// (slowly), the other waits for it without failing and mounts it from its
/// sibling repository; the registry receives its bytes once.
#[test]
fn a_layer_two_images_share_is_uploaded_once_and_mounted() {
    if !require_engine() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let images = [
        (
            "one",
            "FROM scratch\nCOPY big.bin /big.bin\nCOPY one.txt /id\n",
        ),
        (
            "two",
            "FROM scratch\nCOPY big.bin /big.bin\nCOPY two.txt /id\n",
        ),
    ];
    let Some(mut project) = Project::new(&images, &[("one.txt", "1\n"), ("two.txt", "2\n")]) else {
        return;
    };
    // The shared layer's upload is slow: longer than all the retries of an
    // image that would poll for it instead of waiting.
    let proxy = FaultProxy::start(
        registry.addr().parse().unwrap(),
        Arc::new(|request: &Request| {
            if request.method == "PATCH" && request.body_len >= BIG {
                std::thread::sleep(SLOW_UPLOAD);
            }
            Verdict::Forward
        }),
    );
    let host = proxy.addr.to_string();
    let run = project.publish(&host, &["one", "two"], &[], &[]);
    run.assert_published(&registry, &["one", "two"]);
    assert_eq!(run.retries(), 0, "nothing failed: {}", run.describe());

    let mut manifests = Vec::new();
    for name in ["one", "two"] {
        let local = format!("{host}/{PREFIX}/{name}:staging-{}", run.sha7);
        manifests.push(assert_same_image(
            &registry,
            &repo(name),
            &format!("staging-{}", run.sha7),
            &local,
        ));
    }
    let shared = layer_digests(&manifests[0])[0].clone();
    assert_eq!(
        layer_digests(&manifests[1])[0],
        shared,
        "the same first layer"
    );
    assert_eq!(
        commits_of(&registry.log(), &shared),
        1,
        "{}",
        registry.log()
    );
    let sent = patch_bytes_forwarded(&proxy.seen());
    let shared_size = manifests[0]["layers"][0]["size"].as_u64().unwrap();
    assert_eq!(
        sent,
        blob_bytes(&manifests[0]) + blob_bytes(&manifests[1]) - shared_size,
        "the shared layer's bytes went once"
    );

    let (one, two) = (run.upload("one"), run.upload("two"));
    let mounted = |u: &Value| u["blobs_mounted"].as_u64().unwrap();
    assert_eq!(mounted(one) + mounted(two), 1, "{one} {two}");
    let uploaded = |u: &Value| u["blobs_uploaded"].as_u64().unwrap();
    // Each its own small layer and config; one of them the shared layer.
    assert_eq!(uploaded(one) + uploaded(two), 5, "{one} {two}");
    let mounts = proxy
        .seen()
        .iter()
        .filter(|s| {
            s.request.method == "POST" && s.request.path.contains(&format!("mount={shared}"))
        })
        .count();
    assert!(mounts >= 1, "a mount was asked for");
}

/// Basic auth on every request, the chunked PATCHes included.
#[test]
fn chunked_uploads_carry_the_registry_login() {
    if !require_engine() {
        return;
    }
    const PASSWORD: &str = "chunk-pw-71c3";
    let Some(registry) = Registry::start(RegistryOptions {
        htpasswd: Some(("hoist".into(), PASSWORD.into())),
    }) else {
        return;
    };
    let Some(mut project) = Project::new(&[("app", BUSYBOX_AND_BIG)], &[]) else {
        return;
    };
    let env = [
        ("HOIST_REGISTRY_USER", "hoist"),
        ("HOIST_REGISTRY_PASSWORD", PASSWORD),
    ];
    let run = project.publish(
        registry.addr(),
        &["app"],
        &["--chunk-size", CHUNK_FLAG],
        &env,
    );
    run.assert_published(&registry, &["app"]);
    assert!(!run.describe().contains(PASSWORD), "the password leaked");
    let local = format!("{}/{PREFIX}/app:staging-{}", registry.addr(), run.sha7);
    assert_same_image(
        &registry,
        &repo("app"),
        &format!("staging-{}", run.sha7),
        &local,
    );
    let log = registry.log();
    let patches = log.lines().filter(|l| l.contains("\"PATCH /v2/")).count();
    assert!(patches > BIG / CHUNK, "{patches} PATCHes\n{log}");
    assert_eq!(run.upload("app")["blobs_uploaded"], 3, "{}", run.describe());
}

/// What hoist uploaded is what the engine built: pulled by digest, the
/// image has the local image's id and diff ids. `push.via: engine` still
/// pushes through the engine (no upload report), and a later hoist upload
/// skips the layers the engine pushed.
#[test]
fn a_pull_by_digest_gives_the_engines_image_and_the_engine_route_remains() {
    if !require_engine() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let dockerfile = "FROM scratch\nCOPY big.bin /big.bin\nCOPY small.txt /small.txt\n";
    let Some(mut project) = Project::new(&[("app", dockerfile)], &[("small.txt", "one\n")]) else {
        return;
    };
    let engine = project.publish(registry.addr(), &["app"], &["--push-via", "engine"], &[]);
    engine.assert_published(&registry, &["app"]);
    assert!(
        engine.image("app").get("upload").is_none(),
        "the engine pushed: {}",
        engine.describe()
    );

    project.commit_file("small.txt", "two\n");
    let ours = project.publish(registry.addr(), &["app"], &[], &[]);
    ours.assert_published(&registry, &["app"]);
    // The engine's layer is found through staging-latest's config.
    assert_eq!(
        ours.upload("app")["blobs_skipped"],
        1,
        "{}",
        ours.describe()
    );
    let local = format!("{}/{PREFIX}/app:staging-{}", registry.addr(), ours.sha7);
    let pinned = format!(
        "{}/{}@{}",
        registry.addr(),
        repo("app"),
        ours.image("app")["digest"].as_str().unwrap()
    );
    docker::docker(&["pull", "--quiet", &pinned]);
    let _pulled = TempImage::new(pinned.clone());
    let inspect = |reference: &str| {
        docker::docker(&[
            "image",
            "inspect",
            "--format",
            "{{.Id}} {{json .RootFS.Layers}}",
            reference,
        ])
    };
    assert_eq!(inspect(&pinned), inspect(&local));
}

/// A registry on object storage answers `HEAD` of a blob with a redirect
/// to the storage (307, empty body): the blob's size is the storage's
/// answer, so the manifest describes the config with its real size. Here
/// the config is already in the repository (its manifest was deleted) and
/// every blob `HEAD` is redirected.
#[test]
fn a_redirected_blob_head_gives_the_storages_size() {
    if !require_engine() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(mut project) = Project::new(&[("app", BUSYBOX_AND_BIG)], &[]) else {
        return;
    };
    let first = project.publish(registry.addr(), &["app"], &[], &[]);
    first.assert_published(&registry, &["app"]);
    let digest = first.image("app")["digest"].as_str().unwrap().to_string();
    let (status, _, body) = docker::http_request(
        registry.addr(),
        "DELETE",
        &format!("/v2/{}/manifests/{digest}", repo("app")),
        None,
        &[],
    )
    .unwrap();
    assert_eq!(status, 202, "{body}");

    let upstream = registry.addr().parse().unwrap();
    let proxy = FaultProxy::start(
        upstream,
        Arc::new(|request: &Request| {
            if request.method == "HEAD" && request.path.contains("/blobs/sha256:") {
                Verdict::RedirectToUpstream
            } else {
                Verdict::Forward
            }
        }),
    );
    let host = proxy.addr.to_string();
    let second = project.publish(&host, &["app"], &[], &[]);
    assert_eq!(second.out.status.code(), Some(0), "{}", second.describe());
    assert!(
        proxy
            .seen()
            .iter()
            .any(|s| s.verdict == Verdict::RedirectToUpstream),
        "a HEAD was redirected"
    );
    let reference = format!("staging-{}", second.sha7);
    let local = format!("{host}/{PREFIX}/app:{reference}");
    // The config's size in the manifest is its length (checked inside).
    assert_same_image(&registry, &repo("app"), &reference, &local);
}

/// A run that stopped after its blobs were committed (here: the manifest
/// refused) leaves them untagged; the next run on this machine finds them
/// in its record of uploaded layers (`HOIST_CACHE_DIR`), confirms them with
/// a HEAD, and uploads nothing again.
#[test]
fn a_rerun_after_a_stopped_run_skips_the_blobs_it_committed() {
    if !require_engine() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(mut project) = Project::new(&[("app", BUSYBOX_AND_BIG)], &[]) else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let env = [("HOIST_CACHE_DIR", cache.path().to_str().unwrap())];
    let upstream = registry.addr().parse().unwrap();
    let proxy = FaultProxy::start(
        upstream,
        Arc::new(|request: &Request| {
            if request.method == "PUT" && request.path.contains("/manifests/") {
                Verdict::Fail(400)
            } else {
                Verdict::Forward
            }
        }),
    );
    let host = proxy.addr.to_string();
    let stopped = project.publish(&host, &["app"], &[], &env);
    assert_eq!(stopped.out.status.code(), Some(1), "{}", stopped.describe());
    assert!(
        cache.path().join("layers.json").is_file(),
        "the committed layers are recorded"
    );
    let log = registry.log().len();

    let again = project.publish(
        &host,
        &["app"],
        &[],
        &[("HOIST_CACHE_DIR", cache.path().to_str().unwrap())],
    );
    drop(proxy);
    assert_eq!(
        again.out.status.code(),
        Some(1),
        "the proxy still refuses manifests"
    );
    // The layers are skipped: the only blob that may be sent is the config,
    // when it is new (its `created` label is the build's time; a build in
    // the same second, or from the cache, gives the same config, which the
    // stopped run committed already).
    let recorded: Value =
        serde_json::from_slice(&std::fs::read(cache.path().join("layers.json")).unwrap()).unwrap();
    let layers: Vec<&str> = recorded
        .as_object()
        .unwrap()
        .values()
        .map(|entry| entry["digest"].as_str().unwrap())
        .collect();
    assert_eq!(layers.len(), 2, "busybox and big.bin: {recorded}");
    let later = registry.log()[log..].to_string();
    for digest in layers {
        assert_eq!(
            commits_of(&later, digest),
            0,
            "{digest} sent again:\n{later}"
        );
    }
    let patches = later.lines().filter(|l| l.contains("\"PATCH /v2/")).count();
    assert!(patches <= 1, "the config at most:\n{later}");
}
