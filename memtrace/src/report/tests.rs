//! `report` on synthetic files built from the typed records.
use std::io::Cursor;

use serde_json::json;

use super::{
    add_histories,
    oom::LimitOf,
    storm::Verdict,
    summarize,
    summary::{Kind, Report},
    text,
};
use crate::{
    cgroup::state::MemcgState,
    output::{
        build::named,
        escape::is_dangerous,
        json,
        records::{
            Capture, Family, Header, Memcg, MemcgInterval, OomHistory, OomKill, OomPostmortem,
            PlanEntry, Record, ShrinkerRow, Slow, System, Task, TaskRss, Trigger, Unreclaimable,
            Unseen, Victim,
        },
    },
};

const S: u64 = 1_000_000_000;
const DOCKER: &str = "4f3c2b1a0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";

/// Fields a tracepoint plan (this project's CI hosts) leaves null.
const TRACEPOINT_UNAVAILABLE: [&str; 6] = [
    "charge_calls",
    "charge_failures",
    "shrink_slab_calls",
    "shrink_slab_kswapd_ns",
    "do_shrink_slab_zero",
    "oom_kill.totalpages",
];

fn ts(sec: u64) -> String {
    format!("2026-11-22T03:{:02}:{:02}.000000Z", sec / 60, sec % 60)
}

fn header(unavailable: &[&str]) -> Record {
    Record::Header(Header {
        ts: ts(0),
        ts_ns: 0,
        format_version: 1,
        hostname: "node-7".into(),
        kernel_release: "6.1.0-test".into(),
        cgroup_mode: "v2".into(),
        attach_mode: "auto".into(),
        interval_ms: Some(1000),
        unavailable: Unseen::from_names(unavailable),
        plan: vec![PlanEntry::new("do_shrink_slab", Some(Family::Kprobe))],
        kmsg: true,
        ..Default::default()
    })
}

fn memcg(path: &str, id: u64) -> Memcg {
    named(id, Some(path.into()), false)
}

/// A shrinker row as a record file holds it; `labels` adds the optional
/// name/fs_type/device fields (absent from older records).
fn shrinker(addr: &str, calls: u64, zero: Option<u64>, labels: bool) -> ShrinkerRow {
    let mut v = json!({
        "shrinker": addr,
        "count_objects": "super_cache_count",
        "calls": calls,
        "zero": zero,
        "freed": 3,
        "ns": 1000,
    });
    if labels {
        v["name"] = json!(null);
        v["fs_type"] = json!("tmpfs");
        v["device"] = json!("tmpfs");
    }
    serde_json::from_value(v).expect("shrinker row")
}

struct Iv {
    sec: u64,
    reclaim_ns: u64,
    calls: u64,
    zero: Option<u64>,
    limit_hits: u64,
}

fn interval(m: Memcg, iv: Iv) -> Record {
    Record::from(MemcgInterval {
        ts: ts(iv.sec),
        ts_ns: iv.sec * S,
        interval_ns: S,
        memcg: m,
        reclaim_direct_count: Some(0),
        reclaim_direct_ns: Some(0),
        reclaim_direct_pages: Some(0),
        reclaim_memcg_count: Some(u64::from(iv.reclaim_ns > 0) * 4),
        reclaim_memcg_ns: Some(iv.reclaim_ns),
        reclaim_memcg_pages: Some(100),
        reclaim_p99_ns: Some(8_388_608),
        do_shrink_slab_calls: Some(iv.calls),
        do_shrink_slab_zero: iv.zero,
        do_shrink_slab_freed: Some(3),
        do_shrink_slab_ns: Some(1000),
        limit_hits: Some(iv.limit_hits),
        shrinkers: Some(vec![shrinker("0xffff1", iv.calls, iv.zero, true)]),
        ..Default::default()
    })
}

fn system(sec: u64, sys_pct: f64) -> Record {
    Record::System(System {
        ts: ts(sec),
        ts_ns: sec * S,
        interval_ns: S,
        sys_pct,
        max_cpu_sys_pct: sys_pct + 10.0,
        max_cpu: Some(3),
        kswapd_cpu_pct: 95.0,
        kswapd_ns: Some(sec * S / 2),
        kswapd_wakes: Some(sec),
        live_memcgs: 100,
        dying_memcgs: Some(40),
        ..Default::default()
    })
}

/// The text report of `r`, asserted to say each of `parts` (showing it if
/// not).
#[track_caller]
fn render_saying(r: &Report, parts: &[&str]) -> String {
    let t = text::render(r);
    for p in parts {
        assert!(t.contains(p), "no {p:?} in:\n{t}");
    }
    t
}

