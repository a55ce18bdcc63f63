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
//! - With `tollgate.dev/rotate-grace`, the replaced key's digest (never the key) is recorded
//!   on the Secret ([`GRACED_KEYS_ANNOTATION`]) with the instant it stops working, in the same
//!   write that replaces the key; proxies accept it until then, and [`expiry_plan`] finds the
//!   records to remove once it has passed.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef as StoreRef;
use kube::{Api, Client, Resource, ResourceExt};
use tollgate_crds::key_grace::{self, GracedRecord, GRACED_KEYS_ANNOTATION};
use tollgate_crds::subscription::{PRIMARY_KEY, SECONDARY_KEY};
use tollgate_crds::table::key_digest;
use tollgate_crds::Subscription;

use crate::gather::KEYS_LABEL;
use crate::keys;
use crate::status::FIELD_MANAGER;
use crate::watched::Watched;
use crate::{Error, Result};

/// Annotation that asks for one key to be regenerated; the operator removes it when done.
pub const ROTATE_ANNOTATION: &str = "tollgate.dev/rotate";

/// Annotation stating how long the replaced key stays valid after a rotation
/// (e.g. `90s`, `30m`, `24h`, `1h30m`; absent or `0` = immediately invalid).
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
    /// Regenerate one key (the replaced one staying valid for `grace`), then remove the
    /// annotation.
    Rotate {
        /// Which key.
        slot: Slot,
        /// How long the replaced key stays valid (zero: not at all).
        grace: Duration,
    },
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
    let grace = match sub.annotations().get(ROTATE_GRACE_ANNOTATION) {
        None => Duration::ZERO,
        Some(value) => match parse_rotate_grace(value) {
            Ok(grace) => grace,
            Err(message) => return Some(KeyAction::RefuseRotate(message)),
        },
    };
    let slot = match rotate {
        "primary" => Slot::Primary,
        "secondary" => Slot::Secondary,
        other => {
            return Some(KeyAction::RefuseRotate(format!(
                "metadata.annotations[{ROTATE_ANNOTATION}]: {other:?} is not a key slot; \
                 use primary or secondary"
            )))
        }
    };
    Some(KeyAction::Rotate { slot, grace })
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

/// The value of `data_key` in `secret` (`data`, or `stringData` of an object not yet stored).
fn secret_value<'a>(secret: &'a Secret, data_key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(data_key))
        .map(|b| b.0.as_slice())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(data_key))
                .map(|s| s.as_bytes())
        })
}

/// The graced records of `secret` (none when absent or malformed: a malformed record is
/// replaced by the next write, and the compiler already reports it).
fn graced_records(secret: &Secret) -> Vec<GracedRecord> {
    secret
        .annotations()
        .get(GRACED_KEYS_ANNOTATION)
        .and_then(|v| key_grace::parse(v).ok())
        .unwrap_or_default()
}

/// Whole seconds: instants people read in statuses and Events.
fn now_in_seconds() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now)
}

/// The merge patch that puts `new_key` in `slot` of `current` (the Secret as just read) and, with
/// a non-zero `grace`, graces the replaced key's digest until `now + grace` (pure).
///
/// With a grace the patch carries `current`'s `resourceVersion`, so it applies only to the
/// Secret whose key is graced: a stale cache or a concurrent change makes it fail (409) and the
/// next pass starts over, rather than grace a key that was no longer the one replaced.
/// Returns the patch and the instant the replaced key stops working (`None`: immediately).
pub fn rotation_patch(
    current: &Secret,
    slot: Slot,
    new_key: &str,
    now: DateTime<Utc>,
    grace: Duration,
) -> (serde_json::Value, Option<DateTime<Utc>>) {
    let mut patch = serde_json::json!({ "stringData": { slot.data_key(): new_key } });
    // A key that is not text was refused by the compiler: nothing to keep valid.
    let old = secret_value(current, slot.data_key()).and_then(|b| std::str::from_utf8(b).ok());
    let Some(old) = old.filter(|_| !grace.is_zero()) else {
        return (patch, None);
    };
    // `grace` is at most MAX_ROTATE_GRACE (7 days), far inside chrono's range.
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::zero());
    let records = key_grace::after_rotation(
        &graced_records(current),
        slot.data_key(),
        &key_digest(old),
        now,
        grace,
    );
    patch["metadata"] = serde_json::json!({
        "resourceVersion": current.resource_version(),
        "annotations": { GRACED_KEYS_ANNOTATION: key_grace::render(&records) },
    });
    (patch, Some(now + grace))
}

