//! The agent's own memory, for the start-up breakdown logged at debug
//! level (`RUST_LOG=memtrace=debug`): which step of loading sets the
//! process's peak RSS (BENCHMARKS.md quotes it).

/// Logs this process's resident set now and at its peak (VmRSS, VmHWM)
/// after `step`; nothing is read unless debug logging is on.
pub fn note(step: &str) {
    if !log::log_enabled!(log::Level::Debug) {
        return;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    log::debug!(
        "memory after {step}: rss {} KiB, peak {} KiB",
        kib("VmRSS:"),
        kib("VmHWM:")
    );
}

/// Gives back the pages of memtrace's own executable that start-up touched
/// (the BTF reader, aya's ELF parser and loader, the planner: ~3-4 MiB of
/// code run once): `MADV_PAGEOUT` (5.4+) drops them from the resident set
/// and, mapped by no one else, from the page cache the agent's memcg is
/// charged for. Code still in use faults back in at its next run. Best
/// effort: an older kernel refuses the advice and nothing changes.
pub fn page_out_startup_code() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let exe = exe.to_string_lossy();
    for line in maps.lines() {
        // "start-end perms offset dev inode path"
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        if f.nth(3) != Some(&*exe) || perms.contains('w') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // SAFETY: advice only, on a read-only mapping of this process's
        // executable: the contents stay valid and are read back on use.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT) };
    }
}
