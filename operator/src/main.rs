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
    /// Serve the sidecar injector's mutating admission webhook (`POST /mutate`, HTTPS only) on
    /// this address. Needs --webhook-cert-dir, --sidecar-identity-url and
    /// --sidecar-allowed-identities.
    #[arg(
        long,
        env = "TOLLGATE_WEBHOOK_LISTEN",
        requires_all = ["webhook_cert_dir", "sidecar_identity_url", "sidecar_allowed_identities"]
    )]
    webhook_listen: Option<SocketAddr>,
    /// Directory holding the webhook's serving certificate and key as tls.crt and tls.key (a
    /// mounted kubernetes.io/tls Secret; re-read when they change).
    #[arg(long, env = "TOLLGATE_WEBHOOK_CERT_DIR")]
    webhook_cert_dir: Option<std::path::PathBuf>,
    /// Image of the injected tollgate-proxy sidecar.
    #[arg(
        long,
        env = "TOLLGATE_SIDECAR_IMAGE",
        default_value = "ghcr.io/tollgate/tollgate:latest"
    )]
    sidecar_image: String,
    /// imagePullPolicy of the sidecar.
    #[arg(
        long,
        env = "TOLLGATE_SIDECAR_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    sidecar_image_pull_policy: String,
    /// CPU request of the sidecar (empty: none).
    #[arg(long, env = "TOLLGATE_SIDECAR_CPU_REQUEST", default_value = "50m")]
    sidecar_cpu_request: String,
    /// Memory request of the sidecar (empty: none).
    #[arg(long, env = "TOLLGATE_SIDECAR_MEMORY_REQUEST", default_value = "64Mi")]
    sidecar_memory_request: String,
    /// Memory limit of the sidecar (empty: none).
    #[arg(long, env = "TOLLGATE_SIDECAR_MEMORY_LIMIT", default_value = "256Mi")]
    sidecar_memory_limit: String,
    /// The operator's distribution base URL as sidecars reach it (their --identity-url), e.g.
    /// https://tollgate-operator.tollgate-system.svc:8082.
    #[arg(long, env = "TOLLGATE_SIDECAR_IDENTITY_URL")]
    sidecar_identity_url: Option<String>,
    /// ConfigMap in each injected pod's namespace whose ca.crt verifies the operator (the
    /// sidecar's --operator-ca). Empty: no --operator-ca.
    #[arg(long, env = "TOLLGATE_SIDECAR_OPERATOR_CA_CONFIGMAP")]
    sidecar_operator_ca_configmap: Option<String>,
    /// PEM file (e.g. the ca.crt of the distribution TLS Secret) that the leader writes as
    /// ca.crt into the --sidecar-operator-ca-configmap ConfigMap of every namespace with
    /// injected pods, and again when the file changes. Without it, that ConfigMap must exist
    /// in each such namespace.
    #[arg(
        long,
        env = "TOLLGATE_SIDECAR_OPERATOR_CA_FILE",
        requires = "sidecar_operator_ca_configmap"
    )]
    sidecar_operator_ca_file: Option<std::path::PathBuf>,
    /// Lifetime of the sidecar's projected ServiceAccount token, seconds (audience:
    /// --token-audience).
    #[arg(long, env = "TOLLGATE_SIDECAR_TOKEN_EXPIRATION_SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(i64).range(600..=86_400))]
    sidecar_token_expiration_seconds: i64,
    /// SPIFFE trust domain of the identities the workload CA issues and of the sidecars
    /// (their --trust-domain); also spelled --trust-domain.
    #[arg(
        long,
        visible_alias = "trust-domain",
        env = "TOLLGATE_TRUST_DOMAIN",
        default_value = "cluster.local"
    )]
    sidecar_trust_domain: String,
    /// SPIFFE ids sidecars accept callers from (their --allowed-identities; comma-separated),
    /// normally the ingress proxy's ServiceAccount: spiffe://TD/ns/NS/sa/SA.
    #[arg(
        long,
        env = "TOLLGATE_SIDECAR_ALLOWED_IDENTITIES",
        value_delimiter = ','
    )]
    sidecar_allowed_identities: Vec<String>,
    /// The sidecar's mTLS port (container port tollgate-mtls).
    #[arg(long, env = "TOLLGATE_SIDECAR_PORT", default_value_t = 15443, value_parser = clap::value_parser!(u16).range(1..))]
    sidecar_port: u16,
    /// The sidecar's admin port (probes; container port tollgate-admin).
    #[arg(long, env = "TOLLGATE_SIDECAR_ADMIN_PORT", default_value_t = 15020, value_parser = clap::value_parser!(u16).range(1..))]
    sidecar_admin_port: u16,
    /// Never inject pods of these namespaces (repeat or comma-separate); the operator's own
    /// namespace and kube-system are always excluded.
    #[arg(long, env = "TOLLGATE_INJECT_EXCLUDE_NAMESPACE", value_delimiter = ',')]
    inject_exclude_namespace: Vec<String>,
    /// Write a NetworkPolicy per injected workload admitting only the sidecar's port (leader
    /// only, in the watched namespaces).
    #[arg(long, env = "TOLLGATE_SIDECAR_NETWORK_POLICY", default_value_t = true, action = clap::ArgAction::Set)]
    sidecar_network_policy: bool,
    /// Run the workload CA and serve `POST /v1/certificate` on --distribute-listen (needs
    /// --distribute-listen; RBAC on the CA Secret and the bundle ConfigMap in the operator's
    /// namespace).
    #[arg(long, env = "TOLLGATE_WORKLOAD_CA", default_value_t = true, action = clap::ArgAction::Set)]
    workload_ca: bool,
    /// A kubernetes.io/tls Secret in the operator's namespace holding your CA (tls.crt, tls.key;
    /// ca.crt when tls.crt is an intermediate). Never created nor changed by the operator.
    /// Default: the operator makes and keeps its own root in Secret tollgate-workload-ca.
    #[arg(long, env = "TOLLGATE_CA_SECRET")]
    ca_secret: Option<String>,
    /// ConfigMap in the operator's namespace where the trust bundle is published (key ca.crt).
    #[arg(
        long,
        env = "TOLLGATE_TRUST_BUNDLE_CONFIGMAP",
        default_value = tollgate_operator::ca::DEFAULT_BUNDLE_CONFIGMAP
    )]
    trust_bundle_configmap: String,
    /// Lifetime of issued workload certificates: seconds, or a number with s, m, h or d
    /// (1m to 30d).
    #[arg(long, env = "TOLLGATE_CERT_LIFETIME", default_value = "24h", value_parser = parse_lifetime)]
    cert_lifetime: Duration,
    /// Log as JSON lines (the same flat shape as the proxy's). Text logs are coloured only
    /// when written to a terminal.
    #[arg(long)]
    log_json: bool,
    /// The address(es) proxies serve Gateways of our GatewayClasses on, written to every such
    /// Gateway's `status.addresses` (IP[,IP]). Without one, Gateways are `Programmed=False`
    /// (`AddressNotAssigned`).
    #[arg(long, env = "TOLLGATE_GATEWAY_ADDRESS", value_delimiter = ',')]
    gateway_address: Vec<std::net::IpAddr>,
    /// Give each Gateway of our GatewayClasses an address of its own from these (CIDR blocks
    /// or addresses, comma-separated; at most 4096 addresses), kept while the Gateway exists:
    /// its listeners are served there on their own ports, by proxies run with
    /// --gateway-sockets that can bind those addresses. Instead of --gateway-address.
    #[arg(
        long,
        env = "TOLLGATE_GATEWAY_ADDRESS_POOL",
        value_delimiter = ',',
        value_parser = tollgate_crds::gateway::pool::parse_entry,
        conflicts_with = "gateway_address"
    )]
    gateway_address_pool: Vec<Vec<std::net::IpAddr>>,
    /// The proxies' Service (in the operator's namespace): every Gateway of our GatewayClasses
    /// reports its addresses, read as they change (a LoadBalancer's ingress IPs once it has
    /// them; else its externalIPs, else its cluster IPs). Instead of --gateway-address; the
    /// Service's namespace must be watched.
    #[arg(
        long,
        env = "TOLLGATE_GATEWAY_ADDRESS_SERVICE",
        conflicts_with_all = ["gateway_address", "gateway_address_pool"]
    )]
    gateway_address_service: Option<String>,
    /// The proxies serve Gateways' HTTPS listeners: they run with --tls-listen on the
    /// listeners' port (443) and serve each listener's certificate from the table. Without it
    /// HTTPS listeners are reported Programmed=False, since nothing would answer TLS on them.
    #[arg(long, env = "TOLLGATE_GATEWAY_HTTPS")]
    gateway_https: bool,
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
    let watched = watch_namespaces(args.watch_namespace.clone());
    let address_service = args.gateway_address_service.clone().map(|name| {
        tollgate_operator::gateway::address::ProxyService {
            namespace: lease_namespace.clone(),
            name,
        }
    });
    if let Some(svc) = &address_service {
        // Services are read from the watch caches: one outside them would never be found.
        if !watched.is_empty() && !watched.contains(&svc.namespace) {
            anyhow::bail!(
                "--gateway-address-service {}: the operator watches only {} (--watch-namespace), \
                 not {}, where that Service is; watch it too, or give --gateway-address",
                svc.name,
                watched.join(","),
                svc.namespace
            );
        }
    }
    let webhook = webhook_config(&args, &lease_namespace);
    let ca = ca_config(&args, &lease_namespace);
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
            watch_namespaces: watched,
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
            webhook,
            ca,
            gateway: tollgate_operator::gateway::Serving {
                addresses: args.gateway_address.clone(),
                https: args.gateway_https,
                pool: tollgate_crds::gateway::pool::collect(&args.gateway_address_pool)?,
                address_service,
                unaddressed: None,
            },
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

