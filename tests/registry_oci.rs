//! The OCI backend against Debian's real registry on loopback: images are
//! seeded through the registry's own API (blob uploads and manifest PUTs),
//! so no Docker engine is needed. Covers exact bytes and digests, missing
//! tags, retags, the revision label (also through an OCI index with an
//! attestation), htpasswd logins (right, wrong, none), transient failures
//! injected by a proxy, a registry that is not there, tag lists, and
//! removing one tag (which Debian's registry, distribution 2.8, refuses
//! with deletes on or off).
//!
//! Small fronts stand in for what Debian's registry cannot be made to do
//! here: a bearer-token gate (a token service and a registry that demands
//! its tokens, in front of the real registry), blob storage on another host
//! that the registry redirects to (as S3 is), distribution 3's paged tag
//! lists and its removal of a tag alone (done on the real registry's
//! storage, as distribution 3 does it).

mod common;

use common::docker::{
    REGISTRY_BIN, Registry as TestRegistry, RegistryOptions, free_port, http_request,
};
use common::git_server::base64;
use common::proxy::{FaultProxy, Request as ProxyRequest, Verdict};
use hoist::registry::oci::Oci;
use hoist::registry::retry::{ATTEMPTS, Retries};
use hoist::registry::{
    DOCKER_MANIFEST, Manifest, Missing, OCI_INDEX, OCI_MANIFEST, REVISION_LABEL, Registry, Tag,
    Target, digest_of,
};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REVISION: &str = "0123456789abcdef0123456789abcdef01234567";

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Runtime::new().unwrap().block_on(future)
}

/// A registry client for `registry` (`host:port[/prefix]`) that sees only
/// `vars` (plus an empty HOME, so no real Docker config is read), with a
/// short backoff.
fn connect(registry: &str, vars: &[(&str, &str)]) -> Registry {
    Registry::Oci(connect_oci(registry, vars))
}

/// [`connect`]'s client before it becomes a [`Registry`], for the builder
/// methods.
fn connect_oci(registry: &str, vars: &[(&str, &str)]) -> Oci {
    let home = tempfile::tempdir().unwrap();
    let mut env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.entry("HOME".into())
        .or_insert_with(|| home.path().to_str().unwrap().to_string());
    let target = Target::parse(registry).unwrap();
    let oci = Oci::connect(&target, &|name| env.get(name).cloned()).unwrap();
    oci.with_retries(Retries::with_base_delay(Duration::from_millis(5)))
}

fn login(user: &str, password: &str) -> Vec<(&'static str, String)> {
    vec![
        ("HOIST_REGISTRY_USER", user.to_string()),
        ("HOIST_REGISTRY_PASSWORD", password.to_string()),
    ]
}

fn vars<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

// ---- seeding images through the registry API ---------------------------

/// One HTTP/1.0 request with a body: (status, headers lower-cased, body).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, HashMap<String, String>, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some((user, password)) = auth {
        let token = base64(format!("{user}:{password}").as_bytes());
        head.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, response[split + 4..].to_vec())
}

/// PUTs a manifest's bytes; returns the digest the registry reports.
fn upload_manifest(
    registry: &TestRegistry,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> String {
    let (status, headers, body) = http(
        registry.addr(),
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        registry.credentials(),
        &[("Content-Type", media_type)],
        bytes,
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    headers["docker-content-digest"].clone()
}

/// A config blob with the revision label (when given).
fn config(revision: Option<&str>) -> Vec<u8> {
    let labels = match revision {
        Some(revision) => format!(r#"{{"{REVISION_LABEL}":"{revision}","x":"y"}}"#),
        None => "null".to_string(),
    };
    format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{labels}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
    )
    .into_bytes()
}

struct Seeded {
    bytes: Vec<u8>,
    digest: String,
    config: Vec<u8>,
    config_digest: String,
}

/// Uploads a config and a layer and an OCI (or Docker) manifest naming
/// them, hand-formatted so that re-serialising would show; tagged `tag`
/// when given, else by digest only.
fn seed(
    registry: &TestRegistry,
    repo: &str,
    tag: Option<&str>,
    revision: Option<&str>,
    media_type: &str,
) -> Seeded {
    let config = config(revision);
    let config_digest = registry.upload_blob(repo, &config);
    let layer = format!("layer of {repo} {revision:?}").into_bytes();
    let layer_digest = registry.upload_blob(repo, &layer);
    let (config_type, layer_type) = if media_type == OCI_MANIFEST {
        (
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
    } else {
        (
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        )
    };
    let bytes = format!(
        "{{\n   \"schemaVersion\": 2,\n   \"mediaType\":  \"{media_type}\",\n\
         \"config\": {{ \"mediaType\": \"{config_type}\", \"size\": {}, \"digest\": \"{config_digest}\" }},\n\
         \"layers\": [\n  {{\"size\": {}, \"mediaType\": \"{layer_type}\", \"digest\": \"{layer_digest}\"}}\n]\n}}\n",
        config.len(),
        layer.len(),
    )
    .into_bytes();
    let digest = digest_of(&bytes);
    let reported = upload_manifest(registry, repo, tag.unwrap_or(&digest), media_type, &bytes);
    assert_eq!(reported, digest);
    Seeded {
        bytes,
        digest,
        config,
        config_digest,
    }
}

/// An OCI index, as BuildKit makes it with attestations on, but with the
/// attestation (`unknown/unknown`, whose config carries another revision)
/// listed first. Returns the index's digest.
fn seed_index(registry: &TestRegistry, repo: &str, tag: &str) -> String {
    let attestation = seed(registry, repo, None, Some("attestation"), OCI_MANIFEST);
    let image = seed(registry, repo, None, Some(REVISION), OCI_MANIFEST);
    let entry = |seeded: &Seeded, os: &str, arch: &str| {
        format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"platform":{{"architecture":"{arch}","os":"{os}"}}}}"#,
            seeded.digest,
            seeded.bytes.len()
        )
    };
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{},{}]}}"#,
        entry(&attestation, "unknown", "unknown"),
        entry(&image, "linux", "amd64"),
    );
    upload_manifest(registry, repo, tag, OCI_INDEX, index.as_bytes())
}

