//! `hoist::canary::wait` against real HTTP canaries on loopback: small
//! HTTP/1.1 responders on a tokio listener, each answering from a script
//! indexed by how many polls it has seen.

use hoist::canary::{Canary, State, wait};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const OLD: &str = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d";
const NEW: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432";
const INTERVAL: Duration = Duration::from_millis(50);

/// What a canary answers to its nth poll (from 0): status and body.
type Script = Arc<dyn Fn(usize) -> (u16, String) + Send + Sync>;

/// A canary on loopback that counts its polls.
struct Server {
    url: String,
    polls: Arc<AtomicUsize>,
}

impl Server {
    async fn start(script: Script) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        Server::serve(listener, address, script)
    }

    fn serve(listener: TcpListener, address: SocketAddr, script: Script) -> Server {
        let polls = Arc::new(AtomicUsize::new(0));
        let counter = polls.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let script = script.clone();
                let counter = counter.clone();
                tokio::spawn(answer(stream, script, counter));
            }
        });
        Server {
            url: format!("http://{address}/version"),
            polls,
        }
    }

    fn polls(&self) -> usize {
        self.polls.load(Ordering::SeqCst)
    }
}

/// Reads one request head and answers it; `Connection: close` keeps one
/// poll per connection, so a count of requests is a count of polls.
async fn answer(mut stream: TcpStream, script: Script, polls: Arc<AtomicUsize>) {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    assert!(text.starts_with("GET /version HTTP/1.1\r\n"), "{text}");
    let n = polls.fetch_add(1, Ordering::SeqCst);
    let (status, body) = script(n);
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Location: http://127.0.0.1:1/elsewhere\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn reports(sha: &str) -> (u16, String) {
    (200, format!(r#"{{"status":"ok","git_sha":"{sha}"}}"#))
}

#[tokio::test]
async fn a_canary_that_rolls_out_the_new_sha_becomes_ready() {
    let server = Server::start(Arc::new(|n| reports(if n < 3 { OLD } else { NEW }))).await;
    let mut seen: Vec<Canary> = Vec::new();
    let mut on_change = |c: &Canary| seen.push(c.clone());
    let canaries = wait(
        std::slice::from_ref(&server.url),
        &NEW[..7],
        Duration::from_secs(30),
        INTERVAL,
        &mut on_change,
    )
    .await
    .unwrap();

    assert_eq!(
        canaries,
        vec![Canary {
            url: server.url.clone(),
            state: State::Ready { sha: NEW.into() }
        }]
    );
    // Three polls of the old sha, one change.
    assert_eq!(
        seen.iter().map(|c| c.state.clone()).collect::<Vec<_>>(),
        vec![
            State::Reports {
                sha: OLD.into(),
                want: NEW[..7].into()
            },
            State::Ready { sha: NEW.into() },
        ]
    );
    assert_eq!(
        seen[0].to_string(),
        format!("{}: reports 1a2b3c4 (waiting for 9f8e7d6)", server.url)
    );
    assert!(
        (4..=5).contains(&server.polls()),
        "{} polls",
        server.polls()
    );
}

#[tokio::test]
async fn a_canary_that_never_switches_fails_after_the_timeout() {
    let ready = Server::start(Arc::new(|_| reports(NEW))).await;
    let stuck = Server::start(Arc::new(|_| reports(OLD))).await;
    let urls = vec![ready.url.clone(), stuck.url.clone()];
    let timeout = Duration::from_millis(600);
    let mut seen: Vec<Canary> = Vec::new();
    let mut on_change = |c: &Canary| seen.push(c.clone());
    let started = Instant::now();
    let error = wait(&urls, NEW, timeout, INTERVAL, &mut on_change)
        .await
        .unwrap_err();
    let elapsed = started.elapsed();

    assert!(elapsed >= timeout, "returned after {elapsed:?}");
    assert_eq!(error.exit_code(), 1);
    let text = error.to_string();
    assert!(
        text.starts_with(&format!(
            "error: canary {} does not report 9f8e7d6 after 600ms",
            stuck.url
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "caused by: {}: reports 1a2b3c4 (waiting for 9f8e7d6)",
            stuck.url
        )),
        "{text}"
    );
    assert!(!text.contains(&ready.url), "{text}");
    assert!(
        text.contains("hint: ") && text.contains("--timeout"),
        "{text}"
    );
    // Both were polled all along, and each change was reported once.
    assert!(ready.polls() >= 3 && stuck.polls() >= 3);
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[tokio::test]
async fn a_canary_that_is_down_then_comes_up() {
    // A port that nothing listens on, until the canary starts on it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{address}/version");

    let (wait_result, server) = tokio::join!(
        async {
            let mut seen: Vec<Canary> = Vec::new();
            let mut on_change = |c: &Canary| seen.push(c.clone());
            let result = wait(
                std::slice::from_ref(&url),
                NEW,
                Duration::from_secs(30),
                INTERVAL,
                &mut on_change,
            )
            .await;
            (result, seen)
        },
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let listener = TcpListener::bind(address).await.unwrap();
            Server::serve(listener, address, Arc::new(|_| reports(NEW)))
        }
    );
    let (result, seen) = wait_result;
    assert!(result.unwrap().iter().all(|c| c.state.is_ready()));
    let states: Vec<State> = seen.iter().map(|c| c.state.clone()).collect();
    assert_eq!(
        states,
        vec![
            State::Unreachable {
                why: "connection refused".into()
            },
            State::Ready { sha: NEW.into() },
        ]
    );
    assert_eq!(
        seen[0].to_string(),
        format!("{url}: unreachable (connection refused)")
    );
    assert!(
        (1..=2).contains(&server.polls()),
        "{} polls",
        server.polls()
    );
}

#[tokio::test]
async fn every_answer_short_of_the_sha_is_a_state_not_an_error() {
    let server = Server::start(Arc::new(|n| match n {
        0 => (503, "{}".into()),
        1 => (301, String::new()),
        2 => (200, "<html>ok</html>".into()),
        3 => (200, r#"{"status":"ok"}"#.into()),
        4 => (
            200,
            format!(r#"{{"build":{{"revision":"{}"}}}}"#, NEW.to_uppercase()),
        ),
        _ => (500, "{}".into()),
    }))
    .await;
    let mut seen: Vec<String> = Vec::new();
    let mut on_change = |c: &Canary| seen.push(c.state.to_string());
    let canaries = wait(
        std::slice::from_ref(&server.url),
        NEW,
        Duration::from_secs(30),
        INTERVAL,
        &mut on_change,
    )
    .await
    .unwrap();
    assert!(canaries[0].state.is_ready());
    assert_eq!(
        seen,
        [
            "answers HTTP 503 Service Unavailable",
            "answers HTTP 301 Moved Permanently (redirects are not followed; give the final URL)",
            "answers something that is not JSON (expected value at line 1 column 1)",
            "answers JSON without a string sha, git_sha or revision",
            "ready, reports 9F8E7D6",
        ]
    );
}

#[tokio::test]
async fn bad_input_is_exit_code_2_before_any_poll() {
    let server = Server::start(Arc::new(|_| reports(NEW))).await;
    let mut on_change = |c: &Canary| panic!("no poll expected, got {c}");
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (
            vec![server.url.clone(), "ftp://canary/v".into()],
            NEW,
            "ftp://canary/v",
        ),
        (vec!["canary-1/health".into()], NEW, "canary-1/health"),
        (vec!["http:///v".into()], NEW, "http:///v"),
        (
            vec!["https://deploy:hunter2@canary/v".into()],
            NEW,
            "https://***@canary/v",
        ),
        (vec![server.url.clone()], "9f8e7d", "9f8e7d"),
        (vec![server.url.clone()], "main", "main"),
    ];
    for (urls, sha, named) in cases {
        let error = wait(&urls, sha, Duration::from_secs(5), INTERVAL, &mut on_change)
            .await
            .unwrap_err();
        assert_eq!(error.exit_code(), 2, "{error}");
        let text = error.to_string();
        assert!(text.contains(named), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        if sha == NEW {
            assert!(text.contains("--wait-for"), "{text}");
        }
    }
    assert_eq!(server.polls(), 0);
}

#[tokio::test]
async fn no_canaries_is_nothing_to_wait_for() {
    let mut on_change = |c: &Canary| panic!("no poll expected, got {c}");
    let canaries = wait(&[], NEW, Duration::ZERO, INTERVAL, &mut on_change)
        .await
        .unwrap();
    assert!(canaries.is_empty());
}