/// `--cert-lifetime`: `N` seconds or `N` with a unit (`s`, `m`, `h`, `d`), 1 minute to 30 days.
/// Proxies renew at 2/3 of it: a minute (renewals every 40 s per proxy) is for rehearsing a
/// rotation, not for a cluster.
fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number with s, m, h or d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("{text:?}: the unit is one of s, m, h, d")),
    };
    if !(60..=30 * 86_400).contains(&secs) {
        return Err(format!("{text:?}: a lifetime is 1m to 30d"));
    }
    Ok(Duration::from_secs(secs))
}

/// The workload CA's configuration: on with --distribute-listen unless --workload-ca=false.
fn ca_config(args: &Args, operator_namespace: &str) -> Option<tollgate_operator::ca::CaConfig> {
    if !args.workload_ca || args.distribute_listen.is_none() {
        return None;
    }
    Some(tollgate_operator::ca::CaConfig {
        namespace: operator_namespace.to_string(),
        secret: args
            .ca_secret
            .clone()
            .unwrap_or_else(|| tollgate_operator::ca::DEFAULT_SECRET.to_string()),
        user_supplied: args.ca_secret.is_some(),
        bundle_configmap: args.trust_bundle_configmap.clone(),
        trust_domain: args.sidecar_trust_domain.clone(),
        lifetime: args.cert_lifetime,
    })
}

