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
