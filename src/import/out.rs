//! The routes.yaml an importer writes: a small plan of upstreams, models and routes, rendered as
//! commented YAML text that [`crate::config`] reads back (the importer checks that it does).

use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Openai,
    Azure,
}

/// How an upstream is authenticated. There is no variant for a key itself: routes.yaml only
/// names environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    Env(String),
    None,
}

#[derive(Debug, Default)]
pub struct Plan {
    /// Comment lines at the top.
    pub header: Vec<String>,
    /// `health.failures` / `health.cooldown` (a duration text such as `30s`).
    pub health_failures: Option<u32>,
    pub health_cooldown: Option<String>,
    pub upstreams: Vec<Upstream>,
    pub models: Vec<Model>,
    pub routes: Vec<Route>,
}

#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub kind: Kind,
    pub url: String,
    pub auth: Auth,
    pub api_version: Option<String>,
    pub retries_max: Option<u32>,
    pub comments: Vec<String>,
}

#[derive(Debug)]
pub struct Model {
    pub name: String,
    pub upstream: String,
    pub id: String,
    pub base_model: Option<String>,
    pub price: Option<Price>,
    pub comments: Vec<String>,
}

/// USD per 1M tokens, as exact decimal text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub input: String,
    pub cached_input: Option<String>,
    pub output: String,
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    /// `match.model`: the names clients ask for.
    pub match_models: Vec<String>,
    /// Arms: model name and weight (none: equal shares).
    pub split: Vec<(String, Option<u32>)>,
    pub fallback: Vec<String>,
    pub comments: Vec<String>,
}

impl Plan {
    /// The routes.yaml text.
    pub fn render(&self) -> String {
        let mut o = String::new();
        for h in &self.header {
            line(&mut o, 0, &format!("# {}", one_line(h)));
        }
        if self.health_failures.is_some() || self.health_cooldown.is_some() {
            o.push_str("\nhealth:\n");
            if let Some(f) = self.health_failures {
                line(&mut o, 1, &format!("failures: {f}"));
            }
            if let Some(c) = &self.health_cooldown {
                line(&mut o, 1, &format!("cooldown: {}", block(c)));
            }
        }
        o.push_str("\nupstreams:\n");
        for u in &self.upstreams {
            comments(&mut o, 1, &u.comments);
            line(&mut o, 1, &format!("{}:", block(&u.name)));
            if u.kind == Kind::Azure {
                line(&mut o, 2, "kind: azure");
            }
            line(&mut o, 2, &format!("url: {}", block(&u.url)));
            match &u.auth {
                Auth::Env(var) => line(&mut o, 2, &format!("api_key_env: {}", block(var))),
                Auth::None => line(&mut o, 2, "auth: none"),
            }
            if let Some(v) = &u.api_version {
                line(&mut o, 2, &format!("api_version: {}", block(v)));
            }
            if let Some(n) = u.retries_max {
                line(&mut o, 2, &format!("retries: {{ max: {n} }}"));
            }
        }
        o.push_str("\nmodels:\n");
        for m in &self.models {
            comments(&mut o, 1, &m.comments);
            line(&mut o, 1, &format!("{}:", block(&m.name)));
            line(&mut o, 2, &format!("upstream: {}", block(&m.upstream)));
            line(&mut o, 2, &format!("id: {}", block(&m.id)));
            if let Some(b) = &m.base_model {
                line(&mut o, 2, &format!("base_model: {}", block(b)));
            }
            if let Some(p) = &m.price {
                let cached = p
                    .cached_input
                    .as_ref()
                    .map(|c| format!(", cached_input: {c}"))
                    .unwrap_or_default();
                line(
                    &mut o,
                    2,
                    &format!(
                        "price: {{ input: {}{cached}, output: {} }}",
                        p.input, p.output
                    ),
                );
            }
        }
        o.push_str("\nroutes:\n");
        for r in &self.routes {
            comments(&mut o, 1, &r.comments);
            line(&mut o, 1, &format!("- name: {}", block(&r.name)));
            line(
                &mut o,
                2,
                &format!("match: {{ model: {} }}", list(&r.match_models)),
            );
            line(&mut o, 2, "split:");
            for (model, weight) in &r.split {
                let w = weight.map(|w| format!(", weight: {w}")).unwrap_or_default();
                line(&mut o, 3, &format!("- {{ model: {}{w} }}", flow(model)));
            }
            if !r.fallback.is_empty() {
                line(&mut o, 2, &format!("fallback: {}", list(&r.fallback)));
            }
        }
        o
    }
}

fn line(o: &mut String, indent: usize, text: &str) {
    let _ = writeln!(o, "{}{text}", "  ".repeat(indent));
}

fn comments(o: &mut String, indent: usize, lines: &[String]) {
    for c in lines {
        line(o, indent, &format!("# {}", one_line(c)));
    }
}

/// A comment must stay on its line whatever the source text held.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| flow(s)).collect();
    format!("[{}]", items.join(", "))
}

/// A scalar that may stand unquoted: starts with a letter, then letters, digits and `-_./`
/// (plus `:` outside flow collections, where libyaml reads `a:b` as one word), and is not one of
/// YAML's words for booleans and null. Everything else is written JSON-quoted, which YAML reads
/// as a double-quoted scalar with the same escapes.
fn plain(s: &str, colon: bool) -> bool {
    let first_ok = s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
    let rest_ok = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b) || (colon && b == b':'));
    let word = matches!(
        s.to_ascii_lowercase().as_str(),
        "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
    );
    first_ok && rest_ok && !word && !s.ends_with(':')
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// A value after `key: ` in block context.
fn block(s: &str) -> String {
    if plain(s, true) {
        s.to_owned()
    } else {
        quoted(s)
    }
}

/// A value inside `[...]` or `{...}`.
fn flow(s: &str) -> String {
    if plain(s, false) {
        s.to_owned()
    } else {
        quoted(s)
    }
}

#[cfg(test)]
mod tests {
    use super::{block, flow};

    #[test]
    fn scalars_read_back_as_the_same_string() {
        for s in [
            "gpt-4o",
            "ft:gpt-4o:acme:x",
            "https://x.openai.azure.com",
            "2024-10-21",
            "yes",
            "No",
            "null",
            "a: b",
            "#x",
            "with \"quote\" and \\",
            "123",
            "1e5",
            "",
            "ends:",
            "tab\there",
            "ünï",
            "- dash",
            "*",
            "&a",
        ] {
            let y = format!("k: {}\nl: [{}]\n", block(s), flow(s));
            let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&y).unwrap();
            assert_eq!(v["k"].as_str(), Some(s), "{y}");
            assert_eq!(v["l"][0].as_str(), Some(s), "{y}");
        }
    }
}
