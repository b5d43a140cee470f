//! Names memcgs the moment they are created, so a memcg removed before the
//! next interval (a short-lived job, a crashlooping container) still has a
//! path in its records: the kernel counts it by id, and once its directory
//! is gone no rescan can name that id any more.
//!
//! Every memcg directory gets an inotify watch (mkdir on cgroupfs raises
//! IN_CREATE like on any file system; measured on 6.18 v1: 200 of 200
//! create/rmdir pairs seen). A new directory is lstat'ed for its inode
//! (the memcg id) and watched in turn; what was created under it before its
//! watch existed is found by reading it once. A memcg removed before its
//! IN_CREATE is read is still missed: the event carries no inode.
//!
//! cgroupfs (kernfs) sends no IN_IGNORED when a watched memcg is removed:
//! the watch stays, pinning the directory's inode and counting against
//! fs.inotify.max_user_watches (seen on 6.18 in /proc/PID/fdinfo). So the
//! enrichment stage drops the watches of memcgs its rescans found gone
//! ([`MemcgWatch::unwatch_gone`]), or a node churning memcgs would leak
//! kernel memory and eventually stop naming new ones.
use std::{
    collections::HashMap,
    ffi::{CString, OsStr},
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::{Path, PathBuf},
};

use tokio::io::{Interest, unix::AsyncFd};

/// Directories read below a new one at most (its subtree made before its
/// watch was added).
const MAX_SUBTREE: usize = 1024;

pub struct MemcgWatch {
    /// The inotify instance until the first wait registers it with tokio.
    fd: Option<OwnedFd>,
    afd: Option<AsyncFd<OwnedFd>>,
    raw: i32,
    root: PathBuf,
    /// Watch descriptor -> the directory's path below the root (bytes, no
    /// leading `/`; empty for the root) and its memcg id.
    dirs: HashMap<i32, (Vec<u8>, u64)>,
    buf: Vec<u8>,
    /// The watch limit (fs.inotify.max_user_watches) was reached.
    full: bool,
}

