//! Per-interval deltas of the kernel's cumulative per-memcg counters, and
//! keeping the bounded maps from filling up with memcgs that went idle.
use std::collections::HashMap;

use memtrace_common::{MemcgStats, ShrinkerKey, ShrinkerStats};

use super::counters;

/// One memcg's activity over an interval.
#[derive(Clone, Debug, PartialEq)]
pub struct MemcgDelta {
    pub id: u64,
    pub stats: MemcgStats,
    /// Its shrinkers with activity, busiest (by calls) first.
    pub shrinkers: Vec<(ShrinkerKey, ShrinkerStats)>,
}

#[derive(Default)]
pub struct IntervalAggregator {
    prev_memcg: MemcgBaseline,
    prev_shrinker: HashMap<ShrinkerKey, ShrinkerStats>,
    idle_polls: HashMap<u64, u32>,
}

/// The last interval's totals per memcg, sorted by id: as large as they
/// are. Kept as the HashMap they come in, 2000 memcgs' 400-byte totals
/// would hold 4096 slots (hashbrown's power-of-two buckets), 1.7 MB
/// resident between intervals instead of 0.8.
#[derive(Debug, Default)]
struct MemcgBaseline(Vec<(u64, MemcgStats)>);

impl MemcgBaseline {
    fn new(totals: HashMap<u64, MemcgStats>) -> Self {
        let mut v: Vec<_> = totals.into_iter().collect();
        v.sort_unstable_by_key(|e| e.0);
        Self(v)
    }

    fn find(&self, id: u64) -> Option<usize> {
        self.0.binary_search_by_key(&id, |e| e.0).ok()
    }

