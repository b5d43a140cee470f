//! The one copy of the recipe that builds memtrace's eBPF object:
//! memtrace-ebpf for bpfel-unknown-none with Debian's rustc (which ships a
//! prebuilt `core` for that target, so no rust-src/build-std) and
//! bpf-linker, as in shared/notes/toolchain.md.
//!
//! memtrace's build.rs and `cargo xtask` both build through this crate, into
//! the same directory (`<host target dir>/ebpf`), so one cached build serves
//! both. It also holds the list of variables stripped from every nested
//! cargo, which xtask uses for all its child processes.
//!
//! No dependencies: it is a build-dependency of memtrace.

use std::{
    env,
    ffi::{OsStr, OsString},
    fmt, fs,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// The eBPF crate.
pub const PACKAGE: &str = "memtrace-ebpf";
/// Its target; Debian's libstd-rust-web-dev-bpf ships `core` for it.
pub const TARGET: &str = "bpfel-unknown-none";
/// Debian's rustc (rustc-web). rustup's `rustc` comes first on PATH, so the
/// full path is used.
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
/// Overrides [`DEBIAN_RUSTC`]; meant for tests of the missing-toolchain path
/// (point it at a file that does not exist).
pub const RUSTC_VAR: &str = "MEMTRACE_EBPF_RUSTC";
/// The bpf-linker `cargo xtask setup` installs; any 0.13.x is accepted.
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// What to do when [`Toolchain::find`] fails.
pub const FIX: &str = "run `cargo xtask setup` (it installs Debian's rustc-web with the BPF \
                       `core`, and bpf-linker), then build again";

/// A failure of this crate, as one human-readable line (or the command's
/// status; the compiler's own output went to stderr).
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// The toolchain is not (completely) installed: nothing was attempted.
#[derive(Debug)]
pub struct Missing {
    /// What is missing, one line.
    pub cause: String,
    /// Files whose appearance or change may fix it (for a build script's
    /// `rerun-if-changed`; a missing one makes cargo rerun it every build).
    pub watch: Vec<PathBuf>,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cause)
    }
}

impl std::error::Error for Missing {}

/// The tools the build needs, found and checked.
#[derive(Clone, Debug)]
pub struct Toolchain {
    /// Debian's rustc, with `core` for [`TARGET`] in its sysroot.
    pub rustc: PathBuf,
    /// A bpf-linker of a fitting version; its directory goes first on PATH.
    pub bpf_linker: PathBuf,
}

impl Toolchain {
    /// Finds Debian's rustc (or `$MEMTRACE_EBPF_RUSTC`) with the BPF `core`,
    /// and bpf-linker in cargo's bin dir or on PATH.
    pub fn find() -> Result<Self, Missing> {
        let rustc = rustc_path();
        check_rustc(&rustc)?;
        let search = find_bpf_linker();
        match search.found {
            Some(bpf_linker) => Ok(Self { rustc, bpf_linker }),
            None => {
                let watch: Vec<PathBuf> = cargo_home()
                    .map(|home| home.join("bin/bpf-linker"))
                    .into_iter()
                    .collect();
                let mut cause = format!(
                    "no bpf-linker {}.x in cargo's bin dir or on PATH",
                    minor_version()
                );
                if !search.rejected.is_empty() {
                    cause.push_str(&format!(" ({})", search.rejected.join("; ")));
                }
                Err(Missing { cause, watch })
            }
        }
    }
}

/// Rewritten by every dpkg run. Watched while the Debian toolchain is
/// missing because dpkg gives the files it installs the package's mtime
/// (months old): cargo would see an appeared `/usr/bin/rustc` as older
/// than its last run and keep the object-less build.
const DPKG_STATUS: &str = "/var/lib/dpkg/status";

/// `$MEMTRACE_EBPF_RUSTC`, else [`DEBIAN_RUSTC`].
pub fn rustc_path() -> PathBuf {
    env::var_os(RUSTC_VAR)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEBIAN_RUSTC), PathBuf::from)
}

