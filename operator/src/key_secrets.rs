//! Key Secrets: create `<name>-keys` for Subscriptions that want generated keys, and rotate one
//! key when a Subscription carries `tollgate.dev/rotate: primary|secondary`.
//!
//! # Guarantees
//!
//! - Key material goes only into the Secret's `stringData`; it is never logged, put in an Event
//!   or a status, or included in an error (errors carry the object's name only).
//! - The generated Secret is owned by its Subscription (`controller: true`), so deleting the
//!   Subscription garbage-collects its keys.
//! - Rotation replaces exactly one key; the other keeps working, so callers can switch over.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef as StoreRef;
use kube::{Api, Client, Resource, ResourceExt};
use tollgate_crds::subscription::{PRIMARY_KEY, SECONDARY_KEY};
use tollgate_crds::Subscription;

use crate::gather::{Watched, KEYS_LABEL};
use crate::keys;
use crate::status::FIELD_MANAGER;
use crate::{Error, Result};

/// Annotation that asks for one key to be regenerated; the operator removes it when done.
pub const ROTATE_ANNOTATION: &str = "tollgate.dev/rotate";

/// Annotation stating how long the replaced key should stay valid after a rotation
/// (e.g. `30m`, `24h`, `1h30m`; absent or `0` = immediately invalid, as before).
pub const ROTATE_GRACE_ANNOTATION: &str = "tollgate.dev/rotate-grace";

/// Longest grace accepted: a week is enough to move every caller, and a bound keeps a typo
/// (`300d`) from leaving a leaked key alive for months.
pub const MAX_ROTATE_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Parse a rotate grace: one or more `<digits><unit>` parts with units `s`, `m`, `h`, `d`
/// (`90s`, `30m`, `1h30m`, `7d`), or a bare `0`. At most [`MAX_ROTATE_GRACE`].
///
/// # Errors
///
/// A message naming the annotation and the value, for the Subscription's Event.
pub fn parse_rotate_grace(value: &str) -> std::result::Result<Duration, String> {
    let bad = |why: &str| {
        format!(
            "metadata.annotations[{ROTATE_GRACE_ANNOTATION}]: {value:?} {why}; \
             use a duration like 30m, 24h or 1h30m (at most 7d), or 0"
        )
    };
    let text = value.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(bad("is empty"));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 24 * 3600,
            _ => return Err(bad(&format!("has an unknown unit {c:?}"))),
        };
        if digits.is_empty() {
            return Err(bad("has a unit without a number"));
        }
        // Numbers that overflow are far above the maximum anyway.
        let n: u64 = digits.parse().map_err(|_| bad("is too long"))?;
        total = n
            .checked_mul(unit)
            .and_then(|secs| total.checked_add(secs))
            .ok_or_else(|| bad("is too long"))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(bad("ends with a number without a unit"));
    }
    let grace = Duration::from_secs(total);
    if grace > MAX_ROTATE_GRACE {
        return Err(bad("is longer than 7d"));
    }
    Ok(grace)
}

/// Which of the two keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// `primaryKey`.
    Primary,
    /// `secondaryKey`.
    Secondary,
}

impl Slot {
    /// The Secret data key of this slot.
    pub fn data_key(self) -> &'static str {
        match self {
            Slot::Primary => PRIMARY_KEY,
            Slot::Secondary => SECONDARY_KEY,
        }
    }
}

/// What one Subscription needs (pure decision, see [`plan`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyAction {
    /// Create `<name>-keys` with fresh keys (and drop any rotate annotation: the keys are new).
    Create {
        /// Whether a rotate annotation must be removed as well.
        clear_annotation: bool,
    },
    /// Regenerate one key, then remove the annotation.
    Rotate(Slot),
    /// The annotation cannot be honoured; say why in an Event and remove it.
    RefuseRotate(String),
}

/// Whether the operator manages this Subscription's keys (no `keys.secretRef`).
pub fn generates_keys(sub: &Subscription) -> bool {
    sub.spec
        .keys
        .as_ref()
        .and_then(|k| k.secret_ref.as_ref())
        .is_none()
}

