//! The build context: the directory tree that `docker build` sends the
//! engine. With the classic builder it is filtered by `.dockerignore` and
//! streamed as a tar, exactly as the docker CLI builds it
//! (`archive.TarWithOptions` after `TrimBuildFilesFromExcludes`), so that an
//! image built by hoist sees the same files as one built by hand; with
//! BuildKit, a session serves it ([`Context::session_sources`],
//! [`crate::session`]). The ignore file in force is the Dockerfile's own
//! (`<Dockerfile>.dockerignore`) when there is one, else the context's. One
//! walk serves both the tar writer and [`Context::scan`], which sizes the
//! context for `--dry-run` and for the warning about a context that ships
//! `.git` or `node_modules` to the daemon; [`Context::stream`] writes the
//! tar on a thread into a small bounded channel, so a 1 GiB context costs a
//! few hundred KiB of memory.

use crate::dockerignore::{self, Dockerignore, MatchInfo};
use crate::error::{Error, Result};
use bytes::Bytes;
use futures_util::Stream;
use futures_util::task::AtomicWaker;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::task::{Context as TaskContext, Poll};

/// A context bigger than this earns a warning naming its heaviest parts.
pub const WARN_BYTES: u64 = 100 * 1024 * 1024;

/// The name a Dockerfile from outside the context gets inside the tar. The
/// docker CLI picks a random `.dockerfile.<hex>`; a fixed name keeps the
/// tar, and so the engine's cache key for it, the same from run to run.
pub const OUTSIDE_DOCKERFILE: &str = ".hoist-dockerfile";

/// The tar goes to the engine in chunks of this size, at most
/// `CHUNKS_IN_FLIGHT` of them waiting: that bounds the memory of an upload
/// whatever the size of the context.
const CHUNK: usize = 64 * 1024;
const CHUNKS_IN_FLIGHT: usize = 4;

/// How many of the heaviest parts [`Summary::biggest`] names.
const BIGGEST: usize = 3;
/// A directory is heavy when it holds at least 1/`HEAVY_SHARE` of the
/// context's bytes.
const HEAVY_SHARE: u64 = 20;

/// A build context: a directory and the Dockerfile to build it with.
#[derive(Debug, Clone)]
pub struct Context {
    /// The directory, symlinks resolved (the CLI's `EvalSymlinks`).
    dir: PathBuf,
    /// The Dockerfile, symlinks resolved.
    dockerfile: PathBuf,
    /// Where the engine finds the Dockerfile in the tar: its path in the
    /// context, or [`OUTSIDE_DOCKERFILE`] (or a variant) when outside it.
    dockerfile_in_tar: String,
    /// The Dockerfile's own name, which a session serves it under.
    dockerfile_name: String,
    outside: bool,
    /// The rules of the tar: the ignore file's, with the Dockerfile and
    /// `.dockerignore` always sent (the engine reads them from the tar).
    ignore: Dockerignore,
    /// The ignore file's rules alone, as BuildKit applies them to what a
    /// session serves: the Dockerfile comes from its own source there.
    session_ignore: Dockerignore,
    /// `<Dockerfile>.dockerignore`, when it exists: it replaces the
    /// context's `.dockerignore`, as with BuildKit.
    own_ignore: Option<PathBuf>,
    /// Written first into the tar as a PAX global header; see
    /// [`Context::with_build_id`].
    build_id: Option<String>,
}

/// What a context holds, as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Regular files, hard links included.
    pub files: u64,
    /// Directory entries.
    pub dirs: u64,
    /// Every tar entry: files, directories, symlinks, FIFOs, devices.
    pub entries: u64,
    /// Bytes of file content (a hard link's content is sent once).
    pub bytes: u64,
    /// The heaviest directories, heaviest first, at most three: for each of
    /// the top-level directories that weigh most, the deepest directory
    /// under it that holds more than half its bytes, which is what to put
    /// in `.dockerignore` (`services/web/node_modules/`, not `services/`).
    /// Files are not named, nor a directory holding less than
    /// 1/[`HEAVY_SHARE`] of the context: a warning about a 1 GiB context
    /// that names a 13-byte file sends the reader the wrong way.
    pub biggest: Vec<Weight>,
}

/// A part of the context and the bytes it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weight {
    /// Slash path from the context root; a directory ends with `/`.
    pub path: String,
    pub bytes: u64,
}

