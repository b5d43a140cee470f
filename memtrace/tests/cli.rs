//! Command-line errors that need no kernel access.
mod common;

use std::process::Command;

use common::MEMTRACE;

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(MEMTRACE).args(args).output().unwrap();
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
    let dir = common::scratch("symlink-cli");
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
    let out = Command::new(MEMTRACE)
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
