//! Blob uploads through the OCI distribution API, as named steps (the
//! spec's "pushing blobs", and go-containerregistry's `uploadOne`):
//! [`Oci::has_blob`] (`HEAD`), [`Oci::new_upload`] (`POST`) or
//! [`Oci::mount`] (`POST ?mount=&from=`, from a sibling repository),
//! [`Oci::patch_chunk`] and [`Oci::patch_stream`] (`PATCH`),
//! [`Oci::upload_status`] (`GET` on the upload: where to resume) and
//! [`Oci::commit`] (`PUT ?digest=`); and two steps built on them, for the
//! push and for a copy between registries alike: [`Oci::send_chunk`] (a
//! chunk, resent from where the registry stands) and [`Oci::upload_bytes`]
//! (a small blob from memory).
//!
//! What registries do that the spec leaves open, and how it is met (see
//! `docs/issue-17-facts.md` for the measurements):
//! - Each `PATCH` answers with a new `Location` (distribution keeps the
//!   offset in its `_state` parameter): the next request goes there.
//! - distribution 2.8 ignores `Content-Range`, distribution 3 checks it
//!   against the offset and `Content-Length`: hoist sends both on a chunk.
//! - A `PATCH` without `Content-Type: application/octet-stream` gets a 500
//!   from distribution: it is always set.
//! - ECR answers a `PATCH` with 201 rather than 202 (regclient notes it):
//!   any 2xx is taken.
//! - After a connection is cut inside a body, distribution 2.8 cancels the
//!   upload (`GET` on it then gives 404): the upload starts again. When the
//!   registry saw none of the failed request (a proxy answered 413 or 5xx,
//!   or cut before forwarding), `GET` gives the offset to resume from.
//! - A mount the registry refuses (unknown blob, no access to the other
//!   repository) is answered 202 with an upload, which is then used.
//!
//! `Authorization` is sent to the registry's own origin only; an upload
//! `Location` on another host (storage behind the registry) gets none.

use super::oci::{Access, Body, MAX_REDIRECTS, Oci, Reply, full, redact, resolve, same_origin};
use super::retry::{ATTEMPTS, Failure};
use crate::error::{Error, Result};
use bytes::Bytes;
use hyper::Method;
use std::sync::atomic::{AtomicU64, Ordering};

/// The media type of upload bodies; distribution refuses others with 500.
const OCTET_STREAM: &str = "application/octet-stream";

/// An upload in progress: where to send the next request and how many
/// bytes the registry holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub repository: String,
    /// Absolute URL, from the registry's last `Location`.
    pub url: String,
    /// Bytes the registry has accepted so far.
    pub offset: u64,
}

/// What `POST .../blobs/uploads/` gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// The registry mounted the blob from the other repository (201).
    Mounted,
    /// An upload to send the bytes to (202).
    Upload(Upload),
}

impl Oci {
    /// The blob's size when `repository` holds it (`HEAD` 200, following
    /// redirects to storage), `None` when it does not (404) or when no one
    /// says its size.
    pub async fn has_blob(&self, repository: &str, digest: &str) -> Result<Option<u64>> {
        let path = format!("/v2/{repository}/blobs/{digest}");
        let mut url = format!("{}{path}", self.base);
        let mut reply = self
            .send(
                Method::HEAD,
                repository,
                Access::Pull,
                &path,
                &[],
                Bytes::new(),
            )
            .await?;
        // A registry on object storage redirects a blob to it (307): the
        // size is the storage's answer, not the redirect's empty body.
        for _ in 0..MAX_REDIRECTS {
            if !reply.status.is_redirection() {
                break;
            }
            let Some(next) = reply.header("location").and_then(|l| resolve(&url, l)) else {
                break;
            };
            url = next;
            reply = self
                .send_to(
                    Method::HEAD,
                    repository,
                    Access::Pull,
                    &url,
                    &[],
                    Bytes::new(),
                )
                .await?;
        }
        let size = || reply.header("content-length").and_then(|v| v.parse().ok());
        match reply.status.as_u16() {
            // Without a size hoist cannot describe the blob: it is sent
            // again (an upload of a blob the registry holds is harmless).
            200 => Ok(size()),
            // Storage that refuses a HEAD of a presigned GET still says the
            // registry holds the blob, but not its size.
            404 => Ok(None),
            // Storage on another host that will not answer a HEAD.
            _ if !same_origin(&url, &self.base) => Ok(None),
            _ => Err(Error::failed(format!(
                "cannot tell whether {}/{repository} holds the blob {digest}",
                self.target.host
            ))
            .caused_by(reply.describe())),
        }
    }

    /// Asks the registry to mount the blob `digest` into `repository` from
    /// the repository `from` of the same registry. A refused mount gives
    /// an upload to send the bytes to instead.
    pub async fn mount(&self, repository: &str, digest: &str, from: &str) -> Result<Started> {
        let path = format!("/v2/{repository}/blobs/uploads/?mount={digest}&from={from}");
        // A registry that will not mount (token scope, policy) answers an
        // error or an upload; either way a plain upload follows.
        if let Ok(reply) = self
            .send(
                Method::POST,
                repository,
                Access::Push,
                &path,
                &[],
                Bytes::new(),
            )
            .await
        {
            match reply.status.as_u16() {
                201 => return Ok(Started::Mounted),
                202 => return self.upload_from(repository, &reply).map(Started::Upload),
                _ => {}
            }
        }
        self.new_upload(repository).await.map(Started::Upload)
    }

