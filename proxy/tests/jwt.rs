//! JWT bearer tokens over real sockets: a real JWKS endpoint on loopback, the gateway
//! in-process from a directory of manifests, and the attack set of issue 3.

mod support;

use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::json;
use support::jwt::*;
use support::*;
use tollgate_proxy::jwt::JwksSettings;
use tollgate_proxy::Gateway;

const ISSUER: &str = "https://issuer.test";
const ACME_KEY: &str = "acme-jwt-key-0123456789";

/// Products `weather` (subscription required, jwt policy `auth` with a write scope on POST),
/// `open` (no subscription, same policy) and `inline` (inline JWKS), with plans and two
/// token-mapped subscriptions.
fn manifests(upstream: &str, jwks_uri: &str, inline_jwks: &str) -> String {
    let inline = serde_json::to_string(inline_jwks).expect("json string");
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {{name: weather, namespace: t}}
spec:
  basePath: /weather
  backend: {{url: "{upstream}"}}
  routes:
    - {{name: current, path: /current, methods: [GET]}}
    - {{name: alerts, path: /alerts, methods: [GET, POST]}}
  policies: [auth]
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiPolicy
metadata: {{name: auth, namespace: t}}
spec:
  jwt:
    issuers: [{{issuer: "{ISSUER}", jwksUri: "{jwks_uri}", audiences: [weather]}}]
    clockSkew: 30s
    requiredScopes:
      - {{methods: [POST, PUT, PATCH, DELETE], scopes: [weather.write]}}
---
apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {{name: open, namespace: t}}
spec:
  basePath: /open
  backend: {{url: "{upstream}"}}
  subscriptionRequired: false
  routes:
    - {{name: any, path: /}}
  policies: [auth]
---
apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {{name: inline, namespace: t}}
spec:
  basePath: /inline
  backend: {{url: "{upstream}"}}
  subscriptionRequired: false
  routes:
    - {{name: any, path: /}}
  policies: [inline-auth]
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiPolicy
metadata: {{name: inline-auth, namespace: t}}
spec:
  jwt:
    issuers: [{{issuer: "{ISSUER}", jwks: {inline}}}]
---
apiVersion: tollgate.dev/v1alpha1
kind: Plan
metadata: {{name: gold, namespace: t}}
spec:
  product: weather
---
apiVersion: tollgate.dev/v1alpha1
kind: Plan
metadata: {{name: limited, namespace: t}}
spec:
  product: weather
  rateLimit: {{requests: 2, period: 1h}}
---
apiVersion: tollgate.dev/v1alpha1
kind: Subscription
metadata: {{name: acme, namespace: t}}
spec:
  plan: gold
  subscriber: {{name: Acme}}
  jwtSubjects: [client-acme]
  keys: {{secretRef: {{name: acme-keys}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: acme-keys, namespace: t}}
stringData: {{primaryKey: {ACME_KEY}}}
---
apiVersion: tollgate.dev/v1alpha1
kind: Subscription
metadata: {{name: limited, namespace: t}}
spec:
  plan: limited
  subscriber: {{name: Limited}}
  jwtSubjects: [client-limited]
  keys: {{secretRef: {{name: limited-keys}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: limited-keys, namespace: t}}
stringData: {{primaryKey: limited-jwt-key-0123456789}}
"#
    )
}

struct Setup {
    gw: Gateway,
    upstream: Upstream,
    jwks: JwksServer,
    rsa: Signer,
    _dir: TempDir,
}

/// Test timings: refetch on unknown kid at most once a second, stale keys trusted 1 s past freshness.
fn settings() -> JwksSettings {
    JwksSettings {
        fetch_timeout: Duration::from_secs(2),
        min_refresh: Duration::from_millis(100),
        retry_after_failure: Duration::from_millis(100),
        unknown_kid_interval: Duration::from_secs(1),
        max_stale: Duration::from_secs(1),
        ..JwksSettings::default()
    }
}

async fn setup(tag: &str, max_age: u64) -> Setup {
    let rsa = Signer::rsa("rsa-1", RSA1_PEM, Algorithm::RS256);
    let es = Signer::es256("ec-1");
    let ed = Signer::eddsa("ed-1");
    let ps = Signer::rsa("rsa-ps", RSA2_PEM, Algorithm::PS256);
    let jwks = JwksServer::start(jwks(&[&rsa, &es, &ed, &ps]), max_age).await;
    let upstream = Upstream::start().await;
    let dir = TempDir::new(tag);
    dir.write(
        "all.yaml",
        &manifests(&upstream.url(), &jwks.uri(), &support::jwt::jwks(&[&ed])),
    );
    let gw = start_gateway_with(dir.path(), settings()).await;
    assert!(gw.shared().runtime.load().is_some(), "the manifests load");
    Setup {
        gw,
        upstream,
        jwks,
        rsa,
        _dir: dir,
    }
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw.proxy_addr())
    }

    async fn call(&self, method: &str, path: &str, token: Option<&str>) -> TestResponse {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        send(&client(), method, &self.url(path), &headers).await
    }
}

