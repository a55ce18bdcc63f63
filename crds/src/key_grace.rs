//! Rotation grace: a replaced key's digest stays valid until an instant.
//!
//! When the operator rotates a generated key with `tollgate.dev/rotate-grace`, it records the
//! replaced key's SHA-256 digest (never the key) and the instant it stops working in the
//! annotation [`GRACED_KEYS_ANNOTATION`] of the key Secret, in the same write that replaces the
//! key. The compiler copies the records into the table ([`GracedKey`]); proxies accept such a
//! digest until its instant; the operator removes a record once its instant has passed.
//!
//! The record lives on the Secret, not in the operator's memory, so a restart or a new leader
//! keeps honouring (and later removing) it. Everything here is pure: times are passed in.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::table::GracedKey;

/// Annotation of a key Secret: JSON list of [`GracedRecord`], written by the operator.
pub const GRACED_KEYS_ANNOTATION: &str = "tollgate.dev/graced-keys";

/// Most records kept on one Secret: each rotation with a grace adds one, and a bound keeps a
/// loop of rotations from growing the annotation (and the table) without end. When full, the
/// record that expires first is dropped.
pub const MAX_GRACED_KEYS: usize = 8;

/// A replaced key that stays valid until `valid_until`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GracedRecord {
    /// The data key it was replaced in (`primaryKey` or `secondaryKey`), for status messages.
    pub slot: String,
    /// Hex SHA-256 of the replaced key.
    pub digest: String,
    /// Calls with it are refused from this instant on.
    pub valid_until: DateTime<Utc>,
}

impl GracedRecord {
    /// The table's form: digest and instant only.
    pub fn to_table(&self) -> GracedKey {
        GracedKey {
            digest: self.digest.clone(),
            valid_until: self.valid_until,
        }
    }
}

/// Why an annotation value cannot be used; the text completes "annotation … ".
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraceError {
    /// Not a JSON list of records.
    #[error("is not a JSON list of {{slot, digest, validUntil}}: {0}")]
    Malformed(String),
    /// A digest is not 64 lowercase hex digits.
    #[error("entry {0} has a digest that is not 64 lowercase hex digits")]
    BadDigest(usize),
}

/// The records of an annotation value, checked.
///
/// # Errors
///
/// [`GraceError`] when the value is not a list of records or a digest is malformed; the caller
/// then keeps no replaced key valid (fail closed).
pub fn parse(value: &str) -> Result<Vec<GracedRecord>, GraceError> {
    let records: Vec<GracedRecord> =
        serde_json::from_str(value).map_err(|e| GraceError::Malformed(e.to_string()))?;
    for (i, r) in records.iter().enumerate() {
        let hex_ok = r.digest.len() == 64
            && r.digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_ok {
            return Err(GraceError::BadDigest(i));
        }
    }
    Ok(records)
}

/// The annotation value for `records` (`None`: remove the annotation).
pub fn render(records: &[GracedRecord]) -> Option<String> {
    if records.is_empty() {
        return None;
    }
    // A Vec of plain structs always serialises.
    serde_json::to_string(records).ok()
}

/// The records after the key in `slot` (with digest `old_digest`) was replaced at `now` with a
/// grace of `grace`: expired ones dropped, the replaced key added (or its instant updated when it
/// was already graced), at most [`MAX_GRACED_KEYS`] kept, sorted by instant.
pub fn after_rotation(
    records: &[GracedRecord],
    slot: &str,
    old_digest: &str,
    now: DateTime<Utc>,
    grace: chrono::Duration,
) -> Vec<GracedRecord> {
    let mut kept = unexpired(records, now);
    kept.retain(|r| r.digest != old_digest);
    kept.push(GracedRecord {
        slot: slot.to_string(),
        digest: old_digest.to_string(),
        valid_until: now + grace,
    });
    kept.sort_by(|a, b| (a.valid_until, &a.digest).cmp(&(b.valid_until, &b.digest)));
    let excess = kept.len().saturating_sub(MAX_GRACED_KEYS);
    kept.drain(..excess);
    kept
}

/// The records still valid at `now` (an instant equal to `now` has expired, as in the proxy).
pub fn unexpired(records: &[GracedRecord], now: DateTime<Utc>) -> Vec<GracedRecord> {
    records
        .iter()
        .filter(|r| r.valid_until > now)
        .cloned()
        .collect()
}

/// When the next record expires: the operator wakes up then to remove it.
pub fn next_expiry(records: &[GracedRecord]) -> Option<DateTime<Utc>> {
    records.iter().map(|r| r.valid_until).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("instant")
    }

    fn digest(c: char) -> String {
        c.to_string().repeat(64)
    }

    #[test]
    fn a_rotation_graces_the_replaced_digest_until_now_plus_grace() {
        let records = after_rotation(
            &[],
            "primaryKey",
            &digest('a'),
            at(0),
            chrono::Duration::seconds(90),
        );
        assert_eq!(
            records,
            [GracedRecord {
                slot: "primaryKey".into(),
                digest: digest('a'),
                valid_until: at(90),
            }]
        );
        // The next rotation drops what expired, keeps what did not, and adds its own.
        let later = after_rotation(
            &records,
            "secondaryKey",
            &digest('b'),
            at(60),
            chrono::Duration::seconds(3600),
        );
        assert_eq!(
            later.iter().map(|r| r.valid_until).collect::<Vec<_>>(),
            [at(90), at(3660)]
        );
        let after_expiry = after_rotation(
            &records,
            "secondaryKey",
            &digest('b'),
            at(90),
            chrono::Duration::seconds(10),
        );
        assert_eq!(after_expiry.len(), 1);
        assert_eq!(after_expiry[0].digest, digest('b'));
        assert_eq!(next_expiry(&later), Some(at(90)));
        assert_eq!(next_expiry(&[]), None);
    }

    #[test]
    fn records_are_bounded_and_expire_at_their_instant() {
        let mut records = Vec::new();
        for (i, c) in "0123456789".chars().enumerate() {
            let i = i64::try_from(i).expect("small");
            records = after_rotation(
                &records,
                "primaryKey",
                &digest(c),
                at(i),
                chrono::Duration::seconds(100),
            );
        }
        assert_eq!(records.len(), MAX_GRACED_KEYS);
        // The two that expire first went.
        assert_eq!(records[0].digest, digest('2'));
        assert_eq!(unexpired(&records, at(102)).len(), MAX_GRACED_KEYS - 1);
        assert_eq!(unexpired(&records, at(101)).len(), MAX_GRACED_KEYS);
    }

    #[test]
    fn annotations_round_trip_and_bad_ones_are_refused() {
        let records = after_rotation(
            &[],
            "primaryKey",
            &digest('c'),
            at(0),
            chrono::Duration::seconds(1),
        );
        let text = render(&records).expect("some");
        assert_eq!(parse(&text), Ok(records));
        assert_eq!(render(&[]), None);
        assert!(matches!(parse("nope"), Err(GraceError::Malformed(_))));
        assert!(matches!(parse("{}"), Err(GraceError::Malformed(_))));
        let upper = format!(
            r#"[{{"slot":"primaryKey","digest":"{}","validUntil":"2027-01-01T00:00:00Z"}}]"#,
            digest('A')
        );
        assert_eq!(parse(&upper), Err(GraceError::BadDigest(0)));
    }
}
