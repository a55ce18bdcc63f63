//! Sidecar mode as a real process (no kubelet here: the binary runs with the flags the
//! injector gives it, on loopback): only a caller with an allowed gateway identity reaches the
//! app; no certificate, another ServiceAccount's, an expired one or one from another CA never
//! does; rewriting the identity directory under load loses no request.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, SignatureScheme};
use support::{TempDir, Upstream};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tollgate_proxy::identity::spiffe::SpiffeId;
use tollgate_proxy::identity::{mtls, Identity};

const INGRESS: &str = "spiffe://cluster.local/ns/tollgate-system/sa/tollgate-proxy";
const WORKLOAD: &str = "spiffe://cluster.local/ns/shop/sa/cart";
const OTHER_SA: &str = "spiffe://cluster.local/ns/shop/sa/intruder";

struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// `(chain PEM, key PEM)`.
struct Issued(String, String);

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed");
        TestCa { cert, key }
    }

    fn issue(&self, uri: &str, expired: bool) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = vec![SanType::URI(uri.try_into().expect("uri"))];
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(if expired { 2021 } else { 2099 }, 1, 1);
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("signed");
        Issued(cert.pem(), key.serialize_pem())
    }

    /// Write `cert.pem`, `key.pem`, `bundle.pem` into `dir`, each renamed into place.
    fn write_identity(&self, dir: &Path, uri: &str) {
        let issued = self.issue(uri, false);
        for (name, text) in [
            ("cert.pem", issued.0),
            ("key.pem", issued.1),
            ("bundle.pem", self.cert.pem()),
        ] {
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, dir.join(name)).expect("rename");
        }
    }

    fn store(&self, uri: &str) -> Arc<Identity> {
        let issued = self.issue(uri, false);
        let store = Arc::new(Identity::new());
        store
            .install(
                issued.0.as_bytes(),
                issued.1.as_bytes(),
                self.cert.pem().as_bytes(),
            )
            .expect("install");
        store
    }
}

