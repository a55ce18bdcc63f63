//! `tollgate-proxy --from-dir DIR`: the standalone gateway; or
//! `tollgate-proxy --from-operator URL`: follow an operator's table (cluster mode); or
//! `tollgate-proxy --sidecar-app-port PORT`: the mTLS sidecar next to an app (sidecar mode); or
//! `tollgate-proxy check DIR`: compile a directory as the gateway would, report, and exit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::watch;
use tollgate_proxy::source::certificate::{
    spawn_renewal, CertificateClient, CertificateConfig, IssuedCertificate,
};
use tollgate_proxy::source::operator::OperatorConfig;
use tollgate_proxy::{Gateway, GatewayConfig};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tollgate gateway: serves the Products, Plans, Subscriptions and ApiPolicies in a directory of
/// manifests (reloading them when they change), or the table an operator distributes.
#[derive(Debug, Parser)]
// `subcommand_negates_reqs`: `check DIR` needs neither --from-dir nor --from-operator, while
// every flag keeps working (and staying required) without a subcommand.
#[command(name = "tollgate-proxy", version, subcommand_negates_reqs = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Directory of YAML manifests (every *.yaml / *.yml, multi-document).
    #[arg(
        long,
        env = "TOLLGATE_FROM_DIR",
        required_unless_present_any = ["from_operator", "sidecar_app_port"],
        conflicts_with_all = ["from_operator", "sidecar_app_port"]
    )]
    from_dir: Option<PathBuf>,
    /// Apply a change to --from-dir only once the directory has been quiet this many
    /// milliseconds (a file caught half-written is never served); writers should still replace
    /// files by atomic rename.
    #[arg(long, env = "TOLLGATE_SETTLE_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    settle_ms: u64,
    /// Largest manifest file read from --from-dir, in bytes; a larger file refuses the reload
    /// without being read.
    #[arg(long, global = true, env = "TOLLGATE_MAX_MANIFEST_BYTES", default_value_t = tollgate_crds::manifest::DEFAULT_MAX_FILE_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
    max_manifest_bytes: u64,
    /// Deepest nesting (mappings, sequences, brackets) accepted in a --from-dir manifest.
    #[arg(long, global = true, env = "TOLLGATE_MAX_MANIFEST_DEPTH", default_value_t = tollgate_crds::manifest::DEFAULT_MAX_DEPTH as u16, value_parser = clap::value_parser!(u16).range(8..=128))]
    max_manifest_depth: u16,
    /// Follow the operator's table at this base URL (https://HOST:PORT of its
    /// --distribute-listen; http:// only on loopback or inside a mesh). In sidecar mode (with
    /// --pod-ip): to serve callers that bypass the gateway for the products that ask for it
    /// (`sidecarCallers: FullPipeline`).
    #[arg(long, env = "TOLLGATE_FROM_OPERATOR")]
    from_operator: Option<String>,
    /// PEM CA bundle that signs the operator's certificate (default: the public web roots).
    /// Also accepted without --from-operator: a sidecar talks to the operator only for its
    /// certificate.
    #[arg(long, env = "TOLLGATE_OPERATOR_CA")]
    operator_ca: Option<PathBuf>,
    /// ServiceAccount token presented to the operator (re-read on every request: the kubelet
    /// rotates it). Also accepted without --from-operator (see --operator-ca).
    #[arg(
        long,
        env = "TOLLGATE_TOKEN_FILE",
        default_value = tollgate_proxy::source::operator::DEFAULT_TOKEN_FILE
    )]
    token_file: PathBuf,
    /// Get (and keep renewing) a workload certificate for this pod's ServiceAccount from the
    /// operator's CA at this base URL (its --distribute-listen: POST /v1/certificate), with
    /// --token-file and --operator-ca.
    #[arg(long, env = "TOLLGATE_IDENTITY_URL")]
    identity_url: Option<String>,
    /// Sidecar mode: forward every request to the app on 127.0.0.1:PORT, after a mutual TLS
    /// handshake with an allowed gateway identity on --sidecar-listen. No --listen listener.
    /// Needs --identity-dir (or --identity-url) and --allowed-identities; --from-operator and
    /// --pod-ip add the full pipeline for other in-cluster callers where a product asks for it.
    #[arg(long, env = "TOLLGATE_SIDECAR_APP_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    sidecar_app_port: Option<u16>,
    /// Sidecar mode: this pod's IP (the webhook injects it from `status.podIP`); with
    /// --from-operator, the products whose ready endpoints include it are this sidecar's.
    #[arg(long, env = "TOLLGATE_POD_IP", requires = "sidecar_app_port")]
    pod_ip: Option<std::net::IpAddr>,
    /// Address of the sidecar's mutual TLS listener.
    #[arg(
        long,
        env = "TOLLGATE_SIDECAR_LISTEN",
        default_value = "0.0.0.0:15443",
        requires = "sidecar_app_port"
    )]
    sidecar_listen: SocketAddr,
    /// Client identities the sidecar serves: comma-separated SPIFFE ids
    /// spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT (the ingress proxies').
    #[arg(long, env = "TOLLGATE_ALLOWED_IDENTITIES", requires = "sidecar_app_port", value_parser = parse_identities)]
    allowed_identities: Option<Identities>,
    /// The trust domain of workload identities; every --allowed-identities entry must be in it.
    #[arg(long, env = "TOLLGATE_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Directory of this proxy's workload identity: cert.pem (chain, leaf first, one
    /// spiffe:// URI SAN), key.pem and bundle.pem (the CAs peers chain to). Reloaded when the
    /// files change; required in sidecar mode.
    #[arg(long, env = "TOLLGATE_IDENTITY_DIR")]
    identity_dir: Option<PathBuf>,
    /// Directory for the last-known-good table (table.json), served at start when the operator
    /// cannot be reached.
    #[arg(long, env = "TOLLGATE_STATE_DIR", requires = "from_operator")]
    state_dir: Option<PathBuf>,
    /// Address the proxy listens on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "TOLLGATE_LISTEN")]
    listen: SocketAddr,
    /// Proxies in front of the gateway (comma-separated CIDRs or addresses) whose
    /// X-Forwarded-For names the client for IP filters, per-IP limits and logs; from any other
    /// peer the header is not believed. Default: none (the socket peer is the client).
    #[arg(long, env = "TOLLGATE_TRUSTED_PROXIES", value_parser = parse_trusted)]
    trusted_proxies: Option<tollgate_proxy::client_addr::TrustedProxies>,
    /// Address of the TLS listener (TLS 1.2/1.3; HTTP/1.1, and HTTP/2 by ALPN). It serves the
    /// certificates of Gateway HTTPS listeners in the table by SNI, and those of --tls-dir;
    /// with neither, handshakes fail.
    #[arg(long, env = "TOLLGATE_TLS_LISTEN")]
    tls_listen: Option<SocketAddr>,
    /// Directory of NAME.crt (PEM chain) + NAME.key (PEM key) pairs; each serves the DNS names of
    /// its certificate, default.crt the rest. Reloaded when the files change.
    #[arg(long, env = "TOLLGATE_TLS_DIR", requires = "tls_listen")]
    tls_dir: Option<PathBuf>,
    /// Answer every request on --listen with a 308 redirect to the TLS listener.
    #[arg(long, env = "TOLLGATE_REDIRECT_HTTP", requires = "tls_listen")]
    redirect_http: bool,
    /// Serve Gateways that have addresses of their own (an address pool) on sockets of their
    /// own: their address at each listener port, opened and closed as tables change; HTTPS
    /// ports with --tls-listen's certificates. The addresses must be this host's.
    #[arg(long, env = "TOLLGATE_GATEWAY_SOCKETS")]
    gateway_sockets: bool,
    /// Standalone mode: give each Gateway an address of its own from these (addresses or CIDR
    /// blocks, comma-separated), as the operator's flag of that name does; with
    /// --gateway-sockets.
    #[arg(
        long,
        env = "TOLLGATE_GATEWAY_ADDRESS_POOL",
        value_delimiter = ',',
        value_parser = tollgate_crds::gateway::pool::parse_entry,
        requires = "gateway_sockets",
        conflicts_with = "from_operator"
    )]
    gateway_address_pool: Vec<Vec<std::net::IpAddr>>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "127.0.0.1:9901", env = "TOLLGATE_ADMIN_LISTEN")]
    admin_listen: SocketAddr,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Json, env = "TOLLGATE_LOG_FORMAT")]
    log_format: LogFormat,
    /// Seconds to let in-flight requests finish on SIGTERM / Ctrl-C.
    #[arg(long, default_value_t = 10)]
    drain_seconds: u64,
    /// Request threads (default: one per CPU, or TOKIO_WORKER_THREADS). Each runs its own
    /// single-threaded runtime and accepts on its own SO_REUSEPORT socket of each proxy
    /// listener; background work stays on the first. With 1, the whole proxy is one thread.
    #[arg(long, env = "TOLLGATE_THREADS")]
    threads: Option<usize>,
    /// Per-request access log (target `access`, one JSON line per request).
    #[arg(long, value_enum, default_value_t = Switch::On, env = "TOLLGATE_ACCESS_LOG")]
    access_log: Switch,
    /// Count plan quotas in this Redis, shared by every proxy using it: redis://[:PASSWORD@]HOST:PORT,
    /// rediss://… (TLS), redis+unix:///PATH, redis+sentinel://[:PASSWORD@]HOST:PORT,…/MASTER[/DB]
    /// (the primary the sentinels name) or redis+cluster://[:PASSWORD@]HOST:PORT,… (cluster seeds);
    /// rediss+sentinel:// and rediss+cluster:// for TLS. Without it, quotas are counted in memory
    /// per process.
    #[arg(long, env = "TOLLGATE_REDIS_URL", hide_env_values = true)]
    redis: Option<String>,
    /// File holding the Redis password (instead of one in the URL).
    #[arg(long, env = "TOLLGATE_REDIS_PASSWORD_FILE", requires = "redis")]
    redis_password_file: Option<PathBuf>,
    /// PEM bundle of the CAs to trust for rediss… addresses (instead of the system's roots).
    #[arg(long, env = "TOLLGATE_REDIS_CA", requires = "redis")]
    redis_ca: Option<PathBuf>,
    /// Bound on each Redis operation, in milliseconds; a failure switches to the plan's failure
    /// policy for a short back-off.
    #[arg(long, env = "TOLLGATE_REDIS_TIMEOUT_MS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    redis_timeout_ms: u64,
    /// Client connections each proxy listener holds at once; more are answered 503 overloaded
    /// (plain HTTP) or closed (TLS) at accept. Default: 40 % of the open-file limit, split
    /// between the plain and TLS listeners (each connection may need a backend connection too).
    #[arg(long, env = "TOLLGATE_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: Option<u64>,
    /// Client connections one client address (IPv6: one /64) may hold on a listener. Default:
    /// no bound. Counts socket peers: behind a load balancer every client has its address.
    #[arg(long, env = "TOLLGATE_MAX_CONNECTIONS_PER_CLIENT", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections_per_client: Option<u64>,
    /// Close a connection that sends no byte within this many milliseconds of accept (of the
    /// TLS handshake on the TLS listener).
    #[arg(long, env = "TOLLGATE_FIRST_BYTE_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    first_byte_timeout_ms: u64,
    /// Close a connection whose request head is not complete this many milliseconds after the
    /// proxy started waiting for it: from its first byte, and on a keep-alive connection from
    /// the end of the previous response (the idle bound between requests).
    #[arg(long, env = "TOLLGATE_REQUEST_HEAD_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    request_head_timeout_ms: u64,
    /// Export one span per request to this OpenTelemetry collector over OTLP/HTTP (protobuf):
    /// http://HOST:4318 (spans go to /v1/traces) or the full traces URL. Default: off.
    #[arg(long, env = "TOLLGATE_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Share of new traces exported (0.0 to 1.0); a trace the caller continues follows its
    /// traceparent's sampled flag.
    #[arg(long, env = "TOLLGATE_OTLP_SAMPLE_RATIO", default_value_t = 1.0, value_parser = parse_ratio, requires = "otlp_endpoint")]
    otlp_sample_ratio: f64,
    /// service.name of the exported spans.
    #[arg(long, env = "TOLLGATE_OTLP_SERVICE_NAME", default_value = tollgate_proxy::observe::trace_export::DEFAULT_SERVICE_NAME, requires = "otlp_endpoint")]
    otlp_service_name: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compile DIR exactly as `--from-dir DIR` would (same reader, limits and compiler), print
    /// every diagnostic and exit: 0 the table would load (warnings allowed), 1 errors, 2 the
    /// directory cannot be read. Serves nothing, opens no socket.
    Check {
        /// Directory of YAML manifests.
        dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = CheckOutput::Text)]
        output: CheckOutput,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CheckOutput {
    /// One line per diagnostic, then a verdict.
    Text,
    /// One JSON document (see the README).
    Json,
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

/// Colour codes only for a terminal: in a file or a log collector they are noise. NO_COLOR
/// (any non-empty value, see no-color.org) turns them off even on a terminal.
fn use_colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if let Some(Command::Check { dir, output }) = &args.command {
        std::process::exit(check(dir, *output, &manifest_limits(&args)));
    }
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.access_log == Switch::Off {
        filter = filter.add_directive(
            format!("{}=off", tollgate_proxy::observe::access_log::TARGET)
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
        LogFormat::Text => {
            use std::io::IsTerminal as _;
            tracing_subscriber::fmt()
                .with_ansi(use_colour(
                    std::io::stdout().is_terminal(),
                    std::env::var_os("NO_COLOR").as_deref(),
                ))
                .with_env_filter(filter)
                .init()
        }
    }
    // Every client connection costs a descriptor (two with its backend connection): use all the
    // descriptors the hard limit allows, as a default soft limit of 1024 would cap the gateway
    // at a few hundred clients. The connection caps are derived from the result.
    match tollgate_proxy::gateway::raise_fd_limit() {
        Ok(fd) => match fd.raised_from {
            Some(from) => tracing::info!(
                from,
                to = fd.soft,
                hard = fd.hard,
                "raised the open-file limit"
            ),
            None => tracing::info!(
                soft = fd.soft,
                hard = fd.hard,
                "open-file limit already at its maximum"
            ),
        },
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit; keeping it"),
    }
    // Thread per core (see `listen::workers`): this thread runs tokio's current-thread
    // scheduler, and the gateway starts one more such runtime per extra thread. Measured: two
    // work-stealing workers served fewer requests per second than one thread.
    let threads = match args.threads {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(n) => n,
        None => default_threads(),
    };
    args.threads = Some(threads);
    let mut builder = tokio::runtime::Builder::new_current_thread();
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(args))
}