// ---- the tests -----------------------------------------------------------

#[test]
fn reads_the_exact_bytes_under_the_registry_digest() {
    let Some(registry) = TestRegistry::start(RegistryOptions::default()) else {
        return;
    };
    let seeded = seed(
        &registry,
        "team/app",
        Some("v1"),
        Some(REVISION),
        DOCKER_MANIFEST,
    );
    let client = connect(&format!("{}/team", registry.addr()), &[]);
    block_on(async {
        let manifest = client.manifest("team/app", "v1").await.unwrap().unwrap();
        assert_eq!(manifest.bytes.as_ref(), seeded.bytes.as_slice());
        assert_eq!(
            Some(manifest.digest.clone()),
            registry.manifest_digest("team/app", "v1")
        );
        assert_eq!(manifest.digest, seeded.digest);
        assert_eq!(manifest.media_type, DOCKER_MANIFEST);
        assert_eq!(manifest.config_digest(), Some(seeded.config_digest.clone()));

        assert_eq!(client.manifest("team/app", "v2").await.unwrap(), None);
        assert_eq!(client.manifest("team/nothing", "v1").await.unwrap(), None);
        assert_eq!(
            client
                .ensure_repository("team/new", Missing::Create)
                .await
                .unwrap(),
            None
        );
        let auth = client.push_auth().await.unwrap();
        assert_eq!(auth.server, registry.addr());
        assert!(auth.login.is_none());
    });
    assert_eq!(client.retries(), 0);
}

#[test]
fn retags_by_writing_the_same_bytes() {
    let Some(registry) = TestRegistry::start(RegistryOptions::default()) else {
        return;
    };
    let seeded = seed(
        &registry,
        "app",
        Some("staging-0123456"),
        None,
        OCI_MANIFEST,
    );
    let client = connect(registry.addr(), &[]);
    block_on(async {
        let manifest = client
            .manifest("app", "staging-0123456")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(manifest.media_type, OCI_MANIFEST);
        client
            .put_manifest("app", "latest", &manifest)
            .await
            .unwrap();
        // Again: a tag already naming the manifest is fine.
        client
            .put_manifest("app", "latest", &manifest)
            .await
            .unwrap();
        assert_eq!(
            registry.manifest_digest("app", "latest"),
            Some(seeded.digest)
        );
        let back = client.manifest("app", "latest").await.unwrap().unwrap();
        assert_eq!(back, manifest);
        assert_eq!(registry.tags("app"), ["latest", "staging-0123456"]);

        // A repository without the image's blobs refuses the manifest.
        let error = client
            .put_manifest("other", "latest", &manifest)
            .await
            .unwrap_err();
        let text = error.to_string();
        assert_eq!(error.exit_code(), 1);
        assert!(
            error
                .message
                .contains(&format!("{}/other:latest", registry.addr())),
            "{text}"
        );
        assert!(text.contains("MANIFEST_BLOB_UNKNOWN"), "{text}");
        assert!(error.hint.as_deref().unwrap().contains("push the image"));

        // Bytes that are not what the digest says are never written.
        let forged = Manifest {
            bytes: bytes::Bytes::from(format!("{} ", String::from_utf8_lossy(&manifest.bytes))),
            ..manifest.clone()
        };
        let error = client
            .put_manifest("app", "forged", &forged)
            .await
            .unwrap_err();
        assert!(error.message.contains("refusing"), "{error}");
        assert_eq!(registry.tags("app"), ["latest", "staging-0123456"]);
    });
}

