//! The Docker engine, through bollard: connect, build an image (its context
//! a streamed tar, or with BuildKit served by hoist's own session, see
//! [`crate::session`]), tag it, and run its smoke gate.
//!
//! Nothing here shells out to the docker command line: the engine is reached
//! at `DOCKER_HOST` (unix or tcp) or the default socket, with the API version
//! negotiated, so hoist works with whatever engine the runner has.

use crate::build::{Builder, ImagePlan};
use crate::build_log::BuildLog;
use crate::config::Smoke;
use crate::error::{Error, Result};
use crate::registry::PushAuth;
use crate::registry::credentials::is_identity_token;
use crate::registry::retry::{Failure, Retries};
use crate::session;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{
    BuildInfo, BuildInfoAux, ContainerCreateBody, ErrorDetail, HostConfig, PortBinding,
};
use bollard::query_parameters::{
    BuildImageOptions, BuilderVersion, CreateContainerOptions, CreateImageOptions, LogsOptions,
    PushImageOptions, RemoveContainerOptions, RemoveImageOptions, StartContainerOptions,
    TagImageOptions,
};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where the engine is when `DOCKER_HOST` is not set.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
/// How long a ping may take before the engine counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Builds and context uploads are long: the client's request timeout must
/// not cut them.
const BUILD_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// How many log lines of a failed smoke container are shown.
const SMOKE_LOG_LINES: usize = 30;

/// Registry credentials by registry host, for pulling cache sources.
pub type Credentials = HashMap<String, DockerCredentials>;

/// A connected engine.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    /// The host as configured, for messages.
    pub host: String,
}

/// How every image of one `hoist build` is built.
#[derive(Clone)]
pub struct BuildSettings {
    pub builder: Builder,
    pub no_cache: bool,
    /// For pulling cache sources.
    pub credentials: Credentials,
}

/// What one build produced.
#[derive(Debug, Clone)]
pub struct Built {
    pub image_id: String,
    /// Dockerfile steps, and how many of them came from the cache.
    pub steps: usize,
    pub cached: usize,
    /// What the session sent, for a build whose context went through one.
    pub sent: Option<session::Sent>,
}

