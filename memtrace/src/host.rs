//! System-wide CPU figures per sampling interval: how much CPU time the
//! kernel spends in system mode (memory reclaim and compaction show up
//! there), per CPU and overall, and how busy the kswapd threads are.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `PF_KTHREAD` in the flags field of `/proc/PID/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;
/// kswapd threads come and go only with NUMA node hotplug: the pid list is
/// rebuilt this often, or as soon as one of them cannot be read.
const KSWAPD_RESCAN: Duration = Duration::from_secs(300);

/// CPU use over the interval since the previous sample. Percentages of
/// `/proc/stat` are of the total time of all CPUs (100 = every CPU busy in
/// that mode); the per-CPU maximum is of that CPU's time.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct HostSample {
    /// Time in system mode ("system" of /proc/stat alone: kernel work done
    /// on behalf of tasks, direct reclaim included; hard and soft interrupt
    /// time are `irq_pct` and `softirq_pct`).
    pub sys_pct: f64,
    /// The highest `system` share of a single CPU, and which CPU that is
    /// (None when no CPU time elapsed, e.g. on the first sample).
    pub max_cpu_sys_pct: f64,
    pub max_cpu: Option<u32>,
    /// user + nice (guest time is part of it).
    pub user_pct: f64,
    pub irq_pct: f64,
    pub softirq_pct: f64,
    /// Idle with I/O outstanding (an unreliable figure on SMP, but a hint
    /// of writeback or swap stalls).
    pub iowait_pct: f64,
    /// Time stolen by the hypervisor.
    pub steal_pct: f64,
    /// CPU time of all kswapd threads (utime + stime), as a percentage of
    /// one CPU (two busy kswapd threads make 200).
    pub kswapd_cpu_pct: f64,
    /// kswapd threads found (one per NUMA node with memory). 0 when /proc
    /// shows no kernel threads, e.g. in a container's PID namespace.
    pub kswapd_threads: u32,
    /// Online CPUs (`cpuN` lines of /proc/stat).
    pub cpus: u32,
}

/// Samples [`HostSample`]s.
pub struct HostSampler {
    proc_root: PathBuf,
    clk_tck: f64,
    prev: StatSnapshot,
    cur: StatSnapshot,
    prev_at: Instant,
    kswapd: Vec<Kswapd>,
    kswapd_scanned_at: Instant,
    kswapd_rescan: bool,
    buf: Vec<u8>,
}

/// A kswapd thread and its CPU time at the previous sample.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Kswapd {
    pid: u32,
    ticks: u64,
}

impl Default for HostSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl HostSampler {
    /// A sampler whose first [`Self::sample`] covers the time since this
    /// call.
    pub fn new() -> Self {
        Self::with_proc_root(PathBuf::from("/proc"), Instant::now())
    }

    fn with_proc_root(proc_root: PathBuf, now: Instant) -> Self {
        // SAFETY: sysconf takes no pointers and has no preconditions; an
        // unknown name returns -1, handled below.
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let mut s = HostSampler {
            proc_root,
            clk_tck: if tck > 0 { tck as f64 } else { 100.0 },
            prev: StatSnapshot::default(),
            cur: StatSnapshot::default(),
            prev_at: now,
            kswapd: Vec::new(),
            kswapd_scanned_at: now,
            kswapd_rescan: true,
            buf: Vec::with_capacity(4096),
        };
        s.sample_at(now);
        s
    }

    /// CPU use since the previous call (or since [`Self::new`]).
    pub fn sample(&mut self) -> HostSample {
        self.sample_at(Instant::now())
    }

    fn sample_at(&mut self, now: Instant) -> HostSample {
        let mut out = HostSample::default();

        self.cur.clear();
        if read_into(&self.proc_root.join("stat"), &mut self.buf).is_ok() {
            parse_proc_stat(&self.buf, &mut self.cur);
        }
        cpu_fields(&self.prev, &self.cur, &mut out);
        std::mem::swap(&mut self.prev, &mut self.cur);

        let secs = now.saturating_duration_since(self.prev_at).as_secs_f64();
        let ticks = self.kswapd_ticks(now);
        if secs > 0.0 {
            out.kswapd_cpu_pct = ticks as f64 / self.clk_tck / secs * 100.0;
        }
        out.kswapd_threads = u32::try_from(self.kswapd.len()).unwrap_or(u32::MAX);
        self.prev_at = now;
        out
    }

