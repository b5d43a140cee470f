//! Building records from what the sources produced: memcg ids resolved to
//! paths, kernel comms decoded, and fields the plan cannot see left null.
use memtrace_common::{
    OOM_HAS_OOM_MEMCG, OOM_HAS_TOTALPAGES, OOM_HAS_VICTIM_TASK, OomChain, SLOW_CHARGE,
    SLOW_RECLAIM_DIRECT, ShrinkerKey, ShrinkerStats, SlowEvent, SystemStats,
};

use super::{
    escape::comm,
    fields::{Field, Unseen},
    records::*,
};
use crate::{
    aggregate::{
        chain::{self, Whose},
        counters::percentile,
        intervals::MemcgDelta,
        oom::JoinedOom,
    },
    cgroup::{Resolver, container::attribute},
    clock::Clock,
    host::HostSample,
    kernel::symbols::Kallsyms,
    source::live::ShrinkerNames,
};

/// A memcg as records name it; the container comes from its path.
pub(crate) fn named(id: u64, path: Option<String>, deleted: bool) -> Memcg {
    let container = path.as_deref().map(attribute);
    Memcg {
        id,
        path,
        deleted,
        container,
    }
}

/// `named`, with what the runtimes' state files add to the container.
fn identified(resolver: &mut Resolver, id: u64, path: Option<String>, deleted: bool) -> Memcg {
    let mut m = named(id, path, deleted);
    if let Some(c) = m.container.as_mut() {
        resolver.name_container(id, c);
    }
    m
}

pub fn memcg(resolver: &mut Resolver, id: u64) -> Memcg {
    if id == 0 {
        return named(id, None, false);
    }
    match resolver.resolve(id) {
        Some(n) => identified(resolver, id, Some(n.path), n.deleted),
        None => named(id, None, false),
    }
}

/// Text from the kernel log, which escapes control bytes as `\xNN`, back
/// to the bytes the kernel had (records escape them again, uniformly).
fn kmsg_text(escaped: &str) -> String {
    String::from_utf8_lossy(&crate::source::kmsg::unescape(escaped)).into_owned()
}

/// A memcg named by the kernel log; its id if it still exists, or if the
/// kernel's chain read at the kill has a memcg at that path.
fn memcg_by_path(resolver: &mut Resolver, escaped: &str, chain: Option<&OomChain>) -> Memcg {
    let path = kmsg_text(escaped);
    let canonical = crate::cgroup::path::canonical(&path);
    let in_chain = chain.and_then(|c| {
        (0..chain::levels(c).len())
            .find(|&i| chain::path(c, i).as_deref() == Some(&*canonical))
            .and_then(|i| memcg_in_chain(resolver, c, i))
    });
    if let Some(m) = in_chain {
        return m;
    }
    match resolver.resolve_path(&path) {
        Some(n) => identified(resolver, n.id, Some(n.path), n.deleted),
        None => identified(resolver, 0, Some(path), true),
    }
}

/// Level `i` of an OOM event's chain, named by the path the kernel read
/// (None when the chain gives no whole path for it).
fn memcg_in_chain(resolver: &mut Resolver, c: &OomChain, i: usize) -> Option<Memcg> {
    let id = c.levels[i].id;
    let n = resolver.learn(id, &chain::path(c, i)?)?;
    Some(identified(resolver, id, Some(n.path), n.deleted))
}

/// A memcg an OOM kill names by id, looked up now whatever the rescan
/// rate limit.
fn memcg_now(resolver: &mut Resolver, id: u64) -> Memcg {
    match (id != 0).then(|| resolver.resolve_now(id)).flatten() {
        Some(n) => identified(resolver, id, Some(n.path), n.deleted),
        None => named(id, None, false),
    }
}

fn constraint(kernel: &str) -> String {
    match kernel {
        "CONSTRAINT_MEMCG" => "memcg",
        "CONSTRAINT_NONE" => "global",
        "CONSTRAINT_CPUSET" => "cpuset",
        "CONSTRAINT_MEMORY_POLICY" => "mempolicy",
        other => other,
    }
    .to_string()
}

