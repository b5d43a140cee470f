//! The container a memcg belongs to, from its cgroup path alone.
//!
//! [`attribute`] reads the layouts container runtimes and systemd create
//! (cgroup v1 and v2 alike, under any prefix):
//!
//! | layout | runtime |
//! |---|---|
//! | `…/docker-<id>.scope`, `…/docker/<id>` | docker |
//! | `…/cri-containerd-<id>.scope`, `…/nerdctl-<id>.scope` | containerd |
//! | `…/pod<uid>/<id>` (kubelet cgroupfs driver), `…/default/<id>`, `…/k8s.io/<id>` | containerd |
//! | `…/crio-<id>[.scope]`, `…/crio-conmon-<id>[.scope]` | cri-o |
//! | `…/libpod-<id>[.scope]`, `…/libpod-conmon-<id>[.scope]` | podman |
//! | `…/<prefix>-<id>.scope`, another prefix | systemd |
//! | `…/<unit>.service`, `…/<unit>.scope` | systemd |
//! | anything else | cgroup |
//!
//! `<id>` must be exactly 64 lowercase hex digits; `docker-xyz.scope` is no
//! container (it is a systemd scope). A memcg below a container's directory
//! belongs to that container (`…/docker-<id>.scope/init.scope` is the
//! container). Of nested containers (Docker in Docker, a kind node running
//! pods) the innermost wins.
//!
//! Kubernetes pod cgroups (`…kubepods[-<qos>]-pod<uid>.slice`,
//! `…/kubepods[/<qos>]/pod<uid>`) give `pod_uid` and `qos` to the
//! containers inside them. A memcg at or below a pod cgroup but in none of
//! its containers is the pod itself: runtime "cgroup", `name` "pod/<8 chars
//! of the uid>", `id` and `cgroup` the pod cgroup's path.
//!
//! Ambiguities, decided:
//! - Monitors (`crio-conmon-<id>`, `libpod-conmon-<id>`) are not the
//!   container they monitor: their `id` is `conmon-<id>`, `name`
//!   `conmon-<short id>`.
//! - A bare `<id>` directory is a container only below `docker` (docker),
//!   a pod cgroup, `default` or `k8s.io` (containerd's cgroupfs default
//!   `/<namespace>/<id>`). Below a pod this is also what cri-dockerd
//!   creates; the path cannot tell it apart from containerd.
//! - `<prefix>-<id>.scope` with an unknown prefix (runc, crun, … started
//!   with a systemd cgroup path) is a container of runtime "systemd" whose
//!   `id` and `name` are the unit name: it outranks the units inside it.
//! - Podman pods (`machine-libpod_pod_<id>.slice`) are not Kubernetes pods.
//!
//! Paths are chosen by whoever may create cgroups (container users with a
//! delegated subtree, users' systemd instances): the ids are checked for
//! form, never for existence, so a delegated subtree can hold a directory
//! named like another container. `cgroup` is the path the identity came
//! from; only it tells such a directory apart from the real container.
//! Nothing here panics or allocates beyond the result, whatever the path.

pub use crate::output::records::Container;

use super::path::canonical;

/// Length of a container id (docker, containerd, cri-o, podman).
const ID_LEN: usize = 64;
/// Length of the short id `docker ps` shows.
const SHORT_ID_LEN: usize = 12;
/// systemd's limit on unit names (UNIT_NAME_MAX, with the NUL).
const UNIT_NAME_MAX: usize = 255;

/// Exact `<prefix>` of `<prefix><id>[.scope]` names of known runtimes: the
/// runtime, and whether the cgroup is a monitor's.
const PREFIXES: &[(&str, &str, bool)] = &[
    ("docker-", "docker", false),
    ("cri-containerd-", "containerd", false),
    ("nerdctl-", "containerd", false),
    ("crio-conmon-", "cri-o", true),
    ("crio-", "cri-o", false),
    ("libpod-conmon-", "podman", true),
    ("libpod-", "podman", false),
];

/// Parents under which a bare `<id>` is a container, and its runtime.
const BARE_PARENTS: &[(&str, &str)] = &[
    ("docker", "docker"),
    ("default", "containerd"),
    ("k8s.io", "containerd"),
];

