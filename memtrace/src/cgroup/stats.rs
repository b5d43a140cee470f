//! The few cgroupfs counters memtrace reports.

use std::path::Path;

use super::mounts::MemcgFs;

/// How many times the memcg at `dir` hit its memory limit: v2 the `max`
/// line of `memory.events`; v1 `memory.failcnt` plus `memory.memsw.failcnt`
/// (a v1 charge tries memory+swap first, and a failure there is counted
/// only in the memsw counter). None when unreadable (the memcg was deleted,
/// or it is the v2 root, which has no such file).
pub fn limit_hits(fs: &MemcgFs, dir: &Path) -> Option<u64> {
    let mut buf = Vec::with_capacity(256);
    let mut text = |name: &str| -> Option<String> {
        super::state::read_small(&dir.join(name), &mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    };
    if fs.v2 {
        events_max(&text("memory.events")?)
    } else {
        let mut read = |name: &str| -> Option<u64> { text(name)?.trim().parse().ok() };
        let memory = read("memory.failcnt")?;
        Some(memory + read("memory.memsw.failcnt").unwrap_or(0))
    }
}

/// The `max` counter of a v2 `memory.events` file.
fn events_max(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut kv = l.split_ascii_whitespace();
        match (kv.next(), kv.next()) {
            (Some("max"), Some(v)) => v.parse().ok(),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::TestDirs;
    use super::*;
    use std::process::Command;

    #[test]
    fn parse_memory_events() {
        let text = "low 0\nhigh 12\nmax 345\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(events_max(text), Some(345));
        assert_eq!(events_max("low 0\nhigh 1\n"), None);
        assert_eq!(events_max("max_x 3\nmax 7"), Some(7));
        assert_eq!(events_max("max junk\n"), None);
        assert_eq!(events_max(""), None);
    }

    #[test]
    #[ignore = "needs root: creates memory cgroups (cargo xtask test runs it)"]
    fn limit_hits_real_memcg() {
        let (fs, mut dirs, top, _) = TestDirs::root_memcg("cgroup-dev-stats");
        let m = dirs.mkcg(&fs, top.join("limited"));
        assert_eq!(limit_hits(&fs, &m), Some(0));

        // Run a process that touches 32 MiB of anonymous memory under an
        // 8 MiB limit: it hits the limit (and is OOM-killed without swap).
        let limit = if fs.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        std::fs::write(m.join(limit), "8388608").unwrap();
        let procs = m.join("cgroup.procs");
        let status = Command::new("sh")
            .arg("-c")
            .arg(
                r#"echo $$ > "$1" && exec dd if=/dev/zero of=/dev/null bs=32M count=1 2>/dev/null"#,
            )
            .arg("sh")
            .arg(&procs)
            .status()
            .unwrap();
        let hits = limit_hits(&fs, &m).unwrap();
        assert!(hits > 0, "no limit hits recorded (child {status})");

        // Deleted: unreadable.
        std::fs::remove_dir(&m).unwrap();
        assert_eq!(limit_hits(&fs, &m), None);

        // The root: v1 has memory.failcnt, v2 has no memory.events there.
        let root = limit_hits(&fs, &fs.root);
        assert_eq!(root.is_some(), !fs.v2, "{root:?}");
    }
}
