//! memtrace: per-memcg reclaim cost, shrinker work and OOM kills from eBPF.
//!
//! The library holds every stage of the pipeline (docs/architecture.md);
//! `main.rs` only parses the command line and dispatches, and the
//! integration tests and xtask reuse the same code (one mountinfo parser,
//! one cgroup-path normaliser, one NDJSON reader).
pub mod aggregate;
pub mod cgroup;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod filter;
pub mod host;
pub mod kernel;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod record;
pub mod report;
pub mod signals;
pub mod source;
#[cfg(test)]
mod testutil;
pub mod top;
