//! The enrichment stage: what the kernel reports by memcg id becomes a named
//! memcg (path, container) with its cgroupfs state, and an OOM kill gets
//! the state of its memcgs read the moment the kernel reported it. The
//! records leave this stage carrying all of it; no sink reads cgroupfs.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use memtrace_common::{OOM_HAS_OOM_MEMCG, OomEvent};

use super::carry::{IntervalState, StateCarry};

use crate::{
    aggregate::{chain, intervals::MemcgDelta},
    cgroup::{self, MemcgFs, Resolver, state::StateReader, tasks::tasks, watch::MemcgWatch},
    output::{
        build,
        records::{Memcg, MemcgState, OomKill, TaskRss},
    },
};

/// How often the memcg tree is walked to count live memcgs (v1 needs the
/// count to tell dying memcgs; the walk costs ~10 ms per 2000 memcgs).
const RESCAN_EVERY: Duration = Duration::from_secs(10);
/// Snapshots of kills the kernel log never confirmed expire after this.
const SNAPSHOT_TTL_NS: u64 = 60_000_000_000;

/// A memcg's state read the moment the kernel reported an OOM kill, before
/// the victim's memory is freed, and what could not be read. It travels
/// with the kill's record (`pipeline::Output`); `record` builds its
/// post-mortem from it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OomSnapshot {
    /// When the state was read (ns since boot); 0 when no BPF event came
    /// before the kernel log's report, so it was read at the join.
    pub at_ns: u64,
    pub limit_state: Option<MemcgState>,
    pub victim_state: Option<MemcgState>,
    /// Tasks left in the limiting memcg (or the victim's), with rss.
    pub tasks: Option<Vec<TaskRss>>,
    /// What could not be read and why.
    pub notes: Vec<String>,
}

/// A state read at the BPF event, by memcg id.
#[derive(Default)]
struct EarlyRead {
    at_ns: u64,
    states: Vec<(u64, MemcgState)>,
    tasks: Option<Vec<TaskRss>>,
}

pub struct Enricher {
    pub fs: MemcgFs,
    pub resolver: Resolver,
    states: StateReader,
    /// Which memcgs' state an interval reads again (`carry`).
    pub carry: StateCarry,
    /// Last cgroupfs limit-hit counter per memcg, for deltas.
    limit_counts: HashMap<u64, u64>,
    live_memcgs: u64,
    last_rescan: Instant,
    /// Read at the BPF event, by victim pid, until the kill's record is
    /// built (`None`: the sinks want no snapshots).
    early: Option<HashMap<u32, EarlyRead>>,
    /// Names memcgs as they are created (None if inotify is unavailable).
    watch: Option<MemcgWatch>,
}

impl Enricher {
    /// `state_max_age`: how long a memcg only scanned by shrinkers carries
    /// its state (`carry`).
    pub fn new(
        fs: MemcgFs,
        snapshots: bool,
        roots: cgroup::runtime::Roots,
        state_max_age: std::time::Duration,
    ) -> Self {
        let mut resolver = Resolver::new(&fs);
        resolver.set_names(cgroup::runtime::Names::new(roots));
        // Every memcg that exists now gets a baseline, so the first interval
        // a memcg shows up in has a true limit-hit delta.
        resolver.rescan();
        let live = resolver.live();
        // Watches first, then one more rescan: a memcg created in between
        // is found by one or the other.
        let watch = match MemcgWatch::new(&fs.root) {
            Ok(mut w) => {
                for n in &live {
                    let abs = resolver.path_of(n);
                    if let Ok(rel) = abs.strip_prefix(&fs.root) {
                        w.watch(n.id, rel.as_os_str().as_encoded_bytes());
                    }
                }
                resolver.rescan();
                Some(w)
            }
            Err(e) => {
                log::warn!(
                    "cannot watch for new memcgs ({e}): memcgs removed between two \
                     intervals may have no path"
                );
                None
            }
        };
        let limit_counts = live
            .iter()
            .filter_map(|n| cgroup::limit_hits(&fs, &resolver.path_of(n)).map(|v| (n.id, v)))
            .collect();
        Self {
            states: StateReader::new(&fs),
            carry: StateCarry::new(state_max_age),
            live_memcgs: live.len() as u64,
            last_rescan: Instant::now(),
            limit_counts,
            early: snapshots.then(HashMap::new),
            watch,
            fs,
            resolver,
        }
    }

