//! One test per check (the golden cases show the full messages).

use super::*;
use crate::manifest::ManifestSet;
use crate::table::{key_digest, BackendTarget, TimeoutsMs};

const PRODUCT: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: Product
metadata: {name: weather, namespace: w, creationTimestamp: "2025-01-01T00:00:00Z"}
spec:
  basePath: /weather
  backend: {url: "http://127.0.0.1:9000/"}
  routes:
    - {name: current, path: /current, methods: [GET]}
    - {name: forecast, path: /forecast}
"#;
const PLAN: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: Plan
metadata: {name: free, namespace: w}
spec: {product: weather, rateLimit: {requests: 10, period: 1m}}
"#;
const SUB: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: Subscription
metadata: {name: acme, namespace: w}
spec: {plan: free, subscriber: {name: Acme}}
---
apiVersion: v1
kind: Secret
metadata: {name: acme-keys, namespace: w}
stringData: {primaryKey: acme-primary-key-0123456789}
"#;

/// Compile YAML documents (each string may hold several), failing on manifest problems.
fn run(docs: &[&str]) -> Compiled {
    let mut set = ManifestSet::default();
    set.add_file("t.yaml", &docs.join("\n---\n"));
    assert!(
        set.problems.is_empty(),
        "manifest problems: {:?}",
        set.problems
    );
    set.compile()
}

/// Reasons reported about `kind ns/name`.
fn reasons_for(c: &Compiled, kind: &str, name: &str) -> Vec<String> {
    c.diagnostics
        .iter()
        .filter(|d| d.object.kind == kind && d.object.name == name)
        .map(|d| d.reason.clone())
        .collect()
}

fn message_for(c: &Compiled, reason: &str) -> String {
    c.diagnostics
        .iter()
        .find(|d| d.reason == reason)
        .map(|d| d.message.clone())
        .unwrap_or_else(|| panic!("no {reason} in {:?}", c.diagnostics))
}

#[test]
fn happy_path_compiles_everything() {
    let c = run(&[PRODUCT, PLAN, SUB]);
    assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
    let product = &c.table.products[0];
    assert_eq!(product.id, "w/weather");
    assert_eq!(product.display_name, "weather");
    assert_eq!(
        product.backend,
        BackendTarget::Url {
            url: "http://127.0.0.1:9000".into()
        }
    );
    assert_eq!(product.timeouts, TimeoutsMs::default());
    assert_eq!(
        product.key_location.header.as_deref(),
        Some("x-subscription-key")
    );
    assert_eq!(product.routes[0].path, "/weather/current");
    let plan = &c.table.plans[0];
    assert_eq!(plan.routes, ["current", "forecast"]);
    let rl = plan.rate_limit.expect("rate limit");
    assert_eq!((rl.requests, rl.period_ms, rl.burst), (10, 60_000, 10));
    let sub = &c.table.subscriptions[0];
    assert_eq!(sub.key_digests, [key_digest("acme-primary-key-0123456789")]);
    assert_eq!(
        (sub.plan.as_str(), sub.product.as_str()),
        ("w/free", "w/weather")
    );
}