#[test]
fn reads_the_revision_label_also_through_an_index() {
    let Some(registry) = TestRegistry::start(RegistryOptions::default()) else {
        return;
    };
    seed(
        &registry,
        "app",
        Some("single"),
        Some(REVISION),
        OCI_MANIFEST,
    );
    seed(&registry, "app", Some("unlabelled"), None, DOCKER_MANIFEST);
    let index_digest = seed_index(&registry, "app", "multi");
    let client = connect(registry.addr(), &[]);
    block_on(async {
        let single = client.manifest("app", "single").await.unwrap().unwrap();
        assert_eq!(
            client.revision("app", &single).await.unwrap().as_deref(),
            Some(REVISION)
        );
        let unlabelled = client.manifest("app", "unlabelled").await.unwrap().unwrap();
        assert_eq!(client.revision("app", &unlabelled).await.unwrap(), None);

        let index = client.manifest("app", "multi").await.unwrap().unwrap();
        assert_eq!(index.media_type, OCI_INDEX);
        assert_eq!(index.digest, index_digest);
        assert!(index.is_index());
        assert_eq!(
            client.revision("app", &index).await.unwrap().as_deref(),
            Some(REVISION),
            "the attestation listed first must be skipped"
        );
        // Retagging an index keeps it an index, byte for byte.
        client.put_manifest("app", "latest", &index).await.unwrap();
        assert_eq!(
            registry.manifest_digest("app", "latest"),
            Some(index_digest)
        );
    });
}

#[test]
fn logs_in_to_an_htpasswd_registry() {
    let (user, password) = ("hoist", "s3cret-Passw0rd");
    let options = RegistryOptions {
        htpasswd: Some((user.into(), password.into())),
    };
    let Some(registry) = TestRegistry::start(options) else {
        return;
    };
    let seeded = seed(&registry, "app", Some("v1"), Some(REVISION), OCI_MANIFEST);

    let right = login(user, password);
    let client = connect(registry.addr(), &vars(&right));
    block_on(async {
        let manifest = client.manifest("app", "v1").await.unwrap().unwrap();
        assert_eq!(manifest.digest, seeded.digest);
        client
            .put_manifest("app", "latest", &manifest)
            .await
            .unwrap();
        assert_eq!(
            client.revision("app", &manifest).await.unwrap().as_deref(),
            Some(REVISION)
        );
        let auth = client.push_auth().await.unwrap();
        assert_eq!(auth.login.unwrap().password.expose(), password);
    });
    assert_eq!(registry.tags("app"), ["latest", "v1"]);

    // The same login from a Docker config (`auths`, base64 user:password).
    let docker_config = tempfile::tempdir().unwrap();
    std::fs::write(
        docker_config.path().join("config.json"),
        format!(
            r#"{{"auths":{{"http://{}":{{"auth":"{}"}}}}}}"#,
            registry.addr(),
            base64(format!("{user}:{password}").as_bytes())
        ),
    )
    .unwrap();
    let client = connect(
        registry.addr(),
        &[("DOCKER_CONFIG", docker_config.path().to_str().unwrap())],
    );
    let manifest = block_on(client.manifest("app", "v1")).unwrap().unwrap();
    assert_eq!(manifest.digest, seeded.digest);

    let wrong_password = "wr0ng-Passw0rd";
    let wrong = login(user, wrong_password);
    let client = connect(registry.addr(), &vars(&wrong));
    let error = block_on(client.manifest("app", "v1")).unwrap_err();
    let text = format!("{error}\n{error:?}");
    assert_eq!(error.exit_code(), 1);
    assert_eq!(
        error.message,
        format!("{} rejected the credentials of user hoist", registry.addr())
    );
    for secret in [
        wrong_password.to_string(),
        password.to_string(),
        base64(format!("{user}:{wrong_password}").as_bytes()),
    ] {
        assert!(!text.contains(&secret), "{text}");
    }
    // The hint names where the login came from, once.
    let hint = error.hint.as_deref().unwrap();
    assert_eq!(hint.matches("HOIST_REGISTRY_USER").count(), 1, "{hint}");
    assert!(hint.starts_with("check HOIST_REGISTRY_USER"), "{hint}");
    assert_eq!(client.retries(), 0, "a refused login is not retried");

    let client = connect(registry.addr(), &[]);
    let error = block_on(client.manifest("app", "v1")).unwrap_err();
    assert_eq!(error.exit_code(), 1);
    assert!(error.message.contains("requires a login"), "{error}");
    let hint = error.hint.as_deref().unwrap();
    assert!(
        hint.contains("HOIST_REGISTRY_USER") && hint.contains("docker login"),
        "{hint}"
    );
}

