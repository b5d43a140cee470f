//! Whole records on a full disk, as root: a small tmpfs mounted for the
//! test is filled, then the real `memtrace stream --output` and `memtrace
//! record` write to it (real OOM kills for `record`), and space returns.
use std::{
    ffi::CString,
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use memtrace_testkit::recorder::{Recorder, oom_victim, postmortems};
use memtrace_testkit::root::as_root;
use memtrace_testkit::*;
use serde_json::Value;

/// A tmpfs of `kib` KiB mounted at `dir`, unmounted on drop (also when the
/// test fails; lazily, so a process still writing cannot keep it).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, kib: u64) -> Self {
        fs::create_dir_all(dir).unwrap();
        let c = |s: &str| CString::new(s).unwrap();
        let target = CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        let opts = c(&format!("size={kib}k,mode=0755"));
        // SAFETY: every pointer is a NUL-terminated string that outlives
        // the call; the kernel copies them.
        let r = unsafe {
            libc::mount(
                c("tmpfs").as_ptr(),
                target.as_ptr(),
                c("tmpfs").as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(r, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
        Self(dir.to_path_buf())
    }

    /// Fills it up with `name`, leaving nothing free.
    fn fill(&self, name: &str) -> PathBuf {
        let p = self.0.join(name);
        let mut f = fs::File::create(&p).unwrap();
        let chunk = [b'x'; 512];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", p.display()),
            }
        }
        p
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path that outlives the call.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

fn stream(args: &[&str], out: &Path, stderr: &Path) -> Child {
    Command::new(memtrace_bin())
        .arg("stream")
        .args(args)
        .arg("--output")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(stderr).unwrap())
        .spawn()
        .expect("start memtrace stream")
}

fn replay_ok(path: &Path) -> usize {
    let out = Command::new(memtrace_bin())
        .args(["stream", "--replay"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "--replay {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.split(|&b| b == b'\n').count() - 1
}

#[test]
fn stream_output_on_a_full_disk_stays_whole_lines() {
    let (_g, scratch) = as_root("disk-stream");
    // Room for the kernel log's past kills the second run writes first.
    let fs_ = Tmpfs::mount(&scratch.join("mnt"), 4096);
    let out = fs_.0.join("stream.ndjson");
    let err = scratch.join("stream.stderr");

    // A run that fills the disk: intervals every 100 ms until ENOSPC.
    let filler = fs_.fill("filler");
    // Leave room for the header and a few records, then fill the rest.
    fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len(fs::metadata(&filler).unwrap().len() - 6 * 4096)
        .unwrap();
    let mut child = stream(&["--interval", "100ms"], &out, &err);
    let st = wait_timeout(&mut child, Duration::from_secs(60));
    let stderr = fs::read_to_string(&err).unwrap();
    assert!(
        !st.success() && stderr.contains("No space left on device"),
        "stream should stop on the full disk ({st}): {stderr}"
    );
    let first = read_records(&out);
    assert_eq!(first[0]["type"], "header");
    assert!(first.len() > 1, "records before the disk filled");

    // A file torn by an older writer or a crash is repaired, not glued to.
    let mut f = fs::OpenOptions::new().append(true).open(&out).unwrap();
    let torn = b"{\"type\":\"memcg_interval\",\"ts\":\"2026";
    // There may be no room for it on the full disk: make some.
    fs::remove_file(&filler).unwrap();
    f.write_all(torn).unwrap();
    drop(f);

    // Space has returned: the next run appends on a line boundary.
    let mut child = stream(&["--interval", "100ms", "--duration", "1s"], &out, &err);
    let st = wait_timeout(&mut child, Duration::from_secs(60));
    let stderr = fs::read_to_string(&err).unwrap();
    assert!(st.success(), "second run {st}: {stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: removed a torn last line ({} bytes without a newline",
            out.display(),
            torn.len()
        )),
        "the repair is reported, naming the file and the bytes: {stderr}"
    );
    let all = read_records(&out);
    assert_eq!(of_type(&all, "header").len(), 2, "both runs' headers");
    assert_eq!(all[..first.len()], first[..], "the first run is kept");
    assert_eq!(replay_ok(&out), all.len(), "--replay reads every record");
}

/// OOM-kills in `m` until `n` post-mortems were held: the disk was just
/// filled, but the last page of a file may still take a small append.
/// Returns every victim, held or written.
fn kill_until_held(r: &Recorder, m: &TestMemcg, n: usize) -> Vec<u32> {
    let mut pids = Vec::new();
    for _ in 0..n + 20 {
        let pid = oom_victim(&m.dir);
        pids.push(pid);
        r.wait_log(&format!("pid {pid}"));
        // The log names the kill before it says whether it was held.
        std::thread::sleep(Duration::from_millis(300));
        // (The texts on stderr also say "held in memory", in their note.)
        if r.log().matches("retried until written").count() >= n {
            let log = r.log();
            assert!(log.contains(&format!("pid {pid}: OOM")), "{log}");
            return pids;
        }
    }
    panic!("the full disk never refused a post-mortem: {}", r.log());
}

/// Waits until `path` stopped growing for a second: the post-mortems of
/// the kernel log's past kills are written.
fn settled(path: &Path) {
    let end = Instant::now() + Duration::from_secs(60);
    let size = || fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut last = size();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = size();
        if now == last {
            return;
        }
        assert!(Instant::now() < end, "{} keeps growing", path.display());
        last = now;
    }
}