    /// Starts an upload to `repository` (`POST`, 202).
    pub async fn new_upload(&self, repository: &str) -> Result<Upload> {
        let path = format!("/v2/{repository}/blobs/uploads/");
        let reply = self
            .send(
                Method::POST,
                repository,
                Access::Push,
                &path,
                &[],
                Bytes::new(),
            )
            .await?;
        if reply.status.as_u16() != 202 {
            return Err(Error::failed(format!(
                "{} refused to start an upload to {repository}",
                self.target.host
            ))
            .caused_by(reply.describe()));
        }
        self.upload_from(repository, &reply)
    }

    /// How many bytes the registry holds of `upload` (`GET` on it, 204 with
    /// `Range: 0-<last>`), or `None` when it no longer knows the upload.
    pub async fn upload_status(&self, upload: &Upload) -> Result<Option<u64>> {
        let reply = self
            .to_upload(Method::GET, upload, &[], Bytes::new())
            .await?;
        match reply.status.as_u16() {
            204 | 200 => Ok(Some(range_end(&reply).unwrap_or(0))),
            404 | 400 => Ok(None),
            _ => Err(Error::failed(format!(
                "cannot ask {} how much of an upload to {} it holds",
                self.target.host, upload.repository
            ))
            .caused_by(reply.describe())),
        }
    }

    /// Sends `chunk` as the bytes at `upload.offset` (`PATCH` with
    /// `Content-Range`), and moves `upload` on. A failure the registry may
    /// not have seen is [`Failure::Transient`]: ask [`Oci::upload_status`]
    /// where to go on from.
    pub async fn patch_chunk(
        &self,
        upload: &mut Upload,
        chunk: Bytes,
    ) -> std::result::Result<(), Failure> {
        let end = upload.offset + chunk.len() as u64;
        let headers = [
            ("content-type", OCTET_STREAM.to_string()),
            (
                "content-range",
                format!("{}-{}", upload.offset, end.saturating_sub(1)),
            ),
        ];
        let reply = self.patch(upload, &headers, full(chunk)).await?;
        self.moved_on(upload, &reply, end)
    }

    /// Sends the rest of a blob as one streamed `PATCH` (chunked transfer
    /// encoding, no `Content-Range`) from `upload.offset` on; `sent` counts
    /// what the stream gave by the time the registry answers.
    pub async fn patch_stream(
        &self,
        upload: &mut Upload,
        body: Body,
        sent: &AtomicU64,
    ) -> std::result::Result<(), Failure> {
        let headers = [("content-type", OCTET_STREAM.to_string())];
        let reply = self.patch(upload, &headers, body).await?;
        let expected = upload.offset + sent.load(Ordering::Relaxed);
        self.moved_on(upload, &reply, expected)
    }

    /// Ends `upload` as the blob `digest` (`PUT ?digest=`, empty body).
    pub async fn commit(&self, upload: &Upload, digest: &str) -> Result<()> {
        let separator = if upload.url.contains('?') { '&' } else { '?' };
        let url = format!("{}{separator}digest={digest}", upload.url);
        let committed = Upload {
            url,
            ..upload.clone()
        };
        let headers = [("content-type", OCTET_STREAM.to_string())];
        let reply = self
            .to_upload(Method::PUT, &committed, &headers, Bytes::new())
            .await?;
        if !matches!(reply.status.as_u16(), 201 | 204) {
            return Err(Error::failed(format!(
                "{} did not accept the blob {digest} for {}",
                self.target.host, upload.repository
            ))
            .caused_by(reply.describe()));
        }
        match reply.header("docker-content-digest") {
            Some(stored) if stored != digest => Err(Error::failed(format!(
                "{} stored the blob {digest} as {stored}",
                self.target.host
            ))),
            _ => Ok(()),
        }
    }

