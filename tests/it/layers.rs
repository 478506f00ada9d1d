//! The layer rule: imports run one way, down the table in `src/lib.rs`'s
//! `# Layout`. This test reads that table and every file under `src/`, and
//! fails on a `crate::` import the table does not allow, on any import cycle
//! between top-level modules, and on a module without a row (or a row
//! without a module). The message names the file, the line, the rule and
//! what to do instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One row of the layer table.
#[derive(Debug)]
struct Row {
    layer: String,
    may_import: BTreeSet<String>,
    why: String,
}

/// One `crate::` import: where, from which module, to which.
#[derive(Debug, Clone)]
struct Import {
    file: String,
    line: usize,
    from: String,
    to: String,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The table's rows, by module, read from the `# Layout` section of src/lib.rs.
fn layer_table(lib: &str) -> BTreeMap<String, Row> {
    let mut rows = BTreeMap::new();
    for line in lib.lines() {
        let Some(row) = line.strip_prefix("//! | [`") else { continue };
        let cells: Vec<&str> = row.split(" | ").collect();
        assert!(cells.len() >= 4, "src/lib.rs: a layer table row needs 4 cells: {line}");
        let module = cells[0].trim_end_matches("`]").to_string();
        let may_import = backticked(cells[2]);
        let why = cells[3].trim_end_matches(" |").to_string();
        rows.insert(module, Row { layer: cells[1].to_string(), may_import, why });
    }
    assert!(!rows.is_empty(), "src/lib.rs has no layer table under `# Layout`");
    rows
}

fn backticked(cell: &str) -> BTreeSet<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// `pub mod x;` lines of src/lib.rs.
fn declared_modules(lib: &str) -> BTreeSet<String> {
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ").and_then(|m| m.strip_suffix(';')))
        .map(str::to_string)
        .collect()
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

/// The top-level module a file belongs to, and how deep in it the file's module is
/// (`src/x.rs` and `src/x/mod.rs`: 1; `src/x/y.rs`: 2).
fn module_of(src: &Path, file: &Path) -> Option<(String, usize)> {
    let rel: Vec<String> =
        file.strip_prefix(src).ok()?.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    let top = rel[0].trim_end_matches(".rs").to_string();
    if top == "lib" || top == "main" {
        return None; // the crate roots: declarations and the binary's entry point
    }
    let depth = rel.len() - usize::from(rel.last().is_some_and(|l| l == "mod.rs"));
    Some((top, depth))
}

/// Source without comments (line and block comments) and with string and char literals
/// blanked, keeping every newline so line numbers stay right.
fn strip_comments(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let blank = |out: &mut Vec<u8>, s: &[u8]| out.extend(s.iter().map(|&c| if c == b'\n' { b'\n' } else { b' ' }));
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        let after_ident = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        let end = if rest.starts_with(b"//") {
            i + rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len())
        } else if rest.starts_with(b"/*") {
            let (mut depth, mut j) = (0, i);
            while j < b.len() {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            j
        } else if rest[0] == b'r' && !after_ident && rest.len() > 1 && (rest[1] == b'"' || rest[1] == b'#') {
            // Raw string: r"..." or r#"..."#.
            let hashes = rest[1..].iter().take_while(|&&c| c == b'#').count();
            if rest.get(1 + hashes) != Some(&b'"') {
                out.push(b[i]);
                i += 1;
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat(b'#').take(hashes)).collect();
            let body = i + 2 + hashes;
            body + b[body..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(b.len() - body, |p| p + close.len())
        } else if rest[0] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            j + 1
        } else if rest[0] == b'\'' && rest.len() > 2 && (rest[1] == b'\\' || rest[2] == b'\'') {
            // A char literal ('"', '\n'); a lifetime ('a) has no closing quote right after.
            i + 2 + rest[2..].iter().position(|&c| c == b'\'').map_or(0, |p| p + 1)
        } else {
            out.push(b[i]);
            i += 1;
            continue;
        };
        let end = end.min(b.len());
        blank(&mut out, &b[i..end]);
        i = end;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// Every top-level module a file's code names: `crate::x`, `crate::{x, y::z}`, and `super::`
/// chains that climb out of the file's top-level module. With the line each is on.
fn imports_in(text: &str, depth: usize) -> Vec<(usize, String)> {
    let code = strip_comments(text);
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].ends_with('$') || code[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            continue; // `$crate::` or part of another identifier
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: split on commas outside nested braces.
            let mut level = 0;
            let mut item_start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => level += 1,
                    '}' if level == 0 => {
                        found.push((line_of(at), ident_at(group[item_start..i].trim()).to_string()));
                        break;
                    }
                    '}' => level -= 1,
                    ',' if level == 0 => {
                        found.push((line_of(at), ident_at(group[item_start..i].trim()).to_string()));
                        item_start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            found.push((line_of(at), ident_at(rest).to_string()));
        }
    }
    for (at, _) in code.match_indices("super::") {
        if code[..at].ends_with("super::") || code[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            continue; // counted from the first `super::` of the chain
        }
        let mut rest = &code[at..];
        let mut ups = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            ups += 1;
            rest = r;
        }
        if ups >= depth + inline_modules_around(&code[..at]) {
            found.push((line_of(at), ident_at(rest).to_string()));
        }
    }
    found.retain(|(_, m)| !m.is_empty() && m != "self");
    found
}

/// How many inline `mod x { ... }` blocks (such as `mod tests`) are open at the end of `code`:
/// each adds a level that `super::` climbs first.
fn inline_modules_around(code: &str) -> usize {
    let mut open: Vec<bool> = Vec::new();
    for (i, c) in code.char_indices() {
        match c {
            '{' => {
                let before = code[..i].trim_end();
                let name_start = before.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |p| p + 1);
                open.push(before[..name_start].trim_end().ends_with("mod") && name_start < before.len());
            }
            '}' => {
                open.pop();
            }
            _ => {}
        }
    }
    open.iter().filter(|m| **m).count()
}

