//! `memtrace doctor`: what this kernel supports and the plan memtrace would
//! use, found by actually loading and attaching every candidate program.
use crate::output::fields::Unseen;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::{
    cgroup,
    cli::DoctorArgs,
    kernel::{
        btf::VMLINUX_BTF,
        caps,
        plan::{AttachMode, Family, HOOKS},
        tracefs,
    },
    output::{escape, json, records::Degraded},
    source::{
        kmsg::KmsgReader,
        loader::{self, PlanEntry},
        map_memory::{MapMemory, map_memory, possible_cpus},
    },
};

#[derive(Serialize)]
struct FamilySupport {
    available: bool,
    reason: Option<String>,
}

#[derive(Serialize)]
struct Report {
    kernel_release: String,
    btf: serde_json::Value,
    cgroup_mode: Option<String>,
    cgroup_root: Option<String>,
    cgroup_error: Option<String>,
    tracefs: Option<String>,
    privileges: Option<String>,
    families: std::collections::BTreeMap<&'static str, FamilySupport>,
    /// Kernel function each function hook resolves to (exact kallsyms name).
    symbols: std::collections::BTreeMap<&'static str, Option<String>>,
    /// The `--attach` mode the plan is for.
    attach: AttachMode,
    /// The plan that mode picks, with the outcome of each of its families.
    plan: Vec<PlanEntry>,
    unavailable: Unseen,
    /// Sources a reduced privilege set or this host's settings degrade
    /// (the header's `degraded`); null when the programs did not load.
    degraded: Option<Vec<Degraded>>,
    maps: Vec<MapMemory>,
    maps_total_bytes: u64,
    error: Option<String>,
}

pub fn run(args: DoctorArgs) -> Result<()> {
    let mut opts = args.probe.load_options()?;
    // Every family is tried (auto, exhaustively) for the survey of what
    // this kernel can do; the plan of the requested mode is derived from
    // those outcomes.
    let mode = opts.mode;
    opts.mode = AttachMode::Auto;
    let fs = cgroup::detect();
    let btf_present = Path::new(VMLINUX_BTF).exists();
    let privileges = caps::check_privileges().err().map(|e| e.to_string());
    let mut report = Report {
        kernel_release: caps::kernel_release(),
        btf: serde_json::json!({ "available": btf_present, "path": VMLINUX_BTF }),
        cgroup_mode: fs.as_ref().ok().map(|f| f.mode.to_string()),
        cgroup_root: fs.as_ref().ok().map(|f| f.root.display().to_string()),
        cgroup_error: fs.as_ref().err().map(|e| format!("{e:#}")),
        tracefs: tracefs::find().map(|p| p.display().to_string()),
        privileges: privileges.clone(),
        families: Default::default(),
        symbols: Default::default(),
        attach: mode,
        plan: Vec::new(),
        unavailable: Unseen::default(),
        degraded: None,
        maps: map_memory(&opts.maps, possible_cpus()),
        maps_total_bytes: 0,
        error: None,
    };
    report.maps_total_bytes = report.maps.iter().map(|m| m.bytes).sum();

    let mut ok = true;
    match loader::load(&opts, true) {
        Ok(loaded) => {
            for spec in HOOKS.iter().filter(|s| s.is_function_hook()) {
                let found = spec
                    .functions
                    .iter()
                    .find(|f| loaded.facts.kallsyms.contains(**f))
                    .map(|f| f.to_string());
                report.symbols.insert(spec.hook, found);
            }
            for family in [
                Family::Fentry,
                Family::Kprobe,
                Family::TpBtf,
                Family::Tracepoint,
            ] {
                let outcomes = loaded
                    .plan
                    .iter()
                    .flat_map(|p| p.families.iter())
                    .filter(|o| o.family == family);
                let mut available = false;
                let mut reason = None;
                for o in outcomes {
                    if o.ok {
                        available = true;
                    } else if reason.is_none() && !o.detail.starts_with("no ") {
                        reason = Some(o.detail.clone());
                    }
                }
                report.families.insert(
                    family.as_str(),
                    FamilySupport {
                        available,
                        reason: (!available).then_some(reason).flatten(),
                    },
                );
            }
            let kmsg_error = KmsgReader::open().err();
            report.degraded = Some(caps::degraded_sources(
                kmsg_error.as_ref(),
                &loaded.kallsyms,
                fs.as_ref().ok().map(|f| f.root.as_path()),
            ));
            let (plan, verdict) = loader::plan_for_mode(mode, &loaded.plan, &loaded.facts);
            report.unavailable = loader::unavailable_fields(&plan);
            report.plan = plan;
            if let Err(e) = verdict {
                ok = false;
                report.error = Some(format!("{e:#}"));
            }
            // Dropping `loaded` detaches everything doctor attached.
        }
        Err(e) => {
            ok = false;
            report.error = Some(format!("{e:#}"));
        }
    }

    if args.json {
        use std::io::Write;
        std::io::stdout().write_all(&json::line(&report))?;
    } else {
        print_text(&report);
    }
    if ok {
        Ok(())
    } else {
        anyhow::bail!("{}", report.error.unwrap_or_default())
    }
}

