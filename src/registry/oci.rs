//! The OCI distribution API over HTTP(S), for every registry that is not
//! ECR: read a tag's manifest as exact bytes, write those bytes under
//! another tag (a retag that moves no layers), read the revision label
//! from an image's config blob, list a repository's tags (page by page) and
//! remove one tag where the registry allows it.
//!
//! Why it is written this way:
//! - Each request is tried anonymously (or with what the last challenge
//!   taught), and a 401 is answered the way its `WWW-Authenticate` asks:
//!   Basic with the login, or a bearer token from the token service, cached
//!   per repository and access. A registry that still refuses is reported
//!   as refusing *these* credentials, with where they came from; no
//!   password, token or `Authorization` header ever reaches an error.
//! - Every HTTP exchange goes through [`Retries`]: a 5xx, a 429, a refused
//!   or cut connection and a timeout are tried again, anything else is
//!   answered at once. Timeouts bound every exchange, so a dead registry
//!   is an error, not a hang.
//! - Plain HTTP only for loopback registries (tests, a local mirror);
//!   everything else is HTTPS with the system's root certificates.
//! - A blob may be redirected to storage on another host (S3 presigned
//!   URLs): the registry's `Authorization` is sent to the registry only,
//!   and URLs appear in messages without their query (the signature).
//! - Blob uploads ([`super::blob`]) stream their bodies, so an upload
//!   request is tried once here (`exchange_once`); the push resumes
//!   it from where the registry stands instead of sending it blind again.

use super::credentials::{self, IDENTITY_TOKEN_USER, Source};
use super::retry::{Failure, Retries, is_transient_status};
use super::{
    Login, MANIFEST_MEDIA_TYPES, Manifest, Missing, PushAuth, REVISION_LABEL, Tag, Target,
    digest_of,
};
use crate::error::{Error, Result};
use crate::secret::Secret;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::{HashMap, HashSet};
use std::error::Error as StdError;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

/// How long a TCP (and TLS) connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one whole exchange (request, answer and body) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one upload request (`PATCH`, a chunk or a whole streamed blob)
/// may take: a 90 MiB chunk at 1 MB/s, with room.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(3600);
/// The largest body hoist reads: manifests are at most 4 MiB by the spec,
/// and configs are small; a layer asked for by mistake must not fill memory.
const MAX_BODY: usize = 32 << 20;
/// How many redirects a blob may take.
pub(super) const MAX_REDIRECTS: usize = 5;
/// The page size asked of a tag list (`?n=`); registries may serve fewer.
const TAGS_PAGE: u32 = 1000;

/// A request body: whole bytes, or a blob streamed as it is compressed.
pub(crate) type Body = BoxBody<Bytes, Box<dyn StdError + Send + Sync>>;

type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// A whole body.
pub(super) fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// A registry spoken to through the OCI distribution API.
pub struct Oci {
    pub(super) target: Target,
    /// `https://host` (or `http://host` on loopback).
    pub(super) base: String,
    login: Option<(Login, Source)>,
    /// The credential helper the Docker config names for this host but
    /// this machine lacks: said when the registry asks for a login.
    missing_helper: Option<credentials::MissingHelper>,
    /// Boxed: the client is large, and [`super::Registry`] holds an `Oci`
    /// by value.
    client: Box<HttpClient>,
    auth: Mutex<AuthCache>,
    pub(crate) retries: Retries,
    /// `n` of a tag list request: [`TAGS_PAGE`], smaller in tests.
    page_size: u32,
}

impl fmt::Debug for Oci {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Oci")
            .field("base", &self.base)
            .field("user", &self.login.as_ref().map(|(l, _)| &l.username))
            .field("retries", &self.retries.count())
            .finish_non_exhaustive()
    }
}

/// What earlier challenges taught: the registry wants Basic, or these
/// bearer tokens (keyed by [`Access::scope`]).
#[derive(Default)]
struct AuthCache {
    basic: bool,
    tokens: HashMap<String, Secret>,
}

#[derive(Clone)]
pub(super) enum Auth {
    Basic(Login),
    Bearer(Secret),
}

