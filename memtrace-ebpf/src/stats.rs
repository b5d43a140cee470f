//! Updating the aggregate maps, and pairing entries with returns.
//! Also the one place slow events are written to the ring buffer.
//!
//! Pairing (see `docs/architecture.md`, "Pairing"): a call's entry record
//! goes to this CPU's slot for its hook in `SLOTS`, tagged with the thread
//! id; the return finds it there unless the thread was preempted by another
//! thread entering the same hook on this CPU (the newcomer then moves the
//! older record into the `INFLIGHT` hash, where the return finds it) or
//! migrated to another CPU mid-call (the return then looks through the
//! other CPUs' slots, where the kernel allows it: `CONFIG.scan_cpus`).
//! Only a return found nowhere is counted, in `unmatched_returns`. The
//! common case costs one per-CPU array access instead of a hash insert,
//! lookup and delete with bucket locks.
use aya_ebpf::{
    bindings::{BPF_EXIST, BPF_NOEXIST},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_map_lookup_percpu_elem,
    },
};
use memtrace_common::{
    EVENT_SLOW, HOOK_DO_SHRINK, Inflight, InflightKey, MAX_CALL_JIFFIES, MAX_CALL_NS,
    MAX_SCAN_CPUS, MemcgStats, ShrinkerMapKey, ShrinkerMapValue, ShrinkerStats, SlowEvent,
    SystemStats,
};

use crate::kernel::{self, config};
use crate::maps::{
    EVENTS, INFLIGHT, MEMCG_STATS, PairSlot, SHRINKER_STATS, SLOTS, STARTED, SYSTEM_STATS,
    ZERO_MEMCG_STATS,
};

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

/// `*p += v`, atomically: a (memcg, shrinker) pair's counters are one
/// value shared by the CPUs (not one per CPU: a lookup touches one line
/// fewer). BPF's atomic add without fetch, in every kernel memtrace
/// supports.
///
/// # Safety
/// `p` must point to a live, aligned u64 in a map value that every writer
/// updates only through this function.
#[inline(always)]
pub unsafe fn atomic_add(p: *mut u64, v: u64) {
    // core's atomics need compare-and-swap, which the BPF target lacks.
    #[cfg(target_arch = "bpf")]
    // SAFETY: the caller's promise; the instruction (BPF_ATOMIC | BPF_ADD,
    // once BPF_XADD) reads and writes only `*p`.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {v}",
            p = in(reg) p,
            v = in(reg) v,
        );
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: the caller's promise (host builds only type-check this).
    unsafe {
        *p = (*p).wrapping_add(v);
    }
}

/// Why `shrinker` gave no row.
pub enum NoRow {
    /// The map is full (counted in `shrinker_map_full`).
    Full,
    /// `fresh` refused: the entry record's memcg is not the key's (counted
    /// in `unmatched_returns`).
    Stale,
}

/// The shared counters of a (memcg, shrinker) pair, made on first use from
/// `fresh` (its memcg id and callback are read only then). A raw pointer:
/// other CPUs add to the same value at the same time, through `atomic_add`
/// only.
#[inline(always)]
pub fn shrinker(
    key: &ShrinkerMapKey,
    fresh: impl FnOnce() -> Option<ShrinkerStats>,
) -> Result<*mut ShrinkerStats, NoRow> {
    if let Some(p) = SHRINKER_STATS.get_ptr_mut(key) {
        return Ok(p.cast());
    }
    let Some(fresh) = fresh() else {
        if let Some(s) = system() {
            s.unmatched_returns += 1;
        }
        return Err(NoRow::Stale);
    };
    let row = ShrinkerMapValue {
        stats: fresh,
        _pad: [0; 2],
    };
    if SHRINKER_STATS.insert(key, row, BPF_NOEXIST as u64).is_err()
        && SHRINKER_STATS.get_ptr_mut(key).is_none()
    {
        if let Some(s) = system() {
            s.shrinker_map_full += 1;
        }
        return Err(NoRow::Full);
    }
    SHRINKER_STATS
        .get_ptr_mut(key)
        .map(|p| p.cast())
        .ok_or(NoRow::Full)
}

