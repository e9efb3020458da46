//! The shape of the source tree, checked: inside every crate, files import one way (no file
//! imports, directly or through other files of its crate, a file that imports it back), and
//! ARCHITECTURE.md names every module of every crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path inside its crate: `[]` for the root, `["h1", "exchange"]`.
type Module = Vec<String>;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Each crate's directory name and its modules, with their source text.
fn crates() -> BTreeMap<String, BTreeMap<Module, String>> {
    let mut crates = BTreeMap::new();
    for entry in std::fs::read_dir(workspace().join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let src = dir.join("src");
        if !src.is_dir() {
            continue;
        }
        let mut modules = BTreeMap::new();
        collect(&src, &src, &mut modules);
        crates.insert(dir.file_name().unwrap().to_string_lossy().into_owned(), modules);
    }
    crates
}

fn collect(src: &Path, dir: &Path, modules: &mut BTreeMap<Module, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(src, &path, modules);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut module: Module = relative.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            if matches!(module.last().map(String::as_str), Some("mod")) {
                module.pop();
            }
            if module == ["lib"] || module == ["main"] {
                module.clear();
            }
            modules.insert(module, code_of(&std::fs::read_to_string(&path).unwrap()));
        }
    }
}

/// The text that imports: without comments, and without the unit tests at the end.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    text.lines().map(|line| line.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Every `prefix` path in `code`: the identifiers after it, joined by `::`, and, when a `{`
/// group follows, the first identifier of each path in the group.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let first: String =
                    item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !first.is_empty() {
                    out.push(vec![first]);
                }
            }
            continue;
        }
        let mut segments = Vec::new();
        let mut rest = rest;
        loop {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if name.is_empty() {
                break;
            }
            rest = &rest[name.len()..];
            segments.push(name);
            match rest.strip_prefix("::") {
                Some(next) if !next.starts_with('{') => rest = next,
                _ => break,
            }
        }
        if !segments.is_empty() {
            out.push(segments);
        }
    }
    out
}

/// The module `path` (from `base`) names: the longest prefix that is a module, else `base`
/// itself, whose item it names.
fn resolve(base: &[String], path: &[String], modules: &BTreeMap<Module, String>) -> Module {
    for len in (1..=path.len()).rev() {
        let candidate: Module = base.iter().chain(&path[..len]).cloned().collect();
        if modules.contains_key(&candidate) {
            return candidate;
        }
    }
    base.to_vec()
}

/// What each module imports from the others of its crate. Re-exports (`pub use`) and module
/// declarations do not count: a root that only declares and re-exports imports nothing.
fn imports(modules: &BTreeMap<Module, String>) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut edges = BTreeMap::new();
    for (module, code) in modules {
        let code: String = code
            .split_inclusive(';')
            .filter(|statement| {
                let s = statement.trim_start();
                !(s.starts_with("pub use") || s.starts_with("pub(crate) use") || s.contains("mod "))
            })
            .collect();
        let mut to = BTreeSet::new();
        for path in paths_after(&code, "crate::") {
            to.insert(resolve(&[], &path, modules));
        }
        if let Some((_, parent)) = module.split_last() {
            for path in paths_after(&code, "super::") {
                to.insert(resolve(parent, &path, modules));
            }
        }
        // Bare references to its own child modules (`exchange::serve`).
        for child in modules.keys().filter(|c| c.len() == module.len() + 1 && c.starts_with(module)) {
            let name = format!("{}::", child[module.len()]);
            if !paths_after(&code, &name).is_empty() || code.contains(&format!("{{{name}")) {
                to.insert(child.clone());
            }
        }
        to.remove(module);
        edges.insert(module.clone(), to);
    }
    edges
}

/// The groups of modules that import each other, directly or through others (Tarjan).
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<BTreeSet<Module>> {
    struct Search<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        found: Vec<BTreeSet<Module>>,
    }
    impl<'a> Search<'a> {
        fn visit(&mut self, v: &'a Module) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            for w in &self.edges[v] {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut group = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    group.insert(w.clone());
                    if w == v {
                        break;
                    }
                }
                if group.len() > 1 {
                    self.found.push(group);
                }
            }
        }
    }
    let mut search =
        Search { edges, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), found: Vec::new() };
    for v in edges.keys() {
        if !search.index.contains_key(v) {
            search.visit(v);
        }
    }
    search.found
}

fn named(module: &Module) -> String {
    if module.is_empty() { "lib".to_owned() } else { module.join("::") }
}

