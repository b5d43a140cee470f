//! OOM kills. `oom_kill_process(oc, message)` sees everything (`oc->memcg`
//! is the memcg whose limit fired, NULL for a global OOM; `oc->chosen` is
//! the victim). `mark_victim` is the tracepoint fallback; it also fires for
//! tasks that were already exiting, so the agent only keeps firings the
//! kernel log confirms as kills.
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::{btf_tracepoint, fentry, kprobe, tracepoint},
    maps::ring_buf::RingBufEntry,
    programs::{BtfTracePointContext, FEntryContext, ProbeContext, TracePointContext},
};
use memtrace_common::{
    EVENT_OOM_KILL, MARK_VICTIM_ARG_PID, OOM_CHAIN_COMPLETE, OOM_CHAIN_DEPTH, OOM_CHAIN_OF_CURRENT,
    OOM_CHAIN_OF_VICTIM, OOM_HAS_OOM_MEMCG, OOM_HAS_TOTALPAGES, OOM_HAS_VICTIM_TASK,
    OOM_SRC_MARK_VICTIM, OOM_SRC_OOM_KILL_PROCESS, OomEvent, OomMemcgLevel,
};

use crate::{
    kernel::{self, config, off, read, read_str},
    maps::EVENTS,
    stats,
};

/// Fills the victim fields from its `task_struct`.
#[inline(always)]
fn victim_from_task(e: &mut OomEvent, task: *const u8) {
    if task.is_null() {
        return;
    }
    e.flags |= OOM_HAS_VICTIM_TASK;
    e.victim_pid = read::<u32>(task, off!(task_pid)).unwrap_or(0);
    e.victim_tgid = read::<u32>(task, off!(task_tgid)).unwrap_or(0);
    e.victim_comm = read::<[u8; 16]>(task, off!(task_comm)).unwrap_or([0; 16]);
    e.victim_memcg_id = kernel::task_memcg_id(task);
    if let Some(cred) = read::<*const u8>(task, off!(task_real_cred)) {
        e.victim_uid = read::<u32>(cred, off!(cred_uid)).unwrap_or(u32::MAX);
    }
    if let Some(sig) = read::<*const u8>(task, off!(task_signal)) {
        e.victim_oom_score_adj = read::<i16>(sig, off!(signal_oom_score_adj))
            .map(i32::from)
            .unwrap_or(i32::MIN);
    }
}

/// The memcg chain from `memcg` up to the root: each level's id, kernfs
/// name and `memory` page counter, read now, because userspace reads come
/// too late for a memcg removed right after the kill. Parents are taken by
/// css (`css.parent`), the same tree as the kernfs nodes' parents but
/// without their 6.15 rename, and the way to each level's counters.
#[inline(always)]
fn capture_chain(e: &mut OomEvent, memcg: *const u8, whose: u32) {
    if memcg.is_null() {
        return;
    }
    e.chain.flags = whose;
    let mut memcg = memcg;
    for i in 0..OOM_CHAIN_DEPTH {
        let lvl = &mut e.chain.levels[i];
        let css = memcg.wrapping_add(off!(memcg_css) as usize);
        let cgrp = read::<*const u8>(css, off!(css_cgroup)).unwrap_or(core::ptr::null());
        let kn = read::<*const u8>(cgrp, off!(cgroup_kn)).unwrap_or(core::ptr::null());
        lvl.id = read::<u64>(kn, off!(kn_id)).unwrap_or(0);
        let name = read::<*const u8>(kn, off!(kn_name)).unwrap_or(core::ptr::null());
        read_str(name, &mut lvl.name);
        let pc = memcg.wrapping_add(off!(memcg_memory) as usize);
        lvl.usage_pages = read::<u64>(pc, off!(page_counter_usage)).unwrap_or(0);
        lvl.max_pages = read::<u64>(pc, off!(page_counter_max)).unwrap_or(0);
        lvl.failcnt = read::<u64>(pc, off!(page_counter_failcnt)).unwrap_or(0);
        e.chain.len = i as u32 + 1;
        match read::<*const u8>(css, off!(css_parent)) {
            Some(p) if p.is_null() => {
                e.chain.flags |= OOM_CHAIN_COMPLETE;
                return;
            }
            Some(p) => memcg = p.wrapping_sub(off!(memcg_css) as usize),
            None => return,
        }
    }
}

