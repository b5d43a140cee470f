//! OOM kills as stories: who died, whose limit fired (the victim's own
//! memcg, an ancestor's, or none: a global OOM), what the victim held, and
//! what the limited memcg went through before the kill.
use serde::Serialize;

use crate::output::records::{
    Memcg, MemcgInterval, OomHistory, OomKill, OomPostmortem, Task, TaskRss, Unreclaimable, Victim,
};

/// How far back the history of a kill is summed from a stream file.
pub const HISTORY_WINDOW_NS: u64 = 300_000_000_000;
/// Tasks listed from a post-mortem.
const TOP_TASKS: usize = 5;

/// Whose limit fired, relative to the victim's memcg.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitOf {
    /// The victim's own memcg hit its limit.
    Own,
    /// An ancestor's (lower) limit bound the victim's memcg.
    Ancestor,
    /// A memcg that is neither (should not happen; shown as is).
    OtherMemcg,
    /// The whole machine ran out: no memcg limit.
    Global,
    Cpuset,
    Mempolicy,
    /// A memcg OOM whose limiting memcg is not known.
    Unknown,
}

/// What the post-mortem read right after the kill.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Postmortem {
    /// The limiting memcg's own limit, else its effective limit.
    pub limit_bytes: Option<u64>,
    pub usage_bytes: Option<u64>,
    pub victim_usage_bytes: Option<u64>,
    pub unreclaimable: Option<Unreclaimable>,
    /// Tasks left in the memcg, largest rss first.
    pub top_tasks: Vec<TaskRss>,
    pub tasks: Option<u64>,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OomStory {
    pub ts: String,
    pub ts_ns: u64,
    /// Found in the kernel log at start-up: before memtrace ran.
    pub before_start: bool,
    pub victim: Victim,
    pub victim_memcg: Option<Memcg>,
    /// The memcg whose limit fired.
    pub limit_memcg: Option<Memcg>,
    pub limit_of: LimitOf,
    pub constraint: Option<String>,
    pub trigger: Option<Task>,
    /// Null on tracepoint plans.
    pub totalpages: Option<u64>,
    pub chosen_points: Option<i64>,
    pub sources: Vec<String>,
    pub postmortem: Option<Postmortem>,
    /// What the limited memcg (and everything below it) went through
    /// before the kill; null when nothing recorded it.
    pub history: Option<OomHistory>,
    /// "postmortem" (the agent's history) or "file" (summed from this
    /// file's memcg_interval records, up to 5 minutes before the kill).
    pub history_from: Option<&'static str>,
    #[serde(skip)]
    pub segment: u64,
}

fn same(a: &Memcg, b: &Memcg) -> bool {
    if a.id != 0 && b.id != 0 {
        return a.id == b.id;
    }
    a.path.is_some() && a.path == b.path
}