/// The sidecar process and its addresses (read from its start-up log line).
struct Sidecar {
    child: Child,
    addr: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    log: std::path::PathBuf,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        // The log goes with the process: test runs leave nothing in the temporary directory.
        let _ = std::fs::remove_file(&self.log);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sidecar(tag: &str, app_port: u16, identity_dir: &Path) -> Sidecar {
    start_sidecar_with(tag, app_port, identity_dir, 0, &[])
}

/// [`start_sidecar`] on `port` (0: any), with more flags.
fn start_sidecar_with(
    tag: &str,
    app_port: u16,
    identity_dir: &Path,
    port: u16,
    extra: &[String],
) -> Sidecar {
    let log =
        std::env::temp_dir().join(format!("tollgate-sidecar-{tag}-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).expect("log file");
    // The injector's flags (operator/src/inject/sidecar.rs), on loopback ports; --identity-url
    // is left out (the identity comes from the directory here).
    let child = Command::new(env!("CARGO_BIN_EXE_tollgate-proxy"))
        .arg(format!("--sidecar-app-port={app_port}"))
        .arg(format!("--sidecar-listen=127.0.0.1:{port}"))
        .arg("--admin-listen=127.0.0.1:0")
        .arg(format!("--allowed-identities={INGRESS}"))
        .arg("--trust-domain=cluster.local")
        .arg(format!("--identity-dir={}", identity_dir.display()))
        .arg("--token-file=/nonexistent/token")
        .args(["--threads", "2"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(file.try_clone().expect("log file")))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("start tollgate-proxy");
    // Owned by the guard at once, so a failed start still kills and reaps the process.
    let unbound = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    let mut sidecar = Sidecar {
        child,
        addr: unbound,
        admin: unbound,
        log: log.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let line = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message"] == "tollgate-proxy sidecar listening (mTLS)");
        if let Some(v) = line {
            let addr = |k: &str| v[k].as_str().and_then(|s| s.parse().ok()).expect(k);
            sidecar.addr = addr("sidecar");
            sidecar.admin = addr("admin");
            return sidecar;
        }
        assert!(Instant::now() < deadline, "sidecar did not start:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// A TLS connection to the sidecar with `config`, as an HTTP/1.1 sender; the peer's leaf.
async fn connect(
    config: ClientConfig,
    addr: std::net::SocketAddr,
) -> Result<(Sender, Vec<u8>), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("sidecar.invalid").expect("name");
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok((sender, leaf))
}

/// One GET; the status and the body.
async fn get(sender: &mut Sender, path: &str) -> Result<(StatusCode, String), String> {
    get_keyed(sender, path, None).await
}

/// [`get`] carrying `key` in `x-key` when given.
async fn get_keyed(
    sender: &mut Sender,
    path: &str,
    key: Option<&str>,
) -> Result<(StatusCode, String), String> {
    let mut req = Request::get(path)
        .header("host", "cart.shop.svc")
        .header("x-request-id", "req-sidecar-1")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must-not-pass");
    if let Some(key) = key {
        req = req.header("x-key", key);
    }
    let req = req.body(Empty::new()).expect("request");
    sender.ready().await.map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn call(config: ClientConfig, addr: std::net::SocketAddr) -> Result<StatusCode, String> {
    let (mut sender, _) = connect(config, addr).await?;
    get(&mut sender, "/anything").await.map(|(s, _)| s)
}

/// Presents a fixed certificate, or none.
#[derive(Debug)]
struct Present(Option<Arc<CertifiedKey>>);

impl ResolvesClientCert for Present {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.clone()
    }

    fn has_certs(&self) -> bool {
        self.0.is_some()
    }
}

/// The ingress's configuration (it verifies the sidecar as the ingress does) presenting the
/// given certificate instead of the ingress identity, or none.
fn presenting(cert: Option<&Issued>, ingress: &Arc<Identity>) -> ClientConfig {
    let key = cert.map(|issued| {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(issued.0.as_bytes())
                .collect::<Result<_, _>>()
                .expect("chain");
        let key = PrivateKeyDer::from_pem_slice(issued.1.as_bytes()).expect("key");
        Arc::new(
            CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
                .expect("certified key"),
        )
    });
    let mut config = mtls::client_config(ingress.clone(), SpiffeId::parse(WORKLOAD).expect("id"))
        .expect("config");
    config.client_auth_cert_resolver = Arc::new(Present(key));
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_gateway_identity_reaches_the_app() {
    let app = Upstream::start().await;
    let ca = TestCa::new("tollgate-ca");
    let dir = TempDir::new("sidecar-identity");
    ca.write_identity(dir.path(), WORKLOAD);
    let sidecar = start_sidecar("allow", app.addr.port(), dir.path());
    let workload = SpiffeId::parse(WORKLOAD).expect("id");
    let ingress = ca.store(INGRESS);

    // Ready: it has an identity and its fixed table.
    let ready = support::client()
        .get(
            format!("http://{}/readyz", sidecar.admin)
                .parse()
                .expect("uri"),
        )
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::OK);

    // The gateway identity passes, through the ordinary forwarding.
    let config = mtls::client_config(ingress.clone(), workload.clone()).expect("config");
    let (mut sender, _) = connect(config, sidecar.addr).await.expect("connect");
    let (status, body) = get(&mut sender, "/orders/7?x=1").await.expect("call");
    assert_eq!(status, StatusCode::OK, "{body}");
    let echoed: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(echoed["path"], "/orders/7");
    assert_eq!(echoed["query"], "x=1");
    assert_eq!(echoed["headers"]["x-request-id"][0], "req-sidecar-1");
    assert!(
        echoed["headers"].get("x-hop").is_none(),
        "hop-by-hop field forwarded: {body}"
    );
    // Keep-alive: a second request on the same connection.
    assert_eq!(
        get(&mut sender, "/again").await.expect("call").0,
        StatusCode::OK
    );
    assert_eq!(app.count(), 2);

    // Nobody else reaches the app.
    let anonymous = presenting(None, &ingress);
    let other_sa = mtls::client_config(ca.store(OTHER_SA), workload.clone()).expect("config");
    let stale = presenting(Some(&ca.issue(INGRESS, true)), &ingress);
    let forged = TestCa::new("not-tollgate").issue(INGRESS, false);
    let impostor = presenting(Some(&forged), &ingress);
    for (what, config) in [
        ("no client certificate", anonymous),
        ("another ServiceAccount", other_sa),
        ("an expired certificate", stale),
        ("another CA", impostor),
    ] {
        let outcome = call(config, sidecar.addr).await;
        assert!(outcome.is_err(), "{what}: {outcome:?}");
    }
    assert_eq!(app.count(), 2, "a refused caller reached the app");

    // The refusals are counted.
    let metrics = support::client()
        .get(
            format!("http://{}/metrics", sidecar.admin)
                .parse()
                .expect("uri"),
        )
        .await
        .expect("metrics");
    let text = String::from_utf8(
        metrics
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec(),
    )
    .expect("utf8");
    assert!(
        text.contains("tollgate_sidecar_handshakes_total{outcome=\"refused\"} 4"),
        "{text}"
    );
    assert!(
        text.contains("tollgate_requests_total{plan=\"none\",product=\"sidecar\",route=\"app\",status_class=\"2xx\"} 2"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_the_identity_dir_under_load_loses_no_request() {
    let app = Upstream::start().await;
    let ca = TestCa::new("tollgate-ca");
    let dir = TempDir::new("sidecar-rotate");
    ca.write_identity(dir.path(), WORKLOAD);
    let sidecar = start_sidecar("rotate", app.addr.port(), dir.path());
    let workload = SpiffeId::parse(WORKLOAD).expect("id");
    let ingress = ca.store(INGRESS);
    let config = mtls::client_config(ingress.clone(), workload).expect("config");
    let (_, first_leaf) = connect(config.clone(), sidecar.addr)
        .await
        .expect("connect");

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let (config, stop, ok) = (config.clone(), stop.clone(), ok.clone());
        let addr = sidecar.addr;
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            // Workers 0 and 1 keep one connection alive; 2 and 3 open one per request
            // (each a full handshake against whatever identity is in force).
            let mut kept: Option<Sender> = None;
            while !stop.load(Ordering::Acquire) {
                let outcome = if worker < 2 {
                    if kept.is_none() {
                        kept = connect(config.clone(), addr).await.ok().map(|(s, _)| s);
                    }
                    match kept.as_mut() {
                        Some(sender) => get(sender, "/load").await.map(|(s, _)| s),
                        None => Err("connect failed".into()),
                    }
                } else {
                    call(config.clone(), addr).await
                };
                match outcome {
                    Ok(StatusCode::OK) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failures.push(format!("{other:?}")),
                }
            }
            failures
        }));
    }
    // Rotate the sidecar's identity twice, and the ingress's, while the load runs.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        ca.write_identity(dir.path(), WORKLOAD);
    }
    let next = ca.issue(INGRESS, false);
    ingress
        .install(
            next.0.as_bytes(),
            next.1.as_bytes(),
            ca.cert.pem().as_bytes(),
        )
        .expect("install");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Release);
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.expect("worker"));
    }
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let ok = ok.load(Ordering::Relaxed);
    assert!(ok > 20, "too little load to prove anything: {ok}");
    assert_eq!(
        app.count(),
        ok,
        "every answered request reached the app once"
    );
    // The rotation happened: a new connection is served with another certificate.
    let (_, last_leaf) = connect(config, sidecar.addr).await.expect("connect");
    assert_ne!(
        first_leaf, last_leaf,
        "the sidecar still presents its first certificate"
    );
}

const KEY: &str = "cart-key-0123456789";

/// A table (as the operator would serve it) with product `shop/cart` behind Service `shop/cart`
/// whose one ready pod is `127.0.0.1:<app port>`, injected: sidecar on `sidecar_port`, identity
/// `identity`; one active subscription with [`KEY`].
fn injected_table(app_port: u16, sidecar_port: u16, identity: &str) -> serde_json::Value {
    use sha2::Digest as _;
    serde_json::json!({
        "products": [{
            "id": "shop/cart", "displayName": "cart", "hostnames": [],
            "subscriptionRequired": true,
            "keyLocation": {"header": "x-key"},
            "backend": {
                "kind": "service", "namespace": "shop", "name": "cart", "port": 8080,
                "endpoints": [format!("127.0.0.1:{app_port}")],
                "workload": {"identity": identity, "sidecarPort": sidecar_port}
            },
            "timeouts": {"connectMs": 1000, "requestMs": 5000},
            "policies": [],
            "routes": [{"name": "all", "path": "/", "pathMatch": "Prefix", "methods": []}]
        }],
        "plans": [{"id": "shop/gold", "product": "shop/cart", "displayName": "gold",
                   "routes": ["all"], "scopes": []}],
        "subscriptions": [{"id": "shop/s1", "plan": "shop/gold", "product": "shop/cart",
                           "state": "Active",
                           "keyDigests": [hex::encode(sha2::Sha256::digest(KEY))]}],
        "policies": []
    })
}

/// The ingress, in process, serving `table` from its last-known-good file (the operator
/// address is closed), with the workload identity in `identity_dir`.
async fn ingress(
    table: serde_json::Value,
    identity_dir: &Path,
) -> (tollgate_proxy::Gateway, TempDir) {
    let state = TempDir::new("sidecar-ingress-state");
    let table: tollgate_crds::table::RoutingTable =
        serde_json::from_value(table).expect("a RoutingTable");
    let versioned = tollgate_proxy::source::operator::Versioned::new(1, table);
    std::fs::write(
        state.path().join("table.json"),
        serde_json::to_vec(&versioned).expect("json"),
    )
    .expect("write table.json");
    let token = state.path().join("token");
    std::fs::write(&token, "not-used").expect("token");
    let mut config = tollgate_proxy::GatewayConfig::new(std::path::PathBuf::new());
    config.operator = Some(tollgate_proxy::source::operator::OperatorConfig {
        url: format!("http://127.0.0.1:{}", support::closed_port().await),
        token_file: token,
        state_dir: Some(state.path().to_path_buf()),
        ca_file: None,
    });
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.admin_listen = "127.0.0.1:0".parse().expect("addr");
    config.identity_dir = Some(identity_dir.to_path_buf());
    let gateway = tollgate_proxy::Gateway::start(config)
        .await
        .expect("ingress");
    let deadline = Instant::now() + Duration::from_secs(10);
    while gateway.shared().runtime.load().is_none() {
        assert!(
            Instant::now() < deadline,
            "the ingress never loaded table.json"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (gateway, state)
}

async fn ingress_get(gateway: &tollgate_proxy::Gateway, key: &str) -> (u16, String) {
    let req = Request::get(format!("http://{}/orders/7", gateway.proxy_addr()))
        .header("x-key", key)
        .body(http_body_util::Full::new(Bytes::new()))
        .expect("request");
    let resp = support::client()
        .request(req)
        .await
        .expect("ingress answers");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_reaches_an_injected_pod_through_its_sidecar_over_mtls() {
    let app = Upstream::start().await;
    let ca = TestCa::new("tollgate-ca");
    let sidecar_dir = TempDir::new("sidecar-pod-identity");
    ca.write_identity(sidecar_dir.path(), WORKLOAD);
    let sidecar = start_sidecar("ingress", app.addr.port(), sidecar_dir.path());
    let ingress_dir = TempDir::new("sidecar-ingress-identity");
    ca.write_identity(ingress_dir.path(), INGRESS);

    let table = injected_table(app.addr.port(), sidecar.addr.port(), WORKLOAD);
    let (gateway, _state) = ingress(table, ingress_dir.path()).await;
    // A subscribed call: ingress pipeline → mTLS to the pod's sidecar port → app.
    let (status, body) = ingress_get(&gateway, KEY).await;
    assert_eq!(status, 200, "{body}");
    let echoed: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(echoed["path"], "/orders/7");
    assert!(
        echoed["headers"].get("x-key").is_none(),
        "the key reached the app: {body}"
    );
    assert_eq!(app.count(), 1);
    // No key: refused at the ingress, nothing sent on.
    assert_eq!(ingress_get(&gateway, "wrong-key-0123456789").await.0, 401);
    assert_eq!(app.count(), 1);
    gateway.shutdown().await;

    // The pod is not the workload the table names: the ingress refuses the sidecar (502).
    let table = injected_table(app.addr.port(), sidecar.addr.port(), OTHER_SA);
    let (gateway, _state) = ingress(table, ingress_dir.path()).await;
    let (status, body) = ingress_get(&gateway, KEY).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(app.count(), 1, "a pod of the wrong identity was used");
    gateway.shutdown().await;
}

/// [`injected_table`] with the product asking its sidecars for the full pipeline, and a quota of
/// `quota` calls a day on the plan.
fn full_pipeline_table(app_port: u16, sidecar_port: u16, quota: u64) -> serde_json::Value {
    let mut table = injected_table(app_port, sidecar_port, WORKLOAD);
    table["products"][0]["sidecarFullPipeline"] = serde_json::json!(true);
    table["plans"][0]["quota"] = serde_json::json!({"requests": quota, "period": "Day"});
    table
}

/// One GET on a new connection with `config`, carrying `key` in `x-key` when given.
async fn call_with_key(
    config: ClientConfig,
    addr: std::net::SocketAddr,
    key: Option<&str>,
) -> Result<(StatusCode, String), String> {
    let (mut sender, _) = connect(config, addr).await?;
    get_keyed(&mut sender, "/orders/7", key).await
}

/// `sidecarCallers: FullPipeline`: the sidecar, following the operator's table (here its
/// last-known-good file, the operator address closed) with the pod's IP, serves in-cluster
/// callers that bypass the gateway through the product's pipeline: no key → 401, a valid key →
/// the app, over the quota → 429, whether they present no certificate or another workload's;
/// an expired certificate still fails the handshake. Calls from the gateway are not counted
/// again: the ingress's calls through the sidecar leave the sidecar's quota whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pipeline_product_serves_direct_callers_through_its_pipeline_counted_once() {
    let app = Upstream::start().await;
    let ca = TestCa::new("tollgate-ca");
    let sidecar_dir = TempDir::new("sidecar-full-identity");
    ca.write_identity(sidecar_dir.path(), WORKLOAD);
    let ingress_dir = TempDir::new("sidecar-full-ingress-identity");
    ca.write_identity(ingress_dir.path(), INGRESS);

    // The table names the sidecar's port, so it is chosen first.
    let sidecar_port = support::free_port();
    let state = TempDir::new("sidecar-full-state");
    let table: tollgate_crds::table::RoutingTable =
        serde_json::from_value(full_pipeline_table(app.addr.port(), sidecar_port, 2))
            .expect("a RoutingTable");
    std::fs::write(
        state.path().join("table.json"),
        serde_json::to_vec(&tollgate_proxy::source::operator::Versioned::new(1, table))
            .expect("json"),
    )
    .expect("write table.json");
    let sidecar = start_sidecar_with(
        "full",
        app.addr.port(),
        sidecar_dir.path(),
        sidecar_port,
        &[
            format!(
                "--from-operator=http://127.0.0.1:{}",
                support::closed_port().await
            ),
            format!("--state-dir={}", state.path().display()),
            "--pod-ip=127.0.0.1".to_string(),
        ],
    );
    let ingress_store = ca.store(INGRESS);

    // Until the table is read the sidecar serves only the gateway; then it admits others.
    let deadline = Instant::now() + Duration::from_secs(10);
    while call_with_key(presenting(None, &ingress_store), sidecar.addr, None)
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the sidecar never admitted a caller without a certificate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.count(), 0, "an unkeyed direct call reached the app");

    // The gateway, through the ingress's pipeline (quota 2 there): its calls pass the sidecar
    // without a key check and without being counted again.
    let table = full_pipeline_table(app.addr.port(), sidecar.addr.port(), 2);
    let (gateway, _state) = ingress(table, ingress_dir.path()).await;
    assert_eq!(ingress_get(&gateway, KEY).await.0, 200);
    assert_eq!(ingress_get(&gateway, KEY).await.0, 200);
    assert_eq!(
        ingress_get(&gateway, KEY).await.0,
        429,
        "the ingress's quota"
    );
    assert_eq!(app.count(), 2);
    gateway.shutdown().await;

    let intruder = ca.issue(OTHER_SA, false);
    // No key, no certificate or another workload's: 401, nothing reaches the app.
    for cert in [None, Some(&intruder)] {
        let (status, body) = call_with_key(presenting(cert, &ingress_store), sidecar.addr, None)
            .await
            .expect("admitted for the pipeline");
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body.contains("\"status\":401"), "{body}");
        let (status, _) = call_with_key(
            presenting(cert, &ingress_store),
            sidecar.addr,
            Some("wrong-key-0123456789"),
        )
        .await
        .expect("admitted for the pipeline");
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.count(), 2);
    // The key: two calls reach the app (the sidecar's own count of 2 is whole), the third is
    // over the quota.
    for cert in [None, Some(&intruder)] {
        let (status, body) =
            call_with_key(presenting(cert, &ingress_store), sidecar.addr, Some(KEY))
                .await
                .expect("admitted");
        assert_eq!(status, StatusCode::OK, "{body}");
        let echoed: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert!(
            echoed["headers"].get("x-key").is_none(),
            "the key reached the app: {body}"
        );
    }
    assert_eq!(app.count(), 4);
    let (status, body) = call_with_key(presenting(None, &ingress_store), sidecar.addr, Some(KEY))
        .await
        .expect("admitted");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(app.count(), 4);
    // An expired certificate fails the handshake even so.
    let expired = ca.issue(OTHER_SA, true);
    assert!(
        call_with_key(
            presenting(Some(&expired), &ingress_store),
            sidecar.addr,
            Some(KEY)
        )
        .await
        .is_err(),
        "an expired certificate was admitted"
    );
    // The gateway identity still goes straight to the app: no key, not counted.
    let (status, body) = call_with_key(mtls_client(&ingress_store), sidecar.addr, None)
        .await
        .expect("the gateway is admitted");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(app.count(), 5);

    let metrics = support::client()
        .request(
            Request::get(format!("http://{}/metrics", sidecar.admin))
                .body(http_body_util::Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("metrics");
    let text = metrics
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("tollgate_sidecar_handshakes_total{outcome=\"direct\"}"),
        "{text}"
    );
    assert!(
        text.contains("product=\"shop/cart\""),
        "direct calls are counted under their product: {text}"
    );
}

/// The ingress's own client configuration (its identity from `store`).
fn mtls_client(store: &Arc<Identity>) -> ClientConfig {
    mtls::client_config(store.clone(), SpiffeId::parse(WORKLOAD).expect("id")).expect("config")
}
