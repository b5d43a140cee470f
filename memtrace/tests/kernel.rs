//! End-to-end tests of `memtrace stream` and `memtrace doctor` on the
//! running kernel, as root: real BPF programs, real memcgs, real OOM kills.
use std::{
    fs,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use memtrace_testkit::*;
use memtrace_testkit::{
    churn::{field_names, write_through_cache},
    plan::first_ok_family,
    probe::Probe,
    root::as_root,
};
use serde_json::Value;

fn header(records: &[Value]) -> &Value {
    let h = &records[0];
    assert_eq!(h["type"], "header", "first record is the header: {h}");
    h
}

/// Records of `kind` about the memcg at `rel`.
fn for_memcg<'a>(records: &'a [Value], kind: &str, rel: &str) -> Vec<&'a Value> {
    of_type(records, kind)
        .into_iter()
        .filter(|r| r["memcg"]["path"] == rel)
        .collect()
}

fn live_kill(records: &[Value], pid: u32) -> &Value {
    let kills: Vec<_> = of_type(records, "oom_kill")
        .into_iter()
        .filter(|r| r["victim"]["pid"] == pid && r["before_start"] == false)
        .collect();
    assert_eq!(
        kills.len(),
        1,
        "exactly one oom_kill record for pid {pid}; records: {records:#?}"
    );
    kills[0]
}

/// Runs `tail /dev/zero` (which allocates until killed) in `memcg` and
/// returns its pid once the OOM killer has killed it.
fn oom_victim(memcg: &TestMemcg, exe: &Path) -> u32 {
    let mut child = memcg.spawn(Command::new(exe).arg("/dev/zero"));
    let pid = child.id();
    let st = wait_timeout(&mut child, Duration::from_secs(60));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        st.signal(),
        Some(libc::SIGKILL),
        "the workload must be OOM-killed, got {st}"
    );
    pid
}

/// Lets userspace see the kernel log lines and ring-buffer events.
fn settle() {
    std::thread::sleep(Duration::from_millis(1500));
}

#[test]
fn oom_kill_in_limited_memcg_names_victim_and_memcg() {
    let (_g, dir) = as_root("oom");
    let memcg = TestMemcg::new("oom");
    memcg.limit_no_swap(64 << 20);
    let stream = Stream::start(&dir, &[]);
    let pid = oom_victim(&memcg, Path::new("/usr/bin/tail"));
    settle();
    let records = stream.stop(libc::SIGINT);
    let h = header(&records);
    let kill = live_kill(&records, pid);
    assert_eq!(kill["victim"]["comm"], "tail");
    assert_eq!(kill["constraint"], "memcg");
    assert_eq!(kill["oom_memcg"]["path"], memcg.rel.as_str(), "{kill}");
    assert_eq!(kill["oom_memcg"]["id"], memcg.inode());
    assert_eq!(kill["victim_memcg"]["path"], memcg.rel.as_str());
    assert!(
        kill["victim"]["rss_anon_kb"].as_u64().unwrap() > 32 << 10,
        "most of the 64 MiB is anon: {kill}"
    );
    let sources: Vec<&str> = kill["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    if h["kmsg"] == true {
        assert!(sources.contains(&"kmsg"), "{kill}");
    }
    let oom_family = plan_family(h, "oom_kill_process");
    match oom_family.as_str() {
        Some("fentry" | "kprobe") => {
            assert!(sources.contains(&"oom_kill_process"));
            assert!(kill["totalpages"].as_u64().unwrap() > 0);
        }
        Some("tp_btf" | "tracepoint") => {
            assert!(sources.contains(&"mark_victim"));
            assert!(
                kill["totalpages"].is_null(),
                "tracepoint plans cannot see totalpages: null, not 0"
            );
        }
        other => panic!("no OOM hook attached: {other:?}"),
    }
}

#[test]
fn oom_from_a_parent_limit_names_the_parent() {
    let (_g, dir) = as_root("oom-parent");
    let mut parent = TestMemcg::new("parent");
    parent.limit_no_swap(64 << 20);
    let parent_rel = parent.rel.clone();
    let child = parent.child("unlimited");
    let child_rel = child.rel.clone();
    let stream = Stream::start(&dir, &[]);
    let pid = oom_victim(child, Path::new("/usr/bin/tail"));
    settle();
    let records = stream.stop(libc::SIGTERM);
    let kill = live_kill(&records, pid);
    assert_eq!(
        kill["oom_memcg"]["path"],
        parent_rel.as_str(),
        "the limit that fired is the parent's: {kill}"
    );
    assert_eq!(kill["victim_memcg"]["path"], child_rel.as_str(), "{kill}");
    assert_ne!(kill["oom_memcg"]["id"], kill["victim_memcg"]["id"]);
    drop(parent);
}

