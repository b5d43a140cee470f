//! OOM attribution under incident conditions, as root on the running
//! kernel: kill bursts across memcgs removed right after their kills, and
//! a crashloop in one memcg. Every kill's record must name the victim's
//! memcg and the limiting memcg (with how it was known), however fast the
//! kills come and however rate-limited the kernel log is.
use std::time::{Duration, Instant};

use memtrace_testkit::recorder::{Recorder, oom_victim};
use memtrace_testkit::root::as_root;
use memtrace_testkit::*;

/// One kill as expected: the victim's memcg and the limiting one.
struct Expect {
    pid: u32,
    victim_rel: String,
    limit_rel: String,
}

/// Checks every kill's attribution, printing the rates (the figures of
/// RELIABILITY.md) before asserting 100%.
fn check(what: &str, r: &Recorder, expect: &[Expect]) {
    let pids: Vec<u32> = expect.iter().map(|e| e.pid).collect();
    let pms = r.live_postmortems(&pids, Duration::from_secs(30));
    let n = expect.len();
    let (mut victim_ok, mut limit_ok, mut source_ok, mut text_ok) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    let mut by_source = std::collections::BTreeMap::<String, usize>::new();
    let ran_s = r.started.elapsed().as_secs_f64();
    for e in expect {
        let Some(pm) = pms.iter().find(|p| p["kill"]["victim"]["pid"] == e.pid) else {
            failures.push(format!("pid {}: no post-mortem", e.pid));
            continue;
        };
        let k = &pm["kill"];
        *by_source
            .entry(k["oom_memcg_source"].to_string())
            .or_default() += 1;
        if k["victim_memcg"]["path"] == e.victim_rel.as_str() {
            victim_ok += 1;
        } else {
            failures.push(format!("pid {} victim_memcg: {}", e.pid, k["victim_memcg"]));
        }
        if k["oom_memcg"]["path"] == e.limit_rel.as_str()
            && k["constraint"] == "memcg"
            && pm["limit_memcg"]["path"] == e.limit_rel.as_str()
        {
            limit_ok += 1;
        } else {
            failures.push(format!(
                "pid {} oom_memcg: {} constraint {}",
                e.pid, k["oom_memcg"], k["constraint"]
            ));
        }
        if matches!(
            k["oom_memcg_source"].as_str(),
            Some("kernel" | "kmsg" | "inferred")
        ) {
            source_ok += 1;
        } else {
            failures.push(format!(
                "pid {} oom_memcg_source: {}",
                e.pid, k["oom_memcg_source"]
            ));
        }
        let text = r.text(e.pid).unwrap_or_default();
        // The history window is the agent's own: never longer than it ran.
        let window_ok = text
            .split("in the last ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse::<f64>().ok())
            .is_none_or(|s| s <= ran_s + 1.0);
        if text.contains(&format!("pid {}", e.pid))
            && !text.contains("kernel log unreadable")
            && window_ok
        {
            text_ok += 1;
        } else {
            failures.push(format!("pid {} text:\n{text}", e.pid));
        }
    }
    eprintln!(
        "{what}: {n} kills; victim memcg {victim_ok}/{n}, limiting memcg {limit_ok}/{n}, \
         with its source {source_ok}/{n} {by_source:?}, text {text_ok}/{n}"
    );
    assert!(
        failures.is_empty(),
        "{what}: {} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_kill_burst_across_memcgs_removed_at_once_is_fully_attributed() {
    let (_g, scratch) = as_root("oom-burst");
    let r = Recorder::start(&scratch.join("out"), &[]);
    // 10 memcgs, each limited, its victims in an unlimited child (so the
    // limit that fires is an ancestor's); 3 kills each, then both removed
    // at once, while the other memcgs are still killing.
    let t0 = Instant::now();
    let expect: Vec<Expect> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..10)
            .map(|i| {
                s.spawn(move || {
                    let mut m = TestMemcg::new(&format!("burst{i}"));
                    m.limit_no_swap(16 << 20);
                    let job = m.child("job");
                    let (victim_rel, dir) = (job.rel.clone(), job.dir.clone());
                    let limit_rel = m.rel.clone();
                    let pids: Vec<u32> = (0..3).map(|_| oom_victim(&dir)).collect();
                    drop(m);
                    pids.into_iter()
                        .map(|pid| Expect {
                            pid,
                            victim_rel: victim_rel.clone(),
                            limit_rel: limit_rel.clone(),
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let took = t0.elapsed();
    assert_eq!(expect.len(), 30);
    assert!(took < Duration::from_secs(10), "the burst took {took:?}");
    check("burst", &r, &expect);
    r.stop();
}

#[test]
fn a_crashloop_in_one_memcg_is_fully_attributed() {
    let (_g, scratch) = as_root("oom-crashloop");
    let r = Recorder::start(&scratch.join("out"), &[]);
    let m = TestMemcg::new("crashloop");
    m.limit_no_swap(16 << 20);
    let expect: Vec<Expect> = (0..30)
        .map(|_| Expect {
            pid: oom_victim(&m.dir),
            victim_rel: m.rel.clone(),
            limit_rel: m.rel.clone(),
        })
        .collect();
    check("crashloop", &r, &expect);
    drop(m);
    r.stop();
}
