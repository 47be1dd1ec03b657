//! BuildKit's file-sync, the sending side: how a build context reaches the
//! engine when hoist builds with BuildKit, as `DOCKER_BUILDKIT=1 docker
//! build` sends it.
//!
//! The engine's Dockerfile frontend asks the build's session for two local
//! sources, `context` and `dockerfile`, through
//! `moby.filesync.v1.FileSync/DiffCopy`, with gRPC metadata that says which
//! (`dir-name`) and what of it (`include-patterns`, `exclude-patterns`,
//! `followpaths`: the `.dockerignore` rules and the paths that `COPY` and
//! `ADD` read). The answer is fsutil's packet protocol (tonistiigi/fsutil
//! `send.go`): the sender lists every entry as a `STAT`, in walk order, then
//! an empty `STAT`; the receiver asks for the contents it lacks by the
//! entry's index (`REQ`); each file comes back as `DATA` packets ending with
//! an empty one; `FIN` from the receiver is answered with `FIN` and ends the
//! call. BuildKit keeps what it received per session shared key, so a
//! rebuild asks only for the files whose size, mode or mtime changed.
//!
//! The walk here is fsutil's `filterFS` over its `fs` (`filter.go`,
//! `fs.go`, `stat_unix.go`, `hardlinks.go`, `followlinks.go`): names in byte
//! order, a directory before what it holds, a directory that no pattern can
//! reach inside skipped unread, a directory that is left out itself but
//! holds something included listed just before that thing, modes as Go's
//! `os.FileMode` bits, hard links as links to the first name sent, owners
//! reset to 0:0 for the context (the docker CLI's `resetUIDAndGID`).
//! Extended attributes are not sent (a checkout rarely has any; the CLI
//! sends them).
//!
//! Paths travel as bytes: the wire type of fsutil's `string` fields is the
//! same as `bytes`, and Go sends names that are not UTF-8 as they are, so
//! hoist defines the two messages itself instead of using prost `String`s.

use crate::context::read_names;
use crate::dockerignore::{self, Dockerignore, MatchInfo};
use bytes::Bytes;
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tonic::Status;

/// The gRPC method this module serves.
pub const DIFF_COPY: &str = "/moby.filesync.v1.FileSync/DiffCopy";
/// The service's name, for tonic's router.
pub const SERVICE: &str = "moby.filesync.v1.FileSync";

/// File contents go out in packets of at most this many bytes: well under
/// gRPC's default 4 MiB message limit on the engine's side, big enough
/// that per-message costs vanish (fsutil itself sends 32 KiB).
const DATA_CHUNK: usize = 1024 * 1024;
/// The smallest read: what a file that grew since it was listed is read
/// in.
const MIN_READ: usize = 64 * 1024;
/// Packets waiting for the connection: bounds the memory of a transfer
/// to about `PACKETS_IN_FLIGHT * DATA_CHUNK`.
const PACKETS_IN_FLIGHT: usize = 16;
/// Files read at once, as fsutil's sender does.
const FILE_SENDERS: usize = 4;

/// fsutil's `PacketType`.
pub mod kind {
    pub const STAT: i32 = 0;
    pub const REQ: i32 = 1;
    pub const DATA: i32 = 2;
    pub const FIN: i32 = 3;
    pub const ERR: i32 = 4;
}

/// fsutil's `Packet` (`types/wire.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Packet {
    /// One of [`kind`].
    #[prost(int32, tag = "1")]
    pub kind: i32,
    #[prost(message, optional, tag = "2")]
    pub stat: Option<Stat>,
    /// For `REQ` and `DATA`: the index of the entry in the `STAT` listing.
    #[prost(uint32, tag = "3")]
    pub id: u32,
    #[prost(bytes = "bytes", tag = "4")]
    pub data: Bytes,
}

/// fsutil's `Stat` (`types/stat.proto`), paths as bytes; the extended
/// attributes (tag 10) are not sent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Stat {
    /// Slash path from the source's root.
    #[prost(bytes = "vec", tag = "1")]
    pub path: Vec<u8>,
    /// Go's `os.FileMode` bits: see [`go_mode`].
    #[prost(uint32, tag = "2")]
    pub mode: u32,
    #[prost(uint32, tag = "3")]
    pub uid: u32,
    #[prost(uint32, tag = "4")]
    pub gid: u32,
    /// Bytes; 0 for a directory. A second name of a hard link carries the
    /// file's size too, as fsutil's `mkstat` sets it: the receiver compares
    /// it with its own walk of what it kept, which counts it so.
    #[prost(int64, tag = "5")]
    pub size: i64,
    /// Nanoseconds since the Unix epoch.
    #[prost(int64, tag = "6")]
    pub mod_time: i64,
    /// A symlink's target, or for a hard link the path first sent.
    #[prost(bytes = "vec", tag = "7")]
    pub linkname: Vec<u8>,
    #[prost(int64, tag = "8")]
    pub devmajor: i64,
    #[prost(int64, tag = "9")]
    pub devminor: i64,
}

