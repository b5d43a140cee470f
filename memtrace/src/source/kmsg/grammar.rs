//! The lines of an OOM report; every other line of the log is not ours. A
//! report (mm/oom_kill.c, 4.19 .. 6.18) looks like:
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
//! as `global`). Lines are parsed still escaped, as the kernel wrote them.

use crate::output::records::Victim;

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
    /// The victim as the record schema has it (the line does not say the
    /// tgid).
    Killed { global: bool, victim: Victim },
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
        victim: Victim {
            pid,
            tgid: None,
            comm,
            uid,
            oom_score_adj: adj,
            total_vm_kb,
            rss_anon_kb: anon,
            rss_file_kb: file,
            rss_shmem_kb: shmem,
            pgtables_kb: pgtables,
        },
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
pub(super) fn parse_summary(message: &str, comm_hint: Option<&str>) -> Option<OomLine> {
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::record::parse_record;
    use super::*;

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
                victim: killed_victim(),
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
        let (global, victim) = killed(GLOBAL_KILLED);
        assert!(global);
        assert_eq!(victim.pid, 77);
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

    /// The (oom_memcg, task_memcg) of a summary line.
    fn memcgs(summary: &str) -> (Option<String>, Option<String>) {
        match parse_oom_line(summary) {
            Some(OomLine::Summary {
                oom_memcg,
                task_memcg,
                ..
            }) => (oom_memcg, task_memcg),
            other => panic!("not a summary: {other:?}"),
        }
    }

    #[test]
    fn hierarchical_memcg() {
        let s = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/parent,task_memcg=/parent/child,task=tail,pid=10,uid=0";
        assert_eq!(
            memcgs(s),
            (Some("/parent".into()), Some("/parent/child".into()))
        );
        // A path containing ",task_memcg=": the descendant split wins.
        let s = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/p,task_memcg=x,task_memcg=/p,task_memcg=x/c,task=t,pid=1,uid=0";
        assert_eq!(
            memcgs(s),
            (
                Some("/p,task_memcg=x".into()),
                Some("/p,task_memcg=x/c".into())
            )
        );
    }

    /// Whether a `Killed process` line is a global OOM's, and its victim.
    fn killed(line: &str) -> (bool, Victim) {
        let Some(OomLine::Killed { global, victim }) = parse_oom_line(line) else {
            panic!("not a Killed line: {line}")
        };
        (global, victim)
    }

    /// The comm, pid, total_vm, anon rss and oom_score_adj of `v`.
    fn vital(v: &Victim) -> (&str, u32, Option<u64>, Option<u64>, Option<i32>) {
        let c = v.comm.as_str();
        (c, v.pid, v.total_vm_kb, v.rss_anon_kb, v.oom_score_adj)
    }

    #[test]
    fn hostile_comms() {
        let k = "Memory cgroup out of memory: Killed process 42 (a) b\\x1b c) total-vm:100kB, anon-rss:50kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:8kB oom_score_adj:0";
        assert_eq!(
            vital(&killed(k).1),
            ("a) b\\x1b c", 42, Some(100), Some(50), Some(0))
        );
        let k = "Out of memory: Killed process 3 (x) total-vm:1kB) total-vm:100kB, anon-rss:50kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:8kB oom_score_adj:-1000";
        assert_eq!(
            vital(&killed(k).1),
            ("x) total-vm:1kB", 3, Some(100), Some(50), Some(-1000))
        );
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
        let (global, v) = killed(k);
        assert!(!global);
        assert_eq!(
            (v.uid, v.pgtables_kb, v.oom_score_adj),
            (Some(1000), None, None)
        );
        let k = "Killed process 9 (x) total-vm:10kB, anon-rss:5kB, file-rss:0kB, shmem-rss:0kB";
        let (global, v) = killed(k);
        assert!(global);
        assert_eq!((v.uid, v.rss_shmem_kb), (None, Some(0)));
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
}
