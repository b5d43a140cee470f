//! The records memtrace writes, one JSON object per line. This is the event
//! schema: docs/events.md documents every field, and fields are only ever
//! added, never renamed. `Option` fields are `null` when the attach plan
//! cannot see them (never 0).
use serde::Serialize;

use crate::source::loader::PlanEntry;

pub const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Memcg {
    /// Inode number of the memcg's cgroupfs directory (= kernfs id).
    pub id: u64,
    /// Path below the memory hierarchy root; null if never resolved.
    pub path: Option<String>,
    /// The memcg was removed; `path` is the last one seen.
    pub deleted: bool,
}

#[derive(Serialize, Clone, Debug)]
pub struct Header {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ts: String,
    pub ts_ns: u64,
    pub format_version: u32,
    pub memtrace_version: &'static str,
    pub hostname: String,
    pub kernel_release: String,
    pub cgroup_mode: String,
    pub attach_mode: &'static str,
    pub interval_ms: Option<u64>,
    pub plan: Vec<PlanEntry>,
    /// Record fields this plan leaves null.
    pub unavailable: Vec<&'static str>,
    /// Whether the kernel log could be read (OOM details and past kills).
    pub kmsg: bool,
}

#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct Task {
    /// Null when only the kernel log named the task (it prints no pid).
    pub pid: Option<u32>,
    pub tgid: Option<u32>,
    pub comm: String,
}

#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct Victim {
    pub pid: u32,
    pub tgid: Option<u32>,
    pub comm: String,
    pub uid: Option<u32>,
    pub oom_score_adj: Option<i32>,
    pub total_vm_kb: Option<u64>,
    pub rss_anon_kb: Option<u64>,
    pub rss_file_kb: Option<u64>,
    pub rss_shmem_kb: Option<u64>,
    pub pgtables_kb: Option<u64>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct OomKill {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ts: String,
    pub ts_ns: u64,
    /// Found in the kernel log at start-up: it happened before memtrace ran.
    pub before_start: bool,
    /// "memcg", "global", "cpuset", "mempolicy", or null if unknown.
    pub constraint: Option<String>,
    pub victim: Victim,
    pub victim_memcg: Option<Memcg>,
    /// The memcg whose limit fired (may be an ancestor of the victim's);
    /// null for a global OOM or when unknown.
    pub oom_memcg: Option<Memcg>,
    /// The task whose allocation invoked the OOM killer.
    pub trigger: Option<Task>,
    pub totalpages: Option<u64>,
    pub chosen_points: Option<i64>,
    /// Where the facts came from: "oom_kill_process", "mark_victim", "kmsg".
    pub sources: Vec<&'static str>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct ShrinkerRow {
    /// Kernel address of the `struct shrinker` (its identity).
    pub shrinker: String,
    /// Symbol of its count_objects callback, e.g. "super_cache_count".
    pub count_objects: Option<String>,
    pub calls: u64,
    pub zero: Option<u64>,
    pub freed: u64,
    pub ns: u64,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct MemcgInterval {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ts: String,
    pub ts_ns: u64,
    pub interval_ns: u64,
    pub memcg: Memcg,
    pub charge_calls: Option<u64>,
    pub charge_failures: Option<u64>,
    pub charge_ns: Option<u64>,
    pub charge_pages: Option<u64>,
    pub charge_p50_ns: Option<u64>,
    pub charge_p99_ns: Option<u64>,
    pub reclaim_direct_count: Option<u64>,
    pub reclaim_direct_ns: Option<u64>,
    pub reclaim_direct_pages: Option<u64>,
    pub reclaim_memcg_count: Option<u64>,
    pub reclaim_memcg_ns: Option<u64>,
    pub reclaim_memcg_pages: Option<u64>,
    pub reclaim_p50_ns: Option<u64>,
    pub reclaim_p99_ns: Option<u64>,
    pub shrink_slab_calls: Option<u64>,
    pub shrink_slab_ns: Option<u64>,
    pub shrink_slab_freed: Option<u64>,
    pub shrink_slab_kswapd_ns: Option<u64>,
    pub do_shrink_slab_calls: Option<u64>,
    pub do_shrink_slab_zero: Option<u64>,
    pub do_shrink_slab_freed: Option<u64>,
    pub do_shrink_slab_ns: Option<u64>,
    /// Charge failures by the limit: v1 memory.failcnt / v2 memory.events
    /// `max`, as a delta over the interval.
    pub limit_hits: Option<u64>,
    /// Busiest shrinkers for this memcg in the interval (top 10 by calls).
    pub shrinkers: Option<Vec<ShrinkerRow>>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Slow {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ts: String,
    pub ts_ns: u64,
    /// "charge", "direct_reclaim" or "memcg_reclaim".
    pub what: &'static str,
    pub duration_ns: u64,
    pub memcg: Memcg,
    pub pages: u64,
    /// Return value of the charge (0 = success); null for reclaims.
    pub result: Option<i64>,
    pub task: Task,
}

#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct Stats {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ts: String,
    pub ts_ns: u64,
    /// Cumulative since start.
    pub kswapd_wakes: Option<u64>,
    pub kswapd_ns: Option<u64>,
    pub ringbuf_drops: u64,
    pub memcg_map_full: u64,
    pub shrinker_map_full: u64,
    pub inflight_map_full: u64,
    pub unmatched_returns: u64,
    pub missed_returns: u64,
    /// Entries the agent removed from full maps (idle or deleted memcgs).
    pub map_evictions: u64,
    /// Sum of bpf_prog_info.recursion_misses over memtrace's programs.
    pub prog_recursion_misses: Option<u64>,
    pub memcg_entries: u64,
    pub shrinker_entries: u64,
}
