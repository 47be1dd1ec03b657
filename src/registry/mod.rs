//! Registries, behind one small interface: read a tag's manifest, write a
//! manifest under a tag, list and remove tags, tell which commit an image
//! was built from (and when it was pushed), and hand the engine the
//! credentials for a push.
//!
//! Two backends: [`ecr`] (the ECR API through aws-sdk-ecr, chosen for
//! `<account>.dkr.ecr.<region>.amazonaws.com`) and [`oci`] (the OCI
//! distribution API over HTTP(S), for every other registry). Both retry
//! transient failures ([`retry`]) and count the retries for the summary.
//!
//! A manifest is kept as the exact bytes the registry served: its digest is
//! the sha256 of those bytes, so nothing here ever re-serialises one.

pub mod blob;
pub mod copy;
pub mod credentials;
pub mod ecr;
pub mod gzip;
pub mod oci;
pub mod retry;

use crate::config::AwsSettings;
use crate::error::{Error, Result};
use crate::secret::Secret;
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Docker's single-platform manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker's multi-platform manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI's single-platform manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI's index (multi-platform, or one platform plus attestations).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Every manifest kind hoist reads, asked for together so that the registry
/// serves what it stores instead of converting it.
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
];

/// The label that names the commit an image was built from.
pub const REVISION_LABEL: &str = "org.opencontainers.image.revision";

/// Where the images go (`REG`): a registry host and a repository prefix,
/// e.g. `123456789012.dkr.ecr.eu-west-1.amazonaws.com/molecule-ai`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host[:port]`.
    pub host: String,
    /// The repository prefix, without slashes at either end; may be empty.
    pub prefix: String,
}

impl std::fmt::Display for Target {
    /// `host/prefix`, as `REG` is written.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.host)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// An ECR registry host's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrHost {
    pub account: String,
    pub region: String,
}

impl Target {
    /// Parses `host[:port][/prefix]`. The host must look like one (a dot, a
    /// port or `localhost`), as the docker CLI requires of a registry.
    pub fn parse(registry: &str) -> Result<Target> {
        let trimmed = registry.trim().trim_end_matches('/');
        let bad = |why: &str| {
            Error::input(format!(
                "invalid registry '{}': {why}",
                without_userinfo(registry)
            ))
            .hint(
                "give the registry host and repository prefix, e.g. \
                 123456789012.dkr.ecr.eu-west-1.amazonaws.com/molecule-ai or localhost:5000/team",
            )
        };
        if trimmed.contains("://") {
            return Err(bad(
                "leave out the scheme (https:// is used, plain HTTP on loopback)",
            ));
        }
        let (host, prefix) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        let looks_like_host = host.contains('.') || host.contains(':') || host == "localhost";
        if host.is_empty() || !looks_like_host {
            return Err(bad(
                "the first part must be a registry host (with a dot or a port)",
            ));
        }
        if let Some((before, digest)) = trimmed.rsplit_once('@')
            && digest.starts_with("sha256:")
        {
            return Err(Error::input(format!(
                "invalid registry '{}@{digest}': a registry takes no digest",
                without_userinfo(before)
            ))
            .hint("give HOST[/PREFIX]: hoist adds each image's name and tags itself"));
        }
        // Checked on the whole value: a password may hold a `/`, which would
        // otherwise put its tail in the prefix.
        if trimmed.contains('@') {
            return Err(bad(
                "credentials do not belong in the registry; use the Docker config, \
                 HOIST_REGISTRY_USER_<HOST>/HOIST_REGISTRY_PASSWORD_<HOST>, or \
                 HOIST_REGISTRY_USER/HOIST_REGISTRY_PASSWORD",
            ));
        }
        if let Some((_, port)) = host.rsplit_once(':')
            && !host.ends_with(']')
            && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(bad("the port after ':' must be a number"));
        }
        if prefix.split('/').any(|part| part.is_empty()) && !prefix.is_empty() {
            return Err(bad("the repository prefix has an empty path segment"));
        }
        if let Some(part) = prefix
            .split('/')
            .find(|part| !prefix.is_empty() && !is_path_component(part))
        {
            return Err(bad(&format!(
                "'{part}' is not a repository name component (lowercase letters and digits, \
                 joined by '.', '_', '__' or '-'; the distribution spec's grammar)"
            )));
        }
        Ok(Target {
            host: host.to_ascii_lowercase(),
            prefix: prefix.to_string(),
        })
    }

    /// The repository of an image: `<prefix>/<image>`.
    pub fn repository(&self, image: &str) -> String {
        if self.prefix.is_empty() {
            image.to_string()
        } else {
            format!("{}/{image}", self.prefix)
        }
    }

    /// `host/prefix/image:tag`, as the engine names it.
    pub fn reference(&self, image: &str, tag: &str) -> String {
        format!("{}/{}:{tag}", self.host, self.repository(image))
    }

    /// `host/prefix/image@sha256:…`, the reference that cannot move.
    pub fn pinned(&self, image: &str, digest: &str) -> String {
        format!("{}/{}@{digest}", self.host, self.repository(image))
    }

    /// The account and region when the host is an ECR registry.
    pub fn ecr(&self) -> Option<EcrHost> {
        let host = self.host.split(':').next().unwrap_or(&self.host);
        let mut parts = host.split('.');
        let account = parts.next()?;
        let (dkr, ecr, region) = (parts.next()?, parts.next()?, parts.next()?);
        let rest: Vec<&str> = parts.collect();
        let is_aws = matches!(
            rest.as_slice(),
            ["amazonaws", "com"] | ["amazonaws", "com", "cn"]
        );
        let account_ok = account.len() == 12 && account.chars().all(|c| c.is_ascii_digit());
        (dkr == "dkr" && ecr == "ecr" && is_aws && account_ok).then(|| EcrHost {
            account: account.to_string(),
            region: region.to_string(),
        })
    }

    /// Plain HTTP is allowed for loopback registries only.
    pub fn is_loopback(&self) -> bool {
        let host = match self.host.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
            _ => &self.host,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// A manifest as the registry serves it: the exact bytes, their media type
/// and the digest that names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// `sha256:<hex>`, as the registry reports it.
    pub digest: String,
    pub media_type: String,
    pub bytes: Bytes,
}

