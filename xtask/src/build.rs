//! `cargo xtask build`: the eBPF object, then memtrace embedding it.

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::{cmd, ebpf, setup};

/// memtrace's build.rs embeds the object named by this variable.
pub const EBPF_OBJ_VAR: &str = "MEMTRACE_EBPF_OBJ";

pub struct Built {
    pub binary: PathBuf,
}

/// Setup (a no-op when everything is present), eBPF object, memtrace.
pub fn build(debug: bool) -> Result<Built> {
    let toolchain = setup::run()?;
    let object = ebpf::build(&toolchain)?;
    let profile = if debug { "debug" } else { "release" };
    let mut build = cmd::cargo();
    build
        .env(EBPF_OBJ_VAR, &object)
        .args(["build", "-p", "memtrace"]);
    if !debug {
        build.arg("--release");
    }
    cmd::run(&mut build).context("building memtrace failed")?;
    Ok(Built {
        binary: cmd::target_dir().join(profile).join("memtrace"),
    })
}
