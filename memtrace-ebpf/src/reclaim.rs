//! Reclaim episodes from the vmscan tracepoints. These have no memcg
//! argument: reclaim in a task's allocation path is charged to the task's
//! own memcg. kswapd time is kernel-wide (its per-memcg shrinker work is
//! counted by the shrink hooks).
use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use memtrace_common::{
    HOOK_KSWAPD, HOOK_RECLAIM_DIRECT, HOOK_RECLAIM_MEMCG, RECLAIM_DIRECT, RECLAIM_MEMCG,
    SLOW_RECLAIM_DIRECT, SLOW_RECLAIM_MEMCG,
};

use crate::{
    kernel::{self, config},
    stats,
};

/// A reclaim episode opens in the per-CPU slot, like every other call: one
/// that sleeps and meets another thread's on this CPU is moved into the
/// hash by it, and one that wakes on another CPU is found there (stats.rs).
#[inline(always)]
fn begin(hook: u32) {
    stats::enter(hook, || kernel::task_memcg_id(kernel::current_task()), 0);
}

#[inline(always)]
fn end(hook: u32, ctx_index: usize, nr_reclaimed: u64) {
    let Some((v, ns)) = stats::exit(hook) else {
        return;
    };
    if let Some(s) = stats::memcg(v.memcg_key) {
        if let (Some(c), Some(t), Some(p)) = (
            s.reclaim_count.get_mut(ctx_index),
            s.reclaim_ns.get_mut(ctx_index),
            s.reclaim_pages.get_mut(ctx_index),
        ) {
            *c += 1;
            *t += ns;
            *p += nr_reclaimed;
        }
        stats::bump_hist(&mut s.reclaim_hist, ns);
    }
    let slow = config!(slow_reclaim_ns);
    if slow != 0 && ns >= slow {
        let what = if hook == HOOK_RECLAIM_DIRECT {
            SLOW_RECLAIM_DIRECT
        } else {
            SLOW_RECLAIM_MEMCG
        };
        stats::emit_slow(what, ns, v.memcg_key, nr_reclaimed, 0);
    }
}

/// kswapd_wake fires each time kswapd starts a balancing pass; the episode
/// ends when it actually goes to sleep, so only the first wake opens it.
#[inline(always)]
fn kswapd_wake() {
    if !kernel::enabled() {
        return;
    }
    if let Some(s) = stats::system() {
        s.kswapd_wakes += 1;
    }
    let tid = kernel::current_tid();
    if !stats::in_flight(tid, HOOK_KSWAPD) {
        stats::begin(
            tid,
            HOOK_KSWAPD,
            &stats::record(HOOK_KSWAPD, 0, 0, core::ptr::null()),
        );
    }
}

#[inline(always)]
fn kswapd_sleep() {
    if !kernel::enabled() {
        return;
    }
    // A sleep without a wake seen (memtrace started mid-pass) is normal here.
    let Some(v) = stats::take(kernel::current_tid(), HOOK_KSWAPD) else {
        return;
    };
    if let Some(s) = stats::system() {
        s.kswapd_ns += kernel::now_ns().saturating_sub(v.start_ns);
    }
}

#[btf_tracepoint(function = "mm_vmscan_direct_reclaim_begin")]
pub fn direct_begin_btf(_ctx: BtfTracePointContext) -> u32 {
    begin(HOOK_RECLAIM_DIRECT);
    0
}

#[btf_tracepoint(function = "mm_vmscan_direct_reclaim_end")]
pub fn direct_end_btf(ctx: BtfTracePointContext) -> u32 {
    end(HOOK_RECLAIM_DIRECT, RECLAIM_DIRECT, ctx.arg(0));
    0
}

#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_begin")]
pub fn memcg_begin_btf(_ctx: BtfTracePointContext) -> u32 {
    begin(HOOK_RECLAIM_MEMCG);
    0
}

#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_end")]
pub fn memcg_end_btf(ctx: BtfTracePointContext) -> u32 {
    end(HOOK_RECLAIM_MEMCG, RECLAIM_MEMCG, ctx.arg(0));
    0
}

#[btf_tracepoint(function = "mm_vmscan_kswapd_wake")]
pub fn kswapd_wake_btf(_ctx: BtfTracePointContext) -> u32 {
    kswapd_wake();
    0
}

#[btf_tracepoint(function = "mm_vmscan_kswapd_sleep")]
pub fn kswapd_sleep_btf(_ctx: BtfTracePointContext) -> u32 {
    kswapd_sleep();
    0
}

/// Classic tracepoints: `nr_reclaimed`'s offset comes from the `format` file.
#[inline(always)]
fn tp_nr_reclaimed(ctx: &TracePointContext) -> u64 {
    let off = config!(tp_reclaim_end_nr_reclaimed) as usize;
    // SAFETY: read_at goes through bpf_probe_read at an offset the agent
    // took from the tracepoint's format file; a u64 is plain data.
    unsafe { ctx.read_at::<u64>(off) }.unwrap_or(0)
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_direct_reclaim_begin")]
pub fn direct_begin_tp(_ctx: TracePointContext) -> u32 {
    begin(HOOK_RECLAIM_DIRECT);
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_direct_reclaim_end")]
pub fn direct_end_tp(ctx: TracePointContext) -> u32 {
    end(HOOK_RECLAIM_DIRECT, RECLAIM_DIRECT, tp_nr_reclaimed(&ctx));
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_begin")]
pub fn memcg_begin_tp(_ctx: TracePointContext) -> u32 {
    begin(HOOK_RECLAIM_MEMCG);
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_end")]
pub fn memcg_end_tp(ctx: TracePointContext) -> u32 {
    end(HOOK_RECLAIM_MEMCG, RECLAIM_MEMCG, tp_nr_reclaimed(&ctx));
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_kswapd_wake")]
pub fn kswapd_wake_tp(_ctx: TracePointContext) -> u32 {
    kswapd_wake();
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_kswapd_sleep")]
pub fn kswapd_sleep_tp(_ctx: TracePointContext) -> u32 {
    kswapd_sleep();
    0
}
