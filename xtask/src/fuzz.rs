//! `cargo xtask fuzz [--time 60s] [TARGET]`: runs the coverage-guided fuzz
//! targets of `fuzz/` (cargo-fuzz, libFuzzer, nightly toolchain) for a
//! time each. Each target starts from its real seeds
//! (`memtrace/tests/data/seeds/<target>/`, which the proptest tests use
//! too) plus the corpus earlier runs grew (`fuzz/corpus/<target>/`, not in
//! git). A crash leaves its input in `fuzz/artifacts/<target>/` and fails
//! the run; RELIABILITY.md says how it becomes a regression test.

use std::{process::Command, time::Duration};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, setup};

/// The targets of fuzz/Cargo.toml, in the order they run.
pub const TARGETS: &[&str] = &[
    "kmsg_record",
    "oom_line",
    "oom_assembler",
    "ndjson",
    "cgroup_attribute",
    "mountinfo",
    "escape",
];

/// Runs `target` (all when None) for `time` each.
pub fn fuzz(time: Duration, target: Option<&str>) -> Result<()> {
    let targets: Vec<&str> = match target {
        Some(t) if TARGETS.contains(&t) => vec![t],
        Some(t) => bail!(
            "no fuzz target {t:?}; the targets are {}",
            TARGETS.join(", ")
        ),
        None => TARGETS.to_vec(),
    };
    setup::ensure_cargo_fuzz()?;
    let root = cmd::workspace_root();
    // One build of every target (cargo fuzz run would build each anyway).
    cmd::run(fuzz_cmd().args(["build", "-O"])).context("building the fuzz targets failed")?;
    let secs = time.as_secs().max(1);
    for t in targets {
        let corpus = root.join("fuzz/corpus").join(t);
        std::fs::create_dir_all(&corpus)?;
        let seeds = root.join("memtrace/tests/data/seeds").join(t);
        let mut run = fuzz_cmd();
        run.args(["run", "-O", t])
            .arg(&corpus)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={secs}"))
            // A record file's lines are long; libFuzzer's default 4 KiB
            // would never reach a summary split over records.
            .arg("-max_len=65536")
            // An input that takes 10 s or 1 GiB is a finding, not a wait.
            .arg("-timeout=10")
            .arg("-rss_limit_mb=1024")
            .arg("-malloc_limit_mb=1024")
            .arg("-print_final_stats=1");
        cmd::run(&mut run).with_context(|| {
            format!(
                "fuzz target {t} failed: its input is in fuzz/artifacts/{t}/ \
                 (RELIABILITY.md, Fuzzing: turning a crash into a regression test)"
            )
        })?;
    }
    Ok(())
}

/// `cargo fuzz` on the nightly toolchain (libFuzzer's sanitizer flags need
/// it), in the workspace root where it finds `fuzz/`.
fn fuzz_cmd() -> Command {
    let mut c = Command::new("rustup");
    cmd::clean_env(&mut c);
    // `cargo xtask` runs under the stable toolchain rustup chose for it;
    // that choice must not leak into the nightly run.
    c.env_remove("RUSTUP_TOOLCHAIN")
        .current_dir(cmd::workspace_root())
        .args(["run", "nightly", "cargo", "fuzz"]);
    c
}
