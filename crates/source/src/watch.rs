//! Noticing changes to manifest files and folders, so that the caller re-reads and re-plans.
//!
//! A [`Change`] only says "re-read": the receiver re-reads everything it was given, so what
//! matters is that no change goes unnoticed, not the exact list of paths.
//!
//! Symlinks are followed on purpose. A Kubernetes ConfigMap mount keeps its visible names
//! (`app.yaml -> ..data/app.yaml`) and swaps the `..data` link underneath them, and deploy
//! tools retarget a `current -> releases/N` link; in both cases the content changes while no
//! visible file does. So for every given path the watcher records each symlink on the way to
//! the content, watches the folders holding those links as well as the content's own folder,
//! and after a link changes follows it again and watches where it leads now.
//!
//! Folders are watched through their parent too: an editor or a deploy that replaces a file or
//! a folder by renaming a new one over it leaves the kernel's watch on the old one, and the
//! parent is where the replacement shows up.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{Event, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// Linux's own limit on symlinks followed while resolving one path (`MAXSYMLINKS`).
const MAX_SYMLINK_HOPS: usize = 40;

/// The longest a change waits under a stream of changes that never goes quiet: a file
/// rewritten every few milliseconds is still applied about once a second.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// A pending [`Change`] already means "re-read everything", so one slot is enough.
const CHANNEL_CAPACITY: usize = 1;

/// Watches manifest files and folders; each batch of changes is one [`Change`].
///
/// Dropping it stops watching; the receiver then ends.
#[derive(Debug)]
pub struct Watcher {
    // The batching thread holds only a `Weak`, so dropping this drops notify's watcher.
    _state: Arc<Mutex<State>>,
}

/// One batch of changes: the manifests need re-reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Paths the batch touched, named from the paths given to [`Watcher::start`], deduplicated
    /// and sorted; empty when only "something changed" is known (a rescan or a watcher error).
    /// Batches that arrive while a Change waits unreceived are folded into it, so treat this as a
    /// hint and always re-read everything.
    pub paths: Vec<PathBuf>,
}

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// No path was given.
    #[error("no manifest paths to watch")]
    NoPaths,
    /// A given path does not exist (or is a symlink to nothing).
    #[error("{} does not exist", .path.display())]
    NotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// A given path exists but could not be examined.
    #[error("cannot examine {}: {source}", .path.display())]
    Inspect {
        /// The path as given.
        path: PathBuf,
        /// What the file system said.
        source: io::Error,
    },
    /// notify could not watch a folder.
    #[error("cannot watch {}: {source}", .path.display())]
    Watch {
        /// The folder, with symlinks resolved.
        path: PathBuf,
        /// What notify said.
        source: notify::Error,
    },
    /// notify could not start at all.
    #[error("cannot start watching files: {source}")]
    Start {
        /// What notify said.
        source: notify::Error,
    },
}

impl Watcher {
    /// Starts watching `paths` (files or folders; folders recursively); changes arrive on the
    /// returned receiver.
    ///
    /// Filesystem events are gathered into one [`Change`] until `debounce` passes without a new
    /// one, so one editor save or one ConfigMap swap is one Change; a stream of events that never
    /// pauses that long still gives one at least every second.
    pub fn start(
        paths: &[PathBuf],
        debounce: Duration,
    ) -> Result<(Watcher, mpsc::Receiver<Change>), WatchError> {
        if paths.is_empty() {
            return Err(WatchError::NoPaths);
        }
        let targets = paths.iter().map(|path| Target::new(path)).collect::<Result<Vec<_>, _>>()?;
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (events, received) = std::sync::mpsc::channel();
        // A ConfigMap's `..data` links to a sibling folder that is watched anyway; following
        // links would register that folder twice under two names.
        let config = notify::Config::default().with_follow_symlinks(false);
        let handler = move |event: notify::Result<Event>| {
            let _ = events.send(event);
        };
        let watcher =
            RecommendedWatcher::new(handler, config).map_err(|source| WatchError::Start { source })?;
        let state = Arc::new(Mutex::new(State { watcher, targets, watched: BTreeMap::new() }));
        let errors = lock(&state).sync(&BTreeSet::new());
        if let Some(error) = errors.into_iter().next() {
            return Err(error);
        }
        let weak = Arc::downgrade(&state);
        std::thread::Builder::new()
            .name("manifest-watch".into())
            .spawn(move || batches(&received, &weak, &tx, debounce))
            .map_err(|error| WatchError::Start { source: notify::Error::io(error) })?;
        tracing::info!(?paths, ?debounce, "watching manifests for changes");
        Ok((Watcher { _state: state }, rx))
    }
}