/// `--threads` when not given: `TOKIO_WORKER_THREADS` when it is a positive number (as tokio's
/// own default honours it), else one per CPU.
fn default_threads() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let limits = manifest_limits(&args);
    anyhow::ensure!(
        args.operator_ca.is_none() || args.from_operator.is_some() || args.identity_url.is_some(),
        "--operator-ca needs --from-operator or --identity-url"
    );
    // The workload certificate: obtained and renewed in the background; the proxy does not
    // wait for it (a table from the operator or a directory serves without it).
    let (stop_certificates, certificates) = watch::channel(false);
    if args.identity_url.is_some() && args.identity_dir.is_some() {
        tracing::info!(target: "identity", "--identity-url provides the workload identity; --identity-dir is not read");
    }
    let identity_store = args
        .identity_url
        .as_ref()
        .map(|_| Arc::new(tollgate_proxy::identity::Identity::new()));
    let _certificate = match (&args.identity_url, &identity_store) {
        (Some(url), Some(store)) => {
            let client = CertificateClient::new(CertificateConfig {
                url: url.clone(),
                token_file: args.token_file.clone(),
                ca_file: args.operator_ca.clone(),
            })?;
            // Each certificate is installed in the identity store the mTLS listener and the
            // client towards sidecars read; new handshakes use it, open connections keep theirs.
            let installer = store.clone();
            let install = move |issued: IssuedCertificate| match installer.install(
                issued.chain_pem.as_bytes(),
                issued.key_pem.as_bytes(),
                issued.bundle_pem.as_bytes(),
            ) {
                Ok(generation) => {
                    tracing::info!(target: "identity", generation, "workload certificate installed")
                }
                Err(e) => {
                    tracing::warn!(target: "identity", error = %e, "issued workload certificate refused; the previous one stays")
                }
            };
            let (task, mut status) = spawn_renewal(client, install, certificates);
            // The renewal state goes to the store, where `/readyz` and metrics read it.
            let store = store.clone();
            let reporter = tokio::spawn(async move {
                while status.changed().await.is_ok() {
                    let s = status.borrow_and_update().clone();
                    store.record_renewal(s.renew_failures, s.last_error);
                }
            });
            Some((task, reporter))
        }
        _ => None,
    };
    let sidecar = match args.sidecar_app_port {
        Some(app_port) => {
            let allowed = args.allowed_identities.map(|i| i.0).unwrap_or_default();
            anyhow::ensure!(
                !allowed.is_empty(),
                "--sidecar-app-port needs --allowed-identities (the gateway identities to serve)"
            );
            if let Some(other) = allowed
                .iter()
                .find(|id| id.trust_domain() != args.trust_domain)
            {
                anyhow::bail!(
                    "--allowed-identities: {other} is not in --trust-domain {}",
                    args.trust_domain
                );
            }
            Some(tollgate_proxy::gateway::SidecarConfig {
                app_port,
                listen: args.sidecar_listen,
                allowed,
                pod_ip: args.pod_ip,
            })
        }
        None => None,
    };
    let operator = |url| OperatorConfig {
        url,
        token_file: args.token_file.clone(),
        state_dir: args.state_dir.clone(),
        ca_file: args.operator_ca.clone(),
    };
    let mut config = match (args.from_dir, args.from_operator) {
        (_, from_operator) if sidecar.is_some() => {
            let mut config = GatewayConfig::new(PathBuf::new());
            config.operator = from_operator.map(operator);
            config
        }
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
            config.operator = Some(operator(url));
            config
        }
        (None, None) => {
            anyhow::bail!("one of --from-dir, --from-operator or --sidecar-app-port is required")
        }
    };
    config.sidecar = sidecar;
    config.accept_threads = args.threads.unwrap_or(1);
    // The operator's certificate endpoint wins over files: the injected sidecar gets both.
    config.identity_dir = args.identity_dir.filter(|_| identity_store.is_none());
    config.identity = identity_store;
    config.settle_window = Duration::from_millis(args.settle_ms);
    config.manifest_limits = limits;
    config.listen = args.listen;
    config.trusted_proxies = args.trusted_proxies.unwrap_or_default();
    config.admin_listen = args.admin_listen;
    config.tls_listen = args.tls_listen;
    config.tls_dir = args.tls_dir;
    config.redirect_http = args.redirect_http;
    config.gateway_sockets = args.gateway_sockets;
    config.gateway_address_pool =
        tollgate_crds::gateway::pool::collect(&args.gateway_address_pool)?;
    config.redis = args
        .redis
        .map(|url| tollgate_proxy::limits::shared::RedisConfig {
            url,
            password_file: args.redis_password_file,
            ca_file: args.redis_ca,
            timeout: Duration::from_millis(args.redis_timeout_ms),
        });
    config.drain_timeout = Duration::from_secs(args.drain_seconds);
    let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    config.conn_limits = tollgate_proxy::gateway::ConnLimits {
        max_connections: args.max_connections.map(to_usize),
        max_per_client: args.max_connections_per_client.map(to_usize),
        first_byte_timeout: Duration::from_millis(args.first_byte_timeout_ms),
        head_timeout: Duration::from_millis(args.request_head_timeout_ms),
    };
    config.trace_export = args.otlp_endpoint.map(|endpoint| {
        tollgate_proxy::observe::trace_export::TraceExportConfig {
            endpoint,
            sample_ratio: args.otlp_sample_ratio,
            service_name: args.otlp_service_name,
        }
    });
    let gateway = Gateway::start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    gateway.shutdown().await;
    stop_certificates.send_replace(true);
    Ok(())
}

