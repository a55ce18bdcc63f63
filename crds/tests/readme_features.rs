//! The README's list of supported Gateway API features is the one the operator writes into
//! GatewayClass status (`tollgate_crds::gateway::SUPPORTED_FEATURES`), and its table of
//! diagnostic reasons is the compiler's (`tollgate_crds::reasons::ALL_REASONS`).

use tollgate_crds::gateway::{ADDRESS_PER_GATEWAY_FEATURES, SUPPORTED_FEATURES};
use tollgate_crds::reasons::ALL_REASONS;

#[test]
fn the_readme_explains_every_diagnostic_reason_and_no_other() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let section = readme
        .split("### Diagnostic reasons")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("the README's 'Diagnostic reasons' section");
    let documented: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(reason, _)| reason))
        .collect();
    let missing: Vec<&&str> = ALL_REASONS
        .iter()
        .filter(|r| !documented.contains(r))
        .collect();
    assert!(
        missing.is_empty(),
        "reasons the README does not explain: {missing:?}"
    );
    let unknown: Vec<&&str> = documented
        .iter()
        .filter(|r| !ALL_REASONS.contains(r))
        .collect();
    assert!(
        unknown.is_empty(),
        "README reasons the compiler never gives: {unknown:?}"
    );
}

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
    // The features claimed only with an address per Gateway are named as such, right after.
    let pool_line = readme
        .lines()
        .find(|l| l.starts_with("Only with `--gateway-address-pool`"))
        .expect("the README's line on features that need --gateway-address-pool");
    let pool_listed: Vec<&str> = pool_line
        .split_once("):")
        .map(|(_, list)| list)
        .and_then(|list| list.split_once('.'))
        .map(|(list, _)| list)
        .expect("a list after the parenthesis")
        .split('`')
        .skip(1)
        .step_by(2)
        .collect();
    assert_eq!(
        pool_listed, ADDRESS_PER_GATEWAY_FEATURES,
        "README line: {pool_line}"
    );
}
