//! Config reload: on SIGHUP and when the file changes. The whole new config is parsed, adjusted
//! (the command line's overrides), checked exactly as at start-up (an exposed upstream key is
//! refused), and built (clients, meters, limits) off the main runtime's threads, then swapped in one
//! step; in-flight requests keep the snapshot they started with. A refused file is logged and
//! counted (`tailor_config_reloads_total{result="error"}`), and the old config keeps serving.
//!
//! Concurrency limits count the requests already in flight under the new limit; upstream clients
//! whose settings did not change keep their pooled connections. Listen addresses, the worker
//! threads, `server.shadow_max_concurrency` and the connection limits are bound at start-up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::state::Shared;

/// Applied to every loaded config before it is swapped in (the demo points upstreams at the
/// simulator, `serve --listen` overrides addresses).
pub type Adjust = Arc<dyn Fn(&mut Config) + Send + Sync>;

/// How often the file's modification time is checked.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// Loads, adjusts, validates and swaps; returns whether it took.
pub fn reload_now(
    path: &Path,
    shared: &Shared,
    adjust: &Adjust,
    env: &dyn Fn(&str) -> Option<String>,
) -> bool {
    let result = Config::load(path, env)
        .map_err(|e| e.to_string())
        .and_then(|mut cfg| {
            adjust(&mut cfg);
            // the config as it will be served: the same check as at start-up
            cfg.check_exposure().map_err(|e| e.to_string())?;
            shared.swap_config(cfg).map_err(|e| e.to_string())
        });
    match result {
        Ok(()) => {
            shared
                .metrics
                .config_reloads
                .with_label_values(&["ok"])
                .inc();
            tracing::info!(file = %path.display(), "config reloaded");
            true
        }
        Err(e) => {
            shared
                .metrics
                .config_reloads
                .with_label_values(&["error"])
                .inc();
            tracing::error!(file = %path.display(), error = %e, "config reload rejected; the previous config keeps serving");
            false
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Modification times of the config file and of the files it reads (arm prompts).
fn stamps(path: &Path, shared: &Shared) -> Vec<Option<SystemTime>> {
    let live = shared.live.load();
    std::iter::once(path)
        .chain(live.config.files.iter().map(PathBuf::as_path))
        .map(modified)
        .collect()
}

/// [`reload_now`] on a blocking thread: building clients (TLS roots) must not stall the main
/// runtime (the admin port, the drain).
async fn reload_off_loop(path: &Path, shared: &Arc<Shared>, adjust: &Adjust) {
    let (path, shared, adjust) = (path.to_owned(), shared.clone(), adjust.clone());
    let env = |k: &str| std::env::var(k).ok();
    let _ = tokio::task::spawn_blocking(move || reload_now(&path, &shared, &adjust, &env)).await;
}

/// Watches `path` (SIGHUP, or a changed modification time) until the task is dropped.
pub async fn watch(path: PathBuf, shared: Arc<Shared>, adjust: Adjust) {
    let mut last = stamps(&path, &shared);
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<()>();
        tokio::select! {
            _ = signalled => {
                tracing::info!("SIGHUP: reloading config");
                reload_off_loop(&path, &shared, &adjust).await;
                last = stamps(&path, &shared);
            }
            _ = tokio::time::sleep(POLL_EVERY) => {
                let now = stamps(&path, &shared);
                if now[0].is_some() && now != last {
                    reload_off_loop(&path, &shared, &adjust).await;
                    last = stamps(&path, &shared);
                }
            }
        }
    }
}
