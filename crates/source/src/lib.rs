//! Sources of objects: a watched folder of manifests.
