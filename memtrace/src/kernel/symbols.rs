//! /proc/kallsyms: exact-name lookups for hook targets (a `foo.cold` or
//! `foo.isra.0` clone is a different function and never matches `foo`) and
//! address-to-name lookups for shrinker callbacks.
use anyhow::{Context, Result};

/// Text symbols only, stored compactly (one string buffer and fixed-size
/// entries): the agent keeps this for its whole life, and a distribution
/// kernel has ~200,000 of them.
pub struct Kallsyms {
    names: String,
    /// (address, start, end of the name in `names`), sorted by address.
    entries: Vec<(u64, u32, u32)>,
}

impl Kallsyms {
    pub fn load() -> Result<Self> {
        let text = std::fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
        Ok(Self::parse(&text))
    }

    pub fn parse(text: &str) -> Self {
        let mut names = String::new();
        let mut entries = Vec::new();
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
            let start = names.len() as u32;
            names.push_str(name);
            entries.push((addr, start, names.len() as u32));
        }
        entries.sort_unstable_by_key(|e| e.0);
        names.shrink_to_fit();
        entries.shrink_to_fit();
        Self { names, entries }
    }

    fn name(&self, e: &(u64, u32, u32)) -> &str {
        &self.names[e.1 as usize..e.2 as usize]
    }

    /// Whether a function of exactly this name exists (start-up only: a
    /// linear scan).
    pub fn exists(&self, name: &str) -> bool {
        self.entries.iter().any(|e| self.name(e) == name)
    }

    /// Address of the function of exactly this name (start-up only: a
    /// linear scan); None when absent or hidden (kptr_restrict).
    pub fn address_of(&self, name: &str) -> Option<u64> {
        self.entries
            .iter()
            .find(|e| self.name(e) == name)
            .map(|e| e.0)
            .filter(|&a| a != 0)
    }

    /// Whether addresses are shown: /proc/kallsyms prints them as zero
    /// unless the reader has CAP_SYSLOG (or kptr_restrict=0 with
    /// perf_event_paranoid <= 1), and then no shrinker callback is named.
    pub fn addresses_visible(&self) -> bool {
        self.entries.iter().any(|e| e.0 != 0)
    }

    /// The function starting exactly at `addr`. Addresses are all zero
    /// when kptr_restrict hides them, and then nothing matches.
    pub fn name_at(&self, addr: u64) -> Option<&str> {
        if addr == 0 {
            return None;
        }
        let i = self.entries.partition_point(|e| e.0 < addr);
        let e = self.entries.get(i)?;
        (e.0 == addr).then(|| self.name(e))
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
        assert_eq!(k.address_of("super_cache_count"), Some(0xffffffff81700000));
        assert_eq!(k.address_of("super_cache"), None);
    }

    #[test]
    fn hidden_addresses() {
        let k = Kallsyms::parse("0000000000000000 T shrink_slab\n");
        assert!(k.exists("shrink_slab"));
        assert_eq!(k.name_at(0), None);
        assert_eq!(k.address_of("shrink_slab"), None);
    }
}
