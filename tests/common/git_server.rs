//! A real git smart-HTTP server on loopback for the integration tests
//! (`scripts/git-http-server.py`: `git http-backend` behind a small Python
//! server), bare repositories to serve, and the server's request log.
//!
//! ```ignore
//! let dir = tempfile::tempdir().unwrap();
//! let repo = bare_repo(dir.path(), "org/app.git", 3, 5);
//! let options = ServerOptions { token: Some("s3cret".into()), ..Default::default() };
//! let Some(server) = GitServer::start(dir.path(), options) else { return };
//! let url = server.repo_url(&repo.rel);
//! ```

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::git;

/// How the server is started; `Default` is: no token, nothing public, no
/// delay, no log.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// Every request must carry `Authorization: Basic base64(<user>:TOKEN)`
    /// (any user), else 401 with `WWW-Authenticate: Basic realm="git"`.
    pub token: Option<String>,
    /// Repositories (`org/name.git`, relative to the root) served without
    /// auth even when a token is set.
    pub public: Vec<String>,
    /// Milliseconds to sleep before answering each POST to git-upload-pack.
    pub delay_ms: u64,
    /// Answer the first N requests with 503 (a flaky forge).
    pub fail_first: u32,
    /// Append one JSON line per request here (see [`requests`]).
    pub log: Option<PathBuf>,
    /// LFS objects (by oid) served with a changed byte.
    pub lfs_corrupt: Vec<String>,
    /// Answer every request with a 302 to this URL + the request's path.
    pub redirect_to: Option<String>,
}

