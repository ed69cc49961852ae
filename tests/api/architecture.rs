//! The module tree reads as a table of contents: top-level modules depend on
//! each other without circles, and route modules depend on the application
//! layer, never on each other. Read from the sources, as a newcomer would.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The code of a file without its comments' lines.
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Each top-level module and the top-level modules its files name (`crate::x`).
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = src();
    let mention = regex::Regex::new(r"crate::([a-z_]+)").unwrap();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in sources(&src) {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_string_lossy().trim_end_matches(".rs").to_string();
        if module == "main" || module == "lib" {
            continue;
        }
        let used = graph.entry(module.clone()).or_default();
        for found in mention.captures_iter(&code(&file)) {
            if found[1] != *module {
                used.insert(found[1].to_string());
            }
        }
    }
    graph
}

/// A circle through `start`, if there is one.
fn circle_through(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![start.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap();
        for next in graph.get(last).into_iter().flatten() {
            if next == start {
                let mut circle = path.clone();
                circle.push(start.to_string());
                return Some(circle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn top_level_modules_import_each_other_without_circles() {
    let graph = module_graph();
    assert!(graph.contains_key("cluster") && graph["routes"].contains("cluster"));
    let circles: Vec<String> = graph
        .keys()
        .filter_map(|module| circle_through(&graph, module))
        .map(|circle| circle.join(" -> "))
        .collect();
    assert!(circles.is_empty(), "import circles: {circles:#?}");
}

#[test]
fn the_application_layer_knows_nothing_of_http() {
    let graph = module_graph();
    for http in ["routes", "startup", "error", "auth", "openapi"] {
        assert!(
            !graph["cluster"].contains(http),
            "cluster imports {http}: {:?}",
            graph["cluster"]
        );
    }
}

#[test]
fn no_route_module_imports_another() {
    let routes = src().join("routes");
    let modules: Vec<String> = sources(&routes)
        .iter()
        .filter_map(|f| f.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|name| name != "mod")
        .collect();
    assert!(modules.len() >= 8, "{modules:?}");
    for file in sources(&routes) {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "mod" {
            continue;
        }
        let code = code(&file);
        for other in modules.iter().filter(|m| **m != name) {
            for path in [format!("super::{other}"), format!("routes::{other}")] {
                assert!(
                    !code.contains(&path),
                    "routes/{name}.rs imports {path}: shared work belongs in the cluster layer"
                );
            }
        }
    }
}
