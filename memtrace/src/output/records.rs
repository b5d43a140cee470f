//! The records memtrace writes, one JSON object per line, and reads back
//! for `--replay`. This is the event schema: docs/events.md documents every
//! field, and fields are only ever added, never renamed. `Option` fields are
//! `null` when the attach plan cannot see them (never 0).
//!
//! It depends on serde alone, so refactoring the code that fills it (the
//! cgroup readers, the builders) cannot change the file format.
use serde::{Deserialize, Serialize};

pub use super::fields::{Field, Unseen};

pub const FORMAT_VERSION: u32 = 1;

/// Every record, tagged by its `"type"`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Header(Header),
    OomKill(Box<OomKill>),
    MemcgInterval(Box<MemcgInterval>),
    SlowCharge(Slow),
    SlowReclaim(Slow),
    System(System),
    /// First line of an incident capture written by `record`.
    Capture(Box<Capture>),
    /// One OOM kill's post-mortem, as `record` appends it to its OOM log.
    OomPostmortem(Box<OomPostmortem>),
}

impl From<OomKill> for Record {
    fn from(k: OomKill) -> Self {
        Record::OomKill(Box::new(k))
    }
}

impl From<MemcgInterval> for Record {
    fn from(i: MemcgInterval) -> Self {
        Record::MemcgInterval(Box::new(i))
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Memcg {
    /// Inode number of the memcg's cgroupfs directory (= kernfs id).
    pub id: u64,
    /// Path below the memory hierarchy root; null if never resolved.
    pub path: Option<String>,
    /// The memcg was removed; `path` is the last one seen.
    pub deleted: bool,
    /// The container it belongs to, from its path; null without a path.
    #[serde(default)]
    pub container: Option<Container>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Header {
    pub ts: String,
    pub ts_ns: u64,
    pub format_version: u32,
    pub memtrace_version: String,
    pub hostname: String,
    pub kernel_release: String,
    pub cgroup_mode: String,
    pub attach_mode: String,
    pub interval_ms: Option<u64>,
    /// `do_shrink_slab` calls are timed one in this many, chosen at random,
    /// each timed call's time counting this many times
    /// (`--shrinker-time-sample`): shrinker times (`do_shrink_slab_ns`, a
    /// shrinker row's `ns`) are unbiased estimates; every count is exact.
    /// 1 = every call timed, as in files written before this field.
    #[serde(default)]
    pub shrinker_time_sample: TimeSample,
    /// One object per hook (see docs/events.md).
    pub plan: Vec<PlanEntry>,
    /// Record fields this plan leaves null.
    pub unavailable: Unseen,
    /// Whether the kernel log could be read (OOM details and past kills).
    pub kmsg: bool,
    /// Sources the agent could not use with its privileges or this host's
    /// settings, and what records lose (empty: none). An added field:
    /// files written before it read as empty.
    #[serde(default)]
    pub degraded: Vec<Degraded>,
}

/// `Header::shrinker_time_sample`: one call in this many timed; 1 (every
/// call) by default, so that a header built or read without it says so.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(transparent)]
pub struct TimeSample(pub u32);

impl Default for TimeSample {
    fn default() -> Self {
        TimeSample(1)
    }
}

/// A source of data the agent could not use, why, and what it costs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Degraded {
    /// `kmsg`, `kallsyms`, `tracefs`, `proc` or `cgroupfs`.
    pub source: String,
    /// Why, naming the capability or setting that would fix it.
    pub reason: String,
    /// What records lose without it.
    pub loses: String,
}

/// What happened to one hook: the family it attached with (null when it
/// could not attach at all) and what that leaves unseen.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct PlanEntry {
    pub hook: String,
    pub family: Option<Family>,
    pub target: Option<String>,
    /// "attached" or "unavailable".
    pub status: String,
    /// Why the hook is unavailable, or why better families were skipped.
    pub reason: Option<String>,
    /// What the chosen family (or absence) cannot see.
    pub loses: Option<String>,
    /// How the chosen family pairs a call's entry with its return
    /// (`kernel::plan::pairing`); absent for single-event hooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing: Option<String>,
    /// Every family tried, with its outcome (`doctor` tries them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub families: Vec<FamilyOutcome>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FamilyOutcome {
    pub family: Family,
    pub ok: bool,
    pub detail: String,
}

/// The kind of kernel program a hook attached with.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Fentry,
    Kprobe,
    TpBtf,
    Tracepoint,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Fentry => "fentry",
            Family::Kprobe => "kprobe",
            Family::TpBtf => "tp_btf",
            Family::Tracepoint => "tracepoint",
        }
    }
}

