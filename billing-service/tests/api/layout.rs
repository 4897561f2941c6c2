//! billing-service's modules import each other without cycles: the top-level modules form a
//! layered graph (configuration and the clock at the bottom, the routes, `startup` and the CLI
//! on top), and so do the files inside each of them, apart from a module using its own parent
//! (`super::`), which is how Rust code shares a parent's types with its children.
//!
//! The graph is read from the source: every `crate::` and `super::` path outside `#[cfg(test)]`
//! code, resolved to the module (file) it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Module path (`webhook::worker`, `` for the crate root) → the file's text without its tests.
fn modules() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = BTreeMap::new();
    let mut pending = vec![root.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&root).unwrap().with_extension("");
            let mut segments: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            match segments.last().map(String::as_str) {
                Some("main") => continue, // the binary, not a module of the library
                Some("lib") | Some("mod") => {
                    segments.pop();
                }
                _ => {}
            }
            let text = std::fs::read_to_string(&path).expect("a source file");
            let code = text
                .split("#[cfg(test)]")
                .next()
                .unwrap_or_default()
                .to_owned();
            found.insert(segments.join("::"), code);
        }
    }
    found
}

/// The paths a `crate::`/`super::` reference names, braces expanded: `crate::a::{b, c::D}` is
/// `a::b` and `a::c::D` (relative to the crate, or to the module's parent for `super::`).
fn expand(rest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut prefix = String::new();
    let mut chars = rest.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | ':' => prefix.push(c),
            '{' => {
                // The matching brace.
                let mut depth = 1;
                let start = i + 1;
                let mut end = start;
                for (j, c) in chars.by_ref() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    if depth == 0 {
                        end = j;
                        break;
                    }
                }
                for item in split_top_level(&rest[start..end]) {
                    for tail in expand(item.trim()) {
                        out.push(format!("{prefix}{tail}"));
                    }
                }
                return out;
            }
            _ => break,
        }
    }
    out.push(prefix.trim_end_matches(':').to_owned());
    out
}

/// Splits a brace list at its top-level commas.
fn split_top_level(list: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in list.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&list[start..]);
    items
}

fn parent(module: &str) -> String {
    module
        .rsplit_once("::")
        .map(|(p, _)| p.to_owned())
        .unwrap_or_default()
}

fn is_ancestor(ancestor: &str, module: &str) -> bool {
    ancestor.is_empty() || module.starts_with(&format!("{ancestor}::"))
}

/// File-level edges: module → the modules it names, leaving out the crate root and a module's
/// own ancestors and descendants.
fn graph(modules: &BTreeMap<String, String>) -> Graph {
    let mut graph = Graph::new();
    for (module, code) in modules {
        let mut targets = BTreeSet::new();
        for (keyword, base) in [("crate::", String::new()), ("super::", parent(module))] {
            for (at, _) in code.match_indices(keyword) {
                let before = code[..at].chars().last();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue; // `foo::crate::`, or `super::super::` read from the first
                }
                for path in expand(&code[at + keyword.len()..]) {
                    let full = match (base.is_empty(), path.is_empty()) {
                        (true, _) => path,
                        (false, true) => base.clone(),
                        (false, false) => format!("{base}::{path}"),
                    };
                    // The longest known module the path starts with.
                    let mut candidate = full.as_str();
                    let target = loop {
                        if modules.contains_key(candidate) {
                            break candidate.to_owned();
                        }
                        match candidate.rsplit_once("::") {
                            Some((shorter, _)) => candidate = shorter,
                            None => break String::new(),
                        }
                    };
                    if !target.is_empty()
                        && target != *module
                        && !is_ancestor(&target, module)
                        && !is_ancestor(module, &target)
                    {
                        targets.insert(target);
                    }
                }
            }
        }
        graph.insert(module.clone(), targets);
    }
    graph
}

/// The same graph between top-level modules.
fn top_level(graph: &Graph) -> Graph {
    let top = |m: &str| m.split("::").next().unwrap_or_default().to_owned();
    let mut out = Graph::new();
    for (module, targets) in graph {
        let entry = out.entry(top(module)).or_default();
        entry.extend(targets.iter().map(|t| top(t)).filter(|t| *t != top(module)));
    }
    out
}

/// A cycle, if the graph has one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

#[test]
fn modules_import_each_other_without_cycles() {
    let modules = modules();
    assert!(
        modules.contains_key("webhook::worker"),
        "{:?}",
        modules.keys()
    );
    let files = graph(&modules);
    // The reader sees what it should: a few edges the layout depends on.
    assert!(files["webhook::worker"].contains("tables::events"));
    assert!(files["routes::status"].contains("state"));
    if let Some(cycle) = find_cycle(&files) {
        panic!(
            "modules import each other in a cycle: {}",
            cycle.join(" -> ")
        );
    }
    if let Some(cycle) = find_cycle(&top_level(&files)) {
        panic!(
            "top-level modules import each other in a cycle: {}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_reader_finds_cycles_and_expands_braces() {
    assert_eq!(
        expand("tables::{customers, subscriptions::{self, X}};"),
        [
            "tables::customers",
            "tables::subscriptions::self",
            "tables::subscriptions::X"
        ]
    );
    let modules: BTreeMap<String, String> = [
        (
            "configuration",
            "use crate::webhook::worker::WorkerSettings;",
        ),
        ("webhook", ""),
        ("webhook::worker", "use super::store::now_ms;"),
        ("webhook::store", "use crate::db::Db;"),
        ("db", "use crate::configuration::DatabaseSettings;"),
    ]
    .map(|(m, c)| (m.to_owned(), c.to_owned()))
    .into();
    let cycle = find_cycle(&graph(&modules)).expect("the cycle issue #11 found");
    assert_eq!(cycle.first(), cycle.last());
    assert!(cycle.contains(&"webhook::store".to_owned()), "{cycle:?}");
}
