//! The module layering of DESIGN §3, kept by reading the crate's `use crate::` edges: a module may
//! name only modules of a lower layer, so there are no cycles and nothing low reaches up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, lowest first. A module may depend only on modules of strictly lower layers.
const LAYERS: &[&[&str]] = &[
    &["error", "time", "secrets", "text"],
    &["store"],
    &["providers", "policy", "cache", "limits", "analytics", "auth", "egress", "tls", "memory"],
    // The log record redacts the headers the provider rows name.
    &["logs", "config", "control_socket"],
    &["metrics", "cluster"],
    &["control"],
    &["gateway"],
    &["http"],
    &["app", "cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
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

/// The file's code without its test module and comments.
fn code_of(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .windows(2)
        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod "))
        .unwrap_or(lines.len());
    lines[..end].iter().filter(|l| !l.trim_start().starts_with("//")).copied().collect::<Vec<_>>().join("\n")
}

/// The top-level modules a piece of code names through `crate::`.
fn named_modules(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            out.extend(inner.split(',').map(|part| ident(part.trim())).filter(|m| !m.is_empty()));
        } else {
            out.insert(ident(rest));
        }
    }
    out
}

fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if top == "main" || top == "lib" {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        let named: Vec<String> = named_modules(&code).into_iter().filter(|m| *m != top).collect();
        edges.entry(top).or_default().extend(named);
    }
    edges
}

#[test]
fn every_module_depends_only_on_lower_layers() {
    let edges = edges();
    assert!(edges.contains_key("gateway") && edges.contains_key("store"), "the scan found the modules: {edges:?}");
    let mut wrong = Vec::new();
    for (module, names) in &edges {
        let Some(from) = layer_of(module) else {
            wrong.push(format!("{module} is in no layer: add it to LAYERS"));
            continue;
        };
        for name in names {
            match layer_of(name) {
                Some(to) if to < from => {}
                Some(_) => wrong.push(format!("{module} (layer {from}) names {name}")),
                None => wrong.push(format!("{module} names {name}, which is in no layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_scan_sees_plain_and_grouped_imports_and_skips_tests_and_comments() {
    let code = code_of(
        "use crate::store::Store;\nuse crate::{error, time::now};\n// crate::http\nfn f() {}\n\
         #[cfg(test)]\nmod tests {\n    use crate::gateway;\n}\n",
    );
    let named = named_modules(&code);
    assert_eq!(named, ["error", "store", "time"].into_iter().map(String::from).collect());
}

/// The files under `src/{dir}` (or the file `src/{dir}.rs`) whose code names `needle`.
fn files_naming(dir: &str, needle: &str) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let root = src.join(dir);
    if root.is_dir() {
        rust_files(&root, &mut files);
    } else {
        files.push(src.join(format!("{dir}.rs")));
    }
    files
        .into_iter()
        .filter(|f| code_of(&std::fs::read_to_string(f).unwrap()).contains(needle))
        .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
        .collect()
}

#[test]
fn each_surface_keeps_to_its_own_state() {
    // The admin pages, the management API and the operations endpoints never reach the data
    // plane's state; only the data-plane handlers do.
    let mut reaching: Vec<String> =
        ["http/ui", "http/management", "http/ops", "http/routes", "http/datasets", "http/logs"]
            .iter()
            .flat_map(|d| files_naming(d, "Gateway>"))
            .collect();
    reaching.extend(files_naming("http/ui", "gateway::Gateway"));
    assert!(reaching.is_empty(), "control surfaces that take the data plane's state: {reaching:?}");
    let data_plane = files_naming("http", "web::Data<Gateway>");
    assert!(
        data_plane.iter().any(|f| f.ends_with("proxy.rs")),
        "the scan finds the data-plane handlers: {data_plane:?}"
    );
}

#[test]
fn only_the_client_module_names_the_client_library() {
    let naming: Vec<String> = ["app", "cache", "config", "gateway", "http", "providers", "policy", "control", "logs"]
        .iter()
        .flat_map(|d| files_naming(d, "awc::"))
        .filter(|f| f != "gateway/client.rs")
        .collect();
    assert!(naming.is_empty(), "modules that name awc outside gateway/client.rs: {naming:?}");
    assert_eq!(files_naming("gateway", "awc::"), ["gateway/client.rs"], "the scan sees the client module");
    // Plain-HTTP upstreams: actix-http's client codec, under the client module too.
    let codec: Vec<String> = ["app", "cache", "config", "gateway", "http", "providers", "policy", "control", "logs"]
        .iter()
        .flat_map(|d| files_naming(d, "actix_http::h1"))
        .collect();
    assert_eq!(codec, ["gateway/client/plain.rs"], "modules that name the HTTP/1.1 client codec");
}
