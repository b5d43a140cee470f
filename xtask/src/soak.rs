//! `cargo xtask soak [--duration 5m]`: memtrace's long-running commands
//! (`record`, `stream --output`, `top --batch`) under a shrinker storm, an
//! OOM crashloop and memcg churn (create, charge, rmdir), sampled every
//! `--sample` seconds: each process's RSS, open fds and CPU time, and from
//! the stream's `system` records the kernel maps' fill and the loss
//! counters.
//!
//! A drift is a failure, with what drifted and by how much:
//! - RSS: the least-squares slope over the second half of the samples,
//!   times that half's length, above 4 MiB or 10% of the RSS (a process
//!   still growing after its caches have warmed up);
//! - fds: the same growth of 2 or more descriptors;
//! - CPU: the second half's CPU share above twice the first's plus 2
//!   points (a per-interval cost that grows with time);
//! - map fill: the second half's growth above 5% of the map's capacity,
//!   or a map 90% full at the end (entries of dead memcgs not evicted);
//! - any loss counter above 0 (ring-buffer drops, map-full misses, missed
//!   returns, BPF recursion misses), a process that exits before the end or
//!   does not exit cleanly on SIGINT.
//!
//! The workloads are the bench's (bench/workload.rs, bench/cg.rs); every
//! memcg, mount, file and process is removed by Drop guards, also on a
//! failure or Ctrl-C (SIGINT/SIGTERM stop the soak early, then it cleans
//! up and judges what it sampled). The table is printed and written to
//! `target/soak/soak-<time>.md` (and `latest.md`).

use std::{
    fmt::Write as _,
    fs,
    io::{Read, Seek, SeekFrom},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{
    bench::{
        cg,
        sys::{self, KernelLock},
        workload::{Kind, Params, Workloads},
    },
    build, cmd,
};

#[derive(clap::Args, Debug, Clone)]
pub struct SoakArgs {
    /// How long to run the workloads (RELIABILITY.md reports a 30m run).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Time between samples.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub sample: Duration,
    /// memcgs in the shrinker storm.
    #[arg(long, default_value_t = 200)]
    pub memcgs: usize,
    /// Use the existing binary instead of building it.
    #[arg(long)]
    pub no_build: bool,
    /// Use (and build) the dev-profile binary.
    #[arg(long)]
    pub debug: bool,
}

/// memtrace's default map sizes (`--memcg-entries`, `--shrinker-entries`),
/// which the soak runs with.
const MEMCG_CAPACITY: u64 = 4096;
const SHRINKER_CAPACITY: u64 = 16384;
/// Loss counters of the `system` record; any of them above 0 fails.
const LOSSES: &[&str] = &[
    "ringbuf_drops",
    "memcg_map_full",
    "shrinker_map_full",
    "inflight_map_full",
    "missed_returns",
    "prog_recursion_misses",
];
/// memcgs created, charged and removed per churn step.
const CHURN_MEMCGS: usize = 20;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM end the soak early, so the guards clean up.
fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; the cast is how libc passes a handler.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// One long-running memtrace command; SIGINT then SIGKILL on drop.
struct Proc {
    name: &'static str,
    child: Child,
    exited: Option<String>,
}

impl Proc {
    fn start(name: &'static str, memtrace: &Path, args: &[&str], dir: &Path) -> Result<Self> {
        let stdout = fs::File::create(dir.join(format!("{name}.out")))?;
        let stderr = fs::File::create(dir.join(format!("{name}.err")))?;
        let child = Command::new(memtrace)
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Its own process group: a Ctrl-C on the terminal reaches the
            // soak, which then stops the commands itself and checks they
            // exit cleanly.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting memtrace {name}"))?;
        Ok(Self {
            name,
            child,
            exited: None,
        })
    }

    /// None while it runs, else how it ended.
    fn poll(&mut self) -> Option<&str> {
        if self.exited.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exited = Some(st.to_string());
            }
        }
        self.exited.as_deref()
    }

    /// SIGINT, then SIGKILL after 20 s; whether it exited 0.
    fn stop(&mut self) -> Result<(), String> {
        if let Some(e) = self.poll() {
            return Err(format!("had already exited ({e})"));
        }
        sys::signal(self.child.id(), sys::SIGINT);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exited = Some(st.to_string());
                return if st.success() {
                    Ok(())
                } else {
                    Err(format!("exited {st} on SIGINT"))
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.exited = Some("killed".into());
        Err("did not exit within 20 s of SIGINT".into())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.poll().is_none() {
            let _ = self.stop();
        }
    }
}

