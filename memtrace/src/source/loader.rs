//! Loads the eBPF object with this kernel's offsets and executes the attach
//! plan: for every hook, the candidates from `kernel::plan` are tried in
//! order until one loads and attaches.
use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{BtfTracePoint, FEntry, FExit, KProbe, TracePoint},
};
use memtrace_common::ProbeConfig;
use serde::Serialize;

use crate::kernel::{
    btf::KernelBtf,
    caps,
    plan::{self, AttachMode, Family, HOOKS, HookSpec, KernelFacts},
    symbols::Kallsyms,
    tracefs,
};

/// The programs, built and named by build.rs.
static EBPF_OBJ: &[u8] = aya::include_bytes_aligned!(env!("MEMTRACE_EBPF_OBJ"));
/// Why build.rs embedded an empty object (the eBPF toolchain was missing,
/// and how to install it); empty when it embedded the real one.
const EBPF_MISSING: &str = env!("MEMTRACE_EBPF_MISSING");

/// The embedded object, or why this build of memtrace has none: builds
/// without the eBPF toolchain succeed (see build.rs) and fail here instead.
fn embedded_object(object: &'static [u8], missing: &str) -> Result<&'static [u8]> {
    if !object.is_empty() {
        return Ok(object);
    }
    if missing.is_empty() {
        bail!("memtrace's embedded eBPF object is empty (MEMTRACE_EBPF_OBJ named an empty file)");
    }
    bail!("memtrace was built without its eBPF object, so it cannot trace: {missing}")
}

#[derive(Clone, Debug)]
pub struct MapSizes {
    pub memcg_entries: u32,
    pub shrinker_entries: u32,
    pub inflight_entries: u32,
    pub ringbuf_bytes: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        Self {
            memcg_entries: 4096,
            shrinker_entries: 16384,
            inflight_entries: 16384,
            ringbuf_bytes: 256 * 1024,
        }
    }
}

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub mode: AttachMode,
    pub maps: MapSizes,
    pub slow_charge_ns: u64,
    pub slow_reclaim_ns: u64,
}

/// What happened to one hook.
#[derive(Clone, Debug, Serialize)]
pub struct PlanEntry {
    pub hook: &'static str,
    pub family: Option<Family>,
    pub target: Option<String>,
    pub status: &'static str,
    /// Why the hook is unavailable, or why better families were skipped.
    pub reason: Option<String>,
    /// What the chosen family (or absence) cannot see.
    pub loses: Option<&'static str>,
    /// Every family tried, with its outcome (`doctor` tries them all).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub families: Vec<FamilyOutcome>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FamilyOutcome {
    pub family: Family,
    pub ok: bool,
    pub detail: String,
}

pub struct Loaded {
    pub ebpf: Ebpf,
    pub plan: Vec<PlanEntry>,
    pub facts: KernelFacts,
    pub kallsyms: Kallsyms,
}

impl Loaded {
    pub fn family_of(&self, hook: &str) -> Option<Family> {
        self.plan
            .iter()
            .find(|p| p.hook == hook)
            .and_then(|p| p.family)
    }

    pub fn unavailable_fields(&self) -> Vec<&'static str> {
        let chosen: Vec<(&HookSpec, Option<Family>)> =
            HOOKS.iter().map(|s| (s, self.family_of(s.hook))).collect();
        plan::unavailable_fields(&chosen)
    }
}

/// Short form of an aya error: verifier logs run to thousands of lines,
/// and an empty one only repeats the errno.
fn short_error(e: &anyhow::Error) -> String {
    let full = format!("{e:#}");
    let first = full.lines().next().unwrap_or("");
    let first = first.split(". Verifier output: :").next().unwrap_or(first);
    match first.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &first[..i]),
        None => first.to_string(),
    }
}

