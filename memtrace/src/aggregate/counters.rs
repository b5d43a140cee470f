//! Arithmetic on the kernel's counter structs: summing per-CPU slots,
//! deltas between polls (wrapping, as the kernel's counters do), and
//! percentiles from the log2 histograms.
use std::collections::HashMap;

use memtrace_common::{
    HIST_BUCKETS, HIST_SHIFT, MemcgStats, ShrinkerKey, ShrinkerStats, SystemStats,
};

/// Applies `f` to every counter of two `MemcgStats`.
fn zip_memcg(a: &mut MemcgStats, b: &MemcgStats, f: fn(u64, u64) -> u64) {
    let f32 = |x: u32, y: u32| f(u64::from(x), u64::from(y)) as u32;
    a.charge_calls = f(a.charge_calls, b.charge_calls);
    a.charge_failures = f(a.charge_failures, b.charge_failures);
    a.charge_ns = f(a.charge_ns, b.charge_ns);
    a.charge_pages = f(a.charge_pages, b.charge_pages);
    for i in 0..a.reclaim_count.len() {
        a.reclaim_count[i] = f(a.reclaim_count[i], b.reclaim_count[i]);
        a.reclaim_ns[i] = f(a.reclaim_ns[i], b.reclaim_ns[i]);
        a.reclaim_pages[i] = f(a.reclaim_pages[i], b.reclaim_pages[i]);
    }
    a.shrink_slab_calls = f(a.shrink_slab_calls, b.shrink_slab_calls);
    a.shrink_slab_ns = f(a.shrink_slab_ns, b.shrink_slab_ns);
    a.shrink_slab_freed = f(a.shrink_slab_freed, b.shrink_slab_freed);
    a.shrink_slab_kswapd_ns = f(a.shrink_slab_kswapd_ns, b.shrink_slab_kswapd_ns);
    a.do_shrink_calls = f(a.do_shrink_calls, b.do_shrink_calls);
    a.do_shrink_zero = f(a.do_shrink_zero, b.do_shrink_zero);
    a.do_shrink_freed = f(a.do_shrink_freed, b.do_shrink_freed);
    a.do_shrink_ns = f(a.do_shrink_ns, b.do_shrink_ns);
    for i in 0..HIST_BUCKETS {
        a.charge_hist[i] = f32(a.charge_hist[i], b.charge_hist[i]);
        a.reclaim_hist[i] = f32(a.reclaim_hist[i], b.reclaim_hist[i]);
    }
}

pub fn add_memcg(a: &mut MemcgStats, b: &MemcgStats) {
    zip_memcg(a, b, u64::wrapping_add);
}

/// `cur - prev`. Histogram buckets are u32 and wrap as u32.
pub fn delta_memcg(cur: &MemcgStats, prev: &MemcgStats) -> MemcgStats {
    let mut d = *cur;
    zip_memcg(&mut d, prev, u64::wrapping_sub);
    for i in 0..HIST_BUCKETS {
        d.charge_hist[i] = cur.charge_hist[i].wrapping_sub(prev.charge_hist[i]);
        d.reclaim_hist[i] = cur.reclaim_hist[i].wrapping_sub(prev.reclaim_hist[i]);
    }
    d
}

pub fn is_idle(d: &MemcgStats) -> bool {
    *d == MemcgStats::ZERO
}

/// Adds each (memcg, shrinker) pair's `do_shrink_slab` counts into its
/// memcg's: the kernel counts a call once, per pair (one map update on the
/// hottest path), and a memcg's own `do_shrink_*` are the sums over its
/// shrinkers, added to what the kernel put there itself (the calls a full
/// shrinker map refused). A memcg seen only through its shrinkers gets an
/// entry.
pub fn fold_shrinkers(
    memcgs: &mut HashMap<u64, MemcgStats>,
    shrinkers: &HashMap<ShrinkerKey, ShrinkerStats>,
) {
    for (k, s) in shrinkers {
        let m = memcgs.entry(k.memcg_id).or_insert(MemcgStats::ZERO);
        shrinker_into_memcg(m, s, u64::wrapping_add);
    }
}

