//! A private Docker daemon (Debian's docker.io) for the image tests and
//! `cargo xtask image`: its own data, exec root and socket under a scratch
//! directory, no iptables, no bridge, vfs storage and the cgroupfs driver
//! (shared/notes/containers.md); nothing global is touched. Stopped, what
//! it mounted unmounted and the `/docker` cgroups it made removed, on drop
//! (also when the test fails). Also what the runtime tests share: a busybox
//! image from a local file (no registry is reachable) and the cleanup of
//! what a runtime leaves behind.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::wait_timeout;

pub struct Dockerd {
    child: Child,
    pub dir: PathBuf,
    socket: PathBuf,
}

impl Dockerd {
    pub fn start(dir: &Path) -> std::io::Result<Self> {
        if !Path::new("/usr/sbin/dockerd").exists() {
            return Err(std::io::Error::other(
                "dockerd is missing: `cargo xtask setup` installs docker.io",
            ));
        }
        fs::create_dir_all(dir)?;
        let socket = dir.join("docker.sock");
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--storage-driver=vfs",
                "--exec-opt",
                "native.cgroupdriver=cgroupfs",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("dockerd.log"))?)
            .spawn()?;
        let d = Dockerd {
            child,
            dir: dir.to_path_buf(),
            socket,
        };
        let end = Instant::now() + Duration::from_secs(60);
        while !d.docker().arg("info").output()?.status.success() {
            if Instant::now() > end {
                return Err(std::io::Error::other(format!(
                    "dockerd not ready within 60 s: {}",
                    fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(d)
    }

    /// A `docker` command talking to this daemon.
    pub fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("-H").arg(format!("unix://{}", self.socket.display()));
        c
    }

    /// Runs `docker ARGS`; its output, whatever the status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.docker()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("docker client")
    }

    /// Runs `docker ARGS`, which must succeed; its stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Its `--data-root`, where `config.v2.json` files are.
    pub fn data_root(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Imports a static busybox rootfs as image `tag`.
    pub fn import_busybox(&self, tag: &str) {
        let tar = busybox_tar(&self.dir.join("rootfs"));
        self.ok(&["import", tar.to_str().unwrap(), tag]);
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Containers first, so their memcgs go before the daemon.
        if let Ok(out) = self.docker().args(["ps", "-aq", "--no-trunc"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = self.docker().args(["rm", "-f", id]).output();
            }
        }
        // SAFETY: kill(2) on our own child (not yet reaped) with SIGTERM,
        // so dockerd unmounts and stops its containerd.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        // Killed if it takes longer than 30 s.
        wait_timeout(&mut self.child, Duration::from_secs(30));
        umount_below(&self.dir);
        // The /docker cgroups the cgroupfs driver made in every controller
        // (left in place while another daemon still has containers in them).
        remove_cgroup_trees("docker");
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A tarball of a rootfs holding a static busybox (Debian's
/// busybox-static) and its applets.
pub fn busybox_tar(root: &Path) -> PathBuf {
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy("/bin/busybox", root.join("bin/busybox")).expect("/bin/busybox (busybox-static)");
    for applet in ["sh", "tail", "sleep", "cat", "dd", "rm"] {
        symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let tar = root.with_extension("tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar of {}", root.display());
    tar
}

/// Unmounts what a runtime left mounted below `dir`, deepest first.
pub fn umount_below(dir: &Path) {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut under: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(dir))
        .collect();
    under.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in under {
        let _ = Command::new("umount").args(["-l", m]).status();
    }
}

/// Removes `name` and what is below it in every v1 controller (or the
/// unified hierarchy), deepest first; what is still in use stays.
pub fn remove_cgroup_trees(name: &str) {
    let root = Path::new("/sys/fs/cgroup");
    let mut tops = vec![root.join(name)];
    tops.extend(
        fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|c| c.path().join(name)),
    );
    for top in tops {
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut stack = vec![top];
        while let Some(d) = stack.pop() {
            if let Ok(rd) = fs::read_dir(&d) {
                stack.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
                dirs.push(d);
            }
        }
        for d in dirs.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }
}