#[test]
fn files_of_a_crate_import_one_way() {
    let mut found = Vec::new();
    for (name, modules) in crates() {
        for group in cycles(&imports(&modules)) {
            found.push((name.clone(), group.iter().map(named).collect::<Vec<_>>()));
        }
    }
    assert!(found.is_empty(), "files that import each other (crate, modules in one cycle): {found:?}");
}

#[test]
fn the_checker_sees_a_cycle_through_a_parent_and_a_root_item() {
    let modules: BTreeMap<Module, String> = [
        (vec![], "pub mod a;\npub mod b;\npub struct Shared;\nfn f() { a::go(); }\n".to_owned()),
        (vec!["a".to_owned()], "use crate::Shared;\npub fn go() {}\n".to_owned()),
        (vec!["b".to_owned()], "mod c;\nfn g() { c::h(); }\n".to_owned()),
        (vec!["b".to_owned(), "c".to_owned()], "use super::g;\n".to_owned()),
    ]
    .into_iter()
    .collect();
    let groups: Vec<Vec<String>> =
        cycles(&imports(&modules)).iter().map(|g| g.iter().map(named).collect()).collect();
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert!(groups.contains(&vec!["lib".to_owned(), "a".to_owned()]), "{groups:?}");
    assert!(groups.contains(&vec!["b".to_owned(), "b::c".to_owned()]), "{groups:?}");
}

/// ARCHITECTURE.md's row for each crate: the table line that starts with `` | `crates/<dir>` ``.
fn rows() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(workspace().join("ARCHITECTURE.md")).unwrap();
    text.lines()
        .filter_map(|line| {
            let dir = line.strip_prefix("| `crates/")?.split('`').next()?;
            Some((dir.to_owned(), line.to_owned()))
        })
        .collect()
}

#[test]
fn architecture_md_names_every_crate_and_module_and_what_each_crate_may_import() {
    let rows = rows();
    let mut missing = Vec::new();
    for (name, modules) in crates() {
        let Some(row) = rows.get(&name) else {
            missing.push(format!("crates/{name}: no row"));
            continue;
        };
        if !row.contains("may import") || !row.contains("never") {
            missing.push(format!("crates/{name}: what it may import and never imports"));
        }
        for module in modules.keys().filter(|m| !m.is_empty()) {
            let last = module.last().unwrap();
            let path = module.join("::");
            let named = [format!("`{path}`"), format!("`{path} "), format!("`{path}::"), format!("`{last}`")]
                .iter()
                .any(|form| row.contains(form.as_str()))
                || row.contains(&format!("`{last} ("))
                || row.contains(&format!("`{last}::"));
            if !named {
                missing.push(format!("crates/{name}: module {path}"));
            }
        }
    }
    let gone: Vec<_> = rows.keys().filter(|dir| !workspace().join("crates").join(dir).is_dir()).collect();
    assert!(
        missing.is_empty() && gone.is_empty(),
        "ARCHITECTURE.md lacks {missing:#?}; names crates that are gone: {gone:?}"
    );
}

/// The `[dependencies]` of a crate (not its dev-dependencies), by name.
fn dependencies(dir: &str) -> BTreeSet<String> {
    let manifest = std::fs::read_to_string(workspace().join("crates").join(dir).join("Cargo.toml")).unwrap();
    let section = manifest.split("[dependencies]").nth(1).unwrap_or("");
    let section = section.split("\n[").next().unwrap_or("");
    section
        .lines()
        .filter_map(|l| l.split(['.', ' ', '=']).next())
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn data_planes_read_only_the_plan_and_the_planner_does_no_io() {
    for plane in ["l4", "l7", "dns"] {
        let deps = dependencies(plane);
        assert!(!deps.contains("portico-source"), "{plane} imports a source: {deps:?}");
        for (module, code) in crates()[plane].iter() {
            for loading in ["parse_text", "manifest_files", "load_paths", "read_manifests"] {
                assert!(
                    !code.contains(loading),
                    "{plane}::{} loads manifests ({loading})",
                    module.join("::")
                );
            }
        }
    }
    let plan = dependencies("plan");
    for io in ["tokio", "notify", "portico-source", "socket2", "hyper"] {
        assert!(!plan.contains(io), "the planner imports {io}: {plan:?}");
    }
    assert!(
        dependencies("dataplane")
            .iter()
            .all(|d| !["portico-l4", "portico-l7", "portico-dns"].contains(&d.as_str()))
    );
}
