//! `record --listen`'s endpoint from the outside: plain HTTP scrapes, and a
//! real Prometheus (Debian's, `prometheus` package) scraping it into a
//! temporary TSDB, queried through its HTTP API (memtrace/tests/metrics.rs,
//! deploy.rs).

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// One HTTP/1.1 request; (status line, headers, body).
pub fn http_get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (String, String, String) {
    try_http_get(addr, path, accept).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// [`http_get`], its failure returned (a scraper that must not stop).
pub fn try_http_get(
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> std::io::Result<(String, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{accept}\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8(buf).map_err(std::io::Error::other)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    Ok((status.to_string(), headers.to_string(), body.to_string()))
}

/// `/metrics` in the classic text format (no Accept header, as curl).
pub fn scrape(addr: SocketAddr) -> String {
    let (status, _, body) = http_get(addr, "/metrics", None);
    assert!(status.contains("200"), "{status}: {body}");
    body
}

/// The address an agent's log says it serves on.
pub fn served_addr(log: &str) -> Option<SocketAddr> {
    let at = log.find("metrics on http://")? + "metrics on http://".len();
    log[at..].split('/').next()?.parse().ok()
}

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `promtool check metrics` on a page: its complaints (empty: clean).
pub fn promtool_check(page: &str) -> String {
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; cargo xtask setup installs it)");
    c.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    let mut said = String::from_utf8_lossy(&out.stdout).into_owned();
    said.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() && said.is_empty() {
        said = format!("promtool exit {}", out.status);
    }
    said
}

/// A Prometheus scraping `target` every second into a TSDB under `dir`;
/// killed (and its directory removed) on drop.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    pub fn start(dir: &Path, target: SocketAddr) -> Self {
        fs::create_dir_all(dir).unwrap();
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: memtrace\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus (Debian package prometheus; cargo xtask setup installs it)");
        let p = Prometheus {
            child,
            addr,
            dir: dir.to_path_buf(),
        };
        p.wait_until("Prometheus ready", |p| {
            TcpStream::connect(p.addr).is_ok()
                && http_get(p.addr, "/-/ready", None).0.contains("200")
        });
        p
    }

    /// Waits up to 60 s for `ok`.
    pub fn wait_until(&self, what: &str, ok: impl Fn(&Self) -> bool) {
        let end = Instant::now() + Duration::from_secs(60);
        while !ok(self) {
            assert!(
                Instant::now() < end,
                "{what}: not within 60 s; prometheus log: {}",
                fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// An instant query; the result vector (`data.result`).
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let mut q = String::new();
        for b in promql.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                q.push(b as char);
            } else {
                q.push_str(&format!("%{b:02X}"));
            }
        }
        let (status, _, body) = http_get(self.addr, &format!("/api/v1/query?query={q}"), None);
        let v: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{status}: {e}: {body}"));
        assert_eq!(v["status"], "success", "{promql}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The single value of an instant query with one result, if it has one.
    pub fn value(&self, promql: &str) -> Option<f64> {
        let r = self.query(promql);
        let v = r.first()?["value"][1].as_str()?.parse().ok()?;
        Some(v)
    }

    /// Whether Prometheus scraped the target successfully last time.
    pub fn target_up(&self) -> bool {
        self.value("up") == Some(1.0)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
