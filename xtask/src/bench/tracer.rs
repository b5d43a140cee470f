//! The configurations a workload runs under: nothing, `memtrace stream`,
//! `memtrace record` (when the binary has it), and bpftrace doing the
//! closest equivalent on the same tracepoints.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::sys;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    Untraced,
    Stream,
    Record,
    Bpftrace,
    /// `memtrace stream --bench-floor`: empty programs on memtrace's hooks,
    /// attached the same way (the cost floor; profile only).
    Floor,
    /// `stream` of another memtrace binary (`--baseline-memtrace`, e.g. the
    /// previous release), for before/after in one run (profile only).
    Baseline,
    /// `memtrace stream --shrinker-time-sample 8`: one `do_shrink_slab`
    /// call in 8 timed, for what sampling saves and how far its estimate
    /// lands from timing every call (the default), in the same rounds
    /// (profile only).
    Sampled,
}

impl Config {
    pub fn name(self) -> &'static str {
        match self {
            Config::Untraced => "untraced",
            Config::Stream => "memtrace-stream",
            Config::Record => "memtrace-record",
            Config::Bpftrace => "bpftrace",
            Config::Floor => "empty-programs",
            Config::Baseline => "memtrace-baseline",
            Config::Sampled => "memtrace-sampled",
        }
    }

    pub fn all() -> [Config; 4] {
        [
            Config::Untraced,
            Config::Stream,
            Config::Record,
            Config::Bpftrace,
        ]
    }
}

/// bpftrace's equivalent of memtrace's tracepoint plan (memtrace's
/// tp_btf programs on this host): the same begin/end pairing by thread,
/// per-memcg counts and latency sums in (per-CPU) maps, printed at exit.
/// bpftrace 0.17 has no raw tracepoints, and the classic
/// `mm_shrink_slab_start` record carries no `shrink_control`, so shrinker
/// calls are counted per shrinker instead of per (memcg, shrinker); the
/// reclaim episodes are keyed by the task's memcg (css id), like
/// memtrace. `MEMCG_SUBSYS` is replaced by the kernel's `memory_cgrp_id`.
pub const BPFTRACE_SCRIPT: &str = r#"
BEGIN { printf("READY\n"); }
tracepoint:vmscan:mm_shrink_slab_start
{
  @dss_t[tid] = nsecs;
  @dss_s[tid] = args->shr;
}
tracepoint:vmscan:mm_shrink_slab_end
/@dss_t[tid]/
{
  $ns = nsecs - @dss_t[tid];
  $s = @dss_s[tid];
  $f = args->retval;
  @hits_do_shrink_slab = count();
  @shrinker_calls[$s] = count();
  @shrinker_ns[$s] = sum($ns);
  @shrinker_freed[$s] = sum($f > 0 ? $f : 0);
  delete(@dss_t[tid]);
  delete(@dss_s[tid]);
}
tracepoint:vmscan:mm_vmscan_memcg_reclaim_begin,
tracepoint:vmscan:mm_vmscan_direct_reclaim_begin
{
  @rc_t[tid] = nsecs;
  @rc_m[tid] = curtask->cgroups->subsys[MEMCG_SUBSYS]->id;
}
tracepoint:vmscan:mm_vmscan_memcg_reclaim_end,
tracepoint:vmscan:mm_vmscan_direct_reclaim_end
/@rc_t[tid]/
{
  $ns = nsecs - @rc_t[tid];
  $m = @rc_m[tid];
  @hits_reclaim = count();
  @reclaim_count[$m, probe] = count();
  @reclaim_ns[$m, probe] = sum($ns);
  @reclaim_pages[$m, probe] = sum(args->nr_reclaimed);
  @reclaim_hist[$m] = hist($ns);
  delete(@rc_t[tid]);
  delete(@rc_m[tid]);
}
tracepoint:vmscan:mm_vmscan_kswapd_wake
{
  @hits_kswapd_wake = count();
  if (@ks_t[tid] == 0) { @ks_t[tid] = nsecs; }
}
tracepoint:vmscan:mm_vmscan_kswapd_sleep
/@ks_t[tid]/
{
  @kswapd_ns = sum(nsecs - @ks_t[tid]);
  delete(@ks_t[tid]);
}
tracepoint:oom:mark_victim
{
  @hits_oom = count();
  @oom_kills[curtask->cgroups->subsys[MEMCG_SUBSYS]->id] = count();
  printf("oom_kill pid=%d comm=%s\n", args->pid, str(args->comm));
}
END
{
  clear(@dss_t); clear(@dss_s); clear(@rc_t); clear(@rc_m); clear(@ks_t);
}
"#;