#[test]
fn product_backend_must_be_exactly_one_valid_target() {
    for backend in [
        "{}",
        r#"{url: "http://a", service: {name: a, port: 1}}"#,
        r#"{url: "ftp://a"}"#,
        r#"{service: {name: a, port: 0}}"#,
    ] {
        let doc = PRODUCT.replace(r#"{url: "http://127.0.0.1:9000/"}"#, backend);
        let c = run(&[&doc]);
        assert!(c.table.products.is_empty(), "{backend}");
        assert!(
            reasons_for(&c, "Product", "weather").contains(&reasons::INVALID_BACKEND.to_string())
        );
    }
}

#[test]
fn product_syntax_mirrors_the_cel_rules() {
    let cases = [
        (
            "basePath: /weather",
            "basePath: weather",
            reasons::INVALID_PATH,
        ),
        ("path: /current,", "path: current,", reasons::INVALID_PATH),
        ("name: current,", "name: Current,", reasons::INVALID_ROUTE),
        (
            "name: forecast,",
            "name: current,",
            reasons::DUPLICATE_ROUTE_NAME,
        ),
        (
            "methods: [GET]",
            "methods: [GET, GET]",
            reasons::DUPLICATE_METHOD,
        ),
        (
            "basePath: /weather",
            "basePath: /weather\n  hostnames: [a_b]",
            reasons::INVALID_HOSTNAME,
        ),
        (
            "basePath: /weather",
            "basePath: /weather\n  timeouts: {connect: 5}",
            reasons::INVALID_TIMEOUT,
        ),
        (
            "basePath: /weather",
            "basePath: /weather\n  keyLocation: {}",
            reasons::INVALID_KEY_LOCATION,
        ),
        (
            "basePath: /weather",
            "basePath: /weather\n  keyLocation: {header: 'a b'}",
            reasons::INVALID_KEY_LOCATION,
        ),
        (
            "path: /forecast}",
            "path: /current}",
            reasons::ROUTE_CONFLICT,
        ),
        (
            "path: /current,",
            "path: /current, rewriteFullPath: true,",
            reasons::INVALID_ROUTE,
        ),
    ];
    for (from, to, reason) in cases {
        assert!(PRODUCT.contains(from), "{from}");
        let c = run(&[&PRODUCT.replacen(from, to, 1)]);
        assert!(
            c.table.products.is_empty(),
            "{to} should leave the product out"
        );
        assert!(
            reasons_for(&c, "Product", "weather").contains(&reason.to_string()),
            "{to}: expected {reason}, got {:?}",
            c.diagnostics
        );
    }
}

#[test]
fn product_normalises_hosts_headers_timeouts_and_display_name() {
    let doc = PRODUCT.replace(
        "basePath: /weather",
        "basePath: /\n  displayName: Weather\n  hostnames: [API.Example.com, api.example.com]\n  keyLocation: {header: Ocp-Apim-Subscription-Key, query: subscription-key}\n  timeouts: {connect: 250ms, request: 1m}",
    );
    let c = run(&[&doc]);
    let p = &c.table.products[0];
    assert_eq!(p.display_name, "Weather");
    assert_eq!(p.hostnames, ["api.example.com"]);
    assert_eq!(
        p.key_location.header.as_deref(),
        Some("ocp-apim-subscription-key")
    );
    assert_eq!(p.key_location.query.as_deref(), Some("subscription-key"));
    assert_eq!(
        (p.timeouts.connect_ms, p.timeouts.request_ms),
        (250, 60_000)
    );
    assert_eq!(p.routes[0].path, "/current", "basePath / adds nothing");
}

#[test]
fn missing_or_broken_policy_keeps_the_product_out() {
    let with_policy = PRODUCT.replace(
        "basePath: /weather",
        "basePath: /weather\n  policies: [hardening]",
    );
    let c = run(&[&with_policy]);
    assert_eq!(
        reasons_for(&c, "Product", "weather"),
        [reasons::POLICY_NOT_FOUND]
    );
    assert!(c.table.products.is_empty());

    // Fail closed: a wildcard origin with credentials is refused, and takes the product with it.
    let cors = "apiVersion: tollgate.dev/v1alpha1\nkind: ApiPolicy\nmetadata: {name: hardening, namespace: w}\nspec: {cors: {allowOrigins: ['*'], allowCredentials: true}}\n";
    let c = run(&[&with_policy, cors]);
    assert_eq!(
        reasons_for(&c, "ApiPolicy", "hardening"),
        [reasons::INVALID_CORS]
    );
    assert_eq!(
        reasons_for(&c, "Product", "weather"),
        [reasons::POLICY_NOT_READY]
    );
    assert!(message_for(&c, reasons::INVALID_CORS).contains("wildcard origin"));
    assert!(c.table.products.is_empty() && c.table.policies.is_empty());
}

#[test]
fn policy_headers_and_cidrs_are_normalised() {
    let policy = "apiVersion: tollgate.dev/v1alpha1\nkind: ApiPolicy\nmetadata: {name: p, namespace: w}\nspec:\n  headers: {response: {remove: [Server, server, X-Powered-By]}, request: {set: {X-A: '1'}, add: {X-Tag: t}}}\n  ipFilter: {allow: [10.1.2.3/8], deny: ['2001:db8::1/32']}\n";
    let c = run(&[policy]);
    let p = &c.table.policies[0];
    assert_eq!(p.response_headers.remove, ["server", "x-powered-by"]);
    assert_eq!(
        p.request_headers.set,
        [("x-a".to_string(), "1".to_string())]
    );
    assert_eq!(
        p.request_headers.add,
        [("x-tag".to_string(), "t".to_string())]
    );
    let filter = p.ip_filter.as_ref().expect("ip filter");
    assert_eq!(filter.allow[0].to_string(), "10.0.0.0/8");
    assert_eq!(filter.deny[0].to_string(), "2001:db8::/32");

    for (bad, reason) in [
        (
            "{request: {set: {'X A': '1'}}}",
            reasons::INVALID_HEADER_NAME,
        ),
        (
            "{request: {set: {Host: evil}}}",
            reasons::INVALID_HEADER_NAME,
        ),
        (
            "{request: {set: {X-A: \"a\\nb\"}}}",
            reasons::INVALID_HEADER_VALUE,
        ),
        (
            "{response: {remove: ['a:b']}}",
            reasons::INVALID_HEADER_NAME,
        ),
        (
            "{request: {add: {Host: evil}}}",
            reasons::INVALID_HEADER_NAME,
        ),
        (
            "{response: {add: {X-A: \"a\\nb\"}}}",
            reasons::INVALID_HEADER_VALUE,
        ),
    ] {
        let doc = format!("apiVersion: tollgate.dev/v1alpha1\nkind: ApiPolicy\nmetadata: {{name: p, namespace: w}}\nspec: {{headers: {bad}}}\n");
        let c = run(&[&doc]);
        assert_eq!(reasons_for(&c, "ApiPolicy", "p"), [reason], "{bad}");
    }
}

#[test]
fn route_conflicts_go_to_the_older_product_whatever_the_names() {
    let newer = PRODUCT
        .replace("name: weather, namespace: w", "name: aaa, namespace: a")
        .replace("2025-01-01", "2026-01-01");
    let c = run(&[PRODUCT, &newer]);
    assert_eq!(
        reasons_for(&c, "Product", "aaa"),
        [reasons::ROUTE_CONFLICT, reasons::ROUTE_CONFLICT]
    );
    assert_eq!(c.table.products.len(), 1);
    assert_eq!(c.table.products[0].id, "w/weather");
    assert!(message_for(&c, reasons::ROUTE_CONFLICT).contains("Product w/weather"));
}

#[test]
fn plan_references_are_checked() {
    let c = run(&[PLAN]);
    assert_eq!(
        reasons_for(&c, "Plan", "free"),
        [reasons::PRODUCT_NOT_FOUND]
    );

    let broken = PRODUCT.replace("basePath: /weather", "basePath: weather");
    let c = run(&[&broken, PLAN]);
    assert_eq!(
        reasons_for(&c, "Plan", "free"),
        [reasons::PRODUCT_NOT_READY]
    );

    let plan = PLAN.replace(
        "product: weather,",
        "product: weather, routes: [current, forcast],",
    );
    let c = run(&[PRODUCT, &plan]);
    assert_eq!(reasons_for(&c, "Plan", "free"), [reasons::ROUTE_NOT_FOUND]);
    let msg = message_for(&c, reasons::ROUTE_NOT_FOUND);
    assert!(
        msg.contains("did you mean `forecast`") && msg.contains("valid names: current, forecast"),
        "{msg}"
    );
}

#[test]
fn plan_limits_are_checked() {
    for (limits, reason) in [
        (
            "rateLimit: {requests: 0, period: 1m}",
            reasons::INVALID_RATE_LIMIT,
        ),
        (
            "rateLimit: {requests: 1, period: 1d}",
            reasons::INVALID_RATE_LIMIT,
        ),
        (
            "rateLimit: {requests: 1, period: 1m, burst: 0}",
            reasons::INVALID_RATE_LIMIT,
        ),
        ("quota: {requests: 0, period: Day}", reasons::INVALID_QUOTA),
    ] {
        let plan = PLAN.replace("rateLimit: {requests: 10, period: 1m}", limits);
        let c = run(&[PRODUCT, &plan]);
        assert_eq!(reasons_for(&c, "Plan", "free"), [reason], "{limits}");
    }
    let plan = PLAN.replace("period: 1m}", "period: 2h, burst: 3}");
    let c = run(&[PRODUCT, &plan]);
    let rl = c.table.plans[0].rate_limit.expect("rate limit");
    assert_eq!((rl.period_ms, rl.burst), (7_200_000, 3));
}

#[test]
fn subscription_plan_and_secret_must_exist() {
    let c = run(&[SUB]);
    assert_eq!(
        reasons_for(&c, "Subscription", "acme"),
        [reasons::PLAN_NOT_FOUND]
    );

    let lonely = SUB.split("---").next().expect("subscription doc");
    let c = run(&[PRODUCT, PLAN, lonely]);
    assert_eq!(
        reasons_for(&c, "Subscription", "acme"),
        [reasons::SECRET_NOT_FOUND]
    );
    let msg = message_for(&c, reasons::SECRET_NOT_FOUND);
    assert!(
        msg.contains("standalone mode") && msg.contains("acme-keys"),
        "{msg}"
    );

    let both = lonely.replace(
        "subscriber: {name: Acme}",
        "subscriber: {name: Acme}, keys: {secretRef: {name: acme-keys}, generate: true}",
    );
    let secret = SUB.split("---").nth(1).expect("secret doc");
    let c = run(&[PRODUCT, PLAN, &both, secret]);
    assert_eq!(
        reasons_for(&c, "Subscription", "acme"),
        [reasons::INVALID_KEYS]
    );
}

#[test]
fn keys_are_checked_and_only_digested() {
    let secret = |data: &str| {
        format!("{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: acme-keys, namespace: w}}\n{data}\n", SUB.split("---").next().expect("doc"))
    };
    // base64 data, with stringData winning for the same key.
    let c = run(&[PRODUCT, PLAN, &secret("data: {primaryKey: b3ZlcnJpZGRlbi1wcmltYXJ5LWtleQ==, secondaryKey: c2Vjb25kYXJ5LWtleS0wMTIzNDU2Nzg5}\nstringData: {primaryKey: string-data-primary-0123456789}")]);
    let digests = &c.table.subscriptions[0].key_digests;
    let mut expected = vec![
        key_digest("string-data-primary-0123456789"),
        key_digest("secondary-key-0123456789"),
    ];
    expected.sort();
    assert_eq!(digests, &expected);

    for (data, reason) in [
        ("stringData: {primaryKey: tiny}", reasons::WEAK_KEY),
        (
            "stringData: {secondaryKey: only-a-secondary-key-0123}",
            reasons::INVALID_KEY_SECRET,
        ),
        (
            "stringData: {primaryKey: 'has a space in it 0123456789'}",
            reasons::INVALID_KEY_SECRET,
        ),
        ("data: {primaryKey: //79/A==}", reasons::INVALID_KEY_SECRET),
    ] {
        let c = run(&[PRODUCT, PLAN, &secret(data)]);
        assert_eq!(reasons_for(&c, "Subscription", "acme"), [reason], "{data}");
        let text = format!("{c:?}");
        assert!(
            !text.contains("tiny") && !text.contains("has a space"),
            "key leaked: {text}"
        );
    }
}

#[test]
fn a_shared_key_stays_with_the_older_subscription() {
    let older = SUB
        .replace(
            "name: acme, namespace: w}",
            "name: zed, namespace: w, creationTimestamp: \"2020-01-01T00:00:00Z\"}",
        )
        .replace("acme-keys", "zed-keys");
    let c = run(&[PRODUCT, PLAN, SUB, &older]);
    assert_eq!(
        reasons_for(&c, "Subscription", "acme"),
        [reasons::DUPLICATE_KEY]
    );
    assert_eq!(c.table.subscriptions.len(), 1);
    assert_eq!(c.table.subscriptions[0].id, "w/zed");
    let msg = message_for(&c, reasons::DUPLICATE_KEY);
    assert!(
        msg.contains("Subscription w/zed") && !msg.contains("acme-primary-key"),
        "{msg}"
    );
}

#[test]
fn approval_required_marks_pending_until_approved() {
    let plan = PLAN.replace("period: 1m}}", "period: 1m}, approvalRequired: true}");
    let pending = run(&[PRODUCT, &plan, SUB]);
    assert!(!pending.has_errors(), "{:?}", pending.diagnostics);
    assert!(pending.table.plans[0].approval_required);
    let sub = &pending.table.subscriptions[0];
    // In the table, with its key digest (so its callers are told why), but marked pending.
    assert!(sub.pending_approval);
    assert_eq!(sub.key_digests, [key_digest("acme-primary-key-0123456789")]);
    assert_eq!(
        reasons_for(&pending, "Subscription", "acme"),
        [reasons::AWAITING_APPROVAL]
    );
    let msg = message_for(&pending, reasons::AWAITING_APPROVAL);
    assert!(
        msg.contains("spec.approved: true") && !msg.contains("acme-primary-key"),
        "{msg}"
    );

    let approved = SUB.replace("{name: Acme}}", "{name: Acme}, approved: true}");
    let active = run(&[PRODUCT, &plan, &approved]);
    assert!(active.diagnostics.is_empty(), "{:?}", active.diagnostics);
    assert!(!active.table.subscriptions[0].pending_approval);

    // Without approvalRequired, `approved` changes nothing, and the table is as it always was.
    let plain = run(&[PRODUCT, PLAN, &approved]);
    assert_eq!(plain.table, run(&[PRODUCT, PLAN, SUB]).table);
    assert!(!plain.table.subscriptions[0].pending_approval);
}

#[test]
fn subscription_lists_are_normalised_and_checked() {
    let sub = SUB.replace(
        "subscriber: {name: Acme}",
        "subscriber: {name: Acme}, jwtSubjects: [b, a, b], allowedSourceRanges: [192.0.2.7/24], clientCertificates: ['AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89']",
    );
    let c = run(&[PRODUCT, PLAN, &sub]);
    let s = &c.table.subscriptions[0];
    assert_eq!(s.jwt_subjects, ["a", "b"]);
    assert_eq!(s.allowed_source_ranges[0].to_string(), "192.0.2.0/24");
    assert_eq!(s.client_certificates[0], "abcdef0123456789".repeat(4));

    for (field, reason) in [
        ("allowedSourceRanges: [10.0.0.0/33]", reasons::INVALID_CIDR),
        (
            "clientCertificates: ['ab:cd']",
            reasons::INVALID_CLIENT_CERTIFICATE,
        ),
    ] {
        let sub = SUB.replace(
            "subscriber: {name: Acme}",
            &format!("subscriber: {{name: Acme}}, {field}"),
        );
        let c = run(&[PRODUCT, PLAN, &sub]);
        assert_eq!(reasons_for(&c, "Subscription", "acme"), [reason], "{field}");
    }
    let c = run(&[PRODUCT, PLAN, &SUB.replace("{name: Acme}", "{name: ''}")]);
    assert_eq!(
        reasons_for(&c, "Subscription", "acme"),
        [reasons::INVALID_FIELD]
    );
}

#[test]
fn snapshot_duplicates_and_nameless_objects_are_reported_deterministically() {
    let mut set = ManifestSet::default();
    set.add_file("t.yaml", PRODUCT);
    let mut snapshot = set.snapshot.clone();
    let mut twin = snapshot.products[0].clone();
    twin.spec.display_name = Some("Twin".into());
    snapshot.products.push(twin.clone());
    let mut nameless = twin;
    nameless.metadata.name = None;
    snapshot.products.push(nameless);

    let forward = compile(&snapshot);
    snapshot.products.reverse();
    assert_eq!(forward, compile(&snapshot));
    let reasons: Vec<&str> = forward
        .diagnostics
        .iter()
        .map(|d| d.reason.as_str())
        .collect();
    assert_eq!(reasons, [reasons::INVALID_FIELD, reasons::DUPLICATE_OBJECT]);
    assert_eq!(forward.table.products.len(), 1);
}

#[test]
fn rejected_objects_make_references_not_ready() {
    let mut set = ManifestSet::default();
    set.add_file("t.yaml", PLAN);
    set.snapshot.rejected.push(ObjectRef {
        kind: "Product".into(),
        namespace: "w".into(),
        name: "weather".into(),
    });
    let c = set.compile();
    assert_eq!(
        reasons_for(&c, "Plan", "free"),
        [reasons::PRODUCT_NOT_READY]
    );
}

#[test]
fn diagnostics_are_sorted_and_ids_ordered_as_strings() {
    let a = PRODUCT
        .replace("namespace: w,", "namespace: a-b,")
        .replace("/weather", "/one");
    let b = PRODUCT
        .replace("namespace: w,", "namespace: a,")
        .replace("/weather", "/two");
    let c = run(&[&a, &b, PLAN]);
    let ids: Vec<&str> = c.table.products.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["a-b/weather", "a/weather"]);
    let mut sorted = c.diagnostics.clone();
    sorted.sort();
    assert_eq!(c.diagnostics, sorted);
}