/// `rustc` must exist and have `core` for [`TARGET`] in its sysroot (Debian's
/// plain `rustc` package also installs /usr/bin/rustc, without it).
fn check_rustc(rustc: &Path) -> Result<(), Missing> {
    if !rustc.is_file() {
        return Err(Missing {
            cause: format!(
                "{} does not exist (Debian's rustc-web is not installed)",
                rustc.display()
            ),
            watch: vec![rustc.to_path_buf(), PathBuf::from(DPKG_STATUS)],
        });
    }
    let Some(sysroot) = output(Command::new(rustc).args(["--print", "sysroot"])) else {
        return Err(Missing {
            cause: format!("{} --print sysroot failed", rustc.display()),
            watch: vec![rustc.to_path_buf(), PathBuf::from(DPKG_STATUS)],
        });
    };
    let lib = Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(TARGET)
        .join("lib");
    let has_core = fs::read_dir(&lib).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
    });
    if !has_core {
        return Err(Missing {
            cause: format!(
                "{} has no prebuilt `core` for {TARGET} in {} (Debian's \
                 libstd-rust-web-dev-bpf is not installed)",
                rustc.display(),
                lib.display()
            ),
            watch: vec![rustc.to_path_buf(), lib, PathBuf::from(DPKG_STATUS)],
        });
    }
    Ok(())
}

/// `$CARGO_HOME`, else `~/.cargo`.
pub fn cargo_home() -> Option<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(home));
    }
    env::var_os("HOME").map(|home| Path::new(&home).join(".cargo"))
}

/// Where bpf-linker was looked for.
#[derive(Debug, Default)]
pub struct LinkerSearch {
    /// The first candidate of a fitting version.
    pub found: Option<PathBuf>,
    /// Candidates passed over, and why (one phrase each).
    pub rejected: Vec<String>,
}

/// Looks for bpf-linker in cargo's bin dir (where `cargo install` puts it),
/// then on PATH, and takes the first whose version fits.
pub fn find_bpf_linker() -> LinkerSearch {
    let mut candidates: Vec<PathBuf> = cargo_home()
        .map(|home| home.join("bin/bpf-linker"))
        .into_iter()
        .collect();
    if let Some(path) = env::var_os("PATH") {
        candidates.extend(env::split_paths(&path).map(|dir| dir.join("bpf-linker")));
    }
    let mut search = LinkerSearch::default();
    let mut seen = std::collections::HashSet::new();
    for candidate in candidates {
        if !seen.insert(candidate.clone()) || !candidate.is_file() {
            continue;
        }
        match bpf_linker_version(&candidate) {
            Some(version) if version_fits(&version) => {
                search.found = Some(candidate);
                break;
            }
            Some(version) => search.rejected.push(format!(
                "ignoring {} (version {version}, need {BPF_LINKER_VERSION})",
                candidate.display()
            )),
            None => search
                .rejected
                .push(format!("ignoring {} (does not run)", candidate.display())),
        }
    }
    search
}

/// The version a bpf-linker binary reports, if it runs.
pub fn bpf_linker_version(path: &Path) -> Option<String> {
    let out = output(Command::new(path).arg("--version"))?;
    parse_bpf_linker_version(&out).map(str::to_owned)
}

/// `bpf-linker 0.13.0` -> `0.13.0`.
fn parse_bpf_linker_version(out: &str) -> Option<&str> {
    let mut words = out.split_whitespace();
    (words.next()? == "bpf-linker").then_some(())?;
    words.next()
}

/// `0.13` of [`BPF_LINKER_VERSION`].
fn minor_version() -> &'static str {
    BPF_LINKER_VERSION
        .rsplit_once('.')
        .map_or(BPF_LINKER_VERSION, |(minor, _)| minor)
}

/// Whether `version` is a [`BPF_LINKER_VERSION`] with any patch level.
pub fn version_fits(version: &str) -> bool {
    version
        .strip_prefix(minor_version())
        .is_some_and(|rest| rest.starts_with('.'))
}

/// Runs `cmd` quietly and returns its stdout; `None` when it cannot start
/// or exits non-zero.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The eBPF build's own target dir, `<host target dir>/ebpf`: another rustc
/// than the host builds, so they must not invalidate each other.
pub fn target_dir(host_target_dir: &Path) -> PathBuf {
    host_target_dir.join("ebpf")
}

