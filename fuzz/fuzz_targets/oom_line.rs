//! One kernel log message through the OOM report grammar.
#![no_main]
#[path = "../../memtrace/tests/props/mod.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(message) = std::str::from_utf8(data) {
        props::oom_line(message);
    }
});
