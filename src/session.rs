//! A BuildKit build through a session, as `DOCKER_BUILDKIT=1 docker build`
//! runs one: the context is not a request body but a set of files the
//! engine asks for, so it reads only what the Dockerfile's `COPY` and `ADD`
//! lines need, and on a rebuild only what changed.
//!
//! The session is an HTTP connection to the engine (`POST /session`,
//! upgraded to `h2c`) on which the engine is the gRPC client and hoist the
//! server. Hoist serves three services, the ones it announces in the
//! `X-Docker-Expose-Session-Grpc-Method` headers (moby/buildkit
//! `session/grpchijack`, docker/cli `build_buildkit.go`):
//! - `grpc.health.v1.Health/Check`: the engine drops a session that stops
//!   answering;
//! - `moby.filesync.v1.FileSync/DiffCopy`: the local sources `context` and
//!   `dockerfile` ([`crate::filesync`]);
//! - `moby.filesync.v1.Auth/Credentials`: registry logins for cache
//!   sources, by host, so they never travel in a request header.
//!
//! The build itself is `POST /build?remote=client-session&session=<id>`
//! with no body. bollard's own session cannot carry extra services (its
//! server list is private), so both calls go over a connection hoist opens
//! to the engine's socket itself, with hyper, as bollard does underneath.

use crate::docker::Credentials;
use crate::filesync::{self, Packet, Source, Tally};
use bollard::health::health_check_response::ServingStatus;
use bollard::health::health_server::{Health, HealthServer};
use bollard::health::{
    HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
};
use bollard::moby::filesync::v1::auth_server::{Auth, AuthServer};
use bollard::moby::filesync::v1::{
    CredentialsRequest, CredentialsResponse, FetchTokenRequest, FetchTokenResponse,
    GetTokenAuthorityRequest, GetTokenAuthorityResponse, VerifyTokenAuthorityRequest,
    VerifyTokenAuthorityResponse,
};
use bollard::models::BuildInfo;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::{BoxFuture, Service, StdError};
use tonic::server::NamedService;
use tonic::{Status, Streaming};

/// The methods hoist serves in a session, as announced to the engine.
const METHODS: [&str; 3] = [
    "/grpc.health.v1.Health/Check",
    filesync::DIFF_COPY,
    "/moby.filesync.v1.Auth/Credentials",
];

/// The two local sources the Dockerfile frontend asks a session for.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The context directory (`context`).
    pub context: PathBuf,
    /// The Dockerfile under the name the build call gives it, and, when it
    /// has one, its own ignore file as `<name>.dockerignore`, which the
    /// frontend reads in place of the context's `.dockerignore`
    /// (`dockerfile`).
    pub dockerfile: Vec<(String, PathBuf)>,
}

impl Sources {
    /// The source a `DiffCopy` call asks for; `None` for a name the
    /// session does not serve.
    fn pick(&self, request: &filesync::Request) -> Option<Source> {
        match request.dir_name.as_str() {
            "context" => Some(Source::Dir {
                root: self.context.clone(),
                reset_owner: true,
            }),
            "dockerfile" => Some(Source::Files(self.dockerfile.clone())),
            _ => None,
        }
    }
}

/// Where the engine listens: `unix:///path` or `tcp://host:port`.
#[derive(Debug, Clone, PartialEq)]
pub enum Address {
    Unix(PathBuf),
    Tcp(String),
}

impl Address {
    /// The address of `DOCKER_HOST`, when hoist can open a session there
    /// itself: a Unix socket, or plain TCP (not TLS: `DOCKER_TLS_VERIFY`
    /// or `DOCKER_CERT_PATH` set).
    pub fn parse(host: &str, tls: bool) -> Option<Address> {
        if let Some(path) = host.strip_prefix("unix://") {
            return Some(Address::Unix(PathBuf::from(path)));
        }
        let rest = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))?;
        if tls || rest.is_empty() {
            return None;
        }
        Some(Address::Tcp(rest.trim_end_matches('/').to_string()))
    }
}

