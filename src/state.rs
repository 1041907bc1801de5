//! The state every part of the request path reads, below all of them: [`LiveState`], a config
//! with everything derived from it (metric handles, model health, upstream pools, route limits),
//! swapped as one value on reload; and [`Shared`], what lives as long as the process.
//!
//! A request loads the live snapshot once and keeps it to its end, so a reload never mixes two
//! configs in one request.

use std::cell::Cell;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use http::HeaderValue;

use crate::budget::store::Store;
use crate::budget::Budgets;
use crate::capture::Captures;
use crate::classify::stable_hash;
use crate::config::Config;
use crate::economics::export::LedgerCollector;
use crate::economics::{Ledger, Traffic};
use crate::forward::client::{ClientCache, Pools};
use crate::forward::health::{HealthRegistry, ModelHealth};
use crate::ids::RequestIds;
use crate::limits::InFlight;
use crate::metrics::{shard, Metrics};
use crate::telemetry::{ExporterCache, Tracer};
use crate::usage::body::DrainOver;
use crate::usage::meter::ArmMeter;

/// The `client` label when no `clients:` are configured.
pub const ANONYMOUS: &str = "anonymous";

/// A config with everything derived from it: swapped as one value on reload.
pub struct LiveState {
    pub config: Config,
    /// Per route: (model index, meter per client index) for every arm and fallback.
    arms: Vec<Vec<(usize, Vec<Arc<ArmMeter>>)>>,
    /// Per model index.
    health: Vec<Arc<ModelHealth>>,
    /// Per API worker thread and upstream index: a pooled client.
    pub clients: Pools,
    /// Per route: its requests in flight (kept across reloads) and its limit.
    route_limits: Vec<Option<(Arc<InFlight>, usize)>>,
    /// Unix time the config was loaded (`created` in `/v1/models`).
    pub loaded_at: u64,
    /// Mints and checks request ids (`server.request_id_key_env`, else this process's key).
    pub ids: RequestIds,
    /// Budgets and rate limits: the store of `shared_state` (kept across reloads).
    pub budgets: Budgets,
    /// Request spans (`telemetry:`); `None`: tracing costs a request one branch.
    pub tracer: Option<Arc<Tracer>>,
    /// The `x-tailor-route` value of each route and the `x-tailor-model` value of each model,
    /// made once per config (`None`: a name that is not a header value, sent without it).
    pub route_tags: Vec<Option<HeaderValue>>,
    pub model_tags: Vec<Option<HeaderValue>>,
}

