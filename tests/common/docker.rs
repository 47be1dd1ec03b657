//! The real Docker Engine and real registries for the integration tests:
//! a gate on the engine (`DOCKER_HOST`, else `/var/run/docker.sock`),
//! Debian's docker CLI 20.10 at `/usr/bin/docker`, FROM-scratch build
//! contexts around the static busybox of `busybox-static` (nothing can be
//! pulled here), and Debian's `docker-registry` on a free loopback port,
//! optionally behind htpasswd basic auth. `scripts/test` installs all of it
//! and starts `dockerd`.
//!
//! ```ignore
//! if !require_engine() { return; }
//! let dir = tempfile::tempdir().unwrap();
//! let Some(_) = scratch_context(dir.path(), SCRATCH_DOCKERFILE) else { return };
//! let Some(registry) = Registry::start(RegistryOptions::default()) else { return };
//! let image = TempImage::new(registry.image("hoist/app", "1"));
//! docker_env(&[("DOCKER_BUILDKIT", "1")], &["build", "-t", image.name(), dir.path().to_str().unwrap()]);
//! docker(&["push", image.name()]);
//! assert_eq!(registry.tags("hoist/app"), ["1"]);
//! ```
//!
//! Every gate follows one rule: when a tool or the engine is missing, the
//! reason goes to stderr and the caller returns early, except with `CI=true`,
//! where it panics, so CI never skips.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::git_server::base64;

/// Debian's docker CLI (20.10, API 1.41). A `/usr/local/bin/docker` 28.x
/// may come first in PATH; it refuses `DOCKER_BUILDKIT=1` without buildx.
pub const DOCKER_CLI: &str = "/usr/bin/docker";

/// The static busybox of Debian's `busybox-static`.
pub const BUSYBOX: &str = "/bin/busybox";

/// Debian's CNCF distribution registry (`docker-registry` package, 2.8).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A multi-stage FROM-scratch Dockerfile for [`scratch_context`]: busybox
/// installs its applets (so plain `RUN` lines have `/bin/sh`), an `ARG`
/// (`GREETING`, default `hello`) lands in `/greeting`, and the final stage
/// copies the first stage's tree with `COPY --from`. Its default command
/// prints the greeting. No `# syntax=` line and no heredocs: the 20.10
/// frontend is built in and nothing can be pulled.
pub const SCRATCH_DOCKERFILE: &str = r#"FROM scratch AS base
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ARG GREETING=hello
RUN echo "$GREETING" > /greeting

FROM scratch
COPY --from=base / /
CMD ["/bin/busybox", "cat", "/greeting"]
"#;

/// Whether `CI` is `"true"`.
pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// A missing prerequisite: panics with `CI=true`, else prints
/// `skipped: <reason>` to stderr.
fn missing(reason: &str) {
    if in_ci() {
        panic!("CI=true but {reason}");
    }
    eprintln!("skipped: {reason}");
}

/// Whether the engine answers and the CLI is there; callers return early on
/// false: `if !require_engine() { return; }`. Panics instead with `CI=true`.
pub fn require_engine() -> bool {
    if let Err(why) = ping_engine() {
        missing(&format!(
            "the Docker engine does not answer ({why}); scripts/test starts \
             dockerd (Debian: apt-get install docker.io)"
        ));
        return false;
    }
    if !Path::new(DOCKER_CLI).is_file() {
        missing(&format!(
            "{DOCKER_CLI} is missing (Debian: apt-get install docker.io)"
        ));
        return false;
    }
    true
}

/// `GET /_ping` on the engine at `DOCKER_HOST` (`unix://` or `tcp://`),
/// else `/var/run/docker.sock`: `Ok` when it answers 200.
pub fn ping_engine() -> Result<(), String> {
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    let host = if host.is_empty() {
        "unix:///var/run/docker.sock".to_string()
    } else {
        host
    };
    let timeout = Some(Duration::from_secs(5));
    let request = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n";
    let mut response = Vec::new();
    let result = if let Some(path) = host.strip_prefix("unix://") {
        UnixStream::connect(path).and_then(|mut s| {
            s.set_read_timeout(timeout)?;
            s.set_write_timeout(timeout)?;
            s.write_all(request)?;
            s.read_to_end(&mut response)
        })
    } else if let Some(addr) = host.strip_prefix("tcp://") {
        TcpStream::connect(addr.trim_end_matches('/')).and_then(|mut s| {
            s.set_read_timeout(timeout)?;
            s.set_write_timeout(timeout)?;
            s.write_all(request)?;
            s.read_to_end(&mut response)
        })
    } else {
        return Err(format!("DOCKER_HOST={host} is neither unix:// nor tcp://"));
    };
    result.map_err(|e| format!("{host}: {e}"))?;
    let response = String::from_utf8_lossy(&response);
    match response.split(' ').nth(1) {
        Some("200") => Ok(()),
        _ => Err(format!(
            "{host} answered {:?}",
            response.lines().next().unwrap_or("")
        )),
    }
}

