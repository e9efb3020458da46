//! The userspace L4 service proxy.
