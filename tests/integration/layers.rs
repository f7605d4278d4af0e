//! Every crate's modules stay layered: no top-level module imports (names a `crate::` path
//! of) a module that imports it back, directly or through others. ARCHITECTURE.md lists
//! the layers; a change that adds a cycle fails here, naming the crate and the cycle.
//! (Crates cannot import each other back: Cargo refuses cyclic dependencies.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The `.rs` files under `dir`, recursively.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// For each top-level module, the other top-level modules its code names as `crate::m`
/// (comments left out).
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("under src");
        let first = relative.components().next().expect("a component");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        // In a file directly under src/, `super::` is the crate root too.
        let prefixes: &[&str] = if relative.components().count() == 1 {
            &["crate::", "super::"]
        } else {
            &["crate::"]
        };
        let names = graph.entry(module.clone()).or_default();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (at, prefix) in prefixes
                .iter()
                .flat_map(|p| line.match_indices(p).map(move |(at, _)| (at, *p)))
            {
                let rest = &line[at + prefix.len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                    .collect();
                if !name.is_empty() && name != module {
                    names.insert(name);
                }
            }
        }
    }
    graph
}

/// A cycle through `from`, as the modules on it, if there is one.
fn cycle_through(
    graph: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    at: &str,
    path: &mut Vec<String>,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    for next in graph.get(at).into_iter().flatten() {
        if next == from {
            let mut cycle = path.clone();
            cycle.push(from.to_string());
            return Some(cycle);
        }
        if seen.insert(next.clone()) {
            path.push(next.clone());
            if let Some(cycle) = cycle_through(graph, from, next, path, seen) {
                return Some(cycle);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut cycles = Vec::new();
    for src in [
        "catalog/src",
        "crates/optimizer/src",
        "crates/lake/src",
        "crates/server/src",
        "src",
    ] {
        let graph = imports(&root.join(src));
        assert!(graph.len() > 2, "{src}: modules not found ({graph:?})");
        cycles.extend(graph.keys().filter_map(|m| {
            cycle_through(&graph, m, m, &mut vec![m.clone()], &mut BTreeSet::new())
                .map(|c| format!("{src}: {}", c.join(" -> ")))
        }));
    }
    assert!(
        cycles.is_empty(),
        "import cycles between modules:\n{}",
        cycles.join("\n")
    );
}
