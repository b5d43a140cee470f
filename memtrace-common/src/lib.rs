//! The ABI shared by memtrace's kernel programs and its userspace agent:
//! map keys and values, ring-buffer event records, and the start-up
//! configuration the agent hands to the programs. Every type here is
//! `#[repr(C)]` with explicit padding, because the same bytes are written
//! by BPF code and read by userspace.
#![no_std]

/// Latency histogram buckets: bucket `b >= 1` counts durations in
/// `[2^(b+HIST_SHIFT), 2^(b+1+HIST_SHIFT))` ns, bucket 0 everything below
/// 1024 ns, and the last bucket everything from 2^40 ns (~18 minutes) up.
pub const HIST_BUCKETS: usize = 32;
pub const HIST_SHIFT: u32 = 9;

/// `task_struct.flags` bit of kswapd threads (include/linux/sched.h); this
/// value has not changed since kswapd existed.
pub const PF_KSWAPD: u32 = 0x0002_0000;

/// `do_shrink_slab()`'s "no objects at all" return value, `~0UL - 1`
/// (include/linux/shrinker.h). Never summed as freed objects.
pub const SHRINK_EMPTY: u64 = !0u64 - 1;

/// Reclaim contexts the memcg stats are split by.
pub const RECLAIM_DIRECT: usize = 0;
pub const RECLAIM_MEMCG: usize = 1;
pub const RECLAIM_CONTEXTS: usize = 2;

/// Byte offsets of kernel struct fields and enum values, resolved by the
/// agent from the running kernel's BTF (rustc emits no CO-RE relocations,
/// so nothing may be compiled in). `valid == 0` makes every program a no-op.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_cgroups: u32,
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_comm: u32,
    pub task_flags: u32,
    pub task_real_cred: u32,
    pub task_signal: u32,
    pub cred_uid: u32,
    pub signal_oom_score_adj: u32,
    pub css_set_subsys: u32,
    pub memory_cgrp_id: u32,
    pub css_cgroup: u32,
    pub cgroup_kn: u32,
    pub kn_id: u32,
    pub memcg_css: u32,
    /// `cgroup_subsys_state.serial_nr`: unique per css for the boot, never
    /// reused (unlike a freed memcg's address); the shrinker counters' key.
    pub css_serial_nr: u32,
    pub shrinkctl_memcg: u32,
    pub shrinker_count_objects: u32,
    pub oc_memcg: u32,
    pub oc_chosen: u32,
    pub oc_totalpages: u32,
    pub oc_chosen_points: u32,
    /// Optional, for naming shrinkers (`SHRINKER_NAMES_*` bits in
    /// `shrinker_names` say which are present; an absent one is 0).
    pub shrinker_name: u32,
    pub shrinker_private_data: u32,
    pub sb_s_shrink: u32,
    pub sb_s_type: u32,
    pub sb_s_id: u32,
    pub fstype_name: u32,
    pub shrinker_names: u32,
    /// The memcg chain an OOM kill captures (`OomChain`): the parent css,
    /// the cgroup's kernfs name, and the `memory` page counter's usage,
    /// limit and failure count.
    pub css_parent: u32,
    pub kn_name: u32,
    pub memcg_memory: u32,
    pub page_counter_usage: u32,
    pub page_counter_max: u32,
    pub page_counter_failcnt: u32,
    pub valid: u32,
}

/// `KernelOffsets.shrinker_names` bits. `shrinker->name` (a `const char *`,
/// CONFIG_SHRINKER_DEBUG only).
pub const SHRINKER_NAMES_NAME: u32 = 1;
/// 6.7+: a superblock's shrinker is allocated apart and
/// `shrinker->private_data` is the `struct super_block *`.
pub const SHRINKER_NAMES_SB_PRIVATE: u32 = 2;
/// Before 6.7: the shrinker is `super_block.s_shrink`, embedded.
pub const SHRINKER_NAMES_SB_EMBEDDED: u32 = 4;
/// `super_block->s_type->name` can be read.
pub const SHRINKER_NAMES_FS_TYPE: u32 = 8;
/// `super_block.s_id` can be read.
pub const SHRINKER_NAMES_SB_ID: u32 = 16;