fn classic_offsets(config: &mut ProbeConfig) -> Result<()> {
    let root = tracefs::ensure()?;
    config.tp_reclaim_end_nr_reclaimed = tracefs::field_offset(
        &root,
        "vmscan",
        "mm_vmscan_memcg_reclaim_end",
        "nr_reclaimed",
        8,
    )?;
    let direct = tracefs::field_offset(
        &root,
        "vmscan",
        "mm_vmscan_direct_reclaim_end",
        "nr_reclaimed",
        8,
    )?;
    if direct != config.tp_reclaim_end_nr_reclaimed {
        bail!("vmscan reclaim_end tracepoints disagree on nr_reclaimed's offset");
    }
    config.tp_mark_victim_pid = tracefs::field_offset(&root, "oom", "mark_victim", "pid", 4)?;
    Ok(())
}

/// Loads the programs and attaches the plan. With `exhaustive`, every
/// candidate family is attached (not just the first that works) so that
/// `doctor` can report what each would do; such a load is for probing only.
pub fn load(opts: &LoadOptions, exhaustive: bool) -> Result<Loaded> {
    let object = embedded_object(EBPF_OBJ, EBPF_MISSING)?;
    caps::check_privileges()?;
    let kbtf = KernelBtf::load_default()?;
    let offsets = kbtf
        .kernel_offsets()
        .context("resolving kernel struct offsets from BTF")?;
    let kallsyms = Kallsyms::load()?;
    let facts = caps::gather_facts(&kbtf, &kallsyms);

    if opts.mode == AttachMode::Kprobe && !facts.kprobe_pmu {
        bail!(
            "--attach kprobe: this kernel has no kprobe support (/sys/bus/event_source/devices/kprobe \
             is missing: CONFIG_KPROBES/CONFIG_KPROBE_EVENTS unset); use --attach auto, fentry or tracepoint"
        );
    }

    let candidates: Vec<_> = HOOKS
        .iter()
        .map(|s| plan::candidates(s, opts.mode, &facts))
        .collect();

    let mut config = ProbeConfig {
        // Superblock shrinkers are told by their count_objects callback.
        super_cache_count: kallsyms.address_of("super_cache_count").unwrap_or(0),
        slow_charge_ns: opts.slow_charge_ns,
        slow_reclaim_ns: opts.slow_reclaim_ns,
        mark_victim_arg: kbtf
            .mark_victim_arg()
            .unwrap_or(memtrace_common::MARK_VICTIM_ARG_TASK),
        ..Default::default()
    };
    // Classic tracepoints need tracefs; only set it up when one of them is
    // a hook's first choice (tp_btf is preferred wherever it exists).
    let classic_first = candidates
        .iter()
        .any(|c| c.attempts.first().map(|a| a.family) == Some(Family::Tracepoint));
    let classic_error = if exhaustive || classic_first || tracefs::find().is_some() {
        classic_offsets(&mut config).err().map(|e| short_error(&e))
    } else {
        Some("not prepared: tp_btf is available for every tracepoint hook".into())
    };

    let mark_victim_known = kbtf.mark_victim_arg().is_some();
    // Everything needed from our parse is taken: free it before aya parses
    // the same 5 MB again, halving start-up's peak memory.
    drop(kbtf);
    unsafe { libc::malloc_trim(0) };
    let aya_btf = aya::Btf::from_sys_fs().context("loading kernel BTF for aya")?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&aya_btf))
        .override_global("OFFSETS", &offsets, true)
        .override_global("CONFIG", &config, true)
        .map_max_entries("MEMCG_STATS", opts.maps.memcg_entries)
        .map_max_entries("SHRINKER_STATS", opts.maps.shrinker_entries)
        .map_max_entries("INFLIGHT", opts.maps.inflight_entries)
        .map_max_entries("EVENTS", opts.maps.ringbuf_bytes)
        .load(object)
        .context("loading memtrace's eBPF object (maps)")?;

    let mut plan_entries = Vec::new();
    for (spec, cands) in HOOKS.iter().zip(&candidates) {
        let mut chosen = None;
        let mut outcomes: Vec<FamilyOutcome> = cands
            .ruled_out
            .iter()
            .map(|(f, w)| FamilyOutcome {
                family: *f,
                ok: false,
                detail: w.clone(),
            })
            .collect();
        for attempt in &cands.attempts {
            if chosen.is_some() && !exhaustive {
                break;
            }
            let result = match attempt.family {
                Family::Tracepoint if classic_error.is_some() => Err(anyhow!(
                    "tracepoint format offsets: {}",
                    classic_error.as_deref().unwrap_or("")
                )),
                Family::TpBtf if spec.hook == "oom_kill_process" && !mark_victim_known => {
                    Err(anyhow!(
                        "mark_victim's prototype is neither (task_struct *, uid) nor (int pid)"
                    ))
                }
                _ => attach(&mut ebpf, spec, attempt.family, &attempt.target, &aya_btf),
            };
            match result {
                Ok(()) => {
                    outcomes.push(FamilyOutcome {
                        family: attempt.family,
                        ok: true,
                        detail: attempt.target.clone(),
                    });
                    if chosen.is_none() {
                        chosen = Some(attempt.clone());
                    }
                }
                Err(e) => {
                    outcomes.push(FamilyOutcome {
                        family: attempt.family,
                        ok: false,
                        detail: short_error(&e),
                    });
                }
            }
        }
        let family = chosen.as_ref().map(|a| a.family);
        let loses = match family {
            None if spec.is_function_hook() => Some(spec.tracepoint_note),
            None => Some("not seen"),
            Some(Family::TpBtf | Family::Tracepoint) if !spec.tracepoint_note.is_empty() => {
                Some(spec.tracepoint_note)
            }
            _ => None,
        };
        plan_entries.push(PlanEntry {
            hook: spec.hook,
            family,
            target: chosen.map(|a| a.target),
            status: if family.is_some() {
                "attached"
            } else {
                "unavailable"
            },
            reason: skipped_reason(plan::families(opts.mode, spec), family, &outcomes),
            loses,
            families: if exhaustive { outcomes } else { Vec::new() },
        });
    }

    check_forced_mode(opts.mode, &plan_entries)?;
    drop(aya_btf);
    // The parsed BTF was just freed; give the memory back instead of
    // carrying it for the agent's whole life.
    unsafe { libc::malloc_trim(0) };
    Ok(Loaded {
        ebpf,
        plan: plan_entries,
        facts,
        kallsyms,
    })
}

