//! The metrics sink's state: what the records of a run add up to, kept per
//! memcg, and rendered as Prometheus families at each scrape. It reads the
//! records only (never cgroupfs or the kernel), so a replay drives it as the
//! live pipeline does.
use std::collections::{BTreeMap, HashMap};

use super::expo::{Format, Kind, Value, Writer};
use crate::output::records::{
    Field, Header, Memcg, MemcgInterval, OomKill, Record, ShrinkerRow, System, Unseen,
};

/// Series of a memcg seen removed are kept this long after (so the last
/// increments are scraped and range queries over the removal see them).
pub const GONE_KEEP_NS: u64 = 5 * 60 * 1_000_000_000;
/// A memcg in no record for this long is dropped too: its series have not
/// changed for that long (a memcg removed while idle never shows up
/// removed, and a host churning containers would otherwise pile them up;
/// if it is alive and becomes active again, its counters start again from
/// 0, which `rate`/`increase` take as a reset).
pub const IDLE_KEEP_NS: u64 = 15 * 60 * 1_000_000_000;
/// An OOM series is kept at least this long after its last kill.
pub const OOM_KEEP_NS: u64 = 60 * 60 * 1_000_000_000;
/// Shrinkers named per memcg; the rest add up under `shrinker="other"`.
pub const TOP_SHRINKERS: usize = 5;
/// The series written after the per-memcg ones (the page's own figures).
const TRAILING: usize = 5;
pub const OTHER: &str = "other";

/// The identity labels of a memcg's series.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub container_id: String,
    pub runtime: String,
    pub cgroup: String,
}

impl Identity {
    pub fn of(m: &Memcg) -> Self {
        let c = m.container.as_ref();
        let s = |v: Option<&String>| v.cloned().unwrap_or_default();
        Identity {
            namespace: s(c.and_then(|c| c.namespace.as_ref())),
            pod: s(c.and_then(|c| c.pod.as_ref())),
            container: s(c.and_then(|c| c.runtime_name.as_ref())),
            container_id: s(c.map(|c| &c.id)),
            runtime: s(c.map(|c| &c.runtime)),
            cgroup: m.path_or_id(),
        }
    }

    fn labels(&self) -> [(&'static str, &str); 6] {
        [
            ("namespace", &self.namespace),
            ("pod", &self.pod),
            ("container", &self.container),
            ("container_id", &self.container_id),
            ("runtime", &self.runtime),
            ("cgroup", &self.cgroup),
        ]
    }
}

#[derive(Clone, Debug, Default)]
struct ShrinkerSums {
    calls: u64,
    zero: u64,
    freed: u64,
    ns: u64,
}

#[derive(Clone, Debug, Default)]
struct MemcgSeries {
    /// Order of first appearance: the series cap keeps the oldest.
    seq: u64,
    id: Identity,
    last_ns: u64,
    gone_ns: Option<u64>,
    /// direct, memcg, kswapd (shrinker work under kswapd).
    reclaim_ns: [u64; 3],
    reclaims: [u64; 2],
    reclaimed_pages: [u64; 2],
    charge_failures: u64,
    limit_hits: Option<u64>,
    /// At most TOP_SHRINKERS named, then `other`.
    shrinkers: Vec<(String, ShrinkerSums)>,
    usage: Option<u64>,
    limit: Option<u64>,
    working_set: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct OomKey {
    scope: &'static str,
    id: Identity,
    limit_cgroup: String,
}

/// What `record` adds that is not in the records.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecorderCounts {
    pub postmortems: u64,
    pub postmortems_pending: u64,
    pub postmortems_lost: u64,
    pub captures: u64,
}

pub struct Metrics {
    header: Header,
    unseen: Unseen,
    max_series: usize,
    map_max: (u32, u32),
    page_size: u64,
    /// By the `cgroup` label (the memcg's path): a memcg created at the
    /// path of a removed one (a restarted container, a restarted unit)
    /// continues its series; keyed by memcg id, the two would render the
    /// same label set twice while the removed one is kept.
    memcgs: HashMap<String, MemcgSeries>,
    next_seq: u64,
    ooms: BTreeMap<OomKey, (u64, u64)>,
    system: Option<System>,
    now_ns: u64,
    /// Memcgs dropped by the tracked cap (see `expire`).
    evicted: u64,
    pub recorder: RecorderCounts,
}

/// The agent's own CPU and memory, read at each scrape.
#[derive(Clone, Copy, Debug, Default)]
pub struct SelfUsage {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

impl SelfUsage {
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the comm's closing parenthesis: state is field 3,
        // utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf only reads a configuration value.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let rss_pages: u64 = statm.split(' ').nth(1)?.parse().ok()?;
        Some(SelfUsage {
            cpu_seconds: ticks as f64 / hz,
            rss_bytes: rss_pages * crate::cgroup::state::page_size(),
        })
    }
}

impl Metrics {
    /// `map_max`: the kernel maps' sizes (memcg, shrinker), for fill ratios.
    pub fn new(header: Header, max_series: usize, map_max: (u32, u32)) -> Self {
        Metrics {
            unseen: header.unavailable.clone(),
            header,
            max_series,
            map_max,
            page_size: crate::cgroup::state::page_size(),
            memcgs: HashMap::new(),
            next_seq: 0,
            ooms: BTreeMap::new(),
            system: None,
            now_ns: 0,
            evicted: 0,
            recorder: RecorderCounts::default(),
        }
    }

