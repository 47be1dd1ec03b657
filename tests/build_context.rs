//! The build context against the real docker CLI: for each tree, the tar
//! hoist writes must hold what `docker build` sends for it, entry by entry
//! (name, type, link target, permissions, owner, mtime, content), in the
//! same order. The CLI (Debian's `/usr/bin/docker`, classic builder) talks
//! to a capture engine on loopback that keeps the body of its build call
//! and answers with an error, so nothing is built and no daemon is needed.
//!
//! Without `/usr/bin/docker` those comparisons print why and pass, except
//! with `CI=true`, where they fail.

use futures_util::StreamExt;
use hoist::context::{self, Context, Summary};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DOCKER: &str = "/usr/bin/docker";

// ---------------------------------------------------------------------------
// The capture engine.

/// One build call the CLI made.
struct Captured {
    /// The request target, with the query (`dockerfile=` among others).
    target: String,
    body: Vec<u8>,
}

/// Just enough of the Engine API for `docker build`: the ping for version
/// negotiation, `/version`, and `/build`, whose body it keeps.
struct CaptureEngine {
    port: u16,
    builds: Arc<Mutex<Vec<Captured>>>,
}

impl CaptureEngine {
    fn start() -> CaptureEngine {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let builds = Arc::new(Mutex::new(Vec::new()));
        let kept = builds.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &kept);
                });
            }
        });
        CaptureEngine { port, builds }
    }
}

fn serve(conn: TcpStream, builds: &Mutex<Vec<Captured>>) -> io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    // Keep-alive: the CLI sends its ping and its build on one connection.
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut words = request.split_whitespace();
        let method = words.next().unwrap_or_default().to_string();
        let target = words.next().unwrap_or_default().to_string();
        let (mut chunked, mut length) = (false, 0);
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "transfer-encoding" => chunked = value.trim().eq_ignore_ascii_case("chunked"),
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        let body = if chunked {
            read_chunked(&mut reader)?
        } else {
            let mut body = vec![0; length];
            reader.read_exact(&mut body)?;
            body
        };
        let path = target.split('?').next().unwrap_or_default();
        let (status, content_type, answer) = if path.ends_with("/_ping") {
            ("200 OK", "text/plain; charset=utf-8", "OK".to_string())
        } else if path.ends_with("/version") {
            (
                "200 OK",
                "application/json",
                r#"{"ApiVersion":"1.41","MinAPIVersion":"1.12","Version":"20.10.24","Os":"linux","Arch":"amd64"}"#.to_string(),
            )
        } else if method == "POST" && path.ends_with("/build") {
            builds.lock().unwrap().push(Captured {
                target: target.clone(),
                body,
            });
            (
                "500 Internal Server Error",
                "application/json",
                r#"{"message":"capture engine: build context kept, nothing built"}"#.to_string(),
            )
        } else {
            (
                "404 Not Found",
                "application/json",
                format!(r#"{{"message":"capture engine: no {method} {path}"}}"#),
            )
        };
        write!(
            writer,
            "HTTP/1.1 {status}\r\nApi-Version: 1.41\r\nDocker-Experimental: false\r\n\
             Ostype: linux\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        )?;
        if method != "HEAD" {
            writer.write_all(answer.as_bytes())?;
        }
        writer.flush()?;
    }
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let size = size.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size, 16).map_err(io::Error::other)?;
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
    }
}

/// Whether the docker CLI is here to compare with; see the module doc.
fn docker_cli() -> bool {
    if Path::new(DOCKER).exists() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{DOCKER} is missing; CI compares the build context with the real docker CLI (scripts/test installs docker.io)"
        );
    }
    eprintln!(
        "skipped: {DOCKER} is missing (Debian's docker.io); not compared with the docker CLI"
    );
    false
}

/// The CLI's major version: 20.10 has a matcher bug that 23.0 fixed.
fn docker_major() -> u32 {
    let out = Command::new(DOCKER).arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // "Docker version 20.10.24+dfsg1, build 297e128"
    text.split_whitespace()
        .nth(2)
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("unexpected `docker --version`: {text}"))
}

/// Runs `docker build -f <dockerfile> <dir>` against a capture engine:
/// the build call, or the CLI's stderr when it made none.
fn docker_build(dir: &Path, dockerfile: &Path) -> Result<Captured, String> {
    let engine = CaptureEngine::start();
    let config = tempfile::tempdir().unwrap();
    let out = Command::new(DOCKER)
        .arg("build")
        .arg("-f")
        .arg(dockerfile)
        .arg(dir)
        .env("DOCKER_HOST", format!("tcp://127.0.0.1:{}", engine.port))
        .env("DOCKER_BUILDKIT", "0")
        .env("DOCKER_CONFIG", config.path())
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut builds = engine.builds.lock().unwrap();
    match builds.len() {
        0 => Err(stderr),
        1 => {
            assert!(
                stderr.contains("capture engine: build context kept"),
                "the CLI did not get the capture engine's answer: {stderr}"
            );
            Ok(builds.pop().unwrap())
        }
        n => panic!("{n} build calls"),
    }
}

