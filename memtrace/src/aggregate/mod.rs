//! Turning kernel counters and events into records.
pub mod chain;
pub mod counters;
pub mod intervals;
pub mod oom;
