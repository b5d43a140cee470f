//! Tiers 2 and 3 of a container's identity: the names people use (pod,
//! namespace, container, image), read from the runtimes' own state files
//! and the kubelet's log layout. Read-only and file-first: no daemon
//! socket, so nothing breaks when a runtime's API moves or is not reachable
//! from the agent's container (`--host-root`).
//!
//! Tier 1 (`cgroup::container::attribute`) gives the runtime and id from
//! the path; [`Names`] looks the id up where that runtime keeps it:
//!
//! | runtime (from the path) | state file, in order |
//! |---|---|
//! | docker | `config.v2.json` ([`docker`]), containerd's bundle ([`oci`]) |
//! | containerd | containerd's bundle, then Docker's (cri-dockerd's paths are containerd's) |
//! | cri-o | `userdata/config.json` under the graphroot, then the runroot ([`oci`]) |
//! | podman | containers/storage's `containers.json` ([`podman`]) |
//! | any of them, for a pod's name still unknown | the kubelet's log layout ([`kubelet`]) |
//! | a pod's own cgroup | `/var/log/pods/<ns>_<pod>_<uid>` |
//!
//! Names are resolved when a memcg is first named and cached by memcg id
//! (ids are never reused); a cached identity is checked against its file's
//! mtime at most every [`RECHECK`] while in use, and kept when the file is
//! gone: a runtime removes a container's state right after an OOM kill,
//! and the post-mortem written after that must still name it. Entries
//! whose file is gone are dropped [`KEEP`] after both the file went and
//! the last lookup; the cache holds at most [`MAX_ENTRIES`] (least
//! recently used dropped first).
//!
//! Every string here was chosen by a container's user: outputs escape them
//! like paths; here they are only bounded in length.
pub mod docker;
pub mod kubelet;
pub mod oci;
pub mod podman;
pub mod roots;

use std::{
    collections::HashMap,
    io::Read,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

pub use roots::Roots;
use serde::de::DeserializeOwned;

use super::container::Container;

/// How often a cached identity in use is checked against its file.
pub const RECHECK: Duration = Duration::from_secs(10);
/// How soon a container whose files were not found is looked up again (its
/// runtime may not have written them yet); doubled after every miss up to
/// MAX_RETRY, so an agent that cannot see the runtimes' files (no
/// `--host-root`) does not read directories every few seconds for ever.
const RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(120);
/// How long an identity is kept after its container's files are gone and
/// it was last looked up.
pub const KEEP: Duration = Duration::from_secs(600);
/// Bound on the cache.
pub const MAX_ENTRIES: usize = 8192;
/// Largest state file read: an OCI spec is tens of KiB; containers.json
/// grows with the containers of a host.
const MAX_FILE: u64 = 32 << 20;
/// Longest name kept (an image reference can be long; a label has no
/// bound of its own).
const MAX_NAME: usize = 512;

/// What the runtimes' state adds to a container's identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub runtime_name: Option<String>,
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub pod_uid: Option<String>,
    pub image: Option<String>,
}

impl Identity {
    fn is_empty(&self) -> bool {
        self.runtime_name.is_none() && self.pod.is_none() && self.image.is_none()
    }

    /// Fields `other` knows and this does not.
    fn fill(&mut self, other: Identity) {
        self.runtime_name = self.runtime_name.take().or(other.runtime_name);
        self.pod = self.pod.take().or(other.pod);
        self.namespace = self.namespace.take().or(other.namespace);
        self.pod_uid = self.pod_uid.take().or(other.pod_uid);
        self.image = self.image.take().or(other.image);
    }

    /// Writes itself into a path-only identity: `pod_uid` only where the
    /// path had none.
    pub fn apply(&self, c: &mut Container) {
        let b = |s: &Option<String>| s.as_deref().map(bounded);
        c.runtime_name = b(&self.runtime_name);
        c.pod = b(&self.pod);
        c.namespace = b(&self.namespace);
        c.image = b(&self.image);
        if c.pod_uid.is_none() {
            c.pod_uid = b(&self.pod_uid);
        }
    }
}

