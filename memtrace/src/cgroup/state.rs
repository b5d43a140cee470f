//! A per-memcg snapshot of the state cgroupfs exposes: usage, limits (own
//! and effective), the memory.stat breakdown, OOM state, events and
//! pressure.
//!
//! Meant to be read once per display refresh for the few hundred memcgs
//! shown: each file is read once, into one reused buffer, and parsed in
//! place. Ancestor limits, needed for the effective limit, are cached for
//! the duration of one refresh by [`StateReader`].

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::mounts::MemcgFs;
use super::path::normalize;

pub use crate::output::records::MemcgState;

/// Sets the memory.stat figures, in the order of `stat_keys` in `read`.
fn set_stat(s: &mut MemcgState, v: [Option<u64>; 7]) {
    [
        s.anon_bytes,
        s.file_bytes,
        s.shmem_bytes,
        s.inactive_file_bytes,
        s.unevictable_bytes,
        s.dirty_bytes,
        s.writeback_bytes,
    ] = v;
}

/// How long a memcg's own limits are trusted before being read again.
const LIMIT_TTL: Duration = Duration::from_secs(10);

/// Reads [`MemcgState`]s, caching each memcg's own limit for the effective
/// limit computation until [`StateReader::next_refresh`]. Reuses its
/// buffers across reads.
pub struct StateReader {
    v2: bool,
    root: PathBuf,
    /// Limit values at or above this are "unlimited" (PAGE_COUNTER_MAX in
    /// bytes).
    unlimited: u64,
    /// Own limit of each memcg looked up in the last `LIMIT_TTL`, by
    /// normalized path (None = unlimited or unreadable): limits are
    /// configuration, and re-reading them for every memcg every interval
    /// was a third of the agent's syscalls in a storm.
    limits: HashMap<Box<str>, (Instant, Option<u64>)>,
    /// The same for the swap limit.
    swap_limits: HashMap<Box<str>, (Instant, Option<u64>)>,
    limit_ttl: Duration,
    /// Scratch path and file contents.
    path: PathBuf,
    buf: Vec<u8>,
    /// A read of the current memcg's files failed with ENOENT/ENODEV.
    gone: bool,
    /// An `O_PATH` descriptor of each memcg directory read in this refresh
    /// or the last, with the refresh it was last used in: its files are
    /// opened relative to it, without walking the whole path again (a
    /// quarter of the CPU per file in a storm). Bounded by `max_dirs`.
    /// With the directory's inode: a memcg renamed away and another made
    /// at its path would otherwise be read through the old descriptor.
    dirs: HashMap<Box<str>, (OwnedFd, u64, u64)>,
    refresh: u64,
    /// Directory descriptors held at most: beyond, files open by path.
    max_dirs: usize,
}

/// Directory descriptors held at most, whatever the descriptor limit.
const MAX_DIRS: usize = 4096;

/// How many directory descriptors may be held: at most a quarter of the
/// soft descriptor limit (1024 on many systems), so that the agent's other
/// files, and the cgroupfs files opened through them, always find room.
fn dir_budget() -> usize {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `r`, a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 0;
    }
    usize::try_from(r.rlim_cur / 4)
        .unwrap_or(MAX_DIRS)
        .min(MAX_DIRS)
}

impl StateReader {
    /// A reader for the hierarchy mounted at `fs.root`.
    pub fn new(fs: &MemcgFs) -> Self {
        Self::with_root(fs, &fs.root)
    }

    /// A reader for the hierarchy of `fs` mounted at `root`.
    pub fn with_root(fs: &MemcgFs, root: &Path) -> Self {
        StateReader {
            v2: fs.v2,
            root: root.to_path_buf(),
            unlimited: page_counter_max_bytes(page_size()),
            limits: HashMap::new(),
            swap_limits: HashMap::new(),
            limit_ttl: LIMIT_TTL,
            path: PathBuf::new(),
            buf: Vec::with_capacity(8192),
            gone: false,
            dirs: HashMap::new(),
            refresh: 0,
            max_dirs: dir_budget(),
        }
    }

    /// Forgets cached limits older than `LIMIT_TTL`: call once per
    /// refresh, before its reads. A changed limit shows within that time.
    pub fn next_refresh(&mut self) {
        let ttl = self.limit_ttl;
        let fresh = |(at, _): &mut (Instant, Option<u64>)| at.elapsed() < ttl;
        self.limits.retain(|_, v| fresh(v));
        self.swap_limits.retain(|_, v| fresh(v));
        // Directories not read in the last refresh are let go.
        let last = self.refresh;
        self.dirs.retain(|_, (_, used, _)| *used >= last);
        self.refresh += 1;
    }

