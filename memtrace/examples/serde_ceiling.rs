//! The ceilings `memtrace stream --replay` is measured against by `cargo
//! xtask bench`: serde_json's own parse of every line of a record file and
//! serialization back, on one thread, with no channel, no checks and no
//! output, two ways:
//!
//! - `enum`: into memtrace's `Record` (serde's internally tagged enum,
//!   which buffers each object into a tree of values to find its tag);
//! - `direct`: `memcg_interval` and `system` lines (the storm's records)
//!   straight into their structs, the others through `Record`.
//!
//! Prints one JSON object: `{"records": N, "bytes": B, "enum": {"secs": S,
//! "records_per_s": R}, "direct": {...}}`.
//!
//! `cargo build --release -p memtrace --example serde_ceiling`, then
//! `taskset -c 1 target/release/examples/serde_ceiling FILE`.
use std::{
    fs::File,
    io::{BufRead, BufReader},
    time::Instant,
};

use anyhow::{Context, Result};
use memtrace::output::records::{MemcgInterval, Record, System};
use serde_json::{Value, json};

/// Parses and serializes every line of `path`: (records, bytes, seconds).
fn run(path: &std::ffi::OsStr, direct: bool) -> Result<(u64, u64, f64)> {
    let mut reader = BufReader::with_capacity(64 << 10, File::open(path)?);
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
        out.clear();
        let bad = || format!("line {}: not a record", records + 1);
        const MI: &str = r#"{"type":"memcg_interval","#;
        const SY: &str = r#"{"type":"system","#;
        if direct && text.starts_with(MI) {
            let r: MemcgInterval =
                serde_json::from_str(&format!("{{{}", &text[MI.len()..])).with_context(bad)?;
            serde_json::to_writer(&mut out, &Record::MemcgInterval(Box::new(r)))?;
        } else if direct && text.starts_with(SY) {
            let r: System =
                serde_json::from_str(&format!("{{{}", &text[SY.len()..])).with_context(bad)?;
            serde_json::to_writer(&mut out, &Record::System(r))?;
        } else {
            let r: Record = serde_json::from_str(text).with_context(bad)?;
            serde_json::to_writer(&mut out, &r)?;
        }
        bytes += out.len() as u64 + 1;
        records += 1;
    }
    Ok((records, bytes, started.elapsed().as_secs_f64()))
}

fn main() -> Result<()> {
    let path = std::env::args_os()
        .nth(1)
        .context("usage: serde_ceiling FILE")?;
    let mut result = json!({});
    for (name, direct) in [("enum", false), ("direct", true)] {
        let (records, bytes, secs) = run(&path, direct)?;
        result["records"] = json!(records);
        result["bytes"] = json!(bytes);
        result[name] = json!({"secs": secs, "records_per_s": records as f64 / secs});
    }
    let v: Value = result;
    println!("{v}");
    Ok(())
}
