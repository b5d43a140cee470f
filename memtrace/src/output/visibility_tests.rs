//! For every plan the loader can produce, every field the plan cannot see
//! is `null` in the records built, and every field it can see is a value.
//! The check reads the serialized JSON, not the builder's code, so a field
//! wired to the wrong visibility (or a name that is no record key) fails.
use std::collections::HashMap;

use memtrace_common::{
    EVENT_OOM_KILL, HIST_BUCKETS, MemcgStats, OOM_HAS_OOM_MEMCG, OOM_HAS_TOTALPAGES,
    OOM_HAS_VICTIM_TASK, OOM_SRC_OOM_KILL_PROCESS, OomEvent, RECLAIM_CONTEXTS, ShrinkerKey,
    ShrinkerStats, SystemStats,
};
use serde_json::Value;

use super::{
    build::{self, AgentCounts, IntervalContext},
    fields::{Field, Unseen},
    records::{Family, Memcg},
};
use crate::{
    aggregate::{intervals::MemcgDelta, oom::JoinedOom},
    cgroup::{CgroupMode, MemcgFs, Resolver},
    clock::Clock,
    host::HostSample,
    kernel::{
        plan::{self, AttachMode, HOOKS, HookSpec, KernelFacts},
        symbols::Kallsyms,
    },
    testutil::TempDir,
};

/// A kernel on which every family of every hook can be tried.
fn every_family_possible() -> KernelFacts {
    let mut f = KernelFacts {
        kprobe_pmu: true,
        tracefs: true,
        ..Default::default()
    };
    for s in HOOKS {
        if let Some(name) = s.functions.first() {
            let mut params = vec![String::new(); 4];
            for (i, p) in s.params {
                params[*i] = p.to_string();
            }
            f.btf_functions.insert(name.to_string(), params);
            f.kallsyms.insert(name.to_string());
        }
        for (_, tp) in s.tp_btf {
            f.btf_tracepoints.insert(tp.to_string());
        }
    }
    f
}

