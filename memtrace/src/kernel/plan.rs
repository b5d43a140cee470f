//! The attach plan: for every hook, which program family memtrace tries, in
//! what order, on which kernel symbol, and what a record loses when a hook
//! falls back or is missing. This table is the one place those facts live;
//! `doctor`, the stream header and the loader all read it.
use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::output::fields::{Field, Unseen};
pub use crate::output::records::Family;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachMode {
    /// fentry/fexit, else kprobe/kretprobe, else tracepoints, per hook
    Auto,
    Fentry,
    Kprobe,
    /// tp_btf where the kernel has it, else classic tracepoints
    Tracepoint,
}

/// A program attached to a kernel function (entry + optional return).
pub struct FnProgs {
    pub entry: &'static str,
    pub exit: Option<&'static str>,
}

pub struct HookSpec {
    pub hook: &'static str,
    /// Kernel functions to hook, preferred first (`try_charge` before 5.14).
    pub functions: &'static [&'static str],
    /// Parameters the programs read, checked against BTF before attaching.
    pub params: &'static [(usize, &'static str)],
    pub fentry: Option<FnProgs>,
    pub kprobe: Option<FnProgs>,
    /// (program, raw tracepoint) pairs, all attached together.
    pub tp_btf: &'static [(&'static str, &'static str)],
    /// (program, category, name) classic tracepoints, all attached together.
    pub tracepoint: &'static [(&'static str, &'static str, &'static str)],
    /// Record fields this hook feeds (`null` when it is unavailable).
    pub fields: &'static [Field],
    /// Fields the tracepoint fallback cannot fill.
    pub tracepoint_loses: &'static [Field],
    /// What the fallback cannot see, in words, for doctor and the header.
    pub tracepoint_note: &'static str,
}

impl HookSpec {
    pub fn is_function_hook(&self) -> bool {
        !self.functions.is_empty()
    }
}