#[test]
fn jwks_uri_must_be_https_or_loopback_http() {
    use super::policies::jwks_uri_allowed;
    assert!(jwks_uri_allowed("https://login.example/keys"));
    assert!(jwks_uri_allowed("HTTPS://login.example:8443/keys?x=1"));
    assert!(jwks_uri_allowed("http://127.0.0.1:8081/keys"));
    assert!(jwks_uri_allowed("http://[::1]:8081/keys"));
    assert!(jwks_uri_allowed("http://localhost/keys"));
    assert!(!jwks_uri_allowed("http://login.example/keys"));
    assert!(!jwks_uri_allowed("http://127.0.0.1.evil.example/keys"));
    assert!(!jwks_uri_allowed("http://user@10.0.0.1/keys"));
    assert!(!jwks_uri_allowed("https:///keys"));
    assert!(!jwks_uri_allowed("login.example/keys"));
}

#[test]
fn service_backends_get_their_ready_endpoints_sorted() {
    let mut set = ManifestSet::default();
    set.add_file(
        "t.yaml",
        "apiVersion: tollgate.dev/v1alpha1\nkind: Product\nmetadata: {name: p, namespace: w}\nspec:\n  backend: {service: {name: api, port: 80}}\n  routes: [{name: all, path: /}]\n",
    );
    let endpoints = |addresses: &[&str]| crate::snapshot::ServiceEndpoints {
        namespace: "w".into(),
        service: "api".into(),
        port: 80,
        addresses: addresses.iter().map(|a| a.to_string()).collect(),
        workload: None,
    };
    let backend = |set: &ManifestSet| set.compile().table.products[0].backend.clone();
    // No EndpointSlice information (standalone): the DNS name is used.
    assert!(
        matches!(backend(&set), crate::table::BackendTarget::Service { endpoints, .. } if endpoints.is_empty())
    );
    set.snapshot.endpoints = vec![
        endpoints(&["10.0.0.9:8080", "10.0.0.2:8080", "10.0.0.9:8080"]),
        crate::snapshot::ServiceEndpoints {
            port: 81,
            ..endpoints(&["10.0.0.7:9"])
        },
    ];
    let first = backend(&set);
    assert!(
        matches!(&first, crate::table::BackendTarget::Service { endpoints, .. } if endpoints == &["10.0.0.2:8080", "10.0.0.9:8080"]),
        "{first:?}"
    );
    set.snapshot.endpoints[0].addresses.reverse();
    assert_eq!(
        backend(&set),
        first,
        "slice order does not change the table"
    );
    // Injected pods: the table says how to reach their sidecars.
    let workload = crate::table::WorkloadMtls {
        identity: "spiffe://cluster.local/ns/w/sa/api".into(),
        sidecar_port: 15443,
    };
    set.snapshot.endpoints[0].workload = Some(workload.clone());
    assert!(
        matches!(backend(&set), crate::table::BackendTarget::Service { workload: Some(w), .. } if w == workload)
    );
}

