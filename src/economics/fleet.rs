//! The fleet's ledger, read back from Prometheus: the `tailor_arm_*` and `tailor_feedback_*`
//! counters of every replica, summed, over each route's window. Exact to the last scrape:
//! raw samples, not `increase()` (which extrapolates to the window's edges). Per series, each
//! sample adds its difference from the one before; a process that restarted (its counter went
//! down, or `tailor_start_time_seconds` changed) counts its first sample from zero, and so does a
//! series whose process started inside the window. Lost: what a replica counted after its last
//! scrape before it died.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::export;
use super::ledger::{
    rfc3339, unix_now, Counts, Key, Ledger, Snapshot, Source, SpendLine, Traffic, LATENCY_MS,
};
use crate::config::{Config, EconomicsSource};
use crate::usage::price::PICO_PER_USD;

/// The window when neither the route nor the caller gives one: all the data Prometheus has.
const ALL_DATA: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Before a window's start, how far back a sample still counts as the value at the start.
const LOOKBACK: f64 = 300.0;
/// Points per spend line on the status page.
const LINE_POINTS: usize = 60;
/// The largest answer read from Prometheus (a longer window needs `experiment.since`).
const MAX_ANSWER_BYTES: usize = 256 << 20;
/// How long a fleet snapshot is reused: pages that refresh every 30 s, and several viewers, do
/// not each read every sample again.
const CACHE_FOR: Duration = Duration::from_secs(10);

type Cached = Option<(std::time::Instant, String, Snapshot)>;
static CACHE: std::sync::Mutex<Cached> = std::sync::Mutex::new(None);

/// One series as Prometheus returns it: labels and raw samples (unix seconds, value).
#[derive(Debug, Clone, Deserialize)]
pub struct Series {
    pub metric: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "samples")]
    pub values: Vec<(f64, f64)>,
}

fn samples<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(f64, f64)>, D::Error> {
    let raw: Vec<(f64, String)> = Deserialize::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(t, v)| (t, v.parse().unwrap_or(f64::NAN)))
        .collect())
}

/// The labels that name a metric's series within one process; the rest name the process's
/// scrape target (instance, job, and whatever relabelling adds).
const OWN_LABELS: [&str; 6] = ["__name__", "route", "model", "traffic", "type", "le"];

fn target(s: &Series) -> String {
    s.metric
        .iter()
        .filter(|(k, _)| !OWN_LABELS.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v},"))
        .collect()
}

/// A series' increase over (since, end]: see the module doc. `start_at(t)`: the process start
/// time its target reported at `t`; `first_scraped(start)`: when that process was first scraped. Values are compared exactly, so money is passed in integer
/// picodollars (as f64, exact below 2^53). Also returns each sample's increment, for the charts.
pub fn increase(
    samples: &[(f64, f64)],
    since: Option<f64>,
    start_at: &dyn Fn(f64) -> Option<f64>,
    first_scraped: &dyn Fn(f64) -> Option<f64>,
) -> (f64, Vec<(f64, f64)>) {
    let mut total = 0.0;
    let mut steps = Vec::new();
    let mut prev: Option<(f64, Option<f64>)> = None;
    for &(t, v) in samples {
        if !v.is_finite() {
            continue;
        }
        let st = start_at(t);
        if since.is_some_and(|s| t <= s) {
            // before the window: the latest one is the value at its start
            prev = Some((v, st));
            continue;
        }
        let inc = match prev {
            Some((pv, pst)) => {
                let restarted = v < pv || matches!((st, pst), (Some(a), Some(b)) if a != b);
                if restarted {
                    v
                } else {
                    v - pv
                }
            }
            // no value at the window's start: from zero if the process started inside it, or
            // if it was scraped before without this series (the series was born after)
            None => match since {
                None => v,
                Some(s) if st.is_some_and(|st| st >= s) => v,
                Some(_) if st.and_then(first_scraped).is_some_and(|seen| seen < t) => v,
                Some(_) => 0.0,
            },
        };
        total += inc;
        if inc != 0.0 {
            steps.push((t, inc));
        }
        prev = Some((v, st));
    }
    (total, steps)
}

