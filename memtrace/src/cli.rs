//! Command-line interface.
use std::{path::PathBuf, time::Duration};

use clap::{Args, CommandFactory, Parser, Subcommand, error::ErrorKind};

use crate::{
    kernel::plan::AttachMode,
    source::{
        loader::{LoadOptions, MapSizes},
        map_memory,
    },
};

#[derive(Parser, Debug)]
#[command(
    name = "memtrace",
    version,
    about = "Where memory-cgroup pressure goes: reclaim cost, shrinker work and OOM kills per memcg",
    after_help = "Examples:\n  memtrace doctor\n  memtrace stream --interval 1s\n  memtrace stream --interval 5s --duration 10m --output /var/log/memtrace.ndjson\n\nExit status: 0 success, 1 runtime error, 2 usage error."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Checks that span several flags, which clap's per-value parsers
    /// cannot make: a failure is a usage error (exit 2) like theirs.
    pub fn check(&self) -> Result<(), clap::Error> {
        let probe = match &self.command {
            // A replay loads nothing into the kernel.
            Command::Stream(a) if a.replay.is_none() => &a.probe,
            Command::Top(a) if a.replay.is_none() => &a.probe,
            Command::Record(a) => &a.probe,
            Command::Doctor(a) => &a.probe,
            _ => return Ok(()),
        };
        let sizes = probe.map_sizes();
        match map_memory::over_budget(&sizes, map_memory::possible_cpus(), &map_memory::budget()) {
            None => Ok(()),
            Some(why) => Err(Cli::command().error(ErrorKind::ValueValidation, why)),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// NDJSON event stream: OOM kills, slow charges/reclaims, and with
    /// --interval per-memcg summaries
    #[command(
        after_help = "Examples:\n  memtrace stream                       # OOM kills and slow events as they happen\n  memtrace stream --interval 1s | jq 'select(.type==\"memcg_interval\")'\n  memtrace stream --attach tracepoint --interval 2s --duration 30s --output out.ndjson"
    )]
    Stream(StreamArgs),
    /// Live view of containers (or memcgs) ranked by reclaim cost
    #[command(
        after_help = "Examples:\n  memtrace top\n  memtrace top --by memcg --sort do-shrink\n  memtrace top --batch --iterations 3          # plain text frames, like top -b\n  memtrace top --json --iterations 1 | jq .\n  memtrace top --replay capture.ndjson          # no root needed\n\nKeys: q quit, ? help, / filter, s/S sort column, enter details, p pause."
    )]
    Top(TopArgs),
    /// The incident agent: captures sys-time spikes and writes OOM post-mortems
    #[command(
        after_help = "Examples:\n  memtrace record                                   # /var/lib/memtrace, sys > 50% for 2 s\n  memtrace record --dir /srv/memtrace --sys-threshold 30 --for 5s --pre 2m\n  memtrace record --listen 127.0.0.1:9750         # also Prometheus metrics on /metrics\n  memtrace report /var/lib/memtrace/oom.ndjson"
    )]
    Record(RecordArgs),
    /// Explain a capture, a stream file or an OOM log (no root needed)
    #[command(
        after_help = "Examples:\n  memtrace report /var/lib/memtrace/capture-20261122T030500Z.ndjson\n  memtrace report /var/lib/memtrace/oom.ndjson\n  memtrace report stream.ndjson --json | jq .\n  memtrace report capture.ndjson --html incident.html   # charts, one file, opens offline"
    )]
    Report(ReportArgs),
    /// What this kernel supports and the attach plan memtrace would use
    #[command(
        after_help = "Examples:\n  memtrace doctor\n  memtrace doctor --json | jq .plan\n  memtrace doctor --attach kprobe   # the plan (or the error) stream --attach kprobe would get"
    )]
    Doctor(DoctorArgs),
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 1s, 2m)"))
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        Err("must be greater than zero".into())
    } else {
        Ok(d)
    }
}

