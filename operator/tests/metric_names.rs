//! `metric_names.txt` lists exactly the operator's metric families, with their types: the Helm
//! chart's dashboard and alerts are checked against it (proxy/tests/chart_metrics.rs) without a
//! cluster.

use std::collections::BTreeSet;

use prometheus::core::Collector;
use prometheus::proto::MetricType;
use tollgate_operator::metrics::Metrics;

/// `name type` of every family of the operator's metrics. `collect` on a vector without
/// children still names its family (the registry's rendering would drop it).
fn registered() -> BTreeSet<String> {
    let m = Metrics::new();
    let collectors: [&dyn Collector; 18] = [
        &m.reconciles,
        &m.reconcile_duration,
        &m.compiles,
        &m.compile_duration,
        &m.errors,
        &m.table_version,
        &m.objects,
        &m.status_writes,
        &m.key_operations,
        &m.leader,
        &m.distribution,
        &m.proxies_connected,
        &m.token_reviews,
        &m.usage_reads,
        &m.usage_writes,
        &m.injections,
        &m.network_policy_writes,
        &m.certificates,
    ];
    let mut families = BTreeSet::new();
    for c in collectors {
        for mf in c.collect() {
            let kind = match mf.get_field_type() {
                MetricType::COUNTER => "counter",
                MetricType::GAUGE => "gauge",
                MetricType::HISTOGRAM => "histogram",
                MetricType::SUMMARY => "summary",
                MetricType::UNTYPED => "untyped",
            };
            families.insert(format!("{} {kind}", mf.name()));
        }
    }
    families
}

fn listed() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/metric_names.txt");
    std::fs::read_to_string(path)
        .expect("metric_names.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn the_listed_metric_names_are_the_registered_ones() {
    let (registered, listed) = (registered(), listed());
    assert_eq!(registered.len(), 18, "{registered:?}");
    assert_eq!(
        listed,
        registered,
        "operator/tests/metric_names.txt differs from the registry: listed only {:?}, registered only {:?}",
        listed.difference(&registered).collect::<Vec<_>>(),
        registered.difference(&listed).collect::<Vec<_>>()
    );
}

#[test]
fn every_listed_family_renders_once_it_has_a_value() {
    // The families of vectors appear in /metrics once a child exists; give each one a child
    // and check the rendering names every listed family (so the list is what a scrape sees).
    let m = Metrics::new();
    m.reconciles.with_label_values(&["ok"]).inc();
    m.errors.with_label_values(&["kube"]).inc();
    m.objects.with_label_values(&["Plan", "True"]).set(1);
    m.key_operations.with_label_values(&["create"]).inc();
    m.distribution.with_label_values(&["snapshot"]).inc();
    m.token_reviews.with_label_values(&["ok"]).inc();
    m.usage_reads.with_label_values(&["ok"]).inc();
    m.injections.with_label_values(&["injected"]).inc();
    m.network_policy_writes.with_label_values(&["ok"]).inc();
    m.certificates.with_label_values(&["issued"]).inc();
    let text = m.render();
    for family in listed() {
        let name = family.split(' ').next().unwrap_or_default();
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} not in\n{text}"
        );
    }
}
