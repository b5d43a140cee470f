//! Loads the eBPF object with this kernel's offsets and executes the attach
//! plan: for every hook, the candidates from `kernel::plan` are tried in
//! order until one loads and attaches.
use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{BtfTracePoint, FEntry, FExit, KProbe, TracePoint},
};
use memtrace_common::ProbeConfig;

use crate::kernel::{
    btf::KernelBtf,
    caps, memory,
    plan::{self, AttachMode, Family, HOOKS, HookSpec, KernelFacts},
    symbols::Kallsyms,
    tracefs,
};
use crate::output::fields::Unseen;
use crate::source::map_memory::{map_memory, mib, possible_cpus};

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
    /// Time one `do_shrink_slab` call in this many (a power of two; 1 =
    /// every call): `ProbeConfig::shrink_time_mask`.
    pub shrinker_time_sample: u32,
    /// Attach the empty `floor_*` twin of every program instead (for
    /// `cargo xtask bench`: the cost of running any program on the hooks).
    pub floor: bool,
}

pub use crate::output::records::{FamilyOutcome, PlanEntry};

pub struct Loaded {
    pub ebpf: Ebpf,
    pub plan: Vec<PlanEntry>,
    pub facts: KernelFacts,
    /// Only the hook targets and `super_cache_count` (planning's part of
    /// /proc/kallsyms); shrinker callbacks are named by a `Symbolizer`.
    pub kallsyms: Kallsyms,
    /// The kretprobe events of the kprobe family (removed when dropped).
    pub kretprobes: Vec<super::kretprobe::Event>,
    /// `LoadOptions::shrinker_time_sample`, as the programs got it.
    pub shrinker_time_sample: u32,
}

impl Loaded {
    pub fn family_of(&self, hook: &str) -> Option<Family> {
        self.plan
            .iter()
            .find(|p| p.hook == hook)
            .and_then(|p| p.family)
    }

    pub fn unavailable_fields(&self) -> Unseen {
        unavailable_fields(&self.plan)
    }
}

