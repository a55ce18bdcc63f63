//! Standalone mode with Gateway API manifests: the real `tollgate-proxy` binary on a directory
//! holding a GatewayClass, a Gateway, an HTTPRoute (to an ExternalName Service standing for a
//! loopback upstream) and a Product that targets the HTTPRoute, with a Plan and a Subscription.
//! The HTTPRoute's paths are served and enforced like a Product's own routes.

mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{client, eventually, free_port, send, TempDir, Upstream};

const KEY: &str = "gateway-api-key-0123456789";

/// A GatewayClass of ours and its Gateway `t/edge` with one HTTP listener, before a test's
/// Services and HTTPRoutes.
const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: tollgate}
spec: {controllerName: tollgate.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: t}
spec:
  gatewayClassName: tollgate
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
";

fn manifests(upstream: SocketAddr) -> String {
    format!(
        r#"{GATEWAY}apiVersion: v1
kind: Service
metadata: {{name: weather, namespace: t}}
spec: {{type: ExternalName, externalName: "{ip}", ports: [{{port: {port}}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: weather, namespace: t}}
spec:
  parentRefs: [{{name: edge}}]
  rules:
  - name: forecast
    matches: [{{path: {{type: PathPrefix, value: /forecast}}, method: GET}}]
    backendRefs: [{{name: weather, port: {port}}}]
  - matches: [{{path: {{type: Exact, value: /alerts}}}}]
    backendRefs: [{{name: weather, port: {port}}}]
  - name: beta
    matches: [{{path: {{type: PathPrefix, value: /forecast}}, method: GET, headers: [{{name: X-Beta, value: "on"}}]}}]
    backendRefs: [{{name: weather, port: {port}}}]
  - name: metric
    matches: [{{path: {{type: PathPrefix, value: /forecast}}, method: GET, queryParams: [{{name: units, value: metric}}]}}]
    backendRefs: [{{name: weather, port: {port}}}]
---
apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {{name: weather, namespace: t}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: weather}}]
---
apiVersion: tollgate.dev/v1alpha1
kind: Plan
metadata: {{name: forecasts, namespace: t}}
spec: {{product: weather, routes: [forecast]}}
---
apiVersion: tollgate.dev/v1alpha1
kind: Subscription
metadata: {{name: acme, namespace: t}}
spec:
  plan: forecasts
  subscriber: {{name: acme}}
  keys: {{secretRef: {{name: acme-keys}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: acme-keys, namespace: t}}
stringData: {{primaryKey: {KEY}}}
"#,
        ip = upstream.ip(),
        port = upstream.port(),
    )
}

/// The binary on `dir`, stopped when dropped.
struct Proxy {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    async fn start(dir: &std::path::Path) -> Proxy {
        Proxy::start_with(dir, &[]).await
    }

    /// [`Proxy::start`] with more flags.
    async fn start_with(dir: &std::path::Path, extra: &[&str]) -> Proxy {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate-proxy"))
            .arg("--from-dir")
            .arg(dir)
            .args(extra)
            .args(["--listen", &addr.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args(["--access-log", "off", "--log-format", "text"])
            .args(["--drain-seconds", "1", "--threads", "1"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tollgate-proxy");
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(mut out) = child.stdout.take() {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = out.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    log.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let proxy = Proxy { child, addr, log };
        let c = client();
        let ready = format!("http://{admin}/readyz");
        // `send` panics on a refused connection: wait for the admin socket first.
        let listening = eventually(Duration::from_secs(20), || async move {
            tokio::net::TcpStream::connect(admin).await.is_ok()
        })
        .await;
        let became_ready = listening
            && eventually(Duration::from_secs(20), || {
                let (c, ready) = (c.clone(), ready.clone());
                async move { send(&c, "GET", &ready, &[]).await.status == 200 }
            })
            .await;
        assert!(
            became_ready,
            "proxy did not become ready; log:\n{}",
            proxy.log.lock().unwrap_or_else(|e| e.into_inner())
        );
        proxy
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_targeting_an_httproute_serves_its_paths_to_subscribers_only() {
    let upstream = Upstream::start().await;
    let dir = TempDir::new("gateway-api");
    dir.write("all.yaml", &manifests(upstream.addr));
    let proxy = Proxy::start(dir.path()).await;
    let c = client();

    // A subscribed call on a path of the HTTPRoute reaches the backend.
    let ok = send(
        &c,
        "GET",
        &proxy.url("/forecast/today"),
        &[("x-subscription-key", KEY)],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["path"], "/forecast/today", "{}", ok.text());
    assert_eq!(upstream.count(), 1);

    // Without a key: 401, and the backend is not called.
    send(&c, "GET", &proxy.url("/forecast/today"), &[])
        .await
        .assert_problem(401, "missing-key");
    // The rule's method match is part of the match, as in the Gateway API (another method is
    // no route: 404, not 405), and the Plan is enforced (the unnamed rule is `weather-1`, not
    // in the plan).
    send(
        &c,
        "POST",
        &proxy.url("/forecast/today"),
        &[("x-subscription-key", KEY)],
    )
    .await
    .assert_problem(404, "no-route");
    send(
        &c,
        "GET",
        &proxy.url("/alerts"),
        &[("x-subscription-key", KEY)],
    )
    .await
    .assert_problem(403, "route-not-in-plan");
    // Header and query matches select their own rules (not in the plan: 403 shows which
    // route was chosen); a header value that differs falls back to the plain rule.
    send(
        &c,
        "GET",
        &proxy.url("/forecast/today"),
        &[("x-subscription-key", KEY), ("x-beta", "on")],
    )
    .await
    .assert_problem(403, "route-not-in-plan");
    send(
        &c,
        "GET",
        &proxy.url("/forecast/today?units=metric"),
        &[("x-subscription-key", KEY)],
    )
    .await
    .assert_problem(403, "route-not-in-plan");
    let plain = send(
        &c,
        "GET",
        &proxy.url("/forecast/today?units=imperial"),
        &[("x-subscription-key", KEY), ("x-beta", "off")],
    )
    .await;
    assert_eq!(plain.status, 200, "{}", plain.text());
    // A path the HTTPRoute does not have.
    send(
        &c,
        "GET",
        &proxy.url("/elsewhere"),
        &[("x-subscription-key", KEY)],
    )
    .await
    .assert_problem(404, "no-route");
    assert_eq!(
        upstream.count(),
        2,
        "only the subscribed calls on plan routes were forwarded"
    );
}

/// An HTTPRoute no Product targets, with two rules to two Services.
fn open_route(web: SocketAddr, api: SocketAddr) -> String {
    format!(
        r#"{GATEWAY}apiVersion: v1
kind: Service
metadata: {{name: web, namespace: t}}
spec: {{type: ExternalName, externalName: "{web_ip}", ports: [{{port: {web_port}}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: api, namespace: t}}
spec: {{type: ExternalName, externalName: "{api_ip}", ports: [{{port: {api_port}}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: site, namespace: t}}
spec:
  parentRefs: [{{name: edge}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /}}}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{{name: X-Header-Set, value: set-by-gateway}}]
        add: [{{name: X-Header-Add, value: added-by-gateway}}]
        remove: [X-Header-Remove]
    - type: ResponseHeaderModifier
      responseHeaderModifier: {{set: [{{name: X-Served-By, value: tollgate}}]}}
    backendRefs: [{{name: web, port: {web_port}}}]
  - matches: [{{path: {{type: PathPrefix, value: /api}}, headers: [{{name: x-api, value: "yes"}}]}}]
    backendRefs: [{{name: api, port: {api_port}}}]
"#,
        web_ip = web.ip(),
        web_port = web.port(),
        api_ip = api.ip(),
        api_port = api.port(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_httproute_no_product_targets_is_served_open_rule_by_rule() {
    let web = Upstream::start().await;
    let api = Upstream::start().await;
    let dir = TempDir::new("gateway-api-open");
    dir.write("all.yaml", &open_route(web.addr, api.addr));
    let proxy = Proxy::start(dir.path()).await;
    let c = client();

    // No key needed; each rule goes to its own Service, with its header filters applied.
    let home = send(
        &c,
        "GET",
        &proxy.url("/index.html"),
        &[
            ("x-header-set", "from-client"),
            ("x-header-add", "from-client"),
            ("x-header-remove", "from-client"),
        ],
    )
    .await;
    assert_eq!(home.status, 200, "{}", home.text());
    let seen = &home.json()["headers"];
    assert_eq!(
        seen["x-header-set"],
        serde_json::json!(["set-by-gateway"]),
        "{seen}"
    );
    assert_eq!(
        seen["x-header-add"],
        serde_json::json!(["from-client", "added-by-gateway"]),
        "{seen}"
    );
    assert!(seen.get("x-header-remove").is_none(), "{seen}");
    // As a Gateway forwards HTTPRoute traffic: the client's Host, not the backend's address.
    let url = proxy.url("/");
    let client_host = url.trim_start_matches("http://").trim_end_matches('/');
    assert_eq!(seen["host"], serde_json::json!([client_host]), "{seen}");
    assert_eq!(home.header("x-served-by"), Some("tollgate"));
    assert_eq!((web.count(), api.count()), (1, 0));
    let call = send(&c, "GET", &proxy.url("/api/v1"), &[("x-api", "yes")]).await;
    assert_eq!(call.status, 200, "{}", call.text());
    assert_eq!(call.json()["path"], "/api/v1", "{}", call.text());
    assert_eq!((web.count(), api.count()), (1, 1));
    // Without the header the header-matched rule does not apply: the `/` rule serves it.
    let other = send(&c, "GET", &proxy.url("/api/v1"), &[]).await;
    assert_eq!(other.status, 200, "{}", other.text());
    assert_eq!((web.count(), api.count()), (2, 1));
}

/// The Gateway of [`GATEWAY`], a Service `web` standing for `web`, and an HTTPRoute `site` with
/// `rules` (YAML list items; `PORT` is `web`'s port).
fn site(web: SocketAddr, rules: &str) -> String {
    format!(
        r#"{GATEWAY}apiVersion: v1
kind: Service
metadata: {{name: web, namespace: t}}
spec: {{type: ExternalName, externalName: "{ip}", ports: [{{port: {port}}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: site, namespace: t}}
spec:
  parentRefs: [{{name: edge}}]
  rules:
{rules}"#,
        ip = web.ip(),
        port = web.port(),
        rules = rules.replace("PORT", &web.port().to_string()),
    )
}

/// An HTTPRoute whose rules have nothing to send to (no backendRefs, weight 0, a Service that
/// does not exist) next to one that resolves: the Gateway API's 500 for the former, while the
/// latter keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_without_a_backend_answer_500_and_the_others_keep_serving() {
    let web = Upstream::start().await;
    let dir = TempDir::new("gateway-api-no-backend");
    dir.write(
        "all.yaml",
        &site(
            web.addr,
            "  - matches: [{path: {type: Exact, value: /omitted}}]
  - matches: [{path: {type: Exact, value: /weightless}}]
    backendRefs: [{name: web, port: PORT, weight: 0}]
  - matches: [{path: {type: Exact, value: /missing}}]
    backendRefs: [{name: missing, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: web, port: PORT}]
",
        ),
    );
    let proxy = Proxy::start(dir.path()).await;
    let c = client();
    for path in ["/omitted", "/weightless", "/missing"] {
        let r = send(&c, "GET", &proxy.url(path), &[]).await;
        assert_eq!(r.status, 500, "{path}: {}", r.text());
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{path}"
        );
        assert!(
            r.json()["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("/no-backend")),
            "{path}: {}",
            r.text()
        );
    }
    assert_eq!(
        web.count(),
        0,
        "nothing was forwarded for rules without a backend"
    );
    let home = send(&c, "GET", &proxy.url("/index.html"), &[]).await;
    assert_eq!(home.status, 200, "{}", home.text());
    assert_eq!(web.count(), 1);
}

/// RequestRedirect rules answered by the gateway with the status and `Location` the Gateway API
/// asks for, nothing forwarded; the route's other rule still reaches its backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_redirect_rules_are_answered_by_the_gateway() {
    let web = Upstream::start().await;
    let dir = TempDir::new("gateway-api-redirect");
    dir.write(
        "all.yaml",
        &site(
            web.addr,
            "  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org}}]
    backendRefs: [{name: web, port: PORT}]
  - matches: [{path: {type: PathPrefix, value: /secure}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]
  - matches: [{path: {type: PathPrefix, value: /docs}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /manual}}}]
  - matches: [{path: {type: PathPrefix, value: /legacy}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /}, statusCode: 308}}]
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: web, port: PORT}]
",
        ),
    );
    let proxy = Proxy::start(dir.path()).await;
    let c = client();
    let authority = proxy.url("/");
    let authority = authority
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let port = authority.rsplit_once(':').expect("port").1;

    // The hostname replaced; the scheme, the port the client used, the path and query kept.
    let moved = send(&c, "GET", &proxy.url("/old/page?x=1"), &[]).await;
    assert_eq!(moved.status, 302, "{}", moved.text());
    assert_eq!(
        moved.header("location"),
        Some(format!("http://example.org:{port}/old/page?x=1").as_str())
    );
    // A new scheme: its well-known port, left out.
    let secure = send(&c, "GET", &proxy.url("/secure/login"), &[]).await;
    assert_eq!(secure.status, 301, "{}", secure.text());
    assert_eq!(
        secure.header("location"),
        Some(
            format!(
                "https://{}/secure/login",
                authority.rsplit_once(':').expect("host").0
            )
            .as_str()
        )
    );
    // A redirect path: the matched prefix replaced, or the whole path; the query kept.
    let docs = send(&c, "GET", &proxy.url("/docs/intro?v=2"), &[]).await;
    assert_eq!(docs.status, 302, "{}", docs.text());
    assert_eq!(
        docs.header("location"),
        Some(format!("http://{authority}/manual/intro?v=2").as_str())
    );
    let legacy = send(&c, "GET", &proxy.url("/legacy/a/b"), &[]).await;
    assert_eq!(legacy.status, 308, "{}", legacy.text());
    assert_eq!(
        legacy.header("location"),
        Some(format!("http://{authority}/").as_str())
    );
    assert_eq!(web.count(), 0, "a redirect forwards nothing");
    let home = send(&c, "GET", &proxy.url("/index.html"), &[]).await;
    assert_eq!(home.status, 200, "{}", home.text());
    assert_eq!(web.count(), 1);
}

/// A rule's `URLRewrite` hostname is the `Host` its backend gets; the route's other rule
/// forwards the client's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_rewrite_hostname_is_the_host_the_backend_gets() {
    let web = Upstream::start().await;
    let dir = TempDir::new("gateway-api-host-rewrite");
    dir.write(
        "all.yaml",
        &site(
            web.addr,
            "  - matches: [{path: {type: PathPrefix, value: /internal}}]
    filters: [{type: URLRewrite, urlRewrite: {hostname: internal.example}}]
    backendRefs: [{name: web, port: PORT}]
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: web, port: PORT}]
",
        ),
    );
    let proxy = Proxy::start(dir.path()).await;
    let c = client();
    let rewritten = send(
        &c,
        "GET",
        &proxy.url("/internal/a"),
        &[("host", "shop.example")],
    )
    .await;
    assert_eq!(rewritten.status, 200, "{}", rewritten.text());
    assert_eq!(
        rewritten.echoed_header("host").as_deref(),
        Some("internal.example")
    );
    assert_eq!(
        rewritten.echoed_header("x-forwarded-host").as_deref(),
        Some("shop.example"),
        "the client's Host is still told"
    );
    let kept = send(&c, "GET", &proxy.url("/a"), &[("host", "shop.example")]).await;
    assert_eq!(kept.echoed_header("host").as_deref(), Some("shop.example"));
}

/// HTTPRoute `CORS` filters, as the Gateway API defines them: preflights answered by the
/// gateway (nothing forwarded) for exact and `*.` origins, `*` methods naming the requested one,
/// `*` origin and headers with credentials echoing the request's; actual requests forwarded with
/// the origin allowed; an origin not allowed gets no `Access-Control-Allow-Origin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_filters_answer_preflights_and_mark_actual_requests() {
    let web = Upstream::start().await;
    let dir = TempDir::new("gateway-api-cors");
    dir.write(
        "all.yaml",
        &site(
            web.addr,
            r#"  - matches: [{path: {type: PathPrefix, value: /listed}}]
    filters:
    - type: CORS
      cors:
        allowOrigins: ["https://www.foo.com", "https://*.bar.com"]
        allowMethods: [GET, OPTIONS]
        allowHeaders: [x-header-1, x-header-2]
        exposeHeaders: [x-header-3]
        allowCredentials: true
        maxAge: 3600
    backendRefs: [{name: web, port: PORT}]
  - matches: [{path: {type: PathPrefix, value: /wild}}]
    filters:
    - type: CORS
      cors: {allowOrigins: ["*"], allowMethods: ["*"], allowHeaders: ["*"], allowCredentials: true}
    backendRefs: [{name: web, port: PORT}]
"#,
        ),
    );
    let proxy = Proxy::start(dir.path()).await;
    let c = client();
    let preflight = |path: &'static str, origin: &'static str, method: &'static str| {
        let c = c.clone();
        let url = proxy.url(path);
        async move {
            send(
                &c,
                "OPTIONS",
                &url,
                &[
                    ("origin", origin),
                    ("access-control-request-method", method),
                    ("access-control-request-headers", "x-header-1, x-header-2"),
                ],
            )
            .await
        }
    };
    for origin in ["https://www.foo.com", "https://xpto.www.bar.com"] {
        let r = preflight("/listed", origin, "GET").await;
        assert_eq!(r.status, 204, "{origin}: {}", r.text());
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        assert_eq!(
            r.header("access-control-allow-methods"),
            Some("GET, OPTIONS")
        );
        assert_eq!(
            r.header("access-control-allow-headers"),
            Some("x-header-1, x-header-2")
        );
        assert_eq!(
            r.header("access-control-expose-headers"),
            Some("x-header-3")
        );
        assert_eq!(r.header("access-control-max-age"), Some("3600"));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    }
    for origin in ["https://bar.com", "https://foobar.com"] {
        let r = preflight("/listed", origin, "GET").await;
        assert_eq!(r.status, 204, "{origin}");
        assert_eq!(r.header("access-control-allow-origin"), None, "{origin}");
    }
    let r = preflight("/wild", "https://other.foo.com", "PUT").await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://other.foo.com"),
        "a wildcard with credentials names the origin, never *"
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("PUT"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("x-header-1, x-header-2")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(web.count(), 0, "preflights are answered by the gateway");

    let actual = send(
        &c,
        "GET",
        &proxy.url("/listed/a"),
        &[("origin", "https://www.bar.com")],
    )
    .await;
    assert_eq!(actual.status, 200, "{}", actual.text());
    assert_eq!(
        actual.header("access-control-allow-origin"),
        Some("https://www.bar.com")
    );
    assert_eq!(
        actual.header("access-control-allow-credentials"),
        Some("true")
    );
    let other = send(
        &c,
        "GET",
        &proxy.url("/listed/a"),
        &[("origin", "https://foobar.com")],
    )
    .await;
    assert_eq!(other.status, 200);
    assert_eq!(other.header("access-control-allow-origin"), None);
    assert_eq!(web.count(), 2);
}

/// Gateways with addresses of their own (`--gateway-address-pool` + `--gateway-sockets`): each
/// Gateway is served on its address at each of its listeners' ports, and a connection there is
/// routed only among the routes attached to that Gateway port. Two Gateways on one port stay
/// apart, as do two ports of one Gateway; nothing of theirs answers on `--listen`; a Gateway
/// removed from the manifests closes its socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_gateway_is_served_on_its_own_address_and_ports() {
    let (web1, web2, web3) = (
        Upstream::start().await,
        Upstream::start().await,
        Upstream::start().await,
    );
    let (p1, p2) = (free_port(), free_port());
    // Loopback addresses of their own (all of 127/8 is local on Linux).
    let (one, two) = ("127.77.0.1", "127.77.0.2");
    let service = |name: &str, up: &Upstream| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: t}}\nspec: {{type: ExternalName, externalName: \"{}\", ports: [{{port: {}}}]}}\n---\n",
            up.addr.ip(),
            up.addr.port()
        )
    };
    let route = |name: &str, parents: &str, path: &str, backend: &str, up: &Upstream| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: t}}\nspec:\n  parentRefs: {parents}\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    backendRefs: [{{name: {backend}, port: {}}}]\n---\n",
            up.addr.port()
        )
    };
    let class = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: tollgate}\nspec: {controllerName: tollgate.dev/gateway-controller}\n---\n";
    let gateway_one = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: one, namespace: t, creationTimestamp: \"2026-01-01T00:00:00Z\"}}\nspec:\n  gatewayClassName: tollgate\n  listeners:\n  - {{name: a, protocol: HTTP, port: {p1}, hostname: foo.com}}\n  - {{name: b, protocol: HTTP, port: {p2}, hostname: foo.com}}\n  - {{name: c, protocol: HTTP, port: {p2}, hostname: bar.com}}\n---\n"
    );
    let gateway_two = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: two, namespace: t, creationTimestamp: \"2026-01-02T00:00:00Z\"}}\nspec:\n  gatewayClassName: tollgate\n  listeners: [{{name: http, protocol: HTTP, port: {p1}}}]\n---\n"
    );
    let common = format!(
        "{class}{gateway_one}{}{}{}{}{}{}",
        service("web1", &web1),
        service("web2", &web2),
        service("web3", &web3),
        route(
            "first-port",
            &format!("[{{name: one, port: {p1}}}]"),
            "/",
            "web1",
            &web1
        ),
        route(
            "second-port",
            &format!("[{{name: one, port: {p2}}}]"),
            "/",
            "web2",
            &web2
        ),
        route(
            "shared",
            "[{name: one}, {name: two}]",
            "/shared",
            "web1",
            &web1
        ),
    );
    let dir = TempDir::new("gateway-api-sockets");
    dir.write(
        "all.yaml",
        &format!(
            "{common}{gateway_two}{}",
            route("on-two", "[{name: two}]", "/", "web3", &web3)
        ),
    );
    // Gateway two's port is taken when the proxy starts: the socket fails, is said so, and
    // opens once the port is free (retried every few seconds).
    let blocker = std::net::TcpListener::bind((two, p1)).expect("hold two's port");
    let proxy = Proxy::start_with(
        dir.path(),
        &[
            "--gateway-sockets",
            "--gateway-address-pool",
            "127.77.0.1,127.77.0.2",
        ],
    )
    .await;
    let c = client();
    let at = |address: &str, port: u16, path: &str| format!("http://{address}:{port}{path}");
    let said = eventually(Duration::from_secs(10), || {
        let log = proxy.log.clone();
        async move {
            log.lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains("cannot open a Gateway socket")
        }
    })
    .await;
    assert!(said, "the taken port was not reported");
    drop(blocker);
    let open = eventually(Duration::from_secs(15), || {
        let (c, url) = (c.clone(), at(two, p1, "/"));
        async move {
            tokio::net::TcpStream::connect((two, p1)).await.is_ok()
                && send(&c, "GET", &url, &[]).await.status == 200
        }
    })
    .await;
    assert!(
        open,
        "Gateway two's socket never answered; log:\n{}",
        proxy.log.lock().unwrap_or_else(|e| e.into_inner())
    );
    assert_eq!(web3.count(), 1, "two's own route");

    let cases = [
        (one, p1, "foo.com", "/x", 200, "first-port"),
        (one, p2, "foo.com", "/x", 200, "second-port"),
        (one, p2, "bar.com", "/x", 200, "second-port"),
        (
            one,
            p1,
            "bar.com",
            "/x",
            404,
            "no listener of one on p1 takes bar.com",
        ),
        (two, p1, "bar.com", "/x", 200, "on-two"),
        (two, p1, "foo.com", "/shared/y", 200, "shared, through two"),
        (one, p1, "foo.com", "/shared/y", 200, "shared, through one"),
        (
            one,
            p2,
            "foo.com",
            "/shared/y",
            200,
            "shared, through one's second port",
        ),
    ];
    for (address, port, host, path, status, what) in cases {
        let r = send(&c, "GET", &at(address, port, path), &[("host", host)]).await;
        assert_eq!(r.status, status, "{what}: {}", r.text());
    }
    assert_eq!(
        (web1.count(), web2.count(), web3.count()),
        (4, 2, 2),
        "each request reached the backend of its Gateway port"
    );
    let own = send(&c, "GET", &proxy.url("/x"), &[("host", "foo.com")]).await;
    assert_eq!(own.status, 404, "Gateway routes are not served on --listen");

    // Gateway two leaves the manifests: its socket closes; one keeps serving.
    dir.write("all.yaml", &common);
    let closed = eventually(Duration::from_secs(15), || async move {
        tokio::net::TcpStream::connect((two, p1)).await.is_err()
    })
    .await;
    assert!(closed, "Gateway two's socket is still open");
    let r = send(&c, "GET", &at(one, p1, "/x"), &[("host", "foo.com")]).await;
    assert_eq!(r.status, 200);
}

