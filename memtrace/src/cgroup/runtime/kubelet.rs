//! The kubelet's log layout, for any CRI runtime (kubelet
//! `pkg/kubelet/kuberuntime/helpers.go` `BuildPodLogsDirectory`,
//! `kuberuntime_container.go` `legacyLogSymlink`):
//! `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log` and
//! `/var/log/containers/<pod>_<namespace>_<container>-<id>.log`, a symlink
//! to the former. Pod and namespace names are DNS labels/subdomains and
//! container names DNS labels: none holds `_`, so the split is exact.
use std::path::Path;

use super::Identity;

/// Entries of a log dir read at most (a node runs a few hundred).
const MAX_ENTRIES: usize = 16384;

/// The container with this id, by its `/var/log/containers` symlink.
pub fn container(dir: &Path, id: &str) -> Option<Identity> {
    let suffix = format!("-{id}.log");
    for e in std::fs::read_dir(dir).ok()?.flatten().take(MAX_ENTRIES) {
        let name = e.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(&suffix)) else {
            continue;
        };
        let mut parts = stem.splitn(3, '_');
        let (Some(pod), Some(ns), Some(ctr)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        // The symlink's target dir names the pod uid.
        let pod_uid = std::fs::read_link(e.path()).ok().and_then(|t| {
            let pod_dir = t.parent()?.parent()?.file_name()?.to_str()?.to_string();
            pod_dir.rsplit('_').next().map(str::to_string)
        });
        return Some(Identity {
            runtime_name: Some(ctr.to_string()),
            pod: Some(pod.to_string()),
            namespace: Some(ns.to_string()),
            pod_uid,
            image: None,
        });
    }
    None
}

/// The pod with this uid, by its `/var/log/pods` directory.
pub fn pod(dir: &Path, uid: &str) -> Option<Identity> {
    let suffix = format!("_{uid}");
    for e in std::fs::read_dir(dir).ok()?.flatten().take(MAX_ENTRIES) {
        let name = e.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(&suffix)) else {
            continue;
        };
        let (ns, pod) = stem.split_once('_')?;
        return Some(Identity {
            pod: Some(pod.to_string()),
            namespace: Some(ns.to_string()),
            pod_uid: Some(uid.to_string()),
            ..Default::default()
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_names_split_into_pod_namespace_and_container() {
        let d = crate::testutil::TempDir::new("kubelet-logs");
        let id = "a".repeat(64);
        let pods = d.path().join("pods/payments_api-7f9c_1234-5678/worker");
        std::fs::create_dir_all(&pods).unwrap();
        let ctrs = d.path().join("containers");
        std::fs::create_dir_all(&ctrs).unwrap();
        std::os::unix::fs::symlink(
            pods.join("0.log"),
            ctrs.join(format!("api-7f9c_payments_worker-{id}.log")),
        )
        .unwrap();
        let i = container(&ctrs, &id).unwrap();
        assert_eq!(i.runtime_name.as_deref(), Some("worker"));
        assert_eq!(i.pod.as_deref(), Some("api-7f9c"));
        assert_eq!(i.namespace.as_deref(), Some("payments"));
        assert_eq!(i.pod_uid.as_deref(), Some("1234-5678"));
        let p = pod(&d.path().join("pods"), "1234-5678").unwrap();
        assert_eq!(p.pod.as_deref(), Some("api-7f9c"));
        assert_eq!(container(&ctrs, &"b".repeat(64)), None);
    }
}