#[test]
fn retries_transient_failures_and_counts_them() {
    let Some(registry) = TestRegistry::start(RegistryOptions::default()) else {
        return;
    };
    let seeded = seed(&registry, "app", Some("v1"), Some(REVISION), OCI_MANIFEST);
    let upstream: SocketAddr = registry.addr().parse().unwrap();

    for (status, failures) in [(500, 2), (429, 3), (503, 1)] {
        let proxy = FaultProxy::failing_first(upstream, failures, status);
        let client = connect(&proxy.addr.to_string(), &[]);
        let manifest = block_on(client.manifest("app", "v1")).unwrap().unwrap();
        assert_eq!(manifest.digest, seeded.digest, "{status}");
        assert_eq!(client.retries(), failures as u32, "{status}");
        assert_eq!(proxy.seen().len(), failures + 1, "{status}");
    }

    // A cut connection is retried too, and so is a PUT.
    let puts = Arc::new(AtomicUsize::new(0));
    let counted = puts.clone();
    let proxy = FaultProxy::start(
        upstream,
        Arc::new(
            move |request: &ProxyRequest| match request.method.as_str() {
                "GET" if request.index == 0 => Verdict::Cut,
                "PUT" if counted.fetch_add(1, Ordering::Relaxed) == 0 => Verdict::Fail(502),
                _ => Verdict::Forward,
            },
        ),
    );
    let client = connect(&proxy.addr.to_string(), &[]);
    block_on(async {
        let manifest = client.manifest("app", "v1").await.unwrap().unwrap();
        client
            .put_manifest("app", "latest", &manifest)
            .await
            .unwrap();
        assert_eq!(
            client.revision("app", &manifest).await.unwrap().as_deref(),
            Some(REVISION)
        );
    });
    assert_eq!(client.retries(), 2);
    assert_eq!(puts.load(Ordering::Relaxed), 2);
    assert_eq!(
        registry.manifest_digest("app", "latest"),
        Some(seeded.digest)
    );

    // A registry that keeps failing: an error after every try.
    let proxy = FaultProxy::failing_first(upstream, usize::MAX, 500);
    let client = connect(&proxy.addr.to_string(), &[]);
    let error = block_on(client.manifest("app", "v1")).unwrap_err();
    let text = error.to_string();
    assert!(error.message.contains("answered 500"), "{text}");
    assert!(text.contains("injected 500"), "{text}");
    assert!(
        text.contains(&format!("gave up after {ATTEMPTS} tries")),
        "{text}"
    );
    assert_eq!(proxy.seen().len(), ATTEMPTS as usize);
    assert_eq!(client.retries(), ATTEMPTS - 1);
}

#[test]
fn a_registry_that_is_not_there_is_an_error_not_a_hang() {
    let addr = format!("127.0.0.1:{}", free_port());
    let client = connect(&addr, &[]);
    let started = Instant::now();
    let error = block_on(client.manifest("app", "v1")).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(30));
    let text = error.to_string();
    assert_eq!(error.exit_code(), 1);
    assert!(
        error.message.contains(&format!("cannot reach {addr}")),
        "{text}"
    );
    assert!(text.to_lowercase().contains("connection refused"), "{text}");
    assert!(
        text.contains(&format!("gave up after {ATTEMPTS} tries")),
        "{text}"
    );
    assert!(error.hint.as_deref().unwrap().contains("up and reachable"));
    assert_eq!(client.retries(), ATTEMPTS - 1);
}

// ---- fronts: a bearer-token gate and blob storage on another host --------

/// A request as a [`Front`] saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    /// Lower-cased names.
    headers: HashMap<String, String>,
}

enum Answer {
    Forward,
    Reply(u16, Vec<(String, String)>, Vec<u8>),
}

type Handler = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

/// A loopback HTTP server that answers each request with its handler's
/// reply, or forwards it to `upstream`; one request per connection.
struct Front {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Front {
    fn start(upstream: Option<SocketAddr>, handler: Handler) -> Front {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (handler, recorded) = (handler.clone(), recorded.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, upstream, &handler, &recorded);
                });
            }
        });
        Front { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(
    client: TcpStream,
    upstream: Option<SocketAddr>,
    handler: &Handler,
    recorded: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let mut head = line.clone();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((&line, ""));
        let name = name.trim().to_ascii_lowercase();
        if name != "connection" {
            head.push_str(&line);
        }
        headers.insert(name, value.trim().to_string());
    }
    head.push_str("Connection: close\r\n\r\n");
    let length = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let request = Seen {
        method,
        path,
        headers,
    };
    recorded.lock().unwrap().push(request.clone());
    let mut client = client;
    match handler(&request) {
        Answer::Forward => {
            let mut server = TcpStream::connect(upstream.expect("an upstream"))?;
            server.write_all(head.as_bytes())?;
            server.write_all(&body)?;
            std::io::copy(&mut server, &mut client)?;
        }
        Answer::Reply(status, headers, body) => {
            let mut response = format!(
                "HTTP/1.1 {status} Front\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (name, value) in headers {
                response.push_str(&format!("{name}: {value}\r\n"));
            }
            response.push_str("\r\n");
            client.write_all(response.as_bytes())?;
            client.write_all(&body)?;
        }
    }
    client.shutdown(Shutdown::Both)
}

/// The repository and action a registry request needs: `(repo, "pull")`
/// for reads, `(repo, "pull,push")` for writes.
fn needed_scope(request: &Seen) -> Option<String> {
    let rest = request.path.strip_prefix("/v2/")?;
    let end = ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .filter_map(|marker| rest.find(marker))
        .min()?;
    let action = match request.method.as_str() {
        "GET" | "HEAD" => "pull",
        _ => "pull,push",
    };
    Some(format!("repository:{}:{action}", &rest[..end]))
}

fn query_param(path: &str, name: &str) -> Option<String> {
    let query = path.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=')?;
        (n == name).then(|| {
            v.replace("%3A", ":")
                .replace("%2C", ",")
                .replace("%2F", "/")
        })
    })
}

