//! `tailor serve`: load and check the config, start the listeners and the reload watcher, run
//! until SIGTERM or Ctrl-C, then drain.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tailor::config::{Auth, Config};
use tailor::metrics::Metrics;
use tailor::reload::Adjust;
use tailor::server;

use super::common::{load, runtime};

/// What the command line overrides in every config it loads (at start and on each reload).
#[derive(Clone, clap::Args)]
pub struct Overrides {
    /// Override server.listen (port 0 picks a free port).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Override server.admin_listen.
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Allow a non-loopback listen address with upstream keys and no `clients:` (sets
    /// server.allow_unauthenticated), e.g. in a container whose port is published on loopback.
    #[arg(long)]
    pub allow_unauthenticated: bool,
    /// Override shared_state.redis: count budgets and rate limits in this Redis (or Valkey),
    /// shared by every replica, e.g. redis://redis:6379/0.
    #[arg(long, env = "TAILOR_REDIS_URL")]
    pub redis: Option<String>,
}

impl Overrides {
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(l) = self.listen {
            cfg.server.listen = l;
        }
        if let Some(a) = self.admin_listen {
            cfg.server.admin_listen = a;
        }
        cfg.server.allow_unauthenticated |= self.allow_unauthenticated;
        if let Some(r) = &self.redis {
            cfg.shared_state.redis = Some(r.clone());
        }
    }
}

/// Loads `path`, applies `adjust` and checks the config as it will be served.
pub fn load_adjusted(path: &Path, adjust: &Adjust) -> Result<Config> {
    let mut cfg = load(path)?;
    adjust(&mut cfg);
    cfg.check_exposure()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(cfg)
}

pub fn run(path: PathBuf, o: Overrides) -> Result<()> {
    let adjust: Adjust = Arc::new(move |c: &mut Config| o.apply(c));
    let cfg = load_adjusted(&path, &adjust)?;
    let missing: Vec<String> = cfg
        .upstreams
        .iter()
        .filter_map(|u| match &u.auth {
            Auth::Key { env, key: None } => Some(format!("{env} (upstream `{}`)", u.name)),
            _ => None,
        })
        .collect();
    if missing.len() == cfg.upstreams.len() {
        bail!(
            "no API key is set: {}. Set them, or try `tailor demo`.",
            missing.join(", ")
        );
    }
    for m in &missing {
        tracing::warn!("API key variable {m} is not set: requests to it fail over to fallbacks or get an error");
    }
    for w in super::common::credential_warnings(&cfg) {
        tracing::warn!("{w}");
    }
    runtime(Some(1))?.block_on(serve(cfg, path, adjust, |_, _| {}))
}

/// Serves `cfg` until a shutdown signal; `started` runs once the listeners are bound (API and
/// admin addresses).
pub async fn serve(
    cfg: Config,
    path: PathBuf,
    adjust: Adjust,
    started: impl FnOnce(SocketAddr, SocketAddr),
) -> Result<()> {
    let metrics = Metrics::new()?;
    let running = server::start(cfg, metrics)
        .await
        .context("binding listeners")?;
    let (api, admin) = (running.api_addr, running.admin_addr);
    let watcher = tokio::spawn(tailor::reload::watch(path, running.shared.clone(), adjust));
    // one line on stdout that scripts can wait for
    out!("tailor listening on http://{api}/v1 (admin: http://{admin})");
    tracing::info!(%api, %admin, "tailor started");
    started(api, admin);
    server::shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    watcher.abort();
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
