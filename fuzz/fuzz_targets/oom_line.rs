//! One kernel log message through the OOM report grammar.
#![no_main]
use memtrace_fuzz::props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(message) = std::str::from_utf8(data) {
        props::oom_line(message);
    }
});