fn bounded(s: &str) -> String {
    if s.len() <= MAX_NAME {
        return s.to_string();
    }
    let mut end = MAX_NAME;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// A JSON file, read up to MAX_FILE; None if absent, too big or not the
/// expected shape.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let f = std::fs::File::open(path).ok()?;
    let mut buf = Vec::new();
    f.take(MAX_FILE + 1).read_to_end(&mut buf).ok()?;
    if buf.len() as u64 > MAX_FILE {
        log::debug!("{} is over {MAX_FILE} bytes: not read", path.display());
        return None;
    }
    serde_json::from_slice(&buf).ok()
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

struct Entry {
    /// The container id the memcg's path gave (the entry's key check).
    id: String,
    ident: Option<Identity>,
    /// The file the identity came from and its mtime then.
    source: Option<(PathBuf, Option<SystemTime>)>,
    checked: Instant,
    used: Instant,
    /// When its file was first found missing.
    gone: Option<Instant>,
    /// Lookups that found nothing, in a row.
    misses: u32,
}

/// Cost counters, for `--log-level debug` and the measurements.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cost {
    pub lookups: u64,
    pub elapsed: Duration,
}

/// The name cache (see the module doc).
pub struct Names {
    roots: Roots,
    cache: HashMap<u64, Entry>,
    last_sweep: Instant,
    pub cost: Cost,
}

impl Names {
    pub fn new(roots: Roots) -> Self {
        Names {
            roots,
            cache: HashMap::new(),
            last_sweep: Instant::now(),
            cost: Cost::default(),
        }
    }

    /// Identities cached (for the cost report).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Fills in what the runtimes know about the container of memcg `memcg`
    /// (`c` from its path).
    pub fn name(&mut self, memcg: u64, c: &mut Container) {
        if !nameable(c) {
            return;
        }
        if memcg == 0 {
            // A memcg known by path alone (the kernel log named it after
            // it was removed): whatever a memcg of that container cached.
            if let Some(i) = self
                .cache
                .values()
                .find(|e| e.id == c.id)
                .and_then(|e| e.ident.as_ref())
            {
                i.apply(c);
            } else if let Some((i, _)) = self.lookup(c) {
                i.apply(c);
            }
            return;
        }
        let now = Instant::now();
        let fresh = match self.cache.get(&memcg) {
            Some(e) if e.id == c.id => {
                let every = if e.ident.is_some() {
                    RECHECK
                } else {
                    RETRY.saturating_mul(1 << e.misses.min(6)).min(MAX_RETRY)
                };
                now.duration_since(e.checked) < every
            }
            _ => false,
        };
        if !fresh {
            self.refresh(memcg, c, now);
        }
        if let Some(e) = self.cache.get_mut(&memcg) {
            e.used = now;
            if let Some(i) = &e.ident {
                i.apply(c);
            }
        }
        if now.duration_since(self.last_sweep) >= RECHECK || self.cache.len() > MAX_ENTRIES {
            self.sweep(now);
        }
    }

    /// Looks the container up again if its file changed (or was never
    /// found); keeps what was known if the file is gone.
    fn refresh(&mut self, memcg: u64, c: &Container, now: Instant) {
        if let Some(e) = self.cache.get_mut(&memcg).filter(|e| e.id == c.id) {
            e.checked = now;
            // Named by the kubelet's log layout: those names never change
            // for a container id.
            if e.ident.is_some() && e.source.is_none() {
                return;
            }
            if let Some((file, was)) = &e.source {
                match mtime(file) {
                    None => {
                        e.gone.get_or_insert(now);
                        return;
                    }
                    Some(m) if Some(m) == *was => return,
                    Some(_) => {}
                }
            }
        }
        let t = Instant::now();
        let found = self.lookup(c);
        self.cost.lookups += 1;
        self.cost.elapsed += t.elapsed();
        let fresh = || Entry {
            id: c.id.clone(),
            ident: None,
            source: None,
            checked: now,
            used: now,
            gone: None,
            misses: 0,
        };
        let e = self.cache.entry(memcg).or_insert_with(fresh);
        // Another container's identity under this id: start over.
        if e.id != c.id {
            *e = fresh();
        }
        match found {
            Some((ident, file)) => {
                log::debug!(
                    "memcg {memcg}: container {} named {} from {}",
                    c.id,
                    crate::output::escape::text(&format!("{ident:?}")),
                    file.as_deref()
                        .map_or("the kubelet's logs".into(), |f| f.display().to_string())
                );
                e.source = file.map(|f| {
                    let m = mtime(&f);
                    (f, m)
                });
                e.ident = Some(ident);
                e.gone = None;
                e.misses = 0;
            }
            // Never found, or found before and now gone everywhere: what
            // was known stays.
            None if e.ident.is_some() => {
                e.gone.get_or_insert(now);
            }
            None => e.misses = e.misses.saturating_add(1),
        }
    }

