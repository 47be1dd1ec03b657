//! A loopback HTTP proxy that forwards requests to a real server, except
//! those its rule picks: those get the rule's status (429, 500, …) instead,
//! or a cut connection (before forwarding, or after: an answer lost). It
//! records every request it saw (with its body's size), so tests can count
//! what a client asked for and how many bytes reached the server.
//!
//! One request per connection: forwarded requests carry `Connection: close`,
//! so each request of a keep-alive client arrives on a fresh connection and
//! is judged on its own.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// One request, as the rule sees it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Lower-cased header names.
    pub headers: Vec<(String, String)>,
    /// How many requests came before this one.
    pub index: usize,
    /// The body's length in bytes, as the server would receive it: the
    /// payload of a chunked body without its framing.
    pub body_len: usize,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the proxy does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    /// Answer with this status and a small JSON body, and close.
    Fail(u16),
    /// Close the connection without answering.
    Cut,
    /// Forward, then close without passing the answer on: the server did
    /// the work, the client never hears of it.
    ForwardButCut,
    /// Forward, then pass on the answer's head and the first half of its
    /// body, and close: a read cut half-way.
    ForwardHalf,
    /// Answer 307 to the same path on the server itself, as a registry on
    /// object storage redirects a blob to the storage's own host.
    RedirectToUpstream,
}

pub type Rule = Arc<dyn Fn(&Request) -> Verdict + Send + Sync>;

/// What the proxy saw: each request with what it did.
#[derive(Debug, Clone)]
pub struct Seen {
    pub request: Request,
    pub verdict: Verdict,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` on a free loopback port.
    pub fn start(upstream: SocketAddr, rule: Rule) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let arrived = Arc::new(AtomicUsize::new(0));
        let (seen_in, stop_in) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop_in.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (rule, seen, arrived) = (rule.clone(), seen_in.clone(), arrived.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, upstream, &rule, &seen, &arrived);
                });
            }
        });
        FaultProxy { addr, seen, stop }
    }

    /// A proxy that fails the first `count` requests with `status`.
    pub fn failing_first(upstream: SocketAddr, count: usize, status: u16) -> FaultProxy {
        FaultProxy::start(
            upstream,
            Arc::new(move |request: &Request| {
                if request.index < count {
                    Verdict::Fail(status)
                } else {
                    Verdict::Forward
                }
            }),
        )
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What it saw so far, in the order the requests arrived (a request
    /// whose rule is still deciding is not there yet).
    pub fn seen(&self) -> Vec<Seen> {
        let mut seen = self.seen.lock().unwrap().clone();
        seen.sort_by_key(|s| s.request.index);
        seen
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    rule: &Rule,
    seen: &Mutex<Vec<Seen>>,
    arrived: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(());
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    head.extend_from_slice(request_line.as_bytes());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line == "\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            if name == "connection" {
                continue;
            }
            headers.push((name, value.trim().to_string()));
        }
        head.extend_from_slice(line.as_bytes());
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    let (body, body_len) = read_body(&mut reader, &headers)?;

    let request_path = path.clone();
    let request = Request {
        method,
        path,
        headers,
        index: arrived.fetch_add(1, Ordering::SeqCst),
        body_len,
    };
    // The rule may take its time (a slow server): other requests go on.
    let verdict = rule(&request);
    seen.lock().unwrap().push(Seen { request, verdict });
    let mut client = client;
    match verdict {
        Verdict::Cut => client.shutdown(Shutdown::Both),
        Verdict::Fail(status) => {
            let body = format!(
                r#"{{"__type":"ThrottlingException","message":"injected {status}","errors":[{{"code":"UNAVAILABLE","message":"injected {status}"}}]}}"#
            );
            let response = format!(
                "HTTP/1.1 {status} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            client.write_all(response.as_bytes())?;
            client.shutdown(Shutdown::Both)
        }
        Verdict::Forward => {
            let mut server = TcpStream::connect(upstream)?;
            server.write_all(&head)?;
            server.write_all(&body)?;
            std::io::copy(&mut server, &mut client)?;
            client.shutdown(Shutdown::Both)
        }
        Verdict::RedirectToUpstream => {
            let response = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{upstream}{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                request_path
            );
            client.write_all(response.as_bytes())?;
            client.shutdown(Shutdown::Both)
        }
        Verdict::ForwardHalf => {
            let mut server = TcpStream::connect(upstream)?;
            server.write_all(&head)?;
            server.write_all(&body)?;
            let mut answer = Vec::new();
            std::io::Read::read_to_end(&mut server, &mut answer)?;
            let end = answer
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(answer.len(), |at| at + 4);
            let half = end + (answer.len() - end) / 2;
            client.write_all(&answer[..half])?;
            client.flush()?;
            client.shutdown(Shutdown::Both)
        }
        Verdict::ForwardButCut => {
            let mut server = TcpStream::connect(upstream)?;
            server.write_all(&head)?;
            server.write_all(&body)?;
            std::io::copy(&mut server, &mut std::io::sink())?;
            client.shutdown(Shutdown::Both)
        }
    }
}

/// The raw body bytes (by `Content-Length`, or chunks up to the last one)
/// and the payload's length (the chunks' sizes added up).
fn read_body(
    reader: &mut impl BufRead,
    headers: &[(String, String)],
) -> std::io::Result<(Vec<u8>, usize)> {
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut payload = 0;
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line)?;
            body.extend_from_slice(size_line.as_bytes());
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            payload += size;
            if size == 0 {
                return Ok((body, payload));
            }
        }
    }
    let length = header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    body.resize(length, 0);
    reader.read_exact(&mut body)?;
    Ok((body, length))
}
