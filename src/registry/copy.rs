//! Copying an image from one registry to another, digest for digest: the
//! manifest's exact bytes (an index with every child manifest), and every
//! blob they name, streamed from the source to the destination without
//! touching disk and without decompressing. `hoist promote --to` copies
//! every image first and moves tags after ([`crate::cmd`]), so that a
//! failure leaves the destination's tags as they were.
//!
//! Two steps, so that a dry run can show the first:
//! - [`plan`] reads what the destination lacks: nothing when it holds the
//!   manifest already (a registry accepts a manifest only once it holds
//!   every blob and child it names), else each blob's `HEAD`.
//! - [`apply`] copies the missing blobs, [`Options::slots`] at once: mounted
//!   when source and destination are the same registry, else streamed from
//!   the source's `GET` into the destination's upload, in chunks of
//!   [`Options::chunk`] bytes when given ([`Oci::send_chunk`]) or as one
//!   streamed `PATCH`. A blob cut half-way resumes where the destination
//!   stands: `GET` on the upload gives its offset, and the source is read
//!   again from there (`Range`). The digest is checked as the bytes pass,
//!   before the upload is committed; then the children and the manifest are
//!   written by digest.

use super::blob::{Started, Upload};
use super::oci::{Body, Oci};
use super::retry::{ATTEMPTS, Failure};
use super::{Manifest, Registry, digest_of};
use crate::error::{Error, Result};
use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use futures_util::{StreamExt, TryStreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};

/// How long the source may send nothing in the middle of a blob before
/// the read is taken as cut (and resumed).
const STALL: Duration = Duration::from_secs(120);

/// One end of a copy: where manifests are read and written (ECR through
/// its API), and the client blobs go through (for ECR, its registry
/// endpoint with the token of `GetAuthorizationToken`).
#[derive(Clone, Copy)]
pub struct End<'a> {
    pub registry: &'a Registry,
    pub blobs: &'a Oci,
    /// The repository.
    pub repository: &'a str,
}

/// How blobs are sent.
#[derive(Debug, Clone)]
pub struct Options {
    /// No request body larger than this many bytes (`push.chunk_size`);
    /// `None`: one streamed `PATCH` per blob.
    pub chunk: Option<u64>,
    /// One permit per blob copied at once, shared by every copy made with
    /// these options (`push.jobs` in all).
    pub slots: Arc<Semaphore>,
}

impl Options {
    /// At most `jobs` blobs at once across every copy using these.
    pub fn new(chunk: Option<u64>, jobs: usize) -> Options {
        Options {
            chunk,
            slots: Arc::new(Semaphore::new(jobs.max(1))),
        }
    }
}

/// What a copy moved.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Copied {
    /// Blobs whose bytes were sent, and how many bytes (a resent part
    /// counts again).
    pub blobs_copied: usize,
    pub bytes: u64,
    /// Blobs the destination already held.
    pub blobs_skipped: usize,
    /// Blobs mounted within the same registry.
    pub blobs_mounted: usize,
    /// Manifests written (children of an index included), by digest.
    pub manifests: usize,
    /// Blobs resumed after a cut, from where the destination stood.
    pub resumed: usize,
}

impl Copied {
    /// Adds another copy's counts to these.
    pub fn add(&mut self, other: &Copied) {
        self.blobs_copied += other.blobs_copied;
        self.bytes += other.bytes;
        self.blobs_skipped += other.blobs_skipped;
        self.blobs_mounted += other.blobs_mounted;
        self.manifests += other.manifests;
        self.resumed += other.resumed;
    }
}

/// A blob as a manifest names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
}

/// What one manifest names: child manifests (an index) or blobs (an
/// image: config, layers, and any other descriptor it carries).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Named {
    pub children: Vec<Blob>,
    pub blobs: Vec<Blob>,
}

/// Reads what `manifest` names. Errors: bytes that are not a manifest.
pub fn named(manifest: &[u8]) -> Result<Named> {
    #[derive(serde::Deserialize)]
    struct Descriptor {
        digest: String,
        size: u64,
    }
    #[derive(serde::Deserialize)]
    struct Document {
        #[serde(default)]
        manifests: Vec<Descriptor>,
        config: Option<Descriptor>,
        #[serde(default)]
        layers: Vec<Descriptor>,
        /// OCI 1.1: the manifest this one refers to (an attestation's
        /// subject) is named, not owned: not copied from here.
        #[serde(default)]
        blobs: Vec<Descriptor>,
    }
    let document: Document = serde_json::from_slice(manifest)
        .map_err(|e| Error::failed("the manifest to copy is not a manifest").caused_by(e))?;
    let blob = |d: Descriptor| Blob {
        digest: d.digest,
        size: d.size,
    };
    let mut blobs: Vec<Blob> = document.config.into_iter().map(blob).collect();
    blobs.extend(document.layers.into_iter().map(blob));
    blobs.extend(document.blobs.into_iter().map(blob));
    let mut seen = std::collections::HashSet::new();
    blobs.retain(|b| seen.insert(b.digest.clone()));
    Ok(Named {
        children: document.manifests.into_iter().map(blob).collect(),
        blobs,
    })
}

