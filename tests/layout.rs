//! The layout keeps one direction: no import cycle between the top-level modules of
//! `src/`, nor between the files of one module folder. The graph is read from the source
//! (`crate::name` paths, `crate::{a, b}` groups and, inside a folder, `super::name`), the
//! same graph docs/architecture.md draws; a new cycle fails here with its members named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src/") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first path segment after each `prefix` in `text` (`crate::a::b` → `a`), and each
/// name of a `prefix{a, b::c}` group.
fn names_after(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices(prefix) {
        if text[..at].chars().next_back().is_some_and(is_ident) {
            continue; // `mycrate::`, not `crate::`
        }
        let rest = &text[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name: String = item.trim().chars().take_while(|c| is_ident(*c)).collect();
                if !name.is_empty() {
                    names.insert(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

/// Module name of a file under `dir`: `x.rs` and `x/…` are `x`.
fn module_of(dir: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(dir).expect("under dir");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

/// The top-level modules of `src/` and what each imports.
fn top_level_graph() -> Graph {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph = Graph::new();
    for file in files {
        let module = module_of(&src(), &file);
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable");
        let deps = graph.entry(module.clone()).or_default();
        deps.extend(
            names_after(&text, "crate::")
                .into_iter()
                .filter(|d| *d != module),
        );
    }
    graph
}

/// The files of one module folder (`src/name/`) and which of them each imports.
fn folder_graph(folder: &str) -> Graph {
    let dir = src().join(folder);
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let members: BTreeSet<String> = files.iter().map(|f| module_of(&dir, f)).collect();
    let mut graph = Graph::new();
    for file in &files {
        let module = module_of(&dir, file);
        if module == "mod" {
            continue; // mod.rs declares and re-exports its children
        }
        let text = std::fs::read_to_string(file).expect("readable");
        let mut deps = names_after(&text, &format!("crate::{folder}::"));
        deps.extend(names_after(&text, "super::"));
        let deps: Vec<String> = deps
            .into_iter()
            .filter(|d| *d != module && *d != "mod" && members.contains(d))
            .collect();
        graph.entry(module).or_default().extend(deps);
    }
    graph
}

/// Strongly connected components of more than one node (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a str) {
        let i = w.index.len();
        w.index.insert(v, i);
        w.low.insert(v, i);
        w.stack.push(v);
        for d in w.graph.get(v).into_iter().flatten() {
            let d = d.as_str();
            if !w.index.contains_key(d) {
                visit(w, d);
                let l = w.low[v].min(w.low[d]);
                w.low.insert(v, l);
            } else if w.stack.contains(&d) {
                let l = w.low[v].min(w.index[d]);
                w.low.insert(v, l);
            }
        }
        if w.low[v] == w.index[v] {
            let at = w.stack.iter().rposition(|x| *x == v).expect("on the stack");
            let component: Vec<String> = w.stack.drain(at..).map(String::from).collect();
            if component.len() > 1 {
                w.found.push(component);
            }
        }
    }
    let mut w = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !w.index.contains_key(v.as_str()) {
            visit(&mut w, v);
        }
    }
    w.found
}

fn show(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(m, deps)| {
            format!(
                "{m} -> {}",
                deps.iter().cloned().collect::<Vec<_>>().join(" ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn top_level_modules_have_no_import_cycle() {
    let graph = top_level_graph();
    assert!(graph.len() >= 15, "{graph:?}");
    println!("{}", show(&graph));
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "import cycles: {found:?}\n{}",
        show(&graph)
    );
}

#[test]
fn config_is_assembled_from_the_modules_it_configures() {
    let graph = top_level_graph();
    let importers: Vec<&String> = graph
        .iter()
        .filter(|(m, deps)| {
            deps.contains("config") && !["cli", "bench", "sidecar", "analyze"].contains(&m.as_str())
        })
        .map(|(m, _)| m)
        .collect();
    assert!(
        importers.is_empty(),
        "modules below the runtime import `config` (settings belong to the module they configure): {importers:?}"
    );
}

#[test]
fn files_of_a_module_folder_have_no_import_cycle() {
    let mut folders = Vec::new();
    for entry in std::fs::read_dir(src()).expect("src/") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            folders.push(path.file_name().unwrap().to_string_lossy().to_string());
        }
    }
    assert!(folders.len() >= 10, "{folders:?}");
    for folder in folders {
        let graph = folder_graph(&folder);
        let found = cycles(&graph);
        assert!(
            found.is_empty(),
            "src/{folder}: import cycles {found:?}\n{}",
            show(&graph)
        );
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let g = |edges: &[(&str, &str)]| {
        let mut graph = Graph::new();
        for (a, b) in edges {
            graph
                .entry(a.to_string())
                .or_default()
                .insert(b.to_string());
            graph.entry(b.to_string()).or_default();
        }
        graph
    };
    assert!(cycles(&g(&[("a", "b"), ("b", "c")])).is_empty());
    let found = cycles(&g(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].iter().collect::<BTreeSet<_>>().len(), 3);
    assert_eq!(
        names_after(
            "use crate::{cue::Cue, frame};\nx = mycrate::y; crate::z::w",
            "crate::"
        ),
        ["cue", "frame", "z"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}
