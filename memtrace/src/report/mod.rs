//! `memtrace report`: explains a capture, a stream file or an OOM log.
use std::path::Path;

use anyhow::Result;

pub fn run(path: &Path, json: bool) -> Result<()> {
    let _ = (path, json);
    anyhow::bail!("memtrace report is being written")
}
