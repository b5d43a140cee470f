//! Host-side assertions on what the guest sent back.
//!
//! The guest runs the workloads (guest_init.sh `wl_*`) under each attach
//! mode and ships memtrace's output; the checks here parse that NDJSON and
//! assert what must hold on every kernel (never exact counts). To add a
//! scenario: a `wl_<name>` in the guest script that prints
//! `INFO scenario=<name> tag=<mode> ...`, and an entry in `MODE_CHECKS`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::protocol::Transcript;

/// Ok(detail) = pass, Err(detail) = fail.
pub type Outcome = Result<String, String>;

/// Everything known about one attach mode's run inside one boot.
pub struct ModeRun<'a> {
    pub mode: &'a str,
    /// The boot's cgroup layout: "v2", "v1" or "hybrid".
    pub cgroup: &'a str,
    pub transcript: &'a Transcript,
    /// Parsed NDJSON records of `memtrace stream` (bad lines are errors).
    pub records: Result<Vec<Value>, String>,
}

impl ModeRun<'_> {
    /// The guest's INFO line for `scenario` in this mode.
    fn info(&self, scenario: &str) -> Result<&BTreeMap<String, String>, String> {
        let is = |m: &BTreeMap<String, String>, k: &str, v: &str| {
            m.get(k).map(String::as_str) == Some(v)
        };
        self.transcript
            .infos
            .iter()
            .find(|m| is(m, "scenario", scenario) && is(m, "tag", self.mode))
            .ok_or_else(|| format!("the guest did not run the {scenario} workload"))
    }

    fn records(&self) -> Result<&[Value], String> {
        self.records.as_deref().map_err(|e| e.clone())
    }

    fn header(&self) -> Result<&Value, String> {
        self.records()?
            .iter()
            .find(|r| r["type"] == "header")
            .ok_or_else(|| "no header record".to_owned())
    }

    /// Fields the header declares unavailable under this plan.
    fn unavailable(&self) -> Vec<String> {
        self.header()
            .ok()
            .and_then(|h| h["unavailable"].as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Interval records of the memcg whose path ends with `path`.
    fn intervals<'s>(&'s self, path: &'s str) -> impl Iterator<Item = &'s Value> + 's {
        self.records
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .filter(move |r| r["type"] == "memcg_interval" && path_is(&r["memcg"]["path"], path))
    }

    /// Sum of `field` over the intervals of `path`: None when the field is
    /// null (unavailable) in every record, Err if it is ever missing.
    fn sum(&self, path: &str, field: &str) -> Result<Option<u64>, String> {
        let mut total: Option<u64> = None;
        for r in self.intervals(path) {
            match &r[field] {
                Value::Null if r.get(field).is_some() => {}
                Value::Number(n) => {
                    let n = n
                        .as_u64()
                        .ok_or_else(|| format!("{field}={n} is not a count"))?;
                    total = Some(total.unwrap_or(0) + n);
                }
                other => return Err(format!("{field} is {other} in a memcg_interval record")),
            }
        }
        Ok(total)
    }

    fn kprobe_like(&self) -> bool {
        matches!(self.mode, "fentry" | "kprobe" | "auto")
    }
}

/// "/a/vt_x" matches "/vt_x" (relative paths, or absolute cgroupfs paths).
fn path_is(v: &Value, want: &str) -> bool {
    v.as_str()
        .map(|p| {
            let p = p.trim_end_matches('/');
            p == want || p.ends_with(want)
        })
        .unwrap_or(false)
}

pub fn parse_ndjson(text: &str) -> Result<Vec<Value>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}: {l:.120}", i + 1)))
        .collect()
}

