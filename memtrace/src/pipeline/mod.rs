//! The live pipeline, one way through its stages (docs/architecture.md):
//!
//! sources (kernel counters and ring buffer: `source::live`; the kernel
//! log: `source::kmsg`; the host sampler: `host`) → joining and interval
//! deltas (`aggregate`) → enrichment (memcg id → path → container,
//! cgroupfs state, OOM snapshots: `enrich`) → typed records
//! (`output::build`) → [`Output`]s for the sinks (`stream`, `top`,
//! `record`). `replay` produces the same records from a file, so
//! everything after the source is the same code.
mod carry;
mod enrich;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use enrich::Enricher;
pub use enrich::OomSnapshot;

use crate::{
    aggregate::{
        intervals::IntervalAggregator,
        oom::{JoinedOom, OomJoiner},
    },
    cgroup,
    clock::Clock,
    host::HostSampler,
    kernel::{
        caps,
        plan::{AttachMode, Family},
    },
    output::{
        build::{self, AgentCounts, IntervalContext},
        fields::Unseen,
        records::{FORMAT_VERSION, Header, Record, System, TimeSample},
    },
    source::{
        kmsg::{KmsgReader, OomAssembler},
        live::{Live, RawEvent},
        loader::{self, LoadOptions},
    },
};

/// How often pending OOM joins are checked when nothing else happens.
const OOM_TICK: Duration = Duration::from_millis(100);

/// What the pipeline hands its sinks: a record and, for an OOM kill when
/// snapshots were asked for, the state of its memcgs read as the kernel
/// reported it. Sinks get everything they need here; none reaches back.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub record: Record,
    pub oom: Option<Box<OomSnapshot>>,
}

impl From<Record> for Output {
    fn from(record: Record) -> Self {
        Output { record, oom: None }
    }
}

/// What the sinks want from the pipeline.
#[derive(Clone, Debug, Default)]
pub struct PipelineOptions {
    /// Emit `memcg_interval` and `system` records this often (none without).
    pub interval: Option<Duration>,
    /// Read each OOM-killed memcg's state and tasks at the kill.
    pub oom_snapshots: bool,
    /// Where the runtimes' state files are, to name containers.
    pub roots: cgroup::runtime::Roots,
    /// How old the carried state of a memcg only scanned by shrinkers may
    /// get (`carry`, `--state-max-age`); zero reads every state every
    /// interval (`top`, which shows state without its age).
    pub state_max_age: Duration,
}

pub struct LivePipeline {
    clock: Clock,
    header: Header,
    unseen: Unseen,
    // Sources.
    live: Live,
    kmsg: Option<KmsgReader>,
    assembler: OomAssembler,
    host: HostSampler,
    // Joining and deltas.
    joiner: OomJoiner,
    agg: IntervalAggregator,
    // Enrichment.
    enrich: Enricher,
    // Timing and bookkeeping.
    interval: Option<tokio::time::Interval>,
    oom_tick: tokio::time::Interval,
    last_interval_ns: u64,
    evictions: u64,
    memcg_capacity: usize,
    shrinker_capacity: usize,
    /// `memcg_interval` records the last interval produced.
    last_records: usize,
}

/// After an interval with more records than this, freed heap memory is
/// given back before the next (see `interval_records`).
const TRIM_AFTER_RECORDS: usize = 64;

fn attach_mode_name(mode: AttachMode) -> &'static str {
    match mode {
        AttachMode::Auto => "auto",
        AttachMode::Fentry => "fentry",
        AttachMode::Kprobe => "kprobe",
        AttachMode::Tracepoint => "tracepoint",
    }
}