#[derive(Clone, Default)]
struct ProcSample {
    rss_kib: f64,
    fds: f64,
    cpu_s: f64,
}

#[derive(Clone, Default)]
struct Sample {
    t: f64,
    procs: Vec<ProcSample>,
    memcg_entries: f64,
    shrinker_entries: f64,
}

fn fds(pid: u32) -> Option<f64> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as f64)
}

/// Reads the stream file as it grows: the last `system` record's map fill,
/// the loss counters summed over every record (they are per interval),
/// and the OOM kills seen.
struct StreamTail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    last_system: Option<Value>,
    losses: Vec<u64>,
    unmatched_returns: u64,
    systems: u64,
    kills: u64,
}

impl StreamTail {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            offset: 0,
            partial: Vec::new(),
            last_system: None,
            losses: vec![0; LOSSES.len()],
            unmatched_returns: 0,
            systems: 0,
            kills: 0,
        }
    }

    fn update(&mut self) {
        let Ok(mut f) = fs::File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        let Ok(n) = f.read_to_end(&mut buf) else {
            return;
        };
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let whole: Vec<u8> = self.partial.drain(..=end).collect();
        for line in whole.split(|&b| b == b'\n') {
            let Ok(v) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            match v["type"].as_str() {
                Some("system") => {
                    self.systems += 1;
                    for (sum, name) in self.losses.iter_mut().zip(LOSSES) {
                        *sum += v[*name].as_u64().unwrap_or(0);
                    }
                    self.unmatched_returns += v["unmatched_returns"].as_u64().unwrap_or(0);
                    self.last_system = Some(v);
                }
                Some("oom_kill") => self.kills += 1,
                _ => {}
            }
        }
    }

    fn entries(&self, name: &str) -> f64 {
        self.last_system
            .as_ref()
            .and_then(|v| v[name].as_f64())
            .unwrap_or(0.0)
    }
}