    /// CPU ticks used by kswapd threads since the previous sample, updating
    /// (and when due, rebuilding) the thread list. Threads seen for the
    /// first time contribute from the next sample on.
    fn kswapd_ticks(&mut self, now: Instant) -> u64 {
        let mut total = 0u64;
        if self.kswapd_rescan
            || now.saturating_duration_since(self.kswapd_scanned_at) >= KSWAPD_RESCAN
        {
            let found = self.scan_kswapd();
            for k in &found {
                if let Some(prev) = self.kswapd.iter().find(|p| p.pid == k.pid) {
                    total += k.ticks.saturating_sub(prev.ticks);
                }
            }
            self.kswapd = found;
            self.kswapd_scanned_at = now;
            self.kswapd_rescan = false;
            return total;
        }
        let mut lost = false;
        let mut list = std::mem::take(&mut self.kswapd);
        list.retain_mut(|k| match self.kswapd_stat(k.pid) {
            Some(ticks) => {
                total += ticks.saturating_sub(k.ticks);
                k.ticks = ticks;
                true
            }
            None => {
                lost = true;
                false
            }
        });
        self.kswapd = list;
        self.kswapd_rescan = lost;
        total
    }

    /// utime + stime of `pid` if it is a kswapd kernel thread.
    fn kswapd_stat(&mut self, pid: u32) -> Option<u64> {
        let mut path = self.proc_root.join(pid.to_string());
        path.push("stat");
        read_into(&path, &mut self.buf).ok()?;
        let st = parse_pid_stat(&self.buf)?;
        is_kswapd(&st).then_some(st.ticks)
    }

    /// Every kswapd kernel thread in /proc, ordered by pid.
    fn scan_kswapd(&mut self) -> Vec<Kswapd> {
        let Ok(rd) = std::fs::read_dir(&self.proc_root) else {
            return Vec::new();
        };
        let pids: Vec<u32> = rd
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        let mut found: Vec<Kswapd> = pids
            .into_iter()
            .filter_map(|pid| {
                Some(Kswapd {
                    pid,
                    ticks: self.kswapd_stat(pid)?,
                })
            })
            .collect();
        found.sort_by_key(|k| k.pid);
        log::debug!("kswapd threads: {found:?}");
        found
    }
}

fn read_into(path: &Path, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    File::open(path)?.read_to_end(buf)?;
    Ok(())
}

/// Time counters of one /proc/stat `cpu` line, in USER_HZ ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct CpuTimes {
    user: u64,
    nice: u64,
    system: u64,
    idle: u64,
    iowait: u64,
    irq: u64,
    softirq: u64,
    steal: u64,
}

impl CpuTimes {
    /// Field-wise difference, saturating (iowait, for one, can go
    /// backwards).
    fn since(&self, prev: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(prev.user),
            nice: self.nice.saturating_sub(prev.nice),
            system: self.system.saturating_sub(prev.system),
            idle: self.idle.saturating_sub(prev.idle),
            iowait: self.iowait.saturating_sub(prev.iowait),
            irq: self.irq.saturating_sub(prev.irq),
            softirq: self.softirq.saturating_sub(prev.softirq),
            steal: self.steal.saturating_sub(prev.steal),
        }
    }

    /// All time: guest and guest_nice are already counted in user and
    /// nice.
    fn total(&self) -> u64 {
        self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
    }
}

/// The `cpu` lines of one read of /proc/stat.
#[derive(Clone, Debug, Default, PartialEq)]
struct StatSnapshot {
    /// The aggregate `cpu` line; None if the read failed.
    all: Option<CpuTimes>,
    /// `cpuN` lines, in file order.
    cpus: Vec<(u32, CpuTimes)>,
}

