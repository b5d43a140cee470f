//! The three workloads, each set up once per bench run and measured once
//! per (round, configuration) session.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    cg::{BenchCgroups, NsHelper},
    sys,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Storm,
    Churn,
    Oom,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Storm => "storm",
            Kind::Churn => "churn",
            Kind::Oom => "oom",
        }
    }
}

/// Sizes of the workloads.
#[derive(Debug, Clone)]
pub struct Params {
    pub storm_memcgs: usize,
    /// Negative dentries each memcg creates in its own tmpfs per pass:
    /// reclaimable objects charged to it, so every memcg's shrinkers run.
    pub storm_dentries: usize,
    /// `drop_caches` writes per session (each after a fresh pass).
    pub storm_drops: usize,
    pub churn_mib: u64,
    pub churn_limit_mib: u64,
    pub oom_kills: usize,
    pub oom_limit_mib: u64,
}

impl Params {
    pub fn to_json(&self) -> Value {
        json!({
            "storm_memcgs": self.storm_memcgs,
            "storm_dentries_per_memcg": self.storm_dentries,
            "storm_drops_per_session": self.storm_drops,
            "churn_mib": self.churn_mib,
            "churn_limit_mib": self.churn_limit_mib,
            "oom_kills_per_session": self.oom_kills,
            "oom_limit_mib": self.oom_limit_mib,
        })
    }
}

/// Everything the workloads keep between sessions. Field order is drop
/// order: the namespace helper (and with it every tmpfs mount) goes
/// before the memcgs are removed.
pub struct Workloads {
    helper: NsHelper,
    storm_dir: PathBuf,
    mnt: PathBuf,
    churn_cg: PathBuf,
    churn_file: PathBuf,
    oom_cg: PathBuf,
    root_procs: PathBuf,
    pub params: Params,
    cgs: BenchCgroups,
}

impl Drop for Workloads {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.churn_file);
    }
}

impl Workloads {
    /// Creates the memcgs, the storm's tmpfs mounts (one per memcg, each
    /// mounted and first touched from inside its memcg) and the limits.
    pub fn setup(params: Params, scratch: &Path, mnt: &Path) -> Result<Self> {
        let started = Instant::now();
        let cgs = BenchCgroups::create()?;
        let storm_dir = cgs.mkdir("storm")?;
        for i in 0..params.storm_memcgs {
            cgs.mkdir(&format!("storm/m{i}"))?;
        }
        let churn_cg = cgs.mkdir("churn")?;
        cgs.limit(&churn_cg, params.churn_limit_mib << 20)?;
        let oom_cg = cgs.mkdir("oom")?;
        cgs.limit(&oom_cg, params.oom_limit_mib << 20)?;
        fs::create_dir_all(mnt)?;
        let root_procs = cgs.root.join("cgroup.procs");
        let mut helper = NsHelper::start()?;
        helper.run(&format!(
            "i=0; while [ $i -lt {n} ]; do \
               echo $$ > {d}/m$i/cgroup.procs || exit 1; \
               mkdir -p {m}/$i && mount -t tmpfs -o size=1m,nr_inodes=256 memtrace-bench {m}/$i || exit 1; \
               : > {m}/$i/f; i=$((i+1)); \
             done; echo $$ > {r}",
            n = params.storm_memcgs,
            d = storm_dir.display(),
            m = mnt.display(),
            r = root_procs.display(),
        ))?;
        let w = Self {
            helper,
            storm_dir,
            mnt: mnt.to_path_buf(),
            churn_cg,
            churn_file: scratch.join(format!("churn-{}.dat", std::process::id())),
            oom_cg,
            root_procs,
            params,
            cgs,
        };
        eprintln!(
            "bench: {} storm memcgs with a tmpfs each, set up in {:.1}s",
            w.params.storm_memcgs,
            started.elapsed().as_secs_f64()
        );
        Ok(w)
    }

