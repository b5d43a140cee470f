//! Boots one guest under qemu and collects its serial output.
//!
//! ttyS0 (the console) is read live on qemu's stdout, timestamped and
//! logged; ttyS1 is the guest's data channel, written by qemu to a file
//! and read once the guest is gone. A wall-clock timeout kills qemu.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::host;
use super::protocol::DONE_MARKER;

const QBOOT: &str = "/usr/share/qemu/qboot.rom";

pub struct GuestConfig<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub disk: Option<&'a Path>,
    /// Appended to the fixed console/panic arguments.
    pub cmdline: String,
    pub mem_mib: u32,
    pub smp: u32,
    pub timeout: Duration,
    /// Timestamped console transcript.
    pub console_log: PathBuf,
    /// Raw ttyS1 capture.
    pub data_log: PathBuf,
    /// Echo the console to stderr as it arrives.
    pub verbose: bool,
}

pub struct GuestRun {
    /// Console lines with seconds since qemu started.
    pub console: Vec<(f64, String)>,
    /// The data channel's text.
    pub data: String,
    pub timed_out: bool,
    pub exit_code: Option<i32>,
    pub wall: Duration,
    pub accel: &'static str,
}

impl GuestRun {
    /// Seconds since qemu start of the first console line containing `needle`.
    pub fn time_of(&self, needle: &str) -> Option<f64> {
        self.console
            .iter()
            .find(|(_, l)| l.contains(needle))
            .map(|(t, _)| *t)
    }
}

pub fn boot(cfg: &GuestConfig) -> Result<GuestRun> {
    let accel = host::accel();
    let cpu = if accel == "kvm" { "host" } else { "qemu64" };
    let _ = fs::remove_file(&cfg.data_log);
    let mut cmd = Command::new(host::QEMU);
    cmd.args(["-accel", accel, "-cpu", cpu])
        .args(["-m", &cfg.mem_mib.to_string(), "-smp", &cfg.smp.to_string()])
        .args([
            "-nographic",
            "-no-reboot",
            "-nodefaults",
            "-display",
            "none",
        ])
        .args(["-serial", "stdio"])
        .arg("-serial")
        .arg(format!("file:{}", cfg.data_log.display()))
        .arg("-kernel")
        .arg(cfg.kernel)
        .arg("-initrd")
        .arg(cfg.initrd);
    // qboot reaches the kernel ~1 s sooner than SeaBIOS under TCG.
    if Path::new(QBOOT).exists() {
        cmd.args(["-bios", QBOOT]);
    }
    if let Some(disk) = cfg.disk {
        // Read-only: the workloads only read it, and guests booted at once
        // share it (qemu refuses a second writer of one image).
        cmd.arg("-drive").arg(format!(
            "file={},format=raw,if=virtio,cache=unsafe,readonly=on",
            disk.display()
        ));
    }
    cmd.arg("-append").arg(format!(
        "console=ttyS0 panic=-1 loglevel=4 mitigations=off {}",
        cfg.cmdline
    ));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let mut log = fs::File::create(&cfg.console_log)
        .with_context(|| format!("creating {}", cfg.console_log.display()))?;
    writeln!(log, "CMD {cmd:?}")?;

    let start = Instant::now();
    let mut child = cmd.spawn().context("starting qemu")?;
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    let readers = [
        std::thread::spawn(move || read_lines(stdout, tx)),
        std::thread::spawn(move || read_lines(stderr, tx2)),
    ];

    let mut console = Vec::new();
    let mut timed_out = false;
    let mut done_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        // After the marker the guest powers off at once; give it a moment.
        let deadline = match done_at {
            Some(t) => t + Duration::from_secs(10),
            None => start + cfg.timeout,
        };
        if now >= deadline {
            timed_out = done_at.is_none();
            let _ = child.kill();
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(line) => {
                let t = start.elapsed().as_secs_f64();
                writeln!(log, "[{t:8.3}] {line}")?;
                if cfg.verbose {
                    eprintln!("[{t:8.3}] {line}");
                }
                if done_at.is_none() && line.contains(DONE_MARKER) {
                    done_at = Some(Instant::now());
                }
                console.push((t, line));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break, // qemu exited
        }
    }
    let status = child.wait()?;
    for r in readers {
        let _ = r.join();
    }
    let wall = start.elapsed();
    if timed_out {
        writeln!(
            log,
            "[{:8.3}] HOST: timeout after {:?}, qemu killed",
            wall.as_secs_f64(),
            cfg.timeout
        )?;
    }
    let data = fs::read(&cfg.data_log)
        .map(|d| String::from_utf8_lossy(&d).replace('\r', ""))
        .unwrap_or_default();
    Ok(GuestRun {
        console,
        data,
        timed_out,
        exit_code: status.code(),
        wall,
        accel,
    })
}

fn read_lines(r: impl std::io::Read, tx: mpsc::Sender<String>) {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                if tx.send(line).is_err() {
                    return;
                }
            }
        }
    }
}
