//! Slab shrinking: `shrink_slab(gfp, nid, memcg, priority)` per memcg and
//! `do_shrink_slab(shrinkctl, shrinker, priority)` per (memcg, shrinker).
//! The storm signature is do_shrink_slab calls that free nothing: only the
//! function hooks see those; `mm_shrink_slab_start/end` fire only when the
//! shrinker reported objects.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe},
    programs::{BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use memtrace_common::{
    HOOK_DO_SHRINK, HOOK_SHRINK_SLAB, SHRINK_EMPTY, SHRINKER_NAMES_FS_TYPE, SHRINKER_NAMES_NAME,
    SHRINKER_NAMES_SB_EMBEDDED, SHRINKER_NAMES_SB_ID, SHRINKER_NAMES_SB_PRIVATE, ShrinkerInfo,
    ShrinkerMapKey, ShrinkerStats,
};

use crate::{
    kernel::{self, config, off},
    maps::SHRINKER_INFO,
    stats,
};

/// Records what names a shrinker has (its debug name; for a superblock's,
/// the filesystem type and device) in `SHRINKER_INFO`, unless already
/// there. Called only when a (memcg, shrinker) pair is first seen, so a
/// shrinker's strings are read once, not on every call.
#[inline(always)]
fn record_names(shrinker: u64, count_objects: u64) {
    let flags = off!(shrinker_names);
    // SAFETY: the map value is only tested for presence, not kept.
    if flags == 0 || shrinker == 0 || unsafe { SHRINKER_INFO.get(shrinker) }.is_some() {
        return;
    }
    let base = shrinker as *const u8;
    let mut info = ShrinkerInfo::default();
    if flags & SHRINKER_NAMES_NAME != 0 {
        if let Some(name) = kernel::read::<*const u8>(base, off!(shrinker_name)) {
            kernel::read_str(name, &mut info.name);
        }
    }
    let sb_cb = config!(super_cache_count);
    if sb_cb != 0 && count_objects == sb_cb {
        let sb = if flags & SHRINKER_NAMES_SB_PRIVATE != 0 {
            kernel::read::<*const u8>(base, off!(shrinker_private_data))
                .unwrap_or(core::ptr::null())
        } else if flags & SHRINKER_NAMES_SB_EMBEDDED != 0 {
            base.wrapping_sub(off!(sb_s_shrink) as usize)
        } else {
            core::ptr::null()
        };
        if !sb.is_null() {
            if flags & SHRINKER_NAMES_FS_TYPE != 0 {
                let fs_type = kernel::read::<*const u8>(sb, off!(sb_s_type))
                    .and_then(|t| kernel::read::<*const u8>(t, off!(fstype_name)));
                if let Some(n) = fs_type {
                    kernel::read_str(n, &mut info.fs_type);
                }
            }
            if flags & SHRINKER_NAMES_SB_ID != 0 {
                kernel::read_str(sb.wrapping_add(off!(sb_s_id) as usize), &mut info.device);
            }
        }
    }
    // Nothing to tell (no debug name, not a superblock): no entry.
    if info.name[0] != 0 || info.fs_type[0] != 0 || info.device[0] != 0 {
        let _ = SHRINKER_INFO.insert(shrinker, info, BPF_NOEXIST as u64);
    }
}

/// Counts one `shrink_slab` pass over a memcg.
#[inline(always)]
fn slab_account(memcg_id: u64, freed: u64, ns: u64) {
    if let Some(s) = stats::memcg(memcg_id) {
        s.shrink_slab_calls += 1;
        s.shrink_slab_ns += ns;
        s.shrink_slab_freed += freed;
        if kernel::current_is_kswapd() {
            s.shrink_slab_kswapd_ns += ns;
        }
    }
}

/// kretprobe: the memcg comes from the paired entry.
#[inline(always)]
fn slab_exit(freed: u64) {
    if let Some((v, ns)) = stats::exit(HOOK_SHRINK_SLAB) {
        slab_account(v.memcg_key, freed, ns);
    }
}

/// fexit sees the arguments again: the pass is counted even when its entry
/// was not paired (then without its time, and `unmatched_returns` says so).
#[inline(always)]
fn slab_fexit(memcg: *const u8, freed: u64) {
    if !kernel::enabled() {
        return;
    }
    let ns = stats::exit_arg(HOOK_SHRINK_SLAB, Some(memcg as u64)).map_or(0, |(_, ns)| ns);
    slab_account(kernel::memcg_id_btf(memcg), freed, ns);
}

/// `shrinkctl->memcg`, `shrinkctl` a kprobe argument.
#[inline(always)]
fn shrinkctl_memcg(shrinkctl: *const u8) -> *const u8 {
    kernel::read::<*const u8>(shrinkctl, off!(shrinkctl_memcg)).unwrap_or(core::ptr::null())
}

/// `shrinkctl->memcg`, `shrinkctl` BTF-typed (tp_btf, fentry/fexit).
#[inline(always)]
fn shrinkctl_memcg_btf(shrinkctl: *const u8) -> *const u8 {
    kernel::btf_load::<u64>(shrinkctl, off!(shrinkctl_memcg)) as *const u8
}

/// Counts one `do_shrink_slab` call of `shrinker` on a memcg (its css
/// `serial`): exact counts per (memcg, shrinker) and its time (`ns` as
/// measured, 0 when not timed or unpaired; counted `stats::shrink_time`
/// times over). One map lookup per call, the hottest path memtrace has; the
/// memcg's id (`memcg_id`, three dependent loads) is read only for a new
/// row, and is None when the memcg the entry record holds no longer has
/// `serial` (a torn or stale record): no row is then made with a wrong id
/// (the call is counted in `unmatched_returns`). The memcg's own
/// `do_shrink_*` (MemcgStats) get only the calls the full shrinker map
/// refused, and the agent adds its shrinkers' rows to them
/// (`aggregate/counters.rs` `fold_shrinkers`).
#[inline(always)]
fn do_account(serial: u64, memcg_id: impl Fn() -> Option<u64>, shrinker: u64, ret: u64, ns: u64) {
    let nothing = ret == 0 || ret == SHRINK_EMPTY;
    let freed = if ret == SHRINK_EMPTY { 0 } else { ret };
    let ns = stats::shrink_time(ns);
    let key = ShrinkerMapKey {
        memcg_serial: serial,
        shrinker,
    };
    let fresh = || {
        let memcg_id = memcg_id()?;
        let cb =
            kernel::read::<u64>(shrinker as *const u8, off!(shrinker_count_objects)).unwrap_or(0);
        record_names(shrinker, cb);
        Some(ShrinkerStats {
            count_objects: cb,
            memcg_id,
            ..ShrinkerStats::default()
        })
    };
    let row = match stats::shrinker(&key, fresh) {
        Ok(s) => Some(s),
        Err(stats::NoRow::Full) => None,
        Err(stats::NoRow::Stale) => return,
    };
    if let Some(s) = row {
        // SAFETY: `s` is the pair's map value, live for the program run;
        // its counters are written only through `atomic_add`.
        unsafe {
            stats::atomic_add(&raw mut (*s).calls, 1);
            // 0 for most calls: only a sample is timed (stats::open).
            if ns != 0 {
                stats::atomic_add(&raw mut (*s).ns, ns);
            }
            if freed != 0 {
                stats::atomic_add(&raw mut (*s).freed, freed);
            }
            if nothing {
                stats::atomic_add(&raw mut (*s).zero, 1);
            }
        }
    } else if let Some(m) = memcg_id().and_then(stats::memcg) {
        // The (memcg, shrinker) map is full (counted in shrinker_map_full):
        // the call goes to the memcg's own totals, which the agent adds
        // its shrinkers' rows to, so those stay exact in a storm that
        // outgrows the map. Off the hot path: only when an insert failed.
        m.do_shrink_calls += 1;
        m.do_shrink_ns += ns;
        m.do_shrink_freed += freed;
        if nothing {
            m.do_shrink_zero += 1;
        }
    }
}

/// kretprobe / `mm_shrink_slab_end`: memcg and shrinker come from the
/// paired entry (`shrinker` is checked against it when the return has it).
#[inline(always)]
fn do_exit(shrinker: Option<u64>, ret: u64) {
    if let Some((v, ns)) = stats::exit_arg(HOOK_DO_SHRINK, shrinker) {
        let memcg = v.memcg as *const u8;
        // The record's pointer and serial were read together at the
        // entry; a record torn by another CPU (stats.rs `take_other_cpu`)
        // could pair one call's serial with another's memcg.
        let id = || (kernel::memcg_serial(memcg) == v.memcg_key).then(|| kernel::memcg_id(memcg));
        do_account(v.memcg_key, id, v.arg, ret, ns);
    }
}

/// fexit: the arguments are all here, so the counts need no pairing; the
/// entry only contributes the start time.
#[inline(always)]
fn do_fexit(shrinkctl: *const u8, shrinker: u64, ret: u64) {
    if !kernel::enabled() {
        return;
    }
    let ns = stats::exit_arg(HOOK_DO_SHRINK, Some(shrinker)).map_or(0, |(_, ns)| ns);
    let memcg = shrinkctl_memcg_btf(shrinkctl);
    // Serial and id of the same memcg, read from the arguments now.
    do_account(
        kernel::memcg_serial_btf(memcg),
        || Some(kernel::memcg_id_btf(memcg)),
        shrinker,
        ret,
        ns,
    );
}

#[fentry(function = "shrink_slab")]
pub fn shrink_slab_fentry(ctx: FEntryContext) -> u32 {
    let memcg: *const u8 = ctx.arg(2);
    stats::enter_time(HOOK_SHRINK_SLAB, memcg as u64);
    0
}

#[fexit(function = "shrink_slab")]
pub fn shrink_slab_fexit(ctx: FExitContext) -> u32 {
    slab_fexit(ctx.arg(2), ctx.arg(4));
    0
}

#[kprobe]
pub fn shrink_slab_kprobe(ctx: ProbeContext) -> u32 {
    let memcg: *const u8 = ctx.arg(2).unwrap_or(core::ptr::null());
    stats::enter(HOOK_SHRINK_SLAB, || kernel::memcg_id(memcg), 0);
    0
}

#[kretprobe]
pub fn shrink_slab_kretprobe(ctx: RetProbeContext) -> u32 {
    slab_exit(ctx.ret());
    0
}

#[fentry(function = "do_shrink_slab")]
pub fn do_shrink_fentry(ctx: FEntryContext) -> u32 {
    let shrinker: u64 = ctx.arg(1);
    stats::enter_time(HOOK_DO_SHRINK, shrinker);
    0
}

#[fexit(function = "do_shrink_slab")]
pub fn do_shrink_fexit(ctx: FExitContext) -> u32 {
    let shrinker: u64 = ctx.arg(1);
    do_fexit(ctx.arg(0), shrinker, ctx.arg(3));
    0
}

#[kprobe]
pub fn do_shrink_kprobe(ctx: ProbeContext) -> u32 {
    let shrinker: u64 = ctx.arg(1).unwrap_or(0);
    let shrinkctl: *const u8 = ctx.arg(0).unwrap_or(core::ptr::null());
    stats::enter_memcg(
        HOOK_DO_SHRINK,
        || shrinkctl_memcg(shrinkctl),
        kernel::memcg_serial,
        shrinker,
    );
    0
}

#[kretprobe]
pub fn do_shrink_kretprobe(ctx: RetProbeContext) -> u32 {
    do_exit(None, ctx.ret());
    0
}

/// `mm_shrink_slab_start(shr, sc, nr_objects_to_shrink, cache_items, delta,
/// total_scan, priority)`: fires after count_objects found something.
#[btf_tracepoint(function = "mm_shrink_slab_start")]
pub fn shrink_slab_start_btf(ctx: BtfTracePointContext) -> u32 {
    let shrinker: u64 = ctx.arg(0);
    let shrinkctl: *const u8 = ctx.arg(1);
    stats::enter_memcg(
        HOOK_DO_SHRINK,
        || shrinkctl_memcg_btf(shrinkctl),
        kernel::memcg_serial_btf,
        shrinker,
    );
    0
}

/// `mm_shrink_slab_end(shr, nid, shrinker_retval, unused_scan_cnt,
/// new_scan_cnt, total_scan)`.
#[btf_tracepoint(function = "mm_shrink_slab_end")]
pub fn shrink_slab_end_btf(ctx: BtfTracePointContext) -> u32 {
    let shrinker: u64 = ctx.arg(0);
    let freed: i32 = ctx.arg(2);
    do_exit(Some(shrinker), if freed < 0 { 0 } else { freed as u64 });
    0
}
