//! Kernel log (`/dev/kmsg`) reader and OOM-killer report parser.
//!
//! The OOM report in the kernel log is memtrace's source of truth for OOM
//! kills on every kernel: it names the memcg whose limit fired and the
//! victim's rss, and reading the backlog on start-up reveals kills that
//! happened before memtrace started.
//!
//! A report (mm/oom_kill.c, 4.19 .. 6.18) looks like:
//!
//! ```text
//! tail invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
//! ... memory / task dump lines ...
//! oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a/b,task=tail,pid=1234,uid=0
//! Memory cgroup out of memory: Killed process 1234 (tail) total-vm:..kB, anon-rss:..kB, file-rss:..kB, shmem-rss:..kB, UID:0 pgtables:..kB oom_score_adj:0
//! [Tasks in /a are going to be killed due to memory.oom.group set
//!  Memory cgroup out of memory: Killed process ... (one per group member)]
//! ```
//!
//! The header and the `oom-kill:` summary are rate limited by the kernel, the
//! `Killed process` line is not. Before 4.19 there is no summary line and the
//! `Killed process` line has no `Out of memory:` prefix (parsed, but reported
//! as `global`). Messages are kept exactly as the kernel escaped them (`\xNN`
//! for control, non-ASCII bytes and `\`): never unescape them.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// One `/dev/kmsg` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsgRecord {
    /// Syslog facility (PRIO >> 3): 0 for the kernel's own messages, non-zero
    /// for records user space wrote to /dev/kmsg (which may be forgeries).
    pub facility: u32,
    pub seq: u64,
    /// Microseconds since boot (CLOCK_MONOTONIC based, as `dmesg` shows).
    pub ts_usec: u64,
    /// The message, still escaped by the kernel; pure printable ASCII.
    pub message: String,
}

/// Parses one record as returned by one `read()` of `/dev/kmsg`:
/// `PRIO,SEQ,TS_USEC,FLAGS[,more];MESSAGE\n` plus ` KEY=VALUE\n` continuation
/// lines (ignored). Returns `None` for anything malformed.
pub fn parse_record(buf: &[u8]) -> Option<KmsgRecord> {
    let line = buf.split(|&b| b == b'\n').next()?;
    let semi = line.iter().position(|&b| b == b';')?;
    let header = std::str::from_utf8(&line[..semi]).ok()?;
    let mut fields = header.split(',');
    let prio: u32 = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let ts_usec = fields.next()?.parse().ok()?;
    Some(KmsgRecord {
        facility: prio >> 3,
        seq,
        ts_usec,
        message: printable(&line[semi + 1..]),
    })
}

/// Keeps the kernel's escaping as is and escapes, the way the kernel does,
/// any byte that should not be there (control or non-ASCII), so a message can
/// never carry a raw control character.
fn printable(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x20..0x7f).contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

/// One recognised line of an OOM report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OomLine {
    /// `COMM invoked oom-killer: gfp_mask=.., order=.., oom_score_adj=..`
    Invoked {
        comm: String,
        gfp_mask: Option<String>,
        order: Option<i32>,
        oom_score_adj: Option<i32>,
    },
    /// `oom-kill:constraint=..,..,task=COMM,pid=..,uid=..` (4.19+).
    Summary {
        constraint: String,
        oom_memcg: Option<String>,
        task_memcg: Option<String>,
        task: String,
        pid: u32,
        uid: Option<u32>,
    },
    /// `[Out of memory|Memory cgroup out of memory]: Killed process PID (COMM) total-vm:..`
    Killed {
        global: bool,
        pid: u32,
        comm: String,
        total_vm_kb: Option<u64>,
        anon_rss_kb: Option<u64>,
        file_rss_kb: Option<u64>,
        shmem_rss_kb: Option<u64>,
        uid: Option<u32>,
        pgtables_kb: Option<u64>,
        oom_score_adj: Option<i32>,
    },
    /// `Tasks in MEMCG are going to be killed due to memory.oom.group set`:
    /// the following `Killed process` lines are the other group members.
    GroupKill { memcg: String },
}

/// Recognises one line of an OOM report; `None` for any other line.
pub fn parse_oom_line(message: &str) -> Option<OomLine> {
    if message.starts_with("oom-kill:") {
        return parse_summary(message, None);
    }
    if let Some(memcg) = message
        .strip_prefix("Tasks in ")
        .and_then(|m| m.strip_suffix(" are going to be killed due to memory.oom.group set"))
    {
        return Some(OomLine::GroupKill {
            memcg: memcg.to_string(),
        });
    }
    parse_killed(message).or_else(|| parse_invoked(message))
}

