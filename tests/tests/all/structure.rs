//! The shape of the host's source tree, read from `host/src`: functions short enough to
//! hold in one's head, imports between files that point one way, HTTP statuses only in
//! `http/` and SQL not in `fhir/`; a check with a list of what is known to remain lets
//! that list only shrink.
//!
//! The sources are read with a small lexer (comments, strings and character literals
//! blanked out, braces counted) rather than a full parser: it needs no more than where
//! each `fn` body starts and ends and which module paths the code names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FUNCTION_LINES: usize = 80;

fn host_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/src")
}

/// Functions over the limit (`path name`) that wait for a change of their own. A function
/// that gets under the limit must leave the list, so that it only ever gets shorter.
const KNOWN_LONG: &[&str] = &[];

#[test]
fn no_function_in_host_src_is_over_80_lines() {
    let long = long_functions(&host_src(), "", MAX_FUNCTION_LINES);
    assert_no_new_long(&long, "KNOWN_LONG", KNOWN_LONG, MAX_FUNCTION_LINES);
}

const MAX_TEST_FUNCTION_LINES: usize = 100;

/// Functions of `tests/all` over the limit with no `/// Long:` reason yet, each waiting
/// for a change of its own; the list may only shrink.
const KNOWN_LONG_TESTS: &[&str] = &[];

/// A function of the tests over 100 lines says why in its doc comment, with a line
/// `/// Long: <reason>` (a table of cases, one journey that must run in order).
#[test]
fn no_test_function_is_over_100_lines_without_a_reason() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/all");
    let unexplained: Vec<LongFunction> = long_functions(&src, "", MAX_TEST_FUNCTION_LINES)
        .into_iter()
        .filter(|f| {
            let text = std::fs::read_to_string(src.join(&f.path)).expect("test is readable");
            long_reason(&text, f.line).is_none()
        })
        .collect();
    assert_no_new_long(
        &unexplained,
        "KNOWN_LONG_TESTS",
        KNOWN_LONG_TESTS,
        MAX_TEST_FUNCTION_LINES,
    );
}

/// No function of `long` (all over `max` lines) is missing from the list `name` of those
/// `known` to remain, and each of `known` is still among them.
fn assert_no_new_long(long: &[LongFunction], name: &str, known: &[&str], max: usize) {
    let new: Vec<String> = long
        .iter()
        .filter(|f| !known.contains(&f.key().as_str()))
        .map(LongFunction::to_string)
        .collect();
    assert!(
        new.is_empty(),
        "functions over {max} lines:\n{}",
        new.join("\n")
    );
    assert_still_found(name, &format!("over {max} lines"), known, |k| {
        long.iter().any(|f| f.key() == k)
    });
}

/// The reason of a `/// Long: <reason>` line in the doc comment directly above the `fn`
/// on `line` (from 1) of `text`, attributes between them allowed.
fn long_reason(text: &str, line: usize) -> Option<&str> {
    let above: Vec<&str> = text.lines().take(line - 1).collect();
    above
        .into_iter()
        .rev()
        .map(str::trim)
        .take_while(|l| l.starts_with("///") || l.starts_with("#["))
        .find_map(|l| l.strip_prefix("/// Long:").map(str::trim))
        .filter(|reason| !reason.is_empty())
}

/// Circles that remain, each waiting for a change of its own; the list may only shrink.
const KNOWN_CIRCLES: &[&str] = &[];

#[test]
fn no_import_circle_among_the_files_of_host_src() {
    let circles: Vec<String> = import_circles(&host_src(), "")
        .iter()
        .map(|c| c.join(" <-> "))
        .collect();
    let new: Vec<&str> = circles
        .iter()
        .map(String::as_str)
        .filter(|c| !KNOWN_CIRCLES.contains(c))
        .collect();
    assert!(
        new.is_empty(),
        "files that import each other, directly or through others:\n{}",
        new.join("\n")
    );
    assert_still_found("KNOWN_CIRCLES", "circles", KNOWN_CIRCLES, |known| {
        circles.iter().any(|c| c == known)
    });
}