impl LiveState {
    /// Resolves every handle a request of this config can need, once, from what outlives
    /// configs (`keep`).
    pub fn build(
        mut config: Config,
        metrics: &Arc<Metrics>,
        keep: &Keep,
    ) -> Result<LiveState, rustls::Error> {
        // an adjusted config (the demo's simulator URLs) is served with its own addresses
        config.refresh_addresses();
        let Keep {
            health,
            ledger,
            route_in_flight,
            clients,
            process_key,
            stores,
            exporters,
        } = keep;
        let budgets = Budgets {
            store: stores.get(config.shared_state.redis.as_deref()),
            timeout: config.shared_state.timeout,
            on_error: config.shared_state.on_error,
            metrics: metrics.clone(),
        };
        let ids = match &config.server.request_id_key {
            Some(k) => RequestIds::new(k.expose().as_bytes()),
            None => RequestIds::new(process_key),
        };
        let client_names: Vec<&str> = if config.clients.is_empty() {
            vec![ANONYMOUS]
        } else {
            config.clients.iter().map(|c| c.name.as_str()).collect()
        };
        // a new config may bring a model of another encoding: loaded off the request path
        crate::tokens::load_in_background(config.models.iter().map(|m| m.encoding()));
        for m in config.models.iter().filter(|m| !m.encoding_known()) {
            tracing::info!(model = %m.name, assumed = m.encoding().name(), "tokenizer of this model unknown: tailor's own estimates (broken streams) assume it");
        }
        let model_health: Vec<Arc<ModelHealth>> = config
            .models
            .iter()
            .map(|m| health.get(&m.name, config.health))
            .collect();
        let arms = config
            .routes
            .iter()
            .map(|r| {
                let mut v: Vec<(usize, Vec<Arc<ArmMeter>>)> = Vec::new();
                for m in r
                    .arms
                    .iter()
                    .map(|a| a.model)
                    .chain(r.fallback.iter().copied())
                {
                    if v.iter().any(|(i, _)| *i == m) {
                        continue;
                    }
                    let model = &config.models[m];
                    let route: Arc<str> = r.name.as_str().into();
                    let name: Arc<str> = model.name.as_str().into();
                    let per_client = client_names
                        .iter()
                        .map(|c| {
                            Arc::new(ArmMeter {
                                metrics: metrics.meter(&r.name, &model.name, c),
                                price: model.price,
                                health: Some(model_health[m].clone()),
                                ledger: ledger.arm(&route, &name, Traffic::Primary),
                                encoding: model.encoding(),
                            })
                        })
                        .collect();
                    v.push((m, per_client));
                    // feedback series from zero, so the fleet's figures see a first score
                    // arrive (a series born between two scrapes would hide it)
                    for c in [&metrics.feedback_score, &metrics.feedback_score_sq] {
                        c.with_label_values(&[&r.name, &model.name]);
                    }
                    metrics.feedback.with_label_values(&[&r.name, &model.name]);
                }
                if let Some(s) = &r.shadow {
                    let name: Arc<str> = config.models[s.model].name.as_str().into();
                    ledger.arm(&r.name.as_str().into(), &name, Traffic::Shadow);
                }
                v
            })
            .collect();
        let clients = Pools::build(&config.upstreams, config.server.workers, clients)?;
        let route_limits = config
            .routes
            .iter()
            .map(|r| {
                r.max_concurrency.map(|n| {
                    let in_flight = route_in_flight.entry(r.name.clone()).or_default().clone();
                    (in_flight, n)
                })
            })
            .collect();
        let tracer = Tracer::build(&config, exporters, metrics);
        let tag = |name: &str| HeaderValue::from_str(name).ok();
        let route_tags = config.routes.iter().map(|r| tag(&r.name)).collect();
        let model_tags = config.models.iter().map(|m| tag(&m.name)).collect();
        metrics.publish_config(&config);
        let loaded_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(LiveState {
            config,
            arms,
            health: model_health,
            clients,
            route_limits,
            loaded_at,
            ids,
            budgets,
            tracer,
            route_tags,
            model_tags,
        })
    }

    /// Whether model `i` is in rotation.
    pub fn model_healthy(&self, i: usize) -> bool {
        self.health.get(i).is_some_and(|h| h.is_healthy())
    }

    /// The health of model `i`.
    pub fn model_health(&self, i: usize) -> Option<&Arc<ModelHealth>> {
        self.health.get(i)
    }

    /// Where a request of `route` answered by `model` for `client` records its numbers.
    pub fn arm_meter(&self, route: usize, model: usize, client: usize) -> Option<Arc<ArmMeter>> {
        let (_, per_client) = self.arms.get(route)?.iter().find(|(m, _)| *m == model)?;
        per_client.get(client).cloned()
    }

    /// The requests in flight on `route` and its limit, if it has one.
    pub fn route_limit(&self, route: usize) -> Option<&(Arc<InFlight>, usize)> {
        self.route_limits.get(route)?.as_ref()
    }

    /// Starts the dataset writers of every route that captures (repairing torn files at once).
    fn start_captures(&self, captures: &Captures) {
        for c in self.config.routes.iter().filter_map(|r| r.capture.as_ref()) {
            captures.ensure(&c.path);
        }
    }
}

/// What outlives every config: a new [`LiveState`] resolves its handles from these (and from the
/// metrics), so model health, the ledger, requests in flight and pooled connections carry over.
pub struct Keep {
    pub health: HealthRegistry,
    /// Per (route, model, traffic) counters behind `/economics` and the status page.
    pub ledger: Arc<Ledger>,
    /// Requests in flight per route name.
    pub route_in_flight: DashMap<String, Arc<InFlight>>,
    pub clients: ClientCache,
    /// Signs request ids when no `server.request_id_key_env` is set (random, this process only).
    pub process_key: [u8; 32],
    /// Limit counters: in this process, or a connection to Redis per URL.
    pub stores: Stores,
    /// The span exporter, kept while `telemetry:` does not change.
    pub exporters: ExporterCache,
}

/// The stores of `shared_state`, one per Redis URL and one in memory: a reload keeps what was
/// counted.
#[derive(Default)]
pub struct Stores(std::sync::Mutex<Vec<(Option<String>, Arc<Store>)>>);

