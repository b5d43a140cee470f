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
        Self::read(|_| true)
    }

    /// Only the functions named in `names`: what planning needs (which
    /// hook targets exist, `super_cache_count`'s address) without holding
    /// the whole table (~5 MiB) while aya parses the kernel's BTF, the
    /// moment that sets the agent's peak RSS.
    pub fn load_only(names: &[&str]) -> Result<Self> {
        Self::read(|n| names.contains(&n))
    }

    /// The text symbols `keep` wants, read line by line (the file is
    /// ~5 MiB: not held whole).
    fn read(keep: impl Fn(&str) -> bool) -> Result<Self> {
        use std::io::BufRead as _;
        let f = std::fs::File::open("/proc/kallsyms").context("reading /proc/kallsyms")?;
        let mut r = std::io::BufReader::with_capacity(64 << 10, f);
        let mut line = String::new();
        let mut k = Self::empty();
        loop {
            line.clear();
            if r.read_line(&mut line).context("reading /proc/kallsyms")? == 0 {
                break;
            }
            k.push_line(&line, &keep);
        }
        k.finish();
        Ok(k)
    }

    pub fn parse(text: &str) -> Self {
        let mut k = Self::empty();
        for line in text.lines() {
            k.push_line(line, &|_| true);
        }
        k.finish();
        k
    }

    fn empty() -> Self {
        Self {
            names: String::new(),
            entries: Vec::new(),
        }
    }

    /// Adds the text symbol on `line` if `keep` wants its name.
    fn push_line(&mut self, line: &str, keep: &impl Fn(&str) -> bool) {
        let mut it = line.split_ascii_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
            return;
        };
        // Module symbols carry a trailing "[module]"; keep the name.
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            return;
        };
        if !matches!(kind, "t" | "T" | "w" | "W") || !keep(name) {
            return;
        }
        let start = self.names.len() as u32;
        self.names.push_str(name);
        self.entries.push((addr, start, self.names.len() as u32));
    }

    fn finish(&mut self) {
        self.entries.sort_unstable_by_key(|e| e.0);
        self.names.shrink_to_fit();
        self.entries.shrink_to_fit();
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
    fn a_subset_keeps_only_the_names_asked_for() {
        let mut k = Kallsyms::empty();
        for line in SAMPLE.lines() {
            k.push_line(line, &|n| ["super_cache_count", "some_data"].contains(&n));
        }
        k.finish();
        assert_eq!(k.address_of("super_cache_count"), Some(0xffffffff81700000));
        assert!(!k.exists("shrink_slab"));
        assert!(!k.exists("some_data"), "still only text symbols");
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