/// A stream (500 ms intervals) running while `mib` MiB go through the page
/// cache of a real disk from `memcg`, limited to `limit` bytes; stop it to
/// read what it wrote.
fn stream_during_churn(
    dir: &Path,
    memcg: &TestMemcg,
    limit: u64,
    mib: u64,
    timeout: Duration,
) -> Stream {
    memcg.limit(limit);
    let stream = Stream::start(dir, &["--interval", "500ms"]);
    let file = std::env::temp_dir().join(format!("memtrace-churn-{}-{mib}", std::process::id()));
    write_through_cache(memcg, &file, mib, timeout);
    settle();
    stream
}

#[test]
fn write_churn_shows_reclaim_and_limit_hits_and_nulls_for_the_unseen() {
    let (_g, dir) = as_root("churn");
    let memcg = TestMemcg::new("churn");
    // 1 GiB through the page cache of a real disk from a 64 MiB memcg: the
    // memcg must reclaim its own cache over and over.
    let stream = stream_during_churn(&dir, &memcg, 64 << 20, 1024, Duration::from_secs(120));
    let (cpu, rss_kib) = cpu_and_rss(stream.pid());
    let records = stream.stop(libc::SIGINT);
    println!(
        "agent during 1 GiB churn: cpu {cpu:.2} s, peak rss {rss_kib} KiB, {} records",
        records.len()
    );

    let h = header(&records);
    assert_plan_families_work(&h["plan"], &Probe::run());
    let rows = for_memcg(&records, "memcg_interval", &memcg.rel);
    assert!(!rows.is_empty(), "memcg_interval records for {}", memcg.rel);
    let sum = |f: &str| rows.iter().filter_map(|r| r[f].as_u64()).sum::<u64>();
    assert!(
        sum("reclaim_memcg_count") > 0,
        "limit reclaim seen: {rows:#?}"
    );
    assert!(sum("reclaim_memcg_ns") > 0);
    assert!(sum("reclaim_memcg_pages") > 0);
    assert!(
        sum("limit_hits") > 0,
        "failcnt/memory.events max rose: {rows:#?}"
    );
    assert!(
        rows.iter()
            .any(|r| r["reclaim_p99_ns"].as_u64().is_some_and(|p| p > 0))
    );
    for r in &rows {
        assert_eq!(
            r["memcg"]["id"],
            memcg.inode(),
            "kernel-side memcg id is the directory's inode"
        );
    }
    // What the plan cannot see is null, never 0.
    let unavailable = field_names(&h["unavailable"]);
    for r in &rows {
        for f in &unavailable {
            if let Some(v) = r.get(*f) {
                assert!(
                    v.is_null(),
                    "{f} is unavailable on this plan and must be null: {r}"
                );
            }
        }
    }
    // And what it can see is a number.
    for f in [
        "reclaim_memcg_count",
        "reclaim_direct_count",
        "do_shrink_slab_calls",
    ] {
        if !unavailable.contains(&f) {
            assert!(rows[0][f].is_u64(), "{f}: {}", rows[0]);
        }
    }
    let stats = of_type(&records, "system");
    assert!(!stats.is_empty());
    let last = stats.last().unwrap();
    assert_eq!(last["memcg_map_full"], 0);
}

#[test]
fn memcg_id_read_in_the_kernel_is_the_directory_inode() {
    let (_g, dir) = as_root("inode");
    let memcg = TestMemcg::new("inode");
    let stream = stream_during_churn(&dir, &memcg, 16 << 20, 128, Duration::from_secs(60));
    let records = stream.stop(libc::SIGINT);
    let ino = memcg.inode();
    let by_id: Vec<_> = of_type(&records, "memcg_interval")
        .into_iter()
        .filter(|r| r["memcg"]["id"] == ino)
        .collect();
    assert!(
        !by_id.is_empty(),
        "a record carries the id {ino} computed in the kernel"
    );
    for r in by_id {
        assert_eq!(r["memcg"]["path"], memcg.rel.as_str());
    }
}

#[test]
fn hostile_memcg_names_and_comms_are_escaped() {
    let (_g, dir) = as_root("hostile");
    // cgroupfs accepts ESC, BEL and C1 bytes in names (not '/' or newline).
    let memcg = TestMemcg::new("evil\x1b]0;owned\x07\u{9b}31m name");
    memcg.limit_no_swap(32 << 20);
    // The victim's comm comes from its executable's name.
    let exe = dir.join("\x1b[2Jtail\x07");
    std::os::unix::fs::symlink("/usr/bin/tail", &exe).unwrap();
    let stream = Stream::start(&dir, &["--interval", "500ms"]);
    let pid = oom_victim(&memcg, &exe);
    settle();
    let records = stream.stop(libc::SIGINT); // also asserts no raw controls in the file
    let kill = live_kill(&records, pid);
    assert_eq!(
        kill["oom_memcg"]["path"],
        memcg.rel.as_str(),
        "parsed back to the real name"
    );
    assert_eq!(
        kill["victim"]["comm"], "\x1b[2Jtail\x07",
        "the comm's real bytes"
    );
    let raw = fs::read_to_string(dir.join("stream.ndjson")).unwrap();
    assert!(
        raw.contains("\\u001b]0;owned\\u0007\\u009b31m"),
        "escaped in the JSON text"
    );
}