// ---------------------------------------------------------------------------
// Reading tars.

/// One tar entry, as compared.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Item {
    name: String,
    kind: &'static str,
    link: String,
    /// Permission bits with setuid, setgid and sticky. Docker 20.10 also
    /// stores the file type in the mode field (Go 1.8's `c_ISREG` & co,
    /// which later Docker dropped); the engine reads the type from the
    /// entry type, so those bits are not compared.
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    device: (u32, u32),
    content: Vec<u8>,
}

fn items(tar: &[u8]) -> Vec<Item> {
    let mut archive = tar::Archive::new(tar);
    let mut items = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        let kind = match header.entry_type() {
            tar::EntryType::Regular => "file",
            tar::EntryType::Directory => "dir",
            tar::EntryType::Symlink => "symlink",
            tar::EntryType::Link => "hardlink",
            tar::EntryType::Fifo => "fifo",
            tar::EntryType::Char => "char",
            tar::EntryType::Block => "block",
            other => panic!("unexpected entry type {other:?}"),
        };
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        items.push(Item {
            name,
            kind,
            link,
            mode: header.mode().unwrap() & 0o7777,
            uid: header.uid().unwrap(),
            gid: header.gid().unwrap(),
            mtime: header.mtime().unwrap(),
            device: match kind {
                "char" | "block" => (
                    header.device_major().unwrap().unwrap(),
                    header.device_minor().unwrap().unwrap(),
                ),
                _ => (0, 0),
            },
            content,
        });
    }
    items
}

/// Docker 20.10 loses the end of its tar when it adds a Dockerfile from
/// outside the context (its `ReplaceFileTarWrapper` closes the pipe before
/// the deferred close of the tar writer): no padding after the last entry,
/// no end-of-archive blocks. The engine's reader copes; so does this.
fn complete(mut tar: Vec<u8>) -> Vec<u8> {
    tar.resize(tar.len().div_ceil(512) * 512 + 1024, 0);
    tar
}

fn hoist_tar(ctx: &Context) -> (Vec<u8>, Summary) {
    let mut tar = Vec::new();
    let summary = ctx.write_tar(&mut tar).unwrap();
    // A complete archive: whole blocks, ending with two zero blocks.
    assert_eq!(tar.len() % 512, 0);
    assert!(tar.len() >= 1024 && tar[tar.len() - 1024..].iter().all(|&b| b == 0));
    (tar, summary)
}

fn names(items: &[Item]) -> Vec<&str> {
    items.iter().map(|i| i.name.as_str()).collect()
}

/// What the comparison allows: entries Docker sends that hoist does not,
/// because of a Docker bug fixed since (see the test that uses it).
#[derive(Default)]
struct Known {
    only_in_docker: &'static [&'static str],
}