/// The warning for a context over [`WARN_BYTES`], naming its heaviest
/// parts; `None` below.
pub fn size_warning(summary: &Summary) -> Option<String> {
    if summary.bytes <= WARN_BYTES {
        return None;
    }
    let parts = summary
        .biggest
        .iter()
        .map(|w| format!("{} ({})", w.path, human_bytes(w.bytes)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut text = format!(
        "the build context is {} in {} files",
        human_bytes(summary.bytes),
        summary.files
    );
    if !parts.is_empty() {
        text.push_str(&format!("; the heaviest: {parts}"));
    }
    text.push_str("; list what the image does not need in .dockerignore");
    Some(text)
}

/// `1.5 MiB`-style sizes for people.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

impl Context {
    /// A context from its directory and its Dockerfile (a relative
    /// Dockerfile path is read from the current directory, as `docker build
    /// -f` does). Reads and checks the `.dockerignore`.
    pub fn new(context_dir: &Path, dockerfile: &Path) -> Result<Context> {
        let dir = fs::canonicalize(context_dir).map_err(|e| {
            Error::input(format!(
                "the build context {} does not exist",
                context_dir.display()
            ))
            .caused_by(e)
            .hint("check the image's `context` in hoist.yaml; it is read from the repository root")
        })?;
        if !dir.is_dir() {
            return Err(Error::input(format!(
                "the build context {} is not a directory",
                context_dir.display()
            ))
            .hint("the context is the directory whose files the Dockerfile can COPY"));
        }
        let resolved = fs::canonicalize(dockerfile).map_err(|e| {
            Error::input(format!(
                "the Dockerfile {} does not exist",
                dockerfile.display()
            ))
            .caused_by(e)
            .hint("check the image's `dockerfile` in hoist.yaml, or create the file")
        })?;
        if !resolved.is_file() {
            return Err(Error::input(format!(
                "the Dockerfile {} is not a file",
                dockerfile.display()
            )));
        }
        let own_ignore = own_ignore_file(dockerfile);
        let (mut ignore, own_ignore) = match fs::read(&own_ignore) {
            Ok(text) => (Dockerignore::parse(&own_ignore, &text)?, Some(own_ignore)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Dockerignore::read(&dir)?, None),
            Err(e) => return Err(Error::unreadable("ignore file", &own_ignore, e)),
        };
        let session_ignore = ignore.clone();
        // The engine needs both files whatever the patterns say.
        ignore.always_send(dockerignore::FILE_NAME);
        let (dockerfile_in_tar, outside) = match resolved.strip_prefix(&dir) {
            Ok(rel) => {
                let rel = rel.to_str().ok_or_else(|| {
                    Error::input(format!(
                        "the Dockerfile path {} is not UTF-8, which the engine API cannot carry",
                        dockerfile.display()
                    ))
                })?;
                ignore.always_send(rel);
                (rel.to_string(), false)
            }
            Err(_) => (outside_name(&dir), true),
        };
        let dockerfile_name = dockerfile
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "Dockerfile".to_string());
        Ok(Context {
            dir,
            dockerfile: resolved,
            dockerfile_in_tar,
            dockerfile_name,
            outside,
            ignore,
            session_ignore,
            own_ignore,
            build_id: None,
        })
    }

    /// The context directory, symlinks resolved.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the Dockerfile is in the tar: the `dockerfile` parameter of
    /// the engine's build call.
    pub fn dockerfile_in_tar(&self) -> &str {
        &self.dockerfile_in_tar
    }

    /// Whether the Dockerfile is outside the context (and so added to the
    /// tar under [`Context::dockerfile_in_tar`]).
    pub fn dockerfile_is_outside(&self) -> bool {
        self.outside
    }

    pub fn dockerignore(&self) -> &Dockerignore {
        &self.ignore
    }

    /// The ignore file in force: `<Dockerfile>.dockerignore` beside the
    /// Dockerfile when there is one (BuildKit's rule, which hoist follows
    /// with both builders), else the context's `.dockerignore` (which may
    /// not exist).
    pub fn ignore_file(&self) -> PathBuf {
        self.own_ignore
            .clone()
            .unwrap_or_else(|| self.dir.join(dockerignore::FILE_NAME))
    }

    /// What a BuildKit session serves for this context: the directory, the
    /// Dockerfile under its own name, and the Dockerfile's own ignore file.
    pub fn session_sources(&self) -> crate::session::Sources {
        let mut dockerfile = vec![(self.dockerfile_name.clone(), self.dockerfile.clone())];
        if let Some(own) = &self.own_ignore {
            dockerfile.push((
                format!("{}.dockerignore", self.dockerfile_name),
                own.clone(),
            ));
        }
        crate::session::Sources {
            context: self.dir.clone(),
            dockerfile,
        }
    }

    /// The name the Dockerfile has in a session's `dockerfile` source.
    pub fn dockerfile_name(&self) -> &str {
        &self.dockerfile_name
    }

    /// Sizes the context as a BuildKit session would send it whole: the
    /// ignore file's rules alone (the Dockerfile and `.dockerignore` only
    /// when the rules let them in). The engine asks for less when the
    /// Dockerfile copies less.
    pub fn scan_for_session(&self) -> Result<Summary> {
        let mut tally = Tally::default();
        let walker_ignore = &self.session_ignore;
        let mut walker = Walker {
            ignore: walker_ignore,
            links: HashMap::new(),
            rel: Vec::new(),
            visit: &mut |entry| {
                tally.add(&entry);
                Ok(())
            },
        };
        walker.dir(&self.dir, &MatchInfo::default(), false)?;
        Ok(tally.finish())
    }

    /// Marks the tar as this build's own: its first record becomes a PAX
    /// global header (`comment=<id>`), which unpacking ignores.
    ///
    /// BuildKit keys a context sent as the request body by its content, so
    /// two concurrent builds of byte-identical contexts (two images from
    /// one repository root) were merged into one download; under load the
    /// second build then read the first one's context after the engine had
    /// released it and failed with "context not found". Distinct bytes keep
    /// the builds apart; the steps after the context load are keyed by the
    /// content of the files they copy, so their cache is unaffected.
    pub fn with_build_id(mut self, id: impl Into<String>) -> Context {
        self.build_id = Some(id.into());
        self
    }

    /// Walks the context as [`Context::write_tar`] does, without writing:
    /// what would be sent. Like the docker CLI, it opens every file to be
    /// sent, so an unreadable one fails here already.
    pub fn scan(&self) -> Result<Summary> {
        let mut tally = Tally::default();
        self.entries(&mut |entry| {
            tally.add(&entry);
            Ok(())
        })?;
        Ok(tally.finish())
    }

    /// Writes the context to `out` as a tar: the walk in name order,
    /// directories as entries, file content streamed, permissions and
    /// mtimes kept, owner 0:0 (as the docker CLI sends), symlinks as
    /// symlinks, hard links as links to their first name, FIFOs and devices
    /// as such, sockets left out.
    pub fn write_tar(&self, out: impl Write) -> Result<Summary> {
        let mut tar = tar::Builder::new(out);
        if let Some(id) = &self.build_id {
            append_global_comment(&mut tar, id)?;
        }
        let mut tally = Tally::default();
        self.entries(&mut |entry| {
            tally.add(&entry);
            append(&mut tar, entry)
        })?;
        let mut out = tar.into_inner().map_err(write_error)?;
        out.flush().map_err(write_error)?;
        Ok(tally.finish())
    }

    /// Streams the tar for the engine's build call: [`Context::write_tar`]
    /// runs on its own thread into a bounded channel, and the stream
    /// (suitable for `bollard::body_try_stream`) yields its chunks. When the
    /// walk fails the stream ends with an error, and [`TarWriter::join`]
    /// tells why; when the stream is dropped (the build failed or was
    /// cancelled) the thread stops at its next chunk.
    pub fn stream(self) -> (TarStream, TarWriter) {
        let (sender, receiver) = mpsc::sync_channel(CHUNKS_IN_FLIGHT);
        let waker = Arc::new(AtomicWaker::new());
        let stream = TarStream {
            receiver,
            waker: waker.clone(),
        };
        let mut out = ChunkWriter {
            sender: Some(sender.clone()),
            chunk: Vec::with_capacity(CHUNK),
            waker: waker.clone(),
            reader_gone: false,
        };
        let spawned = std::thread::Builder::new()
            .name("hoist-context".to_string())
            .spawn(move || {
                let result = self.write_tar(&mut out);
                if out.reader_gone {
                    return Ok(None);
                }
                match result {
                    Ok(summary) => Ok(Some(summary)),
                    Err(error) => {
                        // The upload must fail, not end as a shorter tar.
                        out.send(Err(io::Error::other(error.message.clone())));
                        Err(error)
                    }
                }
            });
        let handle = match spawned {
            Ok(handle) => Ok(handle),
            Err(e) => {
                let _ = sender.try_send(Err(io::Error::other(
                    "cannot start the thread that writes the build context",
                )));
                waker.wake();
                Err(
                    Error::failed("cannot start the thread that writes the build context")
                        .caused_by(e),
                )
            }
        };
        drop(sender);
        (stream, TarWriter { handle })
    }

    /// Every entry of the tar, in order: the walk, then (for a Dockerfile
    /// from outside) what the docker CLI's `AddDockerfileToBuildContext`
    /// adds: the Dockerfile under its own name, mode 0600, and its name
    /// appended to `.dockerignore` (created when there is none), so that the
    /// engine drops it from the context after reading it. With the
    /// Dockerfile's own ignore file, the tar's `.dockerignore` is the one
    /// of [`classic_dockerignore`].
    fn entries(&self, visit: &mut dyn FnMut(Entry) -> Result<()>) -> Result<()> {
        let mut had_dockerignore = false;
        let own = self.own_ignore.is_some();
        self.walk(&mut |mut entry| {
            if (self.outside || own)
                && entry.rel == dockerignore::FILE_NAME.as_bytes()
                && let Kind::File(Source::Open(file, path)) = &mut entry.kind
            {
                let mut text = Vec::new();
                file.read_to_end(&mut text)
                    .map_err(|e| unreadable(path, e))?;
                let text = match own {
                    true => classic_dockerignore(
                        Some(&text),
                        &self.session_ignore,
                        &self.dockerfile_in_tar,
                        self.outside,
                    )
                    .unwrap_or(text),
                    false => {
                        text.extend_from_slice(
                            format!("\n{}\n", self.dockerfile_in_tar).as_bytes(),
                        );
                        text
                    }
                };
                entry.kind = Kind::File(Source::Memory(text));
                had_dockerignore = true;
            }
            visit(entry)
        })?;
        if !self.outside && !own {
            return Ok(());
        }
        let mtime = fs::metadata(&self.dockerfile)
            .map(|m| mtime(&m))
            .map_err(|e| unreadable(&self.dockerfile, e))?;
        if self.outside {
            let text = fs::read(&self.dockerfile).map_err(|e| unreadable(&self.dockerfile, e))?;
            visit(Entry {
                rel: self.dockerfile_in_tar.as_bytes(),
                mode: 0o600,
                mtime,
                kind: Kind::File(Source::Memory(text)),
            })?;
        }
        // A `.dockerignore` that is not a regular file (a symlink, say) is
        // sent as it is, and no second one is made.
        let dot_dockerignore = self.dir.join(dockerignore::FILE_NAME);
        if had_dockerignore || fs::symlink_metadata(&dot_dockerignore).is_ok() {
            return Ok(());
        }
        let text = match own {
            true => classic_dockerignore(
                None,
                &self.session_ignore,
                &self.dockerfile_in_tar,
                self.outside,
            ),
            false => Some(
                format!("{}\n{}\n", dockerignore::FILE_NAME, self.dockerfile_in_tar).into_bytes(),
            ),
        };
        if let Some(text) = text {
            visit(Entry {
                rel: dockerignore::FILE_NAME.as_bytes(),
                mode: 0o600,
                mtime,
                kind: Kind::File(Source::Memory(text)),
            })?;
        }
        Ok(())
    }

    /// The walk of `archive.TarWithOptions`: names in byte order, each path
    /// decided with its parent's match results, an excluded directory
    /// skipped unless an exception may re-include something in it.
    fn walk(&self, visit: &mut dyn FnMut(Entry) -> Result<()>) -> Result<()> {
        let mut walker = Walker {
            ignore: &self.ignore,
            links: HashMap::new(),
            rel: Vec::new(),
            visit,
        };
        walker.dir(&self.dir, &MatchInfo::default(), false)
    }
}

/// The `.dockerignore` of a classic build's tar when the Dockerfile has its
/// own ignore file (`own`, its rules): the engine reads the tar's
/// `.dockerignore` only to decide whether to drop the Dockerfile and
/// `.dockerignore` from the context after reading them (moby's
/// `removeDockerfile`), so where the real one (`real`) would decide
/// otherwise than the own file, a line is appended that gives the own
/// file's answer, as the docker CLI appends a Dockerfile from outside. A
/// real `.dockerignore` that the own rules leave out, or none, becomes one
/// that drops itself. `None`: the real one goes as it is, or none is
/// needed.
pub fn classic_dockerignore(
    real: Option<&[u8]>,
    own: &Dockerignore,
    dockerfile_in_tar: &str,
    outside: bool,
) -> Option<Vec<u8>> {
    let drop_dockerfile = outside || own.excludes(dockerfile_in_tar);
    let dockerfile_line = |drop: bool| match drop {
        true => format!("{dockerfile_in_tar}\n"),
        false => format!("!{dockerfile_in_tar}\n"),
    };
    let Some(real) = real.filter(|_| !own.excludes(dockerignore::FILE_NAME)) else {
        if real.is_none() && !drop_dockerfile {
            return None;
        }
        let mut text = format!("{}\n", dockerignore::FILE_NAME);
        if drop_dockerfile {
            text.push_str(&dockerfile_line(true));
        }
        return Some(text.into_bytes());
    };
    // What the real rules decide; unreadable ones decide nothing for sure.
    let rules = Dockerignore::parse(Path::new(dockerignore::FILE_NAME), real).ok();
    let mut lines = String::new();
    if rules
        .as_ref()
        .is_none_or(|r| r.excludes(dockerignore::FILE_NAME))
    {
        lines.push_str(&format!("!{}\n", dockerignore::FILE_NAME));
    }
    if rules
        .as_ref()
        .is_none_or(|r| r.excludes(dockerfile_in_tar) != drop_dockerfile)
    {
        lines.push_str(&dockerfile_line(drop_dockerfile));
    }
    if lines.is_empty() {
        return None;
    }
    let mut text = real.to_vec();
    text.push(b'\n');
    text.extend_from_slice(lines.as_bytes());
    Some(text)
}

/// `<dockerfile>.dockerignore`: the ignore file of one Dockerfile.
fn own_ignore_file(dockerfile: &Path) -> PathBuf {
    let mut name = dockerfile.as_os_str().to_os_string();
    name.push(".dockerignore");
    PathBuf::from(name)
}

/// A name for the outside Dockerfile that no file of the context root has.
fn outside_name(dir: &Path) -> String {
    let taken = |name: &str| fs::symlink_metadata(dir.join(name)).is_ok();
    if !taken(OUTSIDE_DOCKERFILE) {
        return OUTSIDE_DOCKERFILE.to_string();
    }
    (2..)
        .map(|n| format!("{OUTSIDE_DOCKERFILE}-{n}"))
        .find(|name| !taken(name))
        .expect("some number is free")
}

/// One tar entry.
struct Entry<'a> {
    /// Slash path from the context root, as bytes (names need not be UTF-8).
    rel: &'a [u8],
    /// Permission bits with setuid, setgid and sticky, as Go's
    /// `tar.FileInfoHeader` keeps them.
    mode: u32,
    mtime: u64,
    kind: Kind,
}

