//! `try_charge_memcg(memcg, gfp_mask, nr_pages)`: charges that missed the
//! per-CPU stock (batch refills, not single page faults). A nonzero return
//! is a failed charge (after reclaim and, usually, an OOM kill).
use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use memtrace_common::{HOOK_CHARGE, SLOW_CHARGE};

use crate::{kernel::config, stats};

#[inline(always)]
fn exit(ret: i32) {
    let Some((v, ns)) = stats::exit(HOOK_CHARGE) else {
        return;
    };
    if let Some(s) = stats::memcg(v.memcg_id) {
        s.charge_calls += 1;
        s.charge_ns += ns;
        s.charge_pages += v.arg;
        if ret != 0 {
            s.charge_failures += 1;
        }
        stats::bump_hist(&mut s.charge_hist, ns);
    }
    let slow = config!(slow_charge_ns);
    if slow != 0 && ns >= slow {
        stats::emit_slow(SLOW_CHARGE, ns, v.memcg_id, v.arg, i64::from(ret));
    }
}

#[fentry(function = "try_charge_memcg")]
pub fn charge_fentry(ctx: FEntryContext) -> u32 {
    let memcg: *const u8 = ctx.arg(0);
    let nr_pages: u32 = ctx.arg(2);
    stats::enter(HOOK_CHARGE, memcg, nr_pages as u64);
    0
}

/// fexit's context holds the arguments followed by the return value.
#[fexit(function = "try_charge_memcg")]
pub fn charge_fexit(ctx: FExitContext) -> u32 {
    let ret: i32 = ctx.arg(3);
    exit(ret);
    0
}

#[kprobe]
pub fn charge_kprobe(ctx: ProbeContext) -> u32 {
    let memcg: *const u8 = ctx.arg(0).unwrap_or(core::ptr::null());
    let nr_pages: u32 = ctx.arg(2).unwrap_or(0);
    stats::enter(HOOK_CHARGE, memcg, nr_pages as u64);
    0
}

#[kretprobe]
pub fn charge_kretprobe(ctx: RetProbeContext) -> u32 {
    let ret: i32 = ctx.ret();
    exit(ret);
    0
}
