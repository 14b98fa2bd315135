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

// ---- Function length (issue 15): a function fits on a screen or two. ----

/// The longest a function in `src/` may be, in lines from `fn` to its closing brace.
const MAX_FUNCTION_LINES: usize = 100;

/// `text` with comments, string and char literals blanked out (newlines kept), so braces
/// and `fn` inside them are not counted.
fn code_only(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        let prev_ident = i > 0 && is_ident(b[i - 1]);
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if !prev_ident && (c == 'r' || (c == 'b' && next == Some('r'))) && {
            // A raw string: r"…", r#"…"#, br#"…"#.
            let mut j = i + if c == 'b' { 2 } else { 1 };
            while b.get(j) == Some(&'#') {
                j += 1;
            }
            b.get(j) == Some(&'"')
        } {
            let mut j = i + if c == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while b[j] == '#' {
                hashes += 1;
                j += 1;
            }
            j += 1; // the opening quote
            while j < b.len() {
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.extend(b[i..j.min(b.len())].iter().map(|c| blank(*c)));
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != '"' {
                let n = if b[i] == '\\' { 2 } else { 1 };
                for k in 0..n {
                    if let Some(c) = b.get(i + k) {
                        out.push(blank(*c));
                    }
                }
                i += n;
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}'), else a lifetime or label.
            let end = if next == Some('\\') {
                (i + 2..b.len().min(i + 12)).find(|j| b[*j] == '\'')
            } else if b.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.extend(std::iter::repeat_n(' ', end - i + 1));
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The index of the `}` that closes the `{` at `open` in `code`.
fn closing_brace(code: &[char], open: usize) -> usize {
    let mut depth = 0usize;
    for (i, c) in code.iter().enumerate().skip(open) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    code.len().saturating_sub(1)
}

/// Every function with a body in `text` outside `#[cfg(test)]` items: (name, lines).
fn function_lengths(text: &str) -> Vec<(String, usize)> {
    let code: Vec<char> = code_only(text).chars().collect();
    let line_at = |i: usize| code[..i].iter().filter(|c| **c == '\n').count();
    let word_at = |i: usize, w: &str| {
        code[i..].starts_with(&w.chars().collect::<Vec<_>>())
            && (i == 0 || !is_ident(code[i - 1]))
            && code.get(i + w.len()).is_none_or(|c| !is_ident(*c))
    };
    let mut found = Vec::new();
    let mut i = 0;
    while i < code.len() {
        if code[i..].starts_with(&"#[cfg(test)]".chars().collect::<Vec<_>>()) {
            // Skip the item it marks: up to its `;` or its `{ … }`.
            let mut j = i + "#[cfg(test)]".len();
            while j < code.len() && code[j] != ';' && code[j] != '{' {
                j += 1;
            }
            i = if j < code.len() && code[j] == '{' {
                closing_brace(&code, j) + 1
            } else {
                j + 1
            };
            continue;
        }
        if word_at(i, "fn") {
            let mut j = i + 2;
            while j < code.len() && code[j].is_whitespace() {
                j += 1;
            }
            let name: String = code[j..].iter().take_while(|c| is_ident(**c)).collect();
            if !name.is_empty() {
                // The body starts at the first `{` outside the signature's parentheses,
                // angle brackets aside; a `;` first means a declaration without a body.
                let mut parens = 0i32;
                let mut k = j + name.len();
                while k < code.len() {
                    match code[k] {
                        '(' | '[' => parens += 1,
                        ')' | ']' => parens -= 1,
                        '{' | ';' if parens == 0 => break,
                        _ => {}
                    }
                    k += 1;
                }
                if k < code.len() && code[k] == '{' {
                    let end = closing_brace(&code, k);
                    found.push((name, line_at(end) - line_at(i) + 1));
                }
            }
        }
        i += 1;
    }
    found
}

#[test]
fn no_function_in_src_is_over_100_lines() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut over = Vec::new();
    let mut measured = 0;
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with("tests.rs") {
            continue;
        }
        let rel = file
            .strip_prefix(src())
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(file).expect("readable source");
        for (f, lines) in function_lengths(&text) {
            measured += 1;
            if lines > MAX_FUNCTION_LINES {
                over.push((rel.clone(), f, lines));
            }
        }
    }
    assert!(measured > 500, "only {measured} functions found in src/");
    let over: Vec<String> = over
        .iter()
        .map(|(file, f, lines)| format!("src/{file}: fn {f} is {lines} lines"))
        .collect();
    assert!(
        over.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines (split them into named steps):\n{}",
        over.join("\n")
    );
}

#[test]
fn the_length_scanner_skips_strings_comments_and_tests() {
    let text = r##"
fn short() -> &'static str {
    let _c = '{';
    let _s = "} fn fake() {";
    // fn commented() {
    /* { */
    r#"}"#
}

fn with_where<T>(x: T) -> usize
where
    T: Into<usize>,
{
    x.into()
}

trait Named {
    fn name(&self) -> String;
}

#[cfg(test)]
mod tests {
    fn hidden() {}
}
"##;
    assert_eq!(
        function_lengths(text),
        [("short".to_string(), 7), ("with_where".to_string(), 6)]
    );
}

/// A file's name says what it is, so two files of `src/` never share one: `mod.rs`, and a
/// file of `src/http/` named after the module whose HTTP API it is (`http/feedback.rs`
/// serves `catalog/feedback.rs`), are the only exceptions.
#[test]
fn no_two_files_in_src_share_a_name() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in &files {
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let rel = f
            .strip_prefix(src())
            .unwrap_or(f)
            .to_string_lossy()
            .to_string();
        if name == "mod.rs" || rel.starts_with("http/") || rel == "main.rs" {
            continue;
        }
        by_name.entry(name).or_default().push(rel);
    }
    let shared: Vec<_> = by_name.into_iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(shared.is_empty(), "files sharing a name: {shared:?}");
}
