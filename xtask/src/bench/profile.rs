//! The kernel's own accounting of each BPF program: with
//! `kernel.bpf_stats_enabled=1` every program run is timed (`run_time_ns`,
//! `run_cnt` in `bpftool prog show`). One storm and one churn run under
//! memtrace, then under bpftrace, outside the timed rounds (the stats cost
//! a clock read per run). The sysctl is restored on the way out.

use std::{collections::BTreeSet, process::Command};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    sys,
    tracer::{self, Config, Env},
    workload::{Kind, Workloads},
};

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

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

/// The caller holds the kernel lock.
pub fn run(env: &Env, w: &mut Workloads) -> Result<Value> {
    let _stats = StatsEnabled::enable()?;
    let mut out = serde_json::Map::new();
    for config in [Config::Stream, Config::Bpftrace] {
        let before = ids(&programs()?);
        let running = tracer::start(config, env, &format!("profile-{}", config.name()))?;
        let mine: BTreeSet<u64> = ids(&programs()?).difference(&before).copied().collect();
        let runs = [Kind::Storm, Kind::Churn, Kind::Oom]
            .into_iter()
            .map(|k| w.run(k))
            .collect::<Result<Vec<_>>>();
        let progs = programs();
        let session = running.stop()?;
        runs?;
        let mut rows = Vec::new();
        let (mut cnt, mut ns) = (0u64, 0u64);
        for p in progs?
            .iter()
            .filter(|p| p["id"].as_u64().is_some_and(|id| mine.contains(&id)))
        {
            let c = p["run_cnt"].as_u64().unwrap_or(0);
            let t = p["run_time_ns"].as_u64().unwrap_or(0);
            cnt += c;
            ns += t;
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
        let hits = session.hits.total();
        out.insert(
            config.name().to_owned(),
            json!({
                "programs": rows,
                "run_cnt": cnt,
                "run_time_ns": ns,
                "hits": session.hits.to_json(),
                "ns_per_hit": if hits > 0 { ns as f64 / hits as f64 } else { f64::NAN },
            }),
        );
    }
    Ok(Value::Object(out))
}
