//! `tollgate-proxy --from-dir DIR`: the standalone gateway; or
//! `tollgate-proxy --from-operator URL`: follow an operator's table (cluster mode).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use tollgate_proxy::operator_source::OperatorConfig;
use tollgate_proxy::{Gateway, GatewayConfig};

/// Tollgate gateway: serves the Products, Plans, Subscriptions and ApiPolicies in a directory of
/// manifests (reloading them when they change), or the table an operator distributes.
#[derive(Debug, Parser)]
#[command(name = "tollgate-proxy", version)]
struct Args {
    /// Directory of YAML manifests (every *.yaml / *.yml, multi-document).
    #[arg(
        long,
        env = "TOLLGATE_FROM_DIR",
        required_unless_present = "from_operator",
        conflicts_with = "from_operator"
    )]
    from_dir: Option<PathBuf>,
    /// Follow the operator's table at this base URL (http://HOST:PORT of its --distribute-listen).
    #[arg(long, env = "TOLLGATE_FROM_OPERATOR")]
    from_operator: Option<String>,
    /// ServiceAccount token presented to the operator (re-read on every request: the kubelet
    /// rotates it).
    #[arg(
        long,
        env = "TOLLGATE_TOKEN_FILE",
        default_value = tollgate_proxy::operator_source::DEFAULT_TOKEN_FILE,
        requires = "from_operator"
    )]
    token_file: PathBuf,
    /// Directory for the last-known-good table (table.json), served at start when the operator
    /// cannot be reached.
    #[arg(long, env = "TOLLGATE_STATE_DIR", requires = "from_operator")]
    state_dir: Option<PathBuf>,
    /// Address the proxy listens on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "TOLLGATE_LISTEN")]
    listen: SocketAddr,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "127.0.0.1:9901", env = "TOLLGATE_ADMIN_LISTEN")]
    admin_listen: SocketAddr,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Json, env = "TOLLGATE_LOG_FORMAT")]
    log_format: LogFormat,
    /// Seconds to let in-flight requests finish on SIGTERM / Ctrl-C.
    #[arg(long, default_value_t = 10)]
    drain_seconds: u64,
    /// Request worker threads (default: one per CPU, or TOKIO_WORKER_THREADS).
    #[arg(long, env = "TOLLGATE_THREADS")]
    threads: Option<usize>,
    /// Per-request access log (target `access`, one JSON line per request).
    #[arg(long, value_enum, default_value_t = Switch::On, env = "TOLLGATE_ACCESS_LOG")]
    access_log: Switch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Switch {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.access_log == Switch::Off {
        filter = filter.add_directive(
            format!("{}=off", tollgate_proxy::access_log::TARGET)
                .parse()
                .context("access log filter")?,
        );
    }
    match args.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        anyhow::ensure!(n >= 1, "--threads must be at least 1");
        builder.worker_threads(n);
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = match (args.from_dir, args.from_operator) {
        (Some(dir), _) => {
            anyhow::ensure!(
                dir.is_dir(),
                "--from-dir {}: not a directory",
                dir.display()
            );
            GatewayConfig::new(dir)
        }
        (None, Some(url)) => {
            let mut config = GatewayConfig::new(PathBuf::new());
            config.operator = Some(OperatorConfig {
                url,
                token_file: args.token_file,
                state_dir: args.state_dir,
            });
            config
        }
        (None, None) => anyhow::bail!("one of --from-dir or --from-operator is required"),
    };
    config.listen = args.listen;
    config.admin_listen = args.admin_listen;
    config.drain_timeout = Duration::from_secs(args.drain_seconds);
    let gateway = Gateway::start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    gateway.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
