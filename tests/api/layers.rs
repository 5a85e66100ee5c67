//! The modules form layers: store and crypto at the bottom, then tokens,
//! upstream, cutover and auth, with the HTTP faces and the CLI on top. A
//! module cycle lets a change anywhere in the loop ripple everywhere in it,
//! and it is the first step towards a layer quietly depending on the one
//! above it, so this test reads the source and fails on any cycle.
//!
//! The graph is built from the text, not from the compiler: every
//! `src/**/*.rs` file except `lib.rs` and `main.rs` is a node, and every
//! path a file names that leads into another module (`use crate::…`,
//! `crate::…`, `super::…`, `self::…`, a declared child module, or a module
//! brought into scope by `use`) is an edge to the deepest module file that
//! path reaches. A file reaching its own ancestors (`super::Error` in
//! `store/jobs.rs`) is no edge: a child module is part of its parent, and
//! the parent's `mod.rs` is the shared vocabulary of that subtree, so what
//! the layers constrain is the parent's other references, not those. Comments, string literals
//! and `#[cfg(test)] mod … { … }` blocks are skipped: test code may reach
//! anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

/// A module path below the crate root, `["oidc", "token"]`.
type ModPath = Vec<String>;

#[derive(Default)]
struct Graph {
    /// Module path to the file that holds it.
    files: BTreeMap<ModPath, String>,
    /// (from file, to file) to the paths, as resolved, that make the edge.
    edges: BTreeMap<(String, String), BTreeSet<String>>,
}

/// One strongly connected component with more than one file.
struct Cycle {
    files: Vec<String>,
    report: String,
}

#[test]
fn the_module_graph_has_no_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = Vec::new();
    read_tree(root, &root.join("src"), &mut sources);
    assert!(
        sources.len() > 20,
        "expected to read the crate's sources, found {} files",
        sources.len()
    );
    let graph = Graph::build(&sources);
    assert!(
        !graph.edges.is_empty(),
        "no edges found: the reader is broken"
    );

    let mut failures = String::new();
    for cycle in graph.cycles() {
        failures.push_str(&cycle.report);
    }
    assert!(
        failures.is_empty(),
        "module cycles (move the shared piece down a layer rather than hiding the import):\n{failures}"
    );
}

