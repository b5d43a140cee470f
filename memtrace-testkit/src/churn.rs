//! A workload that makes a limited memcg reclaim: its own page cache.

use std::{fs, path::Path, process::Command, time::Duration};

use crate::{TestMemcg, wait_timeout};

/// Writes `mib` MiB of zeros to `file` from inside `memcg` (through the page
/// cache, so a memcg with a smaller limit reclaims over and over), waits up
/// to `timeout` for the writer and removes the file. The writer may be
/// OOM-killed on some kernels; that is tolerated.
pub fn write_through_cache(memcg: &TestMemcg, file: &Path, mib: u64, timeout: Duration) {
    let mut dd = memcg.spawn(
        Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", file.display()))
            .args(["bs=1M".to_string(), format!("count={mib}")]),
    );
    wait_timeout(&mut dd, timeout);
    let _ = fs::remove_file(file);
}

/// A JSON array of field names (a header's `unavailable`, a report's
/// `not_visible`): the fields the plan cannot see.
pub fn field_names(v: &serde_json::Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect()
}