/// A running server; dropping it kills the process and waits for it.
pub struct GitServer {
    child: Child,
    url: String,
    // Kept open so the server never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl GitServer {
    /// Starts the server on a free port of 127.0.0.1, serving every bare
    /// repository under `root` at `<url>/<path relative to root>`.
    ///
    /// Returns `None` only when `python3` cannot be run and `CI` is not
    /// `"true"`: the reason is printed to stderr and the caller returns early
    /// (`let Some(server) = GitServer::start(..) else { return };`). With
    /// `CI=true` a missing python3 panics instead, so CI never skips.
    /// Panics when the server does not come up.
    pub fn start(root: &Path, options: ServerOptions) -> Option<GitServer> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/git-http-server.py");
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .arg("--root")
            .arg(root)
            .args(["--port", "0"]);
        if let Some(token) = &options.token {
            cmd.args(["--token", token]);
        }
        for repo in &options.public {
            cmd.args(["--public", repo]);
        }
        if options.fail_first > 0 {
            cmd.args(["--fail-first", &options.fail_first.to_string()]);
        }
        if options.delay_ms > 0 {
            cmd.args(["--delay-ms", &options.delay_ms.to_string()]);
        }
        if let Some(log) = &options.log {
            cmd.arg("--log").arg(log);
        }
        for oid in &options.lfs_corrupt {
            cmd.args(["--lfs-corrupt", oid]);
        }
        if let Some(url) = &options.redirect_to {
            cmd.args(["--redirect-to", url]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let reason = "python3 is not installed; the git smart-HTTP tests need it \
                              (Debian: apt-get install python3)";
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("{reason}");
                }
                eprintln!("skipped: {reason}");
                return None;
            }
            Err(e) => panic!("starting {}: {e}", script.display()),
        };

        // The first line names the port; read it on a thread so that a server
        // that never answers fails the test instead of hanging it.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line);
            let _ = tx.send((read.map(|_| line), reader));
        });
        let (line, reader) = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok((Ok(line), reader)) => (line, reader),
            Ok((Err(e), _)) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("reading the git server's first line: {e}");
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the git server did not start within 30 s");
            }
        };
        let Some(url) = line
            .trim_end()
            .strip_prefix("listening on ")
            .filter(|u| u.starts_with("http://127.0.0.1:"))
        else {
            let status = child.wait().ok();
            panic!("the git server did not start (exit {status:?}); first line: {line:?}");
        };
        Some(GitServer {
            url: url.to_string(),
            child,
            _stdout: reader,
        })
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// The URL of a repository: `repo_url("org/app.git")`.
    pub fn repo_url(&self, rel: &str) -> String {
        format!("{}/{}", self.url, rel.trim_start_matches('/'))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `Basic base64(x-access-token:TOKEN)`: the value of an Authorization
/// header the server accepts.
pub fn basic_auth(token: &str) -> String {
    format!(
        "Basic {}",
        base64(format!("x-access-token:{token}").as_bytes())
    )
}

/// `Authorization: Basic …`, ready for `git -c http.extraHeader=…`.
pub fn auth_header(token: &str) -> String {
    format!("Authorization: {}", basic_auth(token))
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A bare repository under a server root, with a private working clone that
/// makes further commits.
pub struct BareRepo {
    /// The bare repository: `root/rel`.
    pub path: PathBuf,
    /// Its path relative to the root, as served: `org/app.git`.
    pub rel: String,
    /// The commits of `main`, oldest first (grows with [`BareRepo::commit`]).
    pub shas: Vec<String>,
    files: usize,
    work: tempfile::TempDir,
}

/// Builds a bare repository at `root/rel` (branch `main`, HEAD on it) with
/// `commits` commits of `files` small text files each; every commit changes
/// every file's content. Odd-numbered files sit in a `sub/` directory.
pub fn bare_repo(root: &Path, rel: &str, commits: usize, files: usize) -> BareRepo {
    assert!(commits > 0 && files > 0, "a repo needs a commit and a file");
    let rel = rel.trim_matches('/').to_string();
    let path = root.join(&rel);
    std::fs::create_dir_all(&path).unwrap();
    git(
        &path,
        &["init", "--quiet", "--bare", "--initial-branch", "main"],
    );
    let work = tempfile::tempdir().unwrap();
    git(
        work.path(),
        &["init", "--quiet", "--initial-branch", "main"],
    );
    let mut repo = BareRepo {
        path,
        rel,
        shas: Vec::new(),
        files,
        work,
    };
    for _ in 0..commits {
        repo.make_commit();
    }
    repo.push();
    repo
}

impl BareRepo {
    /// The newest commit of `main`.
    pub fn head(&self) -> &str {
        self.shas.last().unwrap()
    }

    /// The names of the files every commit holds, relative to the top.
    pub fn file_names(&self) -> Vec<String> {
        (0..self.files).map(file_name).collect()
    }

    /// A new commit on `main` (every file changes), pushed to the bare
    /// repository: a "ref bump". Returns its sha.
    pub fn commit(&mut self) -> String {
        self.make_commit();
        self.push();
        self.head().to_string()
    }

    /// A lightweight tag `name` on `sha`.
    pub fn tag(&self, name: &str, sha: &str) {
        git(&self.path, &["tag", name, sha]);
    }

    /// An annotated tag `name` on `sha`; returns the tag object's sha.
    pub fn annotated_tag(&self, name: &str, sha: &str) -> String {
        let message = format!("tag {name}");
        git(&self.path, &["tag", "-a", "-m", &message, name, sha]);
        git(&self.path, &["rev-parse", &format!("refs/tags/{name}")])
    }

    /// A branch `name` on `sha`.
    pub fn branch(&self, name: &str, sha: &str) {
        git(&self.path, &["branch", name, sha]);
    }

    /// Moves (or creates) a full ref such as `refs/tags/v1` to `sha`: a tag
    /// or branch that moves under the client.
    pub fn set_ref(&self, full_ref: &str, sha: &str) {
        git(&self.path, &["update-ref", full_ref, sha]);
    }

    /// Lets clients fetch any commit reachable from a ref by its sha
    /// (protocol v0, which libgit2 speaks, refuses that by default).
    pub fn allow_reachable_sha1_in_want(&self) {
        self.config("uploadpack.allowReachableSHA1InWant", "true");
    }

    /// Lets clients fetch any object by its sha, reachable or not.
    pub fn allow_any_sha1_in_want(&self) {
        self.config("uploadpack.allowAnySHA1InWant", "true");
    }

    /// Sets a key in the bare repository's config.
    pub fn config(&self, key: &str, value: &str) {
        git(&self.path, &["config", key, value]);
    }

    fn make_commit(&mut self) {
        let n = self.shas.len() + 1;
        let dir = self.work.path();
        for i in 0..self.files {
            let file = dir.join(file_name(i));
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, format!("{} commit {n} file {i}\n", self.rel)).unwrap();
        }
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "--quiet", "-m", &format!("commit {n}")]);
        self.shas.push(git(dir, &["rev-parse", "HEAD"]));
    }

    fn push(&self) {
        let target = self.path.to_str().unwrap();
        git(
            self.work.path(),
            &["push", "--quiet", "--force", target, "main:main"],
        );
    }
}

