//! Where the login for an OCI registry comes from, first found wins:
//! 1. `HOIST_REGISTRY_USER_<HOST>` and `HOIST_REGISTRY_PASSWORD_<HOST>`, the
//!    login of one registry host (see [`host_key`]: `ghcr.io` is `GHCR_IO`,
//!    `127.0.0.1:5001` is `127_0_0_1_5001`), for a command that talks to
//!    two registries (`hoist promote --to`), as Terraform's
//!    `TF_TOKEN_<host>` names a host's token;
//! 2. `HOIST_REGISTRY_USER` and `HOIST_REGISTRY_PASSWORD` when both are set
//!    (CI sets them from its secrets); the caller leaves them out for a
//!    registry they were not given for (a promotion's destination), so that
//!    one registry's password never reaches another;
//! 3. the Docker config a developer already has from `docker login`: its
//!    credential helpers (`credHelpers`, `credsStore`) and its `auths`.
//!    hoist only reads that config: it never writes one and never runs
//!    `docker login`.
//!
//! A credential helper that fails (a locked keychain on a CI runner broke
//! the reference pipeline) is an error that names the helper, not a silent
//! anonymous run that fails later with a confusing 401. A helper that is
//! not installed is another matter: a config copied from a laptop says
//! `"credsStore": "desktop"` on machines without Docker Desktop, and the
//! docker CLI then goes on without a login (`ResolveAuthConfig` in
//! docker/cli's `cli/command/registry.go` drops the helper's error). hoist
//! does the same, with one warning per helper and host, and a registry that
//! then asks for a login gets an error that names the missing helper.
//!
//! Identity tokens (`identitytoken` in `auths`, or a helper's user name
//! `<token>`) come back as a [`Login`] whose user name is
//! [`IDENTITY_TOKEN_USER`]: the OCI client trades it at the token service
//! for a bearer token (an OAuth2 `refresh_token` grant), and the engine
//! wants it as `identitytoken`, not as a password (see [`is_identity_token`]).

use super::Login;
use crate::error::{Error, Location, Result};
use crate::secret::Secret;
use base64::Engine as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The user name that marks a login as an identity token, as Docker's
/// credential helpers store it.
pub const IDENTITY_TOKEN_USER: &str = "<token>";

/// How long a credential helper may take (a keychain or GPG prompt that
/// nobody answers must not hang a CI job).
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// The key Docker files Docker Hub's logins under.
const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// Whether a login is an identity token rather than a user and password.
pub fn is_identity_token(login: &Login) -> bool {
    login.username == IDENTITY_TOKEN_USER
}

/// Where a login was found, for messages ("check …").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `HOIST_REGISTRY_USER` and `HOIST_REGISTRY_PASSWORD`.
    Environment,
    /// `HOIST_REGISTRY_USER_<key>` and `HOIST_REGISTRY_PASSWORD_<key>`, for
    /// one host ([`host_key`]).
    HostEnvironment { key: String },
    /// A credential helper named by the Docker config.
    Helper { config: PathBuf, helper: String },
    /// An `auths` entry of the Docker config.
    Config { config: PathBuf },
    /// ECR's `GetAuthorizationToken`, for its registry endpoint.
    EcrToken,
}

impl Source {
    /// Says where to look, e.g. "HOIST_REGISTRY_USER/HOIST_REGISTRY_PASSWORD".
    pub fn describe(&self) -> String {
        match self {
            Source::Environment => "HOIST_REGISTRY_USER/HOIST_REGISTRY_PASSWORD".to_string(),
            Source::HostEnvironment { key } => {
                format!("HOIST_REGISTRY_USER_{key}/HOIST_REGISTRY_PASSWORD_{key}")
            }
            Source::Helper { config, helper } => format!(
                "the credential helper docker-credential-{helper} (named in {})",
                config.display()
            ),
            Source::Config { config } => format!("the auths of {}", config.display()),
            Source::EcrToken => "ECR's GetAuthorizationToken (the AWS credentials)".to_string(),
        }
    }
}

/// A credential helper the Docker config names for a host that is not on
/// `PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingHelper {
    /// `docker-credential-<name>`.
    pub program: String,
    /// The Docker config that names it.
    pub config: PathBuf,
}