/// Gathers notify's events into batches, each one [`Change`]: a batch ends once `debounce`
/// passes without an event, or [`MAX_WAIT`] after its first. Ends when notify's watcher goes
/// (with the [`Watcher`]), and then the receiver of changes ends too.
fn batches(
    events: &std::sync::mpsc::Receiver<notify::Result<Event>>,
    state: &Weak<Mutex<State>>,
    tx: &mpsc::Sender<Change>,
    debounce: Duration,
) {
    while let Ok(first) = events.recv() {
        let started = Instant::now();
        let mut batch = vec![first];
        loop {
            let wait = debounce.min(MAX_WAIT.saturating_sub(started.elapsed()));
            match events.recv_timeout(wait) {
                Ok(event) => batch.push(event),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let Some(state) = state.upgrade() else { return };
        let change = lock(&state).on_batch(batch);
        drop(state);
        if let Some(change) = change {
            deliver(tx, change);
        }
    }
}

/// Sends without blocking notify's thread.
fn deliver(tx: &mpsc::Sender<Change>, change: Change) {
    tracing::debug!(paths = ?change.paths, "manifests changed");
    match tx.try_send(change) {
        Ok(()) => {}
        // The Change still waiting makes the receiver re-read everything, this batch included.
        Err(TrySendError::Full(_)) => tracing::debug!("a change is already pending; folded into it"),
        Err(TrySendError::Closed(_)) => tracing::debug!("nobody receives changes any more"),
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // A panic elsewhere leaves the bookkeeping usable; watching on beats going silent.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug)]
struct State {
    watcher: RecommendedWatcher,
    targets: Vec<Target>,
    /// What notify has been asked to watch, so that a refresh changes only the difference.
    watched: BTreeMap<PathBuf, RecursiveMode>,
}

impl State {
    fn on_batch(&mut self, batch: Vec<notify::Result<Event>>) -> Option<Change> {
        let everything = |state: &Self| vec![true; state.targets.len()];
        let mut events = Vec::with_capacity(batch.len());
        let mut failed = false;
        for result in batch {
            match result {
                Ok(event) => events.push(event),
                Err(error) => {
                    tracing::warn!(%error, paths = ?error.paths, "watching manifests failed; re-reading them all");
                    failed = true;
                }
            }
        }
        // notify may have missed events or lost watches, or the kernel dropped events (maybe the
        // creation of folders nobody watches yet): watch everything afresh.
        if failed || events.iter().any(Event::need_rescan) {
            self.refresh(&everything(self));
            return Some(Change { paths: Vec::new() });
        }

        let mut paths = BTreeSet::new();
        let mut retargeted = vec![false; self.targets.len()];
        for event in events.iter().filter(|event| changes_content(&event.kind)) {
            for path in &event.paths {
                for (target, retargeted) in self.targets.iter().zip(&mut retargeted) {
                    if let Some((shown, on_the_way)) = target.locate(path) {
                        paths.insert(shown);
                        *retargeted |= on_the_way;
                    }
                }
            }
        }
        if retargeted.contains(&true) {
            self.refresh(&retargeted);
        }
        (!paths.is_empty()).then(|| Change { paths: paths.into_iter().collect() })
    }

    /// Follows the chosen targets' symlinks again and watches wherever they lead now.
    fn refresh(&mut self, chosen: &[bool]) {
        let mut renew = BTreeSet::new();
        for (target, _) in self.targets.iter_mut().zip(chosen).filter(|(_, c)| **c) {
            match resolve(&target.given) {
                Ok(resolved) => target.resolved = resolved,
                // Gone for a moment, e.g. deleted before being written anew: the folders on
                // the way stay watched, so its return is noticed and followed then.
                Err(error) => {
                    tracing::debug!(path = %target.given.display(), %error, "cannot follow");
                }
            }
            renew.extend(target.folders().into_keys());
        }
        for error in self.sync(&renew) {
            tracing::warn!(%error, "a manifest change may go unnoticed");
        }
    }

    /// Brings notify's watches in line with the targets; folders in `renew` are registered
    /// again even if already watched, since a replaced folder keeps its path but not its watch.
    fn sync(&mut self, renew: &BTreeSet<PathBuf>) -> Vec<WatchError> {
        let wanted = self.wanted();
        let stale: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|(folder, mode)| wanted.get(*folder) != Some(*mode))
            .map(|(folder, _)| folder.clone())
            .collect();
        for folder in stale {
            self.watched.remove(&folder);
            // Fails when the folder is gone, and then notify has dropped its watch already.
            if let Err(error) = self.watcher.unwatch(&folder) {
                tracing::debug!(folder = %folder.display(), %error, "unwatch");
            }
        }
        let mut errors = Vec::new();
        for (folder, mode) in wanted {
            if self.watched.contains_key(&folder) && !renew.contains(&folder) {
                continue;
            }
            match self.watcher.watch(&folder, mode) {
                Ok(()) => {
                    self.watched.insert(folder, mode);
                }
                Err(source) => errors.push(WatchError::Watch { path: folder, source }),
            }
        }
        errors
    }

    /// Every folder to watch. A folder inside a recursively watched one is left out: notify
    /// keeps one watch per folder, and a second registration would change or remove it.
    fn wanted(&self) -> BTreeMap<PathBuf, RecursiveMode> {
        let mut all = BTreeMap::new();
        for target in &self.targets {
            for (folder, mode) in target.folders() {
                let entry = all.entry(folder).or_insert(mode);
                if mode == RecursiveMode::Recursive {
                    *entry = mode;
                }
            }
        }
        let trees: Vec<PathBuf> = all
            .iter()
            .filter(|(_, mode)| **mode == RecursiveMode::Recursive)
            .map(|(folder, _)| folder.clone())
            .collect();
        all.retain(|folder, _| !trees.iter().any(|tree| folder != tree && folder.starts_with(tree)));
        all
    }
}

/// One path given to [`Watcher::start`].
#[derive(Debug)]
struct Target {
    given: PathBuf,
    is_folder: bool,
    resolved: Resolved,
}

impl Target {
    fn new(given: &Path) -> Result<Target, WatchError> {
        let fail = |source: io::Error| match source.kind() {
            io::ErrorKind::NotFound => WatchError::NotFound { path: given.to_path_buf() },
            _ => WatchError::Inspect { path: given.to_path_buf(), source },
        };
        let resolved = resolve(given).map_err(fail)?;
        let is_folder = std::fs::metadata(&resolved.real).map_err(fail)?.is_dir();
        Ok(Target { given: given.to_path_buf(), is_folder, resolved })
    }

    /// The folders whose events matter: those holding the names on the way (so a rename over
    /// any of them is seen), plus the content itself for a folder.
    fn folders(&self) -> BTreeMap<PathBuf, RecursiveMode> {
        let mut folders: BTreeMap<PathBuf, RecursiveMode> = self
            .resolved
            .names
            .iter()
            .filter_map(|name| name.parent())
            .map(|parent| (parent.to_path_buf(), RecursiveMode::NonRecursive))
            .collect();
        if self.is_folder {
            folders.insert(self.resolved.real.clone(), RecursiveMode::Recursive);
        }
        folders
    }

    /// How an event at `path` concerns this target: the path to report, named from the given
    /// path, and whether it is one of the names on the way (so the target must be followed again).
    fn locate(&self, path: &Path) -> Option<(PathBuf, bool)> {
        if self.resolved.names.contains(path) {
            return Some((self.given.clone(), true));
        }
        if !self.is_folder {
            return None;
        }
        let inside = path.strip_prefix(&self.resolved.real).ok()?;
        Some((self.given.join(inside), false))
    }
}

/// Where a given path leads.
#[derive(Debug)]
struct Resolved {
    /// Every name on the way from the given path to its content, without symlinks in their
    /// folders: each symlink followed, and the content itself.
    names: BTreeSet<PathBuf>,
    /// The content's own name.
    real: PathBuf,
}

/// Resolves `path` one component at a time, as the kernel does, noting each symlink followed.
fn resolve(path: &Path) -> io::Result<Resolved> {
    let mut names = BTreeSet::new();
    let mut real = PathBuf::new();
    let mut rest = std::path::absolute(path)?;
    let mut hops = 0;
    loop {
        let mut components = rest.components();
        let Some(first) = components.next() else {
            break;
        };
        let mut next = components.as_path().to_path_buf();
        match first {
            Component::Prefix(_) | Component::RootDir => real.push(first),
            Component::CurDir => {}
            // `real` has no symlinks left, so going up by name is going up for real.
            Component::ParentDir => {
                real.pop();
            }
            Component::Normal(name) => {
                let candidate = real.join(name);
                match std::fs::read_link(&candidate) {
                    Ok(target) => {
                        hops += 1;
                        if hops > MAX_SYMLINK_HOPS {
                            return Err(io::Error::other(format!(
                                "more than {MAX_SYMLINK_HOPS} symlinks on the way"
                            )));
                        }
                        names.insert(candidate);
                        // A relative target continues from the link's folder, which is `real`.
                        next = target.join(next);
                    }
                    Err(error) if error.kind() == io::ErrorKind::InvalidInput => real = candidate,
                    Err(error) => return Err(error),
                }
            }
        }
        rest = next;
    }
    names.insert(real.clone());
    Ok(Resolved { names, real })
}

/// Opening and reading do not change anything, and counting them would make every re-read of
/// the manifests trigger the next one.
fn changes_content(kind: &EventKind) -> bool {
    !matches!(kind, EventKind::Access(access) if *access != AccessKind::Close(AccessMode::Write))
}
