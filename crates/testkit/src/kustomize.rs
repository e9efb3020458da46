//! `kubectl kustomize`, for the tests of `deploy/`: the objects a folder renders to, or nothing
//! (saying so) where kubectl is missing.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The objects `kubectl kustomize DIR` renders, or `None`, after saying that the test skips,
/// without kubectl.
pub fn rendered(dir: &Path) -> Option<Vec<Value>> {
    let out = match Command::new("kubectl").arg("kustomize").arg(dir).output() {
        Ok(out) => out,
        Err(_) => {
            println!("skipping: needs kubectl (Debian: kubernetes-client)");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let documents = text.split("\n---\n");
    Some(
        documents
            .map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap_or_else(|e| panic!("{e}: {doc}")))
            .collect(),
    )
}