    pub fn memcg(&mut self, id: u64) -> Memcg {
        build::memcg(&mut self.resolver, id)
    }

    /// Starts a refresh: limits cached longer than their TTL are read again.
    pub fn next_refresh(&mut self) {
        self.states.next_refresh();
    }

    /// A memcg's limit hits since the last interval and its cgroupfs
    /// state, read now or carried (`carry`), for its record of `d` in the
    /// interval ending at `ts_ns`.
    pub fn interval_state(&mut self, m: &Memcg, d: &MemcgDelta, ts_ns: u64) -> IntervalState {
        let (states, hits) = (&mut self.states, &mut self.limit_counts);
        self.carry.interval(states, hits, self.fs.v2, m, d, ts_ns)
    }

    /// Whether the memcg was removed (for evicting its kernel map entries):
    /// a rescan marked it deleted, or no complete rescan after its first
    /// sight ever found it (removed before it could be named).
    pub fn is_deleted(&mut self, id: u64) -> bool {
        let _ = self.resolver.resolve(id);
        self.resolver.gone(id)
    }

    /// Waits for memcgs to be created and names them at once (see
    /// `cgroup::watch`); pends forever without a watch. Cancel-safe.
    pub async fn watch_created(&mut self) {
        let Some(w) = self.watch.as_mut() else {
            return std::future::pending().await;
        };
        match w.created().await {
            Ok(found) => {
                for (id, rel) in found {
                    self.resolver.found(id, &rel);
                    // Named now, while the runtime's state exists: a
                    // container killed soon after is still named.
                    let _ = build::memcg(&mut self.resolver, id);
                }
            }
            Err(e) => {
                log::warn!(
                    "watching for new memcgs failed ({e}); memcgs removed between two \
                     intervals may have no path"
                );
                self.watch = None;
            }
        }
    }

    pub fn forget(&mut self, id: u64) {
        self.limit_counts.remove(&id);
        self.carry.forget(id);
    }

    /// Live memcgs (recounted every RESCAN_EVERY) and dying ones.
    pub fn memcg_counts(&mut self) -> (u64, Option<u64>) {
        if self.last_rescan.elapsed() >= RESCAN_EVERY {
            self.resolver.rescan();
            self.live_memcgs = self.resolver.live().len() as u64;
            if let Some(w) = self.watch.as_mut() {
                let resolver = &self.resolver;
                let n = w.unwatch_gone(|id| resolver.gone(id));
                log::debug!(
                    "{n} watches of removed memcgs dropped, {} held",
                    w.watched()
                );
            }
            self.last_rescan = Instant::now();
            if let Some((cost, cached)) = self.resolver.names_cost() {
                log::debug!(
                    "container names: {} lookups in the runtimes' files, {:?} in all, {cached} cached",
                    cost.lookups,
                    cost.elapsed
                );
            }
        }
        let dying = cgroup::state::dying_memcgs(&self.fs, self.live_memcgs as usize);
        (self.live_memcgs, dying)
    }