/// A container found in the path.
#[derive(Clone, Copy)]
struct Found<'a> {
    /// Byte offset in the path just past the container's component.
    end: usize,
    /// The runtime, or "systemd" for a scope of an unknown runtime.
    runtime: &'static str,
    /// The 64 hex digits, or for "systemd" the unit name.
    id: &'a str,
    monitor: bool,
}

/// A Kubernetes pod cgroup found in the path.
#[derive(Clone, Copy)]
struct Pod<'a> {
    end: usize,
    /// As in the path: separated by `-` (cgroupfs) or `_` (systemd), or 32
    /// hex digits (static pods).
    uid: &'a str,
    qos: &'static str,
}

/// The container (or pod, systemd unit or plain cgroup) the memcg at
/// `path` (relative to the memory hierarchy's root, as `/a/b`; `a/b`, ``,
/// repeated and trailing slashes are accepted) belongs to. See the module
/// documentation for the rules.
pub fn attribute(path: &str) -> Container {
    let mut container: Option<Found> = None;
    // Innermost pod cgroup so far, and the one enclosing `container`.
    let mut pod: Option<Pod> = None;
    let mut container_pod: Option<Pod> = None;
    // Innermost systemd unit: end offset and name.
    let mut unit: Option<(usize, &str)> = None;
    let mut last = "";
    let (mut parent, mut grandparent) = ("", "");
    // Whether `parent` is a pod cgroup.
    let mut parent_is_pod = false;

    let mut start = 0;
    for comp in path.split('/') {
        let end = start + comp.len();
        start = end + 1;
        if comp.is_empty() {
            continue;
        }
        last = comp;
        let mut is_pod = false;
        if let Some((runtime, id, monitor)) = container_component(comp, parent, parent_is_pod) {
            container_pod = pod;
            container = Some(Found {
                end,
                runtime,
                id,
                monitor,
            });
        } else if let Some((uid, qos)) = pod_component(comp, parent, grandparent) {
            pod = Some(Pod { end, uid, qos });
            is_pod = true;
        } else if is_unit(comp) {
            unit = Some((end, comp));
        }
        grandparent = parent;
        parent = comp;
        parent_is_pod = is_pod;
    }

    // The innermost of container and pod is what the memcg belongs to.
    if let Some(c) = container.filter(|c| pod.is_none_or(|p| p.end < c.end)) {
        let (id, name) = match (c.runtime, c.monitor) {
            ("systemd", _) => (c.id.to_owned(), c.id.to_owned()),
            (_, true) => (
                format!("conmon-{}", c.id),
                format!("conmon-{}", &c.id[..SHORT_ID_LEN]),
            ),
            (_, false) => (c.id.to_owned(), c.id[..SHORT_ID_LEN].to_owned()),
        };
        return Container::from_path(
            c.runtime,
            id,
            name,
            container_pod.map(|p| dashed_uid(p.uid)),
            container_pod.map(|p| p.qos.into()),
            canonical(&path[..c.end]).into_owned(),
        );
    }
    if let Some(p) = pod {
        let cgroup = canonical(&path[..p.end]).into_owned();
        return Container::from_path(
            "cgroup",
            cgroup.clone(),
            format!("pod/{}", &p.uid[..8]),
            Some(dashed_uid(p.uid)),
            Some(p.qos.into()),
            cgroup,
        );
    }
    if let Some((end, name)) = unit {
        return Container::from_path(
            "systemd",
            name.to_owned(),
            name.to_owned(),
            None,
            None,
            canonical(&path[..end]).into_owned(),
        );
    }
    let cgroup = canonical(path).into_owned();
    Container::from_path(
        "cgroup",
        cgroup.clone(),
        if last.is_empty() { "/" } else { last }.to_owned(),
        None,
        None,
        cgroup,
    )
}