fn parse_invoked(message: &str) -> Option<OomLine> {
    const PAT: &str = " invoked oom-killer: ";
    // A comm is at most 15 bytes, shorter than PAT, so the first match is the
    // real one.
    let at = message.find(PAT)?;
    let (mut gfp_mask, mut order, mut oom_score_adj) = (None, None, None);
    for field in message[at + PAT.len()..].split(", ") {
        match field.split_once('=') {
            Some(("gfp_mask", v)) => gfp_mask = Some(v.to_string()),
            Some(("order", v)) => order = v.trim().parse().ok(),
            Some(("oom_score_adj", v)) => oom_score_adj = v.trim().parse().ok(),
            _ => {}
        }
    }
    Some(OomLine::Invoked {
        comm: message[..at].to_string(),
        gfp_mask,
        order,
        oom_score_adj,
    })
}

fn parse_killed(message: &str) -> Option<OomLine> {
    const PAT: &str = "Killed process ";
    const VM: &str = ") total-vm:";
    let at = message.find(PAT)?;
    let prefix = &message[..at];
    if !(prefix.is_empty() || prefix.ends_with(": ")) {
        return None;
    }
    let rest = &message[at + PAT.len()..];
    let (pid, rest) = rest.split_once(" (")?;
    let pid = pid.parse().ok()?;
    // The comm may itself contain ") total-vm:"; the numbers after the real
    // one cannot, so the right-most match is the end of the comm.
    let end = rest.rfind(VM)?;
    let comm = rest[..end].to_string();
    let mut tokens = rest[end + VM.len()..]
        .split([',', ' '])
        .filter(|t| !t.is_empty());
    let total_vm_kb = Some(kb(tokens.next()?)?);
    let (mut anon, mut file, mut shmem, mut uid, mut pgtables, mut adj) =
        (None, None, None, None, None, None);
    for token in tokens {
        match token.split_once(':') {
            Some(("anon-rss", v)) => anon = kb(v),
            Some(("file-rss", v)) => file = kb(v),
            Some(("shmem-rss", v)) => shmem = kb(v),
            Some(("UID", v)) => uid = parse_uid(v),
            Some(("pgtables", v)) => pgtables = kb(v),
            Some(("oom_score_adj", v)) => adj = v.parse().ok(),
            _ => {}
        }
    }
    Some(OomLine::Killed {
        global: !prefix.starts_with("Memory cgroup"),
        pid,
        comm,
        total_vm_kb,
        anon_rss_kb: anon,
        file_rss_kb: file,
        shmem_rss_kb: shmem,
        uid,
        pgtables_kb: pgtables,
        oom_score_adj: adj,
    })
}

fn kb(v: &str) -> Option<u64> {
    v.strip_suffix("kB").unwrap_or(v).parse().ok()
}

/// uids are printed with `%d` in the summary (so > 2^31 shows negative).
fn parse_uid(v: &str) -> Option<u32> {
    let n: i64 = v.trim().parse().ok()?;
    match n {
        0..=0xffff_ffff => Some(n as u32),
        -0x8000_0000..0 => Some(n as i32 as u32),
        _ => None,
    }
}

/// Parses the `oom-kill:` summary. `comm_hint` (the comm of the matching
/// `Killed process` line, which is unambiguous) resolves a comm or a cgroup
/// path containing `,task=`.
fn parse_summary(message: &str, comm_hint: Option<&str>) -> Option<OomLine> {
    let body = message.strip_prefix("oom-kill:")?;
    let constraint = body.strip_prefix("constraint=")?.split(',').next()?;
    if constraint.is_empty() {
        return None;
    }
    // Everything right of the comm is numeric: parse pid and uid from the
    // right (4.19 pads them: "pid= 1234,uid=    0").
    let (body, uid) = match body.rfind(",uid=") {
        Some(i) => match parse_uid(&body[i + 5..]) {
            Some(uid) => (&body[..i], Some(uid)),
            None => (body, None),
        },
        None => (body, None),
    };
    let at = body.rfind(",pid=")?;
    let pid = body[at + 5..].trim().parse().ok()?;
    let ctx = &body[..at];
    let task_at = match comm_hint.map(|c| format!(",task={c}")) {
        Some(pat) if ctx.ends_with(&pat) => ctx.len() - pat.len(),
        _ => {
            let from = ctx.find(",task_memcg=").map_or(0, |i| i + 12);
            from + ctx[from..].find(",task=")?
        }
    };
    let task = ctx[task_at + 6..].to_string();
    let (oom_memcg, task_memcg) = parse_memcgs(&ctx[..task_at]);
    Some(OomLine::Summary {
        constraint: constraint.to_string(),
        oom_memcg: oom_memcg.map(str::to_string),
        task_memcg: task_memcg.map(str::to_string),
        task,
        pid,
        uid,
    })
}