fn read_tree(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            read_tree(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((rel, text));
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`; the crate roots are `None`.
fn module_of(file: &str) -> Option<ModPath> {
    let rel = file.strip_prefix("src/")?.strip_suffix(".rs")?;
    if rel == "lib" || rel == "main" {
        return None;
    }
    let mut parts: ModPath = rel.split('/').map(str::to_string).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    Some(parts)
}

impl Graph {
    fn build(sources: &[(String, String)]) -> Graph {
        let mut graph = Graph::default();
        for (file, _) in sources {
            if let Some(m) = module_of(file) {
                graph.files.insert(m, file.clone());
            }
        }
        for (file, text) in sources {
            let Some(module) = module_of(file) else {
                continue;
            };
            let code = drop_test_modules(&tokenize(&blank_comments_and_literals(text)));
            for (path, name) in references(&module, &code) {
                if let Some(target) = graph.resolve(&path)
                    && target != *file
                    && !module.starts_with(&module_of(&target).unwrap())
                {
                    graph
                        .edges
                        .entry((file.clone(), target))
                        .or_default()
                        .insert(name);
                }
            }
        }
        graph
    }

    /// The file of the deepest module an absolute path reaches.
    fn resolve(&self, path: &[String]) -> Option<String> {
        (1..=path.len())
            .rev()
            .find_map(|k| self.files.get(&path[..k]).cloned())
    }

    /// Strongly connected components of more than one file (Tarjan).
    fn cycles(&self) -> Vec<Cycle> {
        let nodes: Vec<&String> = self.files.values().collect();
        let index_of: BTreeMap<&String, usize> =
            nodes.iter().enumerate().map(|(i, f)| (*f, i)).collect();
        let mut succ = vec![Vec::new(); nodes.len()];
        for (from, to) in self.edges.keys() {
            succ[index_of[from]].push(index_of[to]);
        }
        let mut tarjan = Tarjan {
            succ: &succ,
            index: vec![None; nodes.len()],
            low: vec![0; nodes.len()],
            on_stack: vec![false; nodes.len()],
            stack: Vec::new(),
            next: 0,
            components: Vec::new(),
        };
        for v in 0..nodes.len() {
            if tarjan.index[v].is_none() {
                tarjan.visit(v);
            }
        }
        let mut cycles = Vec::new();
        for component in tarjan.components {
            if component.len() < 2 {
                continue;
            }
            let mut files: Vec<String> = component.iter().map(|&i| nodes[i].clone()).collect();
            files.sort();
            let mut report = format!("cycle: {}\n", files.join(", "));
            for ((from, to), names) in &self.edges {
                if files.contains(from) && files.contains(to) {
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    let _ = writeln!(report, "  {from} -> {to}: {}", names.join(", "));
                }
            }
            cycles.push(Cycle { files, report });
        }
        cycles.sort_by(|a, b| a.files.cmp(&b.files));
        cycles
    }
}

struct Tarjan<'a> {
    succ: &'a [Vec<usize>],
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    next: usize,
    components: Vec<Vec<usize>>,
}

impl Tarjan<'_> {
    fn visit(&mut self, v: usize) {
        self.index[v] = Some(self.next);
        self.low[v] = self.next;
        self.next += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        for &w in &self.succ[v] {
            match self.index[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            let mut component = Vec::new();
            loop {
                let w = self.stack.pop().unwrap();
                self.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            self.components.push(component);
        }
    }
}

/// The source with comments (line, block, doc) and the insides of string
/// and character literals replaced by spaces, so neither a URL in a string
/// nor a path in a doc example reads as a reference. Newlines are kept.
fn blank_comments_and_literals(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let is_ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let prev_ident = i > 0 && is_ident(c[i - 1]);
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
        } else if !prev_ident && (c[i] == 'r' || (c[i] == 'b' && c.get(i + 1) == Some(&'r'))) && {
            // A raw string: r"…", r#"…"#, br"…".
            let mut j = i + if c[i] == 'b' { 2 } else { 1 };
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            c.get(j) == Some(&'"')
        } {
            let mut j = i + if c[i] == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while c[j] == '#' {
                hashes += 1;
                j += 1;
            }
            out.extend(std::iter::repeat_n(' ', j - i));
            out.push('"');
            j += 1;
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
                    out.push('"');
                    out.extend(std::iter::repeat_n(' ', hashes));
                    j += 1 + hashes;
                    break;
                }
                out.push(blank(c[j]));
                j += 1;
            }
            i = j;
        } else if c[i] == '"' {
            out.push('"');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' && i + 1 < c.len() {
                    out.push(' ');
                    i += 1;
                }
                out.push(blank(c[i]));
                i += 1;
            }
            out.push('"');
            i += 1;
        } else if c[i] == '\'' {
            // A character literal ('a', '\n', '\u{..}'), or else a lifetime.
            let end = if c.get(i + 1) == Some(&'\\') {
                (i + 2..c.len()).find(|&j| c[j] == '\'')
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.push('\'');
                    out.extend(std::iter::repeat_n(' ', end - i - 1));
                    out.push('\'');
                    i = end + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
}

fn tokenize(code: &str) -> Vec<Tok> {
    let c: Vec<char> = code.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if c[i].is_whitespace() {
            i += 1;
        } else if c[i].is_alphabetic() || c[i] == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            // `r#type` is the identifier `type`.
            if word == "r"
                && c.get(i) == Some(&'#')
                && c.get(i + 1).is_some_and(|n| n.is_alphabetic())
            {
                continue;
            }
            toks.push(Tok::Ident(word));
        } else if c[i].is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_' || c[i] == '.') {
                i += 1;
            }
            toks.push(Tok::Punct('0'));
        } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
            toks.push(Tok::Sep);
            i += 2;
        } else {
            toks.push(Tok::Punct(c[i]));
            i += 1;
        }
    }
    toks
}

fn is_ident(t: Option<&Tok>, word: &str) -> bool {
    matches!(t, Some(Tok::Ident(w)) if w == word)
}

/// Drops `#[cfg(test)] mod name { … }`: test code may reach anywhere.
fn drop_test_modules(toks: &[Tok]) -> Vec<Tok> {
    let pattern = [
        Tok::Punct('#'),
        Tok::Punct('['),
        Tok::Ident("cfg".into()),
        Tok::Punct('('),
        Tok::Ident("test".into()),
        Tok::Punct(')'),
        Tok::Punct(']'),
    ];
    let mut out = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        if toks[i..].starts_with(&pattern) {
            let mut j = i + pattern.len();
            if is_ident(toks.get(j), "pub") {
                j += 1;
            }
            if is_ident(toks.get(j), "mod") && toks.get(j + 2) == Some(&Tok::Punct('{')) {
                let mut depth = 0;
                j += 2;
                while j < toks.len() {
                    match toks[j] {
                        Tok::Punct('{') => depth += 1,
                        Tok::Punct('}') => depth -= 1,
                        _ => {}
                    }
                    j += 1;
                    if depth == 0 {
                        break;
                    }
                }
                i = j;
                continue;
            }
        }
        out.push(toks[i].clone());
        i += 1;
    }
    out
}

