//! OOM kills. `oom_kill_process(oc, message)` sees everything (`oc->memcg`
//! is the memcg whose limit fired, NULL for a global OOM; `oc->chosen` is
//! the victim). `mark_victim` is the tracepoint fallback; it also fires for
//! tasks that were already exiting, so the agent only keeps firings the
//! kernel log confirms as kills.
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::{btf_tracepoint, fentry, kprobe, tracepoint},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext, TracePointContext},
};
use memtrace_common::{
    EVENT_OOM_KILL, MARK_VICTIM_ARG_PID, OOM_HAS_OOM_MEMCG, OOM_HAS_TOTALPAGES,
    OOM_HAS_VICTIM_TASK, OOM_SRC_MARK_VICTIM, OOM_SRC_OOM_KILL_PROCESS, OomEvent,
};

use crate::{
    kernel::{self, config, off, read},
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

#[inline(always)]
fn blank(source: u32) -> OomEvent {
    let pid_tgid = bpf_get_current_pid_tgid();
    OomEvent {
        kind: EVENT_OOM_KILL,
        source,
        ts_ns: kernel::now_ns(),
        flags: 0,
        victim_pid: 0,
        victim_tgid: 0,
        victim_uid: u32::MAX,
        victim_oom_score_adj: i32::MIN,
        trigger_pid: pid_tgid as u32,
        trigger_tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        victim_comm: [0; 16],
        trigger_comm: bpf_get_current_comm().unwrap_or([0; 16]),
        victim_memcg_id: 0,
        oom_memcg_id: 0,
        totalpages: 0,
        chosen_points: 0,
    }
}

#[inline(always)]
fn submit(e: &OomEvent) {
    if EVENTS.output::<OomEvent>(e, 0).is_err() {
        if let Some(s) = stats::system() {
            s.ringbuf_drops += 1;
        }
    }
}

#[inline(always)]
fn oom_kill_process(oc: *const u8) {
    if !kernel::enabled() || oc.is_null() {
        return;
    }
    let mut e = blank(OOM_SRC_OOM_KILL_PROCESS);
    e.flags |= OOM_HAS_OOM_MEMCG | OOM_HAS_TOTALPAGES;
    let memcg = read::<*const u8>(oc, off!(oc_memcg)).unwrap_or(core::ptr::null());
    e.oom_memcg_id = kernel::memcg_id(memcg);
    e.totalpages = read::<u64>(oc, off!(oc_totalpages)).unwrap_or(0);
    e.chosen_points = read::<i64>(oc, off!(oc_chosen_points)).unwrap_or(0);
    let chosen = read::<*const u8>(oc, off!(oc_chosen)).unwrap_or(core::ptr::null());
    victim_from_task(&mut e, chosen);
    submit(&e);
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
    let mut e = blank(OOM_SRC_MARK_VICTIM);
    if config!(mark_victim_arg) == MARK_VICTIM_ARG_PID {
        let pid: i32 = ctx.arg(0);
        e.victim_pid = pid as u32;
    } else {
        victim_from_task(&mut e, ctx.arg(0));
        let uid: u32 = ctx.arg(1);
        e.victim_uid = uid;
    }
    submit(&e);
    0
}

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn mark_victim_tp(ctx: TracePointContext) -> u32 {
    if !kernel::enabled() {
        return 0;
    }
    let mut e = blank(OOM_SRC_MARK_VICTIM);
    let off = config!(tp_mark_victim_pid) as usize;
    e.victim_pid = unsafe { ctx.read_at::<i32>(off) }.unwrap_or(0) as u32;
    submit(&e);
    0
}
