//! `portico`: every way to expose Kubernetes workloads, in one binary.
#![forbid(unsafe_code)]

/// jemalloc rather than the system allocator: a reload builds a new store and Plan beside
/// the old ones, and glibc keeps the freed pages, so RSS grew by a fifth with each reload
/// of ten thousand Services; jemalloc returns them (settings in `.cargo/config.toml`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    portico::cli::main()
}
