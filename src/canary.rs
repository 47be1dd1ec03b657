//! The canary gate of `hoist promote --wait-for URL`: poll each canary
//! tenant until every one reports the commit about to be promoted, or give
//! up when the timeout passes, so that a promotion never runs ahead of a
//! canary rollout.
//!
//! A canary answers JSON with its commit under `sha`, `git_sha` or
//! `revision` ([`reported_sha`]); it is ready when that value and the
//! promoted sha agree as far as the shorter goes ([`same_sha`]).
//!
//! Why it is written this way:
//! - During a rollout a canary restarts, answers 502 from its ingress, or
//!   serves the old pod: all of that is a [`State`] to report and poll
//!   again, never an error. Only the timeout fails.
//! - Each canary is polled in its own task, so one that hangs (up to
//!   [`REQUEST_TIMEOUT`]) does not slow the others' polls.
//! - Plain HTTP is allowed for any host: canaries are often internal
//!   services without TLS. Redirects are not followed; a 3xx is a state
//!   whose text asks for the final URL.
//! - A URL with `user:password@` is refused (exit 2), and no message shows
//!   what stood before the `@`: the URL is printed on every state change,
//!   and CI logs are no place for a password.

use crate::error::{Error, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{ACCEPT, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long one poll (connect, answer and body) may take before the canary
/// counts as unreachable for that round.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A health or version document is small; anything bigger is not one.
const MAX_BODY: usize = 1 << 20;
/// An interval of zero would hammer the canaries in a busy loop.
const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// The keys that hold the commit, in order of preference.
const SHA_KEYS: [&str; 3] = ["sha", "git_sha", "revision"];
/// Objects one level down that commonly group build facts
/// (`{"build": {"sha": …}}`), searched after the top level.
const SHA_CONTAINERS: [&str; 3] = ["build", "version", "git"];

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// What a canary last answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Not polled to the end yet.
    Waiting,
    /// No HTTP answer: refused, reset, DNS, TLS, or no answer in time.
    Unreachable { why: String },
    /// An answer other than 2xx (a redirect included).
    HttpStatus { code: u16 },
    /// A 2xx whose body is not JSON (or too big to be the document).
    NotJson { why: String },
    /// JSON without a string `sha`, `git_sha` or `revision`.
    NoSha,
    /// Another commit than the one awaited.
    Reports { sha: String, want: String },
    /// The awaited commit.
    Ready { sha: String },
}

impl State {
    pub fn is_ready(&self) -> bool {
        matches!(self, State::Ready { .. })
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Waiting => f.write_str("no answer yet"),
            State::Unreachable { why } => write!(f, "unreachable ({why})"),
            State::HttpStatus { code } => {
                write!(f, "answers HTTP {code}")?;
                let status = StatusCode::from_u16(*code).ok();
                if let Some(reason) = status.and_then(|s| s.canonical_reason()) {
                    write!(f, " {reason}")?;
                }
                if status.is_some_and(|s| s.is_redirection()) {
                    f.write_str(" (redirects are not followed; give the final URL)")?;
                }
                Ok(())
            }
            State::NotJson { why } => write!(f, "answers something that is not JSON ({why})"),
            State::NoSha => f.write_str("answers JSON without a string sha, git_sha or revision"),
            State::Reports { sha, want } => {
                let (sha, want) = abbreviate_pair(sha, want);
                write!(f, "reports {sha} (waiting for {want})")
            }
            State::Ready { sha } => write!(f, "ready, reports {}", abbreviate(sha, 7)),
        }
    }
}

/// One canary tenant and what it last answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Canary {
    pub url: String,
    #[serde(flatten)]
    pub state: State,
}

impl fmt::Display for Canary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.url, self.state)
    }
}

/// The commit a canary's JSON reports: the first non-empty string among
/// `sha`, `git_sha` and `revision` at the top level, else the same keys
/// inside a top-level `build`, `version` or `git` object.
pub fn reported_sha(body: &[u8]) -> Option<String> {
    sha_in(&serde_json::from_slice(body).ok()?)
}