    fn sweep(&mut self, now: Instant) {
        self.last_sweep = now;
        self.cache.retain(|_, e| {
            let old = |t: Instant| now.duration_since(t) >= KEEP;
            // Unknown containers are cheap to look up again; gone ones are
            // kept KEEP past their last use.
            !(old(e.used) && (e.ident.is_none() || e.gone.is_some_and(old)))
        });
        if self.cache.len() > MAX_ENTRIES {
            let mut used: Vec<(Instant, u64)> =
                self.cache.iter().map(|(k, e)| (e.used, *k)).collect();
            used.sort_unstable();
            let drop = self.cache.len() - MAX_ENTRIES * 7 / 8;
            for (_, k) in used.into_iter().take(drop) {
                self.cache.remove(&k);
            }
        }
    }

    /// The container's identity and the file it came from (None for the
    /// kubelet's log dirs, which change for reasons of their own).
    fn lookup(&self, c: &Container) -> Option<(Identity, Option<PathBuf>)> {
        let r = &self.roots;
        let id = c.id.as_str();
        let docker = || {
            let f = r.docker.join("containers").join(id).join("config.v2.json");
            docker::identity(&f).map(|i| (i, f))
        };
        let containerd = || r.containerd.iter().find_map(|s| oci::containerd(s, id));
        let crio = || {
            [&r.storage, &r.storage_run].into_iter().find_map(|root| {
                let f = root
                    .join("overlay-containers")
                    .join(id)
                    .join("userdata/config.json");
                oci::crio(&f).map(|i| (i, f))
            })
        };
        let podman = || {
            podman::lists(&r.storage)
                .into_iter()
                .find_map(|f| podman::identity(&f, id).map(|i| (i, f)))
        };
        let found = match c.runtime.as_str() {
            "docker" => docker().or_else(containerd),
            "containerd" => containerd().or_else(docker),
            "cri-o" => crio(),
            "podman" => podman(),
            // A pod's own cgroup: only the kubelet's pod log dir names it.
            _ => {
                let uid = c.pod_uid.as_deref()?;
                return kubelet::pod(&r.pod_logs, uid).map(|i| (i, None));
            }
        };
        match found {
            Some((mut i, f)) => {
                // A Kubernetes container whose state lacks the pod (a
                // runtime writing fewer annotations): the kubelet's logs.
                if i.pod.is_none()
                    && c.pod_uid.is_some()
                    && let Some(k) = kubelet::container(&r.container_logs, id)
                {
                    i.fill(k);
                }
                (!i.is_empty()).then_some((i, Some(f)))
            }
            None => kubelet::container(&r.container_logs, id).map(|i| (i, None)),
        }
    }
}