pub fn oom(j: &JoinedOom, resolver: &mut Resolver, clock: &Clock, unseen: &Unseen) -> OomKill {
    let bpf = j.bpf.or(j.mark);
    let k = j.kmsg.as_ref();
    let mut sources = Vec::new();
    if j.bpf.is_some() {
        sources.push("oom_kill_process".to_string());
    }
    if j.mark.is_some() {
        sources.push("mark_victim".to_string());
    }
    if k.is_some() {
        sources.push("kmsg".to_string());
    }
    // The memcg chain the kernel programs read at the kill, and whose.
    match j.bpf.or(j.mark).and_then(|b| chain::whose(&b.chain)) {
        Some(Whose::Victim) => sources.push("memcg_chain".to_string()),
        Some(Whose::Current) => sources.push("trigger_memcg_chain".to_string()),
        None => {}
    }
    let task = bpf.filter(|b| b.flags & OOM_HAS_VICTIM_TASK != 0);
    let victim = Victim {
        pid: j.pid(),
        tgid: task.map(|b| b.victim_tgid),
        comm: task
            .map(|b| comm(&b.victim_comm))
            .or(k.map(|k| kmsg_text(&k.victim.comm)))
            .unwrap_or_default(),
        uid: task
            .map(|b| b.victim_uid)
            .filter(|&u| u != u32::MAX)
            .or(k.and_then(|k| k.victim.uid)),
        oom_score_adj: task
            .map(|b| b.victim_oom_score_adj)
            .filter(|&a| a != i32::MIN)
            .or(k.and_then(|k| k.victim.oom_score_adj)),
        total_vm_kb: k.and_then(|k| k.victim.total_vm_kb),
        rss_anon_kb: k.and_then(|k| k.victim.rss_anon_kb),
        rss_file_kb: k.and_then(|k| k.victim.rss_file_kb),
        rss_shmem_kb: k.and_then(|k| k.victim.rss_shmem_kb),
        pgtables_kb: k.and_then(|k| k.victim.pgtables_kb),
    };
    let chain = j.bpf.as_ref().or(j.mark.as_ref()).map(|b| &b.chain);
    let victim_chain = chain.filter(|c| chain::whose(c) == Some(Whose::Victim));
    // The victim's memcg: the path the kernel read at the kill, which
    // survives the memcg's removal; else its id looked up now (not
    // rate-limited); else the kernel log's path.
    let victim_memcg = match (task, k.and_then(|k| k.task_memcg.as_deref())) {
        (Some(b), log) if b.victim_memcg_id != 0 => {
            let m = victim_chain
                .filter(|c| c.levels[0].id == b.victim_memcg_id)
                .and_then(|c| memcg_in_chain(resolver, c, 0))
                .unwrap_or_else(|| memcg_now(resolver, b.victim_memcg_id));
            match (m.path.is_none(), log) {
                (true, Some(p)) => Some(memcg_by_path(resolver, p, chain)),
                _ => Some(m),
            }
        }
        (_, Some(p)) => Some(memcg_by_path(resolver, p, chain)),
        _ => None,
    };
    let with_oc = j.bpf.filter(|b| b.flags & OOM_HAS_OOM_MEMCG != 0);
    // The memcg whose limit fired, and how that is known.
    let (oom_memcg, oom_memcg_source) = match (with_oc, k) {
        (Some(b), _) if b.oom_memcg_id != 0 => {
            let m = chain::find(&b.chain, b.oom_memcg_id)
                .and_then(|i| memcg_in_chain(resolver, &b.chain, i))
                .unwrap_or_else(|| memcg_now(resolver, b.oom_memcg_id));
            (Some(m), Some("kernel"))
        }
        (_, Some(k)) if k.oom_memcg.is_some() || k.constraint.is_some() => (
            k.oom_memcg
                .as_deref()
                .map(|p| memcg_by_path(resolver, p, chain)),
            Some("kmsg"),
        ),
        // `oc->memcg` NULL: no memcg limit fired.
        (Some(_), _) => (None, Some("kernel")),
        _ => match chain.and_then(|c| chain::limiting(c).map(|i| (c, i))) {
            Some((c, i)) => (
                memcg_in_chain(resolver, c, i)
                    .or_else(|| Some(memcg_now(resolver, c.levels[i].id))),
                Some("inferred"),
            ),
            None => (None, None),
        },
    };
    let constraint = k
        .and_then(|k| k.constraint.as_deref())
        .map(constraint)
        .or_else(|| {
            with_oc.map(|b| {
                if b.oom_memcg_id != 0 {
                    "memcg"
                } else {
                    "global"
                }
                .to_string()
            })
        })
        .or_else(|| (oom_memcg_source == Some("inferred")).then(|| "memcg".to_string()));
    let ts_ns = bpf
        .map(|b| b.ts_ns)
        .or(k.map(|k| k.ts_usec * 1000))
        .unwrap_or(0);
    let totals = j.bpf.filter(|b| b.flags & OOM_HAS_TOTALPAGES != 0);
    OomKill {
        ts: clock.rfc3339(ts_ns),
        ts_ns,
        before_start: j.before_start,
        constraint,
        victim,
        victim_memcg,
        oom_memcg,
        oom_memcg_source: oom_memcg_source.map(str::to_string),
        trigger: j
            .bpf
            .map(|b| Task {
                pid: unseen.get(Field::OomTriggerPid, b.trigger_pid),
                tgid: Some(b.trigger_tgid),
                comm: comm(&b.trigger_comm),
            })
            .or_else(|| {
                k.and_then(|k| k.trigger_comm.as_deref())
                    .map(kmsg_text)
                    .map(|c| Task {
                        pid: None,
                        tgid: None,
                        comm: c,
                    })
            }),
        totalpages: totals.and_then(|b| unseen.get(Field::OomTotalpages, b.totalpages)),
        chosen_points: totals.and_then(|b| unseen.get(Field::OomChosenPoints, b.chosen_points)),
        sources,
    }
}

