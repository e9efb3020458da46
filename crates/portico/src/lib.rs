//! Portico's application: the command line, and `run`'s serve loop, which feeds every new
//! Plan to the data planes and drains them on shutdown. A library, so that tests run the
//! whole serve loop in process; `main.rs` only picks the allocator and calls [`cli::main`].
#![forbid(unsafe_code)]

pub mod admin;
pub mod bounds;
pub mod cli;
pub mod lab;
pub mod local_pods;
pub mod pipeline;
pub mod probe;
pub mod report;
pub mod run;
pub mod state;
