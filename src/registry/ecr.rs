//! Amazon ECR through aws-sdk-ecr.
//!
//! ECR's registry-side API does what the OCI API cannot do as cheaply:
//! retagging (`BatchGetImage` then `PutImage` with the exact bytes, no
//! layers moved), creating repositories, reading every tag of a digest and
//! when it was pushed (`DescribeImages`), and removing one tag alone
//! (`BatchDeleteImage` by tag). The engine still pushes layers itself, with
//! the login [`Ecr::push_auth`] gets from `GetAuthorizationToken`.
//!
//! **Retries.** The SDK's own retries are off: every call goes through
//! [`Retries`], so that throttling (`ThrottlingException`, which ECR sends
//! with HTTP 400), 429, 5xx, timeouts and cut connections are retried with
//! hoist's backoff and counted for the summary. Every other failure is
//! final at once.
//!
//! **Credentials.** `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and
//! `AWS_SESSION_TOKEN`), when the `env` given to [`Ecr::connect`] has them;
//! else aws-config's default chain, which with the crate's default features
//! off (as here) tries, in order: the process environment, the shared
//! profile (`AWS_PROFILE`; static keys, and `role_arn` with
//! `source_profile` or `credential_source`, assumed through STS), web
//! identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`, as on EKS and
//! GitHub/Gitea OIDC), the ECS container endpoint, then EC2 instance
//! metadata. It does NOT have SSO (`sso_session`, `sso_start_url`),
//! `credential_process` or `aws login` sessions (features left off to keep
//! the build small): profiles using them fail saying the feature is not
//! enabled; export keys (`aws configure export-credentials --format env`)
//! instead. Nothing is resolved in `connect`: the first call resolves them
//! (off EC2 the instance-metadata probe gives up within seconds), and a
//! failure is a final error with a hint naming where credentials come from.
//!
//! **moto** (the tests' ECR) differs from ECR in ways this module copes with:
//! its token's `expiresAt` is in 2015, so a token that is already (or
//! nearly) expired when it arrives is used once and never cached; it raises
//! `ImageAlreadyExistsException` also when an IMMUTABLE tag names another
//! manifest, so `put_manifest` reads the tag back before calling that a
//! success; and it answers a missing repository on `PutImage` with an HTML
//! 500, which looks transient, so callers check the repository first
//! ([`Ecr::ensure_repository`]). Its `DescribeImages` ignores the
//! `tagStatus` filter and `maxResults` (it answers with every image, on one
//! page), so [`Ecr::tags`] skips untagged images itself, and its paging is
//! not exercised by the tests.

use super::retry::{Failure, Retries, is_transient_status};
use super::{EcrHost, Login, MANIFEST_MEDIA_TYPES, Manifest, Missing, PushAuth, Tag, Target};
use crate::config::AwsSettings;
use crate::error::{Error, Result};
use crate::secret::Secret;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::retry::{ErrorKind, RetryConfig};
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ecr::Client;
use aws_sdk_ecr::config::Credentials;
use aws_sdk_ecr::config::http::HttpResponse;
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecr::primitives::DateTime;
use aws_sdk_ecr::types::{
    DescribeImagesFilter, ImageFailureCode, ImageIdentifier, ImageTagMutability,
    ImageTagMutabilityExclusionFilter, ImageTagMutabilityExclusionFilterType, TagStatus,
};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use base64::Engine as _;
use bytes::Bytes;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

/// A token is refreshed when less than this is left of it (ECR's last 12 h).
const REFRESH_BEFORE: Duration = Duration::from_secs(15 * 60);

/// The tags that move on every build or promotion: mutable even when the
/// repository's other tags are not. `latest-previous` is where promote
/// keeps the production digest it replaces, for a rollback.
const MOVING_TAGS: [&str; 3] = ["staging-latest", "latest", "latest-previous"];

/// The page size asked of `DescribeImages` (ECR's largest).
const DESCRIBE_PAGE: i32 = 1000;

const CREDENTIALS_HINT: &str = "give AWS credentials: AWS_ACCESS_KEY_ID and \
     AWS_SECRET_ACCESS_KEY, an AWS_PROFILE with keys or a role, or a role of the \
     runner (web identity, ECS task or EC2 instance)";