/// Record fields that are null on this plan.
pub fn unavailable_fields(plan: &[PlanEntry]) -> Unseen {
    let family_of = |hook: &str| plan.iter().find(|p| p.hook == hook).and_then(|p| p.family);
    let chosen: Vec<(&HookSpec, Option<Family>)> =
        HOOKS.iter().map(|s| (s, family_of(s.hook))).collect();
    plan::unavailable_fields(&chosen)
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

/// A map the kernel would not create, with the cause and the fix instead
/// of aya's bare errno ("failed to create map EVENTS: Cannot allocate
/// memory").
fn map_create_error(e: aya::EbpfError, sizes: &MapSizes) -> anyhow::Error {
    let aya::EbpfError::MapError(aya::maps::MapError::CreateError { name, io_error }) = &e else {
        return anyhow::Error::new(e).context("loading memtrace's eBPF object (maps)");
    };
    let maps = map_memory(sizes, possible_cpus());
    let this = maps
        .iter()
        .find(|m| m.name == name)
        .map(|m| format!("{}, {} entries", mib(m.bytes), m.max_entries))
        .unwrap_or_default();
    let total = mib(maps.iter().map(|m| m.bytes).sum());
    let why = match io_error.raw_os_error() {
        Some(libc::ENOMEM) => format!(
            "the kernel could not allocate map {name} ({this}; {total} for all maps): \
             not enough free memory, or memtrace's own memory cgroup is limited below it \
             (map memory is charged to it on 5.11+); lower --memcg-entries, \
             --shrinker-entries, --inflight-entries or --ringbuf-kib, or raise that limit"
        ),
        Some(libc::EPERM) => format!(
            "the kernel refused to create map {name} (EPERM): before 5.11 map memory counts \
             against RLIMIT_MEMLOCK ({total} for all maps); raise it (`ulimit -l unlimited`, \
             LimitMEMLOCK=infinity) or lower the map sizes"
        ),
        Some(libc::EINVAL | libc::E2BIG) => format!(
            "the kernel rejected the size of map {name} ({this}: {io_error}); \
             --ringbuf-kib must be a power of two number of pages, and entries at least 16"
        ),
        _ => format!("the kernel could not create map {name} ({this}): {io_error}"),
    };
    anyhow!("{why}")
}

/// `ProbeConfig.scan_cpus`: the possible CPUs when the kernel has
/// `bpf_map_lookup_percpu_elem` (5.19+; its helper id is in the kernel's
/// `enum bpf_func_id`), else 0 (a call whose thread changed CPU between
/// entry and return is then an unmatched return).
fn scan_cpus(kbtf: &KernelBtf) -> u32 {
    if kbtf
        .enum_value("bpf_func_id", "BPF_FUNC_map_lookup_percpu_elem")
        .is_err()
    {
        return 0;
    }
    u32::try_from(possible_cpus())
        .unwrap_or(u32::MAX)
        .min(memtrace_common::MAX_SCAN_CPUS)
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

/// The superblock shrinkers' `count_objects` callback.
const SUPER_CACHE_COUNT: &str = "super_cache_count";

/// Loads the programs and attaches the plan. With `exhaustive`, every
/// candidate family is attached (not just the first that works) so that
/// `doctor` can report what each would do; such a load is for probing only.
pub fn load(opts: &LoadOptions, exhaustive: bool) -> Result<Loaded> {
    let object = embedded_object(EBPF_OBJ, EBPF_MISSING)?;
    caps::check_privileges()?;
    // glibc raises its mmap threshold to the size of any mmapped block
    // freed (our BTF reader's 5 MiB buffer), after which aya's large BTF
    // vectors grow inside the heap: each doubling copies (old and new
    // alive at once) and the freed space stays resident. A fixed
    // threshold keeps blocks over 128 KiB mmapped: they grow by mremap
    // and go back to the kernel when freed (peak 34.8 -> 29.7 MiB here).
    // SAFETY: mallopt only sets a malloc tunable; no pointers.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10) };
    memory::note("start");
    let kbtf = KernelBtf::load_default()?;
    memory::note("reading kernel BTF (memtrace's reader)");
    let offsets = kbtf
        .kernel_offsets()
        .context("resolving kernel struct offsets from BTF")?;
    // Only these: the whole table is never held (see `Symbolizer`).
    let wanted: Vec<&str> = HOOKS
        .iter()
        .flat_map(|s| s.functions.iter().copied())
        .chain([SUPER_CACHE_COUNT])
        .collect();
    let planning = Kallsyms::load_only(&wanted)?;
    memory::note("finding the hook targets in /proc/kallsyms");
    let facts = caps::gather_facts(&kbtf, &planning);

    check_mode_supported(opts.mode, &facts)?;

    let candidates: Vec<_> = HOOKS
        .iter()
        .map(|s| plan::candidates(s, opts.mode, &facts))
        .collect();

    let shrinker_time_sample = time_sample(opts);
    let mut config = ProbeConfig {
        // Superblock shrinkers are told by their count_objects callback.
        super_cache_count: planning.address_of(SUPER_CACHE_COUNT).unwrap_or(0),
        slow_charge_ns: opts.slow_charge_ns,
        slow_reclaim_ns: opts.slow_reclaim_ns,
        mark_victim_arg: kbtf
            .mark_victim_arg()
            .unwrap_or(memtrace_common::MARK_VICTIM_ARG_TASK),
        scan_cpus: scan_cpus(&kbtf),
        shrink_time_mask: u64::from(shrinker_time_sample - 1),
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
    // The kernel's BTF is read more than once, which aya 0.14 leaves no
    // way around: aya::Btf has no public accessor for its types (only
    // id_by_type_name_kind), so offsets and prototypes come from
    // KernelBtf's own lean reader (the file plus a u32 index, ~7 MiB; see
    // kernel/btf/reader.rs); EbpfLoader::new() always parses
    // /sys/kernel/btf/vmlinux itself and keeps it private; and the
    // fentry/tp_btf loads need a &aya::Btf of our own. What can be done is
    // never holding two at once, nor the symbol table: ours is dropped
    // before aya parses (each aya parse is ~+11 MiB held, ~+19 MiB at its
    // peak with the mmap threshold above: the process's peak, ~25 MiB
    // here; `RUST_LOG=memtrace=debug` logs each step), and the loader's
    // parse is gone before ours is made for the attaches.
    // Dropping KernelBtf needs no malloc_trim: its buffers are large
    // enough to be unmapped when freed (a trim here returned ~130 KiB).
    drop(kbtf);
    memory::note("dropping memtrace's BTF");
    // The loader uses its own parse only for CO-RE relocations, which a
    // rustc-built object does not have (toolchain notes, section 5); it
    // and its parse are dropped with it, after the load.
    let mut loader = EbpfLoader::new();
    memory::note("EbpfLoader::new (aya's BTF parse)");
    let mut ebpf = loader
        .override_global("OFFSETS", &offsets, true)
        .override_global("CONFIG", &config, true)
        .map_max_entries("MEMCG_STATS", opts.maps.memcg_entries)
        .map_max_entries("SHRINKER_STATS", opts.maps.shrinker_entries)
        .map_max_entries("INFLIGHT", opts.maps.inflight_entries)
        .map_max_entries("EVENTS", opts.maps.ringbuf_bytes)
        .load(object)
        .map_err(|e| map_create_error(e, &opts.maps))?;
    drop(loader);
    memory::note("loading the object, dropping the loader");
    let aya_btf = aya::Btf::from_sys_fs().context("loading kernel BTF for aya")?;
    memory::note("aya's BTF parse for the attaches");

    let mut plan_entries = Vec::new();
    let mut kretprobes = Vec::new();
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
                _ => attach(
                    &mut ebpf,
                    spec,
                    attempt.family,
                    &attempt.target,
                    &aya_btf,
                    opts.floor,
                    &mut kretprobes,
                ),
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
                    // The whole error (a verifier log runs to thousands of
                    // lines) for `--log-level debug`; the plan keeps its
                    // first line.
                    log::debug!("{} with {}: {e:#}", spec.hook, attempt.family.as_str());
                    outcomes.push(FamilyOutcome {
                        family: attempt.family,
                        ok: false,
                        detail: short_error(&e),
                    });
                }
            }
        }
        let mut entry = plan_entry(spec, opts.mode, chosen, &outcomes);
        if exhaustive {
            entry.families = outcomes;
        }
        plan_entries.push(entry);
    }

    check_forced_mode(opts.mode, &plan_entries)?;
    mark_started(&mut ebpf)?;
    drop(aya_btf);
    // aya's parsed BTF was just freed, in many small allocations the heap
    // keeps; give the memory back (~19 MiB measured) instead of carrying
    // it for the agent's whole life.
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it
    // takes no pointers and is safe to call at any time.
    unsafe { libc::malloc_trim(0) };
    memory::note("attaching, dropping aya's BTF");
    Ok(Loaded {
        ebpf,
        plan: plan_entries,
        facts,
        kallsyms: planning,
        kretprobes,
        shrinker_time_sample,
    })
}