impl MemcgWatch {
    /// An inotify instance with no watches yet.
    pub fn new(root: &Path) -> io::Result<Self> {
        // SAFETY: inotify_init1 takes no pointers; the fd it returns is
        // owned by the OwnedFd below and closed with it.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by inotify_init1 and nothing else
        // owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            fd: Some(owned),
            afd: None,
            raw: fd,
            root: root.to_path_buf(),
            dirs: HashMap::new(),
            buf: vec![0; 64 * 1024],
            full: false,
        })
    }

    fn abs(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(OsStr::from_bytes(rel))
        }
    }

    /// Watches the directory at `rel`, memcg `id`, for subdirectories
    /// being created.
    pub fn watch(&mut self, id: u64, rel: &[u8]) {
        if self.full {
            return;
        }
        let Ok(path) = CString::new(self.abs(rel).into_os_string().into_encoded_bytes()) else {
            return;
        };
        // SAFETY: `raw` is the live inotify instance this struct owns (in
        // `fd` or `afd`), and `path` a
        // NUL-terminated string that outlives the call.
        let wd = unsafe {
            libc::inotify_add_watch(
                self.raw,
                path.as_ptr(),
                libc::IN_CREATE | libc::IN_ONLYDIR | libc::IN_DONT_FOLLOW,
            )
        };
        if wd >= 0 {
            self.dirs.insert(wd, (rel.to_vec(), id));
            return;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOSPC) {
            self.full = true;
            log::warn!(
                "inotify watch limit reached ({} memcg directories watched; raise \
                 fs.inotify.max_user_watches): memcgs created and removed between two \
                 intervals from now on may have no path",
                self.dirs.len()
            );
        }
    }

    /// Waits for memcgs to be created and returns them as (id, path below
    /// the root), already watched themselves. Cancel-safe; must be called
    /// within a tokio runtime with IO enabled.
    pub async fn created(&mut self) -> io::Result<Vec<(u64, Vec<u8>)>> {
        if let Some(fd) = self.fd.take() {
            // SAFETY: the AsyncFd owns the fd, so it stays open and the same
            // for the AsyncFd's whole lifetime.
            self.afd = Some(unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?);
        }
        let Some(afd) = self.afd.as_ref() else {
            return Err(io::Error::other("inotify instance lost"));
        };
        let n = loop {
            let mut guard = afd.readable().await?;
            let buf = &mut self.buf;
            match guard.try_io(|fd| {
                // SAFETY: `buf` is a valid writable buffer of buf.len()
                // bytes for the duration of the call.
                let n = unsafe {
                    libc::read(fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(r) => break r?,
                Err(_would_block) => continue,
            }
        };
        let mut events = Vec::new();
        let mut at = 0;
        let head = std::mem::size_of::<libc::inotify_event>();
        while at + head <= n {
            // SAFETY: the kernel wrote whole events; at + head <= n bytes
            // were read, and read_unaligned copes with the byte buffer's
            // alignment.
            let ev: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(self.buf[at..].as_ptr().cast()) };
            let name_end = (at + head + ev.len as usize).min(n);
            let name = &self.buf[at + head..name_end];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            events.push((ev.wd, ev.mask, name.to_vec()));
            at = name_end;
        }
        let mut out = Vec::new();
        for (wd, mask, name) in events {
            if mask & libc::IN_IGNORED != 0 {
                // The directory is gone (its watch went with it).
                self.dirs.remove(&wd);
                continue;
            }
            if mask & libc::IN_Q_OVERFLOW != 0 {
                log::warn!(
                    "inotify queue overflowed: some new memcgs are named at the next rescan only"
                );
                continue;
            }
            if mask & libc::IN_CREATE == 0 || mask & libc::IN_ISDIR == 0 {
                continue;
            }
            let Some((parent, _)) = self.dirs.get(&wd) else {
                continue;
            };
            let mut rel = parent.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(&name);
            self.found(rel, &mut out);
        }
        Ok(out)
    }

    /// Removes the watches of memcgs that are gone (see the module
    /// comment: the kernel does not); returns how many.
    pub fn unwatch_gone(&mut self, gone: impl Fn(u64) -> bool) -> usize {
        let stale: Vec<i32> = self
            .dirs
            .iter()
            .filter(|(_, (_, id))| gone(*id))
            .map(|(&wd, _)| wd)
            .collect();
        for wd in &stale {
            // SAFETY: `raw` is the live inotify instance this struct owns;
            // inotify_rm_watch takes no pointers.
            unsafe { libc::inotify_rm_watch(self.raw, *wd) };
            self.dirs.remove(wd);
        }
        if !stale.is_empty() {
            // Room again under fs.inotify.max_user_watches.
            self.full = false;
        }
        stale.len()
    }

    /// Watches held (for tests and the debug log).
    pub fn watched(&self) -> usize {
        self.dirs.len()
    }

    /// A new directory: its id, a watch on it, and whatever was created
    /// under it before the watch.
    fn found(&mut self, rel: Vec<u8>, out: &mut Vec<(u64, Vec<u8>)>) {
        let mut stack = vec![rel];
        let mut seen = 0;
        while let Some(rel) = stack.pop() {
            let path = self.abs(&rel);
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                continue; // Removed already: nothing to name it by.
            };
            if !md.is_dir() {
                continue;
            }
            self.watch(md.ino(), &rel);
            seen += 1;
            if seen < MAX_SUBTREE && md.nlink() > 2 {
                for e in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        let mut child = rel.clone();
                        child.push(b'/');
                        child.extend_from_slice(e.file_name().as_bytes());
                        stack.push(child);
                    }
                }
            }
            out.push((md.ino(), rel));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::testutil::{TestDirs, require_root_memcg};

    #[tokio::test]
    #[ignore = "needs root: creates memory cgroups"]
    async fn new_memcgs_and_their_children_are_named() {
        let fs = require_root_memcg();
        let mut dirs = TestDirs::new();
        let name = format!("memtrace-watch-{}", std::process::id());
        let base = dirs.mkcg(&fs, fs.root.join(&name));
        let mut w = MemcgWatch::new(&fs.root).unwrap();
        w.watch(std::fs::metadata(&base).unwrap().ino(), name.as_bytes());
        let a = dirs.mkcg(&fs, base.join("a"));
        // Created before `a` has a watch: found by reading `a`.
        let b = dirs.mkcg(&fs, a.join("b"));
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), w.created())
            .await
            .unwrap()
            .unwrap();
        let a_rel = format!("{name}/a").into_bytes();
        let b_rel = format!("{name}/a/b").into_bytes();
        assert!(got.contains(&(ino(&a), a_rel)), "{got:?}");
        assert!(got.contains(&(ino(&b), b_rel)), "{got:?}");
        // Removing them leaves their watches in the kernel (no IN_IGNORED
        // from cgroupfs) until unwatch_gone drops them.
        let (id_a, id_b) = (ino(&a), ino(&b));
        let raw = w.raw;
        let kernel_watches = || {
            std::fs::read_to_string(format!("/proc/self/fdinfo/{raw}"))
                .unwrap()
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count()
        };
        assert_eq!((w.watched(), kernel_watches()), (3, 3));
        std::fs::remove_dir(&b).unwrap();
        std::fs::remove_dir(&a).unwrap();
        assert_eq!(w.unwatch_gone(|id| id == id_a || id == id_b), 2);
        assert_eq!((w.watched(), kernel_watches()), (1, 1));
    }
}