/// Every path this module names that may lead into another module, made
/// absolute (below the crate root), each with how it reads for the report.
fn references(module: &[String], toks: &[Tok]) -> Vec<(ModPath, String)> {
    // Child modules declared with `mod name;`.
    let mut children = BTreeSet::new();
    for w in toks.windows(3) {
        if let [Tok::Ident(m), Tok::Ident(name), Tok::Punct(';')] = w
            && m == "mod"
        {
            children.insert(name.clone());
        }
    }
    let mut scope = Scope {
        module,
        children,
        aliases: BTreeMap::new(),
    };

    // `use` trees first: they may bring modules into scope by name.
    let mut refs = Vec::new();
    let mut in_use = vec![false; toks.len()];
    let mut i = 0;
    while i < toks.len() {
        if is_ident(toks.get(i), "use") {
            let mut leaves = Vec::new();
            let end = parse_use_tree(toks, i + 1, Vec::new(), &mut leaves);
            let end = toks[end..]
                .iter()
                .position(|t| *t == Tok::Punct(';'))
                .map_or(toks.len(), |p| end + p + 1);
            in_use[i..end].iter_mut().for_each(|b| *b = true);
            for (mut path, alias) in leaves {
                if path.last().is_some_and(|s| s == "self") {
                    path.pop();
                }
                if let Some(abs) = scope.absolute(&path) {
                    if let Some(name) = alias.or_else(|| path.last().cloned())
                        && name != "*"
                        && name != "_"
                    {
                        scope.aliases.insert(name, abs.clone());
                    }
                    let shown = abs.join("::");
                    refs.push((abs, shown));
                }
            }
            i = end;
        } else {
            i += 1;
        }
    }
    // Aliases of things that are not modules are harmless: resolution only
    // ever lands on a module file, and a type name followed by `::` reaches
    // the module that type came from.

    // Then every other path: `a::b::c` not itself preceded by `::`.
    let mut i = 0;
    while i < toks.len() {
        let starts = !in_use[i]
            && matches!(toks[i], Tok::Ident(_))
            && toks.get(i + 1) == Some(&Tok::Sep)
            && (i == 0 || toks[i - 1] != Tok::Sep);
        if !starts {
            i += 1;
            continue;
        }
        let mut path = Vec::new();
        while let Some(Tok::Ident(w)) = toks.get(i) {
            path.push(w.clone());
            i += 1;
            if toks.get(i) == Some(&Tok::Sep) {
                i += 1;
            } else {
                break;
            }
        }
        if let Some(abs) = scope.absolute(&path) {
            let shown = abs.join("::");
            refs.push((abs, shown));
        }
    }
    refs
}

struct Scope<'a> {
    module: &'a [String],
    children: BTreeSet<String>,
    /// Names brought into scope by `use`, to what they stand for.
    aliases: BTreeMap<String, ModPath>,
}

impl Scope<'_> {
    /// The path below the crate root, or `None` for paths into other crates.
    fn absolute(&self, path: &[String]) -> Option<ModPath> {
        let first = path.first()?;
        match first.as_str() {
            "crate" => Some(path[1..].to_vec()),
            "self" | "super" => {
                let mut base = self.module.to_vec();
                let mut rest = &path[1..];
                if first == "super" {
                    base.pop()?;
                }
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
                base.extend(rest.iter().cloned());
                Some(base)
            }
            name if self.children.contains(name) => {
                let mut base = self.module.to_vec();
                base.extend(path.iter().cloned());
                Some(base)
            }
            name => {
                let mut base = self.aliases.get(name)?.clone();
                base.extend(path[1..].iter().cloned());
                Some(base)
            }
        }
    }
}

/// Parses one use tree from `i`, appending each leaf path (with its `as`
/// name, if any) under `prefix`. Returns where the tree ends.
fn parse_use_tree(
    toks: &[Tok],
    mut i: usize,
    mut path: Vec<String>,
    leaves: &mut Vec<(Vec<String>, Option<String>)>,
) -> usize {
    loop {
        match toks.get(i) {
            Some(Tok::Sep) => i += 1,
            Some(Tok::Ident(w)) => {
                path.push(w.clone());
                i += 1;
                if toks.get(i) == Some(&Tok::Sep) {
                    i += 1;
                } else {
                    break;
                }
            }
            Some(Tok::Punct('*')) => {
                path.push("*".into());
                i += 1;
                break;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    match toks.get(i) {
                        None => return i,
                        Some(Tok::Punct('}')) => return i + 1,
                        Some(Tok::Punct(',')) => i += 1,
                        Some(_) => {
                            let before = i;
                            i = parse_use_tree(toks, i, path.clone(), leaves);
                            if i == before {
                                i += 1;
                            }
                        }
                    }
                }
            }
            _ => break,
        }
    }
    let mut alias = None;
    if is_ident(toks.get(i), "as")
        && let Some(Tok::Ident(name)) = toks.get(i + 1)
    {
        alias = Some(name.clone());
        i += 2;
    }
    if path.last().is_some_and(|s| s == "*") {
        path.pop();
        alias = Some("*".into());
    }
    if !path.is_empty() {
        leaves.push((path, alias));
    }
    i
}

