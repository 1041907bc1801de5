//! The `tailor` command line: serve, demo, check, route, mock-upstream.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use http::{HeaderMap, HeaderName, HeaderValue};
use tailor::config::{Auth, Config, PriceSource, Secret, Sticky, UpstreamKind};
use tailor::metrics::Metrics;
use tailor::reload::Adjust;
use tailor::request::{Endpoint, RequestView};
use tailor::{classify, mock, server};

/// `println!` that ignores a closed stdout (`tailor check | head` must not panic).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

#[derive(Parser)]
#[command(
    name = "tailor",
    version,
    about = "OpenAI-compatible routing proxy: rule-routed, A/B split, tokens and dollars per route"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Turn off the per-request access log line.
    #[arg(long, global = true)]
    no_access_log: bool,
    /// Log filter (tracing syntax), e.g. `info`, `debug`, `tailor=debug`. Overrides TAILOR_LOG.
    #[arg(long, global = true, env = "TAILOR_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the OpenAI-compatible API and the admin endpoints.
    Serve {
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        /// Override server.listen (port 0 picks a free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Override server.admin_listen.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
        /// Allow a non-loopback listen address with upstream keys and no `clients:` (sets
        /// server.allow_unauthenticated), e.g. in a container whose port is published on loopback.
        #[arg(long)]
        allow_unauthenticated: bool,
    },
    /// Run tailor with the shipped routes.yaml against the built-in simulated OpenAI: no API key.
    Demo {
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        #[arg(long)]
        listen: Option<SocketAddr>,
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
        /// Allow a non-loopback listen address with upstream keys and no `clients:` (sets
        /// server.allow_unauthenticated), e.g. in a container whose port is published on loopback.
        #[arg(long)]
        allow_unauthenticated: bool,
        /// Where the simulator listens.
        #[arg(long, default_value = "127.0.0.1:0")]
        mock_listen: SocketAddr,
        /// Also send a realistic traffic mix to tailor (requests per second; `--traffic` = 20):
        /// support questions on the A/B route, summaries with a shadow, the rest to the default.
        #[arg(long, num_args = 0..=1, default_missing_value = "20", value_name = "PER_SECOND")]
        traffic: Option<f64>,
    },
    /// Fine-tuning datasets captured from traffic.
    Dataset {
        #[command(subcommand)]
        cmd: DatasetCmd,
    },
    /// Replay recorded traffic (capture metadata files) through a candidate config, offline:
    /// request shares, tokens and projected cost per route and arm.
    Simulate {
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        /// A `*.meta.jsonl` file written by `capture:` (its dataset file is read next to it).
        #[arg(long)]
        traffic: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        format: OutFormat,
    },
    /// Validate a config; print its routes, models and prices.
    Check {
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
    },
    /// Print the routing decision for one request body read from stdin.
    Route {
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        /// The endpoint the body is sent to.
        #[arg(long, value_enum, default_value_t = EndpointArg::Chat)]
        endpoint: EndpointArg,
        /// A request header, `name: value` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// The random draw used for unsticky splits (to explain a given outcome).
        #[arg(long, default_value_t = 0)]
        draw: u64,
    },
    /// Run the simulated OpenAI server alone.
    MockUpstream {
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum EndpointArg {
    Chat,
    Completions,
    Embeddings,
    Responses,
}

impl From<EndpointArg> for Endpoint {
    fn from(e: EndpointArg) -> Endpoint {
        match e {
            EndpointArg::Chat => Endpoint::Chat,
            EndpointArg::Completions => Endpoint::Completions,
            EndpointArg::Embeddings => Endpoint::Embeddings,
            EndpointArg::Responses => Endpoint::Responses,
        }
    }
}

fn init_logs(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let mut filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info"));
    if cli.no_access_log {
        if let Ok(d) = "tailor::access=off".parse() {
            filter = filter.add_directive(d);
        }
    }
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().flatten_event(true).init(),
    }
}

