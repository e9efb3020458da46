//! Tests of kernel paths: they run as root, in network namespaces they make, with system
//! tools (`ip`, `nft`, `conntrack`), and say that they skip where they cannot.

use std::path::Path;

/// Whether this process runs as root (effective user 0) and every program of `tools` is
/// installed; when not, prints `skipping: needs root and …` for the test's output.
pub fn able(tools: &[&str]) -> bool {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    });
    let missing: Vec<&str> = tools.iter().copied().filter(|tool| !installed(tool)).collect();
    if root && missing.is_empty() {
        return true;
    }
    println!(
        "skipping: needs root and {} (missing: {})",
        tools.join(", "),
        if root { missing.join(", ") } else { "root".to_owned() }
    );
    false
}

/// Whether `program` is on `PATH` or in the system's sbin folders.
fn installed(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(Into::into))
        .any(|dir| Path::new(&dir).join(program).is_file())
}