fn claims(sub: &str, scope: &str) -> serde_json::Value {
    json!({
        "iss": ISSUER, "aud": ["other", "weather"], "sub": sub, "scope": scope,
        "iat": now(), "exp": now() + 600, "jti": rand_jti(),
    })
}

/// A unique claim so each token is verified afresh (not served from the token cache).
fn rand_jti() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("jti-{}", N.fetch_add(1, Ordering::SeqCst))
}

fn assert_invalid_token(r: &TestResponse, why: &str) {
    r.assert_problem(401, "invalid-token");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="tollgate", error="invalid_token""#),
        "{why}"
    );
}

#[tokio::test]
async fn the_attack_set_is_refused_with_401_invalid_token() {
    let s = setup("jwt-attacks", 300).await;
    let c = claims("client-acme", "weather.read weather.write");
    let pem = RSA1_PUBLIC_PEM.as_bytes();
    let der = rsa1_public_der();
    let expired =
        json!({"iss": ISSUER, "aud": "weather", "sub": "client-acme", "exp": now() - 120});
    let future = json!({"iss": ISSUER, "aud": "weather", "sub": "client-acme", "exp": now() + 600, "nbf": now() + 300});
    let wrong_iss = json!({"iss": "https://evil.test", "aud": "weather", "sub": "client-acme", "exp": now() + 600});
    let wrong_aud = json!({"iss": ISSUER, "aud": "maps", "sub": "client-acme", "exp": now() + 600});
    let other_key = Signer::rsa("rsa-unknown", RSA2_PEM, Algorithm::RS256);
    let mut escalated = c.clone();
    escalated["sub"] = json!("client-limited");
    let attacks: Vec<(&str, String, &str)> = vec![
        ("alg none", unsigned("rsa-1", &c), "alg none"),
        (
            "HS256 keyed with the RSA public key (PEM)",
            hs256(pem, Some("rsa-1"), &c),
            "symmetric",
        ),
        (
            "HS256 keyed with the RSA public key (DER)",
            hs256(&der, Some("rsa-1"), &c),
            "symmetric",
        ),
        ("HS256 without kid", hs256(pem, None, &c), "symmetric"),
        ("unknown kid", other_key.sign(&c), "key id"),
        (
            "kid of an RSA key, header says ES256",
            s.rsa.sign_claiming("ES256", &c),
            "does not match",
        ),
        ("expired", s.rsa.sign(&expired), "expired"),
        ("nbf in the future", s.rsa.sign(&future), "not valid yet"),
        (
            "wrong issuer",
            s.rsa.sign(&wrong_iss),
            "issuer is not trusted",
        ),
        (
            "wrong audience",
            s.rsa.sign(&wrong_aud),
            "not meant for this API",
        ),
        (
            "tampered payload",
            tamper(&s.rsa.sign(&c), &escalated),
            "signature does not verify",
        ),
        (
            "20 KB token (over the 8 KiB bound)",
            format!("{}{}", s.rsa.sign(&c), "A".repeat(20 * 1024)),
            "larger than 8 KiB",
        ),
        ("garbage", "not.a.token".to_string(), "well-formed"),
    ];
    for (why, token, reason) in &attacks {
        let r = s.call("GET", "/weather/current", Some(token)).await;
        assert_invalid_token(&r, why);
        let detail = r.json()["detail"].as_str().unwrap_or_default().to_string();
        assert!(
            detail.contains(reason),
            "{why}: refused for another reason: {detail}"
        );
        assert!(!r.text().contains(token.as_str()), "{why}: token echoed");
    }
    // The same refusals on the product that needs no subscription.
    for (why, token, _) in &attacks {
        assert_invalid_token(&s.call("GET", "/open/x", Some(token)).await, why);
    }
    // A 100 KB token never reaches token checks: the header section bound (stage 1) refuses
    // the request first, before anything is parsed.
    let huge = format!("{}{}", s.rsa.sign(&c), "A".repeat(100 * 1024));
    s.call("GET", "/weather/current", Some(&huge))
        .await
        .assert_problem(431, "headers-too-large");
    assert_eq!(s.upstream.count(), 0, "nothing was forwarded");
}