impl Engine {
    /// Connects to the engine at `DOCKER_HOST`, else the default socket, and
    /// agrees on an API version with it.
    pub async fn connect() -> Result<Engine> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        let unreachable = |cause: &dyn std::fmt::Display| {
            Error::failed(format!("cannot reach the Docker engine at {host}"))
                .caused_by(cause)
                .hint(if host.starts_with("unix://") {
                    "start the engine (`systemctl start docker`, or `dockerd &`), or point DOCKER_HOST at one (unix:///path/docker.sock or tcp://host:2375)"
                } else {
                    "check that the engine listens at DOCKER_HOST, or unset it to use the local socket"
                })
        };
        let docker = Docker::connect_with_host(&host).map_err(|e| match e {
            bollard::errors::Error::UnsupportedURISchemeError { .. } => {
                Error::input(format!("DOCKER_HOST '{host}' is not an engine address"))
                    .caused_by(e)
                    .hint("use unix:///path/to/docker.sock or tcp://host:port")
            }
            // A socket that is not there: no engine runs at that path.
            other => unreachable(&other),
        })?;
        let probe = docker.clone().with_timeout(PING_TIMEOUT);
        probe.ping().await.map_err(|e| unreachable(&e))?;
        let docker = docker
            .with_timeout(BUILD_TIMEOUT)
            .negotiate_version()
            .await
            .map_err(|e| unreachable(&e))?;
        Ok(Engine { docker, host })
    }

    /// The host a port published by a container is reached on.
    fn published_host(&self) -> String {
        let address = self
            .host
            .strip_prefix("tcp://")
            .or_else(|| self.host.strip_prefix("http://"));
        match address.and_then(|a| a.rsplit_once(':')).map(|(h, _)| h) {
            Some(host) if !host.is_empty() => host.to_string(),
            _ => "127.0.0.1".to_string(),
        }
    }

    /// Builds `image` from `context` (a tar stream whose Dockerfile is at
    /// `dockerfile`), tagging it with every tag of the plan. Every line of
    /// progress goes to `print`.
    pub async fn build(
        &self,
        image: &ImagePlan,
        settings: &BuildSettings,
        context: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
        dockerfile: &str,
        print: &mut (dyn FnMut(String) + Send),
    ) -> Result<Built> {
        let (builder, credentials) = (settings.builder, &settings.credentials);
        if builder == Builder::Classic {
            // The classic builder only reuses layers of images it has locally.
            for source in &image.cache_from {
                self.pull_cache_source(source, credentials, print).await;
            }
        }
        let (version, session) = match builder {
            Builder::Buildkit => (BuilderVersion::BuilderBuildKit, Some(session_id(image))),
            Builder::Classic => (BuilderVersion::BuilderV1, None),
        };
        let options = BuildImageOptions {
            rm: true,
            forcerm: true,
            version,
            session,
            ..build_options(image, settings, dockerfile)
        };
        let stream = self.docker.build_image(
            options,
            Some(credentials.clone()),
            Some(bollard::body_try_stream(context)),
        );
        let (image_id, log) = follow(image, stream, print).await?;
        self.finish(image, image_id, log, None).await
    }

    /// Whether BuildKit builds can take their context through a session
    /// that hoist serves: `None` when the engine is reached over TLS or
    /// another transport hoist does not open itself (the context then goes
    /// as a tar, as with the classic builder).
    pub fn session_address(&self) -> Option<session::Address> {
        let tls = ["DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"]
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
        session::Address::parse(&self.host, tls)
    }

    /// Builds `image` with BuildKit, its context served through a session
    /// (see [`crate::session`]): the engine reads only the files the
    /// Dockerfile copies, and on a rebuild only those that changed.
    pub async fn build_in_session(
        &self,
        address: &session::Address,
        image: &ImagePlan,
        settings: &BuildSettings,
        sources: session::Sources,
        dockerfile: &str,
        print: &mut (dyn FnMut(String) + Send),
    ) -> Result<Built> {
        let version = self.docker.client_version();
        let api = format!("{}.{}", version.major_version, version.minor_version);
        let name = sources
            .context
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let shared_key = shared_key(&sources.context, &image.name);
        let session = session::Session::open(
            address,
            &api,
            session_id(image),
            &name,
            &shared_key,
            sources,
            settings.credentials.clone(),
        )
        .await
        .map_err(|e| {
            Error::failed(format!("{}: cannot start the build", image.name))
                .caused_by(e)
                .hint("check that the engine supports BuildKit (Docker 18.09 or later), or build with --builder classic")
        })?;
        let options = BuildImageOptions {
            version: BuilderVersion::BuilderBuildKit,
            session: Some(session.id.clone()),
            remote: Some(CLIENT_SESSION.to_string()),
            ..build_options(image, settings, dockerfile)
        };
        let query = serde_urlencoded::to_string(&options)
            .map_err(|e| Error::failed("cannot write the build call").caused_by(e))?;
        let stream = session::build(address, &api, &query)
            .await
            .map_err(|e| {
                Error::failed(format!("{}: cannot start the build", image.name)).caused_by(e)
            })?
            .map(|item| match item {
                Ok(BuildInfo {
                    error_detail:
                        Some(ErrorDetail {
                            message: Some(error),
                            ..
                        }),
                    ..
                }) => Err(bollard::errors::Error::DockerStreamError { error }),
                Ok(info) => Ok(info),
                Err(error) => Err(bollard::errors::Error::DockerStreamError { error }),
            });
        let followed = follow(image, stream, print).await;
        // A file hoist could not read explains a failed build better than
        // the engine's message about a broken transfer; and a build that
        // succeeded with such a file holds what the tree never held.
        let errors = session.errors();
        let (image_id, log) = match followed {
            Err(error) if !errors.is_empty() => {
                return Err(errors
                    .into_iter()
                    .fold(error, |error, cause| error.caused_by(cause)));
            }
            Ok(_) if !errors.is_empty() => {
                let _ = self.untag(&image.tags[0]).await;
                let error = Error::failed(format!(
                    "{}: the build context changed while it was sent",
                    image.name
                ));
                return Err(errors
                    .into_iter()
                    .fold(error, |error, cause| error.caused_by(cause))
                    .hint(
                        "the image was untagged; build again once nothing writes to the context",
                    ));
            }
            other => other?,
        };
        let sent = session.sent();
        drop(session);
        self.finish(image, image_id, log, Some(sent)).await
    }

    /// The image id of a finished build (asked of the engine when the
    /// build did not report it), and the build's other tags.
    async fn finish(
        &self,
        image: &ImagePlan,
        image_id: Option<String>,
        log: BuildLog,
        sent: Option<session::Sent>,
    ) -> Result<Built> {
        let image_id = match image_id {
            Some(id) => id,
            // Older engines report the id only through the tag.
            None => self.image_id(&image.tags[0]).await?,
        };
        for tag in &image.tags[1..] {
            self.tag(&image_id, tag).await?;
        }
        Ok(Built {
            image_id,
            steps: log.steps,
            cached: log.cached,
            sent,
        })
    }

    /// Pulls a cache source for the classic builder; one that does not exist
    /// yet (the first build) or cannot be pulled only costs the cache.
    async fn pull_cache_source(
        &self,
        source: &str,
        credentials: &Credentials,
        print: &mut (dyn FnMut(String) + Send),
    ) {
        let host = registry_host(source);
        let options = CreateImageOptions {
            from_image: Some(source.to_string()),
            ..CreateImageOptions::default()
        };
        let credentials = credentials.get(&host).cloned();
        let mut stream = self.docker.create_image(Some(options), None, credentials);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                print(format!("cache source {source} not used: {e}"));
                return;
            }
        }
        print(format!("cache source {source} pulled"));
    }

    /// The id of a local image.
    pub async fn image_id(&self, name: &str) -> Result<String> {
        let inspect = self
            .docker
            .inspect_image(name)
            .await
            .map_err(|e| Error::failed(format!("cannot inspect image {name}")).caused_by(e))?;
        inspect
            .id
            .ok_or_else(|| Error::failed(format!("the engine reports no id for image {name}")))
    }

    /// What the export of a local image is checked against: its id (the
    /// config digest) and `rootfs.diff_ids`.
    pub async fn image_ids(&self, name: &str) -> Result<crate::export::ImageIds> {
        let inspect = self
            .docker
            .inspect_image(name)
            .await
            .map_err(|e| Error::failed(format!("cannot inspect image {name}")).caused_by(e))?;
        let config = inspect
            .id
            .ok_or_else(|| Error::failed(format!("the engine reports no id for image {name}")))?;
        let diff_ids = inspect
            .root_fs
            .and_then(|root| root.layers)
            .unwrap_or_default();
        Ok(crate::export::ImageIds { config, diff_ids })
    }

    /// The image's export (`GET /images/{name}/get`, as `docker save`), as
    /// it streams.
    pub fn export(&self, name: &str) -> impl Stream<Item = Result<Bytes>> + Send + 'static {
        let name = name.to_string();
        self.docker.export_image(&name).map(move |item| {
            item.map_err(|e| Error::failed(format!("cannot export image {name}")).caused_by(e))
        })
    }

    /// Tags a local image as `reference` (`repository:tag`).
    pub async fn tag(&self, image: &str, reference: &str) -> Result<()> {
        let (repo, tag) = split_reference(reference);
        let options = TagImageOptions {
            repo: Some(repo.to_string()),
            tag: Some(tag.to_string()),
        };
        self.docker
            .tag_image(image, Some(options))
            .await
            .map_err(|e| Error::failed(format!("cannot tag {image} as {reference}")).caused_by(e))
    }

    /// Removes the tag `reference`; the image goes when it was its last tag.
    pub async fn untag(&self, reference: &str) -> Result<()> {
        let options = RemoveImageOptions {
            noprune: true,
            ..RemoveImageOptions::default()
        };
        self.docker
            .remove_image(reference, Some(options), None)
            .await
            .map(|_| ())
            .map_err(|e| Error::failed(format!("cannot untag {reference}")).caused_by(e))
    }

    /// Pushes `reference` (`repository:tag`) to its registry, with the
    /// login handed over in the API call (never `docker login`, never a
    /// Docker config written). Transient registry failures are retried;
    /// layers already uploaded are not sent again. Returns the manifest
    /// digest the engine reports, when it reports one; the registry's own
    /// answer is what hoist trusts.
    pub async fn push(
        &self,
        reference: &str,
        auth: &PushAuth,
        retries: &Retries,
        print: &mut (dyn FnMut(String) + Send),
    ) -> Result<Option<String>> {
        let (repository, tag) = split_reference(reference);
        let credentials = engine_credentials(auth);
        let print = std::sync::Mutex::new(print);
        retries
            .run(|| async {
                let options = PushImageOptions {
                    tag: Some(tag.to_string()),
                    ..PushImageOptions::default()
                };
                let mut stream =
                    self.docker
                        .push_image(repository, Some(options), Some(credentials.clone()));
                let mut digest = None;
                while let Some(item) = stream.next().await {
                    let info = match item {
                        Ok(info) => info,
                        Err(e) => {
                            let message = e.to_string();
                            let error = Error::failed(format!("cannot push {reference}"))
                                .caused_by(&message)
                                .hint(push_hint(&message));
                            return Err(if is_transient_push_error(&message) {
                                (print.lock().unwrap())(format!(
                                    "push failed, retrying: {message}"
                                ));
                                Failure::Transient(error)
                            } else {
                                Failure::Permanent(error)
                            });
                        }
                    };
                    let Some(status) = info.status else { continue };
                    if let Some(found) = pushed_digest(&status) {
                        digest = Some(found);
                    }
                    // Per-layer progress is noise in a CI log; outcomes are not.
                    if info.progress_detail.is_none() || status.contains("digest:") {
                        (print.lock().unwrap())(status);
                    }
                }
                Ok(digest)
            })
            .await
    }

    /// Runs the smoke gate of an image: a container from it must answer
    /// HTTP 200 on the smoke path within the timeout. The container is
    /// removed whatever happens.
    pub async fn smoke(&self, name: &str, image_id: &str, smoke: &Smoke) -> Result<()> {
        let port = format!("{}/tcp", smoke.port);
        let host = self.published_host();
        let binding = PortBinding {
            host_ip: Some(if host == "127.0.0.1" {
                host.clone()
            } else {
                String::new()
            }),
            host_port: Some(String::new()),
        };
        let body = ContainerCreateBody {
            image: Some(image_id.to_string()),
            env: Some(smoke.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            cmd: smoke.command.clone(),
            exposed_ports: Some(vec![port.clone()]),
            labels: Some(HashMap::from([(
                "dev.hoist.smoke".to_string(),
                name.to_string(),
            )])),
            host_config: Some(HostConfig {
                port_bindings: Some(HashMap::from([(port.clone(), Some(vec![binding]))])),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let container = self
            .docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|e| {
                Error::failed(format!("{name}: cannot create the smoke container")).caused_by(e)
            })?
            .id;
        let outcome = self
            .smoke_container(name, &container, &port, &host, smoke)
            .await;
        let removed = self
            .docker
            .remove_container(
                &container,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..RemoveContainerOptions::default()
                }),
            )
            .await;
        match (outcome, removed) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => Err(Error::failed(format!(
                "{name}: cannot remove the smoke container {container}"
            ))
            .caused_by(e)),
            (Ok(()), Ok(())) => Ok(()),
        }
    }

    async fn smoke_container(
        &self,
        name: &str,
        container: &str,
        port: &str,
        host: &str,
        smoke: &Smoke,
    ) -> Result<()> {
        let fail = |what: String| Error::failed(format!("{name}: smoke gate failed: {what}"));
        self.docker
            .start_container(container, None::<StartContainerOptions>)
            .await
            .map_err(|e| fail("the container did not start".into()).caused_by(e))?;
        let inspect = self
            .docker
            .inspect_container(container, None)
            .await
            .map_err(|e| fail("cannot inspect the container".into()).caused_by(e))?;
        let published = inspect
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|ports| ports.get(port).cloned().flatten())
            .and_then(|bindings| bindings.into_iter().find_map(|b| b.host_port))
            .and_then(|p| p.parse::<u16>().ok());
        let deadline = Instant::now() + smoke.timeout;
        let mut last = String::from("no answer yet");
        loop {
            if let Some(published) = published {
                match http_status(host, published, &smoke.path).await {
                    Ok(200) => return Ok(()),
                    Ok(status) => last = format!("HTTP {status}"),
                    Err(e) => last = e.to_string(),
                }
            }
            let state = self
                .docker
                .inspect_container(container, None)
                .await
                .ok()
                .and_then(|i| i.state);
            if let Some(state) = state.filter(|s| s.running == Some(false)) {
                let code = state.exit_code.unwrap_or_default();
                return Err(self
                    .with_logs(
                        fail(format!("the container exited with code {code}")),
                        container,
                    )
                    .await);
            }
            if Instant::now() >= deadline {
                let what = format!(
                    "no HTTP 200 on {}{} within {:?} (last: {last})",
                    smoke.port, smoke.path, smoke.timeout
                );
                return Err(self.with_logs(fail(what), container).await);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Adds the last lines of a container's log to an error.
    async fn with_logs(&self, error: Error, container: &str) -> Error {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: SMOKE_LOG_LINES.to_string(),
            ..LogsOptions::default()
        };
        let mut logs = self.docker.logs(container, Some(options));
        let mut text = String::new();
        while let Some(Ok(chunk)) = logs.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        let text = text.trim_end();
        if text.is_empty() {
            error.caused_by("the container printed nothing")
        } else {
            error.caused_by(format!(
                "container log (last {SMOKE_LOG_LINES} lines):\n{text}"
            ))
        }
    }
}