/// The snapshot of `cfg`'s routes from Prometheus series (pure: tests feed it by hand).
/// `since`: the caller's window start (unix seconds) for every route, else each route's own.
pub fn snapshot_from(
    cfg: &Config,
    series: &[Series],
    now: f64,
    since: Option<f64>,
    url: &str,
) -> Snapshot {
    // process start per target, by sample time
    let mut starts: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
    for s in series.iter().filter(|s| name(s) == export::START) {
        starts.entry(target(s)).or_default().extend(&s.values);
    }
    for v in starts.values_mut() {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let data_start = series
        .iter()
        .filter_map(|s| s.values.first().map(|v| v.0))
        .fold(f64::INFINITY, f64::min);
    let data_start = if data_start.is_finite() {
        data_start
    } else {
        now
    };
    let window_of = |route: &str| -> Option<f64> {
        since.or_else(|| {
            cfg.routes
                .iter()
                .find(|r| r.name == route)
                .and_then(|r| r.experiment.since)
                .map(|t| {
                    t.duration_since(std::time::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64())
                })
        })
    };
    let mut counts: BTreeMap<(String, String, Traffic), Counts> = BTreeMap::new();
    let mut lines: BTreeMap<(String, String, Traffic), Vec<(f64, f64)>> = BTreeMap::new();
    let mut seen_targets = BTreeSet::new();
    let mut seen_processes = BTreeSet::new();
    for s in series {
        let n = name(s);
        let (Some(route), Some(model)) = (s.metric.get("route"), s.metric.get("model")) else {
            continue;
        };
        if !cfg.routes.iter().any(|r| &r.name == route) {
            continue;
        }
        let traffic = match s.metric.get("traffic").map(String::as_str) {
            Some("shadow") => Traffic::Shadow,
            _ => Traffic::Primary,
        };
        let tgt = target(s);
        let st = starts.get(&tgt);
        let start_at = |t: f64| -> Option<f64> {
            let v = st?;
            let i = v.partition_point(|p| p.0 <= t);
            v.get(i.checked_sub(1)?).map(|p| p.1)
        };
        let win = window_of(route);
        let money = matches!(n, export::COST | export::ANSWERED_COST);
        let values: Vec<(f64, f64)> = if money {
            s.values
                .iter()
                .map(|&(t, v)| (t, (v * PICO_PER_USD).round()))
                .collect()
        } else {
            s.values.clone()
        };
        let first_scraped =
            |start: f64| -> Option<f64> { st?.iter().find(|p| p.1 == start).map(|p| p.0) };
        let (inc, steps) = increase(&values, win, &start_at, &first_scraped);
        if inc != 0.0 {
            seen_targets.insert(tgt.clone());
            for (t, _) in &steps {
                if let Some(p) = start_at(*t) {
                    seen_processes.insert((tgt.clone(), p.to_bits()));
                }
            }
        }
        let key = (route.clone(), model.clone(), traffic);
        let c = counts.entry(key.clone()).or_default();
        let whole = inc.max(0.0).round() as u64;
        match n {
            export::REQUESTS => c.requests += whole,
            export::ERRORS => c.errors += whole,
            export::ANSWERED => c.answered += whole,
            export::COST => {
                c.cost_pico += whole;
                lines.entry(key).or_default().extend(steps);
            }
            export::ANSWERED_COST => c.answered_cost_pico += whole,
            export::ANSWERED_COST_SQ => c.answered_cost_sq_usd += inc,
            export::TOKENS => match s.metric.get("type").map(String::as_str) {
                Some("input") => c.input += whole,
                Some("cached_input") => {
                    c.cached += whole;
                    c.input += whole;
                }
                Some("output") => c.output += whole,
                _ => {}
            },
            "tailor_feedback_total" => c.feedback.n += inc,
            "tailor_feedback_score_total" => c.feedback.sum += inc,
            "tailor_feedback_score_squared_total" => c.feedback.sum_sq += inc,
            "tailor_arm_duration_seconds_bucket" => {
                let le: f64 = s
                    .metric
                    .get("le")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(f64::NAN);
                // cumulative buckets: each adds to its own and the ones above (undone below)
                if let Some(i) = LATENCY_MS
                    .iter()
                    .position(|ms| (*ms as f64 / 1_000.0 - le).abs() < 1e-9)
                {
                    c.latency[i] += whole;
                } else if le.is_infinite() {
                    c.latency[LATENCY_MS.len()] += whole;
                }
            }
            _ => {}
        }
    }
    let arms: Vec<(Key, Counts)> = counts
        .into_iter()
        .map(|((r, m, t), mut c)| {
            // cumulative "le" counts to counts per bucket
            for i in (1..c.latency.len()).rev() {
                c.latency[i] = c.latency[i].saturating_sub(c.latency[i - 1]);
            }
            ((Arc::from(r.as_str()), Arc::from(m.as_str()), t), c)
        })
        .collect();
    let window = |route: &str| {
        let s = window_of(route).unwrap_or(data_start);
        (s, Duration::from_secs_f64((now - s).max(0.0)))
    };
    let history = lines
        .into_iter()
        .map(|((r, m, t), steps)| {
            let (s, _) = window(&r);
            (
                (Arc::from(r.as_str()), Arc::from(m.as_str()), t),
                spend_line(steps, s, now),
            )
        })
        .collect();
    let replicas = seen_targets.len();
    let processes = seen_processes.len();
    Snapshot {
        arms,
        elapsed: Duration::from_secs_f64((now - since.unwrap_or(data_start)).max(0.0)),
        since_unix: since.unwrap_or(data_start),
        routes: cfg
            .routes
            .iter()
            .map(|r| {
                let (s, d) = window(&r.name);
                (r.name.clone(), s, d)
            })
            .collect(),
        history,
        source: Source {
            kind: "prometheus",
            description: format!(
                "the fleet: {replicas} replica{} ({processes} process{}) in Prometheus at {url}, up to {}",
                if replicas == 1 { "" } else { "s" },
                if processes == 1 { "" } else { "es" },
                rfc3339(now)
            ),
            prometheus_url: Some(url.to_owned()),
            replicas: Some(replicas),
            processes: Some(processes),
            error: None,
        },
    }
}

fn name(s: &Series) -> &str {
    s.metric.get("__name__").map_or("", String::as_str)
}

/// Increments (picodollars, at sample times) to a cumulative USD line of at most
/// [`LINE_POINTS`] points from `since` to `now`.
fn spend_line(mut steps: Vec<(f64, f64)>, since: f64, now: f64) -> SpendLine {
    steps.sort_by(|a, b| a.0.total_cmp(&b.0));
    let span = (now - since).max(1.0);
    let mut line = vec![(since, 0.0)];
    let mut sum = 0.0;
    let mut it = steps.into_iter().peekable();
    for i in 1..=LINE_POINTS {
        let t = since + span * i as f64 / LINE_POINTS as f64;
        while let Some((_, v)) = it.next_if(|(st, _)| *st <= t) {
            sum += v;
        }
        line.push((t, sum / PICO_PER_USD));
    }
    line
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(default)]
    result: Vec<Series>,
}

