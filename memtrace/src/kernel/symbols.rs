//! /proc/kallsyms: exact-name lookups for hook targets (a `foo.cold` or
//! `foo.isra.0` clone is a different function and never matches `foo`) and
//! address-to-name lookups for shrinker callbacks.
use std::collections::HashMap;

use anyhow::{Context, Result};

pub struct Kallsyms {
    by_name: HashMap<String, u64>,
    /// Text symbols sorted by address.
    by_addr: Vec<(u64, String)>,
}

impl Kallsyms {
    pub fn load() -> Result<Self> {
        let text = std::fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
        Ok(Self::parse(&text))
    }

    pub fn parse(text: &str) -> Self {
        let mut by_name = HashMap::new();
        let mut by_addr = Vec::new();
        for line in text.lines() {
            let mut it = line.split_ascii_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            // Module symbols carry a trailing "[module]"; keep the name.
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            if !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            by_name.entry(name.to_string()).or_insert(addr);
            if addr != 0 {
                by_addr.push((addr, name.to_string()));
            }
        }
        by_addr.sort_unstable();
        Self { by_name, by_addr }
    }

    /// Whether addresses are visible (kptr_restrict hides them from non-root).
    pub fn has_addresses(&self) -> bool {
        !self.by_addr.is_empty()
    }

    pub fn exists(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The function containing `addr`, exact at a symbol start.
    pub fn name_at(&self, addr: u64) -> Option<&str> {
        let i = self.by_addr.partition_point(|(a, _)| *a <= addr);
        let (start, name) = self.by_addr.get(i.checked_sub(1)?)?;
        (*start == addr).then_some(name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff81212346 t oom_kill_process.cold
ffffffff81599310 t oom_kill_process
ffffffff815b0140 t do_shrink_slab
ffffffff815b0d30 T shrink_slab
ffffffff81700000 t super_cache_count
ffffffffc0001000 t xfs_fs_nr_cached_objects\t[xfs]
ffffffff81800000 D some_data
";

    #[test]
    fn exact_names_only() {
        let k = Kallsyms::parse(SAMPLE);
        assert!(k.exists("oom_kill_process"));
        assert!(k.exists("oom_kill_process.cold"));
        assert!(!k.exists("try_charge_memcg"));
        assert!(!k.exists("some_data"), "data symbols are not hook targets");
    }

    #[test]
    fn address_lookup_is_exact() {
        let k = Kallsyms::parse(SAMPLE);
        assert_eq!(k.name_at(0xffffffff81700000), Some("super_cache_count"));
        assert_eq!(k.name_at(0xffffffff81700001), None);
        assert_eq!(
            k.name_at(0xffffffffc0001000),
            Some("xfs_fs_nr_cached_objects")
        );
        assert_eq!(k.name_at(1), None);
    }

    #[test]
    fn hidden_addresses() {
        let k = Kallsyms::parse("0000000000000000 T shrink_slab\n");
        assert!(k.exists("shrink_slab"));
        assert!(!k.has_addresses());
    }
}