/// `LoadOptions::shrinker_time_sample` as the programs can draw it: a power
/// of two (the CLI allows nothing else; rounded down here so that a caller
/// that passes another number gets a mask whose weight matches it).
fn time_sample(opts: &LoadOptions) -> u32 {
    let n = opts.shrinker_time_sample.max(1);
    1 << n.ilog2()
}

/// Tells the programs that every hook is attached (`STARTED`, nonzero:
/// the time, for whoever reads the map): entry records made before this,
/// while a hook's entry program was attached and its return program not
/// yet, are left behind without a lost return; only those made later
/// (`Inflight::started`) count in `missed_returns` when found unreturned.
fn mark_started(ebpf: &mut aya::Ebpf) -> Result<()> {
    let now = crate::clock::Clock::new().now_ns();
    let map = ebpf
        .map_mut("STARTED")
        .context("the eBPF object has no STARTED map")?;
    let mut started: aya::maps::Array<_, u64> = aya::maps::Array::try_from(map)?;
    started.set(0, now, 0).context("writing STARTED")?;
    Ok(())
}

/// The plan entry for a hook attached with `chosen` (None: nothing
/// attached) after the `outcomes` of the families tried; `families` is
/// left empty.
fn plan_entry(
    spec: &HookSpec,
    mode: AttachMode,
    chosen: Option<plan::Attempt>,
    outcomes: &[FamilyOutcome],
) -> PlanEntry {
    let family = chosen.as_ref().map(|a| a.family);
    let loses = match family {
        None if spec.is_function_hook() => Some(spec.tracepoint_note),
        None => Some("not seen"),
        Some(Family::TpBtf | Family::Tracepoint) if !spec.tracepoint_note.is_empty() => {
            Some(spec.tracepoint_note)
        }
        _ => None,
    }
    .map(str::to_string);
    PlanEntry {
        hook: spec.hook.to_string(),
        pairing: family
            .and_then(|f| plan::pairing(spec, f))
            .map(str::to_string),
        family,
        target: chosen.map(|a| a.target),
        status: if family.is_some() {
            "attached"
        } else {
            "unavailable"
        }
        .to_string(),
        reason: skipped_reason(plan::families(mode, spec), family, outcomes),
        loses,
        families: Vec::new(),
    }
}

