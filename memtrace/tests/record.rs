//! `memtrace record` end to end, as root: real OOM kills, a real sys-time
//! spike, the real output directory.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use memtrace_testkit::recorder::{Recorder, oom_victim, text_postmortem};
use memtrace_testkit::root::as_root;
use memtrace_testkit::*;
use serde_json::Value;

const ID: &str = "4f3c2b1a0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";

#[test]
fn oom_kills_get_json_and_text_post_mortems() {
    let (_g, scratch) = as_root("record-oom");
    let dir = scratch.join("out");
    let r = Recorder::start(&dir, &[]);

    // A docker-shaped memcg with its own limit.
    let root = TestMemcg::new("record");
    let ctr = root.dir.join(format!("docker-{ID}.scope"));
    fs::create_dir(&ctr).unwrap();
    let _ctr_guard = Dirs(vec![ctr.clone()]);
    root.limit_no_swap(64 << 20);
    let pid = oom_victim(&ctr);
    let pm = r.live_postmortem(pid);
    assert_eq!(pm["kill"]["victim"]["comm"], "tail");
    assert_eq!(pm["global"], false);
    let victim_memcg = &pm["kill"]["victim_memcg"];
    assert!(
        victim_memcg["path"]
            .as_str()
            .unwrap()
            .ends_with(&format!("docker-{ID}.scope")),
        "{pm}"
    );
    assert_eq!(victim_memcg["container"]["runtime"], "docker");
    assert_eq!(victim_memcg["container"]["name"], &ID[..12]);
    // The limit that fired is the parent's: the container has none of its own.
    assert_eq!(pm["limit_memcg"]["path"], root.rel.as_str(), "{pm}");
    // The snapshot was read while the victim's memory was still charged.
    let st = &pm["limit_state"];
    assert!(st["usage_bytes"].as_u64().unwrap() > 32 << 20, "{st}");
    // The reaper unmaps anon pages while usage is still charged, so the
    // anon figure itself races; the memory.stat fields must be there.
    for f in [
        "anon_bytes",
        "file_bytes",
        "shmem_bytes",
        "unevictable_bytes",
        "dirty_bytes",
        "writeback_bytes",
        "inactive_file_bytes",
    ] {
        assert!(st[f].is_u64(), "memory.stat snapshot lacks {f}: {st}");
    }
    assert_eq!(st["effective_limit_bytes"], 64u64 << 20);
    assert!(pm["unreclaimable"]["share_pct"].as_f64().is_some());
    assert!(pm["history"].is_object());
    // The text form, named after the victim, 0640.
    let text_path = text_postmortem(&dir, pid).expect("text post-mortem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&text_path).unwrap().permissions().mode() & 0o777,
        0o640
    );
    let text = fs::read_to_string(&text_path).unwrap();
    assert!(text.contains(&format!("pid {pid} (tail)")), "{text}");
    assert!(text.contains(&format!("[docker {}]", &ID[..12])), "{text}");
    assert!(text.contains("an ancestor of the victim's memcg"), "{text}");
    assert!(text.contains("memory.stat anon"), "{text}");
    assert_eq!(
        fs::metadata(dir.join("oom.ndjson"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let log = r.stop();
    assert!(log.contains("stopped:"), "{log}");
}

#[test]
fn a_sys_time_spike_gives_exactly_one_capture_with_its_history() {
    let (_g, scratch) = as_root("record-spike");
    let dir = scratch.join("out");
    let r = Recorder::start(
        &dir,
        &[
            "--sys-threshold",
            "25",
            "--for",
            "2s",
            "--pre",
            "20s",
            "--post",
            "2s",
        ],
    );
    // Quiet history before the spike.
    std::thread::sleep(Duration::from_secs(3));
    // Write churn through two small memcgs keeps both cores in the kernel
    // (page-cache allocation, limit reclaim, writeback).
    let a = TestMemcg::new("spike-a");
    let b = TestMemcg::new("spike-b");
    a.limit(16 << 20);
    b.limit(16 << 20);
    let churn = |m: &TestMemcg, f: &str| {
        let file = scratch.join(f);
        m.spawn(Command::new("sh").arg("-c").arg(format!(
            "end=$(($(date +%s)+8)); while [ $(date +%s) -lt $end ]; do dd if=/dev/zero of={} bs=1M count=256 conv=notrunc status=none; done",
            file.display()
        )))
    };
    let mut ca = churn(&a, "a");
    let mut cb = churn(&b, "b");
    let log = r.wait_log("capture written");
    wait_timeout(&mut ca, Duration::from_secs(30));
    wait_timeout(&mut cb, Duration::from_secs(30));
    let log = format!("{log}{}", r.stop());
    let caps: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("capture-")
        })
        .collect();
    assert_eq!(caps.len(), 1, "one incident, one capture: {caps:?}\n{log}");
    let recs = read_records(&caps[0]);
    let head = &recs[0];
    assert_eq!(head["type"], "capture");
    let trig = &head["trigger"];
    assert!(trig["peak_sys_pct"].as_f64().unwrap() >= 25.0, "{trig}");
    let trig_ns = trig["ts_ns"].as_u64().unwrap();
    assert!(
        recs.iter()
            .any(|r| r["type"] == "system" && r["ts_ns"].as_u64().unwrap() < trig_ns),
        "the capture reaches back before the trigger"
    );
    let worked: Vec<&Value> = recs
        .iter()
        .filter(|r| {
            r["type"] == "memcg_interval"
                && (r["memcg"]["path"] == a.rel.as_str() || r["memcg"]["path"] == b.rel.as_str())
        })
        .collect();
    assert!(
        !worked.is_empty(),
        "the memcgs that did the work are in the capture"
    );
    assert!(
        worked
            .iter()
            .any(|r| r["reclaim_memcg_count"].as_u64().unwrap_or(0) > 0)
    );
    fs::copy(&caps[0], scratch.join("capture.ndjson")).unwrap();
    report_names(&scratch.join("capture.ndjson"), &[&a.rel, &b.rel]);
}

/// `memtrace report` on a capture names the memcgs that did the work.
fn report_names(capture: &Path, memcgs: &[&str]) {
    let out = Command::new(memtrace_bin())
        .arg("report")
        .arg(capture)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        memcgs.iter().any(|m| text.contains(*m)),
        "report names the working memcgs: {text}"
    );
}

