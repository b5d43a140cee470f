//! The non-blocking `/dev/kmsg` reader: the backlog at start-up, then the
//! live records within the tokio runtime.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::record::{KmsgRecord, parse_record};

/// kmsg records are at most CONSOLE_EXT_LOG_MAX (8 KiB) long.
const READ_BUF: usize = 8192;
/// Records read per wake-up in [`KmsgReader::next`] (bounds the queue).
const LIVE_BATCH: usize = 256;
/// Safety bound for [`KmsgReader::read_backlog`] under a log flood.
const BACKLOG_MAX: usize = 1 << 20;

enum Drained {
    WouldBlock,
    Limit,
}

/// Reads records until EAGAIN or `max` records; skips EPIPE (records
/// overwritten under us) and EINVAL (record larger than the buffer).
fn drain(
    mut file: &File,
    buf: &mut [u8],
    max: usize,
    sink: &mut dyn FnMut(KmsgRecord),
) -> io::Result<Drained> {
    let (mut n, mut einval) = (0, 0);
    while n < max {
        match file.read(buf) {
            Ok(0) => return Ok(Drained::WouldBlock),
            Ok(len) => {
                n += 1;
                einval = 0;
                if let Some(rec) = parse_record(&buf[..len]) {
                    sink(rec);
                }
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(Drained::WouldBlock),
                Some(libc::EINTR | libc::EPIPE) => {}
                // The kernel advances past a too-large record; bound it anyway.
                Some(libc::EINVAL) if einval < 64 => einval += 1,
                _ => return Err(e),
            },
        }
    }
    Ok(Drained::Limit)
}

/// Non-blocking `/dev/kmsg` reader. A fresh reader starts at the oldest record
/// still in the kernel's ring buffer.
pub struct KmsgReader {
    /// The open file until [`KmsgReader::next`] first registers it with the
    /// tokio reactor; exactly one of `file` / `async_fd` is `Some`.
    file: Option<File>,
    async_fd: Option<AsyncFd<File>>,
    pending: VecDeque<KmsgRecord>,
    buf: Vec<u8>,
}