impl Manifest {
    /// A manifest whose digest is computed from its bytes.
    pub fn from_bytes(media_type: impl Into<String>, bytes: Bytes) -> Manifest {
        Manifest {
            digest: digest_of(&bytes),
            media_type: media_type.into(),
            bytes,
        }
    }

    fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.bytes).ok()
    }

    /// The config blob's digest, for a single-platform manifest.
    pub fn config_digest(&self) -> Option<String> {
        let json = self.json()?;
        json.get("config")?
            .get("digest")?
            .as_str()
            .map(str::to_string)
    }

    /// What the image weighs in the registry: config and layers (or, for an
    /// index, the manifests it lists), as the manifest declares them.
    pub fn size(&self) -> Option<u64> {
        let json = self.json()?;
        let sizes = |key: &str| {
            json.get(key)
                .and_then(|v| v.as_array())
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|item| item.get("size")?.as_u64())
                        .sum::<u64>()
                })
                .unwrap_or(0)
        };
        let config = json
            .get("config")
            .and_then(|c| c.get("size"))
            .and_then(|s| s.as_u64())
            .unwrap_or(0);
        Some(config + sizes("layers") + sizes("manifests"))
    }

    /// Whether this is an index or manifest list rather than one image.
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_MANIFEST_LIST
    }
}

/// `sha256:<hex>` of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut text = String::with_capacity(7 + 64);
    text.push_str("sha256:");
    for byte in hash {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// A user name and password (or token) for a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub username: String,
    pub password: Secret,
}

/// What the engine needs to push to a registry: the login for the host.
#[derive(Debug, Clone)]
pub struct PushAuth {
    pub server: String,
    pub login: Option<Login>,
}

impl PushAuth {
    /// Every secret value this carries, for masking in CI.
    pub fn secrets(&self) -> Vec<&Secret> {
        self.login.iter().map(|l| &l.password).collect()
    }
}

/// A tag of a repository, as the registry lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub name: String,
    /// The manifest it names, when the listing says (ECR's does; OCI's tag list does not).
    pub digest: Option<String>,
    /// When that manifest was pushed, RFC 3339 in UTC (e.g. "2026-11-24T13:05:09Z"), when the registry says (ECR: imagePushedAt).
    pub pushed_at: Option<String>,
}

/// What [`Registry::ensure_repository`] may do about a missing repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    Fail,
    Create,
}

