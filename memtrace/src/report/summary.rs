//! Folds every record of a file into one [`Report`]: totals over the whole
//! span (not per-second rates of the last interval, as `top` shows), per
//! memcg, per container, per shrinker, per interval (for the storm
//! signature), per OOM kill. A quantity no record could see stays `None`
//! ("not visible on this plan"), never 0.
use crate::aggregate::counters::add_fields;
use crate::output::fields::{Field, Unseen};
use crate::source::ndjson::BadLine;
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::{
    oom::OomStory,
    storm::{self, IntervalEval, Storm, Thresholds},
};
use crate::output::records::{
    Capture, Header, Memcg, MemcgInterval, OomKill, Record, ShrinkerRow, Slow, System, Trigger,
};

/// Rows in each ranking.
pub const TOP: usize = 10;
/// Shrinkers listed.
pub const TOP_SHRINKERS: usize = 15;
/// Bad lines listed in the JSON report (all are counted).
pub const MAX_BAD_LINES: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// First line `capture`: an incident window written by `record`.
    Capture,
    /// First line `header`: `stream --output` or `top --save`.
    Stream,
    /// `oom_postmortem` lines: `record`'s OOM log.
    OomLog,
}

impl Kind {
    /// The kind of a file whose first record is `r`, and whether it lacks
    /// the header its kind starts with.
    pub fn of(r: &Record) -> (Kind, bool) {
        match r {
            Record::Capture(_) => (Kind::Capture, false),
            Record::Header(_) => (Kind::Stream, false),
            Record::OomPostmortem(_) => (Kind::OomLog, false),
            _ => (Kind::Stream, true),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Kind::Capture => "capture",
            Kind::Stream => "stream file",
            Kind::OomLog => "OOM log",
        }
    }
}

/// Whether `r` starts a new run (a segment of the file whose monotonic
/// timestamps and cumulative counters belong together): every capture
/// header, and every stream header outside a capture (`stream --output`
/// appends, so one file can hold several runs).
pub fn starts_segment(kind: Kind, r: &Record) -> bool {
    match r {
        Record::Capture(_) => true,
        Record::Header(_) => kind != Kind::Capture,
        _ => false,
    }
}

fn acc(slot: &mut Option<u64>, v: Option<u64>) {
    if let Some(v) = v {
        *slot = Some(slot.unwrap_or(0).saturating_add(v));
    }
}

fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}

/// One memcg's or one container's totals over the file.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Usage {
    /// A memcg's path ("id:N" when unresolved), or a container's name.
    pub name: String,
    /// The container runtime (of the memcg's container, for a memcg).
    pub runtime: Option<String>,
    pub memcg_id: Option<u64>,
    /// The memcg's path, or the container's cgroup.
    pub cgroup: Option<String>,
    /// For a memcg: its container's name.
    pub container: Option<String>,
    pub deleted: bool,
    /// Memcgs seen (1 for a memcg).
    pub memcgs: u64,
    /// memcg_interval records summed.
    pub records: u64,
    /// Time its tasks spent in direct and memcg-limit reclaim.
    pub reclaim_ns: u64,
    pub reclaim_direct_ns: Option<u64>,
    pub reclaim_memcg_ns: Option<u64>,
    pub reclaim_count: Option<u64>,
    pub reclaim_pages: Option<u64>,
    /// The highest interval p99 of its reclaim episodes.
    pub reclaim_p99_ns: Option<u64>,
    pub limit_hits: Option<u64>,
    pub charge_failures: Option<u64>,
    pub do_shrink_slab_calls: Option<u64>,
    pub do_shrink_slab_zero: Option<u64>,
    /// Share of the calls that freed nothing (over the records that could
    /// see it).
    pub zero_pct: Option<f64>,
    pub do_shrink_slab_freed: Option<u64>,
    pub do_shrink_slab_ns: Option<u64>,
    pub shrink_slab_kswapd_ns: Option<u64>,
    /// OOM kills of its tasks (not counting kills from before start).
    pub oom_kills: u64,
    #[serde(skip)]
    zero_base: u64,
    #[serde(skip)]
    memcg_keys: HashSet<String>,
}