/// Go's `os.FileMode` type bits (`io/fs`).
mod go {
    pub const DIR: u32 = 1 << 31;
    pub const SYMLINK: u32 = 1 << 27;
    pub const DEVICE: u32 = 1 << 26;
    pub const NAMED_PIPE: u32 = 1 << 25;
    pub const SETUID: u32 = 1 << 23;
    pub const SETGID: u32 = 1 << 22;
    pub const CHAR_DEVICE: u32 = 1 << 21;
    pub const STICKY: u32 = 1 << 20;
    /// `ModeType`: what makes an entry something other than a file.
    pub const TYPE: u32 = DIR | SYMLINK | (1 << 24) | NAMED_PIPE | DEVICE | CHAR_DEVICE | (1 << 19);
}

/// A Unix `st_mode` as Go's `os.FileMode` (`os/stat_linux.go`), with the
/// socket bit cleared as fsutil's `mkstat` does (a socket then goes as an
/// empty file: reading it fails and fsutil sends no bytes).
pub fn go_mode(meta: &Metadata) -> u32 {
    let mode = meta.mode();
    let file_type = meta.file_type();
    let mut go_mode = mode & 0o777;
    if file_type.is_dir() {
        go_mode |= go::DIR;
    } else if file_type.is_symlink() {
        go_mode |= go::SYMLINK;
    } else if file_type.is_fifo() {
        go_mode |= go::NAMED_PIPE;
    } else if file_type.is_char_device() {
        go_mode |= go::DEVICE | go::CHAR_DEVICE;
    } else if file_type.is_block_device() {
        go_mode |= go::DEVICE;
    }
    if mode & 0o4000 != 0 {
        go_mode |= go::SETUID;
    }
    if mode & 0o2000 != 0 {
        go_mode |= go::SETGID;
    }
    if mode & 0o1000 != 0 {
        go_mode |= go::STICKY;
    }
    go_mode
}

/// What one local source serves.
#[derive(Debug, Clone)]
pub enum Source {
    /// A directory, walked anew for every request.
    Dir {
        root: PathBuf,
        /// Owners as 0:0 (the context), or as on disk (the CLI's Dockerfile
        /// directory).
        reset_owner: bool,
    },
    /// Named files, served as one flat directory: the Dockerfile under the
    /// name the build asks for, wherever it really is, and the ignore file
    /// that goes with it.
    Files(Vec<(String, PathBuf)>),
}

/// What the engine asked of a source (gRPC metadata, percent-decoded when
/// BuildKit marked a key `-encoded`, as its `decodeOpts` does). Engines
/// that do not encode (Docker 20.10) send a pattern or path with non-ASCII
/// characters as its raw UTF-8 bytes, which are read as they come.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    pub dir_name: String,
    pub include_patterns: Vec<String>,
    pub exclude_patterns: Vec<String>,
    pub follow_paths: Vec<String>,
}

impl Request {
    /// Reads the request from the call's metadata.
    pub fn from_metadata(metadata: &tonic::metadata::MetadataMap) -> Request {
        let values = |key: &str| -> Vec<String> {
            let encoded = metadata
                .get(format!("{key}-encoded").as_str())
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True"));
            // Not `to_str`, which refuses bytes over 0x7f: a `.dockerignore`
            // line or a COPY source with an accent would be dropped.
            metadata
                .get_all(key)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()))
                .map(|v| {
                    if encoded {
                        query_unescape(&v)
                    } else {
                        v.into_owned()
                    }
                })
                .collect()
        };
        Request {
            dir_name: values("dir-name").into_iter().next().unwrap_or_default(),
            include_patterns: values("include-patterns"),
            exclude_patterns: values("exclude-patterns"),
            follow_paths: values("followpaths"),
        }
    }
}

/// Go's `url.QueryUnescape`; a malformed escape gives the empty string, as
/// BuildKit ignores the error.
fn query_unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => out.push(byte),
                    None => return String::new(),
                }
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One entry of a listing, and where its content is read from.
#[derive(Debug, Clone)]
pub struct Entry {
    pub stat: Stat,
    /// For a regular file whose content may be asked for.
    pub content: Option<PathBuf>,
}

/// fsutil's `FilterOpt`, compiled: the include matcher holds the include
/// patterns and the resolved follow paths.
struct Filter {
    include: Option<Dockerignore>,
    exclude: Option<Dockerignore>,
    /// No include pattern has a wildcard before its trailing glob: a
    /// directory that no include pattern starts with is skipped unread.
    only_prefix_includes: bool,
    /// Likewise for the exceptions of the exclude patterns.
    only_prefix_exclude_exceptions: bool,
}

/// A failure of a listing, with the path it concerns, as the engine and
/// the user will read it.
#[derive(Debug)]
pub struct WalkError(pub String);

