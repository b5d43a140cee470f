//! Any cgroup path through container attribution.
#![no_main]
use memtrace_fuzz::props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(path) = std::str::from_utf8(data) {
        props::cgroup_attribute(path);
    }
});
