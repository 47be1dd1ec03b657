//! hoist's own push of a built image (`push.via: registry`): the engine's
//! export streams in, each layer is compressed as it passes
//! ([`crate::registry::gzip`], on every core) and uploaded as it is
//! compressed ([`crate::registry::blob`]), then the manifest is written
//! last. Nothing is held whole in memory or on disk.
//!
//! Per layer, in this order:
//! 1. another image of this run uploads it: wait for that, then mount it;
//! 2. the registry is known to hold it (a diff id seen in the config of a
//!    tag hoist reads first: `staging-latest` and `latest` of this
//!    repository and of the sibling repositories of the run) and `HEAD`
//!    confirms: skipped, in the repository itself; mounted from a sibling;
//! 3. otherwise compressed and uploaded: chunked when a chunk size is set
//!    (one chunk held in memory, resent from where the registry stands
//!    after a failure), else one streamed `PATCH`.
//!
//! A failure that is worth another try (a cut connection, a 5xx, an upload
//! the registry dropped) ends the attempt: the next one exports the image
//! again, skips every blob already committed, and resumes an open upload
//! at the offset the registry reports, compressing again and dropping the
//! bytes the registry holds (the compression is deterministic, so they are
//! the same bytes). Retries are counted for the report.
//!
//! One export per image: the engine streams it in one order, so blobs of
//! one image are compressed one after another (each on every core), while
//! uploads overlap, up to `jobs` at a time across the run's images.

use crate::docker::Engine;
use crate::error::{Error, Result};
use crate::export::{self, Export, ImageIds, LayerTar};
use crate::layer_cache::LayerCache;
use crate::registry::blob::{Started, Upload};
use crate::registry::gzip::{self, Compressed};
use crate::registry::oci::{Body, Oci};
use crate::registry::retry::{ATTEMPTS, Failure};
use crate::registry::{DOCKER_MANIFEST, Manifest, OCI_MANIFEST, Registry};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

/// The largest chunk held in memory to be resent: chunks are
/// `min(chunk_size, MAX_CHUNK)`. Bounds memory to about this much per
/// upload in flight.
pub const MAX_CHUNK: u64 = 32 << 20;
/// Compressed pieces (about 1 MiB each) queued between the compressor and
/// an upload.
const QUEUE: usize = 8;
/// The tags whose images tell which layers a repository holds.
const KNOWN_TAGS: [&str; 2] = ["staging-latest", "latest"];

/// The reader's error when an upload stopped first: the upload's own error
/// is the one reported.
const UPLOAD_STOPPED: &str = "an upload stopped";

const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// How hoist pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The largest request body, in bytes; `None` sends each blob in one
    /// streamed request.
    pub chunk_size: Option<u64>,
    /// Blob uploads in flight at once, across images.
    pub jobs: usize,
    /// Compression threads per layer.
    pub threads: usize,
}

impl Options {
    /// The chunk actually sent: [`chunk_sent`] of the chunk size.
    pub fn chunk(&self) -> Option<u64> {
        chunk_sent(self.chunk_size)
    }
}

/// The largest request body sent for a chunk size: the size, capped at
/// [`MAX_CHUNK`].
pub fn chunk_sent(chunk_size: Option<u64>) -> Option<u64> {
    chunk_size.map(|size| size.clamp(1, MAX_CHUNK))
}

/// A blob as a manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub digest: String,
    pub size: u64,
}

/// What one image's push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The manifest written, exact bytes.
    pub manifest: Manifest,
    /// Blob bytes sent to the registry (a resent chunk counts again).
    pub bytes_uploaded: u64,
    pub blobs_uploaded: usize,
    /// Blobs the repository already held.
    pub blobs_skipped: usize,
    /// Blobs mounted from a sibling repository.
    pub blobs_mounted: usize,
    pub seconds: f64,
}

/// What the images of one run share: who uploads which layer, what each
/// repository is known to hold, and the upload slots.
pub struct Run {
    options: Options,
    /// This machine's record of the blobs layers became.
    cache: LayerCache,
    slots: Arc<Semaphore>,
    claims: Mutex<HashMap<String, Claim>>,
    known: tokio::sync::Mutex<HashMap<String, HashMap<String, Descriptor>>>,
}

