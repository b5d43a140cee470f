//! The storm, the zero-yield storm (guest_init.sh `bench_zstorm`) and the
//! churn in qemu guests booting Debian's 5.10, 6.1 and 6.12, where
//! memtrace attaches with fentry (plan auto) and kprobes: the
//! guest side is the bench mode of the vm-test harness (xtask/src/vm/
//! bench.rs and guest_init.sh `bench_main`). Guests run under TCG
//! software emulation: their times compare only within one boot.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::{cmd, ebpf, setup, vm};

/// The statically linked memtrace the guests run.
pub fn static_binary(no_build: bool) -> Result<PathBuf> {
    let prebuilt = cmd::target_dir().join("static/x86_64-unknown-linux-gnu/release/memtrace");
    if no_build {
        if prebuilt.is_file() {
            return Ok(prebuilt);
        }
        bail!(
            "{} is missing: run without --no-build (or --no-vm)",
            prebuilt.display()
        );
    }
    let toolchain = setup::run()?;
    let object = ebpf::build(&toolchain)?;
    vm::build_static_memtrace(cmd::workspace_root(), &object)
}

pub fn run(bin: &Path, quick: bool) -> Result<Value> {
    // floor-MODE: empty programs on the same hooks, attached the same way.
    let plan: &[(&str, &[&str])] = if quick {
        &[("6.1", &["auto", "kprobe", "floor-auto", "floor-kprobe"])]
    } else {
        &[
            // 5.10: fentry with the hash-alone pairing, kprobes with the
            // tracefs kretprobes (no CONFIG_PREEMPTION: small default room).
            ("5.10", &["auto", "kprobe", "floor-auto", "floor-kprobe"]),
            ("6.1", &["auto", "kprobe", "floor-auto", "floor-kprobe"]),
            ("6.12", &["auto", "floor-auto"]),
        ]
    };
    let (rounds, memcgs, mib) = if quick { (2, 100, 64) } else { (5, 200, 128) };
    // The zero-yield storm is the seed's shape only with >= 1000 memcgs.
    let zmemcgs = 1000;
    let mut out = Vec::new();
    // MEMTRACE_BENCH_GUESTS=5.10,6.1 boots only those (a rerun of one).
    let only = std::env::var("MEMTRACE_BENCH_GUESTS").ok();
    for (label, modes) in plan {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|k| k == *label))
        {
            continue;
        }
        let timeout = Duration::from_secs(if quick { 600 } else { 3000 });
        let b = match vm::bench::boot(
            cmd::workspace_root(),
            bin,
            label,
            modes,
            rounds,
            memcgs,
            zmemcgs,
            mib,
            timeout,
        ) {
            Ok(b) => b,
            Err(e) => {
                out.push(json!({"kernel": label, "error": format!("{e:#}")}));
                continue;
            }
        };
        let samples: Vec<Value> = b
            .sessions
            .iter()
            .filter(|s| !s.contains_key("error"))
            // units=0: a workload the kernel cannot run (zstorm needs
            // memory.reclaim, 5.19+).
            .filter(|s| s.get("units").is_none_or(|u| u != "0"))
            .map(|s| {
                let num = |k: &str| s.get(k).and_then(|v| v.parse::<f64>().ok());
                let units = num("units").unwrap_or(1.0).max(1.0);
                let config = match s.get("config").map(String::as_str) {
                    Some("auto") => "memtrace-stream (auto)".to_owned(),
                    Some("untraced") => "untraced".to_owned(),
                    Some(f) if f.starts_with("floor-") => {
                        format!("empty programs (--attach {})", &f["floor-".len()..])
                    }
                    Some(other) => format!("memtrace-stream (--attach {other})"),
                    None => "?".to_owned(),
                };
                json!({
                    "workload_kind": s.get("workload"),
                    "config": config,
                    "round": num("round"),
                    "kernel_s": num("kernel_ns").map(|n| n / 1e9 / units),
                    "wall_s": num("wall_cs").map(|n| n / 100.0 / units),
                    "hits": num("hits").map(|h| h / units),
                    "losses": num("losses"),
                    "ready_s": num("ready_ds").map(|d| d / 10.0),
                    // The kernel's accounting of the session's programs:
                    // ns per pair = 2 x time / runs.
                    "prog_ns": num("prog_ns"),
                    "prog_runs": num("prog_runs"),
                    // do_shrink_slab calls and zero-yield calls memtrace
                    // counted, per pass.
                    "dss": num("dss").map(|h| h / units),
                    "dss_zero": num("dss_zero").map(|h| h / units),
                    "unmatched": num("unmatched"),
                })
            })
            .collect();
        let errors: Vec<&String> = b.sessions.iter().filter_map(|s| s.get("error")).collect();
        eprintln!(
            "bench: guest {label}: {} sessions in {:.0}s{}",
            samples.len(),
            b.wall.as_secs_f64(),
            if b.done { "" } else { " (did not finish)" }
        );
        out.push(json!({
            "kernel": label,
            "release": b.release,
            "accel": b.accel,
            "cgroup": "v2",
            "modes": modes,
            "rounds": rounds,
            "storm_memcgs": memcgs,
            "zstorm_memcgs": zmemcgs,
            "churn_mib": mib,
            "wall_s": b.wall.as_secs_f64(),
            "finished": b.done,
            "errors": errors,
            "console_log": b.console_log.display().to_string(),
            "samples": samples,
        }));
    }
    Ok(Value::Array(out))
}