#[test]
fn record_holds_post_mortems_the_full_disk_refused_and_writes_them_later() {
    let (_g, scratch) = as_root("disk-record");
    // Room for the post-mortems of the kernel log's past kills, written
    // at start; then the disk is filled.
    let fs_ = Tmpfs::mount(&scratch.join("mnt"), 16 << 10);
    let dir = fs_.0.join("out");
    let oom_log = dir.join("oom.ndjson");
    let r = Recorder::start_logged(&dir, &[], &scratch.join("record.stderr"));
    let m = TestMemcg::new("disk-record");
    m.limit_no_swap(16 << 20);
    let first = oom_victim(&m.dir);
    r.wait_log(&format!("pid {first} (tail): post-mortem in"));
    settled(&oom_log);

    // The disk fills: kills until five were held.
    let filler = fs_.fill("filler");
    let pids = kill_until_held(&r, &m, 5);
    let log = r.log();
    assert!(log.contains("No space left on device"), "{log}");
    assert!(!postmortems(&oom_log).is_empty(), "whole lines while full");

    // Space returns: every held post-mortem is written, in kill order.
    fs::remove_file(&filler).unwrap();
    let log = r.wait_log("wrote 5 held OOM post-mortem(s)");
    assert!(log.contains("0 still held"), "{log}");
    let all = postmortems(&oom_log);
    let logged: Vec<u32> = all
        .iter()
        .filter(|p| p["kill"]["before_start"] == false)
        .map(|p| p["kill"]["victim"]["pid"].as_u64().unwrap() as u32)
        .collect();
    let want: Vec<u32> = std::iter::once(first).chain(pids.iter().copied()).collect();
    assert_eq!(logged, want, "every kill once, in order");
    for p in &all[all.len() - 4..] {
        assert!(
            p["notes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n.as_str().unwrap().starts_with("written late")),
            "{p}"
        );
    }
    for pid in &want {
        assert!(r.text(*pid).is_some(), "text post-mortem of {pid}");
    }
    // `report` counts every kill (the torn, glued record cost one before).
    let out = Command::new(memtrace_bin())
        .args(["report", "--json"])
        .arg(&oom_log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kills: Vec<u64> = rep["oom_kills"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["victim"]["pid"].as_u64())
        .collect();
    for pid in &want {
        assert_eq!(
            kills.iter().filter(|k| **k == *pid as u64).count(),
            1,
            "report counts kill {pid} once: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let log = r.stop();
    assert!(log.contains(", 0 lost"), "{log}");
}

#[test]
fn record_counts_post_mortems_still_held_and_those_lost() {
    let (_g, scratch) = as_root("disk-record-lost");
    let fs_ = Tmpfs::mount(&scratch.join("mnt"), 16 << 10);
    // The OOM log on the small disk, captures and texts on a roomy one, so
    // a capture shows the counters while the log's disk is full.
    let dir = scratch.join("out");
    let oom_log = fs_.0.join("oom.ndjson");
    let r = Recorder::start_logged(
        &dir,
        &[
            "--oom-log",
            oom_log.to_str().unwrap(),
            "--interval",
            "200ms",
            "--sys-threshold",
            "0",
            "--for",
            "1s",
            "--pre",
            "5s",
            "--post",
            "15s",
        ],
        &scratch.join("record.stderr"),
    );
    settled(&oom_log);
    fs_.fill("filler");
    let before = postmortems(&oom_log);
    let m = TestMemcg::new("disk-record-lost");
    m.limit_no_swap(16 << 20);
    kill_until_held(&r, &m, 2);
    // The capture (decided 1 s after start, written 15 s later) ends
    // after both kills: its last `system` record carries the counters.
    let log = r.wait_log("capture written");
    let cap = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("capture-"))
        .max()
        .unwrap_or_else(|| panic!("no capture: {log}"));
    let recs = read_records(&cap);
    let last = of_type(&recs, "system").last().copied().cloned().unwrap();
    assert_eq!(last["postmortems_pending"], 2, "{last}");
    assert_eq!(last["postmortems_lost"], 0, "{last}");
    // Stopped with the disk still full: both are lost, and said to be.
    let log = r.stop();
    assert!(
        log.contains("2 OOM post-mortem(s) held for space LOST at exit"),
        "{log}"
    );
    assert!(log.contains(", 2 lost"), "{log}");
    let after = postmortems(&oom_log);
    assert_eq!(after[..before.len()], before[..], "whole lines, none lost");
}