/// The runtime, id and monitor flag of a container's directory name.
fn container_component<'a>(
    comp: &'a str,
    parent: &str,
    parent_is_pod: bool,
) -> Option<(&'static str, &'a str, bool)> {
    if is_id(comp) {
        if parent_is_pod {
            return Some(("containerd", comp, false));
        }
        return BARE_PARENTS
            .iter()
            .find(|(p, _)| *p == parent)
            .map(|&(_, runtime)| (runtime, comp, false));
    }
    let (base, scope) = match comp.strip_suffix(".scope") {
        Some(base) => (base, true),
        None => (comp, false),
    };
    let split = base.len().checked_sub(ID_LEN)?;
    let (prefix, id) = (base.get(..split)?, base.get(split..)?);
    if !is_id(id) || !prefix.ends_with('-') {
        return None;
    }
    if let Some(&(_, runtime, monitor)) = PREFIXES.iter().find(|(p, _, _)| *p == prefix) {
        return Some((runtime, id, monitor));
    }
    // Another runtime's scope: a container known only as a systemd unit.
    (scope && prefix.len() > 1 && is_unit(comp)).then_some(("systemd", comp, false))
}

/// The uid and QoS class of a Kubernetes pod cgroup's directory name:
/// `[<root>-]kubepods[-<qos>]-pod<uid_with_underscores>.slice` (systemd
/// driver) or `pod<uid>` below `kubepods[/<qos>]` (cgroupfs driver).
fn pod_component<'a>(
    comp: &'a str,
    parent: &str,
    grandparent: &str,
) -> Option<(&'a str, &'static str)> {
    if let Some(slice) = comp.strip_suffix(".slice") {
        let at = slice.rfind("-pod")?;
        let uid = &slice[at + "-pod".len()..];
        let qos = slice_qos(&slice[..at])?;
        return is_uid(uid, b'_').then_some((uid, qos));
    }
    let uid = comp.strip_prefix("pod")?;
    let qos = match (grandparent, parent) {
        (_, "kubepods") => "guaranteed",
        ("kubepods", "burstable") => "burstable",
        ("kubepods", "besteffort") => "besteffort",
        _ => return None,
    };
    is_uid(uid, b'-').then_some((uid, qos))
}

/// QoS class of the slice holding pod slices: `kubepods[-<qos>]`, with the
/// kubelet's `--cgroup-root` slices prefixed (`kubelet-kubepods`).
fn slice_qos(slice: &str) -> Option<&'static str> {
    let is_kubepods = |s: &str| s == "kubepods" || s.ends_with("-kubepods");
    if is_kubepods(slice) {
        Some("guaranteed")
    } else if slice.strip_suffix("-burstable").is_some_and(is_kubepods) {
        Some("burstable")
    } else if slice.strip_suffix("-besteffort").is_some_and(is_kubepods) {
        Some("besteffort")
    } else {
        None
    }
}

/// 64 lowercase hex digits.
fn is_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(is_lower_hex)
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// A pod uid: a UUID (lowercase, groups separated by `sep`) or, for static
/// pods, 32 lowercase hex digits (the hash of the pod's manifest).
fn is_uid(s: &str, sep: u8) -> bool {
    let b = s.as_bytes();
    match b.len() {
        32 => b.iter().copied().all(is_lower_hex),
        36 => b.iter().enumerate().all(|(i, &c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == sep
            } else {
                is_lower_hex(c)
            }
        }),
        _ => false,
    }
}

/// The uid as kubectl shows it. Only called on uids `is_uid` accepted.
fn dashed_uid(uid: &str) -> String {
    uid.replace('_', "-")
}

