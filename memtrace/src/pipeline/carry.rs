//! Which memcgs' cgroupfs state an interval reads again, and which carry the
//! state read in an earlier interval (`memcg_interval.state_age_ns`,
//! docs/events.md).
//!
//! A state read is three (v1) or four (v2) cgroupfs files: about 25 µs per
//! memcg on this project's bench host, two thirds of the agent's CPU in a
//! shrinker storm, where thousands of memcgs get a record only because the
//! kernel scanned their shrinkers. Being scanned changes little in a memcg;
//! its own tasks charging or reclaiming, its limit being hit, an OOM kill
//! in it, or usage close to its limit are what the state is wanted for. So a
//! memcg's state is read again when one of those happened, and otherwise
//! once it is older than its refresh age: between half of
//! `--state-max-age` (default 30 s) and all of it, spread by memcg id so
//! that a storm's memcgs, all read in one interval, do not all fall due in
//! the same later one. A storm's intervals then read about
//! memcgs x interval / (0.75 x max age) states each, instead of every
//! memcg's (2000 memcgs, 1 s apart, 30 s: ~90). A carried state is the
//! earlier read unchanged, with its age: never presented as read now.
//!
//! Limit hits are not carried: the counter of every memcg with a limit of
//! its own is read every interval it has a record, and a hit makes its
//! state read again too. A memcg without a limit of its own (v1: memory
//! and memory+swap) cannot fail a charge at its own level, so its counter
//! cannot move and is not read.
use std::collections::HashMap;

use crate::{
    aggregate::intervals::MemcgDelta,
    cgroup::state::StateReader,
    output::records::{Memcg, MemcgState},
};

/// What an interval record gets from cgroupfs.
#[derive(Debug, Default, PartialEq)]
pub struct IntervalState {
    pub limit_hits: Option<u64>,
    pub state: Option<MemcgState>,
    /// How long before the interval's end `state` was read (0: read now).
    pub state_age_ns: Option<u64>,
}

/// A state read in an earlier interval.
struct Held {
    /// The path it was read at: a memcg renamed since is read again.
    path: Box<str>,
    /// The `ts_ns` of the interval it was read in.
    read_ns: u64,
    state: MemcgState,
}

pub struct StateCarry {
    /// Boxed: a state is ~0.5 KB, and a map of them sized for 2000 memcgs
    /// would keep room for 4096 (hashbrown's power-of-two buckets), 1.7 MB
    /// resident, where boxes take what the held states need.
    held: HashMap<u64, Box<Held>>,
    /// How old a carried state may get (`--state-max-age`); 0 reads every
    /// state every interval (`top`, which shows state without its age).
    max_age_ns: u64,
}

