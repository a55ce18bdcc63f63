//! `compile` is order-independent: the same set of objects, read in any order and split across
//! files in any way, gives the identical `Compiled` (table and diagnostics).
//!
//! The generated worlds are deliberately messy: dangling references, invalid values, unsupported
//! policies, products fighting over routes (with tied and missing timestamps) and subscriptions
//! sharing keys, because conflict resolution is where order could leak in.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;
use tollgate_crds::plan::RateLimit;
use tollgate_crds::policy::{ApiPolicySpec, IpFilter, JwtIssuer, JwtPolicy};
use tollgate_crds::product::{Backend, KeyLocation, Method, PathMatch, Route};
use tollgate_crds::subscription::{Keys, SecretRef, Subscriber, SubscriptionState};
use tollgate_crds::{
    compile, ApiPolicy, Compiled, ManifestSet, Plan, PlanSpec, Product, ProductSpec, Snapshot,
    Subscription, SubscriptionSpec,
};

const NAMESPACES: [&str; 2] = ["a", "b"];
const PATHS: [&str; 4] = ["/", "/a", "/a/b", "/b"];
const HOSTS: [&str; 2] = ["x.example", "y.example"];
const KEYS: [&str; 4] = [
    "key-aaaaaaaaaaaaaaaa",
    "key-bbbbbbbbbbbbbbbb",
    "key-cccccccccccccccc",
    "short",
];

fn meta(namespace: &str, name: &str, created: Option<i64>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        // Few distinct instants, so ties (settled by namespace/name) are common.
        creation_timestamp: created.map(|s| {
            Time(Timestamp::from_second(1_700_000_000 + s * 3600).expect("valid instant"))
        }),
        ..ObjectMeta::default()
    }
}

fn ns() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&NAMESPACES[..])
}

fn created() -> impl Strategy<Value = Option<i64>> {
    prop::option::of(0i64..3)
}

fn product() -> impl Strategy<Value = Product> {
    let route = (
        prop::sample::select(&PATHS[..]),
        any::<bool>(),
        prop::collection::vec(any::<bool>(), 2),
    );
    (
        ns(),
        0..5usize,
        created(),
        prop::sample::subsequence(&HOSTS[..], 0..=2),
        prop::collection::vec(route, 1..4),
        prop_oneof![
            3 => Just(vec![]),
            1 => prop::sample::subsequence(&["pol0", "pol1", "missing"][..], 0..=2),
        ],
        prop::bool::weighted(0.95),
    )
        .prop_map(|(ns, n, created, hosts, routes, policies, good_backend)| {
            let routes = routes
                .into_iter()
                .enumerate()
                .map(|(i, (path, exact, methods))| Route {
                    name: format!("r{i}"),
                    path: path.to_string(),
                    path_match: if exact {
                        PathMatch::Exact
                    } else {
                        PathMatch::Prefix
                    },
                    methods: [Method::Get, Method::Post]
                        .into_iter()
                        .zip(methods)
                        .filter_map(|(m, on)| on.then_some(m))
                        .collect(),
                    rewrite: None,
                    rewrite_full_path: false,
                    headers: Vec::new(),
                    query_params: Vec::new(),
                })
                .collect();
            let url = if good_backend {
                "http://127.0.0.1:9000/"
            } else {
                "ftp://nope"
            };
            let mut p = Product::new(
                &format!("p{n}"),
                ProductSpec {
                    display_name: None,
                    hostnames: hosts.into_iter().map(str::to_string).collect(),
                    base_path: None,
                    backend: Some(Backend {
                        service: None,
                        url: Some(url.to_string()),
                    }),
                    subscription_required: true,
                    key_location: KeyLocation::default(),
                    routes,
                    target_refs: Vec::new(),
                    policies: policies.into_iter().map(str::to_string).collect(),
                    timeouts: None,
                    client_certificates: None,
                    headers_with_underscores: Default::default(),
                    sidecar_callers: Default::default(),
                },
            );
            p.metadata = meta(ns, &format!("p{n}"), created);
            p
        })
}