/// `memory_cgrp_id` from the running kernel's BTF (4 on Debian's kernels).
pub fn memory_cgrp_id() -> u32 {
    let out = Command::new("bpftool")
        .args([
            "btf",
            "dump",
            "file",
            "/sys/kernel/btf/vmlinux",
            "format",
            "raw",
        ])
        .stderr(Stdio::null())
        .output();
    if let Ok(out) = out {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let l = line.trim();
            if let Some(rest) = l.strip_prefix("'memory_cgrp_id' val=")
                && let Ok(v) = rest.trim().parse()
            {
                return v;
            }
        }
    }
    4
}

/// Where a configuration's binaries and scratch files are.
pub struct Env {
    pub memtrace: PathBuf,
    pub record_available: bool,
    pub bpftrace_script: PathBuf,
    pub scratch: PathBuf,
    /// `--baseline-memtrace`: another memtrace binary to profile alongside.
    pub baseline: Option<PathBuf>,
}

/// A tracer running around one workload.
pub struct Running {
    config: Config,
    child: Option<Child>,
    out: PathBuf,
    stderr: PathBuf,
    started: Instant,
    pub ready_s: f64,
    cpu_at_ready_ns: u64,
    ready_at: Instant,
}

/// What a tracer cost and saw during one session.
#[derive(Debug, Default, Clone)]
pub struct Session {
    pub ready_s: f64,
    pub startup_cpu_s: f64,
    pub cpu_s: f64,
    pub maxrss_kib: u64,
    pub traced_s: f64,
    pub records: u64,
    /// Hook hits (entry+exit pairs) by kind, from the tracer's own output.
    pub hits: Hits,
    pub losses: Value,
    pub exit: String,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Hits {
    /// `try_charge_memcg` and `shrink_slab` calls (function-hook plans only).
    pub charge: u64,
    pub shrink_slab: u64,
    pub do_shrink_slab: u64,
    /// memtrace's `do_shrink_slab_ns` (an estimate when sampled), not a hit.
    pub do_shrink_ns: u64,
    pub reclaim: u64,
    pub kswapd_wakes: u64,
    pub oom: u64,
}

impl Hits {
    pub fn total(&self) -> u64 {
        self.charge
            + self.shrink_slab
            + self.do_shrink_slab
            + self.reclaim
            + self.kswapd_wakes
            + self.oom
    }
    pub fn to_json(self) -> Value {
        json!({
            "charge": self.charge,
            "shrink_slab": self.shrink_slab,
            "do_shrink_slab": self.do_shrink_slab,
            "do_shrink_ns": self.do_shrink_ns,
            "reclaim": self.reclaim,
            "kswapd_wakes": self.kswapd_wakes,
            "oom": self.oom,
            "total": self.total(),
        })
    }
}

impl Session {
    pub fn to_json(&self) -> Value {
        json!({
            "ready_s": self.ready_s,
            "startup_cpu_s": self.startup_cpu_s,
            "cpu_s": self.cpu_s,
            "cpu_after_ready_s": (self.cpu_s - self.startup_cpu_s).max(0.0),
            "maxrss_kib": self.maxrss_kib,
            "traced_s": self.traced_s,
            "records": self.records,
            "hits": self.hits.to_json(),
            "losses": self.losses,
            "exit": self.exit,
        })
    }
}

pub fn start(config: Config, env: &Env, tag: &str) -> Result<Running> {
    let out = env.scratch.join(format!("{tag}.out"));
    let stderr = env.scratch.join(format!("{tag}.stderr"));
    let _ = fs::remove_file(&out);
    let _ = fs::remove_file(&stderr);
    let started = Instant::now();
    // `memtrace <args> <out>`, its stderr kept for the report.
    let memtrace_bin = |bin: &Path, args: &[&str]| -> Result<Child> {
        Command::new(bin)
            .args(args)
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr)?)
            .spawn()
            .with_context(|| format!("starting {} {}", bin.display(), args[0]))
    };
    let memtrace = |args: &[&str]| memtrace_bin(&env.memtrace, args);
    let child = match config {
        Config::Untraced => None,
        Config::Stream => Some(memtrace(&["stream", "--interval", "1s", "--output"])?),
        Config::Sampled => Some(memtrace(&[
            "stream",
            "--shrinker-time-sample",
            "8",
            "--interval",
            "1s",
            "--output",
        ])?),
        Config::Baseline => {
            let Some(bin) = &env.baseline else {
                bail!("no --baseline-memtrace given");
            };
            Some(memtrace_bin(
                bin,
                &["stream", "--interval", "1s", "--output"],
            )?)
        }
        Config::Floor => Some(memtrace(&[
            "stream",
            "--bench-floor",
            "--interval",
            "1s",
            "--output",
        ])?),
        Config::Record => {
            if !env.record_available {
                bail!("memtrace record is not available in this binary");
            }
            let _ = fs::remove_dir_all(&out);
            Some(memtrace(&["record", "--dir"])?)
        }
        Config::Bpftrace => Some(
            // Classic tracepoints need tracefs; mount it in a private
            // namespace so the host's mount table is left alone.
            Command::new("unshare")
                .args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
                .arg(
                    "mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null; \
                     exec bpftrace \"$0\"",
                )
                .arg(&env.bpftrace_script)
                .stdin(Stdio::null())
                .stdout(fs::File::create(&out)?)
                .stderr(fs::File::create(&stderr)?)
                .spawn()
                .context("starting bpftrace")?,
        ),
    };
    let mut r = Running {
        config,
        child,
        out,
        stderr,
        started,
        ready_s: 0.0,
        cpu_at_ready_ns: 0,
        ready_at: started,
    };
    r.wait_ready()?;
    Ok(r)
}