    pub fn observe(&mut self, r: &Record) {
        match r {
            Record::MemcgInterval(i) => self.interval(i),
            Record::OomKill(k) => self.oom(k),
            Record::System(s) => {
                self.now_ns = self.now_ns.max(s.ts_ns);
                self.system = Some(s.clone());
                self.expire();
            }
            _ => {}
        }
    }

    /// Memcgs tracked (for tests and the bench).
    pub fn memcgs(&self) -> usize {
        self.memcgs.len()
    }

    fn entry(&mut self, m: &Memcg, ts_ns: u64) -> &mut MemcgSeries {
        let seq = &mut self.next_seq;
        let e = self.memcgs.entry(m.path_or_id()).or_insert_with(|| {
            *seq += 1;
            MemcgSeries {
                seq: *seq,
                ..Default::default()
            }
        });
        // The newest identity wins: names arrive after the path (runtime
        // state files), and a memcg keeps its id for its whole life.
        let id = Identity::of(m);
        if e.id != id {
            e.id = id;
        }
        e.last_ns = e.last_ns.max(ts_ns);
        if !m.deleted {
            e.gone_ns = None;
        } else if e.gone_ns.is_none() {
            e.gone_ns = Some(ts_ns);
        }
        e
    }

    fn interval(&mut self, i: &MemcgInterval) {
        self.now_ns = self.now_ns.max(i.ts_ns);
        let e = self.entry(&i.memcg, i.ts_ns);
        let v = |x: Option<u64>| x.unwrap_or(0);
        e.reclaim_ns[0] += v(i.reclaim_direct_ns);
        e.reclaim_ns[1] += v(i.reclaim_memcg_ns);
        e.reclaim_ns[2] += v(i.shrink_slab_kswapd_ns);
        e.reclaims[0] += v(i.reclaim_direct_count);
        e.reclaims[1] += v(i.reclaim_memcg_count);
        e.reclaimed_pages[0] += v(i.reclaim_direct_pages);
        e.reclaimed_pages[1] += v(i.reclaim_memcg_pages);
        e.charge_failures += v(i.charge_failures);
        if let Some(h) = i.limit_hits {
            *e.limit_hits.get_or_insert(0) += h;
        }
        if let Some(st) = &i.state {
            e.usage = st.usage_bytes;
            e.limit = st.effective_limit_bytes;
            e.working_set = st.working_set_bytes;
        }
        add_shrinkers(e, i);
    }

    fn oom(&mut self, k: &OomKill) {
        self.now_ns = self.now_ns.max(k.ts_ns);
        let scope = if k.oom_memcg.is_some() || k.constraint.as_deref() == Some("memcg") {
            "memcg"
        } else {
            "global"
        };
        let id = k
            .victim_memcg
            .as_ref()
            .map(Identity::of)
            .unwrap_or_default();
        let limit_cgroup = match &k.oom_memcg {
            Some(m) if m.path_or_id() != id.cgroup => m.path_or_id(),
            _ => String::new(),
        };
        let e = self.ooms.entry(OomKey {
            scope,
            id,
            limit_cgroup,
        });
        let (n, last) = e.or_insert((0, 0));
        *n += 1;
        *last = (*last).max(k.ts_ns);
    }

