//! A canary tenant on loopback: answers every GET with the JSON body its
//! handler gives for that poll (0, 1, 2, …), so a test decides when it
//! switches to the new sha.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

pub type Handler = Arc<dyn Fn(usize) -> String + Send + Sync>;

pub struct Canary {
    addr: std::net::SocketAddr,
    polls: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Canary {
    pub fn start(handler: Handler) -> Canary {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let polls = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (polls_in, stop_in) = (polls.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop_in.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let poll = polls_in.fetch_add(1, Ordering::SeqCst);
                let _ = answer(stream, &handler(poll));
            }
        });
        Canary { addr, polls, stop }
    }

    /// A canary that reports `before` for the first `switch_after` polls,
    /// then `after`.
    pub fn switching(before: &str, after: &str, switch_after: usize) -> Canary {
        let (before, after) = (before.to_string(), after.to_string());
        Canary::start(Arc::new(move |poll| {
            let sha = if poll < switch_after { &before } else { &after };
            format!(r#"{{"status":"ok","git_sha":"{sha}"}}"#)
        }))
    }

    pub fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }

    pub fn polls(&self) -> usize {
        self.polls.load(Ordering::SeqCst)
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn answer(stream: TcpStream, body: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    // The request line and headers; a GET has no body.
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