/// A byte stream to the engine, Unix or TCP.
trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

async fn connect(address: &Address) -> io::Result<Box<dyn Connection>> {
    Ok(match address {
        Address::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
        Address::Tcp(host) => Box::new(tokio::net::TcpStream::connect(host).await?),
    })
}

/// Sends one request on a connection of its own (upgrades allowed).
async fn send(
    address: &Address,
    request: hyper::Request<Full<Bytes>>,
) -> io::Result<hyper::Response<Incoming>> {
    let connection = connect(address).await?;
    let (mut sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(connection))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(driver.with_upgrades());
    sender.send_request(request).await.map_err(io::Error::other)
}

/// An open session: its server runs until the session is dropped, which
/// closes the connection (HTTP/2 `GOAWAY`), and with it the engine's side.
pub struct Session {
    pub id: String,
    tally: Arc<Tally>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// What a session sent, for the build report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Files the engine asked for.
    pub files: u64,
    /// Bytes of their content.
    pub bytes: u64,
}

impl Session {
    /// Opens a session with the engine at `address` (API version `api`,
    /// e.g. `1.41`). `name` and `shared_key` are the CLI's: the context
    /// directory's base name, and the key under which BuildKit keeps the
    /// files of earlier transfers to send only what changed.
    pub async fn open(
        address: &Address,
        api: &str,
        id: String,
        name: &str,
        shared_key: &str,
        sources: Sources,
        credentials: Credentials,
    ) -> Result<Session, String> {
        let mut request = hyper::Request::post(format!("/v{api}/session"))
            .header(hyper::header::HOST, "docker")
            .header(hyper::header::CONNECTION, "Upgrade")
            .header(hyper::header::UPGRADE, "h2c")
            .header("X-Docker-Expose-Session-Uuid", &id)
            .header("X-Docker-Expose-Session-Name", header_safe(name))
            .header("X-Docker-Expose-Session-Sharedkey", shared_key);
        for method in METHODS {
            request = request.header("X-Docker-Expose-Session-Grpc-Method", method);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let response = send(address, request)
            .await
            .map_err(|e| format!("cannot open a build session: {e}"))?;
        if response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
            let status = response.status();
            let body = response.into_body().collect().await.map(|b| b.to_bytes());
            let body = body.map(|b| String::from_utf8_lossy(&b).trim().to_string());
            return Err(format!(
                "the engine refused a build session ({status}): {}",
                body.unwrap_or_default()
            ));
        }
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|e| format!("cannot open a build session: {e}"))?;
        let tally = Arc::new(Tally::default());
        let file_sync = FileSyncService {
            sources: Arc::new(sources),
            tally: tally.clone(),
        };
        let router = tonic::transport::Server::builder()
            .add_service(HealthServer::new(HealthCheck))
            .add_service(AuthServer::new(Logins(credentials)))
            .add_service(file_sync);
        let connection = SessionConnection(TokioIo::new(upgraded));
        let (shutdown, closed) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            // One connection, and no end to the stream: tonic starts its
            // graceful shutdown when its incoming stream ends.
            let incoming = futures_util::stream::iter([Ok::<_, io::Error>(connection)])
                .chain(futures_util::stream::pending());
            let closed = async {
                let _ = closed.await;
            };
            let _ = router.serve_with_incoming_shutdown(incoming, closed).await;
        });
        Ok(Session {
            id,
            tally,
            shutdown: Some(shutdown),
        })
    }

    /// What the engine asked for so far.
    pub fn sent(&self) -> Sent {
        use std::sync::atomic::Ordering::Relaxed;
        Sent {
            files: self.tally.files.load(Relaxed),
            bytes: self.tally.bytes.load(Relaxed),
        }
    }

    /// Why a transfer failed on hoist's side (an unreadable file, say),
    /// which explains a failed build better than the engine's message.
    pub fn errors(&self) -> Vec<String> {
        self.tally
            .errors
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }
}