impl Memcg {
    /// Its path, or `id:N` when it was never resolved.
    pub fn path_or_id(&self) -> String {
        self.path
            .clone()
            .unwrap_or_else(|| format!("id:{}", self.id))
    }

    /// The key per-container views (`top`, `report`) group its figures
    /// under: its container's `runtime/id`, else `memcg/<path or id:N>`.
    pub fn container_key(&self) -> String {
        match &self.container {
            Some(c) => format!("{}/{}", c.runtime, c.id),
            None => self.memcg_key(),
        }
    }

    /// The key of the memcg itself.
    pub fn memcg_key(&self) -> String {
        format!("memcg/{}", self.path_or_id())
    }
}

impl PlanEntry {
    /// A hook attached with `family` (None: unavailable), nothing else known.
    pub fn new(hook: &str, family: Option<Family>) -> Self {
        PlanEntry {
            hook: hook.to_string(),
            family,
            status: if family.is_some() {
                "attached"
            } else {
                "unavailable"
            }
            .to_string(),
            ..Default::default()
        }
    }
}

impl Header {
    /// The plan for display: hooks grouped by the family they attached
    /// with (families in plan order), then the hooks that did not attach.
    pub fn plan_by_family(&self) -> (Vec<(Family, Vec<&str>)>, Vec<&str>) {
        let mut by: Vec<(Family, Vec<&str>)> = Vec::new();
        let mut missing = Vec::new();
        for p in &self.plan {
            match p.family {
                Some(f) => match by.iter_mut().find(|(x, _)| *x == f) {
                    Some((_, hooks)) => hooks.push(&p.hook),
                    None => by.push((f, vec![&p.hook])),
                },
                None => missing.push(p.hook.as_str()),
            }
        }
        (by, missing)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Task {
    /// Null when only the kernel log named the task (it prints no pid).
    pub pid: Option<u32>,
    pub tgid: Option<u32>,
    pub comm: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
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

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct OomKill {
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
    /// How the limiting memcg was known: "kernel" (`oc->memcg`, read by
    /// `oom_kill_process`), "kmsg" (the kernel log's OOM summary) or
    /// "inferred" (the lowest memcg at its limit among the victim's and
    /// its ancestors, from page counters read in the kernel at the kill);
    /// null when unknown. With "kernel" or "kmsg" a null `oom_memcg` means
    /// no memcg limit fired.
    #[serde(default)]
    pub oom_memcg_source: Option<String>,
    /// The task whose allocation invoked the OOM killer.
    pub trigger: Option<Task>,
    pub totalpages: Option<u64>,
    pub chosen_points: Option<i64>,
    /// Where the facts came from: "oom_kill_process", "mark_victim", "kmsg".
    pub sources: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ShrinkerRow {
    /// Kernel address of the `struct shrinker` (its identity).
    pub shrinker: String,
    /// Symbol of its count_objects callback, e.g. "super_cache_count".
    pub count_objects: Option<String>,
    /// `shrinker->name` (kernels with CONFIG_SHRINKER_DEBUG), e.g. "sb-tmpfs".
    #[serde(default)]
    pub name: Option<String>,
    /// Superblock shrinkers: the filesystem type, e.g. "tmpfs", "ext4".
    #[serde(default)]
    pub fs_type: Option<String>,
    /// Superblock shrinkers: the superblock's `s_id`, e.g. "vda1", "tmpfs".
    #[serde(default)]
    pub device: Option<String>,
    pub calls: u64,
    pub zero: Option<u64>,
    pub freed: u64,
    pub ns: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct MemcgInterval {
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
    /// How long before `ts_ns` `state` was read: 0 when read as this
    /// interval closed, else the age of a state carried from an earlier
    /// interval (docs/events.md says when); null with `state` (and in
    /// files written before this field).
    #[serde(default)]
    pub state_age_ns: Option<u64>,
    /// The memcg's cgroupfs state, read `state_age_ns` before the end of
    /// the interval; null when it could not be read (deleted).
    #[serde(default)]
    pub state: Option<MemcgState>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Slow {
    pub ts: String,
    pub ts_ns: u64,
    /// "charge", "direct_reclaim" or "memcg_reclaim".
    pub what: String,
    pub duration_ns: u64,
    pub memcg: Memcg,
    pub pages: u64,
    /// Return value of the charge (0 = success); null for reclaims.
    pub result: Option<i64>,
    pub task: Task,
}

/// Host-wide state, after every interval's `memcg_interval` records (it
/// closes the interval) and once at exit.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct System {
    pub ts: String,
    pub ts_ns: u64,
    pub interval_ns: u64,
    /// % of all CPU time spent in the kernel ("system" in /proc/stat).
    pub sys_pct: f64,
    /// The busiest CPU's system %, and which CPU that was.
    pub max_cpu_sys_pct: f64,
    pub max_cpu: Option<u32>,
    pub iowait_pct: f64,
    /// CPU used by the kswapd threads, in % of one CPU.
    pub kswapd_cpu_pct: f64,
    /// Memcgs removed but still held by the kernel (they still cost
    /// shrinker work); null where the kernel does not tell.
    pub dying_memcgs: Option<u64>,
    /// Memcgs in the hierarchy now.
    pub live_memcgs: u64,
    /// The rest is cumulative since start.
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
    /// `memtrace record` only (null elsewhere): OOM post-mortems held in
    /// memory because the disk refused them, to be written when space
    /// returns; and post-mortems lost since start (the bound on those held
    /// was hit, or the agent stopped with some still held).
    pub postmortems_pending: Option<u64>,
    pub postmortems_lost: Option<u64>,
}

impl System {
    /// The counters of data memtrace lost in the kernel (events, map
    /// updates, timed calls), cumulative since start: all 0 on a run that
    /// saw everything. The agent's own choices (`map_evictions`) are not
    /// among them.
    pub const KERNEL_LOSSES: [&'static str; 6] = [
        "ringbuf_drops",
        "unmatched_returns",
        "memcg_map_full",
        "shrinker_map_full",
        "inflight_map_full",
        "missed_returns",
    ];
}

/// Why a capture was written: system-wide sys% stayed above the threshold.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Trigger {
    /// "sys_time".
    pub kind: String,
    /// When the threshold was first crossed (the spike's start).
    pub ts: String,
    pub ts_ns: u64,
    pub threshold_pct: f64,
    /// How long sys% had stayed above it when the capture was decided.
    pub sustained_ns: u64,
    /// Highest system-wide sys% over the spike, and the busiest CPU's.
    pub peak_sys_pct: f64,
    pub peak_cpu_sys_pct: f64,
    pub peak_cpu: Option<u32>,
}

/// The header line of a capture file; the records of the window follow.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Capture {
    pub ts: String,
    pub ts_ns: u64,
    pub format_version: u32,
    pub trigger: Trigger,
    /// The window captured, in ns since boot: `--pre` before the trigger to
    /// `--post` after it (clipped to the history kept).
    pub from_ns: u64,
    pub to_ns: u64,
    /// The stream header of the run that captured it (attach plan etc.).
    pub header: Header,
    /// Records left out because the capture hit `--max-capture-bytes`.
    pub truncated_records: u64,
}

/// A task in the memcg at the time of the post-mortem.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct TaskRss {
    pub pid: u32,
    pub comm: String,
    pub rss_anon_kb: Option<u64>,
    pub rss_file_kb: Option<u64>,
    pub rss_shmem_kb: Option<u64>,
}

/// Memory the kernel could not reclaim to avoid the kill.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Unreclaimable {
    /// tmpfs/shmem pages (no swap configured means they cannot go).
    pub shmem_bytes: Option<u64>,
    /// mlock()ed and otherwise unevictable pages.
    pub unevictable_bytes: Option<u64>,
    pub dirty_bytes: Option<u64>,
    pub writeback_bytes: Option<u64>,
    /// Their sum as % of usage.
    pub share_pct: Option<f64>,
}

/// What the memcg went through in the minutes before the kill, from the
/// agent's history (null fields: not visible on the attach plan).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct OomHistory {
    /// How far back the history reaches.
    pub window_ns: u64,
    pub intervals: u64,
    pub charge_failures: Option<u64>,
    pub limit_hits: Option<u64>,
    pub reclaim_count: u64,
    pub reclaim_ns: u64,
    pub reclaim_pages: u64,
    pub do_shrink_slab_calls: Option<u64>,
    pub do_shrink_slab_zero: Option<u64>,
    pub shrink_slab_ns: Option<u64>,
}