// ---- per-object last-known-good (`compile_keeping`) and unavailable subscriptions ----

/// `compile_keeping` on YAML documents with the store of a previous compile.
fn keep(docs: &[&str], last: &LastGood) -> Kept {
    let mut set = ManifestSet::default();
    set.add_file("t.yaml", &docs.join("\n---\n"));
    assert!(set.problems.is_empty(), "{:?}", set.problems);
    set.compile_keeping(last)
}

const PLAN_TYPO: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: Plan
metadata: {name: free, namespace: w}
spec: {product: weather, routes: [curent], rateLimit: {requests: 10, period: 1m}}
"#;

fn plan_ref() -> ObjectRef {
    ObjectRef {
        kind: "Plan".into(),
        namespace: "w".into(),
        name: "free".into(),
    }
}

#[test]
fn an_invalid_plan_edit_keeps_the_old_plan_and_its_subscriptions() {
    let good = keep(&[PRODUCT, PLAN, SUB], &LastGood::default());
    assert!(good.compiled.diagnostics.is_empty());
    assert!(good.held_back.is_empty());

    let edited = keep(&[PRODUCT, PLAN_TYPO, SUB], &good.last_good);
    assert_eq!(edited.held_back, vec![plan_ref()]);
    // The old plan (every route) and the subscription on it are still served.
    assert_eq!(edited.compiled.table, good.compiled.table);
    let held = edited
        .compiled
        .diagnostics
        .iter()
        .find(|d| d.reason == reasons::INVALID_SPEC_SERVING_PREVIOUS)
        .expect("a held-back diagnostic");
    assert_eq!(held.object, plan_ref());
    assert_eq!(held.severity, Severity::Error);
    assert_eq!(held.field, "spec.routes[0]");
    assert!(
        held.message.contains("serving the previous version")
            && held.message.contains("RouteNotFound"),
        "{}",
        held.message
    );
    assert_eq!(held.file.as_deref(), Some("t.yaml"));
    // The current version's own error is reported too (Accepted=False names it).
    assert!(reasons_for(&edited.compiled, "Plan", "free").contains(&"RouteNotFound".to_string()));
    // Without a store the same edit drops the plan and the subscription (the old behaviour).
    let cold = keep(&[PRODUCT, PLAN_TYPO, SUB], &LastGood::default());
    assert!(cold.compiled.table.plans.is_empty() && cold.compiled.table.subscriptions.is_empty());
    assert!(cold.held_back.is_empty());
}

