//! moto (PyPI `moto[server]`) in server mode: the ECR API for the tests, on
//! a free loopback port, one server per test so that no test sees another's
//! repositories. `scripts/test` installs it.
//!
//! ```ignore
//! let Some(moto) = Moto::start() else { return };
//! let env = moto.env(&moto.url());
//! ```
//!
//! Like every gate of the tests (`tests/common/docker.rs`): when moto is
//! missing, the reason goes to stderr and the caller returns early, except
//! with `CI=true`, where it panics.

use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::docker::{free_port, http_request, in_ci};

/// moto's account.
pub const ACCOUNT: &str = "123456789012";
/// The region of the tests' registry host (hoist takes it from the host).
pub const REGION: &str = "us-east-1";
/// The test access key; moto accepts any.
pub const ACCESS_KEY: &str = "AKIDHOISTTESTKEY0001";
/// The test secret key, which must never show in anything hoist returns.
pub const SECRET_KEY: &str = "hoist-test-secret-key-do-not-print";

pub struct Moto {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Moto {
    /// Starts moto on a free port of 127.0.0.1 and waits until it answers.
    /// `None` when moto is not installed and `CI` is not `"true"`.
    pub fn start() -> Option<Moto> {
        let Some(program) = moto_command() else {
            let reason = "moto is missing (pip install 'moto[server]'; scripts/test installs it)";
            if in_ci() {
                panic!("CI=true but {reason}");
            }
            eprintln!("skipped: {reason}");
            return None;
        };
        // A port freed just now can be taken by a parallel test before moto
        // binds it: then moto exits and another port is tried.
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let log = File::create(dir.path().join("moto.log")).unwrap();
            let port = free_port();
            let child = Command::new(&program[0])
                .args(&program[1..])
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {program:?}: {e}"));
            let mut moto = Moto {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                dir,
            };
            match moto.wait_until_answering(Instant::now() + Duration::from_secs(60)) {
                Ok(()) => return Some(moto),
                // Dropping `moto` stops the process.
                Err(why) if why.contains("in use") => last = why,
                Err(why) => {
                    last = why;
                    break;
                }
            }
        }
        panic!("moto did not start: {last}");
    }

    /// moto answers `GET /moto-api/` once it serves; before that its own
    /// socket may not be bound yet, so only its answer counts.
    fn wait_until_answering(&mut self, deadline: Instant) -> Result<(), String> {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("moto exited ({status}): {}", self.log()));
            }
            let addr = self.addr.to_string();
            match http_request(&addr, "GET", "/moto-api/", None, &[]) {
                Ok((200, _, _)) => return Ok(()),
                _ if Instant::now() > deadline => {
                    return Err(format!("moto did not answer within 60 s: {}", self.log()));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What moto logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }

    /// Forgets every repository and image.
    pub fn reset(&self) {
        let (status, _, body) =
            http_request(&self.addr.to_string(), "POST", "/moto-api/reset", None, &[]).unwrap();
        assert_eq!(status, 200, "moto reset: {body}");
    }

    /// The variables hoist reads, for an endpoint (moto's own URL, or a
    /// proxy in front of it): dummy keys, and no others of the process.
    pub fn env(endpoint: &str) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), endpoint.into()),
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `moto_server` when it is on PATH, else `python3 -m moto.server` when
/// python3 has moto.
fn moto_command() -> Option<Vec<String>> {
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| is_executable(&dir.join("moto_server")))
    });
    if on_path {
        return Some(vec!["moto_server".into()]);
    }
    let has_module = Command::new("python3")
        .args(["-c", "import moto.server"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    has_module.then(|| ["python3", "-m", "moto.server"].map(String::from).to_vec())
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