impl Running {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn wait_ready(&mut self) -> Result<()> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        let deadline = self.started + Duration::from_secs(60);
        loop {
            if self.is_ready(pid) {
                break;
            }
            if let Some(u) = sys::try_reap(pid) {
                if let Some(c) = self.child.take() {
                    std::mem::forget(c);
                }
                let err = fs::read_to_string(&self.stderr).unwrap_or_default();
                bail!(
                    "{} exited before it was ready (status {}): {}",
                    self.config.name(),
                    u.status,
                    err.chars().take(600).collect::<String>()
                );
            }
            if Instant::now() > deadline {
                bail!("{} not ready after 60 s", self.config.name());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.ready_at = Instant::now();
        self.ready_s = self.started.elapsed().as_secs_f64();
        self.cpu_at_ready_ns = sys::proc_cpu_ns(pid).unwrap_or(0);
        Ok(())
    }

    fn is_ready(&self, pid: u32) -> bool {
        match self.config {
            Config::Untraced => true,
            // The header line is written once every program is attached.
            Config::Stream | Config::Floor | Config::Baseline | Config::Sampled => {
                fs::read_to_string(&self.out)
                    .map(|s| s.contains('\n'))
                    .unwrap_or(false)
            }
            Config::Record => fs::read_dir(&self.out)
                .map(|d| {
                    d.flatten()
                        .any(|e| e.metadata().is_ok_and(|m| m.is_file() && m.len() > 0))
                })
                .unwrap_or(false),
            // BEGIN runs before the tracepoints attach: also wait until the
            // announced number of probes has its perf events open.
            Config::Bpftrace => {
                let text = fs::read_to_string(&self.out).unwrap_or_default();
                if !text.contains("READY") {
                    return false;
                }
                let probes: usize = text
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("Attaching ")?
                            .split(' ')
                            .next()?
                            .parse()
                            .ok()
                    })
                    .unwrap_or(usize::MAX);
                let perf = fs::read_dir(format!("/proc/{pid}/fd"))
                    .map(|d| {
                        d.flatten()
                            .filter(|e| {
                                fs::read_link(e.path())
                                    .is_ok_and(|t| t.to_string_lossy().contains("perf_event"))
                            })
                            .count()
                    })
                    .unwrap_or(0);
                perf >= probes
            }
        }
    }

    /// Stops the tracer (SIGINT, then SIGKILL after 20 s) and reads what it
    /// wrote.
    pub fn stop(mut self) -> Result<Session> {
        let mut s = Session {
            ready_s: self.ready_s,
            ..Session::default()
        };
        let Some(child) = self.child.take() else {
            return Ok(s);
        };
        let pid = child.id();
        s.traced_s = self.ready_at.elapsed().as_secs_f64();
        let hwm = sys::proc_hwm_kib(pid).unwrap_or(0);
        sys::signal(pid, sys::SIGINT);
        // memtrace must flush and exit within 20 s of SIGINT (its own
        // contract, RELIABILITY.md). bpftrace prints its maps at exit and
        // once took longer than that in a storm session (a full run was
        // lost to it): it gets a minute.
        let grace = match self.config {
            Config::Bpftrace => Duration::from_secs(60),
            _ => Duration::from_secs(20),
        };
        let u = sys::wait_usage(child, grace)?;
        s.cpu_s = (u.user_ns + u.sys_ns) as f64 / 1e9;
        s.startup_cpu_s = self.cpu_at_ready_ns as f64 / 1e9;
        s.maxrss_kib = u.maxrss_kib.max(hwm);
        s.exit = match (u.exit_code(), u.killed_by()) {
            (Some(c), _) => format!("exit {c}"),
            (_, Some(sig)) => format!("signal {sig}"),
            _ => format!("status {}", u.status),
        };
        match self.config {
            Config::Stream | Config::Floor | Config::Baseline | Config::Sampled => {
                let (records, hits, losses) = parse_stream(&self.out)?;
                s.records = records;
                s.hits = hits;
                s.losses = losses;
            }
            Config::Record => {
                let mut records = 0;
                let mut hits = Hits::default();
                let mut losses = Value::Null;
                for e in fs::read_dir(&self.out)?.flatten() {
                    if let Ok((r, h, l)) = parse_stream(&e.path()) {
                        records += r;
                        hits.charge += h.charge;
                        hits.shrink_slab += h.shrink_slab;
                        hits.do_shrink_slab += h.do_shrink_slab;
                        hits.reclaim += h.reclaim;
                        hits.kswapd_wakes += h.kswapd_wakes;
                        hits.oom += h.oom;
                        if !l.is_null() {
                            losses = l;
                        }
                    }
                }
                s.records = records;
                s.hits = hits;
                s.losses = losses;
            }
            Config::Bpftrace => {
                let text = fs::read_to_string(&self.out).unwrap_or_default();
                s.hits = parse_bpftrace(&text);
                s.records = text.lines().filter(|l| l.starts_with('@')).count() as u64;
            }
            Config::Untraced => {}
        }
        Ok(s)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            sys::signal(c.id(), sys::SIGKILL);
            let _ = sys::wait_usage(c, Duration::from_secs(10));
        }
    }
}