/// `path` is `ancestor` or below it.
pub fn within(path: &str, ancestor: &str) -> bool {
    let ancestor = ancestor.trim_end_matches('/');
    ancestor.is_empty()
        || path == ancestor
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn limit_of(k: &OomKill, limit: Option<&Memcg>, global: bool) -> LimitOf {
    match k.constraint.as_deref() {
        Some("global") => return LimitOf::Global,
        Some("cpuset") => return LimitOf::Cpuset,
        Some("mempolicy") => return LimitOf::Mempolicy,
        _ => {}
    }
    let Some(limit) = limit else {
        return if global {
            LimitOf::Global
        } else {
            LimitOf::Unknown
        };
    };
    let Some(victim) = &k.victim_memcg else {
        return LimitOf::Unknown;
    };
    if same(limit, victim) {
        return LimitOf::Own;
    }
    match (&victim.path, &limit.path) {
        (Some(v), Some(l)) if within(v, l) => LimitOf::Ancestor,
        (Some(_), Some(_)) => LimitOf::OtherMemcg,
        _ => LimitOf::Unknown,
    }
}

impl OomStory {
    pub fn from_kill(k: &OomKill, segment: u64) -> Self {
        Self {
            ts: k.ts.clone(),
            ts_ns: k.ts_ns,
            before_start: k.before_start,
            victim: k.victim.clone(),
            victim_memcg: k.victim_memcg.clone(),
            limit_memcg: k.oom_memcg.clone(),
            limit_of: limit_of(k, k.oom_memcg.as_ref(), false),
            constraint: k.constraint.clone(),
            trigger: k.trigger.clone(),
            totalpages: k.totalpages,
            chosen_points: k.chosen_points,
            sources: k.sources.clone(),
            postmortem: None,
            history: None,
            history_from: None,
            segment,
        }
    }

    /// Adds what a post-mortem of this kill knows.
    pub fn add_postmortem(&mut self, p: &OomPostmortem) {
        if self.limit_memcg.is_none() {
            self.limit_memcg = p.limit_memcg.clone();
        }
        // A kill from the kernel-log backlog whose constraint line was not
        // found is unknown, not global.
        let global = p.global && (!p.kill.before_start || p.kill.constraint.is_some());
        self.limit_of = limit_of(&p.kill, self.limit_memcg.as_ref(), global);
        let mut tasks = p.tasks.clone().unwrap_or_default();
        let rss = |t: &TaskRss| {
            t.rss_anon_kb.unwrap_or(0) + t.rss_file_kb.unwrap_or(0) + t.rss_shmem_kb.unwrap_or(0)
        };
        tasks.sort_by(|a, b| rss(b).cmp(&rss(a)).then(a.pid.cmp(&b.pid)));
        let n = p.tasks.as_ref().map(|t| t.len() as u64);
        tasks.truncate(TOP_TASKS);
        let st = p.limit_state.as_ref();
        self.postmortem = Some(Postmortem {
            limit_bytes: st.and_then(|s| s.limit_bytes.or(s.effective_limit_bytes)),
            usage_bytes: st.and_then(|s| s.usage_bytes),
            victim_usage_bytes: p.victim_state.as_ref().and_then(|s| s.usage_bytes),
            unreclaimable: p.unreclaimable.clone(),
            top_tasks: tasks,
            tasks: n,
            notes: p.notes.clone(),
        });
        if let Some(h) = &p.history {
            self.history = Some(h.clone());
            self.history_from = Some("postmortem");
        }
    }

    /// The memcg whose history explains the kill: the limited one (its
    /// whole subtree), else the victim's.
    fn scope(&self) -> Option<&Memcg> {
        self.limit_memcg.as_ref().or(self.victim_memcg.as_ref())
    }

    /// Whether a `memcg_interval` record belongs to this kill's history:
    /// same run, a memcg in the limited subtree, an interval that started
    /// before the kill and ended at most HISTORY_WINDOW_NS before it.
    pub fn covers(&self, segment: u64, i: &MemcgInterval) -> bool {
        if segment != self.segment || self.before_start {
            return false;
        }
        let start = i.ts_ns.saturating_sub(i.interval_ns);
        if start >= self.ts_ns || i.ts_ns + HISTORY_WINDOW_NS < self.ts_ns {
            return false;
        }
        let Some(scope) = self.scope() else {
            return false;
        };
        match (&scope.path, &i.memcg.path) {
            (Some(s), Some(p)) => within(p, s),
            _ => scope.id != 0 && scope.id == i.memcg.id,
        }
    }
}

/// Sums a kill's history from the file's records, built up one record at a
/// time (`add`) and closed by `finish`.
#[derive(Default)]
pub struct HistoryAcc {
    h: OomHistory,
    first_start_ns: Option<u64>,
    ends: std::collections::BTreeSet<u64>,
    any: bool,
}

impl HistoryAcc {
    pub fn add(&mut self, i: &MemcgInterval) {
        self.any = true;
        let start = i.ts_ns.saturating_sub(i.interval_ns);
        self.first_start_ns = Some(self.first_start_ns.map_or(start, |s| s.min(start)));
        self.ends.insert(i.ts_ns);
        self.h.add(i);
    }

    /// The history up to `kill_ns`, or None if no record covered it.
    pub fn finish(self, kill_ns: u64) -> Option<OomHistory> {
        if !self.any {
            return None;
        }
        let mut h = self.h;
        h.window_ns = kill_ns.saturating_sub(self.first_start_ns.unwrap_or(kill_ns));
        h.intervals = self.ends.len() as u64;
        Some(h)
    }
}
