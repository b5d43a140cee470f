//! Running child processes: the workspace root, a clean `cargo`, and
//! printing/checking commands.

use std::{
    env,
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask's manifest dir has a parent")
}

/// The workspace's host target directory (`<root>/target`).
pub fn target_dir() -> PathBuf {
    workspace_root().join("target")
}

/// The cargo that runs us (`cargo run` sets `CARGO` to the real toolchain
/// binary), or `cargo` from PATH when xtask is started some other way.
pub fn cargo_bin() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// `cargo` with a clean environment, run in the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(cargo_bin());
    clean_env(&mut cmd);
    cmd.current_dir(workspace_root());
    cmd
}

/// Variables removed from every child: they would switch the compiler,
/// wrap it, add flags, move the output, or are what `cargo run` injected
/// into xtask's own environment.
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
];

fn is_removed(key: &str) -> bool {
    // Harmless and sometimes wanted: job limit and test runners (e.g. sudo).
    if key == "CARGO_BUILD_JOBS" || (key.starts_with("CARGO_TARGET_") && key.ends_with("_RUNNER")) {
        return false;
    }
    REMOVED_VARS.contains(&key) || REMOVED_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Makes `cmd` not inherit the toolchain choices of whoever started xtask.
/// `RUSTUP_TOOLCHAIN` is kept, so child cargos use the toolchain that runs
/// xtask.
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
/// run` prepended: xtask's target dir and the toolchain's lib dirs).
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
pub fn path_with(dir: &Path) -> Result<OsString> {
    let rest = env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(dir.to_path_buf()).chain(env::split_paths(&rest));
    env::join_paths(dirs).context("cannot build PATH")
}

/// Runs `cmd` (echoed to stderr) and fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    eprintln!("+ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its stdout; `None` when it cannot start
/// or exits non-zero.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(std::process::Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `cmd` as a shell-like line: the variables it sets, program, arguments.
pub fn display(cmd: &Command) -> String {
    let old_path = env::var_os("PATH").unwrap_or_default();
    let mut parts = Vec::new();
    for (key, value) in cmd.get_envs() {
        let Some(value) = value else { continue };
        let key = key.to_string_lossy();
        // Show PATH as `PATH=<added>:$PATH` rather than the whole thing.
        let value = match value
            .as_encoded_bytes()
            .strip_suffix(old_path.as_encoded_bytes())
        {
            Some(added) if key == "PATH" && !old_path.is_empty() => {
                format!("{}$PATH", String::from_utf8_lossy(added))
            }
            _ => value.to_string_lossy().into_owned(),
        };
        parts.push(format!("{key}={}", quote(&value)));
    }
    parts.push(quote(&cmd.get_program().to_string_lossy()));
    parts.extend(cmd.get_args().map(|arg| quote(&arg.to_string_lossy())));
    parts.join(" ")
}

fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,%$".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
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
            "CARGO",
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
    fn displays_commands_shell_like() {
        let mut cmd = Command::new("cargo");
        cmd.env("RUSTC", "/usr/bin/rustc")
            .env("FLAGS", r#"--cfg=a="b" -C x"#)
            .args(["build", "-p", "x"]);
        assert_eq!(
            display(&cmd),
            r#"FLAGS='--cfg=a="b" -C x' RUSTC=/usr/bin/rustc cargo build -p x"#
        );
    }
}