impl Usage {
    fn add(&mut self, i: &MemcgInterval) {
        self.records += 1;
        self.reclaim_ns = self
            .reclaim_ns
            .saturating_add(i.reclaim_direct_ns.unwrap_or(0) + i.reclaim_memcg_ns.unwrap_or(0));
        acc(&mut self.reclaim_direct_ns, i.reclaim_direct_ns);
        acc(&mut self.reclaim_memcg_ns, i.reclaim_memcg_ns);
        acc(&mut self.reclaim_count, i.reclaim_direct_count);
        acc(&mut self.reclaim_count, i.reclaim_memcg_count);
        acc(&mut self.reclaim_pages, i.reclaim_direct_pages);
        acc(&mut self.reclaim_pages, i.reclaim_memcg_pages);
        self.reclaim_p99_ns = self.reclaim_p99_ns.max(i.reclaim_p99_ns);
        acc(&mut self.limit_hits, i.limit_hits);
        acc(&mut self.charge_failures, i.charge_failures);
        acc(&mut self.do_shrink_slab_calls, i.do_shrink_slab_calls);
        acc(&mut self.do_shrink_slab_freed, i.do_shrink_slab_freed);
        acc(&mut self.do_shrink_slab_ns, i.do_shrink_slab_ns);
        acc(&mut self.shrink_slab_kswapd_ns, i.shrink_slab_kswapd_ns);
        if let (Some(c), Some(z)) = (i.do_shrink_slab_calls, i.do_shrink_slab_zero) {
            acc(&mut self.do_shrink_slab_zero, Some(z));
            self.zero_base += c;
        }
    }

    fn finish(&mut self) {
        self.zero_pct = self
            .do_shrink_slab_zero
            .and_then(|z| share(z, self.zero_base));
    }
}

fn memcg_key(m: &Memcg) -> String {
    format!("{}:{}", m.id, m.path.as_deref().unwrap_or(""))
}

fn memcg_name(m: &Memcg) -> String {
    match &m.path {
        Some(p) => p.clone(),
        None if m.id == 0 => "(no memcg: global shrinker work)".into(),
        None => format!("id:{}", m.id),
    }
}

fn memcg_usage(m: &Memcg) -> Usage {
    Usage {
        name: memcg_name(m),
        runtime: m.container.as_ref().map(|c| c.runtime.to_string()),
        memcg_id: Some(m.id),
        cgroup: m.path.clone(),
        container: m.container.as_ref().map(|c| c.display_name()),
        memcgs: 1,
        ..Usage::default()
    }
}

fn container_usage(m: &Memcg) -> Usage {
    match &m.container {
        Some(c) => Usage {
            name: c.display_name(),
            runtime: Some(c.runtime.to_string()),
            cgroup: Some(c.cgroup.clone()),
            ..Usage::default()
        },
        None => Usage {
            memcg_id: Some(m.id),
            ..memcg_usage(m)
        },
    }
}

/// One shrinker's totals over every memcg and interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ShrinkerSummary {
    /// Kernel address of the `struct shrinker`.
    pub shrinker: String,
    pub count_objects: Option<String>,
    /// `shrinker->name`, and for superblocks the filesystem type and
    /// device, where the records carry them.
    pub name: Option<String>,
    pub fs_type: Option<String>,
    pub device: Option<String>,
    pub memcgs: u64,
    pub calls: u64,
    /// Null: calls that freed nothing are not visible on this plan.
    pub zero: Option<u64>,
    pub zero_pct: Option<f64>,
    pub freed: u64,
    pub ns: u64,
    #[serde(skip)]
    zero_base: u64,
    #[serde(skip)]
    memcg_keys: HashSet<String>,
    #[serde(skip)]
    labelled: bool,
}

/// The optional descriptive fields of a shrinker row, read through serde
/// so that rows with or without them (older files, kernels without the
/// information) read alike.
fn shrinker_labels(row: &ShrinkerRow) -> [Option<String>; 3] {
    let v = serde_json::to_value(row).unwrap_or_default();
    ["name", "fs_type", "device"].map(|k| v.get(k).and_then(|x| x.as_str()).map(str::to_string))
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ShrinkerTotals {
    /// Memcgs with do_shrink_slab calls.
    pub memcgs: u64,
    pub calls: Option<u64>,
    pub zero: Option<u64>,
    pub zero_pct: Option<f64>,
    pub freed: Option<u64>,
    pub ns: Option<u64>,
    /// Only calls that found objects are counted (tracepoint plan).
    pub calls_found_objects_only: bool,
}

/// Host-wide figures from the `system` records.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Host {
    pub records: u64,
    /// Time covered by the system records' intervals.
    pub covered_s: f64,
    /// Mean sys% weighted by interval length, and the highest.
    pub sys_pct_mean: f64,
    pub sys_pct_max: f64,
    pub sys_pct_max_ts: String,
    /// The busiest single CPU seen, and when.
    pub busiest_cpu: Option<u32>,
    pub busiest_cpu_sys_pct: f64,
    pub busiest_cpu_ts: String,
    pub iowait_pct_mean: f64,
    pub kswapd_cpu_pct_mean: f64,
    pub kswapd_cpu_pct_max: f64,
    pub live_memcgs_max: u64,
    pub dying_memcgs_max: Option<u64>,
}

