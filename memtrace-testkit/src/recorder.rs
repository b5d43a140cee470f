//! A real `memtrace record` and real OOM kills, for the tests that watch
//! what it writes (memtrace/tests/record.rs, oom_attribution.rs,
//! disk.rs).

use std::{
    fs,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{memtrace_bin, spawn_in, wait_timeout};

/// A running `memtrace record`, its stderr in a file; killed on drop.
pub struct Recorder {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
    /// When it was started (the agent's history is never longer).
    pub started: Instant,
}

impl Recorder {
    /// `memtrace record --dir DIR EXTRA..`, its stderr next to `dir`.
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        Self::start_logged(dir, extra, &dir.with_extension("stderr"))
    }

    /// `memtrace record --dir DIR EXTRA..`, its stderr to `log`; returns
    /// once it watches and the kernel log's past kills were written.
    pub fn start_logged(dir: &Path, extra: &[&str], log: &Path) -> Self {
        Self::start_env(dir, extra, log, &[])
    }

    /// `start_logged` with extra environment variables (`RUST_LOG`).
    pub fn start_env(dir: &Path, extra: &[&str], log: &Path, env: &[(&str, &str)]) -> Self {
        let started = Instant::now();
        let child = Command::new(memtrace_bin())
            .envs(env.iter().copied())
            .arg("record")
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let r = Self {
            child,
            dir: dir.to_path_buf(),
            log: log.to_path_buf(),
            started,
        };
        r.wait_log("watching");
        // Past kills from the kernel log are written first; let them settle.
        std::thread::sleep(Duration::from_millis(500));
        r
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to 60 s until the log says `what`; returns the log.
    pub fn wait_log(&self, what: &str) -> String {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let l = self.log();
            if l.contains(what) {
                return l;
            }
            assert!(Instant::now() < end, "record never said {what:?}: {l}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends it `sig`.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child process, not yet reaped (it is
        // only waited for by `stop` and drop), with a valid signal.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The post-mortems in its OOM log (`DIR/oom.ndjson`).
    pub fn postmortems(&self) -> Vec<Value> {
        postmortems(&self.dir.join("oom.ndjson"))
    }

    /// The post-mortems of the kills of `pids` it saw live (not read back
    /// from the kernel log at start), waiting up to `within` for all of
    /// them; those found by then.
    pub fn live_postmortems(&self, pids: &[u32], within: Duration) -> Vec<Value> {
        let end = Instant::now() + within;
        loop {
            let found: Vec<Value> = self
                .postmortems()
                .into_iter()
                .filter(|p| p["kill"]["before_start"] == false)
                .filter(|p| {
                    p["kill"]["victim"]["pid"]
                        .as_u64()
                        .is_some_and(|x| pids.contains(&(x as u32)))
                })
                .collect();
            if found.len() >= pids.len() || Instant::now() > end {
                return found;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The live post-mortem of `pid`, within 10 s.
    pub fn live_postmortem(&self, pid: u32) -> Value {
        let within = Duration::from_secs(10);
        self.live_postmortems(&[pid], within)
            .pop()
            .unwrap_or_else(|| {
                panic!(
                    "no post-mortem for pid {pid} within {within:?}: {}",
                    self.log()
                )
            })
    }

    /// The text post-mortem of `pid` in its directory, if written.
    pub fn text(&self, pid: u32) -> Option<String> {
        text_postmortem(&self.dir, pid).map(|p| fs::read_to_string(p).unwrap())
    }

    /// Stops it as an operator would (SIGTERM); it must exit cleanly.
    /// Returns its log.
    pub fn stop(mut self) -> String {
        self.signal(libc::SIGTERM);
        let st = wait_timeout(&mut self.child, Duration::from_secs(20));
        let log = self.log();
        assert!(st.success(), "record exit {st}: {log}");
        let _ = fs::remove_file(&self.log);
        log
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The post-mortems in the OOM log at `path` (none if it is missing);
/// every line must be a whole post-mortem.
pub fn postmortems(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .inspect(|v| assert_eq!(v["type"], "oom_postmortem"))
        .collect()
}

/// The file of the text post-mortem of `pid` in `dir` (`…-PID.txt`), if
/// written.
pub fn text_postmortem(dir: &Path, pid: u32) -> Option<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(&format!("-{pid}.txt")))
}

/// Runs `tail /dev/zero` in the memcg at `dir` until the OOM killer kills
/// it; returns its pid.
pub fn oom_victim(dir: &Path) -> u32 {
    let mut child = spawn_in(dir, Command::new("tail").arg("/dev/zero"));
    let pid = child.id();
    let st = wait_timeout(&mut child, Duration::from_secs(60));
    assert_eq!(st.signal(), Some(libc::SIGKILL), "not OOM-killed: {st}");
    pid
}