fn file_name(i: usize) -> String {
    if i % 2 == 1 {
        format!("sub/file-{i:03}.txt")
    } else {
        format!("file-{i:03}.txt")
    }
}

/// Builds a bare repository at `root/rel` with one commit on `main` that
/// holds `files` (path, content; executable when the path ends in `.sh`)
/// and `gitlinks` (path, commit sha: submodules, whose `.gitmodules` is one
/// of `files`). Returns the commit's sha.
pub fn bare_repo_with(
    root: &Path,
    rel: &str,
    files: &[(&str, &[u8])],
    gitlinks: &[(&str, &str)],
) -> String {
    let path = root.join(rel.trim_matches('/'));
    std::fs::create_dir_all(&path).unwrap();
    git(
        &path,
        &["init", "--quiet", "--bare", "--initial-branch", "main"],
    );
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    git(dir, &["init", "--quiet", "--initial-branch", "main"]);
    for (name, content) in files {
        let file = dir.join(name);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, content).unwrap();
        if name.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    git(dir, &["add", "-A"]);
    for (link, sha) in gitlinks {
        git(
            dir,
            &[
                "update-index",
                "--add",
                "--cacheinfo",
                &format!("160000,{sha},{link}"),
            ],
        );
    }
    git(dir, &["commit", "--quiet", "-m", "with submodules"]);
    git(
        dir,
        &[
            "push",
            "--quiet",
            "--force",
            path.to_str().unwrap(),
            "main:main",
        ],
    );
    git(dir, &["rev-parse", "HEAD"])
}

/// Stores `content` as a Git LFS object of the bare repository at
/// `repo_dir`, where the server serves it, and returns the pointer file
/// that stands for it (written by hand: no git-lfs binary needed).
pub fn lfs_object(repo_dir: &Path, content: &[u8]) -> String {
    use sha2::Digest;
    let oid: String = sha2::Sha256::digest(content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = repo_dir
        .join("lfs/objects")
        .join(&oid[0..2])
        .join(&oid[2..4]);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&oid), content).unwrap();
    format!(
        "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {}\n",
        content.len()
    )
}

/// The requests a server logged with `ServerOptions::log`, in order; each is
/// `{"method", "path", "query", "status", "bytes", "auth", "command"}`
/// (`auth`: whether it carried an Authorization header; `command`:
/// "ls-refs" or "fetch" for POSTs to git-upload-pack, else null). A log that
/// does not exist yet means no requests.
pub fn requests(log: &Path) -> Vec<serde_json::Value> {
    let text = match std::fs::read_to_string(log) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("reading {}: {e}", log.display()),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line {l:?}: {e}")))
        .collect()
}

/// How many POSTs to git-upload-pack a log holds: the negotiations and pack
/// downloads (protocol v2 clients also POST `ls-refs`; see `command`).
pub fn upload_pack_posts(log: &Path) -> usize {
    requests(log)
        .iter()
        .filter(|r| {
            r["method"] == "POST"
                && r["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/git-upload-pack"))
        })
        .count()
}