/// Where the build leaves the object:
/// `<host target dir>/ebpf/bpfel-unknown-none/release/memtrace-ebpf`.
pub fn object_path(host_target_dir: &Path) -> PathBuf {
    target_dir(host_target_dir)
        .join(TARGET)
        .join("release")
        .join(PACKAGE)
}

/// The host target dir of a build script's `OUT_DIR`, which is
/// `<target dir>/[<triple>/]<profile>/build/<package>-<hash>/out` (the
/// triple dir exists when cargo got `--target`; `target` is the build
/// script's `TARGET`). This honours CARGO_TARGET_DIR, `--target-dir` and
/// `build.target-dir` alike. None for any other layout.
pub fn host_target_dir(out_dir: &Path, target: &str) -> Option<PathBuf> {
    let mut up = out_dir.ancestors();
    if up.nth(2)?.file_name()? != "build" {
        return None;
    }
    // `up` now yields the profile dir, then the triple or target dir.
    let dir = up.nth(1)?;
    if dir.file_name()? == target {
        return dir.parent().map(Path::to_path_buf);
    }
    Some(dir.to_path_buf())
}

/// Rust flags for the BPF target: the arch (`arch`, e.g. `x86_64`) whose
/// kernel structs and helpers aya-ebpf assumes, and BTF in the object.
pub fn rustflags(arch: &str) -> String {
    format!(r#"--cfg=bpf_target_arch="{arch}" -Cdebuginfo=2 -Clink-arg=--btf"#)
}

/// The `cargo build` of [`PACKAGE`], run in `workspace_root` with a clean
/// environment (see [`clean_env`]), writing below
/// [`target_dir`]`(host_target_dir)`. `arch` is the arch of the kernel the
/// object is for.
pub fn command(
    toolchain: &Toolchain,
    workspace_root: &Path,
    host_target_dir: &Path,
    arch: &str,
) -> Result<Command, Error> {
    let linker_dir = toolchain
        .bpf_linker
        .parent()
        .ok_or_else(|| Error("bpf-linker path has no directory".into()))?;
    let mut build = cargo(workspace_root);
    build
        // rustc's BPF target runs `bpf-linker` from PATH.
        .env("PATH", path_with(linker_dir)?)
        .env("RUSTC", &toolchain.rustc)
        // aya-ebpf and memtrace-ebpf use #![feature(asm_experimental_arch)].
        .env("RUSTC_BOOTSTRAP", "aya_ebpf,memtrace_ebpf")
        .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_RUSTFLAGS", rustflags(arch))
        .args(["build", "-p", PACKAGE, "--release", "--target", TARGET])
        .arg("--target-dir")
        .arg(target_dir(host_target_dir));
    Ok(build)
}

/// The object must be a BPF ELF (e_machine EM_BPF = 247).
pub fn check_bpf_elf(path: &Path) -> Result<(), Error> {
    let mut header = [0u8; 20];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .map_err(|e| {
            Error(format!(
                "cannot read the eBPF object {}: {e}",
                path.display()
            ))
        })?;
    let machine = u16::from_le_bytes([header[18], header[19]]);
    if &header[..4] != b"\x7fELF" || machine != 247 {
        return Err(Error(format!(
            "{} is not a BPF ELF object (e_machine {machine})",
            path.display()
        )));
    }
    Ok(())
}

/// The cargo that runs us (`cargo run` and build scripts get `CARGO`, the
/// real toolchain binary), or `cargo` from PATH otherwise.
pub fn cargo_bin() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// `cargo` with a clean environment, run in `dir`.
pub fn cargo(dir: &Path) -> Command {
    let mut cmd = Command::new(cargo_bin());
    clean_env(&mut cmd);
    cmd.current_dir(dir);
    cmd
}

/// Variables removed from every child: they would switch the compiler,
/// wrap it, add flags, move the output, or are what `cargo run` (or cargo,
/// for a build script) injected into our own environment.
const REMOVED_VARS: &[&str] = &[
    "RUSTC",
    "RUSTDOC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_LINKER",
    "RUSTC_BOOTSTRAP",
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_RUSTC_CURRENT_DIR",
    "CARGO_MAKEFLAGS",
    // What cargo gives a build script (memtrace's, which runs the eBPF
    // build): build scripts in the nested build that watch one of these
    // (aya-ebpf's watch HOST) would rebuild whenever the nested build
    // alternates between memtrace's build.rs and xtask.
    "HOST",
    "TARGET",
    "OUT_DIR",
    "NUM_JOBS",
    "OPT_LEVEL",
    "DEBUG",
    "PROFILE",
    "MEMTRACE_EBPF_OBJ",
];

/// Prefixes of removed variables (`CARGO_TARGET_` covers `CARGO_TARGET_DIR`
/// and per-target linker/rustflags; `CARGO_BUILD_` covers rustc, wrappers,
/// target, target-dir and rustflags).
const REMOVED_PREFIXES: &[&str] = &[
    "CARGO_PKG_",
    "CARGO_BUILD_",
    "CARGO_TARGET_",
    "CARGO_PROFILE_",
    "CARGO_CFG_",
    "CARGO_FEATURE_",
    "DEP_",
];

/// Whether [`clean_env`] removes `key`.
pub fn is_removed(key: &str) -> bool {
    // Harmless and sometimes wanted: job limit and test runners (e.g. sudo).
    if key == "CARGO_BUILD_JOBS" || (key.starts_with("CARGO_TARGET_") && key.ends_with("_RUNNER")) {
        return false;
    }
    REMOVED_VARS.contains(&key) || REMOVED_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Makes `cmd` not inherit the toolchain choices of whoever started us.
/// `RUSTUP_TOOLCHAIN` is kept, so child cargos use the toolchain that runs
/// us.
pub fn clean_env(cmd: &mut Command) {
    for (key, _) in env::vars_os() {
        if key.to_str().is_some_and(is_removed) {
            cmd.env_remove(&key);
        }
    }
    if let Some(value) = env::var_os("LD_LIBRARY_PATH") {
        let exe_dir = env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf));
        // `cargo run` sets CARGO=<sysroot>/bin/cargo.
        let sysroot = env::var_os("CARGO").and_then(|cargo| {
            Path::new(&cargo)
                .parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
        });
        let injected: Vec<PathBuf> = exe_dir.into_iter().chain(sysroot).collect();
        match strip_library_path(&value, &injected) {
            Some(cleaned) => cmd.env("LD_LIBRARY_PATH", cleaned),
            None => cmd.env_remove("LD_LIBRARY_PATH"),
        };
    }
}

