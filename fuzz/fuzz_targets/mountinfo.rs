//! Any text as /proc/self/mountinfo.
#![no_main]
#[path = "../../memtrace/tests/props/mod.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        props::mountinfo(text);
    }
});