/// What `mark_victim`'s first tracepoint argument is on this kernel: a
/// `struct task_struct *` since 6.9, a pid before. Decided from BTF.
pub const MARK_VICTIM_ARG_TASK: u32 = 0;
pub const MARK_VICTIM_ARG_PID: u32 = 1;

/// Run-time knobs for the programs, set once at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Charges slower than this go to the ring buffer (0 = never).
    pub slow_charge_ns: u64,
    /// Reclaims slower than this go to the ring buffer (0 = never).
    pub slow_reclaim_ns: u64,
    pub mark_victim_arg: u32,
    /// Classic tracepoint field offsets, read from each tracepoint's
    /// `format` file (only used when the plan falls back to them).
    pub tp_reclaim_end_nr_reclaimed: u32,
    pub tp_mark_victim_pid: u32,
    /// CPUs whose pairing slots a return looks through when its entry is
    /// not on its own CPU (the thread changed CPU mid-call): the possible
    /// CPUs, at most `MAX_SCAN_CPUS`, when the kernel has
    /// `bpf_map_lookup_percpu_elem` (5.19+); 0 = it has not, and such a
    /// return is unmatched.
    pub scan_cpus: u32,
    /// Address of `super_cache_count` (kallsyms): shrinkers with this
    /// count_objects are superblock shrinkers. 0 = unknown.
    pub super_cache_count: u64,
    /// `do_shrink_slab` calls are timed one in `shrink_time_mask + 1` (a
    /// power of two), chosen at random per call, and each timed call's time
    /// counts that many times: an unbiased estimate of the shrinker time
    /// that spares the other calls both clock reads. 0 = every call timed.
    /// Counts are never sampled.
    pub shrink_time_mask: u64,
}

/// At most this many CPUs' pairing slots are looked through (a bound the
/// verifier can see); a thread that migrated from a CPU numbered higher is
/// an unmatched return.
pub const MAX_SCAN_CPUS: u32 = 1024;

/// Per-memcg counters, one per CPU, summed by the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemcgStats {
    /// `try_charge_memcg` calls: per-CPU stock refills, not page faults.
    pub charge_calls: u64,
    pub charge_failures: u64,
    pub charge_ns: u64,
    pub charge_pages: u64,
    pub reclaim_count: [u64; RECLAIM_CONTEXTS],
    pub reclaim_ns: [u64; RECLAIM_CONTEXTS],
    pub reclaim_pages: [u64; RECLAIM_CONTEXTS],
    pub shrink_slab_calls: u64,
    pub shrink_slab_ns: u64,
    pub shrink_slab_freed: u64,
    /// Part of `shrink_slab_ns` spent by kswapd shrinking this memcg.
    pub shrink_slab_kswapd_ns: u64,
    /// `do_shrink_*`: in the kernel's map only the calls the full
    /// `ShrinkerStats` map refused (each call is counted once, in
    /// `ShrinkerStats` when it has room); the agent adds the memcg's
    /// shrinkers' rows to them.
    pub do_shrink_calls: u64,
    /// Calls whose result was 0 or `SHRINK_EMPTY` (only seen by
    /// fentry/kprobe plans; tracepoints never fire for them).
    pub do_shrink_zero: u64,
    pub do_shrink_freed: u64,
    pub do_shrink_ns: u64,
    pub charge_hist: [u32; HIST_BUCKETS],
    pub reclaim_hist: [u32; HIST_BUCKETS],
}

impl MemcgStats {
    pub const ZERO: Self = Self {
        charge_calls: 0,
        charge_failures: 0,
        charge_ns: 0,
        charge_pages: 0,
        reclaim_count: [0; RECLAIM_CONTEXTS],
        reclaim_ns: [0; RECLAIM_CONTEXTS],
        reclaim_pages: [0; RECLAIM_CONTEXTS],
        shrink_slab_calls: 0,
        shrink_slab_ns: 0,
        shrink_slab_freed: 0,
        shrink_slab_kswapd_ns: 0,
        do_shrink_calls: 0,
        do_shrink_zero: 0,
        do_shrink_freed: 0,
        do_shrink_ns: 0,
        charge_hist: [0; HIST_BUCKETS],
        reclaim_hist: [0; HIST_BUCKETS],
    };
}

