//! `hoist build` with BuildKit serves the context through a session
//! (`POST /session`, FileSync/DiffCopy) against the real engine: for a
//! table of trees, the layer that `COPY . /ctx/` makes from hoist's session
//! must hold what Debian's `DOCKER_BUILDKIT=1 /usr/bin/docker build` puts
//! there from the same tree, entry by entry (name, type, permissions with
//! setuid/setgid/sticky, owner, size, content, link target, hard links,
//! extended attributes as the layer records them, mtimes of all but
//! directories), on a first build and again on a rebuild,
//! which the engine answers from the copy it kept of the first transfer.
//! Then what reaches the engine: only what changed on a rebuild, only what
//! the Dockerfile copies, nothing `.dockerignore` or
//! `<Dockerfile>.dockerignore` keeps out.
//!
//! Every build runs with `--no-cache`: a layer from the cache would hide
//! what the transfer did. Images are removed afterwards. Without an engine
//! or `/usr/bin/docker` the tests print why and pass, except with
//! `CI=true`, where they fail.

mod common;

use common::docker::{DOCKER_CLI, TempImage, in_ci, require_engine, try_docker, unique_name};
use common::hoist;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const MIB: u64 = 1024 * 1024;

/// The Dockerfile of most cases: the whole context under /ctx/.
const COPY_ALL: &str = "FROM scratch\nCOPY . /ctx/\n";

// ---------------------------------------------------------------------------
// Trees.

/// Writes `content` to `root/rel`, making the directories above.
fn write(root: &Path, rel: impl AsRef<Path>, content: impl AsRef<[u8]>) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn mkdir(root: &Path, rel: &str) {
    fs::create_dir_all(root.join(rel)).unwrap();
}

fn chmod(root: &Path, rel: impl AsRef<Path>, mode: u32) {
    fs::set_permissions(root.join(rel), fs::Permissions::from_mode(mode)).unwrap();
}

/// Sets a file's mtime to `secs.nanos` after the epoch.
fn set_mtime(root: &Path, rel: impl AsRef<Path>, secs: u64, nanos: u32) {
    let time = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
    fs::File::options()
        .write(true)
        .open(root.join(rel))
        .unwrap()
        .set_modified(time)
        .unwrap();
}

/// Whether the tests run as root, which owners other than one's own and
/// device nodes need. Not root: those parts are skipped, saying so, except
/// with `CI=true`, where that fails.
fn is_root(what: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    if fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        return true;
    }
    assert!(!in_ci(), "CI=true but not root: {what} needs root");
    eprintln!("skipped: {what} (needs root)");
    false
}

fn mknod(path: &Path, kind: &str, major: u32, minor: u32) {
    let status = Command::new("mknod")
        .arg(path)
        .args([kind, &major.to_string(), &minor.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "mknod {}", path.display());
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

fn chown(path: &Path, owner: &str) {
    let status = Command::new("chown")
        .args(["-h", owner])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "chown {owner} {}", path.display());
}

/// Random bytes, different for every `seed`: no two files share content.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut bytes = vec![0; len];
    rng.fill(&mut bytes);
    bytes
}

/// A file of `len` random bytes, written in pieces.
fn big_file(path: &Path, len: u64, seed: u64) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut file = fs::File::create(path).unwrap();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut chunk = vec![0; MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB) as usize;
        rng.fill(&mut chunk[..n]);
        file.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
}

// ---------------------------------------------------------------------------
// Builds.

/// A project directory with a hoist.yaml of one image, named uniquely, whose
/// tags are removed on drop.
struct Project {
    dir: tempfile::TempDir,
    name: String,
    _tags: [TempImage; 2],
}

