//! `doctor --attach MODE`: the plan of that mode, and the error the other
//! commands give when the kernel cannot do it. Asserts against what the
//! running kernel can do (doctor's own family survey), never a fixed host.
use std::process::Command;

use memtrace_testkit::{memtrace_bin, plan::first_ok_family, root::as_root};
use serde_json::Value;

const FUNCTION_HOOKS: &[&str] = &[
    "try_charge_memcg",
    "shrink_slab",
    "do_shrink_slab",
    "oom_kill_process",
];

fn doctor(mode: &str) -> (Option<i32>, Value, String) {
    let out = Command::new(memtrace_bin())
        .args(["doctor", "--json", "--attach", mode])
        .output()
        .unwrap();
    let d = serde_json::from_slice(&out.stdout).expect("doctor --json prints one JSON object");
    (
        out.status.code(),
        d,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn doctor_shows_the_plan_of_the_requested_attach_mode() {
    let (_g, dir) = as_root("doctor-attach");
    let (code, auto, err) = doctor("auto");
    assert_eq!(code, Some(0), "{err}");
    let available = |f: &str| auto["families"][f]["available"] == true;
    for (mode, families) in [
        ("auto", &["fentry", "kprobe", "tp_btf", "tracepoint"][..]),
        ("fentry", &["fentry"]),
        ("kprobe", &["kprobe"]),
        ("tracepoint", &["tp_btf", "tracepoint"]),
    ] {
        let (code, d, err) = doctor(mode);
        assert_eq!(d["attach"], mode);
        let mut function_hook_attached = false;
        for p in d["plan"].as_array().unwrap() {
            let hook = p["hook"].as_str().unwrap();
            let allowed: &[&str] = if FUNCTION_HOOKS.contains(&hook) {
                families
            } else {
                &["tp_btf", "tracepoint"]
            };
            let tried: Vec<&str> = p["families"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["family"].as_str().unwrap())
                .collect();
            assert!(tried.iter().all(|f| allowed.contains(f)), "{mode}: {p}");
            // The chosen family is the first of the mode's that worked.
            assert_eq!(p["family"], first_ok_family(p), "{mode}: {p}");
            if FUNCTION_HOOKS.contains(&hook) && !p["family"].is_null() {
                function_hook_attached = true;
            }
        }
        let forced = mode == "fentry" || mode == "kprobe";
        if forced && !function_hook_attached {
            // The kernel cannot do this mode: doctor says why with the
            // words `stream --attach MODE` uses, and fails the same way.
            assert!(!available(mode), "{mode}: {}", auto["families"]);
            let why = d["error"].as_str().unwrap_or_else(|| panic!("{mode}: {d}"));
            assert!(why.starts_with(&format!("--attach {mode}: ")), "{why}");
            assert_eq!(code, Some(1), "{mode}: {err}");
            assert!(err.contains(why), "{err}");
            let out = Command::new(memtrace_bin())
                .args(["stream", "--attach", mode, "--duration", "1s", "--output"])
                .arg(dir.join(format!("{mode}.ndjson")))
                .output()
                .unwrap();
            let stream_err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{stream_err}");
            assert!(
                stream_err.contains(why),
                "doctor: {why}\nstream: {stream_err}"
            );
        } else {
            assert_eq!(code, Some(0), "{mode}: {err}");
            assert!(d["error"].is_null(), "{mode}: {d}");
            if forced {
                assert!(available(mode), "{mode}: {}", auto["families"]);
            }
        }
    }
}
