//! Where the runtimes keep their state on the host, and where the host is.
use std::path::{Path, PathBuf};

/// The runtimes' state roots, each already prefixed by the host root. An
/// agent running in a container with the host mounted at `/host` passes
/// `--host-root /host`; every default below is then read below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roots {
    pub host: PathBuf,
    /// Docker's data-root (`<root>/containers/<id>/config.v2.json`).
    pub docker: PathBuf,
    /// containerd state dirs holding `io.containerd.runtime.v2.task`
    /// (containerd's own, k3s's).
    pub containerd: Vec<PathBuf>,
    /// containers/storage graphroot (CRI-O and Podman).
    pub storage: PathBuf,
    /// containers/storage runroot (CRI-O's bundle copies).
    pub storage_run: PathBuf,
    /// The kubelet's log dirs.
    pub pod_logs: PathBuf,
    pub container_logs: PathBuf,
}

/// Docker's default data-root (moby: daemon/config `defaultDataRoot`).
pub const DOCKER_ROOT: &str = "/var/lib/docker";
/// containers/storage's default graphroot (storage.conf `graphroot`).
pub const STORAGE_ROOT: &str = "/var/lib/containers/storage";
/// containers/storage's default runroot (storage.conf `runroot`).
pub const STORAGE_RUN: &str = "/run/containers/storage";
/// containerd's default state dir, and k3s's.
pub const CONTAINERD_STATE: &[&str] = &["/run/containerd", "/run/k3s/containerd"];

impl Roots {
    /// `host` prefixes every other root, given or default.
    pub fn new(
        host: &Path,
        docker: Option<&Path>,
        storage: Option<&Path>,
        containerd: Option<&Path>,
    ) -> Self {
        let under = |p: &Path| host.join(p.strip_prefix("/").unwrap_or(p));
        Roots {
            host: host.to_path_buf(),
            docker: under(docker.unwrap_or(Path::new(DOCKER_ROOT))),
            containerd: match containerd {
                Some(p) => vec![under(p)],
                None => CONTAINERD_STATE
                    .iter()
                    .map(|p| under(Path::new(p)))
                    .collect(),
            },
            storage: under(storage.unwrap_or(Path::new(STORAGE_ROOT))),
            storage_run: under(Path::new(STORAGE_RUN)),
            pod_logs: under(Path::new("/var/log/pods")),
            container_logs: under(Path::new("/var/log/containers")),
        }
    }
}

impl Default for Roots {
    fn default() -> Self {
        Roots::new(Path::new("/"), None, None, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_root_is_below_the_host_root() {
        let r = Roots::new(
            Path::new("/host"),
            Some(Path::new("/srv/docker")),
            None,
            None,
        );
        assert_eq!(r.docker, Path::new("/host/srv/docker"));
        assert_eq!(r.storage, Path::new("/host/var/lib/containers/storage"));
        assert_eq!(
            r.containerd,
            [
                Path::new("/host/run/containerd"),
                Path::new("/host/run/k3s/containerd")
            ]
        );
        assert_eq!(r.pod_logs, Path::new("/host/var/log/pods"));
        let d = Roots::default();
        assert_eq!(d.docker, Path::new("/var/lib/docker"));
    }
}
