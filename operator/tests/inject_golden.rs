//! Golden tests of the sidecar injector's pure core: each `golden/inject/<case>/in.yaml` (a
//! Namespace, then a Pod) goes through the same parse → decide → patch path as a real
//! `AdmissionReview`; the patch is applied to the *raw* input pod (as the API server does) and
//! the result must equal `out.yaml`. `UPDATE_GOLDEN=1` rewrites the files; review the diff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use tollgate_operator::inject::review::{parse, respond, Outcome};
use tollgate_operator::inject::{netpol, InjectConfig};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn config() -> InjectConfig {
    let mut config = InjectConfig::defaults("tollgate-system", "tollgate-proxy");
    config.image = "ghcr.io/tollgate/tollgate:0.1.0".into();
    config.operator_ca_configmap = Some("tollgate-operator-ca".into());
    config
}

fn compare(path: &Path, actual: &str) {
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(
        expected,
        actual,
        "{} differs (UPDATE_GOLDEN=1 rewrites it; review the diff)",
        path.display()
    );
}

/// One case: the outcome line and the stored pod.
fn run_case(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("in.yaml")).expect("in.yaml");
    let mut docs = text.split("\n---\n");
    let namespace: Namespace =
        serde_yaml_ng::from_str(docs.next().expect("Namespace")).expect("a Namespace");
    let mut pod: serde_json::Value =
        serde_yaml_ng::from_str(docs.next().expect("Pod")).expect("a Pod");
    let ns = namespace.metadata.name.clone().expect("namespace name");
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": ns,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
        }
    });
    let request = parse(review.to_string().as_bytes()).expect("parses");
    let labels: BTreeMap<String, String> = namespace.metadata.labels.unwrap_or_default();
    let (response, outcome) = respond(&request, &labels, &config());
    assert_eq!(response.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
    let header = match &outcome {
        Outcome::Injected => {
            assert!(response.allowed);
            let patch: json_patch::Patch =
                serde_json::from_slice(response.patch.as_deref().expect("a patch"))
                    .expect("a JSON Patch");
            json_patch::patch(&mut pod, &patch).expect("the patch applies to the raw pod");
            "# injected\n".to_string()
        }
        Outcome::Unchanged(reason) => {
            assert!(response.allowed && response.patch.is_none());
            format!("# unchanged: {reason}\n")
        }
        Outcome::Refused(message) => {
            assert!(!response.allowed && response.patch.is_none());
            assert_eq!(&response.result.message, message);
            format!("# refused: {message}\n")
        }
    };
    header + &serde_yaml_ng::to_string(&pod).expect("yaml")
}

#[test]
fn injection_goldens() {
    let root = golden_dir().join("inject");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("golden/inject")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 8, "cases missing: {cases:?}");
    for case in cases {
        compare(&case.join("out.yaml"), &run_case(&case));
    }
}

/// Running the injector on its own output changes nothing: a re-invocation (or a pod copied
/// from an injected one) never gets a second sidecar.
#[test]
fn injection_is_idempotent() {
    let dir = golden_dir().join("inject/namespace-label");
    let out = std::fs::read_to_string(dir.join("out.yaml")).expect("out.yaml");
    let again = golden_dir().join("inject/namespace-label");
    let text = std::fs::read_to_string(again.join("in.yaml")).expect("in.yaml");
    let namespace = text.split("\n---\n").next().expect("Namespace");
    let tmp = std::env::temp_dir().join(format!("tg-inject-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let pod = out.split_once('\n').expect("header").1;
    std::fs::write(tmp.join("in.yaml"), format!("{namespace}\n---\n{pod}")).expect("write");
    let result = run_case(&tmp);
    std::fs::remove_dir_all(&tmp).expect("cleanup");
    assert_eq!(result, format!("# unchanged: already injected\n{pod}"));
}

#[test]
fn bad_bodies_are_errors_not_panics() {
    for body in [
        &b""[..],
        b"null",
        b"{}",
        b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}",
        b"{\"request\":{\"uid\":1}}",
        b"\xff\xfe",
    ] {
        assert!(parse(body).is_err(), "{:?}", String::from_utf8_lossy(body));
    }
}

/// The policy of the injected pod of `golden/inject/namespace-label` (owned by its ReplicaSet);
/// an ownerless injected pod owns its own; a pod that is not injected gets none.
#[test]
fn network_policy_golden() {
    let out = std::fs::read_to_string(golden_dir().join("inject/namespace-label/out.yaml"))
        .expect("out.yaml");
    let pod: Pod = serde_yaml_ng::from_str(out.split_once('\n').expect("header").1).expect("pod");
    let policy = netpol::for_pod(&pod).expect("an injected pod has a policy");
    compare(
        &golden_dir().join("networkpolicy.yaml"),
        &serde_yaml_ng::to_string(&policy).expect("yaml"),
    );

    let mut alone = pod.clone();
    alone.metadata.owner_references = None;
    alone.metadata.name = Some("weather-x1".into());
    alone.metadata.uid = Some("0b5e9d2a-0000-4000-8000-000000000002".into());
    let owner = netpol::for_pod(&alone)
        .and_then(|p| p.metadata.owner_references)
        .expect("owned");
    assert_eq!(
        (
            owner[0].kind.as_str(),
            owner[0].name.as_str(),
            owner[0].uid.as_str()
        ),
        ("Pod", "weather-x1", "0b5e9d2a-0000-4000-8000-000000000002")
    );
    let mut plain = pod;
    plain.metadata.annotations = None;
    assert!(netpol::for_pod(&plain).is_none(), "not injected: no policy");
}
