//! Kernel memory of the maps at the chosen sizes, and the budget they must
//! fit before anything is loaded.
//!
//! The kernel preallocates hash maps in full at creation (every element,
//! times every possible CPU for the per-CPU ones), so `--memcg-entries
//! 100000000` would take ~85 GB of unswappable kernel memory on a 2-CPU
//! host and set off the host's OOM killer while loading. The budget is
//! checked first, so such a size is a usage error naming what it would
//! take. `doctor` prints the same figures.
use std::mem::size_of;

use memtrace_common::{
    Inflight, InflightKey, MemcgStats, ShrinkerInfo, ShrinkerMapKey, ShrinkerMapValue,
};
use serde::Serialize;

use super::loader::MapSizes;

/// Fixed in memtrace-ebpf/src/maps.rs: one entry per shrinker seen.
pub const SHRINKER_INFO_ENTRIES: u32 = 4096;

/// The budget is this fraction of the host's RAM (MemTotal)...
pub const BUDGET_RAM_DIVISOR: u64 = 8;
/// ... but never less than this (small guests still get the defaults,
/// which take ~8 MiB on 2 CPUs, many times over).
pub const BUDGET_FLOOR_BYTES: u64 = 256 << 20;

#[derive(Clone, Debug, Serialize)]
pub struct MapMemory {
    pub name: &'static str,
    pub kind: &'static str,
    pub max_entries: u32,
    pub bytes: u64,
}

/// CPUs the kernel may ever bring online: per-CPU maps hold a value for
/// each of them.
pub fn possible_cpus() -> u64 {
    aya::util::nr_cpus().map(|n| n as u64).unwrap_or(1)
}

/// Kernel memory of every map at these sizes on `cpus` possible CPUs
/// (hash elements carry ~48 bytes of kernel overhead; per-CPU values are
/// replicated per possible CPU; a ring buffer is its size).
pub fn map_memory(sizes: &MapSizes, cpus: u64) -> Vec<MapMemory> {
    let r8 = |n: usize| (n as u64).div_ceil(8) * 8;
    // (name, per-CPU, key size, value size, entries) of each hash map.
    let hashes = [
        (
            "MEMCG_STATS",
            true,
            8,
            size_of::<MemcgStats>(),
            sizes.memcg_entries,
        ),
        (
            "SHRINKER_STATS",
            false,
            size_of::<ShrinkerMapKey>(),
            size_of::<ShrinkerMapValue>(),
            sizes.shrinker_entries,
        ),
        (
            "INFLIGHT",
            false,
            size_of::<InflightKey>(),
            size_of::<Inflight>(),
            sizes.inflight_entries,
        ),
        (
            "SHRINKER_INFO",
            false,
            8,
            size_of::<ShrinkerInfo>(),
            SHRINKER_INFO_ENTRIES,
        ),
    ];
    let mut maps: Vec<MapMemory> = hashes
        .into_iter()
        .map(|(name, per_cpu, k, v, n)| MapMemory {
            name,
            kind: if per_cpu { "percpu_hash" } else { "hash" },
            max_entries: n,
            bytes: u64::from(n) * (48 + r8(k) + r8(v) * if per_cpu { cpus } else { 1 }),
        })
        .collect();
    maps.push(MapMemory {
        name: "EVENTS",
        kind: "ringbuf",
        max_entries: sizes.ringbuf_bytes,
        bytes: u64::from(sizes.ringbuf_bytes),
    });
    maps
}

/// The host's RAM in bytes (MemTotal), if /proc/meminfo says.
fn mem_total() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// How much kernel memory the maps may take: 1/8 of RAM, at least 256 MiB.
pub struct Budget {
    pub bytes: u64,
    /// How it was computed, for the error message.
    pub basis: String,
}

pub fn budget() -> Budget {
    budget_for(mem_total())
}

fn budget_for(mem_total: Option<u64>) -> Budget {
    match mem_total {
        Some(ram) => Budget {
            bytes: (ram / BUDGET_RAM_DIVISOR).max(BUDGET_FLOOR_BYTES),
            basis: format!(
                "1/{BUDGET_RAM_DIVISOR} of this host's {} of RAM, at least {}",
                mib(ram),
                mib(BUDGET_FLOOR_BYTES)
            ),
        },
        None => Budget {
            bytes: BUDGET_FLOOR_BYTES,
            basis: "/proc/meminfo unreadable, so the floor".into(),
        },
    }
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

/// Why these sizes do not fit the budget, naming the memory they would
/// take, the budget and the flags to lower; None when they fit.
pub fn over_budget(sizes: &MapSizes, cpus: u64, budget: &Budget) -> Option<String> {
    let maps = map_memory(sizes, cpus);
    let total: u64 = maps.iter().map(|m| m.bytes).sum();
    if total <= budget.bytes {
        return None;
    }
    let mut biggest: Vec<&MapMemory> = maps.iter().collect();
    biggest.sort_by_key(|m| std::cmp::Reverse(m.bytes));
    let parts: Vec<String> = biggest
        .iter()
        .take(3)
        .map(|m| format!("{} {}", m.name, mib(m.bytes)))
        .collect();
    Some(format!(
        "the kernel maps would take {} of kernel memory at these sizes on {cpus} possible CPUs \
         ({}), over memtrace's budget of {} ({}); lower --memcg-entries, --shrinker-entries, \
         --inflight-entries or --ringbuf-kib (`memtrace doctor` shows each map's memory)",
        mib(total),
        parts.join(", "),
        mib(budget.bytes),
        budget.basis
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fit_even_the_floor_on_many_cpus() {
        let b = budget_for(Some(512 << 20));
        assert_eq!(b.bytes, BUDGET_FLOOR_BYTES);
        assert!(over_budget(&MapSizes::default(), 64, &b).is_none());
    }

    #[test]
    fn a_hundred_million_memcgs_is_over_budget_and_says_how_much() {
        let b = budget_for(Some(24 << 30));
        assert_eq!(b.bytes, 3 << 30);
        let sizes = MapSizes {
            memcg_entries: 100_000_000,
            ..MapSizes::default()
        };
        let msg = over_budget(&sizes, 2, &b).expect("over budget");
        assert!(msg.contains("MEMCG_STATS"), "{msg}");
        assert!(msg.contains("3072.0 MiB"), "{msg}");
        assert!(msg.contains("1/8 of this host's 24576.0 MiB"), "{msg}");
        assert!(msg.contains("--memcg-entries"), "{msg}");
    }

    #[test]
    fn budget_scales_with_possible_cpus() {
        let b = budget_for(Some(4 << 30));
        let sizes = MapSizes {
            memcg_entries: 200_000,
            ..MapSizes::default()
        };
        assert!(over_budget(&sizes, 2, &b).is_none());
        assert!(over_budget(&sizes, 256, &b).is_some());
    }
}