pub const HOOKS: &[HookSpec] = &[
    HookSpec {
        hook: "try_charge_memcg",
        functions: &["try_charge_memcg", "try_charge"],
        params: &[(0, "memcg"), (2, "nr_pages")],
        fentry: Some(FnProgs {
            entry: "charge_fentry",
            exit: Some("charge_fexit"),
        }),
        kprobe: Some(FnProgs {
            entry: "charge_kprobe",
            exit: Some("charge_kretprobe"),
        }),
        tp_btf: &[],
        tracepoint: &[],
        fields: &[
            Field::ChargeCalls,
            Field::ChargeFailures,
            Field::ChargeNs,
            Field::ChargePages,
            Field::ChargeP50Ns,
            Field::ChargeP99Ns,
        ],
        tracepoint_loses: &[],
        tracepoint_note: "no tracepoint equivalent: charge calls, failures and latency are not seen (limit hits still come from cgroupfs)",
    },
    HookSpec {
        hook: "shrink_slab",
        functions: &["shrink_slab"],
        params: &[(2, "memcg")],
        fentry: Some(FnProgs {
            entry: "shrink_slab_fentry",
            exit: Some("shrink_slab_fexit"),
        }),
        kprobe: Some(FnProgs {
            entry: "shrink_slab_kprobe",
            exit: Some("shrink_slab_kretprobe"),
        }),
        tp_btf: &[],
        tracepoint: &[],
        fields: &[
            Field::ShrinkSlabCalls,
            Field::ShrinkSlabNs,
            Field::ShrinkSlabFreed,
            Field::ShrinkSlabKswapdNs,
        ],
        tracepoint_loses: &[],
        tracepoint_note: "no tracepoint equivalent: per-memcg shrink_slab passes and their time are not seen",
    },
    HookSpec {
        hook: "do_shrink_slab",
        functions: &["do_shrink_slab"],
        params: &[(0, "shrinkctl"), (1, "shrinker")],
        fentry: Some(FnProgs {
            entry: "do_shrink_fentry",
            exit: Some("do_shrink_fexit"),
        }),
        kprobe: Some(FnProgs {
            entry: "do_shrink_kprobe",
            exit: Some("do_shrink_kretprobe"),
        }),
        tp_btf: &[
            ("shrink_slab_start_btf", "mm_shrink_slab_start"),
            ("shrink_slab_end_btf", "mm_shrink_slab_end"),
        ],
        tracepoint: &[],
        fields: &[
            Field::DoShrinkSlabCalls,
            Field::DoShrinkSlabZero,
            Field::DoShrinkSlabFreed,
            Field::DoShrinkSlabNs,
            Field::Shrinkers,
        ],
        tracepoint_loses: &[Field::DoShrinkSlabZero],
        tracepoint_note: "mm_shrink_slab_start/end fire only when a shrinker reported objects: calls that found nothing (the shrink_slab storm signature) are invisible, so do_shrink_slab_zero is null and do_shrink_slab_calls counts only calls that found objects",
    },
    HookSpec {
        hook: "oom_kill_process",
        functions: &["oom_kill_process"],
        params: &[(0, "oc")],
        fentry: Some(FnProgs {
            entry: "oom_kill_fentry",
            exit: None,
        }),
        kprobe: Some(FnProgs {
            entry: "oom_kill_kprobe",
            exit: None,
        }),
        tp_btf: &[("mark_victim_btf", "mark_victim")],
        tracepoint: &[("mark_victim_tp", "oom", "mark_victim")],
        fields: &[
            Field::OomTotalpages,
            Field::OomChosenPoints,
            Field::OomTriggerPid,
        ],
        tracepoint_loses: &[
            Field::OomTotalpages,
            Field::OomChosenPoints,
            Field::OomTriggerPid,
        ],
        tracepoint_note: "mark_victim has no oom_control: the memcg whose limit fired comes from the kernel log's rate-limited summary or is inferred from the page counters read at the kill, the triggering comm from the kernel log only; totalpages, chosen_points and the trigger's pid are null",
    },
    HookSpec {
        hook: "reclaim_direct",
        functions: &[],
        params: &[],
        fentry: None,
        kprobe: None,
        tp_btf: &[
            ("direct_begin_btf", "mm_vmscan_direct_reclaim_begin"),
            ("direct_end_btf", "mm_vmscan_direct_reclaim_end"),
        ],
        tracepoint: &[
            (
                "direct_begin_tp",
                "vmscan",
                "mm_vmscan_direct_reclaim_begin",
            ),
            ("direct_end_tp", "vmscan", "mm_vmscan_direct_reclaim_end"),
        ],
        fields: &[
            Field::ReclaimDirectCount,
            Field::ReclaimDirectNs,
            Field::ReclaimDirectPages,
        ],
        tracepoint_loses: &[],
        tracepoint_note: "",
    },
    HookSpec {
        hook: "reclaim_memcg",
        functions: &[],
        params: &[],
        fentry: None,
        kprobe: None,
        tp_btf: &[
            ("memcg_begin_btf", "mm_vmscan_memcg_reclaim_begin"),
            ("memcg_end_btf", "mm_vmscan_memcg_reclaim_end"),
        ],
        tracepoint: &[
            ("memcg_begin_tp", "vmscan", "mm_vmscan_memcg_reclaim_begin"),
            ("memcg_end_tp", "vmscan", "mm_vmscan_memcg_reclaim_end"),
        ],
        fields: &[
            Field::ReclaimMemcgCount,
            Field::ReclaimMemcgNs,
            Field::ReclaimMemcgPages,
        ],
        tracepoint_loses: &[],
        tracepoint_note: "",
    },
    HookSpec {
        hook: "kswapd",
        functions: &[],
        params: &[],
        fentry: None,
        kprobe: None,
        tp_btf: &[
            ("kswapd_wake_btf", "mm_vmscan_kswapd_wake"),
            ("kswapd_sleep_btf", "mm_vmscan_kswapd_sleep"),
        ],
        tracepoint: &[
            ("kswapd_wake_tp", "vmscan", "mm_vmscan_kswapd_wake"),
            ("kswapd_sleep_tp", "vmscan", "mm_vmscan_kswapd_sleep"),
        ],
        fields: &[Field::KswapdWakes, Field::KswapdNs],
        tracepoint_loses: &[],
        tracepoint_note: "",
    },
];

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Fentry => "fentry",
            AttachMode::Kprobe => "kprobe",
            AttachMode::Tracepoint => "tracepoint",
        }
    }
}

