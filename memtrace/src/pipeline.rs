//! The live pipeline: kernel programs and the kernel log in, records out.
//! `stream` writes the records; `top` shows them. `replay` produces the same
//! records from a file, so everything downstream is the same code.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::{
    aggregate::{
        intervals::IntervalAggregator,
        oom::{JoinedOom, OomJoiner},
    },
    cgroup::{
        self, Resolver,
        state::{MemcgState, StateReader},
    },
    clock::Clock,
    host::HostSampler,
    kernel::{
        caps,
        plan::{AttachMode, Family},
    },
    output::{
        build::{self, IntervalContext, Visible},
        records::{FORMAT_VERSION, Header, Memcg, Record, System, TaskRss},
    },
    source::{
        kmsg::{KmsgReader, OomAssembler},
        live::{Live, RawEvent},
        loader::{self, LoadOptions},
    },
};

/// How often pending OOM joins are checked when nothing else happens.
const OOM_TICK: Duration = Duration::from_millis(100);
/// How often the memcg tree is walked to count live memcgs (v1 needs the
/// count to tell dying memcgs; the walk costs ~10 ms per 2000 memcgs).
const RESCAN_EVERY: Duration = Duration::from_secs(10);

/// A memcg's state read the moment the kernel reported an OOM kill, before
/// the victim's memory is freed; `record` builds its post-mortem from it.
#[derive(Clone, Debug, Default)]
pub struct OomSnapshot {
    pub at_ns: u64,
    /// (memcg id, state) of the memcg whose limit fired, when the hook knows it.
    pub limit: Option<(u64, MemcgState)>,
    pub victim: Option<(u64, MemcgState)>,
    pub tasks: Option<Vec<TaskRss>>,
}

pub struct LivePipeline {
    clock: Clock,
    fs: cgroup::MemcgFs,
    resolver: Resolver,
    states: StateReader,
    host: HostSampler,
    live: Live,
    agg: IntervalAggregator,
    visible: Visible,
    joiner: OomJoiner,
    kmsg: Option<KmsgReader>,
    assembler: OomAssembler,
    header: Header,
    /// Last cgroupfs limit-hit counter per memcg, for deltas.
    limit_counts: HashMap<u64, u64>,
    evictions: u64,
    last_interval_ns: u64,
    live_memcgs: u64,
    last_rescan: Instant,
    memcg_capacity: usize,
    shrinker_capacity: usize,
    interval: Option<tokio::time::Interval>,
    oom_tick: tokio::time::Interval,
    /// With `snapshot_ooms`: snapshots by victim pid, until taken.
    oom_snapshots: Option<HashMap<u32, OomSnapshot>>,
}

/// Limit-hit counters of every memcg that exists now, so the first interval
/// a memcg shows up in has a true delta.
fn limit_baseline(fs: &cgroup::MemcgFs, resolver: &mut Resolver) -> HashMap<u64, u64> {
    resolver.rescan();
    resolver
        .live()
        .into_iter()
        .filter_map(|n| cgroup::limit_hits(fs, &resolver.path_of(&n)).map(|v| (n.id, v)))
        .collect()
}

fn attach_mode_name(mode: AttachMode) -> &'static str {
    match mode {
        AttachMode::Auto => "auto",
        AttachMode::Fentry => "fentry",
        AttachMode::Kprobe => "kprobe",
        AttachMode::Tracepoint => "tracepoint",
    }
}