/// Files outside `http/` that read the status of an answer they got, which is never one of
/// this server's answers: each (path, why).
const STATUS_READERS: &[(&str, &str)] = &[
    (
        "fhir/bulk_import.rs",
        "fetches the files a $import manifest names and refuses an answer that is no success",
    ),
    (
        "oauth/client_auth.rs",
        "fetches a client's jwks_uri and refuses an answer that is no success",
    ),
    (
        "plugins/builder.rs",
        "reads the exit status of the build tools it runs (a process's, not HTTP)",
    ),
    (
        "verifier/register.rs",
        "reads the issuer's answers to this server's registration (RFC 7591/7592)",
    ),
    (
        "verifier/remote.rs",
        "reads the issuer's discovery, JWKS and introspection answers",
    ),
];

/// Only `http/` knows HTTP status codes: elsewhere no status type (`StatusCode`,
/// `http::status`) or `WWW-Authenticate` header, no function named for a status, and no
/// status read (`.status()`, `error_for_status`) but in the files of [`STATUS_READERS`].
#[test]
fn only_http_knows_status_codes() {
    let found = status_uses(&host_src());
    let new: Vec<String> = found
        .iter()
        .filter(|u| !is_allowed_read(u, STATUS_READERS))
        .map(StatusUse::to_string)
        .collect();
    assert!(
        new.is_empty(),
        "HTTP statuses outside http/ (map a kind to a status in http/ instead):\n{}",
        new.join("\n")
    );
    let readers: Vec<&str> = STATUS_READERS.iter().map(|(path, _)| *path).collect();
    assert_still_found("STATUS_READERS", "reading a status", &readers, |path| {
        found.iter().any(|u| u.path == path)
    });
}

/// `fhir/` issues no SQL: no line of it names sqlx or takes the store's pool (`.pool()`);
/// it reaches the database through the functions of `store/` and the handles they take
/// (`store::Conn`, `store::WriteTx`), which run no statement of the caller's.
#[test]
fn fhir_issues_no_sql() {
    let src = host_src();
    let found: Vec<String> = rust_files(&src.join("fhir"))
        .into_iter()
        .flat_map(|(_, path)| {
            let text = std::fs::read_to_string(&path).expect("source is readable");
            let shown = path.strip_prefix(&src).unwrap_or(&path);
            sql_uses_in(&shown.display().to_string(), &text)
        })
        .collect();
    assert!(
        found.is_empty(),
        "SQL in fhir/ (add a function to store/ that takes a store::Conn or WriteTx):\n{}",
        found.join("\n")
    );
}

/// The lines of `text` (comments and literals included) that name sqlx or the pool.
fn sql_uses_in(path: &str, text: &str) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.contains("sqlx") || line.contains(".pool()"))
        .map(|(n, line)| format!("{path}:{} {}", n + 1, line.trim()))
        .collect()
}

/// Each entry of the list `name` of what is known to remain must still be found (`what`
/// it is), so that the list only ever gets shorter.
fn assert_still_found(name: &str, what: &str, known: &[&str], found: impl Fn(&str) -> bool) {
    let gone: Vec<&str> = known.iter().copied().filter(|k| !found(k)).collect();
    assert!(
        gone.is_empty(),
        "no longer {what} (drop them from {name}): {gone:?}"
    );
}

