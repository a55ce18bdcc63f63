//! When a certificate stops being valid: the `notAfter` of an X.509 certificate, read straight
//! from its DER (Certificate → tbsCertificate → validity), for the expiry gauge.
//!
//! rustls and webpki check validity but do not expose it; this walk reads only the few fields
//! in front of `validity` and the two times, so a full X.509 parser is not needed. Anything
//! unexpected gives `None` (the certificate is then simply not on the gauge).

use chrono::NaiveDate;

const SEQUENCE: u8 = 0x30;
const EXPLICIT_0: u8 = 0xa0;
const INTEGER: u8 = 0x02;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The certificate's `notAfter` as Unix seconds.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (tag, cert, _) = element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let (mut tag, _, mut rest) = element(tbs)?;
    // version [0] EXPLICIT is optional (absent for v1 certificates).
    if tag == EXPLICIT_0 {
        (tag, _, rest) = element(rest)?;
    }
    if tag != INTEGER {
        return None; // serialNumber
    }
    let (_, _, rest) = element(rest)?; // signature AlgorithmIdentifier
    let (_, _, rest) = element(rest)?; // issuer Name
    let (tag, validity, _) = element(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, _, after_not_before) = element(validity)?;
    let (tag, time, _) = element(after_not_before)?;
    parse_time(tag, time)
}

/// One DER element: (tag, contents, what follows). Definite lengths only, as DER requires.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 4 || input.len() < octets {
            return None;
        }
        let (bytes, rest) = input.split_at(octets);
        input = rest;
        bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b))
    };
    if input.len() < len {
        return None;
    }
    let (contents, rest) = input.split_at(len);
    Some((tag, contents, rest))
}

/// `UTCTime` (`YYMMDDHHMMSSZ`, years 1950–2049) or `GeneralizedTime` (`YYYYMMDDHHMMSSZ`), the
/// two forms RFC 5280 allows, both in UTC.
fn parse_time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = |s: &[u8]| -> Option<u32> {
        s.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let (year, rest) = match (tag, text.len()) {
        (UTC_TIME, 13) => {
            let yy = digits(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (GENERALIZED_TIME, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(year).ok()?,
        digits(&rest[0..2])?,
        digits(&rest[2..4])?,
    )?;
    let at = date.and_hms_opt(
        digits(&rest[4..6])?,
        digits(&rest[6..8])?,
        digits(&rest[8..10])?,
    )?;
    Some(at.and_utc().timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{date_time_ymd, CertificateParams, KeyPair};

    fn cert_expiring(year: i32, month: u8, day: u8) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["a.example".to_string()]).expect("params");
        params.not_after = date_time_ymd(year, month, day);
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn reads_not_after_in_both_time_forms() {
        // rcgen writes UTCTime up to 2049 and GeneralizedTime from 2050, as RFC 5280 says.
        assert_eq!(not_after(&cert_expiring(2030, 1, 2)), Some(1_893_542_400));
        assert_eq!(not_after(&cert_expiring(2051, 6, 1)), Some(2_569_190_400));
    }

    #[test]
    fn anything_else_is_none() {
        let der = cert_expiring(2030, 1, 2);
        assert_eq!(not_after(&[]), None);
        assert_eq!(not_after(b"not a certificate"), None);
        assert_eq!(not_after(&der[..der.len() / 2]), None, "truncated");
        assert_eq!(parse_time(UTC_TIME, b"300102000000+"), None);
        assert_eq!(parse_time(UTC_TIME, b"301302000000Z"), None, "month 13");
        assert_eq!(parse_time(GENERALIZED_TIME, b"300102000000Z"), None);
        assert_eq!(parse_time(UTC_TIME, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(parse_time(UTC_TIME, b"500101000000Z"), Some(-631_152_000));
    }
}