/// The error for a failed build: the image, the failing step, the engine's
/// message and the last lines of output.
fn build_failed(image: &ImagePlan, log: &BuildLog, cause: &bollard::errors::Error) -> Error {
    let message = match log.failed_step() {
        Some(step) => format!("{}: build failed at step `{step}`", image.name),
        None => format!("{}: build failed", image.name),
    };
    let cause = match cause {
        bollard::errors::Error::DockerStreamError { error } => error.trim().to_string(),
        other => other.to_string(),
    };
    let tail: Vec<&str> = log.tail().collect();
    let error = Error::failed(message).caused_by(cause);
    let error = if tail.is_empty() {
        error
    } else {
        error.caused_by(format!("last lines of the build:\n  {}", tail.join("\n  ")))
    };
    error.hint(format!(
        "fix {} (the step above), or rebuild with `hoist build --image {}` to see it again",
        image.dockerfile.display(),
        image.name
    ))
}

/// Reads a build's progress messages to the end: every line of the log
/// goes to `print`; returns the image id when the engine reported it.
async fn follow(
    image: &ImagePlan,
    stream: impl Stream<Item = std::result::Result<BuildInfo, bollard::errors::Error>>,
    print: &mut (dyn FnMut(String) + Send),
) -> Result<(Option<String>, BuildLog)> {
    let mut stream = std::pin::pin!(stream);
    let mut log = BuildLog::default();
    let mut image_id = None;
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            Err(e) => return Err(build_failed(image, &log, &e)),
        };
        let lines = match &info.aux {
            Some(BuildInfoAux::BuildKit(status)) => log.buildkit(status),
            Some(BuildInfoAux::Default(id)) => {
                image_id = id.id.clone().or(image_id);
                Vec::new()
            }
            None => log.classic(info.stream.as_deref().unwrap_or_default()),
        };
        for line in lines {
            print(line);
        }
    }
    for line in log.finish() {
        print(line);
    }
    Ok((image_id, log))
}

