//! `scripts/install` against a release served on loopback, laid out as
//! GitHub and Gitea serve one: `/<org>/<repo>/releases/latest` redirects to
//! `.../releases/tag/<tag>`, and the assets sit under
//! `.../releases/download/<tag>/`. The assets are the real hoist binary of
//! this build, packed by `scripts/package`, so the two scripts are tested
//! together. The installer runs under dash, as `curl | sh` runs it on
//! Debian and Ubuntu.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The tag of the served release: this build's own version.
const TAG: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// The target the installer detects on this machine (the suite runs on
/// Linux, x86_64 or aarch64).
fn host_target() -> String {
    assert_eq!(
        std::env::consts::OS,
        "linux",
        "the installer's tests run on Linux"
    );
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

fn asset() -> String {
    format!("hoist-{TAG}-{}.tar.gz", host_target())
}

/// What this build's hoist says to `--version`: what an installed copy
/// must say too.
fn hoist_version() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_hoist"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// The release's assets, packed once per test run by `scripts/package`
/// from this build's binary with its debug info stripped: the same code,
/// saying the same `--version`, but 45 MB instead of 315 MB, which gzip
/// packs in seconds rather than half a minute.
fn packaged() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("install_script-release");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let binary = dir.join("hoist");
        let strip = Command::new("strip")
            .arg("-o")
            .arg(&binary)
            .arg(env!("CARGO_BIN_EXE_hoist"))
            .status()
            .expect("strip runs (Debian: apt-get install binutils)");
        assert!(strip.success());
        let started = Instant::now();
        let out = Command::new(Path::new(ROOT).join("scripts/package"))
            .arg(host_target())
            .arg(&binary)
            .arg(TAG)
            .arg(dir.join(TAG))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/package: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "scripts/package took {:.1} s",
            started.elapsed().as_secs_f64()
        );
        dir
    })
}

/// A forge on loopback serving one project's releases from a directory
/// (`<dir>/<tag>/<asset>`), and counting the requests it answers.
struct Forge {
    addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Forge {
    fn start(dir: PathBuf) -> Forge {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (requests_in, stop_in) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop_in.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (dir, requests) = (dir.clone(), requests_in.clone());
                std::thread::spawn(move || {
                    let _ = answer(stream, addr, &dir, &requests);
                });
            }
        });
        Forge {
            addr,
            requests,
            stop,
        }
    }

    /// The project's web URL, as the installer's `--repository` takes it.
    fn repository(&self) -> String {
        format!("http://{}/org/hoist", self.addr)
    }

    /// The paths requested so far, in order.
    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Forge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Answers one request, then closes the connection.