/// A rule's `timeouts` bound the time its backend has to answer (504 past it, 200 within), and
/// another rule of the route keeps the default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_timeouts_bound_the_backends_answer() {
    let web = Upstream::start().await;
    let dir = TempDir::new("gateway-api-timeouts");
    dir.write(
        "all.yaml",
        &site(
            web.addr,
            "  - matches: [{path: {type: PathPrefix, value: /quick}}]
    backendRefs: [{name: web, port: PORT}]
    timeouts: {request: 2s, backendRequest: 300ms}
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: web, port: PORT}]
",
        ),
    );
    let proxy = Proxy::start(dir.path()).await;
    let c = client();
    let slow = [("x-echo-sleep-ms", "1000")];
    let late = send(&c, "GET", &proxy.url("/quick/a"), &slow).await;
    assert_eq!(late.status, 504, "{}", late.text());
    let soon = send(
        &c,
        "GET",
        &proxy.url("/quick/a"),
        &[("x-echo-sleep-ms", "50")],
    )
    .await;
    assert_eq!(soon.status, 200, "{}", soon.text());
    let other = send(&c, "GET", &proxy.url("/other"), &slow).await;
    assert_eq!(other.status, 200, "the default 30 s: {}", other.text());
}

/// Weighted backendRefs split a rule's requests in proportion (70/30 over 100 requests is
/// exactly 70 and 30: the schedule is deterministic), the weight-0 one gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_backend_refs_split_requests_in_proportion() {
    let (v1, v2, v3) = (
        Upstream::start().await,
        Upstream::start().await,
        Upstream::start().await,
    );
    let service = |name: &str, up: &Upstream| {
        format!(
            "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: t}}
spec: {{type: ExternalName, externalName: \"{ip}\", ports: [{{port: {port}}}]}}
---
",
            ip = up.addr.ip(),
            port = up.addr.port()
        )
    };
    let dir = TempDir::new("gateway-api-weights");
    dir.write(
        "all.yaml",
        &format!(
            "{GATEWAY}{}{}{}apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: split, namespace: t}}
spec:
  parentRefs: [{{name: edge}}]
  rules:
  - backendRefs:
    - {{name: v1, port: {}, weight: 70}}
    - {{name: v2, port: {}, weight: 30}}
    - {{name: v3, port: {}, weight: 0}}
",
            service("v1", &v1),
            service("v2", &v2),
            service("v3", &v3),
            v1.addr.port(),
            v2.addr.port(),
            v3.addr.port(),
        ),
    );
    let proxy = Proxy::start(dir.path()).await;
    let c = client();
    for i in 0..100 {
        let r = send(&c, "GET", &proxy.url(&format!("/item/{i}")), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!((v1.count(), v2.count(), v3.count()), (70, 30, 0));
}

/// The README's walk-through, `examples/gateway-api/`, as written (only the backend's loopback
/// port is replaced by this test's upstream): keys and plans on the targeted HTTPRoute, the
/// untargeted one open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_api_example_runs_as_the_readme_says() {
    let upstream = Upstream::start().await;
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/gateway-api");
    let dir = TempDir::new("gateway-api-example");
    let mut files = 0;
    for entry in std::fs::read_dir(&example).expect("examples/gateway-api") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let text = text.replace("port: 9000", &format!("port: {}", upstream.addr.port()));
        dir.write(
            path.file_name().and_then(|n| n.to_str()).expect("name"),
            &text,
        );
        files += 1;
    }
    assert!(files >= 3, "the example's manifests were not found");
    let proxy = Proxy::start(dir.path()).await;
    let c = client();
    let key = [("x-subscription-key", "acme-weather-key-0123456789")];

    let current = send(&c, "GET", &proxy.url("/current"), &key).await;
    assert_eq!(current.status, 200, "{}", current.text());
    send(&c, "GET", &proxy.url("/current"), &[])
        .await
        .assert_problem(401, "missing-key");
    send(&c, "GET", &proxy.url("/forecast/week"), &key)
        .await
        .assert_problem(403, "route-not-in-plan");
    let health = send(&c, "GET", &proxy.url("/healthz"), &[]).await;
    assert_eq!(
        health.status,
        200,
        "the untargeted route is open: {}",
        health.text()
    );
    // The Gateway's policy (`policy.yaml`) reaches both HTTPRoutes.
    for answer in [&current, &health] {
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    }
    assert_eq!(upstream.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_policies_attach_to_a_gateway_and_to_one_rule_of_an_httproute() {
    let web = Upstream::start().await;
    let dir = TempDir::new("gateway-api-policies");
    let rules = "  - name: home
    matches: [{path: {type: PathPrefix, value: /}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: X-Env, value: from-the-rule}]}
    backendRefs: [{name: web, port: PORT}]
  - name: admin
    matches: [{path: {type: PathPrefix, value: /admin}}]
    backendRefs: [{name: web, port: PORT}]
";
    let policies = "---
apiVersion: tollgate.dev/v1alpha1
kind: ApiPolicy
metadata: {name: platform, namespace: t}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
  headers:
    request: {set: {X-Env: from-the-gateway}, add: {X-Via: tollgate}}
    response: {set: {X-Platform: 'on'}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiPolicy
metadata: {name: admins-only, namespace: t}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: site, sectionName: admin}]
  ipFilter: {allow: [10.0.0.0/8]}
";
    dir.write("all.yaml", &format!("{}{policies}", site(web.addr, rules)));
    let proxy = Proxy::start(dir.path()).await;
    let c = client();

    // The Gateway's policy reaches both rules: its added header and its response header. The
    // rule's own header filter is more specific, so its X-Env wins over the Gateway's.
    let home = send(&c, "GET", &proxy.url("/index.html"), &[]).await;
    assert_eq!(home.status, 200, "{}", home.text());
    let seen = &home.json()["headers"];
    assert_eq!(
        seen["x-env"],
        serde_json::json!(["from-the-rule"]),
        "{seen}"
    );
    assert_eq!(seen["x-via"], serde_json::json!(["tollgate"]), "{seen}");
    assert_eq!(home.header("x-platform"), Some("on"));
    assert_eq!(web.count(), 1);

    // The rule's policy admits only 10.0.0.0/8: this loopback caller is refused at /admin,
    // before the backend.
    let admin = send(&c, "GET", &proxy.url("/admin/users"), &[]).await;
    admin.assert_problem(403, "ip-denied");
    assert_eq!(web.count(), 1, "a refused call is not forwarded");
    // The other rule is not under that policy.
    let again = send(&c, "GET", &proxy.url("/"), &[]).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(web.count(), 2);
}
