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
//! at most every 5-10 s (spread by memcg id so that a storm's memcgs, all
//! read in one interval, do not all fall due in the same later one). A
//! carried state is the earlier read unchanged, with its age: never
//! presented as read now.
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

/// A carried state is read again after at most this long...
const REFRESH_MAX_NS: u64 = 10_000_000_000;
/// ...and at least this long, the memcg's place in between set by its id.
const REFRESH_MIN_NS: u64 = 5_000_000_000;

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
    held: HashMap<u64, Held>,
    /// Read every state every interval (`top`, which shows state without
    /// its age).
    pub always_fresh: bool,
}

impl StateCarry {
    pub fn new() -> Self {
        StateCarry {
            held: HashMap::new(),
            always_fresh: false,
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
        self.held
            .retain(|_, h| ts_ns.saturating_sub(h.read_ns) < REFRESH_MAX_NS);
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
            !self.always_fresh
                && *h.path == *path
                && !own_activity
                && hits.is_none_or(|h| h == 0)
                && !near_limit(&h.state)
                && ts_ns.saturating_sub(h.read_ns) < refresh_after(m.id)
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
                Held {
                    path: path.into(),
                    read_ns: ts_ns,
                    state: state.clone(),
                },
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

/// How old memcg `id`'s carried state may get: between REFRESH_MIN_NS and
/// REFRESH_MAX_NS, spread by a hash of the id.
fn refresh_after(id: u64) -> u64 {
    let spread = REFRESH_MAX_NS - REFRESH_MIN_NS;
    // Fibonacci hashing, scaled onto the spread (a modulo of a 32-bit hash
    // would never reach the end of a 5-s spread).
    let h = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    REFRESH_MIN_NS + ((u128::from(h) * u128::from(spread)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_ages_are_spread_within_bounds() {
        let ages: Vec<u64> = (0..1000).map(refresh_after).collect();
        assert!(
            ages.iter()
                .all(|&a| (REFRESH_MIN_NS..REFRESH_MAX_NS).contains(&a))
        );
        // Consecutive ids (as a storm's memcgs get) fall due in every second
        // of the window, not in one.
        let mut per_s = [0; 5];
        for a in ages {
            per_s[((a - REFRESH_MIN_NS) / 1_000_000_000) as usize] += 1;
        }
        assert!(per_s.iter().all(|&n| n > 100), "{per_s:?}");
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