/// How `family`'s programs for `spec` pair a call's entry with its return
/// (memtrace-ebpf/src/stats.rs), for `doctor` and the stream header; None
/// for hooks with a single event (OOM). The one place this is stated.
pub fn pairing(spec: &HookSpec, family: Family) -> Option<&'static str> {
    let paired = match family {
        Family::Fentry => spec.fentry.as_ref().is_some_and(|p| p.exit.is_some()),
        Family::Kprobe => spec.kprobe.as_ref().is_some_and(|p| p.exit.is_some()),
        Family::TpBtf => spec.tp_btf.len() > 1,
        Family::Tracepoint => spec.tracepoint.len() > 1,
    };
    if !paired {
        return None;
    }
    Some(match (family, spec.hook) {
        // kswapd's episode spans its sleep: the next thread on that CPU
        // would take its slot over every time. Reclaim episodes sleep less
        // often than they run through, and one displaced by another
        // thread's goes into the hash (the slot rule below).
        (_, "kswapd") => "hash by thread id (episodes sleep)",
        (Family::Fentry, _) => {
            "none for counts (fexit reads the arguments again); the time pairs the entry through a per-CPU slot tagged with the thread id (the hash if the thread was preempted mid-call, the other CPUs' slots if it changed CPU; before 5.19, without bpf_map_lookup_percpu_elem, the hash by thread id alone); a time not found is counted in unmatched_returns, the call still counted"
        }
        _ => {
            "per-CPU slot tagged with the thread id (the hash if the thread was preempted mid-call, the other CPUs' slots if it changed CPU; before 5.19, without bpf_map_lookup_percpu_elem, the hash by thread id alone); a call whose entry is not found is not counted but counted in unmatched_returns"
        }
    })
}

/// Fields fed by either reclaim hook.
pub const RECLAIM_PERCENTILE_FIELDS: &[Field] = &[Field::ReclaimP50Ns, Field::ReclaimP99Ns];

/// What the planner knows about the kernel before trying anything.
#[derive(Debug, Default, Clone)]
pub struct KernelFacts {
    /// /sys/bus/event_source/devices/kprobe exists (CONFIG_KPROBE_EVENTS).
    pub kprobe_pmu: bool,
    /// tracefs is mounted or memtrace can mount it.
    pub tracefs: bool,
    /// BTF parameter names of the candidate functions found in BTF.
    pub btf_functions: HashMap<String, Vec<String>>,
    /// Candidate function names present in /proc/kallsyms exactly.
    pub kallsyms: HashSet<String>,
    /// Raw tracepoints present in BTF (`btf_trace_<name>`).
    pub btf_tracepoints: HashSet<String>,
}

/// One thing the loader will try for a hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub family: Family,
    /// Kernel function or tracepoint(s) the programs go on.
    pub target: String,
}

/// Ordered attempts for a hook, plus why other families were ruled out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookCandidates {
    pub attempts: Vec<Attempt>,
    pub ruled_out: Vec<(Family, String)>,
}

pub fn families(mode: AttachMode, spec: &HookSpec) -> &'static [Family] {
    if !spec.is_function_hook() {
        // Reclaim and kswapd exist only as tracepoints: every mode uses them.
        return &[Family::TpBtf, Family::Tracepoint];
    }
    match mode {
        AttachMode::Auto => &[
            Family::Fentry,
            Family::Kprobe,
            Family::TpBtf,
            Family::Tracepoint,
        ],
        AttachMode::Fentry => &[Family::Fentry],
        AttachMode::Kprobe => &[Family::Kprobe],
        AttachMode::Tracepoint => &[Family::TpBtf, Family::Tracepoint],
    }
}

/// The first candidate function whose BTF prototype matches what the
/// programs read, and that kallsyms has under exactly that name.
fn pick_function(spec: &HookSpec, facts: &KernelFacts) -> Result<String, String> {
    let mut why = Vec::new();
    for f in spec.functions {
        if !facts.kallsyms.contains(*f) {
            why.push(format!("{f}: not in /proc/kallsyms (inlined or absent)"));
            continue;
        }
        let Some(params) = facts.btf_functions.get(*f) else {
            why.push(format!(
                "{f}: no BTF prototype to check its arguments against"
            ));
            continue;
        };
        let bad = spec
            .params
            .iter()
            .find(|(i, name)| params.get(*i).map(String::as_str) != Some(*name));
        if let Some((i, name)) = bad {
            why.push(format!(
                "{f}: argument {i} is not `{name}` on this kernel ({})",
                params.join(", ")
            ));
            continue;
        }
        return Ok(f.to_string());
    }
    Err(why.join("; "))
}