/// Header values are visible ASCII: a context directory with another name
/// is announced by a lossy version of it (the name is only shown).
fn header_safe(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect()
}

/// Starts a build whose context is `session`: `query` is the build call's
/// query string (`remote=client-session&session=<id>` among it). Yields the
/// engine's progress messages (`BuildInfo`) as they come.
pub async fn build(
    address: &Address,
    api: &str,
    query: &str,
) -> Result<impl Stream<Item = Result<BuildInfo, String>>, String> {
    let request = hyper::Request::post(format!("/v{api}/build?{query}"))
        .header(hyper::header::HOST, "docker")
        .header(hyper::header::CONTENT_TYPE, "application/x-tar")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = send(address, request)
        .await
        .map_err(|e| format!("cannot start the build: {e}"))?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let text = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&text).trim().to_string());
        return Err(format!(
            "the engine refused the build ({status}): {message}"
        ));
    }
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let mut buffer: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => {
                    let _ = sender
                        .send(Err(format!("the build's progress stream broke: {e}")))
                        .await;
                    return;
                }
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buffer.extend_from_slice(&data);
            // Messages are JSON values one after the other; one may be cut
            // across frames.
            let mut used = 0;
            {
                let mut values =
                    serde_json::Deserializer::from_slice(&buffer).into_iter::<BuildInfo>();
                loop {
                    match values.next() {
                        Some(Ok(info)) => {
                            used = values.byte_offset();
                            if sender.send(Ok(info)).await.is_err() {
                                return;
                            }
                        }
                        Some(Err(e)) if e.is_eof() => break,
                        Some(Err(e)) => {
                            let _ = sender
                                .send(Err(format!(
                                    "the engine sent a progress message hoist cannot read: {e}"
                                )))
                                .await;
                            return;
                        }
                        None => {
                            used = buffer.len();
                            break;
                        }
                    }
                }
            }
            buffer.drain(..used);
        }
    });
    Ok(ReceiverStream::new(receiver))
}

/// The upgraded connection, as tonic's server takes one.
struct SessionConnection(TokioIo<hyper::upgrade::Upgraded>);

impl tonic::transport::server::Connected for SessionConnection {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for SessionConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SessionConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    // Vectored writes let HTTP/2 send a frame's header and payload in one
    // system call: without them every 16 KiB frame took two.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// `grpc.health.v1.Health`: always serving while the session lives.
struct HealthCheck;

#[tonic::async_trait]
impl Health for HealthCheck {
    async fn check(
        &self,
        _: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, Status> {
        Ok(tonic::Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    async fn list(
        &self,
        _: tonic::Request<HealthListRequest>,
    ) -> Result<tonic::Response<HealthListResponse>, Status> {
        Err(Status::unimplemented("hoist's session answers Check only"))
    }

    type WatchStream = ReceiverStream<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("hoist's session answers Check only"))
    }
}

/// `moby.filesync.v1.Auth`: the login for a registry host, as the CLI's
/// auth provider answers (an identity token goes as the secret alone).
struct Logins(Credentials);

impl Logins {
    fn lookup(&self, host: &str) -> Option<&bollard::auth::DockerCredentials> {
        let docker_hub = [
            "docker.io",
            "index.docker.io",
            "https://index.docker.io/v1/",
        ];
        self.0.get(host).or_else(|| match host {
            "registry-1.docker.io" | "docker.io" | "index.docker.io" => {
                docker_hub.iter().find_map(|key| self.0.get(*key))
            }
            _ => None,
        })
    }
}

#[tonic::async_trait]
impl Auth for Logins {
    async fn credentials(
        &self,
        request: tonic::Request<CredentialsRequest>,
    ) -> Result<tonic::Response<CredentialsResponse>, Status> {
        let response = match self.lookup(&request.get_ref().host) {
            Some(login)
                if login
                    .identitytoken
                    .as_deref()
                    .is_some_and(|t| !t.is_empty()) =>
            {
                CredentialsResponse {
                    username: String::new(),
                    secret: login.identitytoken.clone().unwrap_or_default(),
                }
            }
            Some(login) => CredentialsResponse {
                username: login.username.clone().unwrap_or_default(),
                secret: login.password.clone().unwrap_or_default(),
            },
            None => CredentialsResponse::default(),
        };
        Ok(tonic::Response::new(response))
    }

