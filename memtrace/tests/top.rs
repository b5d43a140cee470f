//! `memtrace top` end to end, as root: real memcgs laid out like each
//! container runtime, real workloads in them, the real binary.
use std::{
    collections::BTreeSet,
    fs,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use memtrace_testkit::*;
use memtrace_testkit::{probe::Probe, root::as_root};
use serde_json::Value;

const DOCKER: &str = "4f3c2b1a0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";
const CONTAINERD: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
const CRIO: &str = "b0c1d2e3f405162738495a6b7c8d9e0fb0c1d2e3f405162738495a6b7c8d9e0f";
const PODMAN: &str = "c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8";
const K8S_CGROUPFS: &str = "d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9";
const POD_UID: &str = "1d2c3b4a-5f6e-4d8c-9b0a-112233445566";

/// (path below the test root, runtime, name top must show)
fn layouts() -> Vec<(String, &'static str, String)> {
    let pod = POD_UID.replace('-', "_");
    vec![
        (
            format!("system.slice/docker-{DOCKER}.scope"),
            "docker",
            DOCKER[..12].to_string(),
        ),
        (
            format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod}.slice/cri-containerd-{CONTAINERD}.scope"
            ),
            "containerd",
            CONTAINERD[..12].to_string(),
        ),
        (
            format!("kubepods/besteffort/pod{POD_UID}/{K8S_CGROUPFS}"),
            "containerd",
            K8S_CGROUPFS[..12].to_string(),
        ),
        (
            format!("machine.slice/crio-{CRIO}.scope"),
            "cri-o",
            CRIO[..12].to_string(),
        ),
        (
            format!("machine.slice/libpod-{PODMAN}.scope"),
            "podman",
            PODMAN[..12].to_string(),
        ),
        (
            "system.slice/memtrace-test-web.service".to_string(),
            "systemd",
            "memtrace-test-web.service".to_string(),
        ),
        (
            "plain-batch-job".to_string(),
            "cgroup",
            "plain-batch-job".to_string(),
        ),
    ]
}

/// Creates every directory of `rel` under `root`, deepest last.
fn mkdirs(root: &TestMemcg, rel: &str) -> std::path::PathBuf {
    let mut dir = root.dir.clone();
    for part in rel.split('/') {
        dir.push(part);
        let _ = fs::create_dir(&dir);
    }
    dir
}

fn all_dirs(root: &std::path::Path, rel: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut dir = root.to_path_buf();
    for part in rel.split('/') {
        dir.push(part);
        out.push(dir.clone());
    }
    out
}

/// Page-cache churn in a 16 MiB memcg: reclaim and limit hits.
fn churn(dir: &std::path::Path, file: &std::path::Path) {
    fs::write(dir.join("memory.limit_in_bytes"), (16u64 << 20).to_string())
        .or_else(|_| fs::write(dir.join("memory.max"), (16u64 << 20).to_string()))
        .unwrap();
    let mut child = spawn_in(
        dir,
        Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", file.display()))
            .args(["bs=1M", "count=64"]),
    );
    wait_timeout(&mut child, Duration::from_secs(60));
    let _ = fs::remove_file(file);
}

fn frames(json: &str) -> Vec<Vec<Value>> {
    let mut out: Vec<Vec<Value>> = Vec::new();
    let mut last_ts = None;
    for line in json.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["type"], "top_row");
        if last_ts.as_ref() != Some(&v["ts"]) {
            out.push(Vec::new());
            last_ts = Some(v["ts"].clone());
        }
        out.last_mut().unwrap().push(v);
    }
    out
}