/// Why each family preferred over the chosen one (all of them, when none
/// worked) was not used, in preference order.
fn skipped_reason(
    order: &[Family],
    chosen: Option<Family>,
    outcomes: &[FamilyOutcome],
) -> Option<String> {
    let better = order.iter().take_while(|f| Some(**f) != chosen);
    let why: Vec<String> = better
        .filter_map(|f| outcomes.iter().find(|o| o.family == *f && !o.ok))
        .map(|o| format!("{}: {}", o.family.as_str(), o.detail))
        .collect();
    (!why.is_empty()).then(|| why.join("; "))
}

/// A forced family the kernel cannot do at all is an error, not an empty plan.
fn check_forced_mode(mode: AttachMode, plan: &[PlanEntry]) -> Result<()> {
    let function_hooks = || {
        plan.iter()
            .filter(|p| plan::spec(p.hook).is_some_and(HookSpec::is_function_hook))
    };
    let why = || {
        function_hooks()
            .filter_map(|p| p.reason.clone())
            .next()
            .unwrap_or_default()
    };
    match mode {
        AttachMode::Fentry if function_hooks().all(|p| p.family.is_none()) => {
            bail!(
                "--attach fentry: no fentry/fexit program could be attached on this kernel ({}); use --attach auto or tracepoint",
                why()
            )
        }
        AttachMode::Kprobe if function_hooks().all(|p| p.family.is_none()) => {
            bail!(
                "--attach kprobe: no kprobe could be attached on this kernel ({}); use --attach auto or tracepoint",
                why()
            )
        }
        _ if plan.iter().all(|p| p.family.is_none()) => {
            bail!(
                "no memtrace hook could be attached on this kernel: {}",
                why()
            )
        }
        _ => Ok(()),
    }
}