/// Least-squares slope of `y` over `x` (0 with fewer than 2 points).
fn slope(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    if x.len() < 2 {
        return 0.0;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
    }
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// Growth over the second half of the samples, from its least-squares
/// slope.
fn second_half_growth(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    let half = &samples[samples.len() / 2..];
    let t: Vec<f64> = half.iter().map(|s| s.t).collect();
    let y: Vec<f64> = half.iter().map(f).collect();
    let span = t.last().unwrap_or(&0.0) - t.first().unwrap_or(&0.0);
    slope(&t, &y) * span
}

pub fn soak(args: &SoakArgs) -> Result<()> {
    if !sys::is_root() {
        bail!("the soak loads BPF programs and creates memcgs: run it as root");
    }
    let memtrace = if args.no_build {
        let profile = if args.debug { "debug" } else { "release" };
        cmd::target_dir().join(profile).join("memtrace")
    } else {
        build::build(args.debug)?.binary
    };
    if !memtrace.is_file() {
        bail!(
            "{} is missing (run `cargo xtask build`)",
            memtrace.display()
        );
    }
    catch_signals();
    cg::clean_stale();
    let _lock = KernelLock::take()?;

    let out_dir = cmd::target_dir().join("soak");
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let scratch = out_dir.join(format!("run-{stamp}"));
    fs::create_dir_all(&scratch)?;
    let params = Params {
        storm_memcgs: args.memcgs,
        storm_dentries: 8,
        storm_drops: 1,
        churn_mib: 16,
        churn_limit_mib: 32,
        oom_kills: 1,
        oom_limit_mib: 32,
    };
    let mut work = Workloads::setup(params, &scratch, &scratch.join("mnt"))?;

    let stream_file = scratch.join("stream.ndjson");
    let record_dir = scratch.join("record");
    let mut procs = vec![
        Proc::start(
            "record",
            &memtrace,
            // A one-minute history (default five): the history is bounded
            // by age, so it fills within the first half of a 5-minute soak
            // and the second half measures the steady state.
            &[
                "record",
                "--history",
                "1m",
                // Metrics served and scraped every second all along.
                "--listen",
                "127.0.0.1:0",
                "--dir",
                &record_dir.to_string_lossy(),
            ],
            &scratch,
        )?,
        Proc::start(
            "stream",
            &memtrace,
            &[
                "stream",
                "--interval",
                "1s",
                "--output",
                &stream_file.to_string_lossy(),
            ],
            &scratch,
        )?,
        Proc::start(
            "top",
            &memtrace,
            &["top", "--batch", "--interval", "2s"],
            &scratch,
        )?,
    ];
    let mut tail = StreamTail::new(stream_file);
    let attached = Instant::now();
    while tail.systems == 0 {
        if STOP.load(Ordering::SeqCst) {
            bail!("interrupted before the soak started");
        }
        if attached.elapsed() > Duration::from_secs(60) {
            bail!("memtrace stream wrote no system record within 60 s");
        }
        if let Some(p) = procs
            .iter_mut()
            .find_map(|p| p.poll().is_some().then_some(&*p))
        {
            bail!(
                "memtrace {} exited at start ({}): see {}",
                p.name,
                p.exited.as_deref().unwrap_or("?"),
                scratch.join(format!("{}.err", p.name)).display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
        tail.update();
    }
    let scraper = Scraper::start(&scratch.join("record.err"))?;
    eprintln!(
        "soak: {} for {}, sampling every {}",
        memtrace.display(),
        humantime::format_duration(args.duration),
        humantime::format_duration(args.sample)
    );

    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut next_sample = Duration::ZERO;
    let mut steps = [0u64; 3];
    let mut step = 0usize;
    let mut cpu0 = vec![0.0; procs.len()];
    while started.elapsed() < args.duration && !STOP.load(Ordering::SeqCst) {
        if started.elapsed() >= next_sample {
            tail.update();
            let mut s = Sample {
                t: started.elapsed().as_secs_f64(),
                memcg_entries: tail.entries("memcg_entries"),
                shrinker_entries: tail.entries("shrinker_entries"),
                ..Sample::default()
            };
            for (i, p) in procs.iter_mut().enumerate() {
                if let Some(e) = p.poll().map(str::to_owned) {
                    failures.push(format!("memtrace {} exited during the soak ({e})", p.name));
                    continue;
                }
                let pid = p.child.id();
                let cpu_s = sys::proc_cpu_ns(pid).unwrap_or(0) as f64 / 1e9;
                if samples.is_empty() {
                    cpu0[i] = cpu_s;
                }
                s.procs.push(ProcSample {
                    rss_kib: crate::bench::sys::proc_rss_kib(pid).map_or(0.0, |k| k as f64),
                    fds: fds(pid).unwrap_or(0.0),
                    cpu_s: cpu_s - cpu0[i],
                });
            }
            if !failures.is_empty() {
                break;
            }
            samples.push(s);
            next_sample += args.sample;
        }
        let kind = step % 3;
        let r = match kind {
            0 => work.run(Kind::Storm).map(drop),
            1 => work.run(Kind::Oom).map(drop),
            _ => work.memcg_churn(CHURN_MEMCGS, 4),
        };
        r.with_context(|| format!("workload step {step}"))?;
        steps[kind] += 1;
        step += 1;
    }
    let ran = started.elapsed();
    let scraped = scraper.stop();
    if scraped.failed > 0 {
        failures.push(format!(
            "{} of {} scrapes of record's /metrics failed (last: {})",
            scraped.failed,
            scraped.ok + scraped.failed,
            scraped.last_error
        ));
    }
    for p in &mut procs {
        if let Err(e) = p.stop() {
            failures.push(format!("memtrace {}: {e}", p.name));
        }
    }
    tail.update();
    drop(work);

    failures.extend(judge(&samples, &procs, &tail));
    let mut table = render(&samples, &procs, &tail, ran, steps, &failures);
    table.push_str(&format!(
        "\n`record --listen` scraped every second: {} scrapes served, {} failed, up to {} series per page.\n",
        scraped.ok, scraped.failed, scraped.max_series
    ));
    println!("{table}");
    let report = out_dir.join(format!("soak-{stamp}.md"));
    fs::write(&report, &table)?;
    fs::write(out_dir.join("latest.md"), &table)?;
    // The captures are large and only needed to debug a failure.
    if failures.is_empty() {
        let _ = fs::remove_dir_all(&scratch);
    } else {
        eprintln!(
            "soak: the commands' output is kept in {}",
            scratch.display()
        );
    }
    eprintln!("soak: table written to {}", report.display());
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted after {:.0} s", ran.as_secs_f64());
    }
    if !failures.is_empty() {
        bail!("soak failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

/// The drift rules of the module documentation.
fn judge(samples: &[Sample], procs: &[Proc], tail: &StreamTail) -> Vec<String> {
    let mut out = Vec::new();
    for (name, sum) in LOSSES.iter().zip(&tail.losses) {
        if *sum > 0 {
            out.push(format!("loss counter {name} = {sum} (must stay 0)"));
        }
    }
    if samples.len() < 4 {
        out.push(format!(
            "only {} samples: too short to judge drift (run longer or sample more often)",
            samples.len()
        ));
        return out;
    }
    let complete = samples.iter().all(|s| s.procs.len() == procs.len());
    if !complete {
        return out;
    }
    let half = samples.len() / 2;
    for (i, p) in procs.iter().enumerate() {
        let rss = second_half_growth(samples, |s| s.procs[i].rss_kib);
        let rss_mid = samples[half].procs[i].rss_kib;
        if rss > (4.0 * 1024.0f64).max(0.10 * rss_mid) {
            out.push(format!(
                "{}: RSS drift: +{:.0} KiB over the second half (from {:.0} KiB)",
                p.name, rss, rss_mid
            ));
        }
        let fd = second_half_growth(samples, |s| s.procs[i].fds);
        if fd >= 2.0 {
            out.push(format!(
                "{}: fd drift: +{fd:.1} descriptors over the second half",
                p.name
            ));
        }
        let share = |a: &Sample, b: &Sample| {
            100.0 * (b.procs[i].cpu_s - a.procs[i].cpu_s) / (b.t - a.t).max(1e-9)
        };
        let (first, second) = (
            share(&samples[0], &samples[half]),
            share(&samples[half], &samples[samples.len() - 1]),
        );
        if second > 2.0 * first + 2.0 {
            out.push(format!(
                "{}: CPU drift: {first:.1}% in the first half, {second:.1}% in the second",
                p.name
            ));
        }
    }
    for (name, cap, f) in [
        (
            "memcg_entries",
            MEMCG_CAPACITY,
            (|s: &Sample| s.memcg_entries) as fn(&Sample) -> f64,
        ),
        ("shrinker_entries", SHRINKER_CAPACITY, |s: &Sample| {
            s.shrinker_entries
        }),
    ] {
        let grow = second_half_growth(samples, f);
        let end = f(&samples[samples.len() - 1]);
        if grow > 0.05 * cap as f64 {
            out.push(format!(
                "map fill drift: {name} +{grow:.0} over the second half (capacity {cap})"
            ));
        }
        if end >= 0.9 * cap as f64 {
            out.push(format!("map nearly full: {name} = {end:.0} of {cap}"));
        }
    }
    out
}

fn render(
    samples: &[Sample],
    procs: &[Proc],
    tail: &StreamTail,
    ran: Duration,
    steps: [u64; 3],
    failures: &[String],
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# memtrace soak: {:.1} min, {} samples\n\nWorkload steps: {} storm passes \
         (populate + drop_caches), {} OOM kills in one memcg, {} churn rounds of {} \
         memcgs created, charged and removed. OOM kills in the stream: {}.\n",
        ran.as_secs_f64() / 60.0,
        samples.len(),
        steps[0],
        steps[1],
        steps[2],
        CHURN_MEMCGS,
        tail.kills,
    );
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        let _ = writeln!(s, "No samples.");
        return s;
    };
    let _ = writeln!(
        s,
        "| process | RSS start | RSS end | fds start | fds end | CPU s | CPU % |\n|---|---|---|---|---|---|---|"
    );
    for (i, p) in procs.iter().enumerate() {
        let (Some(a), Some(b)) = (first.procs.get(i), last.procs.get(i)) else {
            continue;
        };
        let _ = writeln!(
            s,
            "| {} | {:.1} MiB | {:.1} MiB | {} | {} | {:.1} | {:.2} |",
            p.name,
            a.rss_kib / 1024.0,
            b.rss_kib / 1024.0,
            a.fds,
            b.fds,
            b.cpu_s,
            100.0 * b.cpu_s / (last.t - first.t).max(1e-9),
        );
    }
    let max = |f: fn(&Sample) -> f64| samples.iter().map(f).fold(0.0, f64::max);
    let _ = writeln!(
        s,
        "\n| map | start | end | max | capacity |\n|---|---|---|---|---|\n\
         | memcg_entries | {} | {} | {} | {MEMCG_CAPACITY} |\n\
         | shrinker_entries | {} | {} | {} | {SHRINKER_CAPACITY} |",
        first.memcg_entries,
        last.memcg_entries,
        max(|s| s.memcg_entries),
        first.shrinker_entries,
        last.shrinker_entries,
        max(|s| s.shrinker_entries),
    );
    let _ = writeln!(
        s,
        "\nLoss counters (sum over {} system records): {}; unmatched_returns (not a \
         loss) {}.\n",
        tail.systems,
        LOSSES
            .iter()
            .zip(&tail.losses)
            .map(|(n, v)| format!("{n} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        tail.unmatched_returns,
    );
    let _ = writeln!(
        s,
        "| t (s) | {} | memcg | shrinker |",
        procs
            .iter()
            .map(|p| format!("{0} RSS KiB | {0} fds | {0} CPU s", p.name))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(s, "|---|{}---|---|", "---|---|---|".repeat(procs.len()));
    for x in samples {
        let cols: Vec<String> = x
            .procs
            .iter()
            .map(|p| format!("{:.0} | {} | {:.2}", p.rss_kib, p.fds, p.cpu_s))
            .collect();
        let _ = writeln!(
            s,
            "| {:.0} | {} | {} | {} |",
            x.t,
            cols.join(" | "),
            x.memcg_entries,
            x.shrinker_entries
        );
    }
    let _ = writeln!(
        s,
        "\nVerdict: {}",
        if failures.is_empty() {
            "no drift, no loss".to_string()
        } else {
            failures.join("; ")
        }
    );
    s
}

/// What the scraper of record's `/metrics` saw.
#[derive(Default)]
struct Scraped {
    ok: u64,
    failed: u64,
    max_series: u64,
    last_error: String,
}

/// Scrapes record's `/metrics` every second, as a Prometheus would, for
/// the whole soak.
struct Scraper {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Scraped>,
}

impl Scraper {
    fn start(record_log: &Path) -> Result<Self> {
        let log = fs::read_to_string(record_log).unwrap_or_default();
        let addr = memtrace_testkit::metrics::served_addr(&log)
            .with_context(|| format!("record --listen said no address: {log}"))?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut s = Scraped::default();
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                match memtrace_testkit::metrics::try_http_get(addr, "/metrics", None) {
                    Ok((status, _, body)) if status.contains(" 200 ") => {
                        s.ok += 1;
                        let n = body
                            .lines()
                            .find_map(|l| l.strip_prefix("memtrace_metrics_series "))
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        s.max_series = s.max_series.max(n);
                    }
                    Ok((status, _, _)) => {
                        s.failed += 1;
                        s.last_error = status;
                    }
                    Err(e) => {
                        s.failed += 1;
                        s.last_error = e.to_string();
                    }
                }
                std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
            }
            s
        });
        Ok(Scraper { stop, thread })
    }

    fn stop(self) -> Scraped {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}
