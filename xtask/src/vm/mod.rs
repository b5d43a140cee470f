//! `cargo xtask vm-test`: runs memtrace inside qemu guests booting Debian's
//! own kernels, where kprobes and fentry work (the host kernel refuses
//! both). One boot per kernel x cgroup layout; inside each boot every
//! attach mode runs the same workloads; the host asserts on the NDJSON the
//! guest sends back. Design and matrix: docs/kernels.md.
//!
//! Layout under `target/vm/`: `debs/` (downloaded images), `kernels/<pkg>/`
//! (vmlinux, config, modules), `initramfs-<kernel>.cpio`, `disk.img`,
//! `logs/<kernel>-<cgroup>.{console,data}.log`.
//!
//! Environment knobs: `MEMTRACE_VM_VERBOSE=1` echoes guest consoles,
//! `MEMTRACE_VM_MODES=fentry,kprobe` narrows the attach modes,
//! `MEMTRACE_VM_CGROUPS=v1` narrows the cgroup layouts,
//! `MEMTRACE_VM_ACCEL=tcg|kvm` forces the accelerator,
//! `MEMTRACE_VM_JOBS=N` boots N guests at once (default 2).

pub mod bench;
mod host;
mod initramfs;
mod kernels;
mod protocol;
mod qemu;
mod scenarios;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use protocol::{Status, Transcript};
use scenarios::{BOOT_CHECKS, BootRun, MODE_CHECKS, ModeRun};

/// Arguments of `cargo xtask vm-test`.
#[derive(Debug, Clone)]
pub struct VmTestArgs {
    /// "5.10", "6.1", "6.12", a comma list of them, or "all".
    pub kernel: String,
    /// Wall-clock limit for one guest boot.
    pub timeout_secs: u64,
}

/// Guests booted at once (MEMTRACE_VM_JOBS overrides).
const DEFAULT_JOBS: usize = 2;

/// Attach modes exercised in every boot.
const DEFAULT_MODES: &[&str] = &["fentry", "kprobe", "tracepoint"];

const GUEST_INIT: &str = include_str!("guest_init.sh");
const GUEST_MEM_MIB: u32 = 1024;
const GUEST_CPUS: u32 = 2;
/// Sparse; the reclaim workload reads 128 MiB of fresh blocks per mode.
const DISK_BYTES: u64 = 1 << 30;

/// `dir/disk.img`, the guest's `/dev/vda`: sparse, DISK_BYTES long, kept
/// between runs (the reclaim workloads only read it).
fn scratch_disk(dir: &Path) -> Result<PathBuf> {
    let disk = dir.join("disk.img");
    fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&disk)?
        .set_len(DISK_BYTES)?;
    Ok(disk)
}

/// What goes into the guest as /bin/memtrace and what the guest does.
enum Payload<'a> {
    /// The real binary: doctor + stream under every attach mode.
    Memtrace(&'a Path),
    /// Any static binary: boots, protocol and kernel-side workload checks.
    Smoke(PathBuf),
}

/// Runs the whole matrix with the real (static) memtrace binary. Prints one
/// line per check and ends with `N passed, N failed`.
pub fn run(
    workspace_root: &Path,
    memtrace_static_binary: &Path,
    args: &VmTestArgs,
) -> Result<(usize, usize)> {
    run_matrix(
        workspace_root,
        Payload::Memtrace(memtrace_static_binary),
        args,
    )
}

/// The same boots with busybox as the payload and no memtrace: proves the
/// kernels, the harness and the workloads on their own.
pub fn run_smoke(workspace_root: &Path, args: &VmTestArgs) -> Result<(usize, usize)> {
    host::ensure_tools()?;
    run_matrix(
        workspace_root,
        Payload::Smoke(host::static_busybox()?),
        args,
    )
}

/// Builds a statically linked memtrace (glibc, crt-static) embedding
/// `ebpf_obj`, in its own target dir so the normal build stays untouched.
pub fn build_static_memtrace(workspace_root: &Path, ebpf_obj: &Path) -> Result<PathBuf> {
    const TRIPLE: &str = "x86_64-unknown-linux-gnu";
    let target_dir = workspace_root.join("target/static");
    let ebpf_obj = fs::canonicalize(ebpf_obj)
        .with_context(|| format!("eBPF object {} not found", ebpf_obj.display()))?;
    // A clean cargo (xtask's `cargo run` variables removed).
    let status = crate::cmd::cargo()
        .current_dir(workspace_root)
        .args([
            "build",
            "-p",
            "memtrace",
            "--release",
            "--target",
            TRIPLE,
            "--target-dir",
        ])
        .arg(&target_dir)
        // Target-scoped flags reach memtrace but not build scripts or proc
        // macros (which cannot be static). RUSTFLAGS would override them.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        )
        .env("MEMTRACE_EBPF_OBJ", &ebpf_obj)
        .status()
        .context("running cargo build for the static memtrace")?;
    if !status.success() {
        bail!("static memtrace build failed ({status})");
    }
    let bin = target_dir.join(TRIPLE).join("release/memtrace");
    if !host::is_static_elf(&bin)? {
        bail!(
            "{} is dynamically linked; the guest has no libc",
            bin.display()
        );
    }
    Ok(bin)
}

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    skipped: usize,
    timings: Vec<String>,
}