impl Auth {
    /// The `Authorization` value, marked sensitive (hyper leaves it out of
    /// its `Debug`).
    fn header(&self) -> Result<HeaderValue> {
        let text = match self {
            Auth::Basic(login) => {
                let pair = format!("{}:{}", login.username, login.password.expose());
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }
            Auth::Bearer(token) => format!("Bearer {}", token.expose()),
        };
        let mut value = HeaderValue::from_str(&text).map_err(|_| {
            Error::failed("the registry credentials contain characters an HTTP header cannot carry")
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// What a request does to a repository, for the token's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    Pull,
    Push,
    /// Distribution's token auth asks for `delete` on a DELETE, apart
    /// from `push`.
    Delete,
}

impl Access {
    fn scope(self, repository: &str) -> String {
        match self {
            Access::Pull => format!("repository:{repository}:pull"),
            Access::Push => format!("repository:{repository}:pull,push"),
            Access::Delete => format!("repository:{repository}:delete"),
        }
    }
}

/// An answer, its body read whole.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

impl Reply {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `404 Not Found: MANIFEST_UNKNOWN: manifest unknown`.
    pub(super) fn describe(&self) -> String {
        format!("{}: {}", self.status, registry_error(&self.body))
    }

    pub(super) fn error_codes(&self) -> Vec<String> {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|json| {
                let errors = json.get("errors")?.as_array()?.clone();
                Some(
                    errors
                        .iter()
                        .filter_map(|e| Some(e.get("code")?.as_str()?.to_string()))
                        .collect(),
                )
            })
            .unwrap_or_default()
    }
}

impl Oci {
    /// A client for `target`, with the login that [`credentials`] finds for
    /// its host. Opens no connection yet.
    pub fn connect(target: &Target, env: &dyn Fn(&str) -> Option<String>) -> Result<Oci> {
        let lookup = credentials::lookup(&target.host, env)?;
        let client = http_client(target)?;
        let scheme = if target.is_loopback() {
            "http"
        } else {
            "https"
        };
        Ok(Oci {
            target: target.clone(),
            base: format!("{scheme}://{}", target.host),
            login: lookup.found,
            missing_helper: lookup.missing_helper,
            client: Box::new(client),
            auth: Mutex::new(AuthCache::default()),
            retries: Retries::default(),
            page_size: TAGS_PAGE,
        })
    }

    /// A client for `target` that logs in with `login` from `source`
    /// (ECR's registry endpoint, with the token of `GetAuthorizationToken`).
    pub fn with_login(target: &Target, login: Login, source: Source) -> Result<Oci> {
        let mut oci = Oci::connect(target, &|_| None)?;
        oci.login = Some((login, source));
        oci.missing_helper = None;
        Ok(oci)
    }

    /// The same client with other retries (tests use a short backoff).
    pub fn with_retries(mut self, retries: Retries) -> Oci {
        self.retries = retries;
        self
    }

    /// The same client asking for tag lists in pages of `n` tags (tests
    /// page through a few tags; the default is [`TAGS_PAGE`]).
    pub fn with_page_size(mut self, n: u32) -> Oci {
        self.page_size = n.max(1);
        self
    }

    /// The registry host, `host[:port]`.
    pub fn host(&self) -> &str {
        &self.target.host
    }

    /// The login in use, if any, and where it came from.
    pub fn login(&self) -> Option<(&Login, &Source)> {
        self.login.as_ref().map(|(l, s)| (l, s))
    }

    /// The engine does its own token exchange with the login.
    pub async fn push_auth(&self) -> Result<PushAuth> {
        Ok(PushAuth {
            server: self.target.host.clone(),
            login: self.login.as_ref().map(|(l, _)| l.clone()),
        })
    }

    /// OCI registries create a repository on the first push: nothing to do.
    pub async fn ensure_repository(
        &self,
        _repository: &str,
        _missing: Missing,
    ) -> Result<Option<String>> {
        Ok(None)
    }

    /// The manifest `repository:tag` names, exactly as served, or `None`
    /// when the tag (or the repository) does not exist.
    pub async fn manifest(&self, repository: &str, tag: &str) -> Result<Option<Manifest>> {
        self.get_manifest(repository, tag).await
    }

    /// Writes `manifest`'s exact bytes under `repository:tag` and checks
    /// that the registry stored them under the same digest.
    pub async fn put_manifest(
        &self,
        repository: &str,
        tag: &str,
        manifest: &Manifest,
    ) -> Result<()> {
        let name = self.name(repository, tag);
        if manifest.digest.starts_with("sha256:") && manifest.digest != digest_of(&manifest.bytes) {
            return Err(Error::failed(format!(
                "refusing to write {name}: the manifest's bytes are not {}",
                manifest.digest
            )));
        }
        let reply = self
            .send(
                Method::PUT,
                repository,
                Access::Push,
                &format!("/v2/{repository}/manifests/{tag}"),
                &[("content-type", manifest.media_type.clone())],
                manifest.bytes.clone(),
            )
            .await?;
        if !reply.status.is_success() {
            let error = Error::failed(format!("cannot write the manifest {name}"))
                .caused_by(reply.describe());
            let codes = reply.error_codes();
            return Err(if codes.iter().any(|c| c == "MANIFEST_BLOB_UNKNOWN") {
                error.hint(format!(
                    "{repository} does not hold the image's blobs: push the image to it first"
                ))
            } else {
                error
            });
        }
        match reply.header("docker-content-digest") {
            Some(stored) if stored != manifest.digest => Err(Error::failed(format!(
                "{} stored {name} as {stored}, not {}",
                self.target.host, manifest.digest
            ))),
            _ => Ok(()),
        }
    }

    /// The commit an image was built from: the [`REVISION_LABEL`] of its
    /// config. For an index, of its first platform image (attestations,
    /// `unknown/unknown`, are skipped). `None` without a label or config.
    pub async fn revision(&self, repository: &str, manifest: &Manifest) -> Result<Option<String>> {
        let mut image = manifest.clone();
        // An index that names an index is legal, though rare; two levels
        // are as deep as hoist looks.
        for _ in 0..2 {
            if !is_index(&image) {
                break;
            }
            let Some(child) = platform_entry(&image.bytes) else {
                return Ok(None);
            };
            image = self
                .get_manifest(repository, &child)
                .await?
                .ok_or_else(|| {
                    Error::failed(format!(
                        "{} lists {child}, which {} does not have",
                        self.name(repository, &image.digest),
                        self.target.host
                    ))
                })?;
        }
        if is_index(&image) {
            return Ok(None);
        }
        let Some(config) = image.config_digest() else {
            return Ok(None);
        };
        let blob = self.blob(repository, &config).await?;
        Ok(revision_label(&blob))
    }

    /// Every tag of the repository, sorted by name: `GET
    /// /v2/<repo>/tags/list?n=…`, then each page the `Link: <…>;
    /// rel="next"` header names. An unknown repository (404 with a
    /// registry error, `NAME_UNKNOWN`) has no tags: these registries make a
    /// repository on the first push. The list gives names only.
    pub async fn tags(&self, repository: &str) -> Result<Vec<Tag>> {
        let mut path = format!("/v2/{repository}/tags/list?n={}", self.page_size);
        let mut seen = HashSet::new();
        let mut names: Vec<String> = Vec::new();
        let what = || format!("the tags of {}/{repository}", self.target.host);
        loop {
            seen.insert(path.clone());
            let reply = self
                .send(
                    Method::GET,
                    repository,
                    Access::Pull,
                    &path,
                    &[],
                    Bytes::new(),
                )
                .await?;
            match reply.status.as_u16() {
                200 => {}
                // As for a manifest: a registry says what is unknown in a
                // JSON error; an HTML 404 is something else answering.
                404 if names.is_empty()
                    && (reply.body.is_empty() || !reply.error_codes().is_empty()) =>
                {
                    return Ok(Vec::new());
                }
                _ => {
                    return Err(Error::failed(format!("cannot list {}", what()))
                        .caused_by(format!("GET {path}: {}", reply.describe())));
                }
            }
            let page: serde_json::Value = serde_json::from_slice(&reply.body).map_err(|e| {
                Error::failed(format!("cannot list {}", what()))
                    .caused_by(format!("GET {path}: the answer is not JSON: {e}"))
            })?;
            // A repository whose tags were all removed lists `null`.
            match page.get("tags") {
                Some(serde_json::Value::Array(tags)) => {
                    for tag in tags {
                        let name = tag.as_str().ok_or_else(|| {
                            Error::failed(format!("cannot list {}", what()))
                                .caused_by(format!("GET {path}: a tag that is not a string: {tag}"))
                        })?;
                        names.push(name.to_string());
                    }
                }
                Some(serde_json::Value::Null) | None => {}
                Some(other) => {
                    return Err(Error::failed(format!("cannot list {}", what()))
                        .caused_by(format!("GET {path}: `tags` is {other}, not a list")));
                }
            }
            let Some(link) = reply.header("link").and_then(next_link) else {
                break;
            };
            let current = format!("{}{path}", self.base);
            let next = resolve(&current, &link)
                .filter(|url| same_origin(url, &self.base))
                .and_then(|url| url.strip_prefix(&self.base).map(str::to_string))
                .filter(|next| next.starts_with('/'))
                // The login is for this registry: a next page elsewhere is
                // not followed with it.
                .ok_or_else(|| {
                    Error::failed(format!("cannot list {}", what())).caused_by(format!(
                        "the next page is on another host: {}",
                        redact(&link)
                    ))
                })?;
            if seen.contains(&next) {
                return Err(Error::failed(format!("cannot list {}", what()))
                    .caused_by(format!("the pages loop: {next} was served already")));
            }
            path = next;
        }
        names.sort();
        names.dedup();
        Ok(names
            .into_iter()
            .map(|name| Tag {
                name,
                digest: None,
                pushed_at: None,
            })
            .collect())
    }

    /// Removes `tag` alone with `DELETE /v2/<repo>/manifests/<tag>`, which
    /// the distribution spec lets a registry support or refuse; never by
    /// digest, which would take every tag of the manifest with it.
    ///
    /// A tag that does not resolve is gone already: `true` without a
    /// DELETE. A refusal is `false`: 400 (distribution 2.8 reads the
    /// reference as a digest and answers `DIGEST_INVALID`), 405 (its answer
    /// with deletes off) or an `UNSUPPORTED` code with any status. After an accepted DELETE (or a 404) the tag is read again,
    /// because only a tag that no longer resolves is gone: a registry that
    /// answers a tag with "manifest unknown" may have looked it up as a
    /// digest and left it in place.
    pub async fn delete_tag(&self, repository: &str, tag: &str) -> Result<bool> {
        if self.get_manifest(repository, tag).await?.is_none() {
            return Ok(true);
        }
        let reply = self
            .send(
                Method::DELETE,
                repository,
                Access::Delete,
                &format!("/v2/{repository}/manifests/{tag}"),
                &[],
                Bytes::new(),
            )
            .await?;
        let codes = reply.error_codes();
        if codes.iter().any(|c| c == "UNSUPPORTED") {
            return Ok(false);
        }
        match reply.status.as_u16() {
            200 | 202 | 204 => {}
            404 if codes
                .iter()
                .any(|c| c == "MANIFEST_UNKNOWN" || c == "NAME_UNKNOWN") => {}
            400 | 405 => return Ok(false),
            _ => {
                return Err(Error::failed(format!(
                    "cannot remove the tag {}",
                    self.name(repository, tag)
                ))
                .caused_by(reply.describe()));
            }
        }
        Ok(self.get_manifest(repository, tag).await?.is_none())
    }

    /// The distribution API does not say when a manifest was pushed.
    pub async fn pushed_at(&self, _repository: &str, _digest: &str) -> Result<Option<String>> {
        Ok(None)
    }

    /// How many exchanges were retried so far.
    pub fn retries(&self) -> u32 {
        self.retries.count()
    }

    /// `host/repository:tag`, or `host/repository@digest`.
    pub(super) fn name(&self, repository: &str, reference: &str) -> String {
        let separator = if reference.contains(':') { '@' } else { ':' };
        format!("{}/{repository}{separator}{reference}", self.target.host)
    }

    async fn get_manifest(&self, repository: &str, reference: &str) -> Result<Option<Manifest>> {
        let name = self.name(repository, reference);
        let reply = self
            .send(
                Method::GET,
                repository,
                Access::Pull,
                &format!("/v2/{repository}/manifests/{reference}"),
                &[("accept", MANIFEST_MEDIA_TYPES.join(", "))],
                Bytes::new(),
            )
            .await?;
        match reply.status.as_u16() {
            200 => {}
            // A registry says which thing is unknown in a JSON error body;
            // an HTML 404 is something else answering (a wrong host).
            404 if reply.body.is_empty() || !reply.error_codes().is_empty() => return Ok(None),
            _ => {
                return Err(Error::failed(format!("cannot read the manifest {name}"))
                    .caused_by(reply.describe()));
            }
        }
        let computed = digest_of(&reply.body);
        let digest = match reply.header("docker-content-digest") {
            Some(reported) if reported.starts_with("sha256:") && reported != computed => {
                return Err(Error::failed(format!(
                    "{} says {name} is {reported}, but its bytes are {computed}",
                    self.target.host
                )));
            }
            Some(reported) => reported.to_string(),
            None => computed.clone(),
        };
        if reference.starts_with("sha256:") && reference != computed {
            return Err(Error::failed(format!(
                "{} served other bytes for {name} ({computed})",
                self.target.host
            )));
        }
        let media_type = match reply.header("content-type") {
            Some(value) => value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
            None => String::new(),
        };
        let media_type = if media_type.is_empty() || media_type == "application/json" {
            serde_json::from_slice::<serde_json::Value>(&reply.body)
                .ok()
                .and_then(|json| json.get("mediaType")?.as_str().map(str::to_string))
                .unwrap_or(media_type)
        } else {
            media_type
        };
        Ok(Some(Manifest {
            digest,
            media_type,
            bytes: reply.body,
        }))
    }

    /// A blob's bytes as they arrive, from `offset` on (`Range`), for
    /// blobs too large to hold: its size (the whole blob's) and the body.
    /// Follows redirects to storage, without the registry's credentials
    /// there. The caller checks the digest.
    pub async fn blob_stream(
        &self,
        repository: &str,
        digest: &str,
        offset: u64,
    ) -> Result<(u64, hyper::body::Incoming)> {
        let what = || format!("the blob {digest} of {}/{repository}", self.target.host);
        // The token for the repository comes from a HEAD through `send`,
        // which answers the registry's challenge.
        let size = self.has_blob(repository, digest).await?.ok_or_else(|| {
            Error::failed(format!("cannot read {}", what()))
                .caused_by("the registry does not hold it")
        })?;
        let mut url = format!("{}/v2/{repository}/blobs/{digest}", self.base);
        let range = [("range", format!("bytes={offset}-"))];
        let headers: &[(&str, String)] = if offset > 0 { &range } else { &[] };
        for _ in 0..=MAX_REDIRECTS {
            let auth = if same_origin(&url, &self.base) {
                self.cached_auth(repository, Access::Pull)
            } else {
                None
            };
            let response = self
                .open(&Method::GET, &url, headers, auth.as_ref())
                .await?;
            let status = response.status();
            if status.is_redirection() {
                let next = response
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|location| resolve(&url, location));
                url = next.ok_or_else(|| {
                    Error::failed(format!("cannot read {}", what()))
                        .caused_by(format!("a {status} without a usable Location"))
                })?;
                continue;
            }
            let expected = if offset > 0 { 206 } else { 200 };
            if status.as_u16() != expected {
                return Err(Error::failed(format!("cannot read {}", what()))
                    .caused_by(format!("{} answered {status}", redact(&url))));
            }
            return Ok((size, response.into_body()));
        }
        Err(Error::failed(format!("cannot read {}", what()))
            .caused_by(format!("more than {MAX_REDIRECTS} redirects")))
    }

    /// One request whose answer's body is left to the caller to read.
    async fn open(
        &self,
        method: &Method,
        url: &str,
        headers: &[(&str, String)],
        auth: Option<&Auth>,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        let what = format!("{method} {}", redact(url));
        let uri: Uri = url
            .parse()
            .map_err(|e| Error::failed(format!("invalid URL in {what}")).caused_by(e))?;
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header("user-agent", concat!("hoist/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            builder = builder.header(*name, value.as_str());
        }
        if let Some(auth) = auth {
            builder = builder.header("authorization", auth.header()?);
        }
        let request = builder
            .body(full(Bytes::new()))
            .map_err(|e| Error::failed(format!("cannot make {what}")).caused_by(e))?;
        match tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(
                Error::failed(format!("cannot reach {} ({what})", self.target.host))
                    .caused_by(chain(&e)),
            ),
            Err(_) => Err(
                Error::failed(format!("{} did not answer {what}", self.target.host))
                    .caused_by(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())),
            ),
        }
    }

