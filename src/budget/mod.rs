//! Budgets and rate limits (`limits:`), enforced for the whole fleet through the shared
//! [`store`]. Before a request is forwarded, its worst case (estimated prompt tokens plus its
//! `max_tokens`, or the limit's default, at the routed model's prices) is reserved against every
//! limit that matches its client, route and model, all at once or not at all; when it ends, the
//! reservation is settled to what it really used ([`Reservation`], a subscriber of the request's
//! meter). A dollar budget admits while its window's spend is below the cap (the last request may
//! cross it by its own cost); a rate admits only what fits.
//!
//! When the store does not answer within `shared_state.timeout`, `shared_state.on_error` decides:
//! `allow` forwards the request without counting it in the shared counters (its spend is still in
//! `tailor_cost_usd_total`), `deny` answers 503.

pub mod lease;
pub mod store;
pub mod window;

use std::sync::Arc;
use std::time::Duration;

use self::store::{Op, Reserved, Store, StoreError};
use crate::config::{Config, Limit, OnError, Per};
use crate::error::ProxyError;
use crate::metrics::limits::LimitMetrics;
use crate::usage::event::{Finished, Subscriber};
use crate::usage::price::PICO_PER_USD;
use crate::usage::Usage;

/// The most output tokens a request reserves (a larger `max_tokens` counts as this).
const MAX_OUTPUT_TOKENS: u64 = 10_000_000;
/// Seconds a key outlives its window (clock skew between replicas).
const SLACK: u64 = 120;
/// How long a feedback id is remembered for "once only".
pub const FEEDBACK_TTL: Duration = Duration::from_secs(90 * 86_400);

/// What a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Usd,
    Tokens,
    Requests,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Usd => "usd",
            Kind::Tokens => "tokens",
            Kind::Requests => "requests",
        }
    }
}

/// The request a reservation is for.
pub struct Ask<'a> {
    pub route: usize,
    pub model: usize,
    pub client: &'a str,
    pub prompt_tokens: u64,
    pub max_output_tokens: Option<u64>,
}