/// A token service at `/token` (Basic `user:password`; tokens name their
/// scope) and a registry gate that demands a bearer token for the scope
/// of each request, forwarding to the real registry once it has one.
fn token_gate(upstream: SocketAddr, user: &str, password: &str) -> Front {
    let basic = format!("Basic {}", base64(format!("{user}:{password}").as_bytes()));
    Front::start(
        Some(upstream),
        Arc::new(move |request: &Seen| {
            let authorization = request.headers.get("authorization");
            if request.path.starts_with("/token") {
                let scope = query_param(&request.path, "scope").unwrap_or_default();
                let service = query_param(&request.path, "service");
                if authorization != Some(&basic) || service.as_deref() != Some("gate") {
                    return Answer::Reply(401, vec![], br#"{"details":"bad login"}"#.to_vec());
                }
                let body = format!(
                    r#"{{"access_token":"tok-{}","expires_in":300}}"#,
                    base64(scope.as_bytes())
                );
                return Answer::Reply(200, vec![], body.into_bytes());
            }
            let Some(scope) = needed_scope(request) else {
                return Answer::Forward;
            };
            let granted = authorization
                .and_then(|a| a.strip_prefix("Bearer tok-"))
                .is_some_and(|token| {
                    token == base64(scope.as_bytes())
                        || token == base64(scope.replace(":pull", ":pull,push").as_bytes())
                });
            if granted {
                return Answer::Forward;
            }
            let host = request.headers.get("host").cloned().unwrap_or_default();
            let challenge = format!(
                r#"Bearer realm="http://{host}/token",service="gate",scope="{scope}",error="insufficient_scope""#
            );
            Answer::Reply(
                401,
                vec![
                    ("WWW-Authenticate".into(), challenge),
                    ("Content-Type".into(), "application/json".into()),
                ],
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
                    .to_vec(),
            )
        }),
    )
}

#[test]
fn answers_bearer_challenges_with_cached_tokens() {
    let Some(registry) = TestRegistry::start(RegistryOptions::default()) else {
        return;
    };
    let seeded = seed(
        &registry,
        "team/app",
        Some("v1"),
        Some(REVISION),
        OCI_MANIFEST,
    );
    let (user, password) = ("robot", "t0ken-Passw0rd");
    let gate = token_gate(registry.addr().parse().unwrap(), user, password);
    let right = login(user, password);
    let client = connect(&gate.addr.to_string(), &vars(&right));
    block_on(async {
        let manifest = client.manifest("team/app", "v1").await.unwrap().unwrap();
        assert_eq!(manifest.digest, seeded.digest);
        // Read again, with the cached pull token.
        let again = client.manifest("team/app", "v1").await.unwrap().unwrap();
        assert_eq!(again, manifest);
        client
            .put_manifest("team/app", "latest", &manifest)
            .await
            .unwrap();
        assert_eq!(
            client
                .revision("team/app", &manifest)
                .await
                .unwrap()
                .as_deref(),
            Some(REVISION)
        );
    });
    assert_eq!(
        registry.manifest_digest("team/app", "latest"),
        Some(seeded.digest)
    );
    let token_scopes: Vec<String> = gate
        .seen()
        .iter()
        .filter(|s| s.path.starts_with("/token"))
        .map(|s| query_param(&s.path, "scope").unwrap())
        .collect();
    assert_eq!(
        token_scopes,
        ["repository:team/app:pull", "repository:team/app:pull,push"],
        "one token per scope, each asked for once"
    );
    // Only the token service saw the password; the registry saw tokens.
    for seen in gate.seen() {
        let authorization = seen
            .headers
            .get("authorization")
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            authorization.starts_with("Basic "),
            seen.path.starts_with("/token"),
            "{} {}",
            seen.method,
            seen.path
        );
    }

    let wrong = login(user, "nope-nope");
    let client = connect(&gate.addr.to_string(), &vars(&wrong));
    let error = block_on(client.manifest("team/app", "v1")).unwrap_err();
    assert_eq!(
        error.message,
        format!("{} rejected the credentials of user robot", gate.addr)
    );
    assert!(!format!("{error}{error:?}").contains("nope-nope"));

    let client = connect(&gate.addr.to_string(), &[]);
    let error = block_on(client.manifest("team/app", "v1")).unwrap_err();
    assert!(error.message.contains("requires a login"), "{error}");
}

