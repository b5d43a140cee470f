//! `memtrace stream`: the live pipeline to NDJSON.
use std::{
    collections::HashMap,
    io,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    aggregate::{intervals::IntervalAggregator, oom::OomJoiner},
    cgroup::{self, Resolver},
    cli::StreamArgs,
    clock::Clock,
    kernel::{caps, plan::Family},
    output::{
        build::{self, IntervalContext, Visible},
        records::{FORMAT_VERSION, Header, Stats},
        writer::NdjsonWriter,
    },
    source::{
        kmsg::{KmsgReader, OomAssembler},
        live::{Live, RawEvent},
        loader,
    },
};

/// How often pending OOM joins are checked when nothing else happens.
const OOM_TICK: Duration = Duration::from_millis(100);

/// Stops the stream quietly when the reader went away (`| head`).
fn write_ok(r: io::Result<()>) -> Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing output"),
    }
}

struct Pipeline {
    clock: Clock,
    fs: cgroup::MemcgFs,
    resolver: Resolver,
    out: NdjsonWriter,
    live: Live,
    agg: IntervalAggregator,
    visible: Visible,
    joiner: OomJoiner,
    /// Last cgroupfs limit-hit counter per memcg, for deltas.
    limit_counts: HashMap<u64, u64>,
    evictions: u64,
    last_interval_ns: u64,
    memcg_capacity: usize,
    shrinker_capacity: usize,
}

impl Pipeline {
    fn write_oom_ready(&mut self, now: Instant) -> Result<bool> {
        for j in self.joiner.poll(now) {
            log::debug!("OOM kill joined: {j:?}");
            let rec = build::oom(&j, &mut self.resolver, &self.clock);
            if !write_ok(self.out.write(&rec))? {
                return Ok(false);
            }
            // A kill is what an operator keeps a stream for: make it durable.
            self.out.sync()?;
        }
        Ok(true)
    }

    fn on_ring(&mut self, events: Vec<RawEvent>) -> Result<bool> {
        let now = Instant::now();
        for e in events {
            match e {
                RawEvent::Oom(o) => {
                    log::debug!("BPF OOM event: {o:?}");
                    self.joiner.on_bpf(o, now)
                }
                RawEvent::Slow(s) => {
                    let rec = build::slow(&s, &mut self.resolver, &self.clock);
                    if !write_ok(self.out.write(&rec))? {
                        return Ok(false);
                    }
                }
            }
        }
        self.write_oom_ready(now)
    }