    /// A blob's bytes, checked against its digest, following redirects (to
    /// other hosts without the registry's credentials).
    pub(crate) async fn blob(&self, repository: &str, digest: &str) -> Result<Bytes> {
        let path = format!("/v2/{repository}/blobs/{digest}");
        let mut url = format!("{}{path}", self.base);
        let mut reply = self
            .send(
                Method::GET,
                repository,
                Access::Pull,
                &path,
                &[],
                Bytes::new(),
            )
            .await?;
        let what = || format!("the blob {digest} of {}/{repository}", self.target.host);
        for _ in 0..=MAX_REDIRECTS {
            match reply.status.as_u16() {
                200 => {
                    if digest.starts_with("sha256:") && digest_of(&reply.body) != digest {
                        return Err(Error::failed(format!(
                            "{} has other bytes than its digest says (from {})",
                            what(),
                            redact(&url)
                        )));
                    }
                    return Ok(reply.body);
                }
                301 | 302 | 303 | 307 | 308 => {
                    let location = reply.header("location").ok_or_else(|| {
                        Error::failed(format!("cannot read {}", what()))
                            .caused_by(format!("a {} without a Location", reply.status))
                    })?;
                    url = resolve(&url, location).ok_or_else(|| {
                        Error::failed(format!("cannot read {}", what()))
                            .caused_by(format!("a redirect to {}", redact(location)))
                    })?;
                    reply = self
                        .send_to(
                            Method::GET,
                            repository,
                            Access::Pull,
                            &url,
                            &[],
                            Bytes::new(),
                        )
                        .await?;
                }
                _ => {
                    return Err(Error::failed(format!("cannot read {}", what()))
                        .caused_by(format!("{} answered {}", redact(&url), reply.describe())));
                }
            }
        }
        Err(Error::failed(format!("cannot read {}", what()))
            .caused_by(format!("more than {MAX_REDIRECTS} redirects")))
    }

