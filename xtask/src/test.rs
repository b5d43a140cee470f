//! `cargo xtask test`: everything CI checks.
//!
//! setup and the eBPF build must pass first (everything else needs them);
//! the checks after that all run, and a summary names those that failed.

use std::{path::Path, time::Instant};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, ebpf, setup, vm};

type Check = Box<dyn FnOnce() -> Result<()>>;

pub fn test(cargo_test_args: &[String], with_vm: bool) -> Result<()> {
    let toolchain = setup::run().context("step `setup` failed")?;
    setup::setup_test().context("step `setup` failed")?;
    let object = ebpf::build(&toolchain).context("step `ebpf-build` failed")?;

    let mut checks: Vec<(&str, Check)> = vec![
        ("fmt", Box::new(fmt)),
        ("clippy", Box::new(clippy)),
        ("clippy-ebpf", Box::new(clippy_ebpf)),
        // The container image the deploy test runs (a static release
        // build, shared with the VM tests).
        ("image", Box::new(crate::image::image)),
        ("test", Box::new(cargo_test(cargo_test_args.to_vec()))),
    ];
    if with_vm {
        let args = vm::VmTestArgs {
            kernel: "all".into(),
            timeout_secs: 240,
        };
        checks.push(("vm-test", Box::new(move || vm_matrix(&object, &args))));
    }

    let mut failed = Vec::new();
    let mut summary = Vec::new();
    for (name, check) in checks {
        eprintln!("xtask test: step `{name}`");
        let start = Instant::now();
        let result = check();
        let secs = start.elapsed().as_secs_f64();
        match result {
            Ok(()) => summary.push(format!("  {name:<12} ok      {secs:6.1}s")),
            Err(err) => {
                eprintln!("xtask test: step `{name}` failed: {err:#}");
                summary.push(format!("  {name:<12} FAILED  {secs:6.1}s"));
                failed.push(name);
            }
        }
    }
    eprintln!("xtask test summary:\n{}", summary.join("\n"));
    if !failed.is_empty() {
        bail!("step(s) failed: {}", failed.join(", "));
    }
    Ok(())
}

/// The kprobe and fentry paths, which this host's kernel cannot attach,
/// in qemu guests booting Debian's kernels.
fn vm_matrix(object: &Path, args: &vm::VmTestArgs) -> Result<()> {
    setup::setup_vm()?;
    let binary = vm::build_static_memtrace(cmd::workspace_root(), object)?;
    let (_, failed) = vm::run(cmd::workspace_root(), &binary, args)?;
    if failed > 0 {
        bail!("{failed} VM check(s) failed (logs under target/vm/logs)");
    }
    Ok(())
}

/// `cargo xtask vm-test`.
pub fn vm_test(args: &vm::VmTestArgs, smoke: bool) -> Result<()> {
    if smoke {
        setup::setup_vm()?;
        let (_, failed) = vm::run_smoke(cmd::workspace_root(), args)?;
        if failed > 0 {
            bail!("{failed} VM check(s) failed (logs under target/vm/logs)");
        }
        return Ok(());
    }
    let toolchain = setup::run()?;
    let object = ebpf::build(&toolchain)?;
    vm_matrix(&object, args)
}

fn fmt() -> Result<()> {
    cmd::run(cmd::cargo().args(["fmt", "--all", "--check"]))
}

/// The host crates, all targets. memtrace's build.rs embeds the object
/// `ebpf-build` just built (same recipe, same `target/ebpf`).
fn clippy() -> Result<()> {
    cmd::run(
        cmd::cargo()
            .args([
                "clippy",
                "--workspace",
                "--exclude",
                ebpf::PACKAGE,
                "--all-targets",
            ])
            .args(["--", "-D", "warnings"]),
    )
}

/// The eBPF crate, checked for the host (no clippy exists for Debian's
/// rustc and the BPF target). It is a `no_std` binary, which the host's
/// default `panic=unwind` rejects ("unwinding panics are not supported
/// without std"), hence `-C panic=abort`; that in turn rules out test
/// targets, so only the binary. Own target dir: the different flags would
/// otherwise re-check memtrace-common, and with it memtrace, every run.
fn clippy_ebpf() -> Result<()> {
    cmd::run(
        cmd::cargo()
            .args(["clippy", "-p", ebpf::PACKAGE, "--target-dir"])
            .arg(cmd::target_dir().join("clippy-ebpf"))
            .args(["--", "-D", "warnings", "-C", "panic=abort"]),
    )
}

/// memtrace-ebpf is a no_std/no_main binary for the BPF target: it links
/// no host test binary (no `main`), so it is left out here.
fn cargo_test(extra: Vec<String>) -> impl FnOnce() -> Result<()> {
    move || {
        cmd::run(
            cmd::cargo()
                .args(["test", "--workspace", "--exclude", ebpf::PACKAGE])
                // Run every test binary even when one fails.
                .arg("--no-fail-fast")
                .args(with_ignored(extra)),
        )
    }
}

/// Tests that need root (or the machine's dpkg/apt state, which setup has
/// just prepared) are `#[ignore]`d so a plain `cargo test` as a user
/// passes; CI runs as root and must skip nothing, so the test harness gets
/// `--include-ignored` (after the caller's own `--` arguments, if any).
fn with_ignored(mut args: Vec<String>) -> Vec<String> {
    if !args.iter().any(|a| a == "--") {
        args.push("--".into());
    }
    args.push("--include-ignored".into());
    args
}

#[cfg(test)]
mod tests {
    use super::with_ignored;

    #[test]
    fn ignored_tests_are_included_after_the_callers_arguments() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(with_ignored(vec![]), v(&["--", "--include-ignored"]));
        assert_eq!(
            with_ignored(v(&["-p", "memtrace"])),
            v(&["-p", "memtrace", "--", "--include-ignored"])
        );
        assert_eq!(
            with_ignored(v(&["--test", "kernel", "--", "doctor"])),
            v(&["--test", "kernel", "--", "doctor", "--include-ignored"])
        );
    }
}