/// The static busybox, or `None` (reason on stderr; a panic with `CI=true`)
/// when it is absent or dynamically linked (the `busybox` package instead of
/// `busybox-static`): a FROM-scratch image has no libc to load.
pub fn busybox() -> Option<PathBuf> {
    let path = PathBuf::from(BUSYBOX);
    match std::fs::read(&path) {
        Ok(bytes) if is_static_elf(&bytes) => Some(path),
        Ok(_) => {
            missing(&format!(
                "{BUSYBOX} is not a static executable (Debian: apt-get install busybox-static)"
            ));
            None
        }
        Err(e) => {
            missing(&format!(
                "{BUSYBOX}: {e} (Debian: apt-get install busybox-static)"
            ));
            None
        }
    }
}

/// A 64-bit little-endian ELF executable without a program interpreter
/// (no `PT_INTERP` header): it runs with nothing else in the image.
fn is_static_elf(b: &[u8]) -> bool {
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .map(|s| u64::from_le_bytes(s.try_into().unwrap()))
    };
    if b.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    const PT_INTERP: u32 = 3;
    (0..usize::from(phnum)).all(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        u32_at(at).is_some_and(|kind| kind != PT_INTERP)
    })
}

/// [`DOCKER_CLI`] as a path.
pub fn docker_cli() -> PathBuf {
    PathBuf::from(DOCKER_CLI)
}

/// Runs the docker CLI; panics with its stderr when it fails. Returns stdout,
/// trimmed. `DOCKER_BUILDKIT` is whatever the test process has; see
/// [`docker_env`] to set it.
pub fn docker(args: &[&str]) -> String {
    docker_env(&[], args)
}