pub fn candidates(spec: &HookSpec, mode: AttachMode, facts: &KernelFacts) -> HookCandidates {
    let mut out = HookCandidates::default();
    let function = if spec.is_function_hook() {
        Some(pick_function(spec, facts))
    } else {
        None
    };
    for &family in families(mode, spec) {
        let verdict: Result<String, String> = match family {
            Family::Fentry | Family::Kprobe => {
                let has_progs = if family == Family::Fentry {
                    spec.fentry.is_some()
                } else {
                    spec.kprobe.is_some()
                };
                if !has_progs {
                    Err("no program of this family".into())
                } else if family == Family::Kprobe && !facts.kprobe_pmu {
                    Err("kernel has no kprobe support (/sys/bus/event_source/devices/kprobe is missing: CONFIG_KPROBES/CONFIG_KPROBE_EVENTS unset)".into())
                } else {
                    function
                        .clone()
                        .unwrap_or_else(|| Err("not a function hook".into()))
                }
            }
            Family::TpBtf => {
                if spec.tp_btf.is_empty() {
                    Err("no tracepoint equivalent".into())
                } else if let Some((_, tp)) = spec
                    .tp_btf
                    .iter()
                    .find(|(_, tp)| !facts.btf_tracepoints.contains(*tp))
                {
                    Err(format!("raw tracepoint {tp} not in kernel BTF"))
                } else {
                    Ok(spec
                        .tp_btf
                        .iter()
                        .map(|(_, tp)| *tp)
                        .collect::<Vec<_>>()
                        .join(","))
                }
            }
            Family::Tracepoint => {
                if spec.tracepoint.is_empty() {
                    Err("no classic tracepoint equivalent".into())
                } else if !facts.tracefs {
                    Err("tracefs is not available".into())
                } else {
                    Ok(spec
                        .tracepoint
                        .iter()
                        .map(|(_, c, n)| format!("{c}:{n}"))
                        .collect::<Vec<_>>()
                        .join(","))
                }
            }
        };
        match verdict {
            Ok(target) => out.attempts.push(Attempt { family, target }),
            Err(why) => out.ruled_out.push((family, why)),
        }
    }
    out
}

/// Record fields a plan leaves `null`: those of unavailable hooks, and
/// those a tracepoint fallback cannot fill.
pub fn unavailable_fields(chosen: &[(&HookSpec, Option<Family>)]) -> Unseen {
    let mut out = Vec::new();
    for (spec, family) in chosen {
        match family {
            None => out.extend_from_slice(spec.fields),
            Some(Family::TpBtf | Family::Tracepoint) => {
                out.extend_from_slice(spec.tracepoint_loses)
            }
            Some(_) => {}
        }
    }
    let reclaim_seen = chosen
        .iter()
        .any(|(s, f)| s.hook.starts_with("reclaim_") && f.is_some());
    if !reclaim_seen {
        out.extend_from_slice(RECLAIM_PERCENTILE_FIELDS);
    }
    Unseen::new(out)
}