#[test]
fn a_held_back_object_names_the_generation_served() {
    let v = |generation: u32, routes: &str| {
        format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: Plan\nmetadata: {{name: free, namespace: w, generation: {generation}}}\nspec: {{product: weather, routes: {routes}}}\n"
        )
    };
    let good = keep(&[PRODUCT, &v(3, "[current]"), SUB], &LastGood::default());
    let edited = keep(&[PRODUCT, &v(4, "[curent]"), SUB], &good.last_good);
    let msg = message_for(&edited.compiled, reasons::INVALID_SPEC_SERVING_PREVIOUS);
    assert!(msg.contains("held back: serving generation 3"), "{msg}");
    assert_eq!(edited.compiled.table.plans[0].routes, ["current"]);
    // The store still holds generation 3, so the next bad compile says the same.
    let again = keep(&[PRODUCT, &v(5, "[nope]"), SUB], &edited.last_good);
    assert!(
        message_for(&again.compiled, reasons::INVALID_SPEC_SERVING_PREVIOUS)
            .contains("serving generation 3")
    );
}

#[test]
fn an_invalid_product_edit_keeps_the_old_product() {
    let good = keep(&[PRODUCT, PLAN, SUB], &LastGood::default());
    let broken = PRODUCT.replace("path: /current", "path: current");
    let edited = keep(&[&broken, PLAN, SUB], &good.last_good);
    assert_eq!(edited.held_back.len(), 1);
    assert_eq!(edited.held_back[0].kind, "Product");
    assert_eq!(edited.compiled.table, good.compiled.table);
    // The plan is not reported as held back: it is served in its current version.
    assert!(!reasons_for(&edited.compiled, "Plan", "free")
        .contains(&reasons::INVALID_SPEC_SERVING_PREVIOUS.to_string()));
}