/// Builds the context of `dir` with both hoist and the docker CLI and
/// compares the tars. Returns hoist's items.
fn compare(dir: &Path, dockerfile: &Path, known: Known) -> Option<Vec<Item>> {
    if !docker_cli() {
        return None;
    }
    let ctx = Context::new(dir, dockerfile).unwrap();
    let (tar, summary) = hoist_tar(&ctx);
    assert_eq!(ctx.scan().unwrap(), summary, "scan and write_tar disagree");
    let mut hoist = items(&tar);
    assert_eq!(summary.entries, hoist.len() as u64);

    let captured = docker_build(dir, dockerfile).unwrap_or_else(|e| panic!("docker build: {e}"));
    assert_ne!(
        &captured.body[..2.min(captured.body.len())],
        b"\x1f\x8b",
        "the CLI compressed the context"
    );
    let mut docker = items(&complete(captured.body));
    let query_dockerfile = captured
        .target
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("dockerfile="))
        .expect("a dockerfile parameter")
        .replace("%2F", "/");

    if ctx.dockerfile_is_outside() {
        // Docker names it `.dockerfile.<random>` and writes it, and the
        // .dockerignore it creates, with the time of the build.
        assert!(
            query_dockerfile.starts_with(".dockerfile."),
            "{query_dockerfile}"
        );
        let ours = ctx.dockerfile_in_tar();
        for item in &mut docker {
            if item.name == query_dockerfile {
                item.name = ours.to_string();
            }
            if item.name == ours || item.name == ".dockerignore" {
                let text = String::from_utf8(item.content.clone()).unwrap();
                item.content = text.replace(&query_dockerfile, ours).into_bytes();
            }
        }
        for item in hoist.iter_mut().chain(docker.iter_mut()) {
            if item.name == ours || (item.name == ".dockerignore" && item.mode == 0o600) {
                item.mtime = 0;
            }
        }
    } else {
        assert_eq!(query_dockerfile, ctx.dockerfile_in_tar());
        // Both walk in byte order; the extras of an outside Dockerfile come
        // in Go's random map order, so only this case compares the order.
        let docker_sorted: Vec<&str> = {
            let known: BTreeSet<&str> = known.only_in_docker.iter().copied().collect();
            names(&docker)
                .into_iter()
                .filter(|n| !known.contains(n))
                .collect()
        };
        assert_eq!(docker_sorted, names(&hoist), "entry order");
    }

    docker.sort();
    hoist.sort();
    let docker_names: BTreeSet<&str> = names(&docker).into_iter().collect();
    let hoist_names: BTreeSet<&str> = names(&hoist).into_iter().collect();
    let only_docker: Vec<&str> = docker_names.difference(&hoist_names).copied().collect();
    let only_hoist: Vec<&str> = hoist_names.difference(&docker_names).copied().collect();
    assert_eq!(only_docker, known.only_in_docker, "sent by docker only");
    assert!(only_hoist.is_empty(), "sent by hoist only: {only_hoist:?}");
    let docker: Vec<Item> = docker
        .into_iter()
        .filter(|i| !known.only_in_docker.contains(&i.name.as_str()))
        .collect();
    assert_eq!(docker.len(), hoist.len(), "entry count");
    for (d, h) in docker.iter().zip(&hoist) {
        assert_eq!(d, h, "entry {}", d.name);
    }
    Some(hoist)
}

// ---------------------------------------------------------------------------
// Trees.

struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        Tree {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, rel: &str, content: &str) -> &Tree {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
        self
    }

    fn dir(&self, rel: &str) -> &Tree {
        std::fs::create_dir_all(self.path(rel)).unwrap();
        self
    }

    fn mode(&self, rel: &str, mode: u32) -> &Tree {
        std::fs::set_permissions(self.path(rel), std::fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    fn symlink(&self, rel: &str, target: &str) -> &Tree {
        symlink(target, self.path(rel)).unwrap();
        self
    }

    fn ignore(&self, text: &str) -> &Tree {
        self.file(".dockerignore", text)
    }

    fn dockerfile(&self) -> PathBuf {
        self.file("Dockerfile", "FROM scratch\nCOPY . /\n");
        self.path("Dockerfile")
    }
}

fn item<'a>(items: &'a [Item], name: &str) -> &'a Item {
    items
        .iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", names(items)))
}

// ---------------------------------------------------------------------------
// Compared with the docker CLI.

#[test]
fn a_tree_without_dockerignore_matches_docker() {
    let t = Tree::new();
    let dockerfile = t.dockerfile();
    t.file("src/main.rs", "fn main() {}\n")
        .file("src/lib/mod.rs", "pub mod x;\n")
        .dir("empty")
        .file("bin/run.sh", "#!/bin/sh\necho hi\n")
        .mode("bin/run.sh", 0o755)
        .file("bin/setuid", "x")
        .mode("bin/setuid", 0o4750)
        .file("private.key", "k")
        .mode("private.key", 0o400)
        .dir("shared")
        .mode("shared", 0o1777)
        .dir("locked")
        .mode("locked", 0o700)
        .symlink("link-to-file", "src/main.rs")
        .symlink("link-to-dir", "src")
        .symlink("dangling", "nowhere/at/all")
        .symlink("absolute", "/etc/hostname")
        .file("ünïcødé and space.txt", "u")
        .file(
            &format!(
                "{}/{}/{}.txt",
                "a".repeat(100),
                "b".repeat(100),
                "c".repeat(90)
            ),
            "long",
        )
        .symlink("long-link", &"t/".repeat(80));
    std::fs::hard_link(t.path("src/main.rs"), t.path("src/main-again.rs")).unwrap();
    std::fs::write(t.root().join(OsStr::from_bytes(b"not-utf8-\xff.txt")), "b").unwrap();
    let fifo = Command::new("mkfifo").arg(t.path("pipe")).status().unwrap();
    assert!(fifo.success());
    // A socket is left out by both.
    let _socket = std::os::unix::net::UnixListener::bind(t.path("sock")).unwrap();

    let Some(items) = compare(t.root(), &dockerfile, Known::default()) else {
        return;
    };
    assert_eq!(item(&items, "bin/run.sh").mode, 0o755);
    assert_eq!(item(&items, "bin/setuid").mode, 0o4750);
    assert_eq!(item(&items, "shared/").mode, 0o1777);
    assert_eq!(item(&items, "link-to-dir").kind, "symlink");
    assert_eq!(item(&items, "link-to-dir").link, "src");
    assert_eq!(item(&items, "src/main.rs").kind, "hardlink");
    assert_eq!(item(&items, "src/main.rs").link, "src/main-again.rs");
    assert_eq!(item(&items, "pipe").kind, "fifo");
    assert!(items.iter().all(|i| i.uid == 0 && i.gid == 0));
    assert!(!items.iter().any(|i| i.name == "sock"));
}