/// The checks themselves catch what they are for.
#[test]
fn the_checks_see_long_functions_and_circles() {
    let body = "    let x = 1;\n".repeat(MAX_FUNCTION_LINES);
    let source = format!(
        "// fn not_code() {{\nfn short() {{ let s = \"}}\"; let c = '{{'; }}\nfn long<'a>(x: &'a str) {{\n{body}}}\n"
    );
    let found = functions(&source);
    assert_eq!(
        found,
        [
            ("short".to_owned(), 2, 1),
            ("long".to_owned(), 3, MAX_FUNCTION_LINES + 2)
        ]
    );

    // A reason counts only in the doc comment directly above, attributes between.
    let source = "/// Long: one table\n/// of cases\nfn a() {}\n/// Long: one journey\n#[test]\n\
        fn b() {}\n/// Long:\nfn c() {}\n/// Long: not this one\nconst X: u8 = 1;\nfn d() {}\n";
    let reasons: Vec<Option<&str>> = [3, 6, 8, 11]
        .into_iter()
        .map(|line| long_reason(source, line))
        .collect();
    assert_eq!(
        reasons,
        [Some("one table"), Some("one journey"), None, None]
    );

    let mut files = BTreeMap::new();
    files.insert(
        vec!["a".to_owned()],
        "use crate::b::Thing;\n#[cfg(test)]\nmod tests { use super::*; }".to_owned(),
    );
    files.insert(vec!["b".to_owned()], "fn f() { crate::a::g(); }".to_owned());
    files.insert(vec!["c".to_owned()], "use super::a;".to_owned());
    assert_eq!(circles(&files, &[]), [vec!["a".to_owned(), "b".to_owned()]]);

    // A parent's re-export of its child is no import; a use of it is.
    let mut files = BTreeMap::new();
    files.insert(vec!["p".to_owned()], "pub use child::Thing;".to_owned());
    let child = vec!["p".to_owned(), "child".to_owned()];
    files.insert(child.clone(), "use super::Parent;".to_owned());
    assert!(circles(&files, &[]).is_empty());
    files.insert(
        vec!["p".to_owned()],
        "pub(crate) use child::Thing;\nuse child::helper;".to_owned(),
    );
    assert_eq!(
        circles(&files, &[]),
        [vec!["p".to_owned(), "p::child".to_owned()]]
    );

    // Statuses: named, defined or read, and not in comments or strings.
    let source = "use axum::http::StatusCode;\n\
        // StatusCode in a comment\n\
        fn status_of(e: &E) -> u16 { let s = \"StatusCode\"; 404 }\n\
        fn f(r: R) { let s = r.status(); r.error_for_status(); x.status_line(); }\n\
        const H: &str = axum::http::status::OK; let h = header::WWW_AUTHENTICATE;\n";
    let found: Vec<String> = statuses_in("oauth/errors.rs", source)
        .iter()
        .map(StatusUse::to_string)
        .collect();
    assert_eq!(
        found,
        [
            "oauth/errors.rs:1 names StatusCode",
            "oauth/errors.rs:3 defines status_of",
            "oauth/errors.rs:4 reads .status()",
            "oauth/errors.rs:4 reads .error_for_status()",
            "oauth/errors.rs:5 names http::status",
            "oauth/errors.rs:5 names WWW_AUTHENTICATE",
        ]
    );
    // A listed file may read a status, and only read one.
    let allowed = [("oauth/errors.rs", "test")];
    let kept: Vec<bool> = statuses_in("oauth/errors.rs", source)
        .iter()
        .map(|u| is_allowed_read(u, &allowed))
        .collect();
    assert_eq!(kept, [false, false, true, true, false, false]);
    // `http/` may do all of it.
    assert!(status_uses_of(&[("http/oauth.rs".to_owned(), source.to_owned())]).is_empty());

    // SQL: sqlx named anywhere, even in a comment, and a pool taken.
    let source = "use crate::store::Conn;\n// sqlx::query\nlet c = store.pool().acquire();\n";
    assert_eq!(
        sql_uses_in("fhir/x.rs", source),
        [
            "fhir/x.rs:2 // sqlx::query",
            "fhir/x.rs:3 let c = store.pool().acquire();"
        ]
    );
}

/// A use of an HTTP status in a file: its path (relative to `src`), line and what it is.
pub struct StatusUse {
    pub path: String,
    pub line: usize,
    pub what: String,
    /// Whether it reads the status of an answer (which [`STATUS_READERS`] may).
    pub reads: bool,
}