/// `..,oom_memcg=A,task_memcg=B` or `..,global_oom,task_memcg=B`. Where a
/// path contains `,task_memcg=`, pick the split that makes B a descendant of
/// (or equal to) A, as the kernel guarantees.
fn parse_memcgs(ctx: &str) -> (Option<&str>, Option<&str>) {
    const TASK: &str = ",task_memcg=";
    if let Some(i) = ctx.find(",oom_memcg=") {
        let after = &ctx[i + 11..];
        let mut best = None;
        for (j, _) in after.match_indices(TASK) {
            let (oom, task) = (&after[..j], &after[j + TASK.len()..]);
            if best.is_none() || is_within(task, oom) {
                best = Some((oom, task));
            }
            if is_within(task, oom) {
                break;
            }
        }
        return match best {
            Some((oom, task)) => (Some(oom), Some(task)),
            None => (Some(after), None),
        };
    }
    let from = ctx.find(",global_oom").unwrap_or(0);
    (
        None,
        ctx[from..]
            .find(TASK)
            .map(|j| &ctx[from + j + TASK.len()..]),
    )
}

fn is_within(path: &str, ancestor: &str) -> bool {
    path == ancestor
        || (path.starts_with(ancestor)
            && (ancestor.ends_with('/') || path[ancestor.len()..].starts_with('/')))
}

/// One OOM kill, assembled from the report's lines.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OomReport {
    /// seq / timestamp of the `Killed process` record.
    pub seq: u64,
    pub ts_usec: u64,
    /// The task whose allocation invoked the OOM killer.
    pub trigger_comm: Option<String>,
    pub constraint: Option<String>,
    /// The memcg whose limit fired (None: global OOM or no summary).
    pub oom_memcg: Option<String>,
    /// The victim's memcg.
    pub task_memcg: Option<String>,
    pub pid: u32,
    pub comm: String,
    pub global: bool,
    pub total_vm_kb: Option<u64>,
    pub anon_rss_kb: Option<u64>,
    pub file_rss_kb: Option<u64>,
    pub shmem_rss_kb: Option<u64>,
    pub pgtables_kb: Option<u64>,
    pub uid: Option<u32>,
    pub oom_score_adj: Option<i32>,
}

/// Summaries longer than this are not kept (a kmsg record is < 8 KiB).
const MAX_SUMMARY: usize = 16 * 1024;
/// memory.oom.group kills follow their report within this time.
const GROUP_WINDOW_USEC: u64 = 5_000_000;

/// Context of the last report, applied to the memory.oom.group kills.
#[derive(Debug, Clone)]
struct GroupCtx {
    victim_pid: u32,
    ts_usec: u64,
    global: bool,
    trigger_comm: Option<String>,
    constraint: Option<String>,
    oom_memcg: Option<String>,
}

/// Turns a stream of records into [`OomReport`]s, one per `Killed process`
/// line. Only kernel records (facility 0) are considered. Keeps at most one
/// pending header, one summary and one group context.
#[derive(Debug, Default)]
pub struct OomAssembler {
    invoked: Option<String>,
    /// (pid, raw message) of the pending summary.
    summary: Option<(u32, String)>,
    /// A summary split over several records (its pr_cont pieces were
    /// interleaved with another CPU's messages).
    partial: Option<String>,
    last: Option<GroupCtx>,
    group: Option<GroupCtx>,
}

