//! Any bytes as a record file (`--replay`, `report`, `oom.ndjson`) through
//! the NDJSON reader and the plausibility checks.
#![no_main]
#[path = "../../memtrace/tests/props/mod.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::ndjson(data));