fn ndjson(records: &[Record]) -> String {
    records
        .iter()
        .map(|r| String::from_utf8(json::line(r)).unwrap())
        .collect()
}

/// What `build` does, from text instead of a file.
fn report_of(text: &str) -> anyhow::Result<Report> {
    let (mut agg, lines) = summarize("test.ndjson", Cursor::new(text.as_bytes()))?;
    agg.set_lines(lines);
    let mut r = agg.finish();
    add_histories(&mut r, Cursor::new(text.as_bytes()), lines)?;
    Ok(r)
}

fn report(records: &[Record]) -> Report {
    report_of(&ndjson(records)).unwrap()
}

/// Interval `sec` of `memcgs` memcgs (`/ct/N`) that each get `calls`
/// do_shrink_slab calls, `zero` of them freeing nothing, and no reclaim.
fn shrinking(sec: u64, memcgs: u64, calls: u64, zero: Option<u64>) -> Vec<Record> {
    (0..memcgs)
        .map(|i| {
            interval(
                memcg(&format!("/ct/{i}"), 1000 + i),
                Iv {
                    sec,
                    reclaim_ns: 0,
                    calls,
                    zero,
                    limit_hits: 0,
                },
            )
        })
        .collect()
}

/// Three intervals of [`shrinking`], each closed at `sys_pct`.
fn storm_file(
    unavailable: &[&str],
    memcgs: u64,
    calls: u64,
    zero: Option<u64>,
    sys: f64,
) -> Report {
    let mut recs = vec![header(unavailable)];
    for sec in 1..=3 {
        recs.extend(shrinking(sec, memcgs, calls, zero));
        recs.push(system(sec, sys));
    }
    report(&recs)
}

#[test]
fn storm_signature_present_with_its_numbers() {
    // 60 memcgs x 500 calls/s = 30,000 calls/s, 96% freeing nothing, sys 85%.
    let r = storm_file(&[], 60, 500, Some(480), 85.0);
    assert_eq!(r.storm.verdict, Verdict::Present, "{:#?}", r.storm);
    assert_eq!(r.storm.storm_intervals, 3);
    let w = r.storm.worst.as_ref().unwrap();
    assert_eq!(w.calls_per_s, Some(30_000.0));
    assert_eq!(w.memcgs, 60);
    assert_eq!(w.zero_pct, Some(96.0));
    render_saying(
        &r,
        &[
            "SHRINK_SLAB STORM: PRESENT",
            "30,000/s",
            "across 60 memcgs",
            "96.0% freed nothing",
            ">= 10,000 do_shrink_slab calls/s across >= 50 memcgs",
        ],
    );
    assert_eq!(r.shrinker_totals.zero_pct, Some(96.0));
    assert_eq!(r.shrinkers[0].zero_pct, Some(96.0));
    assert_eq!(r.shrinkers[0].memcgs, 60);
    // kswapd: 95% of a CPU for 3 s; awake 1.5 s by the cumulative counter.
    assert_eq!(r.reclaim.kswapd_cpu_ns, Some(2_850_000_000));
    assert_eq!(r.reclaim.kswapd_awake_ns, Some(1_500_000_000));
    assert_eq!(r.reclaim.paid_by, "kswapd");
}

#[test]
fn storm_signature_absent_when_calls_free_objects_or_sys_is_low() {
    let r = storm_file(&[], 60, 500, Some(100), 85.0);
    assert_eq!(r.storm.verdict, Verdict::Absent);
    render_saying(
        &r,
        &[
            "SHRINK_SLAB STORM: not present",
            "less than 90% freeing nothing",
        ],
    );

    let r = storm_file(&[], 60, 500, Some(480), 12.0);
    assert_eq!(r.storm.verdict, Verdict::Absent);
    assert!(text::render(&r).contains("host sys never reached 30%"));

    // Too few memcgs: one memcg's reclaim is no storm.
    let r = storm_file(&[], 10, 5000, Some(4900), 85.0);
    assert_eq!(r.storm.verdict, Verdict::Absent);
    assert!(text::render(&r).contains("fewer than 50 memcgs"));
}

