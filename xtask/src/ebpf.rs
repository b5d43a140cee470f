//! The eBPF object: memtrace-ebpf built for bpfel-unknown-none with
//! Debian's rustc (prebuilt `core`, no build-std) and bpf-linker, as in
//! shared/notes/toolchain.md. It gets its own target dir: another rustc
//! than the host builds, so they don't invalidate each other.

use std::{fs::File, io::Read as _, path::PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, setup};

pub const PACKAGE: &str = "memtrace-ebpf";
pub const TARGET: &str = "bpfel-unknown-none";

/// `<workspace>/target/ebpf`.
pub fn target_dir() -> PathBuf {
    cmd::target_dir().join("ebpf")
}

/// Where the build leaves the object:
/// `<workspace>/target/ebpf/bpfel-unknown-none/release/memtrace-ebpf`.
pub fn object_path() -> PathBuf {
    target_dir().join(TARGET).join("release").join(PACKAGE)
}

/// Rust flags for the BPF target: the arch whose kernel structs/helpers
/// aya-ebpf assumes, BTF for the object.
fn rustflags() -> String {
    format!(
        r#"--cfg=bpf_target_arch="{}" -Cdebuginfo=2 -Clink-arg=--btf"#,
        std::env::consts::ARCH
    )
}

/// Builds the object and returns its (absolute) path.
pub fn build(toolchain: &setup::Toolchain) -> Result<PathBuf> {
    let linker_dir = toolchain
        .bpf_linker
        .parent()
        .context("bpf-linker path has no directory")?;
    let mut build = cmd::cargo();
    build
        // rustc's BPF target runs `bpf-linker` from PATH.
        .env("PATH", cmd::path_with(linker_dir)?)
        .env("RUSTC", setup::DEBIAN_RUSTC)
        // aya-ebpf uses #![feature(asm_experimental_arch)].
        .env("RUSTC_BOOTSTRAP", "aya_ebpf")
        .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_RUSTFLAGS", rustflags())
        .args(["build", "-p", PACKAGE, "--release", "--target", TARGET])
        .arg("--target-dir")
        .arg(target_dir());
    cmd::run(&mut build).context("building the eBPF object failed")?;

    let object = object_path();
    check_bpf_elf(&object)?;
    Ok(object)
}

/// The object must be a BPF ELF (e_machine EM_BPF = 247).
fn check_bpf_elf(path: &std::path::Path) -> Result<()> {
    let mut header = [0u8; 20];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .with_context(|| format!("cannot read the eBPF object {}", path.display()))?;
    let machine = u16::from_le_bytes([header[18], header[19]]);
    if &header[..4] != b"\x7fELF" || machine != 247 {
        bail!(
            "{} is not a BPF ELF object (e_machine {machine})",
            path.display()
        );
    }
    Ok(())
}
