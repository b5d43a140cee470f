//! /proc/kallsyms: exact-name lookups for hook targets (a `foo.cold` or
//! `foo.isra.0` clone is a different function and never matches `foo`) and
//! address-to-name lookups for shrinker callbacks.
use std::collections::HashSet;

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
        Self::read(|_, _| true)
    }

    /// Only the functions named in `names`: what planning needs (which
    /// hook targets exist, `super_cache_count`'s address) without holding
    /// the whole table (~5 MiB) while aya parses the kernel's BTF, the
    /// moment that sets the agent's peak RSS.
    pub fn load_only(names: &[&str]) -> Result<Self> {
        Self::read(|n, _| names.contains(&n))
    }

    /// The text symbols `keep` wants, read line by line (the file is
    /// ~5 MiB: not held whole).
    fn read(keep: impl Fn(&str, u64) -> bool) -> Result<Self> {
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
            k.push_line(line, &|_, _| true);
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
    fn push_line(&mut self, line: &str, keep: &impl Fn(&str, u64) -> bool) {
        let mut it = line.split_ascii_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
            return;
        };
        // Module symbols carry a trailing "[module]"; keep the name.
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            return;
        };
        if !matches!(kind, "t" | "T" | "w" | "W") || !keep(name, addr) {
            return;
        }
        let start = self.names.len() as u32;
        self.names.push_str(name);
        self.entries.push((addr, start, self.names.len() as u32));
    }

    fn finish(&mut self) {
        // Stable: of several names at one address, the first listed wins,
        // in the whole table and in any part of it alike.
        self.entries.sort_by_key(|e| e.0);
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

/// Names of kernel functions by address, read from /proc/kallsyms only for
/// the addresses asked for: the agent names a handful of shrinker callbacks
/// (`count_objects`), and holding the whole table (~5 MiB) for them was a
/// quarter of its steady memory.
#[derive(Default)]
pub struct Symbolizer {
    /// The functions at the addresses looked up so far.
    table: Option<Kallsyms>,
    /// Every address looked up (found or not): each is read for once.
    looked_up: HashSet<u64>,
}

impl Symbolizer {
    /// Looks up the addresses in `addrs` not looked up before, all in one
    /// read of /proc/kallsyms (the table keeps those seen before too).
    pub fn learn(&mut self, addrs: impl IntoIterator<Item = u64>) {
        let before = self.looked_up.len();
        self.looked_up.extend(addrs.into_iter().filter(|&a| a != 0));
        if self.looked_up.len() == before {
            return;
        }
        let want = &self.looked_up;
        match Kallsyms::read(|_, addr| want.contains(&addr)) {
            Ok(t) => self.table = Some(t),
            Err(e) => log::warn!("naming shrinker callbacks: {e:#}"),
        }
    }

    /// The functions at the addresses learnt so far.
    pub fn table(&self) -> &Kallsyms {
        static EMPTY: Kallsyms = Kallsyms {
            names: String::new(),
            entries: Vec::new(),
        };
        self.table.as_ref().unwrap_or(&EMPTY)
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
            k.push_line(line, &|n, _| {
                ["super_cache_count", "some_data"].contains(&n)
            });
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

    #[test]
    fn the_symbolizer_reads_only_what_it_is_asked_for() {
        // The running kernel's own table: shrink_slab's address, if shown.
        let all = Kallsyms::load().unwrap();
        let Some(addr) = all.address_of("shrink_slab") else {
            return; // kallsyms hides addresses here: nothing to name
        };
        let mut s = Symbolizer::default();
        assert_eq!(s.table().name_at(addr), None);
        s.learn([addr, 0]);
        assert_eq!(s.table().name_at(addr), all.name_at(addr));
        assert_eq!(
            s.table().entries.len(),
            all.entries.iter().filter(|e| e.0 == addr).count()
        );
        // Nothing new: no second read, the same answer.
        s.learn([addr]);
        assert_eq!(s.table().name_at(addr), Some("shrink_slab"));
    }
}
