//! The layer rule: each folder under `src/` is a layer, and a module uses only the layers below
//! it, so dependencies run one way, from `cli` down to `util` and `error` (see the crate docs in
//! `src/lib.rs`). A layer can then be read, tested and changed knowing only what lies beneath it.
//!
//! The rule is read from the `crate::` paths of every source file, with the standard library
//! only, so it holds even while the crate does not build. Also checked: no cycles between the
//! modules of one layer, and clap and anyhow stay at the edge, in `cli`.
//!
//! Comments and string literals are blanked before paths are read: a doc link or a message is
//! not a dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Layers, bottom first, split by `|`; a module may use only modules of a lower layer.
const LAYERS: &str =
    "error | util | market | store | metrics | recorder offline exchange relay | demo | cli";

const CLAP_DERIVES: &[&str] = &["Parser", "Args", "Subcommand", "ValueEnum"];

/// (path relative to the manifest dir, source text)
type Files = [(String, String)];
type Token = (usize, String);
type Ref = (usize, String, Option<String>);

fn rank(module: &str) -> Option<usize> {
    LAYERS
        .split('|')
        .position(|layer| layer.split_whitespace().any(|m| m == module))
}

/// Every file under src/ but lib.rs, which only declares the modules, and main.rs, which uses the
/// crate from outside.
fn source_files() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    walk(&root.join("src"), &mut paths);
    paths.sort();
    let files: Vec<_> = paths
        .iter()
        .map(|path| {
            let rel = path.strip_prefix(root).expect("under the manifest dir");
            let rel = rel.to_string_lossy().replace('\\', "/");
            let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {rel}: {e}"));
            (rel, text)
        })
        .filter(|(rel, _)| rel != "src/lib.rs" && rel != "src/main.rs")
        .collect();
    assert!(!files.is_empty(), "no sources in {}", root.display());
    files
}

/// A file's top module and its node in the cycle graph: src/exchange/sim/hub.rs is in
/// `exchange`, node `exchange::sim`; src/recorder/mod.rs is in `recorder`, node `recorder`.
fn module_of(path: &str) -> (String, String) {
    let parts: Vec<&str> = path.trim_start_matches("src/").split('/').collect();
    let top = parts[0].trim_end_matches(".rs");
    match parts.get(1).filter(|part| **part != "mod.rs") {
        Some(second) => (
            top.into(),
            format!("{top}::{}", second.trim_end_matches(".rs")),
        ),
        None => (top.into(), top.into()),
    }
}

