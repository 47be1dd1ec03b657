//! The ECR backend against moto's ECR API: the push login, reading a tag's
//! manifest byte for byte, retagging registry-side (and a re-run of it),
//! the revision from a `staging-<sha>` tag, listing tags with their
//! digests and push times, removing one tag alone, push times by digest,
//! missing and created repositories, immutable tags, and retries of
//! throttling and 5xx answers (through a fault-injecting proxy), counted,
//! while final errors are not retried.
//!
//! Images are seeded with `PutImage` through the SDK directly, with
//! `imageDigest` = the sha256 of the bytes, so that moto records the digest
//! ECR would compute (moto's own digests come from the layer list): see
//! `tests/common/ecr.rs`.

mod common;

use aws_sdk_ecr::types::{ImageIdentifier, ImageTagMutability};
use bytes::Bytes;
use common::ecr::{create_repository, docker_manifest, sdk, seed, seed_as, tags_of};
use common::moto::{ACCESS_KEY, ACCOUNT, Moto, REGION, SECRET_KEY};
use common::proxy::{FaultProxy, Verdict};
use hoist::registry::{
    DOCKER_MANIFEST, Manifest, Missing, OCI_INDEX, OCI_MANIFEST, Registry, Tag, Target, digest_of,
};
use std::sync::Arc;

const PREFIX: &str = "molecule-ai";

fn target() -> Target {
    Target::parse(&format!(
        "{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{PREFIX}"
    ))
    .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// hoist's ECR registry with moto's variables, the endpoint being moto or a
/// proxy in front of it.
async fn connect(endpoint: &str) -> Registry {
    let vars = Moto::env(endpoint);
    let env = move |name: &str| vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let registry = Registry::connect(&target(), &env).await.unwrap();
    assert_eq!(registry.kind(), "ECR");
    registry
}

/// An OCI index of one platform image plus its attestation manifest, as
/// BuildKit pushes them.
fn oci_index(seed: &str) -> Bytes {
    let image = digest_of(format!("image {seed}").as_bytes());
    let attestation = digest_of(format!("attestation {seed}").as_bytes());
    Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{image}","size":480,"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{attestation}","size":566,"annotations":{{"vnd.docker.reference.digest":"{image}","vnd.docker.reference.type":"attestation-manifest"}},"platform":{{"architecture":"unknown","os":"unknown"}}}}]}}"#
    ))
}

/// A proxy that forwards everything, to count the requests.
fn counting_proxy(moto: &Moto) -> FaultProxy {
    FaultProxy::start(moto.addr, Arc::new(|_| Verdict::Forward))
}

#[test]
fn push_auth_decodes_the_token_refetches_an_expired_one_and_never_shows_it() {
    let Some(moto) = Moto::start() else { return };
    let proxy = counting_proxy(&moto);
    runtime().block_on(async {
        let sdk = sdk(&moto);
        let token = sdk.get_authorization_token().send().await.unwrap();
        let data = &token.authorization_data()[0];
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(data.authorization_token().unwrap())
            .unwrap();
        let decoded = String::from_utf8(decoded).unwrap();
        let (_, expected_password) = decoded.split_once(':').unwrap();
        // moto's token expired in 2015, so it must not be cached as valid.
        let expires = data.expires_at().unwrap().secs();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(expires < now, "moto's token expires at {expires}");

        let registry = connect(&proxy.url()).await;
        let auth = registry.push_auth().await.unwrap();
        assert_eq!(auth.server, target().host);
        let login = auth.login.clone().unwrap();
        assert_eq!(login.username, "AWS");
        assert!(!login.password.expose().is_empty());
        assert_eq!(login.password.expose(), expected_password);
        assert_eq!(auth.secrets().len(), 1);
        for shown in [
            format!("{auth:?}"),
            format!("{login:?}"),
            format!("{auth:#?}"),
        ] {
            assert!(!shown.contains(expected_password), "{shown}");
            assert!(!shown.contains(SECRET_KEY), "{shown}");
        }

        let again = registry.push_auth().await.unwrap();
        assert_eq!(again.login.unwrap().password, login.password);
        let asked = proxy
            .seen()
            .iter()
            .filter(|s| {
                s.request
                    .header("x-amz-target")
                    .is_some_and(|t| t.ends_with("GetAuthorizationToken"))
            })
            .count();
        assert_eq!(asked, 2, "an expired token is fetched again");
        assert_eq!(registry.retries(), 0);
    });
}