fn all_imports(src: &Path) -> Vec<Import> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut imports = Vec::new();
    for file in files {
        let Some((from, depth)) = module_of(src, &file) else { continue };
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        for (line, to) in imports_in(&text, depth) {
            if to != from {
                imports.push(Import { file: name.clone(), line, from: from.clone(), to });
            }
        }
    }
    imports
}

/// A cycle in the module graph, as the list of modules around it.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for n in edges.get(m).into_iter().flatten() {
            match state.get(n.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|s| s == n).unwrap();
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(n.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(n, edges, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in edges.keys() {
        if state.get(m.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(m, edges, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn list(s: &BTreeSet<String>) -> String {
    if s.is_empty() {
        "nothing of the crate".into()
    } else {
        s.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

#[test]
fn imports_run_down_the_layer_table() {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    let table = layer_table(&lib);
    let declared = declared_modules(&lib);
    let mut problems = Vec::new();
    for m in declared.difference(&table.keys().cloned().collect()) {
        problems.push(format!(
            "src/lib.rs: module `{m}` has no row in the layer table (`# Layout`): add one saying which layer it is on and what it may import"
        ));
    }
    for m in table.keys().filter(|m| !declared.contains(*m)) {
        problems
            .push(format!("src/lib.rs: the layer table has a row for `{m}`, which is not a module: remove the row"));
    }
    let allowed: BTreeMap<String, BTreeSet<String>> =
        table.iter().map(|(m, r)| (m.clone(), r.may_import.clone())).collect();
    if let Some(cycle) = find_cycle(&allowed) {
        problems.push(format!("src/lib.rs: the layer table itself allows a cycle: {}", cycle.join(" -> ")));
    }
    let imports = all_imports(&root().join("src"));
    assert!(imports.len() > 50, "found only {} imports under src/: is the scanner broken?", imports.len());
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for i in &imports {
        graph.entry(i.from.clone()).or_default().insert(i.to.clone());
        let Some(row) = table.get(&i.from) else { continue };
        if !row.may_import.contains(&i.to) {
            let target = table.get(&i.to).map_or("not in the table".to_string(), |r| format!("layer {}", r.layer));
            problems.push(format!(
                "{}:{}: `{}` (layer {}) imports `crate::{}` ({target}), which its row in the layer table does not allow.\n    \
                 `{}` may import: {}. Its row says why: {}.\n    \
                 Imports run one way, down the layers (src/lib.rs `# Layout`, explained in docs/architecture.md). \
                 If a type you need lives higher up, it belongs lower: shared vocabulary in `part`, counters in `stats`, \
                 helpers in `util`; or hand it over through a channel or a trait the ground defines (as decision does with \
                 `part::actuator::Actuator` and `PartResult`).",
                i.file, i.line, i.from, row.layer, i.to, i.from, list(&row.may_import), row.why
            ));
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        let witness: Vec<String> = cycle
            .windows(2)
            .filter_map(|w| imports.iter().find(|i| i.from == w[0] && i.to == w[1]))
            .map(|i| format!("{}:{} ({} -> {})", i.file, i.line, i.from, i.to))
            .collect();
        problems.push(format!(
            "import cycle between top-level modules: {}\n    where: {}",
            cycle.join(" -> "),
            witness.join("; ")
        ));
    }
    assert!(problems.is_empty(), "{} layer problem(s):\n\n{}\n", problems.len(), problems.join("\n\n"));
}

#[test]
fn the_scanner_sees_every_form_of_import() {
    let text = "use crate::config::X;\nuse crate::{part::{a, b}, stats::S,\n  util};\n// use crate::telemetry;\nfn f() { crate::modbus::go(); let s = \"crate::camera\"; }\nuse super::super::inference::Y;\n";
    let got: Vec<(usize, String)> = imports_in(text, 2);
    let names: Vec<&str> = got.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(names, ["config", "part", "stats", "util", "modbus", "inference"], "{got:?}");
    assert_eq!(got[4].0, 5, "line numbers survive comment stripping");
    // One `super::` from a file two levels down stays inside its module, and so do two
    // from inside its `mod tests`.
    assert!(imports_in("use super::sibling::Z;", 2).is_empty());
    assert!(imports_in("mod tests {\n    use super::super::sibling::Z;\n}", 2).is_empty());
}

#[test]
fn a_cycle_is_found_and_named() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    g.get_mut("c").unwrap().clear();
    assert!(find_cycle(&g).is_none());
}