/// A `slow_charge` or `slow_reclaim` record.
pub fn slow(e: &SlowEvent, memcg: Memcg, clock: &Clock) -> Record {
    let rec = Slow {
        ts: clock.rfc3339(e.ts_ns),
        ts_ns: e.ts_ns,
        what: match e.what {
            SLOW_CHARGE => "charge",
            SLOW_RECLAIM_DIRECT => "direct_reclaim",
            _ => "memcg_reclaim",
        }
        .to_string(),
        duration_ns: e.duration_ns,
        memcg,
        pages: e.pages,
        result: (e.what == SLOW_CHARGE).then_some(e.result),
        task: Task {
            pid: Some(e.pid),
            tgid: Some(e.tgid),
            comm: comm(&e.comm),
        },
    };
    if e.what == SLOW_CHARGE {
        Record::SlowCharge(rec)
    } else {
        Record::SlowReclaim(rec)
    }
}

fn shrinker_row(
    key: &ShrinkerKey,
    s: &ShrinkerStats,
    zero_visible: bool,
    syms: &Kallsyms,
    names: Option<&ShrinkerNames>,
) -> ShrinkerRow {
    let names = names.cloned().unwrap_or_default();
    ShrinkerRow {
        shrinker: format!("{:#x}", key.shrinker),
        count_objects: syms.name_at(s.count_objects).map(str::to_string),
        name: names.name,
        fs_type: names.fs_type,
        device: names.device,
        calls: s.calls,
        zero: zero_visible.then_some(s.zero),
        freed: s.freed,
        ns: s.ns,
    }
}

/// What a `system` record says that the agent itself counted.
pub struct AgentCounts {
    pub ts_ns: u64,
    pub interval_ns: u64,
    pub live_memcgs: u64,
    pub dying_memcgs: Option<u64>,
    pub map_evictions: u64,
    pub prog_recursion_misses: Option<u64>,
    pub memcg_entries: u64,
    pub shrinker_entries: u64,
}

