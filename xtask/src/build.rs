//! `cargo xtask build`: the eBPF object, then memtrace embedding it.

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::{cmd, ebpf, setup};

pub struct Built {
    pub binary: PathBuf,
}

/// Setup (a no-op when everything is present), eBPF object, memtrace.
///
/// memtrace's build.rs finds the object this built in `target/ebpf` (same
/// recipe, same dir), so it is not passed in `MEMTRACE_EBPF_OBJ`: with the
/// variable set here but not in a plain `cargo build`, or while cargo
/// builds xtask itself, each would rerun memtrace's build script and
/// recompile memtrace for the other.
pub fn build(debug: bool) -> Result<Built> {
    let toolchain = setup::run()?;
    ebpf::build(&toolchain)?;
    let profile = if debug { "debug" } else { "release" };
    let mut build = cmd::cargo();
    build.args(["build", "-p", "memtrace"]);
    if !debug {
        build.arg("--release");
    }
    cmd::run(&mut build).context("building memtrace failed")?;
    Ok(Built {
        binary: cmd::target_dir().join(profile).join("memtrace"),
    })
}