impl StateCarry {
    /// Carrying states for at most `max_age` (`--state-max-age`).
    pub fn new(max_age: std::time::Duration) -> Self {
        StateCarry {
            held: HashMap::new(),
            max_age_ns: u64::try_from(max_age.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// The state of memcg `id` must be read at its next record (an OOM kill
    /// was reported in it, or it was evicted).
    pub fn forget(&mut self, id: u64) {
        self.held.remove(&id);
    }

    /// Starts an interval ending at `ts_ns`: states too old to be carried
    /// any more are let go (they would be read again anyway).
    pub fn next_interval(&mut self, ts_ns: u64) {
        let max = self.max_age_ns;
        self.held
            .retain(|_, h| ts_ns.saturating_sub(h.read_ns) < max);
    }

    /// The limit hits and state for the record of `d`'s memcg `m` in the
    /// interval ending at `ts_ns`; `last_hits` holds each memcg's limit-hit
    /// counter as last read (the deltas' base).
    pub fn interval(
        &mut self,
        states: &mut StateReader,
        last_hits: &mut HashMap<u64, u64>,
        v2: bool,
        m: &Memcg,
        d: &MemcgDelta,
        ts_ns: u64,
    ) -> IntervalState {
        let Some(path) = m.path.as_deref().filter(|_| !m.deleted) else {
            self.held.remove(&m.id);
            return IntervalState::default();
        };
        let hits = if v2 && path == "/" {
            // The v2 root has no memory.events.
            None
        } else {
            // The limits of a held state (read with it, cached at most
            // 10 s before): looking them up for every carried memcg would
            // read them for all of a storm's memcgs whenever their cache
            // expires.
            let (own, own_swap) = match self.held.get(&m.id).filter(|h| *h.path == *path) {
                Some(h) => (h.state.limit_bytes, h.state.swap_limit_bytes),
                None => states.own_limits(path).unwrap_or_default(),
            };
            // v1's failcnt counts hits of this memcg's own limits: none
            // without one. v2's memory.events `max` is hierarchical (a
            // child's hits count in its ancestors, unless mounted with
            // memory_localevents): always read there.
            let limited = v2 || own.is_some() || own_swap.is_some();
            // Memcgs that existed at start have a baseline; any other was
            // created since, and its counter started at 0.
            let prev = last_hits.get(&m.id).copied().unwrap_or(0);
            if limited {
                states.limit_hits(path).map(|now| {
                    last_hits.insert(m.id, now);
                    now.saturating_sub(prev)
                })
            } else {
                Some(0)
            }
        };
        let s = &d.stats;
        let own_activity = s.charge_calls != 0
            || s.charge_failures != 0
            || s.reclaim_count.iter().any(|&c| c != 0);
        let carried = self.held.get(&m.id).filter(|h| {
            *h.path == *path
                && !own_activity
                && hits.is_none_or(|h| h == 0)
                && !near_limit(&h.state)
                && ts_ns.saturating_sub(h.read_ns) < refresh_after(m.id, self.max_age_ns)
        });
        if let Some(h) = carried {
            return IntervalState {
                limit_hits: hits,
                state: Some(h.state.clone()),
                state_age_ns: Some(ts_ns.saturating_sub(h.read_ns)),
            };
        }
        let state = states.read(path);
        if state == MemcgState::default() {
            // Gone (or nothing readable): nothing to carry.
            self.held.remove(&m.id);
        } else {
            self.held.insert(
                m.id,
                Box::new(Held {
                    path: path.into(),
                    read_ns: ts_ns,
                    state: state.clone(),
                }),
            );
        }
        IntervalState {
            limit_hits: hits,
            state: Some(state),
            state_age_ns: Some(0),
        }
    }
}

/// Usage within 10% of the effective limit, or tasks waiting in an OOM:
/// where a memcg's state changes by the interval.
fn near_limit(s: &MemcgState) -> bool {
    let close = match (s.usage_bytes, s.effective_limit_bytes) {
        (Some(u), Some(l)) => u >= l - l / 10,
        _ => false,
    };
    close || s.under_oom == Some(true)
}

/// How old memcg `id`'s carried state may get: between half of `max_ns`
/// and `max_ns`, spread by a hash of the id (0: not at all).
fn refresh_after(id: u64, max_ns: u64) -> u64 {
    let min = max_ns / 2;
    let spread = max_ns - min;
    // Fibonacci hashing, scaled onto the spread (a modulo of a 32-bit hash
    // would never reach the end of a long spread).
    let h = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    min + ((u128::from(h) * u128::from(spread)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_ages_are_spread_within_bounds() {
        let max = 30_000_000_000;
        let ages: Vec<u64> = (0..1000).map(|id| refresh_after(id, max)).collect();
        assert!(ages.iter().all(|&a| (max / 2..max).contains(&a)));
        // Consecutive ids (as a storm's memcgs get) fall due in every part
        // of the window, not in one.
        let mut per_part = [0; 5];
        for a in ages {
            per_part[((a - max / 2) * 5 / (max - max / 2)) as usize] += 1;
        }
        assert!(per_part.iter().all(|&n| n > 100), "{per_part:?}");
        // 0: never carried.
        assert_eq!(refresh_after(7, 0), 0);
    }

    #[test]
    fn near_the_limit() {
        let st = |u, l| MemcgState {
            usage_bytes: Some(u),
            effective_limit_bytes: l,
            ..Default::default()
        };
        assert!(near_limit(&st(95, Some(100))));
        assert!(near_limit(&st(90, Some(100))));
        assert!(!near_limit(&st(89, Some(100))));
        assert!(!near_limit(&st(1 << 40, None)));
        assert!(near_limit(&MemcgState {
            under_oom: Some(true),
            ..Default::default()
        }));
    }
}