impl std::fmt::Display for StatusUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} {}", self.path, self.line, self.what)
    }
}

fn is_allowed_read(found: &StatusUse, allowed: &[(&str, &str)]) -> bool {
    found.reads && allowed.iter().any(|(path, _)| *path == found.path)
}

/// The uses of HTTP statuses in the files of `src` outside `http/`.
pub fn status_uses(src: &Path) -> Vec<StatusUse> {
    let files: Vec<(String, String)> = rust_files(src)
        .into_iter()
        .map(|(_, path)| {
            let text = std::fs::read_to_string(&path).expect("source is readable");
            let shown = path.strip_prefix(src).unwrap_or(&path);
            (shown.display().to_string(), text)
        })
        .collect();
    status_uses_of(&files)
}

/// The uses of HTTP statuses in `files` (path, text), those under `http/` aside.
fn status_uses_of(files: &[(String, String)]) -> Vec<StatusUse> {
    files
        .iter()
        .filter(|(path, _)| !path.starts_with("http/"))
        .flat_map(|(path, text)| statuses_in(path, text))
        .collect()
}

/// The uses of HTTP statuses in the code of `text` (comments and literals aside): the
/// status types and the `WWW-Authenticate` header named, functions named for a status
/// defined, and statuses read from an answer.
fn statuses_in(path: &str, text: &str) -> Vec<StatusUse> {
    let code = blank_comments_and_literals(text);
    let line_of = |at: usize| code[..at].bytes().filter(|&b| b == b'\n').count() + 1;
    let all: Vec<(usize, &str)> = words(&code).collect();
    let mut found = Vec::new();
    for (i, &(at, word)) in all.iter().enumerate() {
        let before = code[..at].trim_end();
        let after = code[at + word.len()..].trim_start();
        let (what, reads) = match word {
            "StatusCode" | "WWW_AUTHENTICATE" => (format!("names {word}"), false),
            "status" if before.ends_with("http::") => ("names http::status".to_owned(), false),
            "fn" => match all.get(i + 1) {
                Some((_, name)) if name.contains("status") => (format!("defines {name}"), false),
                _ => continue,
            },
            "status" | "error_for_status" if before.ends_with('.') && after.starts_with('(') => {
                (format!("reads .{word}()"), true)
            }
            _ => continue,
        };
        found.push(StatusUse {
            path: path.to_owned(),
            line: line_of(at),
            what,
            reads,
        });
    }
    found
}

/// A function over the limit: its file (relative to `src`), line, name and length.
pub struct LongFunction {
    pub path: String,
    pub line: usize,
    pub name: String,
    pub lines: usize,
}

impl LongFunction {
    /// `path name`, which stays the same when lines move.
    fn key(&self) -> String {
        format!("{} {}", self.path, self.name)
    }
}

impl std::fmt::Display for LongFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:5} {}:{} {}",
            self.lines, self.path, self.line, self.name
        )
    }
}

/// The functions of `src/<under>` longer than `max` lines, longest first.
pub fn long_functions(src: &Path, under: &str, max: usize) -> Vec<LongFunction> {
    let mut long = Vec::new();
    for (module, path) in rust_files(src) {
        if !is_under(&module, under) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("source is readable");
        let shown = path
            .strip_prefix(src)
            .unwrap_or(&path)
            .display()
            .to_string();
        for (name, line, lines) in functions(&text) {
            if lines > max {
                long.push(LongFunction {
                    path: shown.clone(),
                    line,
                    name,
                    lines,
                });
            }
        }
    }
    long.sort_by(|a, b| b.lines.cmp(&a.lines).then_with(|| a.key().cmp(&b.key())));
    long
}

