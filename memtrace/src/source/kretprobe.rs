//! kretprobes with room for many calls at once.
//!
//! A kretprobe keeps one instance per call in progress; a call that finds
//! none free returns unseen. aya attaches kretprobes through the perf
//! kprobe PMU, which leaves the number of instances to the kernel's
//! default: the number of CPUs on a kernel without CONFIG_PREEMPTION
//! (Debian 11's 5.10), max(10, 2 x CPUs) otherwise. Charges and shrinker
//! calls sleep in reclaim, so a reclaim storm has far more calls in
//! progress than that (on a 2-CPU 5.10 guest, ten memcgs at their limits
//! lost thousands of returns). A kretprobe created in tracefs's
//! `kprobe_events` can say how many instances it wants (`rN:`, since 4.12):
//! that event's perf tracepoint then carries the program.
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use aya::programs::KProbe;

/// Instances per kretprobe: more calls in progress at once than a reclaim
/// storm on a large host has threads in reclaim (each instance is a few
/// dozen bytes of kernel memory; the kernel's maximum is 4096).
pub const MAXACTIVE: u32 = 1024;

/// Prefix of the events memtrace creates: `memtrace_<pid>_<function>`.
const PREFIX: &str = "memtrace_";

/// A kretprobe event of ours with a program attached; removed on drop.
pub struct Event {
    tracefs: PathBuf,
    name: String,
    /// The perf event that runs the program; closed first on drop.
    perf: Option<OwnedFd>,
}

impl Drop for Event {
    fn drop(&mut self) {
        // The event cannot be removed while a perf event uses it.
        drop(self.perf.take());
        let _ = remove(&self.tracefs, &self.name);
    }
}

fn remove(tracefs: &Path, name: &str) -> std::io::Result<()> {
    OpenOptions::new()
        .append(true)
        .open(tracefs.join("kprobe_events"))?
        .write_all(format!("-:kprobes/{name}\n").as_bytes())
}

/// Removes events a memtrace that died without cleaning up left behind
/// (their pid is gone), so they do not pile up in `kprobe_events`.
fn remove_orphans(tracefs: &Path) {
    let Ok(text) = fs::read_to_string(tracefs.join("kprobe_events")) else {
        return;
    };
    for name in orphans(&text, |pid| Path::new(&format!("/proc/{pid}")).exists()) {
        let _ = remove(tracefs, &name);
    }
}

/// Names of our events in a `kprobe_events` listing whose pid is not alive.
fn orphans(listing: &str, alive: impl Fn(u32) -> bool) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| {
            let name = l.split_whitespace().next()?.split_once(':')?.1;
            let name = name.strip_prefix("kprobes/")?;
            let pid: u32 = name.strip_prefix(PREFIX)?.split('_').next()?.parse().ok()?;
            (!alive(pid)).then(|| name.to_string())
        })
        .collect()
}

/// Event name for `function` (kprobe_events accepts [A-Za-z0-9_]).
fn event_name(pid: u32, function: &str) -> String {
    let f: String = function
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{PREFIX}{pid}_{f}")
}

/// `perf_event_attr` up to PERF_ATTR_SIZE_VER5 (every kernel since 4.1
/// accepts this size): only type, size, config and sample_period are set.
#[repr(C)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    rest: [u64; 11],
}

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
/// _IOW('$', 8, u32) and _IO('$', 0).
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;

/// Attaches `program` (a loaded kretprobe program) to a new
/// `r<MAXACTIVE>` event on `function`. On error nothing is left behind.
pub fn attach(program: &KProbe, function: &str, tracefs: &Path) -> Result<Event> {
    remove_orphans(tracefs);
    let name = event_name(std::process::id(), function);
    // One of that name left by an earlier process with our pid (PID 1 in a
    // container, a reused pid after a SIGKILL) would make the create fail;
    // the removal fails harmlessly (EBUSY) if something still uses it.
    let _ = remove(tracefs, &name);
    OpenOptions::new()
        .append(true)
        .open(tracefs.join("kprobe_events"))
        .and_then(|mut f| {
            f.write_all(format!("r{MAXACTIVE}:kprobes/{name} {function}\n").as_bytes())
        })
        .with_context(|| format!("creating kretprobe event r{MAXACTIVE}:{name} {function}"))?;
    // From here on, dropping `event` removes it.
    let mut event = Event {
        tracefs: tracefs.to_path_buf(),
        name,
        perf: None,
    };
    let id_file = tracefs.join("events/kprobes").join(&event.name).join("id");
    let id: u64 = fs::read_to_string(&id_file)
        .with_context(|| format!("reading {}", id_file.display()))?
        .trim()
        .parse()
        .with_context(|| format!("parsing {}", id_file.display()))?;
    let mut attr = PerfEventAttr {
        kind: PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: id,
        sample_period: 1,
        rest: [0; 11],
    };
    // SAFETY: perf_event_open reads `attr` (valid, `size` bytes long) and
    // returns a new fd or -1; no other memory is touched.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &mut attr as *mut PerfEventAttr,
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        bail!(
            "perf_event_open on {}: {}",
            event.name,
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: `fd` was just returned by perf_event_open and nothing else
    // owns it.
    let perf = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    event.perf = Some(perf);
    let prog_fd = program.fd()?.as_fd().as_raw_fd();
    let perf_fd = event.perf.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
    for (request, arg, what) in [
        (PERF_EVENT_IOC_SET_BPF, prog_fd, "PERF_EVENT_IOC_SET_BPF"),
        (PERF_EVENT_IOC_ENABLE, 0, "PERF_EVENT_IOC_ENABLE"),
    ] {
        // SAFETY: both requests take an int argument (a program fd, or
        // nothing) on a perf event fd we own.
        if unsafe { libc::ioctl(perf_fd, request, arg) } != 0 {
            bail!(
                "{what} on {}: {}",
                event.name,
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_orphans() {
        assert_eq!(
            event_name(42, "oom_kill_process.cold"),
            "memtrace_42_oom_kill_process_cold"
        );
        let listing = "r1024:kprobes/memtrace_7_try_charge try_charge\n\
                       r1024:kprobes/memtrace_8_shrink_slab shrink_slab\n\
                       p:kprobes/other_9 do_shrink_slab\n\
                       r:kprobes/memtrace_x_y y\n";
        assert_eq!(orphans(listing, |pid| pid == 8), ["memtrace_7_try_charge"]);
    }

    #[test]
    fn attr_is_version_5_sized() {
        // PERF_ATTR_SIZE_VER5
        assert_eq!(std::mem::size_of::<PerfEventAttr>(), 112);
    }
}