/// The largest ring buffer whose size in bytes fits the map's u32
/// max_entries (2 GiB). The kernel's own cap is higher (ringbuf.c:
/// RINGBUF_MAX_DATA_SZ, 64 GiB with 4 KiB pages) and its only other rule is
/// the power-of-two number of pages checked below, so every value accepted
/// here passes the kernel's EINVAL checks (2 GiB was created on 6.18; a
/// size that is not a power of two got EINVAL). What remains is ENOMEM,
/// which the budget check and the loader's error explain.
const RINGBUF_MAX_KIB: u32 = 1 << 21;

/// `--ringbuf-kib`: the kernel refuses a ring buffer whose size is not a
/// power of two or not a multiple of the page size (EINVAL at load time);
/// checking here makes a bad value a usage error that names the rule.
fn parse_ringbuf_kib(s: &str) -> Result<u32, String> {
    let kib: u32 = s.parse().map_err(|e| format!("{e}"))?;
    // Page sizes are powers of two, so a power of two at least this large
    // is a whole number of pages.
    let page_kib = u32::try_from(crate::cgroup::state::page_size() / 1024)
        .unwrap_or(1)
        .max(1);
    if kib.is_power_of_two() && (page_kib..=RINGBUF_MAX_KIB).contains(&kib) {
        Ok(kib)
    } else {
        Err(format!(
            "must be a power of two from {page_kib} (the page size) to {RINGBUF_MAX_KIB} (2 GiB): \
             the kernel needs a ring buffer of a power-of-two number of whole pages"
        ))
    }
}

/// `--shrinker-time-sample`: a power of two, so that the programs draw
/// "one in N" with a mask.
fn parse_time_sample(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if n.is_power_of_two() && n <= 1024 {
        Ok(n)
    } else {
        Err("must be a power of two from 1 to 1024 (1 times every call)".into())
    }
}

#[derive(Args, Debug, Clone)]
pub struct ProbeArgs {
    /// Program family for the function hooks; reclaim tracepoints are used in every mode
    #[arg(long, value_enum, default_value = "auto")]
    pub attach: AttachMode,
    /// Max memcgs tracked in the kernel at once
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(16..))]
    pub memcg_entries: u32,
    /// Max (memcg, shrinker) pairs tracked in the kernel at once
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(16..))]
    pub shrinker_entries: u32,
    /// Max calls in progress tracked at once (entry/return pairing)
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(16..))]
    pub inflight_entries: u32,
    /// Ring buffer size in KiB for OOM and slow events (a power of two, at
    /// least the page size)
    #[arg(long, default_value_t = 256, value_parser = parse_ringbuf_kib)]
    pub ringbuf_kib: u32,
    /// Report charges slower than this as slow_charge records (0 = never)
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub slow_charge: Duration,
    /// Report reclaims slower than this as slow_reclaim records (0 = never)
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub slow_reclaim: Duration,
    /// Time only one do_shrink_slab call in N, chosen at random, its time
    /// counting N times: the calls not timed skip both clock reads (8-33%
    /// of a shrinker call's program time at N=8), but shrinker times
    /// become estimates, noisy where a few long calls carry the time (every
    /// count stays exact). A power of two up to 1024; 1 times every call
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_time_sample)]
    pub shrinker_time_sample: u32,
    /// For `cargo xtask bench` only: attach empty programs on the same
    /// hooks (the cost floor); every count stays 0
    #[arg(long, hide = true)]
    pub bench_floor: bool,
}

impl ProbeArgs {
    pub fn map_sizes(&self) -> MapSizes {
        MapSizes {
            memcg_entries: self.memcg_entries,
            shrinker_entries: self.shrinker_entries,
            inflight_entries: self.inflight_entries,
            // At most 2 GiB (parse_ringbuf_kib), so this cannot overflow.
            ringbuf_bytes: self.ringbuf_kib * 1024,
        }
    }