impl Project {
    fn new() -> Project {
        let name = unique_name("session");
        Project {
            dir: tempfile::tempdir().unwrap(),
            _tags: [
                TempImage::new(format!("{name}:staging-0123456")),
                TempImage::new(format!("{name}:staging-latest")),
            ],
            name,
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The image the last build tagged.
    fn image(&self) -> String {
        format!("{}:staging-latest", self.name)
    }

    /// `hoist build --builder <builder> --no-cache --format json` of the
    /// image with `context` and `dockerfile` (paths from the project root);
    /// returns the image's entry of the report and the build log.
    fn build(&self, context: &str, dockerfile: &str, builder: &str) -> (Value, String) {
        fs::write(
            self.root().join("hoist.yaml"),
            format!(
                "images:\n  {}:\n    context: {context}\n    dockerfile: {dockerfile}\n",
                self.name
            ),
        )
        .unwrap();
        let out = hoist(
            self.root(),
            &[
                "build",
                "--sha",
                SHA,
                "--builder",
                builder,
                "--no-cache",
                "--format",
                "json",
            ],
            &[],
        );
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "hoist build ({builder}): {log}");
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        let image = report["images"][0].clone();
        let route = if builder == "classic" {
            "tar"
        } else {
            "session"
        };
        assert_eq!(image["context_sent"]["route"], route, "{report}\n{log}");
        (image, log)
    }
}

/// What hoist's report says it sent: (files, bytes).
fn sent(image: &Value) -> (u64, u64) {
    let sent = &image["context_sent"];
    (
        sent["files"].as_u64().unwrap_or_else(|| panic!("{image}")),
        sent["bytes"].as_u64().unwrap_or_else(|| panic!("{image}")),
    )
}

/// `DOCKER_BUILDKIT=1 /usr/bin/docker build --no-cache -f <dockerfile>
/// <context>`; the image is removed when the result is dropped.
fn cli_build(context: &Path, dockerfile: &Path) -> TempImage {
    let image = TempImage::unique("session-cli");
    let out = try_docker(
        &[("DOCKER_BUILDKIT", "1")],
        &[
            "build",
            "--no-cache",
            "--quiet",
            "--tag",
            image.name(),
            "--file",
            dockerfile.to_str().unwrap(),
            context.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{DOCKER_CLI} build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

// ---------------------------------------------------------------------------
// Image listings.

/// One entry of an image's file system, as compared.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    /// `f` file, `d` directory, `l` symlink, `h` hard link (a second name
    /// of a file in the same layer), `p` FIFO, `c`/`b` devices.
    kind: char,
    /// Permission bits with setuid, setgid and sticky.
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    /// Seconds. Not for directories: the engine's receiver writes into the
    /// directories it keeps, so theirs is when the transfer ran, for the
    /// CLI as for hoist.
    mtime: Option<u64>,
    /// A symlink's target, or a hard link's first name (from /ctx/).
    link: Vec<u8>,
    /// sha256 of a file's content.
    digest: String,
    /// `SCHILY.xattr.*` records.
    xattrs: Vec<(String, Vec<u8>)>,
}

/// An image's entries under a directory, by path from it (`.` for the
/// directory itself).
type Listing = BTreeMap<Vec<u8>, Item>;

fn line(path: &[u8], item: &Item) -> String {
    format!(
        "{} {} {:04o} {}:{} size={} mtime={:?} link={} sha256={} xattrs={:?}",
        show(path),
        item.kind,
        item.mode,
        item.uid,
        item.gid,
        item.size,
        item.mtime,
        show(&item.link),
        item.digest.get(..12).unwrap_or_default(),
        item.xattrs
    )
}

/// A path as text: as it is when it is UTF-8, else escaped.
fn show(path: &[u8]) -> String {
    match std::str::from_utf8(path) {
        Ok(text) => format!("{text:?}"),
        Err(_) => format!("b\"{}\"", path.escape_ascii()),
    }
}

/// The paths of a listing (UTF-8 ones as they are, others escaped), for
/// messages and set checks.
fn names(listing: &Listing) -> BTreeSet<String> {
    listing
        .keys()
        .map(|p| match std::str::from_utf8(p) {
            Ok(text) => text.to_string(),
            Err(_) => p.escape_ascii().to_string(),
        })
        .collect()
}

/// The content of one regular file of `image` (`path` without a leading
/// `/`), through a container that is never started.
fn image_file(image: &str, path: &str) -> Vec<u8> {
    let created = try_docker(&[], &["create", image, "x"]);
    assert!(created.status.success(), "docker create {image}");
    let id = String::from_utf8_lossy(&created.stdout).trim().to_string();
    let copied = try_docker(&[], &["cp", &format!("{id}:/{path}"), "-"]);
    let _ = try_docker(&[], &["rm", &id]);
    assert!(copied.status.success(), "docker cp {image}:/{path}");
    let mut archive = tar::Archive::new(copied.stdout.as_slice());
    let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
    let mut content = Vec::new();
    entry.read_to_end(&mut content).unwrap();
    content
}

/// The entries of `image` under `dir` (e.g. `ctx`), read from `docker save`
/// (streamed: layers are not held in memory), its layers applied in order.
fn listing(image: &str, dir: &str) -> Listing {
    let mut child = Command::new(DOCKER_CLI)
        .args(["save", image])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut layers: HashMap<String, Vec<Change>> = HashMap::new();
    let mut manifest: Option<Value> = None;
    let mut outer = tar::Archive::new(child.stdout.take().unwrap());
    for entry in outer.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        if path == "manifest.json" {
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            manifest = Some(serde_json::from_str(&text).unwrap());
        } else if path.ends_with("/layer.tar") {
            layers.insert(path, layer_items(&mut entry, dir));
        }
    }
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "docker save {image}: {stderr}"
    );
    let manifest = manifest.unwrap_or_else(|| panic!("docker save {image}: no manifest.json"));
    let mut listing = Listing::new();
    for layer in manifest[0]["Layers"].as_array().unwrap() {
        let layer = layer.as_str().unwrap();
        let items = layers
            .remove(layer)
            .unwrap_or_else(|| panic!("docker save {image}: no {layer}"));
        for (path, item) in items {
            match item {
                Some(item) => {
                    listing.insert(path, item);
                }
                // A whiteout: the path and what was under it are gone.
                None => listing.retain(|p, _| {
                    p != &path && !(p.starts_with(&path) && p.get(path.len()) == Some(&b'/'))
                }),
            }
        }
    }
    listing
}

/// What a layer does to one path: puts an entry there, or (a whiteout,
/// `None`) removes what was there.
type Change = (Vec<u8>, Option<Item>);

/// The entries of one layer tar under `dir`.
fn layer_items(layer: impl Read, dir: &str) -> Vec<Change> {
    let prefix = format!("{dir}/");
    let from_dir = |path: &[u8]| -> Option<Vec<u8>> {
        let path = path.strip_suffix(b"/").unwrap_or(path);
        if path == dir.as_bytes() {
            return Some(b".".to_vec());
        }
        path.strip_prefix(prefix.as_bytes()).map(<[u8]>::to_vec)
    };
    let mut items = Vec::new();
    let mut archive = tar::Archive::new(layer);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let Some(path) = from_dir(&entry.path_bytes()) else {
            continue;
        };
        let base = path.rsplit(|&b| b == b'/').next().unwrap();
        if let Some(hidden) = base.strip_prefix(b".wh.") {
            let mut gone = path[..path.len() - base.len()].to_vec();
            gone.extend_from_slice(hidden);
            items.push((gone, None));
            continue;
        }
        let header = entry.header().clone();
        let kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => 'f',
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            tar::EntryType::Fifo => 'p',
            tar::EntryType::Char => 'c',
            tar::EntryType::Block => 'b',
            other => panic!("{}: entry type {other:?}", show(&path)),
        };
        let link = entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default();
        let link = match kind {
            'h' => from_dir(&link).unwrap_or(link),
            _ => link,
        };
        let mut xattrs = Vec::new();
        if let Some(records) = entry.pax_extensions().unwrap() {
            for record in records {
                let record = record.unwrap();
                let key = record.key().unwrap_or_default();
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.push((name.to_string(), record.value_bytes().to_vec()));
                }
            }
        }
        let size = entry.size();
        let mut hash = Sha256::new();
        if kind == 'f' {
            let mut buffer = vec![0; 256 * 1024];
            loop {
                let n = entry.read(&mut buffer).unwrap();
                if n == 0 {
                    break;
                }
                hash.update(&buffer[..n]);
            }
        }
        let digest = match kind {
            'f' => hash.finalize().iter().map(|b| format!("{b:02x}")).collect(),
            _ => String::new(),
        };
        items.push((
            path,
            Some(Item {
                kind,
                mode: header.mode().unwrap() & 0o7777,
                uid: header.uid().unwrap(),
                gid: header.gid().unwrap(),
                size,
                mtime: (kind != 'd').then(|| header.mtime().unwrap()),
                link,
                digest,
                xattrs,
            }),
        ));
    }
    items
}

/// Fails with the lines that only one side has.
fn assert_same(what: &str, hoist: &Listing, cli: &Listing) {
    if hoist == cli {
        return;
    }
    let lines = |listing: &Listing| -> BTreeSet<String> {
        listing.iter().map(|(p, i)| line(p, i)).collect()
    };
    let (ours, theirs) = (lines(hoist), lines(cli));
    let only = |a: &BTreeSet<String>, b: &BTreeSet<String>| -> String {
        a.difference(b)
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
    };
    panic!(
        "{what}: the image differs from the CLI's\nonly in hoist's:\n{}only in the CLI's:\n{}",
        only(&ours, &theirs),
        only(&theirs, &ours)
    );
}

