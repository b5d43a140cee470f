//! Turning kernel counters and events into records.
pub mod counters;
pub mod intervals;
pub mod chain;
pub mod oom;
