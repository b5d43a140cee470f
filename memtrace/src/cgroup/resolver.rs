//! Maps memcg ids (cgroupfs directory inode numbers, `kn->id`) to paths
//! relative to the memory hierarchy's root.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::mounts::MemcgFs;
use super::path::normalize;

/// A memcg as memtrace names it.
#[derive(Clone, Debug, PartialEq)]
pub struct MemcgName {
    /// `kn->id`: the inode number of the memcg's cgroupfs directory.
    pub id: u64,
    /// `/` for the hierarchy root, else `/a/b` relative to it. Names that are
    /// not UTF-8 are converted lossily; control characters are kept as they
    /// are (escaping them for output is the caller's business).
    pub path: String,
    /// The directory was gone at the last rescan; `path` is its last path.
    pub deleted: bool,
}

/// Rescans triggered by unknown ids happen at most this often.
const MIN_RESCAN_INTERVAL: Duration = Duration::from_millis(200);
/// Cap on cached entries (live memcgs found by a rescan are capped to it).
const MAX_ENTRIES: usize = 1_000_000;
/// Deleted memcgs kept beyond this many are dropped, oldest deletion first.
const MAX_DELETED: usize = 65_536;
/// How long a deleted memcg's path is kept after its deletion or its last
/// lookup (a dying memcg still reclaimed keeps it): long enough for its last
/// counters to be read and its kernel map entries evicted (about a minute),
/// and for a late OOM report to name it; not for ever, or a node that
/// churns memcgs all day grows the cache up to MAX_DELETED (the soak saw
/// +25 MiB in 30 minutes at 30 memcgs/s).
const DELETED_TTL: Duration = Duration::from_secs(300);
/// Ids a complete rescan did not find, remembered up to this many.
const MAX_UNKNOWN: usize = 65_536;

struct Entry {
    /// `/` or `/a/b`, lossily converted.
    path: Arc<str>,
    /// The relative path's real bytes (`a/b`), kept only when not UTF-8.
    raw: Option<Box<[u8]>>,
    deleted: bool,
    /// Generation of the last rescan that found it (or of the rescan
    /// preceding its insertion by [`Resolver::resolve_path`]).
    seen: u64,
    /// Last lookup of it once deleted: a dying memcg the kernel still
    /// reclaims and shrinks keeps its path while its records keep coming.
    looked_up: Option<Instant>,
}

/// Cache of memcg id -> path, refreshed by walking the hierarchy.
pub struct Resolver {
    root: PathBuf,
    by_id: HashMap<u64, Entry>,
    /// Last id seen at each path (a recreated dir gets a new id).
    by_path: HashMap<Arc<str>, u64>,
    /// Ids in the order they were marked deleted, and when.
    deleted: VecDeque<(u64, Instant)>,
    /// Ids looked up and not found by a rescan made after the lookup.
    unknown: HashSet<u64>,
    generation: u64,
    last_scan: Option<Instant>,
    min_interval: Duration,
    /// DELETED_TTL (shorter in tests).
    deleted_ttl: Duration,
    /// The runtimes' names for containers (None: the path alone).
    names: Option<super::runtime::Names>,
}

impl Resolver {
    /// Creates an empty resolver; the first lookup miss scans the hierarchy.
    pub fn new(fs: &MemcgFs) -> Self {
        Resolver {
            root: fs.root.clone(),
            by_id: HashMap::new(),
            by_path: HashMap::new(),
            deleted: VecDeque::new(),
            unknown: HashSet::new(),
            generation: 0,
            last_scan: None,
            min_interval: MIN_RESCAN_INTERVAL,
            deleted_ttl: DELETED_TTL,
            names: None,
        }
    }

    /// Names containers from the runtimes' state files from now on.
    pub fn set_names(&mut self, names: super::runtime::Names) {
        self.names = Some(names);
    }