#[test]
fn reads_a_manifest_back_byte_for_byte_and_a_missing_tag_is_none() {
    let Some(moto) = Moto::start() else { return };
    runtime().block_on(async {
        let sdk = sdk(&moto);
        let repository = target().repository("platform");
        create_repository(&sdk, &repository, ImageTagMutability::Mutable).await;
        let bytes = docker_manifest("reads");
        let digest = seed(&sdk, &repository, "staging-abc1234", &bytes).await;

        let registry = connect(&moto.url()).await;
        let manifest = registry
            .manifest(&repository, "staging-abc1234")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(manifest.bytes, bytes);
        assert_eq!(manifest.media_type, DOCKER_MANIFEST);
        assert_eq!(manifest.digest, digest);
        assert_eq!(manifest.digest, digest_of(&bytes));
        assert!(!manifest.is_index());

        assert_eq!(
            registry
                .manifest(&repository, "staging-fffffff")
                .await
                .unwrap(),
            None
        );

        // An index (one platform plus attestations) is served as it is,
        // and retagged as it is.
        let index = oci_index("reads");
        let index_digest = seed_as(&sdk, &repository, "staging-def5678", &index, OCI_INDEX).await;
        let read = registry
            .manifest(&repository, "staging-def5678")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read.bytes, index);
        assert_eq!(read.media_type, OCI_INDEX);
        assert_eq!(read.digest, index_digest);
        assert!(read.is_index());
        registry
            .put_manifest(&repository, "staging-latest", &read)
            .await
            .unwrap();
        let retagged = registry
            .manifest(&repository, "staging-latest")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(retagged, read);
        assert_eq!(registry.retries(), 0);
    });
}

#[test]
fn retags_registry_side_and_a_rerun_is_a_success() {
    let Some(moto) = Moto::start() else { return };
    runtime().block_on(async {
        let sdk = sdk(&moto);
        let repository = target().repository("platform-tenant");
        create_repository(&sdk, &repository, ImageTagMutability::Mutable).await;
        let bytes = docker_manifest("retag");
        let digest = seed(&sdk, &repository, "staging-1234567", &bytes).await;

        let registry = connect(&moto.url()).await;
        let manifest = registry
            .manifest(&repository, "staging-1234567")
            .await
            .unwrap()
            .unwrap();
        registry
            .put_manifest(&repository, "latest", &manifest)
            .await
            .unwrap();
        let latest = registry
            .manifest(&repository, "latest")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(latest, manifest);
        assert_eq!(
            tags_of(&sdk, &repository, &digest).await,
            ["latest", "staging-1234567"]
        );

        // ImageAlreadyExistsException: the tag names that manifest already.
        registry
            .put_manifest(&repository, "latest", &manifest)
            .await
            .unwrap();
        assert_eq!(
            tags_of(&sdk, &repository, &digest).await,
            ["latest", "staging-1234567"]
        );

        // A mutable tag moves to another manifest.
        let other = docker_manifest("retag, the next build");
        let other_digest = seed(&sdk, &repository, "staging-7654321", &other).await;
        let next = registry
            .manifest(&repository, "staging-7654321")
            .await
            .unwrap()
            .unwrap();
        registry
            .put_manifest(&repository, "latest", &next)
            .await
            .unwrap();
        let latest = registry
            .manifest(&repository, "latest")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(latest.digest, other_digest);
        assert_eq!(latest.bytes, other);
        assert_eq!(registry.retries(), 0);
    });
}