impl LivePipeline {
    /// Loads and attaches the programs.
    pub fn start(opts: &LoadOptions, popts: PipelineOptions) -> Result<Self> {
        let clock = Clock::new();
        let fs = cgroup::detect()?;
        log::debug!("container runtimes' state read below {:?}", popts.roots);
        let enrich = Enricher::new(
            fs,
            popts.oom_snapshots,
            popts.roots.clone(),
            popts.state_max_age,
        );
        let loaded = loader::load(opts, false)?;
        let unseen = loaded.unavailable_fields();
        let oom_family = loaded.family_of("oom_kill_process");
        let (kmsg, kmsg_error) = match KmsgReader::open() {
            Ok(k) => (Some(k), None),
            Err(e) => (None, Some(e)),
        };
        let degraded =
            caps::degraded_sources(kmsg_error.as_ref(), &loaded.kallsyms, Some(&enrich.fs.root));
        for d in &degraded {
            log::warn!("{} degraded ({}): {}", d.source, d.reason, d.loses);
        }
        let ts_ns = clock.now_ns();
        let header = Header {
            ts: clock.rfc3339(ts_ns),
            ts_ns,
            format_version: FORMAT_VERSION,
            memtrace_version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: caps::hostname(),
            kernel_release: caps::kernel_release(),
            cgroup_mode: enrich.fs.mode.to_string(),
            attach_mode: attach_mode_name(opts.mode).to_string(),
            interval_ms: popts.interval.map(|d| d.as_millis() as u64),
            shrinker_time_sample: TimeSample(loaded.shrinker_time_sample),
            plan: loaded.plan.clone(),
            unavailable: unseen.clone(),
            kmsg: kmsg.is_some(),
            degraded,
        };
        let joiner = OomJoiner::new(
            kmsg.is_some(),
            matches!(oom_family, Some(Family::Fentry | Family::Kprobe)),
            matches!(oom_family, Some(Family::TpBtf | Family::Tracepoint)),
        );
        let interval = popts.interval.map(|period| {
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        Ok(Self {
            live: Live::new(loaded)?,
            kmsg,
            assembler: OomAssembler::new(),
            host: HostSampler::new(),
            joiner,
            agg: IntervalAggregator::default(),
            enrich,
            interval,
            oom_tick: tokio::time::interval(OOM_TICK),
            last_interval_ns: ts_ns,
            evictions: 0,
            memcg_capacity: opts.maps.memcg_entries as usize,
            shrinker_capacity: opts.maps.shrinker_entries as usize,
            last_records: 0,
            header,
            unseen,
            clock,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Kills still in the kernel log: they happened before we started.
    pub fn backlog(&mut self) -> Vec<Output> {
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
                out.push(self.oom_output(&j));
            }
        }
        out
    }

    /// Waits for the next thing to report and returns its outputs (maybe
    /// none). Cancel-safe: nothing is lost when the future is dropped.
    pub async fn next(&mut self) -> Result<Vec<Output>> {
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
            // Names new memcgs before they can be removed again.
            _ = self.enrich.watch_created() => {}
            _ = async { self.interval.as_mut().expect("guarded by has_interval").tick().await }, if has_interval => {
                self.interval_records(&mut out);
            }
        }
        self.oom_ready(Instant::now(), &mut out);
        Ok(out)
    }

    /// At exit: events still in the ring, joins still pending, the partial
    /// last interval (or, without intervals, the final counters).
    pub fn finish(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        let events = self.live.drain_ring();
        self.on_ring(events, &mut out);
        for j in self.joiner.flush() {
            out.push(self.oom_output(&j));
        }
        if self.interval.is_some() {
            self.interval_records(&mut out);
        } else {
            let memcgs = self.live.memcg_totals().len();
            let shrinkers = self.live.shrinker_totals().len();
            let since_start = self.clock.now_ns().saturating_sub(self.header.ts_ns);
            out.push(Record::System(self.system(since_start, memcgs, shrinkers)).into());
        }
        out
    }

    fn oom_output(&mut self, j: &JoinedOom) -> Output {
        let kill = build::oom(j, &mut self.enrich.resolver, &self.clock, &self.unseen);
        let oom = self.enrich.snapshot(&kill).map(Box::new);
        Output {
            record: kill.into(),
            oom,
        }
    }

    fn oom_ready(&mut self, now: Instant, out: &mut Vec<Output>) {
        let kmsg = &self.kmsg;
        let mut caught_up = || kmsg.as_ref().is_none_or(|k| k.caught_up());
        for j in self.joiner.poll(now, &mut caught_up) {
            out.push(self.oom_output(&j));
        }
    }

    fn on_ring(&mut self, events: Vec<RawEvent>, out: &mut Vec<Output>) {
        let now = Instant::now();
        for e in events {
            match e {
                RawEvent::Oom(o) => {
                    self.enrich.on_kill_event(&o, self.clock.now_ns());
                    self.joiner.on_bpf(*o, now)
                }
                RawEvent::Slow(s) => {
                    let memcg = self.enrich.memcg(s.memcg_id);
                    out.push(build::slow(&s, memcg, &self.clock).into())
                }
            }
        }
        self.oom_ready(now, out);
    }

    fn interval_records(&mut self, out: &mut Vec<Output>) {
        if self.last_records > TRIM_AFTER_RECORDS {
            // The last interval's records (a storm's 2000 memcgs: ~5 MB in
            // small allocations) were written and freed since, interleaved
            // with what lives on (names, caches); malloc keeps such holes
            // resident. Hand them back so the resident set stays that of
            // the agent's state, not of its busiest interval.
            // SAFETY: malloc_trim only returns free heap pages to the
            // kernel; it takes no pointers and is safe at any time.
            unsafe { libc::malloc_trim(0) };
        }
        let ts_ns = self.clock.now_ns();
        let interval_ns = ts_ns.saturating_sub(self.last_interval_ns);
        self.last_interval_ns = ts_ns;
        let memcgs = self.live.memcg_totals();
        let shrinkers = self.live.shrinker_totals();
        let deltas = self.agg.advance(&memcgs, &shrinkers);
        let shrinker_names = self.live.shrinker_names(&shrinkers);
        self.enrich.next_refresh();
        self.enrich.carry.next_interval(ts_ns);
        // The shrinker rows name up to 10 callbacks per memcg.
        self.live.symbols.learn(
            deltas
                .iter()
                .flat_map(|d| d.shrinkers.iter().take(10).map(|(_, s)| s.count_objects)),
        );
        let cx = IntervalContext {
            clock: &self.clock,
            ts_ns,
            interval_ns,
            unseen: &self.unseen,
            kallsyms: self.live.symbols.table(),
            shrinker_names: &shrinker_names,
        };
        self.last_records = deltas.len();
        let (batch_calls, key_by_key) = self.live.batch_counts();
        log::debug!(
            "interval: {} active memcgs; map reads so far: {batch_calls} batched bpf() calls, \
             {key_by_key} key by key",
            deltas.len()
        );
        for d in &deltas {
            let memcg = self.enrich.memcg(d.id);
            let st = self.enrich.interval_state(&memcg, d, ts_ns);
            let mut rec = build::interval(d, memcg, st.limit_hits, &cx);
            (rec.state, rec.state_age_ns) = (st.state, st.state_age_ns);
            out.push(Record::from(rec).into());
        }
        let enrich = &mut self.enrich;
        let ev = self.agg.evict(
            |id| enrich.is_deleted(id),
            self.memcg_capacity,
            self.shrinker_capacity,
        );
        for id in &ev.memcgs {
            self.live.remove_memcg(*id);
            self.enrich.forget(*id);
        }
        for k in &ev.shrinkers {
            self.live.remove_shrinker(k);
        }
        self.evictions += (ev.memcgs.len() + ev.shrinkers.len()) as u64;
        let system = self.system(interval_ns, memcgs.len(), shrinkers.len());
        out.push(Record::System(system).into());
    }

    fn system(
        &mut self,
        interval_ns: u64,
        memcg_entries: usize,
        shrinker_entries: usize,
    ) -> System {
        let (live_memcgs, dying_memcgs) = self.enrich.memcg_counts();
        let agent = AgentCounts {
            ts_ns: self.clock.now_ns(),
            interval_ns,
            live_memcgs,
            dying_memcgs,
            map_evictions: self.evictions,
            prog_recursion_misses: self.live.recursion_misses(),
            memcg_entries: memcg_entries as u64,
            shrinker_entries: shrinker_entries as u64,
        };
        let host = self.host.sample();
        let kernel = self.live.system_totals();
        build::system(&self.clock, &host, &kernel, &self.unseen, agent)
    }
}