    fn expire(&mut self) {
        let now = self.now_ns;
        self.memcgs.retain(|_, m| {
            let gone = m
                .gone_ns
                .is_some_and(|g| now.saturating_sub(g) >= GONE_KEEP_NS);
            !gone && now.saturating_sub(m.last_ns) < IDLE_KEEP_NS
        });
        // An OOM series lives as long as its memcg's, and an hour after its
        // last kill at least.
        let live: std::collections::HashSet<&str> =
            self.memcgs.values().map(|m| m.id.cgroup.as_str()).collect();
        self.ooms.retain(|k, (_, last)| {
            live.contains(k.id.cgroup.as_str()) || now.saturating_sub(*last) < OOM_KEEP_NS
        });
        // Memory stays bounded whatever the churn: beyond the memcgs a
        // page could ever show (each has a series at least; a quarter of
        // the cap, as most have four or more), the least recently active
        // tenth goes, counted.
        let cap = self.tracked_cap();
        if self.memcgs.len() > cap {
            let mut by_age: Vec<(u64, String)> = self
                .memcgs
                .iter()
                .map(|(path, m)| (m.last_ns, path.clone()))
                .collect();
            by_age.sort_unstable();
            let excess = self.memcgs.len() - cap + cap / 10;
            for (_, path) in by_age.into_iter().take(excess) {
                self.memcgs.remove(&path);
                self.evicted += 1;
            }
        }
    }

    /// The most memcgs whose series are kept.
    fn tracked_cap(&self) -> usize {
        (self.max_series / 4).max(100)
    }

    /// Healthy: the pipeline closed an interval recently.
    pub fn last_interval_ns(&self) -> Option<u64> {
        self.system.as_ref().map(|s| s.ts_ns)
    }

    pub fn render(&self, format: Format, usage: Option<SelfUsage>) -> String {
        let mut w = Writer::new(format);
        self.render_self(&mut w, usage);
        self.render_host(&mut w);
        let fixed = w.samples;
        // The cap: OOM series first (rare and the most wanted), then the
        // memcgs in order of first appearance, each whole or not at all, so
        // the same memcgs stay in from one scrape to the next.
        let mut budget = self.max_series.saturating_sub(fixed + TRAILING);
        let ooms: Vec<_> = self
            .ooms
            .iter()
            .take(budget)
            .map(|(k, v)| (k, v.0))
            .collect();
        budget -= ooms.len();
        let mut memcgs: Vec<&MemcgSeries> = self.memcgs.values().collect();
        memcgs.sort_by_key(|m| m.seq);
        let mut left_out = self.ooms.len() - ooms.len();
        let mut kept = Vec::with_capacity(memcgs.len());
        for m in memcgs {
            let n = self.series_of(m);
            if n <= budget {
                budget -= n;
                kept.push(m);
            } else {
                // Not `break`: a smaller memcg further on may still fit,
                // but those left out are counted.
                left_out += n;
            }
        }
        self.render_ooms(&mut w, &ooms);
        self.render_memcgs(&mut w, &kept);
        let samples = w.samples + TRAILING;
        w.single(
            "memtrace_metrics_series",
            Kind::Gauge,
            "Series on this page, this one included.",
            Value::U(samples as u64),
        );
        w.single(
            "memtrace_metrics_series_limit",
            Kind::Gauge,
            "The cap on series (--metrics-max-series).",
            Value::U(self.max_series as u64),
        );
        w.single(
            "memtrace_metrics_series_limit_reached",
            Kind::Gauge,
            "1 when the cap left series out of this page, else 0.",
            Value::U(u64::from(left_out > 0)),
        );
        w.single(
            "memtrace_metrics_memcgs_evicted",
            Kind::Counter,
            "Memcgs whose series were dropped because more were tracked than the cap allows (the least recently active first).",
            Value::U(self.evicted),
        );
        w.single(
            "memtrace_metrics_series_left_out",
            Kind::Gauge,
            "Series the cap left out of this page.",
            Value::U(left_out as u64),
        );
        w.finish()
    }