impl LivePipeline {
    /// Loads and attaches the programs. `interval`: emit `memcg_interval`
    /// and `system` records that often (none without it).
    pub fn start(opts: &LoadOptions, interval: Option<Duration>) -> Result<Self> {
        let clock = Clock::new();
        let fs = cgroup::detect()?;
        let mut resolver = Resolver::new(&fs);
        let limit_counts = limit_baseline(&fs, &mut resolver);
        let live_memcgs = resolver.live().len() as u64;
        let loaded = loader::load(opts, false)?;
        let unavailable = loaded.unavailable_fields();
        let oom_family = loaded.family_of("oom_kill_process");
        let kmsg = match KmsgReader::open() {
            Ok(k) => Some(k),
            Err(e) => {
                log::warn!(
                    "cannot read /dev/kmsg ({e}): OOM records lose the limiting memcg and rss, \
                     and past kills are not reported"
                );
                None
            }
        };
        let ts_ns = clock.now_ns();
        let header = Header {
            ts: clock.rfc3339(ts_ns),
            ts_ns,
            format_version: FORMAT_VERSION,
            memtrace_version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: caps::hostname(),
            kernel_release: caps::kernel_release(),
            cgroup_mode: fs.mode.to_string(),
            attach_mode: attach_mode_name(opts.mode).to_string(),
            interval_ms: interval.map(|d| d.as_millis() as u64),
            plan: loaded
                .plan
                .iter()
                .map(|p| serde_json::to_value(p).expect("plan serializes"))
                .collect(),
            unavailable: unavailable.iter().map(|s| s.to_string()).collect(),
            kmsg: kmsg.is_some(),
        };
        let joiner = OomJoiner::new(
            kmsg.is_some(),
            matches!(oom_family, Some(Family::Fentry | Family::Kprobe)),
            matches!(oom_family, Some(Family::TpBtf | Family::Tracepoint)),
        );
        let interval = interval.map(|period| {
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        Ok(Self {
            states: StateReader::new(&fs),
            host: HostSampler::new(),
            live: Live::new(loaded)?,
            agg: IntervalAggregator::default(),
            visible: Visible::new(&unavailable),
            joiner,
            kmsg,
            assembler: OomAssembler::new(),
            header,
            limit_counts,
            evictions: 0,
            last_interval_ns: ts_ns,
            live_memcgs,
            last_rescan: Instant::now(),
            memcg_capacity: opts.maps.memcg_entries as usize,
            shrinker_capacity: opts.maps.shrinker_entries as usize,
            interval,
            oom_tick: tokio::time::interval(OOM_TICK),
            oom_snapshots: None,
            clock,
            fs,
            resolver,
        })
    }

    /// Read each OOM-killed memcg's state as soon as the kernel reports
    /// the kill (`take_oom_snapshot` hands it over).
    pub fn snapshot_ooms(&mut self) {
        self.oom_snapshots = Some(HashMap::new());
    }

    pub fn take_oom_snapshot(&mut self, pid: u32) -> Option<OomSnapshot> {
        self.oom_snapshots.as_mut()?.remove(&pid)
    }

    fn snapshot(&mut self, o: &memtrace_common::OomEvent) {
        if self.oom_snapshots.is_none() {
            return;
        }
        self.states.next_refresh();
        let now = self.clock.now_ns();
        let mut read = |id: u64| -> Option<(u64, MemcgState, String)> {
            let n = self.resolver.resolve(id).filter(|n| !n.deleted)?;
            Some((id, self.states.read(&n.path), n.path))
        };
        let limit = (o.oom_memcg_id != 0)
            .then(|| read(o.oom_memcg_id))
            .flatten();
        let victim = (o.victim_memcg_id != 0)
            .then(|| read(o.victim_memcg_id))
            .flatten();
        let focus = limit
            .as_ref()
            .or(victim.as_ref())
            .map(|(_, _, p)| self.fs.root.join(p.trim_start_matches('/')));
        let snap = OomSnapshot {
            at_ns: now,
            tasks: focus.map(|d| cgroup::tasks::tasks(&d)),
            limit: limit.map(|(id, st, _)| (id, st)),
            victim: victim.map(|(id, st, _)| (id, st)),
        };
        if let Some(m) = self.oom_snapshots.as_mut() {
            // Untaken snapshots (kills that were not confirmed) expire.
            m.retain(|_, s| now.saturating_sub(s.at_ns) < 60_000_000_000);
            m.insert(o.victim_pid, snap);
        }
    }

    pub fn header(&self) -> Record {
        Record::Header(self.header.clone())
    }

    /// Kills still in the kernel log: they happened before we started.
    pub fn backlog(&mut self) -> Vec<Record> {
        let Some(k) = self.kmsg.as_mut() else {
            return Vec::new();
        };
        let mut asm = OomAssembler::new();
        let mut out = Vec::new();
        for rec in k.read_backlog() {
            if let Some(report) = asm.push(&rec) {
                let j = JoinedOom {
                    kmsg: Some(report),
                    before_start: true,
                    ..Default::default()
                };
                out.push(build::oom(&j, &mut self.resolver, &self.clock).into());
            }
        }
        out
    }

    /// Waits for the next thing to report and returns its records (maybe
    /// none). Cancel-safe: nothing is lost when the future is dropped.
    pub async fn next(&mut self) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        let kmsg_ok = self.kmsg.is_some();
        let has_interval = self.interval.is_some();
        tokio::select! {
            guard = self.live.ring.readable_mut() => {
                let mut guard = guard.context("polling the ring buffer")?;
                guard.clear_ready();
                drop(guard);
                let events = self.live.drain_ring();
                self.on_ring(events, &mut out);
            }
            rec = async { self.kmsg.as_mut().expect("guarded by kmsg_ok").next().await }, if kmsg_ok => {
                match rec {
                    Ok(rec) => {
                        if let Some(report) = self.assembler.push(&rec) {
                            self.joiner.on_kmsg(report, Instant::now());
                        }
                    }
                    Err(e) => {
                        log::warn!("reading /dev/kmsg failed ({e}); continuing without the kernel log");
                        self.kmsg = None;
                    }
                }
            }
            _ = self.oom_tick.tick() => {}
            _ = async { self.interval.as_mut().expect("guarded by has_interval").tick().await }, if has_interval => {
                self.interval_records(&mut out);
            }
        }
        self.oom_ready(Instant::now(), &mut out);
        Ok(out)
    }

    /// At exit: events still in the ring, joins still pending, the partial
    /// last interval (or, without intervals, the final counters).
    pub fn finish(&mut self) -> Vec<Record> {
        let mut out = Vec::new();
        let events = self.live.drain_ring();
        self.on_ring(events, &mut out);
        for j in self.joiner.flush() {
            out.push(build::oom(&j, &mut self.resolver, &self.clock).into());
        }
        if self.interval.is_some() {
            self.interval_records(&mut out);
        } else {
            let memcgs = self.live.memcg_totals().len();
            let shrinkers = self.live.shrinker_totals().len();
            let since_start = self.clock.now_ns().saturating_sub(self.header.ts_ns);
            out.push(Record::System(self.system(since_start, memcgs, shrinkers)));
        }
        out
    }

    fn oom_ready(&mut self, now: Instant, out: &mut Vec<Record>) {
        for j in self.joiner.poll(now) {
            out.push(build::oom(&j, &mut self.resolver, &self.clock).into());
        }
    }

    fn on_ring(&mut self, events: Vec<RawEvent>, out: &mut Vec<Record>) {
        let now = Instant::now();
        for e in events {
            match e {
                RawEvent::Oom(o) => {
                    self.snapshot(&o);
                    self.joiner.on_bpf(o, now)
                }
                RawEvent::Slow(s) => out.push(build::slow(&s, &mut self.resolver, &self.clock)),
            }
        }
        self.oom_ready(now, out);
    }

    fn limit_hits(&mut self, id: u64, memcg: &Memcg) -> Option<u64> {
        let path = memcg.path.as_ref().filter(|_| !memcg.deleted)?;
        let name = cgroup::MemcgName {
            id,
            path: path.clone(),
            deleted: false,
        };
        let now = cgroup::limit_hits(&self.fs, &self.resolver.path_of(&name))?;
        // Memcgs that existed at start have a baseline; any other was created
        // since, and its counter started at 0.
        let prev = self.limit_counts.insert(id, now).unwrap_or(0);
        Some(now.saturating_sub(prev))
    }

    fn interval_records(&mut self, out: &mut Vec<Record>) {
        let ts_ns = self.clock.now_ns();
        let interval_ns = ts_ns.saturating_sub(self.last_interval_ns);
        self.last_interval_ns = ts_ns;
        let memcgs = self.live.memcg_totals();
        let shrinkers = self.live.shrinker_totals();
        let deltas = self.agg.advance(&memcgs, &shrinkers);
        let shrinker_names = self.live.shrinker_names(&shrinkers);
        self.states.next_refresh();
        for d in &deltas {
            let memcg = build::memcg(&mut self.resolver, d.id);
            let hits = self.limit_hits(d.id, &memcg);
            let state = memcg
                .path
                .as_deref()
                .filter(|_| !memcg.deleted)
                .map(|p| self.states.read(p));
            let cx = IntervalContext {
                clock: &self.clock,
                ts_ns,
                interval_ns,
                visible: &self.visible,
                kallsyms: &self.live.loaded.kallsyms,
                shrinker_names: &shrinker_names,
            };
            let mut rec = build::interval(d, memcg, hits, &cx);
            rec.state = state;
            out.push(rec.into());
        }
        let resolver = std::cell::RefCell::new(&mut self.resolver);
        let ev = self.agg.evict(
            |id| resolver.borrow_mut().resolve(id).is_some_and(|n| n.deleted),
            self.memcg_capacity,
            self.shrinker_capacity,
        );
        for id in &ev.memcgs {
            self.live.remove_memcg(*id);
            self.limit_counts.remove(id);
        }
        for k in &ev.shrinkers {
            self.live.remove_shrinker(k);
        }
        self.evictions += (ev.memcgs.len() + ev.shrinkers.len()) as u64;
        out.push(Record::System(self.system(
            interval_ns,
            memcgs.len(),
            shrinkers.len(),
        )));
    }

    fn system(
        &mut self,
        interval_ns: u64,
        memcg_entries: usize,
        shrinker_entries: usize,
    ) -> System {
        if self.last_rescan.elapsed() >= RESCAN_EVERY {
            self.resolver.rescan();
            self.live_memcgs = self.resolver.live().len() as u64;
            self.last_rescan = Instant::now();
        }
        let host = self.host.sample();
        let s = self.live.system_totals();
        let ts_ns = self.clock.now_ns();
        let kswapd = self.live.loaded.family_of("kswapd").is_some();
        System {
            ts: self.clock.rfc3339(ts_ns),
            ts_ns,
            interval_ns,
            sys_pct: host.sys_pct,
            max_cpu_sys_pct: host.max_cpu_sys_pct,
            max_cpu: host.max_cpu,
            iowait_pct: host.iowait_pct,
            kswapd_cpu_pct: host.kswapd_cpu_pct,
            dying_memcgs: cgroup::state::dying_memcgs(&self.fs, self.live_memcgs as usize),
            live_memcgs: self.live_memcgs,
            kswapd_wakes: kswapd.then_some(s.kswapd_wakes),
            kswapd_ns: kswapd.then_some(s.kswapd_ns),
            ringbuf_drops: s.ringbuf_drops,
            memcg_map_full: s.memcg_map_full,
            shrinker_map_full: s.shrinker_map_full,
            inflight_map_full: s.inflight_map_full,
            unmatched_returns: s.unmatched_returns,
            missed_returns: s.missed_returns,
            map_evictions: self.evictions,
            prog_recursion_misses: self.live.recursion_misses(),
            memcg_entries: memcg_entries as u64,
            shrinker_entries: shrinker_entries as u64,
        }
    }
}
