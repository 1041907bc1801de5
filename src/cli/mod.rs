//! The `tailor` command line: the clap definitions and the dispatch to one file per command.
//! `anyhow` lives only here, in the binary.

/// `println!` that ignores a closed stdout (`tailor check | head` must not panic).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod check;
mod common;
mod dataset;
mod demo;
mod import;
mod mock;
mod report;
mod route;
mod serve;
mod simulate;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use tailor::request::Endpoint;

use self::common::OutFormat;
use self::serve::Overrides;

#[derive(Parser)]
#[command(
    name = "tailor",
    version,
    about = "OpenAI-compatible routing proxy: rule-routed, A/B split, tokens and dollars per route"
)]
pub struct Cli {
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
        /// The config file: upstreams, models, routes (see README, "routes.yaml").
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Run tailor with the shipped routes.yaml against the built-in simulated OpenAI: no API key.
    Demo {
        /// The config file: upstreams, models, routes (see README, "routes.yaml").
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
        /// Where the simulator listens.
        #[arg(long, default_value = "127.0.0.1:0")]
        mock_listen: SocketAddr,
        /// Also send a realistic traffic mix to tailor (requests per second; `--traffic` = 20):
        /// support questions on the A/B route, summaries with a shadow, the rest to the default.
        /// Access lines are off meanwhile (the status page shows the traffic).
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
        /// The config file: upstreams, models, routes (see README, "routes.yaml").
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
        /// The config file: upstreams, models, routes (see README, "routes.yaml").
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
    },
    /// Print the routing decision for one request body, read from stdin:
    /// `echo '{"model":"gpt-4o","messages":[]}' | tailor route -H 'X-Team: support'`.
    Route {
        /// The config file: upstreams, models, routes (see README, "routes.yaml").
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        /// The endpoint the body is sent to.
        #[arg(long, value_enum, default_value_t = EndpointArg::Chat)]
        endpoint: EndpointArg,
        /// A request header, `name: value` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// Where the random draw of an unsticky split lands, a fraction in 0..1 of the route's
        /// total weight: with arms weighted 90/10, 0.5 picks the first and 0.95 the second.
        /// Sticky requests (a `user` or sticky header) ignore it.
        #[arg(long, default_value_t = 0.0, value_parser = parse_fraction, value_name = "FRACTION")]
        draw: f64,
    },
    /// Is the fine-tune worth it? The fleet's verdict from Prometheus (as /economics shows it).
    Report {
        /// The config file: upstreams, models, routes (see README, "routes.yaml").
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        /// Prometheus's URL (default: economics.prometheus_url of the config).
        #[arg(long)]
        prometheus: Option<String>,
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
        /// Window start for every route: `7d`, `12h` (before now) or an RFC 3339 time (default:
        /// each route's experiment.since, else all the data).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: OutFormat,
    },
    /// Convert another proxy's config to a routes.yaml (stdout); what could not be converted goes
    /// to stderr.
    Import {
        #[command(subcommand)]
        cmd: ImportCmd,
    },
    /// Run the simulated OpenAI server alone. Like OpenAI it wants a key: a request without
    /// `Authorization: Bearer <any key>` (Azure: `api-key`) gets 401, and the key `sk-invalid`
    /// gets 401 invalid_api_key. Any other key is accepted, so point an upstream at it with
    /// `api_key_env:` set to any value (an upstream with `auth: none` gets 401 here).
    MockUpstream {
        /// Where it listens (`127.0.0.1:0`: a free port, printed on start).
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

/// `--draw`: a fraction in 0..=1 (clap's message names the flag and the value).
fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!(
            "`{s}` is not a fraction between 0 and 1, like 0.95"
        )),
    }
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
    // lines are batched off the request path (tailor::logs); colours only on a terminal, never
    // escape codes in a log file, and NO_COLOR is honoured
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(
            std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .with_writer(tailor::logs::stderr());
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tailor::logs::flush();
        default_hook(info);
    }));
    let plain = tracing_subscriber::fmt::format();
    tailor::logs::set_json(matches!(cli.log_format, LogFormat::Json));
    match cli.log_format {
        LogFormat::Text => b
            .event_format(tailor::logs::Access {
                inner: plain,
                json: false,
            })
            .init(),
        LogFormat::Json => b
            .json()
            .event_format(tailor::logs::Access {
                inner: plain.json().flatten_event(true),
                json: true,
            })
            .init(),
    }
}

#[derive(Subcommand)]
enum ImportCmd {
    /// A LiteLLM proxy config (`model_list`, `router_settings`, `litellm_settings`):
    /// `tailor import litellm config.yaml > routes.yaml`.
    Litellm { file: PathBuf },
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

/// Runs the command the command line names.
pub fn run(mut cli: Cli) -> Result<()> {
    // `demo --traffic` would print an access line per request and scroll its "Try:" block away
    if let Cmd::Demo {
        traffic: Some(r), ..
    } = &cli.cmd
    {
        if *r > 0.0 {
            cli.no_access_log = true;
            // and a line per shadow pair
            cli.log.push_str(",tailor::shadow=warn");
        }
    }
    init_logs(&cli);
    let result = run_command(cli.cmd);
    tailor::logs::flush();
    result
}

fn run_command(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Check { config } => check::run(&config),
        Cmd::Dataset {
            cmd:
                DatasetCmd::Check {
                    file,
                    model,
                    epochs,
                    format,
                },
        } => dataset::run(&file, &model, epochs, format),
        Cmd::Simulate {
            config,
            traffic,
            format,
        } => simulate::run(&config, &traffic, format),
        Cmd::Route {
            config,
            endpoint,
            headers,
            draw,
        } => route::run(&config, endpoint.into(), &headers, draw),
        Cmd::Serve { config, overrides } => serve::run(config, overrides),
        Cmd::Demo {
            config,
            overrides,
            mock_listen,
            traffic,
        } => demo::run(config, overrides, mock_listen, traffic),
        Cmd::Report {
            config,
            prometheus,
            route,
            since,
            format,
        } => report::run(&config, prometheus, route, since, format),
        Cmd::Import {
            cmd: ImportCmd::Litellm { file },
        } => import::run_litellm(&file),
        Cmd::MockUpstream { listen } => mock::run(listen),
    }
}