fn tok(toks: &[Token], i: usize) -> &str {
    toks.get(i).map_or("", |t| t.1.as_str())
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The source with comments and string literals blanked, line breaks kept.
fn code_only(source: &str) -> String {
    let s: Vec<char> = source.chars().collect();
    let at = |i: usize| s.get(i).copied().unwrap_or('\0');
    let find = |from: usize, end: &str| {
        let end: Vec<char> = end.chars().collect();
        let found = (from..s.len()).find(|&j| s[j..].starts_with(&end));
        found.map_or(s.len(), |j| j + end.len())
    };
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < s.len() {
        // `r` starts a raw string only as a token of its own or after the `b` of `br`
        let fresh = |j: usize| j == 0 || !is_ident(s[j - 1]);
        let fresh = fresh(i) || at(i - 1) == 'b' && fresh(i - 1);
        let hashes = (i + 1..s.len()).take_while(|&j| s[j] == '#').count();
        let end = match (at(i), at(i + 1)) {
            ('/', '/') => (i..s.len()).find(|&j| s[j] == '\n').unwrap_or(s.len()),
            // not nested: src/ has no block comments to speak of
            ('/', '*') => find(i + 2, "*/"),
            ('r', _) if fresh && at(i + 1 + hashes) == '"' => {
                find(i + 2 + hashes, &format!("\"{}", "#".repeat(hashes)))
            }
            ('"', _) => {
                let mut j = i + 1;
                while j < s.len() && s[j] != '"' {
                    j += if s[j] == '\\' { 2 } else { 1 };
                }
                j + 1
            }
            ('\'', '\\') => find(i + 3, "'"),
            ('\'', _) if at(i + 2) == '\'' => i + 3,
            (c, _) => {
                out.push(c);
                i += 1;
                continue;
            }
        };
        let end = end.min(s.len());
        for &c in &s[i..end] {
            out.push(if c == '\n' { '\n' } else { ' ' });
        }
        i = end;
    }
    out
}

/// Identifiers, `::` and single punctuation characters, each with its line number.
fn tokens(code: &str) -> Vec<Token> {
    let s: Vec<char> = code.chars().collect();
    let (mut out, mut line, mut i) = (Vec::new(), 1, 0);
    while i < s.len() {
        let len = match s[i] {
            c if is_ident(c) => s[i..].iter().take_while(|&&c| is_ident(c)).count(),
            ':' if s.get(i + 1) == Some(&':') => 2,
            _ => 1,
        };
        if !s[i].is_whitespace() {
            out.push((line, s[i..i + len].iter().collect()));
        }
        line += usize::from(s[i] == '\n');
        i += len;
    }
    out
}

/// Every `crate::` path of a source as (line, top module, second segment), one per leaf of a
/// `use` tree. Paths in comments and string literals are not counted.
fn crate_refs(source: &str) -> Vec<Ref> {
    let toks = tokens(&code_only(source));
    let mut out = Vec::new();
    for (i, (_, tok)) in toks.iter().enumerate() {
        if tok == "crate" && self::tok(&toks, i + 1) == "::" {
            use_tree(&toks, i + 2, &[], &mut out);
        }
    }
    out
}

/// Walks one use tree (or inline path) from `i`, returning the index after it.
fn use_tree(toks: &[Token], mut i: usize, path: &[(usize, &str)], out: &mut Vec<Ref>) -> usize {
    let tok = |i: usize| tok(toks, i);
    match tok(i) {
        "{" => {
            i += 1;
            while !matches!(tok(i), "}" | "") {
                i = use_tree(toks, i, path, out);
                // past an `as` rename or a glob to the next member
                while !matches!(tok(i), "," | "}" | "") {
                    i += 1;
                }
                i += usize::from(tok(i) == ",");
            }
            i + 1
        }
        name if name.starts_with(|c: char| c.is_alphabetic() || c == '_') => {
            let mut path = path.to_vec();
            path.push((toks[i].0, name));
            if tok(i + 1) == "::" {
                return use_tree(toks, i + 2, &path, out);
            }
            leaf(&path, out);
            i + 1
        }
        _ => {
            leaf(path, out);
            i
        }
    }
}

fn leaf(path: &[(usize, &str)], out: &mut Vec<Ref>) {
    if let Some(&(line, top)) = path.first().filter(|(_, top)| *top != "self") {
        let second = path.get(1).filter(|(_, s)| *s != "self");
        out.push((line, top.to_string(), second.map(|(_, s)| s.to_string())));
    }
}

fn layer_violations(files: &Files) -> Vec<String> {
    let mut out = Vec::new();
    for (path, source) in files {
        let (from, _) = module_of(path);
        let Some(from_rank) = rank(&from) else {
            out.push(format!("{path}:1: {from} is not in the layer table"));
            continue;
        };
        for (line, to, _) in crate_refs(source) {
            let why = match rank(&to) {
                _ if to == from => continue,
                None => "not in the layer table",
                Some(rank) if rank == from_rank => "an arrow between peers",
                Some(rank) if rank > from_rank => "an arrow up the layers",
                Some(_) => continue,
            };
            out.push(format!("{path}:{line}: {from} uses {to}: {why}"));
        }
    }
    out.dedup();
    out
}

/// Edge from node to node, with where it was first seen.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn cycles(files: &Files) -> Vec<String> {
    let nodes: BTreeSet<String> = files.iter().map(|(path, _)| module_of(path).1).collect();
    let mut graph = Graph::new();
    for (path, source) in files {
        let (top, from) = module_of(path);
        for (line, _, second) in crate_refs(source).into_iter().filter(|r| r.1 == top) {
            // an item that is not a module of its own lives in the layer's mod.rs
            let to = second.map(|second| format!("{top}::{second}"));
            let to = to
                .filter(|to| nodes.contains(to))
                .unwrap_or_else(|| top.clone());
            if to != from {
                let edges = graph.entry(from.clone()).or_default();
                edges.entry(to).or_insert_with(|| format!("{path}:{line}"));
            }
        }
    }
    let (mut out, mut done) = (Vec::new(), BTreeSet::new());
    for start in graph.keys() {
        walk(start, &graph, &mut Vec::new(), &mut done, &mut out);
    }
    out
}