impl OomHistory {
    /// Adds one interval's counters. A quantity no interval carried stays
    /// null (not visible), never 0; the reclaim sums count a missing figure
    /// as 0. `window_ns` and `intervals` are the caller's.
    pub fn add(&mut self, i: &MemcgInterval) {
        fn acc(slot: &mut Option<u64>, v: Option<u64>) {
            if let Some(v) = v {
                *slot = Some(slot.unwrap_or(0).saturating_add(v));
            }
        }
        let both = |a: Option<u64>, b: Option<u64>| a.unwrap_or(0) + b.unwrap_or(0);
        acc(&mut self.charge_failures, i.charge_failures);
        acc(&mut self.limit_hits, i.limit_hits);
        self.reclaim_count += both(i.reclaim_direct_count, i.reclaim_memcg_count);
        self.reclaim_ns += both(i.reclaim_direct_ns, i.reclaim_memcg_ns);
        self.reclaim_pages += both(i.reclaim_direct_pages, i.reclaim_memcg_pages);
        acc(&mut self.do_shrink_slab_calls, i.do_shrink_slab_calls);
        acc(&mut self.do_shrink_slab_zero, i.do_shrink_slab_zero);
        acc(&mut self.shrink_slab_ns, i.shrink_slab_ns);
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct OomPostmortem {
    pub ts: String,
    pub ts_ns: u64,
    /// The kill itself, as `stream` reports it.
    pub kill: OomKill,
    /// No memcg limit fired: the whole machine (or a cpuset/mempolicy) ran out.
    pub global: bool,
    /// The memcg whose limit fired (null for a global OOM), read right away.
    pub limit_memcg: Option<Memcg>,
    pub limit_state: Option<MemcgState>,
    /// The victim's own memcg, read right away (may equal the limit's).
    pub victim_state: Option<MemcgState>,
    /// Tasks left in the limiting memcg (or the victim's), with rss.
    pub tasks: Option<Vec<TaskRss>>,
    pub unreclaimable: Option<Unreclaimable>,
    /// History of the limiting memcg (or the victim's).
    pub history: Option<OomHistory>,
    /// What could not be read and why (e.g. "memcg already removed").
    pub notes: Vec<String>,
}

/// Who a memcg's memory is charged to, for display and aggregation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Container {
    /// "docker", "containerd", "cri-o", "podman", "systemd" or "cgroup".
    pub runtime: String,
    /// Full container id (64 hex digits; `conmon-<id>` for a monitor), the
    /// unit name for systemd, the cgroup path for plain and pod cgroups.
    pub id: String,
    /// What `top` shows: the 12-digit short id as `docker ps` shows it
    /// (`conmon-<short id>` for a monitor), the unit name for systemd,
    /// `pod/<8 chars of uid>` for a pod, else the last path component ("/"
    /// for the root).
    pub name: String,
    /// Kubernetes pod uid as kubectl shows it (dashes, not underscores).
    pub pod_uid: Option<String>,
    /// Kubernetes QoS class: "guaranteed", "burstable" or "besteffort".
    pub qos: Option<String>,
    /// Path of the cgroup the identity belongs to (the container's, unit's
    /// or pod's directory), an ancestor of the memcg's path or that path.
    pub cgroup: String,
    /// The runtime's own name for it: the Docker/Podman container name, the
    /// Kubernetes container name. Null when not known (the path alone never
    /// tells). Added fields: files written before them read as null.
    #[serde(default)]
    pub runtime_name: Option<String>,
    /// Kubernetes pod name.
    #[serde(default)]
    pub pod: Option<String>,
    /// Kubernetes namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Image the container runs, as the runtime records it.
    #[serde(default)]
    pub image: Option<String>,
}

impl Container {
    /// An identity from the cgroup path alone: nothing the runtimes' state
    /// files add is known yet.
    pub fn from_path(
        runtime: &str,
        id: String,
        name: String,
        pod_uid: Option<String>,
        qos: Option<String>,
        cgroup: String,
    ) -> Self {
        Container {
            runtime: runtime.into(),
            id,
            name,
            pod_uid,
            qos,
            cgroup,
            runtime_name: None,
            pod: None,
            namespace: None,
            image: None,
        }
    }