#[test]
fn follows_blob_redirects_without_the_registry_credentials() {
    let (user, password) = ("hoist", "s3cret-Passw0rd");
    let options = RegistryOptions {
        htpasswd: Some((user.into(), password.into())),
    };
    let Some(registry) = TestRegistry::start(options) else {
        return;
    };
    let seeded = seed(&registry, "app", Some("v1"), Some(REVISION), OCI_MANIFEST);

    // Blob storage on another port: serves the config by digest, or
    // tampered bytes when asked for `?tampered`.
    let blobs: HashMap<String, Vec<u8>> =
        HashMap::from([(seeded.config_digest.clone(), seeded.config.clone())]);
    let storage = Front::start(
        None,
        Arc::new(move |request: &Seen| {
            let digest = request.path.trim_start_matches("/blob/");
            let (digest, query) = digest.split_once('?').unwrap_or((digest, ""));
            match blobs.get(digest) {
                Some(_) if query.contains("tampered") => Answer::Reply(200, vec![], b"{}".to_vec()),
                Some(bytes) => Answer::Reply(200, vec![], bytes.clone()),
                None => Answer::Reply(404, vec![], vec![]),
            }
        }),
    );
    // The registry, except that an authorised blob GET is redirected there.
    let storage_addr = storage.addr;
    let tamper = Arc::new(AtomicUsize::new(0));
    let tampering = tamper.clone();
    let front = Front::start(
        Some(registry.addr().parse().unwrap()),
        Arc::new(move |request: &Seen| {
            let blob = request.path.contains("/blobs/sha256:");
            if !blob || !request.headers.contains_key("authorization") {
                return Answer::Forward;
            }
            let digest = request.path.rsplit('/').next().unwrap();
            let extra = if tampering.load(Ordering::Relaxed) > 0 {
                "&tampered"
            } else {
                ""
            };
            let location = format!(
                "http://{storage_addr}/blob/{digest}?X-Amz-Signature=signature-secret{extra}"
            );
            Answer::Reply(307, vec![("Location".into(), location)], vec![])
        }),
    );
    let right = login(user, password);
    let client = connect(&front.addr.to_string(), &vars(&right));
    block_on(async {
        let manifest = client.manifest("app", "v1").await.unwrap().unwrap();
        assert_eq!(
            client.revision("app", &manifest).await.unwrap().as_deref(),
            Some(REVISION)
        );
        tamper.store(1, Ordering::Relaxed);
        let error = client.revision("app", &manifest).await.unwrap_err();
        let text = error.to_string();
        assert!(text.contains("other bytes than its digest"), "{text}");
        assert!(!text.contains("signature-secret"), "{text}");
    });
    let fetched = storage.seen();
    assert_eq!(fetched.len(), 2);
    for seen in &fetched {
        assert_eq!(seen.method, "GET");
        assert!(
            !seen.headers.contains_key("authorization"),
            "the registry's credentials went to the storage host: {seen:?}"
        );
    }
    assert!(
        front
            .seen()
            .iter()
            .any(|s| s.path.contains("/blobs/") && s.headers.contains_key("authorization"))
    );
}

// ---- tags: lists, pages, and removing one tag ---------------------------

fn names(tags: &[Tag]) -> Vec<&str> {
    tags.iter().map(|t| t.name.as_str()).collect()
}

