//! memcgs and mounts the bench creates, each removed by a Drop guard (also
//! when a run fails), plus the clean-up of what a killed earlier run left.
//!
//! Every memcg lives below `<memory root>/memtrace-bench-<pid>`; the storm's
//! tmpfs mounts live in a private mount namespace owned by a helper shell,
//! so they vanish with it even if the bench itself is killed.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use memtrace::cgroup::{self, mounts};

use super::sys;

pub const PREFIX: &str = "memtrace-bench-";

// The one way tests and bench empty a cgroup.
use memtrace_testkit::kill;

/// Kills every process in `dir`'s subtree and removes it, deepest first.
pub fn remove_tree(dir: &Path) -> bool {
    if !dir.exists() {
        return true;
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let removed = kill::remove_cgroup(dir);
    if !removed {
        eprintln!("bench: warning: could not remove {}", dir.display());
    }
    removed
}

/// The bench's own subtree of the memory hierarchy.
pub struct BenchCgroups {
    pub root: PathBuf,
    pub dir: PathBuf,
    pub v2: bool,
}

impl BenchCgroups {
    pub fn create() -> Result<Self> {
        // The hierarchy memtrace itself will find.
        let cgroup::MemcgFs { root, v2, .. } = cgroup::detect()?;
        let dir = root.join(format!("{PREFIX}{}", std::process::id()));
        remove_tree(&dir);
        fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        if v2 {
            let _ = fs::write(dir.join("cgroup.subtree_control"), "+memory");
        }
        Ok(Self { root, dir, v2 })
    }

    /// A child memcg (`rel` may contain `/`; parents must exist).
    pub fn mkdir(&self, rel: &str) -> Result<PathBuf> {
        let d = self.dir.join(rel);
        let _ = fs::remove_dir(&d);
        fs::create_dir(&d).with_context(|| format!("mkdir {}", d.display()))?;
        if self.v2 {
            let _ = fs::write(d.join("cgroup.subtree_control"), "+memory");
        }
        Ok(d)
    }

    /// A memory limit without swap (so the OOM killer answers on hosts
    /// with swap).
    pub fn limit(&self, memcg: &Path, bytes: u64) -> Result<()> {
        if self.v2 {
            sys::write_file(&memcg.join("memory.max"), &bytes.to_string())?;
            let _ = fs::write(memcg.join("memory.swap.max"), "0");
        } else {
            sys::write_file(&memcg.join("memory.limit_in_bytes"), &bytes.to_string())?;
            let _ = fs::write(memcg.join("memory.memsw.limit_in_bytes"), bytes.to_string());
            let _ = fs::write(memcg.join("memory.swappiness"), "0");
        }
        Ok(())
    }

    /// `argv` run inside `memcg`: a shell moves itself there, then execs.
    pub fn command_in(memcg: &Path, argv: &[&str]) -> Command {
        let mut c = Command::new("/bin/sh");
        c.arg("-c")
            .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
            .arg(memcg)
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }
}

impl Drop for BenchCgroups {
    fn drop(&mut self) {
        remove_tree(&self.dir);
    }
}

/// The pid in a `memtrace-bench-<pid>[-...]` name.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    rest.split('-').next()?.parse().ok()
}

fn dead(pid: u32) -> bool {
    pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes what an earlier, killed run left: bench memcgs whose owner is
/// gone, mounts below `/tmp/memtrace-bench-<dead pid>-mnt` (normally
/// private to a helper's namespace, so there should be none) and those
/// directories.
pub fn clean_stale() {
    if let Ok(memcg) = cgroup::detect()
        && let Ok(entries) = fs::read_dir(&memcg.root)
    {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if owner_pid(&name).is_some_and(dead) {
                eprintln!("bench: removing stale {}", e.path().display());
                remove_tree(&e.path());
            }
        }
    }
    let mount_points = || -> Vec<PathBuf> {
        mounts::mounts()
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.mount_point)
            .collect()
    };
    let mut stale: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|m| stale_dir(m))
        .collect();
    // Deepest first: a mount below another must go before it.
    stale.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in &stale {
        eprintln!("bench: unmounting stale {}", m.display());
        let _ = Command::new("umount").arg("-l").arg(m).status();
    }
    if let Ok(entries) = fs::read_dir("/tmp") {
        for e in entries.flatten() {
            let p = e.path();
            if stale_dir(&p) && e.file_type().is_ok_and(|t| t.is_dir()) {
                let still_mounted = mount_points().iter().any(|m| m.starts_with(&p));
                if !still_mounted {
                    eprintln!("bench: removing stale {}", p.display());
                    let _ = fs::remove_dir_all(&p);
                }
            }
        }
    }
}

/// `/tmp/memtrace-bench-<dead pid>...` or anything below it.
fn stale_dir(path: &Path) -> bool {
    path.strip_prefix("/tmp")
        .ok()
        .and_then(|rest| rest.components().next())
        .and_then(|first| owner_pid(first.as_os_str().to_str()?))
        .is_some_and(dead)
}

/// A shell in its own mount namespace that owns the storm's tmpfs mounts
/// and touches files from inside each memcg on request. Its stdin is a
/// pipe from the bench: when the bench goes away, the shell reads EOF and
/// exits, and its namespace (with every mount) goes with it.
pub struct NsHelper {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl NsHelper {
    pub fn start() -> Result<Self> {
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "/bin/sh", "-s"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting `unshare --mount /bin/sh` (util-linux)")?;
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut h = Self {
            child,
            stdin,
            stdout,
        };
        h.run("true")?;
        Ok(h)
    }

    /// Runs `script` in the helper shell and waits for it to finish; the
    /// script's own stdout lines before the marker are returned.
    pub fn run(&mut self, script: &str) -> Result<Vec<String>> {
        let marker = "@@BENCH-DONE";
        writeln!(self.stdin, "{script}\necho {marker} $?")?;
        self.stdin.flush()?;
        let mut out = Vec::new();
        let started = Instant::now();
        loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line)? == 0 {
                bail!("the namespace helper exited while running: {script:.200}");
            }
            if let Some(rc) = line.trim().strip_prefix(marker) {
                if rc.trim() != "0" {
                    bail!(
                        "namespace helper script failed (status {}): {script:.200}",
                        rc.trim()
                    );
                }
                return Ok(out);
            }
            out.push(line.trim_end().to_owned());
            if started.elapsed() > Duration::from_secs(600) {
                bail!("namespace helper script takes over 10 minutes");
            }
        }
    }
}

impl Drop for NsHelper {
    fn drop(&mut self) {
        sys::signal(self.child.id(), sys::SIGKILL);
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_only_below_tmp_and_for_dead_owners() {
        // No pid reaches u32::MAX - 1 (pid_max is at most 2^22).
        let gone = u32::MAX - 1;
        assert!(stale_dir(Path::new(&format!("/tmp/{PREFIX}{gone}-mnt"))));
        assert!(stale_dir(Path::new(&format!(
            "/tmp/{PREFIX}{gone}-mnt/a/b"
        ))));
        let me = std::process::id();
        assert!(!stale_dir(Path::new(&format!("/tmp/{PREFIX}{me}-mnt"))));
        assert!(!stale_dir(Path::new(&format!(
            "/var/tmp/{PREFIX}{gone}-mnt"
        ))));
        assert!(!stale_dir(Path::new(&format!("/tmp/x/{PREFIX}{gone}-mnt"))));
        assert!(!stale_dir(Path::new("/tmp")));
    }
}
