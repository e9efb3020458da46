//! Sources of objects: manifest files and folders, loaded and watched, and the Kubernetes API
//! server.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod files;
pub mod watch;

pub use files::{Loaded, Loader};
pub use watch::{Change, WatchError, Watcher};