#[test]
fn a_valid_plan_edit_compiles_against_a_held_back_product() {
    let good = keep(&[PRODUCT, PLAN, SUB], &LastGood::default());
    let broken = PRODUCT.replace("path: /current", "path: current");
    let plan_v2 = PLAN.replace(
        "rateLimit: {requests: 10",
        "routes: [forecast], rateLimit: {requests: 20",
    );
    let edited = keep(&[&broken, &plan_v2, SUB], &good.last_good);
    assert_eq!(edited.held_back.len(), 1, "{:?}", edited.held_back);
    let plan = &edited.compiled.table.plans[0];
    assert_eq!(plan.routes, ["forecast"]);
    assert_eq!(plan.rate_limit.map(|r| r.requests), Some(20));
}

#[test]
fn deleting_a_held_back_object_drops_it() {
    let good = keep(&[PRODUCT, PLAN, SUB], &LastGood::default());
    let edited = keep(&[PRODUCT, PLAN_TYPO, SUB], &good.last_good);
    let gone = keep(&[PRODUCT, SUB], &edited.last_good);
    assert!(gone.compiled.table.plans.is_empty());
    assert!(gone.held_back.is_empty());
    assert_eq!(
        reasons_for(&gone.compiled, "Subscription", "acme"),
        ["PlanNotFound"]
    );
    // Re-created with the typo: nothing to hold back any more.
    let back = keep(&[PRODUCT, PLAN_TYPO, SUB], &gone.last_good);
    assert!(back.held_back.is_empty() && back.compiled.table.plans.is_empty());
}