pub struct ModeCheck {
    pub name: &'static str,
    pub run: fn(&ModeRun<'_>) -> Outcome,
}

pub struct BootCheck {
    pub name: &'static str,
    pub run: fn(&BootRun<'_>) -> Outcome,
}

/// One guest boot: its cgroup layout and everything it sent.
pub struct BootRun<'a> {
    /// "v2", "v1" or "hybrid" (what the guest mounted).
    pub cgroup: &'a str,
    pub transcript: &'a Transcript,
}

/// Checks done once per attach mode.
pub const MODE_CHECKS: &[ModeCheck] = &[
    ModeCheck {
        name: "ndjson",
        run: check_ndjson,
    },
    ModeCheck {
        name: "plan",
        run: check_plan,
    },
    ModeCheck {
        name: "oom_kill",
        run: check_oom_kill,
    },
    ModeCheck {
        name: "oom_attribution",
        run: check_oom_attribution,
    },
    ModeCheck {
        name: "reclaim",
        run: check_reclaim,
    },
    ModeCheck {
        name: "shrink",
        run: check_shrink,
    },
    ModeCheck {
        name: "shrink_counts",
        run: check_shrink_counts,
    },
    ModeCheck {
        name: "cgroupfs_state",
        run: check_cgroupfs_state,
    },
    ModeCheck {
        name: "losses",
        run: check_losses,
    },
];

/// Checks done once per boot.
pub const BOOT_CHECKS: &[BootCheck] = &[BootCheck {
    name: "doctor",
    run: check_doctor,
}];

/// The hooks that fentry and kprobe plans must attach on every kernel here.
const CORE_HOOKS: &[&str] = &[
    "try_charge_memcg",
    "shrink_slab",
    "do_shrink_slab",
    "oom_kill_process",
];

/// Hooks that exist only as tracepoints: tp_btf or classic in every mode.
const TRACEPOINT_HOOKS: &[&str] = &["reclaim_direct", "reclaim_memcg", "kswapd"];

/// What `--attach tracepoint` must leave null (docs/kernels.md, "What each
/// attach mode sees"): everything `try_charge_memcg` and `shrink_slab` feed
/// (no tracepoint equivalent), and what the tracepoint fallbacks of
/// `do_shrink_slab` and `oom_kill_process` cannot see. fentry and kprobe
/// leave nothing null.
const TRACEPOINT_UNAVAILABLE: &[&str] = &[
    "charge_calls",
    "charge_failures",
    "charge_ns",
    "charge_pages",
    "charge_p50_ns",
    "charge_p99_ns",
    "shrink_slab_calls",
    "shrink_slab_ns",
    "shrink_slab_freed",
    "shrink_slab_kswapd_ns",
    "do_shrink_slab_zero",
    "oom_kill.totalpages",
    "oom_kill.chosen_points",
    "oom_kill.trigger.pid",
];

/// `memcg_interval` counters: null exactly when the header lists them.
const INTERVAL_COUNTERS: &[&str] = &[
    "charge_calls",
    "charge_failures",
    "charge_ns",
    "charge_pages",
    "reclaim_direct_count",
    "reclaim_direct_ns",
    "reclaim_direct_pages",
    "reclaim_memcg_count",
    "reclaim_memcg_ns",
    "reclaim_memcg_pages",
    "shrink_slab_calls",
    "shrink_slab_ns",
    "shrink_slab_freed",
    "shrink_slab_kswapd_ns",
    "do_shrink_slab_calls",
    "do_shrink_slab_zero",
    "do_shrink_slab_freed",
    "do_shrink_slab_ns",
];

/// Latency percentiles and the counts of the events they are taken over:
/// null when listed, else a number whenever one of those counts is > 0
/// (null = "no event in the interval" otherwise).
const INTERVAL_PERCENTILES: &[(&str, &[&str])] = &[
    ("charge_p50_ns", &["charge_calls"]),
    ("charge_p99_ns", &["charge_calls"]),
    (
        "reclaim_p50_ns",
        &["reclaim_direct_count", "reclaim_memcg_count"],
    ),
    (
        "reclaim_p99_ns",
        &["reclaim_direct_count", "reclaim_memcg_count"],
    ),
];

/// `oom_kill` fields only the function hooks see (`oom_kill.<path>` in the
/// header's list).
const OOM_FUNCTION_FIELDS: &[&str] = &["totalpages", "chosen_points", "trigger.pid"];

/// `system` counters of data memtrace lost: all 0 after every scenario.
const LOSS_COUNTERS: [&str; 6] = memtrace::output::records::System::KERNEL_LOSSES;

/// The families `--attach mode` may put `hook` on; None: it must be
/// unavailable (the function-only hooks in tracepoint mode).
fn allowed_families(mode: &str, hook: &str) -> Option<&'static [&'static str]> {
    if TRACEPOINT_HOOKS.contains(&hook) {
        return Some(&["tp_btf", "tracepoint"]);
    }
    match (mode, hook) {
        ("auto" | "fentry", _) => Some(&["fentry"]),
        ("kprobe", _) => Some(&["kprobe"]),
        // mm_shrink_slab_start/end have no classic-tracepoint program.
        (_, "do_shrink_slab") => Some(&["tp_btf"]),
        (_, "oom_kill_process") => Some(&["tp_btf", "tracepoint"]),
        _ => None,
    }
}

fn expected_unavailable(mode: &str) -> &'static [&'static str] {
    if mode == "tracepoint" {
        TRACEPOINT_UNAVAILABLE
    } else {
        &[]
    }
}

/// `path` ("a.b") inside `v`.
fn field<'v>(v: &'v Value, path: &str) -> &'v Value {
    path.split('.').fold(v, |v, k| &v[k])
}

/// The stream parses record by record (`parse_ndjson` names a bad line),
/// opens with its one header, ends with the final `system` record, and
/// every field the header lists as unavailable is null in the records while
/// the others hold numbers.
fn check_ndjson(m: &ModeRun) -> Outcome {
    let recs = m.records()?;
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, r) in recs.iter().enumerate() {
        let t = r["type"]
            .as_str()
            .ok_or_else(|| format!("record {}: no \"type\": {r:.120}", i + 1))?;
        if !r["ts_ns"].is_u64() {
            return Err(format!("record {} ({t}) has no ts_ns", i + 1));
        }
        *kinds.entry(t).or_default() += 1;
    }
    if recs.first().map(|r| &r["type"]) != Some(&Value::from("header")) {
        return Err("the first record is not the header".into());
    }
    if kinds["header"] != 1 {
        return Err(format!("{} header records", kinds["header"]));
    }
    if recs.last().map(|r| &r["type"]) != Some(&Value::from("system")) {
        return Err("the last record is not the final system record".into());
    }
    let unavailable = m.unavailable();
    let listed = |f: &str| unavailable.iter().any(|u| u == f);
    // Null where listed, else `present(v)`.
    let fits = |f: &str, v: &Value, present: fn(&Value) -> bool| {
        if listed(f) { v.is_null() } else { present(v) }
    };
    for r in recs.iter().filter(|r| r["type"] == "memcg_interval") {
        let bad = |f: &str, v: &Value| {
            let listed = if listed(f) { "lists" } else { "does not list" };
            format!(
                "memcg_interval of {} at {}: {f}={v:.120}, and the header {listed} it",
                r["memcg"]["path"], r["ts_ns"]
            )
        };
        for &f in INTERVAL_COUNTERS {
            let v = r.get(f).ok_or_else(|| bad(f, &Value::from("missing")))?;
            if !fits(f, v, Value::is_u64) {
                return Err(bad(f, v));
            }
        }
        for &(f, counts) in INTERVAL_PERCENTILES {
            let events = counts.iter().any(|c| r[*c].as_u64().is_some_and(|n| n > 0));
            let v = &r[f];
            // No event in the interval: nothing to take a percentile of.
            let empty = !listed(f) && !events && v.is_null();
            if !empty && !fits(f, v, Value::is_u64) {
                return Err(bad(f, v));
            }
        }
        if !fits("shrinkers", &r["shrinkers"], Value::is_array) {
            return Err(bad("shrinkers", &r["shrinkers"]));
        }
    }
    for k in recs
        .iter()
        .filter(|r| r["type"] == "oom_kill" && r["before_start"] != true)
    {
        for f in OOM_FUNCTION_FIELDS {
            let v = field(k, f);
            if !fits(&format!("oom_kill.{f}"), v, Value::is_number) {
                return Err(format!(
                    "oom_kill of pid {}: {f}={v} against the header's unavailable list",
                    k["victim"]["pid"]
                ));
            }
        }
    }
    Ok(format!("{kinds:?}"))
}