#[tokio::test]
async fn missing_token_is_401_without_an_error_attribute() {
    let s = setup("jwt-missing", 300).await;
    let r = s.call("GET", "/weather/current", None).await;
    r.assert_problem(401, "missing-token");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="tollgate""#)
    );
    // A key alone is not enough when the product's policy requires a token too.
    let r = send(
        &client(),
        "GET",
        &s.url("/weather/current"),
        &[("x-subscription-key", ACME_KEY)],
    )
    .await;
    r.assert_problem(401, "missing-token");
    let r = send(
        &client(),
        "GET",
        &s.url("/weather/current"),
        &[("authorization", "Basic YTpi")],
    )
    .await;
    assert_invalid_token(&r, "another scheme");
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn scopes_are_checked_and_the_token_is_not_forwarded() {
    let s = setup("jwt-scopes", 300).await;
    let reader = s.rsa.sign(&claims("client-acme", "weather.read"));
    let r = s.call("POST", "/weather/alerts", Some(&reader)).await;
    r.assert_problem(403, "insufficient-scope");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="tollgate", error="insufficient_scope", scope="weather.write""#)
    );
    assert_eq!(s.upstream.count(), 0);
    // GET needs no scope.
    let r = s.call("GET", "/weather/alerts", Some(&reader)).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let writer = s
        .rsa
        .sign(&claims("client-acme", "weather.read weather.write"));
    let r = s.call("POST", "/weather/alerts", Some(&writer)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["method"], "POST");
    assert_eq!(r.echoed_header("authorization"), None, "token stripped");
    // `scp` as an array works too.
    let scp = s.rsa.sign(&json!({"iss": ISSUER, "aud": "weather", "sub": "client-acme", "exp": now() + 600, "scp": ["weather.write"]}));
    assert_eq!(
        s.call("POST", "/weather/alerts", Some(&scp)).await.status,
        200
    );
}

#[tokio::test]
async fn every_supported_algorithm_verifies() {
    let s = setup("jwt-algs", 300).await;
    let c = claims("client-acme", "");
    for signer in [
        Signer::rsa("rsa-1", RSA1_PEM, Algorithm::RS256),
        Signer::rsa("rsa-ps", RSA2_PEM, Algorithm::PS256),
        Signer::es256("ec-1"),
        Signer::eddsa("ed-1"),
    ] {
        let r = s
            .call("GET", "/weather/current", Some(&signer.sign(&c)))
            .await;
        assert_eq!(r.status, 200, "{:?}: {}", signer.alg, r.text());
    }
    // The inline JWKS holds only the Ed25519 key.
    let ed = Signer::eddsa("ed-1");
    assert_eq!(
        s.call("GET", "/inline/x", Some(&ed.sign(&c))).await.status,
        200
    );
    assert_invalid_token(
        &s.call("GET", "/inline/x", Some(&s.rsa.sign(&c))).await,
        "key not in the inline set",
    );
}