#[test]
fn double_star_patterns_match_docker() {
    let t = Tree::new();
    let dockerfile = t.dockerfile();
    t.ignore("**/*.log\n**/tmp\ndocs/**/*.md\n**/node_modules\n.git\n**/.git\n*.swp\n")
        .file("app.log", "l")
        .file("src/debug.log", "l")
        .file("src/deep/x/trace.log", "l")
        .file("src/deep/x/keep.txt", "k")
        .file("tmp/a", "t")
        .file("src/tmp/b", "t")
        .file("docs/a.md", "d")
        .file("docs/guide/b.md", "d")
        .file("docs/guide/c.txt", "d")
        .file("node_modules/x/index.js", "n")
        .file("packages/a/node_modules/y/i.js", "n")
        .file("packages/a/src/index.js", "s")
        .file(".git/HEAD", "ref: refs/heads/main\n")
        .file(".git/objects/ab/cdef", "o")
        .file("packages/b/.git/config", "c")
        .file("packages/b/lib.rs", "l")
        .file("x.swp", "s")
        .file("src/y.swp", "s");
    let Some(items) = compare(t.root(), &dockerfile, Known::default()) else {
        return;
    };
    assert_eq!(
        names(&items),
        [
            ".dockerignore",
            "Dockerfile",
            "docs/",
            "docs/guide/",
            "docs/guide/c.txt",
            "packages/",
            "packages/a/",
            "packages/a/src/",
            "packages/a/src/index.js",
            "packages/b/",
            "packages/b/lib.rs",
            "src/",
            "src/deep/",
            "src/deep/x/",
            "src/deep/x/keep.txt",
            "src/y.swp",
        ]
    );
}

#[test]
fn exceptions_re_include_files_like_docker() {
    let t = Tree::new();
    let dockerfile = t.dockerfile();
    t.ignore(
        "build\n!build/keep.txt\n*.md\n!README.md\ndocs/*\n!docs/public\n\
         secrets/*.key\n!secrets/public.key\nsecrets/public.key.bak\n",
    )
    .file("build/keep.txt", "k")
    .file("build/drop.txt", "d")
    .file("build/sub/x", "x")
    .file("README.md", "r")
    .file("CHANGES.md", "c")
    .file("docs/public/index.html", "p")
    .file("docs/private/x", "p")
    .file("docs/top.txt", "t")
    .file("secrets/a.key", "a")
    .file("secrets/public.key", "p")
    .file("secrets/public.key.bak", "b");
    let Some(items) = compare(t.root(), &dockerfile, Known::default()) else {
        return;
    };
    // `build/keep.txt` comes without a `build/` entry, as from Docker.
    assert_eq!(
        names(&items),
        [
            ".dockerignore",
            "Dockerfile",
            "README.md",
            "build/keep.txt",
            "docs/",
            "docs/public/",
            "docs/public/index.html",
            "secrets/",
            "secrets/public.key",
        ]
    );
}

#[test]
fn comments_blank_lines_and_odd_spellings_match_docker() {
    let t = Tree::new();
    let dockerfile = t.dockerfile();
    t.ignore(
        "\u{FEFF}# a comment\r\n\r\n   \n\t spaced.txt \t\r\n  # not a comment\n\
         ./dot/./x/\na/../b\n//double//slash\n! dot/x/keep\n",
    )
    .file("# a comment", "kept: comments are not patterns")
    .file("# not a comment", "excluded: the # was not first")
    .file("spaced.txt", "s")
    .file("dot/x/y", "y")
    .file("dot/x/keep", "k")
    .file("dot/z", "z")
    .file("b", "b")
    .file("a/b", "kept")
    .file("double/slash", "d");
    let Some(items) = compare(t.root(), &dockerfile, Known::default()) else {
        return;
    };
    assert_eq!(
        names(&items),
        [
            "# a comment",
            ".dockerignore",
            "Dockerfile",
            "a/",
            "a/b",
            "dot/",
            "dot/x/keep",
            "dot/z",
            "double/",
        ]
    );
}