impl Filter {
    /// `NewFilterFS`: follow paths are resolved through the symlinks of
    /// `root` and added to the include patterns.
    fn new(root: Option<&Path>, request: &Request) -> Result<Filter, WalkError> {
        let mut includes = request.include_patterns.clone();
        if !request.follow_paths.is_empty()
            && let Some(root) = root
            && let Some(targets) = follow_links(root, &request.follow_paths)
        {
            includes.extend(targets);
            includes = dedupe_paths(includes).unwrap_or_default();
        }
        let refuse = |which: &str, cause: String| {
            WalkError(format!("invalid {which} patterns from the engine: {cause}"))
        };
        let include = match includes.is_empty() {
            true => None,
            false => {
                Some(Dockerignore::from_patterns(&includes).map_err(|e| refuse("include", e))?)
            }
        };
        let exclude = match request.exclude_patterns.is_empty() {
            true => None,
            false => Some(
                Dockerignore::from_patterns(&request.exclude_patterns)
                    .map_err(|e| refuse("exclude", e))?,
            ),
        };
        let prefix_only = |ignore: &Option<Dockerignore>, exceptions: bool| {
            ignore.as_ref().is_none_or(|i| {
                i.patterns()
                    .iter()
                    .filter(|p| p.is_exception() == exceptions)
                    .all(|p| !has_pattern_chars(without_trailing_glob(p.bytes())))
            })
        };
        Ok(Filter {
            only_prefix_includes: prefix_only(&include, false),
            only_prefix_exclude_exceptions: prefix_only(&exclude, true),
            include,
            exclude,
        })
    }

    /// Whether some pattern of `ignore` (of the kind `exceptions`) starts
    /// with `dir/`, so the walk must look inside `dir`.
    fn reaches_into(ignore: &Dockerignore, exceptions: bool, dir: &[u8]) -> bool {
        ignore
            .patterns()
            .iter()
            .filter(|p| p.is_exception() == exceptions)
            .any(|p| {
                let pattern = without_trailing_glob(p.bytes());
                pattern.len() > dir.len() && pattern.starts_with(dir) && pattern[dir.len()] == b'/'
            })
    }
}

/// patternmatcher's special characters (fsutil's `patternChars` on Unix).
fn has_pattern_chars(pattern: &[u8]) -> bool {
    pattern.iter().any(|b| b"*[]?^\\".contains(b))
}

/// fsutil's `patternWithoutTrailingGlob`.
fn without_trailing_glob(pattern: &[u8]) -> &[u8] {
    let pattern = pattern.strip_suffix(b"/**").unwrap_or(pattern);
    pattern.strip_suffix(b"/*").unwrap_or(pattern)
}

/// A directory on the way down, and whether it was listed yet: a
/// directory left out itself is listed only when something under it is,
/// just before that (fsutil's `parentDirs`).
struct Parent {
    abs: PathBuf,
    rel: Vec<u8>,
    listed: bool,
}

/// Lists `source` as the engine asked, entry by entry, to `visit`.
pub fn walk(
    source: &Source,
    request: &Request,
    visit: &mut dyn FnMut(Entry) -> Result<(), WalkError>,
) -> Result<(), WalkError> {
    match source {
        Source::Files(files) => walk_files(files, request, visit),
        Source::Dir { root, reset_owner } => {
            let filter = Filter::new(Some(root), request)?;
            let mut walker = Walker {
                filter,
                reset_owner: *reset_owner,
                links: HashMap::new(),
                parents: Vec::new(),
                visit,
            };
            walker.dir(root, &[], MatchInfo::default(), MatchInfo::default())
        }
    }
}

/// The named files, filtered like a directory holding just them.
fn walk_files(
    files: &[(String, PathBuf)],
    request: &Request,
    visit: &mut dyn FnMut(Entry) -> Result<(), WalkError>,
) -> Result<(), WalkError> {
    let filter = Filter::new(None, request)?;
    let mut sorted: Vec<&(String, PathBuf)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (name, real) in sorted {
        let rel = name.as_bytes();
        let included = filter
            .include
            .as_ref()
            .is_none_or(|i| i.matches(rel, &MatchInfo::default()).0);
        let excluded = filter
            .exclude
            .as_ref()
            .is_some_and(|e| e.matches(rel, &MatchInfo::default()).0);
        if !included || excluded {
            continue;
        }
        let meta = fs::metadata(real).map_err(|e| unreadable(real, &e))?;
        let mut stat = stat_of(rel, &meta, None);
        stat.mode &= !go::TYPE;
        visit(Entry {
            stat,
            content: Some(real.clone()),
        })?;
    }
    Ok(())
}

struct Walker<'v> {
    filter: Filter,
    reset_owner: bool,
    /// Inode to the first path sent under it (fsutil's `seenFiles`, keyed
    /// by inode alone as there).
    links: HashMap<u64, Vec<u8>>,
    parents: Vec<Parent>,
    visit: &'v mut dyn FnMut(Entry) -> Result<(), WalkError>,
}