impl StatSnapshot {
    fn clear(&mut self) {
        self.all = None;
        self.cpus.clear();
    }
}

/// Parses the `cpu` and `cpuN` lines of /proc/stat (`cpu  user nice system
/// idle iowait irq softirq steal guest guest_nice`; missing trailing
/// columns of old kernels count as 0).
fn parse_proc_stat(text: &[u8], out: &mut StatSnapshot) {
    for line in text.split(|&c| c == b'\n') {
        let Some(rest) = line.strip_prefix(b"cpu") else {
            continue;
        };
        let sp = rest.iter().position(|&c| c == b' ').unwrap_or(rest.len());
        let (id, nums) = rest.split_at(sp);
        let id = if id.is_empty() {
            None
        } else {
            match parse_u64(id).and_then(|v| u32::try_from(v).ok()) {
                Some(id) => Some(id),
                None => continue,
            }
        };
        if nums.trim_ascii().is_empty() {
            continue;
        }
        let mut vals = nums
            .split(|&c| c == b' ')
            .filter(|f| !f.is_empty())
            .map(|v| parse_u64(v).unwrap_or(0));
        let mut next = || vals.next().unwrap_or(0);
        let t = CpuTimes {
            user: next(),
            nice: next(),
            system: next(),
            idle: next(),
            iowait: next(),
            irq: next(),
            softirq: next(),
            steal: next(),
        };
        match id {
            None => out.all = Some(t),
            Some(id) => out.cpus.push((id, t)),
        }
    }
}

/// The /proc/stat fields of a [`HostSample`], from two snapshots.
fn cpu_fields(prev: &StatSnapshot, cur: &StatSnapshot, out: &mut HostSample) {
    out.cpus = u32::try_from(cur.cpus.len()).unwrap_or(u32::MAX);
    if let (Some(p), Some(c)) = (&prev.all, &cur.all) {
        let d = c.since(p);
        let total = d.total();
        out.sys_pct = pct(d.system, total);
        out.user_pct = pct(d.user + d.nice, total);
        out.irq_pct = pct(d.irq, total);
        out.softirq_pct = pct(d.softirq, total);
        out.iowait_pct = pct(d.iowait, total);
        out.steal_pct = pct(d.steal, total);
    }
    for (i, (id, c)) in cur.cpus.iter().enumerate() {
        // Same position as last time unless CPUs went on- or offline.
        let p = match prev.cpus.get(i) {
            Some((pid, p)) if pid == id => p,
            _ => match prev.cpus.iter().find(|(pid, _)| pid == id) {
                Some((_, p)) => p,
                None => continue,
            },
        };
        let d = c.since(p);
        let total = d.total();
        if total == 0 {
            continue;
        }
        let sys = pct(d.system, total);
        if out.max_cpu.is_none() || sys > out.max_cpu_sys_pct {
            out.max_cpu_sys_pct = sys;
            out.max_cpu = Some(*id);
        }
    }
}

fn pct(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        part as f64 * 100.0 / total as f64
    }
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b.trim_ascii()).ok()?.parse().ok()
}

/// The fields of /proc/PID/stat the sampler needs.
#[derive(Debug, PartialEq)]
struct PidStat<'a> {
    comm: &'a [u8],
    flags: u64,
    /// utime + stime, in clock ticks.
    ticks: u64,
}

/// Parses `pid (comm) state ppid ... flags(9) ... utime(14) stime(15) ...`.
/// comm may hold spaces and parentheses: it ends at the last `)`.
fn parse_pid_stat(text: &[u8]) -> Option<PidStat<'_>> {
    let open = text.iter().position(|&c| c == b'(')?;
    let close = text.iter().rposition(|&c| c == b')')?;
    if close < open {
        return None;
    }
    let comm = &text[open + 1..close];
    // Fields from 3 (state) on.
    let mut f = text[close + 1..]
        .split(|c| c.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let flags = parse_u64(f.nth(9 - 3)?)?;
    let utime = parse_u64(f.nth(14 - 9 - 1)?)?;
    let stime = parse_u64(f.next()?)?;
    Some(PidStat {
        comm,
        flags,
        ticks: utime.saturating_add(stime),
    })
}