/// Every plan: per hook, each family the planner may attach it with, or
/// none (attaching failed).
fn every_plan() -> Vec<Vec<(&'static HookSpec, Option<Family>)>> {
    let facts = every_family_possible();
    let mut plans: Vec<Vec<(&'static HookSpec, Option<Family>)>> = vec![Vec::new()];
    for spec in HOOKS {
        let c = plan::candidates(spec, AttachMode::Auto, &facts);
        let options: Vec<Option<Family>> = std::iter::once(None)
            .chain(c.attempts.iter().map(|a| Some(a.family)))
            .collect();
        plans = plans
            .into_iter()
            .flat_map(|p| {
                options.iter().map(move |f| {
                    let mut p = p.clone();
                    p.push((spec, *f));
                    p
                })
            })
            .collect();
    }
    plans
}

fn busy_memcg() -> MemcgDelta {
    let mut s = MemcgStats::ZERO;
    s.charge_calls = 10;
    s.charge_failures = 1;
    s.charge_ns = 1000;
    s.charge_pages = 5;
    s.reclaim_count = [3; RECLAIM_CONTEXTS];
    s.reclaim_ns = [300; RECLAIM_CONTEXTS];
    s.reclaim_pages = [30; RECLAIM_CONTEXTS];
    s.shrink_slab_calls = 4;
    s.shrink_slab_ns = 400;
    s.shrink_slab_freed = 40;
    s.shrink_slab_kswapd_ns = 100;
    s.do_shrink_calls = 9;
    s.do_shrink_zero = 7;
    s.do_shrink_freed = 2;
    s.do_shrink_ns = 90;
    s.charge_hist = [1; HIST_BUCKETS];
    s.reclaim_hist = [1; HIST_BUCKETS];
    let key = ShrinkerKey {
        memcg_id: 42,
        shrinker: 0xffff_0000,
    };
    let sh = ShrinkerStats {
        calls: 9,
        zero: 7,
        freed: 2,
        ns: 90,
        count_objects: 0,
        memcg_id: 42,
    };
    MemcgDelta {
        id: 42,
        stats: s,
        shrinkers: vec![(key, sh)],
    }
}

fn kill_seen_by_oom_kill_process() -> JoinedOom {
    let ev = OomEvent {
        kind: EVENT_OOM_KILL,
        source: OOM_SRC_OOM_KILL_PROCESS,
        ts_ns: 1,
        flags: OOM_HAS_OOM_MEMCG | OOM_HAS_TOTALPAGES | OOM_HAS_VICTIM_TASK,
        victim_pid: 7,
        victim_tgid: 7,
        victim_uid: 0,
        victim_oom_score_adj: 0,
        trigger_pid: 8,
        trigger_tgid: 8,
        _pad: 0,
        victim_comm: *b"victim\0\0\0\0\0\0\0\0\0\0",
        trigger_comm: *b"trigger\0\0\0\0\0\0\0\0\0",
        victim_memcg_id: 0,
        oom_memcg_id: 0,
        totalpages: 1000,
        chosen_points: 900,
        chain: memtrace_common::OomChain::EMPTY,
    };
    JoinedOom {
        bpf: Some(ev),
        ..Default::default()
    }
}

/// The JSON value at a field's key in the record it names.
fn value_of(f: Field, interval: &Value, oom: &Value, system: &Value) -> Value {
    let name = f.name();
    if let Some(k) = name.strip_prefix("oom_kill.") {
        k.split('.').fold(oom.clone(), |v, k| v[k].clone())
    } else if let Some(k) = name.strip_prefix("system.") {
        system[k].clone()
    } else {
        interval[name].clone()
    }
}

#[test]
fn every_plan_nulls_exactly_what_it_cannot_see() {
    let dir = TempDir::new("visibility");
    let fs = MemcgFs {
        mode: CgroupMode::V2,
        root: dir.path().to_path_buf(),
        v2: true,
    };
    let mut resolver = Resolver::new(&fs);
    let clock = Clock::new();
    let kallsyms = Kallsyms::parse("");
    let names = HashMap::new();
    let plans = every_plan();
    assert!(plans.len() > 1000, "{} plans", plans.len());
    let mut seen_null = [false; 2];
    for chosen in &plans {
        let unseen: Unseen = plan::unavailable_fields(chosen);
        let cx = IntervalContext {
            clock: &clock,
            ts_ns: 1,
            interval_ns: 1_000_000_000,
            unseen: &unseen,
            kallsyms: &kallsyms,
            shrinker_names: &names,
        };
        let interval = build::interval(&busy_memcg(), Memcg::default(), Some(1), &cx);
        let oom = build::oom(
            &kill_seen_by_oom_kill_process(),
            &mut resolver,
            &clock,
            &unseen,
        );
        let kernel = SystemStats {
            kswapd_wakes: 3,
            kswapd_ns: 300,
            ..Default::default()
        };
        let agent = AgentCounts {
            ts_ns: 1,
            interval_ns: 1,
            live_memcgs: 1,
            dying_memcgs: None,
            map_evictions: 0,
            prog_recursion_misses: None,
            memcg_entries: 1,
            shrinker_entries: 1,
        };
        let system = build::system(&clock, &HostSample::default(), &kernel, &unseen, agent);
        let [i, o, s] = [
            serde_json::to_value(&interval).unwrap(),
            serde_json::to_value(&oom).unwrap(),
            serde_json::to_value(&system).unwrap(),
        ];
        for f in Field::ALL {
            let v = value_of(*f, &i, &o, &s);
            if unseen.sees(*f) {
                assert!(
                    v.is_number() || v.is_array(),
                    "{} should be a value on plan {:?}: {v}",
                    f.name(),
                    plan_names(chosen)
                );
            } else {
                assert!(
                    v.is_null(),
                    "{} should be null on plan {:?}: {v}",
                    f.name(),
                    plan_names(chosen)
                );
                seen_null[usize::from(f.name().contains('.'))] = true;
            }
        }
    }
    assert_eq!(seen_null, [true, true], "some plan leaves fields null");
}

fn plan_names(chosen: &[(&HookSpec, Option<Family>)]) -> Vec<String> {
    chosen
        .iter()
        .map(|(s, f)| format!("{}={}", s.hook, f.map(Family::as_str).unwrap_or("-")))
        .collect()
}