    async fn fetch_token(
        &self,
        _: tonic::Request<FetchTokenRequest>,
    ) -> Result<tonic::Response<FetchTokenResponse>, Status> {
        Err(Status::unimplemented("hoist hands out logins, not tokens"))
    }

    async fn get_token_authority(
        &self,
        _: tonic::Request<GetTokenAuthorityRequest>,
    ) -> Result<tonic::Response<GetTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented("hoist hands out logins, not tokens"))
    }

    async fn verify_token_authority(
        &self,
        _: tonic::Request<VerifyTokenAuthorityRequest>,
    ) -> Result<tonic::Response<VerifyTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented("hoist hands out logins, not tokens"))
    }
}

/// `moby.filesync.v1.FileSync`, served by hand rather than through
/// bollard-buildkit-proto's generated server: fsutil's paths are bytes
/// (see [`crate::filesync`]), so the messages are hoist's own.
#[derive(Clone)]
struct FileSyncService {
    sources: Arc<Sources>,
    tally: Arc<Tally>,
}

impl NamedService for FileSyncService {
    const NAME: &'static str = filesync::SERVICE;
}

impl<B> Service<hyper::Request<B>> for FileSyncService
where
    B: hyper::body::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = hyper::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: hyper::Request<B>) -> Self::Future {
        if request.uri().path() != filesync::DIFF_COPY {
            let status = Status::unimplemented(format!(
                "hoist's session does not serve {}",
                request.uri().path()
            ));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let service = self.clone();
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<Packet, Packet>::default();
            let mut grpc = tonic::server::Grpc::new(codec);
            Ok(grpc.streaming(DiffCopy(service), request).await)
        })
    }
}

struct DiffCopy(FileSyncService);

impl tonic::server::StreamingService<Packet> for DiffCopy {
    type Response = Packet;
    type ResponseStream = ReceiverStream<Result<Packet, Status>>;
    type Future = BoxFuture<tonic::Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: tonic::Request<Streaming<Packet>>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move {
            let asked = filesync::Request::from_metadata(request.metadata());
            let source = service.sources.pick(&asked).ok_or_else(|| {
                Status::not_found(format!("no access allowed to dir {:?}", asked.dir_name))
            })?;
            let packets = filesync::diff_copy(source, asked, request.into_inner(), service.tally);
            Ok(tonic::Response::new(ReceiverStream::new(packets)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_hoist_can_open_a_session_at() {
        assert_eq!(
            Address::parse("unix:///var/run/docker.sock", false),
            Some(Address::Unix(PathBuf::from("/var/run/docker.sock")))
        );
        assert_eq!(
            Address::parse("tcp://127.0.0.1:2375", false),
            Some(Address::Tcp("127.0.0.1:2375".to_string()))
        );
        assert_eq!(Address::parse("tcp://engine:2376", true), None);
        assert_eq!(Address::parse("ssh://user@host", false), None);
    }

    #[test]
    fn the_session_serves_the_context_and_the_dockerfile_only() {
        let sources = Sources {
            context: PathBuf::from("/ctx"),
            dockerfile: vec![("Dockerfile".to_string(), PathBuf::from("/svc/Dockerfile"))],
        };
        let asked = |dir: &str| filesync::Request {
            dir_name: dir.to_string(),
            ..filesync::Request::default()
        };
        assert!(matches!(
            sources.pick(&asked("context")),
            Some(Source::Dir {
                reset_owner: true,
                ..
            })
        ));
        match sources.pick(&asked("dockerfile")) {
            Some(Source::Files(files)) => assert_eq!(files, sources.dockerfile),
            other => panic!("{other:?}"),
        }
        assert!(sources.pick(&asked("secrets")).is_none());
    }
}
