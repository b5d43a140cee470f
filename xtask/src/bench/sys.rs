//! The few system calls the bench needs (through the libc crate), the
//! kernel-test lock, child processes with their resource usage, /proc
//! readers and small statistics.

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

pub use libc::{SIGINT, SIGKILL};

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Sends `sig` to `pid`; a process that is already gone is no error here.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill only takes plain integers.
    unsafe { libc::kill(pid as i32, sig) };
}

/// The lock the integration tests take (memtrace-testkit's `serial()`):
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
        // SAFETY: `f` is an open file for the whole call.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
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
        // SAFETY: the lock file stays open until after this call.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
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
        libc::WIFSIGNALED(self.status).then(|| libc::WTERMSIG(self.status))
    }
    pub fn exit_code(&self) -> Option<i32> {
        libc::WIFEXITED(self.status).then(|| libc::WEXITSTATUS(self.status))
    }

    fn new(status: i32, ru: &libc::rusage) -> Self {
        Usage {
            user_ns: tv_ns(ru.ru_utime),
            sys_ns: tv_ns(ru.ru_stime),
            maxrss_kib: ru.ru_maxrss.max(0) as u64,
            status,
        }
    }
}

fn tv_ns(t: libc::timeval) -> u64 {
    (t.tv_sec as u64) * 1_000_000_000 + (t.tv_usec as u64) * 1000
}

/// `wait4(pid, ..., options)`: the pid it returned (0 with WNOHANG and the
/// child still running, -1 on error), the wait status and the child's
/// resource usage.
fn wait4(pid: i32, options: i32) -> (i32, i32, libc::rusage) {
    let mut status = 0i32;
    // SAFETY: rusage is a plain C struct of integers: all zeroes is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals of the right types.
    let r = unsafe { libc::wait4(pid, &mut status, options, &mut ru) };
    (r, status, ru)
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
                signal(pid as u32, SIGKILL);
                return true;
            }
            false
        })
    };
    let (r, status, ru) = loop {
        let waited = wait4(pid, 0);
        if waited.0 < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {
            continue;
        }
        break waited;
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
    Ok(Usage::new(status, &ru))
}

/// Whether `pid` (our child) has exited; reaps it if so.
pub fn try_reap(pid: u32) -> Option<Usage> {
    let (r, status, ru) = wait4(pid as i32, libc::WNOHANG);
    (r == pid as i32).then(|| Usage::new(status, &ru))
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
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live timespec; this clock always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
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

/// `VmRSS` of a live process, KiB.
pub fn proc_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
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
    fn reaps_children_with_their_usage() {
        use std::process::Command;
        let ok = Command::new("true").spawn().unwrap();
        let u = wait_usage(ok, Duration::from_secs(10)).unwrap();
        assert_eq!((u.exit_code(), u.killed_by()), (Some(0), None));
        assert!(u.maxrss_kib > 0, "{u:?}");
        let killed = Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .spawn()
            .unwrap();
        let u = wait_usage(killed, Duration::from_secs(10)).unwrap();
        assert_eq!((u.exit_code(), u.killed_by()), (None, Some(SIGKILL)));
        // Dropping a std Child neither waits for nor kills it.
        let pid = Command::new("sleep").arg("10").spawn().unwrap().id();
        assert!(try_reap(pid).is_none());
        signal(pid, SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        let u = loop {
            if let Some(u) = try_reap(pid) {
                break u;
            }
            assert!(Instant::now() < deadline, "sleep {pid} not reaped");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(u.killed_by(), Some(SIGKILL));
        assert!(thread_cpu_ns() > 0);
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