    /// A request to an absolute `url`: through [`Oci::send`] (the login,
    /// challenges answered) on the registry's own origin; without the
    /// registry's credentials anywhere else (storage behind it, an upload
    /// location on another host).
    pub(super) async fn send_to(
        &self,
        method: Method,
        repository: &str,
        access: Access,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Reply> {
        match url.strip_prefix(&self.base) {
            Some(path) if same_origin(url, &self.base) => {
                self.send(method, repository, access, path, headers, body)
                    .await
            }
            _ => self.exchange(&method, url, headers, &body, None).await,
        }
    }

    /// One request to the registry, answering an auth challenge once.
    pub(super) async fn send(
        &self,
        method: Method,
        repository: &str,
        access: Access,
        path: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Reply> {
        let url = format!("{}{path}", self.base);
        let cached = self.cached_auth(repository, access);
        let reply = self
            .exchange(&method, &url, headers, &body, cached.as_ref())
            .await?;
        match reply.status.as_u16() {
            401 => {}
            403 => return Err(self.refused(&reply, repository)),
            _ => return Ok(reply),
        }
        let challenges: Vec<Challenge> = reply
            .headers
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_challenges)
            .collect();
        let auth = self.authenticate(&challenges, repository, access).await?;
        let reply = self
            .exchange(&method, &url, headers, &body, Some(&auth))
            .await?;
        match reply.status.as_u16() {
            401 | 403 => Err(self.refused(&reply, repository)),
            _ => Ok(reply),
        }
    }

    pub(super) fn cached_auth(&self, repository: &str, access: Access) -> Option<Auth> {
        let cache = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        if cache.basic {
            return self.login.as_ref().map(|(l, _)| Auth::Basic(l.clone()));
        }
        let mut scopes = vec![access.scope(repository)];
        if access == Access::Pull {
            scopes.push(Access::Push.scope(repository));
        }
        scopes
            .iter()
            .find_map(|scope| cache.tokens.get(scope))
            .map(|token| Auth::Bearer(token.clone()))
    }

    /// Answers a 401's challenges: Basic with the login, Bearer with a
    /// token from the realm.
    async fn authenticate(
        &self,
        challenges: &[Challenge],
        repository: &str,
        access: Access,
    ) -> Result<Auth> {
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let realm = bearer.param("realm").ok_or_else(|| {
                Error::failed(format!(
                    "{} asks for a bearer token without saying where to get one (no realm)",
                    self.target.host
                ))
            })?;
            let scope = bearer
                .param("scope")
                .map(str::to_string)
                .unwrap_or_else(|| access.scope(repository));
            let token = self
                .fetch_token(realm, bearer.param("service"), &scope, repository)
                .await?;
            let mut cache = self.auth.lock().unwrap_or_else(|e| e.into_inner());
            cache.tokens.insert(access.scope(repository), token.clone());
            return Ok(Auth::Bearer(token));
        }
        let basic = challenges.iter().any(|c| c.scheme == "basic");
        if basic || challenges.is_empty() {
            let Some((login, _)) = &self.login else {
                return Err(self.no_login(repository));
            };
            self.auth.lock().unwrap_or_else(|e| e.into_inner()).basic = true;
            return Ok(Auth::Basic(login.clone()));
        }
        let schemes: Vec<&str> = challenges.iter().map(|c| c.scheme.as_str()).collect();
        Err(Error::failed(format!(
            "{} asks for authentication hoist does not speak ({})",
            self.target.host,
            schemes.join(", ")
        ))
        .hint("hoist speaks Basic and Bearer token authentication"))
    }