    pub fn load_options(&self) -> anyhow::Result<LoadOptions> {
        Ok(LoadOptions {
            mode: self.attach,
            maps: self.map_sizes(),
            slow_charge_ns: self.slow_charge.as_nanos() as u64,
            slow_reclaim_ns: self.slow_reclaim.as_nanos() as u64,
            shrinker_time_sample: self.shrinker_time_sample,
            floor: self.bench_floor,
        })
    }
}

/// Which memcgs to show.
#[derive(Args, Debug, Clone)]
pub struct FilterArgs {
    /// Only memcgs whose path matches GLOB: shell rules (`*`, `?`, `[a-z]`,
    /// `[!a-z]` never match `/`), `**` as a whole component for any depth
    /// (`/kubepods.slice/**`), `{a,b}` for either; `\` escapes
    #[arg(long, value_name = "GLOB", value_parser = crate::filter::CgroupGlob::parse)]
    pub cgroup: Option<crate::filter::CgroupGlob>,
    /// Only memcgs of containers whose id (or name) starts with PREFIX
    #[arg(long, value_name = "ID-PREFIX")]
    pub container: Option<String>,
}

impl FilterArgs {
    pub fn filter(&self) -> anyhow::Result<crate::filter::Filter> {
        Ok(crate::filter::Filter::new(
            self.cgroup.clone(),
            self.container.as_deref(),
        ))
    }
}

/// Where the container runtimes keep their state, to name containers.
#[derive(Args, Debug, Clone)]
pub struct NameArgs {
    /// Where the host's filesystem is (an agent in a container with the
    /// host mounted at /host): prefixes every runtime root below and the
    /// kubelet's log dirs (/var/log/pods, /var/log/containers)
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub host_root: PathBuf,
    /// Docker's data-root on the host [default: /var/lib/docker]
    #[arg(long, value_name = "DIR")]
    pub docker_root: Option<PathBuf>,
    /// containers/storage graphroot on the host (CRI-O, Podman)
    /// [default: /var/lib/containers/storage]
    #[arg(long, value_name = "DIR")]
    pub containers_storage_root: Option<PathBuf>,
    /// containerd's state dir on the host [default: /run/containerd and
    /// k3s's /run/k3s/containerd]
    #[arg(long, value_name = "DIR")]
    pub containerd_state: Option<PathBuf>,
}

impl NameArgs {
    pub fn roots(&self) -> crate::cgroup::runtime::Roots {
        crate::cgroup::runtime::Roots::new(
            &self.host_root,
            self.docker_root.as_deref(),
            self.containers_storage_root.as_deref(),
            self.containerd_state.as_deref(),
        )
    }
}