fn doctor_json() -> Value {
    let out = memtrace_ok(["doctor", "--json"]);
    serde_json::from_slice(&out).expect("doctor --json prints one JSON object")
}

#[test]
fn doctor_reports_what_this_kernel_can_do() {
    require_root();
    let _g = serial();
    let d = doctor_json();
    assert_eq!(
        d["kernel_release"],
        fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap()
            .trim()
    );
    assert_eq!(
        d["btf"]["available"],
        Path::new("/sys/kernel/btf/vmlinux").exists()
    );
    let kprobe_pmu = Path::new("/sys/bus/event_source/devices/kprobe").exists();
    assert_eq!(
        d["families"]["kprobe"]["available"], kprobe_pmu,
        "{}",
        d["families"]
    );
    if !kprobe_pmu {
        let why = d["families"]["kprobe"]["reason"].as_str().unwrap();
        assert!(why.contains("no kprobe support"), "{why}");
    }
    assert_eq!(
        d["families"]["tp_btf"]["available"], true,
        "{}",
        d["families"]
    );
    assert_eq!(
        d["families"]["tracepoint"]["available"], true,
        "classic tracepoints attach (tracefs mounted privately if needed)"
    );
    // The plan auto picks: the first family that worked for each hook.
    for p in d["plan"].as_array().unwrap() {
        assert_eq!(p["family"], first_ok_family(p), "{p}");
        assert_eq!(
            p["status"],
            if p["family"].is_null() {
                "unavailable"
            } else {
                "attached"
            }
        );
    }
    assert!(d["maps_total_bytes"].as_u64().unwrap() > 0);
    // Doctor must not leave tracefs mounted on the host.
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    assert_eq!(
        mounts.contains(" tracefs "),
        Path::new("/sys/kernel/tracing/events").exists()
    );
}

/// Which families can carry each hook at all, best first as `--attach
/// auto` tries them (docs/kernels.md, "What each attach mode sees"): the
/// function hooks have
/// fentry and kprobe programs, some also a tracepoint fallback; reclaim and
/// kswapd exist only as tracepoints.
const HOOK_FAMILIES: &[(&str, &[&str])] = &[
    ("try_charge_memcg", &["fentry", "kprobe"]),
    ("shrink_slab", &["fentry", "kprobe"]),
    ("do_shrink_slab", &["fentry", "kprobe", "tp_btf"]),
    (
        "oom_kill_process",
        &["fentry", "kprobe", "tp_btf", "tracepoint"],
    ),
    ("reclaim_direct", &["tp_btf", "tracepoint"]),
    ("reclaim_memcg", &["tp_btf", "tracepoint"]),
    ("kswapd", &["tp_btf", "tracepoint"]),
];

/// Every hook of a plan (doctor's or a stream header's) is on a family the
/// probe found working.
fn assert_plan_families_work(plan: &Value, probe: &Probe) {
    for p in plan.as_array().unwrap() {
        if let Some(family) = p["family"].as_str() {
            assert!(
                probe.works(family),
                "{} is on {family}, which the probe could not attach: {probe:?}",
                p["hook"]
            );
        }
    }
}

