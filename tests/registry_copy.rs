//! `registry::copy` between two real registries (Debian's docker-registry
//! on loopback, the destination with htpasswd): an image and an OCI index
//! with an attestation-style child are copied digest for digest, blobs
//! streamed across (whole or in chunks); a second copy sends nothing; a
//! copy inside one registry mounts. The groundwork of `hoist promote
//! --to` (issue 18).

mod common;

use common::docker::{Registry, RegistryOptions};
use hoist::registry::copy::{Copied, End, Job, Options, apply_all, copy};
use hoist::registry::oci::Oci;
use hoist::registry::retry::Retries;
use hoist::registry::{
    DOCKER_MANIFEST, Manifest, OCI_INDEX, OCI_MANIFEST, Registry as Remote, Target, digest_of,
};
use std::collections::HashMap;
use std::time::Duration;

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Runtime::new().unwrap().block_on(future)
}

/// A client for `registry` that sees only `vars` (and an empty HOME).
fn client(registry: &Registry, vars: &[(&str, &str)]) -> Remote {
    let home = tempfile::tempdir().unwrap();
    let mut env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.insert("HOME".into(), home.path().to_str().unwrap().to_string());
    let target = Target::parse(registry.addr()).unwrap();
    Remote::Oci(
        Oci::connect(&target, &|name| env.get(name).cloned())
            .unwrap()
            .with_retries(Retries::with_base_delay(Duration::from_millis(5))),
    )
}

/// One end of a copy: `remote`'s `repository`.
fn end<'a>(remote: &'a Remote, repository: &'a str) -> End<'a> {
    End {
        registry: remote,
        blobs: remote.oci().unwrap(),
        repository,
    }
}

fn options(chunk: Option<u64>) -> Options {
    Options::new(chunk, 4)
}

/// Random bytes as a blob in `repository`; its descriptor.
async fn blob(
    remote: &Remote,
    repository: &str,
    size: usize,
    media_type: &str,
) -> serde_json::Value {
    let mut bytes = vec![0u8; size];
    fastrand::fill(&mut bytes);
    let digest = digest_of(&bytes);
    let oci = remote.oci().unwrap();
    oci.upload_bytes(repository, &digest, bytes.into(), 1 << 20)
        .await
        .map_err(|_| "upload")
        .unwrap();
    serde_json::json!({"mediaType": media_type, "digest": digest, "size": size})
}

/// An image of a config and two layers, written under `tag`.
async fn image(oci: &Remote, repository: &str, tag: &str, media_type: &str) -> Manifest {
    let config = blob(
        oci,
        repository,
        700,
        "application/vnd.oci.image.config.v1+json",
    )
    .await;
    let layers = vec![
        blob(
            oci,
            repository,
            300_000,
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
        .await,
        blob(
            oci,
            repository,
            150_000,
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
        .await,
    ];
    let document = serde_json::json!({
        "schemaVersion": 2, "mediaType": media_type, "config": config, "layers": layers,
    });
    let manifest = Manifest::from_bytes(media_type, serde_json::to_vec(&document).unwrap().into());
    oci.put_manifest(repository, tag, &manifest).await.unwrap();
    manifest
}

fn login(registry: &Registry) -> Vec<(&str, &str)> {
    let (user, password) = registry.credentials().unwrap();
    vec![
        ("HOIST_REGISTRY_USER", user),
        ("HOIST_REGISTRY_PASSWORD", password),
    ]
}

#[test]
fn an_image_is_copied_digest_for_digest_and_a_second_copy_sends_nothing() {
    let Some(source) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(dest) = Registry::start(RegistryOptions {
        htpasswd: Some(("copier".into(), "copy-pw-5d1e".into())),
    }) else {
        return;
    };
    let from = client(&source, &[]);
    let to = client(&dest, &login(&dest));
    block_on(async {
        let manifest = image(&from, "app", "v1", DOCKER_MANIFEST).await;
        let first = copy(
            end(&from, "app"),
            end(&to, "prod/app"),
            &manifest,
            &options(None),
        )
        .await
        .unwrap();
        assert_eq!(
            first,
            Copied {
                blobs_copied: 3,
                bytes: 450_700,
                blobs_skipped: 0,
                blobs_mounted: 0,
                manifests: 1,
                resumed: 0,
            }
        );
        let copied = to
            .manifest("prod/app", &manifest.digest)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(copied.digest, manifest.digest);
        assert_eq!(copied.bytes, manifest.bytes, "the exact bytes");

        let again = copy(
            end(&from, "app"),
            end(&to, "prod/app"),
            &manifest,
            &options(None),
        )
        .await
        .unwrap();
        // The destination holds the manifest: nothing to ask, nothing sent.
        assert_eq!(again, Copied::default());
    });
}

#[test]
fn chunks_carry_the_blobs_and_each_request_stays_under_the_chunk() {
    let Some(source) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(dest) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let (from, to) = (client(&source, &[]), client(&dest, &[]));
    block_on(async {
        let manifest = image(&from, "app", "v1", OCI_MANIFEST).await;
        let copied = copy(
            end(&from, "app"),
            end(&to, "app"),
            &manifest,
            &options(Some(64 << 10)),
        )
        .await
        .unwrap();
        assert_eq!(copied.blobs_copied, 3);
        assert_eq!(copied.bytes, 450_700);
        assert!(
            to.manifest("app", &manifest.digest)
                .await
                .unwrap()
                .is_some()
        );
    });
    let patches = dest
        .log()
        .lines()
        .filter(|l| l.contains("\"PATCH /v2/app/blobs/uploads/"))
        .count();
    // 300 000 and 150 000 bytes in 64 KiB chunks, and the config.
    assert_eq!(patches, 5 + 3 + 1, "{}", dest.log());
}

#[test]
fn an_index_is_copied_with_every_child() {
    let Some(source) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(dest) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let (from, to) = (client(&source, &[]), client(&dest, &[]));
    block_on(async {
        let platform = image(&from, "app", "amd64", OCI_MANIFEST).await;
        let attestation = image(&from, "app", "att", OCI_MANIFEST).await;
        let index = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": platform.digest, "size": platform.bytes.len(),
                 "platform": {"architecture": "amd64", "os": "linux"}},
                {"mediaType": OCI_MANIFEST, "digest": attestation.digest, "size": attestation.bytes.len(),
                 "platform": {"architecture": "unknown", "os": "unknown"},
                 "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
            ],
        });
        let index = Manifest::from_bytes(OCI_INDEX, serde_json::to_vec(&index).unwrap().into());
        from.put_manifest("app", "v1", &index).await.unwrap();
        let copied = copy(end(&from, "app"), end(&to, "app"), &index, &options(None))
            .await
            .unwrap();
        assert_eq!(copied.manifests, 3);
        assert_eq!(copied.blobs_copied, 6);
        for child in [&platform, &attestation, &index] {
            let there = to.manifest("app", &child.digest).await.unwrap().unwrap();
            assert_eq!(there.bytes, child.bytes);
        }
    });
}