#[test]
fn a_fixed_edit_replaces_the_held_back_version() {
    let good = keep(&[PRODUCT, PLAN, SUB], &LastGood::default());
    let edited = keep(&[PRODUCT, PLAN_TYPO, SUB], &good.last_good);
    let fixed_plan = PLAN_TYPO.replace("curent", "current");
    let fixed = keep(&[PRODUCT, &fixed_plan, SUB], &edited.last_good);
    assert!(fixed.held_back.is_empty());
    assert!(
        fixed.compiled.diagnostics.is_empty(),
        "{:?}",
        fixed.compiled.diagnostics
    );
    assert_eq!(fixed.compiled.table.plans[0].routes, ["current"]);
    assert_eq!(fixed.compiled.table.subscriptions.len(), 1);
}

#[test]
fn a_never_valid_plan_makes_its_subscriptions_keys_unavailable() {
    let c = run(&[PRODUCT, PLAN_TYPO, SUB]);
    assert!(c.table.subscriptions.is_empty());
    assert_eq!(
        c.table.unavailable,
        [crate::table::UnavailableEntry {
            id: "w/acme".into(),
            key_digests: vec![key_digest("acme-primary-key-0123456789")],
        }]
    );
    // A missing plan too.
    let c = run(&[PRODUCT, SUB]);
    assert_eq!(c.table.unavailable.len(), 1);
    // Served: nothing unavailable.
    assert!(run(&[PRODUCT, PLAN, SUB]).table.unavailable.is_empty());
}