    /// A bearer token from the token service at `realm`: with the login as
    /// Basic (or, for an identity token, as an OAuth2 refresh token), or
    /// anonymously without one.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        repository: &str,
    ) -> Result<Secret> {
        let login = self.login.as_ref().map(|(l, _)| l);
        let realm_uri: Uri = realm.parse().map_err(|_| {
            Error::failed(format!(
                "{} names an invalid token service: {}",
                self.target.host,
                redact(realm)
            ))
        })?;
        let realm_host = realm_uri.authority().map(|a| a.to_string());
        let plain_http = realm_uri.scheme_str() == Some("http");
        let loopback = realm_host.as_ref().is_some_and(|host| {
            Target {
                host: host.clone(),
                prefix: String::new(),
            }
            .is_loopback()
        });
        if login.is_some() && plain_http && !loopback {
            return Err(Error::failed(format!(
                "{} sends hoist to a token service over plain HTTP ({}); hoist will not send the login there",
                self.target.host,
                redact(realm)
            )));
        }
        let mut form = vec![("scope", scope.to_string())];
        if let Some(service) = service {
            form.insert(0, ("service", service.to_string()));
        }
        let reply = match login {
            Some(login) if login.username == IDENTITY_TOKEN_USER => {
                form.push(("grant_type", "refresh_token".to_string()));
                form.push(("client_id", "hoist".to_string()));
                form.push(("refresh_token", login.password.expose().to_string()));
                let body = Bytes::from(encode_form(&form));
                let headers = [(
                    "content-type",
                    "application/x-www-form-urlencoded".to_string(),
                )];
                self.exchange(&Method::POST, realm, &headers, &body, None)
                    .await?
            }
            _ => {
                let separator = if realm.contains('?') { '&' } else { '?' };
                let url = format!("{realm}{separator}{}", encode_form(&form));
                let auth = login.map(|l| Auth::Basic(l.clone()));
                self.exchange(&Method::GET, &url, &[], &Bytes::new(), auth.as_ref())
                    .await?
            }
        };
        match reply.status.as_u16() {
            200 => {}
            401 | 403 => return Err(self.refused(&reply, repository)),
            _ => {
                return Err(Error::failed(format!(
                    "the token service of {} ({}) did not give a token",
                    self.target.host,
                    redact(realm)
                ))
                .caused_by(reply.describe()));
            }
        }
        let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        ["token", "access_token"]
            .iter()
            .find_map(|key| json.get(key)?.as_str().filter(|t| !t.is_empty()))
            .map(Secret::new)
            .ok_or_else(|| {
                Error::failed(format!(
                    "the token service of {} ({}) answered without a token",
                    self.target.host,
                    redact(realm)
                ))
            })
    }

    /// The error for a 401 or 403 the registry (or its token service)
    /// holds to.
    fn refused(&self, reply: &Reply, repository: &str) -> Error {
        let Some((login, source)) = &self.login else {
            return self.no_login(repository).caused_by(reply.describe());
        };
        let who = if login.username == IDENTITY_TOKEN_USER {
            "the identity token".to_string()
        } else {
            format!("the credentials of user {}", login.username)
        };
        let key = credentials::host_key(&self.target.host);
        let hint = match source {
            Source::Environment | Source::HostEnvironment { .. } => format!(
                "check {} (hoist takes them before the Docker config)",
                source.describe()
            ),
            _ => format!(
                "check the login from {} (HOIST_REGISTRY_USER_{key}/HOIST_REGISTRY_PASSWORD_{key}, \
                 then HOIST_REGISTRY_USER/HOIST_REGISTRY_PASSWORD, come before it when set)",
                source.describe()
            ),
        };
        Error::failed(format!("{} rejected {who}", self.target.host))
            .caused_by(format!("for {repository}: {}", reply.describe()))
            .hint(hint)
    }

    fn no_login(&self, repository: &str) -> Error {
        let host = &self.target.host;
        let mut error = Error::failed(format!(
            "{host} requires a login for {repository}, and hoist has none"
        ));
        if let Some(missing) = &self.missing_helper {
            error = error.caused_by(format!(
                "the credential helper {}",
                crate::ci::one_line(&missing.describe())
            ));
        }
        let key = credentials::host_key(host);
        error.hint(format!(
            "set HOIST_REGISTRY_USER_{key} and HOIST_REGISTRY_PASSWORD_{key} (this host's login; \
             HOIST_REGISTRY_USER/HOIST_REGISTRY_PASSWORD serve only the --registry of a command), \
             or run `docker login {host}` so that the Docker config ($DOCKER_CONFIG/config.json, \
             else ~/.docker/config.json, or its credential helper) has a login for it"
        ))
    }

    /// One HTTP exchange, retried while it fails transiently; any answer
    /// that is not a transient status comes back as it is.
    pub(super) async fn exchange(
        &self,
        method: &Method,
        url: &str,
        headers: &[(&str, String)],
        body: &Bytes,
        auth: Option<&Auth>,
    ) -> Result<Reply> {
        self.retries
            .run(|| self.exchange_once(method, url, headers, full(body.clone()), auth))
            .await
    }

    /// One HTTP exchange, tried once: a transient status, a cut or refused
    /// connection and a timeout are [`Failure::Transient`].
    pub(super) async fn exchange_once(
        &self,
        method: &Method,
        url: &str,
        headers: &[(&str, String)],
        body: Body,
        auth: Option<&Auth>,
    ) -> std::result::Result<Reply, Failure> {
        let what = format!("{method} {}", redact(url));
        let uri: Uri = url
            .parse()
            .map_err(|e| Error::failed(format!("invalid URL in {what}")).caused_by(e))?;
        let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let authorization = auth.map(Auth::header).transpose()?;
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header("user-agent", concat!("hoist/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            builder = builder.header(*name, value.as_str());
        }
        if let Some(value) = &authorization {
            builder = builder.header("authorization", value.clone());
        }
        let request = builder.body(body).map_err(|e| {
            Failure::Permanent(Error::failed(format!("cannot make {what}")).caused_by(e))
        })?;
        let unreachable = |error: &(dyn StdError + 'static)| {
            let failure = Error::failed(format!("cannot reach {host} ({what})"))
                .caused_by(chain(error))
                .hint(format!(
                    "check that the registry {host} is up and reachable from here"
                ));
            if is_transient_error(error) {
                Failure::Transient(failure)
            } else {
                Failure::Permanent(failure)
            }
        };
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| unreachable(&e))?;
            let (parts, incoming) = response.into_parts();
            let body = Limited::new(incoming, MAX_BODY)
                .collect()
                .await
                .map_err(|e| unreachable(&*e))?
                .to_bytes();
            Ok::<Reply, Failure>(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        // A streamed blob may take long: its own upload bounds it.
        let limit = if method == Method::PATCH {
            UPLOAD_TIMEOUT
        } else {
            REQUEST_TIMEOUT
        };
        let reply = match tokio::time::timeout(limit, exchange).await {
            Ok(reply) => reply?,
            Err(_) => {
                return Err(Failure::Transient(
                    Error::failed(format!("{host} did not answer {what}"))
                        .caused_by(format!("no answer within {} s", limit.as_secs())),
                ));
            }
        };
        if is_transient_status(reply.status.as_u16()) {
            return Err(Failure::Transient(
                Error::failed(format!("{host} answered {} to {what}", reply.status))
                    .caused_by(registry_error(&reply.body)),
            ));
        }
        Ok(reply)
    }
}

