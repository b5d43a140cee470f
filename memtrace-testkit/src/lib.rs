//! memtrace's test harness, for the integration tests (`memtrace/tests/`)
//! that run the real `memtrace` binary against the running kernel: memcgs
//! and processes that clean up after themselves (also when a test fails),
//! stream and record runners that parse what memtrace wrote, and an
//! independent probe of what the kernel lets a program attach. xtask's
//! bench removes its memcgs with `kill`.

use std::{
    fs,
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use memtrace::cgroup::{self, MemcgFs};
use serde_json::Value;

pub mod churn;
pub mod docker;
pub mod kill;
pub mod metrics;
pub mod plan;
pub mod probe;
pub mod recorder;
pub mod root;

/// The `memtrace` binary under test. Cargo sets `CARGO_BIN_EXE_memtrace`
/// when it builds and runs memtrace's integration tests, not when it
/// builds this library, so it is read at run time; a test binary started
/// by hand finds it where cargo put it, beside its own `deps/` directory.
/// A `str`, as the tests pass it among other string arguments.
pub fn memtrace_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = std::env::var_os("CARGO_BIN_EXE_memtrace")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let exe = std::env::current_exe().expect("path of the test binary");
                // target/<profile>/deps/<test>-<hash> -> target/<profile>/memtrace
                exe.parent()
                    .and_then(Path::parent)
                    .expect("test binary in target/<profile>/deps")
                    .join("memtrace")
            });
        assert!(
            bin.is_file(),
            "no memtrace binary at {}: run the tests with cargo test -p memtrace",
            bin.display()
        );
        bin.into_os_string()
            .into_string()
            .expect("memtrace binary path is UTF-8")
    })
}

/// Held while a test touches global kernel state.
pub struct Serial(fs::File);

impl Drop for Serial {
    fn drop(&mut self) {
        // SAFETY: flock(2) on the lock file's fd, which `self.0` keeps open.
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&self.0), libc::LOCK_UN) };
    }
}

/// Tests that load programs, OOM-kill or churn memory run one at a time,
/// across test threads and test processes alike: they share the kernel
/// log, the memcg tree and global reclaim.
pub fn serial() -> Serial {
    let f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(std::env::temp_dir().join("memtrace-kernel-tests.lock"))
        .expect("open test lock file");
    // SAFETY: flock(2) on the fd of `f`, open for the whole call.
    let r = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) };
    assert_eq!(r, 0, "flock: {}", std::io::Error::last_os_error());
    Serial(f)
}

/// These tests need root: fail loudly, never pass silently.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "kernel tests load BPF programs and create memcgs: run them as root (cargo xtask test does)"
    );
}

/// The memory controller's hierarchy (cgroup v1 memory or v2), as memtrace
/// itself finds it.
fn memcg_fs() -> MemcgFs {
    cgroup::detect().unwrap_or_else(|e| panic!("these tests need a memory cgroup hierarchy: {e:#}"))
}

/// A memcg that kills its processes and removes itself on drop.
pub struct TestMemcg {
    pub dir: PathBuf,
    /// Path relative to the hierarchy root, as memtrace reports it.
    pub rel: String,
    /// The hierarchy is cgroup2.
    v2: bool,
    children: Vec<TestMemcg>,
}

impl TestMemcg {
    pub fn new(name: &str) -> Self {
        let memcg = memcg_fs();
        let dir = memcg
            .root
            .join(format!("memtrace-test-{}-{name}", std::process::id()));
        Self::create(&memcg, dir)
    }

    fn create(memcg: &MemcgFs, dir: PathBuf) -> Self {
        let _ = fs::remove_dir(&dir);
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        if memcg.v2 {
            let _ = fs::write(dir.join("cgroup.subtree_control"), "+memory");
        }
        let below_root = dir.strip_prefix(&memcg.root).unwrap().to_string_lossy();
        Self {
            rel: cgroup::path::canonical(&below_root).into_owned(),
            dir,
            v2: memcg.v2,
            children: Vec::new(),
        }
    }

    pub fn child(&mut self, name: &str) -> &TestMemcg {
        let c = Self::create(&memcg_fs(), self.dir.join(name));
        self.children.push(c);
        self.children.last().unwrap()
    }

    /// A memory limit (page cache churn needs no more).
    pub fn limit(&self, bytes: u64) -> &Self {
        let file = if self.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        fs::write(self.dir.join(file), bytes.to_string()).unwrap();
        self
    }

    /// A memory limit and no swap, so the OOM killer (not swap) answers
    /// anonymous memory growth on hosts that have swap.
    pub fn limit_no_swap(&self, bytes: u64) -> &Self {
        self.limit(bytes);
        if self.v2 {
            let _ = fs::write(self.dir.join("memory.swap.max"), "0");
        } else {
            let _ = fs::write(
                self.dir.join("memory.memsw.limit_in_bytes"),
                bytes.to_string(),
            );
            let _ = fs::write(self.dir.join("memory.swappiness"), "0");
        }
        self
    }