impl Walker<'_> {
    fn dir(
        &mut self,
        abs: &Path,
        rel: &[u8],
        include: MatchInfo,
        exclude: MatchInfo,
    ) -> Result<(), WalkError> {
        let names = match read_names(abs) {
            Ok(names) => names,
            // Gone since it was listed: fsutil skips it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(unreadable(abs, &e)),
        };
        for (name, is_dir) in names {
            let mut child = rel.to_vec();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(name.as_bytes());
            self.one(&abs.join(&name), child, is_dir, &include, &exclude)?;
        }
        Ok(())
    }

    fn one(
        &mut self,
        abs: &Path,
        rel: Vec<u8>,
        is_dir: bool,
        parent_include: &MatchInfo,
        parent_exclude: &MatchInfo,
    ) -> Result<(), WalkError> {
        let mut skip = false;
        let mut include_info = MatchInfo::default();
        let mut exclude_info = MatchInfo::default();
        if let Some(include) = &self.filter.include {
            let (matched, info) = include.matches(&rel, parent_include);
            include_info = info;
            if !matched {
                if is_dir
                    && self.filter.only_prefix_includes
                    && !Filter::reaches_into(include, false, &rel)
                {
                    return Ok(());
                }
                skip = true;
            }
        }
        if let Some(exclude) = &self.filter.exclude {
            let (matched, info) = exclude.matches(&rel, parent_exclude);
            exclude_info = info;
            if matched {
                if is_dir
                    && self.filter.only_prefix_exclude_exceptions
                    && (!exclude.has_exceptions() || !Filter::reaches_into(exclude, true, &rel))
                {
                    return Ok(());
                }
                skip = true;
            }
        }
        if !skip {
            let meta = match fs::symlink_metadata(abs) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(unreadable(abs, &e)),
            };
            self.list_parents()?;
            self.list(abs, &rel, &meta)?;
        }
        if is_dir {
            self.parents.push(Parent {
                abs: abs.to_path_buf(),
                rel: rel.clone(),
                listed: !skip,
            });
            let result = self.dir(abs, &rel, include_info, exclude_info);
            self.parents.pop();
            result?;
        }
        Ok(())
    }

    /// Lists the directories above the entry about to be listed that were
    /// left out themselves, outermost first.
    fn list_parents(&mut self) -> Result<(), WalkError> {
        for i in 0..self.parents.len() {
            if self.parents[i].listed {
                continue;
            }
            self.parents[i].listed = true;
            let (abs, rel) = (self.parents[i].abs.clone(), self.parents[i].rel.clone());
            let meta = fs::symlink_metadata(&abs).map_err(|e| unreadable(&abs, &e))?;
            self.list(&abs, &rel, &meta)?;
        }
        Ok(())
    }

    fn list(&mut self, abs: &Path, rel: &[u8], meta: &Metadata) -> Result<(), WalkError> {
        let file_type = meta.file_type();
        let mut first_name = None;
        if !file_type.is_dir() && meta.nlink() > 1 {
            match self.links.get(&meta.ino()) {
                Some(first) => first_name = Some(first.clone()),
                None => {
                    self.links.insert(meta.ino(), rel.to_vec());
                }
            }
        }
        let linkname = if file_type.is_symlink() {
            let target = fs::read_link(abs).map_err(|e| unreadable(abs, &e))?;
            Some(target.into_os_string().into_vec())
        } else {
            first_name
        };
        let mut stat = stat_of(rel, meta, linkname);
        if self.reset_owner {
            stat.uid = 0;
            stat.gid = 0;
        }
        let content =
            (stat.mode & go::TYPE == 0 && stat.linkname.is_empty()).then(|| abs.to_path_buf());
        (self.visit)(Entry { stat, content })
    }
}

/// fsutil's `mkstat` for one entry; `linkname` is a symlink's target or a
/// hard link's first name.
fn stat_of(rel: &[u8], meta: &Metadata, linkname: Option<Vec<u8>>) -> Stat {
    let is_dir = meta.file_type().is_dir();
    let (devmajor, devminor) = if is_dir { (0, 0) } else { device(meta.rdev()) };
    Stat {
        path: rel.to_vec(),
        mode: go_mode(meta),
        uid: meta.uid(),
        gid: meta.gid(),
        // The full size for a hard link's second name as well (fsutil sets
        // it after `setUnixOpt` zeroed it): with 0, the engine's receiver
        // finds that name changed on every rebuild and relinks it through
        // a temporary name that the rename leaves behind, so the next
        // COPY puts a `.tmp.NNN` file into the image.
        size: if is_dir { 0 } else { meta.size() as i64 },
        mod_time: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        linkname: linkname.unwrap_or_default(),
        devmajor,
        devminor,
    }
}

