//! One `/dev/kmsg` read (record, continuation lines, anything) through the
//! record parser and the OOM grammar.
#![no_main]
#[path = "../../memtrace/tests/props/mod.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::kmsg_record(data));
