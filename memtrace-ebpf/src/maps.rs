//! The maps shared by all programs. Sizes here are defaults: the agent
//! overrides them at load time (`--memcg-entries`, ...).
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use memtrace_common::{
    Inflight, InflightKey, KernelOffsets, MemcgStats, ProbeConfig, ShrinkerInfo, ShrinkerMapKey,
    ShrinkerMapValue, SystemStats,
};

/// Slots per CPU: one per `HOOK_*` value (they are small integers).
const HOOK_SLOTS: u32 = 8;

#[map]
pub static MEMCG_STATS: PerCpuHashMap<u64, MemcgStats> = PerCpuHashMap::with_max_entries(4096, 0);

/// Counters per (memcg, shrinker), the hottest map: one value shared by
/// the CPUs and added to atomically, not one per CPU (a per-CPU value is one
/// more cold line per call: measured ~100 ns of a ~500 ns pair in a storm),
/// keyed by the memcg's css serial number (`ShrinkerMapKey`), its value
/// padded so that an element is two whole cache lines (`ShrinkerMapValue`).
#[map]
pub static SHRINKER_STATS: HashMap<ShrinkerMapKey, ShrinkerMapValue> =
    HashMap::with_max_entries(16384, 0);

/// Names of shrinkers, by `struct shrinker *`: written once, when a
/// shrinker is first seen, and only for shrinkers with a name to tell.
#[map]
pub static SHRINKER_INFO: HashMap<u64, ShrinkerInfo> = HashMap::with_max_entries(4096, 0);

/// Calls in progress whose thread left its CPU's slot in `SLOTS` (see
/// `stats`), and kswapd episodes (they span its sleep).
#[map]
pub static INFLIGHT: HashMap<InflightKey, Inflight> = HashMap::with_max_entries(16384, 0);

/// One call in progress, in this CPU's slot for its hook.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PairSlot {
    /// `1 << 32 | tid` of the thread mid-call; 0 = free.
    pub owner: u64,
    pub value: Inflight,
}

/// Per-CPU entry slots, indexed by `HOOK_*`.
#[map]
pub static SLOTS: PerCpuArray<PairSlot> = PerCpuArray::with_max_entries(HOOK_SLOTS, 0);

/// Nonzero (the agent's clock) once the agent had attached every program:
/// an entry record made before then (`Inflight::started` 0) is no lost
/// return. While the programs are attached one by one, a call can enter
/// through a hook whose return program is not attached yet; its record
/// stays behind.
#[map]
pub static STARTED: Array<u64> = Array::with_max_entries(1, 0);

#[map]
pub static SYSTEM_STATS: PerCpuArray<SystemStats> = PerCpuArray::with_max_entries(1, 0);

/// A zeroed `MemcgStats` to insert from: the struct is too large for the
/// 512-byte BPF stack, so new entries are copied from map memory.
#[map]
pub static ZERO_MEMCG_STATS: PerCpuArray<MemcgStats> = PerCpuArray::with_max_entries(1, 0);

/// Notable events only: OOM kills and slow charges/reclaims.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Resolved by the agent from the running kernel's BTF before load.
// SAFETY: the loader finds and rewrites this symbol by name before load;
// no other symbol is named OFFSETS.
#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = KernelOffsets {
    task_cgroups: 0,
    task_pid: 0,
    task_tgid: 0,
    task_comm: 0,
    task_flags: 0,
    task_real_cred: 0,
    task_signal: 0,
    cred_uid: 0,
    signal_oom_score_adj: 0,
    css_set_subsys: 0,
    memory_cgrp_id: 0,
    css_cgroup: 0,
    cgroup_kn: 0,
    kn_id: 0,
    memcg_css: 0,
    css_serial_nr: 0,
    shrinkctl_memcg: 0,
    shrinker_count_objects: 0,
    oc_memcg: 0,
    oc_chosen: 0,
    oc_totalpages: 0,
    oc_chosen_points: 0,
    shrinker_name: 0,
    shrinker_private_data: 0,
    sb_s_shrink: 0,
    sb_s_type: 0,
    sb_s_id: 0,
    fstype_name: 0,
    shrinker_names: 0,
    css_parent: 0,
    kn_name: 0,
    memcg_memory: 0,
    page_counter_usage: 0,
    page_counter_max: 0,
    page_counter_failcnt: 0,
    valid: 0,
};

// SAFETY: the loader finds and rewrites this symbol by name before load;
// no other symbol is named CONFIG.
#[unsafe(no_mangle)]
pub static CONFIG: ProbeConfig = ProbeConfig {
    slow_charge_ns: 0,
    slow_reclaim_ns: 0,
    mark_victim_arg: 0,
    tp_reclaim_end_nr_reclaimed: 0,
    tp_mark_victim_pid: 0,
    scan_cpus: 0,
    super_cache_count: 0,
    shrink_time_mask: 0,
};