impl Tally {
    fn record(&mut self, name: &str, outcome: Result<String, String>) {
        match outcome {
            Ok(d) => {
                self.passed += 1;
                println!("ok   {name}{}", suffix(&d));
            }
            Err(d) => {
                self.failed += 1;
                println!("FAIL {name}{}", suffix(&d));
            }
        }
    }
}

fn suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

fn env_list(name: &str) -> Option<Vec<String>> {
    std::env::var(name)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.split(',').map(|x| x.trim().to_owned()).collect())
}

fn run_matrix(
    workspace_root: &Path,
    payload: Payload,
    args: &VmTestArgs,
) -> Result<(usize, usize)> {
    let started = Instant::now();
    host::ensure_tools()?;
    let busybox = host::static_busybox()?;
    let payload_path = match &payload {
        Payload::Memtrace(p) => p.to_path_buf(),
        Payload::Smoke(p) => p.clone(),
    };
    if !host::is_static_elf(&payload_path)? {
        bail!(
            "{} is not statically linked; build it with build_static_memtrace()",
            payload_path.display()
        );
    }
    let specs = kernels::select(&args.kernel)?;
    let modes: Vec<String> = match &payload {
        Payload::Smoke(_) => Vec::new(),
        Payload::Memtrace(_) => env_list("MEMTRACE_VM_MODES")
            .unwrap_or_else(|| DEFAULT_MODES.iter().map(|s| s.to_string()).collect()),
    };
    let cgroup_filter = env_list("MEMTRACE_VM_CGROUPS");
    let verbose = std::env::var("MEMTRACE_VM_VERBOSE").is_ok_and(|v| v != "0");

    let vm_dir = workspace_root.join("target/vm");
    let logs = vm_dir.join("logs");
    fs::create_dir_all(&logs)?;
    let disk = scratch_disk(&vm_dir)?;

    let mut tally = Tally::default();
    // Every boot of the matrix, in report order.
    let mut boots: Vec<(kernels::Kernel, &'static str, PathBuf)> = Vec::new();
    for spec in specs {
        let kernel = match kernels::prepare(&vm_dir, spec) {
            Ok(k) => k,
            Err(e) => {
                tally.record(&format!("{}/kernel", spec.label), Err(format!("{e:#}")));
                continue;
            }
        };
        let initrd = vm_dir.join(format!("initramfs-{}.cpio", spec.label));
        initramfs::build(
            &initrd,
            &initramfs::Contents {
                busybox: &busybox,
                init_script: GUEST_INIT,
                payload: &payload_path,
                modules: &kernel.modules,
            },
        )?;
        for cg in kernel.cgroup_modes() {
            if cgroup_filter
                .as_ref()
                .is_some_and(|f| !f.iter().any(|x| x == cg))
            {
                continue;
            }
            boots.push((kernel.clone(), cg, initrd.clone()));
        }
    }
    // Guests boot `jobs` at a time (each is mostly one busy vCPU under
    // TCG); results are reported in matrix order once all are done.
    let jobs = std::env::var("MEMTRACE_VM_JOBS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_JOBS);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done: std::sync::Mutex<Vec<Option<Result<Booted>>>> =
        std::sync::Mutex::new(boots.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(boots.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((kernel, cg, initrd)) = boots.get(i) else {
                        break;
                    };
                    let r = boot_guest(kernel, cg, initrd, &disk, &logs, &modes, args, verbose);
                    done.lock().unwrap()[i] = Some(r);
                }
            });
        }
    });
    let done = done.into_inner().unwrap();
    for ((kernel, cg, _), booted) in boots.iter().zip(done) {
        let booted = booted.expect("every boot ran")?;
        report_boot(kernel, cg, booted, &logs, &modes, args, &mut tally);
    }
    println!("\nvm-test timings:");
    for t in &tally.timings {
        println!("  {t}");
    }
    println!("  total {:.1}s", started.elapsed().as_secs_f64());
    if tally.skipped > 0 {
        println!(
            "{} passed, {} failed, {} skipped",
            tally.passed, tally.failed, tally.skipped
        );
    } else {
        println!("{} passed, {} failed", tally.passed, tally.failed);
    }
    Ok((tally.passed, tally.failed))
}

/// One guest's run, with a note when its first boot never reached /init.
struct Booted {
    run: qemu::GuestRun,
    retried: Option<String>,
}

