//! The code's shape, as `../shared/DESIGN.md` and issue 11 ask for it, checked on the source
//! itself: `mqtt/` is transport only, `durable/` knows no MQTT, no module calls up into the
//! wiring, the pipeline's stages know one another only by the messages they pass, the modules
//! import one another without a circle, and no file grows past 800 lines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `.rs` file under `src/`: its path, its path under `src/`, and its top-level module
/// (`mqtt` for `src/mqtt/sink.rs`, `demo` for `src/demo.rs`).
fn source_files() -> Vec<(PathBuf, String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(&src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned();
            let rel = rel.display().to_string();
            (path, rel, top)
        })
        .collect()
}

/// The code of a file without comments and without its unit tests (a `#[cfg(test)]` module
/// at its end, or a `tests.rs` file).
fn code(path: &Path) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level module -> the top-level modules its code names (`crate::x`, and each of
/// `crate::{x, y::z}`), and module -> whether it names `rumqttc`. (`super::x` is not read: no
/// top-level file reaches a sibling that way; the module tests below would not see it.)
fn imports() -> (BTreeMap<String, BTreeSet<String>>, BTreeSet<String>) {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut rumqttc = BTreeSet::new();
    for (path, _, top) in source_files() {
        if top == "main" || top == "lib" {
            continue;
        }
        let code = code(&path);
        if code.contains("rumqttc") {
            rumqttc.insert(top.clone());
        }
        let deps = graph.entry(top.clone()).or_default();
        for name in crate_names(&code) {
            if name != top {
                deps.insert(name);
            }
        }
    }
    (graph, rumqttc)
}

/// The top-level modules `code` names after `crate::`: `x` of `crate::x::...`, and each item's
/// first name of a group `crate::{x, y::z}`.
fn crate_names(code: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + 7..];
        let Some(group) = rest.strip_prefix('{') else {
            out.push(ident(rest));
            continue;
        };
        let (mut depth, mut start) = (0, 0);
        for (j, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    out.push(ident(&group[start..j]));
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(ident(&group[start..j]));
                    start = j + 1;
                }
                _ => {}
            }
        }
    }
    out.retain(|n| !n.is_empty() && n != "self");
    out
}

#[test]
fn crate_paths_are_read_with_their_groups() {
    let code = "use crate::model::Scorer;\nuse crate::{app, detect::{Detector, Verdict},\n  mqtt};";
    assert_eq!(crate_names(code), ["model", "app", "detect", "mqtt"]);
}

#[test]
fn mqtt_is_transport_only() {
    let (graph, _) = imports();
    let mqtt = &graph["mqtt"];
    for stage in [
        "model",
        "detect",
        "train",
        "lifecycle",
        "alerting",
        "ingest",
        "app",
    ] {
        assert!(
            !mqtt.contains(stage),
            "src/mqtt imports crate::{stage}: {mqtt:?}"
        );
    }
}

#[test]
fn durable_formats_know_no_mqtt() {
    let (graph, rumqttc) = imports();
    assert!(!graph["durable"].contains("mqtt"), "{:?}", graph["durable"]);
    assert!(!rumqttc.contains("durable"));
    // Only the transport and the wiring that builds it name the MQTT client library.
    let allowed: BTreeSet<String> = ["mqtt", "config", "demo", "replay"]
        .map(String::from)
        .into();
    assert!(
        rumqttc.is_subset(&allowed),
        "rumqttc named in {:?}",
        rumqttc.difference(&allowed).collect::<Vec<_>>()
    );
}

#[test]
fn nothing_calls_up_into_the_wiring() {
    let (graph, _) = imports();
    for (module, deps) in &graph {
        if module != "demo" {
            assert!(!deps.contains("app"), "crate::{module} imports crate::app");
        }
    }
}

/// The last segment of each item a path names: `a::B` gives `B`, `a::{b::C, D}` gives `C`, `D`.
fn named_items(path: &str) -> Vec<String> {
    let items = match (path.find('{'), path.rfind('}')) {
        (Some(open), Some(close)) => path[open + 1..close].split(',').collect(),
        _ => vec![path],
    };
    items
        .into_iter()
        .filter_map(|item| item.trim().rsplit("::").next())
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The stages are created, connected and supervised in `src/app/` only: one stage names
/// another's code only for a message that passes between them (and its acknowledgement),
/// never to call into it.
#[test]
fn stages_know_each_other_only_by_the_messages_they_pass() {
    let stages = ["mqtt", "ingest", "model", "alerting"];
    let messages = [
        "Delivery",    // mqtt -> ingest
        "MessageId",   // mqtt -> ingest: which message a journal record is
        "Ack",         // ingest -> mqtt, through the acker
        "Acker",       // ingest -> mqtt
        "Window",      // ingest -> model
        "ScoredBatch", // model -> alerting
        "StreamNews",  // ingest -> alerting: a stream resumed, gone quiet, or stale
        "Resumed",     // ingest -> alerting, inside StreamNews
    ];
    let mut named = Vec::new();
    for (path, rel, top) in source_files() {
        let Some(stage) = stages.iter().find(|s| top == **s) else {
            continue;
        };
        let code = code(&path);
        for other in stages.iter().filter(|o| *o != stage) {
            let prefix = format!("crate::{other}::");
            for (i, _) in code.match_indices(&prefix) {
                let rest = &code[i + prefix.len()..];
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || "_:{}, \n".contains(c)))
                    .unwrap_or(rest.len());
                for item in named_items(&rest[..end]) {
                    named.push((rel.clone(), format!("{other}::{item}")));
                }
            }
        }
    }
    let calls: Vec<_> = named
        .iter()
        .filter(|(_, item)| !messages.iter().any(|m| item.ends_with(&format!("::{m}"))))
        .collect();
    assert!(
        calls.is_empty(),
        "a stage names another's code beyond the messages they pass: {calls:?}"
    );
    // The check sees the imports it is meant to see.
    assert!(
        named.iter().any(|(_, item)| item == "model::Window"),
        "{named:?}"
    );
}

#[test]
fn modules_import_each_other_without_a_circle() {
    let (graph, _) = imports();
    // Depth-first search for a back edge; report the circle.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(i) = path.iter().position(|n| n == node) {
            panic!("import circle: {} -> {node}", path[i..].join(" -> "));
        }
        if done.contains(node) {
            return;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(node.to_owned());
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn no_source_file_grows_past_800_lines() {
    let long: Vec<String> = source_files()
        .iter()
        .filter_map(|(p, _, _)| {
            let lines = std::fs::read_to_string(p).unwrap().lines().count();
            (lines > 800).then(|| format!("{} ({lines} lines)", p.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these by job: {long:?}");
}