/// What to do for `sub`, given whether its key Secret exists.
pub fn decide(sub: &Subscription, secret_exists: bool) -> Option<KeyAction> {
    let rotate = sub.annotations().get(ROTATE_ANNOTATION).map(String::as_str);
    if !generates_keys(sub) {
        return rotate.map(|_| {
            KeyAction::RefuseRotate(format!(
                "metadata.annotations[{ROTATE_ANNOTATION}]: this Subscription brings its own keys \
                 (spec.keys.secretRef); change them in Secret {} instead",
                sub.key_secret_name()
            ))
        });
    }
    if !secret_exists {
        return Some(KeyAction::Create {
            clear_annotation: rotate.is_some(),
        });
    }
    let rotate = rotate?;
    // The grace is checked before anything rotates: a malformed value must not silently
    // become an immediate rotation that cuts callers off.
    if let Some(grace) = sub.annotations().get(ROTATE_GRACE_ANNOTATION) {
        match parse_rotate_grace(grace) {
            Err(message) => return Some(KeyAction::RefuseRotate(message)),
            // The proxy cannot yet keep a replaced key valid for a while, so a requested grace
            // is refused rather than honoured as an immediate rotation (an outage the
            // provider explicitly asked to avoid).
            Ok(g) if !g.is_zero() => {
                return Some(KeyAction::RefuseRotate(format!(
                    "metadata.annotations[{ROTATE_GRACE_ANNOTATION}]: a grace period is not \
                     supported yet; the key was not rotated (remove the annotation or set 0 \
                     to rotate immediately)"
                )))
            }
            Ok(_) => {}
        }
    }
    match rotate {
        "primary" => Some(KeyAction::Rotate(Slot::Primary)),
        "secondary" => Some(KeyAction::Rotate(Slot::Secondary)),
        other => Some(KeyAction::RefuseRotate(format!(
            "metadata.annotations[{ROTATE_ANNOTATION}]: {other:?} is not a key slot; \
             use primary or secondary"
        ))),
    }
}

/// Every Subscription that needs a key action, with the action.
///
/// `subscriptions` are the ones about to be compiled (so none is compiled before its keys were
/// considered); `secrets` is the watch cache, the freshest view of which Secrets exist.
pub fn plan(
    subscriptions: &[Subscription],
    secrets: &Watched<Secret>,
) -> Vec<(Subscription, KeyAction)> {
    subscriptions
        .iter()
        .filter_map(|sub| {
            let ns = sub.namespace().unwrap_or_default();
            let exists = secrets
                .get(&StoreRef::new(&sub.key_secret_name()).within(&ns))
                .is_some();
            decide(sub, exists).map(|a| (sub.clone(), a))
        })
        .collect()
}

fn describe(sub: &Subscription) -> String {
    format!(
        "Subscription {}/{}",
        sub.namespace().unwrap_or_default(),
        sub.name_any()
    )
}

fn fresh_key(sub: &Subscription) -> Result<String> {
    keys::generate().map_err(|source| Error::Rng {
        object: describe(sub),
        source,
    })
}

/// Create `<name>-keys` for `sub`: `Ok(true)` when created, `Ok(false)` when a Secret of that
/// name already existed (it is left alone).
///
/// # Errors
///
/// [`Error::MissingField`] without a uid (needed for the owner reference), [`Error::Rng`],
/// [`Error::Kube`] when the API server refuses.
pub async fn create(client: &Client, sub: &Subscription) -> Result<bool> {
    let ns = sub.namespace().unwrap_or_default();
    let uid = sub.uid().ok_or_else(|| Error::MissingField {
        object: describe(sub),
        field: "metadata.uid",
    })?;
    let name = sub.key_secret_name();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: Some(BTreeMap::from([(
                KEYS_LABEL.to_string(),
                "true".to_string(),
            )])),
            owner_references: Some(vec![OwnerReference {
                api_version: Subscription::api_version(&()).into_owned(),
                kind: Subscription::kind(&()).into_owned(),
                name: sub.name_any(),
                uid,
                controller: Some(true),
                // Leaving blockOwnerDeletion unset spares the operator the
                // `subscriptions/finalizers` permission it would otherwise need.
                block_owner_deletion: None,
            }]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([
            (PRIMARY_KEY.to_string(), fresh_key(sub)?),
            (SECONDARY_KEY.to_string(), fresh_key(sub)?),
        ])),
        ..Secret::default()
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&params, &secret).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(source) => Err(Error::Kube {
            action: "create key Secret for",
            object: describe(sub),
            source,
        }),
    }
}

/// Replace one key in `sub`'s key Secret.
///
/// # Errors
///
/// [`Error::Rng`], or [`Error::Kube`] naming the Secret.
pub async fn rotate(client: &Client, sub: &Subscription, slot: Slot) -> Result<()> {
    let ns = sub.namespace().unwrap_or_default();
    let name = sub.key_secret_name();
    let patch = serde_json::json!({ "stringData": { slot.data_key(): fresh_key(sub)? } });
    Api::<Secret>::namespaced(client.clone(), &ns)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|source| Error::Kube {
            action: "rotate a key in",
            object: format!("Secret {ns}/{name}"),
            source,
        })?;
    Ok(())
}

