//! The rolling in-memory history `record` keeps: the last minutes of
//! records, bounded by age and by size, so a capture can reach back before
//! its trigger and a post-mortem can tell what led to a kill.
use crate::output::fields::{Field, Unseen};
use std::collections::VecDeque;

use crate::output::records::{MemcgInterval, OomHistory, Record};

pub fn ts_ns(r: &Record) -> u64 {
    match r {
        Record::Header(h) => h.ts_ns,
        Record::OomKill(k) => k.ts_ns,
        Record::MemcgInterval(i) => i.ts_ns,
        Record::SlowCharge(s) | Record::SlowReclaim(s) => s.ts_ns,
        Record::System(s) => s.ts_ns,
        Record::Capture(c) => c.ts_ns,
        Record::OomPostmortem(p) => p.ts_ns,
    }
}

pub struct History {
    records: VecDeque<(u64, usize, Record)>,
    bytes: usize,
    max_age_ns: u64,
    max_bytes: usize,
    /// Records dropped to stay within `max_bytes` (the history is then
    /// shorter than `max_age_ns`).
    pub dropped_for_size: u64,
}

/// Approximate memory a record holds: its JSON size plus bookkeeping.
fn size_of(r: &Record) -> usize {
    crate::output::json::line(r).len() + 64
}

impl History {
    pub fn new(max_age_ns: u64, max_bytes: usize) -> Self {
        Self {
            records: VecDeque::new(),
            bytes: 0,
            max_age_ns,
            max_bytes,
            dropped_for_size: 0,
        }
    }

    pub fn push(&mut self, r: &Record) {
        let ts = ts_ns(r);
        let size = size_of(r);
        self.records.push_back((ts, size, r.clone()));
        self.bytes += size;
        while self
            .records
            .front()
            .is_some_and(|(t, _, _)| ts.saturating_sub(*t) > self.max_age_ns)
        {
            self.pop();
        }
        while self.bytes > self.max_bytes && self.records.len() > 1 {
            self.pop();
            self.dropped_for_size += 1;
        }
    }

    fn pop(&mut self) {
        if let Some((_, size, _)) = self.records.pop_front() {
            self.bytes -= size;
        }
    }

    /// Oldest time still held.
    pub fn oldest_ns(&self) -> Option<u64> {
        self.records.front().map(|(t, _, _)| *t)
    }

    /// The time the agent's own records span. Kills found in the kernel log
    /// at start (`before_start`) carry their own, older times: they are not
    /// history this agent watched.
    fn own_window_ns(&self) -> u64 {
        let own = || {
            self.records
                .iter()
                .filter(|(_, _, r)| !matches!(r, Record::OomKill(k) if k.before_start))
                .map(|(t, _, _)| *t)
        };
        match (own().min(), own().max()) {
            (Some(first), Some(last)) => last.saturating_sub(first),
            _ => 0,
        }
    }

    /// Records with `from <= ts <= to`, in order.
    pub fn window(&self, from_ns: u64, to_ns: u64) -> impl Iterator<Item = &Record> {
        self.records
            .iter()
            .filter(move |(t, _, _)| (from_ns..=to_ns).contains(t))
            .map(|(_, _, r)| r)
    }

    /// A memcg's history (by id) over everything held, summed; `visible`
    /// says which fields the attach plan sees.
    pub fn memcg_history(&self, memcg_id: u64, unseen: &Unseen) -> OomHistory {
        let rows: Vec<&MemcgInterval> = self
            .records
            .iter()
            .filter_map(|(_, _, r)| match r {
                Record::MemcgInterval(i) if i.memcg.id == memcg_id => Some(i.as_ref()),
                _ => None,
            })
            .collect();
        let mut h = OomHistory {
            window_ns: self.own_window_ns(),
            intervals: rows.len() as u64,
            ..OomHistory::default()
        };
        for i in &rows {
            h.add(i);
        }
        // What the plan cannot see is null even where no interval was kept;
        // what it sees is a sum, 0 without intervals.
        let seen = |field, v: Option<u64>| unseen.get(field, v.unwrap_or(0));
        h.charge_failures = seen(Field::ChargeFailures, h.charge_failures);
        h.do_shrink_slab_calls = seen(Field::DoShrinkSlabCalls, h.do_shrink_slab_calls);
        h.do_shrink_slab_zero = seen(Field::DoShrinkSlabZero, h.do_shrink_slab_zero);
        h.shrink_slab_ns = seen(Field::ShrinkSlabNs, h.shrink_slab_ns);
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::records::{Memcg, System};

    const S: u64 = 1_000_000_000;

    fn sys(t: u64) -> Record {
        Record::System(System {
            ts_ns: t * S,
            ..Default::default()
        })
    }

    fn interval(t: u64, id: u64, reclaim_ns: u64) -> Record {
        MemcgInterval {
            ts_ns: t * S,
            memcg: Memcg {
                id,
                ..Default::default()
            },
            reclaim_memcg_count: Some(1),
            reclaim_memcg_ns: Some(reclaim_ns),
            reclaim_direct_ns: Some(0),
            limit_hits: Some(3),
            charge_failures: None,
            ..Default::default()
        }
        .into()
    }

    #[test]
    fn keeps_only_the_last_minutes() {
        let mut h = History::new(10 * S, usize::MAX);
        for t in 0..30 {
            h.push(&sys(t));
        }
        assert_eq!(h.oldest_ns(), Some(19 * S));
        assert_eq!(h.window(25 * S, 27 * S).count(), 3);
    }

    #[test]
    fn size_bound_drops_the_oldest() {
        let mut h = History::new(u64::MAX, 2000);
        for t in 0..100 {
            h.push(&sys(t));
        }
        assert!(h.bytes <= 2000 && h.records.len() > 1);
        assert!(h.dropped_for_size > 0);
        assert_eq!(
            h.records.back().map(|r| r.0),
            Some(99 * S),
            "the newest stays"
        );
    }

    #[test]
    fn memcg_history_sums_one_memcg_and_keeps_nulls() {
        let mut h = History::new(u64::MAX, usize::MAX);
        h.push(&interval(1, 7, 100));
        h.push(&interval(2, 8, 999));
        h.push(&interval(3, 7, 50));
        let o = h.memcg_history(7, &Unseen::new([Field::ChargeFailures]));
        assert_eq!(
            (o.intervals, o.reclaim_count, o.reclaim_ns, o.limit_hits),
            (2, 2, 150, Some(6))
        );
        assert_eq!(o.charge_failures, None, "not visible: null, not 0");
        assert_eq!(o.window_ns, 2 * S);
    }

    #[test]
    fn the_window_is_the_agents_own_not_the_kernel_logs_past_kills() {
        use crate::output::records::OomKill;
        let mut h = History::new(u64::MAX, usize::MAX);
        // A kill from the kernel log, 2 minutes before start.
        h.push(
            &OomKill {
                ts_ns: 10 * S,
                before_start: true,
                ..Default::default()
            }
            .into(),
        );
        h.push(&sys(130));
        h.push(&interval(140, 8, 1));
        let o = h.memcg_history(7, &Unseen::default());
        assert_eq!(o.intervals, 0);
        assert_eq!(
            o.window_ns,
            10 * S,
            "measured from the agent's first record"
        );
    }
}
