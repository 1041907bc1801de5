//! YAML text → [`RawConfig`], naming every problem, not only the first.
//!
//! serde stops at the first error. A valid file is read in one pass; a file with errors is read
//! again as a YAML tree, and each part whose probe fails is probed child by child: a probe is a
//! document that holds only that part on its path from the root, deserialized as a whole
//! `RawConfig`, so every struct keeps its own `deny_unknown_fields` and types, and no key list is
//! repeated here. An error outside the probed part (a sibling the probe left out, such as a
//! required field) is the probe's own and is ignored; a part whose children are all fine reports
//! its own error.

use serde_yaml_ng::{Mapping, Value};

use super::error::{invalid, ConfigError};
use super::raw::RawConfig;

/// Parses `text` strictly; every problem found, each with its key path.
pub(super) fn parse(text: &str) -> Result<RawConfig, ConfigError> {
    let first = match serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(text))
    {
        Ok(raw) => return Ok(raw),
        Err(e) => located(e),
    };
    // not a YAML tree at all (a syntax error): that one error is all there is to say
    let Ok(doc) = serde_yaml_ng::from_str::<Value>(text) else {
        return Err(invalid(first.0, first.1));
    };
    let mut out = Vec::new();
    find(&doc, ".", ".", &|v| v, &mut out);
    if out.is_empty() {
        out.push(invalid(first.0, first.1));
    }
    Err(ConfigError::from_problems(out))
}

/// The first error of the probe document `doc`, as (key path, message).
fn probe_error(doc: Value) -> Option<(String, String)> {
    serde_path_to_error::deserialize::<_, RawConfig>(doc)
        .err()
        .map(located)
}

/// Problems inside `node`, which sits at `real` in the file and at `probed` in the probe
/// documents `wrap` builds (where every sequence index is 0).
fn find(
    node: &Value,
    real: &str,
    probed: &str,
    wrap: &dyn Fn(Value) -> Value,
    out: &mut Vec<ConfigError>,
) {
    let Some((path, message)) = probe_error(wrap(node.clone())) else {
        return;
    };
    if !within(&path, probed) {
        return; // the probe's own doing: a sibling it left out
    }
    let before = out.len();
    if path != probed {
        match node {
            Value::Mapping(m) => {
                for (k, v) in m {
                    let Some(key) = k.as_str() else { continue };
                    let child = |x: Value| {
                        let mut one = Mapping::new();
                        one.insert(k.clone(), x);
                        wrap(Value::Mapping(one))
                    };
                    find(v, &join(real, key), &join(probed, key), &child, out);
                }
            }
            Value::Sequence(s) => {
                for (i, v) in s.iter().enumerate() {
                    let child = |x: Value| wrap(Value::Sequence(vec![x]));
                    find(
                        v,
                        &format!("{real}[{i}]"),
                        &format!("{probed}[0]"),
                        &child,
                        out,
                    );
                }
            }
            _ => {}
        }
    }
    if out.len() == before {
        let path = match path.strip_prefix(probed) {
            Some(rest) if probed != "." => format!("{real}{rest}"),
            _ => path,
        };
        out.push(invalid(path, message));
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent == "." {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Whether key path `path` is `node` or inside it.
fn within(path: &str, node: &str) -> bool {
    node == "."
        || path
            .strip_prefix(node)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// A serde error as (key path, message), the path naming an unknown key itself:
/// `routes[2].split[0].wieght`.
fn located(e: serde_path_to_error::Error<serde_yaml_ng::Error>) -> (String, String) {
    let mut path = e.path().to_string();
    let inner = e.into_inner().to_string();
    if let Some(key) = inner
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
    {
        // read from a YAML tree, serde_path_to_error has the key in the path already
        if path != key && !path.ends_with(&format!(".{key}")) {
            path = join(&path, key);
        }
    }
    // serde_yaml_ng prefixes its own path; keep only the message
    let message = match inner.split_once(": ") {
        Some((p, m)) if !p.contains(' ') => m.to_owned(),
        _ => inner,
    };
    if path.is_empty() {
        path = ".".to_owned();
    }
    (path, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        match parse(yaml) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Problems(p)) => p.iter().map(ToString::to_string).collect(),
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn every_mistake_is_named_with_its_path() {
        let p = problems(
            r#"
server: { listen: 1, max_body_bytes: many }
upstreams:
  a: { url: "http://x/v1", kindd: azure }
models:
  m: { upstream: a, id: x }
routes:
  - { name: r1, split: [{ model: m }] }
  - { name: r2, split: [{ model: m, wieght: 2 }] }
  - { name: r3, split: [{ model: m }], sticky: [1] }
"#,
        );
        let paths: Vec<&str> = p.iter().filter_map(|l| l.split(": ").next()).collect();
        assert_eq!(
            paths,
            [
                "server.listen",
                "server.max_body_bytes",
                "upstreams.a.kindd",
                "routes[1].split[0].wieght",
                "routes[2].sticky"
            ],
            "{p:#?}"
        );
    }

    #[test]
    fn missing_sections_and_fields_are_named_once() {
        let p = problems("upstreams: {}\nmodels: {}\nroutes: [{ split: [] }]\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("routes[0]: missing field `name`"), "{p:?}");
        let p = problems("upstreams: {}\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("missing field"), "{p:?}");
    }

    #[test]
    fn a_syntax_error_is_one_problem() {
        let p = problems("routes: [\n  - a: b\n");
        assert_eq!(p.len(), 1, "{p:?}");
    }
}
