//! The agent's own cost where it is largest: the interval in which every
//! storm memcg was active (each gets a `memcg_interval` record with its
//! shrinkers and cgroupfs state), next to an idle interval, and its
//! memory: the start-up peak and the steady resident set.
//!
//! `memtrace stream --interval 1s` runs while the storm's memcgs are
//! populated (no hook fires then on the tracepoint plan) and, right after
//! an interval closed, one `drop_caches` makes every memcg's shrinkers
//! run. The agent's CPU time (the sum of its threads' `schedstat` run
//! time, in ns) is read each time a `system` record, the last of an
//! interval, appears in its output.

use std::{
    fs,
    io::{Read, Seek, SeekFrom},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{sys, tracer::Env, workload::Workloads};

/// CPU time of every thread of `pid`, ns, from `/proc/PID/task/*/schedstat`
/// (exact for threads that are not running at the moment of the read,
/// which an agent waiting for its next interval is not).
pub fn proc_cpu_exact_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for t in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let s = fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        total += s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(total)
}

/// Follows an NDJSON file as it grows, counting records by type.
struct Tail {
    file: fs::File,
    pos: u64,
    partial: Vec<u8>,
    systems: u64,
    memcg_intervals: u64,
    /// `memcg_interval` records whose state was read as their interval
    /// closed (`"state_age_ns":0`), not carried from an earlier one.
    fresh_states: u64,
}

