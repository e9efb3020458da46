#![allow(clippy::unwrap_used)]
//! The watcher against real files in temporary folders.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portico_source::watch::{Change, WatchError, Watcher};
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

const DEBOUNCE: Duration = Duration::from_millis(100);
/// How long a change may take to arrive on a slow, busy machine.
const PATIENCE: Duration = Duration::from_secs(5);
/// Silence for this long means the watcher has nothing more to say.
const QUIET: Duration = Duration::from_millis(800);

fn start(paths: &[PathBuf]) -> (Watcher, Receiver<Change>) {
    Watcher::start(paths, DEBOUNCE).unwrap()
}

async fn next_change(rx: &mut Receiver<Change>) -> Change {
    timeout(PATIENCE, rx.recv()).await.expect("no change arrived in time").expect("the watcher stopped")
}

/// Every change until the watcher stays quiet for [`QUIET`]; waits up to [`PATIENCE`] for the first.
async fn changes_until_quiet(rx: &mut Receiver<Change>) -> Vec<Change> {
    let mut changes = vec![next_change(rx).await];
    while let Ok(change) = timeout(QUIET, rx.recv()).await {
        changes.push(change.expect("the watcher stopped"));
    }
    changes
}

async fn assert_quiet(rx: &mut Receiver<Change>) {
    if let Ok(change) = timeout(QUIET, rx.recv()).await {
        panic!("expected no change, got {change:?}");
    }
}

/// One operation is one change, or two when it straddles one of notify's ticks; each names
/// exactly `paths`.
fn assert_one_change_naming(changes: &[Change], paths: &[PathBuf]) {
    assert!((1..=2).contains(&changes.len()), "{} changes: {changes:?}", changes.len());
    for change in changes {
        assert_eq!(change.paths, paths, "{changes:?}");
    }
}

fn all_paths(changes: &[Change]) -> BTreeSet<PathBuf> {
    changes.iter().flat_map(|c| c.paths.iter().cloned()).collect()
}

/// Replaces `path` the way editors save: write a temporary file, rename it over.
fn replace_by_rename(path: &Path, content: &str) {
    let temporary = path.with_extension("yaml.tmp");
    fs::write(&temporary, content).unwrap();
    fs::rename(&temporary, path).unwrap();
}

/// A ConfigMap volume as the kubelet lays it out: `..data -> stamp`, `app.yaml -> ..data/app.yaml`.
fn configmap_create(dir: &Path, stamp: &str, content: &str) {
    fs::create_dir(dir.join(stamp)).unwrap();
    fs::write(dir.join(stamp).join("app.yaml"), content).unwrap();
    symlink(stamp, dir.join("..data")).unwrap();
    symlink("..data/app.yaml", dir.join("app.yaml")).unwrap();
}

/// A ConfigMap update as the kubelet does it: new timestamped folder, atomic swap of `..data`
/// (create `..data_tmp`, rename it over), then removal of the old folder.
fn configmap_update(dir: &Path, old_stamp: &str, new_stamp: &str, content: &str) {
    fs::create_dir(dir.join(new_stamp)).unwrap();
    fs::write(dir.join(new_stamp).join("app.yaml"), content).unwrap();
    symlink(new_stamp, dir.join("..data_tmp")).unwrap();
    fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    fs::remove_dir_all(dir.join(old_stamp)).unwrap();
}

const STAMP_1: &str = "..2026_11_26_12_00_00.123";
const STAMP_2: &str = "..2026_11_26_12_05_00.456";
const STAMP_3: &str = "..2026_11_26_12_10_00.789";

#[tokio::test]
async fn editing_a_file_in_place_is_one_change() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    fs::write(&file, "kind: Service\n").unwrap();
    let (_watcher, mut rx) = start(&[dir.path().to_path_buf()]);

    fs::write(&file, "kind: Service\nmetadata: {}\n").unwrap();

    assert_one_change_naming(&changes_until_quiet(&mut rx).await, &[file]);
}

#[tokio::test]
async fn creating_and_deleting_files_are_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (_watcher, mut rx) = start(&[dir.path().to_path_buf()]);
    let file = dir.path().join("new.yaml");

    fs::write(&file, "kind: Service\n").unwrap();
    assert!(all_paths(&changes_until_quiet(&mut rx).await).contains(&file));

    fs::remove_file(&file).unwrap();
    assert!(all_paths(&changes_until_quiet(&mut rx).await).contains(&file));
}

#[tokio::test]
async fn renaming_a_file_names_both_ends() {
    let dir = tempfile::tempdir().unwrap();
    let before = dir.path().join("before.yaml");
    let after = dir.path().join("after.yaml");
    fs::write(&before, "kind: Service\n").unwrap();
    let (_watcher, mut rx) = start(&[dir.path().to_path_buf()]);

    fs::rename(&before, &after).unwrap();

    let paths = all_paths(&changes_until_quiet(&mut rx).await);
    assert!(paths.contains(&before), "{paths:?}");
    assert!(paths.contains(&after), "{paths:?}");
}