/// The limits `--from-dir` reads with; `check` uses the same ones.
fn manifest_limits(args: &Args) -> tollgate_crds::manifest::Limits {
    tollgate_crds::manifest::Limits {
        max_file_bytes: args.max_manifest_bytes,
        max_depth: usize::from(args.max_manifest_depth),
    }
}

/// `check DIR`: the report on stdout, a read failure on stderr; the exit status.
fn check(
    dir: &std::path::Path,
    output: CheckOutput,
    limits: &tollgate_crds::manifest::Limits,
) -> i32 {
    use std::io::Write;
    use tollgate_proxy::check;
    // A file is not a directory, but reading it as one fails with an obscure error.
    if !dir.is_dir() {
        eprintln!("tollgate-proxy check: {}: not a directory", dir.display());
        return check::EXIT_IO;
    }
    let report = match check::check_dir(dir, limits) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("tollgate-proxy check: {e}");
            return check::EXIT_IO;
        }
    };
    let text = match output {
        CheckOutput::Text => report.to_text(dir),
        CheckOutput::Json => match serde_json::to_string_pretty(&report) {
            Ok(json) => json + "\n",
            Err(e) => {
                eprintln!("tollgate-proxy check: cannot encode the report: {e}");
                return check::EXIT_IO;
            }
        },
    };
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (`| head`) must not turn a verdict into a panic.
    if stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return check::EXIT_IO;
    }
    report.exit_code()
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

fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{text:?} is not a ratio between 0.0 and 1.0")),
    }
}

/// The parsed `--allowed-identities` list (a newtype: clap would read a bare `Vec` as a
/// repeated flag).
#[derive(Debug, Clone)]
struct Identities(Vec<tollgate_proxy::identity::spiffe::SpiffeId>);

fn parse_identities(text: &str) -> Result<Identities, String> {
    tollgate_proxy::identity::spiffe::SpiffeId::parse_list(text)
        .map(Identities)
        .map_err(|e| e.to_string())
}

fn parse_trusted(text: &str) -> Result<tollgate_proxy::client_addr::TrustedProxies, String> {
    tollgate_proxy::client_addr::parse_list(text)
        .map(tollgate_proxy::client_addr::TrustedProxies::new)
}