    /// The kernel reported a kill: read its memcgs now, before the victim's
    /// memory is freed and before the memcg may be removed.
    pub fn on_kill_event(&mut self, o: &OomEvent, now_ns: u64) {
        // A kill changes the state of the victim's memcg and its ancestors:
        // their next records read it again.
        let ids = chain::levels(&o.chain).iter().map(|l| l.id);
        for id in ids.chain([o.victim_memcg_id, o.oom_memcg_id]) {
            self.carry.forget(id);
        }
        if self.early.is_none() {
            return;
        }
        self.states.next_refresh();
        let mut read = Vec::new();
        let mut focus = None;
        // The limiting memcg as the kernel gave it, else as the chain's
        // page counters tell; both named as the chain's kernfs names say
        // (a memcg created since the last rescan is still named).
        let c = &o.chain;
        let limit_id = if o.flags & OOM_HAS_OOM_MEMCG != 0 {
            o.oom_memcg_id
        } else {
            chain::limiting(c).map_or(0, |i| c.levels[i].id)
        };
        for id in [limit_id, o.victim_memcg_id] {
            let Some(n) = chain::find(c, id)
                .and_then(|i| chain::path(c, i))
                .and_then(|p| self.resolver.learn(id, &p))
                .or_else(|| (id != 0).then(|| self.resolver.resolve_now(id)).flatten())
                .filter(|n| !n.deleted)
            else {
                continue;
            };
            if read.iter().any(|(x, _)| *x == id) {
                continue;
            }
            // Its container named before the runtime removes its state.
            let _ = build::memcg(&mut self.resolver, id);
            focus.get_or_insert_with(|| self.resolver.path_of(&n));
            let mut st = self.states.read(&n.path);
            // The page counter as the kernel read it at the kill: by the
            // time userspace reads memory.usage the OOM reaper may already
            // have freed the victim's memory.
            if let Some(lv) = chain::find(c, id).map(|i| &c.levels[i]) {
                st.usage_bytes = Some(lv.usage_pages.saturating_mul(cgroup::state::page_size()));
            }
            read.push((id, st));
        }
        let early = EarlyRead {
            at_ns: now_ns,
            states: read,
            tasks: focus.map(|d| tasks(&d)),
        };
        if let Some(m) = self.early.as_mut() {
            // Kills the kernel log never confirmed expire.
            m.retain(|_, s| now_ns.saturating_sub(s.at_ns) < SNAPSHOT_TTL_NS);
            m.insert(o.victim_pid, early);
        }
    }

    /// The snapshot of a kill whose record was just built: what was read at
    /// the BPF event, and what that lacks read now.
    pub fn snapshot(&mut self, kill: &OomKill) -> Option<OomSnapshot> {
        let early = self.early.as_mut()?.remove(&kill.victim.pid);
        let early = early.unwrap_or_default();
        let mut snap = OomSnapshot {
            at_ns: early.at_ns,
            ..Default::default()
        };
        self.states.next_refresh();
        snap.limit_state = self.state_of(&kill.oom_memcg, "limiting", &early, &mut snap.notes);
        snap.victim_state = if kill.victim_memcg == kill.oom_memcg {
            snap.limit_state.clone()
        } else {
            self.state_of(&kill.victim_memcg, "victim's", &early, &mut snap.notes)
        };
        // The memcg the story is about: the one whose limit fired, else the victim's.
        let focus = kill.oom_memcg.as_ref().or(kill.victim_memcg.as_ref());
        snap.tasks = early.tasks.or_else(|| {
            focus
                .and_then(readable)
                .map(|p| tasks(&self.fs.root.join(p.trim_start_matches('/'))))
        });
        if snap.at_ns == 0 && !kill.before_start {
            snap.notes.push("state read after the kill was joined with the kernel log (no BPF event to snapshot at): the victim's memory may already be freed".into());
        }
        Some(snap)
    }

    fn state_of(
        &mut self,
        m: &Option<Memcg>,
        what: &str,
        early: &EarlyRead,
        notes: &mut Vec<String>,
    ) -> Option<MemcgState> {
        let m = m.as_ref()?;
        if let Some((_, st)) = early.states.iter().find(|(id, _)| *id == m.id) {
            return Some(st.clone());
        }
        let Some(p) = readable(m) else {
            notes.push(format!(
                "the {what} memcg no longer exists; what the kernel reported is kept"
            ));
            return None;
        };
        let st = self.states.read(p);
        if st.usage_bytes.is_none() {
            notes.push(format!(
                "the {what} memcg was already removed when read; what the kernel reported is kept"
            ));
            return None;
        }
        Some(st)
    }
}

fn readable(m: &Memcg) -> Option<&str> {
    m.path.as_deref().filter(|_| !m.deleted && m.id != 0)
}
