//! Joins the pieces of one OOM kill into one record: the BPF event from
//! `oom_kill_process` (or `mark_victim`) and the kernel log's report, which
//! arrive separately and in either order. `mark_victim` also fires for
//! tasks that were already exiting; those are not kills, and the kernel log
//! (which prints "Killed process" only for real kills) tells them apart.
use std::time::{Duration, Instant};

use memtrace_common::{OOM_SRC_MARK_VICTIM, OomEvent};

use crate::source::kmsg::OomReport;

/// How long a hook's event waits for its log report when the log cannot
/// be read.
pub const GRACE: Duration = Duration::from_millis(500);
/// How long an `oom_kill_process` event waits for the log to confirm it,
/// once the log reader has read everything the kernel printed.
pub const CONFIRM: Duration = Duration::from_secs(2);
/// How long it waits at most while the log reader is behind (a burst of
/// OOM reports, each with its task dump, read on a busy machine: seen 2 s+
/// late in qemu guests, which then split one kill into two records).
pub const CONFIRM_MAX: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Default, PartialEq)]
pub struct JoinedOom {
    /// From `oom_kill_process`.
    pub bpf: Option<OomEvent>,
    /// From `mark_victim`.
    pub mark: Option<OomEvent>,
    pub kmsg: Option<OomReport>,
    pub before_start: bool,
}

impl JoinedOom {
    pub fn pid(&self) -> u32 {
        self.kmsg
            .as_ref()
            .map(|k| k.victim.pid)
            .or(self.bpf.map(|b| b.victim_pid))
            .or(self.mark.map(|m| m.victim_pid))
            .unwrap_or(0)
    }
}

struct Pending {
    since: Instant,
    joined: JoinedOom,
}

pub struct OomJoiner {
    /// The kernel log is readable: unconfirmed `mark_victim`s are dropped.
    kmsg_available: bool,
    /// The plan hooks `oom_kill_process` (vs. `mark_victim` or nothing).
    expects_bpf: bool,
    expects_mark: bool,
    pending: Vec<Pending>,
}

impl OomJoiner {
    pub fn new(kmsg_available: bool, expects_bpf: bool, expects_mark: bool) -> Self {
        Self {
            kmsg_available,
            expects_bpf,
            expects_mark,
            pending: Vec::new(),
        }
    }

    fn slot(&mut self, pid: u32, now: Instant) -> &mut JoinedOom {
        let i = match self.pending.iter().position(|p| p.joined.pid() == pid) {
            Some(i) => i,
            None => {
                // Bounded: a flood of kills cannot grow this without limit.
                if self.pending.len() >= 1024 {
                    self.pending.remove(0);
                }
                self.pending.push(Pending {
                    since: now,
                    joined: JoinedOom::default(),
                });
                self.pending.len() - 1
            }
        };
        &mut self.pending[i].joined
    }

    pub fn on_bpf(&mut self, ev: OomEvent, now: Instant) {
        let slot = self.slot(ev.victim_pid, now);
        if ev.source == OOM_SRC_MARK_VICTIM {
            slot.mark = Some(ev);
        } else {
            slot.bpf = Some(ev);
        }
    }

    pub fn on_kmsg(&mut self, report: OomReport, now: Instant) {
        let pid = report.victim.pid;
        self.slot(pid, now).kmsg = Some(report);
    }

