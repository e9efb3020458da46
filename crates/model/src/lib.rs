//! The Kubernetes objects Portico understands: loading manifests from files, checking each
//! object the way the API server would, and reporting every problem as a [`Diagnostic`] tied
//! to its file, document, object and field.
#![forbid(unsafe_code)]

pub mod authz;
pub mod diagnostic;
pub mod load;
pub mod locate;
pub mod metallb;
pub mod names;
pub mod object;
pub mod pod;
pub mod selector;
pub mod slice;
pub mod store;
pub mod validate;

pub use diagnostic::{Diagnostic, ObjectKey, ObjectRef, Origin, Severity};
pub use load::{Listing, Loaded, load_paths, manifest_files, parse_text, read_error, read_manifests};
pub use object::{Object, ObjectKind, Workload};
pub use pod::{ContainerRecord, PodRecord};
pub use slice::{EndpointRecord, EndpointSliceRecord, SliceHints, SlicePort};
pub use store::{DEFINED_TWICE, Store, Stored};