fn matches(l: &Limit, a: &Ask<'_>) -> bool {
    l.client.as_deref().is_none_or(|c| c == a.client)
        && l.route.is_none_or(|r| r == a.route)
        && l.model.is_none_or(|m| m == a.model)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The key of a limit's counter in a window.
fn key(name: &str, kind: Kind, start: u64) -> String {
    // one hash tag: a script's keys share a Redis Cluster slot
    format!("tailor:{{limits}}:{name}:{}:{start}", kind.as_str())
}

/// The store, the shared-state policy and the metrics: what a reservation needs.
#[derive(Clone)]
pub struct Budgets {
    pub store: Arc<Store>,
    pub timeout: Duration,
    pub on_error: OnError,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// One counter of a reservation: the limit (name, cap), what it counts, its key and amount.
#[derive(Debug, Clone)]
struct Held {
    limit: String,
    max: i64,
    kind: Kind,
    key: String,
    amount: i64,
}

/// An admitted request's reservation: settled when the request ends.
pub struct Reservation {
    budgets: Budgets,
    held: Vec<Held>,
}

impl Budgets {
    fn m(&self) -> &LimitMetrics {
        &self.metrics.limits
    }

    /// The store failed or was slow: `allow` forwards uncounted, `deny` refuses.
    fn store_failed(&self, op: &str, e: &StoreError) -> Result<(), ProxyError> {
        self.m().store_errors.with_label_values(&[op]).inc();
        tracing::warn!(op, error = %e, "shared state store failed");
        match self.on_error {
            OnError::Allow => Ok(()),
            OnError::Deny => Err(ProxyError::SharedStateUnavailable),
        }
    }

    fn set_usd_gauges(&self, held: &[Held], values: &[i64]) {
        for (h, v) in held.iter().zip(values) {
            if h.kind == Kind::Usd && *v > 0 {
                let spent = *v as f64 / PICO_PER_USD;
                self.m().spent.with_label_values(&[&h.limit]).set(spent);
                let left = (h.max - v).max(0) as f64 / PICO_PER_USD;
                self.m().remaining.with_label_values(&[&h.limit]).set(left);
            }
        }
    }

    /// Whether any limit of `cfg` applies to `ask` (if none, [`Self::reserve`] has nothing to do).
    pub fn applies(cfg: &Config, ask: &Ask<'_>) -> bool {
        cfg.limits.iter().any(|l| matches(l, ask))
    }

    /// Reserves `ask`'s worst case against every matching limit of `cfg`. `Ok(None)`: no limit
    /// matches, or the store failed and `on_error` is `allow`.
    pub async fn reserve(
        &self,
        cfg: &Config,
        ask: &Ask<'_>,
    ) -> Result<Option<Reservation>, ProxyError> {
        let limits: Vec<&Limit> = cfg.limits.iter().filter(|l| matches(l, ask)).collect();
        if limits.is_empty() {
            return Ok(None);
        }
        let now = unix_now();
        let price = cfg.models[ask.model].price;
        let mut held = Vec::new();
        let mut ops = Vec::new();
        let mut ends = Vec::new();
        for l in &limits {
            // a client's max_tokens is not checked here (the upstream does that): bounded so the
            // arithmetic cannot overflow
            let output = ask
                .max_output_tokens
                .unwrap_or(l.default_max_tokens)
                .min(MAX_OUTPUT_TOKENS);
            let mut add = |kind: Kind, per: Per, amount: i64, max: i64, strict: bool| {
                let (start, end) = window::window(per, now);
                let k = key(&l.name, kind, start);
                ops.push(Op {
                    key: k.clone(),
                    add: amount,
                    max,
                    strict,
                    expire_at: end + SLACK,
                });
                ends.push((end, per));
                held.push(Held {
                    limit: l.name.clone(),
                    max,
                    kind,
                    key: k,
                    amount,
                });
            };
            if let Some((max, per)) = l.usd {
                let worst = Usage {
                    input: ask.prompt_tokens,
                    output,
                    ..Usage::default()
                };
                let cost = i64::try_from(price.cost_pico(&worst)).unwrap_or(i64::MAX);
                add(
                    Kind::Usd,
                    per,
                    cost,
                    i64::try_from(max).unwrap_or(i64::MAX),
                    false,
                );
            }
            if let Some(t) = l.tokens_per_minute {
                let n = i64::try_from(ask.prompt_tokens.saturating_add(output)).unwrap_or(i64::MAX);
                add(
                    Kind::Tokens,
                    Per::Minute,
                    n,
                    i64::try_from(t).unwrap_or(i64::MAX),
                    true,
                );
            }
            if let Some(r) = l.requests_per_minute {
                add(
                    Kind::Requests,
                    Per::Minute,
                    1,
                    i64::try_from(r).unwrap_or(i64::MAX),
                    true,
                );
            }
        }
        // a request larger than a whole rate never fits: refused without asking the store
        if let Some(i) = held
            .iter()
            .position(|h| h.kind != Kind::Usd && h.amount > h.max)
        {
            return Err(self.refuse(&held[i], ends[i], 0, now));
        }
        let admitted = |budgets: &Budgets, held: Vec<Held>| {
            Ok(Some(Reservation {
                budgets: budgets.clone(),
                held,
            }))
        };
        let Some((leases, grant_lock)) = self.store.leases() else {
            // in this process: every request goes to the store, which is cheap here
            return match self.store_reserve(&ops).await {
                Ok(Reserved::Yes(values)) => {
                    self.set_usd_gauges(&held, &values);
                    admitted(self, held)
                }
                Ok(Reserved::No { index, used }) => {
                    Err(self.refuse(&held[index], ends[index], used, now))
                }
                Err(e) => self.store_failed("reserve", &e).map(|()| None),
            };
        };
        // Redis: from this replica's slices when they cover the request; else a new slice of
        // each counter that is short (or, for a rate near its cap, just what the request needs)
        let adds: Vec<(&str, i64)> = ops.iter().map(|o| (o.key.as_str(), o.add)).collect();
        if leases.take(&adds).is_ok() {
            return admitted(self, held);
        }
        // one slice request at a time: the one before may have covered this request too
        let Ok(_one) = tokio::time::timeout(self.timeout * 2, grant_lock.lock()).await else {
            let e = StoreError(format!(
                "slice request queue longer than {:?}",
                self.timeout * 2
            ));
            return self.store_failed("reserve", &e).map(|()| None);
        };
        let short = match leases.take(&adds) {
            Ok(()) => return admitted(self, held),
            Err(short) => short,
        };
        if self.store.claim_flusher() {
            self.start_flusher();
        }
        let mut last = None;
        for whole_slice in [true, false] {
            let grants: Vec<Op> = short
                .iter()
                .map(|&i| {
                    let o = &ops[i];
                    let add = if whole_slice {
                        lease::slice(o.max, o.add, held[i].kind == Kind::Usd)
                    } else {
                        o.add
                    };
                    Op { add, ..o.clone() }
                })
                .collect();
            match self.grant(grants.clone()).await {
                Ok(Reserved::Yes(values)) => {
                    let granted: Vec<(&str, i64, u64)> = grants
                        .iter()
                        .map(|g| (g.key.as_str(), g.add, g.expire_at))
                        .collect();
                    leases.grant_and_take(&granted, &adds);
                    let short_held: Vec<Held> = short.iter().map(|&i| held[i].clone()).collect();
                    self.set_usd_gauges(&short_held, &values);
                    return admitted(self, held);
                }
                Ok(Reserved::No { index, used }) => last = Some((short[index], used)),
                Err(e) => return self.store_failed("reserve", &e).map(|()| None),
            }
        }
        let (i, used) = last.unwrap_or((0, 0));
        Err(self.refuse(&held[i], ends[i], used, now))
    }

    /// Asks Redis for slices in a task of its own: when the answer comes after the timeout, the
    /// request has moved on, but a granted slice still reaches this replica's lease (else it
    /// would be held in Redis, unused, until its window ends).
    async fn grant(&self, grants: Vec<Op>) -> Result<Reserved, StoreError> {
        let store = self.store.clone();
        let late = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let late2 = late.clone();
        let task = tokio::spawn(async move {
            let got = store.reserve(&grants).await;
            if late2.load(std::sync::atomic::Ordering::Acquire) {
                if let (Ok(Reserved::Yes(_)), Some((leases, _))) = (&got, store.leases()) {
                    let granted: Vec<(&str, i64, u64)> = grants
                        .iter()
                        .map(|g| (g.key.as_str(), g.add, g.expire_at))
                        .collect();
                    leases.grant_and_take(&granted, &[]);
                }
            }
            got
        });
        tokio::pin!(task);
        match tokio::time::timeout(self.timeout, &mut task).await {
            Ok(Ok(got)) => got,
            Ok(Err(e)) => Err(StoreError(e.to_string())),
            Err(_) => {
                late.store(true, std::sync::atomic::Ordering::Release);
                Err(StoreError(format!("no answer in {:?}", self.timeout)))
            }
        }
    }

    async fn store_reserve(&self, ops: &[Op]) -> Result<Reserved, StoreError> {
        tokio::time::timeout(self.timeout, self.store.reserve(ops))
            .await
            .unwrap_or_else(|_| Err(StoreError(format!("no answer in {:?}", self.timeout))))
    }

    /// The 429 for a counter that refused, and its count.
    fn refuse(&self, h: &Held, (end, per): (u64, Per), used: i64, now: u64) -> ProxyError {
        self.m()
            .rejections
            .with_label_values(&[&h.limit, h.kind.as_str()])
            .inc();
        let reset_secs = end.saturating_sub(now);
        match h.kind {
            Kind::Usd => ProxyError::BudgetExceeded {
                limit: h.limit.clone(),
                per: per.as_str(),
                reset_secs,
            },
            Kind::Tokens | Kind::Requests => {
                let what = h.kind.as_str();
                let left = (h.max - used).max(0);
                ProxyError::RateLimited {
                    never_fits: h.amount > h.max,
                    limit: h.limit.clone(),
                    what,
                    max: h.max as u64,
                    used: used.max(0) as u64,
                    requested: h.amount.max(0) as u64,
                    reset_secs,
                    headers: vec![
                        (limit_header(h.kind, "limit"), h.max.to_string()),
                        (limit_header(h.kind, "remaining"), left.to_string()),
                        (limit_header(h.kind, "reset"), format!("{reset_secs}s")),
                    ],
                }
            }
        }
    }

    /// Every 250 ms, gives the slices idle for a second back to Redis (on its own task).
    fn start_flusher(&self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let b = self.clone();
        rt.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let Some((leases, _)) = b.store.leases() else {
                    return;
                };
                let back = leases.drain_idle(unix_now());
                if back.is_empty() {
                    continue;
                }
                match tokio::time::timeout(Duration::from_secs(1), b.store.adjust(&back)).await {
                    Ok(Ok(_)) => {}
                    // not applied: the slices are still this replica's
                    Ok(Err(_)) => {
                        b.m().store_errors.with_label_values(&["settle"]).inc();
                        leases.restore(&back);
                    }
                    // maybe applied: not restored, so never returned twice (Redis may keep
                    // counting them until their window ends)
                    Err(_) => b.m().store_errors.with_label_values(&["settle"]).inc(),
                }
            }
        });
    }

    /// Whether feedback for `id` is the first for it in the fleet (always true without a shared
    /// store configured: `shared` false). A store failure counts it (`allow`) or refuses (`deny`).
    pub async fn feedback_once(&self, shared: bool, id: &str) -> Result<bool, ProxyError> {
        if !shared {
            return Ok(true);
        }
        let k = format!("tailor:{{limits}}:feedback:{id}");
        let got = tokio::time::timeout(self.timeout, self.store.once(&k, FEEDBACK_TTL))
            .await
            .unwrap_or_else(|_| Err(StoreError(format!("no answer in {:?}", self.timeout))));
        match got {
            Ok(first) => Ok(first),
            Err(e) => self.store_failed("feedback", &e).map(|()| true),
        }
    }
}