impl OomAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, rec: &KmsgRecord) -> Option<OomReport> {
        if rec.facility != 0 {
            return None; // user space cannot forge OOM reports
        }
        let mut message = rec.message.as_str();
        let mut line = parse_oom_line(message);
        let joined;
        if line.is_none() && message.starts_with("oom-kill:") {
            self.partial = (message.len() <= MAX_SUMMARY).then(|| message.to_string());
            return None;
        } else if line.is_none() {
            // Maybe the rest of a split summary; unrelated records are skipped.
            let partial = self.partial.as_mut()?;
            let candidate = format!("{partial}{message}");
            line = parse_summary(&candidate, None);
            if line.is_none() {
                if message.starts_with(',') && candidate.len() <= MAX_SUMMARY {
                    *partial = candidate;
                }
                return None;
            }
            joined = candidate;
            message = &joined;
        }
        match line? {
            OomLine::Invoked { comm, .. } => {
                *self = Self::default();
                self.invoked = Some(comm);
                None
            }
            OomLine::Summary { pid, .. } => {
                self.last = None;
                self.group = None;
                self.partial = None;
                self.summary = (message.len() <= MAX_SUMMARY).then(|| (pid, message.to_string()));
                None
            }
            OomLine::GroupKill { .. } => {
                self.group = self.last.take().map(|g| GroupCtx {
                    ts_usec: rec.ts_usec,
                    ..g
                });
                None
            }
            OomLine::Killed {
                global,
                pid,
                comm,
                total_vm_kb,
                anon_rss_kb,
                file_rss_kb,
                shmem_rss_kb,
                uid,
                pgtables_kb,
                oom_score_adj,
            } => {
                let mut report = OomReport {
                    seq: rec.seq,
                    ts_usec: rec.ts_usec,
                    pid,
                    global,
                    total_vm_kb,
                    anon_rss_kb,
                    file_rss_kb,
                    shmem_rss_kb,
                    pgtables_kb,
                    uid,
                    oom_score_adj,
                    ..OomReport::default()
                };
                let summary = self.summary.take();
                let invoked = self.invoked.take();
                self.partial = None;
                let in_group = self
                    .group
                    .as_ref()
                    .filter(|g| rec.ts_usec.saturating_sub(g.ts_usec) <= GROUP_WINDOW_USEC);
                if let Some((_, raw)) = summary.as_ref().filter(|(p, _)| *p == pid) {
                    if let Some(OomLine::Summary {
                        constraint,
                        oom_memcg,
                        task_memcg,
                        uid,
                        ..
                    }) = parse_summary(raw, Some(&comm))
                    {
                        report.constraint = Some(constraint);
                        report.oom_memcg = oom_memcg;
                        report.task_memcg = task_memcg;
                        report.uid = report.uid.or(uid);
                    }
                    report.trigger_comm = invoked;
                } else if let Some(g) = in_group {
                    if g.victim_pid == pid {
                        return None; // the group scan kills the first victim again
                    }
                    report.global = g.global;
                    report.trigger_comm = g.trigger_comm.clone();
                    report.constraint = g.constraint.clone();
                    report.oom_memcg = g.oom_memcg.clone();
                    report.comm = comm;
                    return Some(report);
                } else if summary.is_none() {
                    // Pre-4.19 kernels have no summary; a rate-limited report
                    // has neither header nor summary, so this one is ours.
                    report.trigger_comm = invoked;
                }
                report.comm = comm;
                self.group = None;
                self.last = Some(GroupCtx {
                    victim_pid: pid,
                    ts_usec: rec.ts_usec,
                    global: report.global,
                    trigger_comm: report.trigger_comm.clone(),
                    constraint: report.constraint.clone(),
                    oom_memcg: report.oom_memcg.clone(),
                });
                Some(report)
            }
        }
    }
}

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

