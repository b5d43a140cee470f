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
/// How often a container whose files were not found is looked up again
/// (its runtime may not have written them yet).
const RETRY: Duration = Duration::from_secs(2);
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

    pub fn len(&self) -> usize {
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
                let every = if e.ident.is_some() { RECHECK } else { RETRY };
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
        let e = self.cache.entry(memcg).or_insert_with(|| Entry {
            id: c.id.clone(),
            ident: None,
            source: None,
            checked: now,
            used: now,
            gone: None,
        });
        if e.id != c.id {
            *e = Entry {
                id: c.id.clone(),
                ident: None,
                source: None,
                checked: now,
                used: now,
                gone: None,
            };
        }
        match found {
            Some((ident, file)) => {
                e.source = file.map(|f| {
                    let m = mtime(&f);
                    (f, m)
                });
                e.ident = Some(ident);
                e.gone = None;
            }
            // Never found, or found before and now gone everywhere: what
            // was known stays.
            None if e.ident.is_some() => {
                e.gone.get_or_insert(now);
            }
            None => {}
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