/// Whether the runtimes can know this container: a container id of a
/// known runtime (not a monitor's), or a pod's own cgroup.
fn nameable(c: &Container) -> bool {
    match c.runtime.as_str() {
        "docker" | "containerd" | "cri-o" | "podman" => !c.id.starts_with("conmon-"),
        _ => c.pod_uid.is_some() && c.id == c.cgroup,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{cgroup::container::attribute, testutil::TempDir};

    const ID: &str = "4f3c2b1a0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";

    fn docker_v2(name: &str, image: &str) -> String {
        serde_json::json!({
            "ID": ID, "Name": format!("/{name}"),
            "Config": {"Image": image, "Labels": null, "Hostname": "x"},
            "State": {"Running": true}
        })
        .to_string()
    }

    fn names(t: &TempDir) -> Names {
        Names::new(Roots::new(t.path(), None, None, None))
    }

    #[test]
    fn an_identity_outlives_its_state_file_and_follows_its_changes() {
        let t = TempDir::new("names-cache");
        let f = t.write(
            format!("var/lib/docker/containers/{ID}/config.v2.json"),
            docker_v2("web-1", "bb:1"),
        );
        let mut n = names(&t);
        let path = format!("/docker/{ID}");
        let mut c = attribute(&path);
        n.name(7, &mut c);
        assert_eq!(c.runtime_name.as_deref(), Some("web-1"));
        assert_eq!(c.image.as_deref(), Some("bb:1"));
        assert_eq!(c.display_name(), "web-1");
        // Renamed (docker rename rewrites the file): seen at the next check.
        std::fs::write(&f, docker_v2("web-renamed", "bb:1")).unwrap();
        let later = Instant::now() + RECHECK;
        n.refresh(7, &attribute(&path), later);
        let mut c = attribute(&path);
        n.name(7, &mut c);
        assert_eq!(c.runtime_name.as_deref(), Some("web-renamed"));
        // Removed (docker rm after the OOM kill): the name stays.
        std::fs::remove_dir_all(t.join("var/lib/docker/containers")).unwrap();
        n.refresh(7, &attribute(&path), later + RECHECK);
        let mut c = attribute(&path);
        n.name(7, &mut c);
        assert_eq!(c.runtime_name.as_deref(), Some("web-renamed"));
        // A memcg known by path alone (id 0) gets its container's name too.
        let mut c = attribute(&path);
        n.name(0, &mut c);
        assert_eq!(c.runtime_name.as_deref(), Some("web-renamed"));
        // Swept KEEP after it went and was last used; not before.
        n.sweep(later + RECHECK + KEEP / 2);
        assert_eq!(n.cached(), 1);
        n.sweep(later + RECHECK + KEEP * 2);
        assert_eq!(n.cached(), 0);
    }

    #[test]
    fn the_cache_is_bounded() {
        let t = TempDir::new("names-bound");
        t.write(
            format!("var/lib/docker/containers/{ID}/config.v2.json"),
            docker_v2("web-1", "bb:1"),
        );
        let mut n = names(&t);
        let path = format!("/docker/{ID}");
        for id in 1..=(MAX_ENTRIES as u64 + 10) {
            n.name(id, &mut attribute(&path));
        }
        assert!(n.cached() <= MAX_ENTRIES, "{}", n.cached());
    }

    #[test]
    fn paths_without_a_runtime_id_are_not_looked_up() {
        let t = TempDir::new("names-none");
        let mut n = names(&t);
        for p in ["/system.slice/nginx.service", "/user.slice", "/"] {
            let mut c = attribute(p);
            n.name(9, &mut c);
            assert_eq!(c.runtime_name, None);
        }
        assert_eq!(n.cost.lookups, 0);
        // A container whose files are nowhere: looked up once, then not
        // again before the retry delay.
        let docker = format!("/docker/{ID}");
        for _ in 0..3 {
            n.name(9, &mut attribute(&docker));
        }
        assert_eq!(n.cost.lookups, 1);
    }

    #[test]
    fn hostile_labels_are_bounded_and_kept_verbatim_for_the_outputs_to_escape() {
        let t = TempDir::new("names-hostile");
        let evil = format!("evil\x1b]0;owned\x07\u{202e}\n{}", "x".repeat(2000));
        let v2 = serde_json::json!({
            "Name": "/k8s_c_p_ns_uid_0",
            "Config": {"Image": "bb:1", "Labels": {
                "io.kubernetes.pod.name": evil,
                "io.kubernetes.pod.namespace": "ns",
                "io.kubernetes.container.name": "c",
            }}
        });
        t.write(
            format!("var/lib/docker/containers/{ID}/config.v2.json"),
            v2.to_string(),
        );
        let mut n = names(&t);
        let mut c = attribute(&format!(
            "/kubepods/besteffort/pod0a1b2c3d-1111-2222-3333-444455556666/{ID}"
        ));
        n.name(3, &mut c);
        let pod = c.pod.unwrap();
        assert!(pod.len() <= MAX_NAME);
        assert!(pod.starts_with("evil\x1b"));
        assert_eq!(c.runtime_name.as_deref(), Some("c"));
    }
}