/// What copying one manifest needs: the manifests to write, children
/// first and the manifest itself last (empty when the destination holds
/// it), and its blobs, split by whether the destination holds them.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub manifests: Vec<Manifest>,
    pub missing: Vec<Blob>,
    pub present: Vec<Blob>,
}

impl Plan {
    /// The bytes of the blobs to send.
    pub fn missing_bytes(&self) -> u64 {
        self.missing.iter().map(|b| b.size).sum()
    }
}

/// Reads what the destination lacks of `manifest` (read from `source`):
/// one `GET` of the manifest by digest there, and when it is not there,
/// the source's child manifests and a `HEAD` of every blob.
pub async fn plan(source: End<'_>, dest: End<'_>, manifest: &Manifest) -> Result<Plan> {
    if dest
        .registry
        .manifest(dest.repository, &manifest.digest)
        .await?
        .is_some_and(|there| there.digest == manifest.digest)
    {
        return Ok(Plan::default());
    }
    let (manifests, blobs) = everything(source, manifest).await?;
    let mut plan = Plan {
        manifests,
        ..Plan::default()
    };
    let held: Vec<Result<Option<u64>>> = futures_util::stream::iter(
        blobs
            .iter()
            .map(|blob| dest.blobs.has_blob(dest.repository, &blob.digest)),
    )
    .buffered(8)
    .collect()
    .await;
    for (blob, held) in blobs.into_iter().zip(held) {
        match held? {
            Some(_) => plan.present.push(blob),
            None => plan.missing.push(blob),
        }
    }
    Ok(plan)
}

/// The plan for a destination repository that does not exist yet: every
/// manifest and blob to copy, nothing asked of the destination.
pub async fn plan_fresh(source: End<'_>, manifest: &Manifest) -> Result<Plan> {
    let (manifests, missing) = everything(source, manifest).await?;
    Ok(Plan {
        manifests,
        missing,
        present: Vec::new(),
    })
}

/// Every manifest to write (children first) and every blob they name,
/// each once.
async fn everything(source: End<'_>, manifest: &Manifest) -> Result<(Vec<Manifest>, Vec<Blob>)> {
    let mut manifests = Vec::new();
    let mut blobs = Vec::new();
    collect(source, manifest, &mut manifests, &mut blobs, 0).await?;
    let mut seen = std::collections::HashSet::new();
    blobs.retain(|b: &Blob| seen.insert(b.digest.clone()));
    Ok((manifests, blobs))
}

/// The manifests to write (children first) and the blobs they name.
async fn collect(
    source: End<'_>,
    manifest: &Manifest,
    manifests: &mut Vec<Manifest>,
    blobs: &mut Vec<Blob>,
    depth: usize,
) -> Result<()> {
    if manifest.digest != digest_of(&manifest.bytes) {
        return Err(Error::failed(format!(
            "the manifest {} to copy has other bytes than its digest",
            manifest.digest
        )));
    }
    let named = named(&manifest.bytes)?;
    if depth > 1 && !named.children.is_empty() {
        return Err(Error::failed(format!(
            "{}@{} nests indexes deeper than hoist copies",
            source.repository, manifest.digest
        )));
    }
    for child in &named.children {
        let child_manifest = source
            .registry
            .manifest(source.repository, &child.digest)
            .await?
            .ok_or_else(|| {
                Error::failed(format!(
                    "{}/{} lists {}, which it does not hold",
                    source.blobs.host(),
                    source.repository,
                    child.digest
                ))
            })?;
        if child_manifest.digest != child.digest {
            return Err(Error::failed(format!(
                "{}/{} served {} when asked for {}",
                source.blobs.host(),
                source.repository,
                child_manifest.digest,
                child.digest
            )));
        }
        Box::pin(collect(
            source,
            &child_manifest,
            manifests,
            blobs,
            depth + 1,
        ))
        .await?;
    }
    blobs.extend(named.blobs);
    manifests.push(manifest.clone());
    Ok(())
}

