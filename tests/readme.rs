//! README's reference tables stay true: every key of `routes.yaml` (the fields of the raw config
//! structs in src/config/) is in the table under "## routes.yaml", and every metric the code
//! names is in the table under "## Metrics". A key or metric added without its line fails here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may fail loudly

use std::collections::BTreeSet;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap()
}

/// The lines of README between `## {title}` and the next `## ` heading.
fn section(readme: &str, title: &str) -> Vec<String> {
    readme
        .lines()
        .skip_while(|l| l.trim() != format!("## {title}"))
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .map(str::to_owned)
        .collect()
}

/// The backticked words of a table row's first column.
fn first_column_keys(row: &str) -> Vec<String> {
    let Some(cell) = row.strip_prefix('|').and_then(|r| r.split(" | ").next()) else {
        return Vec::new();
    };
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The README path prefix of each raw struct's keys.
const PREFIXES: &[(&str, &str)] = &[
    ("RawConfig", ""),
    ("RawServer", "server."),
    ("RawHealth", "health."),
    ("RawClient", "clients[]."),
    ("RawEconomics", "economics."),
    ("RawSharedState", "shared_state."),
    ("RawLimit", "limits[]."),
    ("RawUsd", "limits[].usd."),
    ("RawUpstream", "upstreams.<name>."),
    ("RawTimeouts", "upstreams.<name>.timeouts."),
    ("RawRetries", "upstreams.<name>.retries."),
    ("RawModel", "models.<name>."),
    ("RawPrice", "models.<name>.price."),
    ("RawRoute", "routes[]."),
    ("RawMatch", "match."),
    ("RawRange", "match.prompt_tokens."),
    ("RawArm", "routes[].split[]."),
    ("RawShadow", "routes[].shadow."),
    ("RawJudge", "routes[].shadow.judge."),
    ("RawCapture", "routes[].capture."),
    ("RawExperiment", "routes[].experiment."),
    ("RawPassthrough", "passthrough."),
];

/// Every key a user can write: (struct, README path). A field whose type is another raw struct
/// is a section: its own fields are the keys.
fn config_keys() -> Vec<(String, String)> {
    let mut keys = Vec::new();
    for entry in std::fs::read_dir(root().join("src/config")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let mut current: Option<String> = None;
        let mut rename: Option<String> = None;
        for line in text.lines() {
            let t = line.trim();
            if let Some(rest) = t.strip_prefix("pub struct Raw") {
                current = rest
                    .strip_suffix(" {")
                    .map(|name| format!("Raw{name}"))
                    .filter(|_| text.contains("deny_unknown_fields"));
                continue;
            }
            if t == "}" {
                current = None;
                continue;
            }
            let Some(strukt) = &current else { continue };
            if t.starts_with("#[serde(") {
                rename = t
                    .split("rename = \"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .map(str::to_owned);
                continue;
            }
            let Some((name, ty)) = t.strip_prefix("pub ").and_then(|f| f.split_once(": ")) else {
                continue;
            };
            let key = rename.take().unwrap_or_else(|| name.to_owned());
            if PREFIXES.iter().any(|(s, _)| ty.contains(s)) {
                continue; // a section: its struct's fields are checked
            }
            let prefix = PREFIXES
                .iter()
                .find(|(s, _)| s == strukt)
                .unwrap_or_else(|| {
                    panic!("{strukt}: add its README path prefix to PREFIXES in tests/readme.rs")
                })
                .1;
            keys.push((strukt.clone(), format!("{prefix}{key}")));
        }
    }
    assert!(keys.len() > 60, "found only {} keys", keys.len());
    keys
}

/// The keys README documents: `a.b.c` / `.d` (a sibling of the one before) / `e` (likewise), and
/// `{ x, y }` in the meaning column (keys of the row's key).
fn documented_keys(readme: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for row in section(readme, "routes.yaml") {
        let mut prev: Option<String> = None;
        for k in first_column_keys(&row) {
            let full = match (&prev, k.strip_prefix('.')) {
                (Some(p), rest) if rest.is_some() || !k.contains('.') => {
                    let parent = p.rsplit_once('.').map_or("", |(a, _)| a);
                    format!("{parent}.{}", rest.unwrap_or(&k))
                }
                _ => k.clone(),
            };
            out.insert(full.clone());
            prev = Some(full);
        }
        let Some(key) = prev else { continue };
        for cell in row.split('`').skip(1).step_by(2) {
            if let Some(inner) = cell.strip_prefix("{ ").and_then(|c| c.strip_suffix(" }")) {
                for sub in inner.split(',') {
                    out.insert(format!("{key}.{}", sub.trim()));
                }
            }
        }
    }
    out
}

#[test]
fn every_config_key_is_in_the_readme_table() {
    let readme = read("README.md");
    let documented = documented_keys(&readme);
    let missing: Vec<String> = config_keys()
        .into_iter()
        .filter(|(_, k)| !documented.contains(k))
        .map(|(s, k)| format!("{k} ({s})"))
        .collect();
    assert!(
        missing.is_empty(),
        "README's routes.yaml table lacks: {missing:#?}\ndocumented: {documented:#?}"
    );
}

/// Every `tailor_*` name in the source: the metrics registered, and those PromQL reads.
fn metric_names() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for piece in text.split("\"tailor_").skip(1) {
                let name: String = piece
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                // a prefix the ledger completes (`tailor_arm_` + ...), or a histogram's series
                if name.ends_with('_') || name.ends_with("_bucket") || name.is_empty() {
                    continue;
                }
                out.insert(format!("tailor_{name}"));
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&root().join("src"), &mut out);
    assert!(out.len() > 40, "found only {} metric names", out.len());
    out
}

#[test]
fn every_metric_is_in_the_readme_table() {
    let readme = read("README.md");
    let documented: BTreeSet<String> = section(&readme, "Metrics")
        .iter()
        .flat_map(|row| first_column_keys(row))
        .collect();
    let missing: Vec<String> = metric_names()
        .into_iter()
        .filter(|m| !documented.contains(m))
        .collect();
    assert!(
        missing.is_empty(),
        "README's metrics table lacks: {missing:#?}"
    );
}