enum Kind {
    Dir,
    File(Source),
    /// A second name of a file already sent: the first one.
    HardLink(Vec<u8>),
    Symlink(Vec<u8>),
    Fifo,
    Char(u32, u32),
    Block(u32, u32),
}

enum Source {
    /// An open file and its path; its size is the header's.
    Open(File, PathBuf),
    Memory(Vec<u8>),
}

impl Source {
    fn len(&self) -> io::Result<u64> {
        match self {
            Source::Open(file, _) => file.metadata().map(|m| m.len()),
            Source::Memory(bytes) => Ok(bytes.len() as u64),
        }
    }
}

struct Walker<'a, 'v> {
    ignore: &'a Dockerignore,
    /// (device, inode) of files with several names, to their first name in
    /// the tar, for hard-link entries (the CLI's `SeenFiles`).
    links: HashMap<(u64, u64), Vec<u8>>,
    /// The path being visited, relative to the root.
    rel: Vec<u8>,
    visit: &'v mut dyn FnMut(Entry) -> Result<()>,
}

impl Walker<'_, '_> {
    /// Walks the directory `abs` (at `self.rel`), whose patterns matched
    /// `parent`. `excluded`: the directory itself is excluded and only
    /// walked for an exception.
    fn dir(&mut self, abs: &Path, parent: &MatchInfo, excluded: bool) -> Result<()> {
        let names = match read_names(abs) {
            Ok(names) => names,
            // Docker's walk logs an unreadable directory and goes on; only
            // its pre-flight check (which skips excluded directories)
            // fails on one. So an excluded directory opened for an
            // exception may be unreadable; anything else may not.
            Err(_) if excluded => return Ok(()),
            Err(e) => return Err(unreadable(abs, e)),
        };
        for (name, is_dir) in names {
            let len = self.rel.len();
            if len > 0 {
                self.rel.push(b'/');
            }
            self.rel.extend_from_slice(name.as_bytes());
            let result = self.one(&abs.join(&name), is_dir, parent);
            self.rel.truncate(len);
            result?;
        }
        Ok(())
    }