#[test]
fn tracepoint_plan_cannot_confirm_and_never_prints_zero_for_the_unseen() {
    let r = storm_file(&TRACEPOINT_UNAVAILABLE, 60, 500, None, 85.0);
    assert_eq!(r.storm.verdict, Verdict::NotConfirmable, "{:#?}", r.storm);
    assert_eq!(r.shrinker_totals.zero, None);
    assert_eq!(r.shrinker_totals.zero_pct, None);
    assert!(r.shrinker_totals.calls_found_objects_only);
    assert_eq!(r.top_memcgs_by_shrinker_calls[0].zero_pct, None);
    assert_eq!(r.reclaim.shrink_slab_kswapd_ns, None);
    let t = render_saying(
        &r,
        &[
            "SHRINK_SLAB STORM: CANNOT BE CONFIRMED on this attach plan",
            "kprobes or fentry",
            "calls that freed nothing are not visible on this plan",
        ],
    );
    for l in t
        .lines()
        .filter(|l| l.contains("freed nothing") || l.contains("ZERO"))
    {
        assert!(
            !l.contains("0.0%") && !l.contains(" 0 "),
            "no zero share may read as 0: {l}"
        );
    }
    let zero_col: Vec<&str> = t
        .lines()
        .filter(|l| l.contains("/ct/"))
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert!(
        !zero_col.is_empty() && zero_col.iter().all(|z| *z == "-"),
        "{t}"
    );
    assert!(
        t.contains("its slab shrinking not visible on this plan"),
        "{t}"
    );
    // In JSON the unseen are null.
    let v: serde_json::Value = serde_json::from_slice(&json::line(&r)).unwrap();
    assert!(v["shrinker_totals"]["zero_pct"].is_null());
    assert!(v["shrinkers"][0]["zero"].is_null());
    assert!(v["top_memcgs_by_shrinker_calls"][0]["charge_failures"].is_null());
    assert_eq!(v["storm"]["verdict"], "not_confirmable");

    // Without high sys it is ruled out on any plan.
    let r = storm_file(&TRACEPOINT_UNAVAILABLE, 60, 500, None, 5.0);
    assert_eq!(r.storm.verdict, Verdict::Absent);
}

/// The first record of a capture of 0..4 s, triggered at 2 s by sys above
/// `threshold_pct` (peaking at `peak_sys_pct`) sustained for 5 s.
fn capture(
    header: Header,
    threshold_pct: f64,
    peak_sys_pct: f64,
    peak_cpu: Option<u32>,
) -> Capture {
    Capture {
        ts: ts(9),
        ts_ns: 9 * S,
        format_version: 1,
        trigger: Trigger {
            kind: "sys_time".into(),
            ts: ts(2),
            ts_ns: 2 * S,
            threshold_pct,
            sustained_ns: 5 * S,
            peak_sys_pct,
            peak_cpu_sys_pct: 99.0,
            peak_cpu,
        },
        from_ns: 0,
        to_ns: 4 * S,
        header,
        truncated_records: 0,
    }
}

fn header_of(r: Record) -> Header {
    match r {
        Record::Header(h) => h,
        _ => unreachable!(),
    }
}

#[test]
fn capture_threshold_lowers_the_sys_condition_and_trigger_is_shown() {
    let c = capture(header_of(header(&[])), 20.0, 27.5, Some(1));
    let mut recs = vec![Record::Capture(Box::new(c))];
    for sec in 1..=3 {
        recs.extend(shrinking(sec, 60, 500, Some(480)));
        recs.push(system(sec, 25.0));
    }
    let r = report(&recs);
    assert_eq!(r.kind, Kind::Capture);
    assert_eq!(r.storm.thresholds.min_sys_pct, 20.0);
    assert_eq!(r.storm.verdict, Verdict::Present);
    // A capture counts cumulative counters from its first record.
    assert_eq!(r.reclaim.kswapd_awake_ns, Some(S));
    render_saying(
        &r,
        &[
            "(capture)",
            "host sys above 20.0% from 2026-11-22T03:00:02.000000Z (sys_time): peak 27.5% (busiest cpu 1 at 99.0%), sustained 5.00 s",
            "window: 2.00 s before to 2.00 s after",
        ],
    );
}

fn kill(pid: u32, sec: u64, victim: Memcg, limit: Option<Memcg>) -> OomKill {
    OomKill {
        ts: ts(sec),
        ts_ns: sec * S,
        before_start: false,
        constraint: Some("memcg".into()),
        victim: Victim {
            pid,
            tgid: Some(pid),
            comm: "tail".into(),
            uid: Some(0),
            oom_score_adj: Some(0),
            total_vm_kb: Some(68148),
            rss_anon_kb: Some(65280),
            rss_file_kb: Some(1676),
            rss_shmem_kb: Some(0),
            pgtables_kb: Some(176),
        },
        victim_memcg: Some(victim),
        oom_memcg_source: limit.as_ref().map(|_| "kmsg".into()),
        oom_memcg: limit,
        trigger: Some(Task {
            pid: None,
            tgid: None,
            comm: "tail".into(),
        }),
        totalpages: None,
        chosen_points: None,
        sources: vec!["mark_victim".into(), "kmsg".into()],
    }
}