#[test]
fn the_dockerfile_and_dockerignore_are_sent_even_when_excluded() {
    // At the root, both named by the patterns.
    let t = Tree::new();
    let dockerfile = t.dockerfile();
    t.ignore("Dockerfile\n.dockerignore\nsrc/*.tmp\n")
        .file("src/a.tmp", "t")
        .file("src/a.rs", "r");
    if let Some(items) = compare(t.root(), &dockerfile, Known::default()) {
        assert_eq!(
            names(&items),
            [".dockerignore", "Dockerfile", "src/", "src/a.rs"]
        );
    }

    // In an excluded directory, under `*`: the directory is walked for it,
    // but neither it nor the rest of it is sent.
    let t = Tree::new();
    t.ignore("*\n!src\n")
        .file("docker/app.Dockerfile", "FROM scratch\n")
        .file("docker/other", "o")
        .file("src/main.rs", "m")
        .file("notes.txt", "n");
    let ctx = Context::new(t.root(), &t.path("docker/app.Dockerfile")).unwrap();
    assert_eq!(ctx.dockerfile_in_tar(), "docker/app.Dockerfile");
    if let Some(items) = compare(t.root(), &t.path("docker/app.Dockerfile"), Known::default()) {
        assert_eq!(
            names(&items),
            [
                ".dockerignore",
                "docker/app.Dockerfile",
                "src/",
                "src/main.rs"
            ]
        );
    }
}

#[test]
fn a_leading_slash_means_the_context_root() {
    let t = Tree::new();
    let dockerfile = t.dockerfile();
    t.ignore("/secret.txt\n/logs/\n")
        .file("secret.txt", "s")
        .file("sub/secret.txt", "kept")
        .file("logs/a", "l")
        .file("sub/logs/b", "kept");
    if let Some(items) = compare(t.root(), &dockerfile, Known::default()) {
        assert_eq!(
            names(&items),
            [
                ".dockerignore",
                "Dockerfile",
                "sub/",
                "sub/logs/",
                "sub/logs/b",
                "sub/secret.txt",
            ]
        );
    }
}

#[test]
fn a_dockerfile_outside_the_context_is_added_like_docker_does() {
    let outside = Tree::new();
    outside.file("app.Dockerfile", "FROM scratch\nCOPY . /\n");
    let dockerfile = outside.path("app.Dockerfile");

    // With a .dockerignore: the Dockerfile's name is appended to it.
    let t = Tree::new();
    t.ignore("*.log").file("a.log", "l").file("src/x", "x");
    if let Some(items) = compare(t.root(), &dockerfile, Known::default()) {
        assert_eq!(
            item(&items, ".dockerignore").content,
            b"*.log\n.hoist-dockerfile\n"
        );
        assert_eq!(item(&items, ".hoist-dockerfile").mode, 0o600);
        assert_eq!(
            item(&items, ".hoist-dockerfile").content,
            b"FROM scratch\nCOPY . /\n"
        );
    }

    // Without one: a .dockerignore naming itself and the Dockerfile.
    let t = Tree::new();
    t.file("src/x", "x");
    if let Some(items) = compare(t.root(), &dockerfile, Known::default()) {
        assert_eq!(
            item(&items, ".dockerignore").content,
            b".dockerignore\n.hoist-dockerfile\n"
        );
    }
}

#[test]
fn docker_20_10_differs_only_where_its_matcher_was_fixed() {
    // Docker 20.10 decides a path inside a directory it walked for an
    // exception by matching each pattern against the path and against one
    // parent only: the one with as many segments as the pattern. So
    // `**/node_modules` (two segments) misses `packages/a/node_modules/z.js`
    // and sends it. Docker 23 (moby's MatchesUsingParentResults) carries
    // each directory's matches down to its children and leaves it out;
    // hoist does that.
    let t = Tree::new();
    let dockerfile = t.dockerfile();
    t.ignore("**/node_modules\n!packages/a/node_modules/keep.js\n")
        .file("packages/a/node_modules/keep.js", "k")
        .file("packages/a/node_modules/z.js", "z")
        .file("packages/a/node_modules/y/j.js", "j")
        .file("packages/a/index.js", "i");
    if !docker_cli() {
        return;
    }
    let known = if docker_major() < 23 {
        Known {
            only_in_docker: &[
                "packages/a/node_modules/y/",
                "packages/a/node_modules/y/j.js",
                "packages/a/node_modules/z.js",
            ],
        }
    } else {
        Known::default()
    };
    let items = compare(t.root(), &dockerfile, known).unwrap();
    assert_eq!(
        names(&items),
        [
            ".dockerignore",
            "Dockerfile",
            "packages/",
            "packages/a/",
            "packages/a/index.js",
            "packages/a/node_modules/keep.js",
        ]
    );
}

