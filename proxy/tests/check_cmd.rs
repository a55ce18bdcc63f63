//! `tollgate-proxy check DIR`: the real binary on real directories; exit codes, the diagnostic
//! naming file, object and field, the JSON document, and no key material in either output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate-proxy"))
        .arg("check")
        .args(args)
        // The gateway's environment must not leak in (a CI runner may export these).
        .env_remove("TOLLGATE_FROM_DIR")
        .env_remove("TOLLGATE_MAX_MANIFEST_BYTES")
        .env_remove("TOLLGATE_MAX_MANIFEST_DEPTH")
        .output()
        .expect("run tollgate-proxy")
}

fn weather() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/weather")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every plaintext key of the example's secrets.yaml, read from the file so the test follows it.
fn example_keys() -> Vec<String> {
    let secrets = std::fs::read_to_string(weather().join("secrets.yaml")).expect("secrets.yaml");
    let keys: Vec<String> = secrets
        .lines()
        .filter_map(|l| {
            let (name, value) = l.trim().split_once(':')?;
            name.ends_with("Key").then(|| value.trim().to_string())
        })
        .filter(|v| !v.is_empty())
        .collect();
    assert!(keys.len() >= 4, "keys not found in secrets.yaml: {keys:?}");
    keys
}

fn assert_no_keys(output: &str) {
    for key in example_keys() {
        assert!(!output.contains(&key), "key {key} printed:\n{output}");
    }
}

/// A copy of the example with one Plan broken.
fn broken_copy(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-check-cmd-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    for entry in std::fs::read_dir(weather()).expect("examples/weather") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy");
    }
    let plans = std::fs::read_to_string(dir.join("plans.yaml")).expect("plans.yaml");
    // Plan weather/free names a route its product does not have.
    let broken = plans.replacen("routes: [current]", "routes: [current, no-such-route]", 1);
    assert_ne!(plans, broken, "plans.yaml changed: update the test");
    std::fs::write(dir.join("plans.yaml"), broken).expect("write");
    dir
}

#[test]
fn the_example_passes() {
    let out = check(&[weather().to_str().expect("utf-8 path")]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains(": ok: 0 error(s)"), "{all}");
    assert!(all.contains("4 subscription(s)"), "{all}");
    assert_no_keys(&all);
}

#[test]
fn a_broken_plan_fails_naming_file_object_and_field() {
    let dir = broken_copy("text");
    let out = check(&[dir.to_str().expect("utf-8 path")]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let line = all
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in\n{all}"));
    for part in [
        "plans.yaml",
        "Plan weather/free",
        "spec.routes",
        "no-such-route",
    ] {
        assert!(line.contains(part), "{part} missing in {line}");
    }
    assert!(all.contains("FAILED"), "{all}");
    assert_no_keys(&all);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn json_output_is_one_document_with_the_diagnostics_and_counts() {
    let out = check(&["--output", "json", weather().to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["ok"], true);
    assert_eq!(v["summary"]["errors"], 0);
    assert_eq!(
        v["objects"],
        serde_json::json!({"products": 1, "routes": 5, "plans": 3, "subscriptions": 4, "policies": 1})
    );
    assert_eq!(v["digest"].as_str().map(str::len), Some(64), "{v}");
    assert_no_keys(&String::from_utf8_lossy(&out.stdout));

    let dir = broken_copy("json");
    let out = check(&[dir.to_str().expect("utf-8 path"), "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["ok"], false);
    assert_eq!(
        v["loads"], true,
        "a compile error leaves the object out: {v}"
    );
    // The plan, and the subscription to it that cannot compile without it.
    assert_eq!(v["summary"]["errors"], 2, "{v}");
    assert_eq!(v["summary"]["byKind"]["Plan"], 1, "{v}");
    assert_eq!(v["summary"]["byKind"]["Subscription"], 1, "{v}");
    assert_eq!(v["objects"]["plans"], 2, "the broken plan is left out: {v}");
    assert_eq!(
        v["objects"]["subscriptions"], 3,
        "and its subscription: {v}"
    );
    // The example's namespace.yaml gives an IgnoredKind warning; the first error is the plan.
    let d = v["diagnostics"]
        .as_array()
        .and_then(|ds| ds.iter().find(|d| d["severity"] == "error"))
        .unwrap_or_else(|| panic!("no error diagnostic: {v}"));
    assert_eq!(d["severity"], "error");
    assert_eq!(d["stage"], "compile");
    assert_eq!(d["file"], "plans.yaml");
    assert_eq!(d["kind"], "Plan");
    assert_eq!(d["object"], "weather/free");
    assert!(
        d["field"]
            .as_str()
            .is_some_and(|f| f.starts_with("spec.routes")),
        "{d}"
    );
    assert_no_keys(&String::from_utf8_lossy(&out.stdout));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_directory_is_exit_2() {
    let missing =
        std::env::temp_dir().join(format!("tollgate-check-cmd-none-{}", std::process::id()));
    let out = check(&[missing.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
    assert!(out.stdout.is_empty());
}

#[test]
fn a_manifest_error_refuses_the_directory_and_fails() {
    let dir = std::env::temp_dir().join(format!("tollgate-check-cmd-yaml-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("bad.yaml"), "kind: Product\n  : [\n").expect("write");
    let out = check(&["--output", "json", dir.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["loads"], false, "{v}");
    assert_eq!(v["diagnostics"][0]["file"], "bad.yaml", "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_manifest_size_limit_applies_as_in_the_gateway() {
    let out = check(&[
        "--max-manifest-bytes",
        "100",
        weather().to_str().expect("utf-8 path"),
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("plans.yaml"), "{all}");
}
