//! Memory cgroup (memcg) discovery and naming.
//!
//! The kernel programs identify a memcg by `memcg->css.cgroup->kn->id`, which
//! on 64-bit kernels is the inode number of the memcg's directory in cgroupfs,
//! on cgroup v1 (memory hierarchy) and v2 (unified) alike. This module finds
//! the hierarchy holding the memory controller ([`detect`]), maps ids to paths
//! relative to it ([`Resolver`]) and reads the few counters memtrace reports
//! ([`limit_hits`]).

pub mod container;
pub mod mounts;
pub mod path;
pub mod resolver;
pub mod runtime;
pub mod state;
pub mod stats;
pub mod tasks;
pub mod watch;

// What the rest of memtrace uses, without naming the submodules.
pub use mounts::{CgroupMode, MemcgFs, detect};
pub use resolver::{MemcgName, Resolver};
pub use stats::limit_hits;

/// Helpers shared by the tests that need a real memory hierarchy.
#[cfg(test)]
pub(crate) mod testutil {
    use std::path::{Path, PathBuf};

    use super::mounts::{MemcgFs, detect};

    /// Panics (never silently passes) unless running as root with a memory
    /// cgroup hierarchy mounted: these tests create and remove memcgs. They
    /// are `#[ignore = "needs root: ..."]`, so a plain `cargo test` as a
    /// user reports them ignored; `cargo xtask test` runs them (as root)
    /// with `--include-ignored`.
    pub fn require_root_memcg() -> MemcgFs {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "this test creates memory cgroups and must run as root (euid is {euid}); \
             run `sudo -E cargo test`"
        );
        match detect() {
            Ok(fs) => fs,
            Err(e) => panic!("this test needs a memory cgroup hierarchy: {e:#}"),
        }
    }

    /// Directories created by a test, removed deepest (last created) first
    /// when dropped, also when the test fails.
    pub struct TestDirs {
        dirs: Vec<PathBuf>,
    }

    impl TestDirs {
        pub fn new() -> Self {
            TestDirs { dirs: Vec::new() }
        }

        /// How a test that creates memcgs starts: root and the hierarchy
        /// (see [`require_root_memcg`]), and the test's own top memcg
        /// `<tag>-<pid>` (see [`TestDirs::mkcg_top`]), removed on drop:
        /// its directory and its path in the hierarchy (`/<tag>-<pid>`).
        pub fn root_memcg(tag: &str) -> (MemcgFs, TestDirs, PathBuf, String) {
            let fs = require_root_memcg();
            let mut dirs = TestDirs::new();
            let top = dirs.mkcg_top(&fs, tag);
            let rel = format!("/{tag}-{}", std::process::id());
            (fs, dirs, top, rel)
        }

        /// Creates `dir` (its parent must exist) and registers it for removal.
        pub fn mkdir(&mut self, dir: impl AsRef<Path>) -> PathBuf {
            let dir = dir.as_ref().to_path_buf();
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            self.dirs.push(dir.clone());
            dir
        }

        /// Creates memcg `dir`. On cgroup2, first enables the memory
        /// controller for its parent's children, so that it gets its own
        /// memcg and memory.* files (its parent must hold no processes).
        pub fn mkcg(&mut self, fs: &MemcgFs, dir: impl AsRef<Path>) -> PathBuf {
            let dir = dir.as_ref();
            if fs.v2 {
                let parent = dir.parent().expect("memcg dir has a parent");
                let ctl = parent.join("cgroup.subtree_control");
                let cur = std::fs::read_to_string(&ctl).unwrap_or_default();
                if !cur.split_ascii_whitespace().any(|c| c == "memory") {
                    std::fs::write(&ctl, "+memory").unwrap_or_else(|e| {
                        panic!(
                            "enable the memory controller: echo +memory > {}: {e}",
                            ctl.display()
                        )
                    });
                }
            }
            self.mkdir(dir)
        }

        /// Creates memcg `<tag>-<pid>` under the hierarchy root: a test's
        /// own subtree, apart from other tests and test processes.
        pub fn mkcg_top(&mut self, fs: &MemcgFs, tag: &str) -> PathBuf {
            self.mkcg(fs, fs.root.join(format!("{tag}-{}", std::process::id())))
        }
    }

    impl Drop for TestDirs {
        fn drop(&mut self) {
            while let Some(dir) = self.dirs.pop() {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => eprintln!("cleanup: rmdir {}: {e}", dir.display()),
                }
            }
        }
    }
}