/// Undoes the kernel's `\xNN` escaping of a message fragment (a cgroup
/// path, a comm) to the original bytes, e.g. to find that cgroup on disk.
pub fn unescape(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
            if let Some(v) = b
                .get(i + 2..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn unescape_restores_escaped_bytes() {
        assert_eq!(
            unescape("/a\\x1b]0;x\\x07\\xc2\\x9bb"),
            b"/a\x1b]0;x\x07\xc2\x9bb"
        );
        assert_eq!(unescape("plain/path"), b"plain/path");
        assert_eq!(unescape("odd\\x1"), b"odd\\x1");
        assert_eq!(unescape("\\x5c"), b"\\");
    }
    use super::*;

    const INVOKED: &str =
        "tail invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0";
    const SUMMARY: &str = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/memtrace-test,task_memcg=/memtrace-test/child,task=tail,pid=1234,uid=0";
    const KILLED: &str = "Memory cgroup out of memory: Killed process 1234 (tail) total-vm:262144kB, anon-rss:65536kB, file-rss:4kB, shmem-rss:0kB, UID:0 pgtables:200kB oom_score_adj:0";
    const GLOBAL_SUMMARY: &str = "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/user.slice/user-0.slice/session-1.scope,task=stress,pid=77,uid=1000";
    const GLOBAL_KILLED: &str = "Out of memory: Killed process 77 (stress) total-vm:8409280kB, anon-rss:7864320kB, file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:15500kB oom_score_adj:0";

    fn rec(seq: u64, message: &str) -> KmsgRecord {
        KmsgRecord {
            facility: 0,
            seq,
            ts_usec: seq * 1000,
            message: message.to_string(),
        }
    }

    #[test]
    fn record_with_continuation_lines() {
        let raw =
            b"6,1234,5678901,-,caller=T42;usb 1-1: new device\n SUBSYSTEM=usb\n DEVICE=c189:1\n";
        let r = parse_record(raw).unwrap();
        assert_eq!((r.seq, r.ts_usec), (1234, 5678901));
        assert_eq!(r.message, "usb 1-1: new device");
        let r = parse_record(b"3,9,10,-;Memory cgroup out of memory: x;y\n").unwrap();
        assert_eq!(r.message, "Memory cgroup out of memory: x;y");
        // 3.x-era header without flags, no trailing newline.
        assert_eq!(parse_record(b"4,7,8;m").unwrap().message, "m");
    }

    #[test]
    fn record_message_stays_escaped() {
        let r = parse_record(b"4,1,2,-;a\\x1bb\x1b\x7f\xff\tz\n").unwrap();
        assert_eq!(r.message, "a\\x1bb\\x1b\\x7f\\xff\\x09z");
        assert!(r.message.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }

    #[test]
    fn garbage_records_are_none() {
        for raw in [
            &b""[..],
            b"\n",
            b"hello",
            b";msg",
            b"6,1;msg",
            b"6,x,1,-;msg",
            b"x,1,2,-;msg",
            b"6,-1,2,-;msg",
            b"6,1,2\xff,-;msg",
            b" SUBSYSTEM=usb\n",
        ] {
            assert_eq!(parse_record(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn memcg_oom_lines() {
        assert_eq!(
            parse_oom_line(INVOKED),
            Some(OomLine::Invoked {
                comm: "tail".into(),
                gfp_mask: Some("0xcc0(GFP_KERNEL)".into()),
                order: Some(0),
                oom_score_adj: Some(0),
            })
        );
        assert_eq!(
            parse_oom_line(SUMMARY),
            Some(OomLine::Summary {
                constraint: "CONSTRAINT_MEMCG".into(),
                oom_memcg: Some("/memtrace-test".into()),
                task_memcg: Some("/memtrace-test/child".into()),
                task: "tail".into(),
                pid: 1234,
                uid: Some(0),
            })
        );
        assert_eq!(
            parse_oom_line(KILLED),
            Some(OomLine::Killed {
                global: false,
                pid: 1234,
                comm: "tail".into(),
                total_vm_kb: Some(262144),
                anon_rss_kb: Some(65536),
                file_rss_kb: Some(4),
                shmem_rss_kb: Some(0),
                uid: Some(0),
                pgtables_kb: Some(200),
                oom_score_adj: Some(0),
            })
        );
    }

    #[test]
    fn global_oom_lines() {
        let Some(OomLine::Summary {
            constraint,
            oom_memcg,
            task_memcg,
            task,
            pid,
            uid,
        }) = parse_oom_line(GLOBAL_SUMMARY)
        else {
            panic!("not a summary")
        };
        assert_eq!(constraint, "CONSTRAINT_NONE");
        assert_eq!(oom_memcg, None);
        assert_eq!(
            task_memcg.as_deref(),
            Some("/user.slice/user-0.slice/session-1.scope")
        );
        assert_eq!((task.as_str(), pid, uid), ("stress", 77, Some(1000)));
        let Some(OomLine::Killed { global, pid, .. }) = parse_oom_line(GLOBAL_KILLED) else {
            panic!("not killed")
        };
        assert!(global);
        assert_eq!(pid, 77);
        let allocating = "Out of memory (oom_kill_allocating_task): Killed process 5 (x) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0";
        assert!(matches!(
            parse_oom_line(allocating),
            Some(OomLine::Killed { global: true, .. })
        ));
        // No CONFIG_MEMCG, NUMA nodemask with commas.
        let s = "oom-kill:constraint=CONSTRAINT_MEMORY_POLICY,nodemask=0-1,3,cpuset=/,mems_allowed=0-3,task=a,pid=9,uid=0";
        assert!(matches!(parse_oom_line(s),
            Some(OomLine::Summary { oom_memcg: None, task_memcg: None, pid: 9, ref constraint, .. }) if constraint == "CONSTRAINT_MEMORY_POLICY"));
    }

    #[test]
    fn hierarchical_memcg() {
        let s = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/parent,task_memcg=/parent/child,task=tail,pid=10,uid=0";
        let Some(OomLine::Summary {
            oom_memcg,
            task_memcg,
            ..
        }) = parse_oom_line(s)
        else {
            panic!()
        };
        assert_eq!(oom_memcg.as_deref(), Some("/parent"));
        assert_eq!(task_memcg.as_deref(), Some("/parent/child"));
        // A path containing ",task_memcg=": the descendant split wins.
        let s = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/p,task_memcg=x,task_memcg=/p,task_memcg=x/c,task=t,pid=1,uid=0";
        let Some(OomLine::Summary {
            oom_memcg,
            task_memcg,
            ..
        }) = parse_oom_line(s)
        else {
            panic!()
        };
        assert_eq!(oom_memcg.as_deref(), Some("/p,task_memcg=x"));
        assert_eq!(task_memcg.as_deref(), Some("/p,task_memcg=x/c"));
    }

    #[test]
    fn hostile_comms() {
        let k = "Memory cgroup out of memory: Killed process 42 (a) b\\x1b c) total-vm:100kB, anon-rss:50kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:8kB oom_score_adj:0";
        let Some(OomLine::Killed {
            comm,
            pid,
            anon_rss_kb,
            ..
        }) = parse_oom_line(k)
        else {
            panic!()
        };
        assert_eq!(
            (comm.as_str(), pid, anon_rss_kb),
            ("a) b\\x1b c", 42, Some(50))
        );
        let k = "Out of memory: Killed process 3 (x) total-vm:1kB) total-vm:100kB, anon-rss:50kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:8kB oom_score_adj:-1000";
        let Some(OomLine::Killed {
            comm,
            total_vm_kb,
            oom_score_adj,
            ..
        }) = parse_oom_line(k)
        else {
            panic!()
        };
        assert_eq!(comm, "x) total-vm:1kB");
        assert_eq!((total_vm_kb, oom_score_adj), (Some(100), Some(-1000)));
        let s = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/m,task_memcg=/m,task=a,pid=1,uid=2=x,pid=55,uid=0";
        let Some(OomLine::Summary { task, pid, uid, .. }) = parse_oom_line(s) else {
            panic!()
        };
        assert_eq!((task.as_str(), pid, uid), ("a,pid=1,uid=2=x", 55, Some(0)));
        let i = "a) \\x1b invoked oom-killer: gfp_mask=0x0(), order=-1, oom_score_adj=1000";
        assert!(matches!(parse_oom_line(i),
            Some(OomLine::Invoked { ref comm, order: Some(-1), oom_score_adj: Some(1000), .. }) if comm == "a) \\x1b"));
    }

    #[test]
    fn older_kernel_variants() {
        // 4.19: padded pid/uid; 4.x header with nodemask; pre-5.3 Killed lines.
        let s = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a,task=x,pid= 1234,uid=    0";
        assert!(matches!(
            parse_oom_line(s),
            Some(OomLine::Summary {
                pid: 1234,
                uid: Some(0),
                ..
            })
        ));
        let i = "x invoked oom-killer: gfp_mask=0x14000c0(GFP_KERNEL), nodemask=(null), order=0, oom_score_adj=0";
        assert!(matches!(
            parse_oom_line(i),
            Some(OomLine::Invoked { order: Some(0), .. })
        ));
        let k = "Memory cgroup out of memory: Killed process 9 (x) total-vm:10kB, anon-rss:5kB, file-rss:0kB, shmem-rss:0kB, UID:1000";
        assert!(matches!(
            parse_oom_line(k),
            Some(OomLine::Killed {
                global: false,
                uid: Some(1000),
                pgtables_kb: None,
                oom_score_adj: None,
                ..
            })
        ));
        let k = "Killed process 9 (x) total-vm:10kB, anon-rss:5kB, file-rss:0kB, shmem-rss:0kB";
        assert!(matches!(
            parse_oom_line(k),
            Some(OomLine::Killed {
                global: true,
                uid: None,
                shmem_rss_kb: Some(0),
                ..
            })
        ));
        let s = "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/,task=x,pid=1,uid=-2";
        assert!(matches!(
            parse_oom_line(s),
            Some(OomLine::Summary {
                uid: Some(0xffff_fffe),
                ..
            })
        ));
    }

    #[test]
    fn garbage_lines_are_none_and_never_panic() {
        for m in [
            "",
            "oom-kill:",
            "oom-kill:constraint=",
            "oom-kill:constraint=X,task=a",
            "oom-kill:constraint=X,pid=1",
            "Killed process",
            "Killed process x (y) total-vm:1kB",
            "Killed process 1 (y) total-vm:",
            "Killed process 1 (y) total-vm:zkB",
            "lowmemorykiller: Killed process 1 (y), adj 0",
            "foo Killed process 1 (y) total-vm:1kB",
            "Tasks in /a are going to be killed",
            "oom_reaper: reaped process 1234 (tail), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
            "Memory cgroup stats for /memtrace-test:",
            "[   1234]     0  1234    65536    16384   200704        0             0 tail",
        ] {
            assert_eq!(parse_oom_line(m), None, "{m:?}");
        }
        for line in [INVOKED, SUMMARY, KILLED, GLOBAL_SUMMARY, GLOBAL_KILLED] {
            for i in 0..=line.len() {
                let _ = parse_oom_line(&line[..i]);
                let _ = parse_oom_line(&line[i..]);
                let _ = parse_record(&line.as_bytes()[..i]);
            }
        }
        const ALPHA: &[u8] = b"0123456789,;=:() \n-kBoom-kil:Killed process total-vm";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let bytes: Vec<u8> = (0..40)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    ALPHA[(x % ALPHA.len() as u64) as usize]
                })
                .collect();
            if let Some(r) = parse_record(&bytes) {
                let _ = parse_oom_line(&r.message);
            }
            let _ = parse_oom_line(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn assembler_full_report() {
        let mut a = OomAssembler::new();
        let lines = [
            "eth0: link up",
            INVOKED,
            "CPU: 1 PID: 1234 Comm: tail Not tainted 6.1.0 #1",
            "memory: usage 65536kB, limit 65536kB, failcnt 42",
            "Memory cgroup stats for /memtrace-test:",
            "Tasks state (memory values in pages):",
            "[   1234]     0  1234    65536    16384   200704        0             0 tail",
            SUMMARY,
            "audit: type=1400 unrelated",
            KILLED,
            "oom_reaper: reaped process 1234 (tail), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
        ];
        let reports: Vec<_> = lines
            .iter()
            .enumerate()
            .filter_map(|(i, l)| a.push(&rec(100 + i as u64, l)))
            .collect();
        assert_eq!(
            reports,
            vec![OomReport {
                seq: 109,
                ts_usec: 109_000,
                trigger_comm: Some("tail".into()),
                constraint: Some("CONSTRAINT_MEMCG".into()),
                oom_memcg: Some("/memtrace-test".into()),
                task_memcg: Some("/memtrace-test/child".into()),
                pid: 1234,
                comm: "tail".into(),
                global: false,
                total_vm_kb: Some(262144),
                anon_rss_kb: Some(65536),
                file_rss_kb: Some(4),
                shmem_rss_kb: Some(0),
                pgtables_kb: Some(200),
                uid: Some(0),
                oom_score_adj: Some(0),
            }]
        );
        // Rate-limited report: no header, no summary; stale state not reused.
        let r = a.push(&rec(200, &KILLED.replace("1234", "4321"))).unwrap();
        assert_eq!(
            (r.pid, r.oom_memcg, r.trigger_comm, r.constraint),
            (4321, None, None, None)
        );
        assert!(!r.global);
        // Summary for another pid (victim exited before the kill) is dropped.
        a.push(&rec(300, INVOKED));
        a.push(&rec(301, SUMMARY));
        let r = a.push(&rec(302, GLOBAL_KILLED)).unwrap();
        assert_eq!((r.pid, r.oom_memcg, r.trigger_comm), (77, None, None));
        assert!(r.global);
        let r = a.push(&rec(303, KILLED)).unwrap();
        assert_eq!(r.task_memcg, None);
    }

    #[test]
    fn assembler_group_kill_and_comm_hint() {
        let mut a = OomAssembler::new();
        a.push(&rec(1, INVOKED));
        // The task_memcg path contains ",task=": resolved by the Killed comm.
        let s = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/g,task_memcg=/g/a,task=b,task=tail,pid=1234,uid=0";
        a.push(&rec(2, s));
        let r = a.push(&rec(3, KILLED)).unwrap();
        assert_eq!(r.task_memcg.as_deref(), Some("/g/a,task=b"));
        assert_eq!(
            a.push(&rec(
                4,
                "Tasks in /g are going to be killed due to memory.oom.group set"
            )),
            None
        );
        assert_eq!(
            a.push(&rec(5, KILLED)),
            None,
            "first victim is not reported twice"
        );
        let r = a
            .push(&rec(6, &KILLED.replace("1234 (tail)", "99 (sleep)")))
            .unwrap();
        assert_eq!((r.pid, r.comm.as_str()), (99, "sleep"));
        assert_eq!(r.oom_memcg.as_deref(), Some("/g"));
        assert_eq!(r.trigger_comm.as_deref(), Some("tail"));
        assert_eq!(r.task_memcg, None);
        // A new report ends the group.
        a.push(&rec(7, INVOKED));
        let r = a.push(&rec(8, KILLED)).unwrap();
        assert_eq!(
            (r.oom_memcg, r.trigger_comm.as_deref()),
            (None, Some("tail"))
        );
    }

    #[test]
    fn assembler_ignores_user_records_and_joins_split_summary() {
        let mut a = OomAssembler::new();
        let forged = KmsgRecord {
            facility: 1,
            ..rec(1, KILLED)
        };
        assert_eq!(a.push(&forged), None);
        assert_eq!(parse_record(b"14,5,6,-;x").unwrap().facility, 1);
        assert_eq!(parse_record(b"3,5,6,-;x").unwrap().facility, 0);

        // The summary's pr_cont pieces interleaved with another CPU's output.
        a.push(&rec(2, INVOKED));
        let (head, tail) = SUMMARY.split_at(SUMMARY.find(",oom_memcg=").unwrap());
        let (mid, tail) = tail.split_at(tail.find(",task=").unwrap());
        for (i, m) in [head, "eth0: link down", mid, "random: crng reseeded", tail]
            .iter()
            .enumerate()
        {
            assert_eq!(a.push(&rec(3 + i as u64, m)), None);
        }
        let r = a.push(&rec(9, KILLED)).unwrap();
        assert_eq!(r.oom_memcg.as_deref(), Some("/memtrace-test"));
        assert_eq!(r.task_memcg.as_deref(), Some("/memtrace-test/child"));
        assert_eq!(r.trigger_comm.as_deref(), Some("tail"));
    }

    /// Removes the test memcg, killing and reaping the child first.
    struct MemcgGuard {
        dir: std::path::PathBuf,
        child: Option<std::process::Child>,
    }

    impl Drop for MemcgGuard {
        fn drop(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            for _ in 0..50 {
                if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            eprintln!("warning: could not remove {}", self.dir.display());
        }
    }

    fn require_root(what: &str) {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "{what} must run as root (it reads /dev/kmsg and creates a v1 memory cgroup): run `sudo -E cargo test`"
        );
    }

    #[test]
    fn real_oom_is_parsed_from_dev_kmsg() {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::process::{CommandExt, ExitStatusExt};
        use std::time::{Duration, Instant};

        require_root("real_oom_is_parsed_from_dev_kmsg");
        let root = std::path::Path::new("/sys/fs/cgroup/memory");
        assert!(
            root.join("memory.limit_in_bytes").exists(),
            "no cgroup v1 memory controller at {}",
            root.display()
        );
        let name = format!("kmsg-dev-{}", std::process::id());
        let dir = root.join(&name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let mut guard = MemcgGuard { dir, child: None };
        std::fs::write(guard.dir.join("memory.limit_in_bytes"), "64M").unwrap();

        let procs =
            std::ffi::CString::new(guard.dir.join("cgroup.procs").as_os_str().as_bytes()).unwrap();
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
        let child = guard
            .child
            .insert(cmd.spawn().expect("spawn tail /dev/zero"));
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
        guard.child = None; // reaped
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
                    if rep.pid == pid {
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
        assert_eq!(report.comm, "tail");
        assert_eq!(report.oom_memcg.as_deref(), Some(memcg.as_str()));
        assert_eq!(report.task_memcg.as_deref(), Some(memcg.as_str()));
        assert_eq!(report.constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
        assert_eq!(report.trigger_comm.as_deref(), Some("tail"));
        assert_eq!(report.uid, Some(0));
        assert!(!report.global);
        // file-rss counts shared library pages not charged to this memcg.
        let anon = report.anon_rss_kb.unwrap();
        assert!(
            (32 * 1024..=64 * 1024).contains(&anon),
            "anon-rss {anon} kB vs 64M limit"
        );
    }

    #[test]
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