fn policy() -> impl Strategy<Value = ApiPolicy> {
    (ns(), 0..2usize, 0..3u8).prop_map(|(ns, n, flavour)| {
        let mut spec = ApiPolicySpec::default();
        match flavour {
            0 => {}
            1 => {
                spec.ip_filter = Some(IpFilter {
                    allow: vec!["10.0.0.0/8".into(), "not-a-cidr".into()],
                    deny: vec![],
                })
            }
            _ => {
                spec.jwt = Some(JwtPolicy {
                    issuers: vec![JwtIssuer {
                        issuer: "https://login.example".into(),
                        jwks_uri: Some("https://login.example/keys".into()),
                        jwks: None,
                        audiences: vec![],
                    }],
                    clock_skew: None,
                    required_scopes: vec![],
                })
            }
        }
        let mut p = ApiPolicy::new(&format!("pol{n}"), spec);
        p.metadata = meta(ns, &format!("pol{n}"), None);
        p
    })
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        ns(),
        0..4usize,
        0..6usize,
        prop_oneof![
            2 => Just(None),
            1 => prop::sample::subsequence(&["r0", "r1", "r9"][..], 0..=3).prop_map(Some),
        ],
        prop_oneof![4 => Just("1m"), 1 => Just("0m"), 1 => Just("2h")],
    )
        .prop_map(|(ns, n, product, routes, period)| {
            let mut p = Plan::new(
                &format!("pl{n}"),
                PlanSpec {
                    // p5 never exists: a dangling reference.
                    product: format!("p{product}"),
                    display_name: None,
                    routes: routes.map(|r| r.into_iter().map(str::to_string).collect()),
                    rate_limit: Some(RateLimit {
                        requests: 10,
                        period: period.to_string(),
                        burst: None,
                    }),
                    quota: None,
                    scopes: vec![],
                    // Some plans wait for approval, so pending subscriptions are in the mix.
                    approval_required: n % 2 == 0,
                },
            );
            p.metadata = meta(ns, &format!("pl{n}"), None);
            p
        })
}

/// A subscription and, maybe, its key Secret (primary, optional secondary).
fn subscription() -> impl Strategy<Value = (Subscription, Option<(usize, Option<usize>)>)> {
    (
        ns(),
        0..8usize,
        0..5usize,
        created(),
        any::<bool>(),
        prop::option::weighted(0.85, (0..KEYS.len(), prop::option::of(0..KEYS.len()))),
    )
        .prop_map(|(ns, n, plan, created, by_ref, keys)| {
            let name = format!("s{n}");
            let mut s = Subscription::new(
                &name,
                SubscriptionSpec {
                    plan: format!("pl{plan}"),
                    subscriber: Subscriber {
                        name: format!("Subscriber {n}"),
                        email: None,
                    },
                    state: SubscriptionState::Active,
                    keys: by_ref.then(|| Keys {
                        secret_ref: Some(SecretRef {
                            name: format!("{name}-own"),
                        }),
                        generate: None,
                    }),
                    client_certificates: vec![],
                    jwt_subjects: vec![],
                    allowed_source_ranges: vec![],
                    expires_at: None,
                    approved: n % 3 == 0,
                },
            );
            s.metadata = meta(ns, &name, created);
            (s, keys)
        })
}

/// A set of uniquely named objects of every kind.
#[derive(Debug, Clone)]
struct World {
    docs: Vec<String>,
}

fn world() -> impl Strategy<Value = World> {
    (
        prop::collection::vec(product(), 0..7),
        prop::collection::vec(policy(), 0..4),
        prop::collection::vec(plan(), 0..7),
        prop::collection::vec(subscription(), 0..10),
    )
        .prop_map(|(products, policies, plans, subscriptions)| {
            // Keyed by namespace/name: a later draw with the same name replaces the earlier one,
            // since duplicates are settled by reading order (by design) and are not under test.
            let mut docs: BTreeMap<(String, &str, String), String> = BTreeMap::new();
            let mut put = |kind: &'static str, m: &ObjectMeta, yaml: String| {
                let key = (
                    m.namespace.clone().unwrap_or_default(),
                    kind,
                    m.name.clone().unwrap_or_default(),
                );
                docs.insert(key, yaml);
            };
            let yaml = |v: &dyn erased::Yaml| v.yaml();
            for p in &products {
                put("Product", &p.metadata, yaml(p));
            }
            for p in &policies {
                put("ApiPolicy", &p.metadata, yaml(p));
            }
            for p in &plans {
                put("Plan", &p.metadata, yaml(p));
            }
            for (s, keys) in &subscriptions {
                put("Subscription", &s.metadata, yaml(s));
                if let Some((primary, secondary)) = keys {
                    let mut data = BTreeMap::new();
                    data.insert("primaryKey".to_string(), KEYS[*primary].to_string());
                    if let Some(secondary) = secondary {
                        data.insert("secondaryKey".to_string(), KEYS[*secondary].to_string());
                    }
                    let ns = s.metadata.namespace.clone().unwrap_or_default();
                    let secret = Secret {
                        metadata: meta(&ns, &s.key_secret_name(), None),
                        string_data: Some(data),
                        ..Secret::default()
                    };
                    put("Secret", &secret.metadata, yaml(&secret));
                }
            }
            World {
                docs: docs.into_values().collect(),
            }
        })
}

