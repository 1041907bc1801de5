//! What the commands share: loading a config, the runtime, output formats.

use std::path::Path;

use anyhow::Result;
use clap::ValueEnum;
use tailor::config::{Auth, Config, UpstreamKind};

/// `--format` of the commands that print a report.
#[derive(Clone, Copy, ValueEnum)]
pub enum OutFormat {
    Text,
    Json,
}

fn env_var(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// Loads and validates a config with the process environment; the error names the file, and
/// suggests the importer when the file is a LiteLLM config.
pub fn load(path: &Path) -> Result<Config> {
    Config::load(path, &env_var).map_err(|e| {
        let keys = std::fs::read_to_string(path)
            .map(|t| tailor::import::litellm::litellm_keys(&t))
            .unwrap_or_default();
        if keys.is_empty() {
            return anyhow::anyhow!("{}: {e}", path.display());
        }
        let keys: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
        anyhow::anyhow!(
            "{p}: {e}\n\n{p} looks like a LiteLLM proxy config (it has {}), not a tailor routes.yaml. \
             Convert it with:\n\n    tailor import litellm {p} > routes.yaml",
            keys.join(", "),
            p = path.display()
        )
    })
}

/// The main runtime. `threads`: its worker threads (default: one per CPU). `serve` and `demo`
/// need only one: API connections are served by `server.workers` threads of their own, and the
/// main runtime runs the admin port, config reloads and the drain.
pub fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        b.worker_threads(n);
    }
    Ok(b.enable_all().build()?)
}

/// Upstreams that will answer 401 to every request as configured: OpenAI or Azure reached with
/// no credentials (`auth: none`, or no `api_key_env`). `check` lists them, `serve` warns.
pub fn credential_warnings(cfg: &Config) -> Vec<String> {
    cfg.upstreams
        .iter()
        .filter(|u| matches!(u.auth, Auth::None))
        .filter_map(|u| {
            let host = u
                .url
                .parse::<http::Uri>()
                .ok()?
                .host()?
                .to_ascii_lowercase();
            let wants_key = u.kind == UpstreamKind::Azure
                || host == "api.openai.com"
                || host.ends_with(".openai.azure.com");
            wants_key.then(|| {
                format!(
                    "upstream `{}` at {host} has no credentials: every request will get 401. \
                     Add `api_key_env:` (the variable holding the key) or `auth: passthrough`",
                    u.name
                )
            })
        })
        .collect()
}