fn answer(
    stream: TcpStream,
    addr: std::net::SocketAddr,
    dir: &Path,
    requests: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // The headers; a GET has no body.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    requests.lock().unwrap().push(path.clone());

    let mut stream = stream;
    let head = |status: &str, extra: &str, len: u64| {
        format!("HTTP/1.1 {status}\r\n{extra}Content-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    if path == "/org/hoist/releases/latest" {
        // As GitHub does: a 302 to the tag's page, by absolute URL.
        let location = format!("Location: http://{addr}/org/hoist/releases/tag/{TAG}\r\n");
        stream.write_all(head("302 Found", &location, 0).as_bytes())?;
    } else if path.starts_with("/org/hoist/releases/tag/") {
        let page = "<html>a release</html>";
        stream.write_all(head("200 OK", "", page.len() as u64).as_bytes())?;
        stream.write_all(page.as_bytes())?;
    } else if let Some(file) = path
        .strip_prefix("/org/hoist/releases/download/")
        .filter(|rel| !rel.split('/').any(|part| part == ".." || part.is_empty()))
        .and_then(|rel| std::fs::File::open(dir.join(rel)).ok())
    {
        let len = file.metadata()?.len();
        stream.write_all(head("200 OK", "", len).as_bytes())?;
        std::io::copy(&mut file.take(len), &mut stream)?;
    } else {
        stream.write_all(head("404 Not Found", "", 0).as_bytes())?;
    }
    stream.flush()
}

/// A release served on loopback (its own copy of the packed assets, so a
/// test may tamper with them) and a scratch directory for the installer's
/// cache, install directory and runner files.
struct Release {
    forge: Forge,
    assets: PathBuf,
    scratch: tempfile::TempDir,
}

impl Release {
    fn new() -> Release {
        let scratch = tempfile::tempdir().unwrap();
        let assets = scratch.path().join("release");
        std::fs::create_dir_all(assets.join(TAG)).unwrap();
        for entry in std::fs::read_dir(packaged().join(TAG)).unwrap() {
            let from = entry.unwrap().path();
            let to = assets.join(TAG).join(from.file_name().unwrap());
            // A link is enough for what no test changes; a test that
            // changes a file writes a new one in its place.
            std::fs::hard_link(&from, &to)
                .or_else(|_| std::fs::copy(&from, &to).map(|_| ()))
                .unwrap();
        }
        Release {
            forge: Forge::start(assets.clone()),
            assets,
            scratch,
        }
    }

    /// A path in the scratch directory.
    fn path(&self, rel: &str) -> PathBuf {
        self.scratch.path().join(rel)
    }

    /// The served SHA256SUMS.
    fn sums(&self) -> PathBuf {
        self.assets.join(TAG).join("SHA256SUMS")
    }
}

/// Runs `dash scripts/install ARGS` with `env`, and nothing of the test's
/// own environment that the installer reads (`HOIST_*`, `GITHUB_*`,
/// `RUNNER_*`, `XDG_CACHE_HOME`), so a suite run under a runner tests the
/// same thing.
fn install(args: &[&str], env: &[(&str, &str)]) -> Output {
    install_with(args, env, None)
}

fn install_with(args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Output {
    let mut command = Command::new("dash");
    match stdin {
        // `curl … | sh -s -- ARGS`: the script comes on stdin.
        Some(_) => command.args(["-s", "--"]),
        None => command.arg(Path::new(ROOT).join("scripts/install")),
    };
    command.args(args);
    for (name, _) in std::env::vars() {
        if ["HOIST_", "GITHUB_", "RUNNER_"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
            || name == "XDG_CACHE_HOME"
        {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .expect("dash runs the installer (Debian: apt-get install dash)");
    if let Some(script) = stdin {
        child.stdin.take().unwrap().write_all(script).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file and directory under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(next) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            found.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() {
                todo.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The installed binary runs and says what this build says.
fn assert_runs(binary: &Path) {
    let out = Command::new(binary).arg("--version").output().unwrap();
    assert!(out.status.success(), "{}", binary.display());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), hoist_version());
}

/// `latest` is followed to the tag, the asset is downloaded, verified,
/// cached in the runner's tool cache, installed, and announced to the
/// runner.
#[test]
fn latest_is_downloaded_verified_cached_and_installed() {
    let release = Release::new();
    let (bin, tool_cache) = (release.path("bin"), release.path("tool-cache"));
    let (github_path, github_output) = (release.path("github_path"), release.path("github_output"));
    let out = install(
        &[
            "--repository",
            &release.forge.repository(),
            "--to",
            bin.to_str().unwrap(),
        ],
        &[
            ("RUNNER_TOOL_CACHE", tool_cache.to_str().unwrap()),
            ("GITHUB_PATH", github_path.to_str().unwrap()),
            ("GITHUB_OUTPUT", github_output.to_str().unwrap()),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains(&format!("latest is {TAG}")), "{err}");
    // The last line is what the installed hoist says of itself.
    assert_eq!(String::from_utf8(out.stdout).unwrap(), hoist_version());
    assert_runs(&bin.join("hoist"));

    assert_eq!(
        release.forge.requests(),
        [
            "/org/hoist/releases/latest".to_string(),
            format!("/org/hoist/releases/tag/{TAG}"),
            format!("/org/hoist/releases/download/{TAG}/{}", asset()),
            format!("/org/hoist/releases/download/{TAG}/SHA256SUMS"),
        ]
    );
    assert_eq!(read(&github_path), format!("{}\n", bin.display()));
    assert_eq!(
        read(&github_output),
        format!(
            "version={TAG}\npath={}\nsource=download\n",
            bin.join("hoist").display()
        )
    );
    // actions/tool-cache's layout under RUNNER_TOOL_CACHE/hoist, with the
    // asset's LICENSE and README beside the binary and nothing temporary
    // left.
    let target = host_target();
    assert_eq!(
        tree(&tool_cache),
        [
            "hoist".to_string(),
            format!("hoist/{TAG}"),
            format!("hoist/{TAG}/{target}"),
            format!("hoist/{TAG}/{target}.complete"),
            format!("hoist/{TAG}/{target}/LICENSE"),
            format!("hoist/{TAG}/{target}/README.md"),
            format!("hoist/{TAG}/{target}/hoist"),
        ]
    );
    assert_eq!(tree(&bin), ["hoist"]);
}

/// A second run of a version in the cache asks the network nothing and
/// installs again. Flags win over the variables.
#[test]
fn a_cached_version_installs_without_a_request() {
    let release = Release::new();
    let cache = release.path("cache");
    let repository = release.forge.repository();
    let env = [
        ("HOIST_REPOSITORY", repository.as_str()),
        ("HOIST_INSTALL_CACHE", cache.to_str().unwrap()),
        ("HOIST_VERSION", "v9.9.9"),
    ];
    let first = release.path("first");
    let out = install(&["--version", TAG, "--to", first.to_str().unwrap()], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let asked = release.forge.requests().len();
    assert_eq!(asked, 2, "{:?}", release.forge.requests());

    let (second, github_output) = (release.path("second"), release.path("github_output"));
    let out = install(
        &["--version", TAG],
        &[
            &env[..],
            &[
                ("HOIST_INSTALL_DIR", second.to_str().unwrap()),
                ("GITHUB_OUTPUT", github_output.to_str().unwrap()),
            ],
        ]
        .concat(),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(release.forge.requests().len(), asked, "no request at all");
    assert!(
        err.contains(&format!(
            "hoist {TAG} ({}) from the tool cache",
            host_target()
        )),
        "{err}"
    );
    assert_runs(&second.join("hoist"));
    assert!(read(&github_output).contains("source=cache\n"));
    // Installed through a temporary name, of which nothing is left.
    assert_eq!(tree(&second), ["hoist"]);
}

/// A tampered SHA256SUMS: exit 1 naming the file and both hashes, nothing
/// installed, nothing complete in the cache. A SHA256SUMS without the
/// asset's line: the same, naming the file.
#[test]
fn a_checksum_mismatch_installs_nothing() {
    let release = Release::new();
    let sums = read(&release.sums());
    let line = sums
        .lines()
        .find(|line| line.ends_with(&format!("  {}", asset())))
        .expect("SHA256SUMS names the asset");
    let actual = line.split_whitespace().next().unwrap().to_string();
    let forged = "0123456789abcdef".repeat(4);
    std::fs::remove_file(release.sums()).unwrap();
    std::fs::write(release.sums(), sums.replace(&actual, &forged)).unwrap();

    let (bin, cache) = (release.path("bin"), release.path("cache"));
    let args = [
        "--repository",
        &release.forge.repository(),
        "--version",
        TAG,
        "--to",
        bin.to_str().unwrap(),
    ];
    let env = [("HOIST_INSTALL_CACHE", cache.to_str().unwrap())];
    let out = install(&args, &env);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&asset()), "{err}");
    assert!(err.contains(&forged), "names what SHA256SUMS says: {err}");
    assert!(err.contains(&actual), "names the download's hash: {err}");
    assert!(!bin.exists(), "nothing installed: {:?}", tree(&bin));
    assert_eq!(tree(&cache), Vec::<String>::new(), "nothing in the cache");

    std::fs::write(release.sums(), format!("{actual}  hoist-other.tar.gz\n")).unwrap();
    let out = install(&args, &env);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("SHA256SUMS of {TAG} has no line for {}", asset())),
        "{err}"
    );
    assert!(!bin.exists());
    assert_eq!(tree(&cache), Vec::<String>::new());
}

/// The installer piped into `sh -s --`, as `curl -fsSL URL | sh -s -- ARGS`
/// runs it, with the defaults for the cache and the install directory
/// under HOME; a part of it runs nothing.
#[test]
fn the_script_runs_piped_into_sh() {
    let release = Release::new();
    let home = release.path("home");
    std::fs::create_dir(&home).unwrap();
    let script = std::fs::read(Path::new(ROOT).join("scripts/install")).unwrap();
    let out = install_with(
        &[
            "--repository",
            &release.forge.repository(),
            "--version",
            TAG,
        ],
        &[("HOME", home.to_str().unwrap())],
        Some(&script),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_runs(&home.join(".local/bin/hoist"));
    let target = host_target();
    assert!(
        home.join(format!(".cache/hoist/{TAG}/{target}.complete"))
            .is_file()
    );

    // A download cut short runs nothing at all: here cut where the last
    // tenth begins, past the download into the cache, before the install.
    let other_home = release.path("other-home");
    std::fs::create_dir(&other_home).unwrap();
    let out = install_with(
        &[
            "--repository",
            &release.forge.repository(),
            "--version",
            TAG,
        ],
        &[("HOME", other_home.to_str().unwrap())],
        Some(&script[..script.len() * 9 / 10]),
    );
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(tree(&other_home), Vec::<String>::new(), "{}", stderr(&out));
}

/// Without curl, wget downloads, and follows `latest` too.
#[test]
fn wget_serves_where_curl_is_missing() {
    let release = Release::new();
    // PATH: every command of /usr/bin and /bin but curl.
    let path = release.path("no-curl");
    std::fs::create_dir(&path).unwrap();
    for dir in ["/usr/bin", "/bin"] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            if name != "curl" && path.join(&name).symlink_metadata().is_err() {
                std::os::unix::fs::symlink(entry.path(), path.join(&name)).unwrap();
            }
        }
    }
    assert!(
        path.join("wget").exists(),
        "wget is installed (Debian: apt-get install wget)"
    );
    let (bin, cache) = (release.path("bin"), release.path("cache"));
    let out = install(
        &[
            "--repository",
            &release.forge.repository(),
            "--to",
            bin.to_str().unwrap(),
        ],
        &[
            ("PATH", path.to_str().unwrap()),
            ("HOIST_INSTALL_CACHE", cache.to_str().unwrap()),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains(&format!("latest is {TAG}")), "{err}");
    assert_runs(&bin.join("hoist"));
}

/// Bad usage is exit 2 with a message saying what to give, and touches
/// nothing.
#[test]
fn bad_usage_is_exit_2() {
    let scratch = tempfile::tempdir().unwrap();
    let (bin, cache) = (scratch.path().join("bin"), scratch.path().join("cache"));
    let env = [("HOIST_INSTALL_CACHE", cache.to_str().unwrap())];
    let to = ["--to", bin.to_str().unwrap()];

    let out = install(&to, &env);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--repository") && err.contains("HOIST_REPOSITORY"),
        "names the flag and the variable: {err}"
    );

    let repository = ["--repository", "http://127.0.0.1:9/org/hoist"];
    for (args, says) in [
        (&["--version"][..], "--version needs a value"),
        (&["--bogus"][..], "unknown argument: --bogus"),
        (&["--version", "../v1"][..], "is neither a tag"),
        (&["--target", "x86 64"][..], "is not a target triple"),
    ] {
        let out = install(&[&repository[..], &to[..], args].concat(), &env);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(!bin.exists() && !cache.exists());

    let out = install(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    for word in [
        "HOIST_VERSION",
        "HOIST_REPOSITORY",
        "HOIST_INSTALL_DIR",
        "HOIST_TARGET",
        "HOIST_INSTALL_CACHE",
        "HOIST_SOURCE",
        "Exit codes:",
    ] {
        assert!(help.contains(word), "{word}: {help}");
    }
}

/// A target without a release asset is built with cargo, and says why. A
/// real build here costs minutes (`cargo install` resolves features
/// without the dev-dependencies, so it cannot reuse the suite's build:
/// 4 min cold, 1 min warm, measured), so the decision and the exact
/// command line are tested with `--dry-run`, which asks the forge nothing.
#[test]
fn a_target_without_an_asset_is_built_with_cargo() {
    let release = Release::new();
    let (bin, cache) = (release.path("bin"), release.path("cache"));
    let repository = release.forge.repository();
    let riscv = "riscv64gc-unknown-linux-gnu";
    let common = [
        "--repository",
        &repository,
        "--version",
        TAG,
        "--to",
        bin.to_str().unwrap(),
        "--dry-run",
    ];
    let cases = [
        // The checkout's source, in the debug profile, as a test would.
        (
            vec!["--target", riscv],
            vec![("HOIST_SOURCE", ROOT), ("HOIST_INSTALL_PROFILE", "debug")],
            format!("--debug --path {ROOT}"),
        ),
        // The release's tag from the project, as a user gets it.
        (
            vec![],
            vec![("HOIST_TARGET", riscv)],
            format!("--git {repository} --tag {TAG} hoist"),
        ),
    ];
    for (args, mut env, builds) in cases {
        env.push(("HOIST_INSTALL_CACHE", cache.to_str().unwrap()));
        let out = install(&[&common[..], &args].concat(), &env);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(
            err.contains(&format!("no release asset for {riscv}")),
            "says why: {err}"
        );
        let command = err
            .lines()
            .find_map(|line| line.strip_prefix("hoist-install: would run: "))
            .unwrap_or_else(|| panic!("says the command: {err}"));
        let root = format!("cargo install --locked --root {}/.tmp.", cache.display());
        assert!(command.starts_with(&root), "{command}");
        assert!(command.ends_with(&format!("/cargo {builds}")), "{command}");
    }
    assert_eq!(release.forge.requests(), Vec::<String>::new());
    assert!(!bin.exists());
    assert_eq!(
        tree(&cache),
        Vec::<String>::new(),
        "nothing left in the cache"
    );
}

/// A release without the asset (HTTP 404, its SHA256SUMS there) falls back
/// to cargo, for real: here a source that cannot build, so the build fails
/// at once with exit 1 and leaves nothing.
#[test]
fn a_missing_asset_falls_back_to_cargo() {
    let release = Release::new();
    let (bin, cache, source) = (
        release.path("bin"),
        release.path("cache"),
        release.path("src"),
    );
    std::fs::create_dir(&source).unwrap();
    // v0.0.1 carries only another target's asset.
    std::fs::create_dir(release.assets.join("v0.0.1")).unwrap();
    std::fs::write(
        release.assets.join("v0.0.1/SHA256SUMS"),
        format!(
            "{}  hoist-v0.0.1-riscv64gc-unknown-linux-gnu.tar.gz\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    let out = install(
        &[
            "--repository",
            &release.forge.repository(),
            "--version",
            "v0.0.1",
            "--to",
            bin.to_str().unwrap(),
        ],
        &[
            ("HOIST_INSTALL_CACHE", cache.to_str().unwrap()),
            ("HOIST_SOURCE", source.to_str().unwrap()),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let missing = format!("hoist-v0.0.1-{}.tar.gz", host_target());
    assert!(
        err.contains(&format!(
            "the release v0.0.1 has no asset {missing} (HTTP 404)"
        )),
        "says why: {err}"
    );
    assert!(err.contains("this takes minutes"), "{err}");
    assert!(
        err.contains(&format!(
            "running: cargo install --locked --root {}",
            cache.display()
        )),
        "{err}"
    );
    assert!(err.contains("cargo install failed"), "{err}");
    assert_eq!(
        release.forge.requests(),
        [
            format!("/org/hoist/releases/download/v0.0.1/{missing}"),
            "/org/hoist/releases/download/v0.0.1/SHA256SUMS".to_string(),
        ]
    );
    assert!(!bin.exists());
    assert_eq!(tree(&cache), Vec::<String>::new());
}

/// A 404 for the asset and for SHA256SUMS (a mistyped repository or
/// version, a private project, a release still uploading) is an error that
/// says so, not a build.
#[test]
fn no_release_at_all_is_an_error_not_a_build() {
    let release = Release::new();
    let (bin, cache) = (release.path("bin"), release.path("cache"));
    let out = install(
        &[
            "--repository",
            &format!("{}-typo", release.forge.repository()),
            "--version",
            TAG,
            "--to",
            bin.to_str().unwrap(),
        ],
        &[
            ("HOIST_INSTALL_CACHE", cache.to_str().unwrap()),
            ("HOIST_SOURCE", ROOT),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("has no release {TAG} with assets")),
        "{err}"
    );
    assert!(err.contains("check --repository and --version"), "{err}");
    assert!(!err.contains("cargo"), "no build: {err}");
    assert_eq!(release.forge.requests().len(), 2);
    assert!(!bin.exists());
    assert_eq!(tree(&cache), Vec::<String>::new());
}

/// A repository URL with credentials is refused before any request: cargo
/// would print them.
#[test]
fn credentials_in_the_repository_url_are_refused() {
    let release = Release::new();
    let with_password = release
        .forge
        .repository()
        .replacen("http://", "http://user:s3cret@", 1);
    let out = install(
        &[
            "--repository",
            &with_password,
            "--to",
            release.path("bin").to_str().unwrap(),
        ],
        &[(
            "HOIST_INSTALL_CACHE",
            release.path("cache").to_str().unwrap(),
        )],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("holds credentials"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    assert!(release.forge.requests().is_empty());
}

/// The values of the `${{ … }}` expressions in `action.yml`, as a runner
/// gives them to the action's steps: the contexts by dotted name, and the
/// outputs of the steps run so far.
struct Runner {
    contexts: std::collections::HashMap<String, String>,
}

impl Runner {
    fn value(&self, expression: &str) -> String {
        let expression = expression.trim();
        self.contexts
            .get(expression)
            .cloned()
            // A step's output it did not write is empty, as on a runner.
            .or_else(|| expression.starts_with("steps.").then(String::new))
            .unwrap_or_else(|| {
                panic!("action.yml uses `{expression}`, which this test does not give")
            })
    }

    /// `text` with each `${{ expression }}` replaced by its value.
    fn expand(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some((before, after)) = rest.split_once("${{") {
            let (expression, after) = after.split_once("}}").unwrap();
            out.push_str(before);
            out.push_str(&self.value(expression));
            rest = after;
        }
        out + rest
    }

    /// An `if:` of the forms action.yml uses: comparisons with a quoted
    /// string, joined by `&&`.
    fn holds(&self, condition: &str) -> bool {
        condition.split("&&").all(|comparison| {
            let (left, equal, right) = match comparison.split_once("!=") {
                Some((l, r)) => (l, false, r),
                None => {
                    let (l, r) = comparison.split_once("==").unwrap();
                    (l, true, r)
                }
            };
            let right = right.trim().trim_matches('\'');
            (self.value(left) == right) == equal
        })
    }
}

/// Runs action.yml's steps the way a runner runs a composite action: each
/// `run:` under `bash -e -o pipefail` with its `env:` expanded and a fresh
/// GITHUB_OUTPUT, whose lines become `steps.<id>.outputs.*`; the
/// `actions/cache` steps (JavaScript actions) are not run, which is a
/// runner without a cache service: a miss. Returns the install step's
/// outputs and what the steps printed. `local`: used as `uses: ./` in
/// hoist's own repository (no action repository), else as
/// `uses: org/hoist@…`.
fn run_action(
    release: &Release,
    inputs: &[(&str, &str)],
    local: bool,
) -> (std::collections::HashMap<String, String>, String) {
    let action: serde_yaml::Value =
        serde_yaml::from_str(&read(&Path::new(ROOT).join("action.yml"))).unwrap();
    let mut contexts = std::collections::HashMap::new();
    for (name, input) in action["inputs"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        let given = inputs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        let default = input["default"].as_str().unwrap_or("");
        contexts.insert(
            format!("inputs.{name}"),
            given.unwrap_or(default).to_string(),
        );
    }
    let scratch = |rel: &str| release.path(rel).to_str().unwrap().to_string();
    let server = format!("http://{}", release.forge.addr);
    for (name, value) in [
        ("github.server_url", server.as_str()),
        (
            "github.action_repository",
            if local { "" } else { "org/hoist" },
        ),
        ("github.action_path", ROOT),
        ("runner.tool_cache", &scratch("tool-cache")),
        ("runner.temp", &scratch("runner-temp")),
    ] {
        contexts.insert(name.to_string(), value.to_string());
    }
    let mut runner = Runner { contexts };
    let github_path = release.path("github_path");
    let mut printed = String::new();
    for (n, step) in action["runs"]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .enumerate()
    {
        if let Some(condition) = step["if"].as_str()
            && !runner.holds(condition)
        {
            continue;
        }
        if let Some(uses) = step["uses"].as_str() {
            assert!(uses.starts_with("actions/cache/"), "{uses}");
            continue;
        }
        let output = release.path(&format!("github_output_{n}"));
        std::fs::write(&output, "").unwrap();
        let mut command = Command::new("bash");
        command
            .args(["--noprofile", "--norc", "-e", "-o", "pipefail", "-c"])
            .arg(step["run"].as_str().unwrap())
            .env("GITHUB_OUTPUT", &output)
            .env("GITHUB_PATH", &github_path)
            .env("GITHUB_ACTION_PATH", ROOT)
            .env(
                "GITHUB_WORKSPACE",
                if local {
                    PathBuf::from(ROOT)
                } else {
                    release.path("workspace")
                },
            )
            .env(
                "GITHUB_REPOSITORY",
                if local {
                    "org/hoist"
                } else {
                    "consumer/monorepo"
                },
            );
        for (name, value) in step["env"].as_mapping().into_iter().flatten() {
            command.env(
                name.as_str().unwrap(),
                runner.expand(value.as_str().unwrap()),
            );
        }
        command
            .env("RUNNER_TOOL_CACHE", release.path("tool-cache"))
            .env("RUNNER_TEMP", release.path("runner-temp"));
        let out = command.output().unwrap();
        printed += &String::from_utf8_lossy(&out.stdout);
        printed += &stderr(&out);
        assert!(out.status.success(), "step {n} failed:\n{printed}");
        if let Some(id) = step["id"].as_str() {
            for line in read(&output).lines() {
                let (key, value) = line.split_once('=').unwrap();
                runner
                    .contexts
                    .insert(format!("steps.{id}.outputs.{key}"), value.to_string());
            }
        }
    }
    let outputs = action["outputs"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(name, output)| {
            let name = name.as_str().unwrap().to_string();
            (name, runner.expand(output["value"].as_str().unwrap()))
        })
        .collect();
    (outputs, printed)
}

/// action.yml, run as a runner runs it: with no `version` it installs the
/// release of its own Cargo.toml's version from its own repository's
/// releases (as `uses: ./` in hoist's own workflows, and as
/// `uses: org/hoist@…`), puts hoist on PATH, and runs `args`; a second job
/// on the runner takes it from the tool cache without a request.
#[test]
fn the_action_installs_its_own_release_and_runs_args() {
    let release = Release::new();
    let (outputs, printed) = run_action(&release, &[], true);
    assert_eq!(outputs["source"], "download", "{printed}");
    assert_eq!(release.forge.requests().len(), 2, "the asset, SHA256SUMS");
    std::fs::remove_dir_all(release.path("tool-cache")).unwrap();
    std::fs::remove_file(release.path("github_path")).unwrap();

    let (outputs, printed) = run_action(&release, &[("args", "--version")], false);
    assert_eq!(outputs["version"], TAG, "{printed}");
    assert_eq!(outputs["source"], "download", "{printed}");
    let bin = release.path("runner-temp/hoist-bin");
    assert_eq!(outputs["path"], bin.join("hoist").to_str().unwrap());
    assert_runs(&bin.join("hoist"));
    assert_eq!(
        read(&release.path("github_path")),
        format!("{}\n", bin.display())
    );
    // The args step ran the installed hoist.
    assert!(printed.ends_with(&hoist_version()), "{printed}");
    assert_eq!(
        release.forge.requests()[2..],
        [
            format!("/org/hoist/releases/download/{TAG}/{}", asset()),
            format!("/org/hoist/releases/download/{TAG}/SHA256SUMS"),
        ]
    );

    std::fs::remove_dir_all(&bin).unwrap();
    let (outputs, printed) = run_action(&release, &[], false);
    assert_eq!(outputs["source"], "cache", "{printed}");
    assert_runs(&bin.join("hoist"));
    assert_eq!(
        release.forge.requests().len(),
        4,
        "no request from the cache"
    );
}