/// A `system` record: the host sample, the kernel's global counters and
/// the agent's own.
pub fn system(
    clock: &Clock,
    host: &HostSample,
    s: &SystemStats,
    unseen: &Unseen,
    a: AgentCounts,
) -> System {
    System {
        ts: clock.rfc3339(a.ts_ns),
        ts_ns: a.ts_ns,
        interval_ns: a.interval_ns,
        sys_pct: host.sys_pct,
        max_cpu_sys_pct: host.max_cpu_sys_pct,
        max_cpu: host.max_cpu,
        iowait_pct: host.iowait_pct,
        kswapd_cpu_pct: host.kswapd_cpu_pct,
        dying_memcgs: a.dying_memcgs,
        live_memcgs: a.live_memcgs,
        kswapd_wakes: unseen.get(Field::KswapdWakes, s.kswapd_wakes),
        kswapd_ns: unseen.get(Field::KswapdNs, s.kswapd_ns),
        ringbuf_drops: s.ringbuf_drops,
        memcg_map_full: s.memcg_map_full,
        shrinker_map_full: s.shrinker_map_full,
        inflight_map_full: s.inflight_map_full,
        unmatched_returns: s.unmatched_returns,
        missed_returns: s.missed_returns,
        map_evictions: a.map_evictions,
        prog_recursion_misses: a.prog_recursion_misses,
        memcg_entries: a.memcg_entries,
        shrinker_entries: a.shrinker_entries,
        // Filled in by `record`, the one command that writes post-mortems.
        postmortems_pending: None,
        postmortems_lost: None,
    }
}

pub struct IntervalContext<'a> {
    pub clock: &'a Clock,
    pub ts_ns: u64,
    pub interval_ns: u64,
    pub unseen: &'a Unseen,
    pub kallsyms: &'a Kallsyms,
    /// By shrinker address (`Live::shrinker_names`).
    pub shrinker_names: &'a std::collections::HashMap<u64, ShrinkerNames>,
}