    /// The series `render_memcgs` writes for `m` (keep the two in step).
    fn series_of(&self, m: &MemcgSeries) -> usize {
        let u = &self.unseen;
        let kinds = [
            Field::ReclaimDirectNs,
            Field::ReclaimMemcgNs,
            Field::ShrinkSlabKswapdNs,
            Field::ReclaimDirectCount,
            Field::ReclaimMemcgCount,
            Field::ReclaimDirectPages,
            Field::ReclaimMemcgPages,
            Field::ChargeFailures,
        ];
        let per_shrinker = [
            Field::DoShrinkSlabCalls,
            Field::DoShrinkSlabZero,
            Field::DoShrinkSlabFreed,
            Field::DoShrinkSlabNs,
        ];
        kinds.iter().filter(|f| u.sees(**f)).count()
            + usize::from(m.limit_hits.is_some())
            + m.shrinkers.len() * per_shrinker.iter().filter(|f| u.sees(**f)).count()
            + [m.usage, m.limit, m.working_set]
                .iter()
                .filter(|x| x.is_some())
                .count()
    }

    fn render_self(&self, w: &mut Writer, usage: Option<SelfUsage>) {
        let h = &self.header;
        let mut f = w.family(
            "memtrace_build_info",
            Kind::Gauge,
            "Always 1; the labels say which memtrace runs on which kernel.",
        );
        f.sample(
            &[
                ("version", &h.memtrace_version),
                ("kernel_release", &h.kernel_release),
                ("cgroup_mode", &h.cgroup_mode),
                ("attach_mode", &h.attach_mode),
            ],
            Value::U(1),
        );
        let mut f = w.family(
            "memtrace_attach_plan",
            Kind::Gauge,
            "1 per hook: the program family it attached with (none: unavailable), as memtrace doctor reports it.",
        );
        for p in &h.plan {
            f.sample(
                &[
                    ("hook", &p.hook),
                    ("family", p.family.map_or("none", |x| x.as_str())),
                    ("status", &p.status),
                ],
                Value::U(1),
            );
        }
        let mut f = w.family(
            "memtrace_unseen_field",
            Kind::Gauge,
            "1 per record field this attach plan cannot see; the metrics fed by it have no series.",
        );
        for field in self.unseen.iter() {
            f.sample(&[("field", field.name())], Value::U(1));
        }
        w.single(
            "memtrace_kmsg_readable",
            Kind::Gauge,
            "1 when the kernel log is read (limiting memcgs of OOM kills, kills before start).",
            Value::U(u64::from(h.kmsg)),
        );
        if let Some(u) = usage {
            w.single(
                "memtrace_agent_cpu_seconds",
                Kind::Counter,
                "CPU time the agent process used (user + system).",
                Value::F(u.cpu_seconds),
            );
            w.single(
                "memtrace_agent_resident_memory_bytes",
                Kind::Gauge,
                "Resident memory of the agent process.",
                Value::U(u.rss_bytes),
            );
        }
        let r = &self.recorder;
        w.single(
            "memtrace_postmortems_written",
            Kind::Counter,
            "OOM post-mortems written to disk.",
            Value::U(r.postmortems),
        );
        w.single(
            "memtrace_postmortems_pending",
            Kind::Gauge,
            "OOM post-mortems held in memory because the disk refused them.",
            Value::U(r.postmortems_pending),
        );
        w.single(
            "memtrace_captures_written",
            Kind::Counter,
            "Incident captures written to disk.",
            Value::U(r.captures),
        );
        let Some(s) = &self.system else { return };
        let mut f = w.family(
            "memtrace_lost_events",
            Kind::Counter,
            "Data memtrace lost, by reason: kernel-side losses (ring buffer, full maps, unpaired calls, program recursion) and OOM post-mortems the disk refused.",
        );
        let losses = [
            ("ringbuf_drops", s.ringbuf_drops),
            ("unmatched_returns", s.unmatched_returns),
            ("memcg_map_full", s.memcg_map_full),
            ("shrinker_map_full", s.shrinker_map_full),
            ("inflight_map_full", s.inflight_map_full),
            ("missed_returns", s.missed_returns),
        ];
        debug_assert_eq!(
            losses.map(|l| l.0),
            System::KERNEL_LOSSES,
            "every kernel loss counter has a series"
        );
        for (reason, n) in losses {
            f.sample(&[("reason", reason)], Value::U(n));
        }
        if let Some(n) = s.prog_recursion_misses {
            f.sample(&[("reason", "prog_recursion_misses")], Value::U(n));
        }
        f.sample(&[("reason", "postmortems")], Value::U(r.postmortems_lost));
        w.single(
            "memtrace_map_evictions",
            Kind::Counter,
            "Entries the agent removed from full kernel maps (idle or deleted memcgs).",
            Value::U(s.map_evictions),
        );
        let mut f = w.family(
            "memtrace_map_entries",
            Kind::Gauge,
            "Entries in the kernel's per-memcg and per-(memcg, shrinker) maps.",
        );
        f.sample(&[("map", "memcg")], Value::U(s.memcg_entries));
        f.sample(&[("map", "shrinker")], Value::U(s.shrinker_entries));
        let mut f = w.family(
            "memtrace_map_fill_ratio",
            Kind::Gauge,
            "Entries over capacity of those maps (--memcg-entries, --shrinker-entries).",
        );
        let ratio = |n: u64, max: u32| n as f64 / f64::from(max.max(1));
        f.sample(
            &[("map", "memcg")],
            Value::F(ratio(s.memcg_entries, self.map_max.0)),
        );
        f.sample(
            &[("map", "shrinker")],
            Value::F(ratio(s.shrinker_entries, self.map_max.1)),
        );
    }