/// Who paid for reclaim: tasks in their allocation path, or kswapd.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReclaimSplit {
    pub direct_ns: Option<u64>,
    pub direct_count: Option<u64>,
    pub direct_pages: Option<u64>,
    pub memcg_ns: Option<u64>,
    pub memcg_count: Option<u64>,
    pub memcg_pages: Option<u64>,
    /// Direct + memcg-limit reclaim: time tasks spent reclaiming.
    pub tasks_ns: u64,
    /// kswapd awake time (wake to sleep, summed over nodes) and wakes, from
    /// the cumulative `system` counters over the file.
    pub kswapd_awake_ns: Option<u64>,
    pub kswapd_wakes: Option<u64>,
    /// kswapd CPU time: its CPU% integrated over the system records.
    pub kswapd_cpu_ns: Option<u64>,
    /// shrink_slab time over all memcgs, and kswapd's part of it.
    pub shrink_slab_ns: Option<u64>,
    pub shrink_slab_kswapd_ns: Option<u64>,
    pub do_shrink_slab_ns: Option<u64>,
    /// "tasks", "kswapd", "both" or "none" (less than 1 ms of either).
    pub paid_by: &'static str,
}

/// Counters that say data was lost or skipped: summed over the runs in
/// the file, each the run's last (cumulative since start) value.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Losses {
    pub ringbuf_drops: u64,
    pub memcg_map_full: u64,
    pub shrinker_map_full: u64,
    pub inflight_map_full: u64,
    pub missed_returns: u64,
    pub unmatched_returns: u64,
    pub map_evictions: u64,
    pub prog_recursion_misses: Option<u64>,
    /// Records a capture left out (`--max-capture-bytes`).
    pub capture_truncated_records: u64,
}

impl Losses {
    /// (name, value, what it means) of the nonzero counters.
    pub fn nonzero(&self) -> Vec<(&'static str, u64, &'static str)> {
        [
            (
                "ringbuf_drops",
                self.ringbuf_drops,
                "OOM/slow events lost: ring buffer full (raise --ringbuf-kib)",
            ),
            (
                "memcg_map_full",
                self.memcg_map_full,
                "per-memcg updates lost (raise --memcg-entries)",
            ),
            (
                "shrinker_map_full",
                self.shrinker_map_full,
                "per-shrinker updates lost (raise --shrinker-entries)",
            ),
            (
                "inflight_map_full",
                self.inflight_map_full,
                "calls not timed (raise --inflight-entries)",
            ),
            (
                "missed_returns",
                self.missed_returns,
                "calls whose return was never seen: their time is not counted",
            ),
            (
                "unmatched_returns",
                self.unmatched_returns,
                "returns without an entry (calls already running at start)",
            ),
            (
                "map_evictions",
                self.map_evictions,
                "map entries evicted (idle or deleted memcgs restart from zero)",
            ),
            (
                "prog_recursion_misses",
                self.prog_recursion_misses.unwrap_or(0),
                "program runs the kernel skipped (already running on that CPU)",
            ),
            (
                "capture_truncated_records",
                self.capture_truncated_records,
                "records the capture left out (--max-capture-bytes)",
            ),
        ]
        .into_iter()
        .filter(|(_, v, _)| *v > 0)
        .collect()
    }

