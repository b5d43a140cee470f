//! Joins the lines of one OOM report, as they arrive record by record and
//! interleaved with other messages, into one [`OomReport`] per kill.

use super::grammar::{OomLine, parse_oom_line, parse_summary};
use super::record::KmsgRecord;
use crate::output::records::Victim;

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
    pub global: bool,
    /// The victim as its `Killed process` line (and the summary's uid)
    /// tell it.
    pub victim: Victim,
}

/// Summaries longer than this are not kept (a kmsg record is < 8 KiB).
const MAX_SUMMARY: usize = 16 * 1024;
/// memory.oom.group kills follow their report within this time.
const GROUP_WINDOW_USEC: u64 = 5_000_000;

/// Turns a stream of records into [`OomReport`]s, one per `Killed process`
/// line. Only kernel records (facility 0) are considered. Keeps at most one
/// pending header, one summary and the last report (the group context).
#[derive(Debug, Default)]
pub struct OomAssembler {
    invoked: Option<String>,
    /// (pid, raw message) of the pending summary.
    summary: Option<(u32, String)>,
    /// A summary split over several records (its pr_cont pieces were
    /// interleaved with another CPU's messages).
    partial: Option<String>,
    /// The last report: the memory.oom.group kills that follow it share
    /// its context (global, trigger, constraint, limiting memcg).
    last: Option<OomReport>,
    /// That report once a group kill line followed it, its `ts_usec` the
    /// group line's.
    group: Option<OomReport>,
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
                self.group = self.last.take().map(|g| OomReport {
                    ts_usec: rec.ts_usec,
                    ..g
                });
                None
            }
            OomLine::Killed { global, victim } => {
                let pid = victim.pid;
                let mut report = OomReport {
                    seq: rec.seq,
                    ts_usec: rec.ts_usec,
                    global,
                    victim,
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
                    }) = parse_summary(raw, Some(&report.victim.comm))
                    {
                        report.constraint = Some(constraint);
                        report.oom_memcg = oom_memcg;
                        report.task_memcg = task_memcg;
                        report.victim.uid = report.victim.uid.or(uid);
                    }
                    report.trigger_comm = invoked;
                } else if let Some(g) = in_group {
                    if g.victim.pid == pid {
                        return None; // the group scan kills the first victim again
                    }
                    return Some(OomReport {
                        seq: report.seq,
                        ts_usec: report.ts_usec,
                        task_memcg: None,
                        victim: report.victim,
                        ..g.clone()
                    });
                } else if summary.is_none() {
                    // Pre-4.19 kernels have no summary; a rate-limited report
                    // has neither header nor summary, so this one is ours.
                    report.trigger_comm = invoked;
                }
                self.group = None;
                self.last = Some(report.clone());
                Some(report)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::record::parse_record;
    use super::*;

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
                global: false,
                victim: killed_victim(),
            }]
        );
        // Rate-limited report: no header, no summary; stale state not reused.
        let r = a.push(&rec(200, &KILLED.replace("1234", "4321"))).unwrap();
        assert_eq!(
            (r.victim.pid, r.oom_memcg, r.trigger_comm, r.constraint),
            (4321, None, None, None)
        );
        assert!(!r.global);
        // Summary for another pid (victim exited before the kill) is dropped.
        a.push(&rec(300, INVOKED));
        a.push(&rec(301, SUMMARY));
        let r = a.push(&rec(302, GLOBAL_KILLED)).unwrap();
        assert_eq!(
            (r.victim.pid, r.oom_memcg, r.trigger_comm),
            (77, None, None)
        );
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
        assert_eq!((r.victim.pid, r.victim.comm.as_str()), (99, "sleep"));
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
}