pub fn spec(hook: &str) -> Option<&'static HookSpec> {
    HOOKS.iter().find(|s| s.hook == hook)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts_full() -> KernelFacts {
        let mut f = KernelFacts {
            kprobe_pmu: true,
            tracefs: true,
            ..Default::default()
        };
        for (name, params) in [
            ("try_charge_memcg", vec!["memcg", "gfp_mask", "nr_pages"]),
            ("shrink_slab", vec!["gfp_mask", "nid", "memcg", "priority"]),
            ("do_shrink_slab", vec!["shrinkctl", "shrinker", "priority"]),
            ("oom_kill_process", vec!["oc", "message"]),
        ] {
            f.btf_functions
                .insert(name.into(), params.into_iter().map(String::from).collect());
            f.kallsyms.insert(name.into());
        }
        for s in HOOKS {
            for (_, tp) in s.tp_btf {
                f.btf_tracepoints.insert(tp.to_string());
            }
        }
        f
    }

    fn fams(c: &HookCandidates) -> Vec<Family> {
        c.attempts.iter().map(|a| a.family).collect()
    }

    #[test]
    fn auto_tries_fentry_then_kprobe_then_tracepoints() {
        let c = candidates(
            spec("do_shrink_slab").unwrap(),
            AttachMode::Auto,
            &facts_full(),
        );
        assert_eq!(fams(&c), [Family::Fentry, Family::Kprobe, Family::TpBtf]);
        assert_eq!(c.attempts[0].target, "do_shrink_slab");
        assert_eq!(c.ruled_out[0].0, Family::Tracepoint);
    }

    #[test]
    fn no_kprobes_on_this_kind_of_kernel() {
        let mut f = facts_full();
        f.kprobe_pmu = false;
        let c = candidates(spec("try_charge_memcg").unwrap(), AttachMode::Kprobe, &f);
        assert!(c.attempts.is_empty());
        assert!(
            c.ruled_out[0].1.contains("no kprobe support"),
            "{:?}",
            c.ruled_out
        );
        let c = candidates(spec("try_charge_memcg").unwrap(), AttachMode::Auto, &f);
        assert_eq!(fams(&c), [Family::Fentry]);
    }

    #[test]
    fn old_kernel_name_is_used_when_new_is_absent() {
        let mut f = facts_full();
        f.kallsyms.remove("try_charge_memcg");
        f.btf_functions.remove("try_charge_memcg");
        f.kallsyms.insert("try_charge".into());
        f.btf_functions.insert(
            "try_charge".into(),
            vec!["memcg".into(), "gfp_mask".into(), "nr_pages".into()],
        );
        let c = candidates(spec("try_charge_memcg").unwrap(), AttachMode::Auto, &f);
        assert_eq!(c.attempts[0].target, "try_charge");
    }

    #[test]
    fn changed_prototype_is_refused() {
        let mut f = facts_full();
        f.btf_functions.insert(
            "shrink_slab".into(),
            vec!["gfp_mask".into(), "nid".into(), "sc".into()],
        );
        let c = candidates(spec("shrink_slab").unwrap(), AttachMode::Auto, &f);
        assert!(c.attempts.is_empty());
        assert!(
            c.ruled_out
                .iter()
                .any(|(_, w)| w.contains("argument 2 is not `memcg`")),
            "{:?}",
            c.ruled_out
        );
    }

    #[test]
    fn cold_clone_is_not_the_function() {
        let mut f = facts_full();
        f.kallsyms.remove("oom_kill_process");
        f.kallsyms.insert("oom_kill_process.cold".into());
        let c = candidates(spec("oom_kill_process").unwrap(), AttachMode::Fentry, &f);
        assert!(c.attempts.is_empty());
    }

    #[test]
    fn tracepoint_mode_and_tracepoint_only_hooks() {
        let f = facts_full();
        let c = candidates(
            spec("oom_kill_process").unwrap(),
            AttachMode::Tracepoint,
            &f,
        );
        assert_eq!(fams(&c), [Family::TpBtf, Family::Tracepoint]);
        let c = candidates(
            spec("try_charge_memcg").unwrap(),
            AttachMode::Tracepoint,
            &f,
        );
        assert!(c.attempts.is_empty());
        // Reclaim hooks are tracepoints in every mode, even forced kprobe.
        let c = candidates(spec("reclaim_memcg").unwrap(), AttachMode::Kprobe, &f);
        assert_eq!(fams(&c), [Family::TpBtf, Family::Tracepoint]);
    }

    #[test]
    fn pairing_is_stated_per_family() {
        let ds = spec("do_shrink_slab").unwrap();
        assert!(
            pairing(ds, Family::Fentry)
                .unwrap()
                .starts_with("none for counts")
        );
        for f in [Family::Kprobe, Family::TpBtf] {
            assert!(pairing(ds, f).unwrap().starts_with("per-CPU slot"), "{f:?}");
        }
        let rc = spec("reclaim_memcg").unwrap();
        assert!(
            pairing(rc, Family::TpBtf)
                .unwrap()
                .starts_with("per-CPU slot")
        );
        let kswapd = spec("kswapd").unwrap();
        assert!(pairing(kswapd, Family::TpBtf).unwrap().starts_with("hash"));
        // A single event has nothing to pair.
        let oom = spec("oom_kill_process").unwrap();
        assert_eq!(pairing(oom, Family::Fentry), None);
        assert_eq!(pairing(oom, Family::TpBtf), None);
    }

    #[test]
    fn unavailable_fields_follow_the_plan() {
        let chosen: Vec<(&HookSpec, Option<Family>)> = HOOKS
            .iter()
            .map(|s| {
                let f = match s.hook {
                    "try_charge_memcg" | "shrink_slab" => None,
                    _ => Some(Family::TpBtf),
                };
                (s, f)
            })
            .collect();
        let u = unavailable_fields(&chosen);
        assert!(!u.sees(Field::ChargeCalls));
        assert!(!u.sees(Field::ShrinkSlabNs));
        assert!(!u.sees(Field::DoShrinkSlabZero));
        assert!(u.sees(Field::DoShrinkSlabCalls));
        assert!(u.sees(Field::ReclaimP99Ns));
    }
}