#[test]
fn a_bad_pattern_fails_like_docker() {
    for (text, line, cause) in [
        ("ok\n[\n", 2, "syntax error in pattern"),
        ("ok\n\n!\n", 3, "an exception needs a pattern"),
        ("x[z-a]\n", 1, "invalid character class range"),
    ] {
        let t = Tree::new();
        let dockerfile = t.dockerfile();
        t.ignore(text);
        let err = Context::new(t.root(), &dockerfile).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        assert_eq!(err.location.as_ref().unwrap().line, line, "{err}");
        assert!(err.causes[0].contains(cause), "{err}");
        if docker_cli() {
            let refused = docker_build(t.root(), &dockerfile)
                .err()
                .expect("docker accepted it");
            assert!(refused.contains("error checking context"), "{refused}");
        }
    }
}

// ---------------------------------------------------------------------------
// Streaming, errors, sizes.

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// A file of `size` bytes that takes no disk space.
fn sparse(path: &Path, size: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
}

#[test]
fn the_stream_carries_the_same_tar_as_write_tar() {
    let t = Tree::new();
    let dockerfile = t.dockerfile();
    t.ignore("*.log\n")
        .file("a.log", "l")
        .file("src/main.rs", "fn main() {}\n")
        .symlink("link", "src/main.rs");
    sparse(&t.path("src/big.bin"), 3 * 1024 * 1024 + 17);
    let ctx = Context::new(t.root(), &dockerfile).unwrap();
    let (expected, summary) = hoist_tar(&ctx);

    let (mut stream, writer) = ctx.stream();
    let tar = runtime().block_on(async {
        let mut tar = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            assert!(!chunk.is_empty() && chunk.len() <= 64 * 1024);
            tar.extend_from_slice(&chunk);
        }
        tar
    });
    assert!(tar == expected, "the streamed tar differs");
    assert_eq!(writer.join().unwrap(), Some(summary));
    assert_eq!(
        names(&items(&tar)),
        [
            ".dockerignore",
            "Dockerfile",
            "link",
            "src/",
            "src/big.bin",
            "src/main.rs"
        ]
    );
}

#[test]
fn a_dropped_stream_stops_the_writer() {
    let t = Tree::new();
    let dockerfile = t.dockerfile();
    sparse(&t.path("big.bin"), 256 * 1024 * 1024);
    let (mut stream, writer) = Context::new(t.root(), &dockerfile).unwrap().stream();
    let first = runtime().block_on(stream.next()).unwrap().unwrap();
    assert!(!first.is_empty());
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !writer.is_finished() {
        assert!(Instant::now() < deadline, "the writer still runs");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(writer.join().unwrap(), None);
}

#[test]
fn a_context_failing_mid_stream_ends_it_with_an_error() {
    let t = Tree::new();
    let dockerfile = t.dockerfile();
    // The writer reads the root's names, then blocks in a.bin on the full
    // channel while `b` is removed under it.
    sparse(&t.path("a.bin"), 64 * 1024 * 1024);
    t.file("b/c", "c");
    let (mut stream, writer) = Context::new(t.root(), &dockerfile).unwrap().stream();
    let rt = runtime();
    rt.block_on(stream.next()).unwrap().unwrap();
    std::fs::remove_dir_all(t.path("b")).unwrap();
    let last = rt.block_on(async {
        let mut last = None;
        while let Some(chunk) = stream.next().await {
            last = Some(chunk);
        }
        last
    });
    let last = last.unwrap().unwrap_err();
    assert!(
        last.to_string().contains("/b in the build context"),
        "{last}"
    );
    let err = writer.join().unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(
        err.message.starts_with("cannot read ") && err.message.ends_with("/b in the build context"),
        "{err}"
    );
    assert!(err.hint.is_some());
}

#[test]
fn a_gibibyte_context_streams_in_little_memory() {
    // Peak memory is counted per process, and the other tests of this
    // binary would count too (a failing one symbolising its backtrace takes
    // 170 MB): the measure runs in a process of its own.
    const ALONE: &str = "HOIST_TEST_MEASURE_ALONE";
    let name = "a_gibibyte_context_streams_in_little_memory";
    if std::env::var_os(ALONE).is_none() {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(ALONE, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}{stderr}");
        assert!(stdout.contains("1 passed"), "{stdout}");
        return;
    }
    let t = Tree::new();
    let dockerfile = t.dockerfile();
    sparse(&t.path("disk.img"), 1024 * 1024 * 1024);
    let (mut stream, writer) = Context::new(t.root(), &dockerfile).unwrap().stream();
    let sent = runtime().block_on(async {
        let mut sent = 0u64;
        while let Some(chunk) = stream.next().await {
            sent += chunk.unwrap().len() as u64;
        }
        sent
    });
    assert!(sent > 1024 * 1024 * 1024);
    assert_eq!(
        writer.join().unwrap().unwrap().bytes,
        1024 * 1024 * 1024 + 22
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    eprintln!("peak RSS streaming a 1 GiB context: {peak_kib} KiB");
    assert!(peak_kib < 100 * 1024, "peak RSS {peak_kib} KiB");
}

#[test]
fn a_missing_context_or_dockerfile_is_an_input_error() {
    let t = Tree::new();
    let dockerfile = t.dockerfile();

    let err = Context::new(&t.path("nope"), &dockerfile).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(
        err.message.contains(&t.path("nope").display().to_string()),
        "{err}"
    );
    assert!(err.hint.is_some());

    let err = Context::new(t.root(), &t.path("Dockerfile.nope")).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.message.contains("Dockerfile.nope"), "{err}");
    assert!(err.hint.is_some());

    let err = Context::new(&dockerfile, &dockerfile).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.message.contains("is not a directory"), "{err}");

    t.dir("sub");
    let err = Context::new(t.root(), &t.path("sub")).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.message.contains("is not a file"), "{err}");
}

