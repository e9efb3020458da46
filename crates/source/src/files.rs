//! Manifests from files and folders: everything read once, or, reload after reload, only what
//! changed since the last load parsed again and the rest kept.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use portico_model::{
    DEFINED_TWICE, Diagnostic, Listing, Store, manifest_files, parse_text, read_error, read_manifests,
};
use tracing::{debug, info_span};

/// Manifests read and checked, not yet planned.
pub struct Loaded {
    /// The accepted objects.
    pub store: Store,
    /// Every problem met reading and checking them.
    pub diagnostics: Vec<Diagnostic>,
    /// Files read.
    pub files: Vec<PathBuf>,
}

/// Reads and checks every manifest under `paths`, calling `progress(files read, files in all)`
/// after each file.
pub fn load(paths: &[PathBuf], progress: impl FnMut(usize, usize)) -> Loaded {
    let _span = info_span!("load", paths = ?paths).entered();
    let started = Instant::now();
    // Each file's objects are checked and stored before the next file is read, so that only
    // one file's worth of full objects exists at a time.
    let mut store = Store::default();
    let mut admitted = Vec::new();
    let (files, mut diagnostics) =
        read_manifests(paths, |objects| store.admit(objects, &mut admitted), progress);
    store.compact();
    diagnostics.append(&mut admitted);
    debug!(files = files.len(), accepted = store.len(), elapsed = ?started.elapsed(), "loaded and stored");
    Loaded { store, diagnostics, files }
}

/// Loads again and again: a file whose bytes did not change since the last load is not
/// parsed again; its objects and diagnostics are kept. At ten thousand objects this turns a
/// one-second reload into a few milliseconds.
#[derive(Default)]
pub struct Loader {
    store: Option<Store>,
    files: HashMap<PathBuf, LoadedFile>,
    reparsed: usize,
}

/// What the last load of one file gave.
struct LoadedFile {
    stamp: Option<Stamp>,
    hash: u64,
    diagnostics: Vec<Diagnostic>,
}

impl Loader {
    /// Reads what changed under `paths` and returns the store of everything, with every
    /// diagnostic. Objects of a changed file that are now broken keep their last good
    /// version (see [`Store::keep_last_good`]).
    pub fn load(&mut self, paths: &[PathBuf]) -> (&Store, Vec<Diagnostic>) {
        let _span = info_span!("load", paths = ?paths).entered();
        let started = Instant::now();
        let Listing { files: listed, mut diagnostics, unreadable } = manifest_files(paths);
        let mut store = self.store.take().unwrap_or_default();
        let mut present: BTreeSet<PathBuf> = listed.iter().cloned().collect();
        // Files under a path that cannot be read now (out of descriptors, say) are not gone:
        // their last objects stay, as a file that no longer parses keeps its last good ones.
        let kept = |file: &Path, unreadable: &[PathBuf]| unreadable.iter().any(|u| file.starts_with(u));
        present.extend(self.files.keys().filter(|f| kept(f, &unreadable)).cloned());
        let mut stale: BTreeSet<PathBuf> =
            self.files.keys().filter(|f| !present.contains(*f)).cloned().collect();
        let mut changed = Vec::new();
        for file in listed {
            let stamp = stamp(&file);
            if let Some(known) = self.files.get(&file)
                && stamp.is_some_and(|s| settled(&s))
                && known.stamp == stamp
            {
                continue;
            }
            let text = match std::fs::read_to_string(&file) {
                Ok(text) => text,
                Err(err) => {
                    diagnostics.push(read_error(&file, &err));
                    // Gone between the listing and the read; any other failure keeps what the
                    // file held.
                    if err.kind() == std::io::ErrorKind::NotFound {
                        stale.insert(file.clone());
                        self.files.remove(&file);
                    }
                    continue;
                }
            };
            let hash = content_hash(&text);
            match self.files.get_mut(&file) {
                // Touched, not changed.
                Some(known) if known.hash == hash => known.stamp = stamp,
                _ => {
                    stale.insert(file.clone());
                    changed.push((file, text, hash, stamp));
                }
            }
        }
        let last = store.take_files(&stale);
        let mut fresh = Vec::new();
        for (file, text, hash, stamp) in changed {
            let (objects, mut found) = parse_text(&file, &text);
            store.admit(objects, &mut found);
            fresh.extend(found.iter().filter(|d| d.is_error()).cloned());
            self.files.insert(file, LoadedFile { stamp, hash, diagnostics: found });
        }
        self.files.retain(|f, _| present.contains(f));
        let reparsed = stale.len();
        self.reparsed = reparsed;
        // Which of two copies wins depends on the order files are read in: only a full
        // load settles that the way a first load does. Unchanged files give the same objects
        // again, so the changed files' last good objects are all there is to keep.
        if fresh.iter().any(|d| d.message.starts_with(DEFINED_TWICE)) && self.files.len() > reparsed {
            self.files.clear();
            let Loaded { store: mut full, diagnostics, .. } = load(paths, |_, _| {});
            full.keep_last_good(&last, &diagnostics);
            return (self.store.insert(full), diagnostics);
        }
        store.keep_last_good(&last, &fresh);
        store.compact();
        for file in self.files.values() {
            diagnostics.extend(file.diagnostics.iter().cloned());
        }
        debug!(files = self.files.len(), reparsed, accepted = store.len(), elapsed = ?started.elapsed(), "loaded and stored");
        (self.store.insert(store), diagnostics)
    }

    /// Files parsed again (or dropped) by the last load.
    pub fn reparsed(&self) -> usize {
        self.reparsed
    }
}

/// Size and modification time: when both are as before, the file is not read again.
type Stamp = (u64, SystemTime);

