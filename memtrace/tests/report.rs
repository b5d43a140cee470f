//! `memtrace report` end to end: on a stream recorded around a real
//! workload (as root), on a capture assembled from it and then damaged, and
//! on files that are not memtrace's (no root needed).
use std::{
    fs,
    os::unix::process::ExitStatusExt,
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use memtrace_testkit::*;
use memtrace_testkit::{
    churn::{field_names, write_through_cache},
    root::as_root,
};
use serde_json::{Value, json};

fn report(file: &Path, json: bool) -> Output {
    let mut cmd = Command::new(memtrace_bin());
    cmd.arg("report").arg(file);
    if json {
        cmd.arg("--json");
    }
    cmd.output().expect("run memtrace report")
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).expect("UTF-8 output")
}

/// No raw control characters but line breaks: names in the output are
/// escaped.
fn assert_clean(s: &str) {
    assert!(
        !s.chars()
            .any(|c| c != '\n' && (c.is_control() || ('\u{80}'..='\u{9f}').contains(&c))),
        "raw control characters in: {s}"
    );
}

/// The memcg listed first under a ranking of the text report.
fn first_row_under(report: &str, title: &str) -> String {
    let mut lines = report.lines().skip_while(|l| !l.starts_with(title));
    lines
        .next()
        .unwrap_or_else(|| panic!("no {title} in {report}"));
    lines.next(); // column titles
    lines.next().unwrap_or_default().to_string()
}

/// Records `stream --interval 1s` around 512 MiB of page-cache writes
/// through a 64 MiB memcg and an OOM kill of `tail /dev/zero` in it.
/// Returns the stream file's text and the victim's pid.
fn record_workload(dir: &Path, memcg: &TestMemcg) -> (String, u32) {
    let stream = Stream::start(dir, &["--interval", "1s"]);
    write_through_cache(
        memcg,
        &dir.join("churn.data"),
        512,
        Duration::from_secs(120),
    );
    let mut tail = memcg.spawn(Command::new("tail").arg("/dev/zero"));
    let pid = tail.id();
    let st = wait_timeout(&mut tail, Duration::from_secs(60));
    assert_eq!(st.signal(), Some(libc::SIGKILL), "tail must be OOM-killed");
    // An interval after the kill, and the kernel log's report of it.
    std::thread::sleep(Duration::from_millis(2500));
    stream.stop(libc::SIGINT);
    (fs::read_to_string(dir.join("stream.ndjson")).unwrap(), pid)
}

/// A capture as `record` writes it: a `capture` line (every field of the
/// `Capture` and `Trigger` records; `report` rejects the line if one is
/// missing) around the stream's busiest interval, then the stream's records.
fn capture_of(stream: &str) -> String {
    let records: Vec<Value> = stream
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut header = records[0].clone();
    assert_eq!(header["type"], "header");
    header.as_object_mut().unwrap().remove("type");
    let systems: Vec<&Value> = records.iter().filter(|r| r["type"] == "system").collect();
    let peak = systems
        .iter()
        .max_by(|a, b| {
            a["sys_pct"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["sys_pct"].as_f64().unwrap())
        })
        .unwrap();
    let first_ns = header["ts_ns"].as_u64().unwrap();
    let last = records.last().unwrap();
    let capture = json!({
        "type": "capture",
        "ts": last["ts"],
        "ts_ns": last["ts_ns"],
        "format_version": 1,
        "trigger": {
            "kind": "sys_time",
            "ts": peak["ts"],
            "ts_ns": peak["ts_ns"],
            "threshold_pct": 1.0,
            "sustained_ns": 2_000_000_000u64,
            "peak_sys_pct": peak["sys_pct"],
            "peak_cpu_sys_pct": peak["max_cpu_sys_pct"],
            "peak_cpu": peak["max_cpu"],
        },
        "from_ns": first_ns,
        "to_ns": last["ts_ns"],
        "header": header,
        "truncated_records": 0,
    });
    let mut out = serde_json::to_string(&capture).unwrap();
    out.push('\n');
    for l in stream.lines().skip(1) {
        out.push_str(l);
        out.push('\n');
    }
    out
}