/// `x-ratelimit-limit-requests` and its kin.
fn limit_header(kind: Kind, what: &str) -> &'static str {
    match (kind, what) {
        (Kind::Tokens, "limit") => "x-ratelimit-limit-tokens",
        (Kind::Tokens, "remaining") => "x-ratelimit-remaining-tokens",
        (Kind::Tokens, _) => "x-ratelimit-reset-tokens",
        (_, "limit") => "x-ratelimit-limit-requests",
        (_, "remaining") => "x-ratelimit-remaining-requests",
        (_, _) => "x-ratelimit-reset-requests",
    }
}

impl Subscriber for Reservation {
    fn finished(&self, f: &Finished<'_>) {
        let used_tokens = f.usage.input.saturating_add(f.usage.output);
        let deltas: Vec<(String, i64)> = self
            .held
            .iter()
            .filter_map(|h| {
                let real = match h.kind {
                    Kind::Usd => i64::try_from(f.cost_pico).unwrap_or(i64::MAX),
                    Kind::Tokens => i64::try_from(used_tokens).unwrap_or(i64::MAX),
                    Kind::Requests => return None,
                };
                (real != h.amount).then(|| (h.key.clone(), real - h.amount))
            })
            .collect();
        // with Redis, what a request did not use goes back to this replica's slice
        let deltas: Vec<(String, i64)> = match self.budgets.store.leases() {
            Some((l, _)) => deltas
                .into_iter()
                .filter(|(k, d)| !l.give_back(k, -d))
                .collect(),
            None => deltas,
        };
        if deltas.is_empty() {
            return;
        }
        let b = self.budgets.clone();
        let held: Vec<Held> = self
            .held
            .iter()
            .filter(|h| h.kind != Kind::Requests && deltas.iter().any(|(k, _)| k == &h.key))
            .cloned()
            .collect();
        // settling must not hold the response: it runs on its own
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let got = tokio::time::timeout(
                b.timeout.max(Duration::from_millis(500)),
                b.store.adjust(&deltas),
            )
            .await
            .unwrap_or_else(|_| Err(StoreError("settle timed out".into())));
            match got {
                Ok(values) => b.set_usd_gauges(&held, &values),
                Err(e) => {
                    b.m().store_errors.with_label_values(&["settle"]).inc();
                    tracing::warn!(error = %e, "a reservation was not settled");
                }
            }
        });
    }
}
