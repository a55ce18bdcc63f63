//! Subscription → [`SubscriptionEntry`]: its plan, its keys (as digests only), then key uniqueness.
//!
//! No message written here may contain key material: keys are named by their Secret and data key
//! (`primaryKey`), never by value or by a prefix of it.

use std::collections::HashMap;

use chrono::SecondsFormat;
use k8s_openapi::api::core::v1::Secret;

use super::policies::cidrs;
use super::secrets::Secrets;
use super::{
    object_id, suggestion, Input, Lookup, Outcome, Outcomes, Rejected, Report, MIN_KEY_CHARS,
};
use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::key_grace::{self, GracedRecord, GRACED_KEYS_ANNOTATION};
use crate::reasons;
use crate::secret_data::secret_value;
use crate::subscription::{Subscription, SubscriptionState, PRIMARY_KEY, SECONDARY_KEY};
use crate::syntax::normalize_fingerprint;
use crate::table::{key_digest, GracedKey, PlanEntry, SubscriptionEntry, UnavailableEntry};

/// CRD limits re-checked for standalone mode.
const MAX_LIST: usize = 256;
const MAX_SUBSCRIBER_NAME: usize = 256;

/// Compile every Subscription: each on its own first, then settle shared keys oldest-first.
///
/// Also returns the active Subscriptions left out for a reason of their own or of their Plan
/// (a provider-side configuration error) whose keys could be read, as [`UnavailableEntry`]s, so
/// that their callers are told the API is misconfigured rather than that their key is wrong.
/// Left out of that list: suspended and cancelled Subscriptions (their callers must not hear
/// that the key is valid), those that lost a key to an older owner (`DuplicateKey`: the digest
/// belongs to the owner), and any digest a compiled Subscription serves.
pub(crate) fn compile(
    inputs: &[Input<'_, Subscription>],
    plans: &Outcomes<PlanEntry>,
    secrets: &Secrets<'_>,
    rejected: &Rejected<'_>,
    out: &mut Vec<Diagnostic>,
) -> (Outcomes<SubscriptionEntry>, Vec<UnavailableEntry>) {
    let find_secret = |namespace: &str, name: &str| secrets.find(namespace, name);

    let mut outcomes = Outcomes::default();
    let mut candidates = Vec::new();
    let mut unavailable = Vec::new();
    for input in inputs {
        let mut report = Report::new(&input.object, out);
        let (entry, readable) = compile_one(input, plans, &find_secret, rejected, &mut report);
        match report.finish(entry) {
            Outcome::Compiled(entry) => candidates.push((input, entry)),
            Outcome::Failed(reason) => {
                if input.value.spec.state == SubscriptionState::Active && !readable.is_empty() {
                    unavailable.push(UnavailableEntry {
                        id: input.id(),
                        key_digests: readable,
                    });
                }
                outcomes.insert(&input.object, Outcome::Failed(reason))
            }
        }
    }

    // Oldest first: a key already in use keeps working for its first owner whatever is added later.
    // Stable: equal ages stay in (namespace, name) order.
    candidates.sort_by(|(a, _), (b, _)| a.age_key().cmp(&b.age_key()));
    // Only looked up and inserted, never iterated: a HashMap keeps the result deterministic.
    let mut owners: HashMap<String, &ObjectRef> = HashMap::with_capacity(candidates.len() * 2);
    for (
        input,
        Candidate {
            entry,
            data_keys,
            secret,
        },
    ) in candidates
    {
        let mut report = Report::new(&input.object, out);
        for (digest, data_key) in entry.key_digests.iter().zip(&data_keys) {
            if let Some(owner) = owners.get(digest) {
                let label = format!("{data_key} in Secret {secret}");
                // Naming a subscription of another namespace would tell one tenant about another.
                let owner = if owner.namespace == input.object.namespace {
                    format!("Subscription {}", object_id(&owner.namespace, &owner.name))
                } else {
                    "a subscription in another namespace".to_string()
                };
                report.error(
                    "spec.keys",
                    reasons::DUPLICATE_KEY,
                    format!(
                        "{label} is already used by {owner}, which is older; every subscription needs \
                         its own keys: put new random keys in the Secret (e.g. `openssl rand -hex 24`)"
                    ),
                );
            }
        }
        let failed = report.has_errors();
        if !failed {
            for digest in &entry.key_digests {
                owners.insert(digest.clone(), &input.object);
            }
        }
        outcomes.insert(&input.object, report.finish(Some(entry)));
    }
    // A digest a served Subscription owns is answered by that Subscription.
    for u in &mut unavailable {
        u.key_digests.retain(|d| !owners.contains_key(d));
    }
    unavailable.retain(|u| !u.key_digests.is_empty());
    unavailable.sort_by(|a, b| a.id.cmp(&b.id));
    (outcomes, unavailable)
}

/// A subscription that compiled on its own, before keys are checked for uniqueness.
struct Candidate {
    entry: SubscriptionEntry,
    /// Per digest (same order): which data key it came from, for key-free messages.
    data_keys: Vec<&'static str>,
    /// `namespace/name` of the key Secret.
    secret: String,
}

fn compile_one<'s>(
    input: &Input<'_, Subscription>,
    plans: &Outcomes<PlanEntry>,
    find_secret: &impl Fn(&str, &str) -> Option<&'s Secret>,
    rejected: &Rejected<'_>,
    report: &mut Report<'_>,
) -> (Option<Candidate>, Vec<String>) {
    let subscription = input.value;
    let spec = &subscription.spec;
    let namespace = &input.object.namespace;
    let plan_id = object_id(namespace, &spec.plan);

    let plan = match plans.lookup(namespace, &spec.plan) {
        Lookup::Ready(plan) => Some(plan),
        _ if spec.plan.is_empty() => {
            report.error(
                "spec.plan",
                reasons::INVALID_FIELD,
                "spec.plan is empty; set it to the name of a Plan in the same namespace",
            );
            None
        }
        Lookup::NotReady(reason) => {
            report.error(
                "spec.plan",
                reasons::PLAN_NOT_READY,
                format!("Plan {plan_id} did not compile ({reason}); fix it first (see its own diagnostics)"),
            );
            None
        }
        Lookup::NotFound if rejected.contains("Plan", namespace, &spec.plan) => {
            report.error(
                "spec.plan",
                reasons::PLAN_NOT_READY,
                format!("Plan {plan_id} could not be read; fix the error reported for it"),
            );
            None
        }
        Lookup::NotFound => {
            report.error(
                "spec.plan",
                reasons::PLAN_NOT_FOUND,
                format!(
                    "Plan {plan_id} does not exist{}; create it or set spec.plan to a Plan in namespace {namespace}",
                    suggestion(&spec.plan, plans.names_in(namespace))
                ),
            );
            None
        }
    };

    if spec.subscriber.name.is_empty() || spec.subscriber.name.chars().count() > MAX_SUBSCRIBER_NAME
    {
        report.error(
            "spec.subscriber.name",
            reasons::INVALID_FIELD,
            format!("subscriber.name must be 1 to {MAX_SUBSCRIBER_NAME} characters; name the organisation or person"),
        );
    }

    let keys = spec.keys.clone().unwrap_or_default();
    if keys.secret_ref.is_some() && keys.generate == Some(true) {
        report.error(
            "spec.keys",
            reasons::INVALID_KEYS,
            "set either keys.secretRef (bring your own Secret) or keys.generate: true, not both",
        );
    }
    let secret_name = subscription.key_secret_name();
    let secret_id = object_id(namespace, &secret_name);
    let secret_field = if keys.secret_ref.is_some() {
        "spec.keys.secretRef.name"
    } else {
        "spec.keys"
    };
    let mut digests: Vec<(String, &'static str)> = Vec::new();
    let mut graced: Vec<GracedRecord> = Vec::new();
    match find_secret(namespace, &secret_name) {
        None if rejected.contains("Secret", namespace, &secret_name) => report.error(
            secret_field,
            reasons::SECRET_NOT_FOUND,
            format!("Secret {secret_id} could not be read; fix the error reported for it"),
        ),
        None => report.error(
            secret_field,
            reasons::SECRET_NOT_FOUND,
            format!(
                "Secret {secret_id} with this subscription's keys does not exist. In a cluster the \
                 operator generates it; in standalone mode add a Secret named {secret_name} with \
                 stringData.{PRIMARY_KEY} (and optionally {SECONDARY_KEY}) to the manifest directory, \
                 or set spec.keys.secretRef to an existing Secret"
            ),
        ),
        Some(secret) => {
            for (data_key, required) in [(PRIMARY_KEY, true), (SECONDARY_KEY, false)] {
                let label = || format!("{data_key} in Secret {secret_id}");
                match secret_value(secret, data_key) {
                    None if required => report.error(
                        secret_field,
                        reasons::INVALID_KEY_SECRET,
                        format!("Secret {secret_id} has no {PRIMARY_KEY}; add one (stringData.{PRIMARY_KEY}: <random text of at least {MIN_KEY_CHARS} characters>)"),
                    ),
                    None => {}
                    Some(bytes) => match check_key(bytes) {
                        Ok(key) => digests.push((key_digest(key), data_key)),
                        Err(KeyProblem::Weak) => report.error(
                            secret_field,
                            reasons::WEAK_KEY,
                            format!("{} is shorter than {MIN_KEY_CHARS} characters; use a long random key (e.g. `openssl rand -hex 24`)", label()),
                        ),
                        Err(KeyProblem::Invalid(why)) => report.error(
                            secret_field,
                            reasons::INVALID_KEY_SECRET,
                            format!("{} {why}", label()),
                        ),
                    },
                }
            }
            graced = graced_keys(secret, &secret_id, secret_field, report);
        }
    }

    if spec.client_certificates.len() > MAX_LIST {
        report.error(
            "spec.clientCertificates",
            reasons::INVALID_CLIENT_CERTIFICATE,
            format!("at most {MAX_LIST} fingerprints are allowed"),
        );
    }
    let mut client_certificates = Vec::new();
    for (i, fp) in spec.client_certificates.iter().enumerate() {
        match normalize_fingerprint(fp) {
            Some(fp) => client_certificates.push(fp),
            None => report.error(
                format!("spec.clientCertificates[{i}]"),
                reasons::INVALID_CLIENT_CERTIFICATE,
                "not a SHA-256 fingerprint: write 64 hex digits, optionally colon-separated \
                 (`openssl x509 -noout -fingerprint -sha256 -in cert.pem`)",
            ),
        }
    }
    client_certificates.sort();
    client_certificates.dedup();

    if spec.allowed_source_ranges.len() > MAX_LIST {
        report.error(
            "spec.allowedSourceRanges",
            reasons::INVALID_CIDR,
            format!("at most {MAX_LIST} ranges are allowed; use wider CIDRs"),
        );
    }
    let allowed_source_ranges = cidrs(
        &spec.allowed_source_ranges,
        "spec.allowedSourceRanges",
        report,
    );

    let mut jwt_subjects = spec.jwt_subjects.clone();
    jwt_subjects.sort();
    jwt_subjects.dedup();

    // Sorted by digest (the table's order); data keys follow their digest. Primary and secondary
    // may be equal: one digest is enough.
    digests.sort();
    digests.dedup_by(|a, b| a.0 == b.0);
    // A current key is valid anyway; its digest is not graced a second time.
    graced.retain(|g| !digests.iter().any(|(d, _)| *d == g.digest));
    // Each one is a warning with its instant: what the Subscription's `Ready` message shows.
    for g in &graced {
        report.warning(
            secret_field,
            reasons::PREVIOUS_KEY_VALID,
            format!(
                "the previous {} of Secret {secret_id} stays valid until {} (rotated with a \
                 grace); move callers to the current key before then",
                g.slot,
                g.valid_until.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
        );
    }
    let mut graced_keys: Vec<GracedKey> = graced.iter().map(GracedRecord::to_table).collect();
    graced_keys.sort_by(|a, b| a.digest.cmp(&b.digest));
    graced_keys.dedup_by(|a, b| a.digest == b.digest);
    let (key_digests, data_keys): (Vec<String>, Vec<&'static str>) = digests.into_iter().unzip();
    let Some(plan) = plan.filter(|_| !report.has_errors()) else {
        return (None, key_digests);
    };
    // Pending is not an error: the subscription is in the table (its keys known, so its callers
    // get 403 "awaiting approval" instead of 401 "unknown key") and `check` passes; the warning
    // reason keeps its `Ready` condition False (see `reasons::withholds_readiness`).
    let pending_approval = plan.approval_required && !spec.approved;
    if pending_approval {
        let (ns, name) = (&input.object.namespace, &input.object.name);
        report.warning(
            "spec.approved",
            reasons::AWAITING_APPROVAL,
            format!(
                "Plan {plan_id} requires approval, so this subscription's callers get 403 \
                 subscription-pending-approval until the provider approves it: set spec.approved: true \
                 (`kubectl patch subscription {name} -n {ns} --type merge -p '{{\"spec\":{{\"approved\":true}}}}'`)"
            ),
        );
    }
    let candidate = Candidate {
        entry: SubscriptionEntry {
            id: input.id(),
            plan: plan.id.clone(),
            product: plan.product.clone(),
            state: spec.state,
            key_digests,
            graced_keys,
            expires_at: spec.expires_at,
            client_certificates,
            jwt_subjects,
            allowed_source_ranges,
            pending_approval,
        },
        data_keys,
        secret: secret_id,
    };
    (Some(candidate), Vec::new())
}

/// The replaced keys the key Secret's [`GRACED_KEYS_ANNOTATION`] keeps valid. A malformed
/// annotation keeps none valid (fail closed) and says so.
fn graced_keys(
    secret: &Secret,
    secret_id: &str,
    field: &str,
    report: &mut Report<'_>,
) -> Vec<GracedRecord> {
    let Some(value) = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(GRACED_KEYS_ANNOTATION))
    else {
        return Vec::new();
    };
    match key_grace::parse(value) {
        Ok(records) => records,
        Err(e) => {
            report.warning(
                field,
                reasons::INVALID_KEY_SECRET,
                format!(
                    "Secret {secret_id}: annotation {GRACED_KEYS_ANNOTATION} {e}; no replaced key \
                     is kept valid (the operator writes this annotation; remove it)"
                ),
            );
            Vec::new()
        }
    }
}

/// Why a key cannot be used; never carries the key.
#[derive(Debug, PartialEq)]
enum KeyProblem {
    /// Shorter than [`MIN_KEY_CHARS`].
    Weak,
    /// Unusable; the text completes "primaryKey in Secret ns/x …".
    Invalid(&'static str),
}

/// Keys travel in headers and query strings, so they must be visible ASCII without spaces.
fn check_key(bytes: &[u8]) -> Result<&str, KeyProblem> {
    let key = std::str::from_utf8(bytes).map_err(|_| {
        KeyProblem::Invalid(
            "is not UTF-8 text; use printable characters (e.g. `openssl rand -hex 24`)",
        )
    })?;
    if key.is_empty() {
        return Err(KeyProblem::Invalid(
            "is empty; put a long random key in it (e.g. `openssl rand -hex 24`)",
        ));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(KeyProblem::Invalid(
            "contains spaces, line breaks or control characters; remove them (a trailing newline \
             from `echo` is a common cause: use `echo -n` or stringData)",
        ));
    }
    if !key.is_ascii() {
        return Err(KeyProblem::Invalid(
            "contains non-ASCII characters, which cannot travel reliably in a header; use e.g. `openssl rand -hex 24`",
        ));
    }
    if key.chars().count() < MIN_KEY_CHARS {
        return Err(KeyProblem::Weak);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(check_key(b"0123456789abcdef"), Ok("0123456789abcdef"));
        assert_eq!(check_key(b"short"), Err(KeyProblem::Weak));
        assert!(matches!(check_key(b""), Err(KeyProblem::Invalid(_))));
        assert!(matches!(
            check_key(b"0123456789abcdef\n"),
            Err(KeyProblem::Invalid(_))
        ));
        assert!(matches!(
            check_key(&[0xff; 20]),
            Err(KeyProblem::Invalid(_))
        ));
        assert!(matches!(
            check_key("clé-secrète-très-longue".as_bytes()),
            Err(KeyProblem::Invalid(_))
        ));
    }
}