fn is_kswapd(st: &PidStat<'_>) -> bool {
    st.comm.starts_with(b"kswapd") && st.flags & PF_KTHREAD != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    const STAT_1: &str = "\
cpu  219670 0 42735 209640 2457 0 380 162 0 0
cpu0 106535 0 20153 109937 593 0 72 78 0 0
cpu1 113134 0 22582 99702 1864 0 308 84 0 0
intr 2284928 0 0 0 0 0 0
ctxt 6363532
btime 1700000000
processes 12345
procs_running 2
procs_blocked 0
softirq 1000 0 1 2 3 4 5 6 7 8 9
";

    /// Later: cpu0 ran 90 ticks, 10 in system; cpu1 110 ticks, 60 in
    /// system.
    const STAT_2: &str = "\
cpu  219720 0 42805 209700 2467 5 385 162 0 0
cpu0 106565 0 20163 109987 593 0 72 78 0 0
cpu1 113154 0 22642 99712 1874 5 313 84 0 0
intr 2285928 0 0 0 0 0 0
ctxt 6364532
";

    fn snapshot(text: &str) -> StatSnapshot {
        let mut s = StatSnapshot::default();
        parse_proc_stat(text.as_bytes(), &mut s);
        s
    }

    #[test]
    fn proc_stat_lines() {
        let s = snapshot(STAT_1);
        assert_eq!(
            s.all,
            Some(CpuTimes {
                user: 219_670,
                nice: 0,
                system: 42_735,
                idle: 209_640,
                iowait: 2457,
                irq: 0,
                softirq: 380,
                steal: 162,
            })
        );
        assert_eq!(s.cpus.len(), 2);
        assert_eq!(s.cpus[1].0, 1);
        assert_eq!(s.cpus[1].1.system, 22_582);
        // Old kernels: fewer columns; garbage lines are skipped.
        let s = snapshot("cpu 1 2 3 4\ncpu7 5 6 7 8\ncpux 1 2\ncpu\n");
        assert_eq!(
            s.all,
            Some(CpuTimes {
                user: 1,
                nice: 2,
                system: 3,
                idle: 4,
                ..Default::default()
            })
        );
        assert_eq!(
            s.cpus,
            vec![(
                7,
                CpuTimes {
                    user: 5,
                    nice: 6,
                    system: 7,
                    idle: 8,
                    ..Default::default()
                }
            )]
        );
        assert_eq!(snapshot(""), StatSnapshot::default());
    }

    #[test]
    fn cpu_percentages() {
        let (a, b) = (snapshot(STAT_1), snapshot(STAT_2));
        let mut out = HostSample::default();
        cpu_fields(&a, &b, &mut out);
        // Aggregate: 200 ticks, 70 system, 50 user, 5 irq, 5 softirq, 10
        // iowait, 60 idle.
        assert_eq!(out.cpus, 2);
        assert!((out.sys_pct - 35.0).abs() < 1e-9, "{out:?}");
        assert!((out.user_pct - 25.0).abs() < 1e-9, "{out:?}");
        assert!((out.irq_pct - 2.5).abs() < 1e-9, "{out:?}");
        assert!((out.softirq_pct - 2.5).abs() < 1e-9, "{out:?}");
        assert!((out.iowait_pct - 5.0).abs() < 1e-9, "{out:?}");
        assert_eq!(out.steal_pct, 0.0);
        assert_eq!(out.max_cpu, Some(1));
        assert!(
            (out.max_cpu_sys_pct - 60.0 / 110.0 * 100.0).abs() < 1e-9,
            "{out:?}"
        );

        // First sample, or no time elapsed: zeros, no max CPU.
        let mut out = HostSample::default();
        cpu_fields(&StatSnapshot::default(), &a, &mut out);
        assert_eq!(
            out,
            HostSample {
                cpus: 2,
                ..Default::default()
            }
        );
        let mut out = HostSample::default();
        cpu_fields(&a, &a, &mut out);
        assert_eq!((out.max_cpu, out.sys_pct), (None, 0.0));

        // A CPU went offline: the others still match by id; counters that
        // went backwards count as 0.
        let c = snapshot(
            "cpu  219720 0 42805 209700 2400 5 385 162 0 0\n\
             cpu1 113154 0 22642 99712 1874 5 313 84 0 0\n",
        );
        let mut out = HostSample::default();
        cpu_fields(&a, &c, &mut out);
        assert_eq!((out.cpus, out.max_cpu), (1, Some(1)));
        assert_eq!(out.iowait_pct, 0.0);
    }

    #[test]
    fn pid_stat() {
        let kswapd = b"45 (kswapd0) S 2 0 0 0 -1 2230336 0 0 0 0 150 2500 0 0 20 0 1 0 37 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let st = parse_pid_stat(kswapd).unwrap();
        assert_eq!(
            st,
            PidStat {
                comm: b"kswapd0",
                flags: 2_230_336,
                ticks: 2650,
            }
        );
        assert!(is_kswapd(&st));

        // A user process pretending: spaces and parens in comm, no
        // PF_KTHREAD.
        let fake = b"4242 (kswapd0) (x) y) R 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 1000 1000000 100 18446744073709551615\n";
        let st = parse_pid_stat(fake).unwrap();
        assert_eq!(st.comm, b"kswapd0) (x) y");
        assert_eq!(st.ticks, 10);
        assert!(!is_kswapd(&st));

        // Another kernel thread.
        let kthreadd = b"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 3 0 0 20 0 1 0 24 0\n";
        assert!(!is_kswapd(&parse_pid_stat(kthreadd).unwrap()));

        assert_eq!(parse_pid_stat(b""), None);
        assert_eq!(parse_pid_stat(b"1 (x) S 0 0"), None);
        assert_eq!(parse_pid_stat(b"1 )x( S 0 0 0 0 0 0 0 0 0 0 0 0 0"), None);
    }

    fn kthread_stat(pid: u32, comm: &str, utime: u64, stime: u64) -> String {
        format!("{pid} ({comm}) S 2 0 0 0 -1 2230336 0 0 0 0 {utime} {stime} 0 0 20 0 1 0 37 0 0\n")
    }

    /// kswapd discovery and accounting on a fake /proc.
    #[test]
    fn fake_proc_kswapd() {
        let tmp = TempDir::new("host-proc");
        let base = tmp.path();
        let put = |pid: &str, text: &str| _ = tmp.write(format!("{pid}/stat"), text);
        tmp.write("stat", STAT_1);
        put("45", &kthread_stat(45, "kswapd0", 0, 1000));
        put("46", &kthread_stat(46, "kswapd1", 0, 500));
        put("2", &kthread_stat(2, "kthreadd", 0, 99));
        put(
            "300",
            "300 (kswapd-fake) S 1 300 300 0 -1 4194560 0 0 0 0 900 900 0 0 20 0 1 0 1 0 0\n",
        );
        std::fs::create_dir_all(base.join("sys")).unwrap();

        let t0 = Instant::now();
        let mut s = HostSampler::with_proc_root(base.to_path_buf(), t0);
        assert_eq!(
            s.kswapd,
            vec![
                Kswapd {
                    pid: 45,
                    ticks: 1000
                },
                Kswapd {
                    pid: 46,
                    ticks: 500
                }
            ]
        );

        // 2 s later: kswapd0 used 150 ticks, kswapd1 50.
        tmp.write("stat", STAT_2);
        put("45", &kthread_stat(45, "kswapd0", 0, 1150));
        put("46", &kthread_stat(46, "kswapd1", 10, 540));
        let out = s.sample_at(t0 + Duration::from_secs(2));
        let want = 200.0 / s.clk_tck / 2.0 * 100.0;
        assert!((out.kswapd_cpu_pct - want).abs() < 1e-9, "{out:?}");
        assert_eq!(out.kswapd_threads, 2);
        assert!((out.sys_pct - 35.0).abs() < 1e-9, "{out:?}");
        assert_eq!(out.max_cpu, Some(1));

        // kswapd1 vanishes: dropped now, the list rebuilt next time, when a
        // new kswapd2 is found (counted from the sample after).
        std::fs::remove_dir_all(base.join("46")).unwrap();
        put("45", &kthread_stat(45, "kswapd0", 0, 1160));
        let out = s.sample_at(t0 + Duration::from_secs(3));
        assert_eq!(out.kswapd_threads, 1);
        assert!((out.kswapd_cpu_pct - 10.0 / s.clk_tck * 100.0).abs() < 1e-9);
        assert!(s.kswapd_rescan);
        put("47", &kthread_stat(47, "kswapd2", 0, 7000));
        put("45", &kthread_stat(45, "kswapd0", 0, 1170));
        let out = s.sample_at(t0 + Duration::from_secs(4));
        assert_eq!(out.kswapd_threads, 2);
        assert!((out.kswapd_cpu_pct - 10.0 / s.clk_tck * 100.0).abs() < 1e-9);
        put("47", &kthread_stat(47, "kswapd2", 0, 7001));
        let out = s.sample_at(t0 + Duration::from_secs(5));
        assert!((out.kswapd_cpu_pct - 1.0 / s.clk_tck * 100.0).abs() < 1e-9);

        // A pid reused by something else is dropped.
        put(
            "47",
            "47 (bash) S 1 47 47 0 -1 4194560 0 0 0 0 1 1 0 0 20 0 1 0 1 0 0\n",
        );
        let out = s.sample_at(t0 + Duration::from_secs(6));
        assert_eq!(out.kswapd_threads, 1);

        // No time elapsed: no division by zero.
        let out = s.sample_at(t0 + Duration::from_secs(6));
        assert_eq!(out.kswapd_cpu_pct, 0.0);

        // /proc/stat unreadable: zeros.
        std::fs::remove_file(base.join("stat")).unwrap();
        let out = s.sample_at(t0 + Duration::from_secs(7));
        assert_eq!((out.cpus, out.sys_pct, out.max_cpu), (0, 0.0, None));
    }

    /// The real /proc: a syscall-heavy loop shows up as system time.
    #[test]
    fn real_sys_time() {
        let mut s = HostSampler::new();
        let mut zero = File::open("/dev/zero").expect("open /dev/zero");
        let mut buf = vec![0u8; 1 << 16];
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_millis(300) {
            // Each read is a syscall that clears 64 KiB in the kernel.
            zero.read_exact(&mut buf).unwrap();
            n += 1;
        }
        let out = s.sample();
        eprintln!("{n} reads: {out:?}");
        assert!(out.sys_pct > 0.0, "{out:?}");
        assert!(out.max_cpu.is_some(), "{out:?}");
        assert!(out.max_cpu_sys_pct > 0.0, "{out:?}");
        // The aggregate is a weighted mean of the CPUs (the two lines'
        // idle times are computed separately: allow some slack).
        assert!(out.max_cpu_sys_pct + 1.0 >= out.sys_pct, "{out:?}");
        // SAFETY: sysconf has no preconditions.
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        assert_eq!(i64::from(out.cpus), online as i64, "{out:?}");
        assert!(out.kswapd_cpu_pct >= 0.0);
        // kswapd is visible unless this runs in a PID namespace hiding
        // kernel threads (kthreadd is pid 2 outside of one).
        let kthreadd_visible = std::fs::read("/proc/2/stat")
            .ok()
            .and_then(|t| parse_pid_stat(&t).map(|st| st.comm == b"kthreadd"))
            .unwrap_or(false);
        if kthreadd_visible {
            assert!(out.kswapd_threads >= 1, "{out:?}");
        } else {
            eprintln!("kernel threads not visible in /proc: kswapd not checked");
        }
        let pcts = [
            out.sys_pct,
            out.user_pct,
            out.irq_pct,
            out.softirq_pct,
            out.iowait_pct,
            out.steal_pct,
        ];
        assert!(pcts.iter().all(|p| (0.0..=100.0).contains(p)), "{out:?}");
        assert!(pcts.iter().sum::<f64>() <= 100.0 + 1e-9, "{out:?}");
    }
}