#[test]
fn parent_limit_oom_story_names_the_ancestor_and_the_history_before_it() {
    let parent = memcg("/parent", 50);
    let child = memcg("/parent/child", 51);
    let other = memcg("/other", 60);
    let iv = |sec, reclaim_ns, limit_hits| Iv {
        sec,
        reclaim_ns,
        calls: 10,
        zero: Some(9),
        limit_hits,
    };
    let recs = vec![
        header(&[]),
        interval(child.clone(), iv(1, 100_000_000, 0)),
        interval(parent.clone(), iv(1, 0, 40)),
        interval(other.clone(), iv(1, 900_000_000, 0)),
        system(1, 10.0),
        interval(child.clone(), iv(2, 200_000_000, 0)),
        interval(parent.clone(), iv(2, 0, 60)),
        system(2, 10.0),
        Record::from(kill(4242, 3, child.clone(), Some(parent.clone()))),
        interval(child.clone(), iv(3, 300_000_000, 0)),
        system(3, 10.0),
        // After the kill's interval: not history.
        interval(child.clone(), iv(4, 5_000_000_000, 0)),
        system(4, 10.0),
    ];
    let r = report(&recs);
    assert_eq!(r.oom_kills.len(), 1);
    let k = &r.oom_kills[0];
    assert_eq!(k.limit_of, LimitOf::Ancestor);
    assert_eq!(k.victim.pid, 4242);
    let h = k.history.as_ref().expect("history from the file");
    assert_eq!(k.history_from, Some("file"));
    assert_eq!(h.reclaim_ns, 600_000_000, "child's reclaim, not /other's");
    assert_eq!(h.limit_hits, Some(100), "the parent's limit hits");
    assert_eq!(h.intervals, 3);
    assert_eq!(h.do_shrink_slab_calls, Some(50));
    // The kill is counted on the victim's memcg and container.
    render_saying(
        &r,
        &[
            "tail (pid 4242",
            "the limit of /parent, an ANCESTOR of the victim's memcg, fired",
            "killed in /parent/child",
            "rss: anon 63.8M, file 1.6M, shmem 0",
            "reclaim 600.0 ms in 12 episodes (500 pages), limit hits 100",
            "badness score and the memory weighed (totalpages): not visible on this plan",
        ],
    );
    // The own-limit case reads differently.
    let r = report(&[
        header(&[]),
        Record::from(kill(7, 3, child.clone(), Some(child.clone()))),
    ]);
    assert_eq!(r.oom_kills[0].limit_of, LimitOf::Own);
    assert!(text::render(&r).contains("the victim's own memcg /parent/child hit its limit"));
}

/// The post-mortem of `kill` at 10 s under `limit`'s limit: its usage and
/// limit, two tasks left, the unreclaimable share, 300 s of history, a note.
fn postmortem(kill: OomKill, limit: Memcg) -> OomPostmortem {
    OomPostmortem {
        ts: ts(10),
        ts_ns: 10 * S,
        kill,
        global: false,
        limit_memcg: Some(limit),
        limit_state: Some(MemcgState {
            usage_bytes: Some(60 << 20),
            limit_bytes: Some(64 << 20),
            ..Default::default()
        }),
        victim_state: None,
        tasks: Some(vec![
            TaskRss {
                pid: 1,
                comm: "small".into(),
                rss_anon_kb: Some(100),
                rss_file_kb: None,
                rss_shmem_kb: None,
            },
            TaskRss {
                pid: 2,
                comm: "big".into(),
                rss_anon_kb: Some(40 << 10),
                rss_file_kb: Some(0),
                rss_shmem_kb: Some(10 << 10),
            },
        ]),
        unreclaimable: Some(Unreclaimable {
            shmem_bytes: Some(10 << 20),
            unevictable_bytes: Some(0),
            dirty_bytes: Some(0),
            writeback_bytes: Some(0),
            share_pct: Some(16.7),
        }),
        history: Some(OomHistory {
            window_ns: 300 * S,
            intervals: 300,
            charge_failures: None,
            limit_hits: Some(925),
            reclaim_count: 439,
            reclaim_ns: 190_128_598,
            reclaim_pages: 102_439,
            do_shrink_slab_calls: Some(526),
            do_shrink_slab_zero: None,
            shrink_slab_ns: None,
        }),
        notes: vec!["victim memcg already removed".into()],
    }
}