fn plan_entry<'a>(plan: &'a Value, hook: &str) -> Option<&'a Value> {
    plan.as_array()?.iter().find(|e| e["hook"] == hook)
}

/// The header's plan is the one the mode asked for, hook by hook, and its
/// `unavailable` list is exactly what that mode must leave null.
fn check_plan(m: &ModeRun) -> Outcome {
    let header = m.header()?;
    if header["cgroup_mode"] != m.cgroup {
        return Err(format!(
            "header cgroup_mode {}, the guest mounted {}",
            header["cgroup_mode"], m.cgroup
        ));
    }
    if header["attach_mode"] != m.mode {
        return Err(format!("header attach_mode {}", header["attach_mode"]));
    }
    let plan = header["plan"]
        .as_array()
        .ok_or("header has no plan array")?;
    let mut hooks: Vec<&str> = plan.iter().filter_map(|e| e["hook"].as_str()).collect();
    hooks.sort_unstable();
    let mut want_hooks: Vec<&str> = CORE_HOOKS.iter().chain(TRACEPOINT_HOOKS).copied().collect();
    want_hooks.sort_unstable();
    if hooks != want_hooks {
        return Err(format!("plan hooks {hooks:?}, want {want_hooks:?}"));
    }
    let mut detail = Vec::new();
    for e in plan {
        let hook = e["hook"].as_str().unwrap_or("?");
        let allowed = allowed_families(m.mode, hook);
        match (allowed, e["family"].as_str(), e["status"].as_str()) {
            (Some(ok), Some(f), Some("attached")) if ok.contains(&f) => {
                detail.push(format!("{hook}={f}"))
            }
            (None, None, Some("unavailable")) => detail.push(format!("{hook}=none")),
            _ => {
                return Err(format!(
                    "{hook} under --attach {}: want {}, got {e}",
                    m.mode,
                    allowed.map_or("unavailable".into(), |a| a.join(" or "))
                ));
            }
        }
    }
    let got: std::collections::BTreeSet<String> = m.unavailable().into_iter().collect();
    let want: std::collections::BTreeSet<String> = expected_unavailable(m.mode)
        .iter()
        .map(|f| f.to_string())
        .collect();
    if got != want {
        return Err(format!(
            "unavailable {got:?}; --attach {} leaves exactly {want:?} null",
            m.mode
        ));
    }
    Ok(detail.join(" "))
}

/// No data lost: the loss counters of the final `system` record (they are
/// cumulative) are all 0 after every workload of the mode.
fn check_losses(m: &ModeRun) -> Outcome {
    let last = m
        .records()?
        .iter()
        .rev()
        .find(|r| r["type"] == "system")
        .ok_or("no system record")?;
    // Programs the kernel skipped (a recursion into the same program)
    // lose their counts too; null where the kernel does not report it.
    let lost: Vec<String> = LOSS_COUNTERS
        .iter()
        .chain(&["prog_recursion_misses"])
        .filter(|f| !(last[**f] == 0 || (**f == "prog_recursion_misses" && last[**f].is_null())))
        .map(|f| format!("{f}={}", last[*f]))
        .collect();
    if lost.is_empty() {
        Ok(format!(
            "{},prog_recursion_misses all 0",
            LOSS_COUNTERS.join(",")
        ))
    } else {
        Err(format!("final system record: {}", lost.join(" ")))
    }
}

/// The OOM burst and crashloop (`wl_oomburst`): every kill's record names
/// the victim's memcg and the limiting memcg with how that was known.
fn check_oom_attribution(m: &ModeRun) -> Outcome {
    let info = m.info("oomburst")?;
    let kills: Vec<&Value> = m
        .records()?
        .iter()
        .filter(|r| r["type"] == "oom_kill" && r["before_start"] != true)
        .collect();
    let mut want = 0;
    let mut bad = Vec::new();
    for k in info["kills"].split(',').filter(|k| !k.is_empty()) {
        let f: Vec<&str> = k.split(':').collect();
        let [pid, victim, limit, _rc] = f[..] else {
            return Err(format!("bad kill {k:?} in INFO"));
        };
        let pid: u64 = pid.parse().map_err(|_| format!("bad pid in {k:?}"))?;
        want += 1;
        let Some(r) = kills.iter().find(|r| r["victim"]["pid"] == pid) else {
            bad.push(format!("pid {pid}: no oom_kill"));
            continue;
        };
        if !path_is(&r["victim_memcg"]["path"], victim) {
            bad.push(format!("pid {pid}: victim_memcg {}", r["victim_memcg"]));
        }
        if !path_is(&r["oom_memcg"]["path"], limit) || r["oom_memcg_source"].is_null() {
            bad.push(format!(
                "pid {pid}: oom_memcg {} source {}",
                r["oom_memcg"], r["oom_memcg_source"]
            ));
        }
    }
    if bad.is_empty() && want > 0 {
        Ok(format!("{want} of {want} kills fully attributed"))
    } else {
        Err(format!(
            "{} problems in {want} kills: {}",
            bad.len(),
            bad.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
        ))
    }
}