/// [`docker`] with extra environment variables, e.g.
/// `&[("DOCKER_BUILDKIT", "0")]` for the classic builder.
pub fn docker_env(envs: &[(&str, &str)], args: &[&str]) -> String {
    let out = try_docker(envs, args);
    assert!(
        out.status.success(),
        "docker {args:?} ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs the docker CLI without checking the exit status.
pub fn try_docker(envs: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(DOCKER_CLI)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {DOCKER_CLI}: {e}"))
}

/// Whether the engine has an image (or tag) by that name.
pub fn image_exists(name: &str) -> bool {
    try_docker(&[], &["image", "inspect", "--format", "{{.Id}}", name])
        .status
        .success()
}

/// Removes an image by name or id, forced; an absent image is fine.
pub fn remove_image(name: &str) {
    let out = try_docker(&[], &["image", "rm", "--force", name]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || stderr.contains("No such image"),
        "docker image rm {name}: {stderr}"
    );
}

/// `hoist-test-<what>-<pid>-<n>`: a name no other test (in this process or
/// a parallel one) uses, lower case as image names must be.
pub fn unique_name(what: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "hoist-test-{}-{}-{}",
        what.to_ascii_lowercase(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// An image name that is removed from the engine on drop (also when the
/// test panics).
pub struct TempImage(String);

impl TempImage {
    /// Takes a name as given (e.g. `registry.image("hoist/app", "1")`).
    pub fn new(name: impl Into<String>) -> TempImage {
        TempImage(name.into())
    }

    /// `hoist-test-<what>-<pid>-<n>:latest`.
    pub fn unique(what: &str) -> TempImage {
        TempImage(format!("{}:latest", unique_name(what)))
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = try_docker(&[], &["image", "rm", "--force", &self.0]);
    }
}

/// Makes `dir` a build context: the static busybox copied in as `busybox`
/// and `dockerfile` written to `Dockerfile` (see [`SCRATCH_DOCKERFILE`]).
/// Returns the Dockerfile's path, or `None` when busybox is missing (see
/// [`busybox`]).
pub fn scratch_context(dir: &Path, dockerfile: &str) -> Option<PathBuf> {
    let busybox = busybox()?;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(&busybox, dir.join("busybox")).unwrap();
    let path = dir.join("Dockerfile");
    std::fs::write(&path, dockerfile).unwrap();
    Some(path)
}

/// How a [`Registry`] is started; `Default` is: no auth.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// `(user, password)`: every request needs basic auth (htpasswd with
    /// bcrypt, made by `htpasswd -Bbn`), else 401.
    pub htpasswd: Option<(String, String)>,
}

/// A running `docker-registry serve` on 127.0.0.1 with filesystem storage
/// in a temp dir and deletes enabled; dropping it kills the process and
/// waits for it.
pub struct Registry {
    child: Child,
    addr: String,
    credentials: Option<(String, String)>,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry on a free port of 127.0.0.1 and waits until it
    /// listens and `GET /v2/` answers (200, or 401 with auth).
    ///
    /// Returns `None` only when `docker-registry` (or, with auth, `htpasswd`)
    /// is not installed and `CI` is not `"true"`: the reason is printed and
    /// the caller returns early. With `CI=true` that panics instead. Panics
    /// when the registry does not come up.
    pub fn start(options: RegistryOptions) -> Option<Registry> {
        if !Path::new(REGISTRY_BIN).is_file() {
            missing(&format!(
                "{REGISTRY_BIN} is missing (Debian: apt-get install docker-registry)"
            ));
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let auth = match &options.htpasswd {
            None => String::new(),
            Some((user, password)) => {
                let out = match Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                {
                    Ok(out) => out,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        missing("htpasswd is missing (Debian: apt-get install apache2-utils)");
                        return None;
                    }
                    Err(e) => panic!("running htpasswd: {e}"),
                };
                assert!(
                    out.status.success(),
                    "htpasswd: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, &out.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: hoist-test\n    path: {}\n",
                    file.display()
                )
            }
        };
        // A port freed just now can be taken by a parallel test before the
        // registry binds it: then the registry exits and we try another.
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\n\
                     log:\n  level: info\n\
                     storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                     http:\n  addr: {addr}\n  secret: hoist-test-secret\n{auth}",
                    dir.path().join("data").display()
                ),
            )
            .unwrap();
            let log_path = dir.path().join("registry.log");
            let log = File::create(&log_path).unwrap();
            let mut child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {REGISTRY_BIN}: {e}"));
            // It logs `listening on ADDR` once its own socket is bound; only
            // then can a /v2/ answer be trusted to come from it.
            let listening = format!("listening on {addr}");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                if let Some(status) = child.try_wait().unwrap() {
                    last_log = format!("exit {status}: {text}");
                    break;
                }
                if text.contains(&listening) {
                    let registry = Registry {
                        child,
                        addr,
                        credentials: options.htpasswd.clone(),
                        dir,
                    };
                    registry.wait_until_answering(deadline);
                    return Some(registry);
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the registry did not listen within 30 s; its log:\n{text}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !last_log.contains("address already in use") {
                break;
            }
        }
        panic!("the registry did not start; {last_log}");
    }

    fn wait_until_answering(&self, deadline: Instant) {
        let expected = if self.credentials.is_some() { 401 } else { 200 };
        loop {
            match self.try_get("/v2/", None) {
                Ok((status, _)) if status == expected => return,
                Ok((status, body)) if Instant::now() > deadline => {
                    panic!(
                        "the registry answers /v2/ with {status}: {body}\n{}",
                        self.log()
                    )
                }
                Err(e) if Instant::now() > deadline => {
                    panic!("the registry does not answer /v2/: {e}\n{}", self.log())
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// `127.0.0.1:PORT`: the registry part of an image name.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// `127.0.0.1:PORT/<repo>:<tag>`.
    pub fn image(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.addr)
    }

    /// The `(user, password)` it was started with.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The registry's storage directory (filesystem driver).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// What the registry has logged so far (its access log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// One GET with `Authorization: Basic` for `auth` when given:
    /// (status, body).
    pub fn get(&self, path: &str, auth: Option<(&str, &str)>) -> (u16, String) {
        self.try_get(path, auth)
            .unwrap_or_else(|e| panic!("GET {}{path}: {e}", self.url()))
    }

    fn try_get(&self, path: &str, auth: Option<(&str, &str)>) -> std::io::Result<(u16, String)> {
        let (status, _, body) = http_request(&self.addr, "GET", path, auth, &[])?;
        Ok((status, body))
    }

    /// Uploads `bytes` as a blob of `repo` (monolithic: POST, then PUT
    /// with the digest), with the registry's own login; returns its digest.
    /// Panics unless the registry answers 202, then 201.
    pub fn upload_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let auth = self.credentials();
        let path = format!("/v2/{repo}/blobs/uploads/");
        let (status, head, _) = http_send_bytes(&self.addr, "POST", &path, auth, &[], b"")
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        assert_eq!(status, 202, "POST {path}: {head}");
        let location = header(&head, "location")
            .unwrap_or_else(|| panic!("POST {path} gave no Location: {head}"));
        let location = location.strip_prefix(&self.url()).unwrap_or(&location);
        let digest = hoist::registry::digest_of(bytes);
        let separator = if location.contains('?') { '&' } else { '?' };
        let (status, head, _) = http_send_bytes(
            &self.addr,
            "PUT",
            &format!("{location}{separator}digest={digest}"),
            auth,
            &[("Content-Type", "application/octet-stream")],
            bytes,
        )
        .unwrap_or_else(|e| panic!("PUT blob {digest} of {repo}: {e}"));
        assert_eq!(status, 201, "PUT blob {digest} of {repo}: {head}");
        digest
    }

    /// The bytes of the blob `digest` of `repo` (asked with the registry's
    /// own credentials); panics unless the registry answers 200.
    pub fn blob(&self, repo: &str, digest: &str) -> Vec<u8> {
        let (status, head, body) = http_send_bytes(
            &self.addr,
            "GET",
            &format!("/v2/{repo}/blobs/{digest}"),
            self.credentials(),
            &[],
            b"",
        )
        .unwrap_or_else(|e| panic!("GET blob {digest} of {repo}: {e}"));
        assert_eq!(status, 200, "GET blob {digest} of {repo}: {head}");
        body
    }

    /// The tags of `repo`, sorted (none when the repository is unknown),
    /// asked with the registry's own credentials.
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let (status, body) = self.get(&format!("/v2/{repo}/tags/list"), self.credentials());
        if status == 404 {
            return Vec::new();
        }
        assert_eq!(status, 200, "tags of {repo}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut tags: Vec<String> = json["tags"]
            .as_array()
            .map(|tags| {
                tags.iter()
                    .map(|t| t.as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        tags.sort();
        tags
    }

    /// The digest the registry reports for `repo:reference` (HEAD on the
    /// manifest, schema 2 and OCI accepted), or `None` on 404.
    pub fn manifest_digest(&self, repo: &str, reference: &str) -> Option<String> {
        let accept = "application/vnd.docker.distribution.manifest.v2+json, \
                      application/vnd.docker.distribution.manifest.list.v2+json, \
                      application/vnd.oci.image.manifest.v1+json, \
                      application/vnd.oci.image.index.v1+json";
        let (status, head, _) = http_request(
            &self.addr,
            "HEAD",
            &format!("/v2/{repo}/manifests/{reference}"),
            self.credentials(),
            &[("Accept", accept)],
        )
        .unwrap();
        if status == 404 {
            return None;
        }
        assert_eq!(status, 200, "HEAD manifest {repo}:{reference}: {head}");
        header(&head, "docker-content-digest")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The value of header `name` (any case) in a response head as
/// `http_request` returns it, trimmed.
pub fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        key.eq_ignore_ascii_case(name)
            .then(|| value.trim().to_string())
    })
}

/// One raw HTTP/1.0 request to `addr` (no chunked answers, the connection
/// closes after it): (status, head, body).
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String, String)> {
    http_send(addr, method, path, auth, headers, b"")
}

/// A PUT of `body` as `content_type`, without auth: (status, head, body).
pub fn http_put(
    addr: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<(u16, String, String)> {
    http_send(
        addr,
        "PUT",
        path,
        None,
        &[("Content-Type", content_type)],
        body,
    )
}

fn http_send(
    addr: &str,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String, String)> {
    let (status, head, body) = http_send_bytes(addr, method, path, auth, headers, body)?;
    Ok((status, head, String::from_utf8_lossy(&body).to_string()))
}

/// [`http_send`] with the answer's body as it came: (status, head, body).
fn http_send_bytes(
    addr: &str,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some((user, password)) = auth {
        let token = base64(format!("{user}:{password}").as_bytes());
        request.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(response.len());
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let body = response.get(split + 4..).unwrap_or_default().to_vec();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {head:?}")))?;
    Ok((status, head, body))
}
