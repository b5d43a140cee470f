//! memtrace's build tasks: `cargo xtask <command>`.
//!
//! This file only parses the command line and dispatches; each command lives
//! in its own module.

mod apt;
mod bench;
mod build;
mod cmd;
mod debver;
mod ebpf;
mod fuzz;
mod image;
mod run;
mod setup;
mod soak;
mod test;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "memtrace build tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the toolchain (Debian rustc-web + BPF core, LLVM 22,
    /// bpf-linker); does nothing when everything is present.
    Setup {
        /// Also install what the qemu VM tests need (qemu, busybox-static).
        #[arg(long)]
        vm: bool,
    },
    /// Build the eBPF object, then the memtrace binary that embeds it;
    /// prints the binary's path.
    Build {
        /// Build memtrace with the dev profile (the eBPF object is always release).
        #[arg(long)]
        debug: bool,
    },
    /// The container image: the static binary in a FROM scratch image,
    /// built offline with a private Docker daemon and saved as a tarball
    /// (target/image/memtrace-image.tar); prints its path.
    Image,
    /// Build, then run memtrace with the given arguments.
    Run {
        /// Build memtrace with the dev profile.
        #[arg(long)]
        debug: bool,
        /// Arguments for memtrace (put them after `--`).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Everything CI checks: setup, eBPF build, fmt, clippy, tests, and
    /// the qemu VM tests.
    Test {
        /// Skip the qemu VM tests (they take about 5 minutes).
        #[arg(long)]
        no_vm: bool,
        /// Extra arguments for `cargo test` (put them after `--`).
        #[arg(trailing_var_arg = true)]
        cargo_test_args: Vec<String>,
    },
    /// Run memtrace in qemu guests booting Debian's 5.10, 6.1 and 6.12 kernels,
    /// in every attach mode (fentry, kprobe, tracepoint).
    VmTest {
        /// "5.10", "6.1", "6.12", a comma-separated list, or "all".
        #[arg(long, default_value = "all")]
        kernel: String,
        /// Wall-clock limit for one guest boot, in seconds.
        #[arg(long, default_value_t = 240)]
        timeout: u64,
        /// Boot the guests with busybox only (checks the harness, not memtrace).
        #[arg(long)]
        smoke: bool,
    },
    /// Measure memtrace's cost: workloads untraced vs memtrace vs bpftrace,
    /// the replay pipeline, start-up, and qemu guests (see BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// Run the cargo-fuzz targets of fuzz/ (nightly; installs cargo-fuzz
    /// when missing) for a time each; a crash fails with its input saved.
    Fuzz {
        /// How long each target runs.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        time: std::time::Duration,
        /// One target (default: all of them).
        target: Option<String>,
    },
    /// The long-running commands under storm, OOM crashloop and memcg
    /// churn, sampled for RSS/fd/CPU/map-fill drift and losses (root).
    Soak(soak::SoakArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup { vm } => {
            setup::run().and_then(|_| if vm { setup::setup_vm() } else { Ok(()) })
        }
        Command::Build { debug } => build::build(debug).map(|built| {
            println!("{}", built.binary.display());
        }),
        Command::Run { debug, args } => run::run(debug, &args),
        Command::Image => image::image(),
        Command::Test {
            no_vm,
            cargo_test_args,
        } => test::test(&cargo_test_args, !no_vm),
        Command::VmTest {
            kernel,
            timeout,
            smoke,
        } => test::vm_test(
            &vm::VmTestArgs {
                kernel,
                timeout_secs: timeout,
            },
            smoke,
        ),
        Command::Bench(args) => bench::bench(&args),
        Command::Fuzz { time, target } => fuzz::fuzz(time, target.as_deref()),
        Command::Soak(args) => soak::soak(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