/// Copies what `plan` says is missing, then writes its manifests by
/// digest (no tag).
pub async fn apply(
    source: End<'_>,
    dest: End<'_>,
    plan: &Plan,
    options: &Options,
) -> Result<Copied> {
    let job = Job { source, dest, plan };
    let mut results = apply_all(&[job], options).await;
    results.pop().unwrap_or_else(|| Ok(Copied::default()))
}

/// One image's copy in [`apply_all`].
#[derive(Clone, Copy)]
pub struct Job<'a> {
    pub source: End<'a>,
    pub dest: End<'a>,
    pub plan: &'a Plan,
}

/// Copies several images into one registry, each as [`apply`] does, except
/// that a blob more than one of them lacks is sent once, into the first
/// one's repository, and then mounted into the others' (the destination's
/// own cross-repository mount; sent after all where it is refused), as a
/// push of images that share base layers does. One result per job.
pub async fn apply_all(jobs: &[Job<'_>], options: &Options) -> Vec<Result<Copied>> {
    let mut owner: HashMap<&str, usize> = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        for blob in &job.plan.missing {
            owner.entry(blob.digest.as_str()).or_insert(i);
        }
    }
    let counts: Vec<Counts> = jobs.iter().map(|_| Counts::default()).collect();
    // First every job sends the blobs it is the first to lack …
    let sent = join_all(jobs.iter().enumerate().map(|(i, job)| {
        let owned = job
            .plan
            .missing
            .iter()
            .filter(|b| owner[b.digest.as_str()] == i)
            .map(|b| (b, None))
            .collect();
        send_blobs(*job, owned, options, &counts[i])
    }))
    .await;
    // … then mounts the ones another job sent, and writes its manifests.
    let finished = jobs.iter().enumerate().map(|(i, job)| {
        let (sent, counts, owner) = (&sent, &counts[i], &owner);
        async move {
            sent[i].clone()?;
            let mut shared = Vec::new();
            for blob in job
                .plan
                .missing
                .iter()
                .filter(|b| owner[b.digest.as_str()] != i)
            {
                let first = owner[blob.digest.as_str()];
                if let Err(error) = &sent[first] {
                    return Err(Error::failed(format!(
                        "the blob {} was to come with {}, whose copy failed",
                        blob.digest, jobs[first].dest.repository
                    ))
                    .caused_by(&error.message));
                }
                shared.push((blob, Some(jobs[first].dest.repository)));
            }
            send_blobs(*job, shared, options, counts).await?;
            for manifest in &job.plan.manifests {
                job.dest
                    .registry
                    .put_manifest(job.dest.repository, &manifest.digest, manifest)
                    .await?;
            }
            Ok(Copied {
                blobs_copied: counts.copied.load(Ordering::Relaxed),
                bytes: counts.bytes.load(Ordering::Relaxed),
                blobs_skipped: job.plan.present.len(),
                blobs_mounted: counts.mounted.load(Ordering::Relaxed),
                manifests: job.plan.manifests.len(),
                resumed: counts.resumed.load(Ordering::Relaxed),
            })
        }
    });
    join_all(finished).await
}

