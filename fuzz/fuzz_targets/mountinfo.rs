//! Any text as /proc/self/mountinfo.
#![no_main]
use memtrace_fuzz::props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        props::mountinfo(text);
    }
});
