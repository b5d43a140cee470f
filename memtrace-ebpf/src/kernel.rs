//! Reading kernel memory at offsets the agent resolved from BTF.
use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel};

use crate::maps::{CONFIG, OFFSETS};

/// One field of the load-time globals. `read_volatile` keeps the compiler
/// from folding the placeholder zeros compiled into the object.
macro_rules! off {
    ($field:ident) => {
        // SAFETY: OFFSETS is a plain-data static the program never writes;
        // the volatile read only stops the compiler folding its placeholder.
        unsafe { core::ptr::read_volatile(&raw const $crate::maps::OFFSETS.$field) }
    };
}
pub(crate) use off;

macro_rules! config {
    ($field:ident) => {
        // SAFETY: CONFIG is a plain-data static the program never writes;
        // the volatile read only stops the compiler folding its placeholder.
        unsafe { core::ptr::read_volatile(&raw const $crate::maps::CONFIG.$field) }
    };
}
pub(crate) use config;

#[inline(always)]
pub fn enabled() -> bool {
    let _ = (&OFFSETS, &CONFIG);
    off!(valid) != 0
}

#[inline(always)]
pub fn read<T>(base: *const u8, off: u32) -> Option<T> {
    if base.is_null() {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address itself and fails
    // (None) instead of faulting; a T of any bit pattern is plain data.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize) as *const T).ok() }
}

/// Reads a field through a pointer whose BTF type the verifier knows: an
/// argument of a tp_btf or fentry/fexit program, or a pointer field loaded
/// from one with `btf_load`. A plain load instead of a
/// `bpf_probe_read_kernel` call: the verifier checks it against the type
/// (OFFSETS is a frozen read-only map, so `off` is a constant to it) and the
/// JIT makes it fault-safe (a faulting load yields 0). Never for kprobe
/// arguments or `current_task()`, which the verifier sees as plain numbers
/// (it would reject the program).
#[inline(always)]
pub fn btf_load<T: Default>(base: *const u8, off: u32) -> T {
    if base.is_null() {
        return T::default();
    }
    // SAFETY: see above: the kernel checks and guards this load itself;
    // volatile keeps the compiler from assuming anything about it.
    unsafe { core::ptr::read_volatile(base.wrapping_add(off as usize) as *const T) }
}

/// `memcg_id` through BTF-typed pointers (`btf_load`'s rules).
#[inline(always)]
pub fn memcg_id_btf(memcg: *const u8) -> u64 {
    let css = memcg.wrapping_add(off!(memcg_css) as usize);
    let cgrp: *const u8 = btf_load::<u64>(css, off!(css_cgroup)) as *const u8;
    let kn: *const u8 = btf_load::<u64>(cgrp, off!(cgroup_kn)) as *const u8;
    btf_load::<u64>(kn, off!(kn_id))
}

/// A memcg's css serial number (0 for NULL) through a BTF-typed pointer:
/// one load from the css, whose flags the kernel reads before every
/// `do_shrink_slab` loop (`mem_cgroup_online`), so a line already cached.
#[inline(always)]
pub fn memcg_serial_btf(memcg: *const u8) -> u64 {
    let css = memcg.wrapping_add(off!(memcg_css) as usize);
    btf_load::<u64>(css, off!(css_serial_nr))
}

/// `memcg_serial_btf` for a pointer the verifier sees as a number (kprobe
/// arguments).
#[inline(always)]
pub fn memcg_serial(memcg: *const u8) -> u64 {
    read::<u64>(memcg, off!(memcg_css) + off!(css_serial_nr)).unwrap_or(0)
}

/// Copies the NUL-terminated string at `src` into `dest`, truncated and
/// always NUL-terminated; `dest` is left zeroed when it cannot be read.
#[inline(always)]
pub fn read_str<const N: usize>(src: *const u8, dest: &mut [u8; N]) {
    if src.is_null() {
        return;
    }
    // On error the helper zeroes `dest`.
    // SAFETY: the helper writes at most N bytes into `dest`, which has N, and
    // checks the kernel address `src` itself.
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel_str(
            dest.as_mut_ptr().cast(),
            N as u32,
            src.cast(),
        )
    };
}

#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: a BPF helper without arguments or preconditions.
    unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() }
}

/// `jiffies_64`: an inlined load where the kernel JITs (every x86_64
/// kernel memtrace supports), for ages where a tick is precise enough.
#[inline(always)]
pub fn jiffies() -> u64 {
    // SAFETY: a BPF helper without arguments or preconditions.
    unsafe { aya_ebpf::helpers::generated::bpf_jiffies64() }
}

/// Whether to time this call when one in `mask + 1` is timed: a fresh
/// random draw per call, so no call's position in the kernel's loops (the
/// same shrinkers in the same order, memcg after memcg) decides it.
#[inline(always)]
pub fn sampled(mask: u64) -> bool {
    // SAFETY: a BPF helper without arguments or preconditions.
    mask == 0
        || u64::from(unsafe { aya_ebpf::helpers::generated::bpf_get_prandom_u32() }) & mask == 0
}

#[inline(always)]
pub fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

#[inline(always)]
pub fn current_task() -> *const u8 {
    // SAFETY: a BPF helper without arguments; the pointer is only ever read
    // through bpf_probe_read_kernel.
    unsafe { bpf_get_current_task() as *const u8 }
}

/// `cgrp->kn->id`: the inode number of the cgroup's directory.
#[inline(always)]
fn cgroup_id(cgrp: *const u8) -> u64 {
    let Some(kn) = read::<*const u8>(cgrp, off!(cgroup_kn)) else {
        return 0;
    };
    read::<u64>(kn, off!(kn_id)).unwrap_or(0)
}

/// Id of a `struct mem_cgroup *`; 0 for NULL (no memcg / global).
#[inline(always)]
pub fn memcg_id(memcg: *const u8) -> u64 {
    if memcg.is_null() {
        return 0;
    }
    let css = memcg.wrapping_add(off!(memcg_css) as usize);
    let Some(cgrp) = read::<*const u8>(css, off!(css_cgroup)) else {
        return 0;
    };
    cgroup_id(cgrp)
}

/// A task's `struct mem_cgroup *` via `task->cgroups->subsys[memory_cgrp_id]`
/// (the css is embedded in the memcg at `memcg_css`); NULL if unreadable.
#[inline(always)]
pub fn task_memcg(task: *const u8) -> *const u8 {
    let Some(cset) = read::<*const u8>(task, off!(task_cgroups)) else {
        return core::ptr::null();
    };
    let slot = off!(css_set_subsys) + off!(memory_cgrp_id) * 8;
    match read::<*const u8>(cset, slot) {
        Some(css) if !css.is_null() => css.wrapping_sub(off!(memcg_css) as usize),
        _ => core::ptr::null(),
    }
}

/// Id of a task's memcg. Not `bpf_get_current_cgroup_id()`: that is the v2
/// tree's id, which on hybrid hosts collides with v1 memcg inode numbers.
#[inline(always)]
pub fn task_memcg_id(task: *const u8) -> u64 {
    memcg_id(task_memcg(task))
}

#[inline(always)]
pub fn current_is_kswapd() -> bool {
    read::<u32>(current_task(), off!(task_flags)).unwrap_or(0) & memtrace_common::PF_KSWAPD != 0
}
