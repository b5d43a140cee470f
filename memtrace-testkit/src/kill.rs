//! Emptying and removing a cgroup, for what the tests and the bench
//! create: `TestMemcg` and xtask's bench memcgs.

use std::{fs, path::Path, time::Duration};

/// SIGKILLs every process in the cgroup at `dir`, again while new ones
/// appear (a dying shell's children), for up to about 2 s.
pub fn kill_procs(dir: &Path) {
    for _ in 0..100 {
        let pids = memtrace::cgroup::tasks::procs(dir);
        if pids.is_empty() {
            return;
        }
        for p in pids {
            // SAFETY: kill(2) takes plain integers; the pids are read from a
            // cgroup this process created, so they are its own workloads.
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills what runs in the (empty of sub-cgroups) cgroup at `dir` and
/// removes it, retrying while the kernel still holds it for up to about
/// 3 s; false if it is still there.
pub fn remove_cgroup(dir: &Path) -> bool {
    for _ in 0..150 {
        kill_procs(dir);
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
