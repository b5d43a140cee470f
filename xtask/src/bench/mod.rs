//! `cargo xtask bench [--quick]`: what memtrace costs, measured.
//!
//! Host (this kernel, tracepoint plan): three workloads (shrinker storm,
//! charge/reclaim churn, OOM loop), each run under every configuration
//! (untraced, `memtrace stream`, `memtrace record` when the binary has it,
//! bpftrace on the same tracepoints), interleaved within each round, over
//! several rounds. Then the kernel-side cost per program from
//! `kernel.bpf_stats_enabled`, the replay pipeline's throughput without a
//! kernel, and (unless `--no-vm`) the storm and churn in qemu guests whose
//! kernels let memtrace use fentry and kprobes.
//!
//! Everything that loads BPF or touches memcgs holds the kernel-test lock
//! (`/tmp/memtrace-kernel-tests.lock`, as the integration tests do), and
//! every memcg, mount, file and process is removed by Drop guards.
//! Raw results go to `target/bench/results-<time>.json` (and
//! `latest.json`); `--report FILE` re-renders the tables from one. No
//! timing is asserted anywhere. BENCHMARKS.md explains the numbers.

mod agent;
pub(crate) mod cg;
mod guest;
mod pipeline;
mod profile;
mod report;
pub(crate) mod sys;
mod tracer;
pub(crate) mod workload;

use std::{
    fs,
    path::PathBuf,
    process::Command,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{build, cmd};
use tracer::Config;
use workload::{Kind, Params};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Fewer rounds and smaller workloads (under 5 minutes).
    #[arg(long)]
    pub quick: bool,
    /// Rounds per configuration (default 7, --quick 3).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// memcgs in the shrinker storm (default 2000, --quick 500).
    #[arg(long)]
    pub memcgs: Option<usize>,
    /// Skip the qemu guest benchmarks.
    #[arg(long)]
    pub no_vm: bool,
    /// Use the existing target/release/memtrace instead of building it.
    #[arg(long)]
    pub no_build: bool,
    /// Only re-render the tables from a results JSON written by a run.
    #[arg(long, value_name = "RESULTS_JSON")]
    pub report: Option<PathBuf>,
    /// Run only these parts (repeatable; default all): `rounds` (the timed
    /// host workloads), `profile` (per-program kernel accounting, with the
    /// empty-program floor), `agent` (the agent's interval with every storm
    /// memcg active, and its memory), `pipeline` (replay), `guests` (qemu).
    #[arg(long, value_enum, value_name = "PART")]
    pub only: Vec<Part>,
    /// Rounds of the bpf_stats profile (default 5, --quick 2).
    #[arg(long)]
    pub profile_rounds: Option<usize>,
    /// Another memtrace binary (e.g. the previous commit's release build)
    /// the profile also runs, side by side, for before/after figures.
    #[arg(long, value_name = "BIN")]
    pub baseline_memtrace: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Rounds,
    Profile,
    Agent,
    Pipeline,
    Guests,
}

impl BenchArgs {
    fn runs(&self, part: Part) -> bool {
        (self.only.is_empty() || self.only.contains(&part)) && !(part == Part::Guests && self.no_vm)
    }
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    let out_dir = cmd::target_dir().join("bench");
    fs::create_dir_all(&out_dir)?;
    if let Some(path) = &args.report {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let results: Value = serde_json::from_str(&text)?;
        let md = report::render(&results);
        println!("{md}");
        fs::write(out_dir.join("latest.md"), &md)?;
        return Ok(());
    }
    if !sys::is_root() {
        bail!("the bench loads BPF programs and creates memcgs: run it as root");
    }
    let started = Instant::now();
    let quick = args.quick;
    let rounds = args.rounds.unwrap_or(if quick { 3 } else { 7 }).max(1);
    let params = Params {
        storm_memcgs: args.memcgs.unwrap_or(if quick { 500 } else { 2000 }),
        storm_dentries: 8,
        storm_drops: if quick { 2 } else { 4 },
        churn_mib: if quick { 256 } else { 1024 },
        churn_limit_mib: 64,
        oom_kills: if quick { 5 } else { 15 },
        oom_limit_mib: 32,
    };