impl MissingHelper {
    /// Says what is missing, e.g. "docker-credential-desktop (named in
    /// /home/me/.docker/config.json) is not installed".
    pub fn describe(&self) -> String {
        format!(
            "{} (named in {}) is not installed",
            self.program,
            self.config.display()
        )
    }
}

/// What the search for a host's login found.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// The login and where it came from.
    pub found: Option<(Login, Source)>,
    /// The credential helper that should have been asked but is missing.
    pub missing_helper: Option<MissingHelper>,
}

/// The login for a registry host, if any is configured.
pub fn login_for(host: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Login>> {
    Ok(find_login(host, env)?.map(|(login, _)| login))
}

/// The login for a registry host and where it was found.
pub fn find_login(
    host: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(Login, Source)>> {
    Ok(lookup(host, env)?.found)
}

/// The login for a registry host, where it was found, and the credential
/// helper that is missing, if one is.
pub fn lookup(host: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Lookup> {
    let key = host_key(host);
    let pairs = [
        (
            format!("HOIST_REGISTRY_USER_{key}"),
            format!("HOIST_REGISTRY_PASSWORD_{key}"),
            Source::HostEnvironment { key: key.clone() },
        ),
        (
            "HOIST_REGISTRY_USER".to_string(),
            "HOIST_REGISTRY_PASSWORD".to_string(),
            Source::Environment,
        ),
    ];
    for (user, password, source) in pairs {
        if let Some(login) = login_from_env(&user, &password, env)? {
            return Ok(Lookup {
                found: Some((login, source)),
                missing_helper: None,
            });
        }
    }
    let Some(path) = config_path(env) else {
        return Ok(Lookup::default());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Lookup::default()),
        Err(e) => return Err(Error::unreadable("Docker config", &path, e)),
    };
    from_config(host, &path, &text, env)
}

/// The login a pair of variables holds: both set, neither, or an input
/// error naming the one that is missing.
fn login_from_env(
    user: &str,
    password: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Login>> {
    let set = |name: &str| env(name).filter(|value| !value.is_empty());
    match (set(user), set(password)) {
        (Some(username), Some(password)) => Ok(Some(Login {
            username,
            password: Secret::new(password),
        })),
        (Some(_), None) => Err(Error::input(format!("{user} is set but {password} is not"))
            .hint("set both to log in with them, or neither to use the Docker config")),
        (None, Some(_)) => Err(Error::input(format!("{password} is set but {user} is not"))
            .hint("set both to log in with them, or neither to use the Docker config")),
        (None, None) => Ok(None),
    }
}

/// A registry host as the suffix of an environment variable's name: upper
/// case, every character that is not a letter or digit made `_`
/// (`registry.example.com:5000` is `REGISTRY_EXAMPLE_COM_5000`), as
/// variable names allow nothing else on every runner.
pub fn host_key(host: &str) -> String {
    host.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
fn config_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let nonempty = |name: &str| env(name).filter(|v| !v.is_empty());
    match nonempty("DOCKER_CONFIG") {
        Some(dir) => Some(Path::new(&dir).join("config.json")),
        None => nonempty("HOME").map(|home| Path::new(&home).join(".docker/config.json")),
    }
}

/// A registry address as the Docker config may spell it (`host`,
/// `https://host`, `https://host/v1/`) reduced to the host, with Docker
/// Hub's names made one.
pub fn normalise_host(address: &str) -> String {
    let address = address.trim();
    let without_scheme = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address);
    let host = without_scheme
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

fn from_config(
    host: &str,
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Lookup> {
    let config: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        Error::input(format!(
            "invalid JSON in the Docker config {}",
            path.display()
        ))
        .at(Location::new(path, e.line(), Some(e.column())))
        .caused_by(&e)
        .hint("fix the file, or set HOIST_REGISTRY_USER and HOIST_REGISTRY_PASSWORD")
    })?;
    let wanted = normalise_host(host);
    let entry = |key: &str| {
        config
            .get(key)?
            .as_object()?
            .iter()
            .find_map(|(k, v)| (normalise_host(k) == wanted).then_some(v))
    };

    let helper = entry("credHelpers")
        .and_then(|v| v.as_str())
        .or_else(|| config.get("credsStore").and_then(|v| v.as_str()))
        .filter(|name| !name.is_empty());
    let mut missing_helper = None;
    if let Some(helper) = helper {
        let server = if wanted == "docker.io" {
            DOCKER_HUB_SERVER.to_string()
        } else {
            host.to_string()
        };
        let program = format!("docker-credential-{helper}");
        match find_helper(&program, env) {
            Some(binary) => {
                if let Some(login) = run_helper(&binary, &server, path, env)? {
                    let source = Source::Helper {
                        config: path.to_path_buf(),
                        helper: helper.to_string(),
                    };
                    return Ok(Lookup {
                        found: Some((login, source)),
                        missing_helper: None,
                    });
                }
            }
            None => {
                let missing = MissingHelper {
                    program,
                    config: path.to_path_buf(),
                };
                warn_once(&missing, host);
                missing_helper = Some(missing);
            }
        }
    }
    // As the docker CLI does without an answer from the helper: the
    // config's own entry, if any.
    let found = from_auths(host, path, entry("auths"))?;
    Ok(Lookup {
        found,
        missing_helper,
    })
}

/// The login an `auths` entry holds.
fn from_auths(
    host: &str,
    path: &Path,
    auth: Option<&serde_json::Value>,
) -> Result<Option<(Login, Source)>> {
    let Some(auth) = auth else {
        return Ok(None);
    };
    let source = Source::Config {
        config: path.to_path_buf(),
    };
    let field = |name: &str| {
        auth.get(name)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
    };
    if let Some(token) = field("identitytoken") {
        let login = Login {
            username: IDENTITY_TOKEN_USER.to_string(),
            password: Secret::new(token),
        };
        return Ok(Some((login, source)));
    }
    if let Some(encoded) = field("auth") {
        let bad = |why: &str| {
            Error::input(format!(
                "the auth of {host} in the Docker config {} is not base64 'user:password' ({why})",
                path.display()
            ))
            .hint(format!("log in again with `docker login {host}`, or set HOIST_REGISTRY_USER and HOIST_REGISTRY_PASSWORD"))
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| bad("not base64"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad("not UTF-8"))?;
        let (username, password) = decoded.split_once(':').ok_or_else(|| bad("no ':'"))?;
        let login = Login {
            username: username.to_string(),
            password: Secret::new(password),
        };
        return Ok(Some((login, source)));
    }
    match (field("username"), field("password")) {
        (Some(username), Some(password)) => Ok(Some((
            Login {
                username: username.to_string(),
                password: Secret::new(password),
            },
            source,
        ))),
        _ => Ok(None),
    }
}

/// Where `program` is on the `PATH` that `env` gives, if anywhere.
fn find_helper(program: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let path = env("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

/// Warns that a helper is missing, once per helper and host in this
/// process, however often a command looks the login up.
fn warn_once(missing: &MissingHelper, host: &str) {
    static WARNED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let key = (missing.program.clone(), host.to_string());
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if warned.contains(&key) {
        return;
    }
    warned.push(key);
    // The name comes from the config file: keep it on its line.
    let message = format!(
        "{}: going on without a login for {host}, as the docker CLI does",
        crate::ci::one_line(&missing.describe())
    );
    crate::ci::Ci::from_env().warn(&message);
}

/// `<binary> get` (a `docker-credential-<helper>`) with the server on
/// stdin: the login, or `None` when the helper has none for that server.
fn run_helper(
    binary: &Path,
    server: &str,
    config: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Login>> {
    let program = binary
        .file_name()
        .map(|name| name.to_string_lossy().to_string())
        .unwrap_or_default();
    let failed = |why: String| {
        Error::failed(format!(
            "the Docker credential helper {program} failed for {server}"
        ))
        .caused_by(why)
        .hint(format!(
            "fix the helper (credsStore/credHelpers in {}), or set HOIST_REGISTRY_USER and \
             HOIST_REGISTRY_PASSWORD, which hoist uses before the Docker config",
            config.display()
        ))
    };
    let mut command = Command::new(binary);
    command
        .arg("get")
        .env("PATH", env("PATH").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(home) = env("HOME") {
        command.env("HOME", home);
    }
    let output = run_with_timeout(&mut command, format!("{server}\n").as_bytes())
        .map_err(|e| failed(format!("running {}: {e}", binary.display())))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        if stdout.contains("credentials not found") || stderr.contains("credentials not found") {
            return Ok(None);
        }
        let said = [stderr.trim(), stdout.trim()]
            .into_iter()
            .find(|text| !text.is_empty())
            .unwrap_or("no output");
        let said: String = said.chars().take(500).collect();
        return Err(failed(format!("{} ({said})", output.status)));
    }
    let json: serde_json::Value = serde_json::from_str(&stdout)
        .map_err(|e| failed(format!("its answer is not JSON: {e}")))?;
    let text = |key: &str| json.get(key).and_then(|v| v.as_str()).unwrap_or_default();
    let (username, secret) = (text("Username"), text("Secret"));
    if username.is_empty() && secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Login {
        username: username.to_string(),
        password: Secret::new(secret),
    }))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs a command with `input` on stdin, killing it after
/// [`HELPER_TIMEOUT`].
fn run_with_timeout(command: &mut Command, input: &[u8]) -> std::io::Result<std::process::Output> {
    // A just-written helper can be "text file busy" for a moment while a
    // fork elsewhere in the process still holds it open for writing.
    let mut tries = 0;
    let mut child = loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(26) && tries < 10 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => break other?,
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its input is not an error.
        let _ = stdin.write_all(input);
    }
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + HELPER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", HELPER_TIMEOUT.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Env(HashMap<String, String>);

    impl Env {
        fn new(pairs: &[(&str, &str)]) -> Env {
            Env(pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect())
        }

        fn get(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }

    fn login(host: &str, env: &Env) -> Result<Option<(Login, Source)>> {
        find_login(host, &|name| env.get(name))
    }

    fn pair(found: Option<(Login, Source)>) -> Option<(String, String)> {
        found.map(|(l, _)| (l.username, l.password.expose().to_string()))
    }

    fn some(user: &str, password: &str) -> Option<(String, String)> {
        Some((user.to_string(), password.to_string()))
    }

    /// A temp `DOCKER_CONFIG` dir holding `config`.
    fn config_dir(config: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        dir
    }

    #[test]
    fn a_hosts_own_variables_win_and_name_themselves() {
        assert_eq!(host_key("127.0.0.1:5001"), "127_0_0_1_5001");
        assert_eq!(host_key("ghcr.io"), "GHCR_IO");
        let env = Env::new(&[
            ("HOIST_REGISTRY_USER_GHCR_IO", "bot"),
            ("HOIST_REGISTRY_PASSWORD_GHCR_IO", "ghcr-pw"),
            ("HOIST_REGISTRY_USER", "plain"),
            ("HOIST_REGISTRY_PASSWORD", "plain-pw"),
        ]);
        let (found, source) = login("ghcr.io", &env).unwrap().unwrap();
        assert_eq!(found.username, "bot");
        assert_eq!(
            source.describe(),
            "HOIST_REGISTRY_USER_GHCR_IO/HOIST_REGISTRY_PASSWORD_GHCR_IO"
        );
        // Another host falls back to the plain pair.
        assert_eq!(
            pair(login("quay.io", &env).unwrap()),
            some("plain", "plain-pw")
        );
        // Half a pair is an input error naming the missing half.
        let half = Env::new(&[("HOIST_REGISTRY_USER_GHCR_IO", "bot")]);
        let error = login("ghcr.io", &half).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(
            error.message.contains("HOIST_REGISTRY_PASSWORD_GHCR_IO"),
            "{error}"
        );
    }

    #[test]
    fn the_environment_wins_over_the_docker_config() {
        let dir = config_dir(r#"{"auths":{"reg.example.com":{"username":"file","password":"f"}}}"#);
        let config = dir.path().to_str().unwrap();
        let env = Env::new(&[
            ("DOCKER_CONFIG", config),
            ("HOIST_REGISTRY_USER", "ci"),
            ("HOIST_REGISTRY_PASSWORD", "pw"),
        ]);
        let found = login("reg.example.com", &env).unwrap().unwrap();
        assert_eq!(found.1, Source::Environment);
        assert_eq!(pair(Some(found)), some("ci", "pw"));

        let env = Env::new(&[("DOCKER_CONFIG", config), ("HOIST_REGISTRY_USER", "ci")]);
        let error = login("reg.example.com", &env).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(
            error.message.contains("HOIST_REGISTRY_PASSWORD is not"),
            "{error}"
        );

        let env = Env::new(&[("DOCKER_CONFIG", config)]);
        assert_eq!(
            pair(login("reg.example.com", &env).unwrap()),
            some("file", "f")
        );
    }

    #[test]
    fn reads_every_form_of_auths() {
        let basic = base64::engine::general_purpose::STANDARD.encode("alice:pa:ss");
        let dir = config_dir(&format!(
            r#"{{
  "auths": {{
    "plain.example.com": {{"auth": "{basic}"}},
    "https://schemed.example.com": {{"username": "bob", "password": "b0b"}},
    "http://insecure.example.com:5000": {{"auth": "{basic}"}},
    "https://versioned.example.com/v1/": {{"auth": "{basic}"}},
    "https://index.docker.io/v1/": {{"username": "hub", "password": "h"}},
    "oauth.example.com": {{"auth": "", "identitytoken": "idt"}},
    "empty.example.com": {{}},
    "broken.example.com": {{"auth": "not base64!"}}
  }}
}}"#
        ));
        let env = Env::new(&[("DOCKER_CONFIG", dir.path().to_str().unwrap())]);
        let get = |host: &str| pair(login(host, &env).unwrap());
        assert_eq!(get("plain.example.com"), some("alice", "pa:ss"));
        assert_eq!(get("PLAIN.example.com"), some("alice", "pa:ss"));
        assert_eq!(get("schemed.example.com"), some("bob", "b0b"));
        assert_eq!(get("insecure.example.com:5000"), some("alice", "pa:ss"));
        assert_eq!(
            get("insecure.example.com"),
            None,
            "the port is part of the host"
        );
        assert_eq!(get("versioned.example.com"), some("alice", "pa:ss"));
        for hub in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
            assert_eq!(get(hub), some("hub", "h"), "{hub}");
        }
        assert_eq!(get("oauth.example.com"), some(IDENTITY_TOKEN_USER, "idt"));
        assert_eq!(get("empty.example.com"), None);
        assert_eq!(get("elsewhere.example.com"), None);
        let found = login("schemed.example.com", &env).unwrap().unwrap();
        assert_eq!(
            found.1,
            Source::Config {
                config: dir.path().join("config.json")
            }
        );
        assert!(!format!("{:?}", found.0).contains("b0b"));

        let error = login("broken.example.com", &env).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.message.contains("broken.example.com"), "{error}");
        assert!(!error.to_string().contains("not base64!"), "{error}");
    }

    #[test]
    fn a_missing_config_is_no_login_and_a_broken_one_an_input_error() {
        let home = tempfile::tempdir().unwrap();
        let env = Env::new(&[("HOME", home.path().to_str().unwrap())]);
        assert_eq!(pair(login("reg.example.com", &env).unwrap()), None);
        assert_eq!(
            pair(login("reg.example.com", &Env::new(&[])).unwrap()),
            None
        );

        std::fs::create_dir(home.path().join(".docker")).unwrap();
        let file = home.path().join(".docker/config.json");
        std::fs::write(&file, "{\n  \"auths\": {\n    \"a\": {},\n  }\n}\n").unwrap();
        let error = login("reg.example.com", &env).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.message.contains(file.to_str().unwrap()), "{error}");
        let location = error.location.clone().unwrap();
        assert_eq!((location.file, location.line), (file, 4));

        // DOCKER_CONFIG wins over HOME.
        let dir = config_dir(r#"{"auths":{"reg.example.com":{"username":"u","password":"p"}}}"#);
        let env = Env::new(&[
            ("HOME", home.path().to_str().unwrap()),
            ("DOCKER_CONFIG", dir.path().to_str().unwrap()),
        ]);
        assert_eq!(
            pair(login("reg.example.com", &env).unwrap()),
            some("u", "p")
        );
    }

    /// A `docker-credential-fake` that knows one server, reports "not
    /// found" for unknown ones and fails like a locked keychain for
    /// `locked.example.com`; returns its bin dir.
    fn fake_helper() -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let bin = tempfile::tempdir().unwrap();
        let script = bin.path().join("docker-credential-fake");
        std::fs::write(
            &script,
            r#"#!/bin/sh
[ "$1" = get ] || { echo "unexpected: $*" >&2; exit 3; }
read -r server
case "$server" in
  helped.example.com) echo '{"ServerURL":"helped.example.com","Username":"carol","Secret":"c4rol"}' ;;
  token.example.com) echo '{"ServerURL":"token.example.com","Username":"<token>","Secret":"refresh"}' ;;
  https://index.docker.io/v1/) echo '{"Username":"hubby","Secret":"hub"}' ;;
  locked.example.com) echo "error getting credentials - err: exit status 1, out: keychain is locked" >&2; exit 1 ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"#,
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        bin
    }

    #[test]
    fn asks_credential_helpers() {
        let bin = fake_helper();
        let path = format!("{}:/usr/bin:/bin", bin.path().display());
        let dir = config_dir(
            r#"{
  "credHelpers": {"helped.example.com": "fake", "missing.example.com": "absent"},
  "credsStore": "fake",
  "auths": {"fallback.example.com": {"username": "dave", "password": "d"}}
}"#,
        );
        let env = Env::new(&[
            ("DOCKER_CONFIG", dir.path().to_str().unwrap()),
            ("PATH", &path),
        ]);
        let found = login("helped.example.com", &env).unwrap().unwrap();
        assert_eq!(
            found.1,
            Source::Helper {
                config: dir.path().join("config.json"),
                helper: "fake".into()
            }
        );
        assert_eq!(pair(Some(found)), some("carol", "c4rol"));
        // credsStore answers for every host without a credHelpers entry.
        let token = login("token.example.com", &env).unwrap().unwrap().0;
        assert!(is_identity_token(&token));
        assert_eq!(token.password.expose(), "refresh");
        assert_eq!(
            pair(login("docker.io", &env).unwrap()),
            some("hubby", "hub")
        );
        // Not found by the helper: the auths entry, else no login.
        assert_eq!(
            pair(login("fallback.example.com", &env).unwrap()),
            some("dave", "d")
        );
        assert_eq!(pair(login("unknown.example.com", &env).unwrap()), None);

        let error = login("locked.example.com", &env).unwrap_err();
        assert_eq!(error.exit_code(), 1);
        assert!(error.message.contains("docker-credential-fake"), "{error}");
        assert!(error.to_string().contains("keychain is locked"), "{error}");
        assert!(
            error
                .hint
                .as_deref()
                .unwrap()
                .contains("HOIST_REGISTRY_USER")
        );

        // A helper that is not installed is no login, as for the docker
        // CLI, and the lookup says which one is missing.
        let found = lookup("missing.example.com", &|name| env.get(name)).unwrap();
        assert!(found.found.is_none());
        let missing = found.missing_helper.unwrap();
        assert_eq!(missing.program, "docker-credential-absent");
        assert_eq!(missing.config, dir.path().join("config.json"));
        assert!(missing.describe().contains("is not installed"));

        // The helper is looked up on the PATH that `env` gives, only.
        let env = Env::new(&[("DOCKER_CONFIG", dir.path().to_str().unwrap())]);
        let found = lookup("helped.example.com", &|name| env.get(name)).unwrap();
        assert!(found.found.is_none());
        assert_eq!(
            found.missing_helper.unwrap().program,
            "docker-credential-fake"
        );
        // The config's auths entry still counts, as the docker CLI reads it.
        assert_eq!(
            pair(login("fallback.example.com", &env).unwrap()),
            some("dave", "d")
        );
    }

    #[test]
    fn normalises_registry_addresses() {
        for (address, host) in [
            ("reg.example.com", "reg.example.com"),
            ("https://Reg.Example.com/v1/", "reg.example.com"),
            ("http://localhost:5000", "localhost:5000"),
            ("index.docker.io", "docker.io"),
            ("https://index.docker.io/v1/", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
        ] {
            assert_eq!(normalise_host(address), host, "{address}");
        }
    }
}