/// Remove the rotate annotation (JSON merge patch with `null`).
///
/// # Errors
///
/// [`Error::Kube`] naming the Subscription.
pub async fn clear_annotation(client: &Client, sub: &Subscription) -> Result<()> {
    let ns = sub.namespace().unwrap_or_default();
    let patch = serde_json::json!({ "metadata": { "annotations": { ROTATE_ANNOTATION: null } } });
    Api::<Subscription>::namespaced(client.clone(), &ns)
        .patch(
            &sub.name_any(),
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|source| Error::Kube {
            action: "remove the rotate annotation from",
            object: describe(sub),
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_crds::subscription::{Keys, SecretRef, Subscriber, SubscriptionSpec};

    fn sub(keys: Option<Keys>, rotate: Option<&str>) -> Subscription {
        let mut s = Subscription::new(
            "acme",
            SubscriptionSpec {
                plan: "free".into(),
                subscriber: Subscriber {
                    name: "Acme".into(),
                    email: None,
                },
                state: Default::default(),
                keys,
                client_certificates: vec![],
                jwt_subjects: vec![],
                allowed_source_ranges: vec![],
                expires_at: None,
            },
        );
        s.metadata.namespace = Some("ns".into());
        if let Some(r) = rotate {
            s.metadata.annotations = Some(BTreeMap::from([(ROTATE_ANNOTATION.into(), r.into())]));
        }
        s
    }

    fn byo() -> Option<Keys> {
        Some(Keys {
            secret_ref: Some(SecretRef {
                name: "mine".into(),
            }),
            generate: None,
        })
    }

    #[test]
    fn generated_keys_are_created_once() {
        assert_eq!(
            decide(&sub(None, None), false),
            Some(KeyAction::Create {
                clear_annotation: false
            })
        );
        assert_eq!(decide(&sub(None, None), true), None);
        assert_eq!(decide(&sub(byo(), None), false), None);
    }

    fn with_grace(mut s: Subscription, grace: &str) -> Subscription {
        s.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(ROTATE_GRACE_ANNOTATION.into(), grace.into());
        s
    }

    #[test]
    fn rotate_grace_parses_durations_up_to_a_week() {
        assert_eq!(parse_rotate_grace("0"), Ok(Duration::ZERO));
        assert_eq!(parse_rotate_grace("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_rotate_grace("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_rotate_grace("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_rotate_grace("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_rotate_grace("7d"), Ok(MAX_ROTATE_GRACE));
        for (bad, why) in [
            ("", "is empty"),
            ("8d", "longer than 7d"),
            ("169h", "longer than 7d"),
            ("30", "without a unit"),
            ("m", "without a number"),
            ("30x", "unknown unit"),
            ("-5m", "unknown unit"),
            ("99999999999999999999999s", "too long"),
            ("9999999999999999d", "too long"),
        ] {
            let err = parse_rotate_grace(bad).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(err.contains(ROTATE_GRACE_ANNOTATION), "{err}");
        }
    }

    #[test]
    fn a_grace_never_becomes_an_immediate_rotation() {
        let primary = || sub(None, Some("primary"));
        assert_eq!(
            decide(&with_grace(primary(), "0"), true),
            Some(KeyAction::Rotate(Slot::Primary))
        );
        assert!(matches!(
            decide(&with_grace(primary(), "30"), true),
            Some(KeyAction::RefuseRotate(m)) if m.contains("without a unit")
        ));
        assert!(matches!(
            decide(&with_grace(primary(), "30m"), true),
            Some(KeyAction::RefuseRotate(m)) if m.contains("not supported yet")
        ));
        // Without a rotate annotation the grace alone does nothing.
        assert_eq!(decide(&with_grace(sub(None, None), "30m"), true), None);
    }

    #[test]
    fn rotation_is_decided_by_the_annotation() {
        assert_eq!(
            decide(&sub(None, Some("primary")), true),
            Some(KeyAction::Rotate(Slot::Primary))
        );
        assert_eq!(
            decide(&sub(None, Some("secondary")), true),
            Some(KeyAction::Rotate(Slot::Secondary))
        );
        assert!(matches!(
            decide(&sub(None, Some("both")), true),
            Some(KeyAction::RefuseRotate(m)) if m.contains("primary or secondary")
        ));
        assert!(matches!(
            decide(&sub(byo(), Some("primary")), true),
            Some(KeyAction::RefuseRotate(m)) if m.contains("Secret mine")
        ));
        assert_eq!(
            decide(&sub(None, Some("primary")), false),
            Some(KeyAction::Create {
                clear_annotation: true
            })
        );
    }
}