/// The groups of files of `src/<under>` that import each other (each group a strongly
/// connected set of the import graph, as module paths).
pub fn import_circles(src: &Path, under: &str) -> Vec<Vec<String>> {
    let files: BTreeMap<Vec<String>, String> = rust_files(src)
        .into_iter()
        .map(|(module, path)| {
            let text = std::fs::read_to_string(&path).expect("source is readable");
            (module, text)
        })
        .collect();
    let under: Vec<String> = under
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    circles(&files, &under)
}

fn is_under(module: &[String], under: &str) -> bool {
    let under: Vec<&str> = under.split('/').filter(|s| !s.is_empty()).collect();
    module.len() >= under.len() && module.iter().zip(&under).all(|(a, b)| a == b)
}

/// Every `.rs` file under `src` with its module path (`fhir/search/mod.rs` is
/// `["fhir", "search"]`; `lib.rs` and `main.rs` are the crate root, `[]`).
fn rust_files(src: &Path) -> Vec<(Vec<String>, PathBuf)> {
    let mut found = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("source directory is readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path
                .strip_prefix(src)
                .expect("under src")
                .with_extension("");
            let mut module: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            found.push((module, path));
        }
    }
    found.sort();
    found
}

/// The groups of modules in `files` under `under` that reach each other by imports.
fn circles(files: &BTreeMap<Vec<String>, String>, under: &[String]) -> Vec<Vec<String>> {
    let inside = |m: &Vec<String>| m.starts_with(under);
    let mut edges: BTreeMap<&Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, text) in files.iter().filter(|(m, _)| inside(m)) {
        let targets = imports(module, text, files)
            .into_iter()
            .filter(|t| t != module && inside(t))
            .collect();
        edges.insert(module, targets);
    }
    let reachable = |from: &Vec<String>| -> BTreeSet<Vec<String>> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(m) = stack.pop() {
            for next in edges.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&Vec<String>, BTreeSet<Vec<String>>> =
        edges.keys().map(|m| (*m, reachable(m))).collect();
    let mut groups: BTreeSet<Vec<String>> = BTreeSet::new();
    for (module, from_here) in &reach {
        if !from_here.contains(*module) {
            continue;
        }
        let group: Vec<String> = from_here
            .iter()
            .filter(|other| reach.get(other).is_some_and(|r| r.contains(*module)))
            .map(|m| display_module(m))
            .collect();
        groups.insert(group);
    }
    groups.into_iter().collect()
}