#[test]
fn the_scan_sums_up_what_is_sent() {
    let t = Tree::new();
    let dockerfile = t.dockerfile();
    t.ignore("*.tmp\n")
        .file("scratch.tmp", &"x".repeat(5000))
        .file("src/main.rs", "fn main() {}\n");
    sparse(&t.path(".git/objects/pack/pack-1.pack"), 3 << 20);
    sparse(&t.path(".git/objects/pack/pack-1.idx"), 1 << 10);
    t.file(".git/HEAD", "ref: refs/heads/main\n");
    sparse(&t.path("node_modules/react/index.js"), 1 << 20);
    sparse(&t.path("node_modules/left-pad/index.js"), 1 << 20);
    sparse(&t.path("assets/video.mp4"), 1536 << 10);

    let ctx = Context::new(t.root(), &dockerfile).unwrap();
    let summary = ctx.scan().unwrap();
    assert_eq!(summary.files, 9);
    assert_eq!(summary.dirs, 8);
    assert_eq!(summary.entries, 17);
    // Dockerfile, .dockerignore, src/main.rs, .git/HEAD.
    let small = 22 + 6 + 13 + 21;
    assert_eq!(
        summary.bytes,
        (3 << 20) + (1 << 10) + (2 << 20) + (1536 << 10) + small
    );
    let biggest: Vec<(&str, u64)> = summary
        .biggest
        .iter()
        .map(|w| (w.path.as_str(), w.bytes))
        .collect();
    assert_eq!(
        biggest,
        [
            // `.git/` holds 3 MiB, nearly all of it in one pack file,
            // which is named by its directory: files are never named.
            (".git/objects/pack/", (3 << 20) + (1 << 10)),
            ("node_modules/", 2 << 20),
            ("assets/", 1536 << 10),
        ]
    );
    assert_eq!(context::size_warning(&summary), None);

    // Over the threshold, the warning names the heaviest parts.
    sparse(&t.path("node_modules/huge/blob"), 120 << 20);
    let summary = ctx.scan().unwrap();
    let warning = context::size_warning(&summary).unwrap();
    assert!(
        warning.starts_with("the build context is 126.5 MiB in 10 files"),
        "{warning}"
    );
    assert!(
        warning.contains("; the heaviest: node_modules/huge/ (120.0 MiB); list"),
        "only the heavy directory: not the files, nor .git/ (3 MiB, under 1/20): {warning}"
    );
}

/// A build id goes first, as a PAX global header (which unpacking ignores),
/// and the rest of the tar is byte for byte the same.
#[test]
fn a_build_id_is_a_global_header_before_the_same_tar() {
    let t = Tree::new();
    let dockerfile = t.dockerfile();
    t.file("src/main.rs", "fn main() {}\n");
    let ctx = Context::new(t.root(), &dockerfile).unwrap();
    let (plain, _) = hoist_tar(&ctx);
    let (marked, _) = hoist_tar(&ctx.with_build_id("hoist build app 1-2"));

    let mut archive = tar::Archive::new(&marked[..]);
    let mut first = archive.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(first.header().entry_type(), tar::EntryType::XGlobalHeader);
    let mut record = String::new();
    first.read_to_string(&mut record).unwrap();
    assert_eq!(record, "31 comment=hoist build app 1-2\n");
    // One header block and one data block, then the unmarked tar.
    assert_eq!(&marked[1024..], &plain[..]);
}

