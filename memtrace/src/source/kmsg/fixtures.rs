//! The lines of a real OOM report, and records holding them, for the tests.
use super::record::KmsgRecord;
use crate::output::records::Victim;

/// The header, summary and `Killed process` line of one memcg OOM kill.
pub(super) const INVOKED: &str =
    "tail invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0";
pub(super) const SUMMARY: &str = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/memtrace-test,task_memcg=/memtrace-test/child,task=tail,pid=1234,uid=0";
pub(super) const KILLED: &str = "Memory cgroup out of memory: Killed process 1234 (tail) total-vm:262144kB, anon-rss:65536kB, file-rss:4kB, shmem-rss:0kB, UID:0 pgtables:200kB oom_score_adj:0";
/// The victim as [`KILLED`] tells it.
pub(super) fn killed_victim() -> Victim {
    Victim {
        pid: 1234,
        tgid: None,
        comm: "tail".into(),
        uid: Some(0),
        oom_score_adj: Some(0),
        total_vm_kb: Some(262144),
        rss_anon_kb: Some(65536),
        rss_file_kb: Some(4),
        rss_shmem_kb: Some(0),
        pgtables_kb: Some(200),
    }
}

/// The summary and `Killed process` line of a global OOM kill.
pub(super) const GLOBAL_SUMMARY: &str = "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/user.slice/user-0.slice/session-1.scope,task=stress,pid=77,uid=1000";
pub(super) const GLOBAL_KILLED: &str = "Out of memory: Killed process 77 (stress) total-vm:8409280kB, anon-rss:7864320kB, file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:15500kB oom_score_adj:0";

/// A kernel record (facility 0) holding `message`, at `seq` ms.
pub(super) fn rec(seq: u64, message: &str) -> KmsgRecord {
    KmsgRecord {
        facility: 0,
        seq,
        ts_usec: seq * 1000,
        message: message.to_string(),
    }
}
