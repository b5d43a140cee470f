//! Any string through the text and JSON escaping, any bytes as a comm.
#![no_main]
use memtrace_fuzz::props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    props::escape(&String::from_utf8_lossy(data), data);
});