    fn render_host(&self, w: &mut Writer) {
        let Some(s) = &self.system else { return };
        w.single(
            "memtrace_host_sys_ratio",
            Kind::Gauge,
            "Share of all CPU time spent in the kernel over the last interval (0-1).",
            Value::F(s.sys_pct / 100.0),
        );
        w.single(
            "memtrace_host_max_cpu_sys_ratio",
            Kind::Gauge,
            "The busiest CPU's share of time in the kernel over the last interval (0-1).",
            Value::F(s.max_cpu_sys_pct / 100.0),
        );
        w.single(
            "memtrace_kswapd_cpu_ratio",
            Kind::Gauge,
            "CPU used by the kswapd threads over the last interval, in CPUs (1 = one CPU busy).",
            Value::F(s.kswapd_cpu_pct / 100.0),
        );
        if let (true, Some(ns)) = (self.unseen.sees(Field::KswapdNs), s.kswapd_ns) {
            w.single(
                "memtrace_kswapd_seconds",
                Kind::Counter,
                "Time kswapd spent awake (wake to sleep), as the tracepoints see it.",
                Value::F(ns as f64 / 1e9),
            );
        }
        if let (true, Some(n)) = (self.unseen.sees(Field::KswapdWakes), s.kswapd_wakes) {
            let mut f = w.family("memtrace_kswapd_wakes", Kind::Counter, "kswapd wake-ups.");
            f.sample(&[], Value::U(n));
        }
        if let Some(n) = s.dying_memcgs {
            w.single(
                "memtrace_dying_memcgs",
                Kind::Gauge,
                "Memcgs removed but still held by the kernel (they still cost shrinker work).",
                Value::U(n),
            );
        }
        w.single(
            "memtrace_live_memcgs",
            Kind::Gauge,
            "Memcgs in the hierarchy now.",
            Value::U(s.live_memcgs),
        );
    }

    fn render_ooms(&self, w: &mut Writer, ooms: &[(&OomKey, u64)]) {
        let mut f = w.family(
            "memtrace_oom_kills",
            Kind::Counter,
            "OOM kills, by the victim's memcg and container; limit_cgroup names the memcg whose limit fired when it is not the victim's. Includes the kills the kernel log still held at start.",
        );
        for (k, n) in ooms {
            let id = k.id.labels();
            let mut labels: Vec<(&str, &str)> = vec![("scope", k.scope)];
            labels.extend(id);
            labels.push(("limit_cgroup", &k.limit_cgroup));
            f.sample(&labels, Value::U(*n));
        }
    }