/// The build call's parameters that do not depend on how the context
/// travels: the Dockerfile, the first tag, args, labels, target, cache.
fn build_options(
    image: &ImagePlan,
    settings: &BuildSettings,
    dockerfile: &str,
) -> BuildImageOptions {
    BuildImageOptions {
        dockerfile: dockerfile.to_string(),
        t: image.tags.first().cloned(),
        nocache: settings.no_cache,
        cachefrom: Some(image.cache_from.clone()).filter(|c| !c.is_empty()),
        buildargs: Some(image.build_args.clone().into_iter().collect()),
        labels: Some(image.labels.clone().into_iter().collect()),
        target: image.target.clone().unwrap_or_default(),
        ..BuildImageOptions::default()
    }
}

/// The build call's `remote` for a context served by the session.
const CLIENT_SESSION: &str = "client-session";

/// The session's shared key: BuildKit keeps the files of the last transfer
/// under it and asks a rebuild only for those that changed.
///
/// The docker CLI derives it from this machine and the context directory
/// (`getBuildSharedKey`). hoist adds the image: BuildKit makes its kept copy
/// mirror each transfer, so two images from one root under one key (one
/// copying `services/web/`, one everything) trimmed each other's copy and
/// the second sent its whole context on every rebuild (measured: 200 MiB
/// each time; the CLI does the same). One key per image costs a copy of
/// the context per image in BuildKit's cache.
fn shared_key(context: &std::path::Path, image: &str) -> String {
    use sha2::{Digest, Sha256};
    let machine = std::fs::read_to_string("/etc/machine-id")
        .ok()
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let digest = Sha256::digest(format!("{machine}:{}:{image}", context.display()));
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A BuildKit session id, unique per build.
fn session_id(image: &ImagePlan) -> String {
    format!("hoist-{}-{}", image.name, unique_suffix())
}

/// `<pid>-<nanoseconds>`: unique on this machine, for ids of one build.
pub fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos:x}", std::process::id())
}