#[allow(clippy::too_many_arguments)]
fn boot_guest(
    kernel: &kernels::Kernel,
    cg: &str,
    initrd: &Path,
    disk: &Path,
    logs: &Path,
    modes: &[String],
    args: &VmTestArgs,
    verbose: bool,
) -> Result<Booted> {
    let prefix = format!("{}/{cg}", kernel.spec.label);
    let stem = format!("{}-{cg}", kernel.spec.label);
    let console_log = logs.join(format!("{stem}.console.log"));
    eprintln!(
        "vm-test: booting {} ({}, {}) with cgroup {cg}",
        kernel.spec.label, kernel.package, kernel.release
    );
    let boot = || {
        qemu::boot(&qemu::GuestConfig {
            kernel: &kernel.vmlinux,
            initrd,
            disk: Some(disk),
            cmdline: format!("vmtest.cg={cg} vmtest.modes={}", modes.join(",")),
            mem_mib: GUEST_MEM_MIB,
            smp: GUEST_CPUS,
            timeout: Duration::from_secs(args.timeout_secs),
            console_log: console_log.clone(),
            data_log: logs.join(format!("{stem}.data.log")),
            verbose,
        })
    };
    let mut run = boot()?;
    let mut retried = None;
    if run.time_of(protocol::INIT_MARKER).is_none() {
        // A guest that dies before /init ran no test: under software
        // emulation the kernel occasionally faults while booting (seen once
        // on 6.12: an int3 Oops in sched_clock_cpu). Boot it once more, and
        // say so; a failure after /init is never retried.
        let failed = logs.join(format!("{stem}.console.failed-boot.log"));
        let _ = fs::rename(&console_log, &failed);
        eprintln!(
            "vm-test: {prefix}: the guest never reached /init (no test ran; console in {}); booting it once more",
            failed.display()
        );
        retried = Some(format!(
            "{prefix}: first boot never reached /init ({}), retried",
            failed.display()
        ));
        run = boot()?;
    }
    Ok(Booted { run, retried })
}

/// Records the checks of one finished boot.
fn report_boot(
    kernel: &kernels::Kernel,
    cg: &str,
    booted: Booted,
    logs: &Path,
    modes: &[String],
    args: &VmTestArgs,
    tally: &mut Tally,
) {
    let prefix = format!("{}/{cg}", kernel.spec.label);
    let stem = format!("{}-{cg}", kernel.spec.label);
    let console_log = logs.join(format!("{stem}.console.log"));
    let Booted { run, retried } = booted;
    tally.timings.extend(retried);
    let t = Transcript::parse(run.console.iter().map(|(_, l)| l.as_str()), &run.data);

    let boot_detail = format!(
        "{}: /init {}, done {}, wall {:.1}s",
        run.accel,
        fmt_t(run.time_of(protocol::INIT_MARKER)),
        fmt_t(run.time_of(protocol::DONE_MARKER)),
        run.wall.as_secs_f64()
    );
    tally.timings.push(format!("{prefix}: {boot_detail}"));
    let completed = if t.done {
        Ok(boot_detail)
    } else if run.timed_out {
        Err(format!(
            "no {} within {}s ({})",
            protocol::DONE_MARKER,
            args.timeout_secs,
            console_log.display()
        ))
    } else {
        Err(format!(
            "qemu exited ({:?}) before {} ({})",
            run.exit_code,
            protocol::DONE_MARKER,
            console_log.display()
        ))
    };
    if completed.is_err() {
        let tail: Vec<&str> = run
            .console
            .iter()
            .rev()
            .take(25)
            .map(|(_, l)| l.as_str())
            .collect();
        for l in tail.iter().rev() {
            println!("     | {l}");
        }
    }
    tally.record(&format!("{prefix}/boot"), completed);

    for r in &t.results {
        let name = format!("{prefix}/{}", r.name);
        match r.status {
            Status::Pass => tally.record(&name, Ok(r.detail.clone())),
            Status::Fail => tally.record(&name, Err(r.detail.clone())),
            Status::Skip => {
                tally.skipped += 1;
                println!("skip {name}{}", suffix(&r.detail));
            }
        }
    }
    if modes.is_empty() {
        return;
    }
    for c in BOOT_CHECKS {
        tally.record(
            &format!("{prefix}/{}", c.name),
            (c.run)(&BootRun {
                cgroup: cg,
                transcript: &t,
            }),
        );
    }
    for mode in modes {
        let records = match t.files.get(&format!("stream-{mode}.ndjson")) {
            Some(text) => scenarios::parse_ndjson(text),
            None => Err("the guest sent no stream output".to_owned()),
        };
        if let (Err(_), Some(stderr)) = (&records, t.files.get(&format!("stream-{mode}.stderr"))) {
            for l in stderr.lines().take(10) {
                println!("     | {l}");
            }
        }
        let m = ModeRun {
            mode,
            cgroup: cg,
            transcript: &t,
            records,
        };
        for c in MODE_CHECKS {
            tally.record(&format!("{prefix}/{mode}/{}", c.name), (c.run)(&m));
        }
        if let Some(ti) = t
            .infos_with("scenario", "timing")
            .find(|i| i.get("tag") == Some(mode))
        {
            let secs = |k: &str| {
                ti.get(k)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(f64::NAN)
            };
            tally.timings.push(format!(
                "{prefix}/{mode}: attach {:.1}s, workloads+stop {:.1}s",
                secs("ready") - secs("start"),
                secs("end") - secs("ready")
            ));
        }
    }
}

fn fmt_t(t: Option<f64>) -> String {
    t.map(|t| format!("{t:.1}s")).unwrap_or_else(|| "-".into())
}