/// Drops the LD_LIBRARY_PATH entries below any of `injected` (what `cargo
/// run` prepended: our target dir and the toolchain's lib dirs).
fn strip_library_path(value: &OsStr, injected: &[PathBuf]) -> Option<OsString> {
    let kept: Vec<PathBuf> = env::split_paths(value)
        .filter(|entry| !entry.as_os_str().is_empty())
        .filter(|entry| !injected.iter().any(|dir| entry.starts_with(dir)))
        .collect();
    if kept.is_empty() {
        None
    } else {
        env::join_paths(kept).ok()
    }
}

/// PATH with `dir` in front.
pub fn path_with(dir: &Path) -> Result<OsString, Error> {
    let rest = env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(dir.to_path_buf()).chain(env::split_paths(&rest));
    env::join_paths(dirs).map_err(|e| Error(format!("cannot build PATH: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_toolchain_and_cargo_run_vars() {
        for key in [
            "RUSTC",
            "RUSTC_WRAPPER",
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER",
            "CARGO_BUILD_RUSTC",
            "CARGO_BUILD_TARGET_DIR",
            "CARGO_PKG_NAME",
            "CARGO_MANIFEST_DIR",
            "CARGO_CFG_TARGET_ARCH",
            "CARGO_FEATURE_USER",
            "HOST",
            "OUT_DIR",
            "DEP_Z_INCLUDE",
            "CARGO",
            "MEMTRACE_EBPF_OBJ",
        ] {
            assert!(is_removed(key), "{key}");
        }
        for key in [
            "PATH",
            "HOME",
            "CARGO_HOME",
            "CARGO_BUILD_JOBS",
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER",
            "CARGO_TERM_COLOR",
            "RUSTUP_TOOLCHAIN",
            "RUST_LOG",
        ] {
            assert!(!is_removed(key), "{key}");
        }
    }

    #[test]
    fn strips_what_cargo_run_prepended() {
        let value = OsStr::new(
            "/w/target/debug:/w/target/debug/deps:\
             /r/toolchains/stable/lib/rustlib/x86_64-unknown-linux-gnu/lib:\
             /r/toolchains/stable/lib:/opt/mine/lib",
        );
        let injected = [
            PathBuf::from("/w/target/debug"),
            PathBuf::from("/r/toolchains/stable"),
        ];
        assert_eq!(
            strip_library_path(value, &injected),
            Some(OsString::from("/opt/mine/lib"))
        );
        let only_cargo = OsStr::new("/w/target/debug:/w/target/debug/deps");
        assert_eq!(strip_library_path(only_cargo, &injected), None);
    }

    #[test]
    fn bpf_linker_version_parsing() {
        assert_eq!(
            parse_bpf_linker_version("bpf-linker 0.13.0\n"),
            Some("0.13.0")
        );
        assert_eq!(parse_bpf_linker_version("something 0.13.0"), None);
        assert_eq!(parse_bpf_linker_version(""), None);
    }

    #[test]
    fn accepts_only_0_13_x() {
        assert!(version_fits("0.13.0"));
        assert!(version_fits("0.13.2"));
        assert!(!version_fits("0.12.0"));
        assert!(!version_fits("0.130.0"));
        assert!(!version_fits("0.1"));
        assert!(!version_fits("1.13.0"));
    }

    #[test]
    fn host_target_dir_from_out_dir() {
        let triple = "x86_64-unknown-linux-gnu";
        let host = |out: &str| host_target_dir(Path::new(out), triple);
        assert_eq!(
            host("/w/target/debug/build/memtrace-0123abcd/out"),
            Some(PathBuf::from("/w/target"))
        );
        // cargo --target: one more level.
        assert_eq!(
            host("/w/target/x86_64-unknown-linux-gnu/release/build/memtrace-0123abcd/out"),
            Some(PathBuf::from("/w/target"))
        );
        // CARGO_TARGET_DIR elsewhere, custom profile.
        assert_eq!(
            host("/tmp/t/bench/build/memtrace-0123abcd/out"),
            Some(PathBuf::from("/tmp/t"))
        );
        assert_eq!(host("/somewhere/else/out"), None);
        assert_eq!(host("out"), None);
    }

    #[test]
    fn object_below_the_host_target_dir() {
        assert_eq!(
            object_path(Path::new("/w/target")),
            PathBuf::from("/w/target/ebpf/bpfel-unknown-none/release/memtrace-ebpf")
        );
    }

    #[test]
    fn missing_rustc_is_reported_not_run() {
        let err = check_rustc(Path::new("/nonexistent/rustc")).unwrap_err();
        assert!(
            err.cause.contains("/nonexistent/rustc does not exist"),
            "{err}"
        );
        assert_eq!(
            err.watch,
            [
                PathBuf::from("/nonexistent/rustc"),
                PathBuf::from(DPKG_STATUS)
            ]
        );
    }

    /// A scratch directory, removed on drop (also when the test fails).
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn elf_check_rejects_non_bpf() {
        let scratch =
            Scratch(env::temp_dir().join(format!("ebpf-build-test-{}", std::process::id())));
        let dir = &scratch.0;
        fs::create_dir_all(dir).unwrap();
        let empty = dir.join("empty.o");
        fs::write(&empty, b"").unwrap();
        assert!(check_bpf_elf(&empty).is_err());
        let mut x86 = b"\x7fELF".to_vec();
        x86.resize(18, 0);
        x86.extend_from_slice(&62u16.to_le_bytes());
        let host = dir.join("host.o");
        fs::write(&host, &x86).unwrap();
        let err = check_bpf_elf(&host).unwrap_err().to_string();
        assert!(err.contains("e_machine 62"), "{err}");
        let mut bpf = x86[..18].to_vec();
        bpf.extend_from_slice(&247u16.to_le_bytes());
        fs::write(&host, &bpf).unwrap();
        check_bpf_elf(&host).unwrap();
    }
}
