//! `tollgate-proxy --from-dir DIR`: the standalone gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use tollgate_proxy::{Gateway, GatewayConfig};

/// Tollgate standalone gateway: serves the Products, Plans, Subscriptions and ApiPolicies in a
/// directory of manifests, and reloads them when they change.
#[derive(Debug, Parser)]
#[command(name = "tollgate-proxy", version)]
struct Args {
    /// Directory of YAML manifests (every *.yaml / *.yml, multi-document).
    #[arg(long, env = "TOLLGATE_FROM_DIR")]
    from_dir: PathBuf,
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
    anyhow::ensure!(
        args.from_dir.is_dir(),
        "--from-dir {}: not a directory",
        args.from_dir.display()
    );
    let mut config = GatewayConfig::new(args.from_dir);
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