/// The HTTP client: HTTPS with the system's roots, or plain HTTP (and no
/// roots) for a loopback registry; HTTP/1.
fn http_client(target: &Target) -> Result<HttpClient> {
    let tls_peer = (!target.is_loopback()).then_some(target.host.as_str());
    let connector = crate::https::connector(tls_peer, CONNECT_TIMEOUT)?;
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// Whether a failed exchange is worth another try: a refused, reset or cut
/// connection, or a timeout. DNS and TLS failures are not.
fn is_transient_error(error: &(dyn StdError + 'static)) -> bool {
    use std::io::ErrorKind::*;
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | BrokenPipe
                    | UnexpectedEof
                    | TimedOut
                    | NotConnected
            )
        {
            return true;
        }
        // An `io::Error` wrapping another error hides it from `source()`.
        if let Some(inner) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            current = Some(inner);
            continue;
        }
        if let Some(hyper) = error.downcast_ref::<hyper::Error>()
            && (hyper.is_incomplete_message()
                || hyper.is_canceled()
                || hyper.is_closed()
                || hyper.is_timeout())
        {
            return true;
        }
        current = error.source();
    }
    false
}

/// An error and its sources, as one line.
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(error) = current {
        let text = error.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        current = error.source();
    }
    parts.join(": ")
}

