//! The committed CRDs (`charts/tollgate/crds/tollgate.dev.yaml`) must be what the Rust types
//! generate, and must carry what `kubectl` users rely on: status subresource, printer columns,
//! short names, the `tollgate` category, list-map conditions, and the CEL rules.

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;
use serde_json::Value;
use tollgate_crds::crd_yaml::all_crds_yaml;

const COMMITTED: &str = "charts/tollgate/crds/tollgate.dev.yaml";

#[test]
fn committed_crds_are_fresh() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(COMMITTED);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == all_crds_yaml(),
        "{COMMITTED} is stale (or missing): the CRD types changed. Run `make crds` and commit the result"
    );
}

fn crds() -> Vec<CustomResourceDefinition> {
    let yaml = all_crds_yaml();
    serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|doc| CustomResourceDefinition::deserialize(doc).expect("a CRD"))
        .collect()
}

fn crd(kind: &str) -> CustomResourceDefinition {
    crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"))
}

/// The v1alpha1 OpenAPI schema as JSON.
fn schema(kind: &str) -> Value {
    let crd = crd(kind);
    let version = &crd.spec.versions[0];
    serde_json::to_value(
        version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("schema"),
    )
    .expect("json")
}

/// Walk `properties` by name; `[]` steps into array `items`.
fn at<'a>(schema: &'a Value, path: &str) -> &'a Value {
    let mut node = schema;
    for step in path.split('.') {
        node = if step == "[]" {
            &node["items"]
        } else {
            &node["properties"][step]
        };
        assert!(!node.is_null(), "schema has no {path} (stuck at {step})");
    }
    node
}

