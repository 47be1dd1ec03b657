//! Git LFS: find the pointer files a tree was written with, and replace
//! them with their objects through the LFS batch API (git-lfs
//! `docs/api/batch.md`, `basic` transfer), so that no dependency ships
//! pointer text in place of its files.
//!
//! Why it is written this way:
//! - A pointer is recognised by its content (git-lfs `docs/spec.md`), not
//!   by `.gitattributes`: what matters is what would be shipped.
//! - The batch request carries the provider's token as Basic auth, as the
//!   git fetch does; a download `href` gets the `header`s the server gave
//!   it, and the token only when it is on the batch endpoint's own origin
//!   and the server gave no `Authorization` (a presigned URL on storage
//!   elsewhere never sees it).
//! - Every object is checked (size, sha256) before it replaces its pointer;
//!   URLs appear in messages without credentials or query (signatures).

use super::{Failure, Token, gitmodules::redact};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Pointer files are small (the spec: "less than 200 bytes"); anything
/// larger than this is a file, not a pointer.
pub const MAX_POINTER_SIZE: usize = 1024;
const VERSIONS: [&str; 2] = [
    "https://git-lfs.github.com/spec/v1",
    // What git-lfs wrote before its 1.0; it still reads it.
    "https://hawser.github.com/spec/v1",
];
const MEDIA_TYPE: &str = "application/vnd.git-lfs+json";
/// Objects per batch request (what git-lfs sends).
const BATCH_SIZE: usize = 100;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an answer, or the next piece of a download, may take.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest batch answer read: a hundred objects' actions fit easily.
const MAX_BATCH_ANSWER: usize = 8 << 20;

/// What a pointer file points at: a sha256 (64 lowercase hex) and a size
/// in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    pub oid: String,
    pub size: u64,
}

impl Pointer {
    /// Reads a file's content as a pointer (`version …`, then sorted
    /// `key value` lines with `oid sha256:<hex>` and `size <n>`, each ending
    /// in a newline); `None` when it is not one.
    pub fn parse(content: &[u8]) -> Option<Pointer> {
        if content.len() > MAX_POINTER_SIZE || !content.ends_with(b"\n") {
            return None;
        }
        let text = std::str::from_utf8(content).ok()?;
        let mut lines = text.strip_suffix('\n')?.split('\n');
        let version = lines.next()?.strip_prefix("version ")?;
        if !VERSIONS.contains(&version) {
            return None;
        }
        let (mut oid, mut size) = (None, None);
        let mut previous = "";
        for line in lines {
            let (key, value) = line.split_once(' ')?;
            let key_ok = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
            if !key_ok || key <= previous || value.is_empty() {
                return None;
            }
            previous = key;
            match key {
                "oid" => {
                    let hex = value.strip_prefix("sha256:")?;
                    let valid = hex.len() == 64
                        && hex
                            .chars()
                            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
                    oid = Some(hex.to_string()).filter(|_| valid);
                }
                "size" => size = value.parse::<u64>().ok(),
                _ => {}
            }
        }
        Some(Pointer {
            oid: oid?,
            size: size?,
        })
    }
}

/// A pointer file written into a tree, to be replaced by its object.
#[derive(Debug, Clone)]
pub struct File {
    /// Where it was written.
    pub path: PathBuf,
    /// Its path in the dependency, for messages.
    pub shown: String,
    pub pointer: Pointer,
}

/// The LFS server of a repository URL, as git-lfs finds it without
/// configuration: `<url>.git/info/lfs` (no second `.git`). Only http(s)
/// remotes have one.
pub fn endpoint(repo_url: &str) -> Option<String> {
    if !(repo_url.starts_with("https://") || repo_url.starts_with("http://")) {
        return None;
    }
    let url = repo_url.trim_end_matches('/');
    let git = if url.ends_with(".git") { "" } else { ".git" };
    Some(format!("{url}{git}/info/lfs"))
}