/// `registry/repo/name:tag` -> (`registry/repo/name`, `tag`); a digest or a
/// missing tag means `latest`.
fn split_reference(reference: &str) -> (&str, &str) {
    let reference = reference.split('@').next().unwrap_or(reference);
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (reference, "latest"),
    }
}

/// The registry host of an image reference, as Docker reads it: the first
/// path component when it looks like a host, else Docker Hub.
/// A registry login as the engine takes it. An identity token (the Docker
/// config's `<token>` user) goes as `identitytoken`, which the engine
/// trades at the registry's token service; the docker CLI converts it the
/// same way.
pub fn engine_credentials(auth: &PushAuth) -> DockerCredentials {
    let mut credentials = DockerCredentials {
        serveraddress: Some(auth.server.clone()),
        ..DockerCredentials::default()
    };
    match &auth.login {
        Some(login) if is_identity_token(login) => {
            credentials.identitytoken = Some(login.password.expose().to_string());
        }
        Some(login) => {
            credentials.username = Some(login.username.clone());
            credentials.password = Some(login.password.expose().to_string());
        }
        None => {}
    }
    credentials
}

/// The digest in the engine's last push status line,
/// `<tag>: digest: sha256:… size: N`.
fn pushed_digest(status: &str) -> Option<String> {
    let (_, rest) = status.split_once("digest: ")?;
    let digest = rest.split_whitespace().next()?;
    digest.starts_with("sha256:").then(|| digest.to_string())
}