    pub fn inode(&self) -> u64 {
        fs::metadata(&self.dir).unwrap().ino()
    }

    /// Spawns `cmd` inside this memcg (it moves itself before exec).
    pub fn spawn(&self, cmd: &mut Command) -> Child {
        spawn_in(&self.dir, cmd)
    }
}

impl Drop for TestMemcg {
    fn drop(&mut self) {
        for c in self.children.drain(..) {
            drop(c);
        }
        if !kill::remove_cgroup(&self.dir) {
            eprintln!("warning: could not remove {}", self.dir.display());
        }
    }
}

/// Spawns `cmd` inside the memcg at `dir`: the child writes itself into
/// `cgroup.procs` before exec, so nothing it allocates escapes the memcg.
pub fn spawn_in(dir: &Path, cmd: &mut Command) -> Child {
    let procs =
        std::ffi::CString::new(dir.join("cgroup.procs").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (open, write, close) on a path the
    // closure owns; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if n != 1 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        });
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn workload")
}

/// Extra memcg directories (below a `TestMemcg`), removed deepest first on
/// drop after killing what runs in them.
pub struct Dirs(pub Vec<PathBuf>);

impl Drop for Dirs {
    fn drop(&mut self) {
        let mut dirs = self.0.clone();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            kill::remove_cgroup(&d);
        }
    }
}

/// Waits for a child, killing it after `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let end = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            return child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `memtrace stream` writing to a file; killed on drop.
pub struct Stream {
    pub child: Child,
    pub out: PathBuf,
    pub stderr: PathBuf,
}

/// A scratch directory, removed on drop (also when the test fails).
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn scratch(name: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("memtrace-test-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

impl Stream {
    /// Starts `memtrace stream ARGS --output FILE` and waits for its header
    /// (programs attached) before returning.
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        let out = dir.join("stream.ndjson");
        let stderr = dir.join("stream.stderr");
        let child = Command::new(memtrace_bin())
            .arg("stream")
            .args(args)
            .arg("--output")
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start memtrace stream");
        let mut s = Self { child, out, stderr };
        let end = Instant::now() + Duration::from_secs(30);
        while fs::read_to_string(&s.out)
            .map(|t| t.lines().next().is_none())
            .unwrap_or(true)
        {
            if let Some(st) = s.child.try_wait().unwrap() {
                panic!(
                    "memtrace stream exited early ({st}): {}",
                    fs::read_to_string(&s.stderr).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < end,
                "memtrace stream wrote no header in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The records written so far (whole lines only), while it runs.
    pub fn records(&self) -> Vec<Value> {
        let text = fs::read_to_string(&self.out).unwrap_or_default();
        let whole = text.rfind('\n').map_or("", |i| &text[..i]);
        whole
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Stops it with `signal` and returns every record it wrote.
    pub fn stop(mut self, signal: i32) -> Vec<Value> {
        // SAFETY: kill(2) on our own child process, with a valid signal.
        unsafe { libc::kill(self.pid(), signal) };
        let st = wait_timeout(&mut self.child, Duration::from_secs(20));
        let err = fs::read_to_string(&self.stderr).unwrap_or_default();
        assert!(
            st.success(),
            "memtrace stream exit status {st} after signal {signal}; stderr: {err}"
        );
        read_records(&self.out)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses NDJSON, checking every line is one complete JSON object without
/// raw control characters.
pub fn read_records(path: &Path) -> Vec<Value> {
    let bytes = fs::read(path).unwrap();
    assert!(bytes.ends_with(b"\n"), "output must end with a whole line");
    assert!(
        !bytes.iter().any(|&b| (b < 0x20 && b != b'\n') || b == 0x7f),
        "raw control characters in output"
    );
    let text = String::from_utf8(bytes).expect("output is UTF-8");
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("line {}: {e}: {l}", i + 1))
        })
        .collect()
}

pub fn of_type<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["type"] == kind).collect()
}

/// Runs `memtrace args` to completion; it must succeed. Its stdout.
pub fn memtrace_ok<I, S>(args: I) -> Vec<u8>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = Command::new(memtrace_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "memtrace failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The family a header's attach plan puts `hook` on (null: not attached).
pub fn plan_family(header: &Value, hook: &str) -> Value {
    header["plan"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["hook"] == hook)
        .unwrap_or_else(|| panic!("{hook} is in the plan: {header}"))["family"]
        .clone()
}

/// CPU seconds (user+sys) and peak RSS (KiB) of a live process.
pub fn cpu_and_rss(pid: i32) -> (f64, u64) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after_comm.split(' ').collect();
    // SAFETY: sysconf has no preconditions; a -1 result would only skew a test figure.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / ticks;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0);
    (cpu, hwm)
}