/// The plan `--attach mode` would get, derived from an exhaustive load in
/// `auto` mode (which tries every family, a superset of any mode's): per
/// hook, the first of the mode's families that worked. Fails with the
/// error a load in that mode gives when the kernel cannot do it, so that
/// `doctor --attach X` says what `stream --attach X` would.
pub fn plan_for_mode(
    mode: AttachMode,
    exhaustive: &[PlanEntry],
    facts: &KernelFacts,
) -> (Vec<PlanEntry>, Result<()>) {
    let mut out = Vec::new();
    for entry in exhaustive {
        let Some(spec) = plan::spec(&entry.hook) else {
            continue;
        };
        let order = plan::families(mode, spec);
        let outcomes: Vec<FamilyOutcome> = entry
            .families
            .iter()
            .filter(|o| order.contains(&o.family))
            .cloned()
            .collect();
        let chosen = order.iter().find_map(|f| {
            outcomes
                .iter()
                .find(|o| o.family == *f && o.ok)
                .map(|o| plan::Attempt {
                    family: o.family,
                    target: o.detail.clone(),
                })
        });
        let mut e = plan_entry(spec, mode, chosen, &outcomes);
        e.families = outcomes;
        out.push(e);
    }
    let verdict = check_mode_supported(mode, facts).and_then(|()| check_forced_mode(mode, &out));
    (out, verdict)
}