/// Records, hook hits and the last `system` record's loss counters of a
/// memtrace NDJSON stream.
pub fn parse_stream(path: &Path) -> Result<(u64, Hits, Value)> {
    let f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut records = 0;
    let mut hits = Hits::default();
    let mut last_system = Value::Null;
    for line in BufReader::new(f).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        records += 1;
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        match v["type"].as_str() {
            Some("memcg_interval") => {
                hits.charge += n("charge_calls");
                hits.shrink_slab += n("shrink_slab_calls");
                hits.do_shrink_slab += n("do_shrink_slab_calls");
                hits.do_shrink_ns += n("do_shrink_slab_ns");
                hits.reclaim += n("reclaim_memcg_count") + n("reclaim_direct_count");
            }
            Some("oom_kill") if v["before_start"] != Value::Bool(true) => hits.oom += 1,
            Some("system") => last_system = v,
            _ => {}
        }
    }
    hits.kswapd_wakes = last_system["kswapd_wakes"].as_u64().unwrap_or(0);
    let keys = memtrace::output::records::System::KERNEL_LOSSES
        .into_iter()
        .chain(["map_evictions", "prog_recursion_misses"]);
    let losses = if last_system.is_null() {
        Value::Null
    } else {
        Value::Object(
            keys.map(|k| (k.to_string(), last_system[k].clone()))
                .collect(),
        )
    };
    Ok((records, hits, losses))
}

/// The `@hits_*` scalars bpftrace prints at exit.
pub fn parse_bpftrace(text: &str) -> Hits {
    let get = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("@{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Hits {
        charge: 0,
        shrink_slab: 0,
        do_shrink_slab: get("hits_do_shrink_slab"),
        do_shrink_ns: 0,
        reclaim: get("hits_reclaim"),
        kswapd_wakes: get("hits_kswapd_wake"),
        oom: get("hits_oom"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpftrace_hits() {
        let out = "Attaching 12 probes...\nREADY\n\n@hits_do_shrink_slab: 307\n\
                   @hits_reclaim: 12\n@shrinker_calls[0xffff]: 3\n";
        let h = parse_bpftrace(out);
        assert_eq!((h.do_shrink_slab, h.reclaim, h.oom), (307, 12, 0));
        assert_eq!(h.total(), 319);
    }

    #[test]
    fn script_has_the_placeholder() {
        assert!(BPFTRACE_SCRIPT.contains("subsys[MEMCG_SUBSYS]"));
    }
}