fn env_var(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

fn load(path: &Path) -> Result<Config> {
    Config::load(path, &env_var).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logs(&cli);
    match cli.cmd {
        Cmd::Check { config } => check(&config),
        Cmd::Dataset {
            cmd:
                DatasetCmd::Check {
                    file,
                    model,
                    epochs,
                    format,
                },
        } => dataset_check(&file, &model, epochs, format),
        Cmd::Simulate {
            config,
            traffic,
            format,
        } => simulate(&config, &traffic, format),
        Cmd::Route {
            config,
            endpoint,
            headers,
            draw,
        } => route(&config, endpoint.into(), &headers, draw),
        Cmd::Serve {
            config,
            listen,
            admin_listen,
            allow_unauthenticated,
        } => {
            let adjust: Adjust = Arc::new(move |c: &mut Config| {
                override_listen(c, listen, admin_listen);
                c.server.allow_unauthenticated |= allow_unauthenticated;
            });
            let mut cfg = load(&config)?;
            adjust(&mut cfg);
            cfg.check_exposure().map_err(|e| anyhow::anyhow!("{e}"))?;
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
            runtime(Some(1))?.block_on(serve(cfg, config, adjust, None))
        }
        Cmd::Demo {
            config,
            listen,
            admin_listen,
            allow_unauthenticated,
            mock_listen,
            traffic,
        } => runtime(Some(1))?.block_on(async move {
            let sim = mock::start(mock_listen, false)
                .await
                .context("starting the simulated OpenAI server")?;
            let sim_addr = sim.addr;
            let adjust: Adjust = Arc::new(move |c: &mut Config| {
                override_listen(c, listen, admin_listen);
                c.server.allow_unauthenticated |= allow_unauthenticated;
                for u in &mut c.upstreams {
                    u.url = match u.kind {
                        UpstreamKind::Openai => format!("http://{sim_addr}/v1"),
                        UpstreamKind::Azure => format!("http://{sim_addr}"),
                    };
                    if let Auth::Key { key, .. } = &mut u.auth {
                        key.get_or_insert_with(|| Secret::new("sk-demo".into()));
                    }
                }
            });
            let mut cfg = load(&config)?;
            adjust(&mut cfg);
            cfg.check_exposure().map_err(|e| anyhow::anyhow!("{e}"))?;
            serve(cfg, config, adjust, Some((sim_addr, traffic))).await
        }),
        Cmd::MockUpstream { listen } => runtime(None)?.block_on(async move {
            let sim = mock::start(listen, false).await?;
            out!("simulated OpenAI listening on http://{}/v1", sim.addr);
            server::shutdown_signal().await;
            Ok(())
        }),
    }
}

/// The main runtime. `threads`: its worker threads (default: one per CPU). `serve` and `demo`
/// need only one: API connections are served by `server.workers` threads of their own, and the
/// main runtime runs the accept loop, the admin port and config reloads.
fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        b.worker_threads(n);
    }
    Ok(b.enable_all().build()?)
}

fn override_listen(cfg: &mut Config, listen: Option<SocketAddr>, admin: Option<SocketAddr>) {
    if let Some(l) = listen {
        cfg.server.listen = l;
    }
    if let Some(a) = admin {
        cfg.server.admin_listen = a;
    }
}