    /// Adds what the runtimes know to the path's identity of memcg `id`'s
    /// container (nothing without `set_names`).
    pub fn name_container(&mut self, id: u64, c: &mut super::container::Container) {
        if let Some(n) = self.names.as_mut() {
            n.name(id, c);
        }
    }

    /// What naming has cost so far, and how many identities are cached.
    pub fn names_cost(&self) -> Option<(super::runtime::Cost, usize)> {
        self.names.as_ref().map(|n| (n.cost, n.cached()))
    }

    /// Name of the memcg with this id. On a cache miss the hierarchy is
    /// rescanned, but at most once per 200 ms: misses within that window
    /// return None.
    ///
    /// An id that such a rescan (made after this lookup) does not find is
    /// remembered as unknown and then returns None without further rescans:
    /// ids are never reused, so its memcg was deleted before it could be seen,
    /// lies outside this mount, or the id is bogus (like 0).
    pub fn resolve(&mut self, id: u64) -> Option<MemcgName> {
        if let Some(name) = self.cached(id) {
            if name.deleted
                && let Some(e) = self.by_id.get_mut(&id)
            {
                e.looked_up = Some(Instant::now());
            }
            return Some(name);
        }
        if self.unknown.contains(&id) || !self.rescan_allowed() {
            return None;
        }
        let end = self.scan();
        let name = self.cached(id);
        if name.is_none() && end == WalkEnd::Clean {
            if self.unknown.len() >= MAX_UNKNOWN {
                self.unknown.clear();
            }
            self.unknown.insert(id);
        }
        name
    }

    /// [`Self::resolve`] without the rate limit, for the few ids an OOM
    /// kill names: a kill in a memcg created since the last rescan must not
    /// lose its name because another lookup rescanned 100 ms before.
    pub fn resolve_now(&mut self, id: u64) -> Option<MemcgName> {
        if self.cached(id).is_none() && !self.unknown.contains(&id) {
            self.last_scan = None;
        }
        self.resolve(id)
    }

