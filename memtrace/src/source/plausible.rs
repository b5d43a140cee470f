//! Values no real run writes. A record file is input like any other (a
//! ticket attachment, a copy edited by hand): a record whose percentages
//! are not percentages or whose counters are beyond anything a kernel
//! counts is a bad line, not figures to sum and print as real.
use crate::output::records::{
    MemcgInterval, MemcgState, OomHistory, OomKill, OomPostmortem, Record, ShrinkerRow, Slow,
    System, Trigger, Unreclaimable,
};

/// Larger counters are impossible: every kernel counter memtrace reads is
/// a u64 that would take centuries of nanoseconds to pass 2^63, and JSON
/// readers that go through doubles lose them anyway.
const MAX_COUNTER: u64 = i64::MAX as u64;
/// kswapd CPU is in % of one CPU: one kswapd thread per NUMA node.
const MAX_KSWAPD_PCT: f64 = 100.0 * 1024.0;

type Check = Result<(), String>;

fn counter(name: &str, v: impl Into<Option<u64>>) -> Check {
    match v.into() {
        Some(v) if v > MAX_COUNTER => Err(format!(
            "impossible value: {name} = {v} (more than 2^63: no kernel counter gets there)"
        )),
        _ => Ok(()),
    }
}

fn pct_upto(name: &str, v: impl Into<Option<f64>>, max: f64) -> Check {
    match v.into() {
        Some(v) if !(0.0..=max).contains(&v) => Err(format!(
            "impossible value: {name} = {v:?} (a percentage, 0 to {max})"
        )),
        _ => Ok(()),
    }
}

fn pct(name: &str, v: impl Into<Option<f64>>) -> Check {
    pct_upto(name, v, 100.0)
}

macro_rules! counters {
    ($rec:expr, $($field:ident),* $(,)?) => {
        $(counter(stringify!($field), $rec.$field)?;)*
    };
}

/// Ok, or what is impossible about the record.
pub fn check(r: &Record) -> Check {
    match r {
        Record::Header(_) => Ok(()),
        Record::MemcgInterval(i) => interval(i),
        Record::System(s) => system(s),
        Record::SlowCharge(s) | Record::SlowReclaim(s) => slow(s),
        Record::OomKill(k) => kill(k),
        Record::Capture(c) => trigger(&c.trigger),
        Record::OomPostmortem(p) => postmortem(p),
    }
}

fn interval(i: &MemcgInterval) -> Check {
    counters!(
        i,
        ts_ns,
        interval_ns,
        charge_calls,
        charge_failures,
        charge_ns,
        charge_pages,
        charge_p50_ns,
        charge_p99_ns,
        reclaim_direct_count,
        reclaim_direct_ns,
        reclaim_direct_pages,
        reclaim_memcg_count,
        reclaim_memcg_ns,
        reclaim_memcg_pages,
        reclaim_p50_ns,
        reclaim_p99_ns,
        shrink_slab_calls,
        shrink_slab_ns,
        shrink_slab_freed,
        shrink_slab_kswapd_ns,
        do_shrink_slab_calls,
        do_shrink_slab_zero,
        do_shrink_slab_freed,
        do_shrink_slab_ns,
        limit_hits,
    );
    for s in i.shrinkers.iter().flatten() {
        shrinker(s)?;
    }
    match &i.state {
        Some(s) => state(s),
        None => Ok(()),
    }
}

fn shrinker(s: &ShrinkerRow) -> Check {
    counters!(s, calls, zero, freed, ns);
    Ok(())
}

fn state(s: &MemcgState) -> Check {
    counters!(
        s,
        usage_bytes,
        limit_bytes,
        effective_limit_bytes,
        working_set_bytes,
        anon_bytes,
        file_bytes,
        shmem_bytes,
        unevictable_bytes,
        dirty_bytes,
        writeback_bytes,
    );
    pct("pressure_some_avg10", s.pressure_some_avg10)?;
    pct("pressure_full_avg10", s.pressure_full_avg10)
}

fn system(s: &System) -> Check {
    pct("sys_pct", s.sys_pct)?;
    pct("max_cpu_sys_pct", s.max_cpu_sys_pct)?;
    pct("iowait_pct", s.iowait_pct)?;
    pct_upto("kswapd_cpu_pct", s.kswapd_cpu_pct, MAX_KSWAPD_PCT)?;
    counters!(
        s,
        ts_ns,
        interval_ns,
        dying_memcgs,
        live_memcgs,
        kswapd_wakes,
        kswapd_ns,
        ringbuf_drops,
        memcg_map_full,
        shrinker_map_full,
        inflight_map_full,
        unmatched_returns,
        missed_returns,
        map_evictions,
        prog_recursion_misses,
    );
    Ok(())
}

fn slow(s: &Slow) -> Check {
    counters!(s, ts_ns, duration_ns, pages);
    Ok(())
}

fn kill(k: &OomKill) -> Check {
    counters!(k, ts_ns, totalpages);
    counters!(
        k.victim,
        total_vm_kb,
        rss_anon_kb,
        rss_file_kb,
        rss_shmem_kb,
        pgtables_kb
    );
    Ok(())
}

fn trigger(t: &Trigger) -> Check {
    pct("threshold_pct", t.threshold_pct)?;
    pct("peak_sys_pct", t.peak_sys_pct)?;
    pct("peak_cpu_sys_pct", t.peak_cpu_sys_pct)
}

fn history(h: &OomHistory) -> Check {
    counters!(
        h,
        window_ns,
        intervals,
        charge_failures,
        limit_hits,
        reclaim_count,
        reclaim_ns,
        reclaim_pages,
        do_shrink_slab_calls,
        do_shrink_slab_zero,
        shrink_slab_ns,
    );
    Ok(())
}

fn unreclaimable(u: &Unreclaimable) -> Check {
    pct("share_pct", u.share_pct)
}

fn postmortem(p: &OomPostmortem) -> Check {
    kill(&p.kill)?;
    for s in [&p.limit_state, &p.victim_state].into_iter().flatten() {
        state(s)?;
    }
    if let Some(h) = &p.history {
        history(h)?;
    }
    match &p.unreclaimable {
        Some(u) => unreclaimable(u),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_values_are_named() {
        let sys = |sys_pct| {
            Record::System(System {
                sys_pct,
                ..Default::default()
            })
        };
        assert!(check(&sys(42.0)).is_ok());
        for bad in [1e308, -1e308, -0.5, 100.5] {
            let e = check(&sys(bad)).unwrap_err();
            assert!(e.contains("sys_pct") && e.contains("percentage"), "{e}");
        }
        let i = Record::from(MemcgInterval {
            charge_calls: Some(u64::MAX),
            ..Default::default()
        });
        let e = check(&i).unwrap_err();
        assert!(e.contains("charge_calls = 18446744073709551615"), "{e}");
        let ok = Record::from(MemcgInterval {
            charge_calls: Some(MAX_COUNTER),
            ..Default::default()
        });
        assert!(check(&ok).is_ok());
    }
}