/// A mode the kernel cannot do at all, known before anything is loaded.
fn check_mode_supported(mode: AttachMode, facts: &KernelFacts) -> Result<()> {
    if mode == AttachMode::Kprobe && !facts.kprobe_pmu {
        bail!(
            "--attach kprobe: this kernel has no kprobe support (/sys/bus/event_source/devices/kprobe \
             is missing: CONFIG_KPROBES/CONFIG_KPROBE_EVENTS unset); use --attach auto, fentry or tracepoint"
        );
    }
    Ok(())
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
            .filter(|p| plan::spec(&p.hook).is_some_and(HookSpec::is_function_hook))
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

/// The program attached for `name`: itself, or its empty floor twin.
fn program_name(name: &str, floor: bool) -> String {
    if floor {
        format!("floor_{name}")
    } else {
        name.to_string()
    }
}

fn attach(
    ebpf: &mut Ebpf,
    spec: &HookSpec,
    family: Family,
    target: &str,
    btf: &aya::Btf,
    floor: bool,
    kretprobes: &mut Vec<super::kretprobe::Event>,
) -> Result<()> {
    let name = |n: &str| program_name(n, floor);
    match family {
        Family::Fentry => {
            let progs = spec
                .fentry
                .as_ref()
                .ok_or_else(|| anyhow!("no fentry program"))?;
            let entry: &mut FEntry = prog(ebpf, &name(progs.entry))?.try_into()?;
            entry.load(target, btf)?;
            if let Err(e) = entry.attach() {
                let _ = entry.unload();
                return Err(e.into());
            }
            if let Some(exit) = progs.exit {
                let result = (|| -> Result<()> {
                    let p: &mut FExit = prog(ebpf, &name(exit))?.try_into()?;
                    p.load(target, btf)?;
                    p.attach()?;
                    Ok(())
                })();
                if let Err(e) = result {
                    let entry: &mut FEntry = prog(ebpf, &name(progs.entry))?.try_into()?;
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
            let names: Vec<String> = std::iter::once(progs.entry)
                .chain(progs.exit)
                .map(name)
                .collect();
            let exit = progs.exit.map(name);
            let tracefs = tracefs::ensure().ok();
            attach_all(ebpf, &names, |p, prog_name| {
                let k: &mut KProbe = p.try_into()?;
                k.load()?;
                // The return: through a tracefs event with room for
                // kretprobe::MAXACTIVE calls at once where tracefs is
                // there, else aya's (the kernel's default room).
                if exit.as_deref() == Some(prog_name) {
                    if let Some(t) = &tracefs {
                        match super::kretprobe::attach(k, target, t) {
                            Ok(ev) => {
                                kretprobes.push(ev);
                                return Ok(());
                            }
                            // Visible: the kernel's default room may lose
                            // returns (`missed_returns`) in a reclaim storm.
                            Err(e) => log::warn!(
                                "kretprobe on {target} through tracefs: {e:#}; attaching through \
                                 perf with the kernel's default room for calls in flight"
                            ),
                        }
                    }
                }
                k.attach(target, 0)?;
                Ok(())
            })
        }
        Family::TpBtf => attach_tracepoints(
            ebpf,
            spec.tp_btf,
            |(n, _)| name(n),
            |(_, tp)| format!("raw tracepoint {tp}"),
            |p, (_, tp)| {
                let p: &mut BtfTracePoint = p.try_into()?;
                p.load(tp, btf)?;
                p.attach()?;
                Ok(())
            },
        ),
        Family::Tracepoint => attach_tracepoints(
            ebpf,
            spec.tracepoint,
            |(n, _, _)| name(n),
            |(_, category, tp)| format!("tracepoint {category}:{tp}"),
            |p, (_, category, tp)| {
                let p: &mut TracePoint = p.try_into()?;
                p.load()?;
                p.attach(category, tp)?;
                Ok(())
            },
        ),
    }
}

/// Loads and attaches one program per tracepoint in `tps`, in order. On the
/// first failure it unloads the programs already attached and says which
/// tracepoint (`what`) failed.
fn attach_tracepoints<T: Copy>(
    ebpf: &mut Ebpf,
    tps: &[T],
    name: impl Fn(T) -> String,
    what: impl Fn(T) -> String,
    mut f: impl FnMut(&mut aya::programs::Program, T) -> Result<()>,
) -> Result<()> {
    let mut done = Vec::new();
    for &tp in tps {
        if let Err(e) = prog(ebpf, &name(tp)).and_then(|p| f(p, tp)) {
            unload_all(ebpf, &done);
            return Err(e.context(what(tp)));
        }
        done.push(name(tp));
    }
    Ok(())
}

fn prog<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))
}