#[test]
fn oom_log_post_mortem_story() {
    let limited = memcg(&format!("/system.slice/docker-{DOCKER}.scope"), 70);
    let pm = postmortem(
        kill(99, 10, limited.clone(), Some(limited.clone())),
        limited,
    );
    let r = report(&[Record::OomPostmortem(Box::new(pm.clone()))]);
    assert_eq!(r.kind, Kind::OomLog);
    assert!(!r.headerless);
    let k = &r.oom_kills[0];
    assert_eq!(k.history_from, Some("postmortem"));
    render_saying(
        &r,
        &[
            "(OOM log)",
            &format!("[docker {}]", &DOCKER[..12]),
            "post-mortem: limit 64.0M, usage 60.0M",
            "unreclaimable: 16.7% of usage (shmem 10.0M",
            "top tasks by rss (2 left): big (pid 2) 50.0M, small (pid 1) 100K",
            "reclaim 190.1 ms in 439 episodes (102,439 pages), limit hits 925, charge failures not visible on this plan",
            "note: victim memcg already removed",
        ],
    );
    // The same kill in a stream and in a post-mortem is one story.
    let r = report(&[
        header(&[]),
        Record::from(pm.kill.clone()),
        Record::OomPostmortem(Box::new(pm)),
    ]);
    assert_eq!(r.oom_kills.len(), 1);
    assert!(r.oom_kills[0].postmortem.is_some());
}

#[test]
fn post_mortems_name_the_pod_namespace_container_and_image() {
    let uid = "0a1b2c3d-1111-2222-3333-444455556666";
    let mut m = memcg(&format!("/kubepods/burstable/pod{uid}/{DOCKER}"), 71);
    let c = m.container.as_mut().unwrap();
    c.namespace = Some("payments".into());
    c.pod = Some("api-7f9c".into());
    c.runtime_name = Some("worker\u{202e}".into());
    c.image = Some("registry.example/api:1.4".into());
    let pm = postmortem(kill(98, 10, m.clone(), Some(m.clone())), m);
    let r = report(&[Record::OomPostmortem(Box::new(pm.clone()))]);
    let t = render_saying(
        &r,
        &["[containerd payments/api-7f9c/worker\\u{202e} image registry.example/api:1.4]"],
    );
    assert!(!t.contains('\u{202e}'));
    // And `record`'s own text form of it.
    let text = crate::record::postmortem::text(&pm);
    for part in [
        "[containerd payments/api-7f9c/worker\\u{202e}]",
        "container   namespace payments  pod api-7f9c  container worker\\u{202e}  image registry.example/api:1.4  id ",
    ] {
        assert!(text.contains(part), "no {part:?} in:\n{text}");
    }
    assert!(!text.contains('\u{202e}'));
}