fn attach(
    ebpf: &mut Ebpf,
    spec: &HookSpec,
    family: Family,
    target: &str,
    btf: &aya::Btf,
) -> Result<()> {
    match family {
        Family::Fentry => {
            let progs = spec
                .fentry
                .as_ref()
                .ok_or_else(|| anyhow!("no fentry program"))?;
            let entry: &mut FEntry = prog(ebpf, progs.entry)?.try_into()?;
            entry.load(target, btf)?;
            if let Err(e) = entry.attach() {
                let _ = entry.unload();
                return Err(e.into());
            }
            if let Some(exit) = progs.exit {
                let result = (|| -> Result<()> {
                    let p: &mut FExit = prog(ebpf, exit)?.try_into()?;
                    p.load(target, btf)?;
                    p.attach()?;
                    Ok(())
                })();
                if let Err(e) = result {
                    let entry: &mut FEntry = prog(ebpf, progs.entry)?.try_into()?;
                    let _ = entry.unload();
                    return Err(e);
                }
            }
            Ok(())
        }
        Family::Kprobe => {
            let progs = spec
                .kprobe
                .as_ref()
                .ok_or_else(|| anyhow!("no kprobe program"))?;
            let names: Vec<&str> = std::iter::once(progs.entry).chain(progs.exit).collect();
            attach_all(ebpf, &names, |p| {
                let k: &mut KProbe = p.try_into()?;
                k.load()?;
                k.attach(target, 0)?;
                Ok(())
            })
        }
        Family::TpBtf => {
            let names: Vec<(&str, &str)> = spec.tp_btf.to_vec();
            let mut done = Vec::new();
            for (name, tp) in names {
                let r = (|| -> Result<()> {
                    let p: &mut BtfTracePoint = prog(ebpf, name)?.try_into()?;
                    p.load(tp, btf)?;
                    p.attach()?;
                    Ok(())
                })();
                if let Err(e) = r {
                    unload_all(ebpf, &done);
                    return Err(e.context(format!("raw tracepoint {tp}")));
                }
                done.push(name);
            }
            Ok(())
        }
        Family::Tracepoint => {
            let mut done = Vec::new();
            for &(name, category, tp) in spec.tracepoint {
                let r = (|| -> Result<()> {
                    let p: &mut TracePoint = prog(ebpf, name)?.try_into()?;
                    p.load()?;
                    p.attach(category, tp)?;
                    Ok(())
                })();
                if let Err(e) = r {
                    unload_all(ebpf, &done);
                    return Err(e.context(format!("tracepoint {category}:{tp}")));
                }
                done.push(name);
            }
            Ok(())
        }
    }
}

fn prog<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))
}

fn attach_all(
    ebpf: &mut Ebpf,
    names: &[&'static str],
    mut f: impl FnMut(&mut aya::programs::Program) -> Result<()>,
) -> Result<()> {
    let mut done = Vec::new();
    for &name in names {
        if let Err(e) = f(prog(ebpf, name)?) {
            unload_all(ebpf, &done);
            let _ = unload(ebpf, name);
            return Err(e);
        }
        done.push(name);
    }
    Ok(())
}

fn unload(ebpf: &mut Ebpf, name: &str) -> Result<()> {
    use aya::programs::Program;
    match prog(ebpf, name)? {
        Program::KProbe(p) => p.unload()?,
        Program::FEntry(p) => p.unload()?,
        Program::FExit(p) => p.unload()?,
        Program::BtfTracePoint(p) => p.unload()?,
        Program::TracePoint(p) => p.unload()?,
        _ => {}
    }
    Ok(())
}

fn unload_all(ebpf: &mut Ebpf, names: &[&str]) {
    for n in names {
        let _ = unload(ebpf, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_names_the_build_problem() {
        static OBJ: [u8; 4] = *b"\x7fELF";
        assert_eq!(embedded_object(&OBJ, "").unwrap(), &OBJ);
        let why = "/usr/bin/rustc does not exist; run `cargo xtask setup`, then build again";
        let err = embedded_object(&[], why).unwrap_err().to_string();
        assert!(err.contains("built without its eBPF object"), "{err}");
        assert!(err.ends_with(why), "{err}");
        let err = embedded_object(&[], "").unwrap_err().to_string();
        assert!(
            err.contains("MEMTRACE_EBPF_OBJ named an empty file"),
            "{err}"
        );
    }
}
