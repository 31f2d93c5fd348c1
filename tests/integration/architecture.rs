//! The module graph of `src/`, read from the sources: no cycle between top-level modules, and a cache
//! that imports nothing from the modules above it (DESIGN.md, "Modules").
//!
//! A Rust test rather than a script: `.ci/run`'s test command runs it on every change, with nothing to
//! install and no new dependency. It reads every `crate::`, `super::` and `cloudreve_edge::` path (in `use`
//! items and inline alike, test modules included; comments and string literals are skipped) and keeps, per
//! file, which top-level modules it names. `cargo nextest run --test integration architecture:: --no-capture` prints the
//! graph (who imports whom) for the record.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The modules the cache must not import: everything the design puts above it (it owns its parameter
/// types; `config` re-exports them), as pingora-cache knows nothing of the proxy around it.
const ABOVE_THE_CACHE: &[&str] = &[
    "config", "route", "proxy", "upstream", "server", "admin", "express", "metrics", "reload",
    "purge",
];

/// Files are few; a tree deeper than this is a mistake in the walk, not a layout.
const MAX_DEPTH: usize = 8;

/// One reference from a file to a top-level module.
#[derive(Debug, Clone)]
struct Use {
    /// The file, relative to the crate root (`src/cache/policy.rs`).
    file: String,
    /// The 1-based line of the path.
    line: usize,
    /// The top-level module the file belongs to (`main` for the binary).
    from: String,
    /// The top-level module the path names.
    to: String,
}

#[test]
fn top_level_modules_import_each_other_without_a_cycle() {
    let graph = Graph::read();
    print!("{}", graph.render());
    let cycles = graph.cycles();
    assert!(
        cycles.is_empty(),
        "import cycles between top-level modules (DESIGN.md: dependencies point one way):\n{}",
        cycles.join("\n")
    );
}

#[test]
fn cache_imports_nothing_above_it() {
    let graph = Graph::read();
    let offending: Vec<String> = graph
        .uses
        .iter()
        .filter(|u| u.from == "cache" && ABOVE_THE_CACHE.contains(&u.to.as_str()))
        .map(|u| format!("{}:{} imports `{}`", u.file, u.line, u.to))
        .collect();
    assert!(
        offending.is_empty(),
        "src/cache/ must not import config, route, proxy or anything else above it:\n{}",
        offending.join("\n")
    );
}

/// The check itself must be able to fail: a cycle and a forbidden import written here are found.
#[test]
fn the_reader_finds_paths_in_every_form() {
    let text = "use crate::{a::B, b};\n// crate::commented\nfn f() { let s = \"crate::s\"; super::c::f(); }\n\
                mod tests { use super::*; use crate::d; }\n";
    let found = references(text, &["y".to_string()], false);
    let targets: Vec<&str> = found.iter().map(|(_, to)| to.as_str()).collect();
    assert_eq!(targets, ["a", "b", "c", "y", "d"]);
    let lines: Vec<usize> = found.iter().map(|(line, _)| *line).collect();
    assert_eq!(lines, [1, 1, 3, 4, 4]);
    let uses = ["a->b", "b->c", "c->a", "d->a"].map(|edge| {
        let (from, to) = edge.split_once("->").unwrap();
        Use {
            file: "f.rs".into(),
            line: 1,
            from: from.into(),
            to: to.into(),
        }
    });
    let graph = Graph {
        uses: uses.to_vec(),
        modules: BTreeSet::new(),
    };
    assert_eq!(graph.cycles().len(), 1, "{:?}", graph.cycles());
}

/// The uses of every file in `src/`, by top-level module.
struct Graph {
    /// Every reference to another top-level module, in file order.
    uses: Vec<Use>,
    /// Every top-level module (and `main`), with or without imports.
    modules: BTreeSet<String>,
}

impl Graph {
    fn read() -> Graph {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        walk(&src, 0, &mut files);
        files.sort();
        let modules: BTreeSet<String> = files.iter().filter_map(|f| top_level(&src, f)).collect();
        let reexports = root_reexports(&src.join("lib.rs"));
        let mut uses = Vec::new();
        for file in &files {
            uses.extend(file_uses(&src, file, &modules, &reexports));
        }
        let mut all = modules;
        all.insert("main".into());
        Graph { uses, modules: all }
    }

    /// Top-level module -> the modules it imports.
    fn edges(&self) -> BTreeMap<&str, BTreeSet<&str>> {
        let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for module in &self.modules {
            edges.entry(module).or_default();
        }
        for u in self.uses.iter().filter(|u| u.from != u.to) {
            edges.entry(&u.from).or_default().insert(&u.to);
        }
        edges
    }

    fn render(&self) -> String {
        let mut out = String::from("module graph (who imports whom):\n");
        for (from, to) in self.edges() {
            let to: Vec<&str> = to.into_iter().collect();
            writeln!(out, "  {from} -> {}", to.join(", ")).unwrap();
        }
        out
    }

