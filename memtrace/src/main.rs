//! The `memtrace` binary: parse the command line, dispatch, map errors to
//! the documented exit codes (clap's usage errors, and `Cli::check`'s, exit 2).
use clap::Parser;
use memtrace::{cli::Cli, commands, output::escape};

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    if let Err(e) = cli.check() {
        e.exit();
    }
    match commands::dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("memtrace: error: {}", escape::text(&format!("{e:#}")));
            std::process::ExitCode::from(1)
        }
    }
}
