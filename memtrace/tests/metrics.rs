//! `memtrace record --listen`: its command line, its HTTP endpoint under
//! hostile clients, and a real Prometheus (Debian's 2.42) scraping it
//! every second while a named memcg is OOM-killed and another churns.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use memtrace_testkit::{
    churn::write_through_cache,
    metrics::{Prometheus, http_get, promtool_check, scrape, served_addr},
    recorder::{Recorder, oom_victim},
    root::as_root,
    *,
};
use serde_json::Value;

#[test]
fn listen_needs_an_ip_and_port_or_it_is_a_usage_error() {
    let dir = scratch("metrics-usage");
    for bad in [
        "localhost",
        "9750",
        "127.0.0.1:99999",
        "http://127.0.0.1:9750",
    ] {
        let out = Command::new(memtrace_bin())
            .args(["record", "--dir"])
            .arg(&*dir)
            .args(["--listen", bad])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("expected IP:PORT"), "{bad}: {err}");
    }
}

#[test]
fn a_port_in_use_is_a_clear_error_at_start() {
    let dir = scratch("metrics-in-use");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = Command::new(memtrace_bin())
        .args(["record", "--dir"])
        .arg(&*dir)
        .args(["--listen", &addr.to_string()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("--listen {addr}: cannot listen"))
            && err.contains("another process listens there"),
        "{err}"
    );
}

/// hook -> family ("none" when unavailable), as `doctor --json` plans it.
fn doctor_plan() -> BTreeMap<String, String> {
    let v: Value = serde_json::from_slice(&memtrace_ok(["doctor", "--json"])).unwrap();
    v["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["hook"].as_str().unwrap().to_string(),
                p["family"].as_str().unwrap_or("none").to_string(),
            )
        })
        .collect()
}

#[test]
#[ignore = "needs root: loads BPF programs, OOM-kills, runs Prometheus"]
fn prometheus_sees_the_oom_kill_the_reclaim_and_the_plan() {
    let (_g, scratch) = as_root("metrics-prometheus");
    let r = Recorder::start(
        &scratch.join("out"),
        &["--listen", "127.0.0.1:0", "--interval", "1s"],
    );
    let agent = served_addr(&r.log()).expect("the agent says where it serves");
    let prom = Prometheus::start(&scratch.join("prometheus"), agent);
    prom.wait_until("first scrape", Prometheus::target_up);

    let oom = TestMemcg::new("prom-oom");
    oom.limit_no_swap(32 << 20);
    let churn = TestMemcg::new("prom-churn");
    churn.limit(16 << 20);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let file = scratch.join("churn.bin");
        let dir = churn.dir.clone();
        std::thread::spawn(move || {
            // A memcg handle per thread is not shareable: write from a
            // process placed in the churn memcg by path.
            while !stop.load(Ordering::Relaxed) {
                let mut dd = spawn_in(
                    &dir,
                    Command::new("dd")
                        .arg("if=/dev/zero")
                        .arg(format!("of={}", file.display()))
                        .args(["bs=1M", "count=64"]),
                );
                wait_timeout(&mut dd, Duration::from_secs(60));
                let _ = std::fs::remove_file(&file);
            }
        })
    };
    let pid = oom_victim(&oom.dir);
    r.live_postmortem(pid);

    let kills = format!("memtrace_oom_kills_total{{cgroup=\"{}\"}}", oom.rel);
    prom.wait_until("the OOM kill in Prometheus", |p| p.value(&kills).is_some());
    let reclaim = format!(
        "sum(rate(memtrace_reclaim_seconds_total{{cgroup=\"{}\"}}[15s]))",
        churn.rel
    );
    prom.wait_until("reclaim seconds rising", |p| {
        p.value(&reclaim).is_some_and(|v| v > 0.0)
    });
    let reclaim_rate = prom.value(&reclaim).unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    // A second churn pass through the testkit's own helper, so the memcg
    // is left as other tests leave theirs.
    write_through_cache(
        &churn,
        &scratch.join("churn2.bin"),
        8,
        Duration::from_secs(60),
    );

    let oom_result = prom.query(&kills);
    assert_eq!(oom_result.len(), 1, "{oom_result:?}");
    assert_eq!(oom_result[0]["value"][1], "1", "{oom_result:?}");
    let labels = &oom_result[0]["metric"];
    assert_eq!(labels["scope"], "memcg", "{labels}");
    assert!(
        labels.get("limit_cgroup").is_none(),
        "its own limit fired: {labels}"
    );

    let plan: BTreeMap<String, String> = prom
        .query("memtrace_attach_plan")
        .iter()
        .map(|s| {
            (
                s["metric"]["hook"].as_str().unwrap().to_string(),
                s["metric"]["family"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(plan, doctor_plan());

    // What a plain curl gets passes promtool's checks, and carries both
    // test memcgs.
    let page = scrape(agent);
    assert_eq!(promtool_check(&page), "", "{page}");
    assert!(page.contains(&format!("cgroup=\"{}\"", churn.rel)));
    eprintln!(
        "PromQL: {kills} = {}; {reclaim} = {reclaim_rate}",
        oom_result[0]["value"][1]
    );
    let excerpt: Vec<&str> = page
        .lines()
        .filter(|l| l.contains(&oom.rel) || l.contains(&churn.rel))
        .collect();
    eprintln!("scrape excerpt:\n{}", excerpt.join("\n"));
    drop(prom);
    r.stop();
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn hostile_clients_cannot_stall_the_endpoint() {
    let (_g, scratch) = as_root("metrics-hostile");
    let r = Recorder::start(&scratch.join("out"), &["--listen", "127.0.0.1:0"]);
    let agent: SocketAddr = served_addr(&r.log()).unwrap();
    // Clients that connect and send nothing, or half a request, hold no
    // more than their slot: a scrape beside them is served.
    let idle: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(agent).unwrap())
        .collect();
    let mut half = TcpStream::connect(agent).unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let page = scrape(agent);
    assert!(page.contains("memtrace_build_info"));
    // A request head that never ends is cut at its size bound.
    let mut big = TcpStream::connect(agent).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let filler = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n", "a".repeat(64 * 1024));
    let _ = big.write_all(filler.as_bytes());
    let mut answer = String::new();
    let _ = big.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");
    // A flood beyond the connection bound is closed, never queued: every
    // one of these connections ends (answered or closed) by the server.
    let mut flood: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(agent).unwrap())
        .collect();
    for c in &mut flood {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut b = [0u8; 64];
        // Ok(n): answered or closed (n = 0); a timeout means still open.
        if let Err(e) = c.read(&mut b) {
            assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "not closed: {e}");
        }
    }
    drop((idle, half, flood));
    // Other paths and methods get their status, and the agent is healthy.
    assert!(http_get(agent, "/nope", None).0.contains("404"));
    assert!(http_get(agent, "/healthz", None).0.contains("200"));
    let (status, headers, body) = http_get(
        agent,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert!(status.contains("200"));
    assert!(
        headers.contains("application/openmetrics-text"),
        "{headers}"
    );
    assert!(body.ends_with("# EOF\n"));
    r.stop();
}