    /// Each strongly connected set of two or more modules, with the imports that close it.
    fn cycles(&self) -> Vec<String> {
        let edges = self.edges();
        let mut found = Vec::new();
        let mut seen = BTreeSet::new();
        for &start in edges.keys() {
            if seen.contains(start) {
                continue;
            }
            let component = component(&edges, start);
            seen.extend(component.iter().copied());
            if component.len() > 1 {
                found.push(self.describe(&component));
            }
        }
        found
    }

    fn describe(&self, component: &BTreeSet<&str>) -> String {
        let mut out = format!(
            "  cycle through {{{}}}:",
            Vec::from_iter(component.iter().copied()).join(", ")
        );
        let mut named = BTreeSet::new();
        for u in &self.uses {
            let inside = component.contains(u.from.as_str()) && component.contains(u.to.as_str());
            if inside && u.from != u.to && named.insert((&u.from, &u.to)) {
                write!(out, "\n    {} -> {} ({}:{})", u.from, u.to, u.file, u.line).unwrap();
            }
        }
        out
    }
}

/// The modules reachable from `start` that also reach it back (its strongly connected component).
fn component<'a>(
    edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
    start: &'a str,
) -> BTreeSet<&'a str> {
    let forward = reachable(edges, start, false);
    let backward = reachable(edges, start, true);
    forward.intersection(&backward).copied().collect()
}

fn reachable<'a>(
    edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
    start: &'a str,
    reverse: bool,
) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::from([start]);
    let mut todo = vec![start];
    while let Some(at) = todo.pop() {
        let next: Vec<&str> = if reverse {
            edges
                .iter()
                .filter(|(_, to)| to.contains(at))
                .map(|(from, _)| *from)
                .collect()
        } else {
            edges
                .get(at)
                .map(|to| to.iter().copied().collect())
                .unwrap_or_default()
        };
        // Each module enters `todo` once (`seen`), so the loop ends after at most one pass per module.
        for module in next {
            if seen.insert(module) {
                todo.push(module);
            }
        }
    }
    seen
}

fn walk(dir: &Path, depth: usize, files: &mut Vec<PathBuf>) {
    assert!(depth < MAX_DEPTH, "{} is nested too deep", dir.display());
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, depth + 1, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The module path of a file: `src/cache/policy.rs` is `cache::policy`, `src/cache/mod.rs` is `cache`,
/// `src/lib.rs` the root (empty); `src/main.rs` is the binary, a crate of its own.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut path: Vec<String> = relative
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    if matches!(path.last().map(String::as_str), Some("mod" | "lib")) {
        path.pop();
    }
    path
}

fn top_level(src: &Path, file: &Path) -> Option<String> {
    let path = module_path(src, file);
    path.first().filter(|first| *first != "main").cloned()
}

/// The names `lib.rs` re-exports at the root (`pub use config::Config;`), so `crate::Config` is `config`.
fn root_reexports(lib: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(lib).unwrap();
    let mut names = BTreeMap::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("pub use ")) {
        let path = line.trim_end_matches(';');
        if let (Some((module, _)), Some((_, name))) =
            (path.split_once("::"), path.rsplit_once("::"))
        {
            names.insert(name.to_string(), module.to_string());
        }
    }
    names
}

fn file_uses(
    src: &Path,
    file: &Path,
    modules: &BTreeSet<String>,
    reexports: &BTreeMap<String, String>,
) -> Vec<Use> {
    let text = std::fs::read_to_string(file).unwrap();
    let path = module_path(src, file);
    let is_main = path == ["main"];
    let from = if is_main {
        "main".to_string()
    } else {
        path.first().cloned().unwrap_or_default()
    };
    let name = file
        .strip_prefix(src.parent().unwrap())
        .unwrap()
        .display()
        .to_string();
    let module = if is_main { Vec::new() } else { path };
    let mut uses = Vec::new();
    for (line, first) in references(&text, &module, is_main) {
        let to = if modules.contains(&first) {
            first
        } else if let Some(module) = reexports.get(&first) {
            module.clone()
        } else {
            panic!("{name}:{line}: `{first}` is neither a top-level module nor a root re-export");
        };
        if !from.is_empty() {
            uses.push(Use {
                file: name.clone(),
                line,
                from: from.clone(),
                to,
            });
        }
    }
    uses
}

