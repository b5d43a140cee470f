//! The few system calls the bench needs (xtask has no libc dependency; std
//! links libc anyway), the kernel-test lock, child processes with their
//! resource usage, /proc readers and small statistics.

use std::{
    fs,
    os::fd::AsRawFd,
    path::Path,
    process::Child,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Timeval {
    sec: i64,
    usec: i64,
}

/// `struct rusage` on x86_64 Linux.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct RawRusage {
    utime: Timeval,
    stime: Timeval,
    maxrss: i64,
    rest: [i64; 13],
}

// SAFETY: these are glibc's prototypes on x86_64 Linux, the only target the
// bench runs on (pid_t and clockid_t are i32, uid_t u32; RawRusage and
// Timespec have the layout of struct rusage and struct timespec there).
unsafe extern "C" {
    fn flock(fd: i32, op: i32) -> i32;
    fn wait4(pid: i32, status: *mut i32, options: i32, ru: *mut RawRusage) -> i32;
    fn kill(pid: i32, sig: i32) -> i32;
    fn geteuid() -> u32;
    fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
}

#[repr(C)]
#[derive(Default)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

const CLOCK_THREAD_CPUTIME_ID: i32 = 3;

const LOCK_EX: i32 = 2;
const LOCK_UN: i32 = 8;
pub const SIGINT: i32 = 2;
pub const SIGKILL: i32 = 9;
const WNOHANG: i32 = 1;

pub fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { geteuid() == 0 }
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill takes no pointers; a stale pid is an error return
    // (ESRCH), ignored as the process is gone anyway.
    unsafe { kill(pid as i32, sig) };
}

/// The lock the integration tests take (memtrace/tests/common `serial()`):
/// held around everything that loads BPF programs or touches memcgs.
pub struct KernelLock(fs::File);

pub const LOCK_PATH: &str = "/tmp/memtrace-kernel-tests.lock";

impl KernelLock {
    pub fn take() -> Result<Self> {
        let f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(LOCK_PATH)
            .with_context(|| format!("opening {LOCK_PATH}"))?;
        let started = Instant::now();
        // SAFETY: flock takes no pointers; `f` keeps the fd open.
        let r = unsafe { flock(f.as_raw_fd(), LOCK_EX) };
        if r != 0 {
            bail!("flock {LOCK_PATH}: {}", std::io::Error::last_os_error());
        }
        let waited = started.elapsed();
        if waited > Duration::from_secs(1) {
            eprintln!(
                "bench: waited {:.1}s for {LOCK_PATH} (tests were running)",
                waited.as_secs_f64()
            );
        }
        Ok(Self(f))
    }
}

impl Drop for KernelLock {
    fn drop(&mut self) {
        // SAFETY: flock takes no pointers; `self.0` keeps the fd open.
        unsafe { flock(self.0.as_raw_fd(), LOCK_UN) };
    }
}

/// What `wait4` reports for a reaped child.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub user_ns: u64,
    pub sys_ns: u64,
    pub maxrss_kib: u64,
    /// Raw wait status (0 = exit 0; 9 = killed by SIGKILL).
    pub status: i32,
}

impl Usage {
    pub fn killed_by(&self) -> Option<i32> {
        let sig = self.status & 0x7f;
        (sig != 0 && sig != 0x7f).then_some(sig)
    }
    pub fn exit_code(&self) -> Option<i32> {
        (self.status & 0x7f == 0).then_some((self.status >> 8) & 0xff)
    }
}

fn tv_ns(t: Timeval) -> u64 {
    (t.sec as u64) * 1_000_000_000 + (t.usec as u64) * 1000
}

/// Reaps `child` with `wait4`, killing it after `timeout`. The std `Child`
/// is consumed: it must not be waited for again.
pub fn wait_usage(child: Child, timeout: Duration) -> Result<Usage> {
    let pid = child.id() as i32;
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + timeout;
            while Instant::now() < end {
                if done.load(Ordering::SeqCst) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !done.load(Ordering::SeqCst) {
                // SAFETY: kill takes no pointers. The child is not reaped
                // yet (`done` is unset), so `pid` still names it.
                unsafe { kill(pid, SIGKILL) };
                return true;
            }
            false
        })
    };
    let mut status = 0i32;
    let mut ru = RawRusage::default();
    let r = loop {
        // SAFETY: `status` and `ru` are live, writable locals of the types
        // wait4 fills in.
        let r = unsafe { wait4(pid, &mut status, 0, &mut ru) };
        if r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break r;
    };
    done.store(true, Ordering::SeqCst);
    let timed_out = watchdog.join().unwrap_or(false);
    std::mem::forget(child);
    if r != pid {
        bail!("wait4({pid}): {}", std::io::Error::last_os_error());
    }
    if timed_out {
        bail!("pid {pid} did not finish within {timeout:?} and was killed");
    }
    Ok(Usage {
        user_ns: tv_ns(ru.utime),
        sys_ns: tv_ns(ru.stime),
        maxrss_kib: ru.maxrss.max(0) as u64,
        status,
    })
}

/// Whether `pid` (our child) has exited; reaps it if so.
pub fn try_reap(pid: u32) -> Option<Usage> {
    let mut status = 0i32;
    let mut ru = RawRusage::default();
    // SAFETY: `status` and `ru` are live, writable locals of the types
    // wait4 fills in.
    let r = unsafe { wait4(pid as i32, &mut status, WNOHANG, &mut ru) };
    (r == pid as i32).then(|| Usage {
        user_ns: tv_ns(ru.utime),
        sys_ns: tv_ns(ru.stime),
        maxrss_kib: ru.maxrss.max(0) as u64,
        status,
    })
}

/// CPU time (user + system) of a live process from /proc/PID/stat, in ns
/// (clock-tick resolution, 10 ms).
pub fn proc_cpu_ns(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the comm.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000_000)
}

/// `VmHWM` (peak RSS) of a live process, KiB.
pub fn proc_hwm_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// This thread's CPU time in ns (`CLOCK_THREAD_CPUTIME_ID`: exact, and
/// brought up to date when read, unlike /proc's schedstat).
pub fn thread_cpu_ns() -> u64 {
    let mut ts = Timespec::default();
    // SAFETY: `ts` is a live, writable timespec; this clock always exists.
    unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.sec as u64 * 1_000_000_000 + ts.nsec as u64
}

/// Writes `value` to a /proc or cgroupfs file.
pub fn write_file(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

pub fn read_sysctl(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// Median and extremes of a sample.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

pub fn summarize(values: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| {
        let pos = p * (v.len() - 1) as f64;
        let lo = pos.floor() as usize;
        let hi = pos.ceil() as usize;
        v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
    };
    Some(Summary {
        median: q(0.5),
        min: v[0],
        max: v[v.len() - 1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartiles() {
        let s = summarize(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 5.0));
        let s = summarize(&[1.0, 2.0]).unwrap();
        assert_eq!(s.median, 1.5);
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn wait_status() {
        let u = Usage {
            status: 9,
            ..Usage::default()
        };
        assert_eq!(u.killed_by(), Some(9));
        assert_eq!(u.exit_code(), None);
        let u = Usage {
            status: 1 << 8,
            ..Usage::default()
        };
        assert_eq!(u.exit_code(), Some(1));
        assert_eq!(u.killed_by(), None);
    }
}