/// Replace one key in `sub`'s key Secret `current` (as the watch cache has it); with a non-zero
/// `grace` the replaced key stays valid until the returned instant.
///
/// # Errors
///
/// [`Error::Rng`], or [`Error::Kube`] naming the Secret (a 409 when the cache was behind: the
/// next pass, on the newer Secret, rotates).
pub async fn rotate(
    client: &Client,
    sub: &Subscription,
    current: &Secret,
    slot: Slot,
    grace: Duration,
) -> Result<Option<DateTime<Utc>>> {
    let ns = sub.namespace().unwrap_or_default();
    let name = sub.key_secret_name();
    let (patch, valid_until) =
        rotation_patch(current, slot, &fresh_key(sub)?, now_in_seconds(), grace);
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
    Ok(valid_until)
}

/// One key Secret whose expired graced records must go.
#[derive(Clone, Debug, PartialEq)]
pub struct Expired {
    /// Namespace of the Secret.
    pub namespace: String,
    /// Name of the Secret.
    pub name: String,
    /// The Secret's `resourceVersion` the records were read from.
    pub resource_version: Option<String>,
    /// The annotation's new value (`None`: remove it).
    pub keep: Option<String>,
}

/// Which key Secrets hold graced records that expired at `now`, and when the next one that has
/// not expires (when the operator must look again) (pure).
pub fn expiry_plan<'a>(
    secrets: impl IntoIterator<Item = &'a Secret>,
    now: DateTime<Utc>,
) -> (Vec<Expired>, Option<DateTime<Utc>>) {
    let mut expired = Vec::new();
    let mut next: Option<DateTime<Utc>> = None;
    for secret in secrets {
        if !secret.annotations().contains_key(GRACED_KEYS_ANNOTATION) {
            continue;
        }
        let records = graced_records(secret);
        let kept = key_grace::unexpired(&records, now);
        if let Some(at) = key_grace::next_expiry(&kept) {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        if kept.len() != records.len() {
            expired.push(Expired {
                namespace: secret.namespace().unwrap_or_default(),
                name: secret.name_any(),
                resource_version: secret.resource_version(),
                keep: key_grace::render(&kept),
            });
        }
    }
    (expired, next)
}

/// Write `expired`'s remaining records (merge patch, only if the Secret is unchanged).
///
/// # Errors
///
/// [`Error::Kube`] naming the Secret.
pub async fn remove_expired(client: &Client, expired: &Expired) -> Result<()> {
    let patch = serde_json::json!({ "metadata": {
        "resourceVersion": expired.resource_version,
        "annotations": { GRACED_KEYS_ANNOTATION: expired.keep },
    }});
    Api::<Secret>::namespaced(client.clone(), &expired.namespace)
        .patch(
            &expired.name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|source| Error::Kube {
            action: "remove expired graced keys from",
            object: format!("Secret {}/{}", expired.namespace, expired.name),
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
                approved: false,
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
        let rotate = |grace| {
            Some(KeyAction::Rotate {
                slot: Slot::Primary,
                grace,
            })
        };
        assert_eq!(
            decide(&with_grace(primary(), "0"), true),
            rotate(Duration::ZERO)
        );
        assert_eq!(
            decide(&with_grace(primary(), "90s"), true),
            rotate(Duration::from_secs(90))
        );
        assert_eq!(
            decide(&with_grace(primary(), "30m"), true),
            rotate(Duration::from_secs(1800))
        );
        // Malformed or too long: refused with the parser's message, nothing rotates.
        assert!(matches!(
            decide(&with_grace(primary(), "30"), true),
            Some(KeyAction::RefuseRotate(m)) if m.contains("without a unit")
        ));
        assert!(matches!(
            decide(&with_grace(primary(), "8d"), true),
            Some(KeyAction::RefuseRotate(m)) if m.contains("longer than 7d")
        ));
        // Without a rotate annotation the grace alone does nothing.
        assert_eq!(decide(&with_grace(sub(None, None), "30m"), true), None);
    }

    fn secret(primary: &str, graced: Option<String>) -> Secret {
        let mut s = Secret {
            data: Some(BTreeMap::from([
                (
                    PRIMARY_KEY.to_string(),
                    k8s_openapi::ByteString(primary.as_bytes().to_vec()),
                ),
                (
                    SECONDARY_KEY.to_string(),
                    k8s_openapi::ByteString(b"the-secondary-key-0123".to_vec()),
                ),
            ])),
            ..Secret::default()
        };
        s.metadata.name = Some("acme-keys".into());
        s.metadata.namespace = Some("ns".into());
        s.metadata.resource_version = Some("42".into());
        if let Some(g) = graced {
            s.metadata.annotations = Some(BTreeMap::from([(GRACED_KEYS_ANNOTATION.into(), g)]));
        }
        s
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("instant")
    }

    #[test]
    fn a_rotation_with_grace_graces_the_replaced_digest_until_now_plus_grace() {
        let current = secret("the-old-primary-key-0123", None);
        let (patch, until) = rotation_patch(
            &current,
            Slot::Primary,
            "the-new-key",
            at(0),
            Duration::from_secs(90),
        );
        assert_eq!(until, Some(at(90)));
        assert_eq!(patch["stringData"][PRIMARY_KEY], "the-new-key");
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        let records = key_grace::parse(
            patch["metadata"]["annotations"][GRACED_KEYS_ANNOTATION]
                .as_str()
                .expect("annotation"),
        )
        .expect("records");
        assert_eq!(
            records,
            [GracedRecord {
                slot: PRIMARY_KEY.into(),
                digest: tollgate_crds::table::key_digest("the-old-primary-key-0123"),
                valid_until: at(90),
            }]
        );
        // Neither key appears anywhere but in stringData (the new one).
        let text = patch.to_string();
        assert!(!text.contains("the-old-primary-key"), "{text}");
        // Without a grace: only the key, no record, no precondition.
        let (patch, until) = rotation_patch(&current, Slot::Primary, "k", at(0), Duration::ZERO);
        assert_eq!(until, None);
        assert_eq!(patch, serde_json::json!({"stringData": {PRIMARY_KEY: "k"}}));
    }

    #[test]
    fn expired_records_are_removed_and_the_next_expiry_is_the_wake_up() {
        let records = key_grace::after_rotation(
            &[],
            PRIMARY_KEY,
            &"a".repeat(64),
            at(0),
            chrono::Duration::seconds(90),
        );
        let records = key_grace::after_rotation(
            &records,
            SECONDARY_KEY,
            &"b".repeat(64),
            at(0),
            chrono::Duration::seconds(3600),
        );
        let s = secret("k", key_grace::render(&records));
        let plain = secret("k", None);
        // Before the first instant: nothing to remove, wake up at 90 s.
        assert_eq!(expiry_plan([&s, &plain], at(89)), (vec![], Some(at(90))));
        // At it: the first record goes (same resourceVersion), wake up for the second.
        let (expired, next) = expiry_plan([&s, &plain], at(90));
        assert_eq!(next, Some(at(3600)));
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].resource_version.as_deref(), Some("42"));
        let kept = key_grace::parse(expired[0].keep.as_deref().expect("kept")).expect("parse");
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].digest, "b".repeat(64));
        // After both: the annotation is removed, nothing more to wake up for.
        let (expired, next) = expiry_plan([&s], at(3600));
        assert_eq!(next, None);
        assert_eq!(expired[0].keep, None);
    }

    #[test]
    fn rotation_is_decided_by_the_annotation() {
        assert_eq!(
            decide(&sub(None, Some("primary")), true),
            Some(KeyAction::Rotate {
                slot: Slot::Primary,
                grace: Duration::ZERO
            })
        );
        assert_eq!(
            decide(&sub(None, Some("secondary")), true),
            Some(KeyAction::Rotate {
                slot: Slot::Secondary,
                grace: Duration::ZERO
            })
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