impl Default for MemcgStats {
    fn default() -> Self {
        Self::ZERO
    }
}

/// A (memcg, shrinker) pair as the agent names it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShrinkerKey {
    pub memcg_id: u64,
    /// The `struct shrinker *` (an identity, never dereferenced by userspace).
    pub shrinker: u64,
}

/// A (memcg, shrinker) pair as the kernel's `SHRINKER_STATS` map keys it:
/// by the memcg's css serial number, which the probe reads from the memcg
/// it is handed (a line the kernel has just touched), instead of its id,
/// three dependent loads away (memcg -> cgroup -> kernfs node). The id is
/// read once, when the entry is made (`ShrinkerStats::memcg_id`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShrinkerMapKey {
    /// `css.serial_nr` (0 = no memcg).
    pub memcg_serial: u64,
    pub shrinker: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShrinkerStats {
    pub calls: u64,
    pub zero: u64,
    pub freed: u64,
    pub ns: u64,
    /// `shrinker->count_objects`, symbolized by the agent via kallsyms.
    pub count_objects: u64,
    /// The memcg's id, read when the kernel made the entry.
    pub memcg_id: u64,
}

/// The `SHRINKER_STATS` map's value: `ShrinkerStats` padded to 64 bytes.
/// A preallocated hash element is the kernel's 48-byte header, the 16-byte
/// key, then the value; at 128 bytes every element is exactly two cache
/// lines (header and key, then the counters), where 112-byte elements
/// straddle a third line in half of them. The end program's lookup of a
/// cold row is the storm's hottest cost.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShrinkerMapValue {
    pub stats: ShrinkerStats,
    pub _pad: [u64; 2],
}

/// Names of one shrinker, read once when it is first seen; NUL-terminated
/// (empty = unknown or not applicable).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShrinkerInfo {
    /// `shrinker->name` (CONFIG_SHRINKER_DEBUG), e.g. "sb-tmpfs".
    pub name: [u8; 32],
    /// Superblock shrinkers: `sb->s_type->name`, e.g. "ext4".
    pub fs_type: [u8; 16],
    /// Superblock shrinkers: `sb->s_id`, e.g. "vda1".
    pub device: [u8; 32],
}

/// Kernel-wide counters: one slot of a per-CPU array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SystemStats {
    pub kswapd_wakes: u64,
    pub kswapd_ns: u64,
    pub ringbuf_drops: u64,
    pub memcg_map_full: u64,
    pub shrinker_map_full: u64,
    pub inflight_map_full: u64,
    /// Return probes that found no matching entry (entry missed, or the
    /// entry was attached while the call was already running).
    pub unmatched_returns: u64,
    /// Entries whose return was never seen: the next call of the same task
    /// found them still there (kretprobe instances exhausted, lost events).
    pub missed_returns: u64,
}

/// Key of the per-task "call in progress" map pairing entry and return.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InflightKey {
    pub tid: u32,
    pub hook: u32,
}

pub const HOOK_CHARGE: u32 = 1;
pub const HOOK_SHRINK_SLAB: u32 = 2;
pub const HOOK_DO_SHRINK: u32 = 3;
pub const HOOK_RECLAIM_DIRECT: u32 = 4;
pub const HOOK_RECLAIM_MEMCG: u32 = 5;
pub const HOOK_KSWAPD: u32 = 6;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inflight {
    /// `bpf_ktime_get_ns()` at entry; 0 for a `do_shrink_slab` call not
    /// timed (`ProbeConfig::shrink_time_mask`).
    pub start_ns: u64,
    /// The memcg as its counters are keyed: its id (`MEMCG_STATS`), or for
    /// `HOOK_DO_SHRINK` its css serial number (`ShrinkerMapKey`).
    pub memcg_key: u64,
    /// Hook-specific: the shrinker pointer, or the charge's nr_pages.
    pub arg: u64,
    /// `HOOK_DO_SHRINK`: the `struct mem_cgroup *`, read for its id only
    /// when its counter entry is new.
    pub memcg: u64,
    /// `bpf_jiffies64()` at entry, timed or not: a record older than
    /// `MAX_CALL_JIFFIES` was left by a lost race and is never paired.
    pub born_jiffies: u64,
    /// Nonzero when the record was made once every program was attached
    /// (`STARTED`): if its return never comes, that return was lost.
    pub started: u64,
}

