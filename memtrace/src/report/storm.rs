//! The shrink_slab storm signature (docs: background.md, incident 1): the
//! kernel calls `do_shrink_slab()` for every shrinker on every memcg of a
//! reclaim pass; with many memcgs almost all of those calls find nothing,
//! and the node's CPU goes to sys time. Judged per interval, so a storm of
//! a few seconds is not averaged away over a long file.
use serde::Serialize;

/// do_shrink_slab calls per second, summed over all memcgs. A busy memcg
/// thrashing its limit does a few hundred (526/s for a 64 MiB memcg
/// writing 400 MiB, README); the Virtuozzo node did 16 million per pass.
pub const MIN_CALLS_PER_S: f64 = 10_000.0;
/// Memcgs with shrinker calls in that interval: the storm is the walk over
/// many memcgs (thousands in the incident), not one memcg's reclaim.
pub const MIN_MEMCGS: u64 = 50;
/// Share of those calls that freed nothing: the useless calls to empty
/// per-memcg lists are the storm (almost all of them in the incident).
pub const MIN_ZERO_PCT: f64 = 90.0;
/// System-wide sys% in that interval, when no capture threshold is lower:
/// the incident took a node from 50% CPU to 100%, almost all sys.
pub const DEFAULT_MIN_SYS_PCT: f64 = 30.0;

/// One interval's shrinker work and host sys%.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IntervalEval {
    /// End of the interval.
    pub ts: String,
    pub interval_s: f64,
    /// Null: no record of the interval could see do_shrink_slab calls.
    pub calls: Option<u64>,
    pub calls_per_s: Option<f64>,
    /// Memcgs with do_shrink_slab calls in the interval.
    pub memcgs: u64,
    /// Null: no calls, or calls that freed nothing are not visible.
    pub zero_pct: Option<f64>,
    /// Calls that freed nothing are counted in every record of the
    /// interval (false on tracepoint plans).
    pub zero_visible: bool,
    /// Null: no `system` record closed the interval.
    pub sys_pct: Option<f64>,
    pub max_cpu_sys_pct: Option<f64>,
    pub max_cpu: Option<u32>,
    pub kswapd_cpu_pct: Option<f64>,
}

/// Which conditions an interval meets; None where it cannot be told.
struct Checks {
    calls: Option<bool>,
    memcgs: bool,
    zero: Option<bool>,
    sys: Option<bool>,
}

