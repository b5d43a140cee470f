//! The kernel's own accounting of each BPF program: with
//! `kernel.bpf_stats_enabled=1` every program run is timed (`run_time_ns`,
//! `run_cnt` in `bpftool prog show`). Each round runs one storm, one churn
//! and one OOM session under every configuration, in rotated order:
//! untraced (for the storm's kernel time without programs), memtrace,
//! empty programs on memtrace's hooks attached the same way (the floor:
//! `memtrace stream --bench-floor`), bpftrace, and memtrace timing one
//! `do_shrink_slab` call in 8 (`--shrinker-time-sample 8`: what sampling
//! saves, and how far its estimate lands from timing every call). The programs' time is
//! also read after each storm pass, so the first pass (map entries created)
//! and the later ones are told apart. This runs outside the timed rounds
//! (the accounting costs a clock read per run); the sysctl is restored on
//! the way out.

use std::{collections::BTreeSet, process::Command};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    sys,
    tracer::{self, Config, Env},
    workload::{Kind, Workloads},
};

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Configurations of a profile round, in the order of round 0 (plus
/// `Config::Baseline` when a baseline binary is given).
const CONFIGS: [Config; 5] = [
    Config::Untraced,
    Config::Stream,
    Config::Floor,
    Config::Bpftrace,
    Config::Sampled,
];

struct StatsEnabled(String);

impl StatsEnabled {
    fn enable() -> Result<Self> {
        let old = sys::read_sysctl(SYSCTL).context("reading kernel.bpf_stats_enabled")?;
        sys::write_file(std::path::Path::new(SYSCTL), "1")?;
        Ok(Self(old))
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        let _ = std::fs::write(SYSCTL, &self.0);
    }
}

fn programs() -> Result<Vec<Value>> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .context("running bpftool prog show")?;
    if !out.status.success() {
        bail!("bpftool prog show failed");
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

fn ids(progs: &[Value]) -> BTreeSet<u64> {
    progs.iter().filter_map(|p| p["id"].as_u64()).collect()
}

/// Total (run_cnt, run_time_ns) of the programs in `mine`.
fn totals(mine: &BTreeSet<u64>) -> Result<(u64, u64)> {
    let mut out = (0, 0);
    for p in programs()?
        .iter()
        .filter(|p| p["id"].as_u64().is_some_and(|id| mine.contains(&id)))
    {
        out.0 += p["run_cnt"].as_u64().unwrap_or(0);
        out.1 += p["run_time_ns"].as_u64().unwrap_or(0);
    }
    Ok(out)
}

/// Is this program one of the `do_shrink_slab` begin/end pair
/// (memtrace's and the floor's tp_btf programs, bpftrace's
/// `mm_shrink_slab_start/end`, whose names the kernel cuts to
/// "mm_shrink_slab_")?
fn is_shrink_pair(name: &str) -> bool {
    name.contains("shrink_slab_start")
        || name.contains("shrink_slab_end")
        || name.starts_with("mm_shrink_slab")
        || name.contains("do_shrink_f")
        || name.contains("do_shrink_k")
}

/// The caller holds the kernel lock.
pub fn run(env: &Env, w: &mut Workloads, rounds: usize) -> Result<Value> {
    let _stats = StatsEnabled::enable()?;
    let mut sessions = Vec::new();
    let mut configs = CONFIGS.to_vec();
    if env.baseline.is_some() {
        configs.push(Config::Baseline);
    }
    for round in 0..rounds {
        let mut order = configs.clone();
        order.rotate_left(round % configs.len());
        for config in order {
            let s = session(env, w, config, round)?;
            eprintln!(
                "bench: profile round {}/{rounds} {:<16} program time {:.1} ms, ns per pair {:.0}, shrink pair {:.0}",
                round + 1,
                config.name(),
                s["run_time_ns"].as_f64().unwrap_or(0.0) / 1e6,
                s["ns_per_pair"].as_f64().unwrap_or(f64::NAN),
                s["shrink_ns_per_pair"].as_f64().unwrap_or(f64::NAN),
            );
            sessions.push(s);
        }
    }
    Ok(json!({ "rounds": rounds, "sessions": sessions }))
}

fn session(env: &Env, w: &mut Workloads, config: Config, round: usize) -> Result<Value> {
    let before = ids(&programs()?);
    let running = tracer::start(config, env, &format!("profile-{}-{round}", config.name()))?;
    let mine: BTreeSet<u64> = ids(&programs()?).difference(&before).copied().collect();
    // Program time after each storm pass (cumulative).
    let mut pass_ns = Vec::new();
    let runs = (|| -> Result<Value> {
        let storm = w.storm_with(|| {
            pass_ns.push(totals(&mine)?.1);
            Ok(())
        })?;
        w.run(Kind::Churn)?;
        w.run(Kind::Oom)?;
        Ok(storm)
    })();
    let progs = programs();
    let tracer = running.stop()?;
    let storm = runs?;
    let mut rows = Vec::new();
    let (mut cnt, mut ns, mut shrink_cnt, mut shrink_ns) = (0u64, 0u64, 0u64, 0u64);
    for p in progs?
        .iter()
        .filter(|p| p["id"].as_u64().is_some_and(|id| mine.contains(&id)))
    {
        let c = p["run_cnt"].as_u64().unwrap_or(0);
        let t = p["run_time_ns"].as_u64().unwrap_or(0);
        cnt += c;
        ns += t;
        if is_shrink_pair(p["name"].as_str().unwrap_or("")) {
            shrink_cnt += c;
            shrink_ns += t;
        }
        rows.push(json!({
            "name": p["name"],
            "type": p["type"],
            "run_cnt": c,
            "run_time_ns": t,
            "ns_per_run": if c > 0 { t as f64 / c as f64 } else { f64::NAN },
            "bytes_xlated": p["bytes_xlated"],
            "bytes_jited": p["bytes_jited"],
        }));
    }
    let per_pass: Vec<u64> = pass_ns
        .iter()
        .scan(0u64, |prev, &t| {
            let d = t.saturating_sub(*prev);
            *prev = t;
            Some(d)
        })
        .collect();
    // A pair is an entry and a return (a begin and an end): runs / 2, the
    // same for every tracer (OOM's single mark_victim runs are ~0.1%).
    let per_pair = |t: u64, c: u64| {
        if c > 0 {
            2.0 * t as f64 / c as f64
        } else {
            f64::NAN
        }
    };
    Ok(json!({
        "config": config.name(),
        "round": round,
        "programs": rows,
        "run_cnt": cnt,
        "run_time_ns": ns,
        "ns_per_pair": per_pair(ns, cnt),
        "shrink_run_cnt": shrink_cnt,
        "shrink_run_time_ns": shrink_ns,
        "shrink_ns_per_pair": per_pair(shrink_ns, shrink_cnt),
        "storm_pass_program_ns": per_pass,
        "storm_pass_kernel_s": storm["drop_cpu_s"],
        "hits": tracer.hits.to_json(),
        "losses": tracer.losses,
    }))
}