    fn limit_hits(&mut self, id: u64, memcg: &crate::output::records::Memcg) -> Option<u64> {
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

    fn interval(&mut self) -> Result<bool> {
        let ts_ns = self.clock.now_ns();
        let interval_ns = ts_ns.saturating_sub(self.last_interval_ns);
        self.last_interval_ns = ts_ns;
        let memcgs = self.live.memcg_totals();
        let shrinkers = self.live.shrinker_totals();
        let deltas = self.agg.advance(&memcgs, &shrinkers);
        let mut records = Vec::with_capacity(deltas.len());
        for d in &deltas {
            let memcg = build::memcg(&mut self.resolver, d.id);
            let hits = self.limit_hits(d.id, &memcg);
            let kallsyms = &self.live.loaded.kallsyms;
            let cx = IntervalContext {
                clock: &self.clock,
                ts_ns,
                interval_ns,
                visible: &self.visible,
                kallsyms,
            };
            records.push(build::interval(d, memcg, hits, &cx));
        }
        for r in &records {
            if !write_ok(self.out.write(r))? {
                return Ok(false);
            }
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
        let stats = self.stats(memcgs.len(), shrinkers.len());
        write_ok(self.out.write(&stats))
    }

    fn stats(&self, memcg_entries: usize, shrinker_entries: usize) -> Stats {
        let s = self.live.system_totals();
        let ts_ns = self.clock.now_ns();
        let kswapd = self.live.loaded.family_of("kswapd").is_some();
        Stats {
            kind: "stats",
            ts: self.clock.rfc3339(ts_ns),
            ts_ns,
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

pub async fn run(args: StreamArgs) -> Result<()> {
    // First, so a SIGTERM during start-up still ends in a clean exit.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let opts = args.probe.load_options()?;
    // Open the output first: a bad path should fail before any probing.
    let out = match &args.output {
        Some(p) => NdjsonWriter::create(p)?,
        None => NdjsonWriter::stdout(),
    };
    let clock = Clock::new();
    let fs = cgroup::detect()?;
    let mut resolver = Resolver::new(&fs);
    let limit_counts = limit_baseline(&fs, &mut resolver);
    let loaded = loader::load(&opts, false)?;
    let unavailable = loaded.unavailable_fields();
    let oom_family = loaded.family_of("oom_kill_process");
    let mut kmsg = match KmsgReader::open() {
        Ok(k) => Some(k),
        Err(e) => {
            log::warn!(
                "cannot read /dev/kmsg ({e}): OOM records lose the limiting memcg and rss, and past kills are not reported"
            );
            None
        }
    };
    let header_ts = clock.now_ns();
    let header = Header {
        kind: "header",
        ts: clock.rfc3339(header_ts),
        ts_ns: header_ts,
        format_version: FORMAT_VERSION,
        memtrace_version: env!("CARGO_PKG_VERSION"),
        hostname: caps::hostname(),
        kernel_release: caps::kernel_release(),
        cgroup_mode: fs.mode.to_string(),
        attach_mode: match opts.mode {
            crate::kernel::plan::AttachMode::Auto => "auto",
            crate::kernel::plan::AttachMode::Fentry => "fentry",
            crate::kernel::plan::AttachMode::Kprobe => "kprobe",
            crate::kernel::plan::AttachMode::Tracepoint => "tracepoint",
        },
        interval_ms: args.interval.map(|d| d.as_millis() as u64),
        plan: loaded.plan.clone(),
        unavailable: unavailable.clone(),
        kmsg: kmsg.is_some(),
    };
    let memcg_capacity = opts.maps.memcg_entries as usize;
    let shrinker_capacity = opts.maps.shrinker_entries as usize;
    let live = Live::new(loaded)?;
    let mut p = Pipeline {
        clock,
        fs,
        resolver,
        out,
        live,
        agg: IntervalAggregator::default(),
        visible: Visible::new(&unavailable),
        joiner: OomJoiner::new(
            kmsg.is_some(),
            matches!(oom_family, Some(Family::Fentry | Family::Kprobe)),
            matches!(oom_family, Some(Family::TpBtf | Family::Tracepoint)),
        ),
        limit_counts,
        evictions: 0,
        last_interval_ns: header_ts,
        memcg_capacity,
        shrinker_capacity,
    };
    if !write_ok(p.out.write(&header))? {
        return Ok(());
    }

    // Kills already in the kernel log happened before we started.
    if let Some(k) = kmsg.as_mut() {
        let mut asm = OomAssembler::new();
        for rec in k.read_backlog() {
            if let Some(report) = asm.push(&rec) {
                let j = crate::aggregate::oom::JoinedOom {
                    kmsg: Some(report),
                    before_start: true,
                    ..Default::default()
                };
                let r = build::oom(&j, &mut p.resolver, &p.clock);
                if !write_ok(p.out.write(&r))? {
                    return Ok(());
                }
            }
        }
    }
    let mut assembler = OomAssembler::new();

    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let sleep_until_deadline = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep_until_deadline);
    let period = args.interval.unwrap_or(Duration::from_secs(3600));
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut oom_tick = tokio::time::interval(OOM_TICK);
    let mut kmsg_ok = kmsg.is_some();

    loop {
        let keep_going = tokio::select! {
            guard = p.live.ring.readable_mut() => {
                let mut guard = guard.context("polling the ring buffer")?;
                guard.clear_ready();
                drop(guard);
                let events = p.live.drain_ring();
                log::debug!("ring: {} events", events.len());
                p.on_ring(events)?
            }
            rec = async { kmsg.as_mut().expect("guarded by kmsg_ok").next().await }, if kmsg_ok => {
                match rec {
                    Ok(rec) => {
                        log::debug!("kmsg record {}: {}", rec.seq, rec.message);
                        if let Some(report) = assembler.push(&rec) {
                            log::debug!("kmsg OOM report for pid {}", report.pid);
                            p.joiner.on_kmsg(report, Instant::now());
                        }
                        p.write_oom_ready(Instant::now())?
                    }
                    Err(e) => {
                        log::warn!("reading /dev/kmsg failed ({e}); continuing without the kernel log");
                        kmsg_ok = false;
                        true
                    }
                }
            }
            _ = oom_tick.tick() => p.write_oom_ready(Instant::now())?,
            _ = interval.tick(), if args.interval.is_some() => p.interval()?,
            _ = sigint.recv() => false,
            _ = sigterm.recv() => false,
            _ = &mut sleep_until_deadline => false,
        };
        if !keep_going {
            break;
        }
    }

    // Flush: events still in the ring, joins still pending, the partial
    // last interval, and final counters.
    let events = p.live.drain_ring();
    if p.on_ring(events)? {
        let pending = p.joiner.flush();
        for j in pending {
            let rec = build::oom(&j, &mut p.resolver, &p.clock);
            if !write_ok(p.out.write(&rec))? {
                break;
            }
        }
        if args.interval.is_some() {
            p.interval()?;
        } else {
            let s = p.stats(p.live.memcg_totals().len(), p.live.shrinker_totals().len());
            write_ok(p.out.write(&s))?;
        }
    }
    let _ = p.out.sync();
    Ok(())
}