    fn add_run(&mut self, s: &System) {
        add_fields!(self, s; ringbuf_drops memcg_map_full shrinker_map_full inflight_map_full
            missed_returns unmatched_returns map_evictions);
        acc(&mut self.prog_recursion_misses, s.prog_recursion_misses);
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SlowSummary {
    pub slow_reclaims: u64,
    pub slow_charges: u64,
    pub slowest_reclaim: Option<Slow>,
    pub slowest_charge: Option<Slow>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Span {
    pub first_ts: Option<String>,
    pub last_ts: Option<String>,
    pub duration_s: Option<f64>,
    /// Intervals closed (`system` records).
    pub intervals: u64,
    /// Runs of the agent in the file (stream headers; 1 for a capture).
    pub runs: u64,
}

/// A capture's trigger and window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CaptureInfo {
    pub trigger: Trigger,
    /// The window, in seconds before and after the trigger.
    pub before_s: f64,
    pub after_s: f64,
    pub truncated_records: u64,
}

/// Everything `report` says about a file; `--json` prints it as is.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub file: String,
    pub kind: Kind,
    /// The file does not start with its header (lost or cut off).
    pub headerless: bool,
    pub lines: u64,
    pub records: u64,
    pub record_counts: BTreeMap<&'static str, u64>,
    pub bad_lines_total: u64,
    /// Lines that are not records (the first MAX_BAD_LINES).
    pub bad_lines: Vec<BadLine>,
    pub span: Span,
    /// The (first) stream header: attach plan, kernel, host.
    pub header: Option<Header>,
    /// Record fields the plan leaves null (every run's, merged).
    pub not_visible: Unseen,
    pub capture: Option<CaptureInfo>,
    pub host: Option<Host>,
    pub reclaim: ReclaimSplit,
    pub top_memcgs_by_reclaim: Vec<Usage>,
    pub top_memcgs_by_shrinker_calls: Vec<Usage>,
    pub top_containers_by_reclaim: Vec<Usage>,
    pub top_containers_by_shrinker_calls: Vec<Usage>,
    pub memcgs_seen: u64,
    pub containers_seen: u64,
    pub shrinker_totals: ShrinkerTotals,
    /// Busiest shrinkers by calls (from each memcg's busiest per interval).
    pub shrinkers: Vec<ShrinkerSummary>,
    pub storm: Storm,
    pub losses: Losses,
    pub slow: SlowSummary,
    pub oom_kills: Vec<OomStory>,
    /// Caveats about the input.
    pub notes: Vec<String>,
}

/// Per-interval shrinker work, until a `system` record closes it.
#[derive(Default)]
struct IntervalAcc {
    records: u64,
    calls: Option<u64>,
    zero: u64,
    zero_base: u64,
    zero_blind: bool,
    memcgs: u64,
    interval_ns: u64,
}

/// The current run's first and last `system` records.
#[derive(Default)]
struct Run {
    from_header: bool,
    first: Option<System>,
    last: Option<System>,
}

pub struct Aggregator {
    file: String,
    kind: Option<Kind>,
    headerless: bool,
    pub segment: u64,
    seen_any: bool,
    run: Run,
    runs: u64,
    kswapd_awake_ns: Option<u64>,
    kswapd_wakes: Option<u64>,
    losses: Losses,
    header: Option<Header>,
    capture: Option<Capture>,
    unavailable: Unseen,
    first_ts: Option<String>,
    last_ts: Option<String>,
    lines: u64,
    records: u64,
    counts: BTreeMap<&'static str, u64>,
    bad: Vec<BadLine>,
    bad_total: u64,
    memcgs: HashMap<String, Usage>,
    containers: HashMap<String, Usage>,
    shrinkers: HashMap<(String, Option<String>), ShrinkerSummary>,
    shrink_memcgs: HashSet<String>,
    shrink_totals: Usage,
    reclaim: ReclaimSplit,
    interval: IntervalAcc,
    evals: Vec<IntervalEval>,
    host: Host,
    host_weight_ns: u64,
    sums: [f64; 3],
    kswapd_cpu_ns: Option<f64>,
    slow: SlowSummary,
    stories: Vec<OomStory>,
    story_index: HashMap<(u32, u64), usize>,
}

impl Aggregator {
    pub fn new(file: &str) -> Self {
        Self {
            file: file.to_string(),
            kind: None,
            headerless: false,
            segment: 0,
            seen_any: false,
            run: Run::default(),
            runs: 0,
            kswapd_awake_ns: None,
            kswapd_wakes: None,
            losses: Losses::default(),
            header: None,
            capture: None,
            unavailable: Unseen::default(),
            first_ts: None,
            last_ts: None,
            lines: 0,
            records: 0,
            counts: BTreeMap::new(),
            bad: Vec::new(),
            bad_total: 0,
            memcgs: HashMap::new(),
            containers: HashMap::new(),
            shrinkers: HashMap::new(),
            shrink_memcgs: HashSet::new(),
            shrink_totals: Usage::default(),
            reclaim: ReclaimSplit::default(),
            interval: IntervalAcc::default(),
            evals: Vec::new(),
            host: Host::default(),
            host_weight_ns: 0,
            sums: [0.0; 3],
            kswapd_cpu_ns: None,
            slow: SlowSummary::default(),
            stories: Vec::new(),
            story_index: HashMap::new(),
        }
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn set_lines(&mut self, lines: u64) {
        self.lines = lines;
    }

    pub fn bad(&mut self, b: BadLine) {
        self.bad_total += 1;
        if self.bad.len() < MAX_BAD_LINES {
            self.bad.push(b);
        }
    }

    fn ts(&mut self, ts: &str) {
        if ts.is_empty() {
            return;
        }
        if self.first_ts.as_deref().is_none_or(|f| ts < f) {
            self.first_ts = Some(ts.to_string());
        }
        if self.last_ts.as_deref().is_none_or(|l| ts > l) {
            self.last_ts = Some(ts.to_string());
        }
    }

    pub fn apply(&mut self, r: &Record) {
        let kind = match self.kind {
            Some(k) => k,
            None => {
                let (k, headerless) = Kind::of(r);
                self.kind = Some(k);
                self.headerless = headerless;
                self.run.from_header = matches!(r, Record::Header(_));
                self.runs = 1;
                k
            }
        };
        if starts_segment(kind, r) && self.seen_any {
            self.end_run();
            self.segment += 1;
            self.runs += 1;
            self.run.from_header = matches!(r, Record::Header(_));
        }
        self.seen_any = true;
        self.records += 1;
        let name = match r {
            Record::Header(_) => "header",
            Record::OomKill(_) => "oom_kill",
            Record::MemcgInterval(_) => "memcg_interval",
            Record::SlowCharge(_) => "slow_charge",
            Record::SlowReclaim(_) => "slow_reclaim",
            Record::System(_) => "system",
            Record::Capture(_) => "capture",
            Record::OomPostmortem(_) => "oom_postmortem",
        };
        *self.counts.entry(name).or_default() += 1;
        match r {
            Record::Header(h) => self.header(h),
            Record::Capture(c) => {
                self.ts(&c.ts);
                self.losses.capture_truncated_records += c.truncated_records;
                self.header(&c.header);
                if self.capture.is_none() {
                    self.capture = Some((**c).clone());
                }
            }
            Record::MemcgInterval(i) => self.memcg_interval(i),
            Record::System(s) => self.system(s),
            Record::OomKill(k) => {
                self.kill(k);
            }
            Record::OomPostmortem(p) => {
                self.ts(&p.ts);
                let i = self.kill(&p.kill);
                self.stories[i].add_postmortem(p);
            }
            Record::SlowCharge(s) => {
                self.ts(&s.ts);
                self.slow.slow_charges += 1;
                if self
                    .slow
                    .slowest_charge
                    .as_ref()
                    .is_none_or(|x| s.duration_ns > x.duration_ns)
                {
                    self.slow.slowest_charge = Some(s.clone());
                }
            }
            Record::SlowReclaim(s) => {
                self.ts(&s.ts);
                self.slow.slow_reclaims += 1;
                if self
                    .slow
                    .slowest_reclaim
                    .as_ref()
                    .is_none_or(|x| s.duration_ns > x.duration_ns)
                {
                    self.slow.slowest_reclaim = Some(s.clone());
                }
            }
        }
    }

    fn header(&mut self, h: &Header) {
        self.ts(&h.ts);
        self.unavailable.extend(&h.unavailable);
        if self.header.is_none() {
            self.header = Some(h.clone());
        }
    }

    fn seen(&self, field: Field) -> bool {
        self.unavailable.sees(field)
    }

    fn memcg_interval(&mut self, i: &MemcgInterval) {
        self.ts(&i.ts);
        let mk = memcg_key(&i.memcg);
        let m = self
            .memcgs
            .entry(mk.clone())
            .or_insert_with(|| memcg_usage(&i.memcg));
        m.deleted |= i.memcg.deleted;
        m.add(i);
        let c = self
            .containers
            .entry(i.memcg.container_key())
            .or_insert_with(|| container_usage(&i.memcg));
        c.add(i);
        c.memcg_keys.insert(mk.clone());
        self.shrink_totals.add(i);
        let r = &mut self.reclaim;
        acc(&mut r.direct_ns, i.reclaim_direct_ns);
        acc(&mut r.direct_count, i.reclaim_direct_count);
        acc(&mut r.direct_pages, i.reclaim_direct_pages);
        acc(&mut r.memcg_ns, i.reclaim_memcg_ns);
        acc(&mut r.memcg_count, i.reclaim_memcg_count);
        acc(&mut r.memcg_pages, i.reclaim_memcg_pages);
        acc(&mut r.shrink_slab_ns, i.shrink_slab_ns);

        let iv = &mut self.interval;
        iv.records += 1;
        iv.interval_ns = iv.interval_ns.max(i.interval_ns);
        acc(&mut iv.calls, i.do_shrink_slab_calls);
        let calls = i.do_shrink_slab_calls.unwrap_or(0);
        if calls > 0 {
            iv.memcgs += 1;
            self.shrink_memcgs.insert(mk.clone());
        }
        match i.do_shrink_slab_zero {
            Some(z) => {
                iv.zero += z;
                iv.zero_base += calls;
            }
            None => iv.zero_blind = true,
        }

        for row in i.shrinkers.iter().flatten() {
            let s = self
                .shrinkers
                .entry((row.shrinker.clone(), row.count_objects.clone()))
                .or_insert_with(|| ShrinkerSummary {
                    shrinker: row.shrinker.clone(),
                    count_objects: row.count_objects.clone(),
                    ..ShrinkerSummary::default()
                });
            if !s.labelled {
                // Read once: memtrace reads them once per shrinker too.
                let [name, fs_type, device] = shrinker_labels(row);
                (s.name, s.fs_type, s.device, s.labelled) = (name, fs_type, device, true);
            }
            s.calls += row.calls;
            s.freed += row.freed;
            s.ns += row.ns;
            if let Some(z) = row.zero {
                acc(&mut s.zero, Some(z));
                s.zero_base += row.calls;
            }
            s.memcg_keys.insert(mk.clone());
        }
    }

    /// Closes the current interval with `sys` (None: no system record).
    fn close_interval(&mut self, sys: Option<&System>) {
        let iv = std::mem::take(&mut self.interval);
        if iv.records == 0 && sys.is_none() {
            return;
        }
        let interval_ns = if iv.interval_ns > 0 {
            iv.interval_ns
        } else {
            sys.map_or(0, |s| s.interval_ns)
        };
        let interval_s = interval_ns as f64 / 1e9;
        // An interval without records had no activity the plan can see.
        let calls = if iv.records > 0 {
            iv.calls
        } else {
            self.seen(Field::DoShrinkSlabCalls).then_some(0)
        };
        let zero_visible = if iv.records > 0 {
            !iv.zero_blind
        } else {
            self.seen(Field::DoShrinkSlabZero)
        };
        self.evals.push(IntervalEval {
            ts: sys.map(|s| s.ts.clone()).unwrap_or_default(),
            interval_s,
            calls,
            calls_per_s: calls
                .filter(|_| interval_s > 0.0)
                .map(|c| c as f64 / interval_s),
            memcgs: iv.memcgs,
            zero_pct: if zero_visible {
                share(iv.zero, iv.zero_base)
            } else {
                None
            },
            zero_visible,
            sys_pct: sys.map(|s| s.sys_pct),
            max_cpu_sys_pct: sys.map(|s| s.max_cpu_sys_pct),
            max_cpu: sys.and_then(|s| s.max_cpu),
            kswapd_cpu_pct: sys.map(|s| s.kswapd_cpu_pct),
        });
    }

    fn system(&mut self, s: &System) {
        self.ts(&s.ts);
        self.close_interval(Some(s));
        if self.run.first.is_none() {
            self.run.first = Some(s.clone());
        }
        self.run.last = Some(s.clone());
        let h = &mut self.host;
        h.records += 1;
        let w = s.interval_ns;
        self.host_weight_ns += w;
        let wf = w as f64;
        self.sums[0] += s.sys_pct * wf;
        self.sums[1] += s.iowait_pct * wf;
        self.sums[2] += s.kswapd_cpu_pct * wf;
        *self.kswapd_cpu_ns.get_or_insert(0.0) += s.kswapd_cpu_pct / 100.0 * wf;
        if h.records == 1 || s.sys_pct > h.sys_pct_max {
            h.sys_pct_max = s.sys_pct;
            h.sys_pct_max_ts = s.ts.clone();
        }
        if h.records == 1 || s.max_cpu_sys_pct > h.busiest_cpu_sys_pct {
            h.busiest_cpu_sys_pct = s.max_cpu_sys_pct;
            h.busiest_cpu = s.max_cpu;
            h.busiest_cpu_ts = s.ts.clone();
        }
        h.kswapd_cpu_pct_max = h.kswapd_cpu_pct_max.max(s.kswapd_cpu_pct);
        h.live_memcgs_max = h.live_memcgs_max.max(s.live_memcgs);
        if let Some(d) = s.dying_memcgs {
            h.dying_memcgs_max = Some(h.dying_memcgs_max.unwrap_or(0).max(d));
        }
    }

    /// Ends the current run: its records without a closing `system` record
    /// form a last interval, and its cumulative counters are added up.
    fn end_run(&mut self) {
        self.close_interval(None);
        let run = std::mem::take(&mut self.run);
        let Some(last) = run.last else {
            return;
        };
        // A run that starts with its stream header counts from zero; a
        // capture (or a file cut before its header) from its first record,
        // whose first interval is then not counted.
        let base = if run.from_header { None } else { run.first };
        let delta = |f: fn(&System) -> Option<u64>| {
            f(&last).map(|l| l.saturating_sub(base.as_ref().and_then(f).unwrap_or(0)))
        };
        acc(&mut self.kswapd_awake_ns, delta(|s| s.kswapd_ns));
        acc(&mut self.kswapd_wakes, delta(|s| s.kswapd_wakes));
        self.losses.add_run(&last);
    }

    /// The story of a kill (a kill seen twice, e.g. as oom_kill and in a
    /// post-mortem, is one story); returns its index.
    fn kill(&mut self, k: &OomKill) -> usize {
        let key = (k.victim.pid, k.ts_ns);
        if let Some(&i) = self.story_index.get(&key) {
            return i;
        }
        if !k.before_start {
            self.ts(&k.ts);
            if let Some(m) = &k.victim_memcg {
                let mk = memcg_key(m);
                self.memcgs
                    .entry(mk)
                    .or_insert_with(|| memcg_usage(m))
                    .oom_kills += 1;
                self.containers
                    .entry(m.container_key())
                    .or_insert_with(|| container_usage(m))
                    .oom_kills += 1;
            }
        }
        self.stories.push(OomStory::from_kill(k, self.segment));
        let i = self.stories.len() - 1;
        self.story_index.insert(key, i);
        i
    }

    pub fn finish(mut self) -> Report {
        self.end_run();
        let kind = self.kind.unwrap_or(Kind::Stream);
        let mut notes = Vec::new();
        if self.headerless {
            notes.push(
                "the file does not start with a header (cut off or lost): the attach plan is \
                 unknown; fields no record could see are reported as not visible"
                    .to_string(),
            );
        }
        if self.runs > 1 && kind == Kind::Stream {
            notes.push(format!(
                "{} runs of memtrace appended to this file: counters are summed over them",
                self.runs
            ));
        }
        let duration_s = match (&self.first_ts, &self.last_ts) {
            (Some(a), Some(b)) => match (
                humantime::parse_rfc3339_weak(a),
                humantime::parse_rfc3339_weak(b),
            ) {
                (Ok(a), Ok(b)) => Some(b.duration_since(a).unwrap_or_default().as_secs_f64()),
                _ => None,
            },
            _ => None,
        };

        let host = (self.host.records > 0).then(|| {
            let mut h = self.host.clone();
            let w = self.host_weight_ns as f64;
            if w > 0.0 {
                h.sys_pct_mean = self.sums[0] / w;
                h.iowait_pct_mean = self.sums[1] / w;
                h.kswapd_cpu_pct_mean = self.sums[2] / w;
            }
            h.covered_s = w / 1e9;
            h
        });

        let mut totals = std::mem::take(&mut self.shrink_totals);
        totals.finish();
        let mut reclaim = std::mem::take(&mut self.reclaim);
        reclaim.tasks_ns = totals.reclaim_ns;
        reclaim.kswapd_awake_ns = self.kswapd_awake_ns;
        reclaim.kswapd_wakes = self.kswapd_wakes;
        reclaim.kswapd_cpu_ns = self.kswapd_cpu_ns.map(|n| n.round() as u64);
        reclaim.shrink_slab_kswapd_ns = totals.shrink_slab_kswapd_ns;
        reclaim.do_shrink_slab_ns = totals.do_shrink_slab_ns;
        let k = reclaim.kswapd_cpu_ns.unwrap_or(0);
        let t = reclaim.tasks_ns;
        reclaim.paid_by = if t < 1_000_000 && k < 1_000_000 {
            "none"
        } else if k > 2 * t {
            "kswapd"
        } else if t > 2 * k {
            "tasks"
        } else {
            "both"
        };

        let tracepoint_plan = !self.seen(Field::DoShrinkSlabZero);
        let shrinker_totals = ShrinkerTotals {
            memcgs: self.shrink_memcgs.len() as u64,
            calls: totals.do_shrink_slab_calls,
            zero: totals.do_shrink_slab_zero,
            zero_pct: totals.zero_pct,
            freed: totals.do_shrink_slab_freed,
            ns: totals.do_shrink_slab_ns,
            calls_found_objects_only: tracepoint_plan && totals.do_shrink_slab_zero.is_none(),
        };

        let memcgs_seen = self.memcgs.len() as u64;
        let containers_seen = self.containers.len() as u64;
        let mut memcgs: Vec<Usage> = self.memcgs.into_values().collect();
        let mut containers: Vec<Usage> = self
            .containers
            .into_values()
            .map(|mut c| {
                if c.memcg_keys.len() as u64 > c.memcgs {
                    c.memcgs = c.memcg_keys.len() as u64;
                }
                c
            })
            .collect();
        for u in memcgs.iter_mut().chain(containers.iter_mut()) {
            u.finish();
        }
        let by_reclaim = |v: &[Usage]| -> Vec<Usage> {
            let mut v: Vec<Usage> = v.iter().filter(|u| u.reclaim_ns > 0).cloned().collect();
            v.sort_by(|a, b| b.reclaim_ns.cmp(&a.reclaim_ns).then(a.name.cmp(&b.name)));
            v.truncate(TOP);
            v
        };
        let by_calls = |v: &[Usage]| -> Vec<Usage> {
            let mut v: Vec<Usage> = v
                .iter()
                .filter(|u| u.do_shrink_slab_calls.unwrap_or(0) > 0)
                .cloned()
                .collect();
            v.sort_by(|a, b| {
                b.do_shrink_slab_calls
                    .cmp(&a.do_shrink_slab_calls)
                    .then(a.name.cmp(&b.name))
            });
            v.truncate(TOP);
            v
        };
        memcgs.sort_by(|a, b| a.name.cmp(&b.name));
        containers.sort_by(|a, b| a.name.cmp(&b.name));

        let mut shrinkers: Vec<ShrinkerSummary> = self
            .shrinkers
            .into_values()
            .map(|mut s| {
                s.memcgs = s.memcg_keys.len() as u64;
                s.zero_pct = s.zero.and_then(|z| share(z, s.zero_base));
                s
            })
            .collect();
        shrinkers.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.shrinker.cmp(&b.shrinker)));
        shrinkers.truncate(TOP_SHRINKERS);

