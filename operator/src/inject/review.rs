//! An `AdmissionReview` in, its answer out: parsing, the decision, and the JSON Patch (the
//! diff of the pod before and after [`super::sidecar::inject`]). No I/O: the namespace's labels
//! are given.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;

use super::decide::{decide, pod_name, Decision};
use super::sidecar::{conflicts, inject, workload};
use super::InjectConfig;

/// A request body that is not an `AdmissionReview` of a Pod (answered `400`).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON, or not the shape of an `AdmissionReview` v1 with a Pod.
    #[error("body is not an AdmissionReview of a Pod: {0}")]
    Parse(#[from] serde_json::Error),
    /// An `AdmissionReview` without `request`.
    #[error("AdmissionReview has no request")]
    NoRequest,
}

/// Parse a request body.
///
/// # Errors
///
/// [`ReviewError`] when the body is not an `AdmissionReview` with a request.
pub fn parse(body: &[u8]) -> Result<AdmissionRequest<Pod>, ReviewError> {
    let review: AdmissionReview<Pod> = serde_json::from_slice(body)?;
    review.try_into().map_err(|_| ReviewError::NoRequest)
}

/// What the webhook did, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted with a sidecar.
    Injected,
    /// Admitted unchanged (the reason).
    Unchanged(&'static str),
    /// Refused (the message the user sees).
    Refused(String),
}

/// The answer to `request`, the namespace's labels being `namespace_labels`. Anything but a
/// Pod CREATE is admitted unchanged (the webhook is registered for those only; this is the
/// safe answer if it is ever registered for more).
pub fn respond(
    request: &AdmissionRequest<Pod>,
    namespace_labels: &BTreeMap<String, String>,
    config: &InjectConfig,
) -> (AdmissionResponse, Outcome) {
    let base = AdmissionResponse::from(request);
    let pod = match (&request.operation, &request.object) {
        (Operation::Create, Some(pod)) => pod,
        _ => return (base, Outcome::Unchanged("not a pod create")),
    };
    let namespace = request
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_default();
    let app_port = match decide(pod, &namespace, namespace_labels, config) {
        Decision::Skip(skip) => return (base, Outcome::Unchanged(skip.reason())),
        Decision::Refuse(message) => return (base.deny(&message), Outcome::Refused(message)),
        Decision::Inject { app_port } => app_port,
    };
    if let Some(volume) = conflicts(pod) {
        let message = format!(
            "pod {}: it already has a volume named {volume}, which the Tollgate sidecar needs; \
             rename it",
            pod_name(pod, &namespace)
        );
        return (base.deny(&message), Outcome::Refused(message));
    }
    let mutated = inject(pod, app_port, &workload(pod), config);
    // Both sides go through the same typed serialisation, so fields this operator's API
    // version does not know (and so would drop) appear in neither and are never touched.
    let (before, after) = match (serde_json::to_value(pod), serde_json::to_value(&mutated)) {
        (Ok(before), Ok(after)) => (before, after),
        (Err(e), _) | (_, Err(e)) => {
            let message = format!("cannot serialise the pod: {e}");
            return (base.deny(&message), Outcome::Refused(message));
        }
    };
    let patch = json_patch::diff(&before, &after);
    match base.clone().with_patch(patch) {
        Ok(response) => (response, Outcome::Injected),
        Err(e) => {
            let message = format!("cannot serialise the patch: {e}");
            (base.deny(&message), Outcome::Refused(message))
        }
    }
}

/// The response wrapped in the `AdmissionReview` the API server expects back.
pub fn into_review(response: AdmissionResponse) -> AdmissionReview<DynamicObject> {
    response.into_review()
}