pub struct Ecr {
    client: Client,
    /// The registry host, as the engine names it.
    host: String,
    account: String,
    region: String,
    login: Mutex<Option<CachedLogin>>,
    retries: Retries,
}

struct CachedLogin {
    login: Login,
    expires: SystemTime,
}

/// How one failed call is taken.
enum Outcome<E> {
    /// An error of the operation, for the caller to judge (a missing
    /// repository, an image already there, a refused parameter).
    Service(E),
    Failure(Failure),
}

impl Ecr {
    /// A client for the registry `host`: the region from the host, the
    /// credentials as the module says, then `aws`'s profile and role over
    /// them (a promotion's destination in another account).
    pub async fn connect(
        target: &Target,
        host: &EcrHost,
        aws: &AwsSettings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Ecr> {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .operation_attempt_timeout(Duration::from_secs(60))
            .build();
        let region = Region::new(host.region.clone());
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region.clone())
            .http_client(http.clone())
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts);
        if let Some(url) = var("AWS_ENDPOINT_URL_ECR").or_else(|| var("AWS_ENDPOINT_URL")) {
            loader = loader.endpoint_url(url);
        }
        let keys = match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(key), Some(secret)) => Some(Credentials::new(
                key,
                secret,
                var("AWS_SESSION_TOKEN"),
                None,
                "hoist environment",
            )),
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::input(
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be given together",
                )
                .hint(CREDENTIALS_HINT));
            }
            (None, None) => None,
        };
        match (&aws.profile, keys) {
            // A destination's own profile wins over the keys in the
            // environment (which are the source's): the default chain
            // would take the environment first.
            (Some(profile), _) => {
                let provider_config = ProviderConfig::without_region()
                    .with_region(Some(region))
                    .with_http_client(http);
                let provider = ProfileFileCredentialsProvider::builder()
                    .profile_name(profile)
                    .configure(&provider_config)
                    .build();
                loader = loader.profile_name(profile).credentials_provider(provider);
            }
            (None, Some(keys)) => loader = loader.credentials_provider(keys),
            (None, None) => {}
        }
        let mut config = loader.load().await;
        if let Some(role) = &aws.role_arn {
            // The credentials found so far assume the role: the usual way
            // from one account (staging) into another (production).
            let provider = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name("hoist-promote")
                .configure(&config)
                .build()
                .await;
            config = config
                .into_builder()
                .credentials_provider(aws_sdk_ecr::config::SharedCredentialsProvider::new(
                    provider,
                ))
                .build();
        }
        Ok(Ecr {
            client: Client::new(&config),
            host: target.host.clone(),
            account: host.account.clone(),
            region: host.region.clone(),
            login: Mutex::new(None),
            retries: Retries::default(),
        })
    }

    /// The engine's login for the registry: `AWS` and a token from
    /// `GetAuthorizationToken`, cached until less than [`REFRESH_BEFORE`]
    /// of it is left.
    pub async fn push_auth(&self) -> Result<PushAuth> {
        let mut cached = self.login.lock().await;
        let fresh = |c: &CachedLogin| fresh(c.expires, SystemTime::now());
        let login = match cached.as_ref().filter(|c| fresh(c)) {
            Some(c) => c.login.clone(),
            None => {
                let op = "GetAuthorizationToken";
                let output = self
                    .call(op, None, || self.client.get_authorization_token().send())
                    .await?
                    .map_err(|e| self.service_error(op, None, &e))?;
                let data = output.authorization_data().first().ok_or_else(|| {
                    self.error(op, None)
                        .caused_by("the answer holds no authorization data")
                })?;
                let login = decode_token(data.authorization_token().unwrap_or_default())
                    .map_err(|why| self.error(op, None).caused_by(why))?;
                let expires = data
                    .expires_at()
                    .map(|at| UNIX_EPOCH + Duration::from_secs(at.secs().max(0) as u64));
                // A token that arrives (nearly) expired, as moto's do, is
                // used for this push and fetched again for the next.
                *cached = expires
                    .map(|expires| CachedLogin {
                        login: login.clone(),
                        expires,
                    })
                    .filter(|c| fresh(c));
                login
            }
        };
        Ok(PushAuth {
            server: self.host.clone(),
            login: Some(login),
        })
    }

    /// Whether the repository exists (`DescribeRepositories`).
    pub async fn repository_exists(&self, repository: &str) -> Result<bool> {
        let op = "DescribeRepositories";
        let described = self
            .call(op, Some(repository), || {
                self.client
                    .describe_repositories()
                    .registry_id(&self.account)
                    .repository_names(repository)
                    .send()
            })
            .await?;
        match described {
            Ok(_) => Ok(true),
            Err(e) if e.is_repository_not_found_exception() => Ok(false),
            Err(e) => Err(self.service_error(op, Some(repository), &e)),
        }
    }

    /// Checks that the repository exists; with [`Missing::Create`] creates
    /// it with immutable tags except the moving ones ([`MOVING_TAGS`]), or
    /// with mutable tags when the server does not know exclusions.
    pub async fn ensure_repository(
        &self,
        repository: &str,
        missing: Missing,
    ) -> Result<Option<String>> {
        if self.repository_exists(repository).await? {
            return Ok(None);
        }
        if missing == Missing::Fail {
            // Only publish asks to ensure a repository: its flag is the cure.
            return Err(self
                .no_repository(repository)
                .hint("create it, or run hoist publish with --create-repos"));
        }

        let op = "CreateRepository";
        let filters = MOVING_TAGS
            .iter()
            .map(|tag| {
                ImageTagMutabilityExclusionFilter::builder()
                    .filter_type(ImageTagMutabilityExclusionFilterType::Wildcard)
                    .filter(*tag)
                    .build()
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.error(op, Some(repository)).caused_by(e))?;
        let created = self
            .call(op, Some(repository), || {
                self.client
                    .create_repository()
                    .repository_name(repository)
                    .image_tag_mutability(ImageTagMutability::ImmutableWithExclusion)
                    .set_image_tag_mutability_exclusion_filters(Some(filters.clone()))
                    .send()
            })
            .await?;
        let (created, refused) = match created {
            Ok(output) => (output, None),
            Err(e) if e.is_repository_already_exists_exception() => return Ok(None),
            Err(e)
                if e.is_invalid_parameter_exception()
                    || e.code() == Some("ValidationException") =>
            {
                let refused = service_message(&e);
                let output = self
                    .call(op, Some(repository), || {
                        self.client
                            .create_repository()
                            .repository_name(repository)
                            .image_tag_mutability(ImageTagMutability::Mutable)
                            .send()
                    })
                    .await?
                    .map_err(|e| self.service_error(op, Some(repository), &e))?;
                (output, Some(refused))
            }
            Err(e) => return Err(self.service_error(op, Some(repository), &e)),
        };
        let mutability = created
            .repository()
            .and_then(|r| r.image_tag_mutability())
            .map(|m| m.as_str().to_string())
            .unwrap_or_else(|| "unknown".into());
        let mut said = format!("created, tag mutability {mutability}");
        if mutability.ends_with("_WITH_EXCLUSION") {
            said.push_str(&format!(" ({} stay mutable)", MOVING_TAGS.join(", ")));
        }
        if let Some(refused) = refused {
            said.push_str(&format!(
                " (the server refused IMMUTABLE_WITH_EXCLUSION: {refused})"
            ));
        }
        Ok(Some(said))
    }

    /// The manifest a tag (or a digest, `sha256:…`) names, as ECR stores
    /// it, or `None` without it.
    pub async fn manifest(&self, repository: &str, tag: &str) -> Result<Option<Manifest>> {
        let op = "BatchGetImage";
        let output = self
            .call(op, Some(repository), || {
                self.client
                    .batch_get_image()
                    .registry_id(&self.account)
                    .repository_name(repository)
                    .image_ids(image_id(tag))
                    .set_accepted_media_types(Some(
                        MANIFEST_MEDIA_TYPES.iter().map(|t| t.to_string()).collect(),
                    ))
                    .send()
            })
            .await?
            .map_err(|e| {
                if e.is_repository_not_found_exception() {
                    self.no_repository(repository)
                } else {
                    self.service_error(op, Some(repository), &e)
                }
            })?;
        let Some(image) = output.images().first() else {
            let failure = output.failures().first();
            return match failure.and_then(|f| f.failure_code()) {
                Some(ImageFailureCode::ImageNotFound) | None => Ok(None),
                Some(code) => Err(self.error(op, Some(repository)).caused_by(format!(
                    "{tag}: {code}: {}",
                    failure.and_then(|f| f.failure_reason()).unwrap_or_default()
                ))),
            };
        };
        let bytes = Bytes::from(
            image
                .image_manifest()
                .ok_or_else(|| {
                    self.error(op, Some(repository))
                        .caused_by(format!("{tag}: the answer holds no manifest"))
                })?
                .to_string(),
        );
        let media_type = match image.image_manifest_media_type() {
            Some(media_type) => media_type.to_string(),
            None => declared_media_type(&bytes).ok_or_else(|| {
                self.error(op, Some(repository))
                    .caused_by(format!("{tag}: the manifest's media type is not given"))
            })?,
        };
        let digest = image.image_id().and_then(|id| id.image_digest());
        Ok(Some(match digest {
            Some(digest) => Manifest {
                digest: digest.to_string(),
                media_type,
                bytes,
            },
            None => Manifest::from_bytes(media_type, bytes),
        }))
    }

    /// Writes the manifest's exact bytes under `tag`, pinned to its digest;
    /// with its digest for `tag`, untagged (a child of an index, or an
    /// image copied before its tags move).
    pub async fn put_manifest(
        &self,
        repository: &str,
        tag: &str,
        manifest: &Manifest,
    ) -> Result<()> {
        let op = "PutImage";
        let text = std::str::from_utf8(&manifest.bytes).map_err(|_| {
            self.error(op, Some(repository))
                .caused_by("the manifest is not UTF-8 text, which ECR requires")
        })?;
        let put = self
            .call(op, Some(repository), || {
                self.client
                    .put_image()
                    .registry_id(&self.account)
                    .repository_name(repository)
                    .image_manifest(text)
                    .image_manifest_media_type(&manifest.media_type)
                    .set_image_tag((tag != manifest.digest).then(|| tag.to_string()))
                    .image_digest(&manifest.digest)
                    .send()
            })
            .await?;
        match put {
            Ok(_) => Ok(()),
            // ECR: the tag already names this manifest (ImageAlreadyExists),
            // or names some manifest and cannot move (ImageTagAlreadyExists).
            // moto says ImageAlreadyExists for both, so the tag is read back.
            Err(e)
                if e.is_image_already_exists_exception()
                    || e.is_image_tag_already_exists_exception() =>
            {
                match self.manifest(repository, tag).await? {
                    Some(there) if there.digest == manifest.digest => Ok(()),
                    there => Err(self.immutable_tag(repository, tag, manifest, there)),
                }
            }
            Err(e) if e.is_repository_not_found_exception() => Err(self.no_repository(repository)),
            Err(e) => Err(self.service_error(op, Some(repository), &e)),
        }
    }

    /// The hex of a `staging-<hex>` tag on the manifest's digest, the
    /// longest when there are several. (ECR's API does not serve the config
    /// blob, so the revision label is not read.)
    pub async fn revision(&self, repository: &str, manifest: &Manifest) -> Result<Option<String>> {
        let revisions = self.revisions(repository, manifest).await?;
        Ok(revisions.into_iter().max_by_key(|hex| hex.len()))
    }

    /// The hex of every `staging-<hex>` tag on the manifest's digest, each
    /// one the commit that tag was pushed for; empty for a digest the
    /// repository does not hold.
    pub async fn revisions(&self, repository: &str, manifest: &Manifest) -> Result<Vec<String>> {
        let op = "DescribeImages";
        let described = self
            .call(op, Some(repository), || {
                self.client
                    .describe_images()
                    .registry_id(&self.account)
                    .repository_name(repository)
                    .image_ids(
                        ImageIdentifier::builder()
                            .image_digest(&manifest.digest)
                            .build(),
                    )
                    .send()
            })
            .await?;
        let output = match described {
            Ok(output) => output,
            Err(e) if e.is_image_not_found_exception() => return Ok(Vec::new()),
            Err(e) if e.is_repository_not_found_exception() => {
                return Err(self.no_repository(repository));
            }
            Err(e) => return Err(self.service_error(op, Some(repository), &e)),
        };
        Ok(output
            .image_details()
            .iter()
            .flat_map(|image| image.image_tags())
            .filter_map(|tag| staging_hex(tag))
            .map(str::to_string)
            .collect())
    }

    /// Every tag of the repository, with its digest and push time, sorted
    /// by name: `DescribeImages` of the tagged images, page after page.
    pub async fn tags(&self, repository: &str) -> Result<Vec<Tag>> {
        let op = "DescribeImages";
        let mut tags = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let described = self
                .call(op, Some(repository), || {
                    self.client
                        .describe_images()
                        .registry_id(&self.account)
                        .repository_name(repository)
                        .filter(
                            DescribeImagesFilter::builder()
                                .tag_status(TagStatus::Tagged)
                                .build(),
                        )
                        .max_results(DESCRIBE_PAGE)
                        .set_next_token(next.clone())
                        .send()
                })
                .await?;
            let output = match described {
                Ok(output) => output,
                Err(e) if e.is_repository_not_found_exception() => {
                    return Err(self.no_repository(repository));
                }
                Err(e) => return Err(self.service_error(op, Some(repository), &e)),
            };
            // The filter already leaves untagged images out (moto ignores
            // it, and then they simply have no tags to list).
            for image in output.image_details() {
                let pushed_at = image.image_pushed_at().and_then(rfc3339);
                for name in image.image_tags() {
                    tags.push(Tag {
                        name: name.clone(),
                        digest: image.image_digest().map(str::to_string),
                        pushed_at: pushed_at.clone(),
                    });
                }
            }
            match output.next_token() {
                // A token handed back unchanged would page forever.
                Some(token) if !token.is_empty() && next.as_deref() != Some(token) => {
                    next = Some(token.to_string());
                }
                _ => break,
            }
        }
        tags.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(tags)
    }

    /// Removes `tag` with `BatchDeleteImage` by tag, which ECR takes as
    /// "untag": the image stays while it has other tags (it goes with its
    /// last one). A tag that is not there is gone already: `true`.
    pub async fn delete_tag(&self, repository: &str, tag: &str) -> Result<bool> {
        let op = "BatchDeleteImage";
        let output = self
            .call(op, Some(repository), || {
                self.client
                    .batch_delete_image()
                    .registry_id(&self.account)
                    .repository_name(repository)
                    .image_ids(ImageIdentifier::builder().image_tag(tag).build())
                    .send()
            })
            .await?
            .map_err(|e| {
                if e.is_repository_not_found_exception() {
                    self.no_repository(repository)
                } else {
                    self.service_error(op, Some(repository), &e)
                }
            })?;
        // A batch call fails per image, in the answer, not as an error.
        match output.failures().first() {
            None => Ok(true),
            Some(failure) if failure.failure_code() == Some(&ImageFailureCode::ImageNotFound) => {
                Ok(true)
            }
            Some(failure) => Err(self.error(op, Some(repository)).caused_by(format!(
                "{tag}: {}: {}",
                failure
                    .failure_code()
                    .map(|c| c.as_str())
                    .unwrap_or("no failure code"),
                failure.failure_reason().unwrap_or_default()
            ))),
        }
    }

    /// When the manifest `digest` was pushed (`DescribeImages` by digest,
    /// `imagePushedAt`); `None` when the repository does not hold it, as
    /// [`Ecr::revision`] answers for an unknown digest.
    pub async fn pushed_at(&self, repository: &str, digest: &str) -> Result<Option<String>> {
        let op = "DescribeImages";
        let described = self
            .call(op, Some(repository), || {
                self.client
                    .describe_images()
                    .registry_id(&self.account)
                    .repository_name(repository)
                    .image_ids(ImageIdentifier::builder().image_digest(digest).build())
                    .send()
            })
            .await?;
        match described {
            Ok(output) => Ok(output
                .image_details()
                .iter()
                .find_map(|image| image.image_pushed_at().and_then(rfc3339))),
            Err(e) if e.is_image_not_found_exception() => Ok(None),
            Err(e) if e.is_repository_not_found_exception() => Err(self.no_repository(repository)),
            Err(e) => Err(self.service_error(op, Some(repository), &e)),
        }
    }

    pub fn retries(&self) -> u32 {
        self.retries.count()
    }

    /// Sends one request through [`Retries`]: `Ok(Ok(output))`, or
    /// `Ok(Err(error))` for an error of the operation the caller judges, or
    /// `Err` when the request failed for good (or too often).
    async fn call<O, E, F, Fut>(
        &self,
        op: &str,
        repository: Option<&str>,
        mut send: F,
    ) -> Result<std::result::Result<O, E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<O, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.retries
            .run(|| {
                let sent = send();
                async move {
                    match sent.await {
                        Ok(output) => Ok(Ok(output)),
                        Err(error) => match self.judge(op, repository, error) {
                            Outcome::Service(e) => Ok(Err(e)),
                            Outcome::Failure(failure) => Err(failure),
                        },
                    }
                }
            })
            .await
    }

    /// Whether a failed request is worth another try.
    fn judge<E>(
        &self,
        op: &str,
        repository: Option<&str>,
        error: SdkError<E, HttpResponse>,
    ) -> Outcome<E>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let transient = |cause: String| {
            Outcome::Failure(Failure::Transient(
                self.error(op, repository).caused_by(cause),
            ))
        };
        let permanent = |error: Error| Outcome::Failure(Failure::Permanent(error));
        match error {
            SdkError::ServiceError(context) => {
                let status = context.raw().status().as_u16();
                let error = context.into_err();
                if error.code() == Some("ThrottlingException") || is_transient_status(status) {
                    transient(format!("{} (HTTP {status})", service_message(&error)))
                } else {
                    Outcome::Service(error)
                }
            }
            SdkError::ResponseError(ref context) => {
                let status = context.raw().status().as_u16();
                let cause = format!("{} (HTTP {status})", chain(&error));
                if is_transient_status(status) {
                    transient(cause)
                } else {
                    permanent(self.error(op, repository).caused_by(cause))
                }
            }
            SdkError::TimeoutError(_) => transient(chain(&error)),
            SdkError::DispatchFailure(ref failure) => {
                let retry = failure.is_io()
                    || failure.is_timeout()
                    || matches!(
                        failure.as_other(),
                        Some(
                            ErrorKind::TransientError
                                | ErrorKind::ThrottlingError
                                | ErrorKind::ServerError
                        )
                    );
                let cause = chain(&error);
                if retry {
                    transient(cause)
                } else if cause.to_ascii_lowercase().contains("credential") {
                    // Resolving credentials failed before anything was sent.
                    permanent(
                        self.error(op, repository)
                            .caused_by(cause)
                            .hint(CREDENTIALS_HINT),
                    )
                } else {
                    permanent(self.error(op, repository).caused_by(cause))
                }
            }
            _ => permanent(self.error(op, repository).caused_by(chain(&error))),
        }
    }

    /// "ECR <op> failed for repository <r> (account …, region …)".
    fn error(&self, op: &str, repository: Option<&str>) -> Error {
        let subject = match repository {
            Some(repository) => format!(" for repository {repository}"),
            None => String::new(),
        };
        Error::failed(format!(
            "ECR {op} failed{subject} (account {}, region {})",
            self.account, self.region
        ))
    }

    fn service_error<E: ProvideErrorMetadata>(
        &self,
        op: &str,
        repository: Option<&str>,
        error: &E,
    ) -> Error {
        let failed = self.error(op, repository).caused_by(service_message(error));
        match error.code() {
            Some(
                "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "ExpiredTokenException"
                | "InvalidClientTokenId",
            ) => failed.hint(CREDENTIALS_HINT),
            Some("AccessDeniedException") => failed.hint(format!(
                "the AWS identity hoist runs as needs ecr:{op} on this repository"
            )),
            _ => failed,
        }
    }

    fn no_repository(&self, repository: &str) -> Error {
        Error::failed(format!(
            "ECR repository {repository} does not exist in account {}, region {}",
            self.account, self.region
        ))
        .hint("check the registry and its prefix (--registry, HOIST_REGISTRY), or publish to it first")
    }

    fn immutable_tag(
        &self,
        repository: &str,
        tag: &str,
        wanted: &Manifest,
        there: Option<Manifest>,
    ) -> Error {
        let names = match there {
            Some(there) => format!("already names {}", there.digest),
            None => "exists".to_string(),
        };
        Error::failed(format!(
            "cannot point {repository}:{tag} at {}: the tag {names} and the repository's tags are immutable",
            wanted.digest
        ))
        .hint(format!(
            "use a tag that does not exist yet, or make {tag} mutable \
             (an exclusion filter of the repository's IMMUTABLE_WITH_EXCLUSION setting)"
        ))
    }
}