#[test]
fn doctor_families_match_an_independent_probe_of_the_kernel() {
    require_root();
    let _g = serial();
    let probe = Probe::run();
    println!("probe of this kernel: {probe:?}");
    let d = doctor_json();
    for family in ["fentry", "kprobe", "tp_btf", "tracepoint"] {
        let verdict = &d["families"][family];
        assert_eq!(
            verdict["available"],
            probe.works(family),
            "{family}: doctor says {verdict}, the probe {:?}",
            probe.family(family)
        );
        if !probe.works(family) {
            assert!(
                verdict["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "an unavailable family says why: {verdict}"
            );
        }
    }

    // The auto plan: each hook on the best family that works here for it
    // (function families only where the function exists to hook).
    assert_plan_families_work(&d["plan"], &probe);
    let plan = d["plan"].as_array().unwrap();
    assert_eq!(plan.len(), HOOK_FAMILIES.len(), "{plan:#?}");
    for (hook, families) in HOOK_FAMILIES {
        let p = plan
            .iter()
            .find(|p| p["hook"] == *hook)
            .unwrap_or_else(|| panic!("{hook} is in the plan"));
        let has_symbol = !d["symbols"][hook].is_null();
        let expected = families
            .iter()
            .find(|f| probe.works(f) && (has_symbol || !matches!(**f, "fentry" | "kprobe")));
        assert_eq!(p["family"].as_str(), expected.copied(), "{hook}: {p}");
    }

    // What the plan cannot see is listed, and only that.
    let family_of = |hook: &str| {
        plan.iter().find(|p| p["hook"] == hook).unwrap()["family"]
            .as_str()
            .map(str::to_string)
    };
    let unavailable = field_names(&d["unavailable"]);
    // Charge and shrink_slab figures need their hook attached at all;
    // zero-object calls and the OOM badness figures are seen only from the
    // function itself (fentry or kprobe).
    let function_family = |hook| matches!(family_of(hook).as_deref(), Some("fentry" | "kprobe"));
    for (field, seen) in [
        ("charge_calls", family_of("try_charge_memcg").is_some()),
        ("shrink_slab_ns", family_of("shrink_slab").is_some()),
        ("do_shrink_slab_zero", function_family("do_shrink_slab")),
        ("oom_kill.totalpages", function_family("oom_kill_process")),
    ] {
        assert_eq!(
            unavailable.contains(&field),
            !seen,
            "{field}: {unavailable:?}"
        );
    }
}

#[test]
fn forcing_an_impossible_attach_mode_is_a_clear_error() {
    let (_g, dir) = as_root("kprobe");
    let kprobes = Probe::run().works("kprobe");
    let kprobe_pmu = Path::new("/sys/bus/event_source/devices/kprobe").exists();
    let out = Command::new(memtrace_bin())
        .args([
            "stream",
            "--attach",
            "kprobe",
            "--duration",
            "1s",
            "--output",
        ])
        .arg(dir.join("out.ndjson"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if kprobes {
        assert!(
            out.status.success(),
            "kprobes exist here, so --attach kprobe works: {err}"
        );
        let r = read_records(&dir.join("out.ndjson"));
        assert!(
            r[0]["plan"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["family"] == "kprobe")
        );
    } else {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("--attach kprobe") && err.contains("--attach auto"),
            "{err}"
        );
        if !kprobe_pmu {
            assert!(err.contains("no kprobe support"), "{err}");
        }
        let written = fs::read_to_string(dir.join("out.ndjson")).unwrap_or_default();
        assert!(written.is_empty(), "nothing is streamed on a failed start");
    }
}

#[test]
fn unprivileged_user_gets_the_cause_and_the_fix() {
    require_root();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            memtrace_bin(),
            "stream",
        ])
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("needs root or CAP_BPF+CAP_PERFMON"), "{err}");
    assert!(
        err.contains("CAP_SYSLOG") && err.contains("CAP_SYS_ADMIN") && err.contains("doctor"),
        "the hint names everything the agent reads: {err}"
    );
}

/// `cmd` as root with only these capabilities (`bpf,perfmon`).
fn with_caps(caps: &str, cmd: &str, args: &[&str]) -> std::process::Output {
    let set: String = std::iter::once("-all".to_string())
        .chain(caps.split(',').map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    Command::new("setpriv")
        .arg(format!("--inh-caps={set}"))
        .arg(format!("--ambient-caps={set}"))
        .arg(format!("--bounding-set={set}"))
        .arg(cmd)
        .args(args)
        .output()
        .expect("setpriv (util-linux)")
}

fn degraded_names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("degraded is an array: {v}"))
        .iter()
        .map(|d| {
            assert!(d["reason"].is_string() && d["loses"].is_string(), "{d}");
            d["source"].as_str().unwrap().to_string()
        })
        .collect()
}