    /// Visits `abs` (at `self.rel`); `is_dir` comes from its directory
    /// entry, as in Go's `WalkDir`: what is left out is never stat'ed.
    fn one(&mut self, abs: &Path, is_dir: bool, parent: &MatchInfo) -> Result<()> {
        let (excluded, info) = self.ignore.matches(&self.rel, parent);
        if excluded {
            if is_dir && self.ignore.walks_excluded_dir(&self.rel) {
                return self.dir(abs, &info, true);
            }
            return Ok(());
        }
        let meta = fs::symlink_metadata(abs).map_err(|e| unreadable(abs, e))?;
        let file_type = meta.file_type();
        let kind = if meta.is_dir() {
            Kind::Dir
        } else if file_type.is_socket() {
            // Go's tar refuses sockets; the CLI logs that and goes on.
            return Ok(());
        } else if let Some(first) = self.first_name(&meta) {
            Kind::HardLink(first)
        } else if file_type.is_symlink() {
            let target = fs::read_link(abs).map_err(|e| unreadable(abs, e))?;
            Kind::Symlink(target.into_os_string().into_encoded_bytes())
        } else if file_type.is_fifo() {
            Kind::Fifo
        } else if file_type.is_char_device() {
            let (major, minor) = device(meta.rdev());
            Kind::Char(major, minor)
        } else if file_type.is_block_device() {
            let (major, minor) = device(meta.rdev());
            Kind::Block(major, minor)
        } else {
            // The CLI checks up front that every file it sends can be
            // opened; this open serves as that check and as the reader.
            let file = File::open(abs).map_err(|e| unreadable(abs, e))?;
            Kind::File(Source::Open(file, abs.to_path_buf()))
        };
        let is_dir = matches!(kind, Kind::Dir);
        (self.visit)(Entry {
            rel: &self.rel,
            mode: meta.mode() & 0o7777,
            mtime: mtime(&meta),
            kind,
        })?;
        if is_dir {
            self.dir(abs, &info, false)?;
        }
        Ok(())
    }