impl Tail {
    fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            file: fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
            pos: 0,
            partial: Vec::new(),
            systems: 0,
            memcg_intervals: 0,
            fresh_states: 0,
        })
    }

    /// Reads what was appended since the last call.
    fn poll(&mut self) -> Result<()> {
        self.file.seek(SeekFrom::Start(self.pos))?;
        let mut buf = Vec::new();
        self.pos += self.file.read_to_end(&mut buf)? as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Ok(());
        };
        for line in self.partial[..end].split(|&b| b == b'\n') {
            // Records start with their type: a byte search is enough here.
            if line.starts_with(br#"{"type":"system""#) {
                self.systems += 1;
            } else if line.starts_with(br#"{"type":"memcg_interval""#) {
                self.memcg_intervals += 1;
                if contains_bytes(line, br#""state_age_ns":0,"#) {
                    self.fresh_states += 1;
                }
            }
        }
        self.partial.drain(..=end);
        Ok(())
    }

    /// Waits until `n` `system` records were written in all.
    fn wait_systems(&mut self, n: u64, pid: u32) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.poll()?;
            if self.systems >= n {
                return Ok(());
            }
            if sys::try_reap(pid).is_some() {
                bail!("memtrace stream exited during the interval measurement");
            }
            if Instant::now() > deadline {
                bail!("memtrace stream wrote no interval for 30 s");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// `passes` storm passes, each in an interval of its own followed by an
/// idle one, under `memtrace stream --interval 1s`. The caller holds the
/// kernel lock.
pub fn intervals(env: &Env, w: &mut Workloads, passes: usize) -> Result<Value> {
    let out = env.scratch.join("agent-intervals.ndjson");
    let _ = fs::remove_file(&out);
    let started = Instant::now();
    let child = Command::new(&env.memtrace)
        .args(["stream", "--interval", "1s", "--output"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting memtrace stream --interval 1s")?;
    let pid = child.id();
    let guard = KillOnDrop(Some(child));
    while !fs::read_to_string(&out).is_ok_and(|s| s.contains('\n')) {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("memtrace stream wrote no header in 60 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let ready_s = started.elapsed().as_secs_f64();
    let ready_hwm_kib = sys::proc_hwm_kib(pid).unwrap_or(0);
    let mut tail = Tail::open(&out)?;
    tail.poll()?;
    let mut rows = Vec::new();
    for pass in 0..passes {
        // Populating fires no hook on the tracepoint plan; it may span
        // interval boundaries without making any memcg active.
        w.populate()?;
        let n = tail.systems;
        tail.wait_systems(n + 1, pid)?;
        let c0 = proc_cpu_exact_ns(pid).unwrap_or(0);
        let m0 = tail.memcg_intervals;
        let f0 = tail.fresh_states;
        let t = Instant::now();
        sys::write_file(Path::new("/proc/sys/vm/drop_caches"), "2")?;
        let drop_s = t.elapsed().as_secs_f64();
        tail.wait_systems(n + 2, pid)?;
        let c1 = proc_cpu_exact_ns(pid).unwrap_or(0);
        let m1 = tail.memcg_intervals;
        let f1 = tail.fresh_states;
        tail.wait_systems(n + 3, pid)?;
        let c2 = proc_cpu_exact_ns(pid).unwrap_or(0);
        let m2 = tail.memcg_intervals;
        eprintln!(
            "bench: agent interval {}/{passes}: {} memcg records ({} states read, the rest \
             carried), {:.1} ms CPU; idle interval ({} records) {:.1} ms",
            pass + 1,
            m1 - m0,
            f1 - f0,
            c1.saturating_sub(c0) as f64 / 1e6,
            m2 - m1,
            c2.saturating_sub(c1) as f64 / 1e6,
        );
        rows.push(json!({
            "pass": pass,
            "drop_s": drop_s,
            "storm_memcg_records": m1 - m0,
            "storm_states_read": f1 - f0,
            "storm_cpu_s": c1.saturating_sub(c0) as f64 / 1e9,
            "idle_memcg_records": m2 - m1,
            "idle_cpu_s": c2.saturating_sub(c1) as f64 / 1e9,
        }));
    }
    let steady_rss_kib = super::sys::proc_rss_kib(pid).unwrap_or(0);
    let hwm_kib = sys::proc_hwm_kib(pid).unwrap_or(0);
    let mut guard = guard;
    let child = guard.0.take().expect("still running");
    sys::signal(pid, sys::SIGINT);
    let u = sys::wait_usage(child, Duration::from_secs(20))?;
    let _ = fs::remove_file(&out);
    Ok(json!({
        "command": "memtrace stream --interval 1s --output FILE",
        "ready_s": ready_s,
        "ready_peak_rss_kib": ready_hwm_kib,
        "steady_rss_kib": steady_rss_kib,
        // VmHWM, not wait4's ru_maxrss: a child's ru_maxrss starts from
        // the bench's own RSS at fork.
        "peak_rss_kib": hwm_kib.max(ready_hwm_kib),
        "cpu_s": (u.user_ns + u.sys_ns) as f64 / 1e9,
        "passes": rows,
    }))
}

/// Whether `needle` occurs in `hay`.
fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Kills and reaps the child if the measurement fails part-way.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            sys::signal(c.id(), sys::SIGKILL);
            let _ = sys::wait_usage(c, Duration::from_secs(10));
        }
    }
}

/// One scrape of `/metrics`: when, how long, how big, how many series.
struct Scrape {
    at: Instant,
    ms: f64,
    bytes: usize,
    series: u64,
}

/// `memtrace record --listen` with a scraper fetching `/metrics` every
/// second (as a Prometheus with a 1 s interval would), through `passes`
/// storm passes: the agent's CPU over a 3 s window holding the storm's
/// interval and three scrapes, over the 3 s idle window after it, its
/// memory, and the pages the scraper got (series, bytes, time). The
/// record agent writes no stream to follow, so the windows are fixed: the
/// storm's interval closes within one interval of the drop_caches.
pub fn record_listen(env: &Env, w: &mut Workloads, passes: usize) -> Result<Value> {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    };
    let dir = env.scratch.join("agent-record");
    let _ = fs::remove_dir_all(&dir);
    let log = env.scratch.join("agent-record.log");
    let started = Instant::now();
    let child = Command::new(&env.memtrace)
        .args([
            "record",
            "--interval",
            "1s",
            "--listen",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log)?)
        .spawn()
        .context("starting memtrace record --listen")?;
    let pid = child.id();
    let mut guard = KillOnDrop(Some(child));
    let addr = loop {
        let l = fs::read_to_string(&log).unwrap_or_default();
        if l.contains("watching")
            && let Some(a) = memtrace_testkit::metrics::served_addr(&l)
        {
            break a;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("memtrace record did not start in 60 s: {l}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let scrapes = Arc::new(Mutex::new(Vec::<Scrape>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let (scrapes, stop) = (scrapes.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (_, _, body) = memtrace_testkit::metrics::http_get(addr, "/metrics", None);
                let series = body
                    .lines()
                    .find_map(|l| l.strip_prefix("memtrace_metrics_series "))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                scrapes.lock().unwrap().push(Scrape {
                    at: t,
                    ms: t.elapsed().as_secs_f64() * 1e3,
                    bytes: body.len(),
                    series,
                });
                std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
            }
        })
    };
    let window = Duration::from_secs(3);
    let mut rows = Vec::new();
    for pass in 0..passes {
        w.populate()?;
        std::thread::sleep(Duration::from_secs(2));
        let c0 = proc_cpu_exact_ns(pid).unwrap_or(0);
        let t0 = Instant::now();
        sys::write_file(Path::new("/proc/sys/vm/drop_caches"), "2")?;
        std::thread::sleep(window.saturating_sub(t0.elapsed()));
        let c1 = proc_cpu_exact_ns(pid).unwrap_or(0);
        let t1 = Instant::now();
        std::thread::sleep(window);
        let c2 = proc_cpu_exact_ns(pid).unwrap_or(0);
        let s = scrapes.lock().unwrap();
        let storm: Vec<&Scrape> = s.iter().filter(|x| x.at >= t0 && x.at < t1).collect();
        let max_series = storm.iter().map(|x| x.series).max().unwrap_or(0);
        let max_bytes = storm.iter().map(|x| x.bytes).max().unwrap_or(0);
        let max_ms = s
            .iter()
            .filter(|x| x.at >= t0)
            .map(|x| x.ms)
            .fold(0.0, f64::max);
        eprintln!(
            "bench: record --listen pass {}/{passes}: storm window {:.1} ms CPU, idle window {:.1} ms; \
             up to {max_series} series ({:.0} KiB) per scrape, slowest scrape {max_ms:.1} ms",
            pass + 1,
            c1.saturating_sub(c0) as f64 / 1e6,
            c2.saturating_sub(c1) as f64 / 1e6,
            max_bytes as f64 / 1024.0,
        );
        rows.push(json!({
            "pass": pass,
            "storm_window_cpu_s": c1.saturating_sub(c0) as f64 / 1e9,
            "idle_window_cpu_s": c2.saturating_sub(c1) as f64 / 1e9,
            "scrapes_in_storm_window": storm.len(),
            "max_series": max_series,
            "max_page_bytes": max_bytes,
            "max_scrape_ms": max_ms,
        }));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = scraper.join();
    let steady_rss_kib = sys::proc_rss_kib(pid).unwrap_or(0);
    let hwm_kib = sys::proc_hwm_kib(pid).unwrap_or(0);
    let scrape_count = scrapes.lock().unwrap().len();
    let child = guard.0.take().expect("still running");
    sys::signal(pid, sys::SIGINT);
    let u = sys::wait_usage(child, Duration::from_secs(30))?;
    let _ = fs::remove_dir_all(&dir);
    let _ = fs::remove_file(&log);
    Ok(json!({
        "command": "memtrace record --interval 1s --listen 127.0.0.1:0, scraped every 1 s",
        "window_s": window.as_secs_f64(),
        "scrapes": scrape_count,
        "steady_rss_kib": steady_rss_kib,
        "peak_rss_kib": hwm_kib,
        "cpu_s": (u.user_ns + u.sys_ns) as f64 / 1e9,
        "passes": rows,
    }))
}
