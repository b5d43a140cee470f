//! What `top` shows, computed from records only: rows per container (or per
//! memcg) over the last interval, recent OOM kills, and host state. Live
//! and replayed records go through this same code, so both show the same.
use crate::output::fields::{Field, Unseen};
use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::output::records::{Header, Memcg, MemcgInterval, OomKill, Record, ShrinkerRow, System};

/// How rows are grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    Container,
    /// The containers of a Kubernetes pod together (by namespace/pod, else
    /// pod uid); other containers one row each.
    Pod,
    Memcg,
}

/// One line of the table. Rates are per second over the last interval;
/// `None` where the attach plan cannot see the quantity.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Row {
    pub key: String,
    /// What the table shows: `namespace/pod/container` for Kubernetes, the
    /// Docker/Podman name, else the short id (12 hex), unit name, or memcg
    /// path (`Container::display_name`).
    pub name: String,
    pub runtime: String,
    /// Full container id, or the memcg path.
    pub id: String,
    /// Cgroup path of the container (or the memcg).
    pub cgroup: String,
    pub pod_uid: Option<String>,
    pub qos: Option<String>,
    /// From the runtimes' state (see docs/events.md `container`).
    pub runtime_name: Option<String>,
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub image: Option<String>,
    /// Memcgs that contributed in the last interval.
    pub memcgs: usize,
    pub usage_bytes: Option<u64>,
    pub limit_bytes: Option<u64>,
    pub limited_by: Option<String>,
    pub working_set_bytes: Option<u64>,
    pub under_oom: Option<bool>,
    pub limit_hits_per_s: Option<f64>,
    pub charge_failures_per_s: Option<f64>,
    /// Time this container's tasks spent reclaiming (direct + limit).
    pub reclaim_ms_per_s: Option<f64>,
    pub reclaim_p99_ns: Option<u64>,
    /// kswapd time spent shrinking this container's slab caches.
    pub kswapd_shrink_ms_per_s: Option<f64>,
    pub shrink_slab_per_s: Option<f64>,
    pub do_shrink_slab_per_s: Option<f64>,
    /// Share of do_shrink_slab calls that freed nothing.
    pub zero_pct: Option<f64>,
    pub freed_per_s: Option<f64>,
    /// OOM kills of its tasks since memtrace started.
    pub oom_kills: u64,
    /// Its busiest shrinkers in the last interval.
    pub shrinkers: Vec<ShrinkerRow>,
    /// When a record last named it (ns since boot), for [`ROW_GRACE_NS`].
    #[serde(skip)]
    pub last_seen_ns: u64,
}

/// A row no record has named for this long leaves the table: its memcgs
/// went idle or were removed (containers come and go; the table must not
/// grow with every one that ever existed). An OOM kill names its row too,
/// so a killed container stays a minute after its last kill.
pub const ROW_GRACE_NS: u64 = 60_000_000_000;

/// Host-wide figures for the header line.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub ts: String,
    pub sys_pct: f64,
    pub max_cpu_sys_pct: f64,
    pub kswapd_cpu_pct: f64,
    pub reclaim_ms_per_s: f64,
    pub dying_memcgs: Option<u64>,
    pub live_memcgs: u64,
    pub oom_kills: u64,
    /// Events lost anywhere (ring buffer, full maps): must be 0.
    pub lost: u64,
    pub map_evictions: u64,
}

pub struct Model {
    by: By,
    pub header: Option<Header>,
    unavailable: Unseen,
    rows: BTreeMap<String, Row>,
    /// This interval's records, until its `system` record closes it.
    pending: Vec<MemcgInterval>,
    pub summary: Summary,
    /// Most recent OOM kills, newest last.
    pub ooms: VecDeque<OomKill>,
    /// Intervals completed.
    pub intervals: u64,
}

const RECENT_OOMS: usize = 100;

fn per_s(x: u64, interval_ns: u64) -> f64 {
    if interval_ns == 0 {
        0.0
    } else {
        x as f64 * 1e9 / interval_ns as f64
    }
}

fn add(slot: &mut Option<f64>, v: Option<f64>) {
    if let (Some(s), Some(v)) = (slot.as_mut(), v) {
        *s += v;
    }
}

