//! The README's list of supported Gateway API features is the one the operator writes into
//! GatewayClass status (`tollgate_crds::gateway::SUPPORTED_FEATURES`).

use tollgate_crds::gateway::SUPPORTED_FEATURES;

#[test]
fn the_readme_lists_the_supported_features_the_operator_reports() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let line = readme
        .lines()
        .find(|l| l.starts_with("Supported features (the operator writes these"))
        .expect("the README's 'Supported features' line");
    let listed: Vec<&str> = line
        .split_once("):")
        .map(|(_, list)| list)
        .expect("a list after the parenthesis")
        .split('`')
        .skip(1)
        .step_by(2)
        .collect();
    assert_eq!(listed, SUPPORTED_FEATURES, "README line: {line}");
    let mut sorted = SUPPORTED_FEATURES.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted, SUPPORTED_FEATURES,
        "sorted by name, once each, as the status requires"
    );
}
