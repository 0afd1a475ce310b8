//! The operations endpoint's HTTP server: GET only, one request per connection, one thread,
//! deadlines on everything.
//!
//! It must stay answerable whatever its clients do, because it is how an operator learns that
//! the recorder is sick. So it spends no thread per connection: one thread accepts connections,
//! keeps at most [`MAX_PENDING`] of them while their requests arrive (non-blocking reads, polled),
//! and answers each as soon as its request head is complete. A connection is closed when its
//! request has not arrived within [`DEADLINE`], and the oldest is closed first when a newer one
//! needs its place, so a flood of idle or dripping clients can delay a scrape by a tick, never
//! stop it. When accepting fails (file descriptors exhausted), the thread waits a tick and tries
//! again, for good.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::util::shutdown::Shutdown;

/// Connections held while their requests arrive: far more than scrapers ever open at once, few
/// enough to poll every tick.
const MAX_PENDING: usize = 64;
/// A scraper on the same host sends its request within milliseconds; a client slower than this
/// is not one.
const DEADLINE: Duration = Duration::from_secs(2);
/// The longest request head read: a GET line and a few headers fit many times over.
const MAX_HEAD: usize = 8 * 1024;
/// How long the thread sleeps when nothing arrived, which is how late a request can be answered.
const TICK: Duration = Duration::from_millis(10);
/// Problems are logged at most this often, so that a flood cannot flood the log too.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// What a handler answers.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// A bound listener, ready to [`serve`](Listener::serve).
pub struct Listener {
    inner: TcpListener,
}

/// A connection whose request head is still arriving.
struct Pending {
    stream: TcpStream,
    head: Vec<u8>,
    since: Instant,
}

impl Listener {
    pub fn bind(addr: &str) -> io::Result<Listener> {
        let inner = TcpListener::bind(addr)?;
        // Nothing may block the one thread: not an accept, not a read.
        inner.set_nonblocking(true)?;
        Ok(Listener { inner })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Answers GET requests with `handler(path)` until the token triggers.
    pub fn serve(&self, shutdown: &Shutdown, handler: impl Fn(&str) -> Response) {
        let mut pending: std::collections::VecDeque<Pending> = Default::default();
        let mut last_logged: Option<Instant> = None;
        let mut note = |what: &dyn std::fmt::Display| {
            if last_logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                log::warn!("metrics server: {what}");
                last_logged = Some(Instant::now());
            }
        };
        while !shutdown.is_triggered() {
            let mut busy = false;
            // Accept what is waiting, up to a pollful, so reads are never starved by accepts.
            for _ in 0..MAX_PENDING {
                match self.inner.accept() {
                    Ok((stream, _)) => {
                        busy = true;
                        if stream.set_nonblocking(true).is_err() {
                            continue;
                        }
                        if pending.len() == MAX_PENDING {
                            // Dropping it closes it: the oldest has had the longest to speak.
                            pending.pop_front();
                        }
                        pending.push_back(Pending {
                            stream,
                            head: Vec::new(),
                            since: Instant::now(),
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        note(&format_args!("accept failed, retrying: {e}"));
                        break;
                    }
                }
            }
            pending.retain_mut(|p| match read_head(p) {
                Ok(None) => p.since.elapsed() < DEADLINE,
                Ok(Some(target)) => {
                    busy = true;
                    let response = match target {
                        Ok(path) => handler(&path),
                        Err(refusal) => refusal,
                    };
                    if let Err(e) = respond(&mut p.stream, &response) {
                        log::debug!("metrics client: {e}");
                    }
                    false
                }
                Err(_) => false,
            });
            if !busy {
                shutdown.wait_timeout(TICK);
            }
        }
    }
}

/// Reads what has arrived; once the head is complete, the path asked for, or the answer that
/// refuses the request.
#[allow(clippy::type_complexity)]
fn read_head(p: &mut Pending) -> io::Result<Option<Result<String, Response>>> {
    let mut buf = [0u8; 1024];
    loop {
        match p.stream.read(&mut buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => p.head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if p.head.len() > MAX_HEAD {
            return Ok(Some(Err(plain(431, "request head too long\n"))));
        }
    }
    if !p.head.windows(4).any(|w| w == b"\r\n\r\n") {
        return Ok(None);
    }
    let line = p.head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    Ok(Some(match (parts.next(), parts.next()) {
        (Some("GET"), Some(target)) => Ok(target.split('?').next().unwrap_or_default().into()),
        (Some(_), Some(_)) => Err(plain(405, "only GET is served\n")),
        _ => Err(plain(400, "not an HTTP request\n")),
    }))
}

fn plain(status: u16, body: &str) -> Response {
    Response {
        status,
        content_type: "text/plain",
        body: body.to_string(),
    }
}

fn respond(stream: &mut TcpStream, response: &Response) -> io::Result<()> {
    /// An answer is a few KB, which the socket buffer takes at once; a client that does not even
    /// take that is dropped.
    const WRITE_DEADLINE: Duration = Duration::from_millis(200);
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(WRITE_DEADLINE))?;
    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(response.body.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> (SocketAddr, Shutdown, std::thread::JoinHandle<()>) {
        let listener = Listener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let token = Shutdown::new();
        let t = token.clone();
        let thread = std::thread::spawn(move || {
            listener.serve(&t, |path| Response {
                status: if path == "/x" { 200 } else { 404 },
                content_type: "text/plain",
                body: format!("{path}\n"),
            })
        });
        (addr, token, thread)
    }

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn answers_get_and_refuses_the_rest() {
        let (addr, token, thread) = start();
        let ok = get(addr, "GET /x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\n/x\n"), "{ok}");
        assert!(get(addr, "GET /nope HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /x HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(get(addr, "\r\n\r\n").starts_with("HTTP/1.1 400"));
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD * 2));
        assert!(get(addr, &long).starts_with("HTTP/1.1 431"));
        token.trigger();
        thread.join().unwrap();
    }

    /// Hundreds of idle clients cost the server nothing but a few polls: a request made while
    /// they hold on is answered at once, and shutdown does not wait for them.
    #[test]
    fn idle_clients_cannot_starve_a_request() {
        let (addr, token, thread) = start();
        let idle: Vec<TcpStream> = (0..200)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        let start = Instant::now();
        let reply = loop {
            let reply = get(addr, "GET /x HTTP/1.1\r\n\r\n");
            if reply.starts_with("HTTP/1.1 200") {
                break reply;
            }
            assert!(start.elapsed() < DEADLINE, "never answered: {reply:?}");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(reply.ends_with("/x\n"));
        token.trigger();
        thread.join().unwrap();
        drop(idle);
    }
}