impl IntervalEval {
    fn checks(&self, min_sys: f64) -> Checks {
        Checks {
            calls: self.calls_per_s.map(|c| c >= MIN_CALLS_PER_S),
            memcgs: self.memcgs >= MIN_MEMCGS,
            zero: self.zero_pct.map(|z| z >= MIN_ZERO_PCT),
            sys: self.sys_pct.map(|s| s >= min_sys),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Thresholds {
    pub min_calls_per_s: f64,
    pub min_memcgs: u64,
    pub min_zero_pct: f64,
    pub min_sys_pct: f64,
    /// "default" or "capture threshold" (a capture's lower trigger).
    pub min_sys_from: &'static str,
    pub rule: String,
}

impl Thresholds {
    /// `capture_threshold`: the sys% that triggered a capture, if any.
    pub fn new(capture_threshold: Option<f64>) -> Self {
        let (min_sys_pct, min_sys_from) = match capture_threshold {
            Some(t) if t < DEFAULT_MIN_SYS_PCT => (t, "capture threshold"),
            _ => (DEFAULT_MIN_SYS_PCT, "default"),
        };
        let rule = format!(
            "in one interval: >= {} do_shrink_slab calls/s across >= {} memcgs, >= {}% of them \
             freeing nothing, while host sys >= {}% ({}%, or the capture's threshold if lower)",
            super::text::count(MIN_CALLS_PER_S as u64),
            MIN_MEMCGS,
            MIN_ZERO_PCT,
            pct(min_sys_pct),
            pct(DEFAULT_MIN_SYS_PCT)
        );
        Self {
            min_calls_per_s: MIN_CALLS_PER_S,
            min_memcgs: MIN_MEMCGS,
            min_zero_pct: MIN_ZERO_PCT,
            min_sys_pct,
            min_sys_from,
            rule,
        }
    }
}

fn pct(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// At least one interval meets every condition.
    Present,
    /// Every condition that matters could be checked, and none met all.
    Absent,
    /// Sys time was high but calls that freed nothing are invisible on this
    /// attach plan: neither confirmed nor ruled out.
    NotConfirmable,
    /// No shrinker counts at all (no `memcg_interval` records).
    NoData,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Storm {
    pub verdict: Verdict,
    pub thresholds: Thresholds,
    /// Intervals judged, those meeting every condition, those with high sys.
    pub intervals: u64,
    pub storm_intervals: u64,
    pub high_sys_intervals: u64,
    /// The interval that decided the verdict: the storm's busiest, else the
    /// busiest high-sys interval, else the highest-sys one.
    pub worst: Option<IntervalEval>,
    /// The verdict in words (no names from the file; text output escapes
    /// them all the same).
    pub explanation: Vec<String>,
}

fn calls_key(e: &IntervalEval) -> f64 {
    e.calls_per_s.unwrap_or(-1.0)
}

fn busiest<'a>(it: impl Iterator<Item = &'a IntervalEval>) -> Option<&'a IntervalEval> {
    it.max_by(|a, b| {
        calls_key(a).total_cmp(&calls_key(b)).then(
            a.sys_pct
                .unwrap_or(-1.0)
                .total_cmp(&b.sys_pct.unwrap_or(-1.0)),
        )
    })
}

/// How an interval reads in the explanation.
pub fn describe(e: &IntervalEval) -> String {
    let calls = match (e.calls, e.calls_per_s) {
        (Some(c), Some(r)) => format!(
            "{} do_shrink_slab calls ({}/s)",
            super::text::count(c),
            super::text::count(r.round() as u64)
        ),
        _ => "do_shrink_slab calls not visible".into(),
    };
    let zero = match e.zero_pct {
        Some(z) => format!("{z:.1}% freed nothing"),
        None => "calls that freed nothing not visible on this plan".into(),
    };
    let sys = match e.sys_pct {
        Some(s) => format!("host sys {s:.1}%"),
        None => "host sys unknown (no system record)".into(),
    };
    format!(
        "interval ending {} ({:.1} s): {calls} across {} memcgs, {zero}, {sys}",
        e.ts, e.interval_s, e.memcgs
    )
}

/// Judges the intervals. `tracepoint_plan`: the header says zero counts
/// are unavailable (calls are then also only those that found objects).
pub fn judge(evals: &[IntervalEval], thresholds: Thresholds, tracepoint_plan: bool) -> Storm {
    let min_sys = thresholds.min_sys_pct;
    let mut storm = Storm {
        verdict: Verdict::NoData,
        thresholds,
        intervals: evals.len() as u64,
        storm_intervals: 0,
        high_sys_intervals: 0,
        worst: None,
        explanation: Vec::new(),
    };
    let confirm = "what would confirm it: record on a kernel where memtrace attaches \
                   do_shrink_slab with kprobes or fentry (see `memtrace doctor`; Debian's 6.1 \
                   and 6.12 kernels do), where do_shrink_slab_zero counts the calls that freed \
                   nothing";
    if !evals.iter().any(|e| e.calls.is_some()) {
        storm.explanation.push(
            "no shrinker counts in this file (no memcg_interval records: was it recorded \
             with --interval?)"
                .into(),
        );
        return storm;
    }
    let all = |e: &&IntervalEval| {
        let c = e.checks(min_sys);
        c.calls == Some(true) && c.memcgs && c.zero == Some(true) && c.sys == Some(true)
    };
    let high_sys = |e: &&IntervalEval| e.checks(min_sys).sys == Some(true);
    storm.storm_intervals = evals.iter().filter(all).count() as u64;
    storm.high_sys_intervals = evals.iter().filter(high_sys).count() as u64;
    if storm.storm_intervals > 0 {
        storm.verdict = Verdict::Present;
        storm.worst = busiest(evals.iter().filter(all)).cloned();
        storm.explanation.push(format!(
            "{} of {} intervals meet every condition; the busiest: {}",
            storm.storm_intervals,
            storm.intervals,
            describe(storm.worst.as_ref().expect("nonempty"))
        ));
        if let Some(k) = storm.worst.as_ref().and_then(|w| w.kswapd_cpu_pct) {
            storm
                .explanation
                .push(format!("kswapd used {k:.1}% of a CPU in that interval"));
        }
        return storm;
    }
    if storm.high_sys_intervals == 0 {
        storm.verdict = Verdict::Absent;
        storm.worst = evals
            .iter()
            .filter(|e| e.sys_pct.is_some())
            .max_by(|a, b| {
                a.sys_pct
                    .unwrap_or(0.0)
                    .total_cmp(&b.sys_pct.unwrap_or(0.0))
            })
            .or_else(|| busiest(evals.iter()))
            .cloned();
        let peak = storm
            .worst
            .as_ref()
            .and_then(|w| w.sys_pct)
            .map(|s| format!("{s:.1}%"))
            .unwrap_or_else(|| "unknown".into());
        storm.explanation.push(format!(
            "host sys never reached {}% in an interval (highest {peak}): no storm",
            pct(min_sys)
        ));
        return storm;
    }
    let worst = busiest(evals.iter().filter(high_sys)).expect("nonempty");
    storm.worst = Some(worst.clone());
    let blind = evals
        .iter()
        .filter(high_sys)
        .any(|e| !e.zero_visible || e.calls.is_none());
    if blind || tracepoint_plan {
        storm.verdict = Verdict::NotConfirmable;
        storm.explanation.push(format!(
            "cannot be confirmed on this attach plan: host sys reached {}% in {} intervals, but \
             do_shrink_slab calls that freed nothing are not visible (the mm_shrink_slab \
             tracepoints fire only when a shrinker found objects), so the visible call counts \
             are a lower bound and the zero share is unknown",
            pct(min_sys),
            storm.high_sys_intervals
        ));
        storm
            .explanation
            .push(format!("busiest high-sys {}", describe(worst)));
        storm.explanation.push(confirm.into());
        return storm;
    }
    storm.verdict = Verdict::Absent;
    let c = worst.checks(min_sys);
    let mut missing = Vec::new();
    if c.calls != Some(true) {
        missing.push(format!(
            "fewer than {} calls/s",
            super::text::count(MIN_CALLS_PER_S as u64)
        ));
    }
    if !c.memcgs {
        missing.push(format!("fewer than {MIN_MEMCGS} memcgs"));
    }
    if c.zero == Some(false) {
        missing.push(format!("less than {}% freeing nothing", pct(MIN_ZERO_PCT)));
    }
    storm.explanation.push(format!(
        "no interval meets every condition; the busiest high-sys {} ({})",
        describe(worst),
        missing.join(", ")
    ));
    storm
}
