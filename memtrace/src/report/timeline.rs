//! The time series behind `report --html`'s charts: one more pass over the
//! file once the summary has said who the top containers, the top
//! shrinkers and the OOM-killed containers are, so only their series are
//! kept. Memory stays bounded whatever the file's length: the series hold
//! at most [`MAX_BUCKETS`] buckets, two neighbours merging into one (and
//! the bucket width doubling) when a file runs longer.
use std::{
    collections::HashMap,
    io::BufRead,
    time::{Duration, SystemTime},
};

use anyhow::Result;

use super::{
    oom::{OomStory, within},
    summary::{Report, ShrinkerSummary, Usage},
};
use crate::output::records::{Field, Memcg, MemcgInterval, Record, System};

/// 10000-01-01T00:00:00Z in Unix seconds: the first time RFC 3339 cannot
/// print.
const LAST_RFC3339_S: u64 = 253_402_300_800;

/// About one bucket per two pixels of a chart's plot width.
pub const MAX_BUCKETS: usize = 600;
/// Containers stacked in the reclaim chart; the others are summed as "rest".
pub const TOP_CONTAINERS: usize = 6;
pub const TOP_SHRINKERS: usize = 5;
/// OOM-killed containers (limiting memcgs) charted.
pub const TOP_KILLED: usize = 6;

/// One bucket's sums; rates are computed against the bucket's width.
#[derive(Clone, Debug, Default)]
pub struct Bucket {
    /// Time-weighted sums of sys% and kswapd CPU% and their weight.
    sys_w: f64,
    kswapd_w: f64,
    w_ns: u64,
    /// The highest busiest-CPU sys%.
    pub max_cpu: Option<f64>,
    /// Reclaim ns per top container, then the rest.
    pub reclaim_ns: Vec<u64>,
    /// do_shrink_slab calls per top shrinker, then the rest.
    pub calls: Vec<u64>,
    /// Calls that freed nothing, and the calls they are a share of (rows
    /// that could see them).
    pub zero: Vec<u64>,
    pub zero_base: Vec<u64>,
    /// Per killed container: limit hits (None: not seen), highest usage as
    /// a percentage of its limit.
    pub limit_hits: Vec<Option<u64>>,
    pub usage_pct: Vec<Option<f64>>,
}

fn add_opt(a: &mut Option<u64>, b: Option<u64>) {
    if let Some(b) = b {
        *a = Some(a.unwrap_or(0).saturating_add(b));
    }
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

impl Bucket {
    fn new(n_cont: usize, n_shr: usize, n_killed: usize) -> Self {
        Bucket {
            reclaim_ns: vec![0; n_cont + 1],
            calls: vec![0; n_shr + 1],
            zero: vec![0; n_shr + 1],
            zero_base: vec![0; n_shr + 1],
            limit_hits: vec![None; n_killed],
            usage_pct: vec![None; n_killed],
            ..Bucket::default()
        }
    }

    fn merge(&mut self, o: &Bucket) {
        self.sys_w += o.sys_w;
        self.kswapd_w += o.kswapd_w;
        self.w_ns += o.w_ns;
        self.max_cpu = max_opt(self.max_cpu, o.max_cpu);
        let sum = |a: &mut Vec<u64>, b: &Vec<u64>| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        sum(&mut self.reclaim_ns, &o.reclaim_ns);
        sum(&mut self.calls, &o.calls);
        sum(&mut self.zero, &o.zero);
        sum(&mut self.zero_base, &o.zero_base);
        for (a, b) in self.limit_hits.iter_mut().zip(&o.limit_hits) {
            add_opt(a, *b);
        }
        for (a, b) in self.usage_pct.iter_mut().zip(&o.usage_pct) {
            *a = max_opt(*a, *b);
        }
    }

    /// Time-weighted mean sys% over the bucket (None: no `system` record).
    pub fn sys_pct(&self) -> Option<f64> {
        (self.w_ns > 0).then(|| self.sys_w / self.w_ns as f64)
    }

    pub fn kswapd_pct(&self) -> Option<f64> {
        (self.w_ns > 0).then(|| self.kswapd_w / self.w_ns as f64)
    }
}

/// One OOM kill, where the charts mark it.
#[derive(Clone, Debug)]
pub struct KillMark {
    /// Seconds from the timeline's start.
    pub x_s: f64,
    pub comm: String,
    pub pid: u32,
    /// The victim's container (its display name) or memcg path.
    pub container: String,
    /// The memcg whose limit fired, or why none.
    pub limit: String,
}

/// A charted series' name (unescaped: the page escapes it).
#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
}

