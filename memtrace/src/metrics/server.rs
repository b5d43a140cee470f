//! The HTTP side of `--listen`: a minimal HTTP/1.1 server on the agent's
//! tokio runtime for `GET /metrics` and `GET /healthz`. A scraper is not
//! trusted: a request's head is read within a size and a time bound, a
//! response must be taken within a time bound, connections beyond a small
//! number at once are closed at once, and at most a few metrics pages are
//! in flight, so no client can stall the agent or grow its memory. One request per connection (`Connection:
//! close`), which is all a scraper needs.
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use super::{
    expo::Format,
    state::{Metrics, SelfUsage},
};

/// Largest request head read (request line and headers).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Time a client gets to send its request head, and to take the response.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed unanswered.
pub const MAX_CONNECTIONS: usize = 32;
/// Metrics pages being written at once (each is a copy of a page of up to
/// a few MiB held until a slow client takes it); more get 503.
pub const MAX_PAGES: usize = 4;

/// What /healthz checks: the pipeline closed an interval within this long.
pub struct Health {
    pub started: Instant,
    pub stale_after: Duration,
    /// Updated by the sink at each `system` record.
    pub last_interval: Mutex<Instant>,
}

/// Binds `addr` now (so a port in use fails at start-up, before the
/// programs load), naming the cause and the fix.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                " (another process listens there: stop it or choose another port with --listen)"
            }
            std::io::ErrorKind::PermissionDenied => {
                " (ports below 1024 need CAP_NET_BIND_SERVICE: choose a port above 1023)"
            }
            std::io::ErrorKind::AddrNotAvailable => " (no interface of this host has that address)",
            _ => "",
        };
        anyhow::anyhow!("--listen {addr}: cannot listen: {e}{hint}")
    })
}

pub async fn serve(listener: TcpListener, metrics: Arc<Mutex<Metrics>>, health: Arc<Health>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let pages = Arc::new(Semaphore::new(MAX_PAGES));
    loop {
        let (conn, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("--listen: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(conn);
            continue;
        };
        let metrics = metrics.clone();
        let health = health.clone();
        let pages = pages.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(conn, &metrics, &health, &pages).await {
                log::debug!("--listen: {e:#}");
            }
            drop(permit);
        });
    }
}

/// The parts of a request the server looks at.
#[derive(Debug, PartialEq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub accept: Option<String>,
}

/// Parses a request head (up to the blank line). None: not HTTP/1.x.
pub fn parse_head(head: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?;
    if !first.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let path = target.split('?').next()?.to_string();
    let accept = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("accept")
            .then(|| v.trim().to_string())
    });
    Some(Request {
        method,
        path,
        accept,
    })
}

async fn read_head(conn: &mut TcpStream) -> Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Ok(Some(buf));
        }
        if buf.len() >= MAX_REQUEST_BYTES {
            return Ok(None);
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            anyhow::bail!("client closed before a whole request");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn handle(
    mut conn: TcpStream,
    metrics: &Mutex<Metrics>,
    health: &Health,
    pages: &Semaphore,
) -> Result<()> {
    let head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut conn))
        .await
        .context("request head not sent in time")??;
    let (status, ctype, body) = match head.as_deref().map(parse_head) {
        None => (
            "431 Request Header Fields Too Large",
            "text/plain",
            "request head too large\n".to_string(),
        ),
        Some(None) => ("400 Bad Request", "text/plain", "bad request\n".to_string()),
        Some(Some(req)) => {
            // Held until the page is written: bounds the pages in memory.
            let page = if req.path == "/metrics" {
                match pages.try_acquire() {
                    Ok(p) => Some(p),
                    Err(_) => {
                        return write_response(
                            &mut conn,
                            "503 Service Unavailable",
                            "text/plain",
                            "too many scrapes at once\n",
                            false,
                        )
                        .await;
                    }
                }
            } else {
                None
            };
            let (status, ctype, body) = respond(&req, metrics, health);
            let head_only = req.method == "HEAD";
            let r = write_response(&mut conn, status, ctype, &body, head_only).await;
            drop(page);
            return r;
        }
    };
    write_response(&mut conn, status, ctype, &body, false).await
}

/// Writes a response and closes; the body is written from where it is,
/// not copied after the head.
async fn write_response(
    conn: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &str,
    head_only: bool,
) -> Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tokio::time::timeout(WRITE_TIMEOUT, async {
        conn.write_all(head.as_bytes()).await?;
        if !head_only {
            conn.write_all(body.as_bytes()).await?;
        }
        conn.shutdown().await
    })
    .await
    .context("response not taken in time")??;
    Ok(())
}

fn respond(
    req: &Request,
    metrics: &Mutex<Metrics>,
    health: &Health,
) -> (&'static str, &'static str, String) {
    if req.method != "GET" && req.method != "HEAD" {
        return (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        );
    }
    match req.path.as_str() {
        "/metrics" => {
            let format = Format::from_accept(req.accept.as_deref());
            let usage = SelfUsage::read();
            let body = match metrics.lock() {
                Ok(m) => m.render(format, usage),
                Err(p) => p.into_inner().render(format, usage),
            };
            ("200 OK", format.content_type(), body)
        }
        "/healthz" => {
            let last = *health
                .last_interval
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let age = last.elapsed();
            if age <= health.stale_after {
                ("200 OK", "text/plain", "ok\n".to_string())
            } else {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    format!(
                        "no interval closed for {:.0} s (started {:.0} s ago)\n",
                        age.as_secs_f64(),
                        health.started.elapsed().as_secs_f64()
                    ),
                )
            }
        }
        "/" => (
            "200 OK",
            "text/plain",
            "memtrace: /metrics (Prometheus), /healthz\n".to_string(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse() {
        let r = parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nACCEPT: text/plain").unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/metrics");
        assert_eq!(r.accept.as_deref(), Some("text/plain"));
        assert!(parse_head(b"GET /metrics").is_none());
        assert!(parse_head(b"\xff\xfe").is_none());
        assert!(parse_head(b"GET / SSH-2.0").is_none());
    }
}