/// The OCI client a registry's blobs go through ([`Registry::blob_client`]).
pub enum BlobClient<'a> {
    Borrowed(&'a oci::Oci),
    Owned(Box<oci::Oci>),
}

impl std::ops::Deref for BlobClient<'_> {
    type Target = oci::Oci;
    fn deref(&self) -> &oci::Oci {
        match self {
            BlobClient::Borrowed(oci) => oci,
            BlobClient::Owned(oci) => oci,
        }
    }
}

/// A connected registry: one of the two backends.
pub enum Registry {
    Ecr(ecr::Ecr),
    Oci(oci::Oci),
}

impl Registry {
    /// Connects to the registry of `target`: ECR when the host is an ECR
    /// host, the OCI distribution API otherwise. `env` reads the
    /// environment (credentials, endpoint overrides).
    pub async fn connect(
        target: &Target,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Registry> {
        Registry::connect_with(target, &AwsSettings::default(), env).await
    }

    /// [`Registry::connect`], with `aws`'s profile and role for an ECR
    /// host (ignored for others).
    pub async fn connect_with(
        target: &Target,
        aws: &AwsSettings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Registry> {
        match target.ecr() {
            Some(host) => Ok(Registry::Ecr(
                ecr::Ecr::connect(target, &host, aws, env).await?,
            )),
            None => Ok(Registry::Oci(oci::Oci::connect(target, env)?)),
        }
    }

    /// The OCI client, when this is one.
    pub fn oci(&self) -> Option<&oci::Oci> {
        match self {
            Registry::Oci(oci) => Some(oci),
            Registry::Ecr(_) => None,
        }
    }

    /// The client blobs go through: the OCI client itself; for ECR, a
    /// client of its registry endpoint with the login of
    /// `GetAuthorizationToken` (ECR's API moves no blobs).
    pub async fn blob_client(&self, target: &Target) -> Result<BlobClient<'_>> {
        match self {
            Registry::Oci(oci) => Ok(BlobClient::Borrowed(oci)),
            Registry::Ecr(ecr) => {
                let login = ecr.push_auth().await?.login.ok_or_else(|| {
                    Error::failed(format!("{} gave no login for its blobs", target.host))
                })?;
                Ok(BlobClient::Owned(Box::new(oci::Oci::with_login(
                    target,
                    login,
                    credentials::Source::EcrToken,
                )?)))
            }
        }
    }

    /// `"ECR"` or `"OCI"`, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Registry::Ecr(_) => "ECR",
            Registry::Oci(_) => "OCI",
        }
    }

    /// The login the engine pushes with (ECR: from `GetAuthorizationToken`,
    /// cached and refreshed before it expires).
    pub async fn push_auth(&self) -> Result<PushAuth> {
        match self {
            Registry::Ecr(r) => r.push_auth().await,
            Registry::Oci(r) => r.push_auth().await,
        }
    }

    /// Checks that a repository exists, or creates it; registries that
    /// create repositories on push accept any name. Says what it created,
    /// e.g. "created, tag mutability IMMUTABLE_WITH_EXCLUSION".
    pub async fn ensure_repository(
        &self,
        repository: &str,
        missing: Missing,
    ) -> Result<Option<String>> {
        match self {
            Registry::Ecr(r) => r.ensure_repository(repository, missing).await,
            Registry::Oci(r) => r.ensure_repository(repository, missing).await,
        }
    }

    /// Whether the repository exists: ECR asks (`DescribeRepositories`);
    /// OCI registries create repositories on the first push, so yes.
    pub async fn repository_exists(&self, repository: &str) -> Result<bool> {
        match self {
            Registry::Ecr(r) => r.repository_exists(repository).await,
            Registry::Oci(_) => Ok(true),
        }
    }

    /// The manifest a tag names, or `None` when the tag does not exist.
    pub async fn manifest(&self, repository: &str, tag: &str) -> Result<Option<Manifest>> {
        match self {
            Registry::Ecr(r) => r.manifest(repository, tag).await,
            Registry::Oci(r) => r.manifest(repository, tag).await,
        }
    }

    /// Points a tag at a manifest the repository already holds, by writing
    /// the exact bytes under the tag. A tag already naming that manifest is
    /// success.
    pub async fn put_manifest(
        &self,
        repository: &str,
        tag: &str,
        manifest: &Manifest,
    ) -> Result<()> {
        match self {
            Registry::Ecr(r) => r.put_manifest(repository, tag, manifest).await,
            Registry::Oci(r) => r.put_manifest(repository, tag, manifest).await,
        }
    }

    /// The commit an image was built from, as far as the registry tells:
    /// OCI reads the full sha of its revision label from the image config;
    /// ECR, whose API serves no config blob, gives the hex of a
    /// `staging-<sha7>` tag on the same digest (a prefix). `None` when the
    /// registry cannot say.
    pub async fn revision(&self, repository: &str, manifest: &Manifest) -> Result<Option<String>> {
        match self {
            Registry::Ecr(r) => r.revision(repository, manifest).await,
            Registry::Oci(r) => r.revision(repository, manifest).await,
        }
    }

    /// Every commit the registry names for an image, for checking that it
    /// is the commit asked for: OCI, the revision label (none or one full
    /// sha); ECR, the hex of every `staging-<hex>` tag on the same digest,
    /// so that a tag pushed by hand onto another commit's image shows.
    pub async fn revisions(&self, repository: &str, manifest: &Manifest) -> Result<Vec<String>> {
        match self {
            Registry::Ecr(r) => r.revisions(repository, manifest).await,
            Registry::Oci(r) => Ok(r
                .revision(repository, manifest)
                .await?
                .into_iter()
                .collect()),
        }
    }

    /// Every tag of the repository, sorted by name. ECR: `DescribeImages`
    /// (tagged images, every page), one [`Tag`] per tag with its digest and
    /// push time. OCI: `GET /v2/<repo>/tags/list`, following the `Link`
    /// pagination, names only. A missing repository: ECR fails with the
    /// same "does not exist" error as its other calls; OCI (404
    /// `NAME_UNKNOWN`, as registries that create repositories on push say
    /// it) gives an empty list.
    pub async fn tags(&self, repository: &str) -> Result<Vec<Tag>> {
        match self {
            Registry::Ecr(r) => r.tags(repository).await,
            Registry::Oci(r) => r.tags(repository).await,
        }
    }

    /// Removes `tag` alone, leaving the manifest and its other tags in
    /// place. `Ok(true)` when the tag is gone (removed now, or it did not
    /// exist); `Ok(false)` when this registry cannot remove a tag alone.
    /// Never deletes by digest: that would drop every tag of the manifest,
    /// `staging-<sha7>` included.
    pub async fn delete_tag(&self, repository: &str, tag: &str) -> Result<bool> {
        match self {
            Registry::Ecr(r) => r.delete_tag(repository, tag).await,
            Registry::Oci(r) => r.delete_tag(repository, tag).await,
        }
    }

    /// When the manifest `digest` was pushed, RFC 3339 in UTC, where the
    /// registry says: ECR (`imagePushedAt`; `None` for a digest it does
    /// not hold); OCI has no such field, so `None` without a request.
    pub async fn pushed_at(&self, repository: &str, digest: &str) -> Result<Option<String>> {
        match self {
            Registry::Ecr(r) => r.pushed_at(repository, digest).await,
            Registry::Oci(r) => r.pushed_at(repository, digest).await,
        }
    }

    /// How many requests were retried so far.
    pub fn retries(&self) -> u32 {
        match self {
            Registry::Ecr(r) => r.retries(),
            Registry::Oci(r) => r.retries(),
        }
    }
}

