//! `spec.headersWithUnderscores` end to end: a real recording backend on loopback sees what each
//! mode lets through. CGI and WSGI backends read `X_User` as `X-User` (both become `HTTP_X_USER`),
//! so a forwarded `_` header could stand in for one the gateway checked, set or removed.

mod support;

use support::*;
use tollgate_proxy::Gateway;

fn products(upstream: &str) -> String {
    let product = |name: &str, mode: Option<&str>| {
        let mode = mode.map_or(String::new(), |m| {
            format!("  headersWithUnderscores: {m}\n")
        });
        format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: Product\nmetadata: {{name: {name}, namespace: u}}\nspec:\n  basePath: /{name}\n  backend: {{url: \"{upstream}\"}}\n  subscriptionRequired: false\n{mode}  routes: [{{name: all, path: /}}]\n"
        )
    };
    [
        product("default", None),
        product("allow", Some("Allow")),
        product("reject", Some("Reject")),
    ]
    .join("---\n")
}

/// Names a CGI backend would fold into `Transfer-Encoding`, `Content-Length` and `X-User`,
/// next to an ordinary header that must always reach the backend.
const UNDERSCORED: [(&str, &str); 4] = [
    ("transfer_encoding", "chunked"),
    ("content_length", "5"),
    ("x_user", "admin"),
    ("x-user", "alice"),
];

async fn start(tag: &str) -> (Gateway, Upstream, TempDir) {
    let upstream = Upstream::start().await;
    let dir = TempDir::new(tag);
    dir.write("products.yaml", &products(&upstream.url()));
    let gateway = start_gateway(dir.path()).await;
    (gateway, upstream, dir)
}

#[tokio::test]
async fn dropped_by_default_forwarded_when_allowed_refused_when_rejected() {
    let (gw, upstream, _dir) = start("underscores").await;
    let client = client();
    let url = |p: &str| format!("http://{}{p}", gw.proxy_addr());

    // Default (Drop): the backend never sees them; the rest of the request is untouched.
    let r = send(&client, "GET", &url("/default/x"), &UNDERSCORED).await;
    assert_eq!(r.status, 200, "{}", r.text());
    for name in ["transfer_encoding", "content_length", "x_user"] {
        assert_eq!(r.echoed_header(name), None, "{name} reached the backend");
    }
    assert_eq!(r.echoed_header("x-user").as_deref(), Some("alice"));
    let metrics = send(
        &client,
        "GET",
        &format!("http://{}/metrics", gw.admin_addr()),
        &[],
    )
    .await
    .text();
    let line = r#"tollgate_underscore_headers_dropped_total{product="u/default"} 3"#;
    assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    assert!(
        !metrics.contains("admin"),
        "a dropped value reached the metrics"
    );

    // Allow: forwarded as sent.
    let r = send(&client, "GET", &url("/allow/x"), &UNDERSCORED).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.echoed_header("x_user").as_deref(), Some("admin"));
    assert_eq!(r.echoed_header("content_length").as_deref(), Some("5"));
    assert_eq!(
        r.echoed_header("transfer_encoding").as_deref(),
        Some("chunked")
    );

    // Reject: 400 before the backend sees a byte; without them the same route answers.
    let before = upstream.count();
    for header in &UNDERSCORED[..3] {
        let r = send(&client, "GET", &url("/reject/x"), &[*header]).await;
        let v = r.assert_problem(400, "invalid-header-name");
        let detail = v["detail"].as_str().unwrap_or_default();
        assert!(
            !detail.contains(header.1),
            "the value is not echoed: {detail}"
        );
    }
    assert_eq!(
        upstream.count(),
        before,
        "a rejected request reached the backend"
    );
    let r = send(&client, "GET", &url("/reject/x"), &[UNDERSCORED[3]]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.echoed_header("x-user").as_deref(), Some("alice"));
}