/// The raw samples tailor's economics need, from `url`, over `range` up to `now`.
async fn fetch(
    url: &str,
    range: Duration,
    now: f64,
    timeout: Duration,
) -> Result<Vec<Series>, String> {
    let query = format!(
        "{{__name__=~\"tailor_arm_(requests|errors|answered|tokens|cost_usd|answered_cost_usd|answered_cost_usd_squared)_total|tailor_arm_duration_seconds_bucket|tailor_feedback_(total|score_total|score_squared_total)|{}\"}}[{}s]",
        export::START,
        range.as_secs().max(1)
    );
    let uri = format!("{url}/api/v1/query?query={}&time={now:.3}", encode(&query));
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: http::Uri = uri.parse().map_err(|e| format!("{url}: {e}"))?;
    let work = async {
        let resp = client.get(uri).await.map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| {
                format!(
                    "{url}: {e} (over {} MiB: set experiment.since)",
                    MAX_ANSWER_BYTES >> 20
                )
            })?
            .to_bytes();
        let a: Answer = serde_json::from_slice(&body)
            .map_err(|e| format!("{url} answered {status} with no Prometheus JSON: {e}"))?;
        if a.status != "success" {
            return Err(format!(
                "{url} answered {status}: {}",
                a.error.unwrap_or_default()
            ));
        }
        Ok(a.data.map(|d| d.result).unwrap_or_default())
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("{url} did not answer in {timeout:?}"))?
}