    /// Sends `chunk` at `upload.offset`, resent from where the registry
    /// stands after a failure it may not have seen, up to [`ATTEMPTS`]
    /// tries; `sent` counts the bytes sent (a resent part again). The error
    /// gives the upload back when the registry may still hold it.
    pub async fn send_chunk(
        &self,
        upload: &mut Upload,
        chunk: Bytes,
        sent: &AtomicU64,
    ) -> std::result::Result<(), (Failure, Option<Upload>)> {
        let start = upload.offset;
        let end = start + chunk.len() as u64;
        let mut tries = 0;
        loop {
            let from = (upload.offset - start) as usize;
            let body = chunk.slice(from..);
            let length = body.len() as u64;
            match self.patch_chunk(upload, body).await {
                Ok(()) => {
                    sent.fetch_add(length, Ordering::Relaxed);
                    return Ok(());
                }
                Err(Failure::Permanent(error)) => return Err((Failure::Permanent(error), None)),
                Err(Failure::Transient(error)) => {
                    sent.fetch_add(length, Ordering::Relaxed);
                    tries += 1;
                    if tries >= ATTEMPTS {
                        return Err((
                            Failure::Transient(
                                error.caused_by(format!("gave up after {tries} tries")),
                            ),
                            Some(upload.clone()),
                        ));
                    }
                    self.retries.pause(tries).await;
                    match self.upload_status(upload).await {
                        Ok(Some(held)) if (start..=end).contains(&held) => upload.offset = held,
                        // Gone, or holding what hoist did not send: the next
                        // attempt starts this blob again.
                        _ => return Err((Failure::Transient(error), None)),
                    }
                    if upload.offset == end {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// A small blob from memory: `POST`, chunks of at most `chunk` bytes,
    /// `PUT`.
    pub async fn upload_bytes(
        &self,
        repository: &str,
        digest: &str,
        bytes: Bytes,
        chunk: u64,
    ) -> std::result::Result<(), Failure> {
        let mut upload = self.new_upload(repository).await?;
        let sent = AtomicU64::new(0);
        let mut rest = bytes;
        while !rest.is_empty() {
            let take = rest.len().min(chunk as usize);
            let piece = rest.split_to(take);
            self.send_chunk(&mut upload, piece, &sent)
                .await
                .map_err(|(failure, _)| failure)?;
        }
        self.commit(&upload, digest).await?;
        Ok(())
    }

    fn upload_from(&self, repository: &str, reply: &Reply) -> Result<Upload> {
        let location = reply.header("location").ok_or_else(|| {
            Error::failed(format!(
                "{} started an upload without saying where to send it (no Location)",
                self.target.host
            ))
        })?;
        let url = resolve(&self.base, location).ok_or_else(|| {
            Error::failed(format!(
                "{} gave an upload location hoist cannot follow: {}",
                self.target.host,
                redact(location)
            ))
        })?;
        Ok(Upload {
            repository: repository.to_string(),
            url,
            offset: range_end(reply).unwrap_or(0),
        })
    }

    /// After a `PATCH`: the new location and offset, checked.
    fn moved_on(
        &self,
        upload: &mut Upload,
        reply: &Reply,
        expected: u64,
    ) -> std::result::Result<(), Failure> {
        let status = reply.status.as_u16();
        if !(200..300).contains(&status) {
            return Err(self.patch_refused(upload, reply));
        }
        if let Some(location) = reply.header("location")
            && let Some(url) = resolve(&upload.url, location)
        {
            upload.url = url;
        }
        // `0-0` is both "nothing" and "one byte" (distribution writes the
        // last offset, floored at 0).
        let held = match range_end(reply) {
            Some(0) if expected <= 1 => expected,
            Some(held) => held,
            None => expected,
        };
        if held != expected {
            // The registry holds other bytes than were sent: say where it
            // stands, and let the caller go on from there.
            upload.offset = held;
            return Err(Failure::Transient(Error::failed(format!(
                "{} holds {held} bytes of the upload to {}, not {expected}",
                self.target.host, upload.repository
            ))));
        }
        upload.offset = expected;
        Ok(())
    }

    fn patch_refused(&self, upload: &Upload, reply: &Reply) -> Failure {
        let host = &self.target.host;
        let error = Error::failed(format!(
            "{host} refused a part of the upload to {}",
            upload.repository
        ))
        .caused_by(reply.describe());
        match reply.status.as_u16() {
            413 => Failure::Permanent(error.hint(
                "something between hoist and the registry caps request bodies (413): set \
                 `push.chunk_size` in hoist.yaml (or HOIST_PUSH_CHUNK_SIZE, --chunk-size) \
                 below the cap, e.g. 90MiB behind Cloudflare",
            )),
            // The token expired, the offset moved, or the upload is gone:
            // the caller asks where the upload stands and goes on.
            401 | 404 | 416 => Failure::Transient(error),
            _ => Failure::Permanent(error),
        }
    }

    async fn patch(
        &self,
        upload: &Upload,
        headers: &[(&str, String)],
        body: Body,
    ) -> std::result::Result<Reply, Failure> {
        let auth = if same_origin(&upload.url, &self.base) {
            self.cached_auth(&upload.repository, Access::Push)
        } else {
            None
        };
        self.exchange_once(&Method::PATCH, &upload.url, headers, body, auth.as_ref())
            .await
    }

    /// A request to an upload's URL: through [`Oci::send`] (auth
    /// challenges answered, retried) on the registry's own origin.
    async fn to_upload(
        &self,
        method: Method,
        upload: &Upload,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Reply> {
        self.send_to(
            method,
            &upload.repository,
            Access::Push,
            &upload.url,
            headers,
            body,
        )
        .await
    }
}

/// The bytes a registry holds by its `Range: 0-<last>` header (inclusive):
/// `last + 1`; `0-0` on a fresh upload is taken as none.
fn range_end(reply: &Reply) -> Option<u64> {
    let range = reply.header("range")?;
    let (_, last) = range.trim().trim_start_matches("bytes=").split_once('-')?;
    let last: u64 = last.trim().parse().ok()?;
    Some(if last == 0 { 0 } else { last + 1 })
}