/// Replaces every pointer file in `files` with its object, fetched from the
/// LFS server of `repo_url` with `token`, downloading into `scratch` (a
/// directory on the same file system). `repo` names the repository in
/// messages.
pub(super) fn download(
    repo: &str,
    repo_url: &str,
    token: &Token,
    files: &[File],
    scratch: &Path,
) -> Result<(), Failure> {
    let Some(endpoint) = endpoint(repo_url) else {
        return Err(Failure::fatal(format!(
            "{repo} has Git LFS files ({}), and hoist fetches LFS objects only over http(s)",
            list(files)
        )));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::fatal(format!("cannot start the LFS client: {e}")))?;
    runtime.block_on(async {
        let client = Clients::default();
        // One download per object, however many files hold it.
        let mut by_oid: BTreeMap<&str, Vec<&File>> = BTreeMap::new();
        for file in files {
            by_oid.entry(&file.pointer.oid).or_default().push(file);
        }
        let unique: Vec<&Vec<&File>> = by_oid.values().collect();
        for chunk in unique.chunks(BATCH_SIZE) {
            let pointers: Vec<&Pointer> = chunk.iter().map(|files| &files[0].pointer).collect();
            let answer = batch(&client, repo, &endpoint, token, &pointers).await?;
            for holders in chunk {
                let pointer = &holders[0].pointer;
                let object = answer
                    .objects
                    .iter()
                    .find(|o| o.oid == pointer.oid)
                    .ok_or_else(|| {
                        Failure::fatal(format!(
                            "the LFS server of {repo} did not answer for {} (object {})",
                            holders[0].shown, pointer.oid
                        ))
                    })?;
                fetch_object(&client, repo, &endpoint, token, object, holders, scratch).await?;
            }
        }
        Ok(())
    })
}