    // Build and install first: nothing below may fail for want of a tool.
    let memtrace = if args.no_build {
        cmd::target_dir().join("release/memtrace")
    } else {
        build::build(false)?.binary
    };
    let ceiling = serde_ceiling(args.no_build);
    if !memtrace.is_file() {
        bail!(
            "{} is missing (run `cargo xtask build`)",
            memtrace.display()
        );
    }
    crate::setup::ensure_installed(&["bpftrace", "bpftool", "util-linux"])?;
    let record_available = Command::new(&memtrace)
        .args(["record", "--help"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let static_memtrace = if !args.runs(Part::Guests) {
        None
    } else {
        Some(guest::static_binary(args.no_build)?)
    };

    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let scratch = out_dir.join(format!("run-{stamp}"));
    fs::create_dir_all(&scratch)?;
    let _scratch_guard = ScratchGuard(scratch.clone());
    let script = scratch.join("memtrace-equiv.bt");
    fs::write(
        &script,
        tracer::BPFTRACE_SCRIPT.replace("MEMCG_SUBSYS", &tracer::memory_cgrp_id().to_string()),
    )?;
    let env = tracer::Env {
        memtrace: memtrace.clone(),
        record_available,
        bpftrace_script: script,
        scratch: scratch.clone(),
        baseline: args.baseline_memtrace.clone(),
    };

    let mut results = json!({
        "schema": 1,
        "quick": quick,
        "started_unix": stamp,
        "machine": machine(),
        "memtrace": {
            "binary": memtrace.display().to_string(),
            "record_available": record_available,
            "bpftrace": command_line(&["bpftrace", "--version"]),
        },
        "rounds": rounds,
        "only": args.only.iter().map(|p| format!("{p:?}").to_lowercase()).collect::<Vec<_>>(),
        "params": params.to_json(),
        "configs": Config::all().iter().map(|c| json!({
            "name": c.name(),
            "available": *c != Config::Record || record_available,
        })).collect::<Vec<_>>(),
        "commands": {
            "memtrace-stream": "memtrace stream --interval 1s --output FILE",
            "memtrace-record": "memtrace record --dir DIR",
            "bpftrace": "bpftrace memtrace-equiv.bt (tracefs mounted in a private mount namespace)",
        },
    });

    // ------------------------------------------------ host kernel phase
    let host = [Part::Rounds, Part::Agent, Part::Profile, Part::Pipeline]
        .into_iter()
        .any(|p| args.runs(p));
    let mnt = PathBuf::from(format!("/tmp/{}{}-mnt", cg::PREFIX, std::process::id()));
    let mut generated = None;
    if host {
        let _lock = sys::KernelLock::take()?;
        cg::clean_stale();
        let _mnt_guard = ScratchGuard(mnt.clone());
        let mut w = workload::Workloads::setup(params.clone(), &scratch, &mnt)?;
        results["cgroup_mode"] = json!(w.cgroup_mode());
        let configs: Vec<Config> = Config::all()
            .into_iter()
            .filter(|c| *c != Config::Record || record_available)
            .collect();
        // Warm-up, not recorded: first-touch costs (page tables, dentries).
        for kind in [Kind::Storm, Kind::Churn, Kind::Oom] {
            w.run(kind)?;
        }
        if args.runs(Part::Agent) {
            results["agent"] = agent::intervals(&env, &mut w, if quick { 3 } else { 16 })
                .unwrap_or_else(|e| {
                    eprintln!("bench: agent interval measurement failed: {e:#}");
                    json!({"error": format!("{e:#}")})
                });
            results["agent_listen"] = agent::record_listen(&env, &mut w, if quick { 3 } else { 5 })
                .unwrap_or_else(|e| {
                    eprintln!("bench: record --listen measurement failed: {e:#}");
                    json!({"error": format!("{e:#}")})
                });
        }
        if args.runs(Part::Rounds) {
            let mut samples = Vec::new();
            for round in 0..rounds {
                for kind in [Kind::Storm, Kind::Churn, Kind::Oom] {
                    // Rotate the order so no configuration always runs first.
                    let mut order = configs.clone();
                    order.rotate_left(round % configs.len());
                    for config in order {
                        let s = session(&env, &mut w, kind, config, round)?;
                        eprintln!(
                            "bench: round {}/{rounds} {:<6} {:<16} kernel {:.4}s wall {:.4}s hits {}",
                            round + 1,
                            kind.name(),
                            config.name(),
                            s["workload"]["kernel_s"].as_f64().unwrap_or(f64::NAN),
                            s["workload"]["wall_s"].as_f64().unwrap_or(f64::NAN),
                            s["tracer"]["hits"]["total"]
                        );
                        samples.push(s);
                    }
                }
            }
            results["samples"] = Value::Array(samples);
        }
        if args.runs(Part::Profile) {
            let profile_rounds = args
                .profile_rounds
                .unwrap_or(if quick { 2 } else { 5 })
                .max(1);
            results["profile"] = profile::run(&env, &mut w, profile_rounds).unwrap_or_else(|e| {
                eprintln!("bench: bpf_stats profile failed: {e:#}");
                json!({"error": format!("{e:#}")})
            });
        }
        if args.runs(Part::Pipeline) {
            generated = Some(pipeline::generate(&env, &mut w)?);
        }
    }

    // ------------------------------------------------ no kernel needed
    if let Some(generated) = generated {
        results["pipeline"] = pipeline::replay(&env, &generated, quick, ceiling.as_deref())?;
        let _ = fs::remove_file(&generated);
    }

    if let Some(bin) = &static_memtrace {
        results["guests"] = guest::run(bin, quick).unwrap_or_else(|e| {
            eprintln!("bench: guest benchmarks failed: {e:#}");
            json!([{"error": format!("{e:#}")}])
        });
    }
    results["elapsed_s"] = json!(started.elapsed().as_secs_f64());

    let path = out_dir.join(format!("results-{stamp}.json"));
    let text = serde_json::to_string_pretty(&results)?;
    fs::write(&path, &text)?;
    fs::write(out_dir.join("latest.json"), &text)?;
    let md = report::render(&results);
    fs::write(out_dir.join("latest.md"), &md)?;
    println!("{md}");
    eprintln!(
        "bench: done in {:.0}s; raw results {} (tables: cargo xtask bench --report {})",
        started.elapsed().as_secs_f64(),
        path.display(),
        path.display()
    );
    Ok(())
}

/// The `serde_ceiling` example (memtrace/examples), built in release
/// unless `no_build`; None (and a note) when it cannot be had.
fn serde_ceiling(no_build: bool) -> Option<PathBuf> {
    let bin = cmd::target_dir().join("release/examples/serde_ceiling");
    if !no_build {
        let mut c = cmd::cargo();
        c.args([
            "build",
            "--release",
            "-p",
            "memtrace",
            "--example",
            "serde_ceiling",
        ]);
        if let Err(e) = cmd::run(&mut c) {
            eprintln!("bench: building serde_ceiling failed ({e:#}): no ceiling measured");
            return None;
        }
    }
    bin.is_file().then_some(bin)
}

/// One workload run under one configuration.
fn session(
    env: &tracer::Env,
    w: &mut workload::Workloads,
    kind: Kind,
    config: Config,
    round: usize,
) -> Result<Value> {
    let tag = format!("{}-{}-{round}", kind.name(), config.name());
    let running = tracer::start(config, env, &tag)?;
    let result = w.run(kind);
    let tracer = running.stop()?;
    let workload = result?;
    Ok(json!({
        "workload_kind": kind.name(),
        "config": config.name(),
        "round": round,
        "workload": workload,
        "tracer": tracer.to_json(),
    }))
}

/// Removes a scratch directory on drop.
struct ScratchGuard(PathBuf);

impl Drop for ScratchGuard {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn command_line(argv: &[&str]) -> Value {
    Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .ok()
        .map(|o| json!(String::from_utf8_lossy(&o.stdout).trim().to_owned()))
        .unwrap_or(Value::Null)
}

fn machine() -> Value {
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned());
    let os = fs::read_to_string("/etc/os-release").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_owned())
    });
    let swap_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("SwapTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "mem_total_kib": mem_kib,
        "swap_total_kib": swap_kib,
        "kernel": sys::read_sysctl("/proc/sys/kernel/osrelease"),
        "cpu_model": model,
        "os": os,
    })
}