#[test]
fn containers_of_every_runtime_show_up_and_replay_gives_the_same_rows() {
    let (_g, scratch) = as_root("top");
    let root = TestMemcg::new("top");
    let layouts = layouts();
    let mut tree = Dirs(Vec::new());
    for (rel, _, _) in &layouts {
        tree.0.extend(all_dirs(&root.dir, rel));
        mkdirs(&root, rel);
    }
    let saved = scratch.join("saved.ndjson");
    let out = scratch.join("live.json");
    let mut top = Command::new(memtrace_bin())
        .args(["top", "--json", "--interval", "1s", "--save"])
        .arg(&saved)
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(scratch.join("top.stderr")).unwrap())
        .spawn()
        .unwrap();
    wait_attached(&saved);
    for (i, (rel, _, _)) in layouts.iter().enumerate() {
        churn(
            &root.dir.join(rel),
            &std::env::temp_dir().join(format!("memtrace-top-{}-{i}", std::process::id())),
        );
    }
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child process, with a valid signal.
    unsafe { libc::kill(top.id() as i32, libc::SIGINT) };
    let st = wait_timeout(&mut top, Duration::from_secs(20));
    assert!(
        st.success(),
        "top exit {st}: {}",
        fs::read_to_string(scratch.join("top.stderr")).unwrap_or_default()
    );
    let live = fs::read_to_string(&out).unwrap();
    let live_frames = frames(&live);
    assert!(!live_frames.is_empty(), "top printed frames");

    let seen: BTreeSet<(String, String)> = live_frames
        .iter()
        .flatten()
        .map(|r| {
            (
                r["runtime"].as_str().unwrap().to_string(),
                r["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (rel, runtime, name) in &layouts {
        assert!(
            seen.contains(&(runtime.to_string(), name.clone())),
            "{rel}: want a {runtime} row named {name}; rows: {seen:?}"
        );
    }
    let find = |name: &str| {
        live_frames
            .iter()
            .flatten()
            .find(|r| r["name"] == name)
            .unwrap()
            .clone()
    };
    let k8s = find(&CONTAINERD[..12]);
    assert_eq!(k8s["pod_uid"], POD_UID);
    assert_eq!(k8s["qos"], "burstable");
    assert_eq!(k8s["id"], CONTAINERD, "full id kept");
    assert_eq!(find(&K8S_CGROUPFS[..12])["qos"], "besteffort");
    let docker = find(&DOCKER[..12]);
    assert!(
        live_frames
            .iter()
            .flatten()
            .any(|r| r["name"] == docker["name"] && r["reclaim_ms_per_s"].as_f64().unwrap() > 0.0)
    );
    assert!(
        live_frames
            .iter()
            .flatten()
            .any(|r| r["limit_hits_per_s"].as_f64().is_some_and(|v| v > 0.0))
    );
    // Charges are seen when the plan (in the header the saved records
    // start with) has try_charge_memcg, on a family the kernel really
    // attaches: then every row has a rate, else null (never 0) everywhere.
    let header = read_records(&saved).swap_remove(0);
    assert_eq!(header["type"], "header");
    let charge = plan_family(&header, "try_charge_memcg");
    let probe = Probe::run();
    if let Some(family) = charge.as_str() {
        assert!(probe.works(family), "{family}: {probe:?}");
    } else {
        assert!(
            !probe.works("fentry") && !probe.works("kprobe"),
            "try_charge_memcg unplanned although the kernel attaches functions: {probe:?}"
        );
    }
    let unseen = header["unavailable"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "charge_failures");
    assert_eq!(unseen, charge.is_null(), "{header}");
    for r in live_frames.iter().flatten() {
        assert_eq!(r["charge_failures_per_s"].is_null(), unseen, "{r}");
        assert!(unseen || r["charge_failures_per_s"].is_number(), "{r}");
    }

    // The saved records replayed (no kernel) give exactly the same frames.
    let replay = memtrace_ok(["top", "--json", "--replay", saved.to_str().unwrap()]);
    assert_eq!(
        frames(&String::from_utf8(replay).unwrap()),
        live_frames,
        "replay rows == live rows"
    );

    // And `stream --replay --container` keeps only that container's records.
    let only = Command::new(memtrace_bin())
        .args(["stream", "--container", &DOCKER[..8], "--replay"])
        .arg(&saved)
        .output()
        .unwrap();
    assert!(only.status.success());
    let recs: Vec<Value> = String::from_utf8(only.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let intervals: Vec<&Value> = recs
        .iter()
        .filter(|r| r["type"] == "memcg_interval")
        .collect();
    assert!(!intervals.is_empty());
    assert!(
        intervals
            .iter()
            .all(|r| r["memcg"]["container"]["id"] == DOCKER),
        "filtered to one container"
    );
    drop(tree);
}

use std::path::Path;

/// `top --save FILE` writes the header once its programs are attached.
fn wait_attached(saved: &Path) {
    let end = Instant::now() + Duration::from_secs(30);
    while fs::read_to_string(saved)
        .map(|s| s.is_empty())
        .unwrap_or(true)
    {
        assert!(Instant::now() < end, "top did not attach within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `top --json` with an hour to the next frame, saving to `saved`, its
/// stdout to `stdout` and stderr piped; returns once it is attached.
fn idle_top_json(saved: &Path, stdout: Stdio) -> Child {
    let top = Command::new(memtrace_bin())
        .args(["top", "--json", "--interval", "1h", "--save"])
        .arg(saved)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_attached(saved);
    top
}

#[test]
fn batch_frames_are_plain_text_even_with_hostile_names() {
    let (_g, scratch) = as_root("top-batch");
    let root = TestMemcg::new("top-batch");
    let evil = root.dir.join("evil\x1b]0;pwned\x07\u{9b}2J name");
    fs::create_dir(&evil).unwrap();
    let _tree = Dirs(vec![evil.clone()]);
    let saved = scratch.join("saved.ndjson");
    let top = Command::new(memtrace_bin())
        .args([
            "top",
            "--batch",
            "--by",
            "memcg",
            "--interval",
            "1s",
            "--iterations",
            "3",
            "--save",
        ])
        .arg(&saved)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_attached(&saved);
    churn(&evil, &scratch.join("churn"));
    let out = top.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "no escape codes in batch output: {text:?}"
    );
    assert_eq!(
        text.matches("memtrace top  ").count(),
        3,
        "--iterations 3: {text}"
    );
    assert!(text.contains("NAME") && text.contains("plan "), "{text}");
    assert!(
        text.contains("evil\\x1b]0;pwned\\x07"),
        "the hostile name, escaped: {text}"
    );
}

fn tmux(args: &[&str]) -> std::process::Output {
    Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux (installed by cargo xtask setup)")
}

struct Session(String);

impl Drop for Session {
    fn drop(&mut self) {
        let _ = tmux(&["kill-session", "-t", &self.0]);
    }
}

fn capture(s: &Session) -> String {
    String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &s.0]).stdout).into_owned()
}

fn wait_for(s: &Session, what: &str) -> String {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let screen = capture(s);
        if screen.contains(what) {
            return screen;
        }
        assert!(
            Instant::now() < end,
            "waited 30 s for {what:?}; screen:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_gone(s: &Session, what: &str) {
    let end = Instant::now() + Duration::from_secs(30);
    while capture(s).contains(what) {
        assert!(
            Instant::now() < end,
            "{what:?} still on screen after 30 s:\n{}",
            capture(s)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn interactive_top_in_a_real_terminal() {
    let (_g, scratch) = as_root("tui");
    let s = Session(format!("memtrace-test-{}", std::process::id()));
    let done = scratch.join("exit-status");
    // The pane stays open after top exits, to show what it left behind.
    let cmd = format!(
        "{} top --interval 500ms; echo $? > {}; sleep 60",
        memtrace_bin(),
        done.display()
    );
    let st = tmux(&[
        "new-session",
        "-d",
        "-s",
        &s.0,
        "-x",
        "200",
        "-y",
        "40",
        &cmd,
    ]);
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let screen = wait_for(&s, "RECLAIM");
    assert!(
        screen.contains("NAME") && screen.contains("q quit"),
        "{screen}"
    );
    wait_for(&s, "plan ");
    tmux(&["send-keys", "-t", &s.0, "?"]);
    wait_for(&s, "99th percentile reclaim latency");
    tmux(&["send-keys", "-t", &s.0, "Escape"]);
    // A key within tmux's escape-time after Escape would arrive as Alt-key.
    wait_gone(&s, "99th percentile reclaim latency");

    // A memcg that reclaims for a few intervals: filter the table down to
    // it, open its detail view and see its history graphed.
    let memcg = TestMemcg::new("h");
    let name = memcg
        .dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let file = scratch.join("churn.data");
    for _ in 0..3 {
        churn(&memcg.dir, &file);
        std::thread::sleep(Duration::from_millis(600));
    }
    wait_for(&s, &name);
    tmux(&["send-keys", "-t", &s.0, "/"]);
    tmux(&["send-keys", "-t", &s.0, "-l", &name]);
    tmux(&["send-keys", "-t", &s.0, "Enter"]);
    wait_for(&s, &format!("filter: {name}"));
    tmux(&["send-keys", "-t", &s.0, "Enter"]);
    let detail = wait_for(&s, "history: the last");
    for part in [
        "reclaim ms/s: max",
        "limit hits/s",
        "usage",
        "shrinker calls/s",
        "zero share %",
    ] {
        assert!(
            detail.contains(part),
            "no {part:?} in the detail view:\n{detail}"
        );
    }
    // Its reclaim was graphed: bars under the reclaim label.
    let lines: Vec<&str> = detail.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("reclaim ms/s: max"))
        .unwrap();
    assert!(
        lines[at + 1..at + 3]
            .iter()
            .any(|l| l.chars().any(|c| "▁▂▃▄▅▆▇█".contains(c))),
        "no reclaim bars:\n{detail}"
    );
    println!("---- top detail view ----\n{detail}");
    tmux(&["send-keys", "-t", &s.0, "Escape"]);
    wait_gone(&s, "history: the last");
    tmux(&["send-keys", "-t", &s.0, "s"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux(&["send-keys", "-t", &s.0, "q"]);
    let end = Instant::now() + Duration::from_secs(15);
    while !done.exists() {
        assert!(
            Instant::now() < end,
            "top did not quit on q; screen:\n{}",
            capture(&s)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(fs::read_to_string(&done).unwrap().trim(), "0", "clean exit");
    // The terminal is back to the normal screen: no table left on it.
    let after = capture(&s);
    assert!(!after.contains("RECLAIM"), "alternate screen left: {after}");
}

/// `top --json` (or `--batch`) whose reader exited notices it although no
/// frame is due for an hour, and exits quietly (0, nothing on stderr) as it
/// does when a write meets the closed pipe (`| head`). It used to wait for
/// the next frame.
#[test]
fn idle_top_json_notices_its_reader_went_away() {
    let (_g, scratch) = as_root("top-epipe");
    let saved = scratch.join("saved.ndjson");
    let mut top = idle_top_json(&saved, Stdio::piped());
    // The reader exits: the pipe's only read end is closed.
    drop(top.stdout.take());
    let closed = Instant::now();
    let st = wait_timeout(&mut top, Duration::from_secs(10));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut top.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        closed.elapsed() < Duration::from_secs(5),
        "took {:?} to notice",
        closed.elapsed()
    );
    assert!(st.success(), "{st}: {err}");
    assert!(err.is_empty(), "quietly: {err}");
}

/// A hangup ends `top --json` as SIGTERM does: the records since the last
/// frame are shown and saved, exit 0 (it used to die with exit 129).
#[test]
fn sighup_ends_top_like_sigterm() {
    let (_g, scratch) = as_root("top-sighup");
    let saved = scratch.join("saved.ndjson");
    let mut top = idle_top_json(&saved, Stdio::null());
    // SAFETY: kill(2) on our own child, not yet reaped, with a valid signal.
    unsafe { libc::kill(top.id() as i32, libc::SIGHUP) };
    let st = wait_timeout(&mut top, Duration::from_secs(10));
    assert!(st.success(), "{st}");
    let records = read_records(&saved);
    assert_eq!(
        records.last().unwrap()["type"],
        "system",
        "the interval in progress is saved on SIGHUP"
    );
}