/// No shrinker call takes this long: a `do_shrink_slab` time this long is
/// a stale or torn entry record's, not a call's, and is dropped.
pub const MAX_CALL_NS: u64 = 60_000_000_000;

/// No call takes this long either: an entry record this old was left by a
/// lost race and is never paired. In jiffies, as a record not timed has no
/// time: 60 s at HZ=1000, 240 s at Debian's HZ=250, 600 s at HZ=100 (the
/// programs do not know the kernel's HZ).
pub const MAX_CALL_JIFFIES: u64 = 60_000;

/// Ring-buffer record kinds (first `u32` of every record).
pub const EVENT_OOM_KILL: u32 = 1;
pub const EVENT_SLOW: u32 = 2;

/// Where an OOM record came from.
pub const OOM_SRC_OOM_KILL_PROCESS: u32 = 1;
pub const OOM_SRC_MARK_VICTIM: u32 = 2;

/// `OomEvent.flags` bits: which optional fields were read.
pub const OOM_HAS_OOM_MEMCG: u32 = 1;
pub const OOM_HAS_VICTIM_TASK: u32 = 2;
pub const OOM_HAS_TOTALPAGES: u32 = 4;

/// Levels of the memcg chain an OOM event carries, the memcg itself first
/// and the hierarchy's root memcg last; deeper hierarchies are cut off
/// (`OOM_CHAIN_COMPLETE` unset) and their path is not assembled from it.
pub const OOM_CHAIN_DEPTH: usize = 8;
/// Bytes of one cgroup name, NUL included. Longer names (up to 255) are
/// truncated, and the path is then not assembled from the chain either.
pub const OOM_NAME_LEN: usize = 128;

/// `OomChain.flags`.
/// The chain starts at the victim task's memcg.
pub const OOM_CHAIN_OF_VICTIM: u32 = 1;
/// The chain starts at the memcg of the task that ran the OOM killer (the
/// hook gave only the victim's pid): the limiting memcg is an ancestor of
/// it, the victim's memcg need not be.
pub const OOM_CHAIN_OF_CURRENT: u32 = 2;
/// The walk reached the root memcg: `len` levels are the whole chain.
pub const OOM_CHAIN_COMPLETE: u32 = 4;

/// One memcg of the chain, read in the kernel at the kill, so it survives
/// the memcg's removal right after.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomMemcgLevel {
    /// `kn->id`, as `memcg_id` elsewhere.
    pub id: u64,
    /// `memcg->memory.usage` and `.max`, in pages.
    pub usage_pages: u64,
    pub max_pages: u64,
    /// `memcg->memory.failcnt`: charges refused at this limit (cgroup v1;
    /// not maintained on v2 since 6.15).
    pub failcnt: u64,
    /// `kn->name`, NUL-terminated; empty when it could not be read.
    pub name: [u8; OOM_NAME_LEN],
}

impl OomMemcgLevel {
    pub const ZERO: Self = Self {
        id: 0,
        usage_pages: 0,
        max_pages: 0,
        failcnt: 0,
        name: [0; OOM_NAME_LEN],
    };
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomChain {
    /// Levels filled, from `levels[0]`.
    pub len: u32,
    pub flags: u32,
    pub levels: [OomMemcgLevel; OOM_CHAIN_DEPTH],
}

impl OomChain {
    pub const EMPTY: Self = Self {
        len: 0,
        flags: 0,
        levels: [OomMemcgLevel::ZERO; OOM_CHAIN_DEPTH],
    };
}

/// An OOM kill. Too large for the BPF stack: the programs write it in
/// place, in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomEvent {
    pub kind: u32,
    pub source: u32,
    pub ts_ns: u64,
    pub flags: u32,
    pub victim_pid: u32,
    pub victim_tgid: u32,
    pub victim_uid: u32,
    pub victim_oom_score_adj: i32,
    pub trigger_pid: u32,
    pub trigger_tgid: u32,
    pub _pad: u32,
    pub victim_comm: [u8; 16],
    pub trigger_comm: [u8; 16],
    pub victim_memcg_id: u64,
    /// `oc->memcg`: the memcg whose limit fired; 0 = global OOM.
    pub oom_memcg_id: u64,
    pub totalpages: u64,
    pub chosen_points: i64,
    /// The memcg chain at the kill (see `OomChain.flags` for whose).
    pub chain: OomChain,
}