/// A systemd service or scope name: a non-empty stem of the characters
/// systemd allows in unit names.
fn is_unit(comp: &str) -> bool {
    let Some(stem) = comp
        .strip_suffix(".service")
        .or_else(|| comp.strip_suffix(".scope"))
    else {
        return false;
    };
    !stem.is_empty()
        && comp.len() <= UNIT_NAME_MAX
        && comp.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.' | b'\\' | b'@')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1b2c3d5e6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e";
    const ID2: &str = "9ce45faf7719310972823ceeb3afaa4bc6c5b86fe1d59da60946fc12f42541ca";
    const UID: &str = "0b3f6a3e-6c11-4e2e-9f4a-2c8e5f7d1a90";
    const UID_: &str = "0b3f6a3e_6c11_4e2e_9f4a_2c8e5f7d1a90";
    /// A static pod's uid (hash of its manifest).
    const STATIC_UID: &str = "c704ef4c297ab11032b83ce52cbfc87b";

    type Want<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        &'a str,
    );

    /// Asserts runtime, id, name, pod uid, qos and cgroup of `path`.
    #[track_caller]
    fn check(path: &str, want: Want) {
        let c = attribute(path);
        let (id, name, uid, cgroup) = (&*c.id, &*c.name, c.pod_uid.as_deref(), &*c.cgroup);
        assert_eq!(
            (c.runtime.as_str(), id, name, uid, c.qos.as_deref(), cgroup),
            want,
            "{path:?}"
        );
    }

    /// `path` is in container ID of `runtime` (directory `cgroup`), in pod
    /// `pod` (uid, qos) if any.
    #[track_caller]
    fn check_ctr_in(path: &str, runtime: &str, pod: Option<(&str, &str)>, cgroup: &str) {
        let (uid, qos) = (pod.map(|p| p.0), pod.map(|p| p.1));
        check(path, (runtime, ID, &ID[..12], uid, qos, cgroup));
    }

    #[track_caller]
    fn check_ctr(path: &str, runtime: &str, cgroup: &str) {
        check_ctr_in(path, runtime, None, cgroup);
    }

    /// Each of `cgroups` is a container of `runtime`, with that cgroup.
    #[track_caller]
    fn check_ctrs(runtime: &str, cgroups: &[String]) {
        for c in cgroups {
            check_ctr(c, runtime, c);
        }
    }

    /// `path` is at or below pod cgroup `pod` with uid UID.
    #[track_caller]
    fn check_pod(path: &str, pod: &str, qos: &str) {
        check(
            path,
            ("cgroup", pod, "pod/0b3f6a3e", Some(UID), Some(qos), pod),
        );
    }

    /// The pod cgroup `pod` of QoS class `qos`, and its containers
    /// `pod/LEAF` of each (LEAF, runtime).
    #[track_caller]
    fn check_pod_with(pod: &str, qos: &str, ctrs: &[(String, &str)]) {
        for (leaf, runtime) in ctrs {
            let ctr = format!("{pod}/{leaf}");
            check_ctr_in(&ctr, runtime, Some((UID, qos)), &ctr);
        }
        check_pod(pod, pod, qos);
    }

    #[track_caller]
    fn check_plain(path: &str, cgroup: &str, name: &str) {
        check(path, ("cgroup", cgroup, name, None, None, cgroup));
    }

    #[track_caller]
    fn check_unit(path: &str, unit: &str, cgroup: &str) {
        check(path, ("systemd", unit, unit, None, None, cgroup));
    }

    #[test]
    fn docker() {
        check_ctrs(
            "docker",
            &[
                format!("/system.slice/docker-{ID}.scope"),
                format!("/docker/{ID}"),
                // v1 hierarchies mounted with a prefix; rootless docker.
                format!("/machine.slice/docker/{ID}"),
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/docker-{ID}.scope"
                ),
            ],
        );
    }

    #[test]
    fn sub_cgroups_belong_to_their_container() {
        let scope = format!("/system.slice/docker-{ID}.scope");
        check_ctr(&format!("{scope}/init.scope"), "docker", &scope);
        check_ctr(&format!("{scope}/system.slice/a.service"), "docker", &scope);
        let fs = format!("/docker/{ID}");
        check_ctr(&format!("{fs}/a/b/c"), "docker", &fs);
        let crio = format!("/kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID}.scope");
        let pod = Some((UID, "guaranteed"));
        check_ctr_in(&format!("{crio}/container"), "cri-o", pod, &crio);
    }

    #[test]
    fn path_spelling() {
        let want = format!("/docker/{ID}");
        for p in [
            format!("/docker/{ID}/"),
            format!("//docker//{ID}//"),
            format!("docker/{ID}"),
        ] {
            check_ctr(&p, "docker", &want);
        }
        for root in ["", "/", "///"] {
            check_plain(root, "/", "/");
        }
        check_plain("system.slice//", "/system.slice", "system.slice");
    }

    #[test]
    fn kubernetes_systemd_driver() {
        for (slices, qos) in [
            ("kubepods-burstable.slice/kubepods-burstable", "burstable"),
            (
                "kubepods-besteffort.slice/kubepods-besteffort",
                "besteffort",
            ),
            ("kubepods", "guaranteed"),
        ] {
            let pod = format!("/kubepods.slice/{slices}-pod{UID_}.slice");
            // containerd, and cri-dockerd with the systemd driver.
            let ctrs = [
                (format!("cri-containerd-{ID}.scope"), "containerd"),
                (format!("docker-{ID}.scope"), "docker"),
            ];
            check_pod_with(&pod, qos, &ctrs);
            // What is in the pod but in no container.
            check_pod(&format!("{pod}/kata_{ID}"), &pod, qos);
        }
        let ctr = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/cri-containerd-{ID}.scope"
        );
        check_ctr_in(&ctr, "containerd", Some((STATIC_UID, "burstable")), &ctr);
    }

    #[test]
    fn kubernetes_cgroupfs_driver() {
        for (dir, qos) in [
            ("/kubepods/burstable", "burstable"),
            ("/kubepods/besteffort", "besteffort"),
            ("/kubepods", "guaranteed"),
        ] {
            let ctrs = [
                (ID.to_string(), "containerd"),
                (format!("crio-{ID}"), "cri-o"),
            ];
            check_pod_with(&format!("{dir}/pod{UID}"), qos, &ctrs);
        }
        // Static pods have a 32-digit hash as uid.
        let ctr = format!("/kubepods/burstable/pod{STATIC_UID}/{ID}");
        check_ctr_in(&ctr, "containerd", Some((STATIC_UID, "burstable")), &ctr);
    }

    #[test]
    fn cri_o_and_podman_monitors() {
        let short = format!("conmon-{}", &ID[..12]);
        let long = format!("conmon-{ID}");
        let pod = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice"
        );
        let conmon = format!("{pod}/crio-conmon-{ID}.scope");
        check(
            &conmon,
            (
                "cri-o",
                &long,
                &short,
                Some(UID),
                Some("besteffort"),
                &conmon,
            ),
        );
        let ctr = format!("{pod}/crio-{ID}.scope");
        check_ctr_in(&ctr, "cri-o", Some((UID, "besteffort")), &ctr);

        let conmon = format!("/machine.slice/libpod-conmon-{ID}.scope");
        check(&conmon, ("podman", &long, &short, None, None, &conmon));
        let conmon = format!("/system.slice/crio-conmon-{ID}.scope");
        check(&conmon, ("cri-o", &long, &short, None, None, &conmon));
    }

    #[test]
    fn podman() {
        let p = format!("/machine.slice/libpod-{ID}.scope");
        check_ctr(&format!("{p}/container"), "podman", &p);
        check_ctrs(
            "podman",
            &[
                // A podman pod is no Kubernetes pod.
                format!("/machine.slice/machine-libpod_pod_{ID2}.slice/libpod-{ID}.scope"),
                format!("/libpod_parent/libpod-{ID}"),
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
                ),
            ],
        );
    }

    #[test]
    fn containerd_without_kubernetes() {
        check_ctrs(
            "containerd",
            &[
                format!("/system.slice/nerdctl-{ID}.scope"),
                format!("/default/{ID}"),
                format!("/k8s.io/{ID}"),
            ],
        );
        // The daemon and its shims are a systemd service.
        let daemon = "/system.slice/containerd.service";
        check_unit(daemon, "containerd.service", daemon);
        check_unit(&format!("{daemon}/shim"), "containerd.service", daemon);
    }

    #[test]
    fn systemd_units() {
        let s = "/system.slice/nginx.service";
        check_unit(s, "nginx.service", s);
        check_unit(&format!("{s}/a/b"), "nginx.service", s);
        check_unit("/init.scope", "init.scope", "/init.scope");
        let s = "/user.slice/user-1000.slice/session-3.scope";
        check_unit(s, "session-3.scope", s);
        let s = "/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-5f0c.scope";
        check_unit(s, "vte-spawn-5f0c.scope", s);
        let s = "/system.slice/system-getty.slice/getty@tty1.service";
        check_unit(s, "getty@tty1.service", s);
        let s = "/machine.slice/systemd-nspawn@deb.service";
        check_unit(&format!("{s}/payload"), "systemd-nspawn@deb.service", s);
        // Other runtimes' scopes are containers known by unit name: they
        // outrank the units inside them.
        let runc = format!("runc-{ID}.scope");
        let p = format!("/system.slice/{runc}");
        check_unit(&format!("{p}/init.scope"), &runc, &p);
        // Slices are plain cgroups.
        check_plain("/system.slice", "/system.slice", "system.slice");
        let p = "/kubepods.slice/kubepods-burstable.slice";
        check_plain(p, p, "kubepods-burstable.slice");
        check_plain("/kubepods/burstable", "/kubepods/burstable", "burstable");
    }

    #[test]
    fn nested_containers_innermost_wins() {
        let p = format!("/machine.slice/ct1.scope/docker/{ID}");
        check_ctr(&format!("{p}/sub"), "docker", &p);
        check_ctrs(
            "docker",
            &[
                format!("/docker/{ID2}/docker/{ID}"),
                format!("/system.slice/docker-{ID2}.scope/system.slice/docker-{ID}.scope"),
                format!("/lxc.payload.c1/docker/{ID}"),
            ],
        );
        // kind: a node container running pods (kubelet --cgroup-root=/kubelet).
        let node = format!("/system.slice/docker-{ID2}.scope");
        let pod = format!(
            "{node}/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_}.slice"
        );
        let ctr = format!("{pod}/cri-containerd-{ID}.scope");
        check_ctr_in(&ctr, "containerd", Some((UID, "burstable")), &ctr);
        check_pod(&pod, &pod, "burstable");
        // The node's own services belong to the node.
        let want = ("docker", ID2, &ID2[..12], None, None, &*node);
        check(&format!("{node}/system.slice/containerd.service"), want);
        check(
            &format!("{node}/kubelet.slice/kubelet-kubepods.slice"),
            want,
        );
        // Docker in Docker in a pod: still in the pod.
        let ctr = format!("/kubepods/pod{UID}/{ID2}/docker/{ID}");
        check_ctr_in(&ctr, "docker", Some((UID, "guaranteed")), &ctr);
    }

    #[test]
    fn lookalikes_are_not_containers() {
        let p = "/system.slice/docker-xyz.scope";
        check_unit(p, "docker-xyz.scope", p);
        let upper = ID.to_ascii_uppercase();
        let long = format!("{ID}0");
        for bad in [&*upper, &ID[..63], &*long] {
            let p = format!("/docker/{bad}");
            check_plain(&p, &p, bad);
            let p = format!("/system.slice/docker-{bad}.scope");
            check_unit(&p, &p[14..], &p);
        }
        // A bare id under an unknown parent, an id without its prefix's dash.
        let p = format!("/mygroup/{ID}");
        check_plain(&p, &p, ID);
        let p = format!("/system.slice/docker{ID}.scope");
        check_unit(&p, &p[14..], &p);
        // Suffix doubled; nothing but a suffix; characters systemd rejects.
        let p = format!("/system.slice/docker-{ID}.scope.scope");
        check_unit(&p, &p[14..], &p);
        check_plain("/a/.service", "/a/.service", ".service");
        check_plain("/a/b c.service", "/a/b c.service", "b c.service");
        let p = format!("/system.slice/docker-\u{1b}[31m{ID}.scope");
        check_plain(&p, &p, &p[14..]);
        // Non-ASCII right where the id would start (no char boundary there).
        let p = format!("/system.slice/docker-é{}.scope", &ID[1..]);
        check_plain(&p, &p, &p[14..]);
        let p = format!("/x/é{}", &ID[1..]);
        check_plain(&p, &p, &p[3..]);
    }

    #[test]
    fn lookalike_pods_are_not_pods() {
        let bad = [
            // Dashes in a slice name, underscores in a directory.
            format!("/kubepods.slice/kubepods-pod{UID}.slice"),
            format!("/kubepods/pod{UID_}"),
            // Not below kubepods, or below a class that is no QoS class.
            format!("/pod{UID}"),
            format!("/other/burstable/pod{UID}"),
            format!("/kubepods/guaranteed/pod{UID}"),
            format!("/x.slice/x-burstable-pod{UID_}.slice"),
            format!(
                "/kubepods.slice/kubepods-burstable-pod{}.slice",
                UID_.to_uppercase()
            ),
            format!("/kubepods.slice/kubepods-pod{}.slice", &UID_[1..]),
            "/kubepods.slice/kubepods-pod.slice".to_owned(),
        ];
        for p in bad {
            let c = attribute(&p);
            assert_eq!(
                (c.runtime.as_str(), c.pod_uid, c.qos),
                ("cgroup", None, None),
                "{p:?}"
            );
            assert_eq!(c.cgroup, p);
        }
        // A bare id below a lookalike pod is no container either.
        let p = format!("/kubepods/guaranteed/pod{UID}/{ID}");
        check_plain(&p, &p, ID);
    }

    #[test]
    fn hostile_names_inside_a_container() {
        let ctr = format!("/system.slice/docker-{ID}.scope");
        for evil in [
            "\u{1b}]0;pwned\u{7}",
            "\n\t\r",
            "\u{0}",
            "é/ü",
            &"x".repeat(100_000),
        ] {
            check_ctr(&format!("{ctr}/{evil}"), "docker", &ctr);
        }
        // A user's own cgroup named like a container is one (innermost wins),
        // with the path that tells it apart.
        let p = format!("{ctr}/docker/{ID2}");
        check(&p, ("docker", ID2, &ID2[..12], None, None, &p));
    }

    /// Random paths made of pieces of real layouts never panic, and the
    /// result holds together.
    #[test]
    fn random_paths_hold_together() {
        let uid_ = format!("pod{UID_}.slice");
        let pieces = [
            "docker",
            "docker-",
            ID,
            ".scope",
            "kubepods",
            "burstable",
            "besteffort",
            "pod",
            UID,
            UID_,
            &uid_,
            "kubepods-",
            "crio-conmon-",
            "libpod-",
            "cri-containerd-",
            "-pod",
            ".service",
            ".slice",
            "/",
            "/",
            "//",
            "é",
            "\u{1b}",
            "x",
            "0",
            "_",
            "-",
            "@",
            "default",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut path = String::new();
        // Results by kind: container, pod, unit, plain.
        let mut seen = [0; 4];
        for _ in 0..50_000 {
            path.clear();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut s = seed;
            for _ in 0..seed % 12 {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                path.push_str(pieces[(s >> 33) as usize % pieces.len()]);
            }
            let c = attribute(&path);
            let full = canonical(&path).into_owned();
            let under = full
                .strip_prefix(&*c.cgroup)
                .is_some_and(|r| r.is_empty() || r.starts_with('/'));
            assert!(under || c.cgroup == "/", "{path:?}: {c:?}");
            assert_eq!(c.pod_uid.is_some(), c.qos.is_some());
            match c.runtime.as_str() {
                "docker" | "containerd" | "cri-o" | "podman" => {
                    let id = c.id.strip_prefix("conmon-").unwrap_or(&c.id);
                    assert!(is_id(id), "{path:?}: {c:?}");
                    seen[0] += 1;
                }
                "systemd" => {
                    assert!(is_unit(&c.id) && c.cgroup.ends_with(&c.id), "{path:?}");
                    seen[2] += 1;
                }
                "cgroup" => {
                    assert_eq!(c.id, c.cgroup, "{path:?}");
                    seen[if c.pod_uid.is_some() { 1 } else { 3 }] += 1;
                }
                other => panic!("runtime {other}"),
            }
        }
        assert!(seen.iter().all(|&n| n > 20), "{seen:?}");
    }
}