/// A layer one image of the run uploads; the others wait for its outcome:
/// `Some(Some(blob))` when committed, `Some(None)` when it failed.
#[derive(Clone)]
struct Claim {
    repository: String,
    done: Arc<watch::Sender<Option<Option<Descriptor>>>>,
}

impl Run {
    pub fn new(options: Options, cache: LayerCache) -> Run {
        Run {
            options,
            cache,
            slots: Arc::new(Semaphore::new(options.jobs.max(1))),
            claims: Mutex::new(HashMap::new()),
            known: tokio::sync::Mutex::new(HashMap::new()),
        }
    }
}

/// What happens to one layer in an attempt.
#[derive(Debug, Clone)]
enum Step {
    Skip(Descriptor),
    Mounted(Descriptor),
    Wait,
    Upload,
}

/// One image to push.
pub struct Target<'a> {
    /// The local image (name or id).
    pub local: &'a str,
    pub repository: &'a str,
    pub tag: &'a str,
    /// The other repositories of the run, to mount shared layers from.
    pub siblings: &'a [String],
}

/// Pushes one image: blobs, then the manifest under `target.tag`. `print`
/// gets a line per notable step.
pub async fn push(
    run: &Run,
    engine: &Engine,
    blobs: &Oci,
    registry: &Registry,
    target: &Target<'_>,
    print: &mut (dyn FnMut(String) + Send),
) -> Result<Pushed> {
    let started = Instant::now();
    let ids = engine.image_ids(target.local).await?;
    let known = known_layers(run, blobs, registry, target).await;
    let mut state = State::default();
    let mut tries = 0;
    let outcome = loop {
        tries += 1;
        let result = attempt(run, engine, blobs, target, &ids, &known, &mut state).await;
        // Also when the attempt failed before its export: nobody waits on
        // a claim that will never be settled.
        release_claims(run, target.repository, &ids, &state);
        // What was committed is recorded even when the run stops here, so
        // that the next run skips it.
        let committed: Vec<(String, Descriptor)> = state
            .done
            .iter()
            .filter(|(key, _)| key.starts_with("sha256:"))
            .map(|(key, descriptor)| (key.clone(), descriptor.clone()))
            .collect();
        run.cache.record(&committed);
        match result {
            Ok(outcome) => break outcome,
            Err(Failure::Transient(error)) if tries < ATTEMPTS => {
                print(format!(
                    "push interrupted, resuming (try {} of {ATTEMPTS}): {}",
                    tries + 1,
                    one_line(&error)
                ));
                blobs.retries.pause(tries).await;
            }
            Err(Failure::Transient(error)) => {
                return Err(error.caused_by(format!("gave up after {tries} tries")));
            }
            Err(Failure::Permanent(error)) => return Err(error),
        }
    };
    let (media_type, bytes) = manifest_bytes(&outcome);
    let manifest = Manifest::from_bytes(media_type, bytes);
    registry
        .put_manifest(target.repository, target.tag, &manifest)
        .await?;
    Ok(Pushed {
        manifest,
        bytes_uploaded: state.bytes_uploaded,
        blobs_uploaded: state.uploaded,
        blobs_skipped: state.skipped,
        blobs_mounted: state.mounted,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What survives from one attempt to the next.
#[derive(Default)]
struct State {
    /// Layers committed (or found) by key: diff id, or the export path of a
    /// layer the export did not name.
    done: HashMap<String, Descriptor>,
    /// Uploads cut short, by key, to resume.
    open: HashMap<String, Upload>,
    bytes_uploaded: u64,
    uploaded: usize,
    skipped: usize,
    mounted: usize,
}

/// What an attempt found: enough for the manifest.
struct Outcome {
    oci: bool,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

async fn attempt(
    run: &Run,
    engine: &Engine,
    blobs: &Oci,
    target: &Target<'_>,
    ids: &ImageIds,
    known: &HashMap<String, (String, Descriptor)>,
    state: &mut State,
) -> std::result::Result<Outcome, Failure> {
    let repository = target.repository;
    // Each distinct layer once, in image order.
    let mut steps: HashMap<String, Step> = HashMap::new();
    for diff_id in &ids.diff_ids {
        if steps.contains_key(diff_id) || state.done.contains_key(diff_id) {
            continue;
        }
        let step = plan_layer(run, blobs, repository, diff_id, known).await?;
        match &step {
            Step::Skip(descriptor) => {
                state.skipped += 1;
                state.done.insert(diff_id.clone(), descriptor.clone());
            }
            Step::Mounted(descriptor) => {
                state.mounted += 1;
                state.done.insert(diff_id.clone(), descriptor.clone());
            }
            Step::Wait | Step::Upload => {}
        }
        steps.insert(diff_id.clone(), step);
    }
    let config_size = blobs.has_blob(repository, &ids.config).await?;
    let needs_export = config_size.is_none()
        || ids
            .diff_ids
            .iter()
            .any(|d| matches!(steps.get(d), Some(Step::Upload)));

    let mut oci_layout = false;
    let mut paths = Vec::new();
    let mut config_bytes = None;
    if needs_export {
        let exported = export_and_upload(run, engine, blobs, target, ids, &steps, state).await;
        // Whatever happened, claims of this image that did not finish are
        // released, so that the next attempt (or another image) takes them.
        release_claims(run, repository, ids, state);
        let export = exported?;
        oci_layout = export.layers.iter().any(|p| p.starts_with("blobs/"));
        paths = export.layers;
        config_bytes = Some(export.config);
    }

    // Layers another image uploads: wait, then mount here.
    for diff_id in &ids.diff_ids {
        let Some(Step::Wait) = steps.get(diff_id) else {
            continue;
        };
        if state.done.contains_key(diff_id) {
            continue;
        }
        let claim = run
            .claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(diff_id)
            .cloned();
        let Some(claim) = claim else {
            return Err(Failure::Transient(Error::failed(format!(
                "the upload of layer {diff_id} by another image stopped"
            ))));
        };
        let mut done = claim.done.subscribe();
        let outcome = done
            .wait_for(|done| done.is_some())
            .await
            .map(|done| done.clone().flatten())
            .ok()
            .flatten();
        let Some(descriptor) = outcome else {
            return Err(Failure::Transient(Error::failed(format!(
                "the upload of layer {diff_id} by another image failed"
            ))));
        };
        if claim.repository == repository {
            state.skipped += 1;
        } else {
            match blobs
                .mount(repository, &descriptor.digest, &claim.repository)
                .await?
            {
                Started::Mounted => state.mounted += 1,
                Started::Upload(_) => {
                    // Not mountable here: this image uploads it itself next
                    // time.
                    run.claims
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(diff_id);
                    return Err(Failure::Transient(Error::failed(format!(
                        "{} would not mount layer {} from {}",
                        blobs.host(),
                        descriptor.digest,
                        claim.repository
                    ))));
                }
            }
        }
        state.done.insert(diff_id.clone(), descriptor);
    }

    let config = match (config_size, config_bytes) {
        (Some(size), _) => Descriptor {
            digest: ids.config.clone(),
            size,
        },
        (None, Some(bytes)) => {
            let chunk = run.options.chunk().unwrap_or(u64::MAX);
            blobs
                .upload_bytes(repository, &ids.config, bytes.clone(), chunk)
                .await?;
            state.bytes_uploaded += bytes.len() as u64;
            state.uploaded += 1;
            Descriptor {
                digest: ids.config.clone(),
                size: bytes.len() as u64,
            }
        }
        // The export runs whenever the config is missing, and gives it.
        (None, None) => {
            return Err(Failure::Permanent(Error::failed(format!(
                "the export of {} gave no config",
                target.local
            ))));
        }
    };

    let mut layers = Vec::with_capacity(ids.diff_ids.len());
    for (position, diff_id) in ids.diff_ids.iter().enumerate() {
        let by_path = paths.get(position).and_then(|p| state.done.get(p));
        let descriptor = state.done.get(diff_id).or(by_path).ok_or_else(|| {
            Failure::Permanent(Error::failed(format!(
                "layer {} ({diff_id}) of {} was neither found nor uploaded",
                position + 1,
                target.local
            )))
        })?;
        layers.push(descriptor.clone());
    }
    Ok(Outcome {
        oci: oci_layout,
        config,
        layers,
    })
}

/// Decides one layer before the export: wait for another image, skip,
/// mount, or upload (and claim it).
async fn plan_layer(
    run: &Run,
    blobs: &Oci,
    repository: &str,
    diff_id: &str,
    known: &HashMap<String, (String, Descriptor)>,
) -> Result<Step> {
    let known = known.get(diff_id);
    // The repository's own blob first: nothing to wait for.
    if let Some((from, descriptor)) = known
        && from == repository
        && blobs
            .has_blob(repository, &descriptor.digest)
            .await?
            .is_some()
    {
        return Ok(Step::Skip(descriptor.clone()));
    }
    if run
        .claims
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(diff_id)
    {
        return Ok(Step::Wait);
    }
    if let Some((from, descriptor)) = known
        && from != repository
        && let Started::Mounted = blobs.mount(repository, &descriptor.digest, from).await?
    {
        return Ok(Step::Mounted(descriptor.clone()));
    }
    let mut claims = run.claims.lock().unwrap_or_else(|e| e.into_inner());
    if claims.contains_key(diff_id) {
        return Ok(Step::Wait);
    }
    claims.insert(
        diff_id.to_string(),
        Claim {
            repository: repository.to_string(),
            done: Arc::new(watch::channel(None).0),
        },
    );
    Ok(Step::Upload)
}

/// Tells the images waiting on this image's claims how they ended; a
/// failed one is dropped, for the next attempt (of any image) to take.
fn release_claims(run: &Run, repository: &str, ids: &ImageIds, state: &State) {
    let mut claims = run.claims.lock().unwrap_or_else(|e| e.into_inner());
    for diff_id in &ids.diff_ids {
        let Some(claim) = claims.get(diff_id) else {
            continue;
        };
        if claim.repository != repository || claim.done.borrow().is_some() {
            continue;
        }
        let outcome = state.done.get(diff_id).cloned();
        claim.done.send_replace(Some(outcome.clone()));
        if outcome.is_none() {
            claims.remove(diff_id);
        }
    }
}

/// Streams the export, uploading the layers marked [`Step::Upload`] (and
/// any the export does not name) as they pass.
async fn export_and_upload(
    run: &Run,
    engine: &Engine,
    blobs: &Oci,
    target: &Target<'_>,
    ids: &ImageIds,
    steps: &HashMap<String, Step>,
    state: &mut State,
) -> std::result::Result<Export, Failure> {
    let (bytes_tx, bytes_rx) = mpsc::channel::<io::Result<Bytes>>(QUEUE);
    let mut stream = Box::pin(engine.export(target.local));
    let pump = async move {
        while let Some(item) = stream.next().await {
            let item = item.map_err(|e| io::Error::other(e.to_string()));
            let failed = item.is_err();
            if bytes_tx.send(item).await.is_err() || failed {
                return;
            }
        }
    };

    // Layers go from the reader thread to upload tasks on this runtime.
    let (layers_tx, mut layers_rx) = mpsc::unbounded_channel::<LayerJob>();
    let skip: HashMap<String, bool> = ids
        .diff_ids
        .iter()
        .map(|d| {
            let upload =
                matches!(steps.get(d), Some(Step::Upload) | None) && !state.done.contains_key(d);
            (d.clone(), !upload)
        })
        .collect();
    let done_paths: Vec<String> = state.done.keys().cloned().collect();
    let threads = run.options.threads.max(1);
    let handle = tokio::runtime::Handle::current();
    let slots = run.slots.clone();
    let ids_for_reader = ids.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let mut input = ChannelReader {
            rx: bytes_rx,
            current: Bytes::new(),
        };
        export::read(&mut input, &ids_for_reader, &mut |layer: LayerTar<'_>| {
            let key = layer
                .diff_id
                .clone()
                .unwrap_or_else(|| layer.path.to_string());
            let skipped = match &layer.diff_id {
                Some(diff_id) => skip.get(diff_id).copied().unwrap_or(false),
                None => done_paths.contains(&key),
            };
            if skipped {
                return Ok(());
            }
            let permit = handle
                .block_on(slots.clone().acquire_owned())
                .map_err(|_| Error::failed("the push stopped"))?;
            let (pieces_tx, pieces_rx) = mpsc::channel::<Bytes>(QUEUE);
            let (compressed_tx, compressed_rx) = oneshot::channel();
            let _ = layers_tx.send(LayerJob {
                key,
                path: layer.path.to_string(),
                pieces: pieces_rx,
                compressed: compressed_rx,
                permit,
            });
            let compressed = gzip::compress(layer.bytes, threads, &mut |piece| {
                pieces_tx
                    .blocking_send(piece)
                    .map_err(|_| io::Error::other("the upload stopped"))
            });
            drop(pieces_tx);
            match compressed {
                Ok(compressed) => {
                    let _ = compressed_tx.send(compressed);
                    Ok(())
                }
                // The upload's own error says why; the export stops here.
                Err(e) if e.to_string() == "the upload stopped" => {
                    Err(Error::failed(UPLOAD_STOPPED))
                }
                Err(e) => Err(Error::failed(format!(
                    "cannot read layer {} of the export",
                    layer.path
                ))
                .caused_by(e)),
            }
        })
    });

    let chunk = run.options.chunk();
    let mut uploads = futures_util::stream::FuturesUnordered::new();
    let mut reader = reader;
    let mut pump = Box::pin(pump);
    let mut pump_done = false;
    let mut reading = true;
    let mut export = None;
    let mut failure: Option<Failure> = None;
    let open = std::mem::take(&mut state.open);
    while reading || !uploads.is_empty() {
        tokio::select! {
            () = &mut pump, if !pump_done => pump_done = true,
            job = layers_rx.recv(), if reading => {
                if let Some(job) = job {
                    let resume = open.get(&job.key).cloned();
                    uploads.push(upload_layer(blobs, target.repository, job, resume, chunk));
                }
            }
            read = &mut reader, if reading => {
                reading = false;
                // Jobs sent just before the reader ended are still queued.
                while let Ok(job) = layers_rx.try_recv() {
                    let resume = open.get(&job.key).cloned();
                    uploads.push(upload_layer(blobs, target.repository, job, resume, chunk));
                }
                match read {
                    Ok(Ok(read)) => export = Some(read),
                    Ok(Err(error)) => failure = worse(failure, Failure::Permanent(error)),
                    Err(e) => {
                        let error = Error::failed("the export reader stopped").caused_by(e);
                        failure = worse(failure, Failure::Permanent(error));
                    }
                }
            }
            Some(result) = uploads.next(), if !uploads.is_empty() => {
                match result {
                    Ok(uploaded) => {
                        state.bytes_uploaded += uploaded.sent;
                        state.uploaded += 1;
                        let descriptor = Descriptor {
                            digest: uploaded.compressed.digest.clone(),
                            size: uploaded.compressed.size,
                        };
                        state.done.insert(uploaded.compressed.diff_id.clone(), descriptor.clone());
                        state.done.insert(uploaded.path.clone(), descriptor);
                    }
                    Err(failed) => {
                        state.bytes_uploaded += failed.sent;
                        if let Some(upload) = failed.upload {
                            state.open.insert(failed.key, upload);
                        }
                        failure = worse(failure, failed.failure);
                    }
                }
            }
        }
    }
    match (failure, export) {
        (Some(failure), _) => Err(failure),
        (None, Some(export)) => Ok(export),
        (None, None) => Err(Failure::Permanent(Error::failed(format!(
            "the export of {} ended early",
            target.local
        )))),
    }
}

/// The failure that says most of an attempt's: "an upload stopped" (the
/// echo of another failure) least, then one worth another try, then one
/// that is final. The first of equals is kept.
fn worse(current: Option<Failure>, new: Failure) -> Option<Failure> {
    let rank = |failure: &Failure| match failure {
        Failure::Permanent(error) | Failure::Transient(error)
            if error.message == UPLOAD_STOPPED =>
        {
            0
        }
        Failure::Transient(_) => 1,
        Failure::Permanent(_) => 2,
    };
    match current {
        Some(current) if rank(&current) >= rank(&new) => Some(current),
        _ => Some(new),
    }
}

/// One layer on its way: compressed pieces come in, the digest at the end.
struct LayerJob {
    key: String,
    path: String,
    pieces: mpsc::Receiver<Bytes>,
    compressed: oneshot::Receiver<Compressed>,
    permit: tokio::sync::OwnedSemaphorePermit,
}

struct Uploaded {
    path: String,
    compressed: Compressed,
    sent: u64,
}

struct Failed {
    key: String,
    /// The upload to resume, when the registry may still hold it.
    upload: Option<Upload>,
    failure: Failure,
    sent: u64,
}

async fn upload_layer(
    blobs: &Oci,
    repository: &str,
    mut job: LayerJob,
    resume: Option<Upload>,
    chunk: Option<u64>,
) -> std::result::Result<Uploaded, Failed> {
    let _permit = job.permit;
    let sent = AtomicU64::new(0);
    let key = job.key.clone();
    let fail = |failure: Failure, upload: Option<Upload>, sent: &AtomicU64| Failed {
        key: key.clone(),
        upload,
        failure,
        sent: sent.load(Ordering::Relaxed),
    };
    // Where to start: the registry's offset of an upload cut short, or a
    // new upload.
    let resumed = match resume {
        Some(upload) => match blobs.upload_status(&upload).await {
            Ok(Some(offset)) => Some(Upload { offset, ..upload }),
            _ => None,
        },
        None => None,
    };
    let mut upload = match resumed {
        Some(upload) => upload,
        None => match blobs.new_upload(repository).await {
            Ok(upload) => upload,
            Err(error) => return Err(fail(Failure::Permanent(error), None, &sent)),
        },
    };
    // The bytes the registry holds are compressed again and dropped.
    let mut drop_first = upload.offset;
    let mut next_piece = async || -> Option<Bytes> {
        loop {
            let mut piece = job.pieces.recv().await?;
            if drop_first >= piece.len() as u64 {
                drop_first -= piece.len() as u64;
                continue;
            }
            let rest = piece.split_off(drop_first as usize);
            drop_first = 0;
            return Some(rest);
        }
    };

    match chunk {
        Some(chunk) => {
            // Each chunk in a buffer of exactly its size, so that memory
            // stays one chunk (growing a buffer would double it).
            let chunk = chunk as usize;
            let mut carry = Bytes::new();
            let mut ended = false;
            loop {
                let mut buffer = BytesMut::with_capacity(chunk);
                while buffer.len() < chunk {
                    if carry.is_empty() {
                        match next_piece().await {
                            Some(piece) => carry = piece,
                            None => {
                                ended = true;
                                break;
                            }
                        }
                    }
                    let take = carry.len().min(chunk - buffer.len());
                    buffer.extend_from_slice(&carry.split_to(take));
                }
                if !buffer.is_empty()
                    && let Err((failure, upload)) =
                        blobs.send_chunk(&mut upload, buffer.freeze(), &sent).await
                {
                    return Err(fail(failure, upload, &sent));
                }
                if ended && carry.is_empty() {
                    break;
                }
            }
        }
        None => {
            let counted = Arc::new(AtomicU64::new(0));
            let counter = counted.clone();
            let (body_tx, body_rx) = mpsc::channel::<Bytes>(2);
            let stream = futures_util::stream::unfold(body_rx, |mut rx| async move {
                rx.recv().await.map(|piece| {
                    (
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(piece)),
                        rx,
                    )
                })
            });
            let body: Body = BodyExt::boxed(StreamBody::new(stream));
            let feed = async {
                while let Some(piece) = next_piece().await {
                    counter.fetch_add(piece.len() as u64, Ordering::Relaxed);
                    if body_tx.send(piece).await.is_err() {
                        break;
                    }
                }
                drop(body_tx);
            };
            let (patched, ()) = tokio::join!(blobs.patch_stream(&mut upload, body, &counted), feed);
            sent.fetch_add(counted.load(Ordering::Relaxed), Ordering::Relaxed);
            if let Err(failure) = patched {
                return Err(fail(failure, Some(upload), &sent));
            }
        }
    }
    let compressed = match job.compressed.await {
        Ok(compressed) => compressed,
        // The reader failed; its error is the one reported.
        Err(_) => {
            return Err(fail(
                Failure::Permanent(Error::failed(UPLOAD_STOPPED)),
                Some(upload),
                &sent,
            ));
        }
    };
    if upload.offset != compressed.size {
        return Err(fail(
            Failure::Transient(Error::failed(format!(
                "{} holds {} bytes of layer {}, not {}",
                blobs.host(),
                upload.offset,
                compressed.diff_id,
                compressed.size
            ))),
            None,
            &sent,
        ));
    }
    if let Err(error) = blobs.commit(&upload, &compressed.digest).await {
        return Err(fail(Failure::Transient(error), None, &sent));
    }
    Ok(Uploaded {
        path: job.path,
        compressed,
        sent: sent.load(Ordering::Relaxed),
    })
}

