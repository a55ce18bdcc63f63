//! Gateway HTTPS listeners over real TLS: the proxy's TLS listener, without `--tls-dir`, serves
//! each listener's certificate (from its `certificateRefs` Secret, here in standalone manifests)
//! to the SNI names its hostname matches, and the HTTPRoutes attached to the Gateway behind it.

mod support;
mod tls_support;

use std::net::SocketAddr;

use support::{TempDir, Upstream};
use tls_support::{connect, default_client, served_leaf, start_tls_gateway_with, Ca, Leaf, H1};

/// A `kubernetes.io/tls` Secret `t/NAME` holding `leaf`.
fn secret(name: &str, leaf: &Leaf) -> String {
    format!(
        "apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: t}}
type: kubernetes.io/tls
stringData:
  tls.crt: {crt}
  tls.key: {key}
---
",
        // JSON strings are YAML double-quoted scalars: the PEM's newlines survive.
        crt = serde_json::to_string(&leaf.cert.pem()).expect("json"),
        key = serde_json::to_string(&leaf.key.serialize_pem()).expect("json"),
    )
}

/// Our GatewayClass, Gateway `t/edge` with `listeners` (YAML list items), a Service `web` for
/// `web` and an HTTPRoute sending every request of every host to it.
fn gateway(listeners: &str, web: SocketAddr) -> String {
    format!(
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
{listeners}---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: t}}
spec: {{type: ExternalName, externalName: "{ip}", ports: [{{port: {port}}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: site, namespace: t}}
spec:
  parentRefs: [{{name: edge}}]
  rules: [{{backendRefs: [{{name: web, port: {port}}}]}}]
---
"#,
        ip = web.ip(),
        port = web.port(),
    )
}

fn listener(name: &str, hostname: Option<&str>, secret: &str) -> String {
    let hostname = hostname.map_or(String::new(), |h| format!(", hostname: \"{h}\""));
    format!(
        "  - {{name: {name}, protocol: HTTPS, port: 443{hostname}, \
         tls: {{certificateRefs: [{{name: {secret}}}]}}}}\n"
    )
}

/// GET `/` on `host` over a TLS connection with SNI `host`: the certificate served and the
/// status.
async fn get(addr: SocketAddr, host: &str) -> (rustls::pki_types::CertificateDer<'static>, u16) {
    let stream = connect(addr, Some(host), default_client())
        .await
        .unwrap_or_else(|e| panic!("handshake for {host}: {e}"));
    let leaf = served_leaf(&stream);
    let mut h1 = H1::over(stream).await.expect("h1");
    let answer = h1.get(host, "/", &[]).await.expect("response");
    (leaf, answer.status.as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_https_listener_serves_its_certificate_to_the_names_its_hostname_matches() {
    let web = Upstream::start().await;
    let ca = Ca::new("gateway test CA");
    let api = ca.server(&["api.example.com"]);
    let wild = ca.server(&["*.example.org"]);
    let rest = ca.server(&["fallback.test"]);
    let listeners = [
        "  - {name: http, protocol: HTTP, port: 80}\n".to_string(),
        listener("api", Some("api.example.com"), "api-cert"),
        listener("wild", Some("*.example.org"), "wild-cert"),
        listener("rest", None, "rest-cert"),
        // Its Secret does not exist: the listener is not valid, and nothing of it is served.
        listener("broken", Some("broken.example.net"), "missing-cert"),
    ]
    .concat();
    let dir = TempDir::new("gateway-https");
    dir.write(
        "all.yaml",
        &[
            gateway(&listeners, web.addr),
            secret("api-cert", &api),
            secret("wild-cert", &wild),
            secret("rest-cert", &rest),
        ]
        .concat(),
    );
    let gw = start_tls_gateway_with(dir.path(), None, false).await;
    let addr = gw.tls_addr().expect("TLS listener");

    for (host, want) in [
        ("api.example.com", &api),
        ("shop.example.org", &wild),
        // One label only, as for routes: the no-hostname listener's.
        ("a.b.example.org", &rest),
        ("other.test", &rest),
        ("broken.example.net", &rest),
    ] {
        let (leaf, status) = get(addr, host).await;
        assert!(leaf == want.der(), "{host}: wrong certificate served");
        assert_eq!(status, 200, "{host}: the route answers every host");
    }
    assert_eq!(web.count(), 5);
    // Each served listener certificate's expiry is exported, the broken listener's is not.
    let metrics = gw.shared().metrics.render();
    for id in ["t/edge/api", "t/edge/wild", "t/edge/rest"] {
        let series = format!(
            "tollgate_certificate_expiry_timestamp_seconds{{kind=\"gateway_listener\",name=\"{id}\"}}"
        );
        assert!(metrics.contains(&series), "{series} missing:\n{metrics}");
    }
    assert!(!metrics.contains("t/edge/broken"));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_no_listener_serves_fails_the_handshake_without_tls_dir() {
    let web = Upstream::start().await;
    let ca = Ca::new("gateway test CA");
    let api = ca.server(&["api.example.com"]);
    let dir = TempDir::new("gateway-https-unknown");
    dir.write(
        "all.yaml",
        &[
            gateway(
                &listener("api", Some("api.example.com"), "api-cert"),
                web.addr,
            ),
            secret("api-cert", &api),
        ]
        .concat(),
    );
    let gw = start_tls_gateway_with(dir.path(), None, false).await;
    let addr = gw.tls_addr().expect("TLS listener");
    let (leaf, status) = get(addr, "api.example.com").await;
    assert!(leaf == api.der());
    assert_eq!(status, 200);
    assert!(
        connect(addr, Some("other.test"), default_client())
            .await
            .is_err(),
        "no certificate serves other.test: the handshake must fail"
    );
    let edge = gw.tls_edge().expect("edge");
    assert_eq!(edge.stats.handshakes_failed(), 1);
    gw.shutdown().await;
}

/// Two Gateways with addresses of their own (`--gateway-sockets`, `--gateway-address-pool`),
/// each with an HTTPS listener on the same port for the same hostname and a certificate of its
/// own: each Gateway's socket serves its own listener's certificate (and its own route), never
/// the other's; the proxy's own TLS listener serves neither (no Gateway without an address has
/// a listener for the name, and there is no `--tls-dir`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_addressed_gateways_with_one_hostname_each_serve_their_own_certificate() {
    const HOST: &str = "api.example.com";
    let (web_one, web_two) = (Upstream::start().await, Upstream::start().await);
    let ca = Ca::new("gateway test CA");
    let (cert_one, cert_two) = (ca.server(&[HOST]), ca.server(&[HOST]));
    // Loopback addresses of their own (all of 127/8 is local on Linux), not another test's.
    let (one, two) = ("127.77.4.1", "127.77.4.2");
    let port = support::free_port();
    let gateway = |name: &str, created: &str| {
        format!(
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: t, creationTimestamp: "{created}"}}
spec:
  gatewayClassName: tollgate
  listeners:
  - {{name: https, protocol: HTTPS, port: {port}, hostname: "{HOST}", tls: {{certificateRefs: [{{name: {name}-cert}}]}}}}
---
"#
        )
    };
    let served_by = |name: &str, web: &Upstream| {
        format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: {name}-web, namespace: t}}
