//! TLS at the edge, over real sockets: certificates per SNI name from a directory, reload on
//! change, h2 by ALPN, only TLS 1.2/1.3, and the plain-HTTP redirect.

mod support;
mod tls_support;

use std::time::Duration;

use support::{eventually, raw, raw_status, TempDir, Upstream};
use tls_support::{connect, default_client, start_tls_gateway, Ca, H1, H2};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn manifests(upstream: &Upstream) -> TempDir {
    let dir = TempDir::new("tls-edge");
    dir.write(
        "api.yaml",
        &format!(
            r#"apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {{name: open, namespace: t}}
spec:
  basePath: /open
  backend: {{url: "{}"}}
  subscriptionRequired: false
  routes:
    - {{name: any, path: /}}
"#,
            upstream.url()
        ),
    );
    dir
}

/// A server CA and a certificate directory with `default`, `api` and `wild` pairs.
struct Certs {
    ca: Ca,
    dir: TempDir,
    default: tls_support::Leaf,
    api: tls_support::Leaf,
    wild: tls_support::Leaf,
}

fn certs() -> Certs {
    let ca = Ca::new("server-ca");
    let dir = TempDir::new("tls-edge-certs");
    let default = ca.server(&["fallback.test"]);
    let api = ca.server(&["api.example.test"]);
    let wild = ca.server(&["*.wild.test"]);
    default.write_pair(dir.path(), "default");
    api.write_pair(dir.path(), "api");
    wild.write_pair(dir.path(), "wild");
    Certs {
        ca,
        dir,
        default,
        api,
        wild,
    }
}

#[tokio::test]
async fn sni_picks_the_certificate_and_unknown_names_get_the_default() {
    support::capture_logs();
    let upstream = Upstream::start().await;
    let m = manifests(&upstream);
    let c = certs();
    let gw = start_tls_gateway(m.path(), c.dir.path(), false).await;
    let addr = gw.tls_addr().expect("tls listener");

    let leaf = |sni: Option<&'static str>| async move {
        let s = connect(addr, sni, default_client())
            .await
            .expect("handshake");
        tls_support::served_leaf(&s)
    };
    assert_eq!(leaf(Some("api.example.test")).await, c.api.der());
    assert_eq!(leaf(Some("API.Example.TEST")).await, c.api.der());
    assert_eq!(leaf(Some("x.wild.test")).await, c.wild.der());
    assert_eq!(leaf(Some("unknown.test")).await, c.default.der());
    // A wildcard covers one label only.
    assert_eq!(leaf(Some("a.b.wild.test")).await, c.default.der());
    // No SNI (connecting by IP address).
    assert_eq!(leaf(None).await, c.default.der());

    // And a request is served over it, with X-Forwarded-Proto: https.
    let s = connect(addr, Some("api.example.test"), default_client())
        .await
        .expect("handshake");
    let mut h1 = H1::over(s).await.expect("http/1.1");
    let a = h1
        .get("api.example.test", "/open/x", &[])
        .await
        .expect("response");
    assert_eq!(a.status, 200);
    assert_eq!(a.echoed("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(upstream.count(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn replacing_the_files_serves_new_connections_the_new_certificate() {
    support::capture_logs();
    let upstream = Upstream::start().await;
    let m = manifests(&upstream);
    let c = certs();
    let gw = start_tls_gateway(m.path(), c.dir.path(), false).await;
    let addr = gw.tls_addr().expect("tls listener");

    // A connection opened before the change keeps working after it.
    let before = connect(addr, Some("api.example.test"), default_client())
        .await
        .expect("handshake");
    assert_eq!(tls_support::served_leaf(&before), c.api.der());
    let mut kept = H1::over(before).await.expect("http/1.1");

    let renewed = c.ca.server(&["api.example.test", "api2.example.test"]);
    renewed.write_pair(c.dir.path(), "api");
    let seen = eventually(Duration::from_secs(20), || async {
        match connect(addr, Some("api.example.test"), default_client()).await {
            Ok(s) => tls_support::served_leaf(&s) == renewed.der(),
            Err(_) => false,
        }
    })
    .await;
    assert!(seen, "new connections never saw the renewed certificate");
    let s = connect(addr, Some("api2.example.test"), default_client())
        .await
        .expect("handshake");
    assert_eq!(tls_support::served_leaf(&s), renewed.der());

    let a = kept
        .get("api.example.test", "/open/kept", &[])
        .await
        .expect("old connection still served");
    assert_eq!(a.status, 200);

    // A broken pair (key of another certificate) is refused; the renewed one keeps serving.
    let stray = c.ca.server(&["api.example.test"]);
    std::fs::write(c.dir.path().join("api.key"), stray.key.serialize_pem()).expect("write");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let s = connect(addr, Some("api.example.test"), default_client())
        .await
        .expect("handshake after a broken change");
    assert_eq!(tls_support::served_leaf(&s), renewed.der());
    let logs = support::capture_logs().contents();
    assert!(
        logs.contains("api.key") && logs.contains("does not match"),
        "the refused pair is logged with its file"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn h2_is_negotiated_by_alpn_and_serves_requests() {
    support::capture_logs();
    let upstream = Upstream::start().await;
    let m = manifests(&upstream);
    let c = certs();
    let gw = start_tls_gateway(m.path(), c.dir.path(), false).await;
    let addr = gw.tls_addr().expect("tls listener");

    let config = tls_support::client_config(&[b"h2", b"http/1.1"], rustls::ALL_VERSIONS, None);
    let s = connect(addr, Some("api.example.test"), config)
        .await
        .expect("handshake");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut h2 = H2::over(s).await.expect("h2");
    for i in 0..3 {
        let a = h2
            .get("api.example.test", &format!("/open/h2/{i}"))
            .await
            .expect("h2 response");
        assert_eq!(a.status, 200);
        assert_eq!(a.version, http::Version::HTTP_2);
        assert_eq!(a.json()["path"], format!("/open/h2/{i}"));
        assert_eq!(a.echoed("x-forwarded-proto").as_deref(), Some("https"));
    }
    assert_eq!(upstream.count(), 3);

    // A client that offers only http/1.1 gets it.
    let config = tls_support::client_config(&[b"http/1.1"], rustls::ALL_VERSIONS, None);
    let s = connect(addr, Some("api.example.test"), config)
        .await
        .expect("handshake");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));

    // TLS 1.2 alone is still accepted.
    let config = tls_support::client_config(&[b"h2"], &[&rustls::version::TLS12], None);
    let s = connect(addr, Some("api.example.test"), config)
        .await
        .expect("TLS 1.2 handshake");
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    gw.shutdown().await;
}

/// A ClientHello with `legacy_version` = `version` in the record and the hello, no
/// `supported_versions` extension (so it offers exactly that version), SNI, and `suites`.
/// With `tls12_extensions` it also sends `signature_algorithms` and `supported_groups`, as a
/// TLS 1.2-capable library pinned to an older version would; real TLS 1.0/1.1 clients do not.
fn client_hello(version: [u8; 2], suites: &[u16], tls12_extensions: bool) -> Vec<u8> {
    fn ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
    fn u16_list(items: &[u16]) -> Vec<u8> {
        let mut v = ((items.len() * 2) as u16).to_be_bytes().to_vec();
        for i in items {
            v.extend_from_slice(&i.to_be_bytes());
        }
        v
    }
    let mut body = Vec::new();
    body.extend_from_slice(&version);
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // empty session id
    body.extend_from_slice(&u16_list(suites));
    body.extend_from_slice(&[1, 0]); // compression methods: null

    let name = b"api.example.test";
    let mut sni = Vec::new();
    sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni.push(0); // host_name
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    let mut exts = Vec::new();
    ext(&mut exts, 0x0000, &sni);
    if tls12_extensions {
        // ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256
        ext(&mut exts, 0x000d, &u16_list(&[0x0403, 0x0804, 0x0401]));
        // x25519, secp256r1
        ext(&mut exts, 0x000a, &u16_list(&[0x001d, 0x0017]));
        ext(&mut exts, 0x000b, &[1, 0]); // ec_point_formats: uncompressed
    }
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);

    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, version[0], version[1]];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// CBC suites a TLS 1.0/1.1 client offers.