/// What [`same_as_cli`] found.
struct Compared {
    /// /ctx/ of the three images.
    listing: Listing,
    /// hoist's first build: its entry of the report, and its log.
    first: Value,
    log: String,
}

/// Builds `context` with `dockerfile` (paths from the project root) with
/// hoist, then with the CLI, then with hoist again (a rebuild, which the
/// engine answers by diffing against the copy it kept of the first
/// transfer), and checks the three images hold the same /ctx/.
fn same_as_cli(project: &Project, context: &str, dockerfile: &str) -> Compared {
    same_as_cli_but(project, context, dockerfile, &[])
}

/// [`same_as_cli`] where the CLI's image also has `only_in_cli` (which
/// must be there), for a known difference of the CLI's.
fn same_as_cli_but(
    project: &Project,
    context: &str,
    dockerfile: &str,
    only_in_cli: &[&str],
) -> Compared {
    let (first_report, log) = project.build(context, dockerfile, "buildkit");
    let first = listing(&project.image(), "ctx");
    let cli = cli_build(
        &project.root().join(context),
        &project.root().join(dockerfile),
    );
    let mut theirs = listing(cli.name(), "ctx");
    for path in only_in_cli {
        assert!(
            theirs.remove(path.as_bytes()).is_some(),
            "the CLI's image has no {path} any more: {:?}",
            names(&theirs)
        );
    }
    assert_same("hoist's first build", &first, &theirs);
    project.build(context, dockerfile, "buildkit");
    let again = listing(&project.image(), "ctx");
    assert_same("hoist's rebuild", &again, &theirs);
    Compared {
        listing: theirs,
        first: first_report,
        log,
    }
}

fn item(listing: &Listing, path: impl AsRef<[u8]>) -> &Item {
    let path = path.as_ref();
    listing
        .get(path)
        .unwrap_or_else(|| panic!("{} is not in the image: {:?}", show(path), names(listing)))
}

fn assert_absent(listing: &Listing, paths: &[&str]) {
    for path in paths {
        assert!(
            !listing.contains_key(path.as_bytes()),
            "{path} is in the image: {:?}",
            names(listing)
        );
    }
}