impl Stores {
    pub fn get(&self, redis: Option<&str>) -> Arc<Store> {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, s)) = v.iter().find(|(u, _)| u.as_deref() == redis) {
            return s.clone();
        }
        let store = match redis {
            None => Store::memory(),
            Some(url) => Store::redis(url).unwrap_or_else(|e| {
                // the URL was checked with the config: this is not expected
                tracing::error!(error = %e, "shared_state.redis unusable; counting in this process");
                Store::memory()
            }),
        };
        let s = Arc::new(store);
        v.push((redis.map(str::to_owned), s.clone()));
        s
    }
}

/// State shared by every request, for the life of the process.
pub struct Shared {
    pub live: ArcSwap<LiveState>,
    pub keep: Keep,
    pub metrics: Arc<Metrics>,
    /// Requests in flight under `server.max_concurrency`.
    pub server_in_flight: Arc<InFlight>,
    /// Seed of the pseudo-random numbers: request ids, A/B draws and backoff jitter.
    seed: u64,
    /// False once shutdown begins (`/readyz` answers 503).
    pub ready: AtomicBool,
    /// Fired when a shutdown's drain time is over: open bodies end with an error.
    pub drain_over: Arc<DrainOver>,
    /// `server.shadow_max_concurrency` slots (fixed at start-up).
    pub shadow_slots: Arc<tokio::sync::Semaphore>,
    /// Dataset writers, one per capture file (kept across reloads).
    pub captures: Arc<Captures>,
}

impl Shared {
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Result<Arc<Shared>, rustls::Error> {
        let keep = Keep {
            health: HealthRegistry::default(),
            ledger: Arc::new(Ledger::default()),
            route_in_flight: DashMap::new(),
            clients: ClientCache::default(),
            process_key: random_key(),
            stores: Stores::default(),
            exporters: ExporterCache::default(),
        };
        let shadow_slots = Arc::new(tokio::sync::Semaphore::new(
            config.server.shadow_max_concurrency,
        ));
        // the ledger on /metrics (tailor_arm_*): what the fleet's economics are read back from
        match LedgerCollector::new(keep.ledger.clone()) {
            Ok(c) => {
                if let Err(e) = metrics.register(Box::new(c)) {
                    tracing::error!("tailor_arm_* metrics not registered: {e}");
                }
            }
            Err(e) => tracing::error!("tailor_arm_* metrics not registered: {e}"),
        }
        let live = LiveState::build(config, &metrics, &keep)?;
        let captures: Arc<Captures> = Arc::default();
        live.start_captures(&captures);
        // RandomState is seeded from the OS: a cheap random seed without another dependency
        let seed = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0);
            h.finish()
        };
        Ok(Arc::new(Shared {
            live: ArcSwap::from_pointee(live),
            keep,
            metrics,
            server_in_flight: Arc::default(),
            seed,
            ready: AtomicBool::new(true),
            drain_over: Arc::default(),
            shadow_slots,
            captures,
        }))
    }

    /// Validates nothing (the config already is): builds the derived state and swaps it in.
    /// Requests in flight keep the snapshot they loaded.
    pub fn swap_config(&self, config: Config) -> Result<(), rustls::Error> {
        let live = LiveState::build(config, &self.metrics, &self.keep)?;
        live.start_captures(&self.captures);
        self.live.store(Arc::new(live));
        Ok(())
    }

    /// Sets `tailor_model_healthy` for the current models (called before each scrape).
    pub fn refresh_health_gauges(&self) {
        let live = self.live.load();
        for (m, h) in live.config.models.iter().zip(&live.health) {
            self.metrics
                .model_healthy
                .with_label_values(&[&m.name])
                .set(i64::from(h.is_healthy()));
        }
    }

    /// A fresh pseudo-random number: a hash of the seed, this thread's number and its count of
    /// draws. No counter is shared by the workers (one written by every request on two cores
    /// cost a cache miss per draw).
    pub fn next_random(&self) -> u64 {
        thread_local! {
            static DRAWS: Cell<u64> = const { Cell::new(0) };
        }
        let n = DRAWS.with(|d| {
            let n = d.get();
            d.set(n.wrapping_add(1));
            n
        });
        let thread = shard::thread_number() as u64;
        stable_hash(&[
            &self
                .seed
                .wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .to_le_bytes(),
            &thread.to_le_bytes(),
        ])
    }
}

/// 32 bytes from the OS-seeded hasher (a key that only this process uses).
fn random_key() -> [u8; 32] {
    use std::hash::{BuildHasher, Hasher};
    let mut key = [0u8; 32];
    for chunk in key.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    key
}
