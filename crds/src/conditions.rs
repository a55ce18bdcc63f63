//! Standard conditions (`Accepted`, `ResolvedRefs`, `Ready`) for one object, from diagnostics.
//!
//! The operator writes these into `status.conditions`; standalone mode can log them. Times are
//! left to the caller: `lastTransitionTime` must only change when a status flips, which needs the
//! previous status, and this crate stays pure.

use crate::diagnostics::{Diagnostic, ObjectRef, Severity};
use crate::reasons::{self, is_unresolved_ref, withholds_readiness};
use crate::status::Condition;

/// Condition type: the object is syntactically and semantically valid (no conflicts).
pub const ACCEPTED: &str = "Accepted";
/// Condition type: every object it references exists and compiled.
pub const RESOLVED_REFS: &str = "ResolvedRefs";
/// Condition type: the object is in the routing table.
pub const READY: &str = "Ready";

/// Reason of `Accepted=True`.
pub const REASON_ACCEPTED: &str = "Accepted";
/// Reason of `ResolvedRefs=True`.
pub const REASON_RESOLVED_REFS: &str = "ResolvedRefs";
/// Reason of `Ready=True`.
pub const REASON_READY: &str = "Ready";
/// Reason of `Ready=True` when warnings were reported.
pub const REASON_READY_WITH_WARNINGS: &str = "ReadyWithWarnings";

/// Kubernetes caps condition messages at 32768 bytes.
const MAX_MESSAGE_BYTES: usize = 32_768;

/// The three conditions for `obj` (in the order Accepted, ResolvedRefs, Ready).
///
/// `Accepted` is False on any error that is not about a reference; `ResolvedRefs` is False on
/// `*NotFound`/`*NotReady` errors; `Ready` is True iff the object has no error at all and no
/// warning that [withholds readiness](withholds_readiness) (a subscription awaiting approval). A False
/// condition takes the reason of its first error (diagnostics are sorted, so this is stable) and
/// a message joining every relevant finding as `field: message`.
pub fn conditions_for(
    obj: &ObjectRef,
    generation: Option<i64>,
    diagnostics: &[Diagnostic],
) -> Vec<Condition> {
    let mine: Vec<&Diagnostic> = diagnostics.iter().filter(|d| &d.object == obj).collect();
    let errors: Vec<&Diagnostic> = mine
        .iter()
        .copied()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    // A held-back object's `InvalidSpecServingPrevious` says what is served; `Accepted` and
    // `ResolvedRefs` describe the current version (its own errors are reported alongside).
    let (held, current): (Vec<&Diagnostic>, Vec<&Diagnostic>) = errors
        .iter()
        .partition(|d| d.reason == reasons::INVALID_SPEC_SERVING_PREVIOUS);
    let (ref_errors, own_errors): (Vec<&Diagnostic>, Vec<&Diagnostic>) =
        current.iter().partition(|d| is_unresolved_ref(&d.reason));
    // `Ready` leads with it, so its reason says the object is still served.
    let ready_errors: Vec<&Diagnostic> = held.iter().chain(&current).copied().collect();
    let warnings: Vec<&Diagnostic> = mine
        .iter()
        .copied()
        .filter(|d| d.severity == Severity::Warning)
        .collect();

    let condition = |type_: &str, found: &[&Diagnostic], ok_reason: &str, ok_message: String| {
        let (status, reason, message) = match found.first() {
            Some(first) => ("False", first.reason.clone(), join(found)),
            None => ("True", ok_reason.to_string(), ok_message),
        };
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason,
            message,
            last_transition_time: None,
            observed_generation: generation,
        }
    };

    let (ready_reason, ready_message) = if warnings.is_empty() {
        (REASON_READY, "compiled into the routing table".to_string())
    } else {
        (REASON_READY_WITH_WARNINGS, join(&warnings))
    };
    // Errors say more than "awaiting approval" (approving would not make the object ready).
    let not_ready: Vec<&Diagnostic> = if errors.is_empty() {
        warnings
            .iter()
            .copied()
            .filter(|d| withholds_readiness(&d.reason))
            .collect()
    } else {
        ready_errors
    };
    vec![
        condition(ACCEPTED, &own_errors, REASON_ACCEPTED, "valid".to_string()),
        condition(
            RESOLVED_REFS,
            &ref_errors,
            REASON_RESOLVED_REFS,
            "all references resolved".to_string(),
        ),
        condition(READY, &not_ready, ready_reason, ready_message),
    ]
}