fn sha_in(json: &serde_json::Value) -> Option<String> {
    let object = json.as_object()?;
    let first_string = |object: &serde_json::Map<String, serde_json::Value>| {
        SHA_KEYS.iter().find_map(|key| {
            let value = object.get(*key)?.as_str()?.trim();
            (!value.is_empty()).then(|| value.to_string())
        })
    };
    first_string(object).or_else(|| {
        SHA_CONTAINERS
            .iter()
            .filter_map(|key| object.get(*key)?.as_object())
            .find_map(first_string)
    })
}

/// Whether a reported commit is `sha`: both hex, one a prefix of the other
/// ignoring case, and the shorter at least 7 digits (fewer could name
/// another commit).
pub fn same_sha(reported: &str, sha: &str) -> bool {
    let (a, b) = (reported.trim(), sha.trim());
    let shorter = a.len().min(b.len());
    is_hex(a) && is_hex(b) && shorter >= 7 && a[..shorter].eq_ignore_ascii_case(&b[..shorter])
}

/// Polls every URL until all report `sha`, or fails when `timeout` passes.
///
/// Each canary is polled every `interval` (from the start of one poll to
/// the start of the next) and `on_change` is called with it whenever its
/// state changes, the first answer included. Returns the canaries, all
/// ready, in the order given (a URL given twice is polled once).
///
/// Input errors (exit 2): a URL that is not `http(s)://host…`, one with a
/// user or password, a `sha` that is not 7 to 64 hex digits. A timeout is
/// a failure (exit 1) naming every canary not ready and its last state.
pub async fn wait(
    urls: &[String],
    sha: &str,
    timeout: Duration,
    interval: Duration,
    on_change: &mut (dyn FnMut(&Canary) + Send),
) -> Result<Vec<Canary>> {
    // `sleep` saturates where `Instant + Duration` would panic on a huge
    // --timeout or interval.
    let expiry = tokio::time::sleep(timeout);
    tokio::pin!(expiry);
    let sha = sha.trim();
    if !is_hex(sha) || !(7..=64).contains(&sha.len()) {
        return Err(
            Error::input(format!("'{}' is not a commit sha to wait for", shown(sha)))
                .hint("give the commit as 7 to 40 hex digits (64 in a SHA-256 repository)"),
        );
    }
    let mut targets: Vec<(String, Uri)> = Vec::new();
    for url in urls {
        let uri = parse_url(url)?;
        if !targets.iter().any(|(seen, _)| seen == url) {
            targets.push((url.clone(), uri));
        }
    }
    let mut canaries: Vec<Canary> = targets
        .iter()
        .map(|(url, _)| Canary {
            url: url.clone(),
            state: State::Waiting,
        })
        .collect();
    if canaries.is_empty() {
        return Ok(canaries);
    }
    let needs_tls = targets
        .iter()
        .any(|(_, uri)| uri.scheme_str() == Some("https"));
    let client = http_client(needs_tls)?;
    let interval = interval.max(MIN_INTERVAL);

    let (sender, mut answers) = mpsc::unbounded_channel::<(usize, State)>();
    // Dropping the set aborts the polls, on success, timeout or cancel.
    let mut polls = JoinSet::new();
    for (index, (_, uri)) in targets.into_iter().enumerate() {
        let client = client.clone();
        let sender = sender.clone();
        let want = sha.to_string();
        polls.spawn(async move {
            loop {
                let started = Instant::now();
                let state = poll(&client, &uri, &want).await;
                if sender.send((index, state)).is_err() {
                    return;
                }
                tokio::time::sleep(interval.saturating_sub(started.elapsed())).await;
            }
        });
    }
    drop(sender);

    loop {
        tokio::select! {
            biased;
            answer = answers.recv() => {
                let Some((index, state)) = answer else {
                    return Err(Error::failed("the canary polls stopped before the canaries were ready")
                        .hint("this is a bug in hoist; run it again"));
                };
                let Some(canary) = canaries.get_mut(index) else { continue };
                if canary.state != state {
                    canary.state = state;
                    on_change(canary);
                }
                if canaries.iter().all(|c| c.state.is_ready()) {
                    return Ok(canaries);
                }
            }
            _ = &mut expiry => {
                return Err(timed_out(&canaries, sha, timeout));
            }
        }
    }
}

