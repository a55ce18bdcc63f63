//! CORS over real sockets: preflights answered by the gateway from the policy, CORS headers on
//! actual requests (backend answers and problem answers), and `Authorization` stripping.

mod support;

use support::*;

const WEB_KEY: &str = "web-key-0123456789";
const HOURLY_KEY: &str = "web-hourly-key-0123456789";
const APP: &str = "https://app.example";

fn manifests(upstream: &str) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {{name: web, namespace: t}}
spec:
  basePath: /web
  backend: {{url: "{upstream}"}}
  routes:
    - {{name: items, path: /items, methods: [GET, POST]}}
    - {{name: any, path: /any}}
  policies: [cors-strict, headers]
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiPolicy
metadata: {{name: cors-strict, namespace: t}}
spec:
  cors:
    allowOrigins: ["{APP}", "https://other.example"]
    allowHeaders: [Content-Type, X-Trace]
    exposeHeaders: [X-Request-Id, RateLimit-Remaining]
    allowCredentials: true
    maxAge: 600
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiPolicy
metadata: {{name: headers, namespace: t}}
spec:
  headers:
    response:
      set: {{X-Frame-Options: DENY}}
---
apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {{name: public, namespace: t}}
spec:
  basePath: /public
  backend: {{url: "{upstream}"}}
  subscriptionRequired: false
  routes:
    - {{name: all, path: /}}
  policies: [cors-any]
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiPolicy
metadata: {{name: cors-any, namespace: t}}
spec:
  cors:
    allowOrigins: ["*"]
    allowMethods: [GET]
---
apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {{name: plain, namespace: t}}
spec:
  basePath: /plain
  backend: {{url: "{upstream}"}}
  subscriptionRequired: false
  routes:
    - {{name: all, path: /}}
---
apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {{name: passauth, namespace: t}}
spec:
  basePath: /passauth
  backend: {{url: "{upstream}"}}
  subscriptionRequired: false
  routes:
    - {{name: all, path: /}}
  policies: [pass-authorization]
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiPolicy
metadata: {{name: pass-authorization, namespace: t}}
spec:
  forwardAuthorization: true
---
apiVersion: tollgate.dev/v1alpha1
kind: Plan
metadata: {{name: web-gold, namespace: t}}
spec:
  product: web
---
apiVersion: tollgate.dev/v1alpha1
kind: Plan
metadata: {{name: web-hourly, namespace: t}}
spec:
  product: web
  rateLimit: {{requests: 1, period: 1h}}
---
apiVersion: tollgate.dev/v1alpha1
kind: Subscription
metadata: {{name: webber, namespace: t}}
spec:
  plan: web-gold
  subscriber: {{name: webber}}
  keys: {{secretRef: {{name: webber-keys}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: webber-keys, namespace: t}}
stringData:
  primaryKey: {WEB_KEY}
---
apiVersion: tollgate.dev/v1alpha1
kind: Subscription
metadata: {{name: hourly, namespace: t}}
spec:
  plan: web-hourly
  subscriber: {{name: hourly}}
  keys: {{secretRef: {{name: hourly-keys}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: hourly-keys, namespace: t}}
stringData:
  primaryKey: {HOURLY_KEY}
"#
    )
}

struct Env {
    gateway: tollgate_proxy::Gateway,
    upstream: Upstream,
    client: HttpClient,
    _dir: TempDir,
}

impl Env {
    async fn start(tag: &str) -> Env {
        let upstream = Upstream::start().await;
        let dir = TempDir::new(tag);
        dir.write("api.yaml", &manifests(&upstream.url()));
        let gateway = start_gateway(dir.path()).await;
        assert!(
            gateway.shared().runtime.load().is_some(),
            "the manifests load"
        );
        Env {
            gateway,
            upstream,
            client: client(),
            _dir: dir,
        }
    }

    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> TestResponse {
        let url = format!("http://{}{path}", self.gateway.proxy_addr());
        send(&self.client, method, &url, headers).await
    }
}

fn vary(r: &TestResponse) -> Vec<String> {
    r.headers
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect()
}

fn cors_headers(r: &TestResponse) -> Vec<String> {
    r.headers
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

#[tokio::test]
async fn preflight_from_an_allowed_origin_is_answered_by_the_gateway() {
    let env = Env::start("cors-preflight").await;
    let r = env
        .send(
            "OPTIONS",
            "/web/items/42",
            &[
                ("origin", APP),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "Content-Type, X-Trace"),
            ],
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty());
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type, x-trace")
    );
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let v = vary(&r);
    for token in [
        "origin",
        "access-control-request-method",
        "access-control-request-headers",
    ] {
        assert!(v.iter().any(|t| t == token), "Vary {v:?} lacks {token}");
    }
    assert!(r.header("x-request-id").is_some());
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "response policy");
    // A route taking any method names the one asked for.
    let r = env
        .send(
            "OPTIONS",
            "/web/any",
            &[("origin", APP), ("access-control-request-method", "PATCH")],
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-methods"), Some("PATCH"));
    assert_eq!(env.upstream.count(), 0, "preflights are never forwarded");
}

