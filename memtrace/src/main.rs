//! memtrace: per-memcg reclaim cost, shrinker work and OOM kills from eBPF.
mod aggregate;
mod cgroup;
mod cli;
mod clock;
mod commands;
mod filter;
mod host;
mod kernel;
mod output;
mod pipeline;
mod record;
mod report;
mod source;
mod top;

use clap::Parser;

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = cli::Cli::parse();
    match commands::dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "memtrace: error: {}",
                output::escape::text(&format!("{e:#}"))
            );
            std::process::ExitCode::from(1)
        }
    }
}