/// Whether a token expiring at `expires` is still good for a push at `now`:
/// more than [`REFRESH_BEFORE`] left.
fn fresh(expires: SystemTime, now: SystemTime) -> bool {
    expires
        .duration_since(now)
        .is_ok_and(|left| left > REFRESH_BEFORE)
}

/// `AWS:<password>` from base64 to a login; nothing of the token goes into
/// the error.
fn decode_token(token: &str) -> std::result::Result<Login, &'static str> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .map_err(|_| "the authorization token is not base64")?;
    let decoded = String::from_utf8(decoded).map_err(|_| "the authorization token is not text")?;
    match decoded.split_once(':') {
        Some((username, password)) if !username.is_empty() && !password.is_empty() => Ok(Login {
            username: username.to_string(),
            password: Secret::new(password),
        }),
        _ => Err("the authorization token is not <user>:<password>"),
    }
}

/// "Code: message", as the service said it.
fn service_message<E: ProvideErrorMetadata>(error: &E) -> String {
    match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        (None, Some(message)) => message.to_string(),
        (None, None) => "an error without a code or message".to_string(),
    }
}

/// An error and its sources, each said once: `DisplayErrorContext` without
/// the `Debug` dump of the response it appends.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        let said = next.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = next.source();
    }
    text
}

