//! One module per subcommand.
mod doctor;
mod stream;

use anyhow::Result;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::cli::{Cli, Command};

/// SIGINT and SIGTERM: either stops `stream`, `top` and `record` cleanly.
/// Registered first thing, so a signal during start-up still ends in a
/// clean exit.
pub struct StopSignals {
    int: Signal,
    term: Signal,
}

impl StopSignals {
    pub fn new() -> Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves at the next SIGINT or SIGTERM. Cancel-safe, like
    /// `Signal::recv`: usable in `select!` loops.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

pub fn dispatch(cli: Cli) -> Result<()> {
    // One thread: the programs do the heavy lifting, and a single-threaded
    // process can still set up a private mount namespace for tracefs.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Stream(args) => rt.block_on(stream::run(args)),
        Command::Top(args) => rt.block_on(crate::top::run(args)),
        Command::Record(args) => rt.block_on(crate::record::run(args)),
        Command::Doctor(args) => doctor::run(args),
        Command::Report(args) => crate::report::run(&args.file, args.json),
    }
}