    fn render_memcgs(&self, w: &mut Writer, ms: &[&MemcgSeries]) {
        let u = &self.unseen;
        let secs = |ns: u64| Value::F(ns as f64 / 1e9);
        let with = |m: &MemcgSeries, k: &'static str, v: &'static str| {
            let mut l: Vec<(&'static str, String)> =
                m.id.labels()
                    .iter()
                    .map(|(k, v)| (*k, v.to_string()))
                    .collect();
            l.push((k, v.to_string()));
            l
        };
        // Each family is written only when the plan sees what feeds it:
        // an absent series, never a 0 for something not measured.
        let kinds: [(&str, Field); 3] = [
            ("direct", Field::ReclaimDirectNs),
            ("memcg", Field::ReclaimMemcgNs),
            ("kswapd", Field::ShrinkSlabKswapdNs),
        ];
        if kinds.iter().any(|(_, f)| u.sees(*f)) {
            let mut f = w.family(
                "memtrace_reclaim_seconds",
                Kind::Counter,
                "Time in reclaim charged to the memcg: direct (a task's allocation), memcg (its limit) and kswapd (shrinker work kswapd did for it).",
            );
            for m in ms {
                for (i, (kind, field)) in kinds.iter().enumerate() {
                    if u.sees(*field) {
                        sample(&mut f, &with(m, "kind", kind), secs(m.reclaim_ns[i]));
                    }
                }
            }
        }
        let counted: [(&str, &str, &str, Field, Field); 2] = [
            (
                "memtrace_reclaims",
                "Reclaim runs charged to the memcg, by kind (direct, memcg).",
                "",
                Field::ReclaimDirectCount,
                Field::ReclaimMemcgCount,
            ),
            (
                "memtrace_reclaimed_bytes",
                "Memory those reclaim runs freed, by kind (direct, memcg).",
                "pages",
                Field::ReclaimDirectPages,
                Field::ReclaimMemcgPages,
            ),
        ];
        for (name, help, what, direct, memcg) in counted {
            if !u.sees(direct) && !u.sees(memcg) {
                continue;
            }
            let mut f = w.family(name, Kind::Counter, help);
            for m in ms {
                let (vals, scale) = if what == "pages" {
                    (m.reclaimed_pages, self.page_size)
                } else {
                    (m.reclaims, 1)
                };
                if u.sees(direct) {
                    sample(
                        &mut f,
                        &with(m, "kind", "direct"),
                        Value::U(vals[0] * scale),
                    );
                }
                if u.sees(memcg) {
                    sample(&mut f, &with(m, "kind", "memcg"), Value::U(vals[1] * scale));
                }
            }
        }
        if u.sees(Field::ChargeFailures) {
            let mut f = w.family(
                "memtrace_charge_failures",
                Kind::Counter,
                "Memory charges to the memcg that failed (the allocation then reclaims or OOMs).",
            );
            for m in ms {
                f.sample(&m.id.labels(), Value::U(m.charge_failures));
            }
        }
        let mut f = w.family(
            "memtrace_limit_hits",
            Kind::Counter,
            "Times the memcg hit its limit (v1 memory.failcnt, v2 memory.events max), counted while memtrace runs.",
        );
        for m in ms {
            if let Some(n) = m.limit_hits {
                f.sample(&m.id.labels(), Value::U(n));
            }
        }
        type Get = fn(&ShrinkerSums) -> u64;
        let shrinker: [(&str, &str, Field, Get, bool); 4] = [
            (
                "memtrace_shrinker_calls",
                "do_shrink_slab calls on the memcg's behalf, by shrinker (the busiest few, the rest as other).",
                Field::DoShrinkSlabCalls,
                |s| s.calls,
                false,
            ),
            (
                "memtrace_shrinker_zero_calls",
                "Of those calls, the ones that freed nothing.",
                Field::DoShrinkSlabZero,
                |s| s.zero,
                false,
            ),
            (
                "memtrace_shrinker_freed_objects",
                "Objects those calls freed.",
                Field::DoShrinkSlabFreed,
                |s| s.freed,
                false,
            ),
            (
                "memtrace_shrinker_seconds",
                "Time in those calls (estimated from one call in N with --shrinker-time-sample N).",
                Field::DoShrinkSlabNs,
                |s| s.ns,
                true,
            ),
        ];
        for (name, help, field, get, seconds) in shrinker {
            if !u.sees(field) {
                continue;
            }
            let mut f = w.family(name, Kind::Counter, help);
            for m in ms {
                for (sh, sums) in &m.shrinkers {
                    let mut l: Vec<(&str, &str)> = m.id.labels().to_vec();
                    l.push(("shrinker", sh));
                    let v = get(sums);
                    f.sample(&l, if seconds { secs(v) } else { Value::U(v) });
                }
            }
        }
        type State = fn(&MemcgSeries) -> Option<u64>;
        let gauges: [(&str, &str, State); 3] = [
            (
                "memtrace_memory_usage_bytes",
                "The memcg's memory usage (v1 memory.usage_in_bytes, v2 memory.current) at its last active interval.",
                |m| m.usage,
            ),
            (
                "memtrace_memory_limit_bytes",
                "The memcg's effective limit (the lowest on its path to the root); absent when unlimited.",
                |m| m.limit,
            ),
            (
                "memtrace_memory_working_set_bytes",
                "Usage minus inactive file pages (the kubelet's working set) at its last active interval.",
                |m| m.working_set,
            ),
        ];
        for (name, help, get) in gauges {
            let mut f = w.family(name, Kind::Gauge, help);
            for m in ms {
                if let Some(v) = get(m) {
                    f.sample(&m.id.labels(), Value::U(v));
                }
            }
        }
    }
}

fn sample(f: &mut super::expo::Family<'_>, l: &[(&'static str, String)], v: Value) {
    let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
    f.sample(&l, v);
}

