//! `cairn graph` (dot, mermaid, json) and `cairn query deps|rdeps`.

use serde_json::json;

use super::{Session, last_statuses};
use crate::engine::AnalysisError;
use crate::error::Error;
use crate::graph::Kind;
use crate::report;

use super::args::GraphFormat;

pub(crate) fn graph(s: &Session, patterns: &[String], format: GraphFormat) -> Result<u8, Error> {
    let loaded = s.load()?;
    s.save_states(&loaded);
    let graph = loaded.graph();
    let roots = graph
        .matching(&s.patterns(patterns)?)
        .map_err(AnalysisError::from)?;
    let labels = graph.closure_in_order(&roots);
    let statuses = last_statuses(s, &loaded.store);
    let out = match format {
        GraphFormat::Json => {
            let nodes: Vec<serde_json::Value> = labels
                .iter()
                .map(|l| {
                    let t = graph.get(l).expect("closure labels exist");
                    json!({
                        "label": l.to_string(),
                        "kind": t.kind.as_str(),
                        "deps": t.deps.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                        "srcs": t.srcs.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                        "outs": t.outputs().map(|s| s.as_str()).collect::<Vec<_>>(),
                        "location": t.location.to_string(),
                        "last_status": statuses.get(&l.to_string()),
                    })
                })
                .collect();
            format!("{}\n", json!({ "targets": nodes }))
        }
        GraphFormat::Dot => {
            let mut dot = String::from("digraph cairn {\n  rankdir=LR;\n  node [shape=box];\n");
            for l in &labels {
                let t = graph.get(l).expect("closure labels exist");
                let shape = match t.kind {
                    Kind::Test => "ellipse",
                    Kind::Filegroup => "folder",
                    Kind::Group => "diamond",
                    Kind::Action | Kind::FixedOutput => "box",
                };
                let color = match statuses.get(&l.to_string()).map(String::as_str) {
                    Some("failed") => ", style=filled, fillcolor=\"#ffc9c9\"",
                    Some("executed") => ", style=filled, fillcolor=\"#a5d8ff\"",
                    Some("remote_executed") => ", style=filled, fillcolor=\"#d0bfff\"",
                    Some("cached") => ", style=filled, fillcolor=\"#d3f9d8\"",
                    Some("remote_cached") => ", style=filled, fillcolor=\"#96f2d7\"",
                    _ => "",
                };
                dot.push_str(&format!("  \"{l}\" [shape={shape}{color}];\n"));
                for d in &t.deps {
                    dot.push_str(&format!("  \"{l}\" -> \"{d}\";\n"));
                }
            }
            dot.push_str("}\n");
            dot
        }
        GraphFormat::Mermaid => {
            // Renders in GitHub markdown inside a ```mermaid block.
            let ids: std::collections::HashMap<&crate::graph::Label, usize> =
                labels.iter().enumerate().map(|(i, l)| (l, i)).collect();
            let mut m = String::from("flowchart LR\n");
            for (i, l) in labels.iter().enumerate() {
                let t = graph.get(l).expect("closure labels exist");
                let (open, close) = match t.kind {
                    Kind::Test => ("([", "])"),
                    Kind::Filegroup | Kind::Group => ("[[", "]]"),
                    Kind::Action | Kind::FixedOutput => ("[", "]"),
                };
                let class = statuses
                    .get(&l.to_string())
                    .map(|s| format!(":::{s}"))
                    .unwrap_or_default();
                m.push_str(&format!("  n{i}{open}\"{l}\"{close}{class}\n"));
            }
            for (i, l) in labels.iter().enumerate() {
                for d in &graph.get(l).expect("closure labels exist").deps {
                    if let Some(j) = ids.get(d) {
                        m.push_str(&format!("  n{i} --> n{j}\n"));
                    }
                }
            }
            m.push_str("  classDef executed fill:#a5d8ff,stroke:#1971c2\n");
            m.push_str("  classDef remote_executed fill:#d0bfff,stroke:#6741d9\n");
            m.push_str("  classDef cached fill:#d3f9d8,stroke:#2f9e44\n");
            m.push_str("  classDef remote_cached fill:#96f2d7,stroke:#0c8599\n");
            m.push_str("  classDef failed fill:#ffc9c9,stroke:#e03131\n");
            m
        }
    };
    report::print_stdout(&out);
    Ok(0)
}

pub(crate) fn query(
    s: &Session,
    text: &str,
    depth: Option<usize>,
    reverse: bool,
) -> Result<u8, Error> {
    let loaded = s.load()?;
    s.save_states(&loaded);
    let label = s.label(loaded.graph(), text)?;
    let found = loaded.graph().reachable(&label, reverse, depth);
    if s.opts.json {
        let items: Vec<serde_json::Value> = found
            .iter()
            .map(|(d, l)| json!({ "label": l.to_string(), "depth": d }))
            .collect();
        report::print_json(&json!({ "label": label.to_string(), "targets": items }));
    } else {
        let mut out = String::new();
        for (_, l) in &found {
            out.push_str(&format!("{l}\n"));
        }
        report::print_stdout(&out);
    }
    Ok(0)
}
