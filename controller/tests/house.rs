//! The house's layering: no import cycle between the top-level modules of
//! any crate in the workspace.
//!
//! Each crate's sources are read as text. A file belongs to the top-level
//! module it sits in (`agent/src/session/run.rs` is `session`); every
//! `crate::NAME` path outside comments and `#[cfg(test)]` code is an edge
//! from that module to `NAME`. A cycle among those edges fails the test,
//! naming each edge and the files that make it, so the move that breaks it
//! is plain.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates whose modules must form no cycle.
const CRATES: &[&str] = &["agent", "controller", "testbed", "proto"];

#[test]
fn no_crate_has_an_import_cycle_between_its_top_level_modules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut report = String::new();
    let mut edges_seen = 0;
    for krate in CRATES {
        let src = root.join(krate).join("src");
        let graph = module_graph(&src);
        edges_seen += graph.values().map(BTreeMap::len).sum::<usize>();
        for cycle in cycles(&graph) {
            report.push_str(&format!("{krate}: cycle between {}\n", cycle.join(", ")));
            for from in &cycle {
                for (to, files) in &graph[from] {
                    if cycle.contains(to) {
                        let files: Vec<_> = files.iter().cloned().collect();
                        report.push_str(&format!("  {from} -> {to} ({})\n", files.join(", ")));
                    }
                }
            }
        }
    }
    // The reader must see the crates' imports at all, or no cycle is proof
    // of nothing: the agent and the controller hold well over 100 edges.
    assert!(
        edges_seen > 100,
        "read only {edges_seen} edges between modules: the reader is broken"
    );
    assert!(report.is_empty(), "import cycles:\n{report}");
}

/// The reader itself: a cycle written into files is found and named.
#[test]
fn the_cycle_reader_finds_a_cycle_and_ignores_comments_and_tests() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\npub mod c;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::{b::X, c};\n").unwrap();
    std::fs::create_dir(src.join("b")).unwrap();
    std::fs::write(
        src.join("b/mod.rs"),
        "// crate::c in a comment\npub struct X;\nfn f() { crate::a::g(); }\n",
    )
    .unwrap();
    std::fs::write(
        src.join("c.rs"),
        "/// crate::a in a doc\n#[cfg(test)]\nmod tests { use crate::a; }\n",
    )
    .unwrap();
    let graph = module_graph(src);
    assert_eq!(
        graph["a"].keys().collect::<Vec<_>>(),
        ["b", "c"],
        "{graph:?}"
    );
    assert_eq!(graph["b"].keys().collect::<Vec<_>>(), ["a"], "{graph:?}");
    assert!(graph["c"].is_empty(), "{graph:?}");
    assert_eq!(cycles(&graph), vec![vec!["a".to_string(), "b".to_string()]]);
}

/// module -> (module it names -> files that name it).
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn module_graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    for file in rust_files(src) {
        let rel = file.strip_prefix(src).unwrap();
        let Some(module) = top_module(rel) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let entry = graph.entry(module.clone()).or_default();
        for to in crate_paths(&code_only(&text)) {
            if to != module {
                entry
                    .entry(to)
                    .or_default()
                    .insert(rel.display().to_string());
            }
        }
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The top-level module a file belongs to; `None` for the crate root and
/// the binaries (they sit above every module).
fn top_module(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    if first == "bin" || first == "lib.rs" || first == "main.rs" {
        return None;
    }
    Some(first.trim_end_matches(".rs").to_string())
}

/// The text with comments, string literals' contents and `#[cfg(test)]`
/// items removed.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            // Skip the attribute's item: up to its balanced closing brace,
            // or its end on one line (`mod tests;`).
            let mut depth = 0i32;
            let mut opened = false;
            for next in lines.by_ref() {
                let code = strip_line_comment(next);
                depth += code.matches('{').count() as i32;
                opened |= code.contains('{');
                depth -= code.matches('}').count() as i32;
                if (opened && depth <= 0) || (!opened && code.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        out.push_str(strip_line_comment(line));
        out.push('\n');
    }
    strip_block_comments(&out)
}

fn strip_line_comment(line: &str) -> &str {
    // A `//` inside a string ("http://…") is not a comment.
    let bytes = line.as_bytes();
    let mut in_str = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b'/' if !in_str && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

fn strip_block_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("/*") {
        out.push_str(&rest[..start]);
        rest = rest[start..]
            .find("*/")
            .map_or("", |end| &rest[start + end + 2..]);
    }
    out.push_str(rest);
    out
}

/// Every top-level module named by a `crate::` path, `use crate::{a, b::c}`
/// included.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `loadfleet_crate::` or the like
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names inside the braces, at depth one.
            let mut depth = 1;
            let mut name = String::new();
            let mut at_start = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            if !name.is_empty() {
                                out.insert(std::mem::take(&mut name));
                            }
                            break;
                        }
                    }
                    ',' if depth == 1 => at_start = true,
                    _ => {}
                }
                if depth == 1 && at_start {
                    if c.is_alphanumeric() || c == '_' {
                        name.push(c);
                    } else if !name.is_empty() {
                        out.insert(std::mem::take(&mut name));
                        at_start = c == ',';
                    }
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out.remove("self");
    out
}

/// The strongly connected components of more than one module, each sorted.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    // Kosaraju: order by finish time, then collect on the reversed graph.
    let nodes: BTreeSet<&String> = graph
        .keys()
        .chain(graph.values().flat_map(BTreeMap::keys))
        .collect();
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for &n in &nodes {
        finish(graph, n, &mut seen, &mut order);
    }
    let mut reversed: BTreeMap<&String, Vec<&String>> = BTreeMap::new();
    for (from, tos) in graph {
        for to in tos.keys() {
            reversed.entry(to).or_default().push(from);
        }
    }
    let mut assigned = BTreeSet::new();
    let mut out = Vec::new();
    for n in order.into_iter().rev() {
        if assigned.contains(n) {
            continue;
        }
        let mut component = Vec::new();
        let mut stack = vec![n];
        assigned.insert(n);
        while let Some(m) = stack.pop() {
            component.push(m.clone());
            for &p in reversed.get(m).into_iter().flatten() {
                if assigned.insert(p) {
                    stack.push(p);
                }
            }
        }
        if component.len() > 1 {
            component.sort();
            out.push(component);
        }
    }
    out.sort();
    out
}

fn finish<'g>(
    graph: &'g Graph,
    start: &'g String,
    seen: &mut BTreeSet<&'g String>,
    order: &mut Vec<&'g String>,
) {
    if !seen.insert(start) {
        return;
    }
    // Iterative depth-first search: (node, its successors not yet visited).
    let mut stack: Vec<(&String, Vec<&String>)> = vec![(start, successors(graph, start))];
    while let Some((node, next)) = stack.last_mut() {
        if let Some(n) = next.pop() {
            if seen.insert(n) {
                let succ = successors(graph, n);
                stack.push((n, succ));
            }
        } else {
            order.push(node);
            stack.pop();
        }
    }
}

fn successors<'g>(graph: &'g Graph, node: &String) -> Vec<&'g String> {
    graph
        .get(node)
        .map(|tos| tos.keys().collect())
        .unwrap_or_default()
}