#[derive(Args, Debug)]
pub struct StreamArgs {
    #[command(flatten)]
    pub probe: ProbeArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub names: NameArgs,
    /// Re-emit the records of FILE (written by `stream --output` or `top
    /// --save`) instead of reading the kernel; no root needed
    #[arg(long, value_name = "FILE", conflicts_with_all = ["interval", "duration"])]
    pub replay: Option<PathBuf>,
    /// Write to FILE (appended, created 0600) instead of stdout
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Emit per-memcg memcg_interval records every DURATION
    #[arg(long, value_parser = parse_positive_duration)]
    pub interval: Option<Duration>,
    /// Stop after DURATION (default: until SIGINT/SIGTERM)
    #[arg(long, value_parser = parse_positive_duration)]
    pub duration: Option<Duration>,
    /// How old a carried cgroupfs state may get: a memcg only scanned by
    /// shrinkers keeps its last read state (with its age, state_age_ns)
    /// until then, each memcg falling due between half of this and all of
    /// it; 0 reads every state every interval (docs/events.md)
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub state_max_age: Duration,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    #[command(flatten)]
    pub probe: ProbeArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub names: NameArgs,
    /// Refresh every DURATION (a replay advances one interval per refresh)
    #[arg(long, default_value = "1s", value_parser = parse_positive_duration)]
    pub interval: Duration,
    /// One row per container, or per memcg
    #[arg(long, value_enum, default_value = "container")]
    pub by: crate::top::By,
    /// Initial sort column (descending)
    #[arg(long, value_enum, default_value = "reclaim")]
    pub sort: crate::top::Column,
    /// Plain-text frames on stdout, no escape codes (scripts, no TTY)
    #[arg(long)]
    pub batch: bool,
    /// Rows as NDJSON (`"type":"top_row"`), one frame per interval
    #[arg(long)]
    pub json: bool,
    /// With --batch/--json: stop after N frames
    #[arg(long, value_name = "N")]
    pub iterations: Option<u64>,
    /// Read records from FILE (from `stream --output` or `top --save`) instead of the kernel; no root needed
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// Also append the records behind the view to FILE (replayable)
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    pub save: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RecordArgs {
    #[command(flatten)]
    pub probe: ProbeArgs,
    #[command(flatten)]
    pub names: NameArgs,
    /// Directory for captures and text post-mortems (created 0750)
    #[arg(long, default_value = "/var/lib/memtrace")]
    pub dir: PathBuf,
    /// OOM post-mortems, one JSON record per line [default: DIR/oom.ndjson]
    #[arg(long, value_name = "FILE")]
    pub oom_log: Option<PathBuf>,
    /// Rotate the OOM log to FILE.1 beyond this many MiB
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub oom_log_max_mib: u64,
    /// Print text post-mortems on stderr instead of files in DIR
    #[arg(long)]
    pub oom_text_stderr: bool,
    /// Sampling interval
    #[arg(long, default_value = "1s", value_parser = parse_positive_duration)]
    pub interval: Duration,
    /// How old a carried cgroupfs state may get: a memcg only scanned by
    /// shrinkers keeps its last read state (with its age, state_age_ns)
    /// until then, each memcg falling due between half of this and all of
    /// it; 0 reads every state every interval (docs/events.md)
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub state_max_age: Duration,
    /// How much history to keep in memory
    #[arg(long, default_value = "5m", value_parser = parse_positive_duration)]
    pub history: Duration,
    /// Upper bound on the history's memory, in MiB
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub history_max_mib: u64,
    /// Capture when system-wide sys% stays at or above this
    #[arg(long, default_value_t = 50.0)]
    pub sys_threshold: f64,
    /// ... for this long
    #[arg(long = "for", default_value = "2s", value_parser = parse_duration)]
    pub sustain: Duration,
    /// History before the spike to include in a capture
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub pre: Duration,
    /// How long to keep recording after the trigger
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub post: Duration,
    /// After a capture, the next needs sys% to drop below the threshold and this long to pass
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub cooldown: Duration,
    /// Keep at most this many captures (the oldest are removed)
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_captures: u64,
    /// Largest capture, in MiB (records beyond are left out and counted)
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_capture_mib: u64,
    /// Serve Prometheus metrics on ADDR (IP:PORT, e.g. 127.0.0.1:9750 or
    /// [::]:9750): /metrics and /healthz (docs/metrics.md)
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub listen: Option<std::net::SocketAddr>,
    /// With --listen: at most N series on /metrics (memcgs beyond are left
    /// out whole, and memtrace_metrics_series_limit_reached says so)
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub metrics_max_series: u64,
}

/// `--listen`: an address and port, so a typo is a usage error (exit 2)
/// and not a failure after the programs loaded.
fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse().map_err(|e| {
        format!("{e}: expected IP:PORT, e.g. 127.0.0.1:9750, 0.0.0.0:9750 or [::]:9750")
    })
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A capture (from `record`), a stream file (from `stream --output` or
    /// `top --save`) or an OOM log (`record`'s oom.ndjson)
    pub file: PathBuf,
    /// One JSON object instead of text
    #[arg(long)]
    pub json: bool,
    /// Write the report as one self-contained HTML page with timeline
    /// charts (no script, nothing fetched) to this file instead
    #[arg(long, value_name = "OUT.html", conflicts_with = "json")]
    pub html: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub probe: ProbeArgs,
    /// One JSON object instead of text
    #[arg(long)]
    pub json: bool,
}