#[test]
fn unavailable_leaves_out_suspended_unreadable_and_duplicate_keys() {
    let suspended = SUB.replace(
        "subscriber: {name: Acme}",
        "subscriber: {name: Acme}, state: Suspended",
    );
    assert!(run(&[PRODUCT, PLAN_TYPO, &suspended])
        .table
        .unavailable
        .is_empty());
    // No Secret: no digest can be read.
    let no_secret = SUB.split("---").next().unwrap_or_default().to_string();
    assert!(run(&[PRODUCT, PLAN_TYPO, &no_secret])
        .table
        .unavailable
        .is_empty());
    // A newer subscription reusing acme's key loses it (DuplicateKey): the digest stays acme's.
    let copy = r#"
apiVersion: tollgate.dev/v1alpha1
kind: Subscription
metadata: {name: copy, namespace: w}
spec: {plan: free, subscriber: {name: Copy}, keys: {secretRef: {name: acme-keys}}}
"#;
    let c = run(&[PRODUCT, PLAN, SUB, copy]);
    assert!(reasons_for(&c, "Subscription", "copy").contains(&"DuplicateKey".to_string()));
    assert!(c.table.unavailable.is_empty(), "{:?}", c.table.unavailable);
    // An invalid subscription of its own (a bad CIDR) whose key reads: unavailable too.
    let bad_cidr = SUB.replace(
        "subscriber: {name: Acme}",
        "subscriber: {name: Acme}, allowedSourceRanges: [nope]",
    );
    let c = run(&[PRODUCT, PLAN, &bad_cidr]);
    assert_eq!(c.table.unavailable.len(), 1);
}

#[test]
fn route_header_and_query_matches_are_checked_and_normalised() {
    let product = |routes: &str| {
        format!("apiVersion: tollgate.dev/v1alpha1\nkind: Product\nmetadata: {{name: w, namespace: w}}\nspec:\n  backend: {{url: 'http://127.0.0.1:9000'}}\n  routes: {routes}\n")
    };
    // Two routes on one path that differ only in their header match do not conflict.
    let ok = product(
        "[{name: a, path: /x, headers: [{name: X-B, value: '1'}, {name: X-A, value: '2'}], queryParams: [{name: v, value: '3'}]}, {name: b, path: /x}]",
    );
    let c = run(&[&ok]);
    assert!(
        reasons_for(&c, "Product", "w").is_empty(),
        "{:?}",
        c.diagnostics
    );
    let a = &c.table.products[0].routes[0];
    let names: Vec<&str> = a.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["x-a", "x-b"], "lowercased and sorted");
    assert_eq!(a.query_params[0].value, "3");

    for (routes, reason) in [
        (
            "[{name: a, path: /x, headers: [{name: 'X A', value: '1'}]}]",
            reasons::INVALID_HEADER_NAME,
        ),
        (
            "[{name: a, path: /x, headers: [{name: X-A, value: \"a\\nb\"}]}]",
            reasons::INVALID_HEADER_VALUE,
        ),
        (
            "[{name: a, path: /x, headers: [{name: X-A, value: '1'}, {name: x-a, value: '2'}]}]",
            reasons::INVALID_ROUTE,
        ),
        (
            "[{name: a, path: /x, queryParams: [{name: 'a b', value: '1'}]}]",
            reasons::INVALID_ROUTE,
        ),
        (
            "[{name: a, path: /x, headers: [{name: X-A, value: '1'}]}, {name: b, path: /x, headers: [{name: x-a, value: '1'}]}]",
            reasons::ROUTE_CONFLICT,
        ),
    ] {
        let c = run(&[&product(routes)]);
        assert_eq!(reasons_for(&c, "Product", "w"), [reason], "{routes}");
    }
}

#[test]
fn routes_of_two_products_that_differ_in_header_matches_do_not_conflict() {
    let product = |name: &str, age: &str, headers: &str| {
        format!("apiVersion: tollgate.dev/v1alpha1\nkind: Product\nmetadata: {{name: {name}, namespace: w, creationTimestamp: '{age}'}}\nspec:\n  backend: {{url: 'http://127.0.0.1:9000'}}\n  routes: [{{name: r, path: /x, headers: {headers}}}]\n")
    };
    let old = product("old", "2026-01-01T00:00:00Z", "[{name: x-v, value: '1'}]");
    let other = product("other", "2026-02-01T00:00:00Z", "[{name: x-v, value: '2'}]");
    let same = product("same", "2026-03-01T00:00:00Z", "[{name: X-V, value: '1'}]");
    let c = run(&[&old, &other, &same]);
    assert!(reasons_for(&c, "Product", "other").is_empty());
    assert_eq!(
        reasons_for(&c, "Product", "same"),
        [reasons::ROUTE_CONFLICT]
    );
    assert!(
        message_for(&c, reasons::ROUTE_CONFLICT).contains("with header x-v=1"),
        "{}",
        message_for(&c, reasons::ROUTE_CONFLICT)
    );
}