/// `f` applied to a memcg's `do_shrink_*` counters and one shrinker's.
pub fn shrinker_into_memcg(m: &mut MemcgStats, s: &ShrinkerStats, f: fn(u64, u64) -> u64) {
    m.do_shrink_calls = f(m.do_shrink_calls, s.calls);
    m.do_shrink_zero = f(m.do_shrink_zero, s.zero);
    m.do_shrink_freed = f(m.do_shrink_freed, s.freed);
    m.do_shrink_ns = f(m.do_shrink_ns, s.ns);
}

pub fn add_shrinker(a: &mut ShrinkerStats, b: &ShrinkerStats) {
    a.calls = a.calls.wrapping_add(b.calls);
    a.zero = a.zero.wrapping_add(b.zero);
    a.freed = a.freed.wrapping_add(b.freed);
    a.ns = a.ns.wrapping_add(b.ns);
    // The callback and memcg are the same in every entry summed into one
    // (memcg id, shrinker) pair; an entry may lack them (0): keep one set.
    if a.count_objects == 0 {
        a.count_objects = b.count_objects;
    }
    if a.memcg_id == 0 {
        a.memcg_id = b.memcg_id;
    }
}

pub fn delta_shrinker(cur: &ShrinkerStats, prev: &ShrinkerStats) -> ShrinkerStats {
    ShrinkerStats {
        calls: cur.calls.wrapping_sub(prev.calls),
        zero: cur.zero.wrapping_sub(prev.zero),
        freed: cur.freed.wrapping_sub(prev.freed),
        ns: cur.ns.wrapping_sub(prev.ns),
        count_objects: cur.count_objects,
        memcg_id: cur.memcg_id,
    }
}

/// `a.f += b.f` for each counter field `f` listed: sums of counters that
/// share their names (the kernel's, the records', a report's totals).
macro_rules! add_fields {
    ($a:expr, $b:expr; $($f:ident)*) => {
        $($a.$f += $b.$f;)*
    };
}
pub(crate) use add_fields;

pub fn add_system(a: &mut SystemStats, b: &SystemStats) {
    add_fields!(a, b; kswapd_wakes kswapd_ns ringbuf_drops memcg_map_full shrinker_map_full
        inflight_map_full unmatched_returns missed_returns);
}

/// The `p`-th percentile (0 < p <= 100) of a histogram, as the upper bound
/// of the bucket it falls in (so it is never an underestimate). None when
/// the histogram is empty.
pub fn percentile(hist: &[u32; HIST_BUCKETS], p: f64) -> Option<u64> {
    let total: u64 = hist.iter().map(|&c| u64::from(c)).sum();
    if total == 0 {
        return None;
    }
    let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0u64;
    for (b, &c) in hist.iter().enumerate() {
        seen += u64::from(c);
        if seen >= rank {
            return Some(1u64 << (b as u32 + HIST_SHIFT + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use memtrace_common::hist_bucket;

    #[test]
    fn delta_wraps_like_the_kernel_counters() {
        let mut prev = MemcgStats::ZERO;
        prev.charge_calls = u64::MAX - 1;
        prev.charge_hist[3] = u32::MAX;
        let mut cur = MemcgStats::ZERO;
        cur.charge_calls = 3;
        cur.charge_hist[3] = 4;
        let d = delta_memcg(&cur, &prev);
        assert_eq!(d.charge_calls, 5);
        assert_eq!(d.charge_hist[3], 5);
    }

    #[test]
    fn add_then_delta_roundtrip() {
        let mut a = MemcgStats::ZERO;
        a.do_shrink_zero = 7;
        a.reclaim_ns[1] = 100;
        let mut sum = a;
        add_memcg(&mut sum, &a);
        assert_eq!(delta_memcg(&sum, &a), a);
        assert!(!is_idle(&a));
        assert!(is_idle(&delta_memcg(&a, &a)));
    }

    #[test]
    fn percentiles_are_bucket_upper_bounds() {
        let mut h = [0u32; HIST_BUCKETS];
        assert_eq!(percentile(&h, 50.0), None);
        // 99 fast calls (~2 us) and one slow one (~50 ms).
        h[hist_bucket(2_000)] += 99;
        h[hist_bucket(50_000_000)] += 1;
        let p50 = percentile(&h, 50.0).unwrap();
        assert!((2_000..=4_096).contains(&p50), "{p50}");
        let p99 = percentile(&h, 99.0).unwrap();
        assert_eq!(p99, p50);
        let p100 = percentile(&h, 100.0).unwrap();
        assert!((50_000_000..=2 * 67_108_864).contains(&p100), "{p100}");
    }
}