fn check_oom_kill(m: &ModeRun) -> Outcome {
    let info = m.info("oom")?;
    let pid: u64 = info["pid"].parse().map_err(|_| "bad pid in INFO")?;
    let memcg = &info["memcg"];
    let kills: Vec<&Value> = m
        .records()?
        .iter()
        .filter(|r| r["type"] == "oom_kill")
        .collect();
    // Kills from before the stream started (read back from the kernel log)
    // are reported too, flagged before_start; this one happened during it.
    let kill = kills
        .iter()
        .find(|r| r["victim"]["pid"] == pid && r["before_start"] != true)
        .ok_or_else(|| {
            format!(
                "no oom_kill for pid {pid} among {} oom_kill records",
                kills.len()
            )
        })?;
    if !path_is(&kill["victim_memcg"]["path"], memcg) {
        return Err(format!(
            "victim_memcg is {}, want {memcg}",
            kill["victim_memcg"]
        ));
    }
    if !path_is(&kill["oom_memcg"]["path"], memcg) {
        return Err(format!(
            "oom_memcg is {}, want {memcg} (a memcg OOM)",
            kill["oom_memcg"]
        ));
    }
    if kill["victim"]["comm"] != info["comm"].as_str() {
        return Err(format!(
            "victim comm {}, want {}",
            kill["victim"]["comm"], info["comm"]
        ));
    }
    // The victim's own charge fails once it is marked for death: the
    // function hooks see it, the tracepoint plan must say it cannot.
    let failures = match m.sum(memcg, "charge_failures")? {
        Some(n) if n > 0 => format!("charge_failures={n}"),
        Some(n) => return Err(format!("charge_failures={n} in {memcg} around an OOM kill")),
        None if !m.kprobe_like() && m.unavailable().iter().any(|u| u == "charge_failures") => {
            "charge_failures=null".to_string()
        }
        None => return Err("charge_failures is null but the plan claims it".into()),
    };
    Ok(format!("pid {pid} in {memcg}, {failures}"))
}

fn check_reclaim(m: &ModeRun) -> Outcome {
    let info = m.info("reclaim")?;
    let memcg = info["memcg"].as_str();
    let n = m.intervals(memcg).count();
    if n == 0 {
        return Err(format!("no memcg_interval record for {memcg}"));
    }
    let unavailable = m.unavailable();
    let mut detail = vec![format!("{n} intervals")];
    // Charge counters: mandatory for fentry/kprobe, else null if unavailable.
    for f in ["charge_calls", "charge_ns"] {
        match m.sum(memcg, f)? {
            Some(v) if v > 0 => detail.push(format!("{f}={v}")),
            Some(v) => return Err(format!("{f}={v} for {memcg}")),
            None if !m.kprobe_like() && unavailable.iter().any(|u| u == f) => {
                detail.push(format!("{f}=null"))
            }
            None => return Err(format!("{f} is null but the plan claims it")),
        }
    }
    let mut reclaim_ns = 0;
    for f in ["reclaim_memcg_ns", "reclaim_direct_ns"] {
        reclaim_ns += m.sum(memcg, f)?.unwrap_or(0);
    }
    let count = m.sum(memcg, "reclaim_memcg_count")?.unwrap_or(0)
        + m.sum(memcg, "reclaim_direct_count")?.unwrap_or(0);
    if reclaim_ns == 0 || count == 0 {
        return Err(format!(
            "no reclaim seen for {memcg} (count {count}, ns {reclaim_ns})"
        ));
    }
    detail.push(format!("reclaims={count} reclaim_ns={reclaim_ns}"));
    Ok(detail.join(" "))
}

/// The cgroupfs state records carry (attribution issue), on every layout,
/// and the v2-only files the host (cgroup v1) cannot exercise.
fn check_cgroupfs_state(m: &ModeRun) -> Outcome {
    let info = m.info("reclaim")?;
    let memcg = info["memcg"].as_str();
    let states: Vec<&Value> = m
        .intervals(memcg)
        .map(|r| &r["state"])
        .filter(|s| s.is_object())
        .collect();
    // Usage itself may already be back near 0 when an interval closes (the
    // next workload's drop_caches empties the memcg): not asserted.
    let st = states
        .iter()
        .find(|s| s["usage_bytes"].is_u64())
        .ok_or_else(|| format!("no interval of {memcg} carries its cgroupfs state"))?;
    let usage = st["usage_bytes"].as_u64().unwrap_or(0);
    let limit = st["effective_limit_bytes"]
        .as_u64()
        .ok_or("no effective limit")?;
    if limit < usage || !path_is(&st["limited_by"], memcg) {
        return Err(format!(
            "effective limit {limit} by {} for usage {usage}",
            st["limited_by"]
        ));
    }
    if st["working_set_bytes"].as_u64().is_none_or(|w| w > usage) {
        return Err(format!(
            "working set {} vs usage {usage}",
            st["working_set_bytes"]
        ));
    }
    let hits = m.sum(memcg, "limit_hits")?.unwrap_or(0);
    if hits == 0 {
        return Err(format!(
            "no limit hits for {memcg} though it reclaimed at its limit"
        ));
    }
    let systems: Vec<&Value> = m
        .records()?
        .iter()
        .filter(|r| r["type"] == "system")
        .collect();
    if systems.is_empty() || systems.iter().any(|s| !s["dying_memcgs"].is_u64()) {
        return Err("system records lack dying_memcgs".into());
    }
    let mut detail = format!("usage {usage} of {limit}, limit hits {hits}");
    if m.cgroup == "v2" {
        // memory.events and memory.pressure exist only on cgroup v2.
        let max = states
            .iter()
            .filter_map(|s| s["events_max"].as_u64())
            .max()
            .unwrap_or(0);
        if max == 0 {
            return Err(format!("memory.events max is 0 or missing for {memcg}"));
        }
        if !states.iter().any(|s| s["pressure_some_total_us"].is_u64()) {
            return Err(format!("memory.pressure missing for {memcg}"));
        }
        detail.push_str(&format!(", memory.events max {max}, memory.pressure read"));
    }
    Ok(detail)
}

