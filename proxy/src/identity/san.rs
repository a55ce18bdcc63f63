//! The URI SANs of an X.509 certificate, read straight from its DER (Certificate →
//! tbsCertificate → extensions → subjectAltName → uniformResourceIdentifier).
//!
//! webpki verifies chains but exposes only DNS names, and a SPIFFE id is a URI SAN; this walk
//! reads only the fields in front of the extensions and the SAN extension itself, so no full
//! X.509 parser is needed. Anything unexpected gives an empty list: the peer then has no
//! identity and is refused (fail closed).

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
/// `[0] EXPLICIT` version.
const VERSION: u8 = 0xa0;
/// `[3] EXPLICIT` extensions.
const EXTENSIONS: u8 = 0xa3;
/// GeneralName `uniformResourceIdentifier [6] IMPLICIT IA5String`.
const URI_NAME: u8 = 0x86;
/// 2.5.29.17, subjectAltName.
const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11];

/// Every URI SAN of the certificate `der`, in order; empty when there is none or the DER is not
/// what a certificate looks like.
pub fn uri_sans(der: &[u8]) -> Vec<String> {
    san_extension(der)
        .map(|general_names| {
            let mut out = Vec::new();
            let mut rest = general_names;
            while let Some((tag, value, next)) = element(rest) {
                if tag == URI_NAME {
                    // IA5String is ASCII; anything else is not a URI we could match.
                    if let Ok(s) = std::str::from_utf8(value) {
                        if s.is_ascii() {
                            out.push(s.to_owned());
                        }
                    }
                }
                rest = next;
            }
            out
        })
        .unwrap_or_default()
}

/// The contents of the subjectAltName extension's `GeneralNames` sequence.
fn san_extension(der: &[u8]) -> Option<&[u8]> {
    let (tag, cert, _) = element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    // version? serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo.
    let (tag, _, next) = element(rest)?;
    rest = if tag == VERSION {
        element(next)?.2
    } else {
        next
    };
    for _ in 0..5 {
        rest = element(rest)?.2;
    }
    // issuerUniqueID [1], subjectUniqueID [2], extensions [3]: only the last one matters.
    let extensions = loop {
        let (tag, value, next) = element(rest)?;
        if tag == EXTENSIONS {
            break value;
        }
        rest = next;
    };
    let (tag, mut list, _) = element(extensions)?;
    if tag != SEQUENCE {
        return None;
    }
    while let Some((tag, ext, next)) = element(list) {
        list = next;
        if tag != SEQUENCE {
            return None;
        }
        let (tag, oid, mut fields) = element(ext)?;
        if tag != OID || oid != SAN_OID {
            continue;
        }
        let (mut tag, mut value, after) = element(fields)?;
        if tag == BOOLEAN {
            fields = after;
            (tag, value, _) = element(fields)?;
        }
        if tag != OCTET_STRING {
            return None;
        }
        let (tag, names, _) = element(value)?;
        return (tag == SEQUENCE).then_some(names);
    }
    None
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
    let (value, rest) = input.split_at(len);
    Some((tag, value, rest))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is a failure
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn cert(sans: Vec<SanType>) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_uri_sans_among_other_names() {
        let der = cert(vec![
            SanType::DnsName("a.test".try_into().unwrap()),
            SanType::URI("spiffe://cluster.local/ns/a/sa/b".try_into().unwrap()),
            SanType::URI("https://example.invalid/x".try_into().unwrap()),
        ]);
        assert_eq!(
            uri_sans(&der),
            vec![
                "spiffe://cluster.local/ns/a/sa/b".to_string(),
                "https://example.invalid/x".to_string()
            ]
        );
    }

    #[test]
    fn no_san_or_garbage_is_empty() {
        assert!(uri_sans(&cert(vec![])).is_empty());
        assert!(uri_sans(&cert(vec![SanType::DnsName("a.test".try_into().unwrap())])).is_empty());
        assert!(uri_sans(b"").is_empty());
        assert!(uri_sans(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_empty());
        let der = cert(vec![SanType::URI(
            "spiffe://td/ns/a/sa/b".try_into().unwrap(),
        )]);
        assert_eq!(uri_sans(&der), vec!["spiffe://td/ns/a/sa/b".to_string()]);
        // Every truncation is refused (the outer length no longer fits), never a panic.
        for cut in 0..der.len() {
            assert!(uri_sans(&der[..cut]).is_empty(), "cut at {cut}");
        }
    }
}
