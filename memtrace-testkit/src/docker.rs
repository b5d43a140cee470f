//! A private Docker daemon (Debian's docker.io) for the image tests and
//! `cargo xtask image`: its own data, exec root and socket under a scratch
//! directory, no iptables, no bridge, vfs storage and the cgroupfs driver
//! (shared/notes/containers.md); nothing global is touched. Stopped, and
//! the `/docker` memcg it made removed, on drop.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

pub struct Dockerd {
    child: Child,
    pub dir: PathBuf,
    socket: PathBuf,
}

impl Dockerd {
    pub fn start(dir: &Path) -> std::io::Result<Self> {
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
        self.docker().args(args).output().expect("docker client")
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Containers first, so their memcgs go before the daemon.
        if let Ok(out) = self.docker().args(["ps", "-aq"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = self.docker().args(["rm", "-f", id]).output();
            }
        }
        // SAFETY: kill(2) on our own child (not yet reaped) with SIGTERM,
        // so dockerd unmounts and stops its containerd.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Left in place while another daemon still has containers in it.
        if let Ok(memcg) = memtrace::cgroup::detect() {
            let _ = fs::remove_dir(memcg.root.join("docker"));
        }
        let _ = fs::remove_dir_all(self.dir.join("exec"));
        let _ = fs::remove_dir_all(&self.dir);
    }
}