impl Model {
    pub fn new(by: By) -> Self {
        Self {
            by,
            header: None,
            unavailable: Unseen::default(),
            rows: BTreeMap::new(),
            pending: Vec::new(),
            summary: Summary::default(),
            ooms: VecDeque::new(),
            intervals: 0,
        }
    }

    fn seen(&self, field: Field) -> bool {
        self.unavailable.sees(field)
    }

    /// Row key, display name, and identity of a memcg.
    fn identity(&self, m: &Memcg) -> (String, Row) {
        let path = m.path_or_id();
        match (self.by, &m.container) {
            (By::Pod, Some(c)) if c.pod.is_some() || c.pod_uid.is_some() => {
                let (key, name) = match (&c.namespace, &c.pod, &c.pod_uid) {
                    (Some(ns), Some(pod), _) => (format!("pod/{ns}/{pod}"), format!("{ns}/{pod}")),
                    (_, _, Some(uid)) => (
                        format!("pod/{uid}"),
                        format!("pod/{}", uid.get(..8).unwrap_or(uid)),
                    ),
                    (_, Some(pod), None) => (format!("pod//{pod}"), pod.clone()),
                    // Guarded above: a pod or a uid is known.
                    (_, None, None) => (m.container_key(), c.display_name()),
                };
                let cgroup = match c.cgroup.rsplit_once('/') {
                    // A container's cgroup is below its pod's.
                    Some((parent, _)) if c.runtime != "cgroup" => parent.to_string(),
                    _ => c.cgroup.clone(),
                };
                (
                    key.clone(),
                    Row {
                        name,
                        runtime: "pod".into(),
                        id: key,
                        cgroup,
                        pod_uid: c.pod_uid.clone(),
                        qos: c.qos.clone(),
                        pod: c.pod.clone(),
                        namespace: c.namespace.clone(),
                        ..Row::default()
                    },
                )
            }
            (By::Container | By::Pod, Some(c)) => (
                m.container_key(),
                Row {
                    name: c.display_name(),
                    runtime: c.runtime.to_string(),
                    id: c.id.clone(),
                    cgroup: c.cgroup.clone(),
                    pod_uid: c.pod_uid.clone(),
                    qos: c.qos.clone(),
                    runtime_name: c.runtime_name.clone(),
                    pod: c.pod.clone(),
                    namespace: c.namespace.clone(),
                    image: c.image.clone(),
                    ..Row::default()
                },
            ),
            _ => (
                m.memcg_key(),
                Row {
                    // The memcg's own name; details show the whole path.
                    name: path
                        .rsplit('/')
                        .find(|s| !s.is_empty())
                        .unwrap_or("/")
                        .to_string(),
                    runtime: m
                        .container
                        .as_ref()
                        .map(|c| c.runtime.to_string())
                        .unwrap_or_else(|| "cgroup".into()),
                    id: path.clone(),
                    cgroup: path,
                    ..Row::default()
                },
            ),
        }
    }

    pub fn apply(&mut self, rec: &Record) {
        match rec {
            Record::Header(h) => {
                self.unavailable = h.unavailable.clone();
                self.header = Some(h.clone());
            }
            Record::MemcgInterval(i) => self.pending.push((**i).clone()),
            Record::OomKill(k) => self.oom(k),
            Record::System(s) => self.close_interval(s),
            // A capture replays like the stream that recorded it.
            Record::Capture(c) => self.apply(&Record::Header(c.header.clone())),
            Record::OomPostmortem(p) => self.oom(&p.kill),
            Record::SlowCharge(_) | Record::SlowReclaim(_) => {}
        }
    }

    fn oom(&mut self, k: &OomKill) {
        if !k.before_start {
            self.summary.oom_kills += 1;
            if let Some(m) = &k.victim_memcg {
                let (key, fresh) = self.identity(m);
                let row = self
                    .rows
                    .entry(key.clone())
                    .or_insert_with(|| Row { key, ..fresh });
                row.oom_kills += 1;
                row.last_seen_ns = row.last_seen_ns.max(k.ts_ns);
            }
        }
        self.ooms.push_back(k.clone());
        while self.ooms.len() > RECENT_OOMS {
            self.ooms.pop_front();
        }
    }