/// fsutil's `major` and `minor` of a Linux `dev_t`.
fn device(rdev: u64) -> (i64, i64) {
    (
        ((rdev >> 8) & 0xfff) as i64,
        ((rdev & 0xff) | ((rdev >> 12) & 0xfff00)) as i64,
    )
}

fn unreadable(path: &Path, cause: &io::Error) -> WalkError {
    WalkError(format!("cannot read {}: {cause}", path.display()))
}

/// fsutil's `FollowLinks`: each follow path, with every symlink on its way
/// resolved (a wildcard in a name matches the directory's entries), as
/// include patterns. `None` when one of them is the root: no filter.
fn follow_links(root: &Path, paths: &[String]) -> Option<Vec<String>> {
    let mut resolved = BTreeSet::new();
    for path in paths {
        resolve(root, path.as_bytes(), &mut resolved, 0);
    }
    let sorted: Vec<String> = resolved
        .into_iter()
        .map(|p| String::from_utf8_lossy(&p).into_owned())
        .collect();
    dedupe_paths(sorted)
}

/// Symlink chains longer than this are cut, as the kernel's ELOOP does.
const MAX_LINK_DEPTH: usize = 40;

/// `symlinkResolver.append`.
fn resolve(root: &Path, path: &[u8], resolved: &mut BTreeSet<Vec<u8>>, depth: usize) {
    if depth > MAX_LINK_DEPTH {
        return;
    }
    let mut rest = relative_clean(path);
    let mut current: Vec<u8> = Vec::new();
    loop {
        let (first, tail) = match rest.iter().position(|&b| b == b'/') {
            Some(i) => (rest[..i].to_vec(), rest[i + 1..].to_vec()),
            None => (rest.clone(), Vec::new()),
        };
        current = if current.is_empty() || current == b"." {
            first
        } else {
            [current.as_slice(), b"/", &first].concat()
        };
        let targets = read_symlink(root, &current, true);
        rest = tail;
        if (rest.is_empty() || targets.is_some()) && resolved.contains(&current) {
            return;
        }
        if let Some(targets) = targets {
            resolved.insert(current.clone());
            for target in targets {
                let next = if rest.is_empty() {
                    target
                } else {
                    [target.as_slice(), b"/", &rest].concat()
                };
                resolve(root, &next, resolved, depth + 1);
            }
            return;
        }
        if rest.is_empty() {
            resolved.insert(current);
            return;
        }
    }
}

/// `filepath.Join(".", p)`: cleaned, relative, `.` for the root.
fn relative_clean(path: &[u8]) -> Vec<u8> {
    let cleaned = dockerignore::go_clean(&[b"./".as_slice(), path].concat());
    cleaned
        .strip_prefix(b"/")
        .map(<[u8]>::to_vec)
        .unwrap_or(cleaned)
}

/// `symlinkResolver.readSymlink`: the targets of `rel` when it is a
/// symlink (or, with a wildcard in its last name, of the symlinks it
/// matches), as paths from the root; `None` when there are none.
fn read_symlink(root: &Path, rel: &[u8], allow_wildcard: bool) -> Option<Vec<Vec<u8>>> {
    if rel == b"." {
        return None;
    }
    let (dir, base) = match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (b".".as_slice(), rel),
    };
    if allow_wildcard && contains_wildcards(base) {
        let names = read_names(&root.join(std::ffi::OsStr::from_bytes(dir))).ok()?;
        let mut out = Vec::new();
        for (name, _) in names {
            if dockerignore::go_match(base, name.as_bytes()) == Ok(true) {
                let path = if dir == b"." {
                    name.as_bytes().to_vec()
                } else {
                    [dir, b"/", name.as_bytes()].concat()
                };
                out.extend(read_symlink(root, &path, false).unwrap_or_default());
            }
        }
        return (!out.is_empty()).then_some(out);
    }
    let abs = root.join(std::ffi::OsStr::from_bytes(rel));
    let meta = fs::symlink_metadata(&abs).ok()?;
    if !meta.file_type().is_symlink() {
        return None;
    }
    let link = fs::read_link(&abs).ok()?.into_os_string().into_vec();
    let link = dockerignore::go_clean(&link);
    if link.first() == Some(&b'/') {
        return Some(vec![link]);
    }
    let joined = if dir == b"." {
        link
    } else {
        [dir, b"/", &link].concat()
    };
    Some(vec![dockerignore::go_clean(
        &[b"/".as_slice(), &joined].concat(),
    )])
}