    /// Kills that are complete, or waited long enough. `kmsg_caught_up`
    /// says whether the log reader has read every line printed so far
    /// (asked only of events that have waited CONFIRM for their line).
    pub fn poll(
        &mut self,
        now: Instant,
        kmsg_caught_up: &mut dyn FnMut() -> bool,
    ) -> Vec<JoinedOom> {
        let mut out = Vec::new();
        let (kmsg_available, expects_bpf, expects_mark) =
            (self.kmsg_available, self.expects_bpf, self.expects_mark);
        self.pending.retain(|p| {
            let j = &p.joined;
            let age = now.saturating_duration_since(p.since);
            let complete = j.kmsg.is_some()
                && (!expects_bpf || j.bpf.is_some())
                && (!expects_mark || j.mark.is_some());
            let emit = if complete {
                true
            } else if j.kmsg.is_some() {
                // The hook's event is submitted before the kernel prints
                // the report, but it can be read later than the log: in a
                // burst on a loaded machine the ring buffer was seen read
                // over 500 ms behind, and a report emitted alone then lost
                // its memcgs (the late event is not a kill on its own).
                age >= CONFIRM
            } else if j.bpf.is_some() {
                // oom_kill_process ran; a missing log line loses details,
                // not the kill. The line is printed within the call, so
                // it is missing once the reader has caught up past CONFIRM.
                if kmsg_available {
                    age >= CONFIRM_MAX || (age >= CONFIRM && kmsg_caught_up())
                } else {
                    age >= GRACE
                }
            } else {
                // mark_victim alone: a kill only if nothing can say otherwise.
                if age >= CONFIRM || (!kmsg_available && age >= GRACE) {
                    if !kmsg_available {
                        out.push(j.clone());
                    }
                    return false;
                }
                false
            };
            if emit {
                out.push(j.clone());
            }
            !emit
        });
        out
    }

