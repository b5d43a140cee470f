//! The tasks in a memcg subtree, with their rss, for OOM post-mortems.
use std::{fs, path::Path};

use crate::output::records::TaskRss;

/// Tasks listed at most (the biggest by anonymous rss).
const MAX_TASKS: usize = 20;
/// Memcg directories walked at most when collecting tasks.
const MAX_DIRS: usize = 256;

fn kb_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The pids in the cgroup at `dir` (its `cgroup.procs`; none if it cannot
/// be read: the cgroup is gone).
pub fn procs(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Tasks in `dir` and its sub-cgroups, biggest anonymous rss first.
pub fn tasks(dir: &Path) -> Vec<TaskRss> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        seen += 1;
        if seen > MAX_DIRS {
            break;
        }
        pids.extend(procs(&d));
        if let Ok(entries) = fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    let mut out: Vec<TaskRss> = pids
        .into_iter()
        .filter_map(|pid| {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let comm = status
                .lines()
                .find_map(|l| l.strip_prefix("Name:"))
                .map(|n| n.trim().to_string())?;
            Some(TaskRss {
                pid,
                comm,
                rss_anon_kb: kb_field(&status, "RssAnon:"),
                rss_file_kb: kb_field(&status, "RssFile:"),
                rss_shmem_kb: kb_field(&status, "RssShmem:"),
            })
        })
        .collect();
    out.sort_by(|a, b| b.rss_anon_kb.cmp(&a.rss_anon_kb).then(a.pid.cmp(&b.pid)));
    out.truncate(MAX_TASKS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields() {
        let s = "Name:\ttail\nRssAnon:\t   65280 kB\nRssFile:\t    1552 kB\n";
        assert_eq!(kb_field(s, "RssAnon:"), Some(65280));
        assert_eq!(kb_field(s, "RssShmem:"), None);
    }
}
