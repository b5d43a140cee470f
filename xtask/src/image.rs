//! `cargo xtask image`: the container image, built offline (no registry is
//! needed or used): the static memtrace (glibc, crt-static, as the qemu
//! guests run it) copied into a `FROM scratch` image by Debian's Docker, on
//! a private daemon, then saved as a tarball (`docker load -i` it, or
//! import it into containerd with `ctr -n k8s.io images import`).

use std::{fs, path::PathBuf};

use anyhow::{Context as _, Result, bail};
use memtrace_testkit::docker::Dockerd;

use crate::{cmd, ebpf, setup, vm};

/// The image's name, as deploy/kubernetes/daemonset.yaml refers to it.
pub const IMAGE: &str = concat!("memtrace:", env!("CARGO_PKG_VERSION"));

/// Where the saved image goes (the deploy test loads it from there).
pub fn tarball() -> PathBuf {
    cmd::target_dir().join("image/memtrace-image.tar")
}

const DOCKERFILE: &str = "\
# Built by `cargo xtask image`: the static binary and nothing else.
FROM scratch
COPY memtrace /memtrace
# Post-mortems and captures (a hostPath volume in the DaemonSet).
VOLUME /var/lib/memtrace
EXPOSE 9750
ENTRYPOINT [\"/memtrace\"]
CMD [\"record\", \"--dir\", \"/var/lib/memtrace\", \"--listen\", \"0.0.0.0:9750\"]
";

pub fn image() -> Result<()> {
    let toolchain = setup::run()?;
    setup::ensure_installed(&["docker.io"])?;
    let object = ebpf::build(&toolchain)?;
    let binary = vm::build_static_memtrace(cmd::workspace_root(), &object)?;
    let dir = cmd::target_dir().join("image");
    let context = dir.join("context");
    let _ = fs::remove_dir_all(&context);
    fs::create_dir_all(&context)?;
    fs::copy(&binary, context.join("memtrace"))
        .with_context(|| format!("copying {}", binary.display()))?;
    fs::write(context.join("Dockerfile"), DOCKERFILE)?;
    let docker = Dockerd::start(&dir.join("dockerd")).context("starting a private dockerd")?;
    // The classic builder: FROM scratch needs no registry, and Debian's
    // docker.io has no buildx.
    let out = docker
        .docker()
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "--quiet", "-t", IMAGE])
        .arg(&context)
        .output()?;
    if !out.status.success() {
        bail!("docker build: {}", String::from_utf8_lossy(&out.stderr));
    }
    let tar = tarball();
    let out = docker
        .docker()
        .args(["save", "-o"])
        .arg(&tar)
        .arg(IMAGE)
        .output()?;
    if !out.status.success() {
        bail!("docker save: {}", String::from_utf8_lossy(&out.stderr));
    }
    let size = fs::metadata(&tar)?.len();
    eprintln!(
        "xtask image: {IMAGE} ({:.1} MiB, FROM scratch) saved to:",
        size as f64 / (1 << 20) as f64
    );
    println!("{}", tar.display());
    Ok(())
}