    /// Reads the state of the memcg at `rel` (`/a/b`, `a/b` or `/`). Paths
    /// with `.` or `..` components read as a missing memcg.
    pub fn read(&mut self, rel: &str) -> MemcgState {
        let Some(key) = normalize(rel) else {
            return MemcgState::default();
        };
        let key = key.as_ref();
        self.gone = false;
        let usage_bytes = self.file(key, self.usage_file()).and_then(parse_u64);
        if self.gone {
            if !self.exists(key) {
                return MemcgState::default();
            }
            // The v2 root has no memory.current.
            self.gone = false;
        }
        let mut s = MemcgState {
            usage_bytes,
            limit_bytes: self.limit_of(key),
            ..Default::default()
        };
        s.swap_limit_bytes = self.swap_limit_of(key);
        let stat_keys = if self.v2 { V2_STAT_KEYS } else { V1_STAT_KEYS };
        if let Some(b) = self.file(key, "memory.stat") {
            set_stat(&mut s, keyed(b, stat_keys));
        }
        if self.v2 {
            if let Some(b) = self.file(key, "memory.events") {
                [s.events_high, s.events_max, s.events_oom, s.events_oom_kill] =
                    keyed(b, ["high", "max", "oom", "oom_kill"]);
            }
            if let Some(b) = self.file(key, "memory.pressure") {
                let p = parse_pressure(b);
                s.pressure_some_avg10 = p.some_avg10;
                s.pressure_full_avg10 = p.full_avg10;
                s.pressure_some_total_us = p.some_total_us;
            }
        } else {
            if let Some(b) = self.file(key, "memory.oom_control") {
                let [disable, under, kills] =
                    keyed(b, ["oom_kill_disable", "under_oom", "oom_kill"]);
                s.oom_kill_disable = disable.map(|v| v != 0);
                s.under_oom = under.map(|v| v != 0);
                s.events_oom_kill = kills;
            }
        }
        s.working_set_bytes = match (s.usage_bytes, s.inactive_file_bytes) {
            (Some(u), Some(i)) => Some(u.saturating_sub(i)),
            _ => None,
        };
        if let Some((limit, by)) = self.effective_limit(key, s.limit_bytes) {
            s.effective_limit_bytes = Some(limit);
            s.limited_by = Some(by.to_string());
        }
        if self.gone && !self.exists(key) {
            // Deleted while being read.
            return MemcgState::default();
        }
        s
    }

    fn usage_file(&self) -> &'static str {
        if self.v2 {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        }
    }

    fn limit_file(&self) -> &'static str {
        if self.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        }
    }

    /// Contents of file `name` of the memcg at `key`; None when unreadable,
    /// noting whether the memcg may be gone.
    fn file(&mut self, key: &str, name: &str) -> Option<&[u8]> {
        match self.read_at_dir(key, name) {
            Ok(()) => Some(&self.buf),
            Err(e) => {
                if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV) {
                    self.gone = true;
                }
                None
            }
        }
    }

    /// How many times the memcg at `rel` hit its limit (v1: `memory.failcnt`
    /// plus `memory.memsw.failcnt`, as `cgroup::limit_hits`), read through
    /// this reader's buffers; None when unreadable.
    pub fn limit_hits_v1(&mut self, rel: &str) -> Option<u64> {
        let key = normalize(rel)?;
        let key = key.as_ref();
        let memory = self.file(key, "memory.failcnt").and_then(parse_u64)?;
        Some(
            memory
                + self
                    .file(key, "memory.memsw.failcnt")
                    .and_then(parse_u64)
                    .unwrap_or(0),
        )
    }

    /// The memcg's own limit and own swap limit (None = unlimited), cached
    /// like the limits a state read uses; None when `rel` is no memcg
    /// path. A counter without a limit of its own cannot fail, so its
    /// limit-hit counter cannot move: the caller skips reading it.
    pub fn own_limits(&mut self, rel: &str) -> Option<(Option<u64>, Option<u64>)> {
        let key = normalize(rel)?;
        let key = key.as_ref();
        Some((self.limit_of(key), self.swap_limit_of(key)))
    }

    /// The cumulative limit-hit counter of the memcg at `rel`: v2 memory.events
    /// `max`, v1 as [`StateReader::limit_hits_v1`]; None when unreadable.
    pub fn limit_hits(&mut self, rel: &str) -> Option<u64> {
        if !self.v2 {
            return self.limit_hits_v1(rel);
        }
        let key = normalize(rel)?;
        let [max] = keyed(self.file(key.as_ref(), "memory.events")?, ["max"]);
        max
    }

    /// Reads file `name` of the memcg at `key` into `buf`, relative to the
    /// memcg's directory descriptor (opened now if not held). A held
    /// descriptor whose directory was removed (ENOENT, ENODEV) is dropped
    /// and the file read by path: a memcg may have been created again
    /// under the same path.
    fn read_at_dir(&mut self, key: &str, name: &str) -> io::Result<()> {
        // Once per refresh, a held descriptor must still be the directory
        // at its path (one stat): renames are allowed in cgroupfs.
        if let Some((_, used, ino)) = self.dirs.get(key)
            && *used != self.refresh
        {
            set_path(&mut self.path, &self.root, key);
            if std::fs::symlink_metadata(&self.path).map(|m| m.ino()).ok() != Some(*ino) {
                self.dirs.remove(key);
            }
        }
        if !self.dirs.contains_key(key) && self.dirs.len() < self.max_dirs {
            set_path(&mut self.path, &self.root, key);
            if let Ok(d) = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open(&self.path)
                && let Ok(md) = d.metadata()
            {
                self.dirs
                    .insert(key.into(), (d.into(), self.refresh, md.ino()));
            }
        }
        if let Some((dir, used, _)) = self.dirs.get_mut(key) {
            *used = self.refresh;
            match open_at(dir.as_fd(), name).and_then(|f| read_whole_show(f, &mut self.buf)) {
                Ok(()) => return Ok(()),
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::ENODEV) =>
                {
                    self.dirs.remove(key);
                }
                Err(e) => return Err(e),
            }
        }
        read_file(&mut self.path, &self.root, key, name, &mut self.buf)
    }

    fn exists(&mut self, key: &str) -> bool {
        set_path(&mut self.path, &self.root, key);
        self.path.is_dir()
    }

    /// Own limit of the memcg at `key`, from the cache or cgroupfs. The
    /// root cannot be limited (v1 rejects it, v2 has no memory.max there).
    fn limit_of(&mut self, key: &str) -> Option<u64> {
        if key == "/" {
            return None;
        }
        if let Some(&(_, l)) = self.limits.get(key) {
            return l;
        }
        let unlimited = self.unlimited;
        let gone = self.gone;
        let name = self.limit_file();
        let l = self.file(key, name).and_then(|b| parse_limit(b, unlimited));
        // An ancestor's read failure says nothing about the memcg read.
        self.gone = gone;
        self.limits.insert(key.into(), (Instant::now(), l));
        l
    }

    /// Own swap limit (v1 memory+swap, v2 swap alone), cached like limits.
    fn swap_limit_of(&mut self, key: &str) -> Option<u64> {
        if let Some(&(_, l)) = self.swap_limits.get(key) {
            return l;
        }
        let unlimited = self.unlimited;
        let name = if self.v2 {
            "memory.swap.max"
        } else {
            "memory.memsw.limit_in_bytes"
        };
        let l = self.file(key, name).and_then(|b| parse_limit(b, unlimited));
        self.swap_limits.insert(key.into(), (Instant::now(), l));
        l
    }

    /// The lowest limit from `key` (whose own limit is `own`) up to the
    /// root, and where it is set (the deepest such memcg on a tie).
    ///
    /// On v1 kernels before 5.11 a parent with `memory.use_hierarchy` 0 did
    /// not constrain its children; this walk ignores that (since 5.11 the
    /// hierarchy is always used).
    fn effective_limit<'k>(&mut self, key: &'k str, own: Option<u64>) -> Option<(u64, &'k str)> {
        let mut best = own.map(|l| (l, key));
        let mut at = key;
        while let Some(parent) = parent(at) {
            if parent == "/" {
                break;
            }
            if let Some(l) = self.limit_of(parent) {
                if best.is_none_or(|(b, _)| l < b) {
                    best = Some((l, parent));
                }
            }
            at = parent;
        }
        best
    }
}