/// Depth first; an edge back into the stack closes a cycle, reported from that edge's file.
fn walk<'g>(
    node: &'g str,
    graph: &'g Graph,
    stack: &mut Vec<&'g str>,
    done: &mut BTreeSet<&'g str>,
    out: &mut Vec<String>,
) {
    if done.contains(node) {
        return;
    }
    stack.push(node);
    for (next, at) in graph.get(node).into_iter().flatten() {
        if let Some(pos) = stack.iter().position(|n| n == next) {
            let cycle = stack[pos..].join(" -> ");
            out.push(format!("{at}: cycle: {node} -> {cycle}"));
        } else {
            walk(next, graph, stack, done, out);
        }
    }
    stack.pop();
    done.insert(node);
}

/// Lines naming `krate` as a path (`krate::…`, `use krate`), outside comments and strings.
fn crate_lines(toks: &[Token], krate: &str) -> Vec<usize> {
    let tok = |i: usize| tok(toks, i);
    (0..toks.len())
        .filter(|&i| tok(i) == krate && (tok(i + 1) == "::" || i > 0 && tok(i - 1) == "use"))
        .map(|i| toks[i].0)
        .collect()
}

fn clap_lines(toks: &[Token]) -> Vec<usize> {
    let tok = |i: usize| tok(toks, i);
    let attrs = (0..toks.len()).filter(|&i| {
        let attr = tok(i) == "#" && tok(i + 1) == "[" && tok(i + 3) == "(";
        let derive = || toks[i + 4..].iter().take_while(|t| t.1 != ")");
        attr && (matches!(tok(i + 2), "arg" | "command" | "clap")
            || tok(i + 2) == "derive" && derive().any(|t| CLAP_DERIVES.contains(&t.1.as_str())))
    });
    let mut lines = crate_lines(toks, "clap");
    lines.extend(attrs.map(|i| toks[i].0));
    lines.sort_unstable();
    lines
}

/// Files outside src/cli/ whose code mentions what `lines` finds.
fn outside_cli(files: &Files, what: &str, lines: impl Fn(&[Token]) -> Vec<usize>) -> Vec<String> {
    let mut out = Vec::new();
    for (path, source) in files.iter().filter(|file| !file.0.starts_with("src/cli/")) {
        let mut found = lines(&tokens(&code_only(source)));
        found.dedup();
        for line in found {
            out.push(format!("{path}:{line}: {what} outside cli"));
        }
    }
    out
}

fn clap_violations(files: &Files) -> Vec<String> {
    outside_cli(files, "clap", clap_lines)
}

fn anyhow_violations(files: &Files) -> Vec<String> {
    outside_cli(files, "anyhow", |toks| crate_lines(toks, "anyhow"))
}

fn assert_clean(rule: &str, violations: &[String]) {
    let (n, all) = (violations.len(), violations.join("\n"));
    assert!(n == 0, "{rule}: {n} violation(s)\n{all}");
}

#[test]
fn layers_point_down() {
    assert_clean("layers", &layer_violations(&source_files()));
}

#[test]
fn no_cycles_within_a_layer() {
    assert_clean("cycles", &cycles(&source_files()));
}

#[test]
fn clap_only_in_cli() {
    assert_clean("clap", &clap_violations(&source_files()));
}

#[test]
fn anyhow_only_at_the_edge() {
    assert_clean("anyhow", &anyhow_violations(&source_files()));
}

