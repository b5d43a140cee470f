//! OCI bundle `config.json` annotations: containerd's CRI plugin and CRI-O
//! write who a container is into the runtime spec they hand runc.
//!
//! - containerd: the task bundle `<state>/io.containerd.runtime.v2.task/
//!   <namespace>/<id>/config.json` (containerd `core/runtime/v2/bundle.go`),
//!   annotations from `pkg/cri/annotations/annotations.go`
//!   (`DefaultCRIAnnotations`: sandbox-name/-namespace/-uid for every
//!   container, container-name and image-name for containers only).
//! - CRI-O: `<graphroot>/overlay-containers/<id>/userdata/config.json` and
//!   its copy under the runroot; `server/container_create.go` adds
//!   `io.kubernetes.cri-o.Labels` (the kubelet's labels as one JSON
//!   string), `io.kubernetes.cri-o.ImageName` and `…ContainerType`
//!   (annotation names: `pkg/annotations` as vendored from podman). The
//!   kubelet's label keys are `k8s.io/kubelet/pkg/types/labels.go`.
use std::{collections::HashMap, path::Path};

use serde::Deserialize;

use super::{Identity, read_json};

/// containerd's CRI annotations (pkg/cri/annotations/annotations.go).
const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const CRI_SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
const CRI_SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
const CRI_SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
const CRI_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
const CRI_IMAGE_NAME: &str = "io.kubernetes.cri.image-name";

/// CRI-O's annotations.
const CRIO_LABELS: &str = "io.kubernetes.cri-o.Labels";
const CRIO_IMAGE_NAME: &str = "io.kubernetes.cri-o.ImageName";

/// The kubelet's labels (k8s.io/kubelet/pkg/types/labels.go).
pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// What the kubelet names the sandbox (infra) container
/// (`PodInfraContainerName`): not a container of the pod's spec.
pub const POD_INFRA: &str = "POD";

#[derive(Deserialize, Default)]
struct Spec {
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// containerd's task bundle for `id`, in any namespace (`k8s.io` for the
/// CRI, `moby` for Docker, `default` for ctr/nerdctl).
pub fn containerd(state: &Path, id: &str) -> Option<(Identity, std::path::PathBuf)> {
    let tasks = state.join("io.containerd.runtime.v2.task");
    for ns in std::fs::read_dir(&tasks).ok()?.flatten().take(64) {
        let file = ns.path().join(id).join("config.json");
        if let Some(spec) = read_json::<Spec>(&file) {
            return Some((from_cri(&spec.annotations), file));
        }
    }
    None
}

fn from_cri(a: &HashMap<String, String>) -> Identity {
    let get = |k: &str| a.get(k).cloned().filter(|v| !v.is_empty());
    let sandbox = a.get(CRI_CONTAINER_TYPE).map(String::as_str) == Some("sandbox");
    Identity {
        // A sandbox's own cgroup (the pause container) is the pod's.
        runtime_name: get(CRI_CONTAINER_NAME).filter(|_| !sandbox),
        pod: get(CRI_SANDBOX_NAME),
        namespace: get(CRI_SANDBOX_NAMESPACE),
        pod_uid: get(CRI_SANDBOX_UID),
        image: get(CRI_IMAGE_NAME).filter(|_| !sandbox),
    }
}

/// CRI-O's copy of the container's spec.
pub fn crio(file: &Path) -> Option<Identity> {
    let spec = read_json::<Spec>(file)?;
    let a = &spec.annotations;
    // The kubelet's labels, as CRI-O stores them (one JSON string); a
    // label also set as an annotation of its own wins neither way: they
    // come from the same CRI request.
    let labels: HashMap<String, String> = a
        .get(CRIO_LABELS)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let get = |k: &str| {
        labels
            .get(k)
            .or_else(|| a.get(k))
            .cloned()
            .filter(|v| !v.is_empty())
    };
    Some(Identity {
        runtime_name: get(CONTAINER_NAME).filter(|n| n != POD_INFRA),
        pod: get(POD_NAME),
        namespace: get(POD_NAMESPACE),
        pod_uid: get(POD_UID),
        image: a.get(CRIO_IMAGE_NAME).cloned().filter(|v| !v.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_sandbox_is_the_pod_not_a_container() {
        let mut a = HashMap::new();
        a.insert(CRI_CONTAINER_TYPE.into(), "sandbox".into());
        a.insert(CRI_SANDBOX_NAME.into(), "api-7f9c".into());
        a.insert(CRI_SANDBOX_NAMESPACE.into(), "payments".into());
        a.insert(CRI_CONTAINER_NAME.into(), "POD".into());
        let i = from_cri(&a);
        assert_eq!(i.runtime_name, None);
        assert_eq!(i.pod.as_deref(), Some("api-7f9c"));
        assert_eq!(i.namespace.as_deref(), Some("payments"));
    }
}
