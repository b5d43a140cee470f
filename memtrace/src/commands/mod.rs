//! One module per subcommand.
mod doctor;
mod stream;

use anyhow::Result;

use crate::cli::{Cli, Command};

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
        Command::Report(args) => crate::report::run(&args.file, args.json, args.html.as_deref()),
    }
}
