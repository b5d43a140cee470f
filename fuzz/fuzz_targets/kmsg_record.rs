//! One `/dev/kmsg` read (record, continuation lines, anything) through the
//! record parser and the OOM grammar.
#![no_main]
use memtrace_fuzz::props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::kmsg_record(data));
