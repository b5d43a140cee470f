//! `try_charge_memcg(memcg, gfp_mask, nr_pages)`: charges that missed the
//! per-CPU stock (batch refills, not single page faults). A nonzero return
//! is a failed charge (after reclaim and, usually, an OOM kill).
use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use memtrace_common::{HOOK_CHARGE, SLOW_CHARGE};

use crate::{
    kernel::{self, config},
    stats,
};

#[inline(always)]
fn account(memcg_id: u64, nr_pages: u64, ret: i32, ns: Option<u64>) {
    if let Some(s) = stats::memcg(memcg_id) {
        s.charge_calls += 1;
        s.charge_pages += nr_pages;
        if ret != 0 {
            s.charge_failures += 1;
        }
        if let Some(ns) = ns {
            s.charge_ns += ns;
            stats::bump_hist(&mut s.charge_hist, ns);
        }
    }
    let slow = config!(slow_charge_ns);
    if let Some(ns) = ns
        && slow != 0
        && ns >= slow
    {
        stats::emit_slow(SLOW_CHARGE, ns, memcg_id, nr_pages, i64::from(ret));
    }
}

/// kretprobe: memcg and nr_pages come from the paired entry.
#[inline(always)]
fn exit(ret: i32) {
    if let Some((v, ns)) = stats::exit(HOOK_CHARGE) {
        account(v.memcg_key, v.arg, ret, Some(ns));
    }
}

#[fentry(function = "try_charge_memcg")]
pub fn charge_fentry(ctx: FEntryContext) -> u32 {
    let memcg: *const u8 = ctx.arg(0);
    stats::enter_time(HOOK_CHARGE, memcg as u64);
    0
}

/// fexit's context holds the arguments followed by the return value: the
/// call is counted without pairing; the entry only gives its start time (an
/// unpaired call is counted without it, in `unmatched_returns`).
#[fexit(function = "try_charge_memcg")]
pub fn charge_fexit(ctx: FExitContext) -> u32 {
    if !kernel::enabled() {
        return 0;
    }
    let memcg: *const u8 = ctx.arg(0);
    let nr_pages: u32 = ctx.arg(2);
    let ret: i32 = ctx.arg(3);
    let ns = stats::exit_arg(HOOK_CHARGE, Some(memcg as u64)).map(|(_, ns)| ns);
    account(kernel::memcg_id_btf(memcg), u64::from(nr_pages), ret, ns);
    0
}

#[kprobe]
pub fn charge_kprobe(ctx: ProbeContext) -> u32 {
    let memcg: *const u8 = ctx.arg(0).unwrap_or(core::ptr::null());
    let nr_pages: u32 = ctx.arg(2).unwrap_or(0);
    stats::enter(HOOK_CHARGE, || kernel::memcg_id(memcg), nr_pages as u64);
    0
}

#[kretprobe]
pub fn charge_kretprobe(ctx: RetProbeContext) -> u32 {
    let ret: i32 = ctx.ret();
    exit(ret);
    0
}
