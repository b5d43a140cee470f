//! What an OOM event's memcg chain says: the kernel read the memcg's and
//! each ancestor's kernfs name and `memory` page counter at the kill, so
//! the victim's path and the memcg whose limit fired are known even when
//! the memcg is removed a millisecond later and the kernel log is silent.
use memtrace_common::{
    OOM_CHAIN_COMPLETE, OOM_CHAIN_DEPTH, OOM_CHAIN_OF_CURRENT, OOM_CHAIN_OF_VICTIM, OOM_NAME_LEN,
    OomChain, OomMemcgLevel,
};

/// Headroom below a limit that still counts as "at the limit": a charge
/// fails when usage plus the charge exceeds it, and a charge is at most a
/// PMD-sized folio (512 pages on x86-64); anything freed between the
/// failed charge and the kill shows up as headroom too.
pub const AT_LIMIT_PAGES: u64 = 512;
/// Limits at or above this many pages are "no limit" (`PAGE_COUNTER_MAX`
/// is `LONG_MAX / PAGE_SIZE`: 2^51 pages with 4 KiB pages, 2^47 with 64 KiB).
const UNLIMITED_PAGES: u64 = 1 << 46;

/// Whose memcg the chain starts at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whose {
    Victim,
    /// The task that ran the OOM killer (the hook gave only the victim's
    /// pid): the limiting memcg is on this chain, the victim's need not be.
    Current,
}

/// The chain's levels, the memcg first, if the kernel captured any.
pub fn levels(c: &OomChain) -> &[OomMemcgLevel] {
    &c.levels[..(c.len as usize).min(OOM_CHAIN_DEPTH)]
}

pub fn whose(c: &OomChain) -> Option<Whose> {
    if levels(c).is_empty() {
        None
    } else if c.flags & OOM_CHAIN_OF_VICTIM != 0 {
        Some(Whose::Victim)
    } else if c.flags & OOM_CHAIN_OF_CURRENT != 0 {
        Some(Whose::Current)
    } else {
        None
    }
}

/// A level's name, if it was read whole (a name filling the buffer may
/// have been cut; one that is empty, `.`, `..` or has a `/` is no
/// directory name).
fn name(l: &OomMemcgLevel) -> Option<&[u8]> {
    let n = l.name.iter().position(|&b| b == 0)?;
    let name = &l.name[..n];
    let ok = !name.is_empty()
        && n < OOM_NAME_LEN - 1
        && name != b"."
        && name != b".."
        && !name.contains(&b'/');
    ok.then_some(name)
}

/// Path (relative to the memory hierarchy's root, `/a/b`) of the chain's
/// level `i`, assembled from the names the kernel read; None when the chain
/// does not reach the root or a name is unusable.
pub fn path(c: &OomChain, i: usize) -> Option<String> {
    let lv = levels(c);
    if c.flags & OOM_CHAIN_COMPLETE == 0 || i >= lv.len() {
        return None;
    }
    // The last level is the root memcg, whose kernfs name is not a path
    // component.
    let mut out = String::new();
    for l in lv[i..lv.len() - 1].iter().rev() {
        out.push('/');
        out.push_str(&String::from_utf8_lossy(name(l)?));
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// Index of the level with memcg id `id`.
pub fn find(c: &OomChain, id: u64) -> Option<usize> {
    (id != 0)
        .then(|| levels(c).iter().position(|l| l.id == id))
        .flatten()
}

/// The memcg whose limit fired, inferred from the page counters read at
/// the kill: the lowest level that has a limit and is at it. None when no
/// level is (a global, cpuset or mempolicy OOM, or memory freed in
/// between).
pub fn limiting(c: &OomChain) -> Option<usize> {
    levels(c).iter().position(|l| {
        l.id != 0
            && l.max_pages < UNLIMITED_PAGES
            && l.usage_pages.saturating_add(AT_LIMIT_PAGES) > l.max_pages
    })
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A chain from `(name, usage, max)` levels, the memcg first, ids 100+i.
    pub fn chain(levels: &[(&str, u64, u64)], flags: u32) -> OomChain {
        let mut c = OomChain::EMPTY;
        for (i, (n, usage, max)) in levels.iter().enumerate() {
            let l = &mut c.levels[i];
            l.id = 100 + i as u64;
            l.usage_pages = *usage;
            l.max_pages = *max;
            l.name[..n.len()].copy_from_slice(n.as_bytes());
        }
        c.len = levels.len() as u32;
        c.flags = flags;
        c
    }

    const NOLIMIT: u64 = (i64::MAX / 4096) as u64;

    #[test]
    fn paths_are_assembled_below_the_root() {
        let c = chain(
            &[("job", 10, NOLIMIT), ("svc", 4096, 4096), ("", 1, NOLIMIT)],
            OOM_CHAIN_OF_VICTIM | OOM_CHAIN_COMPLETE,
        );
        assert_eq!(path(&c, 0).as_deref(), Some("/svc/job"));
        assert_eq!(path(&c, 1).as_deref(), Some("/svc"));
        assert_eq!(path(&c, 2).as_deref(), Some("/"));
        assert_eq!(path(&c, 3), None);
        assert_eq!(whose(&c), Some(Whose::Victim));
        assert_eq!(find(&c, 101), Some(1));
        assert_eq!(find(&c, 0), None);
    }

    #[test]
    fn incomplete_chains_and_bad_names_give_no_path() {
        let cut = chain(&[("a", 0, 0), ("b", 0, 0)], OOM_CHAIN_OF_VICTIM);
        assert_eq!(path(&cut, 0), None, "did not reach the root");
        let long = "x".repeat(OOM_NAME_LEN - 1);
        for bad in ["", "..", long.as_str()] {
            let c = chain(&[(bad, 0, 0), ("", 0, 0)], OOM_CHAIN_COMPLETE);
            assert_eq!(path(&c, 0), None, "{bad:?}");
        }
        // Control bytes are kept (escaping is the writers' job).
        let c = chain(&[("e\x1b]0", 0, 0), ("", 0, 0)], OOM_CHAIN_COMPLETE);
        assert_eq!(path(&c, 0).as_deref(), Some("/e\x1b]0"));
        assert_eq!(whose(&OomChain::EMPTY), None);
    }

    #[test]
    fn the_lowest_level_at_its_limit_is_the_limiting_one() {
        // The child has a limit but room; the parent is at its limit.
        let c = chain(
            &[
                ("job", 1000, 8192),
                ("svc", 4095, 4096),
                ("top", 4095, 4096),
                ("", 9, NOLIMIT),
            ],
            OOM_CHAIN_COMPLETE,
        );
        assert_eq!(limiting(&c), Some(1));
        // Freed memory shows as headroom up to a PMD folio.
        let c = chain(&[("a", 4096 - 300, 4096), ("", 1, NOLIMIT)], 0);
        assert_eq!(limiting(&c), Some(0));
        // Nothing at a limit: unknown, not guessed.
        let c = chain(&[("a", 10, 4096), ("", 1, NOLIMIT)], 0);
        assert_eq!(limiting(&c), None);
    }
}