/// With only CAP_BPF+CAP_PERFMON, `doctor` and the stream header name the
/// sources that degrades, as the kernel decides it: what the same
/// capability set can open is probed independently (the kernel log, symbol
/// addresses); adding CAP_SYSLOG, the fix the hint names, clears both.
#[test]
fn a_reduced_capability_set_names_its_degraded_sources() {
    require_root();
    let _g = serial();
    let probe = |caps: &str| {
        let kmsg = with_caps(caps, "sh", &["-c", "exec 3</dev/kmsg"])
            .status
            .success();
        let syms = with_caps(caps, "head", &["-n1", "/proc/kallsyms"]);
        let addr = String::from_utf8_lossy(&syms.stdout).to_string();
        let visible = addr
            .split_whitespace()
            .next()
            .is_some_and(|a| a.chars().any(|c| c != '0'));
        (kmsg, visible)
    };
    for caps in ["bpf,perfmon", "bpf,perfmon,syslog"] {
        let (kmsg_ok, syms_ok) = probe(caps);
        let out = with_caps(caps, memtrace_bin(), &["doctor", "--json"]);
        let doc: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{caps}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        let names = degraded_names(&doc["degraded"]);
        assert_eq!(
            names.contains(&"kmsg".into()),
            !kmsg_ok,
            "{caps}: {names:?}"
        );
        assert_eq!(
            names.contains(&"kallsyms".into()),
            !syms_ok,
            "{caps}: {names:?}"
        );
        if caps.contains("syslog") {
            assert!(kmsg_ok && syms_ok, "CAP_SYSLOG is the fix the hint names");
        }
        let out = with_caps(caps, memtrace_bin(), &["stream", "--duration", "1s"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let header: Value = serde_json::from_str(text.lines().next().unwrap_or(""))
            .unwrap_or_else(|e| panic!("{caps}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(degraded_names(&header["degraded"]), names, "{caps}");
        assert_eq!(header["kmsg"], kmsg_ok);
        let text_doc = with_caps(caps, memtrace_bin(), &["doctor"]);
        let text_doc = String::from_utf8_lossy(&text_doc.stdout);
        assert_eq!(
            text_doc.contains("sources       DEGRADED"),
            !names.is_empty(),
            "{text_doc}"
        );
    }
    // Root with every capability degrades nothing.
    let doc = doctor_json();
    assert_eq!(degraded_names(&doc["degraded"]), Vec::<String>::new());
}

/// `stream` with a whole hour to go, stopped by `sig`: promptly, with the
/// header first and the final counters last; its records.
fn stream_stopped_by(sig: i32, name: &str) -> Vec<Value> {
    let (_g, dir) = as_root(name);
    let stream = Stream::start(&dir, &["--interval", "1h"]);
    let start = Instant::now();
    let records = stream.stop(sig);
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(records.first().unwrap()["type"], "header");
    assert_eq!(
        records.last().unwrap()["type"],
        "system",
        "final counters are written on exit ({name})"
    );
    records
}

#[test]
fn sigterm_flushes_and_exits_zero_with_final_stats() {
    let records = stream_stopped_by(libc::SIGTERM, "sigterm");
    assert!(
        records
            .iter()
            .all(|r| r["ts"].as_str().is_some_and(|t| t.ends_with('Z')) && r["ts_ns"].is_u64())
    );
}

/// A map the kernel cannot allocate (here: memtrace's own memcg is limited
/// below the maps' size, which fits the host-wide budget) gets the cause
/// and the fix, not aya's bare "Cannot allocate memory".
#[test]
fn map_enomem_names_the_map_its_memory_and_the_fix() {
    require_root();
    let _g = serial();
    let memcg = TestMemcg::new("enomem");
    // Well under what the kernel charges while creating MEMCG_STATS with
    // 1M entries (~70 MiB seen on 6.18 before the creation succeeded in a
    // 100 MiB memcg once memtrace's own start-up memory fell below ~15
    // MiB; memtrace was then OOM-killed later instead of reporting),
    // and above memtrace's own start-up peak (~25 MiB).
    memcg.limit_no_swap(48 << 20);
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"echo $$ > "$1/cgroup.procs" && exec "$0" stream --memcg-entries 1000000 --duration 2s"#)
        .arg(memtrace_bin())
        .arg(&memcg.dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("could not allocate map MEMCG_STATS")
            && err.contains("MiB")
            && err.contains("memory cgroup")
            && err.contains("lower --memcg-entries"),
        "{err}"
    );
}

/// A hangup ends `stream` as SIGTERM does: pending records written, final
/// counters, exit 0 (it used to die with exit 129, output unwritten).
#[test]
fn sighup_ends_stream_like_sigterm() {
    stream_stopped_by(libc::SIGHUP, "sighup");
}

/// Memcgs that live a fraction of an interval (create, write through a small
/// limit, rmdir: a crashlooping job) are named in their interval records,
/// although they are gone when the interval is read; and once they are gone
/// their kernel map entries are evicted (they used to stay, and 477 of 510
/// such records had a null path).
#[test]
fn short_lived_memcgs_get_their_path_and_are_evicted() {
    let (_g, dir) = as_root("churn-short");
    let root = TestMemcg::new("short");
    let stream = Stream::start(&dir, &["--interval", "1s"]);
    // The scenario is churn under an agent in its steady state, not in its
    // first milliseconds: wait for its first interval to close.
    let started = Instant::now();
    while of_type(&read_records(&stream.out), "system").is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no interval closed in 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut ids = std::collections::HashMap::new();
    let started = Instant::now();
    for i in 0..40 {
        let d = root.dir.join(format!("job-{i}"));
        fs::create_dir(&d).unwrap();
        ids.insert(
            std::os::unix::fs::MetadataExt::ino(&fs::metadata(&d).unwrap()),
            format!("{}/job-{i}", root.rel),
        );
        fs::write(d.join("memory.limit_in_bytes"), (4u64 << 20).to_string())
            .or_else(|_| fs::write(d.join("memory.max"), (4u64 << 20).to_string()))
            .unwrap();
        let file = dir.join(format!("churn-{i}"));
        let mut child = spawn_in(
            &d,
            Command::new("dd")
                .arg("if=/dev/zero")
                .arg(format!("of={}", file.display()))
                .args(["bs=1M", "count=12"]),
        );
        wait_timeout(&mut child, Duration::from_secs(30));
        let _ = fs::remove_file(&file);
        // Its page cache is gone with the file; the memcg goes at once.
        while fs::remove_dir(&d).is_err() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let churn_time = started.elapsed();
    // The grace: a rescan (every 10 s) confirms the removal, then an idle
    // interval evicts.
    std::thread::sleep(Duration::from_secs(15));
    let records = stream.stop(libc::SIGTERM);
    let ours: Vec<&Value> = of_type(&records, "memcg_interval")
        .into_iter()
        .filter(|r| {
            r["memcg"]["id"]
                .as_u64()
                .is_some_and(|id| ids.contains_key(&id))
        })
        .collect();
    let named = ours
        .iter()
        .filter(|r| {
            r["memcg"]["path"].as_str()
                == ids
                    .get(&r["memcg"]["id"].as_u64().unwrap())
                    .map(String::as_str)
        })
        .count();
    let seen: std::collections::HashSet<u64> = ours
        .iter()
        .map(|r| r["memcg"]["id"].as_u64().unwrap())
        .collect();
    eprintln!(
        "{} memcgs in {churn_time:?}: {} interval records of {} of them, {named} with their path",
        ids.len(),
        ours.len(),
        seen.len()
    );
    assert!(
        seen.len() >= ids.len() / 2,
        "the churn must show: {} of {}",
        seen.len(),
        ids.len()
    );
    assert_eq!(
        named,
        ours.len(),
        "every record of a short-lived memcg has its path"
    );
    let systems = of_type(&records, "system");
    let evictions = |s: &Value| s["map_evictions"].as_u64().unwrap();
    let entries: Vec<u64> = systems
        .iter()
        .map(|s| s["memcg_entries"].as_u64().unwrap())
        .collect();
    let peak = *entries.iter().max().unwrap();
    let last = *entries.last().unwrap();
    eprintln!(
        "memcg_entries peak {peak}, last {last}; map_evictions {}",
        evictions(systems.last().unwrap())
    );
    assert!(
        evictions(systems.last().unwrap()) >= seen.len() as u64,
        "every removed memcg's entry is evicted"
    );
    assert!(
        last + (seen.len() as u64) / 2 <= peak,
        "memcg_entries drops after the grace: peak {peak}, last {last}"
    );
}

/// Negative dentries (slab objects charged to the memcg) made by a shell
/// inside `memcg`, for `drop_caches` to shrink.
fn make_dentries(memcg: &TestMemcg, dir: &Path, round: u32) {
    let mut child = memcg.spawn(Command::new("sh").arg("-c").arg(format!(
        "cd '{}' && for i in $(seq 3000); do [ -e {}-{round}-$i ]; done; true",
        dir.display(),
        memcg.inode()
    )));
    assert!(wait_timeout(&mut child, Duration::from_secs(60)).success());
}

/// The interval's state reads: a memcg only scanned by shrinkers carries
/// the state its last record read (with its age, unchanged); one whose
/// limit is hit is read in that interval, with the hits; and a carried
/// state is read again once its refresh age (at most 10 s) passed.
#[test]
fn shrinker_only_intervals_carry_state_and_limit_hits_read_it_again() {
    let (_g, dir) = as_root("carry");
    let passive = TestMemcg::new("carry-passive");
    let limited = TestMemcg::new("carry-limited");
    limited.limit(32 << 20);
    // A 10 s max age (refresh ages 5-10 s), so that the test waits past it.
    let stream = Stream::start(&dir, &["--interval", "500ms", "--state-max-age", "10s"]);
    let drop_caches = || fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    // Shrinker work alone on both memcgs: populate (charges, which some
    // plans see), let an interval close, then make the kernel shrink them.
    let shrink_round = |round| {
        make_dentries(&passive, &dir, round);
        make_dentries(&limited, &dir, round);
        std::thread::sleep(Duration::from_millis(700));
        drop_caches();
        std::thread::sleep(Duration::from_millis(700));
    };
    for round in 0..3 {
        shrink_round(round);
    }
    let rounds_done = Instant::now();
    // The limited memcg hits its limit: 128 MiB through a 32 MiB cache.
    let file = dir.join("carry-churn");
    write_through_cache(&limited, &file, 128, Duration::from_secs(120));
    let _ = fs::remove_file(&file);
    settle();
    // Past any refresh age of the passive memcg's reads.
    std::thread::sleep(Duration::from_secs(11).saturating_sub(rounds_done.elapsed()));
    shrink_round(3);
    settle();
    let records = stream.stop(libc::SIGINT);

    let age = |r: &Value| r["state_age_ns"].as_u64();
    let n = |r: &Value, f: &str| r[f].as_u64().unwrap_or(0);
    for memcg in [&passive, &limited] {
        let rows = for_memcg(&records, "memcg_interval", &memcg.rel);
        eprintln!(
            "{}: {:?}",
            memcg.rel,
            rows.iter()
                .map(|r| (
                    age(r),
                    n(r, "do_shrink_slab_calls"),
                    n(r, "reclaim_memcg_count"),
                    r["limit_hits"].as_u64(),
                    r["state"]["usage_bytes"].as_u64()
                ))
                .collect::<Vec<_>>()
        );
        assert!(rows.len() >= 4, "a record per shrink round: {rows:#?}");
        assert_eq!(age(rows[0]), Some(0), "a first record reads its state");
        let mut last_read: Option<&Value> = None;
        for r in &rows {
            let a = age(r).expect("state_age_ns with every state");
            if a == 0 {
                last_read = Some(r);
                continue;
            }
            // Carried: only shrinker work, no hits, and exactly the state
            // of the record that read it, as old as that record.
            let read = last_read.expect("a carried state was read before");
            assert!(a < 10_000_000_000, "carried at most 10 s: {r}");
            assert_eq!(n(r, "ts_ns") - a, n(read, "ts_ns"), "{r}\nread in {read}");
            assert_eq!(r["state"], read["state"], "carried unchanged");
            for f in [
                "charge_calls",
                "charge_failures",
                "reclaim_direct_count",
                "reclaim_memcg_count",
                "limit_hits",
            ] {
                assert_eq!(n(r, f), 0, "{f}: a carried state needs no activity: {r}");
            }
        }
        // Shrink rounds 1 and 2 came within 5 s of round 0's read.
        assert!(
            rows.iter().any(|r| age(r).is_some_and(|a| a > 0)),
            "shrinker-only records carry their state: {rows:#?}"
        );
    }
    // Round 3 came more than 10 s after the passive memcg's last read: its
    // state is read again.
    let rows = for_memcg(&records, "memcg_interval", &passive.rel);
    let last = rows.last().unwrap();
    assert_eq!(age(last), Some(0), "read again after 10 s: {last}");
    // Limit hits are read every interval for a limited memcg: the first
    // record showing its limit reclaim or hits has the hits (the counter
    // rises before the reclaim it causes), and every record with hits
    // read its state then: the first one a state other than the one
    // carried before (the cache it filled).
    let rows = for_memcg(&records, "memcg_interval", &limited.rel);
    let first_hit = rows
        .iter()
        .position(|r| n(r, "reclaim_memcg_count") > 0 || n(r, "limit_hits") > 0)
        .expect("the limited memcg hit its limit");
    assert!(n(rows[first_hit], "limit_hits") > 0, "{}", rows[first_hit]);
    assert!(first_hit > 0, "shrink rounds came first: {rows:#?}");
    assert_ne!(
        rows[first_hit]["state"],
        rows[first_hit - 1]["state"],
        "read again, not carried"
    );
    for r in rows.iter().filter(|r| n(r, "limit_hits") > 0) {
        assert_eq!(age(r), Some(0), "a limit hit reads the state: {r}");
    }
}

/// Gives `memcg`'s shrinkers work, then has them called for it alone.
/// Negative dentries in the cgroup filesystem (names tagged `round`), made
/// from inside the memcg: charged to it and kept on kernfs's LRU, so its
/// superblock's shrinker has objects for this memcg. Then reclaim of this
/// memcg alone walks its shrinkers priority by priority: proactive reclaim
/// on v2 (with nothing else to reclaim the kernel gives up, EAGAIN); on v1
/// a limit below its usage (the kernel reclaims, then refuses the limit,
/// EBUSY), lifted again in case it was taken, so that the memcg's next
/// task is not OOM-killed. Not drop_caches: that is the whole host's.
fn shrink_own_dentries(memcg: &TestMemcg, round: u32) {
    let script = format!(
        "i=0; while [ $i -lt 200 ]; do [ -e '{}/n{round}.'$i ]; i=$((i+1)); done",
        memcg.dir.display()
    );
    let mut child = memcg.spawn(Command::new("sh").args(["-c", &script]));
    assert!(wait_timeout(&mut child, Duration::from_secs(30)).success());
    let reclaim = memcg.dir.join("memory.reclaim");
    if reclaim.exists() {
        let _ = fs::write(reclaim, "64M");
    } else {
        let limit = memcg.dir.join("memory.limit_in_bytes");
        let _ = fs::write(&limit, "4096");
        let _ = fs::write(&limit, "-1");
    }
}

/// The kernel counts each `do_shrink_slab` call once, per (memcg,
/// shrinker), and a memcg's own `do_shrink_slab_*` are the agent's sums over
/// its shrinkers: in every record whose rows were not cut at 10, the rows
/// add up to the memcg's counts, and the memcg has some.
#[test]
fn a_memcgs_shrinker_rows_add_up_to_its_counts() {
    let (_g, dir) = as_root("shrinker-sums");
    let memcg = TestMemcg::new("shrinker-sums");
    let stream = Stream::start(&dir, &["--interval", "500ms"]);
    shrink_own_dentries(&memcg, 0);
    settle();
    let records = stream.stop(libc::SIGINT);
    let rows = for_memcg(&records, "memcg_interval", &memcg.rel);
    let mut calls = 0;
    for r in &rows {
        let shrinkers = r["shrinkers"].as_array().expect("shrinker rows");
        if shrinkers.len() >= 10 {
            continue;
        }
        for (own, of_rows) in [
            ("do_shrink_slab_calls", "calls"),
            ("do_shrink_slab_zero", "zero"),
            ("do_shrink_slab_freed", "freed"),
        ] {
            if r[own].is_null() {
                // Unseen on this plan (zero on tracepoints): so are the rows'.
                assert!(shrinkers.iter().all(|s| s[of_rows].is_null()), "{r}");
                continue;
            }
            let sum: u64 = shrinkers.iter().filter_map(|s| s[of_rows].as_u64()).sum();
            assert_eq!(r[own].as_u64(), Some(sum), "{own} vs its rows: {r}");
        }
        calls += r["do_shrink_slab_calls"].as_u64().unwrap_or(0);
    }
    assert!(
        calls > 0,
        "do_shrink_slab calls for {}: {rows:#?}",
        memcg.rel
    );
}

/// Shrinker time is sampled as the header says. Two agents watch the same
/// storm: one timing every call (N=1), one timing one call in 1024. With
/// N=1 every record with calls has a time. With N=1024 each timed call's
/// time counts 1024 times, so every time is a multiple of 1024, and most
/// calls are not timed, so some record with calls has none (P(every one of
/// 64+ calls spread over the records timed) is nil). The counts are the
/// same whatever is timed: both see every call.
#[test]
fn shrinker_time_is_sampled_as_the_header_says() {
    let (_g, dir) = as_root("shrinker-sample");
    let memcg = TestMemcg::new("shrinker-sample");
    let every_dir = dir.join("every");
    let sampled_dir = dir.join("sampled");
    fs::create_dir_all(&every_dir).unwrap();
    fs::create_dir_all(&sampled_dir).unwrap();
    let every = Stream::start(
        &every_dir,
        &["--interval", "500ms", "--shrinker-time-sample", "1"],
    );
    let sampled = Stream::start(
        &sampled_dir,
        &["--interval", "500ms", "--shrinker-time-sample", "1024"],
    );
    let calls = |records: &[Value]| -> u64 {
        for_memcg(records, "memcg_interval", &memcg.rel)
            .iter()
            .filter_map(|r| r["do_shrink_slab_calls"].as_u64())
            .sum()
    };
    // Rounds of work for the memcg's shrinkers until they were called at
    // least 64 times.
    let mut round = 0;
    while calls(&every.records()) < 64 && round < 40 {
        shrink_own_dentries(&memcg, round);
        round += 1;
        settle();
    }
    let every = every.stop(libc::SIGINT);
    let sampled = sampled.stop(libc::SIGINT);
    assert_eq!(header(&every)["shrinker_time_sample"], 1);
    assert_eq!(header(&sampled)["shrinker_time_sample"], 1024);
    assert!(calls(&every) >= 64, "{round} rounds: {every:#?}");
    for r in for_memcg(&every, "memcg_interval", &memcg.rel) {
        if r["do_shrink_slab_calls"].as_u64().unwrap_or(0) > 0 {
            assert!(r["do_shrink_slab_ns"].as_u64().unwrap_or(0) > 0, "{r}");
        }
    }
    let rows = for_memcg(&sampled, "memcg_interval", &memcg.rel);
    let mut untimed = 0;
    for r in &rows {
        let ns = r["do_shrink_slab_ns"].as_u64().unwrap_or(0);
        assert_eq!(ns % 1024, 0, "{r}");
        if ns == 0 && r["do_shrink_slab_calls"].as_u64().unwrap_or(0) > 0 {
            untimed += 1;
        }
        for s in r["shrinkers"].as_array().into_iter().flatten() {
            assert_eq!(s["ns"].as_u64().unwrap_or(0) % 1024, 0, "{s}");
        }
    }
    assert!(untimed > 0, "every record timed at 1 in 1024: {rows:#?}");
    assert_eq!(
        calls(&sampled),
        calls(&every),
        "both agents count every call"
    );
}

/// With the (memcg, shrinker) map full, a memcg's own `do_shrink_slab_*`
/// stay exact: the calls whose pair found no room are counted in the
/// memcg's totals, so those are at least their rows' sums, and more for
/// some memcg while `shrinker_map_full` counts refused updates.
#[test]
fn a_full_shrinker_map_keeps_the_memcgs_totals() {
    let (_g, dir) = as_root("shrinker-full");
    let memcgs: Vec<TestMemcg> = (0..24)
        .map(|i| TestMemcg::new(&format!("shrinker-full-{i}")))
        .collect();
    // The smallest map memtrace accepts: 24 memcgs with objects in two
    // superblocks each need more pairs than it holds.
    let stream = Stream::start(&dir, &["--interval", "500ms", "--shrinker-entries", "16"]);
    for (i, m) in memcgs.iter().enumerate() {
        make_dentries(m, &dir, i as u32);
    }
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    settle();
    let records = stream.stop(libc::SIGINT);
    let full: u64 = of_type(&records, "system")
        .iter()
        .filter_map(|s| s["shrinker_map_full"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(full > 0, "the map never filled: {records:#?}");
    let mut beyond_rows = 0;
    for m in &memcgs {
        for r in for_memcg(&records, "memcg_interval", &m.rel) {
            let Some(own) = r["do_shrink_slab_calls"].as_u64() else {
                continue;
            };
            let rows: u64 = r["shrinkers"]
                .as_array()
                .map(|a| a.iter().filter_map(|s| s["calls"].as_u64()).sum())
                .unwrap_or(0);
            assert!(own >= rows, "a memcg's calls below its rows' sum: {r}");
            if own > rows && r["shrinkers"].as_array().is_none_or(|a| a.len() < 10) {
                beyond_rows += 1;
            }
        }
    }
    assert!(
        beyond_rows > 0,
        "no memcg counted a call its full shrinker map refused ({full} refused)"
    );
}