    /// Everything still pending (at exit): keeps whatever is a kill.
    pub fn flush(&mut self) -> Vec<JoinedOom> {
        let kmsg_available = self.kmsg_available;
        self.pending
            .drain(..)
            .map(|p| p.joined)
            .filter(|j| j.kmsg.is_some() || j.bpf.is_some() || !kmsg_available)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::records::Victim;
    use memtrace_common::{EVENT_OOM_KILL, OOM_SRC_OOM_KILL_PROCESS};

    fn ev(source: u32, pid: u32) -> OomEvent {
        OomEvent {
            kind: EVENT_OOM_KILL,
            source,
            ts_ns: 1,
            flags: 0,
            victim_pid: pid,
            victim_tgid: pid,
            victim_uid: 0,
            victim_oom_score_adj: 0,
            trigger_pid: 1,
            trigger_tgid: 1,
            _pad: 0,
            victim_comm: [0; 16],
            trigger_comm: [0; 16],
            victim_memcg_id: 5,
            oom_memcg_id: 5,
            totalpages: 1,
            chosen_points: 1,
            chain: memtrace_common::OomChain::EMPTY,
        }
    }

    /// A joiner that sees what the flags say, and the time it starts at.
    fn joiner(kmsg_available: bool, expects_bpf: bool, expects_mark: bool) -> (Instant, OomJoiner) {
        let j = OomJoiner::new(kmsg_available, expects_bpf, expects_mark);
        (Instant::now(), j)
    }

    fn report(pid: u32) -> OomReport {
        OomReport {
            victim: Victim {
                pid,
                comm: "tail".into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn bpf_then_log_is_one_kill() {
        let (t0, mut j) = joiner(true, true, false);
        j.on_bpf(ev(OOM_SRC_OOM_KILL_PROCESS, 42), t0);
        assert!(j.poll(t0, &mut || true).is_empty(), "waits for the log");
        j.on_kmsg(report(42), t0 + Duration::from_millis(10));
        let out = j.poll(t0 + Duration::from_millis(10), &mut || true);
        assert_eq!(out.len(), 1);
        assert!(out[0].bpf.is_some() && out[0].kmsg.is_some());
        assert!(
            j.poll(t0 + CONFIRM * 2, &mut || true).is_empty(),
            "emitted once"
        );
    }

    #[test]
    fn log_first_waits_for_bpf_within_grace() {
        let (t0, mut j) = joiner(true, true, false);
        j.on_kmsg(report(7), t0);
        assert!(j.poll(t0, &mut || true).is_empty());
        j.on_bpf(
            ev(OOM_SRC_OOM_KILL_PROCESS, 7),
            t0 + Duration::from_millis(100),
        );
        assert_eq!(
            j.poll(t0 + Duration::from_millis(100), &mut || true).len(),
            1
        );
    }

    #[test]
    fn log_alone_waits_confirm_for_its_event() {
        let (t0, mut j) = joiner(true, true, false);
        j.on_kmsg(report(7), t0);
        assert!(j.poll(t0 + GRACE, &mut || true).is_empty());
        let out = j.poll(t0 + CONFIRM, &mut || true);
        assert_eq!(out.len(), 1);
        assert!(out[0].bpf.is_none());
    }

    #[test]
    fn an_event_read_a_second_after_its_log_report_joins_it() {
        let (t0, mut j) = joiner(true, false, true);
        j.on_kmsg(report(7), t0);
        assert!(j.poll(t0 + Duration::from_secs(1), &mut || true).is_empty());
        j.on_bpf(ev(OOM_SRC_MARK_VICTIM, 7), t0 + Duration::from_secs(1));
        let out = j.poll(t0 + Duration::from_secs(1), &mut || true);
        assert_eq!(out.len(), 1);
        assert!(out[0].mark.is_some() && out[0].kmsg.is_some());
    }

    #[test]
    fn mark_victim_without_a_kill_line_is_not_a_kill() {
        let (t0, mut j) = joiner(true, false, true);
        j.on_bpf(ev(OOM_SRC_MARK_VICTIM, 9), t0);
        assert!(j.poll(t0 + CONFIRM, &mut || true).is_empty());
        assert!(j.flush().is_empty(), "dropped, not kept pending");
    }

    #[test]
    fn mark_victim_counts_when_the_log_is_unreadable() {
        let (t0, mut j) = joiner(false, false, true);
        j.on_bpf(ev(OOM_SRC_MARK_VICTIM, 9), t0);
        assert_eq!(j.poll(t0 + GRACE, &mut || true).len(), 1);
    }

    #[test]
    fn unconfirmed_oom_kill_process_is_kept() {
        let (t0, mut j) = joiner(true, true, false);
        j.on_bpf(ev(OOM_SRC_OOM_KILL_PROCESS, 3), t0);
        assert!(j.poll(t0 + GRACE, &mut || true).is_empty());
        assert_eq!(j.poll(t0 + CONFIRM, &mut || true).len(), 1);
    }

    #[test]
    fn an_event_waits_for_a_log_reader_that_is_behind() {
        let (t0, mut j) = joiner(true, true, false);
        j.on_bpf(ev(OOM_SRC_OOM_KILL_PROCESS, 5), t0);
        // The reader still has lines to read: the event keeps waiting...
        assert!(j.poll(t0 + CONFIRM * 3, &mut || false).is_empty());
        // ...and its line, read late, joins it into one kill.
        j.on_kmsg(report(5), t0 + CONFIRM * 4);
        let out = j.poll(t0 + CONFIRM * 4, &mut || false);
        assert_eq!(out.len(), 1);
        assert!(out[0].bpf.is_some() && out[0].kmsg.is_some());
        // A reader that never catches up: the kill is kept after CONFIRM_MAX.
        j.on_bpf(ev(OOM_SRC_OOM_KILL_PROCESS, 6), t0);
        assert!(j.poll(t0 + CONFIRM_MAX / 2, &mut || false).is_empty());
        assert_eq!(j.poll(t0 + CONFIRM_MAX, &mut || false).len(), 1);
    }

    #[test]
    fn separate_victims_stay_separate() {
        let (t0, mut j) = joiner(true, true, false);
        j.on_bpf(ev(OOM_SRC_OOM_KILL_PROCESS, 1), t0);
        j.on_bpf(ev(OOM_SRC_OOM_KILL_PROCESS, 2), t0);
        j.on_kmsg(report(2), t0);
        j.on_kmsg(report(1), t0);
        let mut pids: Vec<u32> = j
            .poll(t0, &mut || true)
            .iter()
            .map(JoinedOom::pid)
            .collect();
        pids.sort();
        assert_eq!(pids, [1, 2]);
    }
}
