//! Kernel log (`/dev/kmsg`) reader and OOM-killer report parser.
//!
//! The OOM report in the kernel log is memtrace's source of truth for OOM
//! kills on every kernel: it names the memcg whose limit fired and the
//! victim's rss, and reading the backlog on start-up reveals kills that
//! happened before memtrace started.
//!
//! One file per concern: `record` reads the kmsg record format, `grammar`
//! recognises the lines of an OOM report, `assembler` joins a report's lines
//! into one [`OomReport`] per kill and `reader` reads `/dev/kmsg` itself.

mod assembler;
mod grammar;
mod reader;
mod record;

#[cfg(test)]
mod fixtures;

pub use assembler::{OomAssembler, OomReport};
pub use grammar::{OomLine, parse_oom_line};
pub use reader::KmsgReader;
pub use record::{KmsgRecord, parse_record, unescape};