#[inline(always)]
pub fn begin(tid: u32, hook: u32, value: &Inflight) {
    let key = InflightKey { tid, hook };
    if INFLIGHT.insert(key, value, BPF_NOEXIST as u64).is_ok() {
        return;
    }
    // Either the map is full, or this task's previous call never returned
    // to us: a kretprobe that ran out of instances, or a lost event.
    // SAFETY: the value is copied out at once, before it is replaced.
    let old = unsafe { INFLIGHT.get(key) }.map(|v| v.started);
    let replaced = INFLIGHT.insert(key, value, BPF_EXIST as u64).is_ok();
    if let Some(s) = system() {
        if replaced {
            if old.is_some_and(|started| started != 0) {
                s.missed_returns += 1;
            }
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

/// `Inflight::started` of a record made now: 1 once every program is
/// attached (a return that never comes is then a lost one).
#[inline(always)]
fn started() -> u64 {
    u64::from(STARTED.get(0).is_some_and(|&t| t != 0))
}

/// Whether an entry record is recent enough to be a call in progress, by
/// its age in jiffies (`MAX_CALL_JIFFIES`; a record not timed has no time).
/// A time over `MAX_CALL_NS` is refused on its own (`shrink_time`).
#[inline(always)]
fn young(v: &Inflight) -> bool {
    kernel::jiffies().saturating_sub(v.born_jiffies) < MAX_CALL_JIFFIES
}

/// `hook`'s calls are timed one in `time_mask(hook) + 1`, and a timed
/// call's time counts that many times: only do_shrink_slab's time is
/// sampled (`ProbeConfig::shrink_time_mask`), a storm making millions of
/// those calls (the two clock reads were a fifth of their cost); the other
/// hooks' times feed latency histograms and slow events, call by call.
#[inline(always)]
fn time_mask(hook: u32) -> u64 {
    if hook == HOOK_DO_SHRINK {
        config!(shrink_time_mask)
    } else {
        0
    }
}

/// `PairSlot.owner` of a thread: nonzero even for tid 0.
#[inline(always)]
fn owner(tid: u32) -> u64 {
    (1 << 32) | u64::from(tid)
}

/// Opens this thread's `hook` call: `value` waits in this CPU's slot (see
/// the module comment) for the return.
#[inline(always)]
pub fn slot_begin(tid: u32, hook: u32, value: &Inflight) {
    if config!(scan_cpus) == 0 {
        // Without the other CPUs' slots a thread that changed CPU mid-call
        // would leave its record in the old slot, to be moved into the hash
        // as if preempted and paired with a later call: the hash alone.
        begin(tid, hook, value);
        return;
    }
    let Some(p) = SLOTS.get_ptr_mut(hook) else {
        // Hook index out of range: a programming error, never silent.
        begin(tid, hook, value);
        return;
    };
    // SAFETY: this CPU's slot of a per-CPU array, valid for the program
    // run; programs on one CPU do not run concurrently with each other for
    // the same hook (no tracing program nests inside itself).
    let slot = unsafe { &mut *p };
    let me = owner(tid);
    if slot.owner == me {
        // This thread's previous call never returned on this CPU: a lost
        // return, or a migration that `unmatched_returns` already counted.
        if slot.value.started != 0
            && let Some(s) = system()
        {
            s.missed_returns += 1;
        }
    } else if slot.owner != 0 {
        // Another thread is mid-call here (preempted): keep its record
        // where its return will look next.
        begin(slot.owner as u32, hook, &slot.value);
    }
    slot.owner = me;
    slot.value = *value;
}

/// Takes this thread's open `hook` call: from this CPU's slot, else from
/// the hash (it was displaced there). `arg`, when known at the return,
/// must match the entry's (so a stale record is never paired).
#[inline(always)]
pub fn slot_take(tid: u32, hook: u32, arg: Option<u64>) -> Option<Inflight> {
    let ok = |v: &Inflight| arg.is_none_or(|a| a == v.arg);
    if config!(scan_cpus) == 0 {
        return take(tid, hook).filter(ok);
    }
    let me = owner(tid);
    if let Some(p) = SLOTS.get_ptr_mut(hook) {
        // SAFETY: as in `slot_begin`.
        let slot = unsafe { &mut *p };
        if slot.owner == me {
            slot.owner = 0;
            if arg.is_none_or(|a| a == slot.value.arg) {
                return Some(slot.value);
            }
            return None;
        }
    }
    // The miss path. Each candidate is checked on its own, so a record that
    // fails the check does not hide a good one. A record that is not
    // `young` is stale (a race left it: see `take_other_cpu`) and never
    // paired. The hash is read again after the scan: a thread on our old
    // CPU may have moved our record there meanwhile. Idle context (tid 0)
    // is every CPU's and never migrates: it does not scan.
    let fresh = |v: &Inflight| ok(v) && young(v);
    take(tid, hook)
        .filter(fresh)
        .or_else(|| {
            if tid == 0 {
                None
            } else {
                take_other_cpu(me, hook).filter(fresh)
            }
        })
        .or_else(|| take(tid, hook).filter(fresh))
}

/// This thread's entry for `hook` in another CPU's slot: it changed CPU
/// mid-call. Only on the miss path; `scan_cpus` is 0 where the kernel has
/// no `bpf_map_lookup_percpu_elem`, and then the verifier, which sees the
/// constant, never reaches the call.
#[inline(always)]
fn take_other_cpu(me: u64, hook: u32) -> Option<Inflight> {
    let n = config!(scan_cpus);
    let mut cpu = 0;
    while cpu < n && cpu < MAX_SCAN_CPUS {
        // SAFETY: the helper takes the map (the address of its definition,
        // relocated by the loader), a pointer to a u32 key and a CPU
        // number, and returns NULL or that CPU's value slot.
        let p = unsafe {
            bpf_map_lookup_percpu_elem(
                (&raw const SLOTS).cast_mut().cast(),
                (&raw const hook).cast(),
                cpu,
            )
        } as *mut PairSlot;
        if !p.is_null() {
            // SAFETY: a PairSlot of the map, valid for the program run.
            // That CPU may write it meanwhile (a new entry, without
            // atomics): this may read a torn record (the caller's `arg`
            // check rejects most, not on kretprobes), clear an entry just
            // made (its return is then counted unmatched), or take a record
            // the newcomer also moved into the hash (left there, it is
            // rejected by age or `arg` at that thread's next miss). A race of
            // two CPUs within one call's entry: rare, and the pairing it
            // breaks is counted in unmatched_returns.
            let slot = unsafe { &mut *p };
            if slot.owner == me {
                let v = slot.value;
                slot.owner = 0;
                return Some(v);
            }
        }
        cpu += 1;
    }
    None
}

/// Opens this thread's `hook` call (when tracing is on): its entry record,
/// with the memcg as `memcg` gives it (its key, its pointer), called only
/// then, waits in this CPU's slot for the return.
#[inline(always)]
fn open(hook: u32, arg: u64, memcg: impl FnOnce() -> (u64, *const u8)) {
    if !kernel::enabled() {
        return;
    }
    let (memcg_key, memcg) = memcg();
    slot_begin(
        kernel::current_tid(),
        hook,
        &record(hook, memcg_key, arg, memcg),
    );
}

/// The entry record of a `hook` call starting now: its time (when this
/// call is timed: `time_mask`), age and whether every program was attached.
#[inline(always)]
pub fn record(hook: u32, memcg_key: u64, arg: u64, memcg: *const u8) -> Inflight {
    Inflight {
        start_ns: if kernel::sampled(time_mask(hook)) {
            kernel::now_ns()
        } else {
            0
        },
        memcg_key,
        arg,
        memcg: memcg as u64,
        born_jiffies: kernel::jiffies(),
        started: started(),
    }
}

/// Opens this thread's `hook` call on a memcg: `memcg_id` is called only
/// when tracing is on: `kernel::memcg_id` for kprobes, `kernel::memcg_id_btf`
/// where the pointer is BTF-typed.
#[inline(always)]
pub fn enter(hook: u32, memcg_id: impl FnOnce() -> u64, arg: u64) {
    open(hook, arg, || (memcg_id(), core::ptr::null()));
}

/// Opens a `do_shrink_slab` call whose return cannot see the memcg
/// (kretprobe, `mm_shrink_slab_end`): the memcg (`memcg`) and its css serial
/// number (`serial`), both read only when tracing is on, wait for it.
#[inline(always)]
pub fn enter_memcg(
    hook: u32,
    memcg: impl FnOnce() -> *const u8,
    serial: impl FnOnce(*const u8) -> u64,
    arg: u64,
) {
    open(hook, arg, || {
        let memcg = memcg();
        (serial(memcg), memcg)
    });
}

/// Opens a call whose return sees the arguments again (fexit): only the
/// start time and `arg` (to check the pairing) are kept, no memcg lookup.
#[inline(always)]
pub fn enter_time(hook: u32, arg: u64) {
    open(hook, arg, || (0, core::ptr::null()));
}

/// Closes this thread's `hook` call: what was stored at its entry and how
/// long it took (ns; 0 for a call not timed: `time_mask`, and
/// `shrink_time` for what it counts for). None when tracing is off or no
/// entry was seen (the latter counted in `unmatched_returns`).
#[inline(always)]
pub fn exit(hook: u32) -> Option<(Inflight, u64)> {
    exit_arg(hook, None)
}

/// `exit`, checking the entry's `arg` when the return knows it.
#[inline(always)]
pub fn exit_arg(hook: u32, arg: Option<u64>) -> Option<(Inflight, u64)> {
    if !kernel::enabled() {
        return None;
    }
    let Some(v) = slot_take(kernel::current_tid(), hook, arg) else {
        if let Some(s) = system() {
            s.unmatched_returns += 1;
        }
        return None;
    };
    // Only do_shrink_slab leaves calls untimed; for the other hooks the
    // test folds away and their code stays what it was, which 5.10's
    // verifier accepts (it refused variants of this function that changed
    // the charge fexit program: LLVM then read a register or stack slot
    // that the unpaired path never wrote).
    let ns = if hook == HOOK_DO_SHRINK && v.start_ns == 0 {
        0
    } else {
        kernel::now_ns().saturating_sub(v.start_ns)
    };
    Some((v, ns))
}

/// What a `do_shrink_slab` call's measured time `ns` (0: not timed) counts
/// for: times the calls one timed call stands for. The weight comes from
/// the configuration, not the record: a record torn by another CPU's write
/// (`take_other_cpu`) could pair one call's "not timed" with another's
/// time; and a time of a minute or more is no call's but a stale or torn
/// record's. (Only here, not in `exit_arg`: on 5.10 the verifier loses the
/// bound LLVM derives from the cap and refuses the histogram index of the
/// other hooks' programs.)
#[inline(always)]
pub fn shrink_time(ns: u64) -> u64 {
    if ns < MAX_CALL_NS {
        ns * (time_mask(HOOK_DO_SHRINK) + 1)
    } else {
        0
    }
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