/// Each case: source, then its refs as `line top::second`, `;`-separated.
const REF_CASES: &[(&str, &str)] = &[
    ("use crate::market::book::Book;", "1 market::book"),
    (
        "use crate::{\n  market::{self, book::{Book, Side}},\n  store::line as l,\n  error::*,\n};",
        "2 market; 2 market::book; 2 market::book; 3 store::line; 4 error",
    ),
    ("let t = crate::util::clock::now();", "1 util::clock"),
    ("fn f() -> crate::Result<()> {}", "1 Result"),
    ("// use crate::store;\n/// [x](crate::demo)", ""),
    ("/* crate::cli */ let x = 1;", ""),
    // strings are data, not dependencies; a `//` or `"` inside one does not end the code
    ("let s = \"crate::store\"; r#\"crate::cli\"#;", ""),
    ("let b = br#\"\\\"#; crate::store::y();", "1 store::y"),
    ("let u = \"http://x\"; crate::store::y();", "1 store::y"),
    ("let q = '\"'; crate::util::X as &'a str", "1 util::X"),
    ("pub(crate) fn f() {}\nextern crate alloc;", ""),
];

#[test]
fn crate_refs_reads_paths() {
    for (source, want) in REF_CASES {
        let mut refs = Vec::new();
        for (line, top, second) in crate_refs(source) {
            let second = second
                .map(|second| format!("::{second}"))
                .unwrap_or_default();
            refs.push(format!("{line} {top}{second}"));
        }
        assert_eq!(refs.join("; "), *want, "source: {source}");
    }
}

/// Files of a synthetic tree, each after a `--- path` line.
fn tree(text: &str) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for file in text.split("--- ").skip(1) {
        let (path, source) = file.split_once('\n').expect("a path line");
        files.push((path.into(), source.into()));
    }
    files
}

/// Every check over a tree, its findings one per line.
fn check_all(text: &str) -> String {
    let files = tree(text);
    let checks = [layer_violations, cycles, clap_violations, anyhow_violations];
    let found: Vec<String> = checks.iter().flat_map(|check| check(&files)).collect();
    found.join("\n")
}

const BROKEN: &str = r"
--- src/store/line.rs
use crate::recorder::writer::Writer;
use crate::market::book;
--- src/recorder/feed.rs
use crate::{recorder::snapshot::Fetch,
    offline::replay};
--- src/recorder/snapshot.rs
//! crate::cli
fn f() { crate::recorder::feed::run() }
--- src/recorder/mod.rs
pub use crate::recorder::feed::Group;
--- src/market/mod.rs
use crate::nowhere;
--- src/gadget.rs
fn f() {}
--- src/exchange/sim/mod.rs
#[derive(Debug, clap::Args)]
struct A { #[arg(long)] x: u8 }
--- src/demo.rs
use anyhow::Context;
fn f() -> anyhow::Result<()> { Ok(()) }
--- src/cli/mod.rs
use anyhow::Result;
use clap::Parser;
use crate::demo;
";

const BROKEN_FINDINGS: &str = "\
src/store/line.rs:1: store uses recorder: an arrow up the layers
src/recorder/feed.rs:2: recorder uses offline: an arrow between peers
src/market/mod.rs:1: market uses nowhere: not in the layer table
src/gadget.rs:1: gadget is not in the layer table
src/recorder/snapshot.rs:2: cycle: recorder::snapshot -> recorder::feed -> recorder::snapshot
src/exchange/sim/mod.rs:1: clap outside cli
src/exchange/sim/mod.rs:2: clap outside cli
src/demo.rs:1: anyhow outside cli
src/demo.rs:2: anyhow outside cli";

#[test]
fn checks_report_known_violations() {
    assert_eq!(check_all(BROKEN), BROKEN_FINDINGS);
}

const CLEAN: &str = r"
--- src/market/book.rs
use crate::util::clock::wall_ns;
--- src/recorder/feed.rs
use crate::{market::book, store::line, recorder::event::Event};
--- src/recorder/event.rs
use crate::recorder::Config; // crate::cli, anyhow::Error
--- src/recorder/mod.rs
#[derive(Debug, Clone)]
pub struct Config;
--- src/cli/mod.rs
#[derive(clap::Parser)]
struct Cli;
";

#[test]
fn checks_pass_a_clean_tree() {
    assert_eq!(check_all(CLEAN), "");
}
