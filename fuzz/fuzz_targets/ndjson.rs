//! Any bytes as a record file (`--replay`, `report`, `oom.ndjson`) through
//! the NDJSON reader and the plausibility checks.
#![no_main]
use memtrace_fuzz::props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::ndjson(data));