/// `field: message; field: message`, cut to the Kubernetes limit on a character boundary.
fn join(found: &[&Diagnostic]) -> String {
    let mut text = found
        .iter()
        .map(|d| format!("{}: {}", d.field, d.message))
        .collect::<Vec<_>>()
        .join("; ");
    if text.len() > MAX_MESSAGE_BYTES {
        let mut cut = MAX_MESSAGE_BYTES - 3;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reasons;

    fn obj(name: &str) -> ObjectRef {
        ObjectRef {
            kind: "Plan".into(),
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn diag(name: &str, severity: Severity, reason: &str) -> Diagnostic {
        Diagnostic {
            object: obj(name),
            severity,
            field: "spec.x".into(),
            reason: reason.into(),
            message: format!("{reason} happened"),
            file: None,
        }
    }

    fn status_of<'a>(conds: &'a [Condition], type_: &str) -> (&'a str, &'a str) {
        let c = conds
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition present");
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn a_held_back_object_is_not_ready_for_its_served_version_and_not_accepted_for_its_new_one() {
        let mut held = diag("a", Severity::Error, reasons::INVALID_SPEC_SERVING_PREVIOUS);
        held.field = "spec.z".into();
        held.message = "held back: serving generation 1".into();
        let conds = conditions_for(
            &obj("a"),
            Some(2),
            &[diag("a", Severity::Error, reasons::INVALID_ROUTE), held],
        );
        assert_eq!(
            status_of(&conds, READY),
            ("False", reasons::INVALID_SPEC_SERVING_PREVIOUS)
        );
        let ready = conds.iter().find(|c| c.type_ == READY).expect("Ready");
        assert!(
            ready
                .message
                .starts_with("spec.z: held back: serving generation 1"),
            "{}",
            ready.message
        );
        assert_eq!(
            status_of(&conds, ACCEPTED),
            ("False", reasons::INVALID_ROUTE)
        );
        assert_eq!(status_of(&conds, RESOLVED_REFS).0, "True");
    }

    #[test]
    fn clean_object_is_ready() {
        let conds = conditions_for(
            &obj("a"),
            Some(3),
            &[diag("b", Severity::Error, reasons::WEAK_KEY)],
        );
        assert_eq!(status_of(&conds, ACCEPTED), ("True", REASON_ACCEPTED));
        assert_eq!(
            status_of(&conds, RESOLVED_REFS),
            ("True", REASON_RESOLVED_REFS)
        );
        assert_eq!(status_of(&conds, READY), ("True", REASON_READY));
        assert!(conds.iter().all(|c| c.observed_generation == Some(3)));
        assert!(conds.iter().all(|c| c.last_transition_time.is_none()));
    }

    #[test]
    fn dangling_reference_is_unresolved_but_accepted() {
        let conds = conditions_for(
            &obj("a"),
            None,
            &[diag("a", Severity::Error, reasons::PRODUCT_NOT_FOUND)],
        );
        assert_eq!(status_of(&conds, ACCEPTED), ("True", REASON_ACCEPTED));
        assert_eq!(
            status_of(&conds, RESOLVED_REFS),
            ("False", reasons::PRODUCT_NOT_FOUND)
        );
        assert_eq!(
            status_of(&conds, READY),
            ("False", reasons::PRODUCT_NOT_FOUND)
        );
    }

    #[test]
    fn validation_error_is_not_accepted() {
        let conds = conditions_for(
            &obj("a"),
            None,
            &[
                diag("a", Severity::Error, reasons::INVALID_RATE_LIMIT),
                diag("a", Severity::Error, reasons::INVALID_QUOTA),
            ],
        );
        assert_eq!(
            status_of(&conds, ACCEPTED),
            ("False", reasons::INVALID_RATE_LIMIT)
        );
        assert_eq!(
            status_of(&conds, RESOLVED_REFS),
            ("True", REASON_RESOLVED_REFS)
        );
        let ready = conds.iter().find(|c| c.type_ == READY).expect("ready");
        assert_eq!(ready.status, "False");
        assert!(ready.message.contains("InvalidRateLimit happened"));
        assert!(ready.message.contains("InvalidQuota happened"));
    }

    #[test]
    fn both_kinds_of_error_split_between_conditions() {
        let conds = conditions_for(
            &obj("a"),
            None,
            &[
                diag("a", Severity::Error, reasons::INVALID_RATE_LIMIT),
                // A Plan naming a route its product lacks is a dangling reference.
                diag("a", Severity::Error, reasons::ROUTE_NOT_FOUND),
            ],
        );
        assert_eq!(
            status_of(&conds, ACCEPTED),
            ("False", reasons::INVALID_RATE_LIMIT)
        );
        assert_eq!(
            status_of(&conds, RESOLVED_REFS),
            ("False", reasons::ROUTE_NOT_FOUND)
        );
        assert_eq!(
            status_of(&conds, READY),
            ("False", reasons::INVALID_RATE_LIMIT)
        );
    }

    #[test]
    fn warnings_keep_it_ready() {
        let conds = conditions_for(
            &obj("a"),
            None,
            &[diag("a", Severity::Warning, reasons::IGNORED_KIND)],
        );
        assert_eq!(
            status_of(&conds, READY),
            ("True", REASON_READY_WITH_WARNINGS)
        );
    }

    #[test]
    fn awaiting_approval_is_accepted_but_not_ready() {
        let mut d = diag("a", Severity::Warning, reasons::AWAITING_APPROVAL);
        d.object.kind = "Subscription".into();
        let sub = d.object.clone();
        let conds = conditions_for(&sub, Some(2), &[d.clone()]);
        assert_eq!(status_of(&conds, ACCEPTED), ("True", REASON_ACCEPTED));
        assert_eq!(
            status_of(&conds, RESOLVED_REFS),
            ("True", REASON_RESOLVED_REFS)
        );
        assert_eq!(
            status_of(&conds, READY),
            ("False", reasons::AWAITING_APPROVAL)
        );
        let ready = conds.iter().find(|c| c.type_ == READY).expect("ready");
        assert_eq!(ready.message, "spec.x: AwaitingApproval happened");

        // An error alongside says more: approving would not make it ready.
        let mut e = diag("a", Severity::Error, reasons::WEAK_KEY);
        e.object = sub.clone();
        let conds = conditions_for(&sub, None, &[e, d]);
        assert_eq!(status_of(&conds, READY), ("False", reasons::WEAK_KEY));
    }

    #[test]
    fn long_messages_are_cut() {
        let mut d = diag("a", Severity::Error, reasons::WEAK_KEY);
        d.message = "é".repeat(40_000);
        let conds = conditions_for(&obj("a"), None, &[d]);
        assert!(conds.iter().all(|c| c.message.len() <= MAX_MESSAGE_BYTES));
    }
}