fn display_module(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

/// The modules (files of `files`) that the code of `module` names: in `use` items and in
/// paths starting with `crate::`, `super::` or `self::`. A path names the longest
/// module prefix of it that is a file.
fn imports(
    module: &[String],
    text: &str,
    files: &BTreeMap<Vec<String>, String>,
) -> BTreeSet<Vec<String>> {
    let code = blank_comments_and_literals(text);
    let inline = inline_modules(&code);
    let mut found = BTreeSet::new();
    for (at, path) in paths(&code) {
        // The module the path is written in: the file's, and any inline `mod x { }`.
        let mut here = module.to_vec();
        here.extend(
            inline
                .iter()
                .filter(|(_, range)| range.contains(&at))
                .map(|(name, _)| name.clone()),
        );
        let mut segments = path.iter().map(String::as_str).peekable();
        let mut base = match segments.peek().copied() {
            Some("crate") => {
                segments.next();
                Vec::new()
            }
            Some("self" | "super") => here,
            // A relative `use` path names a child module, or an outside crate.
            _ => here,
        };
        while segments.peek() == Some(&"self") {
            segments.next();
        }
        while segments.peek() == Some(&"super") {
            segments.next();
            base.pop();
        }
        let mut target = None;
        let mut candidate = base.clone();
        if files.contains_key(&candidate) && path.first().is_some_and(|s| s != "crate") {
            target = Some(candidate.clone());
        }
        for segment in segments {
            candidate.push(segment.to_owned());
            if files.contains_key(&candidate) {
                target = Some(candidate.clone());
            } else {
                break;
            }
        }
        // `crate::x` where `x` is no file names the crate root.
        if target.is_none() && path.first().is_some_and(|s| s == "crate") {
            target = Some(Vec::new());
        }
        // A module's re-exports of its own descendants are its interface, not a dependency
        // (`store::ClientKind` is `store::clients::ClientKind`, whose methods may well name
        // `super::Store`).
        if let Some(target) = &target
            && target.len() > module.len()
            && target.starts_with(module)
            && is_reexport(&code, at)
        {
            continue;
        }
        if let Some(target) = target
            && files.contains_key(&target)
        {
            found.insert(target);
        }
    }
    found
}

/// Whether the `use` at `at` is public (`pub use`, `pub(crate) use`, ...).
fn is_reexport(code: &str, at: usize) -> bool {
    let before = code[..at].trim_end();
    let before = match before.strip_suffix(')') {
        Some(rest) => rest
            .rsplit_once('(')
            .map_or(rest, |(head, _)| head)
            .trim_end(),
        None => before,
    };
    before.ends_with("pub") && code[at..].starts_with("use")
}

/// Each path the code names, with its position: every path of every `use` item (groups
/// expanded, renames dropped) and every other path starting with `crate::`, `super::`
/// or `self::`.
fn paths(code: &str) -> Vec<(usize, Vec<String>)> {
    let mut found = Vec::new();
    let mut use_items: Vec<std::ops::Range<usize>> = Vec::new();
    for (at, _) in words(code).filter(|(_, w)| *w == "use") {
        let end = code[at..].find(';').map_or(code.len(), |e| at + e);
        let tree: String = code[at + 3..end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for path in expand_use_tree(&tree) {
            found.push((at, path));
        }
        use_items.push(at..end);
    }
    for (at, word) in words(code) {
        if !matches!(word, "crate" | "super" | "self")
            || use_items.iter().any(|r| r.contains(&at))
            || !code[at + word.len()..].starts_with("::")
            || code[..at].ends_with("::")
        {
            continue;
        }
        let rest = &code[at..];
        let len = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let path = rest[..len]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        found.push((at, path));
    }
    found
}

/// `a::{b, c::{d as e, self}}` as `[a, b]`, `[a, c, d]`, `[a, c]`.
fn expand_use_tree(tree: &str) -> Vec<Vec<String>> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let plain = tree.split(" as ").next().unwrap_or(tree).trim();
        let path: Vec<String> = plain
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty() && *s != "*" && *s != "self")
            .map(str::to_owned)
            .collect();
        return if path.is_empty() { vec![] } else { vec![path] };
    };
    let prefix = tree[..open].trim_end_matches(':').trim();
    let close = tree.rfind('}').unwrap_or(tree.len());
    let inner = &tree[open + 1..close];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    let mut paths = Vec::new();
    for part in parts.into_iter().filter(|p| !p.trim().is_empty()) {
        let joined = if prefix.is_empty() {
            part.trim().to_owned()
        } else {
            format!("{prefix}::{}", part.trim())
        };
        paths.extend(expand_use_tree(&joined));
    }
    paths
}

/// The inline modules of the code (`mod tests { ... }`), each with the byte range of
/// its body.
fn inline_modules(code: &str) -> Vec<(String, std::ops::Range<usize>)> {
    let mut found = Vec::new();
    let all: Vec<(usize, &str)> = words(code).collect();
    for pair in all.windows(2) {
        let [(at, "mod"), (name_at, name)] = pair else {
            continue;
        };
        let after = &code[name_at + name.len()..];
        if !after.trim_start().starts_with('{') {
            continue;
        }
        let open = name_at + name.len() + after.find('{').unwrap_or(0);
        let close = matching_brace(code, open);
        found.push(((*name).to_owned(), *at..close));
    }
    found
}

