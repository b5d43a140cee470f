//! Privileges and kernel facts gathered once at start-up.
use std::path::Path;

use anyhow::{Result, bail};

use super::{
    btf::KernelBtf,
    plan::{HOOKS, KernelFacts},
    symbols::Kallsyms,
    tracefs,
};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Loading tracing programs needs root, or CAP_BPF + CAP_PERFMON (5.8+),
/// or CAP_SYS_ADMIN on older kernels.
pub fn check_privileges() -> Result<()> {
    let caps = effective_caps();
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    bail!(
        "memtrace needs root or CAP_BPF+CAP_PERFMON to load its kernel programs; \
         run it with sudo, or `setcap cap_bpf,cap_perfmon+ep` on the binary \
         (`memtrace report` and `--replay` need no privileges)"
    )
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn kprobe_pmu() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe/type").exists()
}

pub fn gather_facts(btf: &KernelBtf, syms: &Kallsyms) -> KernelFacts {
    let mut facts = KernelFacts {
        kprobe_pmu: kprobe_pmu(),
        tracefs: tracefs::find().is_some() || Path::new("/sys/kernel/tracing").is_dir(),
        ..Default::default()
    };
    for spec in HOOKS {
        for f in spec.functions {
            if syms.exists(f) {
                facts.kallsyms.insert(f.to_string());
            }
            if let Some(p) = btf.function_params(f) {
                facts.btf_functions.insert(f.to_string(), p);
            }
        }
        for (_, tp) in spec.tp_btf {
            if btf.has_tracepoint(tp) {
                facts.btf_tracepoints.insert(tp.to_string());
            }
        }
    }
    facts
}