/// fsutil's `containsWildcards` (Unix: `\` escapes the next byte).
fn contains_wildcards(name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        match name[i] {
            b'\\' => i += 1,
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// fsutil's `dedupePaths`: drops a path under the one before it; `None`
/// when one is the root (no filter at all).
fn dedupe_paths(paths: Vec<String>) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(paths.len());
    let mut last = String::new();
    for path in paths {
        if path == "." {
            return None;
        }
        if path.starts_with(&format!("{last}/")) {
            continue;
        }
        last = path.clone();
        out.push(path);
    }
    Some(out)
}

/// What was sent through one session, for the build report.
#[derive(Debug, Default)]
pub struct Tally {
    /// Entries listed (`STAT` packets), all requests together.
    pub listed: AtomicU64,
    /// Files whose content the engine asked for.
    pub files: AtomicU64,
    /// Bytes of file content sent.
    pub bytes: AtomicU64,
    /// Why a transfer failed on this side, for the error message.
    pub errors: Mutex<Vec<String>>,
}

impl Tally {
    fn failed(&self, message: String) {
        if let Ok(mut errors) = self.errors.lock() {
            errors.push(message);
        }
    }
}

/// Serves one `DiffCopy` call: lists `source` as `request` asks, on a
/// thread of its own, and answers the engine's `REQ`s with the files'
/// contents, [`FILE_SENDERS`] files at a time. Returns the packets to send;
/// `incoming` is the engine's side of the call.
pub fn diff_copy(
    source: Source,
    request: Request,
    mut incoming: tonic::Streaming<Packet>,
    tally: Arc<Tally>,
) -> mpsc::Receiver<Result<Packet, Status>> {
    let (out, packets) = mpsc::channel(PACKETS_IN_FLIGHT);
    // Listed files by id: where to read them, and the size listed.
    let files: Arc<Mutex<HashMap<u32, (PathBuf, u64)>>> = Arc::default();

    // The listing.
    {
        let (out, files, tally) = (out.clone(), files.clone(), tally.clone());
        tokio::task::spawn_blocking(move || {
            let mut id: u32 = 0;
            let result = walk(&source, &request, &mut |entry| {
                if let Some(path) = entry.content
                    && let Ok(mut files) = files.lock()
                {
                    files.insert(id, (path, entry.stat.size.max(0) as u64));
                }
                id += 1;
                tally.listed.fetch_add(1, Ordering::Relaxed);
                let packet = Packet {
                    kind: kind::STAT,
                    stat: Some(entry.stat),
                    ..Packet::default()
                };
                out.blocking_send(Ok(packet))
                    .map_err(|_| WalkError("the engine closed the transfer".to_string()))
            });
            let last = match result {
                Ok(()) => Packet {
                    kind: kind::STAT,
                    ..Packet::default()
                },
                Err(WalkError(message)) => {
                    tally.failed(message.clone());
                    Packet {
                        kind: kind::ERR,
                        data: Bytes::from(message),
                        ..Packet::default()
                    }
                }
            };
            let _ = out.blocking_send(Ok(last));
        });
    }

    // The file senders, fed by the engine's requests.
    let (queue, jobs) = std::sync::mpsc::channel::<(u32, (PathBuf, u64))>();
    let jobs = Arc::new(Mutex::new(jobs));
    for _ in 0..FILE_SENDERS {
        let (out, jobs, tally) = (out.clone(), jobs.clone(), tally.clone());
        tokio::task::spawn_blocking(move || {
            loop {
                let job = match jobs.lock() {
                    Ok(jobs) => jobs.recv(),
                    Err(_) => return,
                };
                let Ok((id, (path, listed))) = job else {
                    return;
                };
                if send_file(id, &path, listed, &out, &tally).is_err() {
                    return;
                }
            }
        });
    }

    // The engine's requests.
    tokio::spawn(async move {
        loop {
            let packet = match incoming.message().await {
                Ok(Some(packet)) => packet,
                Ok(None) => return,
                Err(status) => {
                    tally.failed(format!(
                        "the engine broke off the transfer: {}",
                        status.message()
                    ));
                    return;
                }
            };
            match packet.kind {
                kind::REQ => {
                    let wanted = files.lock().ok().and_then(|mut f| f.remove(&packet.id));
                    match wanted {
                        Some(wanted) => {
                            tally.files.fetch_add(1, Ordering::Relaxed);
                            let _ = queue.send((packet.id, wanted));
                        }
                        None => {
                            let message = format!("invalid file id {}", packet.id);
                            tally.failed(message.clone());
                            let _ = out
                                .send(Ok(Packet {
                                    kind: kind::ERR,
                                    data: Bytes::from(message),
                                    ..Packet::default()
                                }))
                                .await;
                            return;
                        }
                    }
                }
                kind::FIN => {
                    let _ = out
                        .send(Ok(Packet {
                            kind: kind::FIN,
                            ..Packet::default()
                        }))
                        .await;
                    return;
                }
                kind::ERR => {
                    tally.failed(format!(
                        "the engine failed the transfer: {}",
                        String::from_utf8_lossy(&packet.data)
                    ));
                    return;
                }
                _ => {}
            }
        }
    });
    packets
}

/// Sends one file as `DATA` packets and the empty one that ends it. A file
/// that cannot be opened goes empty, as fsutil sends it; that, when it was
/// listed with bytes, or another size than the `listed` one (the file
/// changed while the engine read it), is a failure of the transfer: fsutil
/// does not notice, and the image then holds a file the tree never had.
/// `Err` when the engine is gone.
fn send_file(
    id: u32,
    path: &Path,
    listed: u64,
    out: &mpsc::Sender<Result<Packet, Status>>,
    tally: &Tally,
) -> Result<(), ()> {
    let data = |data: Bytes| Packet {
        kind: kind::DATA,
        id,
        data,
        ..Packet::default()
    };
    let mut sent = 0;
    match File::open(path) {
        // A socket is listed as an empty file (fsutil clears its type bit)
        // and cannot be opened: empty is what was listed.
        Err(_) if listed == 0 => {}
        Err(e) => tally.failed(format!("cannot read {}: {e}", path.display())),
        Ok(mut file) => {
            // Buffers sized to what is left of the file: a fresh 1 MiB buffer
            // for each small file cost more CPU than sending it (the allocator
            // zeroes what it hands out again).
            let mut left = file.metadata().map_or(0, |m| m.len());
            loop {
                let want = left.clamp(MIN_READ as u64, DATA_CHUNK as u64) as usize;
                let mut chunk = Vec::with_capacity(want);
                let read = match (&mut file).take(want as u64).read_to_end(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        tally.failed(format!("cannot read {}: {e}", path.display()));
                        break;
                    }
                };
                left = left.saturating_sub(read as u64);
                sent += read as u64;
                tally.bytes.fetch_add(read as u64, Ordering::Relaxed);
                out.blocking_send(Ok(data(Bytes::from(chunk))))
                    .map_err(|_| ())?;
            }
            if sent != listed {
                tally.failed(format!(
                    "{} changed while the engine read it: {listed} bytes when listed, {sent} sent",
                    path.display()
                ));
            }
        }
    }
    out.blocking_send(Ok(data(Bytes::new()))).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn listing(root: &Path, request: &Request) -> Vec<String> {
        let source = Source::Dir {
            root: root.to_path_buf(),
            reset_owner: true,
        };
        let mut out = Vec::new();
        walk(&source, request, &mut |entry| {
            out.push(String::from_utf8_lossy(&entry.stat.path).into_owned());
            Ok(())
        })
        .unwrap();
        out
    }

    fn tree(paths: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for path in paths {
            let full = dir.path().join(path);
            if path.ends_with('/') {
                fs::create_dir_all(&full).unwrap();
            } else {
                fs::create_dir_all(full.parent().unwrap()).unwrap();
                fs::write(&full, path).unwrap();
            }
        }
        dir
    }

    fn request(include: &[&str], exclude: &[&str], follow: &[&str]) -> Request {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Request {
            dir_name: "context".to_string(),
            include_patterns: strings(include),
            exclude_patterns: strings(exclude),
            follow_paths: strings(follow),
        }
    }

    #[test]
    fn everything_in_byte_order_a_directory_before_its_entries() {
        let dir = tree(&["b.txt", "a/z", "a/b", "A", "a.txt"]);
        assert_eq!(
            listing(dir.path(), &Request::default()),
            ["A", "a", "a/b", "a/z", "a.txt", "b.txt"]
        );
    }

    #[test]
    fn excludes_with_an_exception_list_the_parent_of_what_they_keep() {
        let dir = tree(&["node_modules/x/big", "node_modules/keep.js", "src/app.js"]);
        let got = listing(
            dir.path(),
            &request(&[], &["node_modules", "!node_modules/keep.js"], &[]),
        );
        assert_eq!(
            got,
            ["node_modules", "node_modules/keep.js", "src", "src/app.js"]
        );
    }

    #[test]
    fn follow_paths_send_only_what_is_copied_and_the_directories_above() {
        let dir = tree(&["big/blob", "src/app/main.js", "src/other.js", "top.txt"]);
        let got = listing(dir.path(), &request(&[], &[], &["src/app"]));
        assert_eq!(got, ["src", "src/app", "src/app/main.js"]);
        // `.` means everything.
        let all = listing(dir.path(), &request(&[], &[], &["."]));
        assert_eq!(all.len(), 7);
    }

    #[test]
    fn a_followed_symlink_brings_its_target() {
        let dir = tree(&["real/file", "other/x"]);
        symlink("real", dir.path().join("link")).unwrap();
        let got = listing(dir.path(), &request(&[], &[], &["link/file"]));
        assert_eq!(got, ["link", "real", "real/file"]);
    }

    #[test]
    fn wildcard_includes_walk_every_directory_but_list_only_matches() {
        let dir = tree(&["a/x.js", "a/y.txt", "b/c/z.js"]);
        let got = listing(dir.path(), &request(&["**/*.js"], &[], &[]));
        assert_eq!(got, ["a", "a/x.js", "b", "b/c", "b/c/z.js"]);
    }

    #[test]
    fn modes_are_go_file_modes_and_hard_links_point_at_the_first_name() {
        let dir = tree(&["f", "d/"]);
        fs::set_permissions(dir.path().join("f"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::hard_link(dir.path().join("f"), dir.path().join("g")).unwrap();
        symlink("f", dir.path().join("s")).unwrap();
        let source = Source::Dir {
            root: dir.path().to_path_buf(),
            reset_owner: true,
        };
        let mut stats = Vec::new();
        walk(&source, &Request::default(), &mut |entry| {
            stats.push((entry.stat, entry.content.is_some()));
            Ok(())
        })
        .unwrap();
        let by = |name: &str| {
            stats
                .iter()
                .find(|(s, _)| s.path == name.as_bytes())
                .unwrap()
        };
        assert_eq!(by("d").0.mode & go::TYPE, go::DIR);
        assert_eq!(by("f").0.mode, go::SETUID | 0o755);
        assert!(by("f").1, "a file's content can be asked for");
        assert_eq!(by("g").0.linkname, b"f");
        // The size of the file, as fsutil's receiver finds it in its own
        // walk of the copy it kept.
        assert_eq!(by("g").0.size, 1);
        assert_eq!(by("f").0.size, 1);
        assert_eq!(by("d").0.size, 0);
        assert!(!by("g").1, "a hard link has no content of its own");
        assert_eq!(by("s").0.mode & go::SYMLINK, go::SYMLINK);
        assert_eq!(by("s").0.linkname, b"f");
        assert_eq!((by("f").0.uid, by("f").0.gid), (0, 0));
    }

    #[test]
    fn a_file_that_changed_since_it_was_listed_fails_the_transfer() {
        let dir = tree(&[]);
        let path = dir.path().join("f");
        fs::write(&path, b"0123456789").unwrap();
        let (out, mut packets) = mpsc::channel(16);
        let tally = Tally::default();
        // Listed with 20 bytes; 10 are there now.
        send_file(7, &path, 20, &out, &tally).unwrap();
        drop(out);
        let mut data = Vec::new();
        while let Some(Ok(packet)) = packets.blocking_recv() {
            assert_eq!((packet.kind, packet.id), (kind::DATA, 7));
            data.push(packet.data);
        }
        assert_eq!(data, [Bytes::from_static(b"0123456789"), Bytes::new()]);
        let errors = tally.errors.lock().unwrap().clone();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("changed while the engine read it: 20 bytes when listed, 10 sent"),
            "{errors:?}"
        );

        // As listed: no error. Gone: sent empty, and an error.
        let (out, _packets) = mpsc::channel(16);
        let tally = Tally::default();
        send_file(1, &path, 10, &out, &tally).unwrap();
        assert!(tally.errors.lock().unwrap().is_empty());
        send_file(2, &dir.path().join("gone"), 3, &out, &tally).unwrap();
        let errors = tally.errors.lock().unwrap().clone();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("cannot read "), "{errors:?}");
        // Listed empty (a socket, which cannot be opened): sent empty, fine.
        let socket = dir.path().join("socket");
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let tally = Tally::default();
        send_file(3, &socket, 0, &out, &tally).unwrap();
        assert!(tally.errors.lock().unwrap().is_empty());
    }

    #[test]
    fn encoded_metadata_is_percent_decoded() {
        assert_eq!(query_unescape("caf%C3%A9+x"), "café x");
        assert_eq!(query_unescape("bad%zz"), "");
    }

    #[test]
    fn raw_non_ascii_metadata_is_read_as_utf8() {
        // Docker 20.10 sends `.dockerignore` lines and COPY sources as they
        // are, without `-encoded`.
        let mut metadata = tonic::metadata::MetadataMap::new();
        let raw = |text: &str| tonic::metadata::MetadataValue::try_from(text.as_bytes()).unwrap();
        metadata.insert("dir-name", raw("context"));
        metadata.append("exclude-patterns", raw("résumé*.txt"));
        metadata.append("exclude-patterns", raw("x y"));
        metadata.append("followpaths", raw("日本語/a.txt"));
        let request = Request::from_metadata(&metadata);
        assert_eq!(request.dir_name, "context");
        assert_eq!(request.exclude_patterns, ["résumé*.txt", "x y"]);
        assert_eq!(request.follow_paths, ["日本語/a.txt"]);

        let mut encoded = tonic::metadata::MetadataMap::new();
        encoded.insert("exclude-patterns-encoded", raw("1"));
        encoded.append("exclude-patterns", raw("r%C3%A9sum%C3%A9%2A.txt"));
        let request = Request::from_metadata(&encoded);
        assert_eq!(request.exclude_patterns, ["résumé*.txt"]);
    }

    #[test]
    fn dedupe_drops_nested_paths_and_the_root_lifts_the_filter() {
        let paths = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            dedupe_paths(paths(&["a", "a/b", "ab"])),
            Some(paths(&["a", "ab"]))
        );
        assert_eq!(dedupe_paths(paths(&["a", "."])), None);
    }
}
