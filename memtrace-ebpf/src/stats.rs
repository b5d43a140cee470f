//! Updating the per-CPU aggregate maps, and the in-flight pairing map.
//! Also the one place slow events are written to the ring buffer.
use aya_ebpf::{
    bindings::{BPF_EXIST, BPF_NOEXIST},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
};
use memtrace_common::{
    EVENT_SLOW, Inflight, InflightKey, MemcgStats, ShrinkerKey, ShrinkerStats, SlowEvent,
    SystemStats,
};

use crate::kernel;
use crate::maps::{EVENTS, INFLIGHT, MEMCG_STATS, SHRINKER_STATS, SYSTEM_STATS, ZERO_MEMCG_STATS};

#[inline(always)]
pub fn system() -> Option<&'static mut SystemStats> {
    // SAFETY: a per-CPU array slot, valid for the program run; BPF programs
    // do not migrate CPUs, so nothing else writes it meanwhile.
    SYSTEM_STATS.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// This CPU's stats slot for a memcg, created on first use. A full map is
/// counted, never silent.
#[inline(always)]
pub fn memcg(id: u64) -> Option<&'static mut MemcgStats> {
    if let Some(p) = MEMCG_STATS.get_ptr_mut(id) {
        // SAFETY: this CPU's slot of a per-CPU map value, valid for the
        // program run and written by no other program meanwhile.
        return Some(unsafe { &mut *p });
    }
    let zero = ZERO_MEMCG_STATS.get(0)?;
    if MEMCG_STATS.insert(id, zero, BPF_NOEXIST as u64).is_err() {
        // -EEXIST means another CPU raced us in: the lookup below finds it.
        if MEMCG_STATS.get_ptr_mut(id).is_none() {
            if let Some(s) = system() {
                s.memcg_map_full += 1;
            }
            return None;
        }
    }
    // SAFETY: as above: this CPU's slot, valid for the program run.
    MEMCG_STATS.get_ptr_mut(id).map(|p| unsafe { &mut *p })
}

#[inline(always)]
pub fn shrinker(
    key: &ShrinkerKey,
    count_objects: impl FnOnce() -> u64,
) -> Option<&'static mut ShrinkerStats> {
    if let Some(p) = SHRINKER_STATS.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of a per-CPU map value, valid for the
        // program run and written by no other program meanwhile.
        return Some(unsafe { &mut *p });
    }
    let fresh = ShrinkerStats {
        count_objects: count_objects(),
        ..ShrinkerStats::default()
    };
    if SHRINKER_STATS
        .insert(key, fresh, BPF_NOEXIST as u64)
        .is_err()
        && SHRINKER_STATS.get_ptr_mut(key).is_none()
    {
        if let Some(s) = system() {
            s.shrinker_map_full += 1;
        }
        return None;
    }
    // SAFETY: as above: this CPU's slot, valid for the program run.
    SHRINKER_STATS.get_ptr_mut(key).map(|p| unsafe { &mut *p })
}

#[inline(always)]
pub fn begin(tid: u32, hook: u32, value: &Inflight) {
    let key = InflightKey { tid, hook };
    if INFLIGHT.insert(key, value, BPF_NOEXIST as u64).is_ok() {
        return;
    }
    // Either the map is full, or this task's previous call never returned
    // to us: a kretprobe that ran out of instances, or a lost event.
    let replaced = INFLIGHT.insert(key, value, BPF_EXIST as u64).is_ok();
    if let Some(s) = system() {
        if replaced {
            s.missed_returns += 1;
        } else {
            s.inflight_map_full += 1;
        }
    }
}

#[inline(always)]
pub fn in_flight(tid: u32, hook: u32) -> bool {
    // SAFETY: the value is only tested for presence, not kept.
    unsafe { INFLIGHT.get(InflightKey { tid, hook }) }.is_some()
}

/// Takes the entry record of a call in progress, if there is one.
#[inline(always)]
pub fn take(tid: u32, hook: u32) -> Option<Inflight> {
    let key = InflightKey { tid, hook };
    // SAFETY: the value is copied out at once, before the entry is removed.
    let found = unsafe { INFLIGHT.get(key) }.copied();
    if found.is_some() {
        let _ = INFLIGHT.remove(key);
    }
    found
}

/// Takes the matching entry record; a return without one is counted.
#[inline(always)]
pub fn end(tid: u32, hook: u32) -> Option<Inflight> {
    let found = take(tid, hook);
    if found.is_none() {
        if let Some(s) = system() {
            s.unmatched_returns += 1;
        }
    }
    found
}

/// Opens this thread's `hook` call on `memcg` (when tracing is on): its
/// start time and `arg` wait in INFLIGHT for the return.
#[inline(always)]
pub fn enter(hook: u32, memcg: *const u8, arg: u64) {
    if !kernel::enabled() {
        return;
    }
    let v = Inflight {
        start_ns: kernel::now_ns(),
        memcg_id: kernel::memcg_id(memcg),
        arg,
    };
    begin(kernel::current_tid(), hook, &v);
}

/// Closes this thread's `hook` call: what was stored at its entry and how
/// long it took (ns). None when tracing is off or no entry was seen.
#[inline(always)]
pub fn exit(hook: u32) -> Option<(Inflight, u64)> {
    if !kernel::enabled() {
        return None;
    }
    let v = end(kernel::current_tid(), hook)?;
    let ns = kernel::now_ns().saturating_sub(v.start_ns);
    Some((v, ns))
}

#[inline(always)]
pub fn bump_hist(hist: &mut [u32; memtrace_common::HIST_BUCKETS], ns: u64) {
    if let Some(slot) = hist.get_mut(memtrace_common::hist_bucket(ns)) {
        *slot = slot.wrapping_add(1);
    }
}

/// A slow charge or reclaim, to the ring buffer; a full buffer is counted.
#[inline(always)]
pub fn emit_slow(what: u32, ns: u64, memcg_id: u64, pages: u64, result: i64) {
    let Some(mut e) = EVENTS.reserve::<SlowEvent>(0) else {
        if let Some(s) = system() {
            s.ringbuf_drops += 1;
        }
        return;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    e.write(SlowEvent {
        kind: EVENT_SLOW,
        what,
        ts_ns: crate::kernel::now_ns(),
        duration_ns: ns,
        memcg_id,
        pages,
        result,
        pid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    });
    e.submit(0);
}
