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