    /// Names memcg `id` by the path the kernel gave for it (an OOM event's
    /// chain, read at the kill): what is cached wins; else the directory at
    /// that path is taken if it is this memcg, and if it is gone (or is
    /// another memcg by now), the memcg is remembered as deleted with that
    /// path. None for id 0 and for paths with `.` or `..` components.
    pub fn learn(&mut self, id: u64, path: &str) -> Option<MemcgName> {
        let key = normalize(path)?;
        if id == 0 {
            return None;
        }
        let is_it =
            |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir() && m.ino() == id);
        if let Some(n) = self.cached(id) {
            if !n.deleted && !is_it(&self.path_of(&n)) {
                self.mark_deleted(id);
            }
            return self.cached(id);
        }
        self.unknown.remove(&id);
        if is_it(&self.abs(&key)) {
            self.insert_found(id, &key, &key.as_bytes()[1..]);
        } else if self.by_id.len() < MAX_ENTRIES {
            let path: Arc<str> = Arc::from(&*key);
            self.by_path.entry(path.clone()).or_insert(id);
            self.by_id.insert(
                id,
                Entry {
                    path,
                    raw: None,
                    deleted: false,
                    seen: self.generation,
                    looked_up: None,
                },
            );
            self.mark_deleted(id);
        }
        self.cached(id)
    }

    fn mark_deleted(&mut self, id: u64) {
        if let Some(e) = self.by_id.get_mut(&id).filter(|e| !e.deleted) {
            e.deleted = true;
            self.deleted.push_back((id, Instant::now()));
        }
        self.forget_old_deleted();
    }

    /// Forgets deleted memcgs beyond MAX_DELETED, or not looked up for
    /// DELETED_TTL since their deletion, oldest first. One looked up since
    /// goes to the back of the queue with that time instead.
    fn forget_old_deleted(&mut self) {
        while let Some(&(id, at)) = self.deleted.front() {
            let over = self.deleted.len() > MAX_DELETED;
            if !over && at.elapsed() < self.deleted_ttl {
                break;
            }
            self.deleted.pop_front();
            let looked_up = self.by_id.get(&id).and_then(|e| e.looked_up);
            match looked_up {
                Some(t) if !over && t > at && t.elapsed() < self.deleted_ttl => {
                    self.deleted.push_back((id, t));
                }
                _ => self.evict(id),
            }
        }
    }

    /// Name of the memcg at `rel` (`/a/b`, `a/b` or `/`), e.g. the
    /// `oom_memcg=/a/b` of a kernel log line. The directory is looked up
    /// directly; if it no longer exists, the memcg last seen at that path is
    /// returned (marked deleted once a rescan has confirmed it). None for
    /// paths with `.` or `..` components.
    pub fn resolve_path(&mut self, rel: &str) -> Option<MemcgName> {
        let key = normalize(rel)?;
        match std::fs::symlink_metadata(self.abs(&key)) {
            Ok(md) if md.is_dir() => {
                let id = md.ino();
                self.insert_found(id, &key, &key.as_bytes()[1..]);
                self.cached(id)
            }
            _ => {
                let id = *self.by_path.get(&*key)?;
                if self.by_id.get(&id).is_some_and(|e| !e.deleted) && self.rescan_allowed() {
                    self.rescan();
                }
                self.cached(id)
            }
        }
    }

    /// Records a memcg seen being created (`cgroup::watch`): directory
    /// `rel` (real bytes below the root, no leading `/`) has id `id`. If it
    /// is removed before the next rescan, that rescan marks it deleted and
    /// its path is kept.
    pub fn found(&mut self, id: u64, rel: &[u8]) {
        self.unknown.remove(&id);
        self.insert_found(id, &display_path(rel), rel);
    }

    /// Whether the memcg is known to be gone: marked deleted by a rescan,
    /// or never found by a complete rescan made after it was looked up
    /// (ids are never reused, so it was removed before it could be seen).
    pub fn gone(&self, id: u64) -> bool {
        self.by_id
            .get(&id)
            .map_or(self.unknown.contains(&id), |e| e.deleted)
    }

    /// Absolute path of the memcg's directory (which may no longer exist).
    pub fn path_of(&self, name: &MemcgName) -> PathBuf {
        if let Some(Entry {
            path,
            raw: Some(raw),
            ..
        }) = self.by_id.get(&name.id)
        {
            if **path == *name.path {
                return self.root.join(OsStr::from_bytes(raw));
            }
        }
        self.abs(&name.path)
    }

    /// Id of the memcg at `rel`: the inode of that directory if it exists,
    /// else the id last seen at that path (a memcg deleted since).
    #[cfg(test)]
    pub fn id_of_path(&self, rel: &str) -> Option<u64> {
        let key = normalize(rel)?;
        match std::fs::symlink_metadata(self.abs(&key)) {
            Ok(md) if md.is_dir() => Some(md.ino()),
            _ => self.by_path.get(&*key).copied(),
        }
    }

    /// Every memcg currently known to exist (after a [`Self::rescan`]).
    pub fn live(&self) -> Vec<MemcgName> {
        self.by_id
            .iter()
            .filter(|(_, e)| !e.deleted)
            .map(|(&id, e)| MemcgName {
                id,
                path: e.path.to_string(),
                deleted: false,
            })
            .collect()
    }

    /// Walks the hierarchy now, regardless of the rate limit: ids found are
    /// cached; cached ids no longer found are marked deleted (unless the walk
    /// hit errors other than directories vanishing under it).
    pub fn rescan(&mut self) {
        self.scan();
    }

    /// [`Self::rescan`], returning how the walk ended.
    fn scan(&mut self) -> WalkEnd {
        self.last_scan = Some(Instant::now());
        self.generation += 1;
        let generation = self.generation;
        let mut found = 0usize;
        let root = self.root.clone();
        let end = walk(&root, MAX_ENTRIES, &mut |id, rel| {
            found += 1;
            let path = display_path(rel);
            self.insert_found(id, &path, rel);
        });
        log::debug!(
            "memcg rescan of {}: {found} dirs, {end:?}",
            self.root.display()
        );
        if end == WalkEnd::Incomplete {
            return end;
        }
        let now = Instant::now();
        for (&id, e) in self.by_id.iter_mut() {
            if !e.deleted && e.seen != generation {
                e.deleted = true;
                self.deleted.push_back((id, now));
            }
        }
        self.forget_old_deleted();
        end
    }

    fn rescan_allowed(&self) -> bool {
        self.last_scan
            .is_none_or(|t| t.elapsed() >= self.min_interval)
    }

    fn cached(&self, id: u64) -> Option<MemcgName> {
        self.by_id.get(&id).map(|e| MemcgName {
            id,
            path: e.path.to_string(),
            deleted: e.deleted,
        })
    }

    /// Records that directory `rel` (real bytes, no leading `/`) with display
    /// path `path` has inode `id`.
    fn insert_found(&mut self, id: u64, path: &str, rel: &[u8]) {
        let generation = self.generation;
        let raw = (std::str::from_utf8(rel).is_err()).then(|| Box::<[u8]>::from(rel));
        if let Some(e) = self.by_id.get_mut(&id) {
            e.seen = generation;
            e.deleted = false;
            e.raw = raw;
            if *e.path != *path {
                // Renamed.
                let old = std::mem::replace(&mut e.path, Arc::from(path));
                if self.by_path.get(&old) == Some(&id) {
                    self.by_path.remove(&old);
                }
                self.by_path.insert(e.path.clone(), id);
            }
            return;
        }
        if self.by_id.len() >= MAX_ENTRIES {
            return;
        }
        let path: Arc<str> = Arc::from(path);
        self.by_path.insert(path.clone(), id);
        self.by_id.insert(
            id,
            Entry {
                path,
                raw,
                deleted: false,
                seen: generation,
                looked_up: None,
            },
        );
    }

    fn evict(&mut self, id: u64) {
        if let Some(e) = self.by_id.get(&id) {
            if !e.deleted {
                return; // Seen again since (cannot happen with unique ids).
            }
            if self.by_path.get(&e.path) == Some(&id) {
                self.by_path.remove(&e.path);
            }
            self.by_id.remove(&id);
        }
    }

    fn abs(&self, path: &str) -> PathBuf {
        let rel = path.trim_start_matches('/');
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }
}