/// Serialise any of the object types to a YAML document.
mod erased {
    pub trait Yaml {
        fn yaml(&self) -> String;
    }
    impl<T: serde::Serialize> Yaml for T {
        fn yaml(&self) -> String {
            serde_yaml_ng::to_string(self).expect("serialise object")
        }
    }
}

/// Read `files` (name, documents) in name order, compile, and forget which file said what.
fn load(files: &[(String, Vec<String>)]) -> Compiled {
    let mut files = files.to_vec();
    files.sort();
    let mut set = ManifestSet::default();
    for (name, docs) in &files {
        set.add_file(name, &docs.join("---\n"));
    }
    let mut compiled = set.compile();
    for d in &mut compiled.diagnostics {
        d.file = None;
    }
    compiled.diagnostics.sort();
    compiled
}

/// Deterministic Fisher–Yates from a seed (xorshift), so failures replay from proptest's seed.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    seed |= 1;
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let j = (seed % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// Cut `docs` into files at the given points (files named so their sorted order is arbitrary).
fn split(docs: &[String], cuts: &[usize]) -> Vec<(String, Vec<String>)> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (docs.len() + 1)).collect();
    points.push(0);
    points.push(docs.len());
    points.sort();
    points.dedup();
    points
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            (
                format!("{}.yaml", (b'z' - i as u8) as char),
                docs[w[0]..w[1]].to_vec(),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn same_objects_any_order_any_files_same_result(
        world in world(),
        seed in any::<u64>(),
        cuts in prop::collection::vec(any::<usize>(), 0..4),
    ) {
        let baseline = load(&[("all.yaml".to_string(), world.docs.clone())]);

        let mut shuffled = world.docs.clone();
        shuffle(&mut shuffled, seed);
        let reordered = load(&split(&shuffled, &cuts));
        prop_assert_eq!(&baseline, &reordered);

        // The table is what proxies compare: equal tables, equal digests.
        prop_assert_eq!(baseline.table.digest(), reordered.table.digest());
    }

    #[test]
    fn compile_ignores_snapshot_vector_order(world in world(), seed in any::<u64>()) {
        let mut set = ManifestSet::default();
        set.add_file("all.yaml", &world.docs.join("---\n"));
        let snapshot = set.snapshot.clone();
        let mut reordered = Snapshot { ..snapshot.clone() };
        shuffle(&mut reordered.products, seed);
        shuffle(&mut reordered.plans, seed.rotate_left(7));
        shuffle(&mut reordered.subscriptions, seed.rotate_left(13));
        shuffle(&mut reordered.policies, seed.rotate_left(19));
        shuffle(&mut reordered.secrets, seed.rotate_left(23));
        prop_assert_eq!(compile(&snapshot), compile(&reordered));
    }
}

/// The generator does produce the situations the property is about (not only clean worlds).
#[test]
fn generated_worlds_exercise_conflicts_and_dangling_references() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let mut reasons = std::collections::BTreeSet::new();
    for _ in 0..300 {
        let world = world().new_tree(&mut runner).expect("tree").current();
        let compiled = load(&[("all.yaml".to_string(), world.docs)]);
        reasons.extend(compiled.diagnostics.into_iter().map(|d| d.reason));
    }
    for expected in [
        "RouteConflict",
        "DuplicateKey",
        "ProductNotFound",
        "ProductNotReady",
        "PlanNotFound",
        "PolicyNotFound",
        "PolicyNotReady",
        "RouteNotFound",
        "SecretNotFound",
        "WeakKey",
        "InvalidRateLimit",
    ] {
        assert!(
            reasons.contains(expected),
            "generator never produced {expected}: {reasons:?}"
        );
    }
}