#[test]
fn report_of_a_real_stream_and_of_a_damaged_capture_of_it() {
    let (_g, dir) = as_root("report");
    let memcg = TestMemcg::new("report");
    memcg.limit_no_swap(64 << 20);
    let (stream, pid) = record_workload(&dir, &memcg);
    let path = dir.join("stream.ndjson");

    // (1) The stream file: text.
    let out = report(&path, false);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    println!("---- memtrace report {} ----\n{stdout}", path.display());
    assert!(out.status.success(), "exit {}: {stderr}", out.status);
    assert_clean(&stdout);
    assert!(stdout.contains("(stream file)"), "{stdout}");
    let top = first_row_under(&stdout, "TOP MEMCGS BY RECLAIM TIME");
    assert!(
        top.ends_with(&memcg.rel) || top.contains(&format!("{} ", memcg.rel)),
        "{} must be the top memcg by reclaim time: {top}\n{stdout}",
        memcg.rel
    );
    assert!(
        stdout.contains(&format!("tail (pid {pid}")),
        "the kill of pid {pid}: {stdout}"
    );
    assert!(
        stdout.contains(&format!("killed in {}", memcg.rel)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "the victim's own memcg {} hit its limit",
            memcg.rel
        )),
        "{stdout}"
    );
    assert!(stdout.contains("SHRINK_SLAB STORM:"), "{stdout}");

    // The same as JSON.
    let out = report(&path, true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let j = text(&out.stdout);
    assert_clean(&j);
    assert_eq!(j.lines().count(), 1, "one JSON object");
    let v: Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["kind"], "stream");
    assert_eq!(v["bad_lines_total"], 0);
    assert_eq!(v["top_memcgs_by_reclaim"][0]["name"], memcg.rel.as_str());
    assert_eq!(
        v["top_memcgs_by_reclaim"][0]["memcg_id"],
        memcg.inode(),
        "{}",
        v["top_memcgs_by_reclaim"]
    );
    assert!(
        v["top_memcgs_by_reclaim"][0]["reclaim_ns"]
            .as_u64()
            .unwrap()
            > 0
    );
    let kills: Vec<&Value> = v["oom_kills"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["victim"]["pid"] == pid && k["before_start"] == false)
        .collect();
    assert_eq!(kills.len(), 1, "{}", v["oom_kills"]);
    let k = kills[0];
    assert_eq!(k["victim"]["comm"], "tail");
    assert_eq!(k["limit_of"], "own");
    assert_eq!(k["limit_memcg"]["path"], memcg.rel.as_str());
    assert_eq!(k["history_from"], "file");
    assert!(
        k["history"]["reclaim_ns"].as_u64().unwrap() > 0,
        "the churn's reclaim before the kill: {k}"
    );
    // What the plan cannot see is null in the JSON, never 0.
    let not_visible = field_names(&v["not_visible"]);
    if not_visible.contains(&"do_shrink_slab_zero") {
        assert!(v["shrinker_totals"]["zero"].is_null());
        assert_ne!(v["storm"]["verdict"], "present");
    }
    if not_visible.contains(&"charge_failures") {
        assert!(v["top_memcgs_by_reclaim"][0]["charge_failures"].is_null());
    }

    // (2) A capture assembled from that stream, then damaged in the middle:
    // one line cut in half, one line of garbage.
    let capture = capture_of(&stream);
    let mut lines: Vec<String> = capture.lines().map(str::to_string).collect();
    let mid = lines.len() / 2;
    let cut = lines
        .iter()
        .skip(mid)
        .position(|l| l.contains("\"type\":\"system\""))
        .map(|i| i + mid)
        .expect("a system record after the middle");
    let half = lines[cut].len() / 2;
    lines[cut].truncate(half);
    lines.insert(cut + 2, "\u{1b}[2Jgarbage\u{7} not a record".to_string());
    let (truncated_no, garbage_no) = (cut as u64 + 1, cut as u64 + 3);
    let damaged = dir.join("capture-damaged.ndjson");
    fs::write(&damaged, lines.join("\n") + "\n").unwrap();

    let out = report(&damaged, false);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    println!(
        "---- memtrace report {} ----\n{stderr}{stdout}",
        damaged.display()
    );
    assert!(out.status.success(), "exit {}: {stderr}", out.status);
    assert_clean(&stdout);
    assert_clean(&stderr);
    let name = damaged.display().to_string();
    assert!(
        stderr.contains(&format!("{name}:{truncated_no}: skipped: truncated JSON")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{name}:{garbage_no}: skipped: not JSON")),
        "{stderr}"
    );
    assert!(stdout.contains("(capture)"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "2 bad lines skipped (line {truncated_no}, {garbage_no};"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("TRIGGER\n  host sys above 1.0%"),
        "{stdout}"
    );
    let top = first_row_under(&stdout, "TOP MEMCGS BY RECLAIM TIME");
    assert!(top.contains(&memcg.rel), "{top}\n{stdout}");
    assert!(stdout.contains(&format!("tail (pid {pid}")), "{stdout}");

    let out = report(&damaged, true);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "capture");
    let bad: Vec<u64> = v["bad_lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["line"].as_u64().unwrap())
        .collect();
    assert_eq!(bad, [truncated_no, garbage_no]);
    assert_eq!(v["capture"]["trigger"]["threshold_pct"], 1.0);
    assert_eq!(v["top_memcgs_by_reclaim"][0]["name"], memcg.rel.as_str());
    assert!(
        v["oom_kills"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["victim"]["pid"] == pid)
    );
    drop(memcg);
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let dir = scratch("report-missing");
    let path = dir.join("no-such-capture.ndjson");
    let out = report(&path, false);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot open {}", path.display())) && err.contains("No such file"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_file_that_is_not_memtrace_is_a_clear_error() {
    let dir = scratch("report-foreign");
    let cases = [
        ("notes.txt", "hello\nthis is not memtrace\n", "not JSON"),
        (
            "other.ndjson",
            "{\"type\":\"log\",\"msg\":\"hi\"}\n{\"level\":3}\n",
            "unknown record type \"log\"",
        ),
        ("empty.ndjson", "", "empty file"),
    ];
    for (name, content, why) in cases {
        let path = dir.join(name);
        fs::write(&path, content).unwrap();
        for json in [false, true] {
            let out = report(&path, json);
            assert_eq!(out.status.code(), Some(1), "{name}");
            assert!(out.stdout.is_empty(), "{name}: nothing on stdout");
            let err = text(&out.stderr);
            assert!(err.contains(why), "{name}: {err}");
            if !content.is_empty() {
                assert!(
                    err.contains("not a memtrace capture, stream file or OOM log"),
                    "{err}"
                );
            }
            assert!(
                err.contains("memtrace stream --output"),
                "names the fix: {err}"
            );
        }
    }
    // A binary file: bounded work and a clean message.
    let out = report(Path::new(memtrace_bin()), false);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("not a memtrace capture"), "{err}");
    assert_clean(&err);
}
