//! Privileges and kernel facts gathered once at start-up.
use std::path::Path;

use anyhow::{Result, bail};

use crate::output::records::Degraded;

use super::{
    btf::KernelBtf,
    plan::{HOOKS, KernelFacts},
    symbols::Kallsyms,
    tracefs,
};

const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYSLOG: u32 = 34;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn has_cap(c: u32) -> bool {
    effective_caps() & (1u64 << c) != 0
}

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
/// or CAP_SYS_ADMIN on older kernels. The rest of what the agent reads
/// degrades without its capability instead (see [`degraded_sources`]).
pub fn check_privileges() -> Result<()> {
    if has_cap(CAP_SYS_ADMIN) || (has_cap(CAP_BPF) && has_cap(CAP_PERFMON)) {
        return Ok(());
    }
    bail!(
        "memtrace needs root or CAP_BPF+CAP_PERFMON to load its kernel programs, \
         and for everything it reads also CAP_SYSLOG (the kernel log when \
         kernel.dmesg_restrict=1, and the kernel symbol addresses that name shrinkers) \
         and CAP_SYS_ADMIN (to mount tracefs privately when it is not mounted and a hook \
         needs a classic tracepoint); run it with sudo, or \
         `setcap cap_bpf,cap_perfmon,cap_syslog,cap_sys_admin+ep` on the binary; \
         `memtrace doctor` names what a smaller set degrades \
         (`memtrace report` and `--replay` need no privileges)"
    )
}

/// What the agent cannot read with its privileges and this host's
/// settings, found by trying (the capability is named as the likely fix):
/// `kmsg_error` is why /dev/kmsg did not open (None: it did).
pub fn degraded_sources(
    kmsg_error: Option<&std::io::Error>,
    kallsyms: &Kallsyms,
    cgroup_root: Option<&Path>,
) -> Vec<Degraded> {
    let mut out = Vec::new();
    let mut add = |source: &str, reason: String, loses: &str| {
        out.push(Degraded {
            source: source.into(),
            reason,
            loses: loses.into(),
        })
    };
    if let Some(e) = kmsg_error {
        let restrict = std::fs::read_to_string("/proc/sys/kernel/dmesg_restrict")
            .is_ok_and(|s| s.trim() == "1");
        let why = if restrict && !has_cap(CAP_SYSLOG) {
            format!("/dev/kmsg: {e}: kernel.dmesg_restrict=1 and no CAP_SYSLOG")
        } else {
            format!("/dev/kmsg: {e}")
        };
        add(
            "kmsg",
            why,
            "OOM records lose the limiting memcg, constraint and rss from the kernel's report, \
             and kills from before start are not reported",
        );
    }
    if !kallsyms.addresses_visible() {
        add(
            "kallsyms",
            "/proc/kallsyms shows no addresses: no CAP_SYSLOG (kptr_restrict, \
             perf_event_paranoid > 1)"
                .into(),
            "shrinker callbacks are not named (count_objects null) and superblock \
             shrinkers are not told apart",
        );
    }
    if tracefs::find().is_none() && !has_cap(CAP_SYS_ADMIN) {
        add(
            "tracefs",
            "tracefs is not mounted and mounting it privately needs CAP_SYS_ADMIN".into(),
            "classic tracepoints: a hook this kernel has no tp_btf for is unavailable \
             (the plan says which)",
        );
    }
    if let Err(e) = std::fs::read_to_string("/proc/1/status") {
        let why = if has_cap(CAP_SYS_PTRACE) {
            format!("/proc/1/status: {e}")
        } else {
            format!("/proc/1/status: {e} (/proc mounted with hidepid; needs CAP_SYS_PTRACE)")
        };
        add("proc", why, "OOM post-mortems list no tasks of other users");
    }
    if let Some(root) = cgroup_root {
        let probe = std::fs::read_dir(root)
            .and_then(|_| std::fs::read_to_string(root.join("cgroup.procs")));
        if let Err(e) = probe {
            add(
                "cgroupfs",
                format!("{}: {e}", root.display()),
                "memcg paths, containers, states and limit hits are null",
            );
        }
    }
    out
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