#[derive(Clone, Debug, Default)]
pub struct Timeline {
    /// ts_ns of the first bucket's start.
    pub t0_ns: u64,
    /// Wall-clock time of `t0_ns`, when a record's RFC 3339 stamp told it.
    pub t0_wall: Option<SystemTime>,
    pub width_ns: u64,
    pub buckets: Vec<Bucket>,
    pub containers: Vec<Series>,
    pub shrinkers: Vec<Series>,
    pub killed: Vec<Series>,
    /// Calls that freed nothing are visible on this file's plan.
    pub zero_visible: bool,
    pub shrinker_calls_visible: bool,
    pub kills: Vec<KillMark>,
    /// A capture's trigger threshold, window and trigger time (seconds
    /// from the start).
    pub threshold_pct: Option<f64>,
    pub window_s: Option<(f64, f64)>,
    pub trigger_s: Option<f64>,
    /// Runs in the file after the first, which the charts leave out.
    pub later_runs: u64,
    pub kills_left_out: u64,
}

impl Timeline {
    /// Seconds from the start at the end of bucket `i`.
    pub fn x_of(&self, i: usize) -> f64 {
        ((i as u64 + 1).saturating_mul(self.width_ns)) as f64 / 1e9
    }

    pub fn width_s(&self) -> f64 {
        self.width_ns as f64 / 1e9
    }

    /// The x range every chart shares: the buckets and every kill.
    pub fn x_range(&self) -> (f64, f64) {
        let mut lo = 0.0f64;
        let mut hi = self.x_of(self.buckets.len().saturating_sub(1)).max(1.0);
        for k in &self.kills {
            lo = lo.min(k.x_s);
            hi = hi.max(k.x_s);
        }
        if let Some((a, b)) = self.window_s {
            lo = lo.min(a);
            hi = hi.max(b);
        }
        (lo, hi)
    }

    /// The wall-clock time `x_s` seconds from the start, "HH:MM:SS"
    /// (tenths too when the whole timeline spans under a minute, where
    /// axis ticks are less than a second apart).
    pub fn clock(&self, x_s: f64) -> String {
        let (lo, hi) = self.x_range();
        let tenths = hi - lo < 60.0;
        // A file's times are whatever it says: anything outside what
        // RFC 3339 can print (before 1970, after 9999) reads as an offset.
        let wall = self.t0_wall.and_then(|t0| {
            let d = Duration::try_from_secs_f64(x_s.abs()).ok()?;
            let t = if x_s >= 0.0 {
                t0.checked_add(d)?
            } else {
                t0.checked_sub(d)?
            };
            let secs = t.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
            (secs < LAST_RFC3339_S).then_some(t)
        });
        match wall {
            Some(t) => {
                let s = humantime::format_rfc3339_millis(t).to_string();
                // "2026-12-04T13:14:15.678Z" -> "13:14:15" or "13:14:15.6".
                s.get(11..if tenths { 21 } else { 19 })
                    .map(str::to_string)
                    .unwrap_or(s)
            }
            None if tenths => format!("+{x_s:.1}s"),
            None => format!("+{x_s:.0}s"),
        }
    }
}

/// A container's grouping key as the summary builds it: its runtime and
/// cgroup, or (no container) the memcg's path and id.
type UsageKey = (Option<String>, Option<String>, Option<u64>);

fn usage_key(u: &Usage) -> UsageKey {
    (u.runtime.clone(), u.cgroup.clone(), u.memcg_id)
}

fn record_key(m: &Memcg) -> UsageKey {
    match &m.container {
        Some(c) => (Some(c.runtime.clone()), Some(c.cgroup.clone()), None),
        None => (None, m.path.clone(), Some(m.id)),
    }
}

/// What people call the memcg: its container's display name, else its path.
pub fn memcg_label(m: &Memcg) -> String {
    match &m.container {
        Some(c) => c.display_name(),
        None => m.path_or_id(),
    }
}

pub fn shrinker_label(s: &ShrinkerSummary) -> String {
    let base = s
        .name
        .clone()
        .or_else(|| s.count_objects.clone())
        .unwrap_or_else(|| s.shrinker.clone());
    match (&s.fs_type, &s.device) {
        (Some(f), Some(d)) => format!("{base} ({f} {d})"),
        (Some(f), None) => format!("{base} ({f})"),
        (None, Some(d)) => format!("{base} ({d})"),
        (None, None) => base,
    }
}

fn kill_limit(k: &OomStory) -> String {
    match &k.limit_memcg {
        Some(m) => format!("limit of {}", m.path_or_id()),
        None => match k.constraint.as_deref() {
            Some("CONSTRAINT_NONE") => "global OOM (no memcg limit)".into(),
            Some(c) => format!("constraint {c}, limiting memcg not known"),
            None => "limiting memcg not known".into(),
        },
    }
}