// The check checks itself: a reader that silently found nothing would pass.

fn fake(files: &[(&str, &str)]) -> Graph {
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect();
    Graph::build(&sources)
}

fn cycle_files(graph: &Graph) -> Vec<Vec<String>> {
    graph.cycles().into_iter().map(|c| c.files).collect()
}

const FAKE_LAYERS: &[(&str, &str)] = &[
    ("src/lib.rs", "pub mod a; pub mod b; pub mod c;"),
    (
        "src/a/mod.rs",
        "//! Uses `crate::b::Thing` only in a comment.\n\
         pub mod inner;\n\
         pub use inner::Widget;\n\
         pub fn f() -> &'static str { \"crate::c::not_a_path\" }\n\
         #[cfg(test)]\nmod tests {\n    use crate::c::Top;\n    fn t() { crate::b::g(); }\n}\n",
    ),
    (
        "src/a/inner.rs",
        "pub struct Widget;\n/* crate::c::z */\nfn uses() { let _ = 'x'; }\n",
    ),
    (
        "src/b.rs",
        "use crate::a::{self, inner::Widget};\npub fn g() { a::f(); }\n",
    ),
    (
        "src/c.rs",
        "use crate::{a, b::g as gee};\npub struct Top;\n",
    ),
];

#[test]
fn the_checker_sees_no_cycle_in_a_layered_tree() {
    let graph = fake(FAKE_LAYERS);
    assert!(cycle_files(&graph).is_empty(), "{}", report(&graph));
    let edges: Vec<(&str, &str)> = graph
        .edges
        .keys()
        .map(|(f, t)| (f.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        edges,
        [
            ("src/a/mod.rs", "src/a/inner.rs"),
            ("src/b.rs", "src/a/inner.rs"),
            ("src/b.rs", "src/a/mod.rs"),
            ("src/c.rs", "src/a/mod.rs"),
            ("src/c.rs", "src/b.rs"),
        ]
    );
}

#[test]
fn the_checker_finds_a_cycle_through_an_inline_path_and_super() {
    let mut files = FAKE_LAYERS.to_vec();
    // inner reaches c inline; c reaches b and a; both reach inner. Its
    // `super::f` (its own parent) is no edge: a reaches it through c.
    files[2] = (
        "src/a/inner.rs",
        "pub struct Widget;\nfn up() -> usize { crate::c::Top; super::f().len() }\n",
    );
    let graph = fake(&files);
    assert_eq!(
        cycle_files(&graph),
        [vec![
            "src/a/inner.rs".to_string(),
            "src/a/mod.rs".into(),
            "src/b.rs".into(),
            "src/c.rs".into(),
        ]],
        "{}",
        report(&graph)
    );
    let cycle = &graph.cycles()[0].report;
    assert!(
        cycle.contains("src/a/inner.rs -> src/c.rs: c::Top"),
        "{cycle}"
    );
    assert!(cycle.contains("src/c.rs -> src/b.rs: b::g"), "{cycle}");
    assert!(!cycle.contains("src/a/inner.rs -> src/a/mod.rs"), "{cycle}");
}

#[test]
fn the_checker_finds_a_cycle_through_grouped_use_and_a_module_alias() {
    let files = [
        (
            "src/x/mod.rs",
            "mod y;\nuse crate::z;\nfn f() { z::deep::g(); }\n",
        ),
        ("src/x/y.rs", "pub fn h() {}\n"),
        ("src/z/mod.rs", "pub mod deep;\n"),
        (
            "src/z/deep.rs",
            "use crate::{x::{self}, z};\npub fn g() {}\n",
        ),
    ];
    let graph = fake(&files);
    assert_eq!(
        cycle_files(&graph),
        [vec!["src/x/mod.rs".to_string(), "src/z/deep.rs".into()]],
        "{}",
        report(&graph)
    );
}

fn report(graph: &Graph) -> String {
    let mut out = String::new();
    for ((from, to), names) in &graph.edges {
        let _ = writeln!(out, "{from} -> {to}: {names:?}");
    }
    out
}