/// The registry's `errors[].code/message`, else the start of the body.
pub(super) fn registry_error(body: &[u8]) -> String {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(errors) = json.get("errors").and_then(|e| e.as_array())
    {
        let text: Vec<String> = errors
            .iter()
            .map(|e| {
                let field = |key: &str| e.get(key).and_then(|v| v.as_str()).unwrap_or_default();
                match (field("code"), field("message")) {
                    ("", message) => message.to_string(),
                    (code, "") => code.to_string(),
                    (code, message) => format!("{code}: {message}"),
                }
            })
            .collect();
        if !text.is_empty() {
            return text.join("; ");
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.chars().count() {
        0 => "(no body)".to_string(),
        n if n > 200 => format!("{}…", text.chars().take(200).collect::<String>()),
        _ => text,
    }
}

/// A URL without its query (presigned URLs carry signatures there).
pub(super) fn redact(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// `(scheme, host, port)` of an absolute URL, lower-cased, with the
/// default port filled in.
fn origin(url: &str) -> Option<(String, String, u16)> {
    let uri: Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    Some((
        scheme,
        uri.host()?.to_ascii_lowercase(),
        uri.port_u16().unwrap_or(default),
    ))
}

pub(super) fn same_origin(a: &str, b: &str) -> bool {
    origin(a).is_some_and(|a| origin(b) == Some(a))
}

/// A `Location` resolved against the URL that answered with it.
pub(super) fn resolve(base: &str, location: &str) -> Option<String> {
    if origin(location).is_some() {
        return Some(location.to_string());
    }
    let (scheme, rest) = base.split_once("://")?;
    if let Some(authority_path) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{authority_path}"));
    }
    let authority = rest.split('/').next()?;
    if location.starts_with('/') {
        return Some(format!("{scheme}://{authority}{location}"));
    }
    let path = redact(rest)[authority.len()..].to_string();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let dir = if dir.is_empty() { "/" } else { dir };
    Some(format!("{scheme}://{authority}{dir}{location}"))
}

/// The target of the `rel="next"` link of a `Link` header (RFC 8288:
/// `<uri>; rel="next"`, links separated by commas, `rel` possibly listing
/// several relations).
fn next_link(header: &str) -> Option<String> {
    let mut rest = header;
    while let Some(start) = rest.find('<') {
        let end = start + rest[start..].find('>')?;
        let uri = &rest[start + 1..end];
        let params_end = rest[end..].find('<').map_or(rest.len(), |i| end + i);
        let params = &rest[end + 1..params_end];
        let is_next = params.split(';').any(|param| {
            let Some((name, value)) = param.split_once('=') else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("rel")
                && value
                    .trim()
                    .trim_end_matches(',')
                    .trim()
                    .trim_matches('"')
                    .split_whitespace()
                    .any(|rel| rel.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(uri.to_string());
        }
        rest = &rest[params_end..];
    }
    None
}

/// `application/x-www-form-urlencoded` (also a query string).
fn encode_form(pairs: &[(&str, String)]) -> String {
    let encode = |text: &str| {
        let mut out = String::with_capacity(text.len());
        for byte in text.bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                out.push(byte as char);
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn is_index(manifest: &Manifest) -> bool {
    manifest.is_index()
        || serde_json::from_slice::<serde_json::Value>(&manifest.bytes)
            .is_ok_and(|json| json.get("manifests").is_some_and(|m| m.is_array()))
}

/// The digest of an index's first platform image: entries for
/// `unknown/unknown` (BuildKit's attestations) are skipped.
pub fn platform_entry(index: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(index).ok()?;
    json.get("manifests")?
        .as_array()?
        .iter()
        .find(|entry| {
            let platform = |key: &str| {
                entry
                    .get("platform")
                    .and_then(|p| p.get(key))
                    .and_then(|v| v.as_str())
            };
            let unknown =
                platform("os") == Some("unknown") && platform("architecture") == Some("unknown");
            let attestation = entry
                .get("annotations")
                .and_then(|a| a.get("vnd.docker.reference.type"))
                .and_then(|v| v.as_str())
                == Some("attestation-manifest");
            !unknown && !attestation
        })
        .and_then(|entry| entry.get("digest")?.as_str().map(str::to_string))
}

/// The [`REVISION_LABEL`] of an image config blob.
pub fn revision_label(config: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(config).ok()?;
    let revision = json
        .get("config")?
        .get("Labels")?
        .get(REVISION_LABEL)?
        .as_str()?
        .trim();
    (!revision.is_empty()).then(|| revision.to_string())
}

/// One challenge of a `WWW-Authenticate` header: the scheme, lower-cased,
/// and its parameters (names lower-cased, values unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a `WWW-Authenticate` value (RFC 9110: challenges separated by
/// commas, each a scheme and `name=value` or `name="quoted, value"`
/// parameters).
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let chars: Vec<char> = header.chars().collect();
    let mut at = 0;
    let mut challenges: Vec<Challenge> = Vec::new();
    let is_delimiter = |c: char| c == ',' || c == '=' || c.is_whitespace();
    let skip_spaces = |at: &mut usize| {
        while *at < chars.len() && chars[*at].is_whitespace() {
            *at += 1;
        }
    };
    while at < chars.len() {
        if chars[at] == ',' || chars[at].is_whitespace() {
            at += 1;
            continue;
        }
        let start = at;
        while at < chars.len() && !is_delimiter(chars[at]) {
            at += 1;
        }
        let token: String = chars[start..at].iter().collect();
        let mut after = at;
        skip_spaces(&mut after);
        let is_param = after < chars.len() && chars[after] == '=' && !token.is_empty();
        if !is_param {
            if token.is_empty() {
                // A stray '=' (the tail of a token68): skip it.
                at += 1;
            } else {
                challenges.push(Challenge {
                    scheme: token.to_ascii_lowercase(),
                    params: Vec::new(),
                });
            }
            continue;
        }
        at = after + 1;
        skip_spaces(&mut at);
        let mut value = String::new();
        if at < chars.len() && chars[at] == '"' {
            at += 1;
            while at < chars.len() && chars[at] != '"' {
                if chars[at] == '\\' && at + 1 < chars.len() {
                    at += 1;
                }
                value.push(chars[at]);
                at += 1;
            }
            at += 1;
        } else {
            while at < chars.len() && chars[at] != ',' && !chars[at].is_whitespace() {
                value.push(chars[at]);
                at += 1;
            }
        }
        if let Some(challenge) = challenges.last_mut() {
            challenge.params.push((token.to_ascii_lowercase(), value));
        }
    }
    challenges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(challenge: &Challenge) -> Vec<(&str, &str)> {
        challenge
            .params
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn parses_challenges() {
        let all = parse_challenges(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].scheme, "bearer");
        assert_eq!(
            params(&all[0]),
            [
                ("realm", "https://auth.example.com/token"),
                ("service", "registry.example.com"),
                ("scope", "repository:a/b:pull,push"),
            ]
        );

        let all = parse_challenges(r#"BASIC Realm="hoist, test", charset=UTF-8"#);
        assert_eq!(all[0].scheme, "basic");
        assert_eq!(
            params(&all[0]),
            [("realm", "hoist, test"), ("charset", "UTF-8")]
        );

        let all = parse_challenges(
            r#"Negotiate abc==, Basic realm="a \"quoted\" realm", bearer realm = "https://t/x?a=1" , service=svc"#,
        );
        let schemes: Vec<&str> = all.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["negotiate", "basic", "bearer"]);
        assert_eq!(all[1].param("realm"), Some(r#"a "quoted" realm"#));
        assert_eq!(all[2].param("realm"), Some("https://t/x?a=1"));
        assert_eq!(all[2].param("service"), Some("svc"));

        assert_eq!(parse_challenges(""), []);
        assert_eq!(parse_challenges("Basic")[0].params, []);
        // Unterminated quotes end the value at the end of the header.
        assert_eq!(
            parse_challenges(r#"Bearer realm="https://x"#)[0].param("realm"),
            Some("https://x")
        );
    }

    #[test]
    fn picks_the_platform_image_of_an_index() {
        let index = br#"{"manifests":[
            {"digest":"sha256:att","platform":{"os":"unknown","architecture":"unknown"}},
            {"digest":"sha256:tagged","annotations":{"vnd.docker.reference.type":"attestation-manifest"}},
            {"digest":"sha256:amd64","platform":{"os":"linux","architecture":"amd64"}},
            {"digest":"sha256:arm64","platform":{"os":"linux","architecture":"arm64"}}]}"#;
        assert_eq!(platform_entry(index).as_deref(), Some("sha256:amd64"));
        assert_eq!(
            platform_entry(br#"{"manifests":[{"digest":"sha256:x"}]}"#).as_deref(),
            Some("sha256:x")
        );
        assert_eq!(platform_entry(br#"{"manifests":[]}"#), None);
        assert_eq!(platform_entry(b"not json"), None);
    }

    #[test]
    fn reads_the_revision_label() {
        let config =
            format!(r#"{{"config":{{"Labels":{{"{REVISION_LABEL}":" abc123 ","x":"y"}}}}}}"#);
        assert_eq!(revision_label(config.as_bytes()).as_deref(), Some("abc123"));
        assert_eq!(revision_label(br#"{"config":{"Labels":null}}"#), None);
        assert_eq!(revision_label(br#"{"config":{}}"#), None);
        assert_eq!(revision_label(b"{}"), None);
    }

    #[test]
    fn renders_registry_errors() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}},{"code":"DENIED"}]}"#;
        assert_eq!(
            registry_error(body),
            "MANIFEST_UNKNOWN: manifest unknown; DENIED"
        );
        assert_eq!(registry_error(b""), "(no body)");
        assert_eq!(
            registry_error(b"<html>\n  <b>bad</b>\n</html>"),
            "<html> <b>bad</b> </html>"
        );
        assert!(registry_error(&[b'x'; 1000]).chars().count() <= 201);
    }

    #[test]
    fn resolves_redirects_and_compares_origins() {
        let base = "https://reg.example.com/v2/a/blobs/sha256:1";
        assert_eq!(
            resolve(base, "https://s3.example.com/b?X-Amz-Signature=s").as_deref(),
            Some("https://s3.example.com/b?X-Amz-Signature=s")
        );
        assert_eq!(
            resolve(base, "/elsewhere?x=1").as_deref(),
            Some("https://reg.example.com/elsewhere?x=1")
        );
        assert_eq!(
            resolve(base, "//cdn.example.com/b").as_deref(),
            Some("https://cdn.example.com/b")
        );
        assert_eq!(
            resolve(base, "sha256:2").as_deref(),
            Some("https://reg.example.com/v2/a/blobs/sha256:2")
        );
        assert!(same_origin(
            "https://Reg.example.com:443/x",
            "https://reg.example.com"
        ));
        assert!(!same_origin(
            "http://reg.example.com/x",
            "https://reg.example.com"
        ));
        assert!(!same_origin(
            "http://127.0.0.1:5001/x",
            "http://127.0.0.1:5000"
        ));
        assert!(!same_origin("not a url", "not a url"));
        assert_eq!(redact("https://s3/b?X-Amz-Signature=s"), "https://s3/b");
    }

    #[test]
    fn finds_the_next_page_link() {
        assert_eq!(
            next_link(r#"</v2/app/tags/list?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/app/tags/list?last=b&n=2")
        );
        assert_eq!(
            next_link(
                r#"<https://r.example.com/v2/a/tags/list?n=1&last=x>; rel="prev", <https://r.example.com/v2/a/tags/list?n=1&last=y>;type="x"; REL=next"#
            )
            .as_deref(),
            Some("https://r.example.com/v2/a/tags/list?n=1&last=y")
        );
        assert_eq!(
            next_link(r#"</a?x=1,2>; rel="last next""#).as_deref(),
            Some("/a?x=1,2")
        );
        assert_eq!(next_link(r#"</v2/a/tags/list?n=1>; rel="prev""#), None);
        assert_eq!(next_link("</unterminated; rel=next"), None);
        assert_eq!(next_link(""), None);
    }

    #[test]
    fn encodes_forms() {
        let form = encode_form(&[
            ("service", "registry.example.com".into()),
            ("scope", "repository:a/b:pull,push".into()),
        ]);
        assert_eq!(
            form,
            "service=registry.example.com&scope=repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }

    #[test]
    fn credentials_stay_out_of_debug_output() {
        let login = Login {
            username: "u".into(),
            password: Secret::new("hunter2"),
        };
        let header = Auth::Basic(login.clone()).header().unwrap();
        assert!(header.is_sensitive());
        assert!(
            !format!("{header:?}").contains("dTpodW50ZXIy"),
            "{header:?}"
        );
        let target = Target::parse("127.0.0.1:1").unwrap();
        let env = |name: &str| match name {
            "HOIST_REGISTRY_USER" => Some("u".to_string()),
            "HOIST_REGISTRY_PASSWORD" => Some("hunter2".to_string()),
            _ => None,
        };
        let oci = Oci::connect(&target, &env).unwrap();
        let debug = format!("{oci:?}");
        assert!(
            !debug.contains("hunter2") && debug.contains("\"u\""),
            "{debug}"
        );
        assert_eq!(oci.base, "http://127.0.0.1:1");
        let remote = Oci::connect(&Target::parse("ghcr.io/org").unwrap(), &env).unwrap();
        assert_eq!(remote.base, "https://ghcr.io");
    }

    #[test]
    fn classifies_connection_errors() {
        use std::io::{Error as IoError, ErrorKind};
        for kind in [
            ErrorKind::ConnectionRefused,
            ErrorKind::ConnectionReset,
            ErrorKind::TimedOut,
        ] {
            assert!(is_transient_error(&IoError::new(kind, "x")), "{kind:?}");
        }
        let wrapped = IoError::other(IoError::new(ErrorKind::ConnectionReset, "reset"));
        assert!(is_transient_error(&wrapped));
        assert!(!is_transient_error(&IoError::new(
            ErrorKind::InvalidData,
            "bad certificate"
        )));
        assert!(!is_transient_error(&IoError::new(
            ErrorKind::NotFound,
            "no such host"
        )));
    }
}