/// Reserves the event in the ring buffer (it is too large for the 512-byte
/// BPF stack) and fills what every hook knows.
#[inline(always)]
fn reserve(source: u32) -> Option<RingBufEntry<OomEvent>> {
    let Some(mut entry) = EVENTS.reserve::<OomEvent>(0) else {
        if let Some(s) = stats::system() {
            s.ringbuf_drops += 1;
        }
        return None;
    };
    let p = entry.as_mut_ptr();
    // SAFETY: `p` is the reserved record, `size_of::<OomEvent>()` bytes that
    // are ours alone until submit. Every byte is written here (fields of
    // the head, then each chain level), so the reference taken below is to
    // an initialised integer struct. Level by level keeps each write small
    // enough for the BPF backend to inline.
    unsafe {
        core::ptr::write_bytes(p.cast::<u8>(), 0, core::mem::offset_of!(OomEvent, chain));
        (&raw mut (*p).chain.len).write(0);
        (&raw mut (*p).chain.flags).write(0);
        for i in 0..OOM_CHAIN_DEPTH {
            (&raw mut (*p).chain.levels[i]).write(OomMemcgLevel::ZERO);
        }
    }
    // SAFETY: initialised just above.
    let e = unsafe { entry.assume_init_mut() };
    let pid_tgid = bpf_get_current_pid_tgid();
    e.kind = EVENT_OOM_KILL;
    e.source = source;
    e.ts_ns = kernel::now_ns();
    e.victim_uid = u32::MAX;
    e.victim_oom_score_adj = i32::MIN;
    e.trigger_pid = pid_tgid as u32;
    e.trigger_tgid = (pid_tgid >> 32) as u32;
    e.trigger_comm = bpf_get_current_comm().unwrap_or([0; 16]);
    Some(entry)
}

/// The chain of the victim's memcg when the hook gave its task, else of
/// the memcg of the task running the OOM killer (whose charge failed:
/// the limiting memcg is one of its ancestors).
#[inline(always)]
fn chain_of(e: &mut OomEvent, victim: *const u8) {
    if !victim.is_null() {
        capture_chain(e, kernel::task_memcg(victim), OOM_CHAIN_OF_VICTIM);
    } else {
        capture_chain(
            e,
            kernel::task_memcg(kernel::current_task()),
            OOM_CHAIN_OF_CURRENT,
        );
    }
}

#[inline(always)]
fn oom_kill_process(oc: *const u8) {
    if !kernel::enabled() || oc.is_null() {
        return;
    }
    let Some(mut entry) = reserve(OOM_SRC_OOM_KILL_PROCESS) else {
        return;
    };
    // SAFETY: `reserve` initialised every byte.
    let e = unsafe { entry.assume_init_mut() };
    e.flags |= OOM_HAS_OOM_MEMCG | OOM_HAS_TOTALPAGES;
    let memcg = read::<*const u8>(oc, off!(oc_memcg)).unwrap_or(core::ptr::null());
    e.oom_memcg_id = kernel::memcg_id(memcg);
    e.totalpages = read::<u64>(oc, off!(oc_totalpages)).unwrap_or(0);
    e.chosen_points = read::<i64>(oc, off!(oc_chosen_points)).unwrap_or(0);
    let chosen = read::<*const u8>(oc, off!(oc_chosen)).unwrap_or(core::ptr::null());
    victim_from_task(e, chosen);
    chain_of(e, chosen);
    entry.submit(0);
}

#[fentry(function = "oom_kill_process")]
pub fn oom_kill_fentry(ctx: FEntryContext) -> u32 {
    oom_kill_process(ctx.arg(0));
    0
}

#[kprobe]
pub fn oom_kill_kprobe(ctx: ProbeContext) -> u32 {
    oom_kill_process(ctx.arg(0).unwrap_or(core::ptr::null()));
    0
}

/// `mark_victim(task, uid)` since 6.9, `mark_victim(pid)` before.
#[btf_tracepoint(function = "mark_victim")]
pub fn mark_victim_btf(ctx: BtfTracePointContext) -> u32 {
    if !kernel::enabled() {
        return 0;
    }
    let Some(mut entry) = reserve(OOM_SRC_MARK_VICTIM) else {
        return 0;
    };
    // SAFETY: `reserve` initialised every byte.
    let e = unsafe { entry.assume_init_mut() };
    if config!(mark_victim_arg) == MARK_VICTIM_ARG_PID {
        let pid: i32 = ctx.arg(0);
        e.victim_pid = pid as u32;
        chain_of(e, core::ptr::null());
    } else {
        let task: *const u8 = ctx.arg(0);
        victim_from_task(e, task);
        let uid: u32 = ctx.arg(1);
        e.victim_uid = uid;
        chain_of(e, task);
    }
    entry.submit(0);
    0
}

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn mark_victim_tp(ctx: TracePointContext) -> u32 {
    if !kernel::enabled() {
        return 0;
    }
    let Some(mut entry) = reserve(OOM_SRC_MARK_VICTIM) else {
        return 0;
    };
    // SAFETY: `reserve` initialised every byte.
    let e = unsafe { entry.assume_init_mut() };
    let off = config!(tp_mark_victim_pid) as usize;
    // SAFETY: `off` is the pid field's offset from the tracepoint's format
    // file; `read_at` reads it with bpf_probe_read.
    e.victim_pid = unsafe { ctx.read_at::<i32>(off) }.unwrap_or(0) as u32;
    chain_of(e, core::ptr::null());
    entry.submit(0);
    0
}