/// The `mediaType` a manifest declares in its JSON.
fn declared_media_type(bytes: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    json.get("mediaType")?.as_str().map(str::to_string)
}

/// A time as RFC 3339 in UTC, to the second (`2026-11-24T13:05:09Z`):
/// whole seconds, so that two such strings compare as their times do.
fn rfc3339(at: &DateTime) -> Option<String> {
    let at = time::OffsetDateTime::from_unix_timestamp(at.secs()).ok()?;
    at.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// The hex of `staging-<hex>`, 7 to 40 lower-case hex digits.
fn staging_hex(tag: &str) -> Option<&str> {
    let hex = tag.strip_prefix("staging-")?;
    let ok = (7..=40).contains(&hex.len())
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then_some(hex)
}

/// A reference as ECR's API takes it: a digest (`sha256:…`) or a tag.
fn image_id(reference: &str) -> ImageIdentifier {
    if reference.starts_with("sha256:") {
        ImageIdentifier::builder().image_digest(reference).build()
    } else {
        ImageIdentifier::builder().image_tag(reference).build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_tokens_without_telling_them() {
        let token = base64::engine::general_purpose::STANDARD.encode("AWS:pa:ss");
        let login = decode_token(&token).unwrap();
        assert_eq!(login.username, "AWS");
        assert_eq!(login.password.expose(), "pa:ss");
        assert!(!format!("{login:?}").contains("pa:ss"));
        for bad in ["not base64!", "QVdT", ""] {
            let why = decode_token(bad).unwrap_err();
            assert!(!why.contains(bad) || bad.is_empty(), "{why}");
        }
    }

    #[test]
    fn a_token_is_kept_until_a_quarter_hour_is_left() {
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        assert!(fresh(now + 12 * hour, now));
        assert!(fresh(now + REFRESH_BEFORE + Duration::from_secs(1), now));
        assert!(!fresh(now + REFRESH_BEFORE, now));
        assert!(!fresh(now, now));
        // moto's: 2015-01-01.
        assert!(!fresh(UNIX_EPOCH + Duration::from_secs(1_420_070_400), now));
    }

    #[test]
    fn reads_staging_tags() {
        assert_eq!(staging_hex("staging-abc1234"), Some("abc1234"));
        let full = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(staging_hex(&format!("staging-{full}")), Some(full));
        for other in [
            "staging-latest",
            "staging-abc123",
            "staging-ABC1234",
            "latest",
            "abc1234",
            &format!("staging-{full}0"),
        ] {
            assert_eq!(staging_hex(other), None, "{other}");
        }
    }

    #[test]
    fn push_times_are_rfc3339_in_utc_to_the_second() {
        let at = DateTime::from_secs_and_nanos(1_795_525_509, 700_000_000);
        assert_eq!(rfc3339(&at).as_deref(), Some("2026-11-24T13:05:09Z"));
        assert_eq!(
            rfc3339(&DateTime::from_secs(0)).as_deref(),
            Some("1970-01-01T00:00:00Z")
        );
    }

    #[test]
    fn finds_the_declared_media_type() {
        let bytes = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#;
        assert_eq!(
            declared_media_type(bytes).as_deref(),
            Some(super::super::OCI_INDEX)
        );
        assert_eq!(declared_media_type(b"{}"), None);
    }
}