    /// For a non-directory with several names: the name it was first sent
    /// under, else `None` (and this name is remembered).
    fn first_name(&mut self, meta: &Metadata) -> Option<Vec<u8>> {
        if meta.nlink() <= 1 {
            return None;
        }
        let key = (meta.dev(), meta.ino());
        if let Some(first) = self.links.get(&key) {
            return Some(first.clone());
        }
        self.links.insert(key, self.rel.clone());
        None
    }
}

/// The names in `dir` and whether each is a directory (not following
/// symlinks), in byte order as Go's `os.ReadDir` sorts them.
pub(crate) fn read_names(dir: &Path) -> io::Result<Vec<(std::ffi::OsString, bool)>> {
    let mut names = fs::read_dir(dir)?
        .map(|entry| {
            let entry = entry?;
            Ok((entry.file_name(), entry.file_type()?.is_dir()))
        })
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

fn mtime(meta: &Metadata) -> u64 {
    // Seconds, as Docker truncates; a date before 1970 becomes 1970.
    u64::try_from(meta.mtime()).unwrap_or(0)
}

/// glibc's `major()` and `minor()` of a Linux `dev_t`.
fn device(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major as u32, minor as u32)
}

fn unreadable(path: &Path, cause: io::Error) -> Error {
    Error::input(format!(
        "cannot read {} in the build context",
        path.display()
    ))
    .caused_by(cause)
    .hint("make it readable, or leave it out with .dockerignore (docker build fails on it too)")
}

fn write_error(cause: io::Error) -> Error {
    Error::failed("cannot write the build context").caused_by(cause)
}

