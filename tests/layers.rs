//! Enforces the layer rule: a module of `src/` never uses a module of a higher layer
//! (or a sibling of the same layer, unless allowed below). See `docs/ARCHITECTURE.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Layer of each top-level module of the library.
fn layers() -> BTreeMap<&'static str, u8> {
    BTreeMap::from([
        ("protocol", 0),
        ("config", 0),
        ("topology", 0),
        ("metrics", 0),
        ("logging", 0),
        ("devcluster", 0),
        ("net", 1),
        ("auth", 1),
        ("router", 1),
        ("server", 2),
        ("pool", 3),
        ("health", 3),
        ("session", 4),
        ("admin", 4),
        ("app", 5),
        ("cli", 5),
    ])
}

/// Same-layer uses that the architecture allows (user, used).
const SAME_LAYER_ALLOWED: &[(&str, &str)] = &[("cli", "app"), ("session", "admin")];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to (None for lib.rs and main.rs).
fn owner(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// Every `crate::<module>` reference in the text, outside line comments.
fn crate_refs(text: &str) -> Vec<(usize, String)> {
    let mut refs = Vec::new();
    for (no, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(pos) = rest.find("crate::") {
            let after = &rest[pos + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                refs.push((no + 1, name));
            }
            rest = after;
        }
        // `use crate::{a, b}` groups
        if let Some(pos) = code.find("crate::{") {
            let group = &code[pos + "crate::{".len()..];
            for part in group.split([',', '}']) {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    refs.push((no + 1, name));
                }
            }
        }
    }
    refs
}

#[test]
fn lower_layers_never_import_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layers = layers();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let Some(module) = owner(&src, file) else {
            continue;
        };
        let Some(&own_layer) = layers.get(module.as_str()) else {
            violations.push(format!(
                "{}: module `{module}` has no layer",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read source");
        for (line, used) in crate_refs(&text) {
            if used == module {
                continue;
            }
            let Some(&used_layer) = layers.get(used.as_str()) else {
                continue;
            };
            let allowed = used_layer < own_layer
                || SAME_LAYER_ALLOWED.contains(&(module.as_str(), used.as_str()));
            if !allowed {
                violations.push(format!(
                    "{}:{line}: `{module}` (layer {own_layer}) uses `{used}` (layer {used_layer})",
                    file.display()
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layer violations:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_scanner_sees_grouped_and_path_uses() {
    let refs =
        crate_refs("use crate::{pool::Pool, server};\nlet x = crate::app::run(); // crate::cli");
    let names: Vec<_> = refs.iter().map(|(_, n)| n.as_str()).collect();
    assert!(names.contains(&"pool") && names.contains(&"server") && names.contains(&"app"));
    assert!(!names.contains(&"cli"));
}