/// A shrinker's label: its kernel name, else `sb-<fs>` for a superblock
/// (the kernel's own naming), else its count_objects symbol.
fn shrinker_label(r: &ShrinkerRow) -> String {
    if let Some(n) = &r.name {
        n.clone()
    } else if let Some(fs) = &r.fs_type {
        format!("sb-{fs}")
    } else if let Some(s) = &r.count_objects {
        s.clone()
    } else {
        "unknown".into()
    }
}

/// Adds an interval's shrinker work: the first TOP_SHRINKERS shrinkers a
/// memcg shows keep their own series, the rest (and work the interval's
/// top rows leave out) go to `other`, so the set of series stays bounded
/// and each one only ever grows.
fn add_shrinkers(e: &mut MemcgSeries, i: &MemcgInterval) {
    let total = ShrinkerSums {
        calls: i.do_shrink_slab_calls.unwrap_or(0),
        zero: i.do_shrink_slab_zero.unwrap_or(0),
        freed: i.do_shrink_slab_freed.unwrap_or(0),
        ns: i.do_shrink_slab_ns.unwrap_or(0),
    };
    let mut named = ShrinkerSums::default();
    let slot = |e: &mut MemcgSeries, label: &str, s: &ShrinkerSums| {
        let idx = match e.shrinkers.iter().position(|(l, _)| l == label) {
            Some(i) => i,
            None => {
                e.shrinkers
                    .push((label.to_string(), ShrinkerSums::default()));
                e.shrinkers.len() - 1
            }
        };
        let t = &mut e.shrinkers[idx].1;
        t.calls += s.calls;
        t.zero += s.zero;
        t.freed += s.freed;
        t.ns += s.ns;
    };
    let mut other = ShrinkerSums::default();
    for r in i.shrinkers.iter().flatten() {
        let s = ShrinkerSums {
            calls: r.calls,
            zero: r.zero.unwrap_or(0),
            freed: r.freed,
            ns: r.ns,
        };
        named.calls += s.calls;
        named.zero += s.zero;
        named.freed += s.freed;
        named.ns += s.ns;
        let label = shrinker_label(r);
        let own = e.shrinkers.iter().filter(|(l, _)| l != OTHER).count();
        if label != OTHER && (own < TOP_SHRINKERS || e.shrinkers.iter().any(|(l, _)| *l == label)) {
            slot(e, &label, &s);
        } else {
            other.calls += s.calls;
            other.zero += s.zero;
            other.freed += s.freed;
            other.ns += s.ns;
        }
    }
    other.calls += total.calls.saturating_sub(named.calls);
    other.zero += total.zero.saturating_sub(named.zero);
    other.freed += total.freed.saturating_sub(named.freed);
    other.ns += total.ns.saturating_sub(named.ns);
    if other.calls > 0 || e.shrinkers.iter().any(|(l, _)| l == OTHER) {
        slot(e, OTHER, &other);
    }
}

#[cfg(test)]
mod tests;