#[tokio::test]
async fn a_directly_watched_file_survives_being_replaced_by_rename() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    let sibling = dir.path().join("other.yaml");
    fs::write(&file, "v: 0\n").unwrap();
    fs::write(&sibling, "v: 0\n").unwrap();
    let (_watcher, mut rx) = start(std::slice::from_ref(&file));

    // Twice: the second save only shows up if the first did not lose the watch.
    for round in 1..=2 {
        replace_by_rename(&file, &format!("v: {round}\n"));
        assert_one_change_naming(&changes_until_quiet(&mut rx).await, std::slice::from_ref(&file));
    }
    fs::write(&file, "v: 3\n").unwrap();
    assert_one_change_naming(&changes_until_quiet(&mut rx).await, &[file]);

    // Its neighbours are not watched.
    fs::write(&sibling, "v: 1\n").unwrap();
    replace_by_rename(&sibling, "v: 2\n");
    assert_quiet(&mut rx).await;
}

#[tokio::test]
async fn files_in_new_nested_folders_are_watched() {
    let dir = tempfile::tempdir().unwrap();
    let (_watcher, mut rx) = start(&[dir.path().to_path_buf()]);
    let sub = dir.path().join("team");
    let deeper = sub.join("prod");
    let file = deeper.join("app.yaml");

    fs::create_dir_all(&deeper).unwrap();
    fs::write(&file, "v: 1\n").unwrap();
    let paths = all_paths(&changes_until_quiet(&mut rx).await);
    assert!(paths.contains(&sub), "{paths:?}");

    // An edit deep inside shows the new folders got watches of their own.
    fs::write(&file, "v: 2\n").unwrap();
    assert_one_change_naming(&changes_until_quiet(&mut rx).await, &[file]);
}

#[tokio::test]
async fn a_configmap_swap_in_a_watched_folder_is_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let cm = dir.path().join("cm");
    fs::create_dir(&cm).unwrap();
    configmap_create(&cm, STAMP_1, "v: 1\n");
    let (_watcher, mut rx) = start(std::slice::from_ref(&cm));

    for (old, new, content) in [(STAMP_1, STAMP_2, "v: 2\n"), (STAMP_2, STAMP_3, "v: 3\n")] {
        configmap_update(&cm, old, new, content);
        // The visible name is unchanged; only what it points to is new.
        assert_eq!(fs::read_to_string(cm.join("app.yaml")).unwrap(), content);

        let changes = changes_until_quiet(&mut rx).await;
        assert!(changes.len() <= 2, "one swap, many changes: {changes:?}");
        let paths = all_paths(&changes);
        assert!(paths.contains(&cm.join("..data")), "{paths:?}");
    }
}

#[tokio::test]
async fn a_configmap_file_given_directly_follows_its_swaps() {
    let dir = tempfile::tempdir().unwrap();
    let cm = dir.path().join("cm");
    fs::create_dir(&cm).unwrap();
    configmap_create(&cm, STAMP_1, "v: 1\n");
    let file = cm.join("app.yaml");
    let (_watcher, mut rx) = start(std::slice::from_ref(&file));

    for (old, new, content) in [(STAMP_1, STAMP_2, "v: 2\n"), (STAMP_2, STAMP_3, "v: 3\n")] {
        configmap_update(&cm, old, new, content);
        assert_one_change_naming(&changes_until_quiet(&mut rx).await, std::slice::from_ref(&file));
    }
}

#[tokio::test]
async fn a_symlinked_file_given_directly_sees_edits_of_its_target() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("real")).unwrap();
    fs::create_dir(dir.path().join("links")).unwrap();
    let target = dir.path().join("real/app.yaml");
    fs::write(&target, "v: 1\n").unwrap();
    let link = dir.path().join("links/app.yaml");
    symlink("../real/app.yaml", &link).unwrap();
    let (_watcher, mut rx) = start(std::slice::from_ref(&link));

    fs::write(&target, "v: 2\n").unwrap();

    assert_one_change_naming(&changes_until_quiet(&mut rx).await, &[link]);
}