fn check_shrink(m: &ModeRun) -> Outcome {
    let info = m.info("shrink")?;
    let parent = &info["parent"];
    let count: usize = info["count"].parse().map_err(|_| "bad count in INFO")?;
    let memcgs: Vec<String> = (1..=count).map(|i| format!("{parent}/m{i}")).collect();
    let unavailable = m.unavailable();
    let mut with_calls = 0;
    let (mut calls, mut zero, mut shrink_slab) = (0, None::<u64>, None::<u64>);
    for cg in &memcgs {
        let c = m.sum(cg, "do_shrink_slab_calls")?.unwrap_or(0);
        calls += c;
        with_calls += (c > 0) as usize;
        if let Some(z) = m.sum(cg, "do_shrink_slab_zero")? {
            zero = Some(zero.unwrap_or(0) + z);
        }
        if let Some(n) = m.sum(cg, "shrink_slab_calls")? {
            shrink_slab = Some(shrink_slab.unwrap_or(0) + n);
        }
    }
    let detail = format!(
        "{with_calls}/{count} memcgs with do_shrink_slab calls: calls={calls} zero={} shrink_slab_calls={}",
        show(zero),
        show(shrink_slab)
    );
    if with_calls < count {
        return Err(detail);
    }
    if m.kprobe_like() {
        if zero.unwrap_or(0) == 0 {
            return Err(format!("{detail}: want do_shrink_slab_zero > 0"));
        }
        if shrink_slab.unwrap_or(0) == 0 {
            return Err(format!("{detail}: want shrink_slab_calls > 0"));
        }
    } else if zero.is_some() || !unavailable.iter().any(|u| u == "do_shrink_slab_zero") {
        return Err(format!(
            "{detail}: do_shrink_slab_zero must be null under {}",
            m.mode
        ));
    }
    if unavailable.iter().any(|u| u == "shrinkers") {
        return Ok(detail);
    }
    // Superblock shrinkers are named. Each memcg has kernfs dentries and
    // inodes of the cgroup filesystem charged to it (it read its own cgroup
    // files), so that superblock's shrinker is called for it in every mode.
    // (Its tmpfs mount is never shrunk per memcg: tmpfs pins its dentries
    // and keeps no unused inodes, so the kernel never calls that shrinker
    // for a memcg; it only shows in global/root passes.)
    let kernfs = if m.cgroup == "v2" {
        "cgroup2"
    } else {
        "cgroup"
    };
    let mut fs_types = std::collections::BTreeSet::new();
    let mut named = 0;
    for cg in &memcgs {
        let mut found = false;
        for row in m
            .intervals(cg)
            .filter_map(|r| r["shrinkers"].as_array())
            .flatten()
        {
            if let Some(t) = row["fs_type"].as_str() {
                fs_types.insert(t.to_owned());
                found |= t == kernfs;
            }
        }
        named += found as usize;
    }
    let detail =
        format!("{detail}; {named}/{count} with a {kernfs} shrinker row, fs_types={fs_types:?}");
    if named == 0 {
        return Err(format!(
            "{detail}: want some shrinker row with fs_type \"{kernfs}\""
        ));
    }
    // Every superblock shrinker of every memcg, named.
    let unnamed = m
        .records()?
        .iter()
        .filter(|r| r["type"] == "memcg_interval")
        .filter_map(|r| r["shrinkers"].as_array())
        .flatten()
        .filter(|s| s["count_objects"] == "super_cache_count")
        .find(|s| !s["fs_type"].is_string() || !s["device"].is_string());
    if let Some(s) = unnamed {
        return Err(format!(
            "{detail}: superblock shrinker without fs_type/device: {s}"
        ));
    }
    Ok(detail)
}

/// A `memcg_interval` record's `shrinkers` list holds at most this many
/// rows (the busiest; docs/events.md).
const SHRINKER_ROWS: usize = 10;

