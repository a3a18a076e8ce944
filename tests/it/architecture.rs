//! The module graph of `docs/ARCHITECTURE.md`, checked against the source: no import cycle, no
//! import that points up a layer, every module in the table, no data-plane module that reaches
//! the store, the control plane or the CA.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The layers table: module → layer.
fn layers() -> BTreeMap<String, u32> {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let mut out = BTreeMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(layer), Some(mods)) = (cells.get(1), cells.get(3)) else {
            continue;
        };
        let Ok(layer) = layer.parse::<u32>() else {
            continue;
        };
        for m in mods.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            assert!(
                out.insert(m.to_string(), layer).is_none(),
                "{m} is listed twice"
            );
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Top-level module → the top-level modules its code names (`crate::x`), comments and
/// `#[cfg(test)] mod tests` left out.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let top = |p: &Path| -> Option<String> {
        let rel = p.strip_prefix(&src).ok()?;
        let first = rel.components().next()?.as_os_str().to_str()?.to_string();
        let name = first.trim_end_matches(".rs").to_string();
        (name != "lib" && name != "main").then_some(name)
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|p| top(p)).collect();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(me) = top(f) else { continue };
        let text = std::fs::read_to_string(f).unwrap();
        let code = match text.find("#[cfg(test)]\nmod tests") {
            Some(i) => &text[..i],
            None => &text[..],
        };
        let entry = out.entry(me.clone()).or_default();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let name: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name != me && modules.contains(&name) {
                    entry.insert(name);
                }
            }
        }
    }
    out
}

#[test]
fn every_module_is_in_the_layers_table() {
    let layers = layers();
    let imports = imports();
    let missing: Vec<&String> = imports
        .keys()
        .filter(|m| !layers.contains_key(*m))
        .collect();
    assert!(
        missing.is_empty(),
        "add these modules to the table in docs/ARCHITECTURE.md: {missing:?}"
    );
    let stale: Vec<&String> = layers
        .keys()
        .filter(|m| !imports.contains_key(*m))
        .collect();
    assert!(stale.is_empty(), "no such modules any more: {stale:?}");
}

#[test]
fn imports_point_down_the_layers() {
    let layers = layers();
    let mut up = Vec::new();
    for (m, uses) in imports() {
        for u in uses {
            if layers.get(&u) > layers.get(&m) {
                up.push(format!(
                    "{m} (layer {:?}) -> {u} (layer {:?})",
                    layers.get(&m),
                    layers.get(&u)
                ));
            }
        }
    }
    assert!(up.is_empty(), "imports that point up a layer: {up:#?}");
}

#[test]
fn there_is_no_import_cycle() {
    let graph = imports();
    // Depth-first search with colours; a grey node reached again closes a cycle.
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for next in graph.get(n).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|p| p == next).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, graph, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            let cycle = visit(n, &graph, &mut state, &mut Vec::new());
            assert!(
                cycle.is_none(),
                "import cycle: {}",
                cycle.unwrap_or_default().join(" -> ")
            );
        }
    }
}

#[test]
fn the_data_plane_cannot_reach_the_store() {
    let layers = layers();
    let imports = imports();
    // Everything the data plane's modules reach, directly or through others.
    let data: Vec<&String> = layers
        .iter()
        .filter(|(_, l)| **l <= 3)
        .map(|(m, _)| m)
        .collect();
    for m in data {
        let mut seen = BTreeSet::new();
        let mut todo = vec![m.clone()];
        while let Some(n) = todo.pop() {
            for u in imports.get(&n).into_iter().flatten() {
                if seen.insert(u.clone()) {
                    todo.push(u.clone());
                }
            }
        }
        for forbidden in ["store", "control", "ca", "admin", "gateway"] {
            assert!(
                !seen.contains(forbidden),
                "the data-plane module {m} reaches {forbidden}"
            );
        }
    }
}
