//! Markdown tables from a results JSON (a live run, or `--report FILE`).

use std::fmt::Write as _;

use serde_json::Value;

use super::sys::{Summary, summarize};

/// (table, samples' workload kind, unit, which passes of a storm session).
const TABLES: [(&str, &str, &str, Passes); 4] = [
    (
        "storm, steady state",
        "storm",
        "per `drop_caches` pass, 2nd and later passes of a session",
        Passes::Later,
    ),
    (
        "storm, first pass after the tracer started",
        "storm",
        "the tracers create their map entries for every memcg and shrinker here",
        Passes::First,
    ),
    ("churn", "churn", "per dd run", Passes::All),
    ("oom", "oom", "per OOM kill", Passes::All),
];

const WORKLOADS: [(&str, &str); 3] = [
    ("storm", "per `drop_caches` pass"),
    ("churn", "per dd run"),
    ("oom", "per OOM kill"),
];

#[derive(Clone, Copy, PartialEq)]
enum Passes {
    All,
    First,
    Later,
}

/// A storm sample's time per pass for the chosen passes: `total` is the
/// workload's key for all passes, `per_pass` the one listing each pass.
fn per_pass(s: &Value, passes: Passes, total: &str, per_pass: &str) -> Option<f64> {
    let drops: Vec<f64> = s["workload"][per_pass]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    match passes {
        Passes::All => s["workload"][total].as_f64(),
        Passes::First => drops.first().copied(),
        Passes::Later if drops.len() > 1 => {
            Some(drops[1..].iter().sum::<f64>() / (drops.len() - 1) as f64)
        }
        Passes::Later => None,
    }
}

/// Kernel (CPU) time per pass.
fn kernel_of(s: &Value, passes: Passes) -> Option<f64> {
    per_pass(s, passes, "kernel_s", "drop_cpu_s")
}

fn wall_of(s: &Value, passes: Passes) -> Option<f64> {
    per_pass(s, passes, "wall_s", "drop_wall_s")
}

/// Seconds, in a readable unit.
pub fn secs(s: f64) -> String {
    if !s.is_finite() {
        "-".into()
    } else if s.abs() >= 1.0 {
        format!("{s:.2} s")
    } else if s.abs() >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

fn spread(s: &Summary, f: impl Fn(f64) -> String) -> String {
    format!("{} ({}–{})", f(s.median), f(s.min), f(s.max))
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.3}x", a / b)
    } else {
        "-".into()
    }
}

fn samples<'a>(r: &'a Value, kind: &'a str, config: &'a str) -> impl Iterator<Item = &'a Value> {
    r["samples"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(move |s| s["workload_kind"] == kind && s["config"] == config)
}

/// Units of work in one sample (drops, kills, runs).
fn units(s: &Value) -> f64 {
    let w = &s["workload"];
    w["drop_cpu_s"]
        .as_array()
        .or(w["kill_wall_s"].as_array())
        .map_or(1.0, |a| a.len().max(1) as f64)
}

fn stat(r: &Value, kind: &str, config: &str, f: impl Fn(&Value) -> Option<f64>) -> Option<Summary> {
    let v: Vec<f64> = samples(r, kind, config).filter_map(f).collect();
    summarize(&v)
}

