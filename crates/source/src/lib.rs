//! Sources of objects: manifest files and folders, loaded and watched (the Kubernetes API
//! joins later).
#![forbid(unsafe_code)]

pub mod files;
pub mod watch;

pub use files::{Loaded, Loader};
pub use watch::{Change, WatchError, Watcher};