const OLD_SUITES: [u16; 5] = [0xc014, 0xc013, 0x0035, 0x002f, 0x000a];
/// ECDHE-ECDSA/RSA AES-GCM: TLS 1.2 suites rustls supports.
const TLS12_SUITES: [u16; 4] = [0xc02b, 0xc02f, 0xc02c, 0xc030];

/// Send `hello` and read what comes back until the server closes (or 3 s pass).
async fn answer_to(addr: std::net::SocketAddr, hello: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(hello).await.expect("write");
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    assert!(closed.is_ok(), "the server kept the connection open");
    out
}

#[tokio::test]
async fn tls_1_0_and_1_1_client_hellos_are_refused() {
    support::capture_logs();
    let upstream = Upstream::start().await;
    let m = manifests(&upstream);
    let c = certs();
    let gw = start_tls_gateway(m.path(), c.dir.path(), false).await;
    let addr = gw.tls_addr().expect("tls listener");
    let edge = gw.tls_edge().expect("edge").clone();
    let failed_before = edge.stats.handshakes_failed();

    // Never a ServerHello: a fatal alert (record type 0x15, level 2), then the connection is
    // closed. A hello as TLS 1.0/1.1 clients send it lacks signature_algorithms, which rustls
    // answers with handshake_failure (40) before it looks at the version; one that has it gets
    // protocol_version (70).
    let cases: [(&str, Vec<u8>, &[u8]); 4] = [
        (
            "TLS 1.0",
            client_hello([3, 1], &OLD_SUITES, false),
            &[40, 70],
        ),
        (
            "TLS 1.1",
            client_hello([3, 2], &OLD_SUITES, false),
            &[40, 70],
        ),
        (
            "TLS 1.0 + TLS 1.2 extensions",
            client_hello([3, 1], &TLS12_SUITES, true),
            &[70],
        ),
        (
            "TLS 1.1 + TLS 1.2 extensions",
            client_hello([3, 2], &TLS12_SUITES, true),
            &[70],
        ),
    ];
    for (label, hello, alerts) in cases {
        let out = answer_to(addr, &hello).await;
        assert_eq!(out.len(), 7, "{label}: one alert record only: {out:02x?}");
        assert_eq!(out[0], 0x15, "{label}: not an alert: {out:02x?}");
        assert_eq!(out[5], 2, "{label}: not fatal: {out:02x?}");
        assert!(alerts.contains(&out[6]), "{label}: alert {out:02x?}");
    }
    assert!(edge.stats.handshakes_failed() >= failed_before + 4);
    let metrics = gw.shared().metrics.render();
    assert!(
        metrics.contains(r#"tollgate_tls_handshakes_total{outcome="failed"} 4"#),
        "{metrics}"
    );

    // The same kind of hello with legacy_version 1.2 gets a ServerHello from the same
    // listener: the refusals above are about the version.
    let out = answer_to_first_record(addr, &client_hello([3, 3], &TLS12_SUITES, true)).await;
    assert_eq!(out.first(), Some(&0x16), "TLS 1.2 hello: {out:02x?}");
    assert_eq!(out.get(5), Some(&2), "a ServerHello: {out:02x?}");
    gw.shutdown().await;
}

/// Send `hello` and read the first bytes the server answers with.
async fn answer_to_first_record(addr: std::net::SocketAddr, hello: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(hello).await.expect("write");
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    buf.truncate(n);
    buf
}

#[tokio::test]
async fn redirect_mode_answers_308_to_the_tls_port() {
    support::capture_logs();
    let upstream = Upstream::start().await;
    let m = manifests(&upstream);
    let c = certs();
    let gw = start_tls_gateway(m.path(), c.dir.path(), true).await;
    let tls_port = gw.tls_addr().expect("tls listener").port();

    let answer = raw(
        gw.proxy_addr(),
        b"GET /open/a?x=1&y=2 HTTP/1.1\r\nHost: api.example.test:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 308, "{answer}");
    let location = answer
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(n, _)| n.eq_ignore_ascii_case("location"))
                .map(|(_, v)| v.trim().to_string())
        })
        .expect("Location header");
    assert_eq!(
        location,
        format!("https://api.example.test:{tls_port}/open/a?x=1&y=2")
    );
    assert_eq!(upstream.count(), 0, "nothing is forwarded in plain text");

    let answer = raw(gw.proxy_addr(), b"GET /open/a HTTP/1.0\r\n\r\n").await;
    assert_eq!(raw_status(&answer), 400, "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("problems/missing-host"), "{answer}");

    // The TLS listener serves the request itself.
    let s = connect(
        gw.tls_addr().expect("tls"),
        Some("api.example.test"),
        default_client(),
    )
    .await
    .expect("handshake");
    let a = H1::over(s)
        .await
        .expect("h1")
        .get("api.example.test", "/open/a", &[])
        .await
        .expect("response");
    assert_eq!(a.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_bad_certificate_directory_is_a_startup_error_naming_the_file() {
    support::capture_logs();
    let upstream = Upstream::start().await;
    let m = manifests(&upstream);
    let certs = TempDir::new("tls-edge-bad");
    let start = |redirect: bool, dir: Option<&std::path::Path>| {
        let mut config = tollgate_proxy::GatewayConfig::new(m.path().to_path_buf());
        config.listen = "127.0.0.1:0".parse().expect("addr");
        config.admin_listen = "127.0.0.1:0".parse().expect("addr");
        config.tls_listen = Some("127.0.0.1:0".parse().expect("addr"));
        config.tls_dir = dir.map(|d| d.to_path_buf());
        config.redirect_http = redirect;
        config.settle_window = std::time::Duration::from_millis(50);
        tollgate_proxy::Gateway::start(config)
    };
    let e = start(false, Some(certs.path()))
        .await
        .expect_err("empty dir");
    assert!(e.to_string().contains("holds no NAME.crt"), "{e}");

    Ca::new("ca")
        .server(&["a.test"])
        .write_pair(certs.path(), "api");
    std::fs::write(
        certs.path().join("api.key"),
        "-----BEGIN PRIVATE KEY-----\n",
    )
    .expect("write");
    let e = start(false, Some(certs.path())).await.expect_err("bad key");
    assert!(e.to_string().contains("api.key"), "{e}");

    // --tls-listen alone is valid (it serves Gateway HTTPS listeners' certificates from the
    // table; see gateway_https.rs); --tls-dir alone names the flag it lacks.
    let mut config = tollgate_proxy::GatewayConfig::new(m.path().to_path_buf());
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.admin_listen = "127.0.0.1:0".parse().expect("addr");
    config.tls_dir = Some(certs.path().to_path_buf());
    let e = tollgate_proxy::Gateway::start(config)
        .await
        .expect_err("no TLS listener");
    assert!(e.to_string().contains("--tls-listen"), "{e}");
    start(true, None)
        .await
        .expect("--tls-listen without --tls-dir")
        .shutdown()
        .await;
}
