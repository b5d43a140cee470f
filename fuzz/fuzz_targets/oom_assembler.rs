//! A kernel log (one message per line, as `/dev/kmsg` messages are) through
//! the OOM report assembler.
#![no_main]
use memtrace_fuzz::props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let messages: Vec<&str> = text.split('\n').collect();
        props::oom_assembler(&messages);
    }
});