#[tokio::test]
async fn token_subjects_map_to_subscriptions_and_their_limits() {
    let s = setup("jwt-subjects", 300).await;
    // Not listed in any subscription: valid, but not subscribed.
    let stranger = s.rsa.sign(&claims("someone-else", ""));
    s.call("GET", "/weather/current", Some(&stranger))
        .await
        .assert_problem(403, "token-not-subscribed");
    // ...while the open product accepts any valid token.
    assert_eq!(s.call("GET", "/open/x", Some(&stranger)).await.status, 200);

    // `azp` maps too; the limited plan allows 2 per hour.
    let limited = s.rsa.sign(&json!({"iss": ISSUER, "aud": "weather", "sub": "user-1", "azp": "client-limited", "exp": now() + 600}));
    for _ in 0..2 {
        let r = s.call("GET", "/weather/current", Some(&limited)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = s.call("GET", "/weather/current", Some(&limited)).await;
    r.assert_problem(429, "rate-limited");
    assert!(r.header("retry-after").is_some());
    // A key still identifies (and the token is still required and checked).
    let acme = s.rsa.sign(&claims("someone-else", ""));
    let r = send(
        &client(),
        "GET",
        &s.url("/weather/current"),
        &[
            ("x-subscription-key", ACME_KEY),
            ("authorization", &format!("Bearer {acme}")),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn rotation_is_picked_up_by_the_refetch_on_an_unknown_kid() {
    let s = setup("jwt-rotate", 300).await;
    let c = claims("client-acme", "");
    assert_eq!(
        s.call("GET", "/weather/current", Some(&s.rsa.sign(&c)))
            .await
            .status,
        200
    );
    let next = Signer::rsa("rsa-2", RSA2_PEM, Algorithm::RS256);
    // Not published yet: refused, and a burst of unknown kids costs at most one refetch.
    let before = s.jwks.hits();
    for _ in 0..3 {
        assert_invalid_token(
            &s.call(
                "GET",
                "/weather/current",
                Some(&next.sign(&claims("client-acme", ""))),
            )
            .await,
            "unknown kid before rotation",
        );
    }
    assert!(s.jwks.hits() <= before + 1, "one refetch per interval");
    // The issuer publishes the new key; after the interval, the next unknown kid refetches.
    s.jwks.set(jwks(&[&s.rsa, &next]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = s
        .call("GET", "/weather/current", Some(&next.sign(&c)))
        .await;
    assert_eq!(r.status, 200, "new kid after rotation: {}", r.text());
}

#[tokio::test]
async fn issuer_down_keeps_keys_within_the_bound_then_fails_closed() {
    // max-age 1 s + 1 s staleness bound (test settings).
    let s = setup("jwt-down", 1).await;
    assert_eq!(
        s.call(
            "GET",
            "/weather/current",
            Some(&s.rsa.sign(&claims("client-acme", "")))
        )
        .await
        .status,
        200
    );
    s.jwks.stop();
    // Right after the issuer went away, the cached keys still verify new tokens.
    let r = s
        .call(
            "GET",
            "/weather/current",
            Some(&s.rsa.sign(&claims("client-acme", ""))),
        )
        .await;
    assert_eq!(r.status, 200, "stale keys within the bound: {}", r.text());
    // Past freshness + bound: no keys, so fresh tokens are refused.
    let refused = eventually(Duration::from_secs(6), || async {
        let r = s
            .call(
                "GET",
                "/weather/current",
                Some(&s.rsa.sign(&claims("client-acme", ""))),
            )
            .await;
        r.status == 401
    })
    .await;
    assert!(refused, "fails closed once the keys are too old");
    let r = s
        .call(
            "GET",
            "/weather/current",
            Some(&s.rsa.sign(&claims("client-acme", ""))),
        )
        .await;
    assert_invalid_token(&r, "keys unavailable");
    assert!(r.json()["detail"].as_str().unwrap_or("").contains("keys"));
}

#[tokio::test]
async fn https_jwks_with_an_untrusted_certificate_is_refused() {
    // The issuer's TLS certificate is self-signed: the fetch must fail verification, so there
    // are no keys and a correctly signed token is refused (fail closed), never accepted.
    let rsa = Signer::rsa("rsa-1", RSA1_PEM, Algorithm::RS256);
    let (addr, accepted) = start_untrusted_tls_jwks(jwks(&[&rsa])).await;
    let upstream = Upstream::start().await;
    let dir = TempDir::new("jwt-tls");
    let uri = format!("https://{addr}/keys");
    dir.write(
        "all.yaml",
        &manifests(&upstream.url(), &uri, &support::jwt::jwks(&[&rsa])),
    );
    let gw = start_gateway_with(dir.path(), settings()).await;
    let token = rsa.sign(&claims("client-acme", ""));
    let url = format!("http://{}/weather/current", gw.proxy_addr());
    let r = send(
        &client(),
        "GET",
        &url,
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_invalid_token(&r, "keys from an untrusted TLS endpoint");
    assert!(r.json()["detail"].as_str().unwrap_or("").contains("keys"));
    assert!(
        accepted.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the fetch went to the TLS endpoint"
    );
    assert_eq!(upstream.count(), 0);
    // The reason logged is certificate verification, not some other failure.
    let logs = capture_logs().contents();
    assert!(
        logs.lines()
            .any(|l| l.contains(&uri) && l.contains("UnknownIssuer")),
        "expected a JWKS fetch failure for an unknown issuer certificate: {}",
        logs.lines()
            .filter(|l| l.contains("jwt") || l.contains("JWKS"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test]
async fn https_jwks_from_a_trusted_server_verifies_tokens() {
    // The same TLS endpoint, its certificate now trusted (as a private CA would be).
    let rsa = Signer::rsa("rsa-1", RSA1_PEM, Algorithm::RS256);
    let (addr, _) = start_untrusted_tls_jwks(jwks(&[&rsa])).await;
    let upstream = Upstream::start().await;
    let dir = TempDir::new("jwt-tls-ok");
    dir.write(
        "all.yaml",
        &manifests(
            &upstream.url(),
            &format!("https://{addr}/keys"),
            &support::jwt::jwks(&[&rsa]),
        ),
    );
    let gw = start_gateway_trusting(dir.path(), settings(), vec![tls_jwks_certificate()]).await;
    let token = rsa.sign(&claims("client-acme", ""));
    let url = format!("http://{}/weather/current", gw.proxy_addr());
    let r = send(
        &client(),
        "GET",
        &url,
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}