        let capture_threshold = self.capture.as_ref().map(|c| c.trigger.threshold_pct);
        let evals = if self.counts.contains_key("memcg_interval") {
            std::mem::take(&mut self.evals)
        } else {
            Vec::new()
        };
        let storm = storm::judge(&evals, Thresholds::new(capture_threshold), tracepoint_plan);

        let capture = self.capture.map(|c| {
            let t = c.trigger.ts_ns;
            CaptureInfo {
                before_s: t.saturating_sub(c.from_ns) as f64 / 1e9,
                after_s: c.to_ns.saturating_sub(t) as f64 / 1e9,
                truncated_records: c.truncated_records,
                trigger: c.trigger,
            }
        });

        let mut stories = self.stories;
        stories.sort_by(|a, b| {
            a.before_start
                .cmp(&b.before_start)
                .reverse()
                .then(a.ts.cmp(&b.ts))
        });

        Report {
            type_: "report",
            file: self.file,
            kind,
            headerless: self.headerless,
            lines: self.lines,
            records: self.records,
            record_counts: self.counts,
            bad_lines_total: self.bad_total,
            bad_lines: self.bad,
            span: Span {
                first_ts: self.first_ts,
                last_ts: self.last_ts,
                duration_s,
                intervals: self.host.records,
                runs: self.runs,
            },
            header: self.header,
            not_visible: self.unavailable,
            capture,
            host,
            reclaim,
            top_memcgs_by_reclaim: by_reclaim(&memcgs),
            top_memcgs_by_shrinker_calls: by_calls(&memcgs),
            top_containers_by_reclaim: by_reclaim(&containers),
            top_containers_by_shrinker_calls: by_calls(&containers),
            memcgs_seen,
            containers_seen,
            shrinker_totals,
            shrinkers,
            storm,
            losses: self.losses,
            slow: self.slow,
            oom_kills: stories,
            notes,
        }
    }
}