pub const SLOW_CHARGE: u32 = 1;
pub const SLOW_RECLAIM_DIRECT: u32 = 2;
pub const SLOW_RECLAIM_MEMCG: u32 = 3;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlowEvent {
    pub kind: u32,
    pub what: u32,
    pub ts_ns: u64,
    pub duration_ns: u64,
    pub memcg_id: u64,
    /// Pages asked for (charge) or reclaimed (reclaim).
    pub pages: u64,
    /// Return value of the charge (0 = success); 0 for reclaim.
    pub result: i64,
    pub pid: u32,
    pub tgid: u32,
    pub comm: [u8; 16],
}

/// Bucket index of a duration for the latency histograms.
#[inline(always)]
pub fn hist_bucket(ns: u64) -> usize {
    let log2 = 63 - (ns | 1).leading_zeros();
    let b = log2.saturating_sub(HIST_SHIFT) as usize;
    if b >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        b
    }
}

// SAFETY (every impl below): each type is `#[repr(C)]` and made only of
// integers and integer arrays, so any bytes the kernel writes are a valid
// value; the programs and memtrace share these very definitions.
#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for KernelOffsets {}
    unsafe impl aya::Pod for ProbeConfig {}
    unsafe impl aya::Pod for MemcgStats {}
    unsafe impl aya::Pod for ShrinkerKey {}
    unsafe impl aya::Pod for ShrinkerMapKey {}
    unsafe impl aya::Pod for ShrinkerStats {}
    unsafe impl aya::Pod for ShrinkerMapValue {}
    unsafe impl aya::Pod for ShrinkerInfo {}
    unsafe impl aya::Pod for SystemStats {}
    unsafe impl aya::Pod for InflightKey {}
    unsafe impl aya::Pod for Inflight {}
    // Ring buffer events, decoded from the bytes of a sample.
    unsafe impl aya::Pod for OomEvent {}
    unsafe impl aya::Pod for SlowEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hist_bucket_bounds() {
        assert_eq!(hist_bucket(0), 0);
        assert_eq!(hist_bucket(511), 0);
        assert_eq!(hist_bucket(512), 0);
        assert_eq!(hist_bucket(1024), 1);
        assert_eq!(hist_bucket(1_000_000), 10); // 2^19 <= 1e6 < 2^20
        assert_eq!(hist_bucket(u64::MAX), HIST_BUCKETS - 1);
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        // Userspace reads these bytes as written by BPF; any implicit
        // padding would be uninitialised memory in the ring buffer.
        assert_eq!(core::mem::size_of::<OomMemcgLevel>(), 8 * 4 + OOM_NAME_LEN);
        assert_eq!(
            core::mem::size_of::<OomChain>(),
            4 * 2 + OOM_CHAIN_DEPTH * core::mem::size_of::<OomMemcgLevel>()
        );
        assert_eq!(
            core::mem::size_of::<OomEvent>(),
            4 * 12 + 32 + 8 * 4 + core::mem::size_of::<OomChain>()
        );
        assert_eq!(core::mem::size_of::<SlowEvent>(), 8 * 6 + 8 + 16);
        assert_eq!(core::mem::size_of::<ProbeConfig>(), 48);
        assert_eq!(core::mem::size_of::<KernelOffsets>(), 36 * 4);
        // Map keys and values: hashed and copied as bytes by the kernel.
        assert_eq!(core::mem::size_of::<ShrinkerMapKey>(), 2 * 8);
        assert_eq!(core::mem::size_of::<ShrinkerStats>(), 6 * 8);
        assert_eq!(core::mem::size_of::<ShrinkerMapValue>(), 64);
        assert_eq!(core::mem::size_of::<Inflight>(), 6 * 8);
        assert_eq!(core::mem::size_of::<ShrinkerInfo>(), 32 + 16 + 32);
    }
}
