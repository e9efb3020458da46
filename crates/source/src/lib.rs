//! Sources of objects: a watched folder of manifests (the Kubernetes API joins later).
#![forbid(unsafe_code)]

pub mod watch;

pub use watch::{Change, WatchError, Watcher};
