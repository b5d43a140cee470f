//! Podman: containers/storage's container list
//! `<graphroot>/<driver>-containers/containers.json` (and
//! `volatile-containers.json` beside it), as containers/storage
//! `containers.go` writes it: `id`, `names`, `metadata`, where `metadata`
//! is libpod's `RuntimeContainerMetadata` as a JSON string (`image-name`,
//! `name`).
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Identity, read_json};

#[derive(Deserialize)]
struct Entry {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    metadata: String,
}

#[derive(Deserialize, Default)]
struct Meta {
    #[serde(rename = "image-name", default)]
    image_name: String,
    #[serde(default)]
    name: String,
}

/// The container lists of every storage driver below the graphroot.
pub fn lists(graphroot: &Path) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(graphroot) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten().take(256) {
        let n = e.file_name();
        if n.as_encoded_bytes().ends_with(b"-containers") {
            for f in ["containers.json", "volatile-containers.json"] {
                out.push(e.path().join(f));
            }
        }
    }
    out.sort();
    out
}

pub fn identity(list: &Path, id: &str) -> Option<Identity> {
    let entries = read_json::<Vec<Entry>>(list)?;
    let e = entries.into_iter().find(|e| e.id == id)?;
    let meta: Meta = serde_json::from_str(&e.metadata).unwrap_or_default();
    let name = e
        .names
        .first()
        .cloned()
        .or(Some(meta.name).filter(|n| !n.is_empty()));
    Some(Identity {
        runtime_name: name,
        image: Some(meta.image_name).filter(|n| !n.is_empty()),
        ..Default::default()
    })
}