#[test]
fn a_copy_inside_one_registry_mounts_the_blobs() {
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let oci = client(&registry, &[]);
    block_on(async {
        let manifest = image(&oci, "staging/app", "v1", OCI_MANIFEST).await;
        let copied = copy(
            end(&oci, "staging/app"),
            end(&oci, "prod/app"),
            &manifest,
            &options(None),
        )
        .await
        .unwrap();
        assert_eq!(
            (copied.blobs_mounted, copied.blobs_copied, copied.bytes),
            (3, 0, 0)
        );
        assert!(
            oci.manifest("prod/app", &manifest.digest)
                .await
                .unwrap()
                .is_some()
        );
    });
}

#[test]
fn a_blob_two_images_lack_is_sent_once_and_mounted_into_the_other() {
    let Some(source) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(dest) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let (from, to) = (client(&source, &[]), client(&dest, &[]));
    block_on(async {
        // The same image in two repositories of the source, as two images
        // that share every layer.
        let manifest = image(&from, "a", "v1", OCI_MANIFEST).await;
        let oci = from.oci().unwrap();
        for blob in hoist::registry::copy::named(&manifest.bytes).unwrap().blobs {
            oci.mount("b", &blob.digest, "a").await.unwrap();
        }
        from.put_manifest("b", "v1", &manifest).await.unwrap();

        let plan_a = hoist::registry::copy::plan(end(&from, "a"), end(&to, "a"), &manifest)
            .await
            .unwrap();
        let plan_b = hoist::registry::copy::plan(end(&from, "b"), end(&to, "b"), &manifest)
            .await
            .unwrap();
        assert_eq!((plan_a.missing.len(), plan_b.missing.len()), (3, 3));
        let jobs = [
            Job {
                source: end(&from, "a"),
                dest: end(&to, "a"),
                plan: &plan_a,
            },
            Job {
                source: end(&from, "b"),
                dest: end(&to, "b"),
                plan: &plan_b,
            },
        ];
        let results = apply_all(&jobs, &options(None)).await;
        let a = results[0].as_ref().unwrap();
        let b = results[1].as_ref().unwrap();
        assert_eq!((a.blobs_copied, a.blobs_mounted), (3, 0));
        assert_eq!((b.blobs_copied, b.blobs_mounted, b.bytes), (0, 3, 0));
        for repository in ["a", "b"] {
            let there = to.manifest(repository, &manifest.digest).await.unwrap();
            assert_eq!(there.map(|m| m.bytes), Some(manifest.bytes.clone()));
        }
    });
    let uploads_to_b = dest
        .log()
        .lines()
        .filter(|l| l.contains("\"PATCH /v2/b/blobs/uploads/"))
        .count();
    assert_eq!(uploads_to_b, 0, "{}", dest.log());
}