/// Appends one entry to the tar.
/// A PAX global extended header holding one `comment` record.
fn append_global_comment<W: Write>(tar: &mut tar::Builder<W>, comment: &str) -> Result<()> {
    // A record is "<length> comment=<text>\n", its length counting itself.
    let body = format!(" comment={comment}\n");
    let mut length = body.len() + 1;
    while length.to_string().len() + body.len() != length {
        length += 1;
    }
    let record = format!("{length}{body}");
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::XGlobalHeader);
    header.set_path("pax_global_header").map_err(write_error)?;
    header.set_mode(0o644);
    header.set_size(record.len() as u64);
    header.set_cksum();
    tar.append(&header, record.as_bytes()).map_err(write_error)
}

fn append<W: Write>(tar: &mut tar::Builder<W>, entry: Entry) -> Result<()> {
    let path = Path::new(OsStr::from_bytes(entry.rel));
    let mut header = tar::Header::new_ustar();
    header.set_mode(entry.mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(entry.mtime);
    header.set_size(0);
    let written = match entry.kind {
        Kind::Dir => {
            header.set_entry_type(tar::EntryType::Directory);
            // Directories are named with a trailing slash, as Docker does.
            let mut name = entry.rel.to_vec();
            name.push(b'/');
            tar.append_data(
                &mut header,
                Path::new(OsStr::from_bytes(&name)),
                io::empty(),
            )
        }
        Kind::File(source) => {
            header.set_entry_type(tar::EntryType::Regular);
            let size = source.len().map_err(|e| match &source {
                Source::Open(_, p) => unreadable(p, e),
                Source::Memory(_) => write_error(e),
            })?;
            header.set_size(size);
            match source {
                Source::Memory(bytes) => tar.append_data(&mut header, path, bytes.as_slice()),
                Source::Open(mut file, file_path) => {
                    let mut failure = None;
                    let reader = Exact {
                        file: &mut file,
                        left: size,
                        failure: &mut failure,
                    };
                    let appended = tar.append_data(&mut header, path, reader);
                    // A read error of the file says more than the tar's.
                    if let (Err(_), Some(cause)) = (&appended, failure) {
                        return Err(unreadable(&file_path, cause));
                    }
                    appended
                }
            }
        }
        Kind::HardLink(first) => {
            header.set_entry_type(tar::EntryType::Link);
            tar.append_link(&mut header, path, Path::new(OsStr::from_bytes(&first)))
        }
        Kind::Symlink(target) => {
            header.set_entry_type(tar::EntryType::Symlink);
            tar.append_link(&mut header, path, Path::new(OsStr::from_bytes(&target)))
        }
        Kind::Fifo => {
            header.set_entry_type(tar::EntryType::Fifo);
            tar.append_data(&mut header, path, io::empty())
        }
        Kind::Char(major, minor) => {
            device_entry(tar, header, path, tar::EntryType::Char, major, minor)
        }
        Kind::Block(major, minor) => {
            device_entry(tar, header, path, tar::EntryType::Block, major, minor)
        }
    };
    written.map_err(write_error)
}

fn device_entry<W: Write>(
    tar: &mut tar::Builder<W>,
    mut header: tar::Header,
    path: &Path,
    kind: tar::EntryType,
    major: u32,
    minor: u32,
) -> io::Result<()> {
    header.set_entry_type(kind);
    header.set_device_major(major)?;
    header.set_device_minor(minor)?;
    tar.append_data(&mut header, path, io::empty())
}

/// Reads exactly the size the header announced: a file that shrinks while
/// being sent is an error (the tar would be corrupt), a file that grows is
/// cut at the announced size. Read errors are kept in `failure`, to tell
/// them from write errors.
struct Exact<'a> {
    file: &'a mut File,
    left: u64,
    failure: &'a mut Option<io::Error>,
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        match self.file.read(&mut buf[..want]) {
            Ok(0) => {
                *self.failure = Some(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file got shorter while it was being sent",
                ));
                Err(io::Error::other("read failed"))
            }
            Ok(n) => {
                self.left -= n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                *self.failure = Some(e);
                Err(io::Error::other("read failed"))
            }
        }
    }
}

/// Counts what is sent, and finds the heaviest parts with a stack of the
/// open directories: entries come depth first, so a directory is complete
/// when the walk leaves it, and only the heaviest child of each needs
/// keeping.
#[derive(Default)]
struct Tally {
    summary: Summary,
    open: Vec<OpenDir>,
    /// Top-level entries: their total bytes and their heaviest part.
    top: Vec<(u64, Weight)>,
}

struct OpenDir {
    rel: Vec<u8>,
    bytes: u64,
    /// The heaviest child: its total bytes and its own heaviest part.
    heaviest: Option<(u64, Weight)>,
}

