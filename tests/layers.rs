//! The house's layers, checked from the crate's own imports: every
//! `crate::…` and `super::…` path of every source file is resolved to the
//! top-level module it names, and each module may only import modules of a
//! lower layer (see the table below, and the README's picture). The model
//! imports nothing of the cluster, the API, the manager or the daemon; the
//! API's client nothing above the model; and no two top-level modules
//! import each other, directly or round a circle.
//!
//! It reads the source as text: an import written as a path anywhere in a
//! file counts, `use` line or not. Inline modules are followed (`super::`
//! in a `mod tests` is the file's own module); a `#[cfg(test)]` module's
//! imports are the tests', not the house's, and are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, top first. A module may import its own files and those of
/// lower layers. The control API's `client` is low, apart from its server
/// (`api`): the CLI and the units talk to the daemon through it, and it
/// knows the model only.
const LAYERS: &[&[&str]] = &[
    &["daemon"],
    &["ui"],
    &["api"],
    &["manager"],
    &["cluster"],
    &["controllers"],
    &["images", "components"],
    &["client"],
    &["model"],
    &[
        "pki",
        "kubeconfig",
        "bundle",
        "supervisor",
        "runtime",
        "bootstrap",
        "procnet",
    ],
    &["fsutil", "exec", "cgroups"],
    &["sys", "error", "input", "offload", "mountinfo"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `cluster/operations/enable.rs` is
/// `["cluster", "operations", "enable"]`, a `mod.rs` its folder's.
fn module_of(file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_string());
    }
    parts
}

/// The unit a module belongs to in [`LAYERS`]: its top-level module.
fn unit(module: &[String]) -> Option<String> {
    module.first().cloned()
}

fn rank(unit: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&unit))
}

/// Every module path a file names: `crate::a::b` and `super::…` (resolved
/// against the module the line is in), outside `#[cfg(test)]` modules.
fn imports(file: &Path) -> BTreeSet<Vec<String>> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut found = BTreeSet::new();
    // The inline modules open at this line: name, the depth they opened
    // at, and whether they are tests.
    let mut open: Vec<(String, i32, bool)> = Vec::new();
    let mut depth = 0;
    let mut test_attribute = false;
    let mut carried = String::new();
    for line in text.lines() {
        let code = code_of(line);
        let trimmed = code.trim();
        let in_test = open.iter().any(|(_, _, test)| *test);
        if let Some(name) = inline_module(trimmed) {
            open.push((name, depth, test_attribute || in_test));
        }
        if !trimmed.is_empty() {
            test_attribute = trimmed.starts_with("#[cfg(test)]");
        }
        if !in_test {
            let mut here = module_of(file);
            here.extend(open.iter().map(|(name, _, _)| name.clone()));
            // A group open on an earlier line is read again with this one.
            let text = std::mem::take(&mut carried) + &code;
            if !note_paths(&text, &here, &mut found) {
                carried = text;
            }
        }
        depth += code.matches('{').count() as i32 - code.matches('}').count() as i32;
        while open.last().is_some_and(|(_, at, _)| depth <= *at) {
            open.pop();
        }
    }
    assert!(
        carried.is_empty(),
        "{}: an import group never closes: {carried}",
        file.display()
    );
    found
}

/// The line without its comment and without the text of its string and
/// character literals (their braces and paths are not code).
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        match (in_string, c) {
            (false, '/') if chars.peek() == Some(&'/') => break,
            (false, '"') => in_string = true,
            (false, '\'') => {
                // A char literal ('{', '\'') or a lifetime ('a): skip a literal.
                let rest: String = chars.clone().take(3).collect();
                if rest.starts_with('\\') {
                    chars.next();
                    chars.next();
                    chars.next();
                } else if rest.chars().nth(1) == Some('\'') {
                    chars.next();
                    chars.next();
                } else {
                    out.push(c);
                }
            }
            (false, c) => out.push(c),
            (true, '\\') => {
                chars.next();
            }
            (true, '"') => in_string = false,
            (true, _) => {}
        }
    }
    out
}

/// The name of an inline module this line opens (`mod tests {`).
fn inline_module(line: &str) -> Option<String> {
    let rest = line
        .strip_prefix("pub ")
        .or_else(|| line.strip_prefix("pub(crate) "))
        .unwrap_or(line);
    let rest = rest.strip_prefix("mod ")?;
    let (name, after) = rest.split_once(' ')?;
    after.starts_with('{').then(|| name.to_string())
}

