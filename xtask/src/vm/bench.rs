//! Bench mode of the guests (`cargo xtask bench`, xtask/src/bench): the
//! same kernels, initramfs and guest script as vm-test, booted with
//! `vmtest.bench=ROUNDS`, which makes the guest run the storm and churn
//! workloads untraced and under memtrace instead of the test scenarios and
//! print one `INFO scenario=bench ...` line per session. Files live under
//! `target/bench/vm/`, apart from vm-test's (only the downloaded kernels
//! under `target/vm/` are shared).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{
    GUEST_CPUS, GUEST_INIT, GUEST_MEM_MIB, host, initramfs, kernels, protocol::Transcript, qemu,
    scratch_disk,
};

/// What one bench boot reported.
pub struct BenchBoot {
    pub release: String,
    pub accel: &'static str,
    pub wall: Duration,
    pub done: bool,
    /// The `INFO scenario=bench` lines, as key=value maps.
    pub sessions: Vec<BTreeMap<String, String>>,
    pub console_log: std::path::PathBuf,
}

/// Boots kernel `label` ("6.1", "6.12") with cgroup v2 and runs `rounds`
/// bench rounds under `modes` (memtrace `--attach` values).
#[allow(clippy::too_many_arguments)]
pub fn boot(
    workspace_root: &Path,
    static_memtrace: &Path,
    label: &str,
    modes: &[&str],
    rounds: usize,
    memcgs: usize,
    zmemcgs: usize,
    churn_mib: u64,
    timeout: Duration,
) -> Result<BenchBoot> {
    host::ensure_tools()?;
    let busybox = host::static_busybox()?;
    let spec = *kernels::select(label)?
        .first()
        .context("no kernel selected")?;
    let kernel = kernels::prepare(&workspace_root.join("target/vm"), spec)?;
    let dir = workspace_root.join("target/bench/vm");
    fs::create_dir_all(&dir)?;
    let initrd = dir.join(format!("initramfs-{label}.cpio"));
    initramfs::build(
        &initrd,
        &initramfs::Contents {
            busybox: &busybox,
            init_script: GUEST_INIT,
            payload: static_memtrace,
            modules: &kernel.modules,
        },
    )?;
    let disk = scratch_disk(&dir)?;
    let console_log = dir.join(format!("{label}.console.log"));
    eprintln!(
        "bench: booting {label} ({}) for {rounds} bench rounds under {}",
        kernel.release,
        modes.join(",")
    );
    let run = qemu::boot(&qemu::GuestConfig {
        kernel: &kernel.vmlinux,
        initrd: &initrd,
        disk: Some(&disk),
        cmdline: format!(
            "vmtest.cg=v2 vmtest.modes={} vmtest.bench={rounds} vmtest.bench_memcgs={memcgs} \
             vmtest.bench_zmemcgs={zmemcgs} vmtest.bench_mib={churn_mib}",
            modes.join(",")
        ),
        mem_mib: GUEST_MEM_MIB,
        smp: GUEST_CPUS,
        timeout,
        console_log: console_log.clone(),
        data_log: dir.join(format!("{label}.data.log")),
        verbose: std::env::var("MEMTRACE_VM_VERBOSE").is_ok_and(|v| v != "0"),
    })?;
    let t = Transcript::parse(run.console.iter().map(|(_, l)| l.as_str()), &run.data);
    let sessions = t.infos_with("scenario", "bench").cloned().collect();
    let _ = fs::remove_file(&initrd);
    let _ = fs::remove_file(&disk);
    Ok(BenchBoot {
        release: kernel.release,
        accel: run.accel,
        wall: run.wall,
        done: t.done,
        sessions,
        console_log,
    })
}
