//! The ceiling `memtrace stream --replay` is measured against by `cargo
//! xtask bench`: serde_json's own parse of every line of a record file
//! into memtrace's `Record` and its serialization back, on one thread,
//! with no channel, no checks and no output. Prints one JSON object:
//! `{"records": N, "bytes": B, "secs": S, "records_per_s": R}`.
//!
//! `cargo build --release -p memtrace --example serde_ceiling`, then
//! `taskset -c 1 target/release/examples/serde_ceiling FILE`.
use std::{
    fs::File,
    io::{BufRead, BufReader},
    time::Instant,
};

use anyhow::{Context, Result};
use memtrace::output::records::Record;

fn main() -> Result<()> {
    let path = std::env::args_os()
        .nth(1)
        .context("usage: serde_ceiling FILE")?;
    let mut reader = BufReader::with_capacity(64 << 10, File::open(&path)?);
    let mut line = String::new();
    let mut out = Vec::with_capacity(64 << 10);
    let (mut records, mut bytes) = (0u64, 0u64);
    let started = Instant::now();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let text = line.trim_end();
        if text.is_empty() {
            continue;
        }
        let record: Record = serde_json::from_str(text)
            .with_context(|| format!("line {}: not a record", records + 1))?;
        out.clear();
        serde_json::to_writer(&mut out, &record)?;
        bytes += out.len() as u64 + 1;
        records += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "records": records,
            "bytes": bytes,
            "secs": secs,
            "records_per_s": records as f64 / secs,
        })
    );
    Ok(())
}