#[test]
fn the_revision_comes_from_a_staging_tag_on_the_same_digest() {
    let Some(moto) = Moto::start() else { return };
    runtime().block_on(async {
        let sdk = sdk(&moto);
        let repository = target().repository("platform");
        create_repository(&sdk, &repository, ImageTagMutability::Mutable).await;
        let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b";
        let short = &sha[..7];
        let bytes = docker_manifest("revision");
        seed(&sdk, &repository, &format!("staging-{short}"), &bytes).await;
        seed(&sdk, &repository, "staging-latest", &bytes).await;
        let untagged = docker_manifest("no staging tag");
        seed(&sdk, &repository, "latest", &untagged).await;

        let registry = connect(&moto.url()).await;
        let manifest = registry
            .manifest(&repository, "staging-latest")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            registry
                .revision(&repository, &manifest)
                .await
                .unwrap()
                .as_deref(),
            Some(short)
        );

        let latest = registry
            .manifest(&repository, "latest")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(registry.revision(&repository, &latest).await.unwrap(), None);

        let unknown = Manifest::from_bytes(DOCKER_MANIFEST, docker_manifest("never pushed"));
        assert_eq!(
            registry.revision(&repository, &unknown).await.unwrap(),
            None
        );
    });
}

/// `imagePushedAt` of a digest, as the SDK reads it, in RFC 3339 to the
/// second.
async fn pushed_at_of(sdk: &aws_sdk_ecr::Client, repository: &str, digest: &str) -> String {
    let out = sdk
        .describe_images()
        .repository_name(repository)
        .image_ids(ImageIdentifier::builder().image_digest(digest).build())
        .send()
        .await
        .unwrap();
    let secs = out.image_details()[0].image_pushed_at().unwrap().secs();
    time::OffsetDateTime::from_unix_timestamp(secs)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[test]
fn lists_every_tag_with_its_digest_and_push_time() {
    let Some(moto) = Moto::start() else { return };
    runtime().block_on(async {
        let sdk = sdk(&moto);
        let repository = target().repository("platform");
        create_repository(&sdk, &repository, ImageTagMutability::Mutable).await;
        let before = time::OffsetDateTime::now_utc().unix_timestamp();
        let old = docker_manifest("tags, old");
        let old_digest = seed(&sdk, &repository, "staging-abc1234", &old).await;
        seed(&sdk, &repository, "latest", &old).await;
        let new = docker_manifest("tags, new");
        let new_digest = seed(&sdk, &repository, "staging-def5678", &new).await;
        let old_at = pushed_at_of(&sdk, &repository, &old_digest).await;
        let new_at = pushed_at_of(&sdk, &repository, &new_digest).await;

        let registry = connect(&moto.url()).await;
        let tags = registry.tags(&repository).await.unwrap();
        let tag = |name: &str, digest: &str, at: &str| Tag {
            name: name.into(),
            digest: Some(digest.into()),
            pushed_at: Some(at.into()),
        };
        assert_eq!(
            tags,
            [
                tag("latest", &old_digest, &old_at),
                tag("staging-abc1234", &old_digest, &old_at),
                tag("staging-def5678", &new_digest, &new_at),
            ]
        );
        // RFC 3339 in UTC, to the second (`2026-11-24T13:05:09Z`), which
        // compares as the times do: it lies between before and after.
        let rfc3339 = |secs: i64| {
            time::OffsetDateTime::from_unix_timestamp(secs)
                .unwrap()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        let after = rfc3339(time::OffsetDateTime::now_utc().unix_timestamp());
        for at in [&old_at, &new_at] {
            assert!(at.ends_with('Z') && at.len() == 20, "{at}");
            assert!(*at >= rfc3339(before) && *at <= after, "{at}");
        }

        assert_eq!(
            registry
                .pushed_at(&repository, &new_digest)
                .await
                .unwrap()
                .as_deref(),
            Some(new_at.as_str())
        );
        assert_eq!(
            registry
                .pushed_at(&repository, &digest_of(b"never pushed"))
                .await
                .unwrap(),
            None
        );

        // A repository without images has no tags.
        let empty = target().repository("empty");
        create_repository(&sdk, &empty, ImageTagMutability::Mutable).await;
        assert_eq!(registry.tags(&empty).await.unwrap(), []);
        assert_eq!(registry.retries(), 0);
    });
}

#[test]
fn removes_one_tag_and_leaves_the_image_with_its_other_tags() {
    let Some(moto) = Moto::start() else { return };
    runtime().block_on(async {
        let sdk = sdk(&moto);
        let repository = target().repository("platform");
        create_repository(&sdk, &repository, ImageTagMutability::Mutable).await;
        let bytes = docker_manifest("untag");
        let digest = seed(&sdk, &repository, "staging-abc1234", &bytes).await;
        for tag in ["latest", "latest-previous"] {
            seed(&sdk, &repository, tag, &bytes).await;
        }

        let registry = connect(&moto.url()).await;
        assert!(registry.delete_tag(&repository, "latest").await.unwrap());
        assert_eq!(
            registry.manifest(&repository, "latest").await.unwrap(),
            None
        );
        let staging = registry
            .manifest(&repository, "staging-abc1234")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(staging.digest, digest);
        assert_eq!(staging.bytes, bytes);
        assert_eq!(
            tags_of(&sdk, &repository, &digest).await,
            ["latest-previous", "staging-abc1234"]
        );

        // Gone already, or never there: gone (ImageNotFound), not an error.
        assert!(registry.delete_tag(&repository, "latest").await.unwrap());
        assert!(
            registry
                .delete_tag(&repository, "never-there")
                .await
                .unwrap()
        );
        assert_eq!(
            tags_of(&sdk, &repository, &digest).await,
            ["latest-previous", "staging-abc1234"]
        );
        assert_eq!(registry.retries(), 0);
    });
}

#[test]
fn a_missing_repository_is_a_clear_error_and_not_retried() {
    let Some(moto) = Moto::start() else { return };
    let proxy = counting_proxy(&moto);
    runtime().block_on(async {
        let registry = connect(&proxy.url()).await;
        let repository = target().repository("platform");
        let error = registry
            .ensure_repository(&repository, Missing::Fail)
            .await
            .unwrap_err();
        assert_eq!(error.exit_code(), 1);
        assert!(error.message.contains(&repository), "{error}");
        assert!(error.message.contains(ACCOUNT), "{error}");
        assert!(error.message.contains(REGION), "{error}");
        assert!(
            error.hint.as_deref().unwrap().contains("--create-repos"),
            "{error}"
        );

        let error = registry.manifest(&repository, "latest").await.unwrap_err();
        assert_eq!(error.exit_code(), 1);
        assert!(error.message.contains(&repository), "{error}");
        assert!(!error.to_string().contains(SECRET_KEY));

        // The tag calls say it the same way.
        let said = |error: hoist::error::Error| {
            assert_eq!(error.exit_code(), 1, "{error}");
            assert_eq!(
                error.message,
                format!("ECR repository {repository} does not exist in account {ACCOUNT}, region {REGION}")
            );
            // Only publish ensures repositories: the others' hint names no flag.
            assert!(error.hint.as_deref().unwrap().contains("check the registry"));
        };
        said(registry.tags(&repository).await.unwrap_err());
        said(registry.delete_tag(&repository, "latest").await.unwrap_err());
        let digest = digest_of(b"any");
        said(registry.pushed_at(&repository, &digest).await.unwrap_err());

        assert_eq!(registry.retries(), 0);
        assert_eq!(proxy.seen().len(), 5, "one request each, no retries");
    });
}

#[test]
fn create_repos_creates_it_with_immutable_tags_except_the_moving_ones() {
    let Some(moto) = Moto::start() else { return };
    runtime().block_on(async {
        let sdk = sdk(&moto);
        let registry = connect(&moto.url()).await;
        let repository = target().repository("platform");
        let said = registry
            .ensure_repository(&repository, Missing::Create)
            .await
            .unwrap()
            .unwrap();
        let described = sdk
            .describe_repositories()
            .repository_names(&repository)
            .send()
            .await
            .unwrap();
        let created = &described.repositories()[0];
        let mutability = created.image_tag_mutability().unwrap().as_str();
        assert!(
            said.starts_with(&format!("created, tag mutability {mutability}")),
            "{said}"
        );
        assert_eq!(mutability, "IMMUTABLE_WITH_EXCLUSION", "{said}");
        let mut excluded: Vec<&str> = created
            .image_tag_mutability_exclusion_filters()
            .iter()
            .map(|f| f.filter())
            .collect();
        excluded.sort();
        assert_eq!(excluded, ["latest", "latest-previous", "staging-latest"]);
        assert!(
            said.contains("staging-latest, latest, latest-previous stay mutable"),
            "{said}"
        );

        // Present now: nothing to say.
        assert_eq!(
            registry
                .ensure_repository(&repository, Missing::Fail)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            registry
                .ensure_repository(&repository, Missing::Create)
                .await
                .unwrap(),
            None
        );

        // It works: the moving tags move, a staging-<sha> tag does not.
        let first = Manifest::from_bytes(DOCKER_MANIFEST, docker_manifest("first"));
        let second = Manifest::from_bytes(DOCKER_MANIFEST, docker_manifest("second"));
        let moving = ["staging-latest", "latest", "latest-previous"];
        for tag in ["staging-abc1234"].iter().chain(&moving) {
            registry
                .put_manifest(&repository, tag, &first)
                .await
                .unwrap();
        }
        for tag in moving {
            registry
                .put_manifest(&repository, tag, &second)
                .await
                .unwrap();
            let moved = registry.manifest(&repository, tag).await.unwrap().unwrap();
            assert_eq!(moved.digest, second.digest, "{tag}");
        }
        let error = registry
            .put_manifest(&repository, "staging-abc1234", &second)
            .await
            .unwrap_err();
        assert!(error.message.contains("immutable"), "{error}");
        let kept = registry
            .manifest(&repository, "staging-abc1234")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kept.digest, first.digest);
    });
}

#[test]
fn an_immutable_tag_is_not_overwritten_and_says_so() {
    let Some(moto) = Moto::start() else { return };
    runtime().block_on(async {
        let sdk = sdk(&moto);
        let repository = target().repository("platform");
        create_repository(&sdk, &repository, ImageTagMutability::Immutable).await;
        let old = docker_manifest("old");
        let old_digest = seed(&sdk, &repository, "latest", &old).await;
        let new = docker_manifest("new");
        seed(&sdk, &repository, "staging-abcdef0", &new).await;

        let registry = connect(&moto.url()).await;
        let manifest = registry
            .manifest(&repository, "staging-abcdef0")
            .await
            .unwrap()
            .unwrap();
        let error = registry
            .put_manifest(&repository, "latest", &manifest)
            .await
            .unwrap_err();
        assert_eq!(error.exit_code(), 1);
        let text = error.to_string();
        assert!(text.contains(&format!("{repository}:latest")), "{text}");
        assert!(text.contains("immutable"), "{text}");
        assert!(text.contains(&old_digest), "{text}");
        assert!(text.contains(&manifest.digest), "{text}");
        let latest = registry
            .manifest(&repository, "latest")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(latest.digest, old_digest);

        // The tag that already names the manifest is still a success.
        let old_manifest = registry
            .manifest(&repository, "latest")
            .await
            .unwrap()
            .unwrap();
        registry
            .put_manifest(&repository, "latest", &old_manifest)
            .await
            .unwrap();
    });
}

#[test]
fn throttling_and_server_errors_are_retried_and_counted() {
    let Some(moto) = Moto::start() else { return };
    for status in [429, 500, 503] {
        moto.reset();
        let proxy = FaultProxy::failing_first(moto.addr, 2, status);
        runtime().block_on(async {
            let sdk = sdk(&moto);
            let repository = target().repository("platform");
            create_repository(&sdk, &repository, ImageTagMutability::Mutable).await;
            let bytes = docker_manifest("throttled");
            let digest = seed(&sdk, &repository, "staging-abc1234", &bytes).await;

            let registry = connect(&proxy.url()).await;
            let manifest = registry
                .manifest(&repository, "staging-abc1234")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(manifest.digest, digest);
            assert_eq!(registry.retries(), 2, "HTTP {status}");
            let verdicts: Vec<Verdict> = proxy.seen().iter().map(|s| s.verdict).collect();
            assert_eq!(
                verdicts,
                [
                    Verdict::Fail(status),
                    Verdict::Fail(status),
                    Verdict::Forward
                ],
                "HTTP {status}"
            );
        });
    }
}

#[test]
fn a_cut_connection_is_retried_but_not_forever() {
    let Some(moto) = Moto::start() else { return };
    let proxy = FaultProxy::start(moto.addr, Arc::new(|_| Verdict::Cut));
    runtime().block_on(async {
        let registry = connect(&proxy.url()).await;
        let error = registry
            .manifest(&target().repository("platform"), "latest")
            .await
            .unwrap_err();
        assert_eq!(error.exit_code(), 1);
        assert!(error.to_string().contains("gave up after"), "{error}");
        let tries = proxy.seen().len() as u32;
        assert_eq!(registry.retries(), tries - 1);
        assert!(tries > 1, "{tries}");
    });
}

#[test]
fn half_given_keys_are_an_input_error() {
    runtime().block_on(async {
        let env = |name: &str| (name == "AWS_ACCESS_KEY_ID").then(|| ACCESS_KEY.to_string());
        let error = match Registry::connect(&target(), &env).await {
            Ok(_) => panic!("connected with a key id alone"),
            Err(error) => error,
        };
        assert_eq!(error.exit_code(), 2);
        assert!(error.message.contains("AWS_SECRET_ACCESS_KEY"), "{error}");
    });
}

#[test]
fn missing_credentials_are_a_clear_error_soon() {
    let ambient = [
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ];
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let profile = home.is_some_and(|h| h.join(".aws").exists());
    if let Some(found) = ambient.iter().find(|v| std::env::var_os(v).is_some()) {
        eprintln!("skipped: the process has {found}, which the default chain would use");
        return;
    }
    if profile {
        eprintln!("skipped: ~/.aws exists, which the default chain would use");
        return;
    }
    let Some(moto) = Moto::start() else { return };
    runtime().block_on(async {
        let url = moto.url();
        let env = move |name: &str| (name == "AWS_ENDPOINT_URL").then(|| url.clone());
        let registry = Registry::connect(&target(), &env).await.unwrap();
        let started = std::time::Instant::now();
        let error = match registry.push_auth().await {
            Ok(_) => {
                eprintln!("skipped: the default chain found credentials (an instance role?)");
                return;
            }
            Err(error) => error,
        };
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(30), "{took:?}");
        assert_eq!(error.exit_code(), 1, "{error}");
        assert!(error.message.contains("GetAuthorizationToken"), "{error}");
        let hint = error.hint.as_deref().unwrap_or_default();
        for named in ["AWS_ACCESS_KEY_ID", "AWS_PROFILE", "role"] {
            assert!(hint.contains(named), "{error}");
        }
        assert_eq!(registry.retries(), 0, "{error}");
        eprintln!("{error}\n(after {took:?})");
    });
}