/// How many memcgs are dying: removed, but still held by the kernel
/// (pinned by charged page cache, kernel memory or swap entries) until
/// their last reference goes.
///
/// v2: `nr_dying_subsys_memory` of the root's `cgroup.stat` (6.11+), else
/// its `nr_dying_descendants` (dying cgroups, each with its memcg as far as
/// the memory controller was enabled for it).
///
/// v1 has no such counter: `/proc/cgroups` gives the number of cgroups the
/// kernel holds in the memory hierarchy (live and dying, the root
/// included), from which the caller's count of live memcg directories
/// (`live_memcgs`, the root included) is subtracted, saturating. Both are
/// read at slightly different times, so the figure is approximate while
/// memcgs are being created or removed.
pub fn dying_memcgs(fs: &MemcgFs, live_memcgs: usize) -> Option<u64> {
    if fs.v2 {
        cgroup_stat_dying(&std::fs::read(fs.root.join("cgroup.stat")).ok()?)
    } else {
        let text = std::fs::read("/proc/cgroups").ok()?;
        let total = proc_cgroups_memory(&text)?;
        Some(total.saturating_sub(live_memcgs as u64))
    }
}

/// Dying memcgs from a v2 `cgroup.stat`: `nr_dying_subsys_memory` (6.11+),
/// else `nr_dying_descendants`.
fn cgroup_stat_dying(text: &[u8]) -> Option<u64> {
    let [subsys, descendants] = keyed(text, ["nr_dying_subsys_memory", "nr_dying_descendants"]);
    subsys.or(descendants)
}

/// `num_cgroups` of the memory line of `/proc/cgroups`
/// (`#subsys_name hierarchy num_cgroups enabled`); None when absent or
/// disabled.
fn proc_cgroups_memory(text: &[u8]) -> Option<u64> {
    text.split(|&c| c == b'\n').find_map(|line| {
        let mut f = line
            .split(|c| c.is_ascii_whitespace())
            .filter(|f| !f.is_empty());
        if f.next()? != b"memory" {
            return None;
        }
        let _hierarchy = f.next()?;
        let num = parse_u64(f.next()?)?;
        match f.next() {
            Some(b"0") => None,
            _ => Some(num),
        }
    })
}

/// Reads `root/key/name` into `buf` (cleared first), building the path in
/// `path`.
fn read_file(
    path: &mut PathBuf,
    root: &Path,
    key: &str,
    name: &str,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    set_path(path, root, key);
    path.push(name);
    read_whole_show(File::open(path)?, buf)
}