struct Builder<'r> {
    report: &'r Report,
    t: Timeline,
    started: bool,
    cont_index: HashMap<UsageKey, usize>,
    shr_index: HashMap<(String, Option<String>), usize>,
    /// The killed series' limiting memcgs: id and path.
    killed_memcgs: Vec<(u64, Option<String>)>,
}

impl<'r> Builder<'r> {
    fn new(report: &'r Report) -> Self {
        let mut t = Timeline::default();
        let containers: Vec<&Usage> = report
            .top_containers_by_reclaim
            .iter()
            .filter(|u| u.reclaim_ns > 0)
            .take(TOP_CONTAINERS)
            .collect();
        let cont_index = containers
            .iter()
            .enumerate()
            .map(|(i, u)| (usage_key(u), i))
            .collect();
        // Labels come from the records (display names); the summary's
        // short name until one is seen.
        t.containers = containers
            .iter()
            .map(|u| Series {
                label: u.name.clone(),
            })
            .collect();
        let shrinkers: Vec<&ShrinkerSummary> = report
            .shrinkers
            .iter()
            .filter(|s| s.calls > 0)
            .take(TOP_SHRINKERS)
            .collect();
        let shr_index = shrinkers
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.shrinker.clone(), s.count_objects.clone()), i))
            .collect();
        t.shrinkers = shrinkers
            .iter()
            .map(|s| {
                let label = shrinker_label(s);
                // Two shrinkers with one label (two cgroupfs mounts) are
                // told apart by their address.
                let twin = shrinkers
                    .iter()
                    .filter(|o| shrinker_label(o) == label)
                    .count()
                    > 1;
                Series {
                    label: if twin {
                        format!("{label} {}", s.shrinker)
                    } else {
                        label
                    },
                }
            })
            .collect();
        let mut killed_memcgs: Vec<(u64, Option<String>)> = Vec::new();
        for k in report
            .oom_kills
            .iter()
            .filter(|k| !k.before_start && k.segment == 0)
        {
            let Some(m) = k.limit_memcg.as_ref().or(k.victim_memcg.as_ref()) else {
                continue;
            };
            if killed_memcgs.iter().any(|(id, _)| *id == m.id) || t.killed.len() >= TOP_KILLED {
                continue;
            }
            killed_memcgs.push((m.id, m.path.clone()));
            t.killed.push(Series {
                label: memcg_label(m),
            });
        }
        t.zero_visible = report.not_visible.sees(Field::DoShrinkSlabZero);
        t.shrinker_calls_visible = report.not_visible.sees(Field::DoShrinkSlabCalls);
        Builder {
            report,
            t,
            started: false,
            cont_index,
            shr_index,
            killed_memcgs,
        }
    }

    fn start(&mut self, ts_ns: u64, interval_ns: u64, ts: &str) {
        if self.started {
            return;
        }
        self.started = true;
        // The agent's interval (a record's own is a little longer or
        // shorter: polls jitter).
        let width_ms = self
            .report
            .header
            .as_ref()
            .and_then(|h| h.interval_ms)
            .unwrap_or(interval_ns.saturating_add(500_000) / 1_000_000);
        // Saturating: a hostile `interval_ms` must not wrap the width to 0.
        self.t.width_ns = width_ms.max(1).saturating_mul(1_000_000);
        self.t.t0_ns = ts_ns.saturating_sub(interval_ns);
        self.t.t0_wall = humantime::parse_rfc3339_weak(ts)
            .ok()
            .and_then(|w| w.checked_sub(Duration::from_nanos(interval_ns)));
    }

    /// The bucket a record ending at `ts_ns` falls in.
    fn bucket(&mut self, ts_ns: u64) -> &mut Bucket {
        let (nc, ns, nk) = (
            self.t.containers.len(),
            self.t.shrinkers.len(),
            self.t.killed.len(),
        );
        let mut idx =
            (ts_ns.saturating_sub(self.t.t0_ns).saturating_sub(1) / self.t.width_ns) as usize;
        while idx >= MAX_BUCKETS {
            // Halve the resolution: merge neighbours, double the width.
            let old = std::mem::take(&mut self.t.buckets);
            for pair in old.chunks(2) {
                let mut b = pair[0].clone();
                if let Some(o) = pair.get(1) {
                    b.merge(o);
                }
                self.t.buckets.push(b);
            }
            self.t.width_ns = self.t.width_ns.saturating_mul(2);
            idx = (ts_ns.saturating_sub(self.t.t0_ns).saturating_sub(1) / self.t.width_ns) as usize;
        }
        while self.t.buckets.len() <= idx {
            self.t.buckets.push(Bucket::new(nc, ns, nk));
        }
        &mut self.t.buckets[idx]
    }

    fn system(&mut self, s: &System) {
        self.start(s.ts_ns, s.interval_ns, &s.ts);
        let w = s.interval_ns as f64;
        let b = self.bucket(s.ts_ns);
        b.sys_w += s.sys_pct * w;
        b.kswapd_w += s.kswapd_cpu_pct * w;
        b.w_ns += s.interval_ns;
        b.max_cpu = max_opt(b.max_cpu, Some(s.max_cpu_sys_pct));
    }

    fn interval(&mut self, i: &MemcgInterval) {
        self.start(i.ts_ns, i.interval_ns, &i.ts);
        let cont = self.cont_index.get(&record_key(&i.memcg)).copied();
        if let (Some(c), Some(ctr)) = (cont, &i.memcg.container) {
            self.t.containers[c].label = ctr.display_name();
        }
        let nc = self.t.containers.len();
        let ns = self.t.shrinkers.len();
        let rows: Vec<(usize, u64, Option<u64>)> = i
            .shrinkers
            .iter()
            .flatten()
            .map(|r| {
                let k = (r.shrinker.clone(), r.count_objects.clone());
                (
                    self.shr_index.get(&k).copied().unwrap_or(ns),
                    r.calls,
                    r.zero,
                )
            })
            .collect();
        // Limit hits of the limiting memcg's whole subtree (its children
        // are where charges hit it); usage/limit from its own snapshot.
        let killed: Vec<(usize, bool)> = self
            .killed_memcgs
            .iter()
            .enumerate()
            .filter_map(|(k, (id, path))| {
                let own = i.memcg.id == *id;
                let below = matches!((path, &i.memcg.path), (Some(p), Some(q)) if within(q, p));
                (own || below).then_some((k, own))
            })
            .collect();
        let b = self.bucket(i.ts_ns);
        let reclaim = i.reclaim_direct_ns.unwrap_or(0) + i.reclaim_memcg_ns.unwrap_or(0);
        b.reclaim_ns[cont.unwrap_or(nc)] += reclaim;
        if rows.is_empty() {
            // No per-shrinker rows: the memcg's calls go to the rest.
            b.calls[ns] += i.do_shrink_slab_calls.unwrap_or(0);
            if let (Some(c), Some(z)) = (i.do_shrink_slab_calls, i.do_shrink_slab_zero) {
                b.zero[ns] += z;
                b.zero_base[ns] += c;
            }
        }
        for (s, calls, zero) in rows {
            b.calls[s] += calls;
            if let Some(z) = zero {
                b.zero[s] += z;
                b.zero_base[s] += calls;
            }
        }
        for (k, own) in killed {
            add_opt(&mut b.limit_hits[k], i.limit_hits);
            if own
                && let Some(st) = &i.state
                && let (Some(u), Some(l)) =
                    (st.usage_bytes, st.effective_limit_bytes.or(st.limit_bytes))
                && l > 0
            {
                let pct = u as f64 * 100.0 / l as f64;
                b.usage_pct[k] = max_opt(b.usage_pct[k], Some(pct));
            }
        }
    }

    fn finish(mut self) -> Timeline {
        let x = |t: &Timeline, ns: u64| (ns as f64 - t.t0_ns as f64) / 1e9;
        for k in &self.report.oom_kills {
            if k.before_start {
                continue;
            }
            if k.segment != 0 || !self.started {
                self.t.kills_left_out += 1;
                continue;
            }
            let container = k
                .victim_memcg
                .as_ref()
                .map(memcg_label)
                .unwrap_or_else(|| "memcg not known".into());
            self.t.kills.push(KillMark {
                x_s: x(&self.t, k.ts_ns),
                comm: k.victim.comm.clone(),
                pid: k.victim.pid,
                container,
                limit: kill_limit(k),
            });
        }
        if let Some(c) = &self.report.capture
            && self.started
        {
            self.t.threshold_pct = Some(c.trigger.threshold_pct);
            let trig = x(&self.t, c.trigger.ts_ns);
            self.t.trigger_s = Some(trig);
            self.t.window_s = Some((trig - c.before_s, trig + c.after_s));
        }
        self.t
    }
}

/// Pass 3: the charted series of the file's first run.
pub fn build<R: BufRead>(report: &Report, reader: R, max_lines: u64) -> Result<Timeline> {
    let mut b = Builder::new(report);
    let segment = super::reread(report.kind, reader, max_lines, |segment, record| {
        if segment > 0 {
            return;
        }
        match record {
            Record::System(s) => b.system(s),
            Record::MemcgInterval(i) => b.interval(i),
            _ => {}
        }
    })?;
    b.t.later_runs = segment;
    Ok(b.finish())
}