/// Up to ten of the files' paths, and how many more there are.
pub fn list(files: &[File]) -> String {
    const SHOWN: usize = 10;
    let mut text: Vec<&str> = files.iter().take(SHOWN).map(|f| f.shown.as_str()).collect();
    let more = files.len().saturating_sub(SHOWN);
    let more = format!("and {more} more");
    if files.len() > SHOWN {
        text.push(&more);
    }
    text.join(", ")
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A plain-HTTP client, and one with the system's roots made only when some
/// URL is https (reading the roots is slow).
#[derive(Default)]
struct Clients {
    plain: std::sync::OnceLock<HttpClient>,
    tls: std::sync::OnceLock<HttpClient>,
}

impl Clients {
    fn for_url(&self, url: &str) -> Result<&HttpClient, Failure> {
        let tls = url.starts_with("https://");
        let cell = if tls { &self.tls } else { &self.plain };
        if let Some(client) = cell.get() {
            return Ok(client);
        }
        let connector = crate::https::connector(tls.then_some("the LFS server"), CONNECT_TIMEOUT)
            .map_err(|e| Failure::fatal(e.to_string()))?;
        Ok(cell.get_or_init(|| Client::builder(TokioExecutor::new()).build(connector)))
    }
}

#[derive(Debug, Deserialize)]
struct BatchAnswer {
    transfer: Option<String>,
    #[serde(default)]
    objects: Vec<ObjectAnswer>,
}

#[derive(Debug, Deserialize)]
struct ObjectAnswer {
    oid: String,
    actions: Option<Actions>,
    error: Option<ObjectError>,
}

#[derive(Debug, Deserialize)]
struct Actions {
    download: Option<Action>,
}

#[derive(Debug, Deserialize)]
struct Action {
    href: String,
    #[serde(default)]
    header: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct ObjectError {
    code: Option<i64>,
    message: Option<String>,
}

/// `{"message": …}` of an error answer.
#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    message: Option<String>,
}

fn basic(token: &crate::secret::Secret) -> String {
    let pair = format!("{}:{}", super::TOKEN_USER, token.expose());
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// Asks the batch API where the objects are.
async fn batch(
    clients: &Clients,
    repo: &str,
    endpoint: &str,
    token: &Token,
    pointers: &[&Pointer],
) -> Result<BatchAnswer, Failure> {
    let url = format!("{endpoint}/objects/batch");
    let body = serde_json::json!({
        "operation": "download",
        "transfers": ["basic"],
        "objects": pointers
            .iter()
            .map(|p| serde_json::json!({"oid": p.oid, "size": p.size}))
            .collect::<Vec<_>>(),
        "hash_algo": "sha256",
    });
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(&url)
        .header("Accept", MEDIA_TYPE)
        .header("Content-Type", MEDIA_TYPE);
    if let Some(secret) = token.secret() {
        request = request.header("Authorization", basic(secret));
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| Failure::fatal(format!("{repo}: cannot make the LFS request: {e}")))?;
    let what = format!("the LFS server of {repo} ({url})");
    let client = clients.for_url(&url)?;
    let response = tokio::time::timeout(IDLE_TIMEOUT, client.request(request))
        .await
        .map_err(|_| transient(format!("{what} did not answer")))?
        .map_err(|e| transient(format!("{what}: {}", why(&e))))?;
    let status = response.status();
    let body = tokio::time::timeout(
        IDLE_TIMEOUT,
        Limited::new(response.into_body(), MAX_BATCH_ANSWER).collect(),
    )
    .await
    .map_err(|_| transient(format!("{what} stopped answering")))?
    .map_err(|e| transient(format!("{what}: {e}")))?
    .to_bytes();
    if status != StatusCode::OK {
        let message = serde_json::from_slice::<ErrorAnswer>(&body)
            .ok()
            .and_then(|a| a.message)
            .map(|m| format!(": {}", shown(&m)))
            .unwrap_or_default();
        let text = match (status, token) {
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, Token::Set { .. }) => format!(
                "{what} rejected the token in {} ({status}{message})",
                token.variable().unwrap_or("the token variable")
            ),
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => {
                format!("{what} needs authentication, and {}", token.missing())
            }
            (StatusCode::NOT_FOUND, _) => format!("{what} has no LFS objects here (404{message})"),
            _ => format!("{what} answered {status}{message}"),
        };
        return Err(Failure {
            message: text,
            transient: is_transient_status(status),
        });
    }
    let answer: BatchAnswer = serde_json::from_slice(&body).map_err(|e| {
        Failure::fatal(format!(
            "{what} answered with an invalid batch response: {e}"
        ))
    })?;
    if let Some(transfer) = answer.transfer.as_deref().filter(|t| *t != "basic") {
        return Err(Failure::fatal(format!(
            "{what} chose the transfer '{}', and hoist speaks only 'basic'",
            shown(transfer)
        )));
    }
    Ok(answer)
}

/// Downloads one object, checks it, and writes it over every pointer file
/// that names it.
async fn fetch_object(
    clients: &Clients,
    repo: &str,
    endpoint: &str,
    token: &Token,
    object: &ObjectAnswer,
    holders: &[&File],
    scratch: &Path,
) -> Result<(), Failure> {
    let first = holders[0];
    let pointer = &first.pointer;
    let name = format!("the LFS object of {} in {repo}", first.shown);
    if let Some(error) = &object.error {
        return Err(Failure::fatal(format!(
            "{name}: the server answered {}: {}",
            error.code.map_or("an error".into(), |c| c.to_string()),
            shown(error.message.as_deref().unwrap_or("no message"))
        )));
    }
    let Some(action) = object.actions.as_ref().and_then(|a| a.download.as_ref()) else {
        return Err(Failure::fatal(format!(
            "{name}: the server gave no download action"
        )));
    };
    let href = &action.href;
    if !(href.starts_with("https://") || href.starts_with("http://")) {
        return Err(Failure::fatal(format!(
            "{name}: the server gave a download URL that is not http(s): {}",
            shown(&redact(href))
        )));
    }
    let mut request = Request::builder().method(Method::GET).uri(href.as_str());
    let mut authorized = false;
    for (header, value) in &action.header {
        authorized |= header.eq_ignore_ascii_case("authorization");
        request = request.header(header.as_str(), value.as_str());
    }
    if let (false, Some(secret)) = (authorized, token.secret())
        && origin(href) == origin(endpoint)
    {
        request = request.header("Authorization", basic(secret));
    }
    let shown_href = shown(&redact(href));
    let request = request.body(Full::new(Bytes::new())).map_err(|e| {
        Failure::fatal(format!(
            "{name}: the server gave an unusable download action ({shown_href}): {e}"
        ))
    })?;
    let client = clients.for_url(href)?;
    let response = tokio::time::timeout(IDLE_TIMEOUT, client.request(request))
        .await
        .map_err(|_| transient(format!("{name}: {shown_href} did not answer")))?
        .map_err(|e| transient(format!("{name}: {shown_href}: {}", why(&e))))?;
    let status = response.status();
    if status != StatusCode::OK {
        return Err(Failure {
            message: format!("{name}: {shown_href} answered {status}"),
            transient: is_transient_status(status),
        });
    }
    // Into a scratch file; it replaces the pointers only once its size and
    // sha256 are the pointer's.
    let temp = scratch.join(&pointer.oid);
    let io = |what: &str, e: std::io::Error| Failure::fatal(format!("{name}: {what}: {e}"));
    let mut out = std::fs::File::create(&temp).map_err(|e| io("cannot create it", e))?;
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    let mut body = response.into_body();
    loop {
        let frame = tokio::time::timeout(IDLE_TIMEOUT, body.frame())
            .await
            .map_err(|_| transient(format!("{name}: {shown_href} stopped sending")))?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| transient(format!("{name}: {shown_href}: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received += data.len() as u64;
        if received > pointer.size {
            return Err(Failure::fatal(format!(
                "{name}: {shown_href} sent more than the pointer's {} bytes",
                pointer.size
            )));
        }
        hasher.update(&data);
        std::io::Write::write_all(&mut out, &data).map_err(|e| io("cannot write it", e))?;
    }
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if received != pointer.size || digest != pointer.oid {
        return Err(Failure::fatal(format!(
            "{name}: {shown_href} sent {received} bytes with sha256 {digest}, not the pointer's {} bytes with sha256 {}",
            pointer.size, pointer.oid
        )));
    }
    drop(out);
    for holder in holders {
        // The pointer's mode (its executable bit) stays the file's.
        let mode = std::fs::metadata(&holder.path)
            .map_err(|e| io("cannot read its pointer file", e))?
            .permissions();
        std::fs::copy(&temp, &holder.path).map_err(|e| io("cannot write it", e))?;
        std::fs::set_permissions(&holder.path, mode).map_err(|e| io("cannot set its mode", e))?;
    }
    let _ = std::fs::remove_file(&temp);
    Ok(())
}

/// `scheme://authority` of a URL.
/// `scheme://host[:port]` of a URL; `None` for a URL without a scheme.
pub(super) fn origin(url: &str) -> Option<&str> {
    let at = url.find("://")? + 3;
    let end = url[at..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |e| at + e);
    Some(&url[..end])
}

fn transient(message: String) -> Failure {
    Failure {
        message,
        transient: true,
    }
}

fn is_transient_status(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// Text a server sent, fit for one line of a message: control characters
/// dropped, at most 200 characters.
fn shown(text: &str) -> String {
    let clean: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    clean
}

/// The innermost cause of a failed exchange (`client error (Connect)` says
/// nothing).
fn why(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OID: &str = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393";

    #[test]
    fn reads_pointers_and_nothing_else() {
        let text =
            format!("version https://git-lfs.github.com/spec/v1\noid sha256:{OID}\nsize 12345\n");
        assert_eq!(
            Pointer::parse(text.as_bytes()),
            Some(Pointer {
                oid: OID.into(),
                size: 12345
            })
        );
        let with_extension = format!(
            "version https://git-lfs.github.com/spec/v1\next-0-foo sha256:{OID}\noid sha256:{OID}\nsize 1\n"
        );
        assert!(Pointer::parse(with_extension.as_bytes()).is_some());
        for bad in [
            text.trim_end().to_string(),
            text.replace("size 12345", "size -1"),
            text.replace("sha256:4d", "sha256:4D"),
            text.replace("spec/v1", "spec/v2"),
            format!("version https://git-lfs.github.com/spec/v1\nsize 1\noid sha256:{OID}\n"),
            format!("{text}{}", "x".repeat(2000)),
            "hello\n".into(),
        ] {
            assert_eq!(Pointer::parse(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn finds_the_endpoint_as_git_lfs_does() {
        assert_eq!(
            endpoint("https://h/org/app.git").as_deref(),
            Some("https://h/org/app.git/info/lfs")
        );
        assert_eq!(
            endpoint("http://h/org/app/").as_deref(),
            Some("http://h/org/app.git/info/lfs")
        );
        assert_eq!(endpoint("file:///srv/org/app.git"), None);
        assert_eq!(
            origin("http://127.0.0.1:8/a/b?x"),
            Some("http://127.0.0.1:8")
        );
    }

    #[test]
    fn lists_at_most_ten_files() {
        let files: Vec<File> = (0..12)
            .map(|i| File {
                path: PathBuf::new(),
                shown: format!("f{i}"),
                pointer: Pointer {
                    oid: OID.into(),
                    size: 1,
                },
            })
            .collect();
        assert_eq!(list(&files[..2]), "f0, f1");
        assert!(list(&files).ends_with("f9, and 2 more"), "{}", list(&files));
    }
}
