//! Empty programs, one per real program the attach plan uses, so that
//! `cargo xtask bench` can measure the cost of merely running a program of
//! each kind on the same hooks, loaded and attached the same way
//! (`memtrace stream --bench-floor`): the floor memtrace's own cost is
//! reported against. They touch no map and read nothing.
use aya_ebpf::{
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe, tracepoint},
    programs::{
        BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext,
        TracePointContext,
    },
};

macro_rules! empty {
    ($($attr:meta => $name:ident($ctx:ty);)*) => {$(
        #[$attr]
        pub fn $name(_ctx: $ctx) -> u32 {
            0
        }
    )*};
}

empty! {
    fentry(function = "try_charge_memcg") => floor_charge_fentry(FEntryContext);
    fexit(function = "try_charge_memcg") => floor_charge_fexit(FExitContext);
    kprobe => floor_charge_kprobe(ProbeContext);
    kretprobe => floor_charge_kretprobe(RetProbeContext);
    fentry(function = "shrink_slab") => floor_shrink_slab_fentry(FEntryContext);
    fexit(function = "shrink_slab") => floor_shrink_slab_fexit(FExitContext);
    kprobe => floor_shrink_slab_kprobe(ProbeContext);
    kretprobe => floor_shrink_slab_kretprobe(RetProbeContext);
    fentry(function = "do_shrink_slab") => floor_do_shrink_fentry(FEntryContext);
    fexit(function = "do_shrink_slab") => floor_do_shrink_fexit(FExitContext);
    kprobe => floor_do_shrink_kprobe(ProbeContext);
    kretprobe => floor_do_shrink_kretprobe(RetProbeContext);
    fentry(function = "oom_kill_process") => floor_oom_kill_fentry(FEntryContext);
    kprobe => floor_oom_kill_kprobe(ProbeContext);
    btf_tracepoint(function = "mm_shrink_slab_start") => floor_shrink_slab_start_btf(BtfTracePointContext);
    btf_tracepoint(function = "mm_shrink_slab_end") => floor_shrink_slab_end_btf(BtfTracePointContext);
    btf_tracepoint(function = "mark_victim") => floor_mark_victim_btf(BtfTracePointContext);
    btf_tracepoint(function = "mm_vmscan_direct_reclaim_begin") => floor_direct_begin_btf(BtfTracePointContext);
    btf_tracepoint(function = "mm_vmscan_direct_reclaim_end") => floor_direct_end_btf(BtfTracePointContext);
    btf_tracepoint(function = "mm_vmscan_memcg_reclaim_begin") => floor_memcg_begin_btf(BtfTracePointContext);
    btf_tracepoint(function = "mm_vmscan_memcg_reclaim_end") => floor_memcg_end_btf(BtfTracePointContext);
    btf_tracepoint(function = "mm_vmscan_kswapd_wake") => floor_kswapd_wake_btf(BtfTracePointContext);
    btf_tracepoint(function = "mm_vmscan_kswapd_sleep") => floor_kswapd_sleep_btf(BtfTracePointContext);
    tracepoint(category = "oom", name = "mark_victim") => floor_mark_victim_tp(TracePointContext);
    tracepoint(category = "vmscan", name = "mm_vmscan_direct_reclaim_begin") => floor_direct_begin_tp(TracePointContext);
    tracepoint(category = "vmscan", name = "mm_vmscan_direct_reclaim_end") => floor_direct_end_tp(TracePointContext);
    tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_begin") => floor_memcg_begin_tp(TracePointContext);
    tracepoint(category = "vmscan", name = "mm_vmscan_memcg_reclaim_end") => floor_memcg_end_tp(TracePointContext);
    tracepoint(category = "vmscan", name = "mm_vmscan_kswapd_wake") => floor_kswapd_wake_tp(TracePointContext);
    tracepoint(category = "vmscan", name = "mm_vmscan_kswapd_sleep") => floor_kswapd_sleep_tp(TracePointContext);
}