#[tokio::test]
async fn a_retargeted_folder_symlink_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let releases = dir.path().join("releases");
    for release in ["v1", "v2"] {
        fs::create_dir_all(releases.join(release)).unwrap();
        fs::write(releases.join(release).join("app.yaml"), "v: 0\n").unwrap();
    }
    let current = dir.path().join("current");
    symlink("releases/v1", &current).unwrap();
    let (_watcher, mut rx) = start(std::slice::from_ref(&current));

    fs::write(releases.join("v1/app.yaml"), "v: 1\n").unwrap();
    assert_one_change_naming(&changes_until_quiet(&mut rx).await, &[current.join("app.yaml")]);

    symlink("releases/v2", dir.path().join("current.tmp")).unwrap();
    fs::rename(dir.path().join("current.tmp"), &current).unwrap();
    assert!(all_paths(&changes_until_quiet(&mut rx).await).contains(&current));

    // The new release is watched, the old one no longer matters.
    fs::write(releases.join("v2/app.yaml"), "v: 2\n").unwrap();
    assert_one_change_naming(&changes_until_quiet(&mut rx).await, &[current.join("app.yaml")]);
    fs::write(releases.join("v1/app.yaml"), "v: 3\n").unwrap();
    assert_quiet(&mut rx).await;
}

#[tokio::test]
async fn a_burst_of_writes_is_at_most_a_couple_of_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    fs::write(&file, "v: 0\n").unwrap();
    // A burst shorter than the debounce is at most two changes; a busy machine can stretch these
    // sixty writes past 100 ms.
    let (_watcher, mut rx) = Watcher::start(&[dir.path().to_path_buf()], Duration::from_millis(300)).unwrap();

    for round in 0..50 {
        fs::write(&file, format!("v: {round}\n")).unwrap();
    }
    for extra in 0..10 {
        fs::write(dir.path().join(format!("extra-{extra}.yaml")), "v: 0\n").unwrap();
    }

    let changes = changes_until_quiet(&mut rx).await;
    assert!(changes.len() <= 2, "{} changes: {changes:?}", changes.len());
    let paths = all_paths(&changes);
    assert!(paths.contains(&file), "{paths:?}");
    assert_eq!(paths.len(), 11, "{paths:?}");
}

#[tokio::test]
async fn nothing_happening_and_reading_are_no_changes() {
    let dir = tempfile::tempdir().unwrap();
    let cm = dir.path().join("cm");
    fs::create_dir(&cm).unwrap();
    configmap_create(&cm, STAMP_1, "v: 1\n");
    fs::write(dir.path().join("plain.yaml"), "v: 1\n").unwrap();
    let (_watcher, mut rx) = start(&[dir.path().to_path_buf(), cm.join("app.yaml")]);

    assert_quiet(&mut rx).await;

    // Re-reading after a change must not look like the next change.
    for entry in fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            fs::read_to_string(&path).unwrap();
        }
    }
    fs::read_to_string(cm.join("app.yaml")).unwrap();
    fs::read_dir(&cm).unwrap().for_each(drop);
    assert_quiet(&mut rx).await;
}

#[tokio::test]
async fn dropping_the_watcher_ends_the_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let (watcher, mut rx) = start(&[dir.path().to_path_buf()]);

    drop(watcher);

    let end = timeout(PATIENCE, rx.recv()).await.expect("receiver still open");
    assert_eq!(end, None);
}

#[test]
fn a_missing_path_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");

    let error = Watcher::start(&[dir.path().to_path_buf(), missing.clone()], DEBOUNCE).unwrap_err();

    assert!(matches!(&error, WatchError::NotFound { path } if *path == missing), "{error:?}");
    assert!(error.to_string().contains(&missing.display().to_string()), "{error}");
}

#[test]
fn a_dangling_symlink_is_a_missing_path() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("app.yaml");
    symlink("..data/app.yaml", &link).unwrap();

    let error = Watcher::start(std::slice::from_ref(&link), DEBOUNCE).unwrap_err();

    assert!(matches!(&error, WatchError::NotFound { path } if *path == link), "{error:?}");
}

#[test]
fn no_paths_is_an_error() {
    let error = Watcher::start(&[], DEBOUNCE).unwrap_err();
    assert!(matches!(error, WatchError::NoPaths), "{error:?}");
}

#[tokio::test]
async fn a_continuous_stream_of_writes_still_gives_changes_every_second_or_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    fs::write(&file, "v: 0\n").unwrap();
    let (_watcher, mut rx) = Watcher::start(&[dir.path().to_path_buf()], Duration::from_millis(200)).unwrap();
    let writing = std::thread::spawn({
        let file = file.clone();
        move || {
            for i in 0..150 {
                replace_by_rename(&file, &format!("v: {i}\n"));
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    // Three seconds of writes every 20 ms: changes come while they go on.
    let start = std::time::Instant::now();
    let mut during = 0;
    while start.elapsed() < Duration::from_millis(2800) {
        if let Ok(Some(_)) = timeout(Duration::from_millis(100), rx.recv()).await {
            during += 1;
        }
    }
    writing.join().unwrap();
    assert!(during >= 2, "{during} changes while the file was written every 20 ms for 3 s");
}
