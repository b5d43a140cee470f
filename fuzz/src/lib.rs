//! The properties the fuzz targets check: the one copy in memtrace's tests
//! (`memtrace/tests/props/`), which the proptest tests check too.
#[path = "../../memtrace/tests/props/mod.rs"]
pub mod props;