    pub fn cgroup_mode(&self) -> &'static str {
        if self.cgs.v2 { "v2" } else { "v1" }
    }

    /// One measured run of `kind`.
    pub fn run(&mut self, kind: Kind) -> Result<Value> {
        match kind {
            Kind::Storm => self.storm(),
            Kind::Churn => self.churn(),
            Kind::Oom => self.oom(),
        }
    }

    /// memcg churn (the soak's): `count` fresh memcgs, each charged with
    /// `mib` MiB of page cache by a short dd, then the file deleted and the
    /// memcg removed (it lingers as a dying memcg while pages stay charged).
    pub fn memcg_churn(&mut self, count: usize, mib: u64) -> Result<()> {
        let cnt = format!("count={mib}");
        for i in 0..count {
            let memcg = self.cgs.mkdir(&format!("churn-{i}"))?;
            let file = self.churn_file.with_extension(format!("m{i}"));
            let of = format!("of={}", file.display());
            let child = BenchCgroups::command_in(
                &memcg,
                &["dd", "if=/dev/zero", &of, "bs=1M", &cnt, "status=none"],
            )
            .spawn()
            .context("starting dd")?;
            let u = sys::wait_usage(child, Duration::from_secs(60))?;
            let _ = fs::remove_file(&file);
            if u.exit_code() != Some(0) {
                bail!("memcg churn dd failed (wait status {})", u.status);
            }
            if !super::cg::remove_tree(&memcg) {
                bail!("could not remove {}", memcg.display());
            }
        }
        Ok(())
    }

    /// Every memcg's helper pass creates fresh negative dentries in its own
    /// tmpfs (charged to it), then one `echo 2 > drop_caches` walks every
    /// memcg's shrinkers. The writer's CPU time is the storm's kernel time.
    pub fn populate(&mut self) -> Result<f64> {
        let t = Instant::now();
        self.helper.run(&format!(
            "i=0; while [ $i -lt {n} ]; do \
               echo $$ > {d}/m$i/cgroup.procs || exit 1; j=0; \
               while [ $j -lt {k} ]; do [ -e {m}/$i/n$j ]; j=$((j+1)); done; \
               i=$((i+1)); \
             done; echo $$ > {r}",
            n = self.params.storm_memcgs,
            k = self.params.storm_dentries,
            d = self.storm_dir.display(),
            m = self.mnt.display(),
            r = self.root_procs.display(),
        ))?;
        Ok(t.elapsed().as_secs_f64())
    }

    fn storm(&mut self) -> Result<Value> {
        self.storm_with(|| Ok(()))
    }

    /// The storm, calling `after_pass` after each `drop_caches` pass
    /// (outside the timed part): the profile reads the BPF programs'
    /// accounting there.
    pub fn storm_with(&mut self, mut after_pass: impl FnMut() -> Result<()>) -> Result<Value> {
        let mut cpu = Vec::new();
        let mut wall = Vec::new();
        let mut populate = Vec::new();
        for _ in 0..self.params.storm_drops {
            populate.push(self.populate()?);
            let (c, w) = drop_slab()?;
            cpu.push(c);
            wall.push(w);
            after_pass()?;
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        Ok(json!({
            "drop_cpu_s": cpu,
            "drop_wall_s": wall,
            "populate_s": populate,
            "kernel_s": mean(&cpu),
            "wall_s": mean(&wall),
        }))
    }

    fn churn(&mut self) -> Result<Value> {
        let _ = fs::remove_file(&self.churn_file);
        let of = format!("of={}", self.churn_file.display());
        let count = format!("count={}", self.params.churn_mib);
        let t = Instant::now();
        let child = BenchCgroups::command_in(
            &self.churn_cg,
            &["dd", "if=/dev/zero", &of, "bs=1M", &count, "status=none"],
        )
        .spawn()
        .context("starting dd")?;
        let u = sys::wait_usage(child, Duration::from_secs(600))?;
        let wall = t.elapsed().as_secs_f64();
        let _ = fs::remove_file(&self.churn_file);
        if u.exit_code() != Some(0) {
            bail!("churn dd failed (wait status {})", u.status);
        }
        Ok(json!({
            "wall_s": wall,
            "kernel_s": u.sys_ns as f64 / 1e9,
            "user_s": u.user_ns as f64 / 1e9,
        }))
    }

    fn oom(&mut self) -> Result<Value> {
        let mut wall = Vec::new();
        let mut sys_s = Vec::new();
        for _ in 0..self.params.oom_kills {
            let t = Instant::now();
            let child = BenchCgroups::command_in(&self.oom_cg, &["tail", "/dev/zero"])
                .spawn()
                .context("starting tail /dev/zero")?;
            let u = sys::wait_usage(child, Duration::from_secs(120))?;
            wall.push(t.elapsed().as_secs_f64());
            sys_s.push(u.sys_ns as f64 / 1e9);
            if u.killed_by() != Some(sys::SIGKILL) {
                bail!(
                    "tail /dev/zero in a {} MiB memcg was not OOM-killed (wait status {})",
                    self.params.oom_limit_mib,
                    u.status
                );
            }
        }
        let s = sys::summarize(&wall).unwrap();
        let mean_sys = sys_s.iter().sum::<f64>() / sys_s.len() as f64;
        Ok(json!({
            "kill_wall_s": wall,
            "kill_sys_s": sys_s,
            "wall_s": s.median,
            "kernel_s": mean_sys,
        }))
    }
}

/// `echo 2 > /proc/sys/vm/drop_caches` from this thread: (CPU s, wall s).
fn drop_slab() -> Result<(f64, f64)> {
    let c0 = sys::thread_cpu_ns();
    let t = Instant::now();
    sys::write_file(Path::new("/proc/sys/vm/drop_caches"), "2")?;
    let wall = t.elapsed().as_secs_f64();
    let c1 = sys::thread_cpu_ns();
    Ok((c1.saturating_sub(c0) as f64 / 1e9, wall))
}