pub fn interval(
    d: &MemcgDelta,
    memcg: Memcg,
    limit_hits: Option<u64>,
    cx: &IntervalContext,
) -> MemcgInterval {
    let s = &d.stats;
    let v = cx.unseen;
    let zero_visible = v.sees(Field::DoShrinkSlabZero);
    let p = |hist, q, field| percentile(hist, q).and_then(|x| v.get(field, x));
    MemcgInterval {
        ts: cx.clock.rfc3339(cx.ts_ns),
        ts_ns: cx.ts_ns,
        interval_ns: cx.interval_ns,
        memcg,
        charge_calls: v.get(Field::ChargeCalls, s.charge_calls),
        charge_failures: v.get(Field::ChargeFailures, s.charge_failures),
        charge_ns: v.get(Field::ChargeNs, s.charge_ns),
        charge_pages: v.get(Field::ChargePages, s.charge_pages),
        charge_p50_ns: p(&s.charge_hist, 50.0, Field::ChargeP50Ns),
        charge_p99_ns: p(&s.charge_hist, 99.0, Field::ChargeP99Ns),
        reclaim_direct_count: v.get(Field::ReclaimDirectCount, s.reclaim_count[0]),
        reclaim_direct_ns: v.get(Field::ReclaimDirectNs, s.reclaim_ns[0]),
        reclaim_direct_pages: v.get(Field::ReclaimDirectPages, s.reclaim_pages[0]),
        reclaim_memcg_count: v.get(Field::ReclaimMemcgCount, s.reclaim_count[1]),
        reclaim_memcg_ns: v.get(Field::ReclaimMemcgNs, s.reclaim_ns[1]),
        reclaim_memcg_pages: v.get(Field::ReclaimMemcgPages, s.reclaim_pages[1]),
        reclaim_p50_ns: p(&s.reclaim_hist, 50.0, Field::ReclaimP50Ns),
        reclaim_p99_ns: p(&s.reclaim_hist, 99.0, Field::ReclaimP99Ns),
        shrink_slab_calls: v.get(Field::ShrinkSlabCalls, s.shrink_slab_calls),
        shrink_slab_ns: v.get(Field::ShrinkSlabNs, s.shrink_slab_ns),
        shrink_slab_freed: v.get(Field::ShrinkSlabFreed, s.shrink_slab_freed),
        shrink_slab_kswapd_ns: v.get(Field::ShrinkSlabKswapdNs, s.shrink_slab_kswapd_ns),
        do_shrink_slab_calls: v.get(Field::DoShrinkSlabCalls, s.do_shrink_calls),
        do_shrink_slab_zero: v.get(Field::DoShrinkSlabZero, s.do_shrink_zero),
        do_shrink_slab_freed: v.get(Field::DoShrinkSlabFreed, s.do_shrink_freed),
        do_shrink_slab_ns: v.get(Field::DoShrinkSlabNs, s.do_shrink_ns),
        limit_hits,
        shrinkers: v.sees(Field::Shrinkers).then(|| {
            d.shrinkers
                .iter()
                .take(10)
                .map(|(k, s)| {
                    let names = cx.shrinker_names.get(&k.shrinker);
                    shrinker_row(k, s, zero_visible, cx.kallsyms, names)
                })
                .collect()
        }),
        // Filled by the pipeline, which reads cgroupfs.
        state: None,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::{
        cgroup::{CgroupMode, MemcgFs},
        source::kmsg::OomReport,
        testutil::TempDir,
    };

    /// A directory tree standing in for the memory hierarchy.
    fn fake_hierarchy(name: &str) -> (TempDir, Resolver) {
        let root = TempDir::new(&format!("build-{name}"));
        std::fs::create_dir_all(root.join("parent\x1b]0;x\x07/child")).unwrap();
        let fs = MemcgFs {
            mode: CgroupMode::V1,
            root: root.path().to_path_buf(),
            v2: false,
        };
        let resolver = Resolver::new(&fs);
        (root, resolver)
    }

    #[test]
    fn kernel_log_only_kill_gets_real_names_and_nulls() {
        let (root, mut resolver) = fake_hierarchy("kmsg");
        let report = OomReport {
            victim: Victim {
                pid: 4242,
                comm: "ev\\x1bil".into(),
                rss_anon_kb: Some(65280),
                ..Default::default()
            },
            trigger_comm: Some("ev\\x1bil".into()),
            constraint: Some("CONSTRAINT_MEMCG".into()),
            oom_memcg: Some("/parent\\x1b]0;x\\x07".into()),
            task_memcg: Some("/parent\\x1b]0;x\\x07/child".into()),
            ts_usec: 5,
            ..Default::default()
        };
        let j = JoinedOom {
            kmsg: Some(report),
            before_start: true,
            ..Default::default()
        };
        let r = oom(&j, &mut resolver, &Clock::new(), &Unseen::default());
        assert_eq!(r.victim.comm, "ev\x1bil");
        assert_eq!(r.trigger.as_ref().unwrap().comm, "ev\x1bil");
        assert_eq!(
            r.trigger.as_ref().unwrap().pid,
            None,
            "the log prints no trigger pid"
        );
        assert_eq!(r.constraint.as_deref(), Some("memcg"));
        let parent = r.oom_memcg.unwrap();
        assert_eq!(parent.path.as_deref(), Some("/parent\x1b]0;x\x07"));
        assert_eq!(
            parent.id,
            std::fs::metadata(root.join("parent\x1b]0;x\x07"))
                .unwrap()
                .ino()
        );
        assert_eq!(
            r.victim_memcg.unwrap().path.as_deref(),
            Some("/parent\x1b]0;x\x07/child")
        );
        assert_eq!(r.ts_ns, 5000);
        assert!(r.before_start);
        assert_eq!(
            (r.totalpages, r.chosen_points, r.victim.tgid),
            (None, None, None)
        );
        assert_eq!(r.sources, ["kmsg"]);
    }

    /// A `mark_victim` event (6.9+: with the victim's task) whose chain the
    /// kernel read: `levels` are `(id, name, usage, max)`, the memcg first,
    /// the root last.
    fn chain_event(victim_memcg: u64, levels: &[(u64, &str, u64, u64)]) -> JoinedOom {
        let mut c = memtrace_common::OomChain::EMPTY;
        for (i, (id, name, usage, max)) in levels.iter().enumerate() {
            c.levels[i].id = *id;
            c.levels[i].name[..name.len()].copy_from_slice(name.as_bytes());
            c.levels[i].usage_pages = *usage;
            c.levels[i].max_pages = *max;
        }
        c.len = levels.len() as u32;
        c.flags = memtrace_common::OOM_CHAIN_OF_VICTIM | memtrace_common::OOM_CHAIN_COMPLETE;
        let ev = memtrace_common::OomEvent {
            kind: memtrace_common::EVENT_OOM_KILL,
            source: memtrace_common::OOM_SRC_MARK_VICTIM,
            ts_ns: 1,
            flags: OOM_HAS_VICTIM_TASK,
            victim_pid: 77,
            victim_tgid: 77,
            victim_uid: 0,
            victim_oom_score_adj: 0,
            trigger_pid: 77,
            trigger_tgid: 77,
            _pad: 0,
            victim_comm: *b"tail\0\0\0\0\0\0\0\0\0\0\0\0",
            trigger_comm: *b"tail\0\0\0\0\0\0\0\0\0\0\0\0",
            victim_memcg_id: victim_memcg,
            oom_memcg_id: 0,
            totalpages: 0,
            chosen_points: 0,
            chain: c,
        };
        JoinedOom {
            mark: Some(ev),
            ..Default::default()
        }
    }

    const NOLIMIT: u64 = (i64::MAX / 4096) as u64;

    #[test]
    fn a_kill_in_a_fresh_memcg_is_named_although_a_rescan_just_ran() {
        let (root, mut resolver) = fake_hierarchy("fresh");
        resolver.rescan();
        // Created after the rescan, within the rate limit's 200 ms.
        std::fs::create_dir(root.join("fresh")).unwrap();
        let id = std::fs::metadata(root.join("fresh")).unwrap().ino();
        // No chain: the id is looked up at once all the same.
        let mut j = chain_event(id, &[]);
        j.mark.as_mut().unwrap().chain.len = 0;
        let r = oom(&j, &mut resolver, &Clock::new(), &Unseen::default());
        assert_eq!(r.victim_memcg.unwrap().path.as_deref(), Some("/fresh"));
        assert_eq!(
            (r.oom_memcg, r.oom_memcg_source, r.constraint),
            (None, None, None)
        );
    }

    #[test]
    fn a_removed_memcg_keeps_the_path_the_kernel_read_and_its_limit_is_inferred() {
        let (_root, mut resolver) = fake_hierarchy("removed");
        resolver.rescan();
        // /svc/job, already removed: /svc's limit was full at the kill.
        let j = chain_event(
            9001,
            &[
                (9001, "job", 10, NOLIMIT),
                (9000, "svc", 4090, 4096),
                (1, "", 99, NOLIMIT),
            ],
        );
        let r = oom(&j, &mut resolver, &Clock::new(), &Unseen::default());
        let v = r.victim_memcg.unwrap();
        assert_eq!(
            (v.id, v.path.as_deref(), v.deleted),
            (9001, Some("/svc/job"), true)
        );
        let l = r.oom_memcg.unwrap();
        assert_eq!(
            (l.id, l.path.as_deref(), l.deleted),
            (9000, Some("/svc"), true)
        );
        assert_eq!(r.oom_memcg_source.as_deref(), Some("inferred"));
        assert_eq!(r.constraint.as_deref(), Some("memcg"));
        assert_eq!(r.sources, ["mark_victim", "memcg_chain"]);
        // The kernel log's summary, when printed, is the better word.
        let mut j = j;
        j.kmsg = Some(OomReport {
            victim: Victim {
                pid: 77,
                ..Default::default()
            },
            constraint: Some("CONSTRAINT_MEMCG".into()),
            oom_memcg: Some("/svc".into()),
            task_memcg: Some("/svc/job".into()),
            ..Default::default()
        });
        let r = oom(&j, &mut resolver, &Clock::new(), &Unseen::default());
        assert_eq!(r.oom_memcg_source.as_deref(), Some("kmsg"));
        assert_eq!(
            r.oom_memcg.unwrap().id,
            9000,
            "the id from the chain, not 0"
        );
    }

    #[test]
    fn memcg_gone_from_the_log_keeps_its_path_marked_deleted() {
        let (_root, mut resolver) = fake_hierarchy("gone");
        let m = memcg_by_path(&mut resolver, "/never-existed", None);
        assert_eq!(
            m,
            Memcg {
                id: 0,
                path: Some("/never-existed".into()),
                deleted: true,
                container: Some(attribute("/never-existed")),
            }
        );
    }
}