/// Display path of a relative path's bytes (`a/b` -> `/a/b`, `` -> `/`).
fn display_path(rel: &[u8]) -> String {
    let mut s = String::with_capacity(rel.len() + 1);
    s.push('/');
    s.push_str(&String::from_utf8_lossy(rel));
    s
}

/// How a walk of the hierarchy ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WalkEnd {
    /// Every directory was read.
    Clean,
    /// Complete but for directories that vanished mid-walk (removed, or
    /// possibly renamed: their subtrees were not read).
    Vanished,
    /// Not all directories could be read.
    Incomplete,
}

/// Walks the directory tree at `root` without following symlinks, calling
/// `found(inode, relative path bytes)` for `root` itself (empty path) and
/// every directory below, at most `cap` times. Directories that vanish
/// mid-walk are skipped.
///
/// Cost is dominated by readdir, which on cgroupfs lists dozens of control
/// files per memcg. Like find(1), the walk does not read directories whose
/// link count is 2: kernfs (cgroupfs v1 and v2), like most Unix filesystems,
/// reports 2 + the number of subdirectories, so these are leaves, usually
/// the majority of memcgs.
///
/// Reports whether some directory vanished under the walk, or the walk was
/// incomplete for another reason (root unreadable, other I/O errors, cap
/// reached).
fn walk(root: &Path, cap: usize, found: &mut dyn FnMut(u64, &[u8])) -> WalkEnd {
    let md = match std::fs::symlink_metadata(root) {
        Ok(md) if md.is_dir() => md,
        Ok(_) => {
            log::warn!("memcg rescan: {} is not a directory", root.display());
            return WalkEnd::Incomplete;
        }
        Err(e) => {
            log::warn!("memcg rescan: {}: {e}", root.display());
            return WalkEnd::Incomplete;
        }
    };
    found(md.ino(), b"");
    if md.nlink() == 2 {
        return WalkEnd::Clean;
    }
    let mut count = 1usize;
    let mut errors = WalkErrors::default();
    // Relative paths of directories still to read.
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(&rel))
        };
        let Some(entries) = errors.check(std::fs::read_dir(&dir), &dir) else {
            continue;
        };
        for entry in entries {
            let Some(entry) = errors.check(entry, &dir) else {
                break;
            };
            // d_type from readdir: no stat for the many control files.
            match errors.check(entry.file_type(), &entry.path()) {
                Some(t) if t.is_dir() => {}
                _ => continue,
            }
            // lstat: does not follow symlinks.
            let md = match errors.check(std::fs::symlink_metadata(entry.path()), &entry.path()) {
                Some(md) if md.is_dir() => md,
                _ => continue,
            };
            if count >= cap {
                log::warn!("memcg rescan: more than {cap} memcgs, ignoring the rest");
                return WalkEnd::Incomplete;
            }
            count += 1;
            let mut child = rel.clone();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(entry.file_name().as_bytes());
            found(md.ino(), &child);
            if md.nlink() != 2 {
                stack.push(child);
            }
        }
    }
    match (errors.incomplete, errors.gone) {
        (true, _) => WalkEnd::Incomplete,
        (false, true) => WalkEnd::Vanished,
        (false, false) => WalkEnd::Clean,
    }
}