/// Distribution 3's paged tag lists (`n`, `last`, and a `Link` to the next
/// page), which Debian's registry (2.8) does not do: it answers every tag
/// at once, in no order, whatever `n` says. This front pages the real
/// registry's full list; every other request goes to the registry. The
/// first next-page link is relative (as distribution writes it), the later
/// ones absolute (as some registries do).
fn paginating_front(registry: &TestRegistry) -> Front {
    let upstream = registry.addr().to_string();
    Front::start(
        Some(registry.addr().parse().unwrap()),
        Arc::new(move |request: &Seen| {
            let path = request.path.split('?').next().unwrap();
            let Some(repo) = path
                .strip_prefix("/v2/")
                .and_then(|rest| rest.strip_suffix("/tags/list"))
            else {
                return Answer::Forward;
            };
            let json = vec![("Content-Type".to_string(), "application/json".to_string())];
            let (status, _, body) = http(
                &upstream,
                "GET",
                &format!("/v2/{repo}/tags/list"),
                None,
                &[],
                b"",
            );
            if status != 200 {
                return Answer::Reply(status, json, body);
            }
            let all: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let mut tags: Vec<String> = all["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect();
            tags.sort();
            let n: usize = query_param(&request.path, "n").unwrap().parse().unwrap();
            let last = query_param(&request.path, "last");
            let rest: Vec<String> = tags
                .into_iter()
                .filter(|t| last.as_ref().is_none_or(|last| t > last))
                .collect();
            let page = &rest[..n.min(rest.len())];
            let mut headers = json;
            if rest.len() > n {
                let next = format!("/v2/{repo}/tags/list?last={}&n={n}", page[n - 1]);
                let link = match last {
                    None => next,
                    Some(_) => format!("http://{}{next}", request.headers["host"]),
                };
                headers.push(("Link".into(), format!(r#"<{link}>; rel="next""#)));
            }
            let body = serde_json::json!({ "name": repo, "tags": page });
            Answer::Reply(200, headers, body.to_string().into_bytes())
        }),
    )
}

#[test]
fn lists_every_tag_following_the_pages() {
    let Some(registry) = TestRegistry::start(RegistryOptions::default()) else {
        return;
    };
    let seeded = seed(
        &registry,
        "team/app",
        Some("staging-0123456"),
        Some(REVISION),
        OCI_MANIFEST,
    );
    for tag in ["latest", "v1", "v2", "a", "b"] {
        upload_manifest(&registry, "team/app", tag, OCI_MANIFEST, &seeded.bytes);
    }
    seed(
        &registry,
        "team/app",
        Some("staging-89abcde"),
        None,
        DOCKER_MANIFEST,
    );
    let all = [
        "a",
        "b",
        "latest",
        "staging-0123456",
        "staging-89abcde",
        "v1",
        "v2",
    ];

    // Straight to Debian's registry: every tag in one answer.
    let client = connect(registry.addr(), &[]);
    block_on(async {
        let tags = client.tags("team/app").await.unwrap();
        assert_eq!(names(&tags), all);
        for tag in &tags {
            assert_eq!((&tag.digest, &tag.pushed_at), (&None, &None), "{tag:?}");
        }
        // These registries make a repository on the first push: an unknown
        // one has no tags.
        assert_eq!(client.tags("team/nothing").await.unwrap(), []);
    });
    let log = registry.log();
    assert!(
        log.contains("\"GET /v2/team/app/tags/list?n=1000 HTTP/1.1\" 200"),
        "{log}"
    );
    assert!(
        log.contains("\"GET /v2/team/nothing/tags/list?n=1000 HTTP/1.1\" 404"),
        "{log}"
    );

    // Pages of three, through the links: 3 + 3 + 1.
    let front = paginating_front(&registry);
    let paged = Registry::Oci(connect_oci(&front.addr.to_string(), &[]).with_page_size(3));
    block_on(async {
        assert_eq!(names(&paged.tags("team/app").await.unwrap()), all);
        assert_eq!(paged.tags("team/nothing").await.unwrap(), []);
    });
    let asked: Vec<String> = front
        .seen()
        .iter()
        .filter(|s| s.path.contains("/tags/list"))
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(
        asked,
        [
            "/v2/team/app/tags/list?n=3",
            "/v2/team/app/tags/list?last=latest&n=3",
            "/v2/team/app/tags/list?last=v1&n=3",
            "/v2/team/nothing/tags/list?n=3",
        ]
    );
    assert_eq!(paged.retries(), 0);
}

#[test]
fn a_push_time_is_none_without_asking() {
    // No registry listens there: an answer proves no request was made.
    let client = connect(&format!("127.0.0.1:{}", free_port()), &[]);
    let digest = digest_of(b"any manifest");
    assert_eq!(block_on(client.pushed_at("app", &digest)).unwrap(), None);
    assert_eq!(client.retries(), 0);
}

/// A second `docker-registry serve` on the storage of a running one, with
/// `storage.delete.enabled: false`: the same repositories, and every
/// DELETE refused (the registries of `common` have deletes on).
struct DeletesOff {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl DeletesOff {
    fn start(registry: &TestRegistry) -> DeletesOff {
        let dir = tempfile::tempdir().unwrap();
        let (config, log_path) = (
            dir.path().join("config.yml"),
            dir.path().join("registry.log"),
        );
        let mut last_log = String::new();
        // A port freed just now may be taken before the registry binds it:
        // then it exits, and another port is tried.
        for _ in 0..5 {
            let addr = format!("127.0.0.1:{}", free_port());
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\n\
                     log:\n  level: info\n\
                     storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: false\n\
                     http:\n  addr: {addr}\n  secret: hoist-test-secret\n",
                    registry.storage().display()
                ),
            )
            .unwrap();
            let log = File::create(&log_path).unwrap();
            let mut child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                if let Some(status) = child.try_wait().unwrap() {
                    last_log = format!("exit {status}: {text}");
                    break;
                }
                // Only once it has bound its own socket is an answer its own.
                let answering = text.contains(&format!("listening on {addr}"))
                    && http_request(&addr, "GET", "/v2/", None, &[])
                        .is_ok_and(|(status, _, _)| status == 200);
                if answering {
                    return DeletesOff { child, addr, dir };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the registry with deletes off did not answer within 30 s: {text}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !last_log.contains("address already in use") {
                break;
            }
        }
        panic!("the registry with deletes off did not start; {last_log}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for DeletesOff {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn debians_registry_refuses_to_remove_a_tag_alone_and_nothing_goes() {
    let Some(registry) = TestRegistry::start(RegistryOptions::default()) else {
        return;
    };
    let seeded = seed(
        &registry,
        "app",
        Some("staging-0123456"),
        Some(REVISION),
        OCI_MANIFEST,
    );
    upload_manifest(&registry, "app", "latest", OCI_MANIFEST, &seeded.bytes);
    let off = DeletesOff::start(&registry);

    // Distribution 2.8 reads the reference of a DELETE as a digest: with
    // deletes on, a tag is 400 DIGEST_INVALID; with them off, every
    // DELETE is 405 UNSUPPORTED.
    for deletes in [true, false] {
        let (addr, status, code) = match deletes {
            true => (registry.addr(), 400, "DIGEST_INVALID"),
            false => (off.addr.as_str(), 405, "UNSUPPORTED"),
        };
        let client = connect(addr, &[]);
        block_on(async {
            let removed = client.delete_tag("app", "latest").await.unwrap();
            assert!(!removed, "deletes {deletes}");
            // A tag (or repository) that is not there is gone already, and
            // no DELETE is sent for it.
            assert!(client.delete_tag("app", "absent").await.unwrap());
            assert!(client.delete_tag("nothing", "latest").await.unwrap());
            for tag in ["latest", "staging-0123456"] {
                let there = client.manifest("app", tag).await.unwrap().unwrap();
                assert_eq!(there.digest, seeded.digest, "{tag}, deletes {deletes}");
            }
        });
        assert_eq!(client.retries(), 0);
        let log = if deletes { registry.log() } else { off.log() };
        let sent: Vec<&str> = log.lines().filter(|l| l.contains("\"DELETE ")).collect();
        assert_eq!(sent.len(), 1, "deletes {deletes}: {log}");
        assert!(
            sent[0].contains(&format!(
                "\"DELETE /v2/app/manifests/latest HTTP/1.1\" {status} "
            )),
            "{}",
            sent[0]
        );
        let (answered, _, body) = http(addr, "DELETE", "/v2/app/manifests/latest", None, &[], b"");
        assert_eq!(answered, status);
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains(code), "{body}");
    }
    assert_eq!(registry.tags("app"), ["latest", "staging-0123456"]);
    for tag in ["latest", "staging-0123456"] {
        assert_eq!(
            registry.manifest_digest("app", tag),
            Some(seeded.digest.clone())
        );
    }
}

/// How a [`untagging_front`] answers a DELETE of a tag.
#[derive(Debug, Clone, Copy)]
enum Untag {
    /// As distribution 3 does: the tag's directory goes from the
    /// registry's storage, the manifest and its other tags stay; 202.
    Remove,
    /// 202, and the tag stays.
    Pretend,
    /// 404 MANIFEST_UNKNOWN (a registry that looked the tag up as a
    /// digest), and the tag stays.
    Unknown,
}

/// The real registry behind a front that answers a DELETE of a manifest
/// reference as `how` says, and answers every DELETE by digest with 500
/// (hoist must never send one; the test checks what the front saw).
fn untagging_front(registry: &TestRegistry, how: Untag) -> Front {
    let repositories = registry.storage().join("docker/registry/v2/repositories");
    Front::start(
        Some(registry.addr().parse().unwrap()),
        Arc::new(move |request: &Seen| {
            if request.method != "DELETE" {
                return Answer::Forward;
            }
            let Some((repo, reference)) = request
                .path
                .strip_prefix("/v2/")
                .and_then(|rest| rest.split_once("/manifests/"))
            else {
                return Answer::Forward;
            };
            if reference.starts_with("sha256:") {
                return Answer::Reply(500, vec![], b"a DELETE by digest".to_vec());
            }
            match how {
                Untag::Remove => {
                    let tag = repositories
                        .join(repo)
                        .join("_manifests/tags")
                        .join(reference);
                    std::fs::remove_dir_all(&tag).unwrap();
                    Answer::Reply(202, vec![], vec![])
                }
                Untag::Pretend => Answer::Reply(202, vec![], vec![]),
                Untag::Unknown => Answer::Reply(
                    404,
                    vec![("Content-Type".into(), "application/json".into())],
                    br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
                        .to_vec(),
                ),
            }
        }),
    )
}

#[test]
fn a_registry_that_removes_a_tag_alone_keeps_the_other_tags() {
    let Some(registry) = TestRegistry::start(RegistryOptions::default()) else {
        return;
    };
    let seeded = seed(
        &registry,
        "team/app",
        Some("staging-0123456"),
        Some(REVISION),
        OCI_MANIFEST,
    );
    for tag in ["latest", "latest-previous"] {
        upload_manifest(&registry, "team/app", tag, OCI_MANIFEST, &seeded.bytes);
    }

    let front = untagging_front(&registry, Untag::Remove);
    let client = connect(&front.addr.to_string(), &[]);
    block_on(async {
        assert!(client.delete_tag("team/app", "latest").await.unwrap());
        assert_eq!(client.manifest("team/app", "latest").await.unwrap(), None);
        let staging = client
            .manifest("team/app", "staging-0123456")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(staging.digest, seeded.digest);
        assert_eq!(
            names(&client.tags("team/app").await.unwrap()),
            ["latest-previous", "staging-0123456"]
        );
        // Gone already: true, without another DELETE.
        assert!(client.delete_tag("team/app", "latest").await.unwrap());
    });
    assert_eq!(
        registry.manifest_digest("team/app", "staging-0123456"),
        Some(seeded.digest.clone())
    );
    assert_eq!(
        registry.manifest_digest("team/app", &seeded.digest),
        Some(seeded.digest.clone())
    );
    let deletes: Vec<String> = front
        .seen()
        .iter()
        .filter(|s| s.method == "DELETE")
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(deletes, ["/v2/team/app/manifests/latest"]);

    // A registry that says it removed the tag, or that the "manifest" is
    // unknown, while the tag still resolves, cannot remove a tag alone.
    for how in [Untag::Pretend, Untag::Unknown] {
        let front = untagging_front(&registry, how);
        let client = connect(&front.addr.to_string(), &[]);
        let removed = block_on(client.delete_tag("team/app", "latest-previous")).unwrap();
        assert!(!removed, "{how:?}");
        assert_eq!(
            registry.manifest_digest("team/app", "latest-previous"),
            Some(seeded.digest.clone()),
            "{how:?}"
        );
        let deletes: Vec<String> = front
            .seen()
            .iter()
            .filter(|s| s.method == "DELETE")
            .map(|s| s.path.clone())
            .collect();
        assert_eq!(
            deletes,
            ["/v2/team/app/manifests/latest-previous"],
            "{how:?}"
        );
    }
}