/// The sidecar injector's configuration, when --webhook-listen is given (clap has checked that
/// the flags it needs are there). `operator_namespace` is always excluded from injection, with
/// kube-system.
fn webhook_config(
    args: &Args,
    operator_namespace: &str,
) -> Option<tollgate_operator::WebhookConfig> {
    let listen = args.webhook_listen?;
    let dir = args.webhook_cert_dir.clone()?;
    let mut excluded = vec![operator_namespace.to_string(), "kube-system".to_string()];
    for name in watch_namespaces(args.inject_exclude_namespace.clone()) {
        if !excluded.contains(&name) {
            excluded.push(name);
        }
    }
    Some(tollgate_operator::WebhookConfig {
        listen,
        tls: tollgate_operator::tls::TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        },
        inject: tollgate_operator::inject::InjectConfig {
            image: args.sidecar_image.clone(),
            image_pull_policy: args.sidecar_image_pull_policy.clone(),
            cpu_request: args.sidecar_cpu_request.clone(),
            memory_request: args.sidecar_memory_request.clone(),
            memory_limit: args.sidecar_memory_limit.clone(),
            excluded_namespaces: excluded,
            identity_url: args.sidecar_identity_url.clone()?,
            token_audience: args.token_audience.clone(),
            token_expiration_seconds: args.sidecar_token_expiration_seconds,
            operator_ca_configmap: args
                .sidecar_operator_ca_configmap
                .clone()
                .filter(|n| !n.is_empty()),
            trust_domain: args.sidecar_trust_domain.clone(),
            allowed_identities: watch_namespaces(args.sidecar_allowed_identities.clone()),
            sidecar_port: args.sidecar_port,
            admin_port: args.sidecar_admin_port,
        },
        network_policies: args.sidecar_network_policy,
        operator_ca_copy: args
            .sidecar_operator_ca_configmap
            .clone()
            .filter(|n| !n.is_empty())
            .zip(args.sidecar_operator_ca_file.clone()),
    })
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
    fn the_webhook_needs_its_certificate_and_the_sidecar_identity_flags() {
        let parse = |extra: &[&str]| {
            Args::try_parse_from(std::iter::once("tollgate-operator").chain(extra.iter().copied()))
        };
        assert!(parse(&["--webhook-listen", "0.0.0.0:9443"]).is_err());
        let args = parse(&[
            "--webhook-listen",
            "0.0.0.0:9443",
            "--webhook-cert-dir",
            "/certs",
            "--sidecar-identity-url",
            "https://op.tg.svc:8082",
            "--sidecar-allowed-identities",
            "spiffe://cluster.local/ns/tg/sa/proxy",
            "--inject-exclude-namespace",
            "infra,tg",
        ])
        .expect("valid flags");
        let config = webhook_config(&args, "tg").expect("a webhook");
        assert_eq!(config.tls.key, std::path::Path::new("/certs/tls.key"));
        assert_eq!(
            config.inject.excluded_namespaces,
            ["tg", "kube-system", "infra"]
        );
        assert!(config.network_policies);
        assert!(webhook_config(&parse(&[]).expect("no flags"), "tg").is_none());
    }

    #[test]
    fn cert_lifetime_takes_units_and_is_bounded() {
        assert_eq!(parse_lifetime("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_lifetime("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_lifetime("3600"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_lifetime("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_lifetime("1m"), Ok(Duration::from_secs(60)));
        for bad in ["", "h", "1x", "10s", "59", "31d", "-1h"] {
            assert!(parse_lifetime(bad).is_err(), "{bad}");
        }
        let parse = |extra: &[&str]| {
            Args::try_parse_from(std::iter::once("tollgate-operator").chain(extra.iter().copied()))
                .expect("valid flags")
        };
        assert!(ca_config(&parse(&[]), "tg").is_none(), "no listener, no CA");
        let on = ca_config(&parse(&["--distribute-listen", "0.0.0.0:8082"]), "tg").expect("on");
        assert_eq!(
            (on.secret.as_str(), on.user_supplied),
            ("tollgate-workload-ca", false)
        );
        assert_eq!(on.lifetime, Duration::from_secs(86_400));
        let theirs = ca_config(
            &parse(&[
                "--distribute-listen",
                "0.0.0.0:8082",
                "--ca-secret",
                "corp-ca",
            ]),
            "tg",
        )
        .expect("on");
        assert_eq!(
            (theirs.secret.as_str(), theirs.user_supplied),
            ("corp-ca", true)
        );
        assert!(ca_config(
            &parse(&["--distribute-listen", "0.0.0.0:8082", "--workload-ca=false"]),
            "tg"
        )
        .is_none());
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
