//! Seeding and reading moto's ECR API straight through the SDK, to set up
//! what hoist finds and to check what it left.
//!
//! Images are put with `PutImage` and `imageDigest` = the sha256 of the
//! bytes, so that moto records the digest ECR would compute (moto's own
//! digests come from the layer list).

use super::moto::{ACCESS_KEY, Moto, REGION, SECRET_KEY};
use aws_sdk_ecr::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ecr::types::{ImageIdentifier, ImageTagMutability};
use bytes::Bytes;
use hoist::registry::{DOCKER_MANIFEST, digest_of};

/// The SDK itself, straight to moto.
pub fn sdk(moto: &Moto) -> aws_sdk_ecr::Client {
    let config = aws_sdk_ecr::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(moto.url())
        .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    aws_sdk_ecr::Client::from_conf(config)
}

/// A Docker v2 manifest, different for every `seed`, in a layout of its own
/// (spaces, key order) that a re-serialisation would not keep.
pub fn docker_manifest(seed: &str) -> Bytes {
    let config = digest_of(format!("config {seed}").as_bytes());
    let layer = digest_of(format!("layer {seed}").as_bytes());
    Bytes::from(format!(
        "{{\n   \"schemaVersion\": 2,\n   \"mediaType\": \"{DOCKER_MANIFEST}\",\n   \
         \"config\": {{\"mediaType\": \"application/vnd.docker.container.image.v1+json\", \
         \"size\": 1469, \"digest\": \"{config}\"}},\n   \"layers\": [{{\"size\": 2811478, \
         \"mediaType\": \"application/vnd.docker.image.rootfs.diff.tar.gzip\", \
         \"digest\": \"{layer}\"}}]\n}}"
    ))
}

pub async fn create_repository(
    sdk: &aws_sdk_ecr::Client,
    name: &str,
    mutability: ImageTagMutability,
) {
    created(
        sdk.create_repository()
            .repository_name(name)
            .image_tag_mutability(mutability)
            .send()
            .await,
    );
}

/// Checks a `CreateRepository` answer. "Already exists" counts as created:
/// under load the SDK retries a create whose first attempt moto carried out
/// but answered too late (seen in CI: the retry's answer was
/// `RepositoryAlreadyExistsException`).
pub fn created<T>(
    result: Result<
        T,
        aws_sdk_ecr::error::SdkError<
            aws_sdk_ecr::operation::create_repository::CreateRepositoryError,
        >,
    >,
) {
    if let Err(error) = result {
        let exists = error
            .as_service_error()
            .is_some_and(|e| e.is_repository_already_exists_exception());
        assert!(exists, "CreateRepository failed: {error:?}");
    }
}

/// Seeds a Docker v2 manifest under a tag, as a push would; returns the
/// digest the server reports.
pub async fn seed(sdk: &aws_sdk_ecr::Client, repository: &str, tag: &str, bytes: &Bytes) -> String {
    seed_as(sdk, repository, tag, bytes, DOCKER_MANIFEST).await
}

pub async fn seed_as(
    sdk: &aws_sdk_ecr::Client,
    repository: &str,
    tag: &str,
    bytes: &Bytes,
    media_type: &str,
) -> String {
    let out = sdk
        .put_image()
        .repository_name(repository)
        .image_manifest(std::str::from_utf8(bytes).unwrap())
        .image_manifest_media_type(media_type)
        .image_tag(tag)
        .image_digest(digest_of(bytes))
        .send()
        .await
        .unwrap();
    out.image()
        .unwrap()
        .image_id()
        .unwrap()
        .image_digest()
        .unwrap()
        .to_string()
}

/// The tags the server has on a digest, sorted.
pub async fn tags_of(sdk: &aws_sdk_ecr::Client, repository: &str, digest: &str) -> Vec<String> {
    let out = sdk
        .describe_images()
        .repository_name(repository)
        .image_ids(ImageIdentifier::builder().image_digest(digest).build())
        .send()
        .await
        .unwrap();
    let mut tags: Vec<String> = out
        .image_details()
        .iter()
        .flat_map(|d| d.image_tags().iter().cloned())
        .collect();
    tags.sort();
    tags
}

/// The digest `tag` names, as `BatchGetImage` answers.
pub async fn digest_of_tag(
    sdk: &aws_sdk_ecr::Client,
    repository: &str,
    tag: &str,
) -> Option<String> {
    let out = sdk
        .batch_get_image()
        .repository_name(repository)
        .image_ids(ImageIdentifier::builder().image_tag(tag).build())
        .send()
        .await
        .unwrap();
    out.images()
        .first()
        .and_then(|i| i.image_id())
        .and_then(|id| id.image_digest())
        .map(str::to_string)
}