fn attach_all(
    ebpf: &mut Ebpf,
    names: &[String],
    mut f: impl FnMut(&mut aya::programs::Program, &str) -> Result<()>,
) -> Result<()> {
    let mut done: Vec<String> = Vec::new();
    for name in names {
        if let Err(e) = f(prog(ebpf, name)?, name) {
            unload_all(ebpf, &done);
            let _ = unload(ebpf, name);
            return Err(e);
        }
        done.push(name.clone());
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

fn unload_all(ebpf: &mut Ebpf, names: &[String]) {
    for n in names {
        let _ = unload(ebpf, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(family: Family, ok: bool) -> FamilyOutcome {
        FamilyOutcome {
            family,
            ok,
            detail: if ok {
                format!("{}-target", family.as_str())
            } else {
                format!("{} failed", family.as_str())
            },
        }
    }

    /// What an exhaustive `auto` load reports: per hook, every family's
    /// outcome (`auto` tries all of them).
    fn exhaustive(fentry: bool, kprobe: bool) -> Vec<PlanEntry> {
        HOOKS
            .iter()
            .map(|spec| {
                let outcomes: Vec<FamilyOutcome> = plan::families(AttachMode::Auto, spec)
                    .iter()
                    .map(|&f| {
                        let ok = match f {
                            Family::Fentry => fentry && spec.fentry.is_some(),
                            Family::Kprobe => kprobe && spec.kprobe.is_some(),
                            Family::TpBtf => !spec.tp_btf.is_empty(),
                            Family::Tracepoint => !spec.tracepoint.is_empty(),
                        };
                        outcome(f, ok)
                    })
                    .collect();
                let chosen = outcomes.iter().find(|o| o.ok).map(|o| plan::Attempt {
                    family: o.family,
                    target: o.detail.clone(),
                });
                let mut e = plan_entry(spec, AttachMode::Auto, chosen, &outcomes);
                e.families = outcomes;
                e
            })
            .collect()
    }

    /// A kernel whose perf events can make kprobes.
    fn with_kprobes() -> KernelFacts {
        KernelFacts {
            kprobe_pmu: true,
            ..Default::default()
        }
    }

    fn families(plan: &[PlanEntry]) -> Vec<(&str, Option<Family>)> {
        plan.iter().map(|p| (p.hook.as_str(), p.family)).collect()
    }

    #[test]
    fn plan_for_auto_is_the_exhaustive_loads_choice() {
        let all = exhaustive(false, true);
        let (plan, verdict) = plan_for_mode(AttachMode::Auto, &all, &with_kprobes());
        verdict.unwrap();
        assert_eq!(families(&plan), families(&all));
        let charge = &plan[0];
        assert_eq!(charge.family, Some(Family::Kprobe));
        assert_eq!(charge.target.as_deref(), Some("kprobe-target"));
        assert_eq!(charge.reason.as_deref(), Some("fentry: fentry failed"));
    }

    #[test]
    fn plan_for_a_forced_mode_uses_only_its_families() {
        let all = exhaustive(true, true);
        for (mode, want) in [
            (AttachMode::Kprobe, [Family::Kprobe].as_slice()),
            (AttachMode::Fentry, &[Family::Fentry]),
            (AttachMode::Tracepoint, &[Family::TpBtf, Family::Tracepoint]),
        ] {
            let (plan, verdict) = plan_for_mode(mode, &all, &with_kprobes());
            verdict.unwrap();
            for p in &plan {
                let spec = plan::spec(&p.hook).unwrap();
                let allowed = plan::families(mode, spec);
                assert!(p.families.iter().all(|o| allowed.contains(&o.family)));
                if spec.is_function_hook() {
                    assert!(p.family.is_none_or(|f| want.contains(&f)), "{mode:?} {p:?}");
                }
            }
        }
        let (plan, _) = plan_for_mode(AttachMode::Tracepoint, &all, &with_kprobes());
        let got = families(&plan);
        assert_eq!(got[0], ("try_charge_memcg", None));
        assert_eq!(got[2], ("do_shrink_slab", Some(Family::TpBtf)));
        assert!(plan[0].loses.is_some());
    }

    #[test]
    fn plan_for_an_impossible_mode_fails_like_a_load() {
        // No kprobe PMU: the error a load in that mode gives up front.
        let all = exhaustive(true, false);
        let (plan, verdict) = plan_for_mode(AttachMode::Kprobe, &all, &KernelFacts::default());
        let e = verdict.unwrap_err().to_string();
        assert!(
            e.starts_with("--attach kprobe: this kernel has no kprobe support"),
            "{e}"
        );
        assert!(plan[0].family.is_none());
        // Every fentry attach failed: the error after a load's attempts.
        let all = exhaustive(false, false);
        let (_, verdict) = plan_for_mode(AttachMode::Fentry, &all, &with_kprobes());
        let e = verdict.unwrap_err().to_string();
        assert_eq!(
            e,
            "--attach fentry: no fentry/fexit program could be attached on this kernel \
             (fentry: fentry failed); use --attach auto or tracepoint"
        );
    }

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
