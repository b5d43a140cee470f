//! `cargo xtask run`: build, then replace this process with memtrace.

use std::os::unix::process::CommandExt as _;

use anyhow::{Result, anyhow};

use crate::{build, cmd};

/// Runs memtrace as the current user (it checks for root itself); its exit
/// status becomes ours because it takes over this process.
pub fn run(debug: bool, args: &[String]) -> Result<()> {
    let built = build::build(debug)?;
    let mut memtrace = std::process::Command::new(&built.binary);
    cmd::clean_env(&mut memtrace);
    memtrace.args(args);
    eprintln!("+ {}", cmd::display(&memtrace));
    let err = memtrace.exec();
    Err(anyhow!("cannot run {}: {err}", built.binary.display()))
}