/// The two counts of one context: the tar always carries the Dockerfile
/// and `.dockerignore` (the engine reads them from it), a session serves
/// them only when the rules let them in; `<Dockerfile>.dockerignore`
/// replaces the context's rules in both.
#[test]
fn the_session_count_leaves_out_what_the_rules_leave_out() {
    let t = Tree::new();
    let dockerfile = t.dockerfile();
    t.ignore("Dockerfile\n.dockerignore\n*.log\n")
        .file("app.log", "0123456789")
        .file("src/main.rs", "fn main() {}\n");
    let ctx = Context::new(t.root(), &dockerfile).unwrap();
    let tar = ctx.scan().unwrap();
    let session = ctx.scan_for_session().unwrap();
    assert_eq!(tar.files, 3, "Dockerfile, .dockerignore, src/main.rs");
    assert_eq!(session.files, 1, "src/main.rs alone");
    assert_eq!(session.bytes, 13);
    assert_eq!(
        ctx.ignore_file(),
        t.root().canonicalize().unwrap().join(".dockerignore")
    );

    // The Dockerfile's own ignore file wins: the log is in, the sources out.
    t.file("Dockerfile.dockerignore", "src\n");
    let ctx = Context::new(t.root(), &dockerfile).unwrap();
    let session = ctx.scan_for_session().unwrap();
    // Dockerfile, Dockerfile.dockerignore, .dockerignore, app.log.
    assert_eq!(session.files, 4);
    let sizes = [
        "Dockerfile",
        "Dockerfile.dockerignore",
        ".dockerignore",
        "app.log",
    ]
    .map(|name| std::fs::metadata(t.path(name)).unwrap().len());
    assert_eq!(session.bytes, sizes.iter().sum::<u64>());
    assert_eq!(ctx.ignore_file(), t.path("Dockerfile.dockerignore"));
    let sources = ctx.session_sources();
    let served: Vec<&str> = sources
        .dockerfile
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(served, ["Dockerfile", "Dockerfile.dockerignore"]);
}

/// The classic builder drops the Dockerfile and `.dockerignore` after
/// reading them when the tar's `.dockerignore` says so: with the
/// Dockerfile's own ignore file, lines are appended only where the real
/// file would decide otherwise.
#[test]
fn the_classic_tar_s_dockerignore_gives_the_own_file_s_answer() {
    let rules = |text: &str| {
        hoist::dockerignore::Dockerignore::parse(Path::new("x"), text.as_bytes()).unwrap()
    };
    let text = |bytes: Option<Vec<u8>>| bytes.map(|b| String::from_utf8(b).unwrap());
    let dockerignore = context::classic_dockerignore;
    // The real file already agrees: sent as it is.
    assert_eq!(
        text(dockerignore(
            Some(b"notes.md\n"),
            &rules("secret\n"),
            "svc/Dockerfile",
            false
        )),
        None
    );
    // The own file drops the Dockerfile, the real one does not.
    assert_eq!(
        text(dockerignore(
            Some(b"notes.md"),
            &rules("svc/Dockerfile\n"),
            "svc/Dockerfile",
            false
        )),
        Some("notes.md\nsvc/Dockerfile\n".to_string())
    );
    // The real one drops both, the own one keeps both.
    assert_eq!(
        text(dockerignore(
            Some(b"svc/\n.dockerignore\n"),
            &rules("x\n"),
            "svc/Dockerfile",
            false
        )),
        Some("svc/\n.dockerignore\n\n!.dockerignore\n!svc/Dockerfile\n".to_string())
    );
    // The own file drops `.dockerignore`: whatever it held, it drops itself.
    assert_eq!(
        text(dockerignore(
            Some(b"x\n"),
            &rules(".dockerignore\nsvc/Dockerfile\n"),
            "svc/Dockerfile",
            false
        )),
        Some(".dockerignore\nsvc/Dockerfile\n".to_string())
    );
    // None in the context: one is made only to drop the Dockerfile.
    assert_eq!(
        text(dockerignore(None, &rules("x\n"), "svc/Dockerfile", false)),
        None
    );
    assert_eq!(
        text(dockerignore(None, &rules("x\n"), ".hoist-dockerfile", true)),
        Some(".dockerignore\n.hoist-dockerfile\n".to_string())
    );
}