/// Which layers the repository and its siblings are known to hold: diff id
/// to blob, from the config of each of [`KNOWN_TAGS`]. What cannot be read
/// is simply not known.
async fn known_layers(
    run: &Run,
    blobs: &Oci,
    registry: &Registry,
    target: &Target<'_>,
) -> HashMap<String, (String, Descriptor)> {
    let mut known = HashMap::new();
    let mut repositories = vec![target.repository.to_string()];
    repositories.extend(
        target
            .siblings
            .iter()
            .filter(|s| *s != target.repository)
            .cloned(),
    );
    // What this machine uploaded before (a run that stopped), confirmed
    // in the repository itself by a HEAD before it is skipped.
    for (diff_id, descriptor) in run.cache.read() {
        known.insert(diff_id, (target.repository.to_string(), descriptor));
    }
    // The registry's tags over that, the repository itself last, so that
    // its own blobs win.
    for repository in repositories.iter().rev() {
        let mut cache = run.known.lock().await;
        if !cache.contains_key(repository) {
            let layers = read_known(blobs, registry, repository).await;
            cache.insert(repository.clone(), layers);
        }
        for (diff_id, descriptor) in &cache[repository] {
            known.insert(diff_id.clone(), (repository.clone(), descriptor.clone()));
        }
    }
    known
}

