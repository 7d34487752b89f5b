//! The files in `contrib/` that operators load into their own tools: the Prometheus alerting
//! rules and the Grafana dashboard. Every metric they name must be one the daemon exports (its
//! own registry's exposition, `# TYPE` lines included for families with no sample yet), and
//! the dashboard must have the shape of Grafana's dashboard JSON model (the fields Grafana
//! reads to import it: title, uid, schemaVersion, templating, panels with unique ids, a type,
//! a grid position inside the 24-column grid, and targets with a refId and an expression).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Prometheus's own `promtool` (Debian's `prometheus` package); fails with how to install it.
fn promtool(args: &[&str]) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus"))
        .output()
        .expect(
            "promtool not found: install it with `sudo apt-get install --no-install-recommends \
             prometheus` (or `make setup`)",
        )
}

/// The daemon's exposition, with the per-stream and per-stage families filled as a running
/// daemon fills them.
fn exposition() -> String {
    use ebgand::telemetry::metrics::{StageLabel, StreamLabel};
    let m = ebgand::telemetry::Metrics::new();
    m.stream_judged("pump/1", 1.5, Some(0.5), false);
    m.stream_silence
        .get_or_create(&StreamLabel {
            stream: "pump/1".into(),
        })
        .set(1.0);
    m.stage_down
        .get_or_create(&StageLabel {
            stage: "scorer:pump".into(),
        })
        .set(0);
    m.stage_stalled
        .get_or_create(&StageLabel {
            stage: "scorer:pump".into(),
        })
        .set(0);
    m.encode()
}

/// Metric names the daemon exports, as Prometheus queries name them.
fn exported() -> BTreeSet<String> {
    let text = exposition();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        names.insert(name.to_owned());
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["bucket", "sum", "count"] {
                    names.insert(format!("{name}_{s}"));
                }
            }
            _ => {}
        }
    }
    names
}

/// The ebgand_ and process_ metric names in a query.
fn named(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &expr[i..];
        let starts = (rest.starts_with("ebgand_") || rest.starts_with("process_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if starts {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            out.push(rest[..end].to_owned());
            i += end;
        } else {
            i += 1;
        }
    }
    out
}

fn contrib(file: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("contrib")
            .join(file),
    )
    .unwrap()
}

#[test]
fn alerting_rules_name_only_exported_metrics() {
    let names = exported();
    let rules = contrib("prometheus/ebgand-rules.yml");
    let exprs: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .collect();
    assert!(exprs.len() >= 4, "{rules}");
    for alert in [
        "EbgandStreamAnomaly",
        "EbgandStreamStale",
        "EbgandScorerDown",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
    }
    for expr in exprs {
        for m in named(expr) {
            assert!(names.contains(&m), "{m} (in `{expr}`) is not exported");
        }
    }
}

/// Prometheus itself reads the rules and runs their unit tests (`ebgand-rules.test.yml`:
/// synthetic series, the alerts each rule must fire and with what text). The exposition is
/// scraped by a real Prometheus in `tests/prometheus.rs`.
#[test]
fn promtool_accepts_the_rules_and_their_tests() {
    let show = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let o = promtool(&["check", "rules", "ebgand-rules.yml"]);
    assert!(o.status.success(), "{}", show(&o));
    let o = promtool(&["test", "rules", "ebgand-rules.test.yml"]);
    assert!(o.status.success(), "{}", show(&o));
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_of_exported_metrics() {
    let names = exported();
    let d: serde_json::Value =
        serde_json::from_str(&contrib("grafana/ebgand-dashboard.json")).expect("valid JSON");
    for key in ["title", "uid"] {
        assert!(d[key].is_string(), "{key}");
    }
    assert!(d["schemaVersion"].as_u64().unwrap() >= 30);
    assert!(d["templating"]["list"].is_array());
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    let mut ids = BTreeSet::new();
    let mut queried = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id");
        assert!(p["type"].is_string() && p["title"].is_string(), "{p}");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24 && g["h"].as_u64().unwrap() > 0, "{p}");
        for t in p["targets"].as_array().unwrap() {
            assert!(t["refId"].is_string(), "{t}");
            let expr = t["expr"].as_str().unwrap();
            for m in named(expr) {
                assert!(
                    names.contains(&m),
                    "{m} (panel {}) is not exported",
                    p["title"]
                );
                queried.insert(m);
            }
        }
    }
    // What an operator asks first: which stream, how sure, since when silent.
    for m in [
        "ebgand_stream_probability",
        "ebgand_stream_alert",
        "ebgand_stream_silence_seconds",
    ] {
        assert!(queried.contains(m), "the dashboard does not show {m}");
    }
}
