//! The eBPF object, built with the recipe of the ebpf-build crate (the one
//! memtrace's build.rs uses, into the same `target/ebpf`, so either build
//! leaves the other nothing to do).

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::cmd;

pub use ebpf_build::PACKAGE;

/// Builds the object, checks that it is a BPF ELF, and returns its
/// (absolute) path.
pub fn build(toolchain: &ebpf_build::Toolchain) -> Result<PathBuf> {
    let mut build = ebpf_build::command(
        toolchain,
        cmd::workspace_root(),
        &cmd::target_dir(),
        std::env::consts::ARCH,
    )?;
    cmd::run(&mut build).context("building the eBPF object failed")?;
    let object = ebpf_build::object_path(&cmd::target_dir());
    ebpf_build::check_bpf_elf(&object)?;
    Ok(object)
}