    /// Rates at the start of an interval: 0 where the plan sees the
    /// quantity, None where it cannot.
    fn reset_rates(&self, row: &mut Row) {
        let z = |field| self.seen(field).then_some(0.0);
        row.memcgs = 0;
        row.limit_hits_per_s = Some(0.0);
        row.charge_failures_per_s = z(Field::ChargeFailures);
        row.reclaim_ms_per_s = Some(0.0);
        row.reclaim_p99_ns = None;
        row.kswapd_shrink_ms_per_s = z(Field::ShrinkSlabKswapdNs);
        row.shrink_slab_per_s = z(Field::ShrinkSlabCalls);
        row.do_shrink_slab_per_s = z(Field::DoShrinkSlabCalls);
        row.zero_pct = None;
        row.freed_per_s = z(Field::DoShrinkSlabFreed);
        row.shrinkers.clear();
    }

    /// Folds this interval's memcg records into the rows.
    fn close_interval(&mut self, s: &System) {
        let mut rows = std::mem::take(&mut self.rows);
        for row in rows.values_mut() {
            self.reset_rates(row);
        }
        let pending = std::mem::take(&mut self.pending);
        // Shrinker totals for the zero share, per row.
        let mut zero_calls: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        // The memcg nearest the container's root supplies its cgroupfs state.
        let mut state_depth: BTreeMap<String, usize> = BTreeMap::new();
        for i in &pending {
            let (key, fresh) = self.identity(&i.memcg);
            let names = (
                fresh.name.clone(),
                fresh.runtime_name.clone(),
                fresh.pod.clone(),
                fresh.namespace.clone(),
                fresh.image.clone(),
            );
            let row = rows.entry(key.clone()).or_insert_with(|| {
                let mut r = Row {
                    key: key.clone(),
                    ..fresh
                };
                self.reset_rates(&mut r);
                r
            });
            // Names the runtimes' files gave after the row was made (they
            // are never taken away: a removed container keeps its name).
            if names.1.is_some() || names.2.is_some() {
                (
                    row.name,
                    row.runtime_name,
                    row.pod,
                    row.namespace,
                    row.image,
                ) = names;
            }
            // A counter of the interval as a rate (null stays null).
            let rate = |v: Option<u64>| v.map(|v| per_s(v, i.interval_ns));
            row.memcgs += 1;
            row.last_seen_ns = row.last_seen_ns.max(i.ts_ns);
            add(&mut row.limit_hits_per_s, rate(i.limit_hits));
            add(&mut row.charge_failures_per_s, rate(i.charge_failures));
            let reclaim_ns = i.reclaim_direct_ns.unwrap_or(0) + i.reclaim_memcg_ns.unwrap_or(0);
            add(
                &mut row.reclaim_ms_per_s,
                rate(Some(reclaim_ns)).map(|r| r / 1e6),
            );
            row.reclaim_p99_ns = row.reclaim_p99_ns.max(i.reclaim_p99_ns);
            let kswapd_shrink = rate(i.shrink_slab_kswapd_ns).map(|r| r / 1e6);
            add(&mut row.kswapd_shrink_ms_per_s, kswapd_shrink);
            add(&mut row.shrink_slab_per_s, rate(i.shrink_slab_calls));
            add(&mut row.do_shrink_slab_per_s, rate(i.do_shrink_slab_calls));
            add(&mut row.freed_per_s, rate(i.do_shrink_slab_freed));
            if let (Some(calls), Some(zero)) = (i.do_shrink_slab_calls, i.do_shrink_slab_zero) {
                let z = zero_calls.entry(key.clone()).or_default();
                z.0 += calls;
                z.1 += zero;
            }
            if let Some(sh) = &i.shrinkers {
                row.shrinkers.extend(sh.iter().cloned());
            }
            if let Some(st) = &i.state {
                let depth = i
                    .memcg
                    .path
                    .as_deref()
                    .map(|p| p.matches('/').count())
                    .unwrap_or(usize::MAX);
                if state_depth.get(&key).is_none_or(|d| depth < *d) {
                    state_depth.insert(key.clone(), depth);
                    row.usage_bytes = st.usage_bytes;
                    row.limit_bytes = st.effective_limit_bytes;
                    row.limited_by = st.limited_by.clone();
                    row.working_set_bytes = st.working_set_bytes;
                    row.under_oom = st.under_oom;
                }
            }
        }
        for (key, (calls, zero)) in zero_calls {
            if let Some(row) = rows.get_mut(&key) {
                row.zero_pct = (calls > 0).then(|| zero as f64 * 100.0 / calls as f64);
            }
        }
        for row in rows.values_mut() {
            row.shrinkers
                .sort_by(|a, b| b.calls.cmp(&a.calls).then(a.shrinker.cmp(&b.shrinker)));
            row.shrinkers.truncate(10);
        }
        rows.retain(|_, r| s.ts_ns.saturating_sub(r.last_seen_ns) <= ROW_GRACE_NS);
        self.rows = rows;
        self.summary.ts = s.ts.clone();
        self.summary.sys_pct = s.sys_pct;
        self.summary.max_cpu_sys_pct = s.max_cpu_sys_pct;
        self.summary.kswapd_cpu_pct = s.kswapd_cpu_pct;
        self.summary.dying_memcgs = s.dying_memcgs;
        self.summary.live_memcgs = s.live_memcgs;
        self.summary.lost =
            s.ringbuf_drops + s.memcg_map_full + s.shrinker_map_full + s.inflight_map_full;
        self.summary.map_evictions = s.map_evictions;
        self.summary.reclaim_ms_per_s = self.rows.values().filter_map(|r| r.reclaim_ms_per_s).sum();
        self.intervals += 1;
    }