/// A registry as given, for a message: everything before its last `@`
/// (a `user:password`, which may itself hold `/` or `@`) is shown as
/// `***`, so a password typed into `--registry` never reaches a log.
fn without_userinfo(registry: &str) -> String {
    let start = registry.find("://").map_or(0, |i| i + 3);
    match registry[start..].rfind('@') {
        Some(at) => format!("{}***{}", &registry[..start], &registry[start + at..]),
        None => registry.to_string(),
    }
}

/// One path component of a repository name, as the distribution spec
/// writes it: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_path_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let run = bytes[i..].iter().take_while(|b| !alnum(**b)).count();
        let separator = &part[i..i + run];
        let dashes = separator.bytes().all(|b| b == b'-');
        if !matches!(separator, "." | "_" | "__") && !dashes {
            return false;
        }
        i += run;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_not_taken_for_credentials() {
        let error = Target::parse("127.0.0.1:5000/x@sha256:abc").unwrap_err();
        assert!(
            error.message.contains("127.0.0.1:5000/x@sha256:abc"),
            "{error}"
        );
        assert!(error.message.contains("no digest"), "{error}");
        let error = Target::parse("u:s3cr3t@127.0.0.1:5000/x@sha256:abc").unwrap_err();
        assert!(!format!("{error}").contains("s3cr3t"), "{error}");
    }

    #[test]
    fn a_bad_registry_is_named_without_its_password() {
        for given in [
            "robot:s3cr3t-pw@registry.example.com/team",
            "https://robot:s3cr3t-pw@registry.example.com/team",
            // A `/` in the password used to put its tail in the prefix.
            "alice:s3cr3t/-pw@127.0.0.1:5000/acme",
            "127.0.0.1:5000/alice:s3cr3t-pw@acme",
        ] {
            let error = Target::parse(given).unwrap_err();
            let text = format!("{error}");
            assert_eq!(error.exit_code(), 2, "{text}");
            assert!(!text.contains("s3cr3t"), "{text}");
            assert!(text.contains("***@"), "{text}");
        }
    }

    #[test]
    fn repository_prefixes_follow_the_distribution_grammar() {
        for good in [
            "a",
            "molecule-ai",
            "a.b",
            "a_b",
            "a__b",
            "a--b",
            "team/sub-1",
        ] {
            assert!(
                Target::parse(&format!("localhost:5000/{good}")).is_ok(),
                "{good}"
            );
        }
        for bad in ["Team", "a?token=x", "-a", "a-", "a..b", "a___b", "a b"] {
            assert!(
                Target::parse(&format!("localhost:5000/{bad}")).is_err(),
                "{bad}"
            );
        }
        assert!(Target::parse("localhost:http/x").is_err());
        assert!(Target::parse("[::1]:5000/x").is_ok());
    }

    #[test]
    fn parses_targets() {
        let target =
            Target::parse("123456789012.dkr.ecr.eu-west-1.amazonaws.com/molecule-ai/").unwrap();
        assert_eq!(target.host, "123456789012.dkr.ecr.eu-west-1.amazonaws.com");
        assert_eq!(target.prefix, "molecule-ai");
        assert_eq!(
            target.ecr(),
            Some(EcrHost {
                account: "123456789012".into(),
                region: "eu-west-1".into()
            })
        );
        assert_eq!(
            target.reference("platform", "staging-abc1234"),
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/molecule-ai/platform:staging-abc1234"
        );
        let local = Target::parse("127.0.0.1:5000").unwrap();
        assert_eq!(local.repository("platform"), "platform");
        assert!(local.is_loopback() && local.ecr().is_none());
        assert!(Target::parse("localhost:5000/a/b").unwrap().is_loopback());
        assert!(Target::parse("[::1]:5000").unwrap().is_loopback());
        assert!(!Target::parse("ghcr.io/org").unwrap().is_loopback());
        assert!(
            Target::parse("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn")
                .unwrap()
                .ecr()
                .is_some()
        );
        assert!(
            Target::parse("12345.dkr.ecr.eu-west-1.amazonaws.com")
                .unwrap()
                .ecr()
                .is_none()
        );
    }

    #[test]
    fn rejects_what_is_not_a_registry() {
        for bad in [
            "",
            "molecule-ai",
            "https://ghcr.io/org",
            "user:pw@ghcr.io/org",
            "ghcr.io//org",
        ] {
            let error = Target::parse(bad).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{bad}");
            let shown = without_userinfo(bad);
            assert!(error.message.contains(&shown), "{bad}: {}", error.message);
        }
    }

    #[test]
    fn reads_manifests_without_reserialising() {
        let bytes = Bytes::from_static(
            br#"{"schemaVersion":2,"config":{"size":10,"digest":"sha256:c"},"layers":[{"size":100},{"size":5}]}"#,
        );
        let manifest = Manifest::from_bytes(DOCKER_MANIFEST, bytes.clone());
        assert_eq!(manifest.digest, digest_of(&bytes));
        assert_eq!(manifest.size(), Some(115));
        assert_eq!(manifest.config_digest().as_deref(), Some("sha256:c"));
        assert!(!manifest.is_index());
        assert_eq!(
            digest_of(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