fn configs(r: &Value) -> Vec<(String, bool)> {
    r["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("?").to_owned(),
                c["available"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

pub fn render(r: &Value) -> String {
    let mut o = String::new();
    let m = &r["machine"];
    let _ = writeln!(
        o,
        "Machine: {} CPUs ({}), {:.1} GiB RAM, swap {} KiB, kernel {}, {}; memcg hierarchy {}. \
         {} rounds{}.\n",
        m["nproc"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["mem_total_kib"].as_f64().unwrap_or(0.0) / 1048576.0,
        m["swap_total_kib"],
        m["kernel"].as_str().unwrap_or("?"),
        m["os"].as_str().unwrap_or("?"),
        r["cgroup_mode"].as_str().unwrap_or("?"),
        r["rounds"],
        if r["quick"] == true { " (--quick)" } else { "" },
    );
    let p = &r["params"];
    let _ = writeln!(
        o,
        "Workloads: storm = {} memcgs, each with its own tmpfs and {} fresh negative dentries \
         per pass, then `echo 2 > /proc/sys/vm/drop_caches` ({} passes per session; kernel time \
         = the writer's CPU time); churn = `dd` of {} MiB to a file on disk inside a {} MiB memcg \
         (kernel time = dd's sys time); oom = `tail /dev/zero` in a {} MiB memcg, {} kills per \
         session (kernel time = tail's sys time).\n",
        p["storm_memcgs"],
        p["storm_dentries_per_memcg"],
        p["storm_drops_per_session"],
        p["churn_mib"],
        p["churn_limit_mib"],
        p["oom_limit_mib"],
        p["oom_kills_per_session"],
    );

    // ------------------------------------------------ workload tables
    for (title, kind, unit, passes) in TABLES {
        let _ = writeln!(o, "#### {title} ({unit})\n");
        let _ = writeln!(
            o,
            "| configuration | kernel time, median (min–max) | vs untraced | wall, median (min–max) | vs untraced | hook hits | added kernel ns per hit |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|");
        let kernel = |c: &str| stat(r, kind, c, |s| kernel_of(s, passes));
        let wall = |c: &str| stat(r, kind, c, |s| wall_of(s, passes));
        let hits = |c: &str| {
            stat(r, kind, c, |s| {
                Some(s["tracer"]["hits"]["total"].as_f64()? / units(s))
            })
        };
        let base = kernel("untraced");
        let base_k = base.map_or(f64::NAN, |s| s.median);
        // A difference smaller than the untraced runs' own spread is noise.
        let noise = base.map_or(0.0, |s| s.max - s.min);
        let per_hit_cell = |delta: f64, hits: f64| {
            let ns = format!("{:.0}", delta * 1e9 / hits);
            if delta.abs() <= noise {
                format!("{ns} (within noise)")
            } else {
                ns
            }
        };
        let base_w = wall("untraced").map_or(f64::NAN, |s| s.median);
        for (c, available) in configs(r) {
            if !available {
                let _ = writeln!(o, "| {c} | not yet available | | | | | |");
                continue;
            }
            let (Some(k), Some(w)) = (kernel(&c), wall(&c)) else {
                continue;
            };
            let (h, per_hit) = match hits(&c) {
                Some(h) if c != "untraced" && h.median > 0.0 => (
                    format!("{:.0}", h.median),
                    per_hit_cell(k.median - base_k, h.median),
                ),
                _ => ("-".into(), "-".into()),
            };
            let _ = writeln!(
                o,
                "| {c} | {} | {} | {} | {} | {h} | {per_hit} |",
                spread(&k, secs),
                ratio(k.median, base_k),
                spread(&w, secs),
                ratio(w.median, base_w),
            );
        }
        if let (Some(mt), Some(bt)) = (kernel("memtrace-stream"), kernel("bpftrace")) {
            let _ = writeln!(
                o,
                "\nmemtrace stream / bpftrace kernel time (medians): {}; added over untraced: memtrace {}, bpftrace {}.",
                ratio(mt.median, bt.median),
                secs(mt.median - base_k),
                secs(bt.median - base_k),
            );
        }
        o.push('\n');
    }

    // ------------------------------------------------ agent cost
    let _ = writeln!(o, "#### Agent cost (userspace, per session)\n");
    let _ = writeln!(
        o,
        "| configuration | workload | time to ready | CPU to ready | CPU after ready | traced | peak RSS | records | records/s | losses |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|");
    for (c, available) in configs(r) {
        if c == "untraced" {
            continue;
        }
        if !available {
            let _ = writeln!(o, "| {c} | - | not yet available | | | | | | | |");
            continue;
        }
        for (kind, _) in WORKLOADS {
            let t = |f: &dyn Fn(&Value) -> Option<f64>| stat(r, kind, &c, |s| f(&s["tracer"]));
            let (Some(ready), Some(cpu0), Some(cpu), Some(traced), Some(rss), Some(recs)) = (
                t(&|x| x["ready_s"].as_f64()),
                t(&|x| x["startup_cpu_s"].as_f64()),
                t(&|x| x["cpu_after_ready_s"].as_f64()),
                t(&|x| x["traced_s"].as_f64()),
                t(&|x| x["maxrss_kib"].as_f64()),
                t(&|x| x["records"].as_f64()),
            ) else {
                continue;
            };
            let rate = t(&|x| Some(x["records"].as_f64()? / x["traced_s"].as_f64()?));
            let mut losses = std::collections::BTreeMap::<String, u64>::new();
            let mut reported = false;
            for s in samples(r, kind, &c) {
                if let Some(l) = s["tracer"]["losses"].as_object() {
                    reported = true;
                    for (k, v) in l {
                        *losses.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
                    }
                }
            }
            let nonzero: Vec<String> = losses
                .iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let losses = if c == "bpftrace" || !reported {
                "n/a".to_owned()
            } else if nonzero.is_empty() {
                "all 0".to_owned()
            } else {
                nonzero.join(", ")
            };
            let _ = writeln!(
                o,
                "| {c} | {kind} | {} | {} | {} | {} | {:.1} MiB (max {:.1}) | {:.0} | {:.0} | {losses} |",
                secs(ready.median),
                secs(cpu0.median),
                secs(cpu.median),
                secs(traced.median),
                rss.median / 1024.0,
                rss.max / 1024.0,
                recs.median,
                rate.map_or(0.0, |x| x.median),
            );
        }
    }
    o.push_str(
        "\nCPU is user+system of the agent process (all threads; /proc and wait4, 10 ms ticks); \
         \"to ready\" is from spawn until the stream's header line is written (memtrace) or every \
         probe is attached (bpftrace). bpftrace's records are its printed map entries.\n\n",
    );

    // ------------------------------------------------ bpf_stats
    if r["profile"]["sessions"].is_array() {
        profile(&mut o, &r["profile"]);
    } else if let Some(e) = r["profile"]["error"].as_str() {
        let _ = writeln!(o, "bpf_stats profile failed: {e}\n");
    }

    // ------------------------------------------------ agent
    render_agent(r, &mut o);

    // ------------------------------------------------ pipeline
    if let Some(runs) = r["pipeline"]["runs"].as_array() {
        let _ = writeln!(
            o,
            "#### Pipeline without the kernel (replay of {} records, {:.1} MiB, one core)\n",
            r["pipeline"]["records"],
            r["pipeline"]["bytes"].as_f64().unwrap_or(0.0) / 1048576.0
        );
        let _ = writeln!(
            o,
            "| command | records/s, median (min–max) | wall | CPU | peak RSS |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|");
        let mut commands: Vec<&str> = runs.iter().filter_map(|x| x["command"].as_str()).collect();
        commands.dedup();
        commands.sort();
        commands.dedup();
        for c in commands {
            let of = |k: &str| {
                let v: Vec<f64> = runs
                    .iter()
                    .filter(|x| x["command"] == c)
                    .filter_map(|x| x[k].as_f64())
                    .collect();
                summarize(&v)
            };
            if let (Some(rate), Some(wall), Some(cpu), Some(rss)) = (
                of("records_per_s"),
                of("wall_s"),
                of("cpu_s"),
                of("maxrss_kib"),
            ) {
                let _ = writeln!(
                    o,
                    "| `{c}` | {} | {} | {} | {:.1} MiB |",
                    spread(&rate, |x| format!("{:.0}", x)),
                    secs(wall.median),
                    secs(cpu.median),
                    rss.max / 1024.0
                );
            }
        }
        let ceiling = |way: &str| -> Option<Summary> {
            let v: Vec<f64> = r["pipeline"]["serde_ceiling"]
                .as_array()
                .into_iter()
                .flatten()
                // Results from before the two ways were measured: "enum".
                .filter_map(|x| {
                    x[way]["records_per_s"]
                        .as_f64()
                        .or(x["records_per_s"].as_f64())
                })
                .collect();
            summarize(&v)
        };
        let replay: Vec<f64> = runs
            .iter()
            .filter(|x| x["command"] == "memtrace stream --replay FILE")
            .filter_map(|x| x["records_per_s"].as_f64())
            .collect();
        for (way, what) in [
            ("enum", "each line into the `Record` enum"),
            ("direct", "each storm line straight into its struct"),
        ] {
            let Some(c) = ceiling(way) else { continue };
            let _ = writeln!(
                o,
                "| serde_json alone, {what}, serialized back \
                 (`memtrace/examples/serde_ceiling.rs`: no checks, no output) | {} | - | - | - |",
                spread(&c, |x| format!("{:.0}", x)),
            );
        }
        if let (Some(c), Some(rp)) = (ceiling("direct"), summarize(&replay)) {
            let _ = writeln!(
                o,
                "\n`stream --replay` takes {:.2}x the time per record of serde_json's own \
                 parse+serialize straight into the structs (medians).",
                c.median / rp.median
            );
        }
        o.push('\n');
    }

    // ------------------------------------------------ guests
    if let Some(guests) = r["guests"].as_array() {
        let _ = writeln!(
            o,
            "#### qemu guests (TCG software emulation: compare only within one boot)\n"
        );
        let _ = writeln!(
            o,
            "The zstorm is the seed's shape (`../shared/notes/background.md`): 1000 memcgs under \
             one parent, each holding a few negative dentries in the cgroup filesystem and sysfs \
             (two superblock shrinkers with objects per memcg); a pass is `memory.reclaim` on \
             the parent, whose every attempt walks every memcg from priority 12 down, so almost \
             every `do_shrink_slab` call frees nothing (guest_init.sh `bench_zstorm`). Its kernel \
             time is the writer's CPU time per pass, six passes a session.\n"
        );
        for g in guests {
            if let Some(e) = g["error"].as_str() {
                let _ = writeln!(o, "guest run failed: {e}\n");
                continue;
            }
            let _ = writeln!(
                o,
                "Kernel {} ({}), cgroup {}, {} memcgs in the storm, {} in the zstorm, {} rounds, boot wall {}.\n",
                g["kernel"].as_str().unwrap_or("?"),
                g["release"].as_str().unwrap_or("?"),
                g["cgroup"].as_str().unwrap_or("?"),
                g["storm_memcgs"],
                g["zstorm_memcgs"],
                g["rounds"],
                secs(g["wall_s"].as_f64().unwrap_or(f64::NAN)),
            );
            let _ = writeln!(
                o,
                "| workload | configuration | kernel time, median (min–max) | vs untraced | hook hits (empty programs: memtrace's in that mode) | added kernel ns per hit | program ns per pair (bpf_stats) |"
            );
            let _ = writeln!(o, "|---|---|---|---|---|---|---|");
            let rows = g["samples"].as_array().cloned().unwrap_or_default();
            let mut cfgs: Vec<String> = rows
                .iter()
                .filter_map(|s| s["config"].as_str().map(str::to_owned))
                .collect();
            cfgs.sort();
            cfgs.dedup();
            cfgs.sort_by_key(|c| c != "untraced");
            let of = |kind: &str, c: &str, f: &dyn Fn(&Value) -> Option<f64>| {
                let v: Vec<f64> = rows
                    .iter()
                    .filter(|s| s["workload_kind"] == kind && s["config"] == c)
                    .filter_map(f)
                    .collect();
                summarize(&v)
            };
            for kind in ["storm", "zstorm", "churn"] {
                let of = |c: &str, f: &dyn Fn(&Value) -> Option<f64>| of(kind, c, f);
                let base =
                    of("untraced", &|s| s["kernel_s"].as_f64()).map_or(f64::NAN, |s| s.median);
                for c in &cfgs {
                    let Some(k) = of(c, &|s| s["kernel_s"].as_f64()) else {
                        continue;
                    };
                    // The empty programs count nothing: per hit of memtrace
                    // in the same mode (the same workload's calls).
                    let twin = c
                        .strip_prefix("empty programs (--attach ")
                        .and_then(|m| m.strip_suffix(')'))
                        .map(|m| match m {
                            "auto" => "memtrace-stream (auto)".to_owned(),
                            m => format!("memtrace-stream (--attach {m})"),
                        });
                    let h = of(twin.as_deref().unwrap_or(c), &|s| s["hits"].as_f64());
                    let (hs, per) = match h {
                        Some(h) if c != "untraced" && h.median > 0.0 => (
                            format!("{:.0}", h.median),
                            format!("{:.0}", (k.median - base) * 1e9 / h.median),
                        ),
                        _ => ("-".into(), "-".into()),
                    };
                    let pair = of(c, &|s| {
                        let runs = s["prog_runs"].as_f64().filter(|r| *r > 0.0)?;
                        Some(2.0 * s["prog_ns"].as_f64()? / runs)
                    })
                    .map_or("-".into(), |p| format!("{:.0}", p.median));
                    let _ = writeln!(
                        o,
                        "| {kind} | {c} | {} | {} | {hs} | {per} | {pair} |",
                        spread(&k, secs),
                        ratio(k.median, base)
                    );
                }
            }
            o.push('\n');
            zstorm_summary(&mut o, &rows);
        }
    }
    o
}

/// The zero-yield storm, per attach mode: kernel ns memtrace adds per
/// `do_shrink_slab` call (medians: (traced - untraced) / calls it counted)
/// against the empty programs' on the same calls, and the share of calls
/// that freed nothing.
fn zstorm_summary(o: &mut String, rows: &[Value]) {
    let med = |c: &str, f: &dyn Fn(&Value) -> Option<f64>| {
        let v: Vec<f64> = rows
            .iter()
            .filter(|s| s["workload_kind"] == "zstorm" && s["config"] == c)
            .filter_map(f)
            .collect();
        summarize(&v).map(|s| s.median)
    };
    // Each config's pass time minus the same round's untraced pass time
    // (the configs of a round run back to back), median over the rounds:
    // drift across a boot cancels.
    let kernel = |c: &str, round: &Value| {
        rows.iter()
            .find(|s| s["workload_kind"] == "zstorm" && s["config"] == c && s["round"] == *round)
            .and_then(|s| s["kernel_s"].as_f64())
    };
    let added_over_untraced = |c: &str| {
        let v: Vec<f64> = rows
            .iter()
            .filter(|s| s["workload_kind"] == "zstorm" && s["config"] == c)
            .filter_map(|s| Some(s["kernel_s"].as_f64()? - kernel("untraced", &s["round"])?))
            .collect();
        summarize(&v).map(|s| s.median)
    };
    if med("untraced", &|s| s["kernel_s"].as_f64()).is_none() {
        return;
    }
    for (mode, twin, floor) in [
        (
            "fentry (auto)",
            "memtrace-stream (auto)",
            "empty programs (--attach auto)",
        ),
        (
            "kprobe",
            "memtrace-stream (--attach kprobe)",
            "empty programs (--attach kprobe)",
        ),
    ] {
        let (Some(k), Some(calls)) = (
            added_over_untraced(twin),
            med(twin, &|s| s["dss"].as_f64().filter(|c| *c > 0.0)),
        ) else {
            continue;
        };
        let zero = med(twin, &|s| {
            Some(s["dss_zero"].as_f64()? / s["dss"].as_f64().filter(|c| *c > 0.0)?)
        });
        let added = k * 1e9 / calls;
        let floor_added = added_over_untraced(floor).map(|f| f * 1e9 / calls);
        let _ = writeln!(
            o,
            "zstorm, {mode}: {calls:.0} do_shrink_slab calls per pass ({} freed nothing); memtrace adds {added:.0} ns per call, the empty programs {} (each the median over the rounds of its pass time minus that round's untraced pass time): {}.",
            zero.map_or("?".into(), |z| format!("{:.1}%", z * 100.0)),
            floor_added.map_or("-".into(), |f| format!("{f:.0} ns")),
            floor_added.map_or("-".into(), |f| format!("{} of the floor", ratio(added, f))),
        );
    }
    o.push('\n');
}

/// Median (min–max) of one number of the profile sessions of `config`.
fn prof_summary(
    sessions: &[Value],
    config: &str,
    f: impl Fn(&Value) -> Option<f64>,
) -> Option<Summary> {
    let v: Vec<f64> = sessions
        .iter()
        .filter(|s| s["config"] == config)
        .filter_map(f)
        .collect();
    summarize(&v)
}

/// Storm program (or kernel) time of a session's first pass, or the mean of
/// its later passes.
fn pass_value(s: &Value, key: &str, first: bool, scale: f64) -> Option<f64> {
    let v: Vec<f64> = s[key]
        .as_array()?
        .iter()
        .filter_map(Value::as_f64)
        .map(|x| x * scale)
        .collect();
    if first {
        v.first().copied()
    } else if v.len() > 1 {
        Some(v[1..].iter().sum::<f64>() / (v.len() - 1) as f64)
    } else {
        None
    }
}

fn profile(o: &mut String, prof: &Value) {
    let sessions = prof["sessions"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        o,
        "#### Kernel-side cost per program (`kernel.bpf_stats_enabled=1`), {} interleaved rounds of storm + churn + OOM\n",
        prof["rounds"]
    );
    let ns = |s: Option<Summary>| {
        s.map(|s| format!("{:.0} ({:.0}–{:.0})", s.median, s.min, s.max))
            .unwrap_or_else(|| "-".into())
    };
    let ms = |s: Option<Summary>| s.map(|s| spread(&s, secs)).unwrap_or_else(|| "-".into());
    let configs: Vec<&str> = [
        "memtrace-stream",
        "memtrace-sampled",
        "memtrace-baseline",
        "empty-programs",
        "bpftrace",
    ]
    .into_iter()
    .filter(|c| sessions.iter().any(|s| s["config"] == *c))
    .collect();
    let _ = writeln!(
        o,
        "| configuration | ns per pair, all programs | ns per `do_shrink_slab` pair | program time per session | storm program time, first pass | storm program time, later passes |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    for &c in &configs {
        let _ = writeln!(
            o,
            "| {c} | {} | {} | {} | {} | {} |",
            ns(prof_summary(&sessions, c, |s| s["ns_per_pair"].as_f64())),
            ns(prof_summary(&sessions, c, |s| s["shrink_ns_per_pair"].as_f64())),
            ms(prof_summary(&sessions, c, |s| s["run_time_ns"]
                .as_f64()
                .map(|n| n / 1e9))),
            ms(prof_summary(&sessions, c, |s| pass_value(
                s,
                "storm_pass_program_ns",
                true,
                1e-9
            ))),
            ms(prof_summary(&sessions, c, |s| pass_value(
                s,
                "storm_pass_program_ns",
                false,
                1e-9
            ))),
        );
    }
    let untraced_first = prof_summary(&sessions, "untraced", |s| {
        pass_value(s, "storm_pass_kernel_s", true, 1.0)
    });
    let untraced_later = prof_summary(&sessions, "untraced", |s| {
        pass_value(s, "storm_pass_kernel_s", false, 1.0)
    });
    let _ = writeln!(
        o,
        "| untraced storm kernel time per pass | | | | {} | {} |\n",
        ms(untraced_first),
        ms(untraced_later)
    );
    let med = |c: &str, f: &dyn Fn(&Value) -> Option<f64>| {
        prof_summary(&sessions, c, f).map(|s| s.median)
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    };
    let pair = |s: &Value| s["ns_per_pair"].as_f64();
    let shrink = |s: &Value| s["shrink_ns_per_pair"].as_f64();
    let total = |s: &Value| s["run_time_ns"].as_f64();
    let first = |s: &Value| pass_value(s, "storm_pass_program_ns", true, 1e-9);
    let later = |s: &Value| pass_value(s, "storm_pass_program_ns", false, 1e-9);
    // One line of ratios per memtrace binary (the one built, and the
    // `--baseline-memtrace` one when given), all from the same rounds.
    for (c, title) in [
        ("memtrace-stream", "Medians, memtrace"),
        (
            "memtrace-sampled",
            "One `do_shrink_slab` call in 8 timed (`--shrinker-time-sample 8`), same rounds",
        ),
        (
            "memtrace-baseline",
            "Baseline (`--baseline-memtrace`), same rounds",
        ),
    ] {
        if !configs.contains(&c) {
            continue;
        }
        let _ = writeln!(
            o,
            "{title}: per pair {} of the empty programs' ({} for the `do_shrink_slab` pair); \
             / bpftrace: total program time {}, per pair {} ({} for the `do_shrink_slab` pair); \
             storm program time / untraced storm kernel time: first pass {}, later passes {}.\n",
            ratio(med(c, &pair), med("empty-programs", &pair)),
            ratio(med(c, &shrink), med("empty-programs", &shrink)),
            ratio(med(c, &total), med("bpftrace", &total)),
            ratio(med(c, &pair), med("bpftrace", &pair)),
            ratio(med(c, &shrink), med("bpftrace", &shrink)),
            ratio(med(c, &first), untraced_first.map(|s| s.median)),
            ratio(med(c, &later), untraced_later.map(|s| s.median)),
        );
    }
    sampling(o, &sessions);
    // Per program: medians over the rounds, by name.
    let _ = writeln!(
        o,
        "| configuration | program | runs per session | ns per run |"
    );
    let _ = writeln!(o, "|---|---|---|---|");
    for &c in &configs {
        let mut names: Vec<String> = Vec::new();
        for s in sessions.iter().filter(|s| s["config"] == c) {
            for p in s["programs"].as_array().into_iter().flatten() {
                let n = p["name"].as_str().unwrap_or("?").to_owned();
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        for n in names {
            let rows: Vec<&Value> = sessions
                .iter()
                .filter(|s| s["config"] == c)
                .flat_map(|s| s["programs"].as_array().into_iter().flatten())
                .filter(|p| p["name"] == n.as_str())
                .collect();
            let runs: Vec<f64> = rows.iter().filter_map(|p| p["run_cnt"].as_f64()).collect();
            let per: Vec<f64> = rows
                .iter()
                .filter_map(|p| p["ns_per_run"].as_f64())
                .collect();
            let (Some(runs), Some(per)) = (summarize(&runs), summarize(&per)) else {
                continue;
            };
            if runs.median == 0.0 {
                continue;
            }
            let _ = writeln!(o, "| {c} | {n} | {:.0} | {:.0} |", runs.median, per.median);
        }
    }
    o.push_str(
        "\nA pair is an entry and its return (a begin and its end): ns per pair = 2 × program time / \
         program runs. bpftrace's program names are cut at 15 characters by the kernel (both \
         `mm_shrink_slab_*` programs show as `mm_shrink_slab_`, counted together).\n\n",
    );
}

/// Timing one `do_shrink_slab` call in 8 against timing every call (the
/// default), same rounds: the mean time per call each reports (memtrace's
/// own records), and what the programs cost.
fn sampling(o: &mut String, sessions: &[Value]) {
    let per_call = |s: &Value| {
        let calls = s["hits"]["do_shrink_slab"].as_f64()?;
        (calls > 0.0).then(|| s["hits"]["do_shrink_ns"].as_f64().unwrap_or(0.0) / calls)
    };
    let (Some(sampled), Some(timed)) = (
        prof_summary(sessions, "memtrace-sampled", per_call),
        prof_summary(sessions, "memtrace-stream", per_call),
    ) else {
        return;
    };
    let shrink =
        |c: &str| prof_summary(sessions, c, |s| s["shrink_ns_per_pair"].as_f64()).map(|s| s.median);
    let saved = match (shrink("memtrace-sampled"), shrink("memtrace-stream")) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    };
    let _ = writeln!(
        o,
        "Time sampling (`--shrinker-time-sample 8` against the default, every call timed): mean \
         `do_shrink_slab` time per call in memtrace's records {:.0} ns ({:.0}–{:.0}) sampled, \
         {:.0} ns ({:.0}–{:.0}) with every call timed (medians over the sessions, which differ \
         by {:+.1}%); the sampled `do_shrink_slab` pair costs {saved} of the timed one's.\n",
        sampled.median,
        sampled.min,
        sampled.max,
        timed.median,
        timed.min,
        timed.max,
        100.0 * (sampled.median / timed.median - 1.0),
    );
}

/// The agent's interval with every storm memcg active, and its memory.
fn render_agent(r: &Value, o: &mut String) {
    let a = &r["agent"];
    if let Some(e) = a["error"].as_str() {
        let _ = writeln!(o, "agent interval measurement failed: {e}\n");
        return;
    }
    let Some(passes) = a["passes"].as_array() else {
        return;
    };
    let col = |k: &str, first: bool| -> Vec<f64> {
        passes
            .iter()
            .filter(|p| (p["pass"] == 0) == first)
            .filter_map(|p| p[k].as_f64())
            .collect()
    };
    let _ = writeln!(
        o,
        "#### Agent: one interval with every storm memcg active (`{}`)\n",
        a["command"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        o,
        "| interval | memcg_interval records | states read (the rest carried), median | \
         agent CPU, median (min–max) |"
    );
    let _ = writeln!(o, "|---|---|---|---|");
    for (what, first, rec, read, cpu) in [
        (
            "storm, first after start",
            true,
            "storm_memcg_records",
            "storm_states_read",
            "storm_cpu_s",
        ),
        (
            "storm, later",
            false,
            "storm_memcg_records",
            "storm_states_read",
            "storm_cpu_s",
        ),
        (
            "idle, after a storm",
            false,
            "idle_memcg_records",
            "",
            "idle_cpu_s",
        ),
    ] {
        if let (Some(n), Some(c)) = (summarize(&col(rec, first)), summarize(&col(cpu, first))) {
            // Runs before the field existed read every state.
            let read = summarize(&col(read, first))
                .map_or_else(|| "-".to_string(), |r| format!("{:.0}", r.median));
            let _ = writeln!(
                o,
                "| {what} | {:.0} | {read} | {} |",
                n.median,
                spread(&c, secs)
            );
        }
    }
    let kib = |k: &str| a[k].as_f64().unwrap_or(f64::NAN) / 1024.0;
    let _ = writeln!(
        o,
        "\nMemory: peak RSS {:.1} MiB (at the first record: {:.1} MiB, {} after start), \
         steady RSS after the passes {:.1} MiB.\n",
        kib("peak_rss_kib"),
        kib("ready_peak_rss_kib"),
        secs(a["ready_s"].as_f64().unwrap_or(f64::NAN)),
        kib("steady_rss_kib"),
    );
    render_agent_listen(r, o);
}

/// `record --listen` scraped every second through the same storm.
fn render_agent_listen(r: &Value, o: &mut String) {
    let a = &r["agent_listen"];
    if let Some(e) = a["error"].as_str() {
        let _ = writeln!(o, "record --listen measurement failed: {e}\n");
        return;
    }
    let Some(passes) = a["passes"].as_array() else {
        return;
    };
    let col = |k: &str| -> Vec<f64> { passes.iter().filter_map(|p| p[k].as_f64()).collect() };
    let _ = writeln!(
        o,
        "#### Agent with metrics: `{}`\n",
        a["command"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        o,
        "| {} s window | agent CPU, median (min–max) |\n|---|---|",
        a["window_s"].as_f64().unwrap_or(f64::NAN)
    );
    for (what, k) in [
        ("storm interval + 3 scrapes", "storm_window_cpu_s"),
        ("idle, after it (3 scrapes)", "idle_window_cpu_s"),
    ] {
        if let Some(c) = summarize(&col(k)) {
            let _ = writeln!(o, "| {what} | {} |", spread(&c, secs));
        }
    }
    let max = |k: &str| col(k).into_iter().fold(0.0, f64::max);
    let kib = |k: &str| a[k].as_f64().unwrap_or(f64::NAN) / 1024.0;
    let _ = writeln!(
        o,
        "\nPages: up to {:.0} series, {:.0} KiB; slowest scrape {:.1} ms ({} scrapes). \
         Memory: peak RSS {:.1} MiB, steady {:.1} MiB.\n",
        max("max_series"),
        max("max_page_bytes") / 1024.0,
        max("max_scrape_ms"),
        a["scrapes"],
        kib("peak_rss_kib"),
        kib("steady_rss_kib"),
    );
}