/// What went wrong during a walk: a directory vanished under it (normal
/// churn), or something else failed and the walk missed part of the tree.
#[derive(Default)]
struct WalkErrors {
    gone: bool,
    incomplete: bool,
}

impl WalkErrors {
    /// The value, or None after noting why there is none (`path`: what was
    /// being read).
    fn check<T>(&mut self, r: std::io::Result<T>, path: &Path) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) if vanished(&e) => {
                self.gone = true;
                None
            }
            Err(e) => {
                log::debug!("memcg rescan: {}: {e}", path.display());
                self.incomplete = true;
                None
            }
        }
    }
}

fn vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{TestDirs, require_root_memcg};
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn ino(p: &Path) -> u64 {
        std::fs::symlink_metadata(p).unwrap().ino()
    }

    /// A resolver whose rescans are not rate-limited.
    fn eager(fs: &MemcgFs) -> Resolver {
        let mut r = Resolver::new(fs);
        r.min_interval = Duration::ZERO;
        r
    }

    #[test]
    fn display_paths() {
        assert_eq!(display_path(b""), "/");
        assert_eq!(display_path(b"a/\xffb"), "/a/\u{fffd}b");
    }

    #[test]
    fn walk_plain_tree_without_following_symlinks() {
        // walk() is filesystem-agnostic: check it on a scratch tmp tree.
        let base = std::env::temp_dir().join(format!("cgroup-dev-walk-{}", std::process::id()));
        let mut dirs = TestDirs::new();
        dirs.mkdir(&base);
        dirs.mkdir(base.join("a"));
        dirs.mkdir(base.join("a/b"));
        dirs.mkdir(base.join("c"));
        let file = base.join("a/file");
        std::fs::write(&file, b"x").unwrap();
        let link = base.join("link");
        std::os::unix::fs::symlink(base.join("a"), &link).unwrap();
        struct Rm(Vec<PathBuf>);
        impl Drop for Rm {
            fn drop(&mut self) {
                for p in &self.0 {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        let _rm = Rm(vec![file, link]);

        let mut seen = Vec::new();
        let end = walk(&base, 100, &mut |id, rel| {
            seen.push((id, String::from_utf8(rel.to_vec()).unwrap()))
        });
        assert_eq!(end, WalkEnd::Clean);
        seen.sort_by(|a, b| a.1.cmp(&b.1));
        let expect: Vec<(u64, String)> = ["", "a", "a/b", "c"]
            .iter()
            .map(|r| (ino(&base.join(r)), r.to_string()))
            .collect();
        assert_eq!(seen, expect);
        // The cap makes the walk incomplete.
        assert_eq!(walk(&base, 2, &mut |_, _| {}), WalkEnd::Incomplete);
        // A missing root is incomplete, not "everything deleted".
        let missing = base.join("nope");
        assert_eq!(walk(&missing, 100, &mut |_, _| {}), WalkEnd::Incomplete);
    }

    #[test]
    #[ignore = "needs root: creates memory cgroups (cargo xtask test runs it)"]
    fn resolve_create_delete() {
        let (fs, mut dirs, top, rel) = TestDirs::root_memcg("cgroup-dev");
        let a = dirs.mkcg(&fs, top.join("a"));
        let b = dirs.mkcg(&fs, a.join("b"));
        let (id_a, id_b) = (ino(&a), ino(&b));
        let want_b = format!("{rel}/a/b");

        let mut r = eager(&fs);
        let root = r.resolve(ino(&fs.root)).expect("root resolves");
        assert_eq!(root.path, "/");
        assert!(!root.deleted);
        assert_eq!(r.path_of(&root), fs.root);

        let nb = r.resolve(id_b).expect("b resolves");
        assert_eq!(
            nb,
            MemcgName {
                id: id_b,
                path: want_b.clone(),
                deleted: false
            }
        );
        assert_eq!(r.path_of(&nb), b);
        assert_eq!(r.id_of_path(&want_b), Some(id_b));
        assert_eq!(
            r.resolve_path(&format!("{}/a/", &rel[1..])).unwrap().id,
            id_a
        );

        // rmdir b: after a rescan it is deleted, same id and path.
        std::fs::remove_dir(&b).unwrap();
        r.rescan();
        let gone = r.resolve(id_b).expect("deleted memcg keeps its identity");
        assert_eq!(
            gone,
            MemcgName {
                id: id_b,
                path: want_b.clone(),
                deleted: true
            }
        );
        assert!(!r.resolve(id_a).unwrap().deleted);
        // Looking the old path up gives the deleted memcg too.
        assert_eq!(r.resolve_path(&want_b), Some(gone.clone()));
        assert_eq!(r.id_of_path(&want_b), Some(id_b));

        // Recreated with the same name: a new id; the old one stays deleted.
        let b2 = dirs.mkcg(&fs, &b);
        let id_b2 = ino(&b2);
        assert_ne!(id_b2, id_b);
        let nb2 = r.resolve(id_b2).expect("recreated b resolves");
        assert_eq!(nb2.path, want_b);
        assert!(!nb2.deleted);
        assert_eq!(r.resolve(id_b), Some(gone));
        assert_eq!(r.resolve_path(&want_b).unwrap().id, id_b2);
        assert_eq!(r.id_of_path(&want_b), Some(id_b2));

        assert!(r.resolve_path("/a/../..").is_none());
        assert!(r.resolve_path(&format!("{rel}/nope")).is_none());
    }

    #[test]
    #[ignore = "needs root: creates memory cgroups (cargo xtask test runs it)"]
    fn deleted_detected_via_resolve_path() {
        let (fs, mut dirs, top, top_rel) = TestDirs::root_memcg("cgroup-dev-rp");
        let x = dirs.mkcg(&fs, top.join("x"));
        let id = ino(&x);
        let mut r = eager(&fs);
        let rel = format!("{top_rel}/x");
        // Inserted by a direct lookup, without a walk.
        assert_eq!(r.resolve_path(&rel).unwrap().id, id);
        std::fs::remove_dir(&x).unwrap();
        let n = r.resolve_path(&rel).unwrap();
        assert_eq!((n.id, n.deleted), (id, true));
    }

    #[test]
    #[ignore = "needs root: creates memory cgroups (cargo xtask test runs it)"]
    fn rescans_are_rate_limited() {
        let (fs, mut dirs, top, _) = TestDirs::root_memcg("cgroup-dev-rl");
        let mut r = Resolver::new(&fs);
        // First miss scans; the new dir was there, so it is found.
        let id_top = ino(&top);
        assert!(r.resolve(id_top).is_some());
        // Created after that scan: misses within 200 ms return None...
        let late = dirs.mkcg(&fs, top.join("late"));
        let id_late = ino(&late);
        // (As if that scan had just ended, whatever the mkdir took.)
        let generation = r.generation;
        r.last_scan = Some(Instant::now());
        assert!(r.resolve(0).is_none());
        assert!(r.resolve(id_late).is_none());
        assert_eq!(r.generation, generation, "rescanned within 200 ms");
        // ...and the next miss after the window rescans.
        std::thread::sleep(MIN_RESCAN_INTERVAL);
        assert!(r.resolve(id_late).is_some());
    }

    #[test]
    #[ignore = "needs root: creates memory cgroups (cargo xtask test runs it)"]
    fn unknown_ids_are_remembered() {
        let fs = require_root_memcg();
        let mut dirs = TestDirs::new();
        let mut r = eager(&fs);
        // A walk racing with other tests' rmdirs does not remember misses:
        // retry until one walk was clean.
        for _ in 0..20 {
            assert!(r.resolve(0).is_none());
            if r.unknown.contains(&0) {
                break;
            }
        }
        assert!(r.unknown.contains(&0), "id 0 never remembered as unknown");
        let generation = r.generation;
        assert!(r.resolve(0).is_none());
        assert_eq!(r.generation, generation, "a known unknown id rescanned");
        // A new memcg's id still rescans and resolves.
        let top = dirs.mkcg_top(&fs, "cgroup-dev-unk");
        let n = r.resolve(ino(&top)).expect("new memcg resolves");
        assert_eq!(n.path, format!("/cgroup-dev-unk-{}", std::process::id()));
        assert_eq!(r.generation, generation + 1);
    }

    #[test]
    #[ignore = "needs root: creates memory cgroups (cargo xtask test runs it)"]
    fn odd_names_resolve_lossily() {
        let (fs, mut dirs, top, rel) = TestDirs::root_memcg("cgroup-dev-names");
        let esc_name = "esc\x1b[31m red \t\x07";
        let esc = dirs.mkcg(&fs, top.join(esc_name));
        let raw: &[u8] = b"bad\xff\xfeutf8 x";
        let bad = dirs.mkcg(&fs, top.join(std::ffi::OsString::from_vec(raw.to_vec())));

        let mut r = eager(&fs);
        let want_esc = format!("{rel}/{esc_name}");
        let n = r.resolve(ino(&esc)).expect("ESC name resolves");
        assert_eq!(n.path, want_esc);
        assert_eq!(r.path_of(&n), esc);
        assert_eq!(r.resolve_path(&want_esc).unwrap().id, n.id);
        assert_eq!(r.id_of_path(&want_esc), Some(n.id));

        let n = r.resolve(ino(&bad)).expect("non-UTF-8 name resolves");
        assert_eq!(n.path, format!("{rel}/bad\u{fffd}\u{fffd}utf8 x"));
        // The lossy string maps back to the real directory.
        assert_eq!(r.path_of(&n), bad);
        assert!(super::super::stats::limit_hits(&fs, &r.path_of(&n)).is_some());
        // Looking up the lossy string finds the cached memcg.
        assert_eq!(r.resolve_path(&n.path).map(|m| m.id), Some(n.id));
    }

    /// Caches `n` fake ids (u64::MAX down) that no walk will find, then
    /// rescans, which marks them deleted.
    fn delete_fakes(r: &mut Resolver, n: u64) {
        r.generation = 1;
        for i in 0..n {
            r.insert_found(u64::MAX - i, &format!("/fake/{i}"), b"");
        }
        r.rescan();
    }

    #[test]
    #[ignore = "needs root: creates memory cgroups (cargo xtask test runs it)"]
    fn deleted_entries_are_capped() {
        let fs = require_root_memcg();
        let mut r = eager(&fs);
        delete_fakes(&mut r, MAX_DELETED as u64 + 10);
        assert_eq!(r.deleted.len(), MAX_DELETED);
        // The first 10 deletions (in map order) were dropped.
        let kept = (0..MAX_DELETED as u64 + 10)
            .filter(|i| r.by_id.contains_key(&(u64::MAX - i)))
            .count();
        assert_eq!(kept, MAX_DELETED);
        assert_eq!(r.by_path.len(), r.by_id.len());
        assert!(r.resolve(ino(&fs.root)).is_some());
    }

    #[test]
    #[ignore = "needs root: reads the memory cgroup hierarchy (cargo xtask test runs it)"]
    fn deleted_entries_expire() {
        let fs = require_root_memcg();
        let mut r = eager(&fs);
        delete_fakes(&mut r, 100);
        // Within the TTL the paths of deleted memcgs are kept...
        assert_eq!(r.deleted.len(), 100);
        assert!(r.resolve(u64::MAX).is_some_and(|n| n.deleted));
        // ...and forgotten at the first rescan after it, unless looked up
        // since (a dying memcg the kernel still reports keeps its path).
        // (The deletions are made 20 s old rather than waited for.)
        r.deleted_ttl = Duration::from_secs(10);
        let past = Instant::now() - Duration::from_secs(20);
        for (_, at) in r.deleted.iter_mut() {
            *at = past;
        }
        assert!(r.resolve(u64::MAX).is_some_and(|n| n.deleted));
        r.rescan();
        assert_eq!(r.deleted.len(), 1);
        assert!(r.resolve(u64::MAX).is_some_and(|n| n.deleted));
        r.deleted_ttl = Duration::ZERO;
        r.rescan();
        assert!(r.deleted.is_empty());
        assert!(!r.by_id.contains_key(&u64::MAX));
        assert_eq!(r.by_path.len(), r.by_id.len());
    }

    /// Creates ~2000 memcgs and times a rescan. Run with
    /// `cargo test --release rescan_2000 -- --nocapture`.
    #[test]
    #[ignore = "needs root: creates memory cgroups (cargo xtask test runs it)"]
    fn rescan_2000_memcgs() {
        let (fs, mut dirs, top, _) = TestDirs::root_memcg("cgroup-dev-bench");
        // 40 x 50 two levels deep, like slices holding services.
        let mut ids = Vec::new();
        let t = Instant::now();
        for i in 0..40 {
            let mid = dirs.mkcg(&fs, top.join(format!("slice-{i}")));
            ids.push(ino(&mid));
            for j in 0..49 {
                ids.push(ino(&dirs.mkcg(&fs, mid.join(format!("svc-{j}.scope")))));
            }
        }
        let created = t.elapsed();
        assert_eq!(ids.len(), 2000);

        let mut r = eager(&fs);
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            r.rescan();
            times.push(t.elapsed());
        }
        let total = r.by_id.len();
        for id in &ids {
            assert!(!r.resolve(*id).unwrap().deleted);
        }
        times.sort();
        eprintln!(
            "rescan of {total} memcgs ({} created in {created:?}): min {:?} median {:?} max {:?}",
            ids.len(),
            times[0],
            times[times.len() / 2],
            times[times.len() - 1]
        );
        assert!(
            times[times.len() / 2] < Duration::from_millis(200),
            "rescan too slow: {times:?}"
        );
    }
}