#[tokio::test]
async fn refused_preflights_get_no_allow_headers_and_are_not_forwarded() {
    let env = Env::start("cors-refused").await;
    let cases: [&[(&str, &str)]; 2] = [
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "GET"),
        ],
        &[
            ("origin", APP),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "x-trace, x-secret"),
        ],
    ];
    for headers in cases {
        let r = env.send("OPTIONS", "/web/items", headers).await;
        assert_eq!(r.status, 204, "{headers:?}");
        assert_eq!(
            cors_headers(&r),
            Vec::<String>::new(),
            "{headers:?}: {:?}",
            r.headers
        );
        assert!(vary(&r).iter().any(|t| t == "origin"));
    }
    // DELETE matches no route on /web/items, so that preflight goes the normal way: 405, no
    // CORS headers; the browser's check fails just the same.
    let r = env
        .send(
            "OPTIONS",
            "/web/items",
            &[("origin", APP), ("access-control-request-method", "DELETE")],
        )
        .await;
    r.assert_problem(405, "method-not-allowed");
    assert!(cors_headers(&r).is_empty());
    assert_eq!(env.upstream.count(), 0);
}

#[tokio::test]
async fn preflight_for_a_product_without_cors_goes_through_the_pipeline() {
    let env = Env::start("cors-none").await;
    let r = env
        .send(
            "OPTIONS",
            "/plain/x",
            &[("origin", APP), ("access-control-request-method", "PUT")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["method"], "OPTIONS", "forwarded as before");
    assert_eq!(r.echoed_header("origin").as_deref(), Some(APP));
    assert!(cors_headers(&r).is_empty());
    assert_eq!(env.upstream.count(), 1);
}

#[tokio::test]
async fn actual_requests_get_cors_headers_only_for_allowed_origins() {
    let env = Env::start("cors-actual").await;
    let r = env
        .send(
            "GET",
            "/web/items",
            &[("x-subscription-key", WEB_KEY), ("origin", APP)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("ratelimit-remaining, x-request-id")
    );
    assert!(vary(&r).iter().any(|t| t == "origin"));
    assert!(r.header("access-control-allow-methods").is_none());
    assert_eq!(r.echoed_header("origin").as_deref(), Some(APP));

    // Another origin: served (the request is not altered) but without CORS headers.
    let r = env
        .send(
            "GET",
            "/web/items",
            &[
                ("x-subscription-key", WEB_KEY),
                ("origin", "https://evil.example"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(cors_headers(&r).is_empty(), "{:?}", r.headers);
    assert!(vary(&r).iter().any(|t| t == "origin"));
    assert_eq!(
        r.echoed_header("origin").as_deref(),
        Some("https://evil.example")
    );

    // No Origin at all (not a browser): no CORS headers, still Vary: Origin for caches.
    let r = env
        .send("GET", "/web/items", &[("x-subscription-key", WEB_KEY)])
        .await;
    assert_eq!(r.status, 200);
    assert!(cors_headers(&r).is_empty());
    assert!(vary(&r).iter().any(|t| t == "origin"));
    assert_eq!(env.upstream.count(), 3);
}

#[tokio::test]
async fn problem_answers_carry_cors_headers_so_browsers_can_read_them() {
    let env = Env::start("cors-problems").await;
    let r = env.send("GET", "/web/items", &[("origin", APP)]).await;
    r.assert_problem(401, "missing-key");
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));

    let headers = [("x-subscription-key", HOURLY_KEY), ("origin", APP)];
    assert_eq!(env.send("GET", "/web/items", &headers).await.status, 200);
    let r = env.send("GET", "/web/items", &headers).await;
    r.assert_problem(429, "rate-limited");
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert!(vary(&r).iter().any(|t| t == "origin"));

    let r = env
        .send("GET", "/web/items", &[("origin", "https://evil.example")])
        .await;
    r.assert_problem(401, "missing-key");
    assert!(cors_headers(&r).is_empty());
}

#[tokio::test]
async fn wildcard_policy_answers_star_without_credentials() {
    let env = Env::start("cors-star").await;
    let r = env
        .send(
            "OPTIONS",
            "/public/x",
            &[
                ("origin", "https://anyone.example"),
                ("access-control-request-method", "GET"),
            ],
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET"));
    assert!(r.header("access-control-allow-credentials").is_none());
    // The policy allows only GET, although the route takes any method.
    let r = env
        .send(
            "OPTIONS",
            "/public/x",
            &[
                ("origin", "https://anyone.example"),
                ("access-control-request-method", "PUT"),
            ],
        )
        .await;
    assert_eq!(r.status, 204);
    assert!(cors_headers(&r).is_empty(), "{:?}", r.headers);
    let r = env
        .send(
            "GET",
            "/public/x",
            &[("origin", "https://anyone.example"), ("cookie", "a=b")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(r.header("access-control-allow-credentials").is_none());
    assert_eq!(env.upstream.count(), 1);
}

#[tokio::test]
async fn authorization_is_stripped_unless_a_policy_forwards_it() {
    let env = Env::start("cors-authz").await;
    let auth = [("authorization", "Basic dXNlcjpwYXNz")];
    let r = env.send("GET", "/plain/x", &auth).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed_header("authorization"), None);
    let r = env.send("GET", "/passauth/x", &auth).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.echoed_header("authorization").as_deref(),
        Some("Basic dXNlcjpwYXNz")
    );
}
