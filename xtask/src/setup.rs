//! `cargo xtask setup`: the toolchain from shared/notes/toolchain.md.
//!
//! Debian's rustc-web ships a prebuilt `core` for bpfel-unknown-none
//! (libstd-rust-web-dev-bpf), so no rust-src/build-std is needed; the rlibs
//! only load in the exactly matching rustc, hence one pinned version for
//! all three Rust packages. bpf-linker is built against LLVM 22.
//! Everything is checked first and installed only when missing.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{apt, cmd};

/// Must all be installed at one version.
pub const RUST_PACKAGES: [&str; 3] = ["rustc-web", "cargo-web", "libstd-rust-web-dev-bpf"];
/// libLLVM.so for linking bpf-linker.
pub const LLVM_PACKAGE: &str = "llvm-22-dev";
pub const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// Debian's rustc (rustup's `rustc` comes first on PATH, so use the full path).
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// qemu guests for the kprobe/fentry tests (shared/notes/vm-testing.md).
pub const VM_PACKAGES: [&str; 2] = ["qemu-system-x86", "busybox-static"];
/// The interactive `top` test drives a real terminal.
pub const TEST_PACKAGES: [&str; 1] = ["tmux"];

/// What the builds need from setup.
pub struct Toolchain {
    /// A bpf-linker of the right version; its directory goes first on PATH.
    pub bpf_linker: PathBuf,
}

/// Checks everything, installs what is missing.
pub fn run() -> Result<Toolchain> {
    ensure_packages()?;
    let bpf_linker = ensure_bpf_linker()?;
    Ok(Toolchain { bpf_linker })
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

/// For the tests: tmux.
pub fn setup_test() -> Result<()> {
    ensure_installed(&TEST_PACKAGES)
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
    if let Some(home) = env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home));
    }
    let home = env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(Path::new(&home).join(".cargo"))
}

/// `bpf-linker 0.13.0` -> `0.13.0`.
fn parse_bpf_linker_version(out: &str) -> Option<&str> {
    let mut words = out.split_whitespace();
    (words.next()? == "bpf-linker").then_some(())?;
    words.next()
}

fn version_fits(version: &str) -> bool {
    let minor = BPF_LINKER_VERSION
        .rsplit_once('.')
        .map_or(BPF_LINKER_VERSION, |(minor, _)| minor);
    version
        .strip_prefix(minor)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// The version a bpf-linker binary reports, if it runs.
fn bpf_linker_version(path: &Path) -> Option<String> {
    let out = cmd::output(Command::new(path).arg("--version"))?;
    parse_bpf_linker_version(&out).map(str::to_owned)
}

/// bpf-linker candidates: cargo's bin dir, then PATH.
fn bpf_linker_candidates() -> Result<Vec<PathBuf>> {
    let mut candidates = vec![cargo_home()?.join("bin/bpf-linker")];
    if let Some(path) = env::var_os("PATH") {
        candidates.extend(env::split_paths(&path).map(|dir| dir.join("bpf-linker")));
    }
    let mut seen = std::collections::HashSet::new();
    candidates.retain(|c| seen.insert(c.clone()));
    Ok(candidates)
}

fn find_bpf_linker() -> Result<Option<PathBuf>> {
    for candidate in bpf_linker_candidates()? {
        if !candidate.is_file() {
            continue;
        }
        match bpf_linker_version(&candidate) {
            Some(version) if version_fits(&version) => return Ok(Some(candidate)),
            Some(version) => say(&format!(
                "ignoring {} (version {version}, need {BPF_LINKER_VERSION})",
                candidate.display()
            )),
            None => say(&format!("ignoring {} (does not run)", candidate.display())),
        }
    }
    Ok(None)
}

fn ensure_bpf_linker() -> Result<PathBuf> {
    if let Some(found) = find_bpf_linker()? {
        return Ok(found);
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
    match bpf_linker_version(&installed) {
        Some(version) if version_fits(&version) => Ok(installed),
        other => bail!(
            "{} reports version {other:?} after installing {BPF_LINKER_VERSION}",
            installed.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_linker_version_parsing() {
        assert_eq!(
            parse_bpf_linker_version("bpf-linker 0.13.0\n"),
            Some("0.13.0")
        );
        assert_eq!(parse_bpf_linker_version("something 0.13.0"), None);
        assert_eq!(parse_bpf_linker_version(""), None);
    }

    #[test]
    fn accepts_only_0_13_x() {
        assert!(version_fits("0.13.0"));
        assert!(version_fits("0.13.2"));
        assert!(!version_fits("0.12.0"));
        assert!(!version_fits("0.130.0"));
        assert!(!version_fits("0.1"));
        assert!(!version_fits("1.13.0"));
    }
}
