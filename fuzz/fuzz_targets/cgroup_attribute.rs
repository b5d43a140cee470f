//! Any cgroup path through container attribution.
#![no_main]
#[path = "../../memtrace/tests/props/mod.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(path) = std::str::from_utf8(data) {
        props::cgroup_attribute(path);
    }
});
