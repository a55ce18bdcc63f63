//! `tollgate-operator`: flags, logging, signals; everything else is in the library.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tokio::sync::watch;

/// Tollgate's operator: compiles Products, Plans, Subscriptions and ApiPolicies, writes their
/// status, and generates subscription keys. Connects with KUBECONFIG or the in-cluster config.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "TOLLGATE_METRICS_LISTEN", default_value = "0.0.0.0:8081")]
    metrics_listen: SocketAddr,
    /// Watch only these namespaces (repeat the flag, or separate names with commas; default:
    /// all namespaces). Roles in those namespaces are then all the read access it needs.
    #[arg(long, env = "TOLLGATE_WATCH_NAMESPACE", value_delimiter = ',')]
    watch_namespace: Vec<String>,
    /// Namespace of the leader Lease. Default: in a pod, the pod's own namespace (from the
    /// ServiceAccount mount); outside one, tollgate-system. The operator stops at once if it
    /// does not exist.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, default_value = "tollgate-operator-leader")]
    lease_name: String,
    /// Identity in the Lease and in Events (default: POD_NAME, else host name and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a Lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// Milliseconds to wait after a change before recompiling.
    #[arg(long, default_value_t = 200)]
    debounce_ms: u64,
    /// Serve the compiled table to proxies on this address (GET /v1/table).
    #[arg(long, env = "TOLLGATE_DISTRIBUTE_LISTEN")]
    distribute_listen: Option<SocketAddr>,
    /// PEM certificate chain for the table endpoint; with --distribute-tls-key it serves only
    /// HTTPS (files are re-read when they change). Without: plain HTTP (loopback or a mesh).
    #[arg(
        long,
        env = "TOLLGATE_DISTRIBUTE_TLS_CERT",
        requires = "distribute_tls_key"
    )]
    distribute_tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for --distribute-tls-cert.
    #[arg(
        long,
        env = "TOLLGATE_DISTRIBUTE_TLS_KEY",
        requires = "distribute_tls_cert"
    )]
    distribute_tls_key: Option<std::path::PathBuf>,
    /// Audience proxies' ServiceAccount tokens must be bound to (TokenReview).
    #[arg(long, default_value = "tollgate")]
    token_audience: String,
    /// Redis holding the proxies' quota counters (the proxies' --redis: redis://, rediss://,
    /// redis+sentinel://HOST:PORT,…/MASTER, redis+cluster://HOST:PORT,…): with it the leader
    /// writes each Subscription's `status.usage`. Without it, no usage is shown.
    #[arg(long, env = "TOLLGATE_REDIS_URL")]
    redis: Option<String>,
    /// File holding the Redis password (overrides one in the URL).
    #[arg(long, requires = "redis")]
    redis_password_file: Option<std::path::PathBuf>,
    /// PEM bundle of the CAs to trust for rediss… addresses (instead of the system's roots).
    #[arg(long, env = "TOLLGATE_REDIS_CA", requires = "redis")]
    redis_ca: Option<std::path::PathBuf>,
    /// Bound on each Redis read, milliseconds.
    #[arg(long, default_value_t = 2000)]
    redis_timeout_ms: u64,
    /// Seconds between `status.usage` passes.
    #[arg(long, default_value_t = 30)]
    usage_interval_secs: u64,
    /// Log as JSON lines (the same flat shape as the proxy's). Text logs are coloured only
    /// when written to a terminal.
    #[arg(long)]
    log_json: bool,
}

/// Colour codes only for a terminal: in a file or a log collector they are noise. NO_COLOR
/// (any non-empty value, see no-color.org) turns them off even on a terminal.
fn use_colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_json {
        // Flat like the proxy's: the message and the event's fields at the top level.
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_env_filter(filter)
            .init();
    } else {
        use std::io::IsTerminal as _;
        let colour = use_colour(
            std::io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        );
        tracing_subscriber::fmt()
            .with_ansi(colour)
            .with_env_filter(filter)
            .init();
    }
    let service_account_namespace =
        std::fs::read_to_string(tollgate_operator::leader::SERVICE_ACCOUNT_NAMESPACE_FILE).ok();
    let (lease_namespace, lease_namespace_origin) = tollgate_operator::leader::lease_namespace(
        args.namespace.as_deref(),
        service_account_namespace.as_deref(),
    );

    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "operator".into());
        format!("{host}-{}", std::process::id())
    });
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes client config: set KUBECONFIG or run in a cluster")?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        shutdown_tx.send_replace(true);
    });

    tollgate_operator::run(
        client,
        tollgate_operator::Config {
            metrics_listen: args.metrics_listen,
            watch_namespaces: watch_namespaces(args.watch_namespace),
            lease_namespace,
            lease_namespace_origin,
            lease_name: args.lease_name,
            identity,
            lease_duration: Duration::from_secs(args.lease_seconds.max(3)),
            debounce: Duration::from_millis(args.debounce_ms),
            distribute_listen: args.distribute_listen,
            token_audience: args.token_audience,
            distribute_tls: match (args.distribute_tls_cert, args.distribute_tls_key) {
                (Some(cert), Some(key)) => Some(tollgate_operator::tls::TlsFiles { cert, key }),
                _ => None,
            },
            redis: args.redis.map(|url| {
                let mut redis = tollgate_redis::RedisConfig::new(url);
                redis.password_file = args.redis_password_file;
                redis.ca_file = args.redis_ca;
                redis.timeout = Duration::from_millis(args.redis_timeout_ms.max(1));
                redis
            }),
            usage_interval: Duration::from_secs(args.usage_interval_secs.max(1)),
        },
        shutdown_rx,
    )
    .await
    .context("operator failed")
}

/// The flag's values without blanks and repeats (`--watch-namespace a,,a` is `[a]`), in the
/// order given: an empty name would otherwise mean "every namespace" to the API, and a repeat
/// would watch a namespace twice.
fn watch_namespaces(given: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in given.into_iter().map(|n| n.trim().to_string()) {
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Vec<String> {
        let args =
            Args::try_parse_from(std::iter::once("tollgate-operator").chain(args.iter().copied()))
                .expect("valid flags");
        watch_namespaces(args.watch_namespace)
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(
            !use_colour(false, None),
            "a file or a pipe gets no ANSI codes"
        );
        assert!(!use_colour(true, Some(std::ffi::OsStr::new("1"))));
        assert!(use_colour(true, Some(std::ffi::OsStr::new(""))));
    }

    #[test]
    fn watch_namespace_is_repeatable_and_comma_separated() {
        assert!(parse(&[]).is_empty(), "no flag: every namespace");
        assert_eq!(parse(&["--watch-namespace", "a"]), ["a"]);
        assert_eq!(
            parse(&["--watch-namespace", "a,b", "--watch-namespace", "c"]),
            ["a", "b", "c"]
        );
        // Blanks would mean "all namespaces" to Api::namespaced(""); repeats would watch twice.
        assert_eq!(parse(&["--watch-namespace", "a, ,b,a,"]), ["a", "b"]);
        assert!(parse(&["--watch-namespace", ""]).is_empty());
    }
}