fn rules(node: &Value) -> Vec<String> {
    node["x-kubernetes-validations"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r["rule"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn assert_rule(kind: &str, path: &str, needle: &str) {
    let s = schema(kind);
    let found = rules(at(&s, path));
    assert!(
        found.iter().any(|r| r.contains(needle)),
        "{kind} {path}: no CEL rule containing {needle:?}; rules: {found:?}"
    );
}

#[test]
fn four_namespaced_kinds_in_group_and_category() {
    let crds = crds();
    let kinds: Vec<&str> = crds.iter().map(|c| c.spec.names.kind.as_str()).collect();
    assert_eq!(kinds, ["Product", "Plan", "Subscription", "ApiPolicy"]);
    for crd in &crds {
        let names = &crd.spec.names;
        assert_eq!(crd.spec.group, "tollgate.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            names.categories.as_deref(),
            Some(&["tollgate".to_string()][..]),
            "{}",
            names.kind
        );
        let short = names.short_names.clone().unwrap_or_default();
        assert!(
            short.iter().any(|s| s.starts_with("tg")),
            "{}: short names {short:?}",
            names.kind
        );
        assert_eq!(crd.spec.versions.len(), 1);
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
        let status = version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref());
        assert!(status.is_some(), "{}: no status subresource", names.kind);
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert!(
            columns.contains(&"Ready"),
            "{}: printer columns {columns:?}",
            names.kind
        );
        assert!(
            columns.contains(&"Age"),
            "{}: printer columns {columns:?}",
            names.kind
        );
    }
}

#[test]
fn status_has_list_map_conditions_and_observed_generation() {
    for kind in ["Product", "Plan", "Subscription", "ApiPolicy"] {
        let s = schema(kind);
        let conditions = at(&s, "status.conditions");
        assert_eq!(conditions["x-kubernetes-list-type"], "map", "{kind}");
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"]),
            "{kind}"
        );
        let required = &at(&s, "status.conditions.[]")["required"];
        assert!(
            required
                .as_array()
                .is_some_and(|r| r.iter().any(|f| f == "type")),
            "{kind}: {required}"
        );
        at(&s, "status.observedGeneration");
    }
}

#[test]
fn printer_columns_show_what_operators_ask_for() {
    let columns = |kind: &str| -> Vec<String> {
        crd(kind).spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect()
    };
    assert!(columns("Plan").contains(&"Product".to_string()));
    assert!(columns("Subscription").contains(&"Plan".to_string()));
    assert!(columns("Subscription").contains(&"State".to_string()));
    for usage in ["Used", "Quota", "Resets"] {
        assert!(
            columns("Subscription").contains(&usage.to_string()),
            "{usage}"
        );
    }
}

#[test]
fn cel_rules_cover_the_key_constraints() {
    assert_rule("Product", "spec.routes", "exists_one");
    assert_rule("Product", "spec.routes.[].path", "startsWith('/')");
    assert_rule("Product", "spec.routes.[].name", "matches");
    assert_rule("Product", "spec.routes.[].methods", "exists_one");
    assert_rule("Product", "spec.basePath", "startsWith('/')");
    assert_rule("Product", "spec.hostnames", "matches");
    assert_rule(
        "Product",
        "spec.backend",
        "has(self.service) != has(self.url)",
    );
    assert_rule("Product", "spec.backend.url", "https?://");
    assert_rule("Product", "spec", "has(self.targetRefs) ?");
    assert_rule("Product", "spec.targetRefs.[].kind", "'HTTPRoute'");
    assert_rule("Product", "spec.keyLocation.header", "matches");
    assert_rule("Product", "spec.timeouts.connect", "ms|s|m");
    assert_rule("Plan", "spec.rateLimit.period", "[smh]");
    assert_rule("Plan", "spec.routes", "exists_one");
    assert_rule("Subscription", "spec.allowedSourceRanges", "isCIDR");
    assert_rule("Subscription", "spec.clientCertificates", "matches");
    assert_rule("Subscription", "spec.keys", "secretRef");
    assert_rule("ApiPolicy", "spec.ipFilter.allow", "isCIDR");
    assert_rule("ApiPolicy", "spec.ipFilter.deny", "isCIDR");
    assert_rule("ApiPolicy", "spec.headers.request.set", "matches");
    assert_rule("ApiPolicy", "spec.headers.request.set", "content-length");
    assert_rule("ApiPolicy", "spec.headers.response.remove", "matches");
}

#[test]
fn schema_limits_and_enums() {
    let product = schema("Product");
    assert_eq!(at(&product, "spec.routes")["minItems"], 1);
    let methods = &at(&product, "spec.routes.[].methods.[]")["enum"];
    assert_eq!(methods.as_array().map(Vec::len), Some(7), "{methods}");
    assert_eq!(at(&product, "spec.backend.service.port")["minimum"], 1.0);
    let underscores = at(&product, "spec.headersWithUnderscores");
    assert_eq!(
        underscores["enum"],
        serde_json::json!(["Drop", "Allow", "Reject"])
    );
    assert_eq!(underscores["default"], "Drop");
    let plan = schema("Plan");
    assert_eq!(at(&plan, "spec.rateLimit.requests")["minimum"], 1.0);
    assert_eq!(at(&plan, "spec.quota.requests")["minimum"], 1.0);
    let periods = &at(&plan, "spec.quota.period")["enum"];
    assert_eq!(periods, &serde_json::json!(["Day", "Week", "Month"]));
    let sub = schema("Subscription");
    let states = &at(&sub, "spec.state")["enum"];
    assert_eq!(
        states,
        &serde_json::json!(["Active", "Suspended", "Cancelled"])
    );
    // The documented spelling of ApiPolicy's backend TLS field.
    at(&schema("ApiPolicy"), "spec.backendTLS");
}

/// Every string or list a CEL rule looks at is bounded: the API server estimates a rule's cost
/// from those bounds and rejects CRDs whose rules could cost too much.
#[test]
fn cel_checked_values_are_bounded() {
    fn walk(node: &Value, path: &str, problems: &mut Vec<String>) {
        let has_rules = node.get("x-kubernetes-validations").is_some();
        let ty = node["type"].as_str().unwrap_or_default();
        if has_rules {
            match ty {
                "string" if node.get("maxLength").is_none() && node.get("enum").is_none() => {
                    problems.push(format!("{path}: string without maxLength"))
                }
                "array" => {
                    if node.get("maxItems").is_none() {
                        problems.push(format!("{path}: array without maxItems"));
                    }
                    let item = &node["items"];
                    if item["type"] == "string"
                        && item.get("maxLength").is_none()
                        && item.get("enum").is_none()
                    {
                        problems.push(format!("{path}[]: string without maxLength"));
                    }
                }
                "object"
                    if node.get("additionalProperties").is_some()
                        && node.get("maxProperties").is_none() =>
                {
                    problems.push(format!("{path}: map without maxProperties"))
                }
                _ => {}
            }
        }
        if let Some(props) = node["properties"].as_object() {
            for (k, v) in props {
                walk(v, &format!("{path}.{k}"), problems);
            }
        }
        if node.get("items").is_some() {
            walk(&node["items"], &format!("{path}[]"), problems);
        }
    }
    let mut problems = Vec::new();
    for kind in ["Product", "Plan", "Subscription", "ApiPolicy"] {
        walk(&schema(kind), kind, &mut problems);
    }
    assert!(
        problems.is_empty(),
        "unbounded values under CEL rules: {problems:#?}"
    );
}
