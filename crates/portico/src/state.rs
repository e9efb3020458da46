//! The state folder: allocations persisted between runs, written atomically.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use portico_plan::Allocations;

const FILE: &str = "allocations.json";

/// Reads the allocations saved in `dir`; an absent file means none yet.
pub fn load(dir: &Path) -> Result<Allocations> {
    let path = dir.join(FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a valid allocations file", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Allocations::default()),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// Saves `allocations` in `dir`: written to a temporary file, synced, then renamed over the
/// old one, so a crash leaves either the old or the new state, never half of one.
pub fn save(dir: &Path, allocations: &Allocations) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating state folder {}", dir.display()))?;
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).with_context(|| format!("writing in {}", dir.display()))?;
    serde_json::to_writer_pretty(&mut tmp, allocations)?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(dir.join(FILE)).with_context(|| format!("replacing {}", dir.join(FILE).display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_absent_file() -> Result<()> {
        let dir = tempfile::tempdir()?;
        assert_eq!(load(dir.path())?, Allocations::default());
        let mut a = Allocations::default();
        a.cluster_ips.insert("default/web".into(), vec!["127.96.0.10".parse()?]);
        a.node_ports.entry("default/web".into()).or_default().insert("http".into(), 30080);
        save(dir.path(), &a)?;
        assert_eq!(load(dir.path())?, a);
        fs::write(dir.path().join(FILE), "{not json")?;
        assert!(load(dir.path()).is_err());
        Ok(())
    }
}