/// Whether a failed push is worth another try: the registry was busy or
/// the connection dropped, as opposed to a refused login or a bad name.
fn is_transient_push_error(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    let statuses = [
        "429",
        "500 internal",
        "502 bad gateway",
        "503 service",
        "504 gateway",
    ];
    let network = [
        "connection reset",
        "connection refused",
        "broken pipe",
        "i/o timeout",
        "tls handshake timeout",
        "unexpected eof",
        ": eof",
        "toomanyrequests",
        "too many requests",
    ];
    statuses
        .iter()
        .chain(&network)
        .any(|needle| message.contains(needle))
}

fn push_hint(message: &str) -> String {
    let message = message.to_ascii_lowercase();
    if message.contains("unauthorized")
        || message.contains("authentication required")
        || message.contains("denied")
    {
        "check the registry login: HOIST_REGISTRY_USER/HOIST_REGISTRY_PASSWORD, the Docker config, or the AWS credentials for ECR".to_string()
    } else if message.contains("http response to https client")
        || message.contains("server gave http response")
    {
        "the engine speaks HTTPS to this registry; add it to the engine's insecure-registries, or serve it over TLS".to_string()
    } else {
        "check that the registry is up and reachable from the engine, then run again (a re-run skips what was pushed)".to_string()
    }
}