/// Opens file `name` (no `/`) of the directory `dir` for reading.
fn open_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<File> {
    let mut c = [0u8; 64];
    if name.len() >= c.len() || name.bytes().any(|b| b == 0 || b == b'/') {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    c[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `c` holds `name` NUL-terminated (checked to fit, with no
    // inner NUL), alive for the call; `dir` is an open descriptor borrowed
    // for the call; openat takes no other pointers.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr().cast(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat just returned this descriptor, owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Reads a cgroupfs file in one `read`: each is a single seq_file record
/// (one `show`), which the kernel hands over whole when the buffer is
/// larger than it, so a read returning less than asked is the whole file.
/// That saves the read that would only see the end of the file, a
/// quarter of the system calls per file. A read that fills the buffer
/// goes on as [`read_small`] does.
fn read_whole_show(mut f: File, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    buf.resize(8192, 0);
    let n = loop {
        match f.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => break r?,
        }
    };
    if n < buf.len() {
        buf.truncate(n);
        return Ok(());
    }
    read_rest(&mut f, buf, n)
}

/// Reads a small file (cgroupfs, procfs) into `buf` with plain reads:
/// `read_to_end` on a `File` first stats it to size the buffer, one more
/// syscall per file for files whose size the kernel reports as 4096 anyway.
pub(crate) fn read_small(path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    read_rest(&mut File::open(path)?, buf, 0)
}

/// Reads `f` to its end into `buf`, after the `len` bytes already there.
fn read_rest(f: &mut File, buf: &mut Vec<u8>, mut len: usize) -> io::Result<()> {
    loop {
        if buf.len() - len < 4096 {
            buf.resize(len + 8192, 0);
        }
        let n = f.read(&mut buf[len..])?;
        if n == 0 {
            buf.truncate(len);
            return Ok(());
        }
        len += n;
    }
}

/// Sets `path` to the directory of the memcg at `key` (`/` or `/a/b`).
fn set_path(path: &mut PathBuf, root: &Path, key: &str) {
    path.as_mut_os_string().clear();
    path.push(root);
    let rel = key.trim_start_matches('/');
    if !rel.is_empty() {
        path.push(rel);
    }
}

/// `/a` for `/a/b`, `/` for `/a`, None for `/`.
fn parent(key: &str) -> Option<&str> {
    if key == "/" {
        return None;
    }
    match key.rfind('/')? {
        0 => Some("/"),
        i => Some(&key[..i]),
    }
}

/// A decimal number, surrounding whitespace allowed.
fn parse_u64(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b.trim_ascii()).ok()?.parse().ok()
}

/// A limit file: None for "max" (v2) and values at or above `unlimited`
/// (v1 prints PAGE_COUNTER_MAX pages in bytes).
fn parse_limit(b: &[u8], unlimited: u64) -> Option<u64> {
    parse_u64(b).filter(|&v| v < unlimited)
}

/// The values of `keys` in a flat keyed file (`key value` lines, such as
/// memory.stat, memory.events, memory.oom_control, cgroup.stat).
/// The `memory.stat` keys of anon, file, shmem, inactive_file,
/// unevictable, dirty and writeback bytes: v1's hierarchical names, and
/// v2's names for the same figures.
const V1_STAT_KEYS: [&str; 7] = [
    "total_rss",
    "total_cache",
    "total_shmem",
    "total_inactive_file",
    "total_unevictable",
    "total_dirty",
    "total_writeback",
];
const V2_STAT_KEYS: [&str; 7] = [
    "anon",
    "file",
    "shmem",
    "inactive_file",
    "unevictable",
    "file_dirty",
    "file_writeback",
];

fn keyed<const N: usize>(text: &[u8], keys: [&str; N]) -> [Option<u64>; N] {
    let mut out = [None; N];
    for line in text.split(|&c| c == b'\n') {
        let Some(sp) = line.iter().position(|&c| c == b' ') else {
            continue;
        };
        let (k, v) = (&line[..sp], &line[sp + 1..]);
        if let Some(i) = keys.iter().position(|key| key.as_bytes() == k) {
            if out[i].is_none() {
                out[i] = parse_u64(v);
            }
        }
    }
    out
}

/// The parts of a PSI file memcg state reports.
#[derive(Debug, Default, PartialEq)]
struct Pressure {
    some_avg10: Option<f64>,
    full_avg10: Option<f64>,
    some_total_us: Option<u64>,
}

/// Parses `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` and the `full`
/// line of a PSI file.
fn parse_pressure(text: &[u8]) -> Pressure {
    let mut p = Pressure::default();
    for line in text.split(|&c| c == b'\n') {
        let mut f = line.split(|&c| c == b' ').filter(|f| !f.is_empty());
        let some = match f.next() {
            Some(b"some") => true,
            Some(b"full") => false,
            _ => continue,
        };
        for kv in f {
            let Some(eq) = kv.iter().position(|&c| c == b'=') else {
                continue;
            };
            let (k, v) = (&kv[..eq], &kv[eq + 1..]);
            let Ok(v) = std::str::from_utf8(v.trim_ascii()) else {
                continue;
            };
            match (some, k) {
                (true, b"avg10") => p.some_avg10 = v.parse().ok(),
                (false, b"avg10") => p.full_avg10 = v.parse().ok(),
                (true, b"total") => p.some_total_us = v.parse().ok(),
                _ => {}
            }
        }
    }
    p
}

/// The page size in bytes (4096 if sysconf cannot tell).
pub fn page_size() -> u64 {
    // SAFETY: sysconf takes no pointers and has no preconditions; an
    // unknown name returns -1, handled below.
    let ps = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(ps).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// PAGE_COUNTER_MAX (LONG_MAX / PAGE_SIZE pages on 64-bit) in bytes: what
/// v1 shows for an unlimited counter (9223372036854771712 with 4 KiB
/// pages).
fn page_counter_max_bytes(page_size: u64) -> u64 {
    (i64::MAX as u64 / page_size) * page_size
}

#[cfg(test)]
mod tests {
    use super::super::mounts::CgroupMode;
    use super::super::testutil::TestDirs;
    use super::*;
    use crate::testutil::TempDir;
    use std::process::{Child, Command, Stdio};

    const UNLIMITED_4K: u64 = 9_223_372_036_854_771_712;

    /// v1 memory.stat of a 6.18 kernel (memory hierarchy root).
    const V1_STAT: &str = "\
cache 9576448
rss 6574080
rss_huge 0
shmem 9084928
mapped_file 7524352
dirty 28672
writeback 0
workingset_refault_anon 0
workingset_refault_file 3898
swap 0
swapcached 0
pgpgin 53022
pgpgout 49079
pgfault 76962
pgmajfault 0
inactive_anon 0
active_anon 1531904
inactive_file 8192
active_file 483328
unevictable 14127104
hierarchical_memory_limit 9223372036854771712
hierarchical_memsw_limit 9223372036854771712
total_cache 1978503168
total_rss 192913408
total_rss_huge 0
total_shmem 9084928
total_mapped_file 217681920
total_dirty 407781376
total_writeback 4096
total_workingset_refault_anon 0
total_workingset_refault_file 4195296
total_swap 0
total_swapcached 0
total_pgpgin 52497261
total_pgpgout 52082933
total_pgfault 57185070
total_pgmajfault 22473
total_inactive_anon 186064896
total_active_anon 1589248
total_inactive_file 1050062848
total_active_file 919355392
total_unevictable 14127104
";

    /// v2 memory.stat (6.x), abridged.
    const V2_STAT: &str = "\
anon 125829120
file 524288000
kernel 10485760
kernel_stack 245760
pagetables 1662976
sec_pagetables 0
percpu 0
sock 0
vmalloc 0
shmem 20971520
zswap 0
zswapped 0
file_mapped 52428800
file_dirty 1048576
file_writeback 65536
swapcached 0
anon_thp 0
file_thp 0
shmem_thp 0
inactive_anon 125829120
active_anon 0
inactive_file 314572800
active_file 209715200
unevictable 8192
slab_reclaimable 5242880
slab_unreclaimable 2097152
slab 7340032
workingset_refault_anon 0
workingset_refault_file 10
pgscan 0
pgsteal 0
pgfault 1000
pgmajfault 2
thp_fault_alloc 0
";

    #[test]
    fn memory_stat_v1_and_v2() {
        let [anon, file, shmem, inactive, unevictable, dirty, wb] =
            keyed(V1_STAT.as_bytes(), V1_STAT_KEYS);
        assert_eq!(anon, Some(192_913_408));
        assert_eq!(file, Some(1_978_503_168));
        assert_eq!(shmem, Some(9_084_928));
        assert_eq!(inactive, Some(1_050_062_848));
        assert_eq!(unevictable, Some(14_127_104));
        assert_eq!(dirty, Some(407_781_376));
        assert_eq!(wb, Some(4096));
        // Non-total keys are distinct keys, not prefixes.
        assert_eq!(
            keyed(V1_STAT.as_bytes(), ["rss", "cache", "inactive_file"]),
            [Some(6_574_080), Some(9_576_448), Some(8192)]
        );

        assert_eq!(
            keyed(V2_STAT.as_bytes(), V2_STAT_KEYS),
            [
                Some(125_829_120),
                Some(524_288_000),
                Some(20_971_520),
                Some(314_572_800),
                Some(8192),
                Some(1_048_576),
                Some(65_536),
            ]
        );
        assert_eq!(keyed(V2_STAT.as_bytes(), ["missing"]), [None]);
    }

    #[test]
    fn keyed_edge_cases() {
        assert_eq!(keyed(b"", ["a"]), [None]);
        assert_eq!(keyed(b"a", ["a"]), [None]);
        assert_eq!(keyed(b"a x\nb 2", ["a", "b"]), [None, Some(2)]);
        assert_eq!(keyed(b"a 1\na 2\n", ["a"]), [Some(1)]);
        assert_eq!(keyed(b"ab 1\na 2\r\n", ["a"]), [Some(2)]);
    }

    #[test]
    fn memory_events_and_oom_control() {
        let events = b"low 0\nhigh 12\nmax 345\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(
            keyed(events, ["high", "max", "oom", "oom_kill"]),
            [Some(12), Some(345), Some(2), Some(1)]
        );
        let oom = b"oom_kill_disable 1\nunder_oom 0\noom_kill 7\n";
        assert_eq!(
            keyed(oom, ["oom_kill_disable", "under_oom", "oom_kill"]),
            [Some(1), Some(0), Some(7)]
        );
        // Pre-4.13 kernels have no oom_kill line.
        assert_eq!(
            keyed(
                b"oom_kill_disable 0\nunder_oom 1\n",
                ["under_oom", "oom_kill"]
            ),
            [Some(1), None]
        );
    }

    #[test]
    fn pressure() {
        let text = b"some avg10=1.50 avg60=0.26 avg300=0.15 total=5726176\n\
                     full avg10=0.02 avg60=0.23 avg300=0.12 total=2630806\n";
        assert_eq!(
            parse_pressure(text),
            Pressure {
                some_avg10: Some(1.5),
                full_avg10: Some(0.02),
                some_total_us: Some(5_726_176),
            }
        );
        // Old kernels: no "full" line for CPU; garbage is ignored.
        let p = parse_pressure(b"some avg10=0.00 avg60=0.00 avg300=0.00 total=0\njunk\n");
        assert_eq!(p.some_avg10, Some(0.0));
        assert_eq!(p.full_avg10, None);
        assert_eq!(p.some_total_us, Some(0));
        assert_eq!(parse_pressure(b""), Pressure::default());
    }

    #[test]
    fn proc_cgroups() {
        let text = b"#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
                     cpuset\t3\t1\t1\n\
                     cpu\t1\t1\t1\n\
                     memory\t4\t14\t1\n\
                     pids\t8\t1\t1\n";
        assert_eq!(proc_cgroups_memory(text), Some(14));
        assert_eq!(proc_cgroups_memory(b"memory\t4\t14\t0\n"), None);
        assert_eq!(proc_cgroups_memory(b"memory_x\t4\t14\t1\n"), None);
        assert_eq!(proc_cgroups_memory(b"cpu\t1\t1\t1\n"), None);
        assert_eq!(proc_cgroups_memory(b""), None);
    }

    #[test]
    fn cgroup_stat() {
        // 6.12: per-controller counts; perf_event pins dying cgroups too.
        let text = b"nr_descendants 0\nnr_subsys_cpu 1\nnr_subsys_memory 1\n\
                     nr_dying_descendants 4\nnr_dying_subsys_cpu 0\n\
                     nr_dying_subsys_memory 3\nnr_dying_subsys_perf_event 2\n";
        assert_eq!(cgroup_stat_dying(text), Some(3));
        // 6.1: only the cgroup count.
        assert_eq!(
            cgroup_stat_dying(b"nr_descendants 12\nnr_dying_descendants 5\n"),
            Some(5)
        );
        assert_eq!(cgroup_stat_dying(b""), None);
    }

    #[test]
    fn limits() {
        assert_eq!(page_counter_max_bytes(4096), UNLIMITED_4K);
        assert_eq!(page_counter_max_bytes(65536), 9_223_372_036_854_710_272);
        assert_eq!(parse_limit(b"9223372036854771712\n", UNLIMITED_4K), None);
        assert_eq!(parse_limit(b"67108864\n", UNLIMITED_4K), Some(67_108_864));
        assert_eq!(parse_limit(b"max\n", UNLIMITED_4K), None);
        assert_eq!(parse_limit(b"0\n", UNLIMITED_4K), Some(0));
        assert_eq!(parse_limit(b"", UNLIMITED_4K), None);
    }

    #[test]
    fn paths() {
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
        let mut p = PathBuf::new();
        set_path(&mut p, Path::new("/sys/fs/cgroup/memory"), "/");
        assert_eq!(p, Path::new("/sys/fs/cgroup/memory"));
        set_path(&mut p, Path::new("/sys/fs/cgroup/memory"), "/a/b");
        assert_eq!(p, Path::new("/sys/fs/cgroup/memory/a/b"));
    }

    /// A fake v1 hierarchy in a temporary directory: exercises the reader
    /// (file names, the limit walk and its cache, deletion) without root.
    #[test]
    fn fake_v1_hierarchy() {
        let tree = FakeTree::new("fake");
        let write = |rel: &str, name: &str, text: &str| tree.write(rel, name, text);
        let unlimited = format!("{}\n", page_counter_max_bytes(page_size()));
        for rel in ["/", "/a", "/a/b", "/a/b/c"] {
            write(rel, "memory.limit_in_bytes", &unlimited);
        }
        write("/a", "memory.limit_in_bytes", "104857600\n");
        write("/a/b", "memory.limit_in_bytes", "67108864\n");
        write("/a/b/c", "memory.usage_in_bytes", "2000000000\n");
        write("/a/b/c", "memory.memsw.limit_in_bytes", "209715200\n");
        write("/a/b/c", "memory.stat", V1_STAT);
        write(
            "/a/b/c",
            "memory.oom_control",
            "oom_kill_disable 1\nunder_oom 1\noom_kill 3\n",
        );

        let fs = tree.fs(CgroupMode::V1);
        let mut r = StateReader::new(&fs);
        let s = r.read("/a/b/c");
        assert_eq!(
            s,
            MemcgState {
                usage_bytes: Some(2_000_000_000),
                limit_bytes: None,
                effective_limit_bytes: Some(67_108_864),
                limited_by: Some("/a/b".into()),
                swap_limit_bytes: Some(209_715_200),
                working_set_bytes: Some(2_000_000_000 - 1_050_062_848),
                anon_bytes: Some(192_913_408),
                file_bytes: Some(1_978_503_168),
                shmem_bytes: Some(9_084_928),
                unevictable_bytes: Some(14_127_104),
                dirty_bytes: Some(407_781_376),
                writeback_bytes: Some(4096),
                inactive_file_bytes: Some(1_050_062_848),
                oom_kill_disable: Some(true),
                under_oom: Some(true),
                events_oom_kill: Some(3),
                ..Default::default()
            }
        );
        // One-off read, other spelling of the path.
        assert_eq!(StateReader::with_root(&fs, tree.0.path()).read("a/b/c/"), s);

        // Cached for the limit TTL, even across refreshes...
        write("/a", "memory.limit_in_bytes", "1048576\n");
        assert_eq!(r.read("/a/b/c").limited_by.as_deref(), Some("/a/b"));
        r.next_refresh();
        assert_eq!(r.read("/a/b/c").limited_by.as_deref(), Some("/a/b"));
        // ...and read again once it has passed.
        r.limit_ttl = Duration::ZERO;
        r.next_refresh();
        let s = r.read("/a/b/c");
        assert_eq!(s.effective_limit_bytes, Some(1_048_576));
        assert_eq!(s.limited_by.as_deref(), Some("/a"));

        // Ties: the memcg closest to the one read.
        write("/a/b", "memory.limit_in_bytes", "1048576\n");
        r.next_refresh();
        assert_eq!(r.read("/a/b/c").limited_by.as_deref(), Some("/a/b"));
        let s = r.read("/a/b");
        assert_eq!(s.limit_bytes, Some(1_048_576));
        assert_eq!(s.limited_by.as_deref(), Some("/a/b"));
        // Missing files: None fields, the memcg still exists.
        assert_eq!(s.usage_bytes, None);
        assert_eq!(s.anon_bytes, None);

        // The root is never limited.
        let s = r.read("/");
        assert_eq!((s.limit_bytes, s.effective_limit_bytes), (None, None));

        // Gone: all None, even with cached ancestors.
        std::fs::remove_dir_all(tree.0.join("a/b/c")).unwrap();
        assert_eq!(r.read("/a/b/c"), MemcgState::default());
        assert_eq!(r.read("/a/../a"), MemcgState::default());
    }

    #[test]
    fn fake_v2_hierarchy() {
        let tree = FakeTree::new("fake2");
        let write = |rel: &str, name: &str, text: &str| tree.write(rel, name, text);
        write("/", "memory.stat", V2_STAT);
        write(
            "/",
            "memory.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=10\n",
        );
        write("/k", "memory.max", "max\n");
        write("/k/p", "memory.max", "536870912\n");
        write("/k/p/c", "memory.max", "max\n");
        write("/k/p/c", "memory.current", "400000000\n");
        write("/k/p/c", "memory.swap.max", "max\n");
        write("/k/p/c", "memory.stat", V2_STAT);
        write(
            "/k/p/c",
            "memory.events",
            "low 0\nhigh 5\nmax 4\noom 3\noom_kill 2\noom_group_kill 0\n",
        );
        write(
            "/k/p/c",
            "memory.pressure",
            "some avg10=12.34 avg60=1.00 avg300=0.10 total=999\n\
             full avg10=5.00 avg60=0.50 avg300=0.05 total=444\n",
        );
        let fs = tree.fs(CgroupMode::V2);
        let mut r = StateReader::new(&fs);
        assert_eq!(
            r.read("/k/p/c"),
            MemcgState {
                usage_bytes: Some(400_000_000),
                limit_bytes: None,
                effective_limit_bytes: Some(536_870_912),
                limited_by: Some("/k/p".into()),
                swap_limit_bytes: None,
                working_set_bytes: Some(85_427_200),
                anon_bytes: Some(125_829_120),
                file_bytes: Some(524_288_000),
                shmem_bytes: Some(20_971_520),
                unevictable_bytes: Some(8192),
                dirty_bytes: Some(1_048_576),
                writeback_bytes: Some(65_536),
                inactive_file_bytes: Some(314_572_800),
                oom_kill_disable: None,
                under_oom: None,
                events_high: Some(5),
                events_max: Some(4),
                events_oom: Some(3),
                events_oom_kill: Some(2),
                pressure_some_avg10: Some(12.34),
                pressure_full_avg10: Some(5.0),
                pressure_some_total_us: Some(999),
            }
        );
        // Saturating: inactive_file exceeds usage.
        write("/k/p/c", "memory.current", "1\n");
        assert_eq!(r.read("/k/p/c").working_set_bytes, Some(0));
        // The root: no memory.current, but the rest is read.
        let s = r.read("/");
        assert_eq!(s.usage_bytes, None);
        assert_eq!(s.anon_bytes, Some(125_829_120));
        assert_eq!(s.pressure_some_total_us, Some(10));
        assert_eq!(s.effective_limit_bytes, None);
    }

    /// A memcg renamed away and another made at its path: the held
    /// directory descriptor must not keep reading the renamed one.
    #[test]
    fn a_renamed_memcg_is_not_read_at_its_old_path() {
        let tree = FakeTree::new("rename");
        // Every file the reader opens (a missing one drops the descriptor).
        let memcg = |rel: &str, usage: &str| {
            for (name, text) in [
                ("memory.usage_in_bytes", usage),
                ("memory.limit_in_bytes", "104857600\n"),
                ("memory.memsw.limit_in_bytes", "209715200\n"),
                ("memory.stat", V1_STAT),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
                ),
            ] {
                tree.write(rel, name, text);
            }
        };
        memcg("/a/x", "1000\n");
        let fs = tree.fs(CgroupMode::V1);
        let mut r = StateReader::new(&fs);
        assert_eq!(r.read("/a/x").usage_bytes, Some(1000));
        r.next_refresh();
        let root = tree.0.path();
        std::fs::rename(root.join("a/x"), root.join("a/y")).unwrap();
        memcg("/a/x", "2000\n");
        assert_eq!(r.read("/a/x").usage_bytes, Some(2000));
        assert_eq!(r.read("/a/y").usage_bytes, Some(1000));
    }

    /// A memory hierarchy of plain files in a scratch directory, removed
    /// when dropped.
    struct FakeTree(TempDir);

    impl FakeTree {
        fn new(tag: &str) -> Self {
            Self(TempDir::new(&format!("state-{tag}")))
        }

        /// Writes control file `name` of memcg `rel`, creating the memcg.
        fn write(&self, rel: &str, name: &str, text: &str) {
            self.0
                .write(Path::new(rel.trim_start_matches('/')).join(name), text);
        }

        fn fs(&self, mode: CgroupMode) -> MemcgFs {
            MemcgFs {
                mode,
                root: self.0.path().to_path_buf(),
                v2: mode == CgroupMode::V2,
            }
        }
    }

    /// Removes a file when dropped.
    struct RemoveFile(PathBuf);

    impl Drop for RemoveFile {
        fn drop(&mut self) {
            match std::fs::remove_file(&self.0) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => eprintln!("cleanup: rm {}: {e}", self.0.display()),
            }
        }
    }

    /// Kills and reaps a child process when dropped.
    struct KillChild(Child);

    impl Drop for KillChild {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Real memcgs: a 64 MiB limit on a parent, 100 MiB of page cache
    /// written from its child.
    #[test]
    #[ignore = "needs root: creates memory cgroups (cargo xtask test runs it)"]
    fn real_memcg_with_page_cache() {
        // Dropped last to first: the child process, the file, the memcgs.
        let (fs, mut dirs, parent, parent_rel) = TestDirs::root_memcg("state-dev");
        let child = dirs.mkcg(&fs, parent.join("child"));
        let data = PathBuf::from(format!("/var/tmp/state-dev-{}", std::process::id()));
        let _data = RemoveFile(data.clone());

        let limit_file = if fs.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        const LIMIT: u64 = 64 << 20;
        std::fs::write(parent.join(limit_file), LIMIT.to_string()).unwrap();

        let mut dd = KillChild(
            Command::new("sh")
                .arg("-c")
                .arg(r#"echo $$ > "$1" && exec dd if=/dev/zero of="$2" bs=1M count=100"#)
                .arg("sh")
                .arg(child.join("cgroup.procs"))
                .arg(&data)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn sh/dd"),
        );
        let status = dd.0.wait().unwrap();
        let mut err = String::new();
        if let Some(mut e) = dd.0.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        assert!(status.success(), "dd in the memcg failed: {status}: {err}");

        let child_rel = format!("{parent_rel}/child");
        let mut r = StateReader::new(&fs);
        let s = r.read(&child_rel);
        eprintln!("child: {s:#?}");
        let usage = s.usage_bytes.expect("usage");
        assert!(usage > 0, "{s:?}");
        assert!(usage <= LIMIT, "{s:?}");
        assert!(s.file_bytes.expect("file") > 0, "{s:?}");
        assert_eq!(s.limit_bytes, None);
        assert_eq!(s.effective_limit_bytes, Some(LIMIT));
        assert_eq!(s.limited_by.as_deref(), Some(parent_rel.as_str()));
        let ws = s.working_set_bytes.expect("working set");
        assert!(ws <= usage, "{s:?}");
        assert!(s.inactive_file_bytes.is_some(), "{s:?}");
        assert!(s.anon_bytes.is_some() && s.shmem_bytes.is_some(), "{s:?}");
        assert!(
            s.dirty_bytes.is_some() && s.writeback_bytes.is_some(),
            "{s:?}"
        );
        assert!(s.unevictable_bytes.is_some(), "{s:?}");
        if fs.v2 {
            assert_eq!(s.oom_kill_disable, None);
            assert_eq!(s.events_oom_kill, Some(0), "{s:?}");
            assert!(s.events_max.is_some(), "{s:?}");
        } else {
            assert_eq!(s.oom_kill_disable, Some(false));
            assert_eq!(s.under_oom, Some(false));
            assert_eq!(s.events_oom_kill, Some(0), "{s:?}");
            assert_eq!(s.events_max, None);
            assert_eq!(s.pressure_some_avg10, None);
        }

        let p = r.read(&parent_rel);
        assert_eq!(p.limit_bytes, Some(LIMIT));
        assert_eq!(p.effective_limit_bytes, Some(LIMIT));
        assert_eq!(p.limited_by.as_deref(), Some(parent_rel.as_str()));
        assert!(p.usage_bytes.unwrap() >= usage, "{p:?} vs {s:?}");

        let root = r.read("/");
        assert_eq!(root.limit_bytes, None);
        assert_eq!(root.effective_limit_bytes, None);
        assert!(root.file_bytes.is_some(), "{root:?}");
        assert_eq!(root.usage_bytes.is_some(), !fs.v2, "{root:?}");

        // One read gets a cgroupfs file whole, as reading to the end does.
        let mut buf = Vec::new();
        let stat = parent.join("memory.stat");
        read_whole_show(File::open(&stat).unwrap(), &mut buf).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        let keys = |t: &str| {
            t.lines()
                .map(|l| l.split(' ').next().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&text), keys(&std::fs::read_to_string(&stat).unwrap()));
        assert!(text.ends_with('\n'), "{text}");
        if !fs.v2 {
            // The parent's limit stopped the child's writes.
            let hits = r.limit_hits_v1(&parent_rel);
            assert!(hits.is_some_and(|h| h > 0), "{hits:?}");
            assert_eq!(hits, super::super::stats::limit_hits(&fs, &parent));
        }

        // Without directory descriptors (none left under the descriptor
        // limit), files open by path and read the same.
        let mut by_path = StateReader::new(&fs);
        by_path.max_dirs = 0;
        let again = r.read(&child_rel);
        let plain = by_path.read(&child_rel);
        assert!(by_path.dirs.is_empty() && !r.dirs.is_empty());
        assert_eq!(
            (
                plain.limit_bytes,
                plain.effective_limit_bytes,
                plain.limited_by.clone()
            ),
            (
                again.limit_bytes,
                again.effective_limit_bytes,
                again.limited_by.clone()
            )
        );
        assert_eq!(plain.usage_bytes.is_some(), again.usage_bytes.is_some());

        // One-off read agrees on the limits.
        let one = StateReader::with_root(&fs, &fs.root).read(&child_rel);
        assert_eq!(one.effective_limit_bytes, Some(LIMIT));

        // Dying memcgs: a number on both versions (its value depends on
        // what else the host does).
        let live = count_dirs(&fs.root);
        let dying = dying_memcgs(&fs, live);
        eprintln!("live {live}, dying {dying:?}");
        assert!(dying.is_some());

        // Deleted: all None.
        drop(dd);
        std::fs::remove_dir(&child).unwrap();
        assert_eq!(r.read(&child_rel), MemcgState::default());
    }

    fn count_dirs(dir: &Path) -> usize {
        1 + std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| count_dirs(&e.path()))
                    .sum()
            })
            .unwrap_or(0)
    }
}