#[test]
fn a_planted_symlink_is_not_followed() {
    let (_g, scratch) = as_root("record-symlink");
    let dir = scratch.join("out");
    fs::create_dir(&dir).unwrap();
    let victim = scratch.join("precious");
    fs::write(&victim, "keep\n").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("oom.ndjson")).unwrap();
    let r = Recorder::start(&dir, &[]);
    let m = TestMemcg::new("record-symlink");
    m.limit_no_swap(32 << 20);
    let pid = oom_victim(&m.dir);
    let log = r.wait_log(&format!("pid {pid}"));
    let log = format!("{log}{}", r.stop());
    assert!(
        log.contains("OOM log NOT written") && log.contains("symlink"),
        "{log}"
    );
    assert_eq!(
        fs::read_to_string(&victim).unwrap(),
        "keep\n",
        "the symlink's target is untouched"
    );
    assert!(
        text_postmortem(&dir, pid).is_some(),
        "the text post-mortem is still written"
    );
}

#[test]
fn an_unusable_directory_is_a_clear_error() {
    let out = Command::new(memtrace_bin())
        .args(["record", "--dir", "/proc/memtrace-cannot-be-here"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/proc/memtrace-cannot-be-here") && err.contains("--dir"),
        "{err}"
    );
}

/// logrotate's convention: after the OOM log is renamed, SIGHUP makes
/// `record` carry on (it used to die with exit 129) and the next kill goes
/// to a new `oom.ndjson` (0600), the rotated file left alone; a symlink
/// planted at the log's path after rotation is still never followed.
#[test]
fn sighup_reopens_the_oom_log_after_logrotate() {
    let (_g, scratch) = as_root("record-sighup");
    let dir = scratch.join("out");
    let mut r = Recorder::start(&dir, &["--oom-text-stderr"]);
    let memcg = TestMemcg::new("record-hup");
    memcg.limit_no_swap(32 << 20);
    let first = oom_victim(&memcg.dir);
    r.live_postmortem(first);

    let log = dir.join("oom.ndjson");
    let rotated = dir.join("oom.ndjson.1");
    fs::rename(&log, &rotated).unwrap();
    let rotated_before = fs::read(&rotated).unwrap();
    r.signal(libc::SIGHUP);
    r.wait_log("SIGHUP: reopened");
    assert!(r.running(), "record must survive SIGHUP: {}", r.log());

    let second = oom_victim(&memcg.dir);
    let pm = r.live_postmortem(second);
    assert_eq!(pm["kill"]["victim"]["pid"], second);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::symlink_metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        r.postmortems()
            .iter()
            .all(|p| p["kill"]["victim"]["pid"] != first),
        "the new log holds only kills after the rotation"
    );
    assert_eq!(
        fs::read(&rotated).unwrap(),
        rotated_before,
        "the rotated file is left alone"
    );

    // Rotated again, and a symlink planted where the log was.
    fs::rename(&log, &rotated).unwrap();
    let target = scratch.join("not-yours");
    fs::write(&target, "keep\n").unwrap();
    std::os::unix::fs::symlink(&target, &log).unwrap();
    r.signal(libc::SIGHUP);
    oom_victim(&memcg.dir);
    r.wait_log("OOM log NOT written");
    assert_eq!(fs::read_to_string(&target).unwrap(), "keep\n");
    let log = r.stop();
    assert!(log.contains("symlink"), "{log}");
}