/// The words (identifiers and keywords) of the code, with their positions.
fn words(code: &str) -> impl Iterator<Item = (usize, &str)> {
    let bytes = code.as_bytes();
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < bytes.len() && !is_word(bytes[at]) {
            at += 1;
        }
        if at >= bytes.len() {
            return None;
        }
        let start = at;
        while at < bytes.len() && is_word(bytes[at]) {
            at += 1;
        }
        Some((start, &code[start..at]))
    })
}

/// The position of the brace that closes the one at `open` (or the end of the code).
fn matching_brace(code: &str, open: usize) -> usize {
    let mut depth = 0usize;
    for (i, b) in code.bytes().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    code.len()
}

/// Each `fn` with a body in `text`: its name, the line of `fn` (from 1) and how many
/// lines it spans, up to and including its closing brace.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let code = blank_comments_and_literals(text);
    let line_of = |at: usize| code[..at].bytes().filter(|&b| b == b'\n').count() + 1;
    let all: Vec<(usize, &str)> = words(&code).collect();
    let mut found = Vec::new();
    for pair in all.windows(2) {
        let [(at, "fn"), (name_at, name)] = pair else {
            continue;
        };
        if !code[at + 2..*name_at].trim().is_empty() {
            continue;
        }
        // The body starts at the first `{` outside parentheses; a `;` first means none.
        let mut parens = 0i32;
        let mut body = None;
        for (i, b) in code.bytes().enumerate().skip(name_at + name.len()) {
            match b {
                b'(' | b'[' => parens += 1,
                b')' | b']' => parens -= 1,
                b'{' if parens == 0 => {
                    body = Some(i);
                    break;
                }
                b';' if parens == 0 => break,
                _ => {}
            }
        }
        let Some(open) = body else { continue };
        let close = matching_brace(&code, open);
        let first = line_of(*at);
        found.push(((*name).to_owned(), first, line_of(close) - first + 1));
    }
    found
}

/// The source with comments, string literals and character literals replaced by spaces
/// (line breaks kept), so that braces and words in them do not count.
fn blank_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, span: &[char]| {
        out.extend(span.iter().map(|&c| if c == '\n' { '\n' } else { ' ' }));
    };
    let starts = |i: usize, s: &str| {
        s.chars()
            .enumerate()
            .all(|(k, c)| chars.get(i + k) == Some(&c))
    };
    while i < chars.len() {
        let end = if starts(i, "//") {
            (i..chars.len())
                .find(|&j| chars[j] == '\n')
                .unwrap_or(chars.len())
        } else if starts(i, "/*") {
            let mut depth = 0;
            let mut j = i;
            while j < chars.len() {
                if starts(j, "/*") {
                    depth += 1;
                    j += 2;
                } else if starts(j, "*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            j.min(chars.len())
        } else if let Some(end) = raw_string_end(&chars, i) {
            end
        } else if chars[i] == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            (j + 1).min(chars.len())
        } else if chars[i] == '\'' {
            char_literal_end(&chars, i).unwrap_or(i)
        } else {
            i
        };
        if end > i {
            blank(&mut out, &chars[i..end]);
            i = end;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// The end of a raw string literal (`r"..."`, `r#"..."#`, `br"..."`) starting at `i`.
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return None;
    }
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
    j += hashes;
    if chars.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < chars.len() {
        if chars[j] == '"'
            && chars[j + 1..]
                .iter()
                .take(hashes)
                .filter(|&&c| c == '#')
                .count()
                == hashes
        {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(chars.len())
}

/// The end of a character literal at `i` (`'a'`, `'\n'`, `'\u{7f}'`); `None` for a
/// lifetime or label (`'a`).
fn char_literal_end(chars: &[char], i: usize) -> Option<usize> {
    if chars.get(i + 1) == Some(&'\\') {
        let close = (i + 2..chars.len().min(i + 14)).find(|&j| chars[j] == '\'')?;
        return Some(close + 1);
    }
    (chars.get(i + 2) == Some(&'\'')).then_some(i + 3)
}
