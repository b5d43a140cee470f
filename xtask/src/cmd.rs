//! Running child processes: the workspace root, a clean `cargo` (the
//! environment cleaning lives in ebpf-build, which memtrace's build.rs
//! shares), and printing/checking commands.

use std::{
    env,
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

/// `cargo` with a clean environment (see [`ebpf_build::clean_env`]), run
/// in the workspace root.
pub fn cargo() -> Command {
    ebpf_build::cargo(workspace_root())
}

pub use ebpf_build::clean_env;

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
