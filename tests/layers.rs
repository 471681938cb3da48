//! The crate's layers, enforced: reads every file under `src/`, finds what
//! each one refers to (`use crate::…`, inline `crate::…` paths, `super::…`
//! and a `mod.rs`'s references to its own children), and fails on an
//! import that points up the table below or on any circle between files.
//!
//! [`LAYERS`] is the one place the allowed structure is written down;
//! `docs/architecture.md` draws it. A module may refer to modules of
//! strictly lower layers only (two modules of one layer are independent).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom first. Every top-level module of `src/` must be listed.
const LAYERS: &[(&str, &[&str])] = &[
    ("core: metrics", &["metrics"]),
    (
        "core: leaves",
        &[
            "error",
            "random",
            "request_id",
            "cache",
            "client_ip",
            "hosts",
            "log_sink",
        ],
    ),
    (
        "core: who and what",
        &["db", "token", "identity", "validate", "routing"],
    ),
    ("core: settings", &["config"]),
    ("core: services", &["crypto", "outbound", "bus"]),
    ("core: shared state", &["state"]),
    ("domain: audit log", &["audit"]),
    ("domain: sessions", &["sessions"]),
    ("domain: users", &["users"]),
    ("domain: keys", &["keys"]),
    ("domain: stored secrets", &["credentials", "variables"]),
    ("domain: flows", &["flows"]),
    (
        "request: authentication and body deadline",
        &["auth", "deadline"],
    ),
    (
        "surface: gateway, UI and the Langflow import",
        &["gateway", "ui", "langflow_import"],
    ),
    ("surface: the API's description", &["openapi"]),
    ("assembly: server", &["server"]),
    ("entry: command line", &["cli"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// A file of `src/` by its module path, e.g. `keys::verify` or `db`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Unit(Vec<String>);

impl Unit {
    fn top(&self) -> &str {
        &self.0[0]
    }
    fn name(&self) -> String {
        self.0.join("::")
    }
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every module file, except the crate roots (`lib.rs` only declares the
/// modules, `main.rs` is the binary).
fn units() -> BTreeMap<Unit, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Unit, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                let mut inner = prefix.to_vec();
                inner.push(stem);
                walk(&path, &inner, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                if prefix.is_empty() && (stem == "lib" || stem == "main") {
                    continue;
                }
                let mut name = prefix.to_vec();
                if stem != "mod" {
                    name.push(stem);
                }
                let text = std::fs::read_to_string(&path).unwrap();
                out.insert(Unit(name), strip_comments(without_unit_tests(&text)));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&src_dir(), &[], &mut out);
    out
}

/// A file's unit tests (`#[cfg(test)] mod tests`, last in the file by
/// convention) are not part of the structure; their `super::` is the file
/// itself.
fn without_unit_tests(text: &str) -> &str {
    match text.find("\n#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    }
}

/// Drops `//` comments (doc comments name modules in prose) and string
/// literals, which are not references.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_string = false;
        let mut chars = line.chars().peekable();
        let mut kept = String::new();
        while let Some(c) = chars.next() {
            if in_string {
                if c == '\\' {
                    chars.next();
                } else if c == '"' {
                    in_string = false;
                }
                continue;
            }
            if c == '"' {
                in_string = true;
                continue;
            }
            if c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            kept.push(c);
        }
        out.push_str(&kept);
        out.push('\n');
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths that follow `anchor::` at each occurrence, with `{a, b::c}`
/// groups expanded: `crate::{db, keys::store}` gives `db` and
/// `keys::store`.
fn paths_after(text: &str, anchor: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let needle = format!("{anchor}::");
    let mut start = 0;
    while let Some(at) = text[start..].find(&needle) {
        let begin = start + at;
        let preceded_by_ident = text[..begin].chars().next_back().is_some_and(is_ident);
        let rest = &text[begin + needle.len()..];
        start = begin + needle.len();
        if preceded_by_ident {
            continue;
        }
        found.extend(expand(rest));
    }
    found
}

/// Reads one path or one brace group at the start of `text`.
fn expand(text: &str) -> Vec<Vec<String>> {
    let text = text.trim_start();
    if let Some(group) = text.strip_prefix('{') {
        let mut depth = 1;
        let mut end = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let inner = &group[..end];
        let mut items = Vec::new();
        let (mut depth, mut from) = (0, 0);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&inner[from..i]);
                    from = i + 1;
                }
                _ => {}
            }
        }
        items.push(&inner[from..]);
        return items
            .into_iter()
            .filter(|item| !item.trim().is_empty())
            .flat_map(expand)
            .collect();
    }
    let mut segments = Vec::new();
    let mut rest = text;
    loop {
        let ident: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        if ident.is_empty() {
            break;
        }
        rest = &rest[ident.len()..];
        segments.push(ident);
        match rest.strip_prefix("::") {
            Some(after) if after.starts_with('{') => {
                return expand(after)
                    .into_iter()
                    .map(|tail| segments.iter().cloned().chain(tail).collect())
                    .collect();
            }
            Some(after) => rest = after,
            None => break,
        }
    }
    vec![segments]
}

/// The longest known unit a path names (`keys::store::find` is in
/// `keys::store`; `keys::KeyVerifier` is in `keys`).
fn resolve(path: &[String], known: &BTreeMap<Unit, String>) -> Option<Unit> {
    (1..=path.len())
        .rev()
        .map(|n| Unit(path[..n].to_vec()))
        .find(|unit| known.contains_key(unit))
}

fn edges(known: &BTreeMap<Unit, String>) -> BTreeMap<Unit, BTreeSet<Unit>> {
    let mut graph: BTreeMap<Unit, BTreeSet<Unit>> = BTreeMap::new();
    for (unit, text) in known {
        let targets = graph.entry(unit.clone()).or_default();
        let mut add = |path: Vec<String>| {
            if let Some(target) = resolve(&path, known) {
                if target != *unit {
                    targets.insert(target);
                }
            }
        };
        for path in paths_after(text, "crate") {
            add(path);
        }
        // `super::` from `keys::verify` is `keys`; from `keys` (its mod.rs)
        // it would be the crate root.
        if unit.0.len() > 1 {
            let parent = &unit.0[..unit.0.len() - 1];
            for path in paths_after(text, "super") {
                add(parent.iter().cloned().chain(path).collect());
            }
        }
        // A module's own children, referred to by their bare names.
        for child in known
            .keys()
            .filter(|k| k.0.len() == unit.0.len() + 1 && k.0[..unit.0.len()] == unit.0[..])
        {
            let last = child.0.last().unwrap();
            if !paths_after(text, last).is_empty() {
                add(child.0.clone());
            }
        }
    }
    graph
}

#[test]
fn every_module_is_in_the_layer_table() {
    let known = units();
    let missing: BTreeSet<String> = known
        .keys()
        .map(|unit| unit.top().to_string())
        .filter(|top| layer_of(top).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "modules missing from LAYERS: {missing:?}"
    );
}

#[test]
fn no_module_imports_one_above_it() {
    let known = units();
    let mut upward = Vec::new();
    for (from, targets) in edges(&known) {
        for to in targets {
            if from.top() == to.top() {
                continue;
            }
            let (Some(a), Some(b)) = (layer_of(from.top()), layer_of(to.top())) else {
                continue;
            };
            if b >= a {
                upward.push(format!(
                    "{} ({}) -> {} ({})",
                    from.name(),
                    LAYERS[a].0,
                    to.name(),
                    LAYERS[b].0
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that do not point down:\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_file_imports_form_a_circle() {
    let graph = edges(&units());
    // Depth-first search with colours; a grey node reached again closes a
    // circle.
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    fn visit(
        unit: &Unit,
        graph: &BTreeMap<Unit, BTreeSet<Unit>>,
        colour: &mut BTreeMap<Unit, Colour>,
        stack: &mut Vec<Unit>,
        circles: &mut Vec<String>,
    ) {
        colour.insert(unit.clone(), Colour::Grey);
        stack.push(unit.clone());
        for next in graph.get(unit).into_iter().flatten() {
            match colour.get(next).copied().unwrap_or(Colour::White) {
                Colour::White => visit(next, graph, colour, stack, circles),
                Colour::Grey => {
                    let from = stack.iter().position(|u| u == next).unwrap_or(0);
                    let names: Vec<String> = stack[from..].iter().map(Unit::name).collect();
                    circles.push(format!("{} -> {}", names.join(" -> "), next.name()));
                }
                Colour::Black => {}
            }
        }
        stack.pop();
        colour.insert(unit.clone(), Colour::Black);
    }
    let mut colour = BTreeMap::new();
    let mut circles = Vec::new();
    for unit in graph.keys() {
        if colour.get(unit).copied().unwrap_or(Colour::White) == Colour::White {
            visit(unit, &graph, &mut colour, &mut Vec::new(), &mut circles);
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_reader_sees_what_it_must() {
    // The checks above are only as good as the reading: it must find grouped,
    // nested and inline references, and ignore comments and strings.
    let text = strip_comments(
        "use crate::{db::{self, DbPool}, keys::store};\n\
         let x = crate::flows::FLOW_NOT_FOUND; // crate::cli\n\
         let s = \"crate::server\";\n\
         use super::password;\n",
    );
    let found = paths_after(&text, "crate");
    let expected: Vec<Vec<String>> = [
        vec!["db", "self"],
        vec!["db", "DbPool"],
        vec!["keys", "store"],
        vec!["flows", "FLOW_NOT_FOUND"],
    ]
    .iter()
    .map(|p| p.iter().map(|s| s.to_string()).collect())
    .collect();
    assert_eq!(found, expected);
    assert_eq!(
        paths_after(&text, "super"),
        vec![vec!["password".to_string()]]
    );
}
