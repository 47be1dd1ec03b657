//! Copying an image from one registry to another, digest for digest: the
//! manifest's exact bytes (an index with every child manifest), and every
//! blob they name, streamed from the source to the destination without
//! touching disk and without decompressing. The groundwork of `hoist
//! promote --to` (issue 18); tags are the caller's to move, after every
//! image is copied, so that a failure leaves the destination's tags as
//! they were.
//!
//! Per blob: skipped when the destination holds it (`HEAD`); mounted when
//! source and destination are the same registry; otherwise its bytes
//! stream from the source's `GET` into the destination's upload, chunked
//! when a chunk size is given ([`Oci::send_chunk`]: resent from where the
//! destination stands after a failure), else as one streamed `PATCH`. The
//! digest is checked as the bytes pass, before the upload is committed.

use super::blob::Started;
use super::oci::{Body, Oci};
use super::retry::{ATTEMPTS, Failure};
use super::{Manifest, digest_of};
use crate::error::{Error, Result};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// What a copy moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copied {
    /// Blobs whose bytes were sent, and how many bytes (a resent chunk
    /// counts again).
    pub blobs_copied: usize,
    pub bytes: u64,
    /// Blobs the destination already held.
    pub blobs_skipped: usize,
    /// Blobs mounted within the same registry.
    pub blobs_mounted: usize,
    /// Manifests written (children of an index included), by digest.
    pub manifests: usize,
}

/// A blob as a manifest names it.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Copies `manifest` (read from `source`'s repository `from`) into
/// `dest`'s repository `to`: every blob, every child manifest (written by
/// digest), then the manifest itself by digest. Writes no tag.
pub async fn copy(
    source: &Oci,
    from: &str,
    dest: &Oci,
    to: &str,
    manifest: &Manifest,
    chunk: Option<u64>,
) -> Result<Copied> {
    let mut copied = Copied::default();
    copy_manifest(source, from, dest, to, manifest, chunk, &mut copied, 0).await?;
    Ok(copied)
}

#[allow(clippy::too_many_arguments)]
async fn copy_manifest(
    source: &Oci,
    from: &str,
    dest: &Oci,
    to: &str,
    manifest: &Manifest,
    chunk: Option<u64>,
    copied: &mut Copied,
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
            "{from}@{} nests indexes deeper than hoist copies",
            manifest.digest
        )));
    }
    for child in &named.children {
        let child_manifest = source.manifest(from, &child.digest).await?.ok_or_else(|| {
            Error::failed(format!(
                "{}/{from} lists {}, which it does not hold",
                source.host(),
                child.digest
            ))
        })?;
        Box::pin(copy_manifest(
            source,
            from,
            dest,
            to,
            &child_manifest,
            chunk,
            copied,
            depth + 1,
        ))
        .await?;
    }
    for blob in &named.blobs {
        copy_blob(source, from, dest, to, blob, chunk, copied).await?;
    }
    dest.put_manifest(to, &manifest.digest, manifest).await?;
    copied.manifests += 1;
    Ok(())
}

/// One blob: skip, mount, or stream it across, tried up to [`ATTEMPTS`]
/// times.
async fn copy_blob(
    source: &Oci,
    from: &str,
    dest: &Oci,
    to: &str,
    blob: &Blob,
    chunk: Option<u64>,
    copied: &mut Copied,
) -> Result<()> {
    if dest.has_blob(to, &blob.digest).await?.is_some() {
        copied.blobs_skipped += 1;
        return Ok(());
    }
    if source.host() == dest.host() {
        match dest.mount(to, &blob.digest, from).await? {
            Started::Mounted => {
                copied.blobs_mounted += 1;
                return Ok(());
            }
            Started::Upload(_) => {}
        }
    }
    let mut tries = 0;
    loop {
        tries += 1;
        let sent = AtomicU64::new(0);
        let result = stream_blob(source, from, dest, to, blob, chunk, &sent).await;
        copied.bytes += sent.load(Ordering::Relaxed);
        match result {
            Ok(()) => {
                copied.blobs_copied += 1;
                return Ok(());
            }
            Err(Failure::Transient(_)) if tries < ATTEMPTS => {
                dest.retries.pause(tries).await;
            }
            Err(Failure::Transient(error)) => {
                return Err(error.caused_by(format!("gave up after {tries} tries")));
            }
            Err(Failure::Permanent(error)) => return Err(error),
        }
    }
}

async fn stream_blob(
    source: &Oci,
    from: &str,
    dest: &Oci,
    to: &str,
    blob: &Blob,
    chunk: Option<u64>,
    sent: &AtomicU64,
) -> std::result::Result<(), Failure> {
    let (size, mut body) = source.blob_stream(from, &blob.digest, 0).await?;
    if size != blob.size && size != 0 {
        return Err(Failure::Permanent(Error::failed(format!(
            "{}/{from} holds {} as {size} bytes, the manifest says {}",
            source.host(),
            blob.digest,
            blob.size
        ))));
    }
    let mut upload = dest.new_upload(to).await?;
    let mut hash = Sha256::new();
    let mut received: u64 = 0;
    let cut = |e: hyper::Error| {
        Failure::Transient(
            Error::failed(format!("the source cut the blob {}", blob.digest)).caused_by(e),
        )
    };
    match chunk {
        Some(chunk) => {
            let chunk = chunk as usize;
            let mut buffer = BytesMut::with_capacity(chunk);
            while let Some(frame) = body.frame().await.transpose().map_err(cut)? {
                let Ok(mut data) = frame.into_data() else {
                    continue;
                };
                hash.update(&data);
                received += data.len() as u64;
                while !data.is_empty() {
                    let take = data.len().min(chunk - buffer.len());
                    buffer.extend_from_slice(&data.split_to(take));
                    if buffer.len() == chunk {
                        let full = std::mem::replace(&mut buffer, BytesMut::with_capacity(chunk));
                        dest.send_chunk(&mut upload, full.freeze(), sent)
                            .await
                            .map_err(|(failure, _)| failure)?;
                    }
                }
            }
            if !buffer.is_empty() {
                dest.send_chunk(&mut upload, buffer.freeze(), sent)
                    .await
                    .map_err(|(failure, _)| failure)?;
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
            let feed = async {
                while let Some(frame) = body.frame().await.transpose().map_err(cut)? {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    hash.update(&data);
                    received += data.len() as u64;
                    sent.fetch_add(data.len() as u64, Ordering::Relaxed);
                    if body_tx.send(data).await.is_err() {
                        break;
                    }
                }
                drop(body_tx);
                Ok::<(), Failure>(())
            };
            let (patched, fed) = tokio::join!(dest.patch_stream(&mut upload, request, sent), feed);
            fed?;
            patched?;
        }
    }
    let digest = format!(
        "sha256:{}",
        hash.finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    if digest != blob.digest || received != blob.size {
        return Err(Failure::Permanent(Error::failed(format!(
            "{}/{from} served {received} bytes for {} that hash to {digest}",
            source.host(),
            blob.digest
        ))));
    }
    dest.commit(&upload, &blob.digest).await?;
    Ok(())
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