fn stamp(file: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(file).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// Whether a stamp can be trusted: file times tick in steps of milliseconds, so two writes
/// of the same length close together can share one; a file changed in the last second is
/// read again whatever its stamp says (as git does with "racy" files).
fn settled(stamp: &Stamp) -> bool {
    stamp.1.elapsed().is_ok_and(|age| age > Duration::from_secs(1))
}

fn content_hash(text: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn service(name: &str, port: u32) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: {port}}}]}}\n"
        )
    }

    fn port(store: &Store, name: &str) -> Option<i32> {
        let key = portico_model::ObjectKey::new("default", name);
        store.services.get(&key).and_then(|s| s.object.spec.as_ref()?.ports.as_ref()?.first().map(|p| p.port))
    }

    #[test]
    fn reloads_parse_only_what_changed_and_keep_the_last_good_version() {
        let dir = tempfile::tempdir().unwrap();
        let paths = vec![dir.path().to_path_buf()];
        let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
        std::fs::write(&a, service("a", 80)).unwrap();
        std::fs::write(&b, service("b", 81)).unwrap();
        let mut loader = Loader::default();
        let (store, diagnostics) = loader.load(&paths);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        assert_eq!((port(store, "a"), port(store, "b")), (Some(80), Some(81)));
        assert_eq!(loader.reparsed(), 2);
        // Same bytes written again: nothing is parsed.
        std::fs::write(&b, service("b", 81)).unwrap();
        loader.load(&paths);
        assert_eq!(loader.reparsed(), 0);
        // One file changes: only it is parsed; the other's objects stay.
        std::fs::write(&a, service("a", 90)).unwrap();
        let (store, _) = loader.load(&paths);
        assert_eq!((port(store, "a"), port(store, "b")), (Some(90), Some(81)));
        assert_eq!(loader.reparsed(), 1);
        // A broken edit keeps the last good version and is reported, reload after reload.
        std::fs::write(&a, service("a", 70000)).unwrap();
        for _ in 0..2 {
            let (store, diagnostics) = loader.load(&paths);
            assert_eq!(port(store, "a"), Some(90));
            assert!(diagnostics.iter().any(|d| d.is_error()), "{diagnostics:?}");
        }
        // A deleted file takes its objects with it.
        std::fs::remove_file(&b).unwrap();
        let (store, _) = loader.load(&paths);
        assert_eq!(port(store, "b"), None);
        // A second, different copy of an object in another file: the first file still wins.
        std::fs::write(&a, service("a", 90)).unwrap();
        std::fs::write(&b, service("a", 91)).unwrap();
        let (store, diagnostics) = loader.load(&paths);
        assert_eq!(port(store, "a"), Some(90));
        assert!(diagnostics.iter().any(|d| d.message.starts_with(DEFINED_TWICE)), "{diagnostics:?}");
    }

    #[test]
    fn a_settled_file_with_its_stamp_unchanged_is_not_even_read() {
        let dir = tempfile::tempdir().unwrap();
        let paths = vec![dir.path().to_path_buf()];
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, service("a", 80)).unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(3600);
        let set_time =
            |time| std::fs::File::options().write(true).open(&a).unwrap().set_modified(time).unwrap();
        set_time(long_ago);
        let mut loader = Loader::default();
        loader.load(&paths);
        // The same length and time, different bytes: only reading would tell.
        std::fs::write(&a, service("a", 90)).unwrap();
        set_time(long_ago);
        let (store, _) = loader.load(&paths);
        assert_eq!((port(store, "a"), loader.reparsed()), (Some(80), 0));
        // The same bytes at a new time: read, found unchanged, not parsed.
        std::fs::write(&a, service("a", 80)).unwrap();
        set_time(long_ago + Duration::from_secs(1));
        let (store, _) = loader.load(&paths);
        assert_eq!((port(store, "a"), loader.reparsed()), (Some(80), 0));
    }

    #[test]
    fn a_file_that_cannot_be_read_keeps_its_last_objects() {
        let dir = tempfile::tempdir().unwrap();
        let paths = vec![dir.path().to_path_buf()];
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, service("a", 80)).unwrap();
        let mut loader = Loader::default();
        loader.load(&paths);
        // Not UTF-8: the read fails, as it would out of descriptors, whoever runs the test.
        std::fs::write(&a, b"kind: \xff\xfe\n").unwrap();
        for _ in 0..2 {
            let (store, diagnostics) = loader.load(&paths);
            assert_eq!(port(store, "a"), Some(80));
            assert!(diagnostics.iter().any(|d| d.message.starts_with("cannot read")), "{diagnostics:?}");
            assert_eq!(loader.reparsed(), 0);
        }
        std::fs::write(&a, service("a", 90)).unwrap();
        let (store, diagnostics) = loader.load(&paths);
        assert_eq!(port(store, "a"), Some(90));
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
    }

    #[test]
    fn a_folder_that_cannot_be_looked_at_keeps_its_files_objects() {
        let dir = tempfile::tempdir().unwrap();
        let (real, link) = (dir.path().join("real"), dir.path().join("manifests"));
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("a.yaml"), service("a", 80)).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let paths = vec![link.clone()];
        let mut loader = Loader::default();
        loader.load(&paths);
        // A link to itself: looking at the folder fails, and not because it is gone.
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&link, &link).unwrap();
        let (store, diagnostics) = loader.load(&paths);
        assert_eq!(port(store, "a"), Some(80));
        assert!(diagnostics.iter().any(|d| d.message.starts_with("cannot read")), "{diagnostics:?}");
        // Gone for real: its files' objects go with it.
        std::fs::remove_file(&link).unwrap();
        let (store, _) = loader.load(&paths);
        assert_eq!(port(store, "a"), None);
    }
}
