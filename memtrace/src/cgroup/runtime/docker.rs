//! Docker: `<data-root>/containers/<id>/config.v2.json`, the container as
//! moby's `container.Container` marshals it (moby `container/container.go`:
//! `configFileName = "config.v2.json"`, `ToDisk`): `Name` ("/web-1"),
//! `Config.Image`, `Config.Labels`. Under cri-dockerd the labels are the
//! kubelet's (`io.kubernetes.pod.name`, …: cri-dockerd `core/naming.go`
//! also names the container `k8s_<ctr>_<pod>_<ns>_<uid>_<attempt>`).
use std::{collections::HashMap, path::Path};

use serde::Deserialize;

use super::{
    Identity,
    oci::{CONTAINER_NAME, POD_INFRA, POD_NAME, POD_NAMESPACE, POD_UID},
    read_json,
};

#[derive(Deserialize)]
struct V2 {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Config", default)]
    config: Option<Config>,
}

#[derive(Deserialize)]
struct Config {
    #[serde(rename = "Image", default)]
    image: String,
    /// null when the container has none.
    #[serde(rename = "Labels", default)]
    labels: Option<HashMap<String, String>>,
}

pub fn identity(file: &Path) -> Option<Identity> {
    let v2 = read_json::<V2>(file)?;
    let labels = v2
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    let label = |k: &str| labels.get(k).cloned().filter(|v| !v.is_empty());
    let image = v2
        .config
        .as_ref()
        .map(|c| c.image.clone())
        .filter(|v| !v.is_empty());
    let pod = label(POD_NAME);
    let name = if pod.is_some() {
        // cri-dockerd: the Kubernetes container name, not k8s_…
        label(CONTAINER_NAME).filter(|n| n != POD_INFRA)
    } else {
        // Docker stores the name with a leading "/" (its name registry
        // is a tree).
        Some(v2.name.trim_start_matches('/').to_string()).filter(|n| !n.is_empty())
    };
    Some(Identity {
        runtime_name: name,
        pod,
        namespace: label(POD_NAMESPACE),
        pod_uid: label(POD_UID),
        image,
    })
}
