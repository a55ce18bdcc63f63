//! Client-certificate callers over real TLS: a product with `clientCertificates` identifies a
//! Subscription by the SHA-256 fingerprint of a certificate from its CA, and refuses callers
//! without one (401), with one from another CA or expired (refused in the handshake), or with
//! one no Subscription lists (403).

mod support;
mod tls_support;

use std::net::SocketAddr;

use support::{TempDir, Upstream};
use tls_support::{client_config, connect, start_tls_gateway, Ca, Leaf, H1};

const HOST: &str = "api.example.test";
const CERTIFIED_KEY: &str = "certified-key-0123456789";
const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

/// Indent a PEM block for a YAML literal scalar.
fn indented(pem: &str) -> String {
    pem.lines()
        .map(|l| format!("    {l}\n"))
        .collect::<String>()
}

fn manifests(
    upstream: &Upstream,
    ca: &Ca,
    partner_ca: &Ca,
    listed: &Leaf,
    partner: &Leaf,
) -> TempDir {
    let dir = TempDir::new("client-certs");
    let up = upstream.url();
    dir.write(
        "api.yaml",
        &format!(
            r#"apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {{name: secure, namespace: t}}
spec:
  basePath: /secure
  backend: {{url: "{up}"}}
  clientCertificates: {{caSecret: client-ca, required: true}}
  routes:
    - {{name: any, path: /}}
---
apiVersion: v1
kind: Secret
metadata: {{name: client-ca, namespace: t}}
stringData:
  ca.crt: |
{ca_pem}---
apiVersion: tollgate.dev/v1alpha1
kind: Plan
metadata: {{name: metered, namespace: t}}
spec:
  product: secure
  rateLimit: {{requests: 3, period: 1h}}
---
apiVersion: tollgate.dev/v1alpha1
kind: Subscription
metadata: {{name: certified, namespace: t}}
spec:
  plan: metered
  subscriber: {{name: Certified Corp}}
  clientCertificates: ["{listed_fp}"]
  keys: {{secretRef: {{name: certified-keys}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: certified-keys, namespace: t}}
stringData: {{primaryKey: {CERTIFIED_KEY}}}
---
apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {{name: partner, namespace: t}}
spec:
  basePath: /partner
  backend: {{url: "{up}"}}
  clientCertificates: {{caSecret: partner-ca, required: false}}
  routes:
    - {{name: any, path: /}}
---
apiVersion: v1
kind: Secret
metadata: {{name: partner-ca, namespace: t}}
stringData:
  ca.crt: |
{partner_pem}---
apiVersion: tollgate.dev/v1alpha1
kind: Plan
metadata: {{name: partner-basic, namespace: t}}
spec:
  product: partner
---
apiVersion: tollgate.dev/v1alpha1
kind: Subscription
metadata: {{name: partner-sub, namespace: t}}
spec:
  plan: partner-basic
  subscriber: {{name: Partner}}
  clientCertificates: ["{partner_fp}"]
  keys: {{secretRef: {{name: partner-keys}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: partner-keys, namespace: t}}
stringData: {{primaryKey: partner-key-0123456789}}
"#,
            ca_pem = indented(&ca.pem()),
            partner_pem = indented(&partner_ca.pem()),
            listed_fp = listed.fingerprint(),
            partner_fp = partner.fingerprint(),
        ),
    );
    dir
}

struct Setup {
    gw: tollgate_proxy::Gateway,
    upstream: Upstream,
    ca: Ca,
    listed: Leaf,
    partner: Leaf,
    _dirs: (TempDir, TempDir),
}

impl Setup {
    async fn start() -> Setup {
        support::capture_logs();
        let upstream = Upstream::start().await;
        let ca = Ca::new("client-ca");
        let partner_ca = Ca::new("partner-ca");
        let listed = ca.client("listed", false);
        let partner = partner_ca.client("partner", false);
        let m = manifests(&upstream, &ca, &partner_ca, &listed, &partner);
        let server_ca = Ca::new("server-ca");
        let certs = TempDir::new("client-certs-server");
        server_ca
            .server(&[HOST])
            .write_pair(certs.path(), "default");
        let gw = start_tls_gateway(m.path(), certs.path(), false).await;
        let rt = gw.shared().runtime.load_full().expect("table loaded");
        let secure = rt
            .products
            .iter()
            .find(|p| p.id == "t/secure")
            .expect("secure compiled");
        assert!(
            secure.client_auth.is_some(),
            "clientCertificates compiled: {:?}",
            rt.diagnostics()
        );
        Setup {
            gw,
            upstream,
            ca,
            listed,
            partner,
            _dirs: (m, certs),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.gw.tls_addr().expect("tls listener")
    }

    /// GET `path` over a new TLS connection presenting `cert`.
    async fn get(
        &self,
        cert: Option<&Leaf>,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<tls_support::Answer, String> {
        self.get_over(rustls::ALL_VERSIONS, cert, path, headers)
            .await
    }

    /// [`Setup::get`] with these TLS versions offered.
    async fn get_over(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        cert: Option<&Leaf>,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<tls_support::Answer, String> {
        let config = client_config(&[b"http/1.1"], versions, cert);
        let s = connect(self.addr(), Some(HOST), config)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let mut h1 = H1::over(s).await.map_err(|e| format!("h1: {e:?}"))?;
        h1.get(HOST, path, headers)
            .await
            .map_err(|e| format!("request: {e:?}"))
    }
}

#[tokio::test]
async fn a_listed_certificate_is_served_and_counts_against_its_plan() {
    let s = Setup::start().await;
    // One connection, several requests: verified once, identified every time.
    let config = client_config(&[b"http/1.1"], rustls::ALL_VERSIONS, Some(&s.listed));
    let tls = connect(s.addr(), Some(HOST), config)
        .await
        .expect("handshake");
    let mut h1 = H1::over(tls).await.expect("h1");
    for i in 0..2 {
        let a = h1
            .get(HOST, &format!("/secure/{i}"), &[])
            .await
            .expect("response");
        assert_eq!(a.status, 200, "{:?}", a.body);
        assert_eq!(a.echoed("x-forwarded-proto").as_deref(), Some("https"));
        assert_eq!(a.headers["ratelimit-limit"], "3");
    }
    // A new connection is the same subscription: its third request is the last of the plan.
    let a = s
        .get(Some(&s.listed), "/secure/2", &[])
        .await
        .expect("response");
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["ratelimit-remaining"], "0");
    let a = h1.get(HOST, "/secure/3", &[]).await.expect("response");
    a.assert_problem(429, "rate-limited");
    assert_eq!(s.upstream.count(), 3);

    let metrics = s.gw.shared().metrics.render();
    assert!(
        metrics.contains(r#"tollgate_rate_limited_total{plan="t/metered",product="t/secure"} 1"#),
        "{metrics}"
    );
    s.gw.shutdown().await;
}

#[tokio::test]
async fn no_certificate_on_a_required_product_is_401() {
    let s = Setup::start().await;
    let a = s.get(None, "/secure/x", &[]).await.expect("response");
    a.assert_problem(401, "client-certificate-required");
    // A key does not stand in for the certificate.
    let a = s
        .get(None, "/secure/x", &[("x-subscription-key", CERTIFIED_KEY)])
        .await
        .expect("response");
    a.assert_problem(401, "client-certificate-required");
    // Plain HTTP cannot carry one.
    let plain = support::send(
        &support::client(),
        "GET",
        &format!("http://{}/secure/x", s.gw.proxy_addr()),
        &[("x-subscription-key", CERTIFIED_KEY)],
    )
    .await;
    plain.assert_problem(401, "client-certificate-required");
    assert_eq!(s.upstream.count(), 0);
    s.gw.shutdown().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let s = Setup::start().await;
    // A CA no product on this host trusts: the handshake's verifier refuses the certificate
    // with an unknown_ca alert (with TLS 1.3 the client reads it after its Finished, so the
    // request fails; with TLS 1.2 the handshake itself fails). Nothing reaches HTTP.
    let stranger = Ca::new("stranger-ca").client("mallory", false);
    for versions in [TLS13, TLS12] {
        let e = s
            .get_over(versions, Some(&stranger), "/secure/x", &[])
            .await
            .expect_err("refused");
        assert!(e.contains("UnknownCA"), "{e}");
    }

    // The partner product's CA passes the handshake (another product on this host trusts it),
    // but it is not `secure`'s CA: 401 from the per-product check, not a 200.
    let a = s
        .get(Some(&s.partner), "/secure/x", &[])
        .await
        .expect("response");
    a.assert_problem(401, "client-certificate-required");
    // On its own product it identifies its subscription.
    let a = s
        .get(Some(&s.partner), "/partner/x", &[])
        .await
        .expect("response");
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(s.upstream.count(), 1);
    s.gw.shutdown().await;
}

#[tokio::test]
async fn an_expired_certificate_is_refused_in_the_handshake() {
    let s = Setup::start().await;
    let expired = s.ca.client("old", true);
    for versions in [TLS13, TLS12] {
        let e = s
            .get_over(versions, Some(&expired), "/secure/x", &[])
            .await
            .expect_err("refused");
        assert!(e.contains("CertificateExpired"), "{e}");
    }
    assert_eq!(s.upstream.count(), 0);
    s.gw.shutdown().await;
}

#[tokio::test]
async fn an_unlisted_certificate_is_403_and_optional_products_still_take_keys() {
    let s = Setup::start().await;
    let unlisted = s.ca.client("unlisted", false);
    let a = s
        .get(Some(&unlisted), "/secure/x", &[])
        .await
        .expect("response");
    a.assert_problem(403, "unknown-client-certificate");
    // `partner` has required: false: a key still identifies, with or without a certificate.
    let a = s
        .get(
            None,
            "/partner/x",
            &[("x-subscription-key", "partner-key-0123456789")],
        )
        .await
        .expect("response");
    assert_eq!(a.status, 200);
    let a = s.get(None, "/partner/x", &[]).await.expect("response");
    a.assert_problem(401, "missing-key");
    assert_eq!(s.upstream.count(), 1);
    s.gw.shutdown().await;
}

/// A Product with `clientCertificates` that targets an HTTPRoute of a Gateway with an address
/// of its own (`--gateway-sockets`, `--gateway-address-pool`) is served on that Gateway's HTTPS
/// socket only; the handshake there must ask for a certificate from the Product's CA (the
/// Product is in that socket's routes, not in the proxy listeners'). A caller without a
/// certificate is refused (401), one with a listed certificate is served, one from a CA the
/// Product does not trust fails the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_certificate_is_asked_for_on_an_addressed_gateways_https_socket() {
    support::capture_logs();
    let upstream = Upstream::start().await;
    let ca = Ca::new("gateway-client-ca");
    let listed = ca.client("listed", false);
    let server = Ca::new("gateway-server-ca").server(&[HOST]);
    // A loopback address of its own (all of 127/8 is local on Linux), not another test's.
    let address = "127.77.3.1";
    let port = support::free_port();
    let dir = TempDir::new("client-certs-gateway-socket");
    dir.write(
        "all.yaml",
        &format!(
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: tollgate}}
spec: {{controllerName: tollgate.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: t}}
spec:
  gatewayClassName: tollgate
  listeners:
  - {{name: https, protocol: HTTPS, port: {port}, hostname: "{HOST}", tls: {{certificateRefs: [{{name: server-cert}}]}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: server-cert, namespace: t}}
type: kubernetes.io/tls
stringData:
  tls.crt: {crt}
  tls.key: {key}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: t}}
spec: {{type: ExternalName, externalName: "{ip}", ports: [{{port: {up_port}}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: secure, namespace: t}}
spec:
  parentRefs: [{{name: edge}}]
  rules:
  - name: any
    matches: [{{path: {{type: PathPrefix, value: /secure}}}}]
    backendRefs: [{{name: web, port: {up_port}}}]
---
apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {{name: secure, namespace: t}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: secure}}]
  clientCertificates: {{caSecret: client-ca, required: true}}
---
apiVersion: v1
kind: Secret
metadata: {{name: client-ca, namespace: t}}
stringData:
  ca.crt: |
{ca_pem}---
apiVersion: tollgate.dev/v1alpha1
kind: Plan
metadata: {{name: metered, namespace: t}}
spec: {{product: secure}}
---
apiVersion: tollgate.dev/v1alpha1
kind: Subscription
metadata: {{name: certified, namespace: t}}
spec:
  plan: metered
  subscriber: {{name: Certified Corp}}
  clientCertificates: ["{listed_fp}"]
  keys: {{secretRef: {{name: certified-keys}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: certified-keys, namespace: t}}
stringData: {{primaryKey: {CERTIFIED_KEY}}}
"#,
            // JSON strings are YAML double-quoted scalars: the PEM's newlines survive.
            crt = serde_json::to_string(&server.cert.pem()).expect("json"),
            key = serde_json::to_string(&server.key.serialize_pem()).expect("json"),
            ip = upstream.addr.ip(),
            up_port = upstream.addr.port(),
            ca_pem = indented(&ca.pem()),
            listed_fp = listed.fingerprint(),
        ),
    );
    let mut config = tollgate_proxy::GatewayConfig::new(dir.path().to_path_buf());
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.admin_listen = "127.0.0.1:0".parse().expect("addr");
    config.tls_listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.drain_timeout = std::time::Duration::from_secs(2);
    config.settle_window = std::time::Duration::from_millis(50);
    config.gateway_sockets = true;
    config.gateway_address_pool = vec![address.parse().expect("ip")];
    let gw = tollgate_proxy::Gateway::start(config)
        .await
        .expect("gateway starts");
    let rt = gw.shared().runtime.load_full().expect("table loaded");
    let secure = rt
        .products
        .iter()
        .find(|p| p.id == "t/secure")
        .unwrap_or_else(|| panic!("secure compiled: {:?}", rt.diagnostics()));
    assert!(secure.client_auth.is_some(), "{:?}", rt.diagnostics());
    let socket: SocketAddr = format!("{address}:{port}").parse().expect("socket");
    assert_eq!(
        rt.gateway_sockets,
        [(socket, true)],
        "the Gateway's HTTPS socket"
    );
    let open = support::eventually(std::time::Duration::from_secs(10), || async move {
        tokio::net::TcpStream::connect(socket).await.is_ok()
    })
    .await;
    assert!(open, "the Gateway's socket never opened");

    let get_over = |versions: &[&'static rustls::SupportedProtocolVersion], cert: Option<&Leaf>| {
        let config = client_config(&[b"http/1.1"], versions, cert);
        async move {
            let s = connect(socket, Some(HOST), config)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            let mut h1 = H1::over(s).await.map_err(|e| format!("h1: {e:?}"))?;
            h1.get(HOST, "/secure/x", &[])
                .await
                .map_err(|e| format!("request: {e:?}"))
        }
    };
    let get = |cert| get_over(rustls::ALL_VERSIONS, cert);
    let a = get(None).await.expect("response");
    a.assert_problem(401, "client-certificate-required");
    let a = get(Some(&listed)).await.expect("response");
    assert_eq!(
        a.status, 200,
        "a listed certificate from the Product's CA: {:?}",
        a.body
    );
    assert_eq!(a.echoed("x-forwarded-proto").as_deref(), Some("https"));
    // A CA the Product does not trust: refused by the handshake's verifier (over TLS 1.2, where
    // the handshake itself fails; with TLS 1.3 the client reads the alert after its Finished).
    let stranger = Ca::new("stranger-ca").client("mallory", false);
    let e = get_over(TLS12, Some(&stranger)).await.expect_err("refused");
    assert!(e.contains("UnknownCA"), "{e}");
    assert_eq!(upstream.count(), 1);
    gw.shutdown().await;
}
