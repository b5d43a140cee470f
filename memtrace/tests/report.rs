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

    // (3) The capture as an HTML page, in a real browser (sharing this
    // test's recorded workload keeps CI short).
    html_in_a_real_browser(&dir, &stream, pid);
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

/// The page as headless Chromium shows it at 1280 px: the PNG's RGB rows
/// and the browser's log (its console messages included).
fn screenshot(html: &Path, png: &Path) -> (Vec<Vec<[u8; 3]>>, String) {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,2400",
        ])
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium (installed by cargo xtask setup)");
    let log = text(&out.stderr);
    assert!(out.status.success(), "chromium: {}\n{log}", out.status);
    let file = std::io::BufReader::new(fs::File::open(png).expect("the screenshot"));
    let mut reader = png::Decoder::new(file).read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("PNG size")];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    let ch = info.color_type.samples();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let rows = buf[..info.buffer_size()]
        .chunks(info.line_size)
        .map(|row| {
            row.chunks(ch)
                .take(info.width as usize)
                .map(|p| [p[0], p[1], p[2]])
                .collect()
        })
        .collect();
    (rows, log)
}

/// Pixels of exactly `rgb` in rows `ys` and columns `xs`.
fn count(
    rows: &[Vec<[u8; 3]>],
    ys: std::ops::Range<usize>,
    xs: std::ops::Range<usize>,
    rgb: [u8; 3],
) -> usize {
    rows[ys]
        .iter()
        .map(|r| r[xs.clone()].iter().filter(|p| **p == rgb).count())
        .sum()
}

/// `report --html` of a capture of `stream` (whose workload's `tail` was
/// killed as `pid`): a self-contained page that headless Chromium loads
/// without a console error, with chart pixels where the charts are.
fn html_in_a_real_browser(dir: &Path, stream: &str, pid: u32) {
    let cap = dir.join("capture.ndjson");
    fs::write(&cap, capture_of(stream)).unwrap();
    let html = dir.join("report.html");
    let out = Command::new(memtrace_bin())
        .arg("report")
        .arg(&cap)
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = fs::read_to_string(&html).unwrap();
    assert!(page.len() < 2 << 20, "{} bytes", page.len());
    let lower = page.to_ascii_lowercase();
    for bad in ["http:", "https:", "<script", "src=", "href=", "url("] {
        assert!(!lower.contains(bad), "{bad} in the page");
    }
    // The kill is marked, with the victim's comm and pid.
    assert!(
        page.contains(&format!(": tail (pid {pid}) in ")),
        "no marker for the kill of tail {pid}"
    );

    let png = dir.join("report.png");
    let (rows, log) = screenshot(&html, &png);
    if let Some(keep) = std::env::var_os("MEMTRACE_KEEP_SCREENSHOT") {
        fs::copy(&png, keep).unwrap();
    }
    // Loaded without a console error (a blocked fetch, a CSP violation or
    // a failed load would each log one).
    for l in log.lines() {
        assert!(
            !l.contains(":CONSOLE") && !l.contains("net::ERR_"),
            "browser: {l}"
        );
    }
    assert!(
        rows.len() >= 2400 && rows[0].len() == 1280,
        "a 1280 px wide page"
    );
    // Light theme: white page. The host chart (the first, under the
    // title and verdict) draws sys% in blue and the busiest CPU in
    // vermilion; the kill's marker is in the kill colour; the stacked
    // reclaim chart below it fills its top container in blue.
    let white = [255, 255, 255];
    assert_eq!(rows[5][5], white);
    let plot = 90..1240;
    let blue = [0x00, 0x72, 0xB2];
    let vermilion = [0xD5, 0x5E, 0x00];
    let kill = [0xB0, 0x00, 0x20];
    let host = 100..900;
    assert!(
        count(&rows, host.clone(), plot.clone(), blue) > 50,
        "no sys% line"
    );
    assert!(
        count(&rows, host.clone(), plot.clone(), vermilion) > 20,
        "no busiest-CPU line"
    );
    assert!(
        count(&rows, host.clone(), plot.clone(), kill) > 20,
        "no kill marker"
    );
    assert!(
        count(&rows, 500..2400, plot.clone(), blue) > 500,
        "no reclaim area"
    );
    // Nothing drawn past the right margin: not clipped at 1280 px.
    let drawn_right = rows
        .iter()
        .filter(|r| r[1262..].iter().any(|p| *p != white))
        .count();
    assert_eq!(drawn_right, 0, "something reaches the page's right edge");
}

/// `--html` writes the page 0640, refuses to follow a symlink planted at
/// its path, and cannot be combined with `--json` (no root needed).
#[test]
fn html_output_file_mode_symlink_and_flags() {
    let dir = scratch("report-html-file");
    let input =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/seeds/ndjson/stream-6.18.ndjson");
    let run = |out: &Path, extra: &[&str]| {
        Command::new(memtrace_bin())
            .arg("report")
            .arg(&input)
            .args(extra)
            .arg("--html")
            .arg(out)
            .output()
            .unwrap()
    };
    let page = dir.join("page.html");
    let out = run(&page, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let html = fs::read_to_string(&page).unwrap();
    assert!(
        html.starts_with("<!DOCTYPE html>") && html.contains("<svg"),
        "{html}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&page).unwrap().permissions().mode() & 0o777,
        0o640
    );

    let target = dir.join("victim");
    fs::write(&target, "keep me").unwrap();
    let link = dir.join("link.html");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = run(&link, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("it is a symlink"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(fs::read_to_string(&target).unwrap(), "keep me");

    let out = run(&dir.join("x.html"), &["--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}