async fn read_known(
    blobs: &Oci,
    registry: &Registry,
    repository: &str,
) -> HashMap<String, Descriptor> {
    let mut layers = HashMap::new();
    for tag in KNOWN_TAGS {
        let Ok(Some(manifest)) = registry.manifest(repository, tag).await else {
            continue;
        };
        if manifest.is_index() {
            continue;
        }
        let Some(config) = manifest.config_digest() else {
            continue;
        };
        let Ok(config) = blobs.blob(repository, &config).await else {
            continue;
        };
        for (diff_id, descriptor) in pair_layers(&manifest.bytes, &config) {
            layers.insert(diff_id, descriptor);
        }
    }
    layers
}

/// A manifest's layers paired with its config's diff ids, position by
/// position; nothing when the counts differ.
pub fn pair_layers(manifest: &[u8], config: &[u8]) -> Vec<(String, Descriptor)> {
    #[derive(serde::Deserialize)]
    struct Layer {
        digest: String,
        size: u64,
    }
    #[derive(serde::Deserialize)]
    struct Image {
        layers: Vec<Layer>,
    }
    #[derive(serde::Deserialize)]
    struct RootFs {
        diff_ids: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    struct Config {
        rootfs: RootFs,
    }
    let (Ok(image), Ok(config)) = (
        serde_json::from_slice::<Image>(manifest),
        serde_json::from_slice::<Config>(config),
    ) else {
        return Vec::new();
    };
    if image.layers.len() != config.rootfs.diff_ids.len() {
        return Vec::new();
    }
    config
        .rootfs
        .diff_ids
        .into_iter()
        .zip(image.layers)
        .map(|(diff_id, layer)| {
            (
                diff_id,
                Descriptor {
                    digest: layer.digest,
                    size: layer.size,
                },
            )
        })
        .collect()
}

/// The manifest: Docker's schema 2 for an image from the engine's own
/// store (what `docker push` writes), OCI's for an export in the OCI
/// layout (engines with the containerd store).
fn manifest_bytes(outcome: &Outcome) -> (&'static str, Bytes) {
    let (manifest_type, config_type, layer_type) = if outcome.oci {
        (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER)
    } else {
        (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER)
    };
    let descriptor = |media_type: &str, d: &Descriptor| serde_json::json!({"mediaType": media_type, "size": d.size, "digest": d.digest});
    let document = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": descriptor(config_type, &outcome.config),
        "layers": outcome.layers.iter().map(|l| descriptor(layer_type, l)).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec_pretty(&document).expect("a JSON value serialises");
    (manifest_type, Bytes::from(bytes))
}

/// The error's message and causes on one line, for a progress line.
fn one_line(error: &Error) -> String {
    let mut text = error.message.clone();
    for cause in &error.causes {
        text.push_str(": ");
        text.push_str(cause);
    }
    crate::ci::one_line(&text).into_owned()
}

/// The export's bytes, from the task that reads the engine, as a `Read`
/// for the tar reader's thread.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(error)) => return Err(error),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failure_reported_is_the_cause_not_its_echo() {
        let stopped = || Failure::Permanent(Error::failed(UPLOAD_STOPPED));
        let cut = || Failure::Transient(Error::failed("cut"));
        let refused = || Failure::Permanent(Error::failed("413"));
        let message = |f: Option<Failure>| match f {
            Some(Failure::Permanent(e)) | Some(Failure::Transient(e)) => e.message.clone(),
            None => String::new(),
        };
        assert_eq!(message(worse(worse(None, stopped()), cut())), "cut");
        assert_eq!(message(worse(worse(None, cut()), stopped())), "cut");
        assert_eq!(message(worse(worse(None, cut()), refused())), "413");
        assert_eq!(message(worse(worse(None, refused()), cut())), "413");
        let first = worse(None, Failure::Transient(Error::failed("first")));
        assert_eq!(message(worse(first, cut())), "first");
    }

    #[test]
    fn pairs_layers_with_diff_ids_by_position() {
        let manifest =
            br#"{"layers":[{"digest":"sha256:a","size":1},{"digest":"sha256:b","size":2}]}"#;
        let config = br#"{"rootfs":{"type":"layers","diff_ids":["sha256:x","sha256:y"]}}"#;
        let pairs = pair_layers(manifest, config);
        assert_eq!(
            pairs,
            vec![
                (
                    "sha256:x".to_string(),
                    Descriptor {
                        digest: "sha256:a".to_string(),
                        size: 1
                    }
                ),
                (
                    "sha256:y".to_string(),
                    Descriptor {
                        digest: "sha256:b".to_string(),
                        size: 2
                    }
                ),
            ]
        );
        let short = br#"{"rootfs":{"diff_ids":["sha256:x"]}}"#;
        assert!(pair_layers(manifest, short).is_empty());
        assert!(pair_layers(b"nope", config).is_empty());
    }

    #[test]
    fn the_manifest_matches_the_export_layout() {
        let outcome = Outcome {
            oci: false,
            config: Descriptor {
                digest: "sha256:c".to_string(),
                size: 10,
            },
            layers: vec![Descriptor {
                digest: "sha256:l".to_string(),
                size: 20,
            }],
        };
        let (media_type, bytes) = manifest_bytes(&outcome);
        assert_eq!(media_type, DOCKER_MANIFEST);
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["config"]["mediaType"], DOCKER_CONFIG);
        assert_eq!(json["layers"][0]["mediaType"], DOCKER_LAYER);
        assert_eq!(json["layers"][0]["size"], 20);
        let (media_type, bytes) = manifest_bytes(&Outcome {
            oci: true,
            ..outcome
        });
        assert_eq!(media_type, OCI_MANIFEST);
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["layers"][0]["mediaType"], OCI_LAYER);
    }

    #[test]
    fn chunks_are_capped_in_memory() {
        let options = Options {
            chunk_size: Some(90 << 20),
            jobs: 4,
            threads: 2,
        };
        assert_eq!(options.chunk(), Some(MAX_CHUNK));
        let small = Options {
            chunk_size: Some(1 << 20),
            ..options
        };
        assert_eq!(small.chunk(), Some(1 << 20));
        assert_eq!(
            Options {
                chunk_size: None,
                ..options
            }
            .chunk(),
            None
        );
    }
}