/// Every path into the crate in `text`, as (line, first segment below the root). `module` is the file's
/// module path (`super::` climbs from it, and from any inline `mod` inside it); `is_main` reads
/// `cloudreve_edge::` paths (the binary's view of the library) instead of `crate::`.
fn references(text: &str, module: &[String], is_main: bool) -> Vec<(usize, String)> {
    let code = strip(text);
    let tokens = tokens(&code);
    let root = if is_main { "cloudreve_edge" } else { "crate" };
    let mut scope: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut found = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let (line, token) = &tokens[i];
        match token.as_str() {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                if scope.last().is_some_and(|(_, d)| *d == depth) {
                    scope.pop();
                }
            }
            "mod" if tokens.get(i + 2).is_some_and(|t| t.1 == "{") => {
                scope.push((tokens[i + 1].1.clone(), depth));
            }
            t if (t == root || t == "super") && tokens.get(i + 1).is_some_and(|t| t.1 == "::") => {
                let mut at: Vec<String> = module.to_vec();
                at.extend(scope.iter().map(|(name, _)| name.clone()));
                if t == root {
                    at.clear();
                }
                i = path_targets(&tokens, i, at, *line, &mut found);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// Reads the path starting at `tokens[i]` (`crate`, `super`, `cloudreve_edge`) from module `at`; pushes
/// the top-level module(s) it names and returns the index after what it consumed.
fn path_targets(
    tokens: &[(usize, String)],
    mut i: usize,
    mut at: Vec<String>,
    line: usize,
    found: &mut Vec<(usize, String)>,
) -> usize {
    if tokens[i].1 == "super" {
        at.pop();
    }
    i += 2;
    // Each step consumes two tokens, so the loop ends with the token list.
    while i + 1 < tokens.len() && tokens[i].1 == "super" && tokens[i + 1].1 == "::" {
        at.pop();
        i += 2;
    }
    let Some((_, next)) = tokens.get(i) else {
        return i;
    };
    if let Some(first) = at.first() {
        found.push((line, first.clone()));
        return i;
    }
    if next == "*" {
        return i + 1;
    }
    if next != "{" {
        found.push((line, next.clone()));
        return i + 1;
    }
    group_targets(tokens, i, line, found)
}

/// The first segment of each element of a `{a::b, c}` group at the root.
fn group_targets(
    tokens: &[(usize, String)],
    mut i: usize,
    line: usize,
    found: &mut Vec<(usize, String)>,
) -> usize {
    let mut depth = 0usize;
    let mut expect_first = true;
    while i < tokens.len() {
        let token = tokens[i].1.as_str();
        match token {
            "{" => depth += 1,
            "}" => depth -= 1,
            "," if depth == 1 => expect_first = true,
            _ if depth == 1 && expect_first => {
                found.push((line, token.to_string()));
                expect_first = false;
            }
            _ => {}
        }
        i += 1;
        if depth == 0 {
            break;
        }
    }
    i
}

/// Identifiers, `::`, braces, commas, semicolons and `*` with their line; everything else is dropped.
fn tokens(code: &str) -> Vec<(usize, String)> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((line, chars[start..i].iter().collect()));
            continue;
        }
        if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push((line, "::".into()));
            i += 2;
            continue;
        }
        if matches!(c, '{' | '}' | ',' | ';' | '*') {
            out.push((line, c.to_string()));
        }
        line += usize::from(c == '\n');
        i += 1;
    }
    out
}

/// `text` without comments, string and character literals (their newlines kept, so lines still count).
fn strip(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let skipped = skip_literal(&chars, i);
        if skipped > i {
            out.extend(chars[i..skipped].iter().filter(|c| **c == '\n'));
            out.push(' ');
            i = skipped;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// If a comment or literal starts at `i`, the index after it; otherwise `i`.
fn skip_literal(chars: &[char], i: usize) -> usize {
    let at = |k: usize| chars.get(k).copied().unwrap_or('\0');
    let ident_before = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
    match (at(i), at(i + 1)) {
        ('/', '/') => (i..chars.len())
            .find(|&k| chars[k] == '\n')
            .unwrap_or(chars.len()),
        ('/', '*') => find_from(chars, i + 2, "*/").map_or(chars.len(), |k| k + 2),
        ('"', _) => quoted(chars, i + 1, '"'),
        ('b', '"') if !ident_before => quoted(chars, i + 2, '"'),
        ('r', '"' | '#') | ('b', 'r') if !ident_before => raw(chars, i),
        ('\'', '\\') => quoted(chars, i + 1, '\''),
        ('\'', _) if at(i + 2) == '\'' => i + 3,
        ('b', '\'') if !ident_before => quoted(chars, i + 2, '\''),
        _ => i,
    }
}

/// The index after the closing `close` of a literal whose body starts at `i`, escapes honoured.
fn quoted(chars: &[char], mut i: usize, close: char) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            c if c == close => return i + 1,
            _ => i += 1,
        }
    }
    chars.len()
}

/// A raw string `r#"…"#` (or `br"…"`) starting at `i`; `i` itself when the `r` starts an identifier.
fn raw(chars: &[char], i: usize) -> usize {
    let mut k = i + if chars[i] == 'b' { 2 } else { 1 };
    let hashes = chars[k..].iter().take_while(|c| **c == '#').count();
    k += hashes;
    if chars.get(k) != Some(&'"') {
        return i;
    }
    let close: String = std::iter::once('"')
        .chain(std::iter::repeat_n('#', hashes))
        .collect();
    find_from(chars, k + 1, &close).map_or(chars.len(), |end| end + close.len())
}

fn find_from(chars: &[char], from: usize, needle: &str) -> Option<usize> {
    let needle: Vec<char> = needle.chars().collect();
    (from..chars.len()).find(|&k| chars[k..].starts_with(&needle))
}