fn print_text(r: &Report) {
    let t = escape::text;
    println!("kernel        {}", t(&r.kernel_release));
    println!(
        "BTF           {}",
        if r.btf["available"] == true {
            format!("yes ({VMLINUX_BTF})")
        } else {
            format!("NO: {VMLINUX_BTF} missing (CONFIG_DEBUG_INFO_BTF)")
        }
    );
    match (&r.cgroup_mode, &r.cgroup_error) {
        (Some(m), _) => println!(
            "cgroups       {m} (memory hierarchy at {})",
            t(r.cgroup_root.as_deref().unwrap_or("?"))
        ),
        (None, Some(e)) => println!("cgroups       NO: {}", t(e)),
        _ => {}
    }
    println!(
        "tracefs       {}",
        r.tracefs.as_deref().map(t).unwrap_or_else(|| {
            "not mounted (memtrace mounts it privately when a classic tracepoint is needed)".into()
        })
    );
    if let Some(p) = &r.privileges {
        println!("privileges    NO: {}", t(p));
    }
    if let Some(d) = &r.degraded {
        if d.is_empty() {
            println!("sources       all readable (kernel log, symbols, tracefs, /proc, cgroupfs)");
        } else {
            println!("sources       DEGRADED:");
            for x in d {
                println!("  {:<11} {}", x.source, t(&x.reason));
                println!("  {:<11} loses: {}", "", t(&x.loses));
            }
        }
    }
    println!();
    println!("program families:");
    for (name, f) in &r.families {
        let state = if f.available {
            "available".to_string()
        } else {
            format!("unavailable: {}", t(f.reason.as_deref().unwrap_or("-")))
        };
        println!("  {name:<11} {state}");
    }
    println!();
    println!("symbols:");
    for (hook, sym) in &r.symbols {
        println!(
            "  {hook:<17} {}",
            sym.as_deref().map(t).unwrap_or_else(|| "not found".into())
        );
    }
    println!();
    println!("attach plan (--attach {}):", r.attach.as_str());
    for p in &r.plan {
        let fam = p.family.map(Family::as_str).unwrap_or("-");
        let line = format!(
            "  {:<17} {:<11} {:<12} {}",
            p.hook,
            fam,
            p.status,
            t(p.target.as_deref().unwrap_or(""))
        );
        println!("{}", line.trim_end());
        if let Some(l) = &p.loses {
            println!("  {:<17} cannot see: {}", "", t(l));
        }
        if let Some(l) = &p.pairing {
            println!("  {:<17} pairing: {}", "", t(l));
        }
    }
    if !r.unavailable.is_empty() {
        println!();
        println!(
            "fields null in records on this plan: {}",
            r.unavailable.names().join(", ")
        );
    }
    println!();
    println!(
        "kernel map memory at these sizes ({} possible CPUs):",
        possible_cpus()
    );
    for m in &r.maps {
        // A ring buffer's "entries" are its size in bytes.
        let unit = if m.kind == "ringbuf" {
            "bytes"
        } else {
            "entries"
        };
        println!(
            "  {:<15} {:<12} {:>7} {unit:<7}  {:>9.1} KiB",
            m.name,
            m.kind,
            m.max_entries,
            m.bytes as f64 / 1024.0
        );
    }
    println!("  total {:.1} MiB", r.maps_total_bytes as f64 / 1048576.0);
    if let Some(e) = &r.error {
        println!();
        println!("error: {}", t(e));
    }
}