/// The failure when the timeout passes: which canaries, and why not.
fn timed_out(canaries: &[Canary], sha: &str, timeout: Duration) -> Error {
    let late: Vec<&Canary> = canaries.iter().filter(|c| !c.state.is_ready()).collect();
    let sha7 = abbreviate(sha, 7);
    let after = human_duration(timeout);
    let message = match late.as_slice() {
        [one] => format!("canary {} does not report {sha7} after {after}", one.url),
        _ => format!(
            "{} of {} canaries do not report {sha7} after {after}: {}",
            late.len(),
            canaries.len(),
            late.iter()
                .map(|c| c.url.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let hint = if late.iter().all(|c| c.state == State::NoSha) {
        "make the canary answer its commit as a JSON string under sha, git_sha or revision"
            .to_string()
    } else {
        format!(
            "check that the canary deployment rolled out {sha7} and is healthy, \
             or raise --timeout if the rollout takes longer than {after}"
        )
    };
    late.iter()
        .fold(Error::failed(message), |error, canary| {
            error.caused_by(canary)
        })
        .hint(hint)
}

/// One poll of one canary, folded into its state.
async fn poll(client: &HttpClient, uri: &Uri, want: &str) -> State {
    let request = Request::get(uri.clone())
        .header(ACCEPT, "application/json")
        .header(USER_AGENT, concat!("hoist/", env!("CARGO_PKG_VERSION")))
        .body(Empty::<Bytes>::new());
    let request = match request {
        Ok(request) => request,
        Err(e) => return State::Unreachable { why: e.to_string() },
    };
    let exchange = async {
        let response = client.request(request).await.map_err(|e| why(&e))?;
        let (parts, incoming) = response.into_parts();
        if !parts.status.is_success() {
            return Ok(State::HttpStatus {
                code: parts.status.as_u16(),
            });
        }
        let body = match Limited::new(incoming, MAX_BODY).collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Ok(State::NotJson {
                    why: format!("the body is over {} MiB", MAX_BODY >> 20),
                });
            }
            Err(e) => return Err(why(&*e)),
        };
        Ok(judge(&body, want))
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok(state)) => state,
        Ok(Err(why)) => State::Unreachable { why },
        Err(_) => State::Unreachable {
            why: format!("no answer within {}", human_duration(REQUEST_TIMEOUT)),
        },
    }
}

/// The state a 2xx body puts its canary in.
fn judge(body: &[u8], want: &str) -> State {
    let json = match serde_json::from_slice(body) {
        Ok(json) => json,
        Err(e) => return State::NotJson { why: e.to_string() },
    };
    match sha_in(&json) {
        None => State::NoSha,
        Some(sha) if same_sha(&sha, want) => State::Ready { sha },
        Some(sha) => State::Reports {
            sha,
            want: want.to_string(),
        },
    }
}

/// Checks every `--wait-for` URL as [`wait`] will read it, so that a bad
/// one is an input error before the registry is asked anything.
pub fn check_urls(urls: &[String]) -> Result<()> {
    urls.iter().try_for_each(|url| parse_url(url).map(drop))
}