pub fn registry_host(reference: &str) -> String {
    match reference.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first.to_string(),
        _ => "docker.io".to_string(),
    }
}

/// The HTTP status of `GET path` at `host:port`.
async fn http_status(host: &str, port: u16, path: &str) -> std::io::Result<u16> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0; 64];
        let mut read = 0;
        while read < head.len() {
            let n = stream.read(&mut head[read..]).await?;
            if n == 0 {
                break;
            }
            read += n;
            if head[..read].contains(&b'\n') {
                break;
            }
        }
        let line = String::from_utf8_lossy(&head[..read]);
        line.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {line:?}")))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("no answer within 2 s")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repository_and_tag() {
        assert_eq!(
            split_reference("127.0.0.1:5000/org/app:staging-1234567"),
            ("127.0.0.1:5000/org/app", "staging-1234567")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/app"),
            ("127.0.0.1:5000/app", "latest")
        );
        assert_eq!(split_reference("app"), ("app", "latest"));
    }

    #[test]
    fn the_registry_host_is_read_as_docker_reads_it() {
        assert_eq!(registry_host("127.0.0.1:5000/app:x"), "127.0.0.1:5000");
        assert_eq!(
            registry_host("123.dkr.ecr.us-east-2.amazonaws.com/org/app:x"),
            "123.dkr.ecr.us-east-2.amazonaws.com"
        );
        assert_eq!(registry_host("localhost/app"), "localhost");
        assert_eq!(registry_host("org/app:x"), "docker.io");
        assert_eq!(registry_host("app"), "docker.io");
    }

    #[test]
    fn push_outcomes_are_read_from_the_engine_messages() {
        assert_eq!(
            pushed_digest("staging-1234567: digest: sha256:abc size: 528").as_deref(),
            Some("sha256:abc")
        );
        assert_eq!(pushed_digest("Pushed"), None);
        for transient in [
            "received unexpected HTTP status: 503 Service Unavailable",
            "toomanyrequests: rate limit",
            "Put http://127.0.0.1:5000/v2/x/blobs/uploads/1: read tcp 127.0.0.1:1->127.0.0.1:5000: read: connection reset by peer",
            "Get http://127.0.0.1:5000/v2/: dial tcp 127.0.0.1:5000: connect: connection refused",
        ] {
            assert!(is_transient_push_error(transient), "{transient}");
        }
        for permanent in [
            "unauthorized: authentication required",
            "denied: requested access to the resource is denied",
            "name unknown",
        ] {
            assert!(!is_transient_push_error(permanent), "{permanent}");
        }
        assert!(push_hint("unauthorized: authentication required").contains("HOIST_REGISTRY_USER"));
    }

    #[test]
    fn identity_tokens_reach_the_engine_as_such() {
        use crate::registry::Login;
        use crate::secret::Secret;
        let auth = |username: &str| PushAuth {
            server: "ghcr.io".into(),
            login: Some(Login {
                username: username.into(),
                password: Secret::new("t0ken"),
            }),
        };
        let token = engine_credentials(&auth("<token>"));
        assert_eq!(token.identitytoken.as_deref(), Some("t0ken"));
        assert_eq!((token.username, token.password), (None, None));
        let basic = engine_credentials(&auth("ci"));
        assert_eq!(basic.username.as_deref(), Some("ci"));
        assert_eq!(basic.password.as_deref(), Some("t0ken"));
        assert_eq!(basic.serveraddress.as_deref(), Some("ghcr.io"));
    }
}