impl Tally {
    fn add(&mut self, entry: &Entry) {
        self.summary.entries += 1;
        let parent = entry
            .rel
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(&entry.rel[..0], |i| &entry.rel[..i]);
        while self
            .open
            .last()
            .is_some_and(|dir| !is_within(parent, &dir.rel))
        {
            self.close();
        }
        // Directories left out but walked for an exception have no entry
        // of their own; they still weigh what they send.
        loop {
            let start = match self.open.last() {
                Some(dir) if dir.rel == parent => break,
                Some(dir) => dir.rel.len() + 1,
                None if parent.is_empty() => break,
                None => 0,
            };
            let end = parent[start..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(parent.len(), |i| start + i);
            self.open.push(OpenDir {
                rel: parent[..end].to_vec(),
                bytes: 0,
                heaviest: None,
            });
        }
        let size = match &entry.kind {
            Kind::Dir => {
                self.summary.dirs += 1;
                self.open.push(OpenDir {
                    rel: entry.rel.to_vec(),
                    bytes: 0,
                    heaviest: None,
                });
                return;
            }
            Kind::File(source) => {
                self.summary.files += 1;
                source.len().unwrap_or(0)
            }
            Kind::HardLink(_) => {
                self.summary.files += 1;
                0
            }
            _ => 0,
        };
        self.summary.bytes += size;
        let weight = Weight {
            path: dockerignore::lossy(entry.rel).into_owned(),
            bytes: size,
        };
        self.settle(size, weight);
    }

    /// Hands a finished child (its bytes, its heaviest part) to the open
    /// directory, or to the top level.
    fn settle(&mut self, bytes: u64, heaviest: Weight) {
        match self.open.last_mut() {
            Some(dir) => {
                dir.bytes += bytes;
                if dir.heaviest.as_ref().is_none_or(|(b, _)| bytes > *b) {
                    dir.heaviest = Some((bytes, heaviest));
                }
            }
            None => self.top.push((bytes, heaviest)),
        }
    }

    fn close(&mut self) {
        let dir = self.open.pop().expect("an open directory");
        let heaviest = match dir.heaviest {
            // A child directory holding most of the bytes says more than
            // its parent; a file is named by its directory.
            Some((bytes, weight))
                if bytes > 0 && bytes * 2 > dir.bytes && weight.path.ends_with('/') =>
            {
                weight
            }
            _ => {
                let mut path = dockerignore::lossy(&dir.rel).into_owned();
                path.push('/');
                Weight {
                    path,
                    bytes: dir.bytes,
                }
            }
        };
        self.settle(dir.bytes, heaviest);
    }

    fn finish(mut self) -> Summary {
        while !self.open.is_empty() {
            self.close();
        }
        self.top
            .sort_by(|a, b| b.0.cmp(&a.0).then(a.1.path.cmp(&b.1.path)));
        let heavy = self.summary.bytes.div_ceil(HEAVY_SHARE).max(1);
        self.summary.biggest = self
            .top
            .into_iter()
            .filter(|(bytes, weight)| *bytes >= heavy && weight.path.ends_with('/'))
            .take(BIGGEST)
            .map(|(_, weight)| weight)
            .collect();
        self.summary
    }
}

/// Whether `path` is `dir` or inside it.
fn is_within(path: &[u8], dir: &[u8]) -> bool {
    path.starts_with(dir) && (path.len() == dir.len() || path[dir.len()] == b'/')
}

/// The tar as a stream of chunks for the engine's build call, from
/// [`Context::stream`].
pub struct TarStream {
    receiver: Receiver<io::Result<Bytes>>,
    waker: Arc<AtomicWaker>,
}

impl Stream for TarStream {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let poll = |receiver: &Receiver<io::Result<Bytes>>| match receiver.try_recv() {
            Ok(chunk) => Some(Poll::Ready(Some(chunk))),
            Err(TryRecvError::Disconnected) => Some(Poll::Ready(None)),
            Err(TryRecvError::Empty) => None,
        };
        if let Some(ready) = poll(&self.receiver) {
            return ready;
        }
        self.waker.register(cx.waker());
        // A chunk sent between the first look and the registration would
        // otherwise wait for the next one.
        poll(&self.receiver).unwrap_or(Poll::Pending)
    }
}

/// The thread writing a [`TarStream`].
pub struct TarWriter {
    handle: Result<std::thread::JoinHandle<Result<Option<Summary>>>>,
}

impl TarWriter {
    /// Waits for the writer: `Ok(Some(summary))` when the whole tar was
    /// sent, `Ok(None)` when the stream was dropped before the end (the
    /// engine's answer then says why), `Err` when the context could not be
    /// read (which explains a failed upload better than the engine can).
    /// Once the stream has ended or been dropped, this returns at once.
    pub fn join(self) -> Result<Option<Summary>> {
        match self.handle {
            Ok(handle) => handle.join().unwrap_or_else(|_| {
                Err(Error::failed(
                    "the thread writing the build context panicked",
                ))
            }),
            Err(error) => Err(error),
        }
    }

    /// Whether [`TarWriter::join`] would return without waiting.
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().map_or(true, |h| h.is_finished())
    }
}

/// Collects the tar into chunks and hands them to the stream, waiting while
/// `CHUNKS_IN_FLIGHT` are unread.
struct ChunkWriter {
    sender: Option<SyncSender<io::Result<Bytes>>>,
    chunk: Vec<u8>,
    waker: Arc<AtomicWaker>,
    reader_gone: bool,
}

impl ChunkWriter {
    fn send(&mut self, item: io::Result<Bytes>) -> bool {
        let sent = self
            .sender
            .as_ref()
            .is_some_and(|sender| sender.send(item).is_ok());
        if sent {
            self.waker.wake();
        } else {
            self.reader_gone = true;
        }
        sent
    }

