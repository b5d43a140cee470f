//! `cargo xtask setup`: the toolchain from shared/notes/toolchain.md.
//!
//! Debian's rustc-web ships a prebuilt `core` for bpfel-unknown-none
//! (libstd-rust-web-dev-bpf), so no rust-src/build-std is needed; the rlibs
//! only load in the exactly matching rustc, hence one pinned version for
//! all three Rust packages. bpf-linker is built against LLVM 22.
//! Everything is checked first and installed only when missing.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use ebpf_build::{BPF_LINKER_VERSION, DEBIAN_RUSTC, Toolchain};

use crate::{apt, cmd};

/// Must all be installed at one version.
pub const RUST_PACKAGES: [&str; 3] = ["rustc-web", "cargo-web", "libstd-rust-web-dev-bpf"];
/// libLLVM.so for linking bpf-linker.
pub const LLVM_PACKAGE: &str = "llvm-22-dev";
pub const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// qemu guests for the kprobe/fentry tests (shared/notes/vm-testing.md).
pub const VM_PACKAGES: [&str; 2] = ["qemu-system-x86", "busybox-static"];
/// The interactive `top` test drives a real terminal; the container-name
/// tests (memtrace/tests/names.rs) run a private dockerd and a Podman
/// whose storage is a temp dir, on an image made from a static busybox;
/// the `report --html` test renders the page in a real (headless) browser;
/// the metrics tests scrape with a real Prometheus (and check pages with
/// its promtool) and run the container image under Docker.
pub const TEST_PACKAGES: &[&str] = &[
    "tmux",
    "docker.io",
    "podman",
    "busybox-static",
    "chromium",
    "prometheus",
];

/// Checks everything, installs what is missing, and returns the toolchain
/// as the eBPF build finds it (ebpf-build, which memtrace's build.rs uses
/// too, so a toolchain setup accepts is one the build accepts).
pub fn run() -> Result<Toolchain> {
    ensure_packages()?;
    ensure_bpf_linker()?;
    Toolchain::find().context("after setup, the eBPF build still finds no toolchain")
}

fn say(msg: &str) {
    eprintln!("memtrace setup: {msg}");
}

fn ensure_packages() -> Result<()> {
    let wanted: Vec<&str> = RUST_PACKAGES
        .iter()
        .copied()
        .chain([LLVM_PACKAGE])
        .collect();
    let installed = apt::installed(&wanted)?;
    let rust_ok = apt::same_installed_version(&installed, &RUST_PACKAGES).is_some();
    let llvm_ok = installed.contains_key(LLVM_PACKAGE);
    if rust_ok && llvm_ok {
        return check_debian_rustc();
    }

    if !rust_ok {
        let state: Vec<String> = RUST_PACKAGES
            .iter()
            .map(|p| {
                format!(
                    "{p} {}",
                    installed.get(*p).map_or("(missing)", String::as_str)
                )
            })
            .collect();
        say(&format!(
            "Rust packages missing or not at one version: {}",
            state.join(", ")
        ));
    }
    say("installing packages: apt-get update");
    apt::update()?;
    let mut specs = Vec::new();
    if !rust_ok {
        let version = apt::newest_common_version(&RUST_PACKAGES)?;
        specs.extend(RUST_PACKAGES.iter().map(|p| format!("{p}={version}")));
    }
    if !llvm_ok {
        specs.push(LLVM_PACKAGE.to_owned());
    }
    say(&format!("installing {}", specs.join(" ")));
    apt::install(&specs)?;

    let installed = apt::installed(&wanted)?;
    if apt::same_installed_version(&installed, &RUST_PACKAGES).is_none()
        || !installed.contains_key(LLVM_PACKAGE)
    {
        bail!("packages still missing or mismatched after apt-get install: {installed:?}");
    }
    check_debian_rustc()
}

fn check_debian_rustc() -> Result<()> {
    if !Path::new(DEBIAN_RUSTC).exists() {
        bail!(
            "{DEBIAN_RUSTC} is missing although rustc-web is installed \
             (apt-get install --reinstall rustc-web)"
        );
    }
    Ok(())
}

/// For `vm-test`: qemu and a static busybox for the guests' initramfs.
pub fn setup_vm() -> Result<()> {
    ensure_installed(&VM_PACKAGES)
}

/// For the tests: tmux, Docker, Podman, busybox, Chromium, Prometheus.
pub fn setup_test() -> Result<()> {
    ensure_installed(TEST_PACKAGES)
}

/// Installs whichever of `packages` is missing.
pub fn ensure_installed(packages: &[&str]) -> Result<()> {
    let installed = apt::installed(packages)?;
    let missing: Vec<String> = packages
        .iter()
        .filter(|p| !installed.contains_key(**p))
        .map(|p| p.to_string())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    say(&format!("installing {}", missing.join(" ")));
    apt::update()?;
    apt::install(&missing)
}

fn cargo_home() -> Result<PathBuf> {
    ebpf_build::cargo_home().context("neither CARGO_HOME nor HOME is set")
}

fn find_bpf_linker() -> Option<PathBuf> {
    let search = ebpf_build::find_bpf_linker();
    for rejected in &search.rejected {
        say(rejected);
    }
    search.found
}

fn ensure_bpf_linker() -> Result<()> {
    if find_bpf_linker().is_some() {
        return Ok(());
    }
    say(&format!(
        "installing bpf-linker {BPF_LINKER_VERSION} (cargo install, about a minute)"
    ));
    let mut install = cmd::cargo();
    install
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .arg("install")
        .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
        .args(["--locked", "--no-default-features", "--features", "llvm-22"])
        // Also replaces a recorded 0.13.0 whose binary no longer runs.
        .arg("--force");
    cmd::run(&mut install).context("installing bpf-linker failed")?;
    let installed = cargo_home()?.join("bin/bpf-linker");
    match ebpf_build::bpf_linker_version(&installed) {
        Some(version) if ebpf_build::version_fits(&version) => Ok(()),
        other => bail!(
            "{} reports version {other:?} after installing {BPF_LINKER_VERSION}",
            installed.display()
        ),
    }
}

/// cargo-fuzz, pinned like bpf-linker: the version checked to build with
/// the nightly toolchain here.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The nightly toolchain and cargo-fuzz, for `cargo xtask fuzz`. Installs
/// cargo-fuzz when missing; a missing nightly toolchain is an error (rustup
/// installs it, when its servers are reachable).
pub fn ensure_cargo_fuzz() -> Result<()> {
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .output();
    if !nightly.is_ok_and(|o| o.status.success()) {
        bail!(
            "cargo xtask fuzz needs the nightly toolchain (libFuzzer's sanitizer \
             flags): rustup toolchain install nightly"
        );
    }
    if cargo_home()?.join("bin/cargo-fuzz").is_file() {
        return Ok(());
    }
    say(&format!(
        "installing cargo-fuzz {CARGO_FUZZ_VERSION} (cargo install, a few minutes)"
    ));
    let mut install = cmd::cargo();
    install
        .arg("install")
        .arg(format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"))
        .arg("--locked");
    cmd::run(&mut install).context("installing cargo-fuzz failed")
}
