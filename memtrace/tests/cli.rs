//! Command-line errors that need no kernel access.
use std::process::Command;

use memtrace_testkit::memtrace_bin;

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(memtrace_bin()).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let (code, err) = run(&["stream", "--no-such-flag"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--no-such-flag"), "{err}");
}

#[test]
fn bad_durations_are_usage_errors() {
    let (code, err) = run(&["stream", "--interval", "0s"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("greater than zero"), "{err}");
    let (code, err) = run(&["stream", "--duration", "soon"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("examples: 500ms"), "{err}");
}

/// The programs draw "one call in N" with a mask: N must be a power of two.
#[test]
fn bad_shrinker_time_sample_is_a_usage_error_naming_the_rule() {
    for cmd in ["stream", "top", "record"] {
        for bad in ["0", "3", "12", "2048", "-1", "some"] {
            let arg = format!("--shrinker-time-sample={bad}");
            let (code, err) = run(&[cmd, &arg]);
            assert_eq!(code, Some(2), "{cmd} {arg}: {err}");
            assert!(err.contains("--shrinker-time-sample"), "{cmd} {arg}: {err}");
            if bad.parse::<u32>().is_ok() {
                assert!(err.contains("power of two"), "{cmd} {arg}: {err}");
            }
        }
    }
}

/// The kernel's own rule for a ring buffer: a power-of-two number of
/// whole pages. Every subcommand that loads programs checks it up front.
#[test]
fn bad_ringbuf_size_is_a_usage_error_naming_the_rule() {
    let page_kib = std::fs::read_to_string("/proc/self/smaps")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("KernelPageSize:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u32>().ok())
        })
        .unwrap_or(4);
    let below_a_page = (page_kib / 2).to_string();
    for cmd in ["stream", "top", "record", "doctor"] {
        for bad in ["3", "100", "0", &below_a_page, "4194304", "-1", "lots"] {
            let arg = format!("--ringbuf-kib={bad}");
            let (code, err) = run(&[cmd, &arg]);
            assert_eq!(code, Some(2), "{cmd} --ringbuf-kib {bad}: {err}");
            assert!(err.contains("--ringbuf-kib"), "{cmd} {bad}: {err}");
            if bad.parse::<u32>().is_ok() {
                assert!(
                    err.contains("power of two") && err.contains("page size"),
                    "{cmd} {bad}: {err}"
                );
            }
        }
    }
}

#[test]
fn bad_map_entries_are_usage_errors() {
    for flag in [
        "--memcg-entries",
        "--shrinker-entries",
        "--inflight-entries",
    ] {
        for bad in ["0", "15", "-1", "4294967296", "many"] {
            let (code, err) = run(&["stream", &format!("{flag}={bad}")]);
            assert_eq!(code, Some(2), "{flag} {bad}: {err}");
            assert!(err.contains(flag), "{flag} {bad}: {err}");
        }
    }
}

#[test]
fn output_through_a_symlink_is_refused() {
    let dir = memtrace_testkit::scratch("symlink-cli");
    let victim = dir.join("victim");
    std::fs::write(&victim, "keep\n").unwrap();
    let link = dir.join("out.ndjson");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let (code, err) = run(&["stream", "--output", link.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("symlink"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep\n");
}

#[test]
fn help_has_examples() {
    let out = Command::new(memtrace_bin())
        .args(["stream", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("Examples:") && s.contains("--attach"), "{s}");
}

#[test]
fn bad_cgroup_glob_is_a_usage_error() {
    for cmd in ["stream", "top"] {
        let (code, err) = run(&[cmd, "--cgroup", "/kubepods.slice/pod-[0-9"]);
        assert_eq!(code, Some(2), "{cmd}: {err}");
        assert!(
            err.contains("--cgroup") && err.contains("unclosed character class"),
            "{cmd}: {err}"
        );
    }
    let (code, err) = run(&["stream", "--cgroup", "/a[/]b"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("includes `/`"), "{err}");
}

/// `/dev/zero` is one endless line: every reader of record files stops at
/// the line cap, exits 1 naming the line, and does so in bounded time.
#[test]
fn an_endless_line_ends_report_and_both_replays() {
    for args in [
        &["report", "/dev/zero"][..],
        &["stream", "--replay", "/dev/zero"],
        &["top", "--replay", "/dev/zero", "--batch"],
    ] {
        let (code, err) = run(args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(
            err.contains("line 1 is longer than 16 MiB"),
            "{args:?}: {err}"
        );
    }
}

/// A new directory (removed first if left over) named after `tag` and
/// this process, with a FIFO `records` in it.
fn fifo_in_new_dir(tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("memtrace-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("records");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    (dir, fifo)
}

/// A FIFO nobody writes to is an error after a bounded wait, not a hang.
#[test]
fn a_fifo_without_a_writer_is_an_error_not_a_hang() {
    let (dir, fifo) = fifo_in_new_dir("fifo");
    let (code, err) = run(&["report", fifo.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is a FIFO and nothing wrote to it"), "{err}");
}

/// A replay answers SIGTERM while its file has nothing more to give (a
/// FIFO whose writer sent a header and stalled).
#[test]
fn a_stalled_replay_answers_sigterm() {
    use std::io::Write;
    let (dir, fifo) = fifo_in_new_dir("stall");
    let child = Command::new(memtrace_bin())
        .args(["stream", "--replay", fifo.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The writer: a header, then silence (the FIFO stays open).
    let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    writeln!(
        w,
        "{{\"type\":\"header\",\"ts\":\"\",\"ts_ns\":0,\"format_version\":1,\
         \"memtrace_version\":\"\",\"hostname\":\"h\",\"kernel_release\":\"k\",\
         \"cgroup_mode\":\"v2\",\"attach_mode\":\"auto\",\"interval_ms\":1000,\
         \"plan\":[],\"unavailable\":[],\"kmsg\":true}}"
    )
    .unwrap();
    w.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: kill(2) with a pid of our own child and a valid signal.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    drop(w);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("{\"type\":\"header\""), "{text}");
}

/// Map sizes whose kernel memory exceeds the budget are refused before
/// anything is loaded (they used to allocate until the host's OOM killer
/// fired), naming the memory they would take and the budget.
#[test]
fn map_sizes_over_the_kernel_memory_budget_are_usage_errors() {
    for cmd in ["stream", "top", "record", "doctor"] {
        let (code, err) = run(&[cmd, "--memcg-entries", "100000000"]);
        assert_eq!(code, Some(2), "{cmd}: {err}");
        assert!(
            err.contains("kernel maps would take")
                && err.contains("MEMCG_STATS")
                && err.contains("MiB")
                && err.contains("budget")
                && err.contains("of RAM")
                && err.contains("--memcg-entries"),
            "{cmd}: {err}"
        );
    }
    // A replay loads nothing, so no budget applies.
    let (code, err) = run(&[
        "stream",
        "--memcg-entries",
        "100000000",
        "--replay",
        "/nonexistent/memtrace-replay",
    ]);
    assert_eq!(code, Some(1), "{err}");
}