    fn get(&self, id: u64) -> Option<&MemcgStats> {
        self.find(id).map(|i| &self.0[i].1)
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut MemcgStats> {
        self.find(id).map(|i| &mut self.0[i].1)
    }

    /// Drops the memcgs in `ids` (sorted).
    fn remove_sorted(&mut self, ids: &[u64]) {
        self.0.retain(|e| ids.binary_search(&e.0).is_err());
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Map keys the caller should delete from the kernel maps.
#[derive(Debug, Default, PartialEq)]
pub struct Evictions {
    pub memcgs: Vec<u64>,
    pub shrinkers: Vec<ShrinkerKey>,
}

impl IntervalAggregator {
    /// Deltas since the previous call, for memcgs with any activity.
    pub fn advance(
        &mut self,
        memcgs: &HashMap<u64, MemcgStats>,
        shrinkers: &HashMap<ShrinkerKey, ShrinkerStats>,
    ) -> Vec<MemcgDelta> {
        // The kernel counts do_shrink_slab calls per (memcg, shrinker)
        // only: the memcgs' own counts are their sums.
        let mut memcgs = memcgs.clone();
        counters::fold_shrinkers(&mut memcgs, shrinkers);
        let mut by_memcg: HashMap<u64, Vec<(ShrinkerKey, ShrinkerStats)>> = HashMap::new();
        for (key, cur) in shrinkers {
            let d = match self.prev_shrinker.get(key) {
                Some(prev) => counters::delta_shrinker(cur, prev),
                None => *cur,
            };
            if d.calls != 0 {
                by_memcg.entry(key.memcg_id).or_default().push((*key, d));
            }
        }
        self.prev_shrinker = shrinkers.clone();

        let mut out = Vec::new();
        for (&id, cur) in &memcgs {
            let d = match self.prev_memcg.get(id) {
                Some(prev) => counters::delta_memcg(cur, prev),
                None => *cur,
            };
            let idle = self.idle_polls.entry(id).or_insert(0);
            if counters::is_idle(&d) {
                *idle += 1;
                continue;
            }
            *idle = 0;
            let mut sh = by_memcg.remove(&id).unwrap_or_default();
            sh.sort_by(|a, b| b.1.calls.cmp(&a.1.calls).then(a.0.cmp(&b.0)));
            out.push(MemcgDelta {
                id,
                stats: d,
                shrinkers: sh,
            });
        }
        self.idle_polls.retain(|id, _| memcgs.contains_key(id));
        // The folded totals are the next interval's baseline.
        self.prev_memcg = MemcgBaseline::new(memcgs);
        out.sort_by_key(|d| d.id);
        out
    }

    /// Entries worth deleting from the kernel maps: those of deleted memcgs
    /// that went idle, and, when a map is nearly full, anything idle for two
    /// polls. Forgetting them here makes a returning memcg start from zero.
    pub fn evict(
        &mut self,
        mut is_deleted: impl FnMut(u64) -> bool,
        memcg_capacity: usize,
        shrinker_capacity: usize,
    ) -> Evictions {
        let memcg_full = self.prev_memcg.len() * 10 >= memcg_capacity * 9;
        let shrinker_full = self.prev_shrinker.len() * 10 >= shrinker_capacity * 9;
        let mut ev = Evictions::default();
        for (&id, &idle) in &self.idle_polls {
            if (idle >= 1 && is_deleted(id)) || (memcg_full && idle >= 2) {
                ev.memcgs.push(id);
            }
        }
        ev.memcgs.sort_unstable();
        self.prev_memcg.remove_sorted(&ev.memcgs);
        for id in &ev.memcgs {
            self.idle_polls.remove(id);
        }
        let idle_memcg = |id: u64| self.idle_polls.get(&id).copied().unwrap_or(u32::MAX) >= 2;
        for key in self.prev_shrinker.keys() {
            if ev.memcgs.contains(&key.memcg_id) || (shrinker_full && idle_memcg(key.memcg_id)) {
                ev.shrinkers.push(*key);
            }
        }
        for key in &ev.shrinkers {
            // A memcg that stays keeps its baseline consistent with the
            // sums it will be read as from now on, without this shrinker.
            if let (Some(s), Some(m)) = (
                self.prev_shrinker.remove(key),
                self.prev_memcg.get_mut(key.memcg_id),
            ) {
                counters::shrinker_into_memcg(m, &s, u64::wrapping_sub);
            }
        }
        ev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(memcg_id: u64, shrinker: u64) -> ShrinkerKey {
        ShrinkerKey { memcg_id, shrinker }
    }

    fn stats(calls: u64) -> MemcgStats {
        MemcgStats {
            charge_calls: calls,
            ..MemcgStats::ZERO
        }
    }

    #[test]
    fn first_poll_reports_totals_then_deltas() {
        let mut agg = IntervalAggregator::default();
        let mut m = HashMap::from([(10, stats(5)), (11, stats(0))]);
        let d = agg.advance(&m, &HashMap::new());
        assert_eq!(d.len(), 1, "the all-zero memcg is idle");
        assert_eq!(d[0].stats.charge_calls, 5);
        m.insert(10, stats(8));
        let d = agg.advance(&m, &HashMap::new());
        assert_eq!(d[0].stats.charge_calls, 3);
        assert!(
            agg.advance(&m, &HashMap::new()).is_empty(),
            "no change, no record"
        );
    }

    #[test]
    fn shrinkers_are_grouped_and_sorted() {
        let mut agg = IntervalAggregator::default();
        // No memcg entry: the kernel counted only per (memcg, shrinker).
        let m = HashMap::new();
        let (k1, k2) = (key(10, 0x1), key(10, 0x2));
        let s = HashMap::from([
            (
                k1,
                ShrinkerStats {
                    calls: 10,
                    zero: 10,
                    ..Default::default()
                },
            ),
            (
                k2,
                ShrinkerStats {
                    calls: 20,
                    freed: 5,
                    ..Default::default()
                },
            ),
        ]);
        let d = agg.advance(&m, &s);
        assert_eq!(
            d[0].shrinkers.iter().map(|x| x.0).collect::<Vec<_>>(),
            [k2, k1]
        );
        // The memcg's own counts are the sums over its shrinkers.
        let st = &d[0].stats;
        assert_eq!(
            (st.do_shrink_calls, st.do_shrink_zero, st.do_shrink_freed),
            (30, 10, 5)
        );
    }

    #[test]
    fn evicting_a_shrinker_keeps_its_memcg_baseline() {
        let mut agg = IntervalAggregator::default();
        let k = key(10, 1);
        let m = HashMap::from([(10, stats(1))]);
        let s = HashMap::from([(
            k,
            ShrinkerStats {
                calls: 7,
                zero: 7,
                ..Default::default()
            },
        )]);
        for _ in 0..3 {
            agg.advance(&m, &s);
        }
        // The shrinker map is full: the idle memcg's shrinker goes, the
        // memcg (its map has room) stays.
        let ev = agg.evict(|_| false, 1000, 1);
        assert_eq!(
            ev,
            Evictions {
                memcgs: vec![],
                shrinkers: vec![k]
            }
        );
        // Read without that shrinker: no activity, not a wrapped delta.
        assert!(agg.advance(&m, &HashMap::new()).is_empty());
        let s2 = HashMap::from([(
            k,
            ShrinkerStats {
                calls: 2,
                ..Default::default()
            },
        )]);
        let d = agg.advance(&m, &s2);
        assert_eq!(d[0].stats.do_shrink_calls, 2);
    }

    #[test]
    fn deleted_and_idle_memcgs_are_evicted() {
        let mut agg = IntervalAggregator::default();
        let k = key(10, 1);
        let m = HashMap::from([(10, stats(1)), (11, stats(1))]);
        let s = HashMap::from([(
            k,
            ShrinkerStats {
                calls: 1,
                ..Default::default()
            },
        )]);
        agg.advance(&m, &s);
        assert_eq!(
            agg.evict(|id| id == 10, 1000, 1000),
            Evictions::default(),
            "still active"
        );
        agg.advance(&m, &s);
        let ev = agg.evict(|id| id == 10, 1000, 1000);
        assert_eq!(
            ev,
            Evictions {
                memcgs: vec![10],
                shrinkers: vec![k]
            }
        );
        // A returning id starts from zero: its whole count is new activity.
        let d = agg.advance(&HashMap::from([(10, stats(1))]), &HashMap::new());
        assert_eq!(d[0].stats.charge_calls, 1);
    }

    #[test]
    fn nearly_full_map_evicts_idle_entries() {
        let mut agg = IntervalAggregator::default();
        let m: HashMap<u64, MemcgStats> = (0..10).map(|i| (i, stats(1))).collect();
        agg.advance(&m, &HashMap::new());
        agg.advance(&m, &HashMap::new());
        agg.advance(&m, &HashMap::new());
        assert!(
            agg.evict(|_| false, 100, 100).memcgs.is_empty(),
            "room left"
        );
        assert_eq!(agg.evict(|_| false, 10, 100).memcgs.len(), 10);
    }
}