/// The zero-yield counts of the function hooks (fentry/kprobe; tracepoint
/// mode cannot see them and `shrink` checks they are null there), over
/// every workload of the mode: in every record and every shrinker row a
/// count (never null); per memcg over the whole stream (an interval's read
/// of a per-CPU value may catch a call half counted), no more zero-yield
/// calls than calls and a non-zero `freed` only with some call that was
/// not zero-yield, in its own counters and its rows'; and the rows add up to the memcg's
/// own counters exactly (the kernel counts a call once, per (memcg,
/// shrinker), and the agent sums a memcg's over its shrinkers); rows cut
/// at 10 never add up to more.
fn check_shrink_counts(m: &ModeRun) -> Outcome {
    if !m.kprobe_like() {
        return Ok(format!("zero-yield counts unseen under {}", m.mode));
    }
    #[derive(Default)]
    struct Sums {
        calls: u64,
        zero: u64,
        freed: u64,
        row_calls: u64,
        row_zero: u64,
        row_freed: u64,
        intervals: u64,
        cut: bool,
    }
    let count = |v: &Value, what: &str| -> Result<u64, String> {
        v.as_u64()
            .ok_or_else(|| format!("{what} is {v}, want a count"))
    };
    let mut by_memcg: BTreeMap<u64, (String, Sums)> = BTreeMap::new();
    for r in m
        .records()?
        .iter()
        .filter(|r| r["type"] == "memcg_interval")
    {
        let path = r["memcg"]["path"].as_str().unwrap_or("?").to_owned();
        let at = format!("{path} at ts_ns={}", r["ts_ns"]);
        let calls = count(&r["do_shrink_slab_calls"], "do_shrink_slab_calls")?;
        let zero = count(
            &r["do_shrink_slab_zero"],
            &format!("do_shrink_slab_zero of {at}"),
        )?;
        let freed = count(&r["do_shrink_slab_freed"], "do_shrink_slab_freed")?;
        let rows = r["shrinkers"].as_array().map_or(&[][..], Vec::as_slice);
        let id = count(&r["memcg"]["id"], "memcg.id")?;
        let s = &mut by_memcg
            .entry(id)
            .or_insert_with(|| (path, Sums::default()))
            .1;
        s.calls += calls;
        s.zero += zero;
        s.freed += freed;
        s.intervals += 1;
        s.cut |= rows.len() >= SHRINKER_ROWS;
        for row in rows {
            let rc = count(&row["calls"], "shrinker calls")?;
            let rz = count(&row["zero"], &format!("shrinker zero of {at}"))?;
            let rf = count(&row["freed"], "shrinker freed")?;
            s.row_calls += rc;
            s.row_zero += rz;
            s.row_freed += rf;
        }
    }
    let (mut calls, mut zero, mut exact) = (0, 0, 0);
    for (path, s) in by_memcg.values() {
        calls += s.calls;
        zero += s.zero;
        let rows = [s.row_calls, s.row_zero, s.row_freed];
        let own = [s.calls, s.zero, s.freed];
        for [c, z, f] in [own, rows] {
            if z > c || (f > 0 && z == c) {
                return Err(format!(
                    "{path}: do_shrink_slab (calls, zero, freed) {own:?}, its shrinker rows' {rows:?}"
                ));
            }
        }
        let off = if s.cut {
            rows.iter().zip(&own).any(|(r, o)| r > o)
        } else {
            rows != own
        };
        if off {
            return Err(format!(
                "{path}: shrinker rows (calls, zero, freed) {rows:?} vs the memcg's own {own:?} \
                 over {} intervals",
                s.intervals
            ));
        }
        exact += !s.cut as usize;
    }
    if zero == 0 {
        return Err(format!("do_shrink_slab calls={calls}, zero-yield 0"));
    }
    Ok(format!(
        "do_shrink_slab calls={calls} zero={zero} over {} memcgs; rows add up exactly for {exact}",
        by_memcg.len()
    ))
}

fn show(v: Option<u64>) -> String {
    v.map_or_else(|| "null".to_owned(), |v| v.to_string())
}