impl KmsgReader {
    /// Opens `/dev/kmsg` (O_RDONLY|O_NONBLOCK|O_CLOEXEC); needs no runtime.
    pub fn open() -> io::Result<KmsgReader> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/kmsg")?;
        Ok(KmsgReader {
            file: Some(file),
            async_fd: None,
            pending: VecDeque::new(),
            buf: vec![0; READ_BUF],
        })
    }

    /// Every line the kernel has printed so far has been handed out by
    /// [`KmsgReader::next`]: nothing is queued and `/dev/kmsg` has no
    /// record past our position (poll(2) without waiting). An unreadable
    /// state counts as caught up: nothing more will come from it.
    pub fn caught_up(&self) -> bool {
        if !self.pending.is_empty() {
            return false;
        }
        let Some(file) = self.file() else {
            return true;
        };
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(file),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a count of 1 and a zero timeout; poll
        // only writes `revents`.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n <= 0 || pfd.revents & libc::POLLIN == 0
    }

    fn file(&self) -> Option<&File> {
        self.async_fd
            .as_ref()
            .map(AsyncFd::get_ref)
            .or(self.file.as_ref())
    }

    /// Everything currently in the buffer (from the reader's position, the
    /// oldest record for a fresh reader) until EAGAIN. Stops early on an
    /// unexpected read error.
    pub fn read_backlog(&mut self) -> Vec<KmsgRecord> {
        let mut out: Vec<KmsgRecord> = self.pending.drain(..).collect();
        let mut buf = std::mem::take(&mut self.buf);
        if let Some(file) = self.file() {
            let _ = drain(file, &mut buf, BACKLOG_MAX, &mut |r| out.push(r));
        }
        self.buf = buf;
        out
    }

    /// The next record, waiting for it. Cancel-safe: records already read
    /// are queued in the reader, so dropping this future loses nothing.
    /// Must be called within a tokio runtime with IO enabled.
    pub async fn next(&mut self) -> io::Result<KmsgRecord> {
        loop {
            if let Some(rec) = self.pending.pop_front() {
                return Ok(rec);
            }
            if let Some(file) = self.file.take() {
                // SAFETY: the AsyncFd owns the File, so the fd stays open and
                // the same for the AsyncFd's whole lifetime.
                match unsafe { AsyncFd::register_with_interest(file, Interest::READABLE) } {
                    Ok(afd) => self.async_fd = Some(afd),
                    Err(e) => {
                        let (file, err) = e.into_parts();
                        self.file = Some(file);
                        return Err(err);
                    }
                }
            }
            let Some(afd) = self.async_fd.as_ref() else {
                return Err(io::Error::other("kmsg reader has no file"));
            };
            let mut guard = afd.readable().await?;
            // No await from here on: whatever is read is queued before the
            // next cancellation point.
            let pending = &mut self.pending;
            let drained = drain(afd.get_ref(), &mut self.buf, LIVE_BATCH, &mut |r| {
                pending.push_back(r)
            })?;
            if let Drained::WouldBlock = drained {
                guard.clear_ready();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::OomAssembler;
    use super::*;

    /// Kills and reaps the child when the test ends, also when it fails,
    /// so that its memcg can be removed.
    struct ChildGuard(Option<std::process::Child>);

    impl Drop for ChildGuard {
        fn drop(&mut self) {
            if let Some(mut c) = self.0.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    fn require_root(what: &str) {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "{what} must run as root (it reads and writes /dev/kmsg): run `sudo -E cargo test`"
        );
    }

    #[test]
    #[ignore = "needs root: creates a memcg, OOM-kills a child in it and reads /dev/kmsg"]
    fn real_oom_is_parsed_from_dev_kmsg() {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::process::{CommandExt, ExitStatusExt};
        use std::time::{Duration, Instant};

        use crate::cgroup::testutil::{TestDirs, require_root_memcg};

        let fs = require_root_memcg();
        let name = format!("kmsg-dev-{}", std::process::id());
        // Declared before the child's guard: removed after it is reaped.
        let mut dirs = TestDirs::new();
        let dir = dirs.mkcg(&fs, fs.root.join(&name));
        let (limit, swap) = if fs.v2 {
            ("memory.max", "memory.swap.max")
        } else {
            ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes")
        };
        std::fs::write(dir.join(limit), "64M").unwrap();
        // Where swap is accounted, allow none, so that the kill comes at
        // the limit and not once swap is full.
        if dir.join(swap).exists() {
            let no_swap = if fs.v2 { "0" } else { "64M" };
            std::fs::write(dir.join(swap), no_swap).unwrap();
        }

        let procs =
            std::ffi::CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).unwrap();
        let mut cmd = std::process::Command::new("tail");
        cmd.arg("/dev/zero")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: only async-signal-safe calls, no allocation.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = io::Error::last_os_error();
                libc::close(fd);
                if n == 1 { Ok(()) } else { Err(err) }
            });
        }
        let mut guard = ChildGuard(None);
        let child = guard.0.insert(cmd.spawn().expect("spawn tail /dev/zero"));
        let pid = child.id();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "tail {pid} was not OOM-killed within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        guard.0 = None; // reaped
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "tail {pid} ended with {status:?}"
        );

        let mut reader = KmsgReader::open().expect("open /dev/kmsg");
        let mut asm = OomAssembler::new();
        let mut seen = Vec::new();
        let report = loop {
            let mut found = None;
            for r in reader.read_backlog() {
                if let Some(rep) = asm.push(&r) {
                    if rep.victim.pid == pid {
                        found = Some(rep);
                    }
                }
                seen.push(r);
                if seen.len() > 100_000 {
                    seen.drain(..50_000);
                }
            }
            if let Some(rep) = found {
                break rep;
            }
            assert!(
                start.elapsed() < Duration::from_secs(70),
                "no OOM report for pid {pid} in /dev/kmsg"
            );
            std::thread::sleep(Duration::from_millis(100));
        };

        // Print the raw report (header .. Killed) for reference.
        let end = seen.iter().rposition(|r| r.seq == report.seq).unwrap();
        let begin = seen[..end]
            .iter()
            .rposition(|r| r.message.contains(" invoked oom-killer: "))
            .unwrap_or(end);
        for r in &seen[begin..=(end + 2).min(seen.len() - 1)] {
            eprintln!("{},{};{}", r.seq, r.ts_usec, r.message);
        }
        eprintln!("{report:#?}");

        let memcg = format!("/{name}");
        assert_eq!(report.victim.comm, "tail");
        assert_eq!(report.oom_memcg.as_deref(), Some(memcg.as_str()));
        assert_eq!(report.task_memcg.as_deref(), Some(memcg.as_str()));
        assert_eq!(report.constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
        assert_eq!(report.trigger_comm.as_deref(), Some("tail"));
        assert_eq!(report.victim.uid, Some(0));
        assert!(!report.global);
        // file-rss counts shared library pages not charged to this memcg.
        let anon = report.victim.rss_anon_kb.unwrap();
        assert!(
            (32 * 1024..=64 * 1024).contains(&anon),
            "anon-rss {anon} kB vs 64M limit"
        );
    }

    #[test]
    #[ignore = "needs root: reads and writes /dev/kmsg"]
    fn live_next_is_cancel_safe() {
        use std::io::Write;
        use std::time::Duration;

        require_root("live_next_is_cancel_safe");
        let mut reader = KmsgReader::open().expect("open /dev/kmsg");
        reader.read_backlog();
        let tag = format!("kmsg-dev-live-{}", std::process::id());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let writer = tokio::spawn({
                let tag = tag.clone();
                async move {
                    let mut w = OpenOptions::new().write(true).open("/dev/kmsg").unwrap();
                    for i in 0..5 {
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        // One write() is one record; two records per burst. A
                        // record without '\n' stays open (invisible) for pr_cont.
                        w.write_all(format!("<6>{tag} {i}a\n").as_bytes()).unwrap();
                        w.write_all(format!("<6>{tag} {i}b\n").as_bytes()).unwrap();
                    }
                }
            });
            let mut got = Vec::new();
            let mut ticks = 0;
            let deadline = tokio::time::sleep(Duration::from_secs(10));
            tokio::pin!(deadline);
            while got.len() < 10 {
                tokio::select! {
                    r = reader.next() => {
                        let r = r.unwrap();
                        if let Some(rest) = r.message.strip_prefix(&format!("{tag} ")) {
                            got.push(rest.to_string());
                        }
                    }
                    _ = tokio::time::sleep(Duration::from_millis(1)) => ticks += 1,
                    _ = &mut deadline => panic!("timed out, got {got:?}"),
                }
            }
            writer.await.unwrap();
            let want: Vec<String> = (0..5)
                .flat_map(|i| [format!("{i}a"), format!("{i}b")])
                .collect();
            assert_eq!(got, want);
            assert!(ticks > 0, "the next() future was never dropped");
        });
    }
}