/// sha256 of a file on disk, as [`Item::digest`].
fn digest_of(path: &Path) -> String {
    Sha256::digest(fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------
// The table: trees compared with the CLI.

#[test]
fn plain_files_nested_directories_and_an_empty_one() {
    if !require_engine() {
        return;
    }
    let project = Project::new();
    let ctx = project.root().join("ctx");
    write(&ctx, "Dockerfile", COPY_ALL);
    write(&ctx, "README", "hello\n");
    write(&ctx, "empty-file", "");
    write(&ctx, "a/b/c/deep.txt", "deep\n");
    write(&ctx, "a/sibling.txt", "sibling\n");
    write(&ctx, "bin/blob", noise(300_000, 1));
    mkdir(&ctx, "empty");
    mkdir(&ctx, "a/b/empty-too");
    set_mtime(&ctx, "README", 1_000_000_000, 0);
    set_mtime(&ctx, "a/b/c/deep.txt", 1_500_000_000, 987_654_321);

    let listing = same_as_cli(&project, "ctx", "ctx/Dockerfile").listing;
    let expected: BTreeSet<String> = [
        ".",
        "Dockerfile",
        "README",
        "a",
        "a/b",
        "a/b/c",
        "a/b/c/deep.txt",
        "a/b/empty-too",
        "a/sibling.txt",
        "bin",
        "bin/blob",
        "empty",
        "empty-file",
    ]
    .map(String::from)
    .into();
    assert_eq!(names(&listing), expected);
    assert_eq!(
        item(&listing, "bin/blob").digest,
        digest_of(&ctx.join("bin/blob"))
    );
    assert_eq!(item(&listing, "empty").kind, 'd');
    assert_eq!(item(&listing, "README").mtime, Some(1_000_000_000));
    assert_eq!(item(&listing, "a/b/c/deep.txt").mtime, Some(1_500_000_000));
}

#[test]
fn links_modes_owners_and_special_files() {
    if !require_engine() {
        return;
    }
    let project = Project::new();
    let ctx = project.root().join("ctx");
    write(&ctx, "Dockerfile", COPY_ALL);
    write(&ctx, "dir/file.txt", "in a dir\n");
    symlink("dir/file.txt", ctx.join("relative")).unwrap();
    symlink("/etc/passwd", ctx.join("absolute")).unwrap();
    symlink("nowhere/at/all", ctx.join("dangling")).unwrap();
    symlink("dir", ctx.join("to-dir")).unwrap();
    symlink("../../outside", ctx.join("dir/up-and-out")).unwrap();
    // Hard links: three names of one file, one in a directory; a pair whose
    // first name is excluded, so the second goes as a file of its own; a
    // pair whose second name is excluded.
    write(&ctx, "linked-1", noise(5000, 2));
    fs::hard_link(ctx.join("linked-1"), ctx.join("linked-2")).unwrap();
    fs::hard_link(ctx.join("linked-1"), ctx.join("dir/linked-3")).unwrap();
    write(&ctx, "a-excluded-first", "first name excluded\n");
    fs::hard_link(ctx.join("a-excluded-first"), ctx.join("b-kept-second")).unwrap();
    write(&ctx, "c-kept-first", "second name excluded\n");
    fs::hard_link(ctx.join("c-kept-first"), ctx.join("d-excluded-second")).unwrap();
    write(
        &ctx,
        ".dockerignore",
        "a-excluded-first\nd-excluded-second\n",
    );
    mkfifo(&ctx.join("fifo"));
    drop(std::os::unix::net::UnixListener::bind(ctx.join("socket")).unwrap());
    for (name, mode) in [
        ("private", 0o600),
        ("exec", 0o755),
        ("setuid", 0o4755),
        ("setgid", 0o2755),
        ("odd", 0o4701),
    ] {
        write(&ctx, name, name);
        chmod(&ctx, name, mode);
    }
    mkdir(&ctx, "sticky");
    chmod(&ctx, "sticky", 0o1777);
    mkdir(&ctx, "setgid-dir/inner");
    chmod(&ctx, "setgid-dir", 0o2755);
    mkdir(&ctx, "closed");
    write(&ctx, "closed/x", "x");
    chmod(&ctx, "closed", 0o700);
    write(&ctx, "owned/by-1234", "owned");
    symlink("by-1234", ctx.join("owned/link")).unwrap();
    let root = is_root("files owned by uid 1234, device nodes");
    if root {
        chown(&ctx.join("owned/by-1234"), "1234:1234");
        chown(&ctx.join("owned"), "1234:4321");
        chown(&ctx.join("owned/link"), "1234:1234");
        mknod(&ctx.join("char-device"), "c", 1, 3);
        mknod(&ctx.join("block-device"), "b", 7, 200);
    }
    set_mtime(&ctx, "linked-1", 1_200_000_000, 0);
    set_mtime(&ctx, "setuid", 1_300_000_000, 0);

    let listing = same_as_cli(&project, "ctx", "ctx/Dockerfile").listing;
    // What the CLI does, spelled out.
    assert_eq!(item(&listing, "relative").link, b"dir/file.txt");
    assert_eq!(item(&listing, "absolute").link, b"/etc/passwd");
    assert_eq!(item(&listing, "dangling").link, b"nowhere/at/all");
    assert_eq!(item(&listing, "to-dir").kind, 'l');
    // The first name in walk order (byte order, a directory's entries
    // right after it) holds the content; the others link to it.
    assert_eq!(item(&listing, "dir/linked-3").kind, 'f');
    for second in ["linked-1", "linked-2"] {
        let link = item(&listing, second);
        assert_eq!(
            (link.kind, link.link.as_slice()),
            ('h', b"dir/linked-3".as_slice())
        );
    }
    assert_eq!(item(&listing, "b-kept-second").kind, 'f');
    assert_eq!(item(&listing, "c-kept-first").kind, 'f');
    assert_absent(&listing, &["a-excluded-first", "d-excluded-second"]);
    assert_eq!(item(&listing, "setuid").mode, 0o4755);
    assert_eq!(item(&listing, "setgid").mode, 0o2755);
    assert_eq!(item(&listing, "odd").mode, 0o4701);
    assert_eq!(item(&listing, "private").mode, 0o600);
    assert_eq!(item(&listing, "sticky").mode, 0o1777);
    assert_eq!(item(&listing, "setgid-dir").mode, 0o2755);
    assert_eq!(item(&listing, "closed").mode, 0o700);
    for owned in ["owned", "owned/by-1234", "owned/link"] {
        let owned = item(&listing, owned);
        assert_eq!((owned.uid, owned.gid), (0, 0), "the context is sent as 0:0");
    }
    // The engine drops a FIFO from a COPY, and makes devices empty files,
    // whoever sends them.
    assert_absent(&listing, &["fifo"]);
    // A socket goes as an empty file (fsutil clears the socket bit and
    // cannot read it).
    let socket = item(&listing, "socket");
    assert_eq!((socket.kind, socket.size), ('f', 0));
    if root {
        for device in ["char-device", "block-device"] {
            let device = item(&listing, device);
            assert_eq!((device.kind, device.size), ('f', 0));
        }
    }
    assert_eq!(item(&listing, "linked-2").mtime, Some(1_200_000_000));
    assert_eq!(item(&listing, "setuid").mtime, Some(1_300_000_000));
}

#[test]
fn long_odd_and_non_utf8_names() {
    if !require_engine() {
        return;
    }
    let project = Project::new();
    let ctx = project.root().join("ctx");
    write(&ctx, "Dockerfile", COPY_ALL);
    let long = "n".repeat(150);
    write(&ctx, &long, "a name over 100 bytes");
    // A path over 255 bytes, in names of 60.
    let deep: PathBuf = (0..5).map(|i| format!("{i}{}", "d".repeat(59))).collect();
    write(&ctx, deep.join("leaf.txt"), "deep");
    symlink("x".repeat(200), ctx.join("long-target")).unwrap();
    let latin1 = OsStr::from_bytes(b"caf\xe9");
    write(&ctx, latin1, "not UTF-8");
    write(
        &ctx,
        Path::new(OsStr::from_bytes(b"dir-\xff\xfe")).join("in"),
        "x",
    );
    fs::hard_link(ctx.join(latin1), ctx.join("link-to-latin1")).unwrap();
    symlink(latin1, ctx.join("symlink-to-latin1")).unwrap();
    for name in [
        "with space",
        " leading space",
        "trailing space ",
        "new\nline",
        "tab\there",
        "résumé.txt",
        "日本語",
        "back\\slash",
        "star*question?[bracket]",
        "-dash",
        "#hash",
        "!bang",
        "percent%41",
        "quote\"'",
    ] {
        write(&ctx, name, name);
    }

    let listing = same_as_cli(&project, "ctx", "ctx/Dockerfile").listing;
    assert_eq!(
        item(&listing, b"caf\xe9").digest,
        digest_of(&ctx.join(latin1))
    );
    assert_eq!(item(&listing, "link-to-latin1").link, b"caf\xe9");
    assert_eq!(item(&listing, "symlink-to-latin1").link, b"caf\xe9");
    assert_eq!(item(&listing, &long).size, 21);
    let deep = format!("{}/leaf.txt", deep.display());
    assert!(deep.len() > 255);
    assert_eq!(item(&listing, &deep).size, 4);
    assert_eq!(item(&listing, "long-target").link.len(), 200);
    for name in ["new\nline", "star*question?[bracket]", "日本語", "!bang"] {
        assert_eq!(item(&listing, name).size, name.len() as u64);
    }
}

#[test]
fn dockerignore_exceptions_and_double_stars() {
    if !require_engine() {
        return;
    }
    let project = Project::new();
    let ctx = project.root().join("ctx");
    write(&ctx, "Dockerfile", COPY_ALL);
    write(
        &ctx,
        ".dockerignore",
        "# keep one module\n\
         node_modules\n\
         !node_modules/keep.js\n\
         **/node_modules\n\
         *.log\n\
         !important.log\n\
         build/**/*.o\n\
         !build/keep/**\n\
         # non-ASCII and spaces: the engine sends these percent-encoded\n\
         résumé*.txt\n\
         dir with space/\n\
         日本語/*.tmp\n\
         !日本語/keep.tmp\n",
    );
    for path in [
        "node_modules/keep.js",
        "node_modules/drop.js",
        "node_modules/pkg/index.js",
        "web/node_modules/x/index.js",
        "web/app/node_modules/y.js",
        "web/index.js",
        "debug.log",
        "important.log",
        "sub/nested.log",
        "build/a/b/c.o",
        "build/a/b/c.c",
        "build/keep/d.o",
        "résumé-2024.txt",
        "resume.txt",
        "dir with space/inside",
        "日本語/drop.tmp",
        "日本語/keep.tmp",
    ] {
        write(&ctx, path, path);
    }

    let listing = same_as_cli(&project, "ctx", "ctx/Dockerfile").listing;
    assert_absent(
        &listing,
        &[
            "node_modules/drop.js",
            "node_modules/pkg",
            "web/node_modules",
            "web/app/node_modules",
            "debug.log",
            "build/a/b/c.o",
            "résumé-2024.txt",
            "dir with space",
            "日本語/drop.tmp",
        ],
    );
    for kept in [
        "node_modules/keep.js",
        "web/index.js",
        "important.log",
        "sub/nested.log",
        "build/a/b/c.c",
        "build/keep/d.o",
        "resume.txt",
        "日本語/keep.tmp",
        ".dockerignore",
        "Dockerfile",
    ] {
        item(&listing, kept);
    }
}

#[test]
fn the_dockerfile_and_dockerignore_only_when_the_rules_let_them_in() {
    if !require_engine() {
        return;
    }
    // Listed: neither is in the image.
    let project = Project::new();
    let ctx = project.root().join("ctx");
    write(&ctx, "Dockerfile", COPY_ALL);
    write(&ctx, ".dockerignore", "Dockerfile\n.dockerignore\n");
    write(&ctx, "app.txt", "app");
    let listing = same_as_cli(&project, "ctx", "ctx/Dockerfile").listing;
    assert_eq!(names(&listing), [".", "app.txt"].map(String::from).into());

    // Not listed: both are, as they are on disk.
    let project = Project::new();
    let ctx = project.root().join("ctx");
    write(&ctx, "Dockerfile", COPY_ALL);
    write(&ctx, ".dockerignore", "*.tmp\n");
    write(&ctx, "app.txt", "app");
    write(&ctx, "scratch.tmp", "tmp");
    let listing = same_as_cli(&project, "ctx", "ctx/Dockerfile").listing;
    assert_eq!(
        names(&listing),
        [".", ".dockerignore", "Dockerfile", "app.txt"]
            .map(String::from)
            .into()
    );
    for file in ["Dockerfile", ".dockerignore"] {
        assert_eq!(item(&listing, file).digest, digest_of(&ctx.join(file)));
    }
}

#[test]
fn a_dockerfile_outside_the_context_adds_nothing_to_it() {
    if !require_engine() {
        return;
    }
    // The context's .dockerignore: none, one, or (beside a Dockerfile of
    // another name) the Dockerfile's own, which wins.
    for ignore in ["none", "context", "own"] {
        let project = Project::new();
        let ctx = project.root().join("ctx");
        let dockerfile = match ignore {
            "own" => "other/app.Dockerfile",
            _ => "other/Dockerfile",
        };
        write(project.root(), dockerfile, COPY_ALL);
        write(&ctx, "app.txt", "app");
        write(&ctx, "secret.env", "TOKEN=1");
        write(&ctx, "notes.md", "notes");
        let expected: &[&str] = match ignore {
            "none" => &[".", "app.txt", "notes.md", "secret.env"],
            "context" => {
                write(&ctx, ".dockerignore", "secret.env\n");
                &[".", ".dockerignore", "app.txt", "notes.md"]
            }
            _ => {
                write(&ctx, ".dockerignore", "notes.md\n");
                write(
                    project.root(),
                    "other/app.Dockerfile.dockerignore",
                    "secret.env\n",
                );
                &[".", ".dockerignore", "app.txt", "notes.md"]
            }
        };
        let listing = same_as_cli(&project, "ctx", dockerfile).listing;
        assert_eq!(
            names(&listing),
            expected.iter().copied().map(String::from).collect(),
            "{ignore}: no .hoist-dockerfile, no Dockerfile, no .dockerignore written by hoist"
        );
        if ignore != "none" {
            assert_eq!(
                item(&listing, ".dockerignore").digest,
                digest_of(&ctx.join(".dockerignore")),
                "{ignore}: the context's own .dockerignore, unchanged"
            );
        }
    }
}

#[test]
fn a_symlinked_dockerignore() {
    if !require_engine() {
        return;
    }
    // To a file inside the context: its rules apply.
    let project = Project::new();
    let ctx = project.root().join("ctx");
    write(&ctx, "Dockerfile", COPY_ALL);
    write(&ctx, "rules/docker-ignore", "*.secret\nrules/unused\n");
    write(&ctx, "rules/unused", "x");
    symlink("rules/docker-ignore", ctx.join(".dockerignore")).unwrap();
    write(&ctx, "app.txt", "app");
    write(&ctx, "key.secret", "secret");
    let listing = same_as_cli(&project, "ctx", "ctx/Dockerfile").listing;
    assert_absent(&listing, &["key.secret", "rules/unused"]);
    assert_eq!(item(&listing, ".dockerignore").link, b"rules/docker-ignore");
    item(&listing, "app.txt");

    // To a file outside the context: the engine cannot read it through
    // the context, so no rule applies, with the CLI as with hoist.
    let project = Project::new();
    let ctx = project.root().join("ctx");
    write(&ctx, "Dockerfile", COPY_ALL);
    write(project.root(), "outside-ignore", "*.secret\n");
    symlink("../outside-ignore", ctx.join(".dockerignore")).unwrap();
    write(&ctx, "app.txt", "app");
    write(&ctx, "key.secret", "secret");
    let listing = same_as_cli(&project, "ctx", "ctx/Dockerfile").listing;
    assert_eq!(
        names(&listing),
        [".", ".dockerignore", "Dockerfile", "app.txt", "key.secret"]
            .map(String::from)
            .into()
    );
    assert_eq!(item(&listing, ".dockerignore").link, b"../outside-ignore");
}

/// The CLI's major version: 20 for Debian's 20.10.
fn cli_major() -> u32 {
    let out = try_docker(&[], &["version", "--format", "{{.Client.Version}}"]);
    let version = String::from_utf8_lossy(&out.stdout);
    version
        .trim()
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .unwrap_or_else(|| panic!("{DOCKER_CLI} version: {version:?}"))
}

/// The one place the CLI here differs, as with the tar (see
/// build_context.rs): Docker 20.10's sender (fsutil of 2019) decides a path
/// inside a directory it walked for an exception by matching each pattern
/// against the path and against one parent only, so `**/node_modules`
/// misses `packages/a/node_modules/z.js` and sends it. Docker 23 carries
/// each directory's matches down to its children and leaves it out, as
/// hoist does (and as hoist's tar and its dry run count it).
#[test]
fn where_docker_20_10_s_matcher_was_fixed_hoist_follows_the_fix() {
    if !require_engine() {
        return;
    }
    let project = Project::new();
    let ctx = project.root().join("ctx");
    write(&ctx, "Dockerfile", COPY_ALL);
    write(
        &ctx,
        ".dockerignore",
        "**/node_modules\n!packages/a/node_modules/keep.js\n",
    );
    for path in [
        "packages/a/node_modules/keep.js",
        "packages/a/node_modules/z.js",
        "packages/a/node_modules/y/j.js",
        "packages/a/index.js",
    ] {
        write(&ctx, path, path);
    }
    let known: &[&str] = if cli_major() < 23 {
        &[
            "packages/a/node_modules/y",
            "packages/a/node_modules/y/j.js",
            "packages/a/node_modules/z.js",
        ]
    } else {
        &[]
    };
    let listing = same_as_cli_but(&project, "ctx", "ctx/Dockerfile", known).listing;
    assert_eq!(
        names(&listing),
        [
            ".",
            ".dockerignore",
            "Dockerfile",
            "packages",
            "packages/a",
            "packages/a/index.js",
            "packages/a/node_modules",
            "packages/a/node_modules/keep.js",
        ]
        .map(String::from)
        .into()
    );
}

/// `svc/Dockerfile.dockerignore` wins over the context's `.dockerignore`
/// with both builders: `secret.env` and `web/node_modules` stay out, and
/// `notes.md`, which only the context's rules exclude, is in. Debian's
/// 20.10 engine honours such a file itself (its frontend asks the
/// `dockerfile` source for `Dockerfile.dockerignore`), so BuildKit's image
/// is compared with the CLI's too; with the classic builder it is hoist's
/// own doing.
#[test]
fn the_dockerfile_s_own_ignore_file_wins_with_both_builders() {
    if !require_engine() {
        return;
    }
    let project = Project::new();
    let repo = project.root().join("repo");
    write(&repo, "svc/Dockerfile", COPY_ALL);
    write(
        &repo,
        "svc/Dockerfile.dockerignore",
        "secret.env\nweb/node_modules\n",
    );
    write(&repo, ".dockerignore", "notes.md\n");
    for path in [
        "secret.env",
        "web/node_modules/dep/index.js",
        "web/index.js",
        "notes.md",
        "svc/main.txt",
    ] {
        write(&repo, path, path);
    }
    let check = |listing: &Listing, what: &str| {
        let expected = [
            ".",
            ".dockerignore",
            "notes.md",
            "svc",
            "svc/Dockerfile",
            "svc/Dockerfile.dockerignore",
            "svc/main.txt",
            "web",
            "web/index.js",
        ];
        assert_eq!(names(listing), expected.map(String::from).into(), "{what}");
        for (path, item) in listing.iter().filter(|(_, i)| i.kind == 'f') {
            let file = repo.join(OsStr::from_bytes(path));
            assert_eq!(item.digest, digest_of(&file), "{what}: {}", file.display());
        }
    };
    let compared = same_as_cli(&project, "repo", "repo/svc/Dockerfile");
    check(&compared.listing, "buildkit");
    for round in ["first", "second"] {
        project.build("repo", "repo/svc/Dockerfile", "classic");
        check(
            &listing(&project.image(), "ctx"),
            &format!("classic, {round} build"),
        );
    }
}

/// Whether the Dockerfile and `.dockerignore` end up in the image is the
/// Dockerfile's own ignore file's call, with both builders, whatever the
/// context's `.dockerignore` (here saying the opposite) would decide. The
/// classic builder reads the tar's `.dockerignore` to drop them, so hoist
/// appends lines to it that give the own file's answer; BuildKit's image
/// keeps the real `.dockerignore` byte for byte.
#[test]
fn the_dockerfile_s_own_ignore_file_decides_whether_the_dockerfile_is_in() {
    if !require_engine() {
        return;
    }
    let context_rules = "svc/Dockerfile\n.dockerignore\nkeep.txt\n";
    for (own_rules, dockerfile_in, dockerignore_in) in [
        ("svc/Dockerfile*\n.dockerignore\n", false, false),
        ("svc/Dockerfile\n", false, true),
        ("secret.env\n", true, true),
    ] {
        let project = Project::new();
        let repo = project.root().join("repo");
        write(&repo, "svc/Dockerfile", COPY_ALL);
        write(&repo, "svc/Dockerfile.dockerignore", own_rules);
        write(&repo, ".dockerignore", context_rules);
        write(&repo, "keep.txt", "keep");
        write(&repo, "secret.env", "secret");
        for builder in ["buildkit", "classic"] {
            project.build("repo", "repo/svc/Dockerfile", builder);
            let listing = listing(&project.image(), "ctx");
            let names = names(&listing);
            let what = format!("{builder}, own rules {own_rules:?}");
            assert_eq!(
                names.contains("svc/Dockerfile"),
                dockerfile_in,
                "{what}: {names:?}"
            );
            assert_eq!(
                names.contains(".dockerignore"),
                dockerignore_in,
                "{what}: {names:?}"
            );
            assert!(
                names.contains("keep.txt"),
                "{what}: the context's rules do not count"
            );
            assert_eq!(
                names.contains("secret.env"),
                own_rules != "secret.env\n",
                "{what}"
            );
            let kept = listing
                .iter()
                .find(|(path, _)| path.as_slice() == b".dockerignore");
            if let Some((_, item)) = kept {
                let image_text = image_file(&project.image(), "ctx/.dockerignore");
                assert!(
                    image_text.starts_with(context_rules.as_bytes()),
                    "{what}: the real .dockerignore first: {:?}",
                    String::from_utf8_lossy(&image_text)
                );
                if builder == "buildkit" {
                    assert_eq!(
                        item.digest,
                        digest_of(&repo.join(".dockerignore")),
                        "{what}"
                    );
                }
            }
        }
    }
}

/// COPY lines that name parts of the context (a directory, a symlink to a
/// file elsewhere, wildcards, a path through a symlinked directory): the
/// engine asks for those paths only (follow paths, symlinks resolved), so
/// the rest of the context is never sent.
#[test]
fn follow_paths_send_only_what_is_copied() {
    if !require_engine() {
        return;
    }
    let project = Project::new();
    let ctx = project.root().join("ctx");
    let dockerfile = "FROM scratch\n\
                      COPY src/ /ctx/src/\n\
                      COPY alias.txt /ctx/alias.txt\n\
                      COPY src/*.txt /ctx/wild/\n\
                      COPY packages/*/package.json /ctx/packages/\n\
                      COPY linked-src/lib/ /ctx/via-link/\n\
                      COPY top.txt 日本語/a.txt /ctx/multi/\n";
    write(&ctx, "Dockerfile", dockerfile);
    write(&ctx, "src/main.txt", "main");
    write(&ctx, "src/lib/util.txt", "util");
    symlink("../shared/real.txt", ctx.join("src/link")).unwrap();
    symlink("src", ctx.join("linked-src")).unwrap();
    write(&ctx, "shared/real.txt", "real, through a symlink");
    write(&ctx, "shared/unused.txt", noise(100_000, 3));
    symlink("shared/real.txt", ctx.join("alias.txt")).unwrap();
    write(&ctx, "packages/a/package.json", "{\"name\": \"a\"}");
    write(&ctx, "packages/a/index.js", noise(50_000, 7));
    write(&ctx, "packages/b/deep/package.json", "{\"name\": \"deep\"}");
    write(&ctx, "big/blob", noise(3_000_000, 4));
    write(&ctx, "top.txt", "top");
    write(&ctx, "日本語/a.txt", "non-ASCII source");
    write(&ctx, "日本語/b.txt", "not copied");

    let compared = same_as_cli(&project, "ctx", "ctx/Dockerfile");
    let listing = &compared.listing;
    assert_eq!(
        names(listing),
        [
            ".",
            "alias.txt",
            "multi",
            "multi/a.txt",
            "multi/top.txt",
            "packages",
            "packages/package.json",
            "src",
            "src/lib",
            "src/lib/util.txt",
            "src/link",
            "src/main.txt",
            "via-link",
            "via-link/util.txt",
            "wild",
            "wild/main.txt",
        ]
        .map(String::from)
        .into()
    );
    let alias = item(listing, "alias.txt");
    assert_eq!(alias.kind, 'f', "COPY follows a symlink it names");
    assert_eq!(alias.digest, digest_of(&ctx.join("shared/real.txt")));
    assert_eq!(item(listing, "src/link").link, b"../shared/real.txt");

    // The first build, from a directory the engine had kept nothing of,
    // sent the copied files and the Dockerfile, nothing else.
    let (files, bytes) = sent(&compared.first);
    let copied = [
        "src/main.txt",
        "src/lib/util.txt",
        "shared/real.txt",
        "packages/a/package.json",
        "top.txt",
        "日本語/a.txt",
    ];
    let copied_bytes = copied
        .map(|p| fs::metadata(ctx.join(p)).unwrap().len())
        .iter()
        .sum::<u64>();
    assert_eq!(
        bytes,
        copied_bytes + dockerfile.len() as u64,
        "sent {bytes} bytes; the copied files hold {copied_bytes}\n{}",
        compared.log
    );
    assert_eq!(
        files,
        copied.len() as u64 + 1,
        "the copied files and the Dockerfile\n{}",
        compared.log
    );
}

/// A rebuild after the tree changed (a file deleted, a file turned into a
/// directory, a mode changed without touching the mtime, a symlink
/// retargeted, a hard link broken, files added): the engine applies hoist's
/// listing to the copy it kept, and the image matches the CLI's from the
/// changed tree.
#[test]
fn a_rebuild_after_changes_matches_the_cli() {
    if !require_engine() {
        return;
    }
    let project = Project::new();
    let ctx = project.root().join("ctx");
    write(&ctx, "Dockerfile", COPY_ALL);
    write(&ctx, "keep.txt", "keep");
    write(&ctx, "gone.txt", "gone");
    write(&ctx, "becomes-dir", "a file first");
    write(&ctx, "mode.sh", "#!/bin/sh\n");
    write(&ctx, "dir/old/deep.txt", "deep");
    write(&ctx, "hard-1", "linked");
    fs::hard_link(ctx.join("hard-1"), ctx.join("hard-2")).unwrap();
    symlink("keep.txt", ctx.join("link")).unwrap();
    let (first, log) = project.build("ctx", "ctx/Dockerfile", "buildkit");
    assert!(sent(&first).0 > 0, "{log}");

    fs::remove_file(ctx.join("gone.txt")).unwrap();
    fs::remove_file(ctx.join("becomes-dir")).unwrap();
    write(&ctx, "becomes-dir/inside.txt", "now a directory");
    let before = fs::metadata(ctx.join("mode.sh"))
        .unwrap()
        .modified()
        .unwrap();
    chmod(&ctx, "mode.sh", 0o750);
    assert_eq!(
        fs::metadata(ctx.join("mode.sh"))
            .unwrap()
            .modified()
            .unwrap(),
        before
    );
    fs::remove_dir_all(ctx.join("dir/old")).unwrap();
    write(&ctx, "dir/new/added.txt", "added");
    fs::remove_file(ctx.join("hard-2")).unwrap();
    write(&ctx, "hard-2", "a file of its own");
    fs::remove_file(ctx.join("link")).unwrap();
    symlink("dir/new/added.txt", ctx.join("link")).unwrap();

    let (rebuilt, log) = project.build("ctx", "ctx/Dockerfile", "buildkit");
    let ours = listing(&project.image(), "ctx");
    let cli = cli_build(&ctx, &ctx.join("Dockerfile"));
    let theirs = listing(cli.name(), "ctx");
    assert_same("hoist's rebuild after changes", &ours, &theirs);
    assert_absent(&theirs, &["gone.txt", "dir/old"]);
    assert_eq!(item(&theirs, "mode.sh").mode, 0o750);
    assert_eq!(item(&theirs, "becomes-dir").kind, 'd');
    assert_eq!(item(&theirs, "hard-2").kind, 'f');
    assert_eq!(item(&theirs, "link").link, b"dir/new/added.txt");
    // Only new content went: the files added and the one rewritten (and
    // mode.sh, if the engine rewrites a file whose mode changed, as 20.10
    // does).
    let size = |p: &str| fs::metadata(ctx.join(p)).unwrap().len();
    let new_bytes = size("becomes-dir/inside.txt") + size("dir/new/added.txt") + size("hard-2");
    let (files, bytes) = sent(&rebuilt);
    assert!(
        (new_bytes..=new_bytes + size("mode.sh")).contains(&bytes),
        "the rebuild sent {bytes} bytes in {files} files; {new_bytes} are new\n{log}"
    );
    let (image, log) = project.build("ctx", "ctx/Dockerfile", "buildkit");
    assert_eq!(
        sent(&image),
        (0, 0),
        "nothing changed since: nothing sent\n{log}"
    );
}

// ---------------------------------------------------------------------------
// What reaches the engine.

/// A rebuild after one 1 MiB file of a 64 MiB context changed sends that
/// file, not the context.
#[test]
fn a_rebuild_sends_only_what_changed() {
    if !require_engine() {
        return;
    }
    let project = Project::new();
    let ctx = project.root().join("ctx");
    write(&ctx, "Dockerfile", COPY_ALL);
    for (i, name) in ["one", "two", "three"].iter().enumerate() {
        big_file(&ctx.join(format!("data/{name}.bin")), 21 * MIB, i as u64);
    }
    let small = ctx.join("data/small.bin");
    big_file(&small, MIB, 10);
    let (image, log) = project.build("ctx", "ctx/Dockerfile", "buildkit");
    let (files, bytes) = sent(&image);
    assert!(bytes >= 64 * MIB, "first build sent {bytes} bytes\n{log}");
    assert_eq!(
        files, 6,
        "four data files, and the Dockerfile twice: for the context, which \
         the COPY takes whole, and as the Dockerfile\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("context: sent ") && l.ends_with(&format!(" in {files} files"))),
        "the build log says what was sent: {log}"
    );

    // Same size, new content, a later mtime.
    fs::write(&small, noise(MIB as usize, 11)).unwrap();
    let later =
        fs::metadata(&small).unwrap().modified().unwrap() + std::time::Duration::from_secs(5);
    fs::File::options()
        .write(true)
        .open(&small)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let (image, log) = project.build("ctx", "ctx/Dockerfile", "buildkit");
    let (files, bytes) = sent(&image);
    assert!(
        (MIB..=2 * MIB).contains(&bytes),
        "the rebuild sent {bytes} bytes for a 1 MiB change\n{log}"
    );
    assert_eq!(files, 1, "{log}");
    let listing = listing(&project.image(), "ctx");
    assert_eq!(
        item(&listing, "data/small.bin").digest,
        digest_of(&small),
        "the rebuilt image has the new content"
    );
    assert_eq!(
        item(&listing, "data/one.bin").digest,
        digest_of(&ctx.join("data/one.bin"))
    );
}

/// 50 MB of files the Dockerfile does not copy are not sent.
#[test]
fn files_the_dockerfile_does_not_copy_are_not_sent() {
    if !require_engine() {
        return;
    }
    let project = Project::new();
    let ctx = project.root().join("ctx");
    let dockerfile = "FROM scratch\nCOPY app/ /ctx/\n";
    write(&ctx, "Dockerfile", dockerfile);
    write(&ctx, "app/main.txt", noise(20_000, 5));
    write(&ctx, "app/conf/settings.txt", "settings");
    let mut unused = 0;
    for i in 0..5 {
        big_file(&ctx.join(format!("assets/{i}.bin")), 10_000_000, 20 + i);
        unused += 10_000_000;
    }
    let copied = 20_000 + "settings".len() as u64;
    let (image, log) = project.build("ctx", "ctx/Dockerfile", "buildkit");
    let (files, bytes) = sent(&image);
    assert!(
        (copied..=copied + dockerfile.len() as u64).contains(&bytes),
        "sent {bytes} bytes; the copied files hold {copied}, the rest {unused}\n{log}"
    );
    assert_eq!(files, 3, "two copied files and the Dockerfile\n{log}");
    let listing = listing(&project.image(), "ctx");
    assert_eq!(
        names(&listing),
        [".", "conf", "conf/settings.txt", "main.txt"]
            .map(String::from)
            .into()
    );
}

/// A Node project: `COPY src/ /app/` leaves `node_modules/` unsent, and so
/// does `COPY . /app/` with `node_modules` in `.dockerignore`.
#[test]
fn node_modules_is_not_sent() {
    if !require_engine() {
        return;
    }
    let project = Project::new();
    let ctx = project.root().join("ctx");
    write(&ctx, "package.json", "{\"name\": \"app\"}\n");
    write(&ctx, "src/index.js", noise(30_000, 6));
    write(&ctx, "src/lib/util.js", "module.exports = 1;\n");
    let mut modules = 0;
    for i in 0..400 {
        let content = noise(50_000, 100 + i);
        modules += content.len() as u64;
        write(
            &ctx,
            format!("node_modules/pkg-{}/file-{i}.js", i % 40),
            content,
        );
    }
    let src: u64 = ["src/index.js", "src/lib/util.js"]
        .map(|p| fs::metadata(ctx.join(p)).unwrap().len())
        .iter()
        .sum();

    let subset = "FROM scratch\nCOPY src/ /app/\n";
    write(&ctx, "Dockerfile", subset);
    let (image, log) = project.build("ctx", "ctx/Dockerfile", "buildkit");
    let (files, bytes) = sent(&image);
    assert!(
        (src..=src + subset.len() as u64).contains(&bytes),
        "sent {bytes} bytes for {src} of src/ ({modules} in node_modules)\n{log}"
    );
    assert_eq!(files, 3, "{log}");
    let app = listing(&project.image(), "app");
    assert_eq!(
        names(&app),
        [".", "index.js", "lib", "lib/util.js"]
            .map(String::from)
            .into()
    );

    // The whole context, node_modules ignored: the rebuild sends the new
    // Dockerfile, .dockerignore and package.json (src/ went already).
    write(&ctx, "Dockerfile", "FROM scratch\nCOPY . /app/\n");
    write(&ctx, ".dockerignore", "node_modules\n");
    let (image, log) = project.build("ctx", "ctx/Dockerfile", "buildkit");
    let (_, bytes) = sent(&image);
    assert!(
        bytes < 1000,
        "sent {bytes} bytes with node_modules ignored ({modules} in it)\n{log}"
    );
    let app = listing(&project.image(), "app");
    assert_absent(&app, &["node_modules"]);
    assert_eq!(
        item(&app, "src/index.js").digest,
        digest_of(&ctx.join("src/index.js"))
    );
}

/// Two images from one root, one copying a directory and one everything,
/// each keep their own transfer in BuildKit (one session shared key per
/// image): rebuilt with nothing changed, neither sends anything. Under one
/// key for the directory (as the CLI derives it), each transfer trimmed the
/// kept copy to its own files, and the image copying everything sent its
/// whole context on every rebuild.
#[test]
fn two_images_from_one_root_keep_their_own_transfers() {
    if !require_engine() {
        return;
    }
    let project = Project::new();
    let other = format!("{}-all", project.name);
    let _other_tags = [
        TempImage::new(format!("{other}:staging-0123456")),
        TempImage::new(format!("{other}:staging-latest")),
    ];
    let root = project.root().join("repo");
    write(&root, "web/Dockerfile", "FROM scratch\nCOPY web/ /web/\n");
    write(&root, "all/Dockerfile", COPY_ALL);
    write(&root, "web/index.js", "web");
    big_file(&root.join("node_modules/big.bin"), 4 * MIB, 7);
    fs::write(
        project.root().join("hoist.yaml"),
        format!(
            "images:\n  {}:\n    context: repo\n    dockerfile: repo/web/Dockerfile\n  {other}:\n    context: repo\n    dockerfile: repo/all/Dockerfile\n",
            project.name
        ),
    )
    .unwrap();
    let build = || {
        let out = hoist(
            project.root(),
            &["build", "--sha", SHA, "--no-cache", "--format", "json"],
            &[],
        );
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "hoist build: {log}");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let by_name = |name: &str| {
            let image = report["images"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["name"] == name)
                .unwrap_or_else(|| panic!("{name} in {report}"));
            sent(image)
        };
        (by_name(&project.name), by_name(&other), log)
    };
    let (_, (_, all_bytes), log) = build();
    assert!(
        all_bytes >= 4 * MIB,
        "the first build sends everything\n{log}"
    );
    for round in 1..=2 {
        let (web, all, log) = build();
        assert_eq!(
            web,
            (0, 0),
            "round {round}: the web image sent nothing\n{log}"
        );
        assert_eq!(
            all,
            (0, 0),
            "round {round}: the whole-root image sent nothing\n{log}"
        );
    }
}