fn check_doctor(b: &BootRun) -> Outcome {
    let text = b
        .transcript
        .files
        .get("doctor.json")
        .ok_or("no doctor.json from the guest")?;
    let d: Value = serde_json::from_str(text.trim()).map_err(|e| format!("doctor --json: {e}"))?;
    let mut missing = Vec::new();
    for fam in ["fentry", "kprobe", "tracepoint"] {
        if d["families"][fam]["available"] != true {
            missing.push(format!("{fam}: {}", d["families"][fam]["reason"]));
        }
    }
    if d["btf"]["available"] != true {
        missing.push("btf".into());
    }
    if !missing.is_empty() {
        return Err(format!("unavailable: {}", missing.join("; ")));
    }
    if d["cgroup_mode"] != b.cgroup {
        return Err(format!(
            "cgroup_mode {}, the guest mounted {}",
            d["cgroup_mode"], b.cgroup
        ));
    }
    // `doctor` shows the auto plan: it must pick fentry here.
    for hook in CORE_HOOKS {
        let e =
            plan_entry(&d["plan"], hook).ok_or_else(|| format!("{hook} missing from the plan"))?;
        if e["family"] != "fentry" {
            return Err(format!("auto plan for {hook}: {e}"));
        }
    }
    Ok(format!(
        "kernel {} cgroup {}",
        d["kernel_release"], d["cgroup_mode"]
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn transcript(infos: &[&str]) -> Transcript {
        Transcript::parse(infos.iter().copied(), "")
    }

    #[test]
    fn oom_and_reclaim_checks() {
        let t = transcript(&[
            "INFO scenario=oom tag=kprobe pid=42 comm=dd memcg=/vt_kprobe_oom rc=137",
            "INFO scenario=reclaim tag=kprobe memcg=/vt_kprobe_reclaim rc=0",
        ]);
        let ndjson = r#"{"type":"header","plan":[],"unavailable":[]}
{"type":"oom_kill","victim":{"pid":42,"comm":"dd"},"victim_memcg":{"id":5,"path":"/vt_kprobe_oom"},"oom_memcg":{"id":5,"path":"/vt_kprobe_oom"}}
{"type":"memcg_interval","memcg":{"id":5,"path":"/vt_kprobe_oom"},"charge_calls":529,"charge_failures":2}
{"type":"memcg_interval","memcg":{"id":6,"path":"/vt_kprobe_reclaim"},"charge_calls":3,"charge_ns":100,"reclaim_memcg_count":1,"reclaim_memcg_ns":50,"reclaim_direct_count":0,"reclaim_direct_ns":0}
"#;
        let m = ModeRun {
            mode: "kprobe",
            cgroup: "v2",
            transcript: &t,
            records: parse_ndjson(ndjson),
        };
        assert!(check_oom_kill(&m).is_ok(), "{:?}", check_oom_kill(&m));
        assert!(check_reclaim(&m).is_ok(), "{:?}", check_reclaim(&m));
        assert!(check_plan(&m).is_err());
        assert!(check_shrink(&m).is_err());

        // The same kill without a failed charge seen is a failure.
        let m = ModeRun {
            records: parse_ndjson(
                &ndjson.replace(r#""charge_failures":2"#, r#""charge_failures":0"#),
            ),
            ..m
        };
        assert!(check_oom_kill(&m).is_err());
    }

    #[test]
    fn oom_attribution_check() {
        let t = transcript(&[
            "INFO scenario=oomburst tag=tracepoint kills=7:/vt_b0/job:/vt_b0:137,8:/vt_loop:/vt_loop:137,",
        ]);
        let ndjson = r#"{"type":"header","plan":[],"unavailable":[]}
{"type":"oom_kill","victim":{"pid":7},"victim_memcg":{"id":5,"path":"/vt_b0/job"},"oom_memcg":{"id":4,"path":"/vt_b0"},"oom_memcg_source":"inferred"}
{"type":"oom_kill","victim":{"pid":8},"victim_memcg":{"id":6,"path":"/vt_loop"},"oom_memcg":{"id":6,"path":"/vt_loop"},"oom_memcg_source":"kmsg"}
"#;
        let m = ModeRun {
            mode: "tracepoint",
            cgroup: "v1",
            transcript: &t,
            records: parse_ndjson(ndjson),
        };
        assert_eq!(
            check_oom_attribution(&m),
            Ok("2 of 2 kills fully attributed".to_string())
        );
        // A limiting memcg without its source, or a lost victim path, fails.
        for (from, to) in [
            (r#","oom_memcg_source":"kmsg""#, ""),
            (r#""path":"/vt_b0/job""#, r#""path":null"#),
        ] {
            let m = ModeRun {
                records: parse_ndjson(&ndjson.replace(from, to)),
                ..m
            };
            assert!(check_oom_attribution(&m).is_err(), "{from}");
        }
    }

    /// A whole `--attach tracepoint` stream as memtrace writes it on these
    /// kernels: the function-only hooks unavailable, do_shrink_slab and
    /// the OOM hook on tp_btf, and exactly their lost fields null.
    fn tracepoint_stream() -> Vec<Value> {
        let hook = |hook: &str, family: Option<&str>| {
            json!({
                "hook": hook,
                "family": family,
                "status": if family.is_some() { "attached" } else { "unavailable" },
            })
        };
        let header = json!({
            "type": "header",
            "ts_ns": 1,
            "cgroup_mode": "v2",
            "attach_mode": "tracepoint",
            "plan": [
                hook("try_charge_memcg", None),
                hook("shrink_slab", None),
                hook("do_shrink_slab", Some("tp_btf")),
                hook("oom_kill_process", Some("tp_btf")),
                hook("reclaim_direct", Some("tp_btf")),
                hook("reclaim_memcg", Some("tp_btf")),
                hook("kswapd", Some("tp_btf")),
            ],
            "unavailable": [
                "charge_calls", "charge_failures", "charge_ns", "charge_pages",
                "charge_p50_ns", "charge_p99_ns", "shrink_slab_calls",
                "shrink_slab_ns", "shrink_slab_freed", "shrink_slab_kswapd_ns",
                "do_shrink_slab_zero", "oom_kill.totalpages",
                "oom_kill.chosen_points", "oom_kill.trigger.pid",
            ],
        });
        let interval = json!({
            "type": "memcg_interval",
            "ts_ns": 2,
            "memcg": {"id": 6, "path": "/p/m1"},
            "charge_calls": null, "charge_failures": null, "charge_ns": null,
            "charge_pages": null, "charge_p50_ns": null, "charge_p99_ns": null,
            "reclaim_direct_count": 0, "reclaim_direct_ns": 0, "reclaim_direct_pages": 0,
            "reclaim_memcg_count": 1, "reclaim_memcg_ns": 50, "reclaim_memcg_pages": 3,
            "reclaim_p50_ns": 64, "reclaim_p99_ns": 64,
            "shrink_slab_calls": null, "shrink_slab_ns": null,
            "shrink_slab_freed": null, "shrink_slab_kswapd_ns": null,
            "do_shrink_slab_calls": 2, "do_shrink_slab_zero": null,
            "do_shrink_slab_freed": 5, "do_shrink_slab_ns": 100,
            "limit_hits": 0,
            "shrinkers": [{"count_objects": "super_cache_count", "fs_type": "cgroup2", "device": "cgroup2"}],
        });
        let kill = json!({
            "type": "oom_kill",
            "ts_ns": 3,
            "before_start": false,
            "victim": {"pid": 42, "comm": "dd"},
            "trigger": {"pid": null, "comm": "dd"},
            "totalpages": null,
            "chosen_points": null,
        });
        let system = json!({
            "type": "system",
            "ts_ns": 4,
            "dying_memcgs": 0,
            "ringbuf_drops": 0, "unmatched_returns": 0, "memcg_map_full": 0,
            "shrinker_map_full": 0, "inflight_map_full": 0, "missed_returns": 0,
        });
        vec![header, interval, kill, system]
    }

    #[test]
    fn tracepoint_nulls() {
        let t = transcript(&["INFO scenario=shrink tag=tracepoint parent=/p count=1"]);
        let run = |edit: &dyn Fn(&mut Vec<Value>)| {
            let mut records = tracepoint_stream();
            edit(&mut records);
            ModeRun {
                mode: "tracepoint",
                cgroup: "v2",
                transcript: &t,
                records: Ok(records),
            }
        };
        let m = run(&|_| {});
        for (name, check) in [
            ("ndjson", check_ndjson as fn(&ModeRun) -> Outcome),
            ("plan", check_plan),
            ("shrink", check_shrink),
            ("losses", check_losses),
        ] {
            assert!(check(&m).is_ok(), "{name}: {:?}", check(&m));
        }

        // shrink_slab has no tracepoint: a plan attaching it through one
        // is not what tracepoint mode must give.
        let e = check_plan(&run(&|r| r[0]["plan"][1]["family"] = json!("tracepoint"))).unwrap_err();
        assert!(e.contains("shrink_slab under --attach tracepoint"), "{e}");
        // The same header in fentry mode is wrong hook by hook.
        let fentry = ModeRun {
            mode: "fentry",
            ..run(&|r| r[0]["attach_mode"] = json!("fentry"))
        };
        assert!(check_plan(&fentry).is_err());
        // An unavailable field forgotten in the list.
        let e = check_plan(&run(&|r| {
            r[0]["unavailable"].as_array_mut().unwrap().pop();
        }))
        .unwrap_err();
        assert!(e.contains("leaves exactly"), "{e}");
        // A number where the header says null, a null where it promises a
        // count, a percentile missing although reclaims happened.
        for (field, value) in [
            ("charge_calls", json!(3)),
            ("do_shrink_slab_calls", Value::Null),
            ("reclaim_p99_ns", Value::Null),
            ("shrinkers", Value::Null),
        ] {
            let e = check_ndjson(&run(&|r| r[1][field] = value.clone())).unwrap_err();
            assert!(e.contains(field), "{e}");
        }
        let e = check_ndjson(&run(&|r| r[2]["totalpages"] = json!(8192))).unwrap_err();
        assert!(e.contains("totalpages"), "{e}");
        // The stream must end with the final system record.
        assert!(check_ndjson(&run(&|r| r.truncate(3))).is_err());
        // Any loss is a failure.
        let e = check_losses(&run(&|r| r[3]["missed_returns"] = json!(1))).unwrap_err();
        assert!(e.contains("missed_returns=1"), "{e}");

        // Shrinkers listed, but the superblock's is not named.
        let e = check_shrink(&run(&|r| r[1]["shrinkers"][0]["fs_type"] = Value::Null)).unwrap_err();
        assert!(e.contains("want some shrinker row"), "{e}");
        let e = check_shrink(&run(&|r| r[1]["shrinkers"][0]["device"] = Value::Null)).unwrap_err();
        assert!(e.contains("without fs_type/device"), "{e}");
        // Tracepoint mode: no zero-yield counts to check.
        assert!(check_shrink_counts(&m).is_ok());
        assert!(
            parse_ndjson("{\"a\":1}\nnot json\n")
                .unwrap_err()
                .starts_with("line 2")
        );
    }

    #[test]
    fn shrink_counts_check() {
        let t = transcript(&[]);
        // One memcg over two intervals, fentry mode: (calls, zero, freed)
        // and its rows'.
        let stream = |own: [[u64; 3]; 2], rows: [[u64; 3]; 2]| {
            own.iter()
                .zip(&rows)
                .enumerate()
                .map(|(i, (o, r))| {
                    json!({
                        "type": "memcg_interval", "ts_ns": i + 1,
                        "memcg": {"id": 6, "path": "/p/m1"},
                        "do_shrink_slab_calls": o[0], "do_shrink_slab_zero": o[1],
                        "do_shrink_slab_freed": o[2],
                        "shrinkers": [{"shrinker": "0x1", "calls": r[0], "zero": r[1], "freed": r[2]}],
                    })
                })
                .collect::<Vec<_>>()
        };
        let check = |records: Vec<Value>| {
            check_shrink_counts(&ModeRun {
                mode: "fentry",
                cgroup: "v2",
                transcript: &t,
                records: Ok(records),
            })
        };
        let ok = check(stream([[10, 9, 3], [5, 5, 0]], [[10, 9, 3], [5, 5, 0]])).unwrap();
        assert!(
            ok.contains("calls=15 zero=14") && ok.contains("exactly for 1"),
            "{ok}"
        );
        // One call missing from the rows.
        assert!(check(stream([[10, 9, 3], [5, 5, 0]], [[9, 8, 3], [5, 5, 0]])).is_err());
        // Rows that never count zero-yield calls, more zero than calls, a
        // freed count without a call that freed, no zero-yield call at all,
        // a null count: failures.
        for (own, rows) in [
            ([[10, 9, 3], [5, 5, 0]], [[10, 0, 3], [5, 0, 0]]),
            ([[10, 11, 3], [5, 5, 0]], [[10, 11, 3], [5, 5, 0]]),
            ([[10, 10, 3], [5, 5, 0]], [[10, 10, 3], [5, 5, 0]]),
            ([[10, 0, 3], [5, 0, 0]], [[10, 0, 3], [5, 0, 0]]),
        ] {
            assert!(check(stream(own, rows)).is_err(), "{own:?} {rows:?}");
        }
        let mut r = stream([[10, 9, 3], [5, 5, 0]], [[10, 9, 3], [5, 5, 0]]);
        r[1]["do_shrink_slab_zero"] = Value::Null;
        assert!(
            check(r)
                .unwrap_err()
                .contains("do_shrink_slab_zero of /p/m1")
        );
    }
}