spec: {{type: ExternalName, externalName: "{ip}", ports: [{{port: {up}}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}-site, namespace: t}}
spec:
  parentRefs: [{{name: {name}}}]
  rules: [{{backendRefs: [{{name: {name}-web, port: {up}}}]}}]
---
"#,
            ip = web.addr.ip(),
            up = web.addr.port(),
        )
    };
    let dir = TempDir::new("gateway-https-sockets");
    dir.write(
        "all.yaml",
        &[
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: tollgate}\nspec: {controllerName: tollgate.dev/gateway-controller}\n---\n".to_string(),
            gateway("one", "2026-01-01T00:00:00Z"),
            gateway("two", "2026-01-02T00:00:00Z"),
            secret("one-cert", &cert_one),
            secret("two-cert", &cert_two),
            served_by("one", &web_one),
            served_by("two", &web_two),
        ]
        .concat(),
    );
    let mut config = tollgate_proxy::GatewayConfig::new(dir.path().to_path_buf());
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.admin_listen = "127.0.0.1:0".parse().expect("addr");
    config.tls_listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.drain_timeout = std::time::Duration::from_secs(2);
    config.settle_window = std::time::Duration::from_millis(50);
    config.gateway_sockets = true;
    config.gateway_address_pool = vec![one.parse().expect("ip"), two.parse().expect("ip")];
    let gw = tollgate_proxy::Gateway::start(config)
        .await
        .expect("gateway starts");
    let socket =
        |address: &str| -> SocketAddr { format!("{address}:{port}").parse().expect("socket") };
    let rt = gw.shared().runtime.load_full().expect("table loaded");
    assert_eq!(
        rt.gateway_sockets,
        [(socket(one), true), (socket(two), true)],
        "each Gateway's HTTPS socket: {:?}",
        rt.diagnostics()
    );
    for address in [one, two] {
        let open = support::eventually(std::time::Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(socket(address))
                .await
                .is_ok()
        })
        .await;
        assert!(open, "the socket of the Gateway on {address} never opened");
    }

    // Several handshakes each: a certificate picked among both Gateways' would show on one.
    for _ in 0..3 {
        let (leaf, status) = get(socket(one), HOST).await;
        assert!(
            leaf == cert_one.der(),
            "Gateway one's socket served another certificate"
        );
        assert_eq!(status, 200);
        let (leaf, status) = get(socket(two), HOST).await;
        assert!(
            leaf == cert_two.der(),
            "Gateway two's socket served another certificate"
        );
        assert_eq!(status, 200);
    }
    assert_eq!(
        (web_one.count(), web_two.count()),
        (3, 3),
        "each Gateway's own route"
    );

    let own = gw.tls_addr().expect("TLS listener");
    assert!(
        connect(own, Some(HOST), default_client()).await.is_err(),
        "the proxy's own TLS listener serves no addressed Gateway's certificate"
    );
    gw.shutdown().await;
}