/// `--wait-for URL`, checked: http or https, a host, no userinfo.
fn parse_url(url: &str) -> Result<Uri> {
    let redacted = redact(url);
    if redacted != url {
        return Err(Error::input(format!(
            "--wait-for {redacted}: the URL carries a user or password"
        ))
        .hint("canaries are polled without credentials; give the URL without user:password@"));
    }
    let bad = |why: &str| {
        Error::input(format!(
            "--wait-for '{}' is not an http or https URL",
            shown(url)
        ))
        .caused_by(why)
        .hint("give the canary's full URL, like https://canary-1.internal/version")
    };
    let uri: Uri = url
        .trim()
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(bad(&format!("the scheme is {other}"))),
        None => return Err(bad("it has no scheme")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    Ok(uri)
}

/// The URL with whatever stands before an `@` in its authority replaced by
/// `***`: the user, the password, or a token used as either.
fn redact(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(at) => url.split_at(at + 3),
        None => ("", url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    match authority.rfind('@') {
        Some(at) => format!("{scheme}***@{}{path}", &authority[at + 1..]),
        None => url.to_string(),
    }
}

/// HTTPS with the system's roots when some canary needs them, plain HTTP
/// for the rest; HTTP/1 (a health endpoint needs no more).
fn http_client(needs_tls: bool) -> Result<HttpClient> {
    let connector = crate::https::connector(needs_tls.then_some("the canaries"), REQUEST_TIMEOUT)?;
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// Why an exchange failed, in a few words: the innermost cause is the
/// telling one (`client error (Connect)` says nothing).
fn why(error: &(dyn StdError + 'static)) -> String {
    use std::io::ErrorKind::*;
    let mut current = error;
    loop {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            match io.kind() {
                ConnectionRefused => return "connection refused".into(),
                ConnectionReset => return "connection reset".into(),
                TimedOut => return "connection timed out".into(),
                _ => {}
            }
            // An `io::Error` wrapping another error hides it from `source()`.
            if let Some(inner) = io.get_ref() {
                current = inner;
                continue;
            }
        }
        match current.source() {
            Some(source) => current = source,
            None => return current.to_string(),
        }
    }
}

fn is_hex(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A reported value fit for one log line: control characters escaped (a
/// canary must not be able to start a line of its own in a CI log), and
/// cut at 40 characters.
fn shown(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(40)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().count() > 40 {
        out.push('…');
    }
    out
}

/// A hex sha cut to `len`; anything else as [`shown`].
fn abbreviate(sha: &str, len: usize) -> String {
    if is_hex(sha) {
        sha[..len.min(sha.len())].to_string()
    } else {
        shown(sha)
    }
}

/// Two shas cut to the same length, at least 7 and long enough to tell
/// them apart.
fn abbreviate_pair(a: &str, b: &str) -> (String, String) {
    if !(is_hex(a) && is_hex(b)) {
        return (abbreviate(a, 7), abbreviate(b, 7));
    }
    let shorter = a.len().min(b.len());
    let mut len = 7;
    while len < shorter && a[..len].eq_ignore_ascii_case(&b[..len]) {
        len += 1;
    }
    (abbreviate(a, len), abbreviate(b, len))
}

/// A duration the way `--timeout` takes it: `600ms`, `45s`, `10m`, `1h`.
fn human_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if !millis.is_multiple_of(1000) || millis == 0 {
        return format!("{millis}ms");
    }
    let secs = millis / 1000;
    if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432";

    #[test]
    fn reported_sha_reads_the_keys_in_order() {
        assert_eq!(
            reported_sha(br#"{"sha":"abc1234"}"#).as_deref(),
            Some("abc1234")
        );
        assert_eq!(
            reported_sha(br#"{"revision":"r","git_sha":"g","sha":"s"}"#).as_deref(),
            Some("s")
        );
        assert_eq!(
            reported_sha(br#"{"revision":"r","git_sha":"g"}"#).as_deref(),
            Some("g")
        );
        assert_eq!(
            reported_sha(br#"{"revision":" r \n"}"#).as_deref(),
            Some("r")
        );
        assert_eq!(
            reported_sha(br#"{"status":"ok","build":{"git_sha":"abc1234"}}"#).as_deref(),
            Some("abc1234")
        );
        // The top level wins over a container.
        assert_eq!(
            reported_sha(br#"{"build":{"sha":"inner"},"sha":"outer"}"#).as_deref(),
            Some("outer")
        );
    }

    #[test]
    fn reported_sha_skips_what_is_not_a_sha_string() {
        assert_eq!(reported_sha(br#"{"sha":1234567}"#), None);
        assert_eq!(
            reported_sha(br#"{"sha":null,"revision":"abc1234"}"#).as_deref(),
            Some("abc1234")
        );
        assert_eq!(
            reported_sha(br#"{"sha":"","git_sha":"abc1234"}"#).as_deref(),
            Some("abc1234")
        );
        assert_eq!(reported_sha(br#"{"sha":["abc1234"]}"#), None);
        assert_eq!(reported_sha(br#"{"version":"1.2.3"}"#), None);
        assert_eq!(reported_sha(br#"{"other":{"sha":"abc1234"}}"#), None);
        assert_eq!(
            reported_sha(br#"{"build":{"meta":{"sha":"abc1234"}}}"#),
            None
        );
        assert_eq!(reported_sha(br#"["abc1234"]"#), None);
        assert_eq!(reported_sha(br#""abc1234""#), None);
        assert_eq!(reported_sha(b"{}"), None);
    }

    #[test]
    fn reported_sha_of_invalid_json_is_none() {
        assert_eq!(reported_sha(b""), None);
        assert_eq!(reported_sha(b"sha: abc1234"), None);
        assert_eq!(reported_sha(br#"{"sha":"abc1234""#), None);
        assert_eq!(reported_sha(b"<html>ok</html>"), None);
        assert_eq!(reported_sha(&[0xff, 0xfe, b'{']), None);
    }

    #[test]
    fn same_sha_matches_prefixes_either_way() {
        assert!(same_sha(FULL, FULL));
        assert!(same_sha("9f8e7d6", FULL));
        assert!(same_sha(FULL, "9f8e7d6"));
        assert!(same_sha("9f8e7d6c5b4a", "9f8e7d6c5"));
        assert!(same_sha(&FULL.to_uppercase(), FULL));
        assert!(same_sha("9F8E7D6", FULL));
        assert!(same_sha(" 9f8e7d6\n", FULL));
    }

    #[test]
    fn same_sha_refuses_others_and_short_prefixes() {
        assert!(!same_sha("1a2b3c4", FULL));
        assert!(!same_sha("9f8e7d6c5b4a39281706f5e4d3c2b1a098765431", FULL));
        assert!(!same_sha("9f8e7d", FULL));
        assert!(!same_sha(FULL, "9f8e7d"));
        assert!(!same_sha("9", "9"));
        assert!(!same_sha("", FULL));
        assert!(!same_sha("9f8e7d6-dirty", FULL));
        assert!(!same_sha("g9f8e7d6", "9f8e7d6"));
        assert!(!same_sha("v1.2.3", "v1.2.3"));
        assert!(!same_sha("9f8e 7d6", FULL));
    }

    #[test]
    fn states_read_as_one_line() {
        let line = |state: State| {
            Canary {
                url: "https://canary-1/health".into(),
                state,
            }
            .to_string()
        };
        assert_eq!(
            line(State::Reports {
                sha: "1a2b3c4d5e".into(),
                want: FULL.into()
            }),
            "https://canary-1/health: reports 1a2b3c4 (waiting for 9f8e7d6)"
        );
        assert_eq!(
            line(State::Reports {
                sha: "9f8e7d6aaaa".into(),
                want: FULL.into()
            }),
            "https://canary-1/health: reports 9f8e7d6a (waiting for 9f8e7d6c)"
        );
        assert_eq!(
            line(State::Reports {
                sha: "v1\n::error::x".into(),
                want: FULL.into()
            }),
            "https://canary-1/health: reports v1\\n::error::x (waiting for 9f8e7d6)"
        );
        assert_eq!(
            line(State::Ready { sha: FULL.into() }),
            "https://canary-1/health: ready, reports 9f8e7d6"
        );
        assert_eq!(
            line(State::Waiting),
            "https://canary-1/health: no answer yet"
        );
        assert_eq!(
            line(State::Unreachable {
                why: "connection refused".into()
            }),
            "https://canary-1/health: unreachable (connection refused)"
        );
        assert_eq!(
            line(State::HttpStatus { code: 503 }),
            "https://canary-1/health: answers HTTP 503 Service Unavailable"
        );
        assert_eq!(
            line(State::HttpStatus { code: 301 }),
            "https://canary-1/health: answers HTTP 301 Moved Permanently \
             (redirects are not followed; give the final URL)"
        );
        assert_eq!(
            line(State::HttpStatus { code: 599 }),
            "https://canary-1/health: answers HTTP 599"
        );
        assert_eq!(
            line(State::NoSha),
            "https://canary-1/health: answers JSON without a string sha, git_sha or revision"
        );
    }

    #[test]
    fn canaries_serialize_flat() {
        let canary = Canary {
            url: "http://c/v".into(),
            state: State::Reports {
                sha: "1a2b3c4".into(),
                want: "9f8e7d6".into(),
            },
        };
        assert_eq!(
            serde_json::to_value(&canary).unwrap(),
            serde_json::json!({"url": "http://c/v", "state": "reports", "sha": "1a2b3c4", "want": "9f8e7d6"})
        );
        let canary = Canary {
            url: "http://c/v".into(),
            state: State::HttpStatus { code: 502 },
        };
        assert_eq!(
            serde_json::to_value(&canary).unwrap(),
            serde_json::json!({"url": "http://c/v", "state": "http_status", "code": 502})
        );
    }

    #[test]
    fn judge_folds_a_body_into_a_state() {
        assert_eq!(
            judge(br#"{"sha":"9F8E7D6"}"#, FULL),
            State::Ready {
                sha: "9F8E7D6".into()
            }
        );
        assert_eq!(
            judge(br#"{"sha":"1a2b3c4"}"#, FULL),
            State::Reports {
                sha: "1a2b3c4".into(),
                want: FULL.into()
            }
        );
        assert_eq!(judge(br#"{"ok":true}"#, FULL), State::NoSha);
        assert!(matches!(judge(b"OK", FULL), State::NotJson { .. }));
    }

    #[test]
    fn urls_are_checked_and_userinfo_never_shown() {
        assert!(parse_url("http://127.0.0.1:8080/health").is_ok());
        assert!(parse_url("https://canary-1.internal/version?tenant=a").is_ok());
        assert!(parse_url("http://[::1]:9/v").is_ok());
        for bad in [
            "ftp://host/v",
            "host/v",
            "canary-1:8080/health",
            "",
            "http://",
            "http:///v",
            "https://exa mple/",
        ] {
            let error = parse_url(bad).expect_err(bad);
            assert_eq!(error.exit_code(), 2, "{bad}");
            assert!(error.to_string().contains("--wait-for"), "{error}");
        }
        for secret in [
            "https://user:hunter2@canary/v",
            "https://hunter2@canary/v",
            "http://u:hunter2@127.0.0.1:1/v?x=1",
            "u:hunter2@canary/v",
        ] {
            let error = parse_url(secret).expect_err(secret);
            assert_eq!(error.exit_code(), 2);
            let text = error.to_string();
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("***@"), "{text}");
        }
        // An `@` in the path or query is not userinfo.
        assert_eq!(
            redact("https://canary/v?owner=a@b"),
            "https://canary/v?owner=a@b"
        );
        assert_eq!(redact("https://canary/@me"), "https://canary/@me");
        assert_eq!(redact("https://a:b@c@canary/v"), "https://***@canary/v");
    }

    #[test]
    fn durations_read_like_the_flag() {
        assert_eq!(human_duration(Duration::from_millis(600)), "600ms");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(human_duration(Duration::from_secs(45)), "45s");
        assert_eq!(human_duration(Duration::from_secs(600)), "10m");
        assert_eq!(human_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(human_duration(Duration::ZERO), "0ms");
        for d in ["600ms", "45s", "10m", "2h", "0ms"] {
            let parsed = crate::config::parse_duration(d).unwrap();
            assert_eq!(human_duration(parsed), d);
        }
    }
}