    /// Rows in display order: by `sort` (descending, then name).
    pub fn rows(&self, sort: Column, filter: &str) -> Vec<&Row> {
        let mut rows: Vec<&Row> = self
            .rows
            .values()
            .filter(|r| {
                filter.is_empty()
                    || r.name.contains(filter)
                    || r.cgroup.contains(filter)
                    || r.id.starts_with(filter)
            })
            .collect();
        match sort {
            Column::Name => rows.sort_by(|a, b| a.name.cmp(&b.name)),
            Column::Runtime => {
                rows.sort_by(|a, b| a.runtime.cmp(&b.runtime).then_with(|| a.name.cmp(&b.name)))
            }
            _ => rows.sort_by(|a, b| {
                sort.key(b)
                    .total_cmp(&sort.key(a))
                    .then_with(|| a.name.cmp(&b.name))
            }),
        }
        rows
    }

    /// The row a memcg belongs to.
    pub fn row_key(&self, m: &Memcg) -> String {
        self.identity(m).0
    }

    /// Whether a field is visible on the plan that produced the records.
    pub fn plan_sees(&self, field: Field) -> bool {
        self.seen(field)
    }
}

/// The table's columns, in display order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Column {
    Name,
    Runtime,
    Usage,
    WorkingSet,
    LimitHits,
    ChargeFail,
    Reclaim,
    P99,
    Kswapd,
    ShrinkSlab,
    DoShrink,
    Zero,
    Freed,
    Ooms,
}

impl Column {
    pub const ALL: [Column; 14] = [
        Column::Name,
        Column::Runtime,
        Column::Usage,
        Column::WorkingSet,
        Column::LimitHits,
        Column::ChargeFail,
        Column::Reclaim,
        Column::P99,
        Column::Kswapd,
        Column::ShrinkSlab,
        Column::DoShrink,
        Column::Zero,
        Column::Freed,
        Column::Ooms,
    ];

    /// Numeric sort key, descending; unseen values sort last.
    fn key(self, r: &Row) -> f64 {
        let o = |v: Option<f64>| v.unwrap_or(-1.0);
        match self {
            Column::Name | Column::Runtime => 0.0,
            Column::Usage => o(r.usage_bytes.map(|v| v as f64)),
            Column::WorkingSet => o(r.working_set_bytes.map(|v| v as f64)),
            Column::LimitHits => o(r.limit_hits_per_s),
            Column::ChargeFail => o(r.charge_failures_per_s),
            Column::Reclaim => o(r.reclaim_ms_per_s),
            Column::P99 => o(r.reclaim_p99_ns.map(|v| v as f64)),
            Column::Kswapd => o(r.kswapd_shrink_ms_per_s),
            Column::ShrinkSlab => o(r.shrink_slab_per_s),
            Column::DoShrink => o(r.do_shrink_slab_per_s),
            Column::Zero => o(r.zero_pct),
            Column::Freed => o(r.freed_per_s),
            Column::Ooms => r.oom_kills as f64,
        }
    }
}
