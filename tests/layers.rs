//! The host's layers, checked: every `crate::` reference in `host/` points
//! to a module of the same layer or one below, and no modules import each
//! other in a circle. The table below is the one in README's layout
//! section; a new module must be placed in it.

use std::collections::{BTreeMap, BTreeSet};

const LAYERS: &[(&str, &[&str])] = &[
    (
        "L0 pure",
        &[
            "approvals",
            "budget",
            "bundled",
            "config",
            "cron",
            "grants",
            "knowledge",
            "llm",
            "markup",
            "metrics",
            "policy",
            "redact",
            "resident",
            "secrets",
            "stamp",
            "text",
        ],
    ),
    ("L1 storage", &["backups", "store", "session", "memory", "jobs", "pairing", "queue", "requests"]),
    ("L2 sandbox", &["state", "contract", "engine", "host_api", "context", "egress", "files", "stacks", "memories"]),
    ("L3 runtime", &["component", "runtime"]),
    ("L4 agent", &["agent", "tools"]),
    ("L5 drivers", &["api", "channels", "cli", "daemon", "doctor", "gateway", "scheduler", "service"]),
];

/// Module name → its source (a folder module's files joined).
fn sources() -> BTreeMap<String, String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("host");
    let mut sources: BTreeMap<String, String> = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(&root).unwrap().with_extension("");
                let module = rel.iter().next().unwrap().to_string_lossy().into_owned();
                sources.entry(module).or_default().push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    sources
}

/// Module name → the crate modules its source refers to.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut sources = sources();
    // The binary and the crate root sit above every layer.
    sources.remove("main");
    sources.remove("lib");
    let names: BTreeSet<String> = sources.keys().cloned().collect();
    sources
        .iter()
        .map(|(module, text)| {
            let mut used = BTreeSet::new();
            for (i, _) in text.match_indices("crate::") {
                let rest = &text[i + "crate::".len()..];
                // `crate::x` and `crate::{x, y::z}`.
                let names_here: Vec<&str> = match rest.strip_prefix('{') {
                    Some(group) => group[..group.find('}').unwrap_or(0)].split(',').collect(),
                    None => vec![rest],
                };
                for name in names_here {
                    let name: String =
                        name.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    if names.contains(&name) && name != *module {
                        used.insert(name);
                    }
                }
            }
            (module.clone(), used)
        })
        .collect()
}

#[test]
fn every_import_points_down_and_none_goes_round() {
    let layer_of: BTreeMap<&str, usize> =
        LAYERS.iter().enumerate().flat_map(|(i, (_, ms))| ms.iter().map(move |m| (*m, i))).collect();
    let graph = imports();
    let mut wrong = Vec::new();
    for (module, used) in &graph {
        let Some(&mine) = layer_of.get(module.as_str()) else {
            wrong.push(format!("host/{module}.rs is in no layer: add it to LAYERS (and README's layout)"));
            continue;
        };
        for dep in used {
            let theirs = layer_of.get(dep.as_str()).copied().unwrap_or(usize::MAX);
            if theirs > mine && theirs != usize::MAX {
                wrong.push(format!(
                    "{module} ({}) imports {dep} ({}), a higher layer",
                    LAYERS[mine].0, LAYERS[theirs].0
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // No cycles, within a layer either: peel off modules that import
    // nothing left until none remain.
    let mut left: BTreeMap<&str, BTreeSet<&str>> =
        graph.iter().map(|(m, deps)| (m.as_str(), deps.iter().map(String::as_str).collect())).collect();
    while let Some(leaf) = left.iter().find(|(_, deps)| deps.is_empty()).map(|(m, _)| *m) {
        left.remove(leaf);
        left.values_mut().for_each(|deps| {
            deps.remove(leaf);
        });
    }
    assert!(left.is_empty(), "these modules import each other in a circle: {:?}", left.keys().collect::<Vec<_>>());
}

#[test]
fn the_scan_finds_the_imports_it_checks() {
    // The scan must find what it is looking for, or the test above proves nothing.
    let graph = imports();
    assert!(graph["agent"].contains("runtime"), "{:?}", graph["agent"]);
    assert!(graph["channels"].contains("agent"), "{:?}", graph["channels"]);
    assert!(graph["runtime"].contains("session"), "{:?}", graph["runtime"]);
}

#[test]
fn only_the_store_commits() {
    // `Store::commit` counts durable commits, and the "one commit per
    // call" test relies on the count; a commit elsewhere would escape it.
    let sources = sources();
    let elsewhere: Vec<&String> =
        sources.iter().filter(|(m, text)| *m != "store" && text.contains(".commit()")).map(|(m, _)| m).collect();
    assert!(elsewhere.is_empty(), "these modules commit without Store::commit: {elsewhere:?}");
    assert!(sources["store"].contains("txn.commit()"), "the check looks for the wrong text");
}