    fn send_chunk(&mut self) -> io::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
        if self.send(Ok(Bytes::from(chunk))) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the reader of the build context went away",
            ))
        }
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.reader_gone {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the reader of the build context went away",
            ));
        }
        let n = buf.len().min(CHUNK - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..n]);
        if self.chunk.len() == CHUNK {
            self.send_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_chunk()
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        // The stream sees the end only once the sender is gone: wake it
        // after dropping it.
        self.sender.take();
        self.waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rel: &str, kind: Kind) -> Entry<'_> {
        Entry {
            rel: rel.as_bytes(),
            mode: 0o644,
            mtime: 0,
            kind,
        }
    }

    fn file(size: usize) -> Kind {
        Kind::File(Source::Memory(vec![0; size]))
    }

    fn weights(summary: &Summary) -> Vec<(&str, u64)> {
        summary
            .biggest
            .iter()
            .map(|w| (w.path.as_str(), w.bytes))
            .collect()
    }

    #[test]
    fn the_heaviest_parts_are_the_deepest_that_hold_most() {
        let mut tally = Tally::default();
        for (rel, kind) in [
            (".git", Kind::Dir),
            (".git/objects", Kind::Dir),
            (".git/objects/pack", file(700)),
            (".git/config", file(10)),
            ("Dockerfile", file(5)),
            ("dump.sql", file(400)),
            ("services", Kind::Dir),
            ("services/api", Kind::Dir),
            ("services/api/main.go", file(100)),
            ("services/web", Kind::Dir),
            ("services/web/node_modules", Kind::Dir),
            ("services/web/node_modules/a", Kind::Dir),
            ("services/web/node_modules/a/x.js", file(300)),
            ("services/web/node_modules/b.js", file(300)),
            ("services/web/index.js", file(50)),
            ("src", Kind::Dir),
            ("src/lib.rs", file(20)),
        ] {
            tally.add(&entry(rel, kind));
        }
        let summary = tally.finish();
        assert_eq!(summary.files, 9);
        assert_eq!(summary.dirs, 8);
        assert_eq!(summary.entries, 17);
        assert_eq!(
            summary.bytes,
            700 + 10 + 5 + 400 + 100 + 300 + 300 + 50 + 20
        );
        assert_eq!(
            weights(&summary),
            [
                // services: 750, web 650 of it, node_modules 600 of that,
                // and no child of node_modules holds more than half.
                ("services/web/node_modules/", 600),
                // .git: 710, objects 700 of it, and the file holding that
                // is named by its directory.
                (".git/objects/", 700),
                // dump.sql (400) is a file; src/ (20) is under 1/20.
            ]
        );
    }

    #[test]
    fn directories_walked_only_for_an_exception_still_weigh() {
        let mut tally = Tally::default();
        for (rel, kind) in [
            ("build/keep/a.bin", file(10)),
            ("build/keep/b.bin", file(10)),
            ("src", Kind::Dir),
            ("src/x", file(1)),
        ] {
            tally.add(&entry(rel, kind));
        }
        let summary = tally.finish();
        assert_eq!(summary.dirs, 1);
        // src/ holds 1 of 21 bytes: not heavy.
        assert_eq!(weights(&summary), [("build/keep/", 20)]);
    }

    /// The reference case: a context of one heavy directory beside the
    /// Dockerfile and a few small files names the directory alone.
    #[test]
    fn small_files_are_never_among_the_heaviest() {
        let mut tally = Tally::default();
        for (rel, kind) in [
            ("Dockerfile", file(13)),
            ("README.md", file(13)),
            ("node_modules", Kind::Dir),
            ("node_modules/big.bin", file(5000)),
            ("node_modules/small.js", file(10)),
        ] {
            tally.add(&entry(rel, kind));
        }
        assert_eq!(weights(&tally.finish()), [("node_modules/", 5010)]);
    }

    #[test]
    fn the_warning_names_the_heaviest_parts() {
        let small = Summary {
            bytes: WARN_BYTES,
            ..Summary::default()
        };
        assert_eq!(size_warning(&small), None);
        let big = Summary {
            files: 52_000,
            bytes: 1536 * 1024 * 1024,
            biggest: vec![
                Weight {
                    path: "node_modules/".into(),
                    bytes: 900 * 1024 * 1024,
                },
                Weight {
                    path: ".git/".into(),
                    bytes: 500 * 1024 * 1024,
                },
            ],
            ..Summary::default()
        };
        assert_eq!(
            size_warning(&big).unwrap(),
            "the build context is 1.5 GiB in 52000 files; the heaviest: \
             node_modules/ (900.0 MiB), .git/ (500.0 MiB); list what the image \
             does not need in .dockerignore"
        );
    }

    #[test]
    fn device_numbers_split_like_glibc() {
        // /dev/null is 1:3, /dev/nvme0n1 often 259:0; a large minor too.
        assert_eq!(device(0x0103), (1, 3));
        assert_eq!(device(259 << 8), (259, 0));
        let rdev = ((0x1234u64 & 0xfff) << 8)
            | ((0x1234u64 & !0xfff) << 32)
            | (0x56789 & 0xff)
            | ((0x56789 & !0xff) << 12);
        assert_eq!(device(rdev), (0x1234, 0x56789));
    }
}