/// Notes each `crate::…` and `super::…` path of `code`, `here` being the
/// module it is written in. A group (`crate::{a::X, b}`) notes each of its
/// paths; false when a group is still open at the end of `code` (rustfmt
/// writes long groups over several lines: the caller reads on).
fn note_paths(code: &str, here: &[String], found: &mut BTreeSet<Vec<String>>) -> bool {
    let mut closed = true;
    for (at, _) in code.match_indices("crate::") {
        let preceded = code[..at].chars().last();
        if preceded.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // k8s_manager::crate_x, not ours
        }
        closed &= note_rest(&code[at + "crate::".len()..], Vec::new(), found);
    }
    for (at, _) in code.match_indices("super::") {
        let preceded = code[..at].chars().last();
        if preceded.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // super::super:: is read from its first one
        }
        let mut base = here.to_vec();
        let mut rest = &code[at..];
        while let Some(after) = rest.strip_prefix("super::") {
            base.pop();
            rest = after;
        }
        closed &= note_rest(rest, base, found);
    }
    closed
}

/// Notes the path at the start of `rest` under `base`, or each path of the
/// group it opens; false when the group does not close within `rest`.
fn note_rest(rest: &str, base: Vec<String>, found: &mut BTreeSet<Vec<String>>) -> bool {
    let Some(group) = rest.strip_prefix('{') else {
        found.insert(path_after(rest, base));
        return true;
    };
    let (mut depth, mut start) = (0, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            ',' | '}' if depth == 0 => {
                let item = group[start..i].trim();
                if !item.is_empty() && item != "self" {
                    found.insert(path_after(item, base.clone()));
                }
                if c == '}' {
                    return true;
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    false
}

/// `base` extended by the path segments at the start of `rest`
/// (`a::b::{c, d}` gives `a::b`).
fn path_after(rest: &str, mut base: Vec<String>) -> Vec<String> {
    for segment in rest.split("::") {
        let name: String = segment
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() || name.starts_with(char::is_uppercase) {
            break;
        }
        let whole = name.len() == segment.len();
        base.push(name);
        if !whole {
            break;
        }
    }
    base
}

/// Which unit imports which, with a file that does it.
fn graph() -> BTreeMap<(String, String), PathBuf> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut edges = BTreeMap::new();
    for file in files {
        let module = module_of(&file);
        let Some(from) = unit(&module) else { continue };
        if from == "cli" {
            continue; // the binary, on top of everything
        }
        for target in imports(&file) {
            let Some(to) = unit(&target) else { continue };
            if to != from && rank(&to).is_some() {
                edges.entry((from.clone(), to)).or_insert(file.clone());
            }
        }
    }
    edges
}

#[test]
fn every_module_is_in_a_layer() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    for file in files {
        let module = module_of(&file);
        let Some(unit) = unit(&module) else { continue };
        if unit == "cli" {
            continue;
        }
        assert!(
            rank(&unit).is_some(),
            "{} (module {unit}) is in no layer of tests/layers.rs: put it in one",
            file.display()
        );
    }
}

#[test]
fn imports_point_down_only() {
    let mut wrong = Vec::new();
    for ((from, to), file) in graph() {
        let (Some(a), Some(b)) = (rank(&from), rank(&to)) else {
            continue;
        };
        if b < a {
            wrong.push(format!("{from} -> {to} ({})", file.display()));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_two_modules_import_each_other_round_a_circle() {
    let edges: BTreeSet<(String, String)> = graph().into_keys().collect();
    let units: BTreeSet<&String> = edges.iter().flat_map(|(a, b)| [a, b]).collect();
    // A circle is a unit that reaches itself.
    for start in units {
        let mut seen = BTreeSet::new();
        let mut next = vec![start.clone()];
        while let Some(at) = next.pop() {
            for (_, to) in edges.iter().filter(|(from, _)| *from == at) {
                assert_ne!(to, start, "{start} reaches itself through {at}");
                if seen.insert(to.clone()) {
                    next.push(to.clone());
                }
            }
        }
    }
}

#[test]
fn the_check_reads_imports_as_written() {
    let base = vec!["cluster".to_string(), "operations".to_string()];
    assert_eq!(
        path_after("enable::{Enable, schedule};", base.clone()),
        ["cluster", "operations", "enable"]
    );
    assert_eq!(
        path_after("model::config::Paths", Vec::new()),
        ["model", "config"]
    );
    assert_eq!(
        module_of(&src().join("cluster/operations/mod.rs")),
        ["cluster", "operations"]
    );
    assert_eq!(
        code_of(r#"let s = "{crate::x}"; // crate::y"#),
        r#"let s = ; "#
    );
    assert_eq!(code_of("let c = '{'; f::<'a>()"), "let c = ; f::<'a>()");
    let mut found = BTreeSet::new();
    assert!(note_paths(
        "use crate::{model::{config, state::Phase}, cluster::engine};",
        &[],
        &mut found,
    ));
    let read: Vec<Vec<String>> = found.iter().cloned().collect();
    assert_eq!(read, [vec!["cluster", "engine"], vec!["model"]]);
    assert!(!note_paths("use crate::{model::config,", &[], &mut found));
    assert_eq!(inline_module("pub mod tests {").as_deref(), Some("tests"));
    assert_eq!(inline_module("mod fakes;"), None);
}