async fn serve(
    cfg: Config,
    path: PathBuf,
    adjust: Adjust,
    demo: Option<(SocketAddr, Option<f64>)>,
) -> Result<()> {
    let metrics = Metrics::new()?;
    let example_model = cfg
        .listed_models
        .iter()
        .find(|m| m.starts_with("gpt"))
        .cloned()
        .unwrap_or_else(|| "gpt-4o".into());
    let running = server::start(cfg, metrics)
        .await
        .context("binding listeners")?;
    let (api, admin) = (running.api_addr, running.admin_addr);
    let watcher = tokio::spawn(tailor::reload::watch(path, running.shared.clone(), adjust));
    // one line on stdout that scripts can wait for
    out!("tailor listening on http://{api}/v1 (admin: http://{admin})");
    tracing::info!(%api, %admin, "tailor started");
    if let Some((sim, traffic)) = demo {
        out!(
            r#"
Demo: every upstream points at the simulated OpenAI on http://{sim}/v1 (no API key needed).

Try:
  curl -s http://{api}/v1/chat/completions -H 'content-type: application/json' \
    -d '{{"model":"{example_model}","messages":[{{"role":"user","content":"Hello"}}]}}' -i

  python3 -c 'from openai import OpenAI; c = OpenAI(base_url="http://{api}/v1", api_key="unused"); \
print(c.chat.completions.create(model="{example_model}", messages=[{{"role":"user","content":"Hi"}}]).choices[0].message.content)'

  curl -s http://{admin}/metrics | grep ^tailor_

Status page (routes, spend, cost per request per arm, the fine-tune verdict): http://{admin}/
Ctrl-C to stop."#
        );
        if let Some(rate) = traffic.filter(|r| *r > 0.0) {
            out!("Sending demo traffic: {rate} requests/s (support A/B, summaries with a shadow, default).");
            tokio::spawn(mock::demo_traffic(api, rate));
        }
    }
    server::shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    watcher.abort();
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

fn usd(micro_per_m: u64) -> String {
    format!("{:.4}", micro_per_m as f64 / 1e6)
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_owned()
}

#[derive(Subcommand)]
enum DatasetCmd {
    /// Validate a dataset file the way OpenAI's fine-tuning upload does; count tokens, price it,
    /// find duplicates. Exits 1 if any line would be rejected.
    Check {
        file: PathBuf,
        /// The model to be fine-tuned (prices the training).
        #[arg(long, default_value = "gpt-4o-2024-08-06")]
        model: String,
        #[arg(long, default_value_t = 3)]
        epochs: u32,
        #[arg(long, value_enum, default_value = "text")]
        format: OutFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum OutFormat {
    Text,
    Json,
}

fn dataset_check(file: &Path, model: &str, epochs: u32, format: OutFormat) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    // the training rate of `ft:<model>` (or of the model itself) in the built-in table
    let price = tailor::usage::price::lookup(&format!("ft:{model}"))
        .or_else(|| tailor::usage::price::lookup(model))
        .and_then(|(_, e)| e.price.training)
        .map(|t| t as f64 / 1e6);
    let report = tailor::dataset::check(&text, epochs, price);
    match format {
        OutFormat::Text => out!("{}", report.render(&file.display().to_string())),
        OutFormat::Json => out!("{}", serde_json::to_string_pretty(&report)?),
    }
    if !report.errors.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

fn simulate(config: &Path, traffic: &Path, format: OutFormat) -> Result<()> {
    let cfg = load(config)?;
    let meta = std::fs::read_to_string(traffic)
        .with_context(|| format!("reading {}", traffic.display()))?;
    // x.meta.jsonl -> x.jsonl: the messages of the same requests, line for line
    let data_path = traffic
        .to_str()
        .and_then(|p| p.strip_suffix(".meta.jsonl"))
        .map(|p| PathBuf::from(format!("{p}.jsonl")));
    let data = data_path
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let meta_lines: Vec<&str> = meta.lines().collect();
    let data_lines: Vec<&str> = data.lines().collect();
    let p = tailor::simulate::simulate(&cfg, &meta_lines, &data_lines);
    match format {
        OutFormat::Text => out!("{}", p.render()),
        OutFormat::Json => out!("{}", serde_json::to_string_pretty(&p)?),
    }
    Ok(())
}

fn check(path: &Path) -> Result<()> {
    let cfg = load(path)?;
    out!("{}: OK", path.display());
    out!(
        "\nserver: listen {}  admin {}  max_body_bytes {}",
        cfg.server.listen,
        cfg.server.admin_listen,
        cfg.server.max_body_bytes
    );
    out!("\nupstreams:");
    for u in &cfg.upstreams {
        let auth = match &u.auth {
            Auth::Key { env, key: Some(_) } => format!("key from ${env} (set)"),
            Auth::Key { env, key: None } => {
                format!("key from ${env} (NOT SET: its models fail over, or answer 500)")
            }
            Auth::Passthrough => "caller's Authorization passed through".into(),
            Auth::None => "no credentials".into(),
        };
        let kind = match u.kind {
            UpstreamKind::Openai => "openai".to_owned(),
            UpstreamKind::Azure => format!(
                "azure api-version {}",
                u.api_version.as_deref().unwrap_or("")
            ),
        };
        out!("  {:<14} {:<36} {kind}; {auth}", u.name, u.url);
    }
    out!("\nmodels (USD per 1M tokens: input / cached input / output):");
    for m in &cfg.models {
        let src = match &m.price_source {
            PriceSource::Config => "price from config".to_owned(),
            PriceSource::Table { key, as_of } => format!("built-in `{key}` as of {as_of}"),
        };
        let src = match m.training_cost_usd() {
            Some(t) => format!("{src}; training cost ${t:.2}"),
            None => src,
        };
        out!(
            "  {:<14} {:<44} on {:<12} {} / {} / {}  ({src})",
            m.name,
            m.id,
            cfg.upstreams[m.upstream].name,
            usd(m.price.input),
            usd(m.price.cached_input),
            usd(m.price.output)
        );
    }
    out!("\nroutes (first match wins):");
    for (i, r) in cfg.routes.iter().enumerate() {
        let arms: Vec<String> = r
            .arms
            .iter()
            .map(|a| {
                format!(
                    "{} {:.0}%",
                    cfg.models[a.model].name,
                    100.0 * f64::from(a.weight) / r.total_weight as f64
                )
            })
            .collect();
        let fb: Vec<&str> = r
            .fallback
            .iter()
            .map(|m| cfg.models[*m].name.as_str())
            .collect();
        let sticky = match &r.sticky {
            Sticky::None => "none".to_owned(),
            Sticky::User => "user".to_owned(),
            Sticky::Header(h) => format!("header:{h}"),
        };
        out!(
            "  {i}. {:<14} -> {}  sticky: {sticky}  fallback: [{}]",
            r.name,
            arms.join(", "),
            fb.join(", ")
        );
        out!("     match: {}", r.matcher.describe());
        for p in &r.prompts {
            out!(
                "     {} gets a system prompt of {} bytes ({})",
                cfg.models[p.model].name,
                p.text.len(),
                if p.replace {
                    "replacing the client's"
                } else {
                    "prepended"
                }
            );
        }
        if let Some(s) = &r.shadow {
            out!(
                "     shadow: {}% copied to {}",
                s.percent,
                cfg.models[s.model].name
            );
        }
    }
    Ok(())
}

fn route(path: &Path, endpoint: Endpoint, headers: &[String], draw: u64) -> Result<()> {
    let cfg = load(path)?;
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body)?;
    let mut h = HeaderMap::new();
    for line in headers {
        let (k, v) = line
            .split_once(':')
            .with_context(|| format!("header `{line}` is not `name: value`"))?;
        h.append(
            HeaderName::from_bytes(k.trim().to_ascii_lowercase().as_bytes())?,
            HeaderValue::from_str(v.trim())?,
        );
    }
    let view = RequestView::parse(&body, endpoint).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ex = classify::explain(&cfg, &view, &h, draw);
    for (i, v) in ex.verdicts.iter().enumerate() {
        let r = &cfg.routes[i];
        match v {
            Ok(()) => out!("route {:<14} matches ({})", r.name, r.matcher.describe()),
            Err(c) => out!("route {:<14} skipped: {}", r.name, c.describe(&r.matcher)),
        }
    }
    match ex.decision {
        Some(d) => {
            let r = &cfg.routes[d.route];
            let m = &cfg.models[d.model];
            let fb: Vec<&str> = d
                .fallbacks
                .iter()
                .map(|i| cfg.models[*i].name.as_str())
                .collect();
            out!(
                "\ndecision: route={} model={} (upstream id {}) by {}; fallback: [{}]",
                r.name,
                m.name,
                m.id,
                d.pick,
                fb.join(", ")
            );
            Ok(())
        }
        None => bail!("no route matches: the request would get 404 model_not_found"),
    }
}