/// The fleet's snapshot for `cfg` from Prometheus. `since` (unix seconds) overrides every
/// route's window.
pub async fn snapshot(
    cfg: &Config,
    src: &EconomicsSource,
    since: Option<f64>,
) -> Result<Snapshot, String> {
    let now = unix_now();
    let starts: Vec<Option<f64>> = match since {
        Some(s) => vec![Some(s)],
        None => cfg
            .routes
            .iter()
            .map(|r| {
                r.experiment.since.map(|t| {
                    t.duration_since(std::time::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64())
                })
            })
            .collect(),
    };
    let range = if starts.iter().any(Option::is_none) {
        ALL_DATA
    } else {
        let earliest = starts.iter().flatten().fold(now, |a, b| a.min(*b));
        Duration::from_secs_f64((now - earliest).max(0.0) + LOOKBACK)
    };
    let series = fetch(&src.prometheus_url, range, now, src.timeout).await?;
    Ok(snapshot_from(cfg, &series, now, since, &src.prometheus_url))
}

/// The figures `/economics`, the status page and `tailor report` show: the fleet's from
/// Prometheus with `economics.prometheus_url`, else this replica's ledger. When Prometheus
/// cannot be read, this replica's, and the source says why.
pub async fn figures(cfg: &Config, ledger: &Ledger, since: Option<f64>) -> Snapshot {
    let Some(src) = &cfg.economics else {
        return ledger.snapshot();
    };
    let key = format!(
        "{} {since:?} {:?}",
        src.prometheus_url,
        cfg.routes
            .iter()
            .map(|r| (&r.name, r.experiment.since))
            .collect::<Vec<_>>()
    );
    if let Some((at, k, s)) = CACHE.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        if *k == key && at.elapsed() < CACHE_FOR {
            return s.clone();
        }
    }
    match snapshot(cfg, src, since).await {
        Ok(s) => {
            *CACHE.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((std::time::Instant::now(), key, s.clone()));
            s
        }
        Err(e) => {
            let mut s = ledger.snapshot();
            s.source.description = format!(
                "{} (Prometheus at {} could not be read: {e})",
                s.source.description, src.prometheus_url
            );
            s.source.prometheus_url = Some(src.prometheus_url.clone());
            s.source.error = Some(e);
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: f64) -> Option<f64> {
        None
    }

    #[test]
    fn a_series_born_inside_the_window_counts_from_zero() {
        // the process (start 1) was scraped at 8 without the series; it appears at 12 with 3
        let s = [(12.0, 3.0), (13.0, 5.0)];
        assert_eq!(
            increase(&s, Some(10.0), &|_| Some(1.0), &|_| Some(8.0)).0,
            5.0
        );
        // first scraped together with it: its value may hold what came before the window
        assert_eq!(
            increase(&s, Some(10.0), &|_| Some(1.0), &|_| Some(12.0)).0,
            2.0
        );
    }

    #[test]
    fn increase_reads_every_sample_and_restarts_from_zero() {
        // 5, 8, restart (3), 4: 8 + 3 + 1 from zero
        let s = [(1.0, 5.0), (2.0, 8.0), (3.0, 3.0), (4.0, 4.0)];
        assert_eq!(increase(&s, None, &none, &none).0, 12.0);
        // from 1.5 on: the value at the start is 5
        assert_eq!(increase(&s, Some(1.5), &none, &none).0, 3.0 + 3.0 + 1.0);
    }

    #[test]
    fn a_restart_that_counted_past_the_old_value_is_seen_by_its_start_time() {
        // the counter went 10 → 12 across a restart: the new process counted 12 from zero
        let s = [(1.0, 4.0), (2.0, 10.0), (3.0, 12.0)];
        let start = |t: f64| Some(if t < 2.5 { 100.0 } else { 200.0 });
        assert_eq!(increase(&s, None, &start, &none).0, 10.0 + 12.0);
        assert_eq!(increase(&s, None, &none, &none).0, 12.0);
    }

    fn series(name: &str, instance: &str, extra: &[(&str, &str)], values: &[(f64, f64)]) -> Series {
        let mut metric: BTreeMap<String, String> = [
            ("__name__", name),
            ("instance", instance),
            ("job", "tailor"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        metric.retain(|_, v| !v.is_empty());
        Series {
            metric,
            values: values.to_vec(),
        }
    }

    #[test]
    fn two_replicas_and_a_restart_sum_to_the_exact_spend() {
        let cfg = Config::from_yaml(
            r#"
upstreams: { u: { url: "http://127.0.0.1:1/v1" } }
models: { m: { upstream: u, id: gpt-4o-2024-08-06 } }
routes: [{ name: r, split: [{ model: m }] }]
"#,
            &|_| None,
        )
        .unwrap();
        let arm = [("route", "r"), ("model", "m"), ("traffic", "primary")];
        let s = vec![
            // replica a: $0.1 then $0.3, restarted at t=30 (start time 25), then $0.2
            series(
                export::START,
                "a",
                &[],
                &[(10.0, 1.0), (20.0, 1.0), (30.0, 25.0)],
            ),
            series(
                export::COST,
                "a",
                &arm,
                &[(10.0, 0.1), (20.0, 0.3), (30.0, 0.2)],
            ),
            series(
                export::REQUESTS,
                "a",
                &arm,
                &[(10.0, 1.0), (20.0, 3.0), (30.0, 2.0)],
            ),
            // replica b, started at 15: $0.000000000001 (one picodollar) and $0.7
            series(export::START, "b", &[], &[(20.0, 15.0), (30.0, 15.0)]),
            series(export::COST, "b", &arm, &[(20.0, 1e-12), (30.0, 0.7)]),
            series(export::REQUESTS, "b", &arm, &[(20.0, 1.0), (30.0, 4.0)]),
        ];
        let snap = snapshot_from(&cfg, &s, 31.0, None, "http://p");
        let c = snap.get("r", "m", Traffic::Primary);
        // a: 0.1 + 0.2 + 0.2 (from zero after its restart); b: 0.7 (from zero: started inside)
        assert_eq!(c.cost_pico, 1_200_000_000_000);
        assert_eq!(c.requests, 3 + 2 + 4);
        assert_eq!(
            (snap.source.replicas, snap.source.processes),
            (Some(2), Some(3))
        );
        // from t=15: a counts from its value at 10 (0.1); b from zero (started at 15)
        let snap = snapshot_from(&cfg, &s, 31.0, Some(15.0), "http://p");
        assert_eq!(
            snap.get("r", "m", Traffic::Primary).cost_pico,
            1_100_000_000_000
        );
    }

    #[test]
    fn a_first_sample_counts_from_zero_only_if_its_process_started_inside_the_window() {
        let s = [(10.0, 7.0), (11.0, 9.0)];
        // started at 9.5, window from 5: all of it
        assert_eq!(increase(&s, Some(5.0), &|_| Some(9.5), &none).0, 9.0);
        // started at 1, before the window, no sample at its start: only what came after
        assert_eq!(increase(&s, Some(5.0), &|_| Some(1.0), &none).0, 2.0);
    }
}