#[test]
fn bad_lines_are_counted_with_their_numbers_and_the_rest_summarized() {
    let good = ndjson(&[
        header(&[]),
        interval(
            memcg("/web", 5),
            Iv {
                sec: 1,
                reclaim_ns: 7_000_000,
                calls: 3,
                zero: Some(1),
                limit_hits: 2,
            },
        ),
        system(1, 10.0),
        interval(
            memcg("/web", 5),
            Iv {
                sec: 2,
                reclaim_ns: 3_000_000,
                calls: 3,
                zero: Some(1),
                limit_hits: 2,
            },
        ),
        system(2, 10.0),
    ]);
    let mut lines: Vec<String> = good.lines().map(str::to_string).collect();
    let cut = lines[2][..40].to_string();
    lines[2] = cut; // line 3: truncated
    lines.insert(4, "\u{1b}]0;garbage\u{7} not json".into()); // line 5
    lines.insert(5, String::new()); // blank: skipped, still counted as a line
    lines.insert(6, r#"{"type":"bogus","ts":"x"}"#.into()); // line 7
    let text_in = lines.join("\n") + "\n";
    let r = report_of(&text_in).unwrap();
    let nums: Vec<u64> = r.bad_lines.iter().map(|b| b.line).collect();
    assert_eq!(nums, [3, 5, 7]);
    assert_eq!(r.bad_lines_total, 3);
    assert!(
        r.bad_lines[0].error.contains("truncated JSON"),
        "{:?}",
        r.bad_lines
    );
    assert!(r.bad_lines[1].error.contains("not JSON"));
    assert!(
        r.bad_lines[2]
            .error
            .contains("unknown record type \"bogus\"")
    );
    assert_eq!(r.records, 4);
    assert_eq!(r.lines, 8);
    assert_eq!(r.top_memcgs_by_reclaim[0].reclaim_ns, 10_000_000);
    let err = text::bad_lines(&r, 100);
    assert!(
        err.contains("test.ndjson:3: skipped: truncated JSON"),
        "{err}"
    );
    assert!(err.contains("test.ndjson:5: skipped: not JSON"), "{err}");
    assert!(
        !err.chars().any(|c| c != '\n' && is_dangerous(c)),
        "{err:?}"
    );
    let t = text::render(&r);
    assert!(t.contains("3 bad lines skipped (line 3, 5, 7"), "{t}");
    let v: serde_json::Value = serde_json::from_slice(&json::line(&r)).unwrap();
    assert_eq!(v["bad_lines"][1]["line"], 5);
    assert_eq!(v["bad_lines_total"], 3);

    // A last line cut mid-write says so.
    let r = report_of(&good[..good.len() - 20]).unwrap();
    assert!(
        r.bad_lines[0].error.contains("cut short"),
        "{:?}",
        r.bad_lines
    );
}

#[test]
fn nothing_to_summarize_is_an_error() {
    let e = report_of("").unwrap_err().to_string();
    assert!(e.contains("empty file"), "{e}");
    let e = report_of("hello\nworld\n").unwrap_err().to_string();
    assert!(
        e.contains("not a memtrace capture, stream file or OOM log")
            && e.contains("none of its 2 lines")
            && e.contains("line 1: not JSON"),
        "{e}"
    );
    let e = report_of(&"{\"a\":1}\n".repeat(1000))
        .unwrap_err()
        .to_string();
    assert!(e.contains("none of its first 64 lines"), "{e}");
}

#[test]
fn a_file_cut_before_its_header_is_read_as_a_headerless_stream() {
    let r = report(&[
        interval(
            memcg("/web", 5),
            Iv {
                sec: 1,
                reclaim_ns: 7_000_000,
                calls: 3,
                zero: None,
                limit_hits: 2,
            },
        ),
        system(1, 10.0),
    ]);
    assert_eq!(r.kind, Kind::Stream);
    assert!(r.headerless);
    assert!(text::render(&r).contains("does not start with a header"));
}

#[test]
fn shrinker_labels_are_shown_when_present_and_optional() {
    let mut i = match interval(
        memcg("/web", 5),
        Iv {
            sec: 1,
            reclaim_ns: 0,
            calls: 3,
            zero: Some(0),
            limit_hits: 0,
        },
    ) {
        Record::MemcgInterval(i) => i,
        _ => unreachable!(),
    };
    i.shrinkers = Some(vec![
        shrinker("0xffffa", 9, Some(0), true),
        shrinker("0xffffb", 2, Some(0), false),
    ]);
    let r = report(&[header(&[]), Record::MemcgInterval(i), system(1, 1.0)]);
    render_saying(
        &r,
        &[
            "super_cache_count (0xffffa, fs tmpfs, device tmpfs)",
            "super_cache_count (0xffffb)",
        ],
    );
    assert_eq!(r.shrinkers[1].fs_type, None);
}

#[test]
fn hostile_names_are_escaped_in_text() {
    let evil = "/x\u{1b}[2J\u{1b}]0;pwned\u{7}\n{\"type\":\"fake\"}\u{9b}31m\u{202e}gpj";
    let m = memcg(evil, 9);
    let mut k = kill(1, 2, m.clone(), Some(m.clone()));
    k.victim.comm = "\u{1b}[2Jtail\u{7}".into();
    let mut i = match interval(
        m,
        Iv {
            sec: 1,
            reclaim_ns: 5_000_000,
            calls: 3,
            zero: Some(1),
            limit_hits: 1,
        },
    ) {
        Record::MemcgInterval(i) => i,
        _ => unreachable!(),
    };
    let mut row = serde_json::to_value(shrinker("0x1", 3, Some(1), true)).unwrap();
    row["device"] = json!("dev\u{1b}[31m");
    i.shrinkers = Some(vec![serde_json::from_value(row).unwrap()]);
    let mut h = header(&[]);
    if let Record::Header(h) = &mut h {
        h.hostname = "host\u{7}\u{1b}c".into();
    }
    let recs = vec![h, Record::MemcgInterval(i), system(1, 1.0), Record::from(k)];
    let r = report(&recs);
    let t = render_saying(
        &r,
        &[
            "/x\\x1b[2J\\x1b]0;pwned\\x07\\x0a{\"type\"",
            "\\x1b[2Jtail\\x07 (pid 1",
            "device dev\\x1b[31m",
            "host host\\x07\\x1bc",
            "\\u{202e}gpj",
        ],
    );
    let bad: Vec<char> = t
        .chars()
        .filter(|&c| c != '\n' && is_dangerous(c))
        .collect();
    assert!(bad.is_empty(), "raw control characters {bad:?} in {t}");
    // Each record's line stays one line: the injected newline is escaped.
    assert!(
        !t.lines().any(|l| l.starts_with("{\"type\":\"fake\"}")),
        "{t}"
    );
    let j = json::line(&r);
    assert!(
        !j.iter().any(|&b| (b < 0x20 && b != b'\n') || b == 0x7f),
        "no raw controls in JSON"
    );
    assert_eq!(j.iter().filter(|&&b| b == b'\n').count(), 1);
}

#[test]
fn appended_runs_count_cumulative_counters_per_run() {
    let mut s1 = system(2, 1.0);
    let mut s2 = system(3, 1.0);
    if let (Record::System(a), Record::System(b)) = (&mut s1, &mut s2) {
        a.ringbuf_drops = 2;
        b.ringbuf_drops = 5;
    }
    let r = report(&[header(&[]), system(1, 1.0), s1, header(&[]), s2]);
    assert_eq!(r.span.runs, 2);
    assert_eq!(r.losses.ringbuf_drops, 7);
    // kswapd awake: run 1 from 0 to 1 s, run 2 from 0 to 1.5 s.
    assert_eq!(r.reclaim.kswapd_awake_ns, Some(2_500_000_000));
    render_saying(
        &r,
        &[
            "ringbuf_drops 7: OOM/slow events lost",
            "2 runs of memtrace appended",
        ],
    );
}

#[test]
fn post_mortem_without_history_or_constraint_says_so() {
    let m = memcg("/gone", 80);
    let mut k = kill(5, 1, m.clone(), None);
    k.before_start = true;
    k.constraint = None;
    let mut pm = OomPostmortem {
        ts: ts(1),
        ts_ns: S,
        kill: k,
        global: true,
        ..Default::default()
    };
    let r = report(&[Record::OomPostmortem(Box::new(pm.clone()))]);
    assert_eq!(
        r.oom_kills[0].limit_of,
        LimitOf::Unknown,
        "a backlog kill without its constraint is not known to be global"
    );
    assert!(text::render(&r).contains("EARLIER OOM KILLS (1"));
    pm.kill.before_start = false;
    pm.kill.constraint = Some("memcg".into());
    pm.kill.oom_memcg = Some(m);
    pm.history = Some(OomHistory {
        window_ns: 76 * S,
        ..Default::default()
    });
    let r = report(&[Record::OomPostmortem(Box::new(pm))]);
    assert_eq!(r.oom_kills[0].limit_of, LimitOf::Own);
    let t = render_saying(
        &r,
        &[
            "before the kill (agent history): no interval of this memcg recorded in the 76.0 s before it",
        ],
    );
    assert!(!t.contains("intervals"), "an OOM log has no intervals: {t}");
}

/// A capture that reaches most of the text report: a trigger with records
/// left out, a plan with an unavailable hook, a storm, containers, an OOM
/// kill under an ancestor's limit, slow events and a bad line.
fn golden_capture() -> String {
    let mut h = header_of(header(&[]));
    h.plan = vec![
        PlanEntry::new("mem_cgroup_charge", Some(Family::Kprobe)),
        PlanEntry::new(
            "vmscan:mm_vmscan_memcg_reclaim_begin",
            Some(Family::Tracepoint),
        ),
        PlanEntry::new("do_shrink_slab", Some(Family::Kprobe)),
        PlanEntry::new("shrink_slab", None),
    ];
    let mut c = capture(h, 30.0, 87.5, None);
    c.truncated_records = 12;
    let mut recs = vec![Record::Capture(Box::new(c))];
    let docker = memcg(&format!("/system.slice/docker-{DOCKER}.scope"), 70);
    let parent = memcg("/kubepods/pod1", 80);
    let child = memcg("/kubepods/pod1/app", 81);
    for sec in 1..=3 {
        recs.extend(shrinking(sec, 60, 500, Some(480)));
        for (m, reclaim_ns) in [(&docker, 1_000_000_000), (&child, 2_000_000_000)] {
            recs.push(interval(
                m.clone(),
                Iv {
                    sec,
                    reclaim_ns,
                    calls: 7,
                    zero: Some(1),
                    limit_hits: 1,
                },
            ));
        }
        recs.push(system(sec, 85.0));
    }
    let mut k = kill(4242, 2, child.clone(), Some(parent));
    k.trigger = Some(Task {
        pid: Some(4240),
        tgid: Some(4240),
        comm: "java".into(),
    });
    k.victim.tgid = Some(4000);
    k.totalpages = Some(16384);
    k.chosen_points = Some(16000);
    recs.push(Record::from(k));
    let slow = |duration_ns, pid| Slow {
        ts: ts(3),
        ts_ns: 3 * S,
        what: "memcg_reclaim".into(),
        duration_ns,
        memcg: child.clone(),
        pages: 32,
        result: None,
        task: Task {
            pid,
            tgid: None,
            comm: "java".into(),
        },
    };
    recs.push(Record::SlowReclaim(slow(80_000_000, None)));
    recs.push(Record::SlowCharge(slow(3_000_000, Some(4241))));
    let mut last = system(4, 85.0);
    if let Record::System(s) = &mut last {
        s.ringbuf_drops = 3;
    }
    recs.push(last);
    let mut text = ndjson(&recs);
    text.push_str("{\"type\":\"memcg_interval\",\"ts\":\n");
    text
}

/// An OOM log: a post-mortem under an ancestor's limit and more earlier
/// kills than are listed, one of each kind of limit.
fn golden_oom_log() -> Vec<Record> {
    let parent = memcg("/parent", 50);
    let child = memcg("/parent/child", 51);
    let mut pm = OomPostmortem {
        victim_state: Some(MemcgState {
            usage_bytes: Some(50 << 20),
            ..Default::default()
        }),
        ..postmortem(
            kill(99, 10, child.clone(), Some(parent.clone())),
            parent.clone(),
        )
    };
    pm.kill.totalpages = Some(16384);
    if let Some(u) = &mut pm.unreclaimable {
        u.share_pct = None;
        u.shmem_bytes = None;
    }
    if let Some(h) = &mut pm.history {
        h.intervals = 1;
        h.charge_failures = Some(2);
        h.do_shrink_slab_zero = Some(500);
        h.shrink_slab_ns = Some(7_000_000);
    }
    let mut recs = vec![Record::OomPostmortem(Box::new(pm))];
    let earlier = [
        (Some(child.clone()), Some("memcg")),
        (Some(parent), Some("memcg")),
        (None, Some("global")),
        (Some(memcg("/other", 60)), Some("memcg")),
        (None, None),
        (Some(child.clone()), Some("cpuset")),
        (Some(child.clone()), Some("mempolicy")),
    ];
    for (i, (limit, constraint)) in earlier.into_iter().enumerate() {
        let mut k = kill(200 + i as u32, 1, child.clone(), limit);
        k.before_start = true;
        k.constraint = constraint.map(str::to_string);
        if i == 4 {
            k.victim_memcg = None;
        }
        recs.push(Record::OomPostmortem(Box::new(OomPostmortem {
            ts: ts(1),
            ts_ns: S,
            global: constraint == Some("global"),
            kill: k,
            ..Default::default()
        })));
    }
    recs
}

/// The text report, byte for byte, of files that between them reach every
/// section of `text::render`: its layout is an interface (people read it,
/// scripts grep it), so a change to it must be deliberate. After one, run
/// the test with MEMTRACE_BLESS=1 to rewrite the stored copy.
#[test]
fn text_report_matches_the_golden_copy() {
    let quiet = Iv {
        sec: 1,
        reclaim_ns: 0,
        calls: 0,
        zero: None,
        limit_hits: 0,
    };
    let mut unknown = kill(7, 1, memcg("/solo", 9), None);
    unknown.victim_memcg = None;
    let two_runs = [
        header(&[]),
        system(1, 1.0),
        Record::from(unknown),
        header(&[]),
        system(2, 1.0),
    ];
    let cases: Vec<(&str, Report)> = vec![
        ("capture", report_of(&golden_capture()).unwrap()),
        ("oom log", report(&golden_oom_log())),
        (
            "tracepoint plan",
            storm_file(&TRACEPOINT_UNAVAILABLE, 60, 500, None, 85.0),
        ),
        ("few memcgs", storm_file(&[], 10, 5000, Some(4900), 85.0)),
        (
            "headerless and quiet",
            report(&[interval(memcg("/web", 5), quiet), system(1, 1.0)]),
        ),
        ("two runs, a kill without intervals", report(&two_runs)),
    ];
    let mut got = String::new();
    for (name, r) in &cases {
        got.push_str(&format!("===== {name}\n{}", text::render(r)));
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/report/testdata/text.golden"
    );
    if std::env::var_os("MEMTRACE_BLESS").is_some() {
        std::fs::write(path, &got).unwrap();
    }
    let want = std::fs::read_to_string(path).unwrap_or_default();
    if got != want {
        let line = got
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| got.lines().count().min(want.lines().count()));
        panic!(
            "the text report differs from {path} from line {}:\n got: {:?}\nwant: {:?}\n\
             (MEMTRACE_BLESS=1 rewrites it after an intended change)",
            line + 1,
            got.lines().nth(line),
            want.lines().nth(line)
        );
    }
}