/// Copies `blobs` (each with the destination repository to mount it
/// from, when one holds it), at most [`Options::slots`] at once in all.
async fn send_blobs(
    job: Job<'_>,
    blobs: Vec<(&Blob, Option<&str>)>,
    options: &Options,
    counts: &Counts,
) -> Result<()> {
    let total = blobs.len();
    let copies = blobs.into_iter().map(|(blob, mount_from)| async move {
        let _slot = options
            .slots
            .acquire()
            .await
            .map_err(|e| Error::failed("the copy's job slots closed").caused_by(e))?;
        copy_blob(
            job.source,
            job.dest,
            blob,
            options.chunk,
            counts,
            mount_from,
        )
        .await
    });
    futures_util::stream::iter(copies)
        .buffer_unordered(total.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// [`plan`], then [`apply`].
pub async fn copy(
    source: End<'_>,
    dest: End<'_>,
    manifest: &Manifest,
    options: &Options,
) -> Result<Copied> {
    let plan = plan(source, dest, manifest).await?;
    apply(source, dest, &plan, options).await
}

#[derive(Default)]
struct Counts {
    copied: AtomicUsize,
    bytes: AtomicU64,
    mounted: AtomicUsize,
    resumed: AtomicUsize,
}

/// Where one blob's copy stands across tries: the destination's upload
/// and the hash of the bytes read so far, so that a cut copy resumes at
/// the destination's offset without reading the source from the start.
struct Progress {
    upload: Option<Upload>,
    hash: Sha256,
    /// Bytes of the blob hashed so far (from its start).
    hashed: u64,
}

/// One blob: mounted (from `mount_from`, or the source on the same host)
/// or streamed across, tried up to [`ATTEMPTS`] times, each try going on
/// from where the destination stands.
async fn copy_blob(
    source: End<'_>,
    dest: End<'_>,
    blob: &Blob,
    chunk: Option<u64>,
    counts: &Counts,
    mount_from: Option<&str>,
) -> Result<()> {
    let mut progress = Progress {
        upload: None,
        hash: Sha256::new(),
        hashed: 0,
    };
    // A repository of the destination's registry that holds the blob: one
    // that another image's copy filled, or the source on the same host.
    let same_host = source.blobs.host() == dest.blobs.host();
    if let Some(from) = mount_from.or(same_host.then_some(source.repository)) {
        match dest
            .blobs
            .mount(dest.repository, &blob.digest, from)
            .await?
        {
            Started::Mounted => {
                counts.mounted.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Started::Upload(upload) => progress.upload = Some(upload),
        }
    }
    let mut tries = 0;
    loop {
        tries += 1;
        let result = stream_blob(source, dest, blob, chunk, &mut progress, counts).await;
        match result {
            Ok(()) => {
                counts.copied.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(Failure::Transient(_)) if tries < ATTEMPTS => {
                dest.blobs.retries.pause(tries).await;
            }
            Err(Failure::Transient(error)) => {
                return Err(error.caused_by(format!("gave up after {tries} tries")));
            }
            Err(Failure::Permanent(error)) => return Err(error),
        }
    }
}

/// Where the next try starts: the destination's upload at its offset when
/// it still holds one no further than the bytes hashed, else a new upload
/// (and the hash from the start).
async fn resume_point(
    dest: End<'_>,
    progress: &mut Progress,
) -> std::result::Result<(Upload, bool), Failure> {
    if let Some(mut upload) = progress.upload.take() {
        match dest.blobs.upload_status(&upload).await {
            Ok(Some(held)) if held <= progress.hashed => {
                upload.offset = held;
                return Ok((upload, held > 0));
            }
            // Gone (distribution drops an upload whose PATCH was cut), or
            // holding more than was read: start again.
            Ok(_) | Err(_) => {}
        }
    }
    progress.hash = Sha256::new();
    progress.hashed = 0;
    Ok((dest.blobs.new_upload(dest.repository).await?, false))
}

async fn stream_blob(
    source: End<'_>,
    dest: End<'_>,
    blob: &Blob,
    chunk: Option<u64>,
    progress: &mut Progress,
    counts: &Counts,
) -> std::result::Result<(), Failure> {
    let (mut upload, resumed) = resume_point(dest, progress).await?;
    if resumed {
        counts.resumed.fetch_add(1, Ordering::Relaxed);
    }
    let start = upload.offset;
    let result = if start == blob.size {
        Ok(())
    } else {
        let opened = source
            .blobs
            .blob_stream(source.repository, &blob.digest, start)
            .await;
        match opened {
            Ok((size, body)) if size == blob.size || size == 0 => {
                send(
                    dest,
                    &mut upload,
                    body,
                    start,
                    chunk,
                    progress,
                    &counts.bytes,
                )
                .await
            }
            Ok((size, _)) => Err(Failure::Permanent(Error::failed(format!(
                "{}/{} holds {} as {size} bytes, the manifest says {}",
                source.blobs.host(),
                source.repository,
                blob.digest,
                blob.size
            )))),
            Err(error) => Err(Failure::Transient(error)),
        }
    };
    // Whatever happened, the upload may hold bytes a next try can keep.
    progress.upload = Some(upload.clone());
    result?;
    let digest = format!(
        "sha256:{}",
        progress
            .hash
            .clone()
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    if digest != blob.digest || progress.hashed != blob.size {
        progress.upload = None;
        return Err(Failure::Permanent(Error::failed(format!(
            "{}/{} served {} bytes for {} that hash to {digest}",
            source.blobs.host(),
            source.repository,
            progress.hashed,
            blob.digest
        ))));
    }
    dest.blobs.commit(&upload, &blob.digest).await?;
    Ok(())
}

/// The next bytes of a blob's body; `None` at its end. A cut or a stall
/// of [`STALL`] is an error.
async fn next_data(body: &mut hyper::body::Incoming) -> Result<Option<Bytes>> {
    match tokio::time::timeout(STALL, body.frame()).await {
        Ok(Some(Ok(frame))) => Ok(Some(frame.into_data().unwrap_or_default())),
        Ok(None) => Ok(None),
        Ok(Some(Err(e))) => Err(Error::failed("the source cut the blob").caused_by(e)),
        Err(_) => Err(Error::failed(format!(
            "the source sent nothing for {} s",
            STALL.as_secs()
        ))),
    }
}

/// Sends the source's `body` (the blob from `start` on) into `upload`,
/// hashing the bytes past what `progress` hashed. A cut source ends the
/// request cleanly, so that the destination keeps what it received and
/// the next try resumes there.
async fn send(
    dest: End<'_>,
    upload: &mut Upload,
    mut body: hyper::body::Incoming,
    start: u64,
    chunk: Option<u64>,
    progress: &mut Progress,
    sent: &AtomicU64,
) -> std::result::Result<(), Failure> {
    let mut position = start;
    let mut take = |data: &Bytes, progress: &mut Progress| {
        let end = position + data.len() as u64;
        if end > progress.hashed {
            let skip = (progress.hashed.saturating_sub(position)) as usize;
            progress.hash.update(&data[skip..]);
            progress.hashed = end;
        }
        position = end;
    };
    match chunk {
        Some(chunk) => {
            let chunk = chunk as usize;
            let mut buffer = BytesMut::with_capacity(chunk);
            let mut cut = None;
            loop {
                let mut data = match next_data(&mut body).await {
                    Ok(Some(data)) => data,
                    Ok(None) => break,
                    Err(error) => {
                        cut = Some(error);
                        break;
                    }
                };
                take(&data, progress);
                while !data.is_empty() {
                    let room = data.len().min(chunk - buffer.len());
                    buffer.extend_from_slice(&data.split_to(room));
                    if buffer.len() == chunk {
                        let full = std::mem::replace(&mut buffer, BytesMut::with_capacity(chunk));
                        dest.blobs
                            .send_chunk(upload, full.freeze(), sent)
                            .await
                            .map_err(|(failure, _)| failure)?;
                    }
                }
            }
            // What arrived before a cut is sent too: the next try goes on
            // after it.
            if !buffer.is_empty() {
                dest.blobs
                    .send_chunk(upload, buffer.freeze(), sent)
                    .await
                    .map_err(|(failure, _)| failure)?;
            }
            match cut {
                Some(error) => Err(Failure::Transient(error)),
                None => Ok(()),
            }
        }
        None => {
            let (body_tx, body_rx) = mpsc::channel::<Bytes>(4);
            let stream = futures_util::stream::unfold(body_rx, |mut rx| async move {
                rx.recv().await.map(|piece| {
                    (
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(piece)),
                        rx,
                    )
                })
            });
            let request: Body = BodyExt::boxed(StreamBody::new(stream));
            let streamed = AtomicU64::new(0);
            let feed = async {
                // Owned here: the request's body ends when the feed does.
                let body_tx = body_tx;
                loop {
                    let data = match next_data(&mut body).await {
                        Ok(Some(data)) => data,
                        Ok(None) => break,
                        // The request ends here, as if the blob did: the
                        // destination keeps what it got.
                        Err(error) => return Some(error),
                    };
                    take(&data, progress);
                    streamed.fetch_add(data.len() as u64, Ordering::Relaxed);
                    if body_tx.send(data).await.is_err() {
                        break;
                    }
                }
                None
            };
            let (patched, cut) =
                tokio::join!(dest.blobs.patch_stream(upload, request, &streamed), feed);
            sent.fetch_add(streamed.load(Ordering::Relaxed), Ordering::Relaxed);
            patched?;
            match cut {
                Some(error) => Err(Failure::Transient(error)),
                None => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_names_its_config_and_layers_once_each() {
        let image = br#"{"config":{"digest":"sha256:c","size":1},"layers":[{"digest":"sha256:a","size":2},{"digest":"sha256:a","size":2},{"digest":"sha256:b","size":3}]}"#;
        let named = named(image).unwrap();
        let digests: Vec<&str> = named.blobs.iter().map(|b| b.digest.as_str()).collect();
        assert_eq!(digests, ["sha256:c", "sha256:a", "sha256:b"]);
        assert!(named.children.is_empty());
        let index =
            br#"{"manifests":[{"digest":"sha256:x","size":9},{"digest":"sha256:y","size":8}]}"#;
        let named = super::named(index).unwrap();
        assert_eq!(named.children.len(), 2);
        assert!(named.blobs.is_empty());
        assert!(super::named(b"nope").is_err());
    }
}