    /// The name people use for it (unescaped: escape it for the output):
    /// `namespace/pod/container` for a Kubernetes container (`namespace/pod`
    /// for the pod's own cgroup), the runtime's name for Docker/Podman, else
    /// `name` (the short id, unit or last path component).
    pub fn display_name(&self) -> String {
        match (&self.namespace, &self.pod, &self.runtime_name) {
            (Some(ns), Some(pod), Some(ctr)) => format!("{ns}/{pod}/{ctr}"),
            (Some(ns), Some(pod), None) => format!("{ns}/{pod}"),
            (_, _, Some(n)) => n.clone(),
            _ => self.name.clone(),
        }
    }
}

/// Snapshot of one memcg. Every field is None when its file is absent or
/// unreadable (not every kernel has every file; the v2 root has no
/// `memory.current`/`memory.max`/`memory.events`) and all of them are None
/// for a memcg that no longer exists.
///
/// Byte counts are hierarchical (they include descendants) on v1 and v2
/// alike: v1 `memory.usage_in_bytes` and the `total_*` keys of v1
/// `memory.stat`, v2 `memory.current` and `memory.stat`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct MemcgState {
    /// v1 `memory.usage_in_bytes`, v2 `memory.current`.
    pub usage_bytes: Option<u64>,
    /// The memcg's own limit (None = unlimited: v1's huge PAGE_COUNTER_MAX
    /// value or v2 "max"). v1 `memory.limit_in_bytes`, v2 `memory.max`.
    pub limit_bytes: Option<u64>,
    /// Effective limit: the lowest limit on the path from this memcg up to
    /// the root, and the path of the memcg that sets it (itself or an
    /// ancestor; on a tie, the one closest to this memcg). None when nothing
    /// on the path is limited.
    pub effective_limit_bytes: Option<u64>,
    pub limited_by: Option<String>,
    /// v1 `memory.memsw.limit_in_bytes` (memory+swap) / v2 `memory.swap.max`
    /// (swap alone); None = unlimited or absent (no swap accounting).
    pub swap_limit_bytes: Option<u64>,
    /// usage - inactive_file (cAdvisor/Kubernetes working set), saturating.
    pub working_set_bytes: Option<u64>,
    /// Anonymous memory: v1 `total_rss` (NR_ANON_MAPPED, which includes
    /// transparent huge pages: `rss_huge` is a subset of it), v2 `anon`.
    pub anon_bytes: Option<u64>,
    /// Page cache, tmpfs/shmem and swap cache included: v1 `total_cache`,
    /// v2 `file`.
    pub file_bytes: Option<u64>,
    /// v1 `total_shmem`, v2 `shmem` (part of `file_bytes`).
    pub shmem_bytes: Option<u64>,
    /// v1 `total_unevictable`, v2 `unevictable`.
    pub unevictable_bytes: Option<u64>,
    /// v1 `total_dirty`, v2 `file_dirty`.
    pub dirty_bytes: Option<u64>,
    /// v1 `total_writeback`, v2 `file_writeback`.
    pub writeback_bytes: Option<u64>,
    /// v1 `total_inactive_file`, v2 `inactive_file`.
    pub inactive_file_bytes: Option<u64>,
    /// v1 memory.oom_control: tasks hang in the charge path instead of dying
    /// when oom_kill_disable=1; under_oom=1 means they hang now. None on v2,
    /// which has neither.
    pub oom_kill_disable: Option<bool>,
    pub under_oom: Option<bool>,
    /// v2 memory.events (cumulative, hierarchical): high/max/oom/oom_kill;
    /// v1: only oom_kill, from memory.oom_control's "oom_kill" line (4.13+).
    /// (v1 limit hits are `cgroup::stats::limit_hits`.)
    pub events_high: Option<u64>,
    pub events_max: Option<u64>,
    pub events_oom: Option<u64>,
    pub events_oom_kill: Option<u64>,
    /// v2 memory.pressure: "some" and "full" avg10 (percent) and "some"
    /// total (µs). None on v1 (a hybrid host's cgroup2 mount has
    /// memory.pressure files, but of cgroup2 groups, not of the memcgs) and
    /// when PSI is disabled.
    pub pressure_some_avg10: Option<f64>,
    pub pressure_full_avg10: Option<f64>,
    pub pressure_some_total_us: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::{Header, System, TimeSample};

    /// Files written before the field timed every call: they read as 1,
    /// and a header written now says its sample.
    #[test]
    fn a_header_without_the_time_sample_reads_as_every_call() {
        let mut v = serde_json::to_value(Header::default()).unwrap();
        assert_eq!(v["shrinker_time_sample"], 1);
        v.as_object_mut().unwrap().remove("shrinker_time_sample");
        let h: Header = serde_json::from_value(v).unwrap();
        assert_eq!(h.shrinker_time_sample, TimeSample(1));
        let h = Header {
            shrinker_time_sample: TimeSample(8),
            ..Header::default()
        };
        assert_eq!(serde_json::to_value(h).unwrap()["shrinker_time_sample"], 8);
    }

    #[test]
    fn kernel_losses_are_counters_of_the_system_record() {
        let v = serde_json::to_value(System::default()).unwrap();
        for k in System::KERNEL_LOSSES {
            assert!(v[k].is_u64(), "{k}: {}", v[k]);
        }
    }
}
